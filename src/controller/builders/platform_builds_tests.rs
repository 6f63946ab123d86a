//! Tests of the fan-out's objects: each child's name, labels, owner and spec, and the index
//! Job exactly as the contract with `hearth index create` states it.

use super::*;
use crate::api::PlatformMode;
use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use serde_json::json;

fn parent(extra: serde_json::Value) -> ImageBuild {
    let mut spec = json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "platforms": ["linux/amd64", "linux/arm64/v8"],
        "output": {
            "image": "registry.example.com:5000/shop/api:1.2",
            "tags": ["latest", "mirror.example.com/shop/api:1.2"],
            "pushSecretRef": {"name": "push-creds"},
            "annotations": {
                "org.opencontainers.image.source": "https://github.com/acme/shop",
                "manifest:team": "shop",
                "index:org.opencontainers.image.description": "shop api",
                "index-descriptor:x": "y"
            }
        },
        "cache": {"key": "shop:main", "registry": {
            "importFrom": ["registry.example.com/shop/api:buildcache", "registry.example.com/shop/base:cache"],
            "exportTo": {"ref": "registry.example.com/shop/api:buildcache", "mode": "max"}
        }},
        "timeout": "45m",
        "retention": {"ttlAfterSucceeded": "2h"}
    });
    if let (Some(base), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    let mut ib = ImageBuild::new("api-42", serde_json::from_value(spec).unwrap());
    ib.metadata.namespace = Some("shop".into());
    ib.metadata.uid = Some("parent-uid".into());
    ib
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "hearth.dev/v1alpha1".into(),
        kind: "ImageBuild".into(),
        name: "api-42".into(),
        uid: "parent-uid".into(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

#[test]
fn child_names_carry_the_platform_and_fit_63_characters() {
    assert_eq!(child_build_name("api-42", "linux/amd64"), "api-42-amd64");
    assert_eq!(
        child_build_name("api-42", "linux/arm64/v8"),
        "api-42-arm64-v8"
    );
    assert_eq!(child_build_name("api-42", "linux/arm/v7"), "api-42-arm-v7");
    let long_a = format!("{}a", "x".repeat(70));
    let long_b = format!("{}b", "x".repeat(70));
    let (a, b) = (
        child_build_name(&long_a, "linux/arm64/v8"),
        child_build_name(&long_b, "linux/arm64/v8"),
    );
    assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
    assert_ne!(a, b, "distinct parents keep distinct children");
    assert!(a.ends_with("-arm64-v8"), "{a}");
    // Deterministic: a restarted controller finds the same name.
    assert_eq!(a, child_build_name(&long_a, "linux/arm64/v8"));
}

#[test]
fn a_child_is_the_parents_build_of_one_platform_pushed_by_digest() {
    let p = parent(json!({}));
    let child = child_build(&p, "linux/arm64/v8", owner());
    assert_eq!(child.metadata.name.as_deref(), Some("api-42-arm64-v8"));
    assert_eq!(child.metadata.namespace.as_deref(), Some("shop"));
    let labels = child.metadata.labels.clone().unwrap();
    assert_eq!(
        labels,
        BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "hearth".to_string()
            ),
            ("hearth.dev/parent".to_string(), "api-42".to_string()),
            ("hearth.dev/platform".to_string(), "arm64-v8".to_string()),
        ])
    );
    assert_eq!(
        child.metadata.owner_references,
        Some(vec![OwnerReference {
            controller: Some(true),
            block_owner_deletion: Some(true),
            ..owner()
        }])
    );
    assert!(is_child_of(&child, &p));

    let s = &child.spec;
    assert_eq!(s.platforms, ["linux/arm64/v8"]);
    assert_eq!(s.platform_mode, None);
    assert!(!s.fans_out());
    assert_eq!(s.output.image, "registry.example.com:5000/shop/api");
    assert!(s.output.tags.is_empty());
    assert!(s.output.push && s.output.push_by_digest);
    assert_eq!(s.output.push_secret_ref, p.spec.output.push_secret_ref);
    let annotations: Vec<&str> = s.output.annotations.keys().map(String::as_str).collect();
    assert_eq!(
        annotations,
        ["manifest:team", "org.opencontainers.image.source"],
        "manifest-level annotations only: index-level ones go on the index"
    );
    // What is built, how long it may take and how long it is kept: the parent's.
    assert_eq!(s.source, p.spec.source);
    assert_eq!(s.cache.key, p.spec.cache.key);
    assert_eq!(s.timeout, p.spec.timeout);
    assert_eq!(s.retention, p.spec.retention);
    assert!(!s.cancel);
    // Each child its own registry cache image, imported from where it exports.
    let registry = s.cache.registry.clone().unwrap();
    let export = registry.export_to.unwrap();
    assert_eq!(
        export.reference,
        "registry.example.com/shop/api:buildcache-arm64-v8"
    );
    assert_eq!(
        export.mode,
        p.spec
            .cache
            .registry
            .clone()
            .unwrap()
            .export_to
            .unwrap()
            .mode
    );
    assert_eq!(
        registry.import_from,
        [
            "registry.example.com/shop/api:buildcache-arm64-v8",
            "registry.example.com/shop/base:cache"
        ]
    );
}

