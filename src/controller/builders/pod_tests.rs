//! Tests of the builder Pod: what rootless BuildKit gets, and what it must never get.

use super::*;
use crate::api::ImageBuildSpec;
use crate::controller::builders::restricted;

fn build(spec: serde_json::Value) -> ImageBuild {
    let spec: ImageBuildSpec = serde_json::from_value(spec).expect("spec");
    let mut ib = ImageBuild::new("api-42", spec);
    ib.metadata.namespace = Some("shop".into());
    ib
}

fn full() -> ImageBuild {
    build(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main", "subPath": "svc/api", "secretRef": {"name": "gh"}}},
        "dockerfile": "docker/api.Dockerfile",
        "target": "runtime",
        "buildArgs": {"PY": "3.12"},
        "platforms": ["linux/amd64", "linux/arm64"],
        "secrets": [{"id": "pip", "secretRef": {"name": "pip-creds", "key": "index-url"}}],
        "ssh": [{"id": "default", "secretRef": {"name": "deploy-key", "key": "ssh-privatekey"}}],
        "labels": {"team": "shop"},
        "output": {"image": "registry.example.com/shop/api:1", "pushSecretRef": {"name": "push"}},
        "resources": {"requests": {"cpu": "2"}},
        "nodeSelector": {"pool": "builders"},
        "tolerations": [{"key": "builders", "operator": "Exists", "effect": "NoSchedule"}]
    }))
}

fn inputs(state: StateVolume) -> BuilderInputs {
    BuilderInputs {
        attempt: 1,
        state,
        pin: Pin::Node("node-3".into()),
        gc_keep_bytes: Some(40_000_000_000),
        prune: None,
        deadline_seconds: 3000,
        import_cache: Vec::new(),
        owner: OwnerReference {
            api_version: "hearth.dev/v1alpha1".into(),
            kind: "ImageBuild".into(),
            name: "api-42".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    }
}

fn pos(args: &[String], a: &str, b: &str) -> bool {
    args.windows(2).any(|w| w[0] == a && w[1] == b)
}

#[test]
fn buildctl_gets_every_build_option_as_separate_arguments() {
    let args = buildctl_args(&full(), &[]).unwrap();
    assert!(pos(
        &args,
        "--opt",
        "context=https://github.com/acme/shop.git#main:svc/api"
    ));
    assert!(pos(&args, "--opt", "filename=docker/api.Dockerfile"));
    assert!(pos(&args, "--opt", "target=runtime"));
    assert!(pos(&args, "--opt", "build-arg:PY=3.12"));
    assert!(pos(&args, "--opt", "label:team=shop"));
    assert!(pos(&args, "--opt", "platform=linux/amd64,linux/arm64"));
    assert!(pos(&args, "--secret", "id=pip,src=/run/hearth/secrets/pip"));
    assert!(
        !args
            .iter()
            .any(|a| a.contains("GIT_AUTH") || a.contains("/run/hearth/git")),
        "git credentials are the script's to add, by the Secret's keys: {args:?}"
    );
    assert!(pos(
        &args,
        "--output",
        "type=image,name=registry.example.com/shop/api:1,push=true"
    ));
    assert!(pos(&args, "--metadata-file", METADATA_FILE));
}

#[test]
fn pod_is_rootless_pinned_and_bounded() {
    let pod = builder_pod(
        &full(),
        &inputs(StateVolume::Replica("shop-main-r0".into())),
        &OperatorConfig::default(),
    )
    .unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("api-42-build-1"));
    let spec = pod.spec.unwrap();
    assert!(spec.node_name.is_none());
    let req = &spec
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms[0]
        .match_expressions
        .clone()
        .unwrap()[0];
    assert_eq!(req.values.as_ref().unwrap(), &["node-3"]);
    assert_eq!(spec.active_deadline_seconds, Some(3000));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.node_selector.unwrap()["pool"], "builders");
    assert_eq!(spec.tolerations.unwrap().len(), 1);
    let c = &spec.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.privileged, Some(false));
    assert!(sc.capabilities.is_none(), "no added capabilities");
    assert_eq!(
        c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
        "2"
    );
    let flags = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "BUILDKITD_FLAGS")
        .unwrap()
        .value
        .clone()
        .unwrap();
    assert!(
        flags.contains("--root /cache/buildkit")
            && flags.contains("--oci-worker-gc-keepstorage=40000"),
        "{flags}"
    );
    let volumes = spec.volumes.unwrap();
    assert_eq!(
        volumes[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "shop-main-r0"
    );
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("File"),
        "the script writes the message; the kubelet never copies the raw log"
    );
    assert_eq!(METADATA_FILE, format!("{WORK_DIR}/metadata.json"));
}

