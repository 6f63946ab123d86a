//! Retention on the stateful fake API: finished builds are deleted after their TTL and beyond
//! the namespace's history limits (their pods going with them through the build's finalizer),
//! never a build under way, one holding a replica, or one changed since it was read.

#[path = "cluster/apiserver/mod.rs"]
mod apiserver;
mod support;

use std::sync::Arc;

use std::time::Duration;

use apiserver::ApiServer;
use hearth::api::{keys, ImageBuild, Phase};
use hearth::controller::config::{OperatorConfig, RetentionSettings};
use hearth::controller::context::Context;
use hearth::controller::metrics::Metrics;
use hearth::controller::retention_sweep;
use hearth::controller::slim::StoredBuild;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{s3_config, spec, Cluster};

const HOUR: i64 = 3600;

fn config(retention: RetentionSettings) -> OperatorConfig {
    OperatorConfig {
        retention,
        ..s3_config()
    }
}

fn secs(s: u64) -> kube::core::Duration {
    kube::core::Duration::from(Duration::from_secs(s))
}

fn ttls(succeeded: u64, failed: u64) -> RetentionSettings {
    RetentionSettings {
        ttl_after_succeeded: Some(secs(succeeded)),
        ttl_after_failed: Some(secs(failed)),
        succeeded_limit: None,
        failed_limit: None,
        min_age: secs(600),
    }
}

/// One sweep with the stores synced first; the names it deleted.
async fn sweep(c: &mut Cluster) -> Vec<String> {
    c.sync().await;
    retention_sweep::sweep(&c.ctx).await.deleted
}

/// After a sweep deleted `name`: its finalizer's cleanup (one reconcile) lets it go.
async fn gone_after_cleanup(c: &mut Cluster, name: &str) -> bool {
    let ib = c.builds().get_opt(name).await.unwrap();
    if ib.is_some() {
        let _ = c.reconcile(name).await;
    }
    c.builds().get_opt(name).await.unwrap().is_none()
}

