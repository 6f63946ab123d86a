//! Retention with the real `hearth controller` binary (the chart's config with short TTLs)
//! against the fake API server over HTTPS and the test cluster's garbage collector: a finished
//! build and its pods are deleted once saved and past their TTL; a build under way is not.

mod cluster;

use std::time::Duration;

use cluster::values::RetentionValues;
use cluster::{build_spec, secs, ClusterOpts, TestCluster, NS};
use hearth::api::Phase;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use kube::ResourceExt;
use serde_json::json;

/// Names of the build namespace's pods that start with `prefix`.
async fn pods_of(c: &TestCluster, prefix: &str) -> Vec<String> {
    c.pods()
        .list(&Default::default())
        .await
        .expect("list pods")
        .items
        .iter()
        .map(|p| p.name_any())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Waits until ImageBuild `name` is gone.
async fn wait_deleted(c: &TestCluster, name: &str) {
    let builds = c.builds();
    c.wait_for(
        &format!("ImageBuild {name} to be deleted"),
        secs(40),
        || {
            let builds = builds.clone();
            async move { builds.get_opt(name).await.ok()?.is_none().then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_build_and_its_pods_go_after_the_ttl_and_a_build_under_way_stays() {
    let mut opts = ClusterOpts::default();
    opts.values.retention = RetentionValues {
        ttl_after_succeeded: Some("3s".into()),
        ttl_after_failed: Some("3s".into()),
        succeeded_limit: None,
        failed_limit: None,
        min_age: "1s".into(),
    };
    let c = TestCluster::start(opts).await;

    c.apply_build("done", build_spec("shop:main", json!({})))
        .await;
    c.wait_build("done", "Succeeded", secs(60)).await;
    assert!(
        !pods_of(&c, "done-").await.is_empty(),
        "the builder pod ran"
    );
    // Another key, so it runs at once on its own replica; it builds for a minute.
    c.apply_build("slow", build_spec("shop:slow", json!({"SLEEP": "60"})))
        .await;
    c.wait_build("slow", "Building", secs(30)).await;

    wait_deleted(&c, "done").await;
    c.wait_for("the pods of done to go with it", secs(20), || async {
        pods_of(&c, "done-").await.is_empty().then_some(())
    })
    .await;
    // It went only once its cache was saved (a build still saving is never deleted).
    let saves: Vec<_> = c
        .runs
        .runs("save")
        .into_iter()
        .filter(|r| r.pod.starts_with("done-"))
        .collect();
    assert!(
        saves.iter().any(|r| r.exit_code == Some(0)),
        "done's save ran to the end: {saves:?}"
    );
    // Said so in an Event and counted.
    let events: Api<Event> = Api::namespaced(c.client(), NS);
    let expired: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Expired"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        expired.iter().any(|n| n.contains("Succeeded")),
        "{expired:?}"
    );
    let metrics = c.metrics().await;
    assert!(
        metrics.contains(r#"hearth_retention_deletions_total{reason="ttl",outcome="Succeeded"} 1"#),
        "{metrics}"
    );

    // The build under way, well past the TTL, is untouched and still building.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let slow = c.builds().get("slow").await.expect("slow is kept");
    assert_eq!(slow.status.and_then(|s| s.phase), Some(Phase::Building));
    assert!(slow.metadata.deletion_timestamp.is_none());
    assert!(!pods_of(&c, "slow-").await.is_empty());
}

/// The namespace's history limit: with one succeeded build kept, the older of two goes once
/// past minAge (no TTL at all), the newer stays; a failed build counts in its own history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_history_limit_the_older_build_goes() {
    let mut opts = ClusterOpts::default();
    opts.values.retention = RetentionValues {
        ttl_after_succeeded: None,
        ttl_after_failed: None,
        succeeded_limit: Some(1),
        failed_limit: Some(1),
        min_age: "1s".into(),
    };
    let c = TestCluster::start(opts).await;
    c.apply_build("first", build_spec("shop:main", json!({})))
        .await;
    c.wait_build("first", "Succeeded", secs(60)).await;
    c.apply_build("broken", build_spec("shop:other", json!({"FAIL": "1"})))
        .await;
    c.wait_build("broken", "Failed", secs(60)).await;
    c.apply_build("second", build_spec("shop:main", json!({})))
        .await;
    c.wait_build("second", "Succeeded", secs(60)).await;

    wait_deleted(&c, "first").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for kept in ["second", "broken"] {
        let b = c.builds().get(kept).await.expect("kept");
        assert!(b.metadata.deletion_timestamp.is_none(), "{kept}");
    }
    let metrics = c.metrics().await;
    assert!(
        metrics
            .contains(r#"hearth_retention_deletions_total{reason="limit",outcome="Succeeded"} 1"#),
        "{metrics}"
    );
}