#[test]
fn secrets_are_mounted_read_only_never_in_env_or_args() {
    let pod = builder_pod(
        &full(),
        &inputs(StateVolume::Replica("r".into())),
        &OperatorConfig::default(),
    )
    .unwrap();
    let spec = pod.spec.unwrap();
    let c = &spec.containers[0];
    let mounts = c.volume_mounts.clone().unwrap();
    for name in [
        "build-secrets",
        "git-credentials",
        "registry-credentials",
        "ssh-keys",
    ] {
        let m = mounts
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} mounted"));
        assert_eq!(m.read_only, Some(true), "{name}");
    }
    let env = format!("{:?}", c.env);
    assert!(
        !env.contains("secretKeyRef") && !env.contains("pip-creds") && !env.contains("deploy-key"),
        "{env}"
    );
    // A failed build's log is redacted of every mounted secret, the SSH keys included.
    let redacted = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == REDACT_DIRS_ENV)
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    for dir in [SECRETS_DIR, GIT_DIR, DOCKER_CONFIG_DIR, frontend::SSH_DIR] {
        assert!(redacted.split(' ').any(|d| d == dir), "{dir} in {redacted}");
    }
    let args = c.args.clone().unwrap().join(" ");
    assert!(
        !args.contains("pip-creds") && !args.contains("index-url") && !args.contains("deploy-key"),
        "secret names/keys are not in args: {args}"
    );
}

#[test]
fn readonly_builds_get_a_throwaway_volume_seeded_by_an_init_restore() {
    let state = StateVolume::Throwaway { seed: Some(seed()) };
    let mut config = OperatorConfig::default();
    config.snapshot.store = "s3://caches".into();
    let pod = builder_pod(&full(), &inputs(state), &config).unwrap();
    let spec = pod.spec.unwrap();
    assert!(spec.volumes.as_ref().unwrap()[0].empty_dir.is_some());
    assert!(
        spec.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.persistent_volume_claim.is_none()),
        "no replica PVC at all"
    );
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init.args.as_ref().unwrap()[..],
        [
            "snapshot",
            "restore",
            "snap-7",
            STATE_DIR,
            "--manifest-sha256",
            &"cd".repeat(32),
            "--json"
        ],
        "the seed restore is pinned to the manifest digest its save reported"
    );
    // The seed restore reads the store with the namespace's Secret, mounted for it alone.
    let volumes = spec.volumes.clone().unwrap();
    let creds = volumes
        .iter()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("hearth-store"))
        .expect("the store Secret volume");
    assert_eq!(creds.secret.as_ref().unwrap().optional, Some(false));
    assert!(init.env_from.is_none());
    assert!(init
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == creds.name && m.read_only == Some(true)));
    assert_build_never_sees(&spec.containers, &creds.name);
}

#[test]
fn a_restored_replica_is_filled_by_an_init_restore_before_buildkitd_starts() {
    let state = StateVolume::Restored {
        pvc: "shop-fx-r0".into(),
        seed: seed(),
    };
    let mut config = OperatorConfig::default();
    config.snapshot.store = "s3://caches".into();
    let pod = builder_pod(&upload_build(), &inputs(state), &config).unwrap();
    let spec = pod.spec.unwrap();
    let volumes = spec.volumes.clone().unwrap();
    let cache = volumes.iter().find(|v| v.name == "cache").unwrap();
    assert_eq!(
        cache.persistent_volume_claim.as_ref().unwrap().claim_name,
        "shop-fx-r0",
        "the restore fills the replica the build then uses"
    );
    let inits = spec.init_containers.unwrap();
    // The restore first; the upload window opens once the cache is in.
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        [RESTORE_CONTAINER, RECEIVER_CONTAINER]
    );
    let restore = &inits[0];
    assert_eq!(
        restore.args.as_ref().unwrap()[..6],
        [
            "snapshot",
            "restore",
            "snap-7",
            STATE_DIR,
            "--manifest-sha256",
            &"cd".repeat(32)
        ]
    );
    assert!(restore
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == "cache" && m.mount_path == CACHE_MOUNT));
    let creds = volumes
        .iter()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("hearth-store"))
        .expect("the store Secret volume");
    assert_build_never_sees(&spec.containers, &creds.name);
}