#[tokio::test]
async fn a_finished_build_and_its_pod_go_after_the_ttl_and_a_build_under_way_stays() {
    let mut c = Cluster::new(&["n1", "n2"], config(ttls(HOUR as u64, 3 * HOUR as u64))).await;
    c.submit("done", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let done = c.run_to_end("done", 'a').await;
    assert_eq!(Cluster::phase_of(&done), Some(Phase::Succeeded));
    assert!(c.pods().get_opt("done-build-1").await.unwrap().is_some());
    // Another key, so it runs at once on its own replica, and stays under way.
    let other = json!({"cache": {"key": "shop:other"}});
    c.submit("running", spec("registry.example.com/shop/api:2", other))
        .await;
    assert_eq!(c.settle("running").await, Some(Phase::Building));

    // Before the TTL: nothing goes, and the next look is the finished build's expiry.
    c.advance(HOUR - 60);
    c.sync().await;
    let early = retention_sweep::sweep(&c.ctx).await;
    assert!(early.deleted.is_empty(), "{early:?}");
    let completed = done.status.unwrap().completion_time.unwrap().0;
    assert_eq!(
        early.next,
        Some(
            completed
                .checked_add(jiff::SignedDuration::from_secs(HOUR))
                .unwrap()
        )
    );

    c.advance(2 * HOUR);
    assert_eq!(sweep(&mut c).await, ["shop/done"]);
    assert!(gone_after_cleanup(&mut c, "done").await);
    assert!(
        c.pods().get_opt("done-build-1").await.unwrap().is_none(),
        "its pod goes with it"
    );
    // The build under way, hours later, is untouched.
    assert!(sweep(&mut c).await.is_empty());
    assert_eq!(
        Cluster::phase_of(&c.build("running").await),
        Some(Phase::Building)
    );
    assert!(c.pods().get_opt("running-build-1").await.unwrap().is_some());
    let counted = c.ctx.metrics.encode();
    assert!(
        counted.contains(r#"hearth_retention_deletions_total{reason="ttl",outcome="Succeeded"} 1"#),
        "{counted}"
    );
}

#[tokio::test]
async fn beyond_the_limit_the_oldest_go_and_a_build_holding_a_replica_stays() {
    let retention = RetentionSettings {
        ttl_after_succeeded: None,
        ttl_after_failed: None,
        succeeded_limit: Some(1),
        failed_limit: None,
        min_age: secs(600),
    };
    let mut c = Cluster::new(&["n1", "n2"], config(retention)).await;
    for (i, name) in ["b1", "b2", "b3"].into_iter().enumerate() {
        c.submit(name, spec("registry.example.com/shop/api:1", json!({})))
            .await;
        c.run_to_end(name, 'a').await;
        if i < 2 {
            c.advance(60);
        }
    }
    // Just ended: over the limit but younger than minAge.
    assert!(sweep(&mut c).await.is_empty());

    // b1 is said to hold a replica still (as while its release is in flight): it stays.
    let cache = keys::cache_name_for_key(&keys::arch_scoped("shop:main", "amd64"));
    let mut status = c.cache(&cache).await.status.unwrap();
    status.replicas[0].holder = Some("b1".into());
    c.caches()
        .patch_status(
            &cache,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
    c.advance(HOUR);
    // At most a batch of deletions per sweep: with a batch of none, nothing goes and the
    // next look is a pause away.
    c.sync().await;
    let paused = retention_sweep::sweep_at_most(&c.ctx, 0).await;
    assert!(paused.deleted.is_empty());
    let pause = jiff::SignedDuration::try_from(retention_sweep::BATCH_PAUSE).unwrap();
    assert_eq!(paused.next, Some(c.now().checked_add(pause).unwrap()));
    let swept = {
        c.sync().await;
        retention_sweep::sweep(&c.ctx).await
    };
    assert_eq!(swept.deleted, ["shop/b2"], "the newest is kept, b1 is held");
    let retry = c
        .now()
        .checked_add(
            jiff::SignedDuration::try_from(hearth::controller::retention::HELD_RETRY).unwrap(),
        )
        .unwrap();
    assert_eq!(
        swept.next,
        Some(retry),
        "a held build is looked at again soon"
    );
    assert!(gone_after_cleanup(&mut c, "b2").await);
    assert!(c.builds().get_opt("b1").await.unwrap().is_some());
    assert!(c.builds().get_opt("b3").await.unwrap().is_some());
}

/// A context over `client` whose only content is `builds` in the builds' store.
fn context_with(client: kube::Client, config: OperatorConfig, builds: Vec<ImageBuild>) -> Context {
    let (stores, mut writers) = support::stores();
    support::fill(&mut writers.caches, []);
    support::fill(
        &mut writers.builds,
        builds.into_iter().map(StoredBuild::from),
    );
    Context::new(client, config, stores, Arc::new(Metrics::default()), "test")
}

/// The API server of the process-level tests, which honours delete preconditions as a real
/// one does (the in-memory fake client does not): a build changed after the sweep's read
/// (its retention extended) is not deleted on the stale read.
#[tokio::test]
async fn a_build_changed_since_it_was_read_is_not_deleted_blindly() {
    let server = ApiServer::start().await;
    server.ensure_namespace("shop");
    let client = server.client().await;
    let builds: Api<ImageBuild> = Api::namespaced(client.clone(), "shop");
    let mut ib = ImageBuild::new("b", spec("registry.example.com/shop/api:1", json!({})));
    ib.metadata.namespace = Some("shop".into());
    builds.create(&PostParams::default(), &ib).await.unwrap();
    // Ended two hours ago: past the operator's 1h, well within the 720h it is extended to.
    let two_hours_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2 * HOUR);
    let ended =
        json!({"status": {"phase": "Succeeded", "completionTime": two_hours_ago.to_string()}});
    let read = builds
        .patch_status("b", &PatchParams::default(), &Patch::Merge(ended))
        .await
        .unwrap();
    let cfg = config(ttls(HOUR as u64, HOUR as u64));
    // Someone extends its retention after the sweep's stores were read.
    let extend = json!({"spec": {"retention": {"ttlAfterSucceeded": "720h"}}});
    let extended = builds
        .patch("b", &PatchParams::default(), &Patch::Merge(extend))
        .await
        .unwrap();
    let stale = context_with(client.clone(), cfg.clone(), vec![read]);
    assert!(retention_sweep::sweep(&stale).await.deleted.is_empty());
    assert!(
        builds.get_opt("b").await.unwrap().is_some(),
        "not deleted on a stale read"
    );
    // Read again, its own TTL keeps it; without it, it goes.
    let fresh = context_with(client.clone(), cfg.clone(), vec![extended]);
    assert!(retention_sweep::sweep(&fresh).await.deleted.is_empty());
    let unset = json!({"spec": {"retention": null}});
    let plain = builds
        .patch("b", &PatchParams::default(), &Patch::Merge(unset))
        .await
        .unwrap();
    let current = context_with(client.clone(), cfg.clone(), vec![plain.clone()]);
    assert_eq!(retention_sweep::sweep(&current).await.deleted, ["shop/b"]);
    assert!(builds.get_opt("b").await.unwrap().is_none());

    // An API that fails the deletion: looked at again shortly, not at the next due time.
    drop(server);
    let unreachable = context_with(client, cfg, vec![plain]);
    let before = jiff::Timestamp::now();
    let failed = retention_sweep::sweep(&unreachable).await;
    assert!(failed.deleted.is_empty());
    let retry = jiff::SignedDuration::try_from(retention_sweep::RETRY).unwrap();
    let next = failed.next.expect("a retry");
    assert!(
        next >= before + retry && next <= jiff::Timestamp::now() + retry,
        "{next} is not {retry:?} after the sweep"
    );
}
