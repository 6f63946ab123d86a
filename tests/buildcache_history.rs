//! A key's history on the stateful fake API: finished builds teach the BuildCache their build
//! times, size and rate, each build once, and the planner's view of the key carries them.

mod support;

use hearth::api::{keys, Phase, Warmth};
use hearth::controller::image_build::status::saving;
use hearth::controller::key_history::FinishedBuild;
use hearth::controller::replica_table::{self, Release};
use hearth::controller::view::{build_view, Objects};
use hearth::planner::PlannerConfig;
use serde_json::json;
use support::{metadata, s3_config, spec, Cluster, NS};

const COLD: i64 = 300;
const WARM: i64 = 20;

/// Runs `name` to Succeeded, its build container taking `seconds`, saved as `snapshot`.
async fn run(c: &mut Cluster, name: &str, seconds: i64, snapshot: &str, bytes: i64) {
    c.settle(name).await;
    let (meta, _) = metadata('a');
    c.finish_pod_after(&format!("{name}-build-1"), 0, &meta, seconds)
        .await;
    assert_eq!(c.settle(name).await, Some(Phase::Succeeded));
    assert!(
        saving(&c.build(name).await.status.unwrap()),
        "{name}: saving"
    );
    let saved = format!(
        r#"{{"bytes":{bytes},"id":"{snapshot}","manifestSha256":"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a","uploadedBytes":10}}"#
    );
    c.finish_job(&format!("{name}-save-1"), true, &saved).await;
    assert_eq!(c.settle(name).await, Some(Phase::Succeeded));
}

#[tokio::test]
async fn a_cold_then_a_hot_build_teach_the_planner_the_key_s_times() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let cache = keys::cache_name_for_key("shop:main@amd64");
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    run(&mut c, "b1", COLD, "snap-1", 1_000_000).await;
    let first = c.build("b1").await.status.unwrap().placement.unwrap();
    assert_eq!(first.warmth, Some(Warmth::Cold));
    c.bind_pvc(
        first.replica.as_deref().unwrap(),
        first.node.as_deref().unwrap(),
    )
    .await;

    c.advance(900);
    let submitted = c.now();
    c.submit("b2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    run(&mut c, "b2", WARM, "snap-2", 1_500_000).await;
    let b2 = c.build("b2").await;
    assert_eq!(
        b2.status
            .as_ref()
            .unwrap()
            .placement
            .as_ref()
            .unwrap()
            .warmth,
        Some(Warmth::Hot)
    );

    let history = c.cache(&cache).await.status.unwrap().history.unwrap();
    assert_eq!(history.builds, 2);
    assert_eq!(
        (history.cold_seconds, history.warm_seconds),
        (Some(COLD as f64), Some(WARM as f64))
    );
    assert_eq!(history.fallback_seconds, None);
    assert_eq!(history.cache_bytes, Some(1_500_000), "the last save's size");
    assert_eq!(history.mean_gap_seconds, Some(900.0));
    assert_eq!(
        history.last_build_at.as_ref().map(|t| t.0.as_second()),
        Some(submitted.as_second()),
        "creationTimestamp has whole seconds"
    );

    // Counted once: more reconciles, and a release repeated by a controller that restarted
    // between writing the BuildCache and the ImageBuild, change nothing.
    c.settle("b2").await;
    let again = Release::Done {
        changed: true,
        saved: None,
        warmth: Some(Warmth::Hot),
        build: Some(FinishedBuild::of(
            b2.status.as_ref().unwrap(),
            submitted,
            true,
        )),
    };
    replica_table::release(&c.ctx, NS, &cache, "b2", again, c.now())
        .await
        .unwrap();
    let status = c.cache(&cache).await.status.unwrap();
    assert_eq!(status.history.as_ref().unwrap(), &history);
    assert_eq!(status.hits.unwrap().hot, 1);

    // The planner's view of the key: the measured times, not its 600 s / 60 s defaults.
    c.sync().await;
    let caches = c.ctx.stores.caches[0].state();
    let objects = Objects {
        caches: caches.iter().map(AsRef::as_ref).collect(),
        ..Objects::default()
    };
    let planner = PlannerConfig::default();
    let view = build_view(&objects, &c.ctx.config, &planner, c.now());
    let key = view.cluster.key_id(NS, "shop:main@amd64").unwrap();
    let stats = view.cluster.key(key).stats.clone().expect("stats learned");
    assert_eq!(
        (stats.warm_seconds, stats.cold_seconds),
        (WARM as f64, COLD as f64)
    );
    assert_ne!(stats.warm_seconds, planner.default_stats.warm_seconds);
    assert_eq!(stats.cache_bytes, 1_500_000);
    assert_eq!(stats.builds_per_hour, 4.0, "one build every 900 s");
}

#[tokio::test]
async fn a_failed_build_teaches_nothing() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let cache = keys::cache_name_for_key("shop:main@amd64");
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.settle("b1").await;
    c.finish_pod_after("b1-build-1", 1, "ERROR: exit code: 2", 5)
        .await;
    assert_eq!(c.settle("b1").await, Some(Phase::Failed));
    let status = c.cache(&cache).await.status.unwrap();
    assert_eq!(status.hits.unwrap().cold, 1, "the claim was released");
    assert_eq!(status.history, None);
}
