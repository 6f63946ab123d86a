//! Process-level end to end: the real `hearth controller` binary, started as users run it
//! (a kubeconfig and the chart's config file), against the fake API server over HTTPS, with
//! the test cluster's scheduler, controllers and kubelets running the real snapshot Jobs
//! against a loopback S3 server (see tests/cluster/mod.rs).

mod cluster;

use cluster::{secs, ClusterOpts, TestCluster};
use hearth::api::{ImageBuildSpec, Warmth};
use serde_json::json;

/// A valid ImageBuild spec for `key`, mode ReadWrite, with extra build args.
fn build_spec(key: &str, build_args: serde_json::Value) -> ImageBuildSpec {
    serde_json::from_value(json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": "registry.example/acme/shop:main"},
        "buildArgs": build_args,
        "cache": {"key": key, "mode": "ReadWrite"}
    }))
    .expect("ImageBuild spec")
}

/// Cold then hot: the first build of a key succeeds with the digest the builder wrote and
/// leaves a snapshot; the second build of the key is Hot on the same node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_then_hot_on_the_same_node() {
    let c = TestCluster::start(ClusterOpts::default()).await;

    c.apply_build("shop-1", build_spec("shop:main", json!({})))
        .await;
    let first = c.wait_build("shop-1", "Succeeded", secs(60)).await;
    let status = first.status.clone().expect("status");
    let builder = c
        .runs
        .runs("build")
        .into_iter()
        .find(|r| r.container == "buildkit" && r.pod.starts_with("shop-1-"))
        .expect("the builder ran");
    let written = hearth::controller::builders::pod::digest_from_metadata(&builder.message)
        .expect("the builder wrote a digest");
    assert_eq!(status.image_digest.as_deref(), Some(written.as_str()));
    let placement = status.placement.expect("placement");
    assert_eq!(placement.warmth, Some(Warmth::Cold), "{placement:?}");
    assert!(
        !c.runs.runs("save").is_empty(),
        "a ReadWrite build is saved: {:?}",
        c.runs.all()
    );

    c.apply_build("shop-2", build_spec("shop:main", json!({})))
        .await;
    let second = c.wait_build("shop-2", "Succeeded", secs(60)).await;
    let again = second.status.expect("status").placement.expect("placement");
    assert_eq!(again.warmth, Some(Warmth::Hot), "{again:?}");
    assert_eq!(again.node, placement.node, "hot means the same node");
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
    eprintln!("runs:\n{}", c.runs.describe(c.started));
}
