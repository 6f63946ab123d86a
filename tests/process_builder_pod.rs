//! Process level: the operator config's builder-pod settings and buildkitd configuration, read
//! by the real `hearth controller` from the chart-shaped config file, reach the builder pod it
//! creates, and the pod's real script writes `buildkitd.toml` where buildkitd's `--config`
//! points, and a basic-auth git Secret's `Authorization` header, before buildctl runs (see
//! tests/cluster/mod.rs).

mod cluster;

use std::path::PathBuf;

use cluster::{secs, ClusterOpts, TestCluster, Values};
use hearth::api::{ImageBuild, ImageBuildSpec};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// Builds `shop-1` from a git source (with the git Secret `secret`, if any) until it succeeds.
async fn build(c: &TestCluster, secret: Option<&str>) -> ImageBuild {
    let mut git = json!({"url": "https://github.com/acme/shop.git", "revision": "main"});
    if let Some(name) = secret {
        git["secretRef"] = json!({ "name": name });
    }
    let spec: ImageBuildSpec = serde_json::from_value(json!({
        "source": {"git": git},
        "output": {"image": "registry.example/acme/shop:main"},
        "cache": {"key": "shop:main", "mode": "ReadWrite"}
    }))
    .expect("spec");
    c.apply_build("shop-1", spec).await;
    c.wait_build("shop-1", "Succeeded", secs(60)).await
}

/// The builder pod of `shop-1` and the host dir of its scratch emptyDir (`/tmp/hearth`).
async fn builder_pod(c: &TestCluster) -> (Pod, PathBuf) {
    let pods = c.pods().list(&Default::default()).await.expect("pods");
    let pod = pods
        .items
        .into_iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("shop-1-build"))
        })
        .expect("the builder pod");
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("scheduled");
    let tmp = c
        .root
        .path()
        .join("nodes")
        .join(node)
        .join("pods")
        .join(pod.metadata.uid.clone().expect("uid"))
        .join("volumes/tmp");
    (pod, tmp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_pod_settings_and_buildkitd_configuration_reach_the_build() {
    let registries = format!(
        "\n    - host: docker.io\n      mirrors:\n      - mirror.corp:5000\n    - host: registry.internal\n      ca: {PEM:?}"
    );
    let c = TestCluster::start(ClusterOpts {
        values: Values {
            service_account_name: "hearth-builder".into(),
            runtime_class_name: "runc".into(),
            http_proxy: "http://proxy.corp:3128".into(),
            buildkitd_registries: registries,
            ..Values::default()
        },
        ..ClusterOpts::default()
    })
    .await;
    build(&c, None).await;

    let (pod, tmp) = builder_pod(&c).await;
    let spec = pod.spec.clone().expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("hearth-builder"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.runtime_class_name.as_deref(), Some("runc"));
    let env = spec.containers[0].env.clone().unwrap_or_default();
    let get = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(get("HTTP_PROXY").as_deref(), Some("http://proxy.corp:3128"));
    assert!(get("BUILDKITD_FLAGS")
        .unwrap_or_default()
        .ends_with(" --config /tmp/hearth/buildkitd/buildkitd.toml"));

    // The script wrote the file and the CA bundle into the pod's scratch emptyDir.
    let dir = tmp.join("buildkitd");
    let toml = std::fs::read_to_string(dir.join("buildkitd.toml"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(
        toml.contains("[registry.\"docker.io\"]\n  mirrors = [\"mirror.corp:5000\"]"),
        "{toml}"
    );
    assert!(
        toml.contains("[registry.\"registry.internal\"]\n  ca = ["),
        "{toml}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ca-1.pem")).expect("ca-1.pem"),
        PEM
    );
}

/// A `kubernetes.io/basic-auth` git Secret: the kubelet mounts all its keys, and the builder's
/// script turns them into the `Authorization` header file BuildKit is pointed at; the build
/// succeeds and nothing of the credential reaches the ImageBuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_auth_git_secret_becomes_the_header_file_in_the_builder() {
    use base64::Engine;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    use kube::api::{Api, PostParams};

    let c = TestCluster::start(ClusterOpts::default()).await;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("git".into()),
            namespace: Some(cluster::NS.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(
            [("username", "bot"), ("password", "s3cr3t-Pa55")]
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(c.client(), cluster::NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let built = build(&c, Some("git")).await;

    let (_, tmp) = builder_pod(&c).await;
    let header = tmp.join("git-auth/header");
    let basic = base64::engine::general_purpose::STANDARD.encode("bot:s3cr3t-Pa55");
    assert_eq!(
        std::fs::read_to_string(&header).unwrap_or_else(|e| panic!("{}: {e}", header.display())),
        format!("basic {basic}")
    );
    let status = serde_json::to_string(&built.status).expect("status");
    assert!(
        !status.contains(&basic) && !status.contains("s3cr3t"),
        "{status}"
    );
}
