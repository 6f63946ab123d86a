//! Process level, the test cluster's side of issue 17's multi-arch fan-out: its loopback
//! registry, the played buildkitd pushing real images there (by tag, or by digest with the
//! platform asked), and an index Job as the contract describes it (docs/index.md) running
//! the real `hearth index create` in the kubelet with a dockerconfigjson Secret mounted at
//! `/hearth/docker`.

mod cluster;

use std::time::Duration;

use cluster::registry_support::{self, digest_of, get_manifest, push_image, AuthMode};
use cluster::{secs, BuildkitOpts, ClusterOpts, TestCluster, NS};
use hearth::api::ImageBuildSpec;
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use serde_json::{json, Value};

const USER: &str = "robot";
const PASSWORD: &str = "index-job-secret";

fn token_auth() -> AuthMode {
    AuthMode::Token {
        username: USER.into(),
        password: PASSWORD.into(),
        realm: None,
    }
}

/// The platform in the config blob of the manifest `digest` of `repository`.
async fn platform_of(base: &str, repository: &str, digest: &str) -> Value {
    let creds = Some((USER, PASSWORD));
    let (_, manifest) = get_manifest(base, repository, digest, creds).await.unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    config_platform(base, repository, &config).await
}

async fn config_platform(base: &str, repository: &str, config: &str) -> Value {
    let body = registry_support::get_blob(base, repository, config, Some((USER, PASSWORD)))
        .await
        .unwrap();
    assert_eq!(digest_of(&body), config);
    let config: Value = serde_json::from_slice(&body).unwrap();
    json!({"os": config["os"], "architecture": config["architecture"], "variant": config["variant"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_played_buildkitd_pushes_by_digest_with_the_platform_asked() {
    let registry = registry_support::RegistryServer::start(token_auth()).await;
    let host = registry.addr.to_string();
    let state = tempfile::tempdir().unwrap();
    let metadata = state.path().join("metadata.json");
    let opts = BuildkitOpts {
        files_per_build: 5,
        registry: Some((host.clone(), Some((USER.into(), PASSWORD.into())))),
        ..Default::default()
    };
    let play = |output: String, platform: Option<&str>| {
        let mut args: Vec<String> = ["build", "--frontend", "dockerfile.v0", "--output"]
            .map(String::from)
            .into();
        args.push(output);
        if let Some(p) = platform {
            args.extend(["--opt".into(), format!("platform={p}")]);
        }
        args.extend(["--metadata-file".into(), metadata.display().to_string()]);
        cluster::buildkit::Play {
            args,
            env: vec![(
                "BUILDKITD_FLAGS".into(),
                format!("--root {}", state.path().join("root").display()),
            )],
            log: state.path().join("buildctl.out"),
            seed: "pod-uid-1".into(),
        }
    };
    let term = || tokio::sync::watch::channel(None::<Duration>).1;
    let digest_in_metadata = || {
        let m: Value = serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
        m["containerimage.digest"].as_str().unwrap().to_string()
    };

    // A child of the fan-out: by digest, no tag.
    let output = format!("type=image,name={host}/shop/app,push=true,push-by-digest=true");
    let code = cluster::buildkit::play(&opts, play(output, Some("linux/arm64/v8")), term()).await;
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(state.path().join("buildctl.out")).unwrap()
    );
    let digest = digest_in_metadata();
    let (content_type, bytes) = registry.manifest("shop/app", &digest).expect("pushed");
    assert_eq!(content_type, registry_support::OCI_MANIFEST);
    assert_eq!(digest_of(&bytes), digest);
    assert_eq!(
        registry.tag("shop/app", "latest"),
        None,
        "pushed by digest only"
    );
    assert_eq!(
        platform_of(&registry.base, "shop/app", &digest).await,
        json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
    );

    // By tag, platform by default linux/amd64; a name elsewhere is not pushed.
    let output =
        format!("type=image,\"name={host}/shop/app:v2,registry.example/shop/app:v2\",push=true");
    let code = cluster::buildkit::play(&opts, play(output, None), term()).await;
    assert_eq!(code, 0);
    let digest = digest_in_metadata();
    assert_eq!(registry.tag("shop/app", "v2"), Some(digest.clone()));
    assert_eq!(
        platform_of(&registry.base, "shop/app", &digest).await,
        json!({"os": "linux", "architecture": "amd64", "variant": null})
    );

    // push=false pushes nothing.
    let before = registry.log().len();
    let output = format!("type=image,name={host}/shop/app:v3,push=false");
    assert_eq!(
        cluster::buildkit::play(&opts, play(output, None), term()).await,
        0
    );
    assert_eq!(registry.log().len(), before);
    assert_eq!(registry.tag("shop/app", "v3"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_named_on_the_test_registry_pushes_there_and_reports_the_real_digest() {
    let c = TestCluster::start(ClusterOpts {
        registry: Some(token_auth()),
        buildkit: BuildkitOpts {
            files_per_build: 20,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let host = c.registry_host();
    let spec: ImageBuildSpec = serde_json::from_value(json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": format!("{host}/shop/app:main")},
        "cache": {"key": "shop:main", "mode": "ReadWrite"}
    }))
    .unwrap();
    c.apply_build("shop-1", spec).await;
    let ib = c.wait_build("shop-1", "Succeeded", secs(60)).await;
    let registry = c.registry.as_ref().unwrap();
    let tagged = registry
        .tag("shop/app", "main")
        .expect("pushed under its tag");
    assert_eq!(ib.status.unwrap().image_digest, Some(tagged.clone()));
    let (_, bytes) = registry.manifest("shop/app", &tagged).unwrap();
    assert_eq!(digest_of(&bytes), tagged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_job_runs_hearth_index_create_with_the_push_secret() {
    let c = TestCluster::start(ClusterOpts {
        registry: Some(token_auth()),
        start_controller: false,
        ..Default::default()
    })
    .await;
    let host = c.registry_host();
    let base = c.registry.as_ref().unwrap().base.clone();
    let creds = Some((USER, PASSWORD));
    let amd = push_image(&base, "shop/app", None, "linux/amd64", "a", creds)
        .await
        .unwrap();
    let arm = push_image(&base, "shop/app", None, "linux/arm64", "b", creds)
        .await
        .unwrap();

    c.create_push_secret("push", &host, USER, PASSWORD).await;
    // The index Job as the contract describes it (the fanout branch builds it).
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "app-index", "namespace": NS, "labels": {"hearth.dev/role": "index"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"hearth.dev/role": "index"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "index",
                        "image": "ghcr.io/hearth-dev/hearth:test",
                        "command": ["sh", "-c", "hearth \"$@\" > /dev/termination-log", "hearth-job"],
                        "args": [
                            "index", "create",
                            "--source", format!("{host}/shop/app@{amd}"),
                            "--source", format!("{host}/shop/app@{arm}"),
                            "--target", format!("{host}/shop/app:v1"),
                            "--target", format!("{host}/shop/app:latest"),
                            "--plain-http", host,
                            "--json",
                        ],
                        "env": [{"name": "DOCKER_CONFIG", "value": "/hearth/docker"}],
                        "volumeMounts": [{"name": "docker", "mountPath": "/hearth/docker", "readOnly": true}],
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                    }],
                    "volumes": [{"name": "docker", "secret": {
                        "secretName": "push",
                        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                    }}],
                },
            },
        },
    }))
    .unwrap();
    c.jobs().create(&PostParams::default(), &job).await.unwrap();
    let message = c
        .wait_for("the index Job's pod to finish", secs(60), || async {
            let pods = c.pods().list(&Default::default()).await.ok()?;
            let pod = pods.items.into_iter().find(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("app-index"))
            })?;
            let terminated = pod
                .status?
                .container_statuses?
                .first()?
                .state
                .clone()?
                .terminated?;
            Some((terminated.exit_code, terminated.message.unwrap_or_default()))
        })
        .await;
    assert_eq!(message.0, 0, "{}", message.1);
    assert!(!message.1.contains(PASSWORD), "{}", message.1);
    let result: Value = serde_json::from_str(message.1.trim()).expect(&message.1);
    let registry = c.registry.as_ref().unwrap();
    assert_eq!(
        registry.tag("shop/app", "v1").as_deref(),
        result["digest"].as_str()
    );
    assert_eq!(
        registry.tag("shop/app", "latest").as_deref(),
        result["digest"].as_str()
    );
    let (_, index) = registry
        .manifest("shop/app", result["digest"].as_str().unwrap())
        .unwrap();
    let index: Value = serde_json::from_slice(&index).unwrap();
    let platforms: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["platform"]["architecture"])
        .collect();
    assert_eq!(platforms, [&json!("amd64"), &json!("arm64")]);
}