#[test]
fn a_build_only_parent_has_build_only_children() {
    let mut p = parent(json!({}));
    p.spec.output.push = false;
    let child = child_build(&p, "linux/amd64", owner());
    assert!(!child.spec.output.push);
    assert!(!child.spec.output.push_by_digest);
}

#[test]
fn an_emulated_build_or_a_single_platform_does_not_fan_out() {
    let mut p = parent(json!({}));
    assert!(p.spec.fans_out());
    p.spec.platform_mode = Some(PlatformMode::Native);
    assert!(p.spec.fans_out());
    p.spec.platform_mode = Some(PlatformMode::Emulate);
    assert!(!p.spec.fans_out());
    p.spec.platform_mode = Some(PlatformMode::Native);
    p.spec.platforms = vec!["linux/arm64".into()];
    assert!(!p.spec.fans_out());
}

#[test]
fn cache_refs_per_platform_keep_their_repository_and_a_bounded_tag() {
    assert_eq!(
        ref_for_platform("registry.example.com:5000/shop/api", "linux/amd64"),
        "registry.example.com:5000/shop/api:latest-amd64"
    );
    let long = format!("r.example.com/a:{}", "t".repeat(128));
    let r = ref_for_platform(&long, "linux/arm64/v8");
    let tag = r.rsplit_once(':').unwrap().1;
    assert_eq!(tag.len(), 128);
    assert!(tag.ends_with("-arm64-v8"));
}

#[test]
fn another_builds_object_of_a_childs_name_is_not_adopted() {
    let p = parent(json!({}));
    let mut stranger = child_build(&p, "linux/amd64", owner());
    stranger.metadata.owner_references = Some(vec![OwnerReference {
        uid: "another-uid".into(),
        ..owner()
    }]);
    assert!(!is_child_of(&stranger, &p));
    stranger.metadata.owner_references = None;
    assert!(!is_child_of(&stranger, &p));
    // A non-controller reference with the parent's uid is not the parent's control either.
    stranger.metadata.owner_references = Some(vec![OwnerReference {
        controller: None,
        ..owner()
    }]);
    assert!(!is_child_of(&stranger, &p));
}

fn config() -> OperatorConfig {
    OperatorConfig::parse(
        "c.yaml",
        r#"
builder:
  hearthImage: ghcr.io/hearth/hearth:0.9
  imagePullSecrets: [hearth-pull]
buildkitd:
  registries:
    - {host: "registry.example.com:5000", http: true}
    - {host: "mirror.example.com", insecure: true}
    - {host: "docker.io", mirrors: ["mirror.gcr.io"]}
    - host: registry.internal
      ca: |
        -----BEGIN CERTIFICATE-----
        MIIBszCCAVmgAwIBAgIUKnown
        -----END CERTIFICATE-----
"#,
    )
    .unwrap()
}

#[test]
fn the_index_job_reaches_registries_through_the_builders_proxy() {
    let mut config = config();
    config.builder.proxy.https_proxy = "http://proxy.corp:3128".into();
    config.builder.proxy.no_proxy = ".svc,.cluster.local".into();
    let p = parent(json!({}));
    let job = index_job(&p, &digests(), owner(), 600, &config);
    let pod = job.spec.unwrap().template.spec.unwrap();
    let env: Vec<(String, String)> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.to_ascii_uppercase().ends_with("_PROXY"))
        .map(|e| (e.name.clone(), e.value.clone().unwrap()))
        .collect();
    let want = [
        ("HTTPS_PROXY", "http://proxy.corp:3128"),
        ("https_proxy", "http://proxy.corp:3128"),
        ("NO_PROXY", ".svc,.cluster.local"),
        ("no_proxy", ".svc,.cluster.local"),
    ]
    .map(|(n, v)| (n.to_string(), v.to_string()));
    assert_eq!(env, want);
}

fn digests() -> Vec<String> {
    vec![
        format!("sha256:{}", "a".repeat(64)),
        format!("sha256:{}", "b".repeat(64)),
    ]
}