fn seed() -> Seed {
    Seed {
        cache: "shop-main".into(),
        snapshot: "snap-7".into(),
        manifest_sha256: "cd".repeat(32),
    }
}

#[test]
fn unsupported_contexts_name_the_field() {
    let ib = build(
        serde_json::json!({"source": {"context": {"url": "s3://ctx/a.tgz"}}, "output": {"image": "r.io/a/b"}}),
    );
    let err = builder_pod(
        &ib,
        &inputs(StateVolume::Throwaway { seed: None }),
        &OperatorConfig::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("spec.source.context.url: s3://"),
        "{err}"
    );
    let ib = build(
        serde_json::json!({"source": {"context": {"pvc": {"claimName": "src", "path": "app"}}}, "output": {"image": "r.io/a/b", "push": false}}),
    );
    let args = buildctl_args(&ib, &[]).unwrap();
    assert!(pos(&args, "--local", "context=/workspace/app"));
    assert!(pos(
        &args,
        "--output",
        "type=image,name=r.io/a/b,push=false"
    ));
}

#[test]
fn tags_annotations_attestations_and_registry_cache_in_exact_buildctl_args() {
    let ib = build(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git"}},
        "output": {
            "image": "registry.example.com/shop/api:1",
            "tags": ["latest"],
            "annotations": {"org.opencontainers.image.source": "https://github.com/acme/shop"},
            "compression": "zstd",
            "attestations": {"sbom": true}
        },
        "cache": {"registry": {
            "importFrom": ["registry.example.com/shop/api:cache"],
            "exportTo": {"ref": "registry.example.com/shop/api:cache"}
        }},
        "frontendOptions": {"shm-size": "1073741824"}
    }));
    let seeded = ["registry.example.com/shop/api:cache".to_string()];
    let args = buildctl_args(&ib, &seeded).unwrap();
    let expected: Vec<String> = [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--progress",
        "plain",
        "--opt",
        "context=https://github.com/acme/shop.git",
        "--opt",
        "filename=Dockerfile",
        "--opt",
        "attest:provenance=mode=min",
        "--opt",
        "attest:sbom=",
        "--opt",
        "shm-size=1073741824",
        "--import-cache",
        "type=registry,ref=registry.example.com/shop/api:cache",
        "--export-cache",
        "type=registry,ref=registry.example.com/shop/api:cache,mode=min",
        "--output",
        "type=image,\"name=registry.example.com/shop/api:1,registry.example.com/shop/api:latest\",push=true,compression=zstd,annotation.org.opencontainers.image.source=https://github.com/acme/shop",
        "--metadata-file",
        METADATA_FILE,
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(args, expected);
    // The pod runs what the inputs say: the seeded refs reach the container's args.
    let mut seeded_inputs = inputs(StateVolume::Replica("shop-main-r0".into()));
    seeded_inputs.import_cache = seeded.to_vec();
    let pod = builder_pod(&ib, &seeded_inputs, &OperatorConfig::default()).unwrap();
    let pod_args = pod.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(pos(
        &pod_args,
        "--import-cache",
        "type=registry,ref=registry.example.com/shop/api:cache"
    ));
    let hot = builder_pod(
        &ib,
        &inputs(StateVolume::Replica("shop-main-r0".into())),
        &OperatorConfig::default(),
    )
    .unwrap();
    let hot_args = hot.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(!hot_args.contains(&"--import-cache".to_string()));
}

#[test]
fn digest_is_read_from_metadata_even_when_cut() {
    let d = format!("sha256:{}", "a".repeat(64));
    let whole = format!("{{\"containerimage.digest\": \"{d}\", \"image.name\": \"r.io/a\"}}");
    assert_eq!(digest_from_metadata(&whole), Some(d.clone()));
    let cut = format!("{{\n  \"containerimage.descriptor\": {{}},\n  \"containerimage.digest\": \"{d}\",\n  \"containerimage.config\": \"eyJhcmNoaXRlY");
    assert_eq!(digest_from_metadata(&cut), Some(d));
    assert_eq!(digest_from_metadata("error: failed to solve"), None);
}

