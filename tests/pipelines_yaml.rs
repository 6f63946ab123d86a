//! The Tekton and Argo manifests in `config/` carry the names pipelines and Tekton Chains rely
//! on, agree with the controller's own constants and types, and produce ImageBuilds the API
//! server would accept (checked offline against the CRD's schema and CEL rules).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hearth::api::{ImageBuild, ImageBuildStatus};
use hearth::controller::custom_run::mapping::{self, IMAGE_DIGEST, IMAGE_URL};
use hearth::controller::custom_run::CustomRunSpec;
use regex::Regex;
use serde_json::{json, Value};

fn docs(path: &str) -> Vec<Value> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    hearth::cli::parse_documents(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn one(path: &str, kind: &str) -> Value {
    let all: Vec<_> = docs(path)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(all.len(), 1, "{path}: one {kind}");
    all.into_iter().next().unwrap()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Role rules as (apiGroup, resource) → verbs.
fn rules(role: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                let verbs = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string());
                out.entry((g.as_str().unwrap().into(), r.as_str().unwrap().into()))
                    .or_default()
                    .extend(verbs);
            }
        }
    }
    out
}

fn perms(list: &[(&str, &str, &[&str])]) -> BTreeMap<(String, String), BTreeSet<String>> {
    list.iter()
        .map(|(g, r, v)| {
            (
                (g.to_string(), r.to_string()),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

/// The JSON name of ImageBuild status' digest field, as the real type serializes it.
fn digest_field() -> String {
    let mut ib = ImageBuild::new("x", Default::default());
    ib.status = Some(ImageBuildStatus {
        image_digest: Some("sentinel".into()),
        ..Default::default()
    });
    let v = serde_json::to_value(&ib).unwrap();
    let status = v["status"].as_object().unwrap();
    let (key, _) = status.iter().find(|(_, v)| *v == "sentinel").unwrap();
    format!("{{.status.{key}}}")
}

// ------------------------------------------------------------------ Tekton

#[test]
fn tekton_task_follows_the_catalog_conventions_for_image_builds() {
    let task = one("config/tekton/hearth-build.yaml", "Task");
    assert_eq!(task["apiVersion"], "tekton.dev/v1");
    assert_eq!(
        task["metadata"]["annotations"]["tekton.dev/categories"],
        "Image Build"
    );
    let spec = &task["spec"];
    let params: BTreeMap<String, Value> = spec["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
        .collect();
    for (name, type_) in [
        ("IMAGE", "string"),
        ("DOCKERFILE", "string"),
        ("CONTEXT", "string"),
        ("BUILD_ARGS", "array"),
        ("CACHE_KEY", "string"),
        ("RESTORE_KEYS", "array"),
        ("PLATFORMS", "array"),
        ("CACHE_MODE", "string"),
        ("SKIP_PUSH", "string"),
        ("PUSH_SECRET", "string"),
        ("BUILDER_IMAGE", "string"),
    ] {
        let p = params.get(name).unwrap_or_else(|| panic!("param {name}"));
        assert_eq!(p["type"], type_, "param {name}");
        assert!(p["description"].is_string(), "param {name} is described");
    }
    assert!(
        params["IMAGE"].get("default").is_none(),
        "IMAGE is required"
    );
    assert_eq!(params["DOCKERFILE"]["default"], "./Dockerfile");
    assert_eq!(params["CONTEXT"]["default"], ".");
    assert_eq!(names(&spec["workspaces"]), ["source"]);
    assert_eq!(
        names(&spec["results"]),
        [
            IMAGE_DIGEST,
            IMAGE_URL,
            "CHAINS-GIT_URL",
            "CHAINS-GIT_COMMIT"
        ]
    );

    let steps = spec["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    let step = &steps[0];
    let script = step["script"].as_str().unwrap();
    assert!(
        script.contains("hearth build"),
        "the step runs hearth build"
    );
    assert!(
        script.contains("--digest-file \"$DIGEST_FILE\""),
        "{script}"
    );
    assert!(
        !script.contains("$("),
        "params reach the script through env, never pasted into it"
    );
    let env: BTreeMap<&str, &str> = step["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(env["DIGEST_FILE"], "$(results.IMAGE_DIGEST.path)");
    assert_eq!(env["URL_FILE"], "$(results.IMAGE_URL.path)");
    // Every $(params.X) the step uses is declared, and every param is used.
    let text = serde_json::to_string(step).unwrap();
    let used: BTreeSet<String> = Regex::new(r"\$\(params\.([A-Z_]+)(\[\*\])?\)")
        .unwrap()
        .captures_iter(&text)
        .map(|c| c[1].to_string())
        .collect();
    let declared: BTreeSet<String> = params.keys().cloned().collect();
    assert_eq!(used, declared, "params used by the step vs declared");
    let args: Vec<&str> = step["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "--build-args",
            "$(params.BUILD_ARGS[*])",
            "--restore-keys",
            "$(params.RESTORE_KEYS[*])",
            "--platforms",
            "$(params.PLATFORMS[*])"
        ]
    );
}

#[test]
fn tekton_role_grants_what_hearth_build_needs_and_nothing_more() {
    let role = one("config/tekton/rbac.yaml", "Role");
    assert_eq!(
        rules(&role),
        perms(&[
            (
                "hearth.dev",
                "imagebuilds",
                &["create", "get", "list", "watch", "patch"]
            ),
            ("", "pods", &["get", "list", "watch"]),
            ("", "pods/log", &["get"]),
            ("", "pods/exec", &["create"]),
        ])
    );
    let sa = one("config/tekton/rbac.yaml", "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], role["metadata"]["name"]);
}

/// Replaces Tekton `$(...)` references with plausible values, as Tekton would.
fn resolve_tekton(v: &Value) -> Value {
    let text = serde_json::to_string(v).unwrap();
    let text = text.replace("$(params.revision)", "main").replace(
        "$(tasks.base.results.IMAGE_DIGEST)",
        &format!("sha256:{}", "b".repeat(64)),
    );
    assert!(!text.contains("$("), "unresolved reference in {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn tekton_custom_task_pipeline_uses_params_the_controller_reads() {
    let pipeline = one("config/tekton/pipeline-custom-task.yaml", "Pipeline");
    let tasks = pipeline["spec"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for task in tasks {
        assert_eq!(
            task["taskRef"],
            json!({"apiVersion": mapping::API_VERSION, "kind": mapping::KIND})
        );
        // What Tekton's PipelineRun controller would put in the CustomRun.
        let spec: CustomRunSpec = serde_json::from_value(json!({
            "customRef": task["taskRef"],
            "params": resolve_tekton(&task["params"]),
            "timeout": task["timeout"],
        }))
        .unwrap();
        assert!(mapping::targets_hearth(&spec));
        let build =
            mapping::build_spec(&spec).unwrap_or_else(|e| panic!("{}: {e:?}", task["name"]));
        assert!(build.output.push_secret_ref.is_some());
    }
    // The second build is based on the first one's digest, a result the controller reports.
    let text = serde_json::to_string(&tasks[1]).unwrap();
    assert!(
        text.contains(&format!("$(tasks.base.results.{IMAGE_DIGEST})")),
        "{text}"
    );
    let results = serde_json::to_string(&pipeline["spec"]["results"]).unwrap();
    for name in Regex::new(r"results\.([A-Z_]+)\)")
        .unwrap()
        .captures_iter(&results)
    {
        assert!(
            [IMAGE_URL, IMAGE_DIGEST].contains(&&name[1]),
            "{}",
            &name[1]
        );
    }
}

#[test]
fn tekton_task_pipeline_binds_the_source_workspace() {
    let task = one("config/tekton/hearth-build.yaml", "Task");
    let declared: BTreeSet<String> = names(&task["spec"]["params"]).into_iter().collect();
    let pipeline = one("config/tekton/pipeline-task.yaml", "Pipeline");
    let build = pipeline["spec"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["taskRef"]["name"] == "hearth-build")
        .expect("a task runs hearth-build")
        .clone();
    for p in names(&build["params"]) {
        assert!(declared.contains(&p), "param {p} is not one of the Task's");
    }
    assert_eq!(names(&build["workspaces"]), ["source"]);
    assert!(serde_json::to_string(&pipeline["spec"]["results"])
        .unwrap()
        .contains("$(tasks.build.results.IMAGE_DIGEST)"));
}

// ------------------------------------------------------------------ Argo

/// Renders an Argo template string: `{{inputs.parameters.X}}` and the two expression shapes the
/// template uses: `{{=P == '' [|| P == '.'] ? 'null' : toJson(P)}}`, and the Dockerfile's path
/// from the context, `{{=toJson(D == '' ? 'F' : sprig.repeat(len(sprig.without(sprig.splitList(
/// '/', C), '.', '')), '../') + D)}}`, evaluated as sprig defines its functions (`splitList` is Go's
/// `strings.Split`, `without` drops the items equal to any of its arguments).
fn render_argo(text: &str, params: &BTreeMap<String, String>) -> String {
    let param = r"inputs\.parameters(?:\.([a-z-]+)|\['([a-z-]+)'\])";
    let climb = Regex::new(
        r"\{\{=toJson\(inputs\.parameters\.([a-z-]+) == '' \? '([^']+)' : sprig\.repeat\(len\(sprig\.without\(sprig\.splitList\('/', inputs\.parameters\.([a-z-]+)\), '\.', ''\)\), '\.\./'\) \+ inputs\.parameters\.([a-z-]+)\)\}\}",
    )
    .unwrap();
    let text = climb.replace_all(text, |c: &regex::Captures| {
        assert_eq!(c[1], c[4], "one parameter tested and climbed: {}", &c[0]);
        if params[&c[1]].is_empty() {
            return serde_json::to_string(&c[2]).unwrap();
        }
        let dirs = params[&c[3]]
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .count();
        serde_json::to_string(&format!("{}{}", "../".repeat(dirs), params[&c[4]])).unwrap()
    });
    let expr = Regex::new(&format!(
        r"\{{\{{=(.*?) \? 'null' : toJson\({param}\)\}}\}}"
    ))
    .unwrap();
    let cmp = Regex::new(&format!(r"{param} == '([^']*)'")).unwrap();
    let text = expr.replace_all(&text, |c: &regex::Captures| {
        let name = c.get(2).or(c.get(3)).unwrap().as_str();
        let value = &params[name];
        let nulls: Vec<String> = cmp.captures_iter(&c[1]).map(|m| m[3].to_string()).collect();
        assert!(!nulls.is_empty(), "unexpected expression {}", &c[0]);
        if nulls.contains(value) {
            "null".to_string()
        } else {
            serde_json::to_string(value).unwrap()
        }
    });
    let simple = Regex::new(r"\{\{inputs\.parameters\.([a-z-]+)\}\}").unwrap();
    let text = simple.replace_all(&text, |c: &regex::Captures| params[&c[1]].clone());
    text.replace("{{workflow.name}}", "shop-images-x7k2p")
}

fn argo_build_template() -> Value {
    let wt = one("config/argo/hearth-build.yaml", "WorkflowTemplate");
    let templates = wt["spec"]["templates"].as_array().unwrap();
    templates
        .iter()
        .find(|t| t["name"] == "build")
        .expect("template build")
        .clone()
}

fn argo_inputs(template: &Value, given: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for p in template["inputs"]["parameters"].as_array().unwrap() {
        if let Some(d) = p["default"].as_str() {
            params.insert(p["name"].as_str().unwrap().to_string(), d.to_string());
        }
    }
    for (k, v) in given {
        assert!(
            names(&template["inputs"]["parameters"]).contains(&k.to_string()),
            "input {k}"
        );
        params.insert(k.to_string(), v.to_string());
    }
    params
}

#[test]
fn argo_template_waits_on_the_phase_and_outputs_the_digest() {
    let t = argo_build_template();
    let r = &t["resource"];
    assert_eq!(r["action"], "create");
    assert_eq!(r["successCondition"], "status.phase == Succeeded");
    assert_eq!(r["failureCondition"], "status.phase in (Failed,Cancelled)");
    let outputs: BTreeMap<String, String> = t["outputs"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().into(),
                o["valueFrom"]["jsonPath"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        outputs["image-digest"],
        digest_field(),
        "the digest's path in ImageBuild status"
    );
    assert_eq!(outputs["image-url"], "{.spec.output.image}");
    assert_eq!(outputs["git-commit"], "{.status.gitCommit}");
    // The phases named in the conditions are the ones ImageBuild status uses.
    for phase in ["Succeeded", "Failed", "Cancelled"] {
        let p: hearth::api::Phase = serde_json::from_value(json!(phase)).unwrap();
        assert!(p.is_terminal());
    }
}

#[test]
fn argo_template_renders_an_image_build_the_api_server_accepts() {
    let t = argo_build_template();
    let manifest = t["resource"]["manifest"].as_str().unwrap();
    let cases = [
        vec![
            ("image", "registry.example.com/shop/api:1"),
            ("git-url", "https://github.com/acme/shop.git"),
        ],
        vec![
            ("image", "registry.example.com/shop/api:2"),
            ("git-url", "https://github.com/acme/shop.git"),
            ("git-revision", ""),
            ("context", "services/api"),
            (
                "build-args",
                r#"{"BASE_IMAGE": "registry.example.com/shop/base@sha256:abc", "V": "2"}"#,
            ),
            ("cache-key", "github.com/acme/shop:feature-x"),
            ("restore-keys", r#"["github.com/acme/shop:main"]"#),
            ("cache-mode", "ReadOnly"),
            ("platforms", r#"["linux/amd64", "linux/arm64"]"#),
            ("platform-mode", "Emulate"),
            ("push", "false"),
            ("no-cache", "true"),
            ("pull", "true"),
        ],
    ];
    for given in cases {
        let params = argo_inputs(&t, &given);
        let rendered = render_argo(manifest, &params);
        assert!(!rendered.contains("{{"), "unrendered tag in {rendered}");
        let value: Value =
            serde_yaml::from_str(&rendered).unwrap_or_else(|e| panic!("{e}: {rendered}"));
        let mut object = value.clone();
        object["metadata"]["name"] = json!("shop-images-x7k2p-abcde");
        let violations = hearth::api::check::check(&strip_nulls(object), None).unwrap();
        assert!(violations.is_empty(), "{violations:?} in {rendered}");
        let ib: ImageBuild = serde_json::from_value(value).unwrap();
        let git = ib.spec.source.git.unwrap();
        if params["cache-key"].is_empty() {
            assert_eq!(
                ib.spec.cache.key, None,
                "empty cache-key: Hearth derives the key"
            );
            assert_eq!(git.sub_path, None, "context . is the repository root");
        } else {
            assert_eq!(
                ib.spec.cache.key.as_deref(),
                Some("github.com/acme/shop:feature-x")
            );
            assert_eq!(ib.spec.cache.restore_keys, ["github.com/acme/shop:main"]);
            assert_eq!(ib.spec.build_args["V"], "2");
            assert_eq!(git.sub_path.as_deref(), Some("services/api"));
            assert_eq!(git.revision, None, "empty revision: the default branch");
            assert_eq!(ib.spec.platforms, ["linux/amd64", "linux/arm64"]);
            assert!(!ib.spec.output.push && ib.spec.no_cache && ib.spec.pull);
        }
    }
}

/// Where the builder reads the Dockerfile from, as a path from the repository root: buildctl's
/// `filename` from the repository (with `contextsubdir`) or from the `URL#REF:SUBDIR` context,
/// without `.` segments.
fn dockerfile_read_from_root(ib: &ImageBuild) -> String {
    let args = hearth::controller::builders::pod::buildctl_args(ib, &[]).unwrap();
    let opt = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let filename = opt("filename").expect("filename");
    let dir = match (
        opt("contextsubdir"),
        opt("context").unwrap().rsplit_once(':'),
    ) {
        (None, Some((_, sub))) if !sub.starts_with("//") => sub.to_string(),
        _ => String::new(),
    };
    hearth::api::image_build::normalize_path(&dir, &filename).unwrap()
}

#[test]
fn argo_dockerfile_is_a_path_from_the_repository_root_as_in_the_task_and_cli() {
    let t = argo_build_template();
    let manifest = t["resource"]["manifest"].as_str().unwrap();
    for (context, dockerfile, from_root) in [
        (".", "", "Dockerfile"),
        ("services/api", "", "services/api/Dockerfile"),
        (".", "Dockerfile", "Dockerfile"),
        (".", "./build/Dockerfile", "build/Dockerfile"),
        (
            "services/api",
            "services/api/Dockerfile",
            "services/api/Dockerfile",
        ),
        (
            "services/api",
            "docker/api.Dockerfile",
            "docker/api.Dockerfile",
        ),
        ("services/api/", "Dockerfile", "Dockerfile"),
        ("./services", "services/Dockerfile", "services/Dockerfile"),
    ] {
        let params = argo_inputs(
            &t,
            &[
                ("image", "registry.example.com/shop/api:1"),
                ("git-url", "https://github.com/acme/shop.git"),
                ("context", context),
                ("dockerfile", dockerfile),
            ],
        );
        let rendered = render_argo(manifest, &params);
        let mut object: Value = serde_yaml::from_str(&rendered).unwrap();
        object["metadata"]["name"] = json!("shop-images-x7k2p-abcde");
        let object = strip_nulls(object);
        let violations = hearth::api::check::check(&object, None).unwrap();
        assert!(violations.is_empty(), "{violations:?} in {rendered}");
        let ib: ImageBuild = serde_json::from_value(object).unwrap();
        let case = format!("context {context:?}, dockerfile {dockerfile:?}: {rendered}");
        assert_eq!(dockerfile_read_from_root(&ib), from_root, "{case}");
        // The Tekton Task's and the CLI's reading of the same two parameters.
        let mut cli = ib.clone();
        let sub = hearth::api::image_build::clean_dir(context);
        cli.spec.source.git.as_mut().unwrap().sub_path =
            Some(sub.clone()).filter(|s| !s.is_empty());
        // The custom task's empty DOCKERFILE is CONTEXT/Dockerfile.
        let dockerfile = match dockerfile {
            "" => format!("{context}/Dockerfile"),
            d => d.to_string(),
        };
        cli.spec.dockerfile =
            hearth::api::image_build::dockerfile_from_context(context, &dockerfile).unwrap();
        assert_eq!(dockerfile_read_from_root(&cli), from_root, "{case} (CLI)");
    }
}

/// What the API server does with nulls in a custom resource whose schema does not allow them.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

#[test]
fn argo_role_grants_what_the_resource_template_needs() {
    let role = one("config/argo/rbac.yaml", "Role");
    assert_eq!(
        rules(&role),
        perms(&[
            (
                "hearth.dev",
                "imagebuilds",
                &["create", "get", "list", "watch"]
            ),
            ("argoproj.io", "workflowtaskresults", &["create", "patch"]),
        ])
    );
    let wt = one("config/argo/hearth-build.yaml", "WorkflowTemplate");
    assert_eq!(wt["spec"]["serviceAccountName"], role["metadata"]["name"]);
}

#[test]
fn argo_example_chains_the_second_build_on_the_first_digest() {
    let t = argo_build_template();
    let wf = one("config/argo/example-chained.yaml", "Workflow");
    let dag = wf["spec"]["templates"][0]["dag"]["tasks"]
        .as_array()
        .unwrap();
    assert_eq!(dag.len(), 2);
    for task in dag {
        assert_eq!(
            task["templateRef"],
            json!({"name": "hearth-build", "template": "build"})
        );
        let given: Vec<(String, String)> = task["arguments"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let given: Vec<(&str, String)> = given
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace("{{workflow.parameters.revision}}", "feature-x")
                    .replace(
                        "{{tasks.base.outputs.parameters.image-digest}}",
                        "sha256:0123",
                    );
                (k.as_str(), v)
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = given.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let rendered = render_argo(
            t["resource"]["manifest"].as_str().unwrap(),
            &argo_inputs(&t, &borrowed),
        );
        let mut object: Value = serde_yaml::from_str(&rendered).unwrap();
        object["metadata"]["name"] = json!("shop-images-x7k2p-abcde");
        let violations = hearth::api::check::check(&strip_nulls(object), None).unwrap();
        assert!(violations.is_empty(), "{}: {violations:?}", task["name"]);
    }
    assert_eq!(dag[1]["depends"], "base");
    let second = serde_json::to_string(&dag[1]).unwrap();
    assert!(
        second.contains("{{tasks.base.outputs.parameters.image-digest}}"),
        "{second}"
    );
    let outputs = names(&t["outputs"]["parameters"]);
    assert!(outputs.contains(&"image-digest".to_string()));
}

// ------------------------------------------------------------------ the Task's step script

/// Runs the Task's script as Tekton would (params in env, the arrays as arguments after their
/// markers) with a fake `hearth` on PATH that records its arguments.
fn run_task_script(env: &[(&str, &str)], args: &[&str]) -> (bool, Vec<String>, String) {
    let task = one("config/tekton/hearth-build.yaml", "Task");
    let script = task["spec"]["steps"][0]["script"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let argv = dir.path().join("argv");
    let fake = format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}\n",
        argv.display()
    );
    std::fs::write(bin.join("hearth"), fake).unwrap();
    std::fs::write(dir.path().join("step.sh"), &script).unwrap();
    let chmod = std::process::Command::new("chmod")
        .arg("+x")
        .arg(bin.join("hearth"))
        .status()
        .unwrap();
    assert!(chmod.success());
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg(dir.path().join("step.sh")).args(args);
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let defaults = [
        ("PARAM_IMAGE", "registry.example.com/shop/api:1"),
        ("PARAM_DOCKERFILE", "./Dockerfile"),
        ("PARAM_CONTEXT", "."),
        ("PARAM_CACHE_KEY", ""),
        ("PARAM_TARGET", ""),
        ("PARAM_CACHE_MODE", "ReadWrite"),
        ("PARAM_SKIP_PUSH", "false"),
        ("PARAM_PLATFORM_MODE", ""),
        ("PARAM_PUSH_SECRET", ""),
        ("PARAM_GIT_URL", ""),
        ("PARAM_GIT_REVISION", ""),
        ("PARAM_TIMEOUT", "1h"),
        ("SOURCE_BOUND", "true"),
        ("NAMESPACE", "shop"),
    ];
    for (k, v) in defaults.iter().chain(env) {
        cmd.env(k, v);
    }
    cmd.env("SOURCE_PATH", &ws);
    cmd.env("DIGEST_FILE", dir.path().join("digest"));
    cmd.env("URL_FILE", dir.path().join("url"));
    cmd.env("GIT_URL_FILE", dir.path().join("git-url"));
    cmd.env("GIT_COMMIT_FILE", dir.path().join("git-commit"));
    cmd.env("METADATA_FILE", dir.path().join("metadata.json"));
    // What `hearth build --metadata-file` writes for a git source, as the fake hearth "wrote" it.
    std::fs::write(
        dir.path().join("metadata.json"),
        "{\n  \"containerimage.digest\": \"sha256:00\",\n  \"gitCommit\": \"1c2bbabf754d852521421e57e6878984a39c3a09\"\n}\n",
    )
    .unwrap();
    let out = cmd.output().unwrap();
    let argv = std::fs::read_to_string(&argv).unwrap_or_default();
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let url = [read("url"), read("git-url"), read("git-commit")].join("|");
    assert!(
        out.status.success() || argv.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        argv.lines().map(String::from).collect(),
        url,
    )
}

#[test]
fn task_script_passes_every_param_to_hearth_build() {
    let (ok, argv, url) = run_task_script(
        &[
            ("PARAM_CACHE_KEY", "shop:feature-x"),
            ("PARAM_TARGET", "runtime"),
            ("PARAM_CACHE_MODE", "ReadOnly"),
            ("PARAM_SKIP_PUSH", "true"),
            ("PARAM_PUSH_SECRET", "registry-push"),
            ("PARAM_PLATFORM_MODE", "Emulate"),
        ],
        &[
            "--build-args",
            "A=1 2",
            "B=",
            "--restore-keys",
            "shop:main",
            "",
            "shop:base",
            "--platforms",
            "linux/amd64",
            "linux/arm64",
        ],
    );
    assert!(ok);
    let mut rest = argv.clone();
    for (flag, file) in [
        ("--digest-file", "/digest"),
        ("--metadata-file", "/metadata.json"),
    ] {
        let at = rest.iter().position(|a| a == flag).unwrap();
        assert!(rest[at + 1].ends_with(file), "{flag} {}", rest[at + 1]);
        rest.drain(at..at + 2);
    }
    assert_eq!(
        rest,
        [
            "build",
            ".",
            "-t",
            "registry.example.com/shop/api:1",
            "-f",
            "./Dockerfile",
            "-n",
            "shop",
            "--timeout",
            "1h",
            "--build-arg",
            "A=1 2",
            "--build-arg",
            "B=",
            "--restore-key",
            "shop:main",
            "--restore-key",
            "shop:base",
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
            "--cache-key",
            "shop:feature-x",
            "--target",
            "runtime",
            "--cache-mode",
            "ReadOnly",
            "--emulate",
            "--no-push",
            "--push-secret",
            "registry-push",
        ]
    );
    assert_eq!(
        url, "registry.example.com/shop/api:1||",
        "IMAGE_URL, and no git type hints for an uploaded workspace"
    );
}

#[test]
fn task_script_passes_a_git_source_through_and_needs_a_source_otherwise() {
    let (ok, argv, url) = run_task_script(
        &[
            ("PARAM_GIT_URL", "https://github.com/acme/shop.git"),
            ("PARAM_GIT_REVISION", "v1"),
            ("SOURCE_BOUND", "false"),
        ],
        &["--build-args", "--restore-keys", "--platforms"],
    );
    assert!(ok);
    assert_eq!(
        url.split('|').skip(1).collect::<Vec<_>>(),
        [
            "https://github.com/acme/shop.git",
            "1c2bbabf754d852521421e57e6878984a39c3a09"
        ],
        "CHAINS-GIT_URL and CHAINS-GIT_COMMIT"
    );
    assert_eq!(argv[1], "-t", "no directory to upload: {argv:?}");
    let git = argv.iter().position(|a| a == "--git").unwrap();
    assert_eq!(
        argv[git + 1..git + 4],
        ["https://github.com/acme/shop.git", "--revision", "v1"]
    );
    // A CONTEXT of the repository travels as buildx's URL#REF:SUBDIR.
    let (ok, argv, _) = run_task_script(
        &[
            ("PARAM_GIT_URL", "https://github.com/acme/shop.git"),
            ("PARAM_GIT_REVISION", "v1"),
            ("PARAM_CONTEXT", "./svc/api"),
            ("PARAM_DOCKERFILE", "svc/api/Dockerfile"),
            ("SOURCE_BOUND", "false"),
        ],
        &["--build-args", "--restore-keys", "--platforms"],
    );
    assert!(ok);
    let git = argv.iter().position(|a| a == "--git").unwrap();
    assert_eq!(argv[git + 1], "https://github.com/acme/shop.git#v1:svc/api");
    assert!(!argv.contains(&"--revision".to_string()), "{argv:?}");
    let (ok, argv, _) = run_task_script(
        &[("SOURCE_BOUND", "false")],
        &["--build-args", "--restore-keys", "--platforms"],
    );
    assert!(
        !ok && argv.is_empty(),
        "no workspace and no GIT_URL: refused before hearth runs"
    );
}

#[test]
fn task_script_is_shellcheck_clean() {
    if std::process::Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("shellcheck not installed: skipped");
        return;
    }
    let task = one("config/tekton/hearth-build.yaml", "Task");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("step.sh");
    std::fs::write(&path, task["spec"]["steps"][0]["script"].as_str().unwrap()).unwrap();
    let out = std::process::Command::new("shellcheck")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
