//! Reliability of the real `hearth controller` process against the test cluster (the fake API
//! server over HTTPS, its scheduler, Job controller and kubelets running the real snapshot
//! Jobs against a loopback S3 server; see tests/cluster/mod.rs): watches answered 410 Gone
//! mid-run, an API server that drops every connection during a build, and a BuildCache
//! deleted when its store prefix is already empty. The controller recovers without restarting.

mod cluster;

use cluster::{secs, ClusterOpts, TestCluster, NS};
use hearth::api::{keys, ImageBuild, ImageBuildSpec};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

/// A ReadWrite build of `key` whose builder runs `seconds`.
fn build_spec(key: &str, seconds: u32) -> ImageBuildSpec {
    serde_json::from_value(json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": "registry.example/acme/shop:main"},
        "buildArgs": {"SLEEP": seconds.to_string()},
        "cache": {"key": key, "mode": "ReadWrite"}
    }))
    .expect("ImageBuild spec")
}

/// Whether the build's save ended and was recorded (`Snapshotted=True`).
fn saved(ib: &ImageBuild) -> bool {
    ib.status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == "Snapshotted" && c.status == "True")
}

/// Waits until build `name` succeeded and its snapshot is saved.
async fn wait_succeeded_and_saved(c: &TestCluster, name: &str) -> ImageBuild {
    c.wait_build(name, "Succeeded", secs(60)).await;
    let api = c.builds();
    c.wait_for(&format!("{name}'s snapshot saved"), secs(60), || {
        let api = api.clone();
        async move { api.get_opt(name).await.ok()?.filter(saved) }
    })
    .await
}

/// The controller went on in the one process it started as.
fn assert_never_restarted(c: &mut TestCluster) {
    assert!(c.controller_running(), "the controller process exited");
    let starts = c
        .controller_log()
        .matches("=== hearth controller starting")
        .count();
    assert_eq!(starts, 1, "the controller was started again");
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
}

/// The server forgets its watch history mid-build and ends the open watches: each resumes
/// from its last resourceVersion, is answered 410 Expired, and lists again. The build in
/// flight and a new one created afterwards both succeed and are saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_answered_410_gone_mid_run_are_listed_again() {
    let mut c = TestCluster::start(ClusterOpts::default()).await;
    c.apply_build("shop-1", build_spec("shop:main", 2)).await;
    c.wait_build("shop-1", "Building", secs(60)).await;
    let lists_before = c.api.requests("imagebuilds", "list");
    c.api.expire_watch_history();
    wait_succeeded_and_saved(&c, "shop-1").await;
    assert!(
        c.api.requests("imagebuilds", "list") > lists_before,
        "the controller's ImageBuild watch got its 410 and listed again"
    );

    // A build created after the expiry is seen by the relisted watch.
    c.api.expire_watch_history();
    c.apply_build("shop-2", build_spec("shop:main", 0)).await;
    wait_succeeded_and_saved(&c, "shop-2").await;
    assert_never_restarted(&mut c);
}

/// Every open connection (watches, requests in flight) is dropped at each step of a build:
/// the controller reconnects and carries the build, and a new one, through to a saved
/// snapshot, with one builder each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_dropping_connections_mid_build_is_survived() {
    let mut c = TestCluster::start(ClusterOpts::default()).await;
    // Requests take a moment, so some are in flight when their connection goes.
    c.api.set_latency(std::time::Duration::from_millis(20));
    c.apply_build("shop-1", build_spec("shop:main", 3)).await;
    c.api.drop_connections();
    for phase in ["Building", "Succeeded"] {
        c.wait_build("shop-1", phase, secs(60)).await;
        c.api.drop_connections();
    }
    wait_succeeded_and_saved(&c, "shop-1").await;
    c.api.drop_connections();

    c.apply_build("shop-2", build_spec("shop:main", 0)).await;
    wait_succeeded_and_saved(&c, "shop-2").await;
    let builders: Vec<String> = c
        .runs
        .runs("build")
        .into_iter()
        .filter(|r| r.container == "buildkit")
        .map(|r| r.pod)
        .collect();
    assert_eq!(builders.len(), 2, "one builder a build: {builders:?}");
    assert_never_restarted(&mut c);
}

/// A BuildCache with `deletionPolicy: Delete` deleted after its snapshots vanished from the store (the prefix emptied by
/// hand, or a bucket lifecycle rule): its forget Job succeeds on the empty prefix and the
/// finalizer goes, long before the delete timeout would give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_cache_whose_store_prefix_is_empty_is_deleted() {
    let mut c = TestCluster::start(ClusterOpts::default()).await;
    c.apply_build("shop-1", build_spec("shop:main", 0)).await;
    wait_succeeded_and_saved(&c, "shop-1").await;
    let prefix = c.s3.object_path(NS);
    assert!(
        cluster::has_files(&prefix),
        "the save wrote under {prefix:?}"
    );
    std::fs::remove_dir_all(&prefix).unwrap();

    let name = keys::cache_name_for_key("shop:main@amd64");
    let caches = c.caches();
    caches
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
        )
        .await
        .expect("deletionPolicy Delete");
    caches
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete BuildCache");
    c.wait_for("the BuildCache to be gone", secs(60), || {
        let caches = caches.clone();
        let name = name.clone();
        async move { caches.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    let forgets = c.runs.runs("forget");
    assert!(
        forgets.iter().any(|r| r.exit_code == Some(0)),
        "the forget Job ran and succeeded: {forgets:?}"
    );
    assert_never_restarted(&mut c);
}