fn upload_build() -> ImageBuild {
    build(serde_json::json!({
        "source": {"upload": {"sha256": "ab".repeat(32), "size": 4096, "timeout": "5m", "origin": "github.com/acme/shop"}},
        "dockerfile": "docker/Dockerfile",
        "output": {"image": "r.io/shop/api:dev"}
    }))
}

#[test]
fn upload_builds_wait_for_the_context_in_a_receiver_init_container() {
    let mut config = OperatorConfig::default();
    config.builder.hearth_image = "ghcr.io/hearth-dev/hearth:test".into();
    config.snapshot.store = "s3://caches".into();
    let state = StateVolume::Throwaway { seed: Some(seed()) };
    let pod = builder_pod(&upload_build(), &inputs(state), &config).unwrap();
    let spec = pod.spec.unwrap();
    let inits = spec.init_containers.unwrap();
    // The seed restore first, the receiver last: the upload window opens once the cache is in.
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["restore", RECEIVER_CONTAINER]
    );
    let r = &inits[1];
    assert_eq!(r.image.as_deref(), Some("ghcr.io/hearth-dev/hearth:test"));
    assert_eq!(r.command.as_deref(), Some(&["hearth".to_string()][..]));
    let sha = "ab".repeat(32);
    assert_eq!(
        r.args.clone().unwrap(),
        [
            "receive",
            "--dir",
            UPLOAD_DIR,
            "--sha256",
            &sha,
            "--size",
            "4096",
            "--timeout",
            "300s"
        ]
    );
    let sc = r.security_context.as_ref().unwrap();
    assert_eq!(
        (
            sc.run_as_non_root,
            sc.allow_privilege_escalation,
            sc.read_only_root_filesystem
        ),
        (Some(true), Some(false), Some(true))
    );
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    let rm = &r.volume_mounts.as_ref().unwrap()[0];
    assert_eq!((rm.name.as_str(), rm.read_only), ("upload", None));
    assert!(spec
        .volumes
        .unwrap()
        .iter()
        .any(|v| v.name == "upload" && v.empty_dir.is_some()));

    // buildkit reads the received context, read-only, as both local sources.
    let c = &spec.containers[0];
    let m = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "upload")
        .unwrap();
    assert_eq!(
        (m.mount_path.as_str(), m.read_only),
        (UPLOAD_DIR, Some(true))
    );
    let args = c.args.clone().unwrap();
    assert!(pos(&args, "--local", "context=/upload/context"));
    assert!(pos(&args, "--local", "dockerfile=/upload/context"));
    assert!(pos(&args, "--opt", "filename=docker/Dockerfile"));
    assert!(
        !args
            .windows(2)
            .any(|w| w[0] == "--opt" && w[1].starts_with("context=")),
        "no remote context: {args:?}"
    );
}

#[test]
fn non_upload_builds_have_no_receiver() {
    let pod = builder_pod(
        &full(),
        &inputs(StateVolume::Replica("r".into())),
        &OperatorConfig::default(),
    )
    .unwrap();
    let spec = pod.spec.unwrap();
    assert!(spec.init_containers.is_none());
    assert!(!spec.volumes.unwrap().iter().any(|v| v.name == "upload"));
}

/// The build container mounts no volume named `volume` (the store credentials).
fn assert_build_never_sees(containers: &[Container], volume: &str) {
    assert!(
        containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .all(|m| m.name != volume),
        "the build never sees the store credentials"
    );
}

fn env_of(pod: &Pod) -> Vec<(String, String)> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect()
}

