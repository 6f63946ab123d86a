//! Process level, issue 17's multi-arch fan-out end to end: the REAL `hearth controller` over
//! TLS against the fake API server, one amd64 node and one arm64 node, a loopback registry
//! with token auth. A parent ImageBuild of linux/amd64 and linux/arm64 makes one child per
//! platform; each child's builder pod runs on a node of its architecture and the played
//! buildkitd pushes a real image by digest for that platform; the index Job then runs the REAL
//! `hearth index create` in the kubelet with the push Secret, and the parent takes the digest
//! of the index the registry now serves under every name.

mod cluster;

use cluster::registry_support::{self, digest_of, get_manifest, AuthMode};
use cluster::{secs, ClusterOpts, NodeOpts, TestCluster};
use hearth::api::{ImageBuild, ImageBuildSpec, Phase};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::{json, Value};

const USER: &str = "robot";
const PASSWORD: &str = "fanout-push-secret";

fn node(name: &str, arch: &str) -> NodeOpts {
    let mut n = NodeOpts::new(name);
    n.labels.insert("kubernetes.io/arch".into(), arch.into());
    n
}

async fn cluster() -> TestCluster {
    // The loopback registry is plain HTTP; the cluster's operator config says so.
    let c = TestCluster::start(ClusterOpts {
        nodes: vec![node("amd-1", "amd64"), node("arm-1", "arm64")],
        registry: Some(AuthMode::Token {
            username: USER.into(),
            password: PASSWORD.into(),
            realm: None,
        }),
        ..ClusterOpts::default()
    })
    .await;
    c.create_push_secret("push", &c.registry_host(), USER, PASSWORD)
        .await;
    c
}

fn parent_spec(c: &TestCluster, extra: Value) -> ImageBuildSpec {
    let image = format!("{}/shop/app:1.0", c.registry_host());
    let mut spec = json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "platforms": ["linux/amd64", "linux/arm64"],
        "output": {"image": image, "tags": ["latest"], "pushSecretRef": {"name": "push"},
                   "annotations": {"index:org.opencontainers.image.title": "shop"}},
        "cache": {"key": "shop/app", "mode": "ReadWrite"},
    });
    if let (Some(s), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(more.clone());
    }
    serde_json::from_value(spec).unwrap()
}

/// The builder pod of child `build` and the node it ran on.
async fn builder_node(c: &TestCluster, build: &str) -> String {
    let pods: Vec<Pod> = c
        .pods()
        .list(&ListParams::default().labels(&format!("hearth.dev/build={build}")))
        .await
        .unwrap()
        .items;
    let pod = pods.first().unwrap_or_else(|| panic!("no pod of {build}"));
    pod.spec.as_ref().unwrap().node_name.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_of_two_platforms_builds_each_on_its_architecture_and_pushes_one_index() {
    let c = cluster().await;
    c.apply_build("shop", parent_spec(&c, json!({}))).await;
    let parent = c.wait_build("shop", "Succeeded", secs(120)).await;
    let status = parent.status.clone().unwrap();

    // One child per platform, each on a node of its architecture, with its own cache.
    assert_eq!(status.platforms.len(), 2, "{status:?}");
    for (p, (arch, node)) in status
        .platforms
        .iter()
        .zip([("amd64", "amd-1"), ("arm64", "arm-1")])
    {
        assert_eq!(p.platform, format!("linux/{arch}"));
        assert_eq!(p.phase, Some(Phase::Succeeded), "{p:?}");
        let child: ImageBuild = c.builds().get(&p.build).await.unwrap();
        let child_status = child.status.clone().unwrap();
        assert_eq!(
            child_status.cache_key.as_deref(),
            Some(format!("shop/app@{arch}").as_str())
        );
        assert_eq!(builder_node(&c, &p.build).await, node, "{}", p.build);
        assert_eq!(p.node.as_deref(), Some(node));
        assert_eq!(p.image_digest, child_status.image_digest);
    }

    // The index under both names is the one the parent reports, listing each child's image
    // with its platform, and the index-level annotation.
    let registry = c.registry.as_ref().unwrap();
    let digest = status.image_digest.clone().expect("the index's digest");
    for tag in ["1.0", "latest"] {
        assert_eq!(registry.tag("shop/app", tag), Some(digest.clone()), "{tag}");
    }
    let (_, body) = get_manifest(&registry.base, "shop/app", &digest, Some((USER, PASSWORD)))
        .await
        .unwrap();
    assert_eq!(digest_of(&body), digest);
    let index: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(index["mediaType"], registry_support::OCI_INDEX);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.title"],
        "shop"
    );
    let manifests = index["manifests"].as_array().unwrap();
    let listed: Vec<(String, String)> = manifests
        .iter()
        .filter(|m| m["platform"]["os"] == "linux")
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let children: Vec<(String, String)> = status
        .platforms
        .iter()
        .map(|p| {
            (
                p.platform.trim_start_matches("linux/").to_string(),
                p.image_digest.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, children);
    assert_eq!(
        status.image.as_deref(),
        Some(format!("{}/shop/app@{digest}", c.registry_host()).as_str())
    );
    // The push credentials reached the index Job's container only as a mounted file.
    let log = c.controller_log();
    assert!(
        !log.contains(PASSWORD),
        "the password is in the controller's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_platform_fails_the_parent_and_no_index_is_pushed() {
    let c = cluster().await;
    // The played buildkitd fails a build given FAIL=1; only arm64's child gets it... both do,
    // so the first to fail stops the other.
    c.apply_build("shop", parent_spec(&c, json!({"buildArgs": {"FAIL": "1"}})))
        .await;
    let parent = c.wait_build("shop", "Failed", secs(120)).await;
    let status = parent.status.clone().unwrap();
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains("linux/"), "names the platform: {message}");
    assert!(status.image_digest.is_none());
    let registry = c.registry.as_ref().unwrap();
    assert_eq!(registry.tag("shop/app", "1.0"), None, "no index pushed");
    let jobs = c
        .jobs()
        .list(&ListParams::default().labels("hearth.dev/role=index"))
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "no index Job for a failed parent");
}