#[test]
fn the_index_job_runs_hearth_index_create_with_exactly_the_contracts_args() {
    let p = parent(json!({}));
    let job = index_job(&p, &digests(), owner(), 1200, &config());
    let spec = job.spec.clone().unwrap();
    let pod = spec.template.spec.clone().unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.args.clone().unwrap(),
        [
            "index",
            "create",
            "--source",
            &format!(
                "registry.example.com:5000/shop/api@sha256:{}",
                "a".repeat(64)
            ),
            "--source",
            &format!(
                "registry.example.com:5000/shop/api@sha256:{}",
                "b".repeat(64)
            ),
            "--target",
            "registry.example.com:5000/shop/api:1.2",
            "--target",
            "registry.example.com:5000/shop/api:latest",
            "--target",
            "mirror.example.com/shop/api:1.2",
            "--annotation",
            "org.opencontainers.image.description=shop api",
            "--plain-http",
            "registry.example.com:5000",
            "--insecure",
            "mirror.example.com",
            "--ca-env",
            "registry.internal=HEARTH_REGISTRY_CA_3",
            "--json",
        ]
    );
    assert_eq!(
        c.command.clone().unwrap(),
        [
            "sh",
            "-c",
            "hearth \"$@\" > /dev/termination-log",
            "hearth-job"
        ]
    );
    assert_eq!(c.image.as_deref(), Some("ghcr.io/hearth/hearth:0.9"));
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    // A registry's CA bundle as a value `--ca-env` names (public, not a secret); the push
    // Secret mounted read-only as $DOCKER_CONFIG/config.json, never in env values.
    assert_eq!(
        c.env.clone().unwrap(),
        [
            k8s_openapi::api::core::v1::EnvVar {
                name: "HEARTH_REGISTRY_CA_3".into(),
                value: Some(
                    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUKnown\n-----END CERTIFICATE-----\n"
                        .into()
                ),
                value_from: None,
            },
            k8s_openapi::api::core::v1::EnvVar {
                name: "DOCKER_CONFIG".into(),
                value: Some("/hearth/docker".into()),
                value_from: None,
            }
        ]
    );
    assert_eq!(
        c.volume_mounts.clone().unwrap(),
        [VolumeMount {
            name: "docker-config".into(),
            mount_path: "/hearth/docker".into(),
            read_only: Some(true),
            ..Default::default()
        }]
    );
    assert_eq!(
        pod.volumes.clone().unwrap(),
        [Volume {
            name: "docker-config".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("push-creds".into()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "config.json".into(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    );
    // Unprivileged, no API token, the operator's pull secrets.
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "hearth-pull");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    // Named, labelled and owned as the parent's.
    assert_eq!(job.metadata.name.as_deref(), Some("api-42-index-1"));
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["hearth.dev/role"], "index");
    assert_eq!(labels["hearth.dev/build"], "api-42");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "hearth");
    let owners = job.metadata.owner_references.clone().unwrap();
    assert_eq!(owners[0].uid, "parent-uid");
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(spec.active_deadline_seconds, Some(1200));
}

#[test]
fn without_a_push_secret_the_index_job_pushes_anonymously() {
    let mut p = parent(json!({}));
    p.spec.output.push_secret_ref = None;
    p.spec.output.annotations.clear();
    p.spec.output.tags.clear();
    let job = index_job(&p, &digests()[..1], owner(), 30, &OperatorConfig::default());
    let pod = job.spec.clone().unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.env, None);
    assert_eq!(c.volume_mounts, None);
    assert_eq!(pod.volumes, None);
    assert_eq!(
        c.args.clone().unwrap(),
        [
            "index",
            "create",
            "--source",
            &format!(
                "registry.example.com:5000/shop/api@sha256:{}",
                "a".repeat(64)
            ),
            "--target",
            "registry.example.com:5000/shop/api:1.2",
            "--json",
        ]
    );
    assert_eq!(
        job.spec.unwrap().active_deadline_seconds,
        Some(60),
        "at least a minute"
    );
}

#[test]
fn every_child_passes_the_crds_own_rules() {
    // The API server validates what the controller creates as it validates users' objects.
    let p = parent(json!({}));
    for platform in ["linux/amd64", "linux/arm64/v8"] {
        let child = child_build(&p, platform, owner());
        let v = crate::api::check::check(&serde_json::to_value(&child).unwrap(), None).unwrap();
        assert!(v.is_empty(), "{platform}: {v:?}");
    }
}

#[test]
fn the_index_job_logs_in_with_the_builders_identity_when_a_provider_serves_a_target() {
    let mut p = parent(json!({}));
    p.spec.output.image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api:1.2".into();
    let mut config = config();
    config.builder.service_account_name = "builder".into();
    config.builder.registry_login.providers = vec![crate::registry_login::hosts::Provider::Ecr];
    let job = index_job(&p, &digests(), owner(), 1200, &config);
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("builder"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let init = pod.init_containers.clone().unwrap();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].name, "registry-login");
    assert_eq!(
        init[0].args.clone().unwrap(),
        [
            "registry-login",
            "--provider",
            "ecr",
            "--registry",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "--base",
            "/run/hearth/docker-base",
            "--out",
            "/hearth/docker",
        ]
    );
    // index create reads the login's output; the push Secret goes to the login alone.
    let c = &pod.containers[0];
    assert_eq!(
        c.volume_mounts.clone().unwrap(),
        [VolumeMount {
            name: "registry-login".into(),
            mount_path: "/hearth/docker".into(),
            read_only: Some(true),
            ..Default::default()
        }]
    );
    let volumes = pod.volumes.unwrap();
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["registry-login", "docker-config"]
    );
    assert_eq!(
        init[0].volume_mounts.clone().unwrap()[1],
        VolumeMount {
            name: "docker-config".into(),
            mount_path: "/run/hearth/docker-base".into(),
            read_only: Some(true),
            ..Default::default()
        }
    );

    // Login off (the default): no init container and the pods' default ServiceAccount.
    let job = index_job(&p, &digests(), owner(), 1200, &self::config());
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.init_containers, None);
    assert_eq!(pod.service_account_name, None);
}