#[test]
fn the_whole_git_secret_is_mounted_and_the_script_told_the_transport_and_host() {
    let env_for = |url: &str| {
        let ib = build(serde_json::json!({
            "source": {"git": {"url": url, "secretRef": {"name": "git"}}},
            "output": {"image": "registry.example.com/shop/api:1"}
        }));
        let pod = builder_pod(
            &ib,
            &inputs(StateVolume::Replica("r".into())),
            &OperatorConfig::default(),
        )
        .unwrap();
        let volume = pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "git-credentials")
            .cloned()
            .unwrap();
        let secret = volume.secret.unwrap();
        assert_eq!(
            (secret.secret_name.as_deref(), secret.items),
            (Some("git"), None),
            "every key"
        );
        env_of(&pod)
            .into_iter()
            // (HEARTH_GIT_URL is for the script's report of the resolved commit.)
            .filter(|(k, _)| k.starts_with("HEARTH_GIT") && k != "HEARTH_GIT_URL")
            .collect::<Vec<_>>()
    };
    let pairs = |p: &[(&str, &str)]| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        env_for("https://deploy@git.example.com:8443/acme/shop.git"),
        pairs(&[
            ("HEARTH_GIT_SECRET_DIR", "/run/hearth/git"),
            ("HEARTH_GIT_TRANSPORT", "https"),
            ("HEARTH_GIT_HOST", "git.example.com:8443")
        ])
    );
    assert_eq!(
        env_for("https://github.com/acme/shop.git"),
        pairs(&[
            ("HEARTH_GIT_SECRET_DIR", "/run/hearth/git"),
            ("HEARTH_GIT_TRANSPORT", "https"),
            ("HEARTH_GIT_HOST", "github.com")
        ])
    );
    for url in [
        "git@github.com:acme/shop.git",
        "ssh://git@github.com/acme/shop.git",
    ] {
        assert_eq!(
            env_for(url),
            pairs(&[
                ("HEARTH_GIT_SECRET_DIR", "/run/hearth/git"),
                ("HEARTH_GIT_TRANSPORT", "ssh")
            ])
        );
    }
    // No secretRef: the script adds nothing.
    let pod = builder_pod(
        &upload_build(),
        &inputs(StateVolume::Replica("r".into())),
        &OperatorConfig::default(),
    )
    .unwrap();
    assert!(!env_of(&pod)
        .iter()
        .any(|(k, _)| k.starts_with("HEARTH_GIT")));
    let redact = env_of(&pod)
        .into_iter()
        .find(|(k, _)| k == "HEARTH_REDACT_DIRS")
        .unwrap()
        .1;
    assert!(
        redact.split(' ').any(|d| d == "/tmp/hearth/git-auth"),
        "{redact}"
    );
}

fn operator_config() -> OperatorConfig {
    let mut config = OperatorConfig::default();
    let b = &mut config.builder;
    b.service_account_name = "builder".into();
    b.image_pull_secrets = vec!["mirror-pull".into()];
    b.pod_labels = [("team", "platform"), (labels::ROLE, "not-hearths")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    b.pod_annotations = [("cluster-autoscaler.kubernetes.io/safe-to-evict", "false")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    b.priority_class_name = "builds".into();
    b.runtime_class_name = "runc".into();
    b.read_only_runtime_class_name = "kata".into();
    b.proxy.http_proxy = "http://proxy.corp:3128".into();
    b.proxy.no_proxy = ".svc,10.0.0.0/8".into();
    config
}

fn pod_with(ib: &ImageBuild, config: &OperatorConfig) -> Pod {
    builder_pod(ib, &inputs(StateVolume::Replica("r".into())), config).unwrap()
}

#[test]
fn operator_settings_reach_the_builder_pod() {
    let pod = pod_with(&full(), &operator_config());
    let meta = &pod.metadata;
    let labels = meta.labels.clone().unwrap();
    assert_eq!(labels["team"], "platform");
    assert_eq!(
        labels[labels::ROLE],
        contract::BUILDER_ROLE,
        "Hearth's labels win"
    );
    assert_eq!(
        meta.annotations.clone().unwrap()["cluster-autoscaler.kubernetes.io/safe-to-evict"],
        "false"
    );
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("builder"));
    assert_eq!(
        spec.automount_service_account_token,
        Some(false),
        "workload identity needs no API token"
    );
    assert_eq!(
        spec.image_pull_secrets.unwrap()[0].name,
        "mirror-pull".to_string()
    );
    assert_eq!(spec.priority_class_name.as_deref(), Some("builds"));
    assert_eq!(spec.runtime_class_name.as_deref(), Some("runc"));
    let env = env_of(&pod);
    for (name, value) in [
        ("HTTP_PROXY", "http://proxy.corp:3128"),
        ("http_proxy", "http://proxy.corp:3128"),
        ("NO_PROXY", ".svc,10.0.0.0/8"),
        ("no_proxy", ".svc,10.0.0.0/8"),
    ] {
        assert!(
            env.contains(&(name.to_string(), value.to_string())),
            "{name}: {env:?}"
        );
    }
    assert!(!env
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("HTTPS_PROXY")));
    let args = pod.spec.unwrap().containers[0].args.clone().unwrap();
    for arg in [
        "build-arg:HTTP_PROXY=http://proxy.corp:3128",
        "build-arg:http_proxy=http://proxy.corp:3128",
        "build-arg:NO_PROXY=.svc,10.0.0.0/8",
        "build-arg:no_proxy=.svc,10.0.0.0/8",
    ] {
        assert!(pos(&args, "--opt", arg), "{arg}: {args:?}");
    }
}

#[test]
fn a_builds_own_proxy_build_args_win() {
    let ib = build(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git"}},
        "buildArgs": {"HTTP_PROXY": "http://mine:8080"},
        "output": {"image": "registry.example.com/shop/api:1"}
    }));
    let args = pod_with(&ib, &operator_config()).spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    let http: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("build-arg:HTTP_PROXY="))
        .collect();
    assert_eq!(http, ["build-arg:HTTP_PROXY=http://mine:8080"]);
    assert!(pos(
        &args,
        "--opt",
        "build-arg:http_proxy=http://proxy.corp:3128"
    ));
}

#[test]
fn readonly_builds_run_in_their_own_runtime_class_when_one_is_set() {
    let mode = |mode: &str, config: &OperatorConfig| {
        let ib = build(serde_json::json!({
            "source": {"git": {"url": "https://github.com/acme/shop.git"}},
            "cache": {"mode": mode},
            "output": {"image": "registry.example.com/shop/api:1"}
        }));
        pod_with(&ib, config).spec.unwrap().runtime_class_name
    };
    let mut config = operator_config();
    assert_eq!(mode("ReadOnly", &config).as_deref(), Some("kata"));
    assert_eq!(mode("ReadWrite", &config).as_deref(), Some("runc"));
    assert_eq!(mode("Disabled", &config).as_deref(), Some("runc"));
    config.builder.read_only_runtime_class_name.clear();
    assert_eq!(mode("ReadOnly", &config).as_deref(), Some("runc"));
}

#[test]
fn without_settings_the_pod_has_no_account_pull_secrets_classes_or_proxy() {
    let pod = pod_with(&full(), &OperatorConfig::default());
    assert!(pod.metadata.annotations.is_none());
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.service_account_name, None);
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.image_pull_secrets, None);
    assert_eq!(spec.priority_class_name, None);
    assert_eq!(spec.runtime_class_name, None);
    assert!(!env_of(&pod)
        .iter()
        .any(|(k, _)| k.to_ascii_uppercase().ends_with("_PROXY")));
    let args = spec.containers[0].args.clone().unwrap().join(" ");
    assert!(!args.contains("PROXY"), "{args}");
}

#[test]
fn buildkitds_configuration_travels_in_the_pods_env_and_its_flags_name_it() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let config = OperatorConfig {
        buildkitd: serde_yaml::from_str(&format!(
            "registries: [{{host: docker.io, mirrors: [mirror.corp]}}, {{host: 'registry.internal:5000', http: true, ca: {pem:?}}}]"
        ))
        .unwrap(),
        ..Default::default()
    };
    let env = env_of(&pod_with(&full(), &config));
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(
        get("BUILDKITD_FLAGS").unwrap(),
        "--oci-worker-no-process-sandbox --root /cache/buildkit --oci-worker-gc --oci-worker-gc-keepstorage=40000 --config /tmp/hearth/buildkitd/buildkitd.toml"
    );
    assert_eq!(
        get("HEARTH_BUILDKITD_DIR").as_deref(),
        Some("/tmp/hearth/buildkitd")
    );
    assert_eq!(
        get("HEARTH_BUILDKITD_CONFIG").unwrap(),
        "# Rendered by Hearth from its operator config (buildkitd.registries).\n\n[registry.\"docker.io\"]\n  mirrors = [\"mirror.corp\"]\n\n[registry.\"registry.internal:5000\"]\n  http = true\n  ca = [\"/tmp/hearth/buildkitd/ca-1.pem\"]\n"
    );
    assert_eq!(get("HEARTH_BUILDKITD_CA_1").as_deref(), Some(pem));
    assert_eq!(get("HEARTH_BUILDKITD_CA_0"), None);

    // Without registries: no file, no flag.
    let env = env_of(&pod_with(&full(), &OperatorConfig::default()));
    assert!(!env
        .iter()
        .any(|(k, v)| k.starts_with("HEARTH_BUILDKITD") || v.contains("--config")));
}

/// The `--opt`s and `--local`s of buildctl's args, in order, as `flag value` pairs.
fn source_args(args: &[String]) -> Vec<String> {
    args.windows(2)
        .filter(|w| {
            (w[0] == "--opt"
                && ["context=", "contextsubdir=", "filename="]
                    .iter()
                    .any(|p| w[1].starts_with(p)))
                || w[0] == "--local"
        })
        .map(|w| format!("{} {}", w[0], w[1]))
        .collect()
}

#[test]
fn a_dockerfile_outside_the_context_is_read_from_the_repository_or_volume_root() {
    let git = |dockerfile: &str| {
        build(serde_json::json!({
            "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main", "subPath": "svc/api"}},
            "dockerfile": dockerfile, "output": {"image": "r.io/a/b"}}))
    };
    // Inside: the subdir is the git context, as before.
    assert_eq!(
        source_args(&buildctl_args(&git("docker/Dockerfile"), &[]).unwrap()),
        [
            "--opt context=https://github.com/acme/shop.git#main:svc/api",
            "--opt filename=docker/Dockerfile"
        ]
    );
    // Outside: the whole repository, the context scoped to the subdir (BuildKit's
    // contextsubdir), the Dockerfile from the repository root.
    assert_eq!(
        source_args(&buildctl_args(&git("../../docker/api.Dockerfile"), &[]).unwrap()),
        [
            "--opt context=https://github.com/acme/shop.git#main",
            "--opt contextsubdir=svc/api",
            "--opt filename=docker/api.Dockerfile"
        ]
    );
    assert_eq!(
        source_args(&buildctl_args(&git("../Dockerfile"), &[]).unwrap()),
        [
            "--opt context=https://github.com/acme/shop.git#main",
            "--opt contextsubdir=svc/api",
            "--opt filename=svc/Dockerfile"
        ]
    );
    let err = buildctl_args(&git("../../../Dockerfile"), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"spec.dockerfile: "../../../Dockerfile" from the context "svc/api" leads out of the repository"#
    );

    let pvc = build(serde_json::json!({
        "source": {"context": {"pvc": {"claimName": "src", "path": "app"}}},
        "dockerfile": "../build/Dockerfile", "output": {"image": "r.io/a/b"}}));
    assert_eq!(
        source_args(&buildctl_args(&pvc, &[]).unwrap()),
        [
            "--local context=/workspace/app",
            "--local dockerfile=/workspace",
            "--opt filename=build/Dockerfile"
        ]
    );

    // An upload carries the context only (the CRD refuses it; an object from before).
    let upload = build(serde_json::json!({
        "source": {"upload": {"sha256": "a".repeat(64), "size": 10}},
        "dockerfile": "../Dockerfile", "output": {"image": "r.io/a/b"}}));
    assert!(buildctl_args(&upload, &[])
        .unwrap_err()
        .to_string()
        .starts_with("spec.dockerfile: \"../Dockerfile\" is outside the context"));
}

/// A build pushing to ECR, importing from and exporting to registry caches.
fn ecr_build(push_secret: bool) -> ImageBuild {
    let mut output = serde_json::json!({
        "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api:1",
        "tags": ["ghcr.io/acme/api:1"]
    });
    if push_secret {
        output["pushSecretRef"] = serde_json::json!({"name": "push"});
    }
    build(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git"}},
        "output": output,
        "cache": {"registry": {"exportTo": {"ref": "europe-docker.pkg.dev/acme/cache/api:buildcache"}}}
    }))
}

fn login_config(providers: &str, registries: &str) -> OperatorConfig {
    let text = format!(
        "builder: {{hearthImage: 'ghcr.io/hearth/hearth:0.9', registryLogin: {{providers: [{providers}], registries: [{registries}]}}}}"
    );
    OperatorConfig::parse("c.yaml", &text).unwrap()
}

#[test]
fn registry_login_runs_first_and_only_buildctl_reads_what_it_wrote() {
    let mut inputs = inputs(StateVolume::Throwaway { seed: Some(seed()) });
    inputs.import_cache = vec!["111111111111.dkr.ecr.us-east-1.amazonaws.com/cache:api".into()];
    let mut config = login_config("ecr, gcp", "us-docker.pkg.dev");
    config.snapshot.store = "s3://caches".into();
    let pod = builder_pod(&ecr_build(true), &inputs, &config).unwrap();
    let spec = pod.spec.unwrap();
    let init = spec.init_containers.clone().unwrap();
    assert_eq!(
        init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["registry-login", RESTORE_CONTAINER]
    );
    let login = &init[0];
    assert_eq!(
        login,
        &Container {
            name: "registry-login".into(),
            image: Some("ghcr.io/hearth/hearth:0.9".into()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec!["hearth".into()]),
            args: Some(
                [
                    "registry-login",
                    "--provider",
                    "ecr",
                    "--provider",
                    "gcp",
                    // Output names (ghcr.io is no provider's), the import, the export, the
                    // operator's extra registry: sorted, each once.
                    "--registry",
                    "111111111111.dkr.ecr.us-east-1.amazonaws.com",
                    "--registry",
                    "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                    "--registry",
                    "europe-docker.pkg.dev",
                    "--registry",
                    "us-docker.pkg.dev",
                    "--base",
                    "/run/hearth/docker-base",
                    "--out",
                    DOCKER_CONFIG_DIR,
                ]
                .map(String::from)
                .to_vec()
            ),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "registry-login".into(),
                    mount_path: DOCKER_CONFIG_DIR.into(),
                    read_only: Some(false),
                    ..Default::default()
                },
                VolumeMount {
                    name: "registry-credentials".into(),
                    mount_path: "/run/hearth/docker-base".into(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            security_context: Some(restricted()),
            ..Default::default()
        }
    );
    let volumes = spec.volumes.clone().unwrap();
    let tokens = volumes.iter().find(|v| v.name == "registry-login").unwrap();
    assert_eq!(
        tokens.empty_dir,
        Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                "1Mi".into()
            )),
        })
    );
    let secret = volumes
        .iter()
        .find(|v| v.name == "registry-credentials")
        .unwrap();
    assert_eq!(
        secret.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("push")
    );
    // buildctl reads the login's output, read-only, and never mounts the Secret itself.
    let c = &spec.containers[0];
    let mounts = c.volume_mounts.clone().unwrap();
    assert!(mounts.contains(&VolumeMount {
        name: "registry-login".into(),
        mount_path: DOCKER_CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }));
    assert!(!mounts.iter().any(|m| m.name == "registry-credentials"));
    let env = c.env.clone().unwrap();
    assert!(env
        .iter()
        .any(|e| e.name == "DOCKER_CONFIG" && e.value.as_deref() == Some(DOCKER_CONFIG_DIR)));
    // Nothing secret in the login's spec: no env at all.
    assert_eq!(login.env, None);
}

#[test]
fn registry_login_without_a_push_secret_and_off_when_no_provider_serves_the_build() {
    let pod = builder_pod(
        &ecr_build(false),
        &inputs(StateVolume::Replica("r".into())),
        &login_config("ecr", ""),
    )
    .unwrap();
    let spec = pod.spec.unwrap();
    let login = &spec.init_containers.unwrap()[0];
    let args = login.args.clone().unwrap();
    assert!(!args.contains(&"--base".to_string()), "{args:?}");
    assert_eq!(
        args[args.len() - 4..],
        [
            "--registry",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "--out",
            DOCKER_CONFIG_DIR
        ]
    );
    assert_eq!(login.volume_mounts.as_ref().unwrap().len(), 1);

    // Only gcp, and the build names no Google registry (its export gone).
    let config = login_config("gcp", "");
    let mut build = ecr_build(true);
    build.spec.cache.registry = None;
    let pod = builder_pod(&build, &inputs(StateVolume::Replica("r".into())), &config).unwrap();
    let spec = pod.spec.unwrap();
    // No login: the push Secret mounted for buildctl as before.
    assert_eq!(spec.init_containers, None);
    let mounts = spec.containers[0].volume_mounts.clone().unwrap();
    assert!(mounts.contains(&VolumeMount {
        name: "registry-credentials".into(),
        mount_path: DOCKER_CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }));
}
