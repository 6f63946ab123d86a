//! The BuildCache lifecycle as state transitions on the fake cluster: node budgets and
//! eviction (with and without a current snapshot), idle TTL, maxReplicas, deferred saves, gc
//! listing the store into status, a lost node, and deletion under each policy, including a
//! store that stays unreachable.

mod support;

use std::sync::Arc;

use hearth::api::{keys, BuildCache, DeletionPolicy, OperationKind, Phase, ReplicaState};
use hearth::controller::build_cache;
use hearth::controller::finalizer::SNAPSHOTS as FINALIZER;
use hearth::controller::image_build::status::saving;
use hearth::controller::replica_table::STORE_REACHABLE;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use support::{metadata, s3_config, spec, Cluster};

const GIB: i64 = 1 << 30;
/// How long the fake builds run. The planner learns it: a build much shorter than restoring a
/// few GiB would rightly be rebuilt cold instead of restored.
const BUILD_SECONDS: i64 = 600;

fn saved(id: &str, gib: i64) -> String {
    format!(
        r#"{{"id":"{id}","bytes":{},"manifestSha256":"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a","uploadedBytes":1000}}"#,
        gib * GIB
    )
}

/// One ReadWrite build of `key` to the end; `save` is the save job's result, or `None` when
/// the save job fails (the replica then holds unsaved state).
async fn build(c: &mut Cluster, name: &str, key: &str, save: Option<&str>) {
    submit(c, name, key).await;
    assert_eq!(c.settle(name).await, Some(Phase::Building), "{name}");
    let (meta, _) = metadata('a');
    c.finish_pod_after(&format!("{name}-build-1"), 0, &meta, BUILD_SECONDS)
        .await;
    assert_eq!(c.settle(name).await, Some(Phase::Succeeded), "{name}");
    assert!(
        saving(&c.build(name).await.status.unwrap()),
        "{name}: saving"
    );
    match save {
        Some(result) => c.finish_job(&format!("{name}-save-1"), true, result).await,
        None => c.finish_job(&format!("{name}-save-1"), false, "").await,
    }
    assert_eq!(c.settle(name).await, Some(Phase::Succeeded), "{name}");
}

/// Submits a ReadWrite build of `key`.
async fn submit(c: &Cluster, name: &str, key: &str) {
    c.submit(
        name,
        spec(
            "registry.example.com/shop/api:1",
            json!({"cache": {"key": key}}),
        ),
    )
    .await;
}

async fn set_budget(c: &Cluster, node: &str, budget: &str) {
    Api::<Node>::all(c.client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"hearth.dev/cache-budget": budget}}}),
            ),
        )
        .await
        .unwrap();
}

fn cache_of(key: &str) -> String {
    keys::cache_name_for_key(&keys::arch_scoped(key, "amd64"))
}

async fn replica_state(c: &Cluster, cache: &str) -> Vec<(ReplicaState, Option<String>)> {
    c.cache(cache)
        .await
        .status
        .unwrap()
        .replicas
        .iter()
        .map(|r| (r.state, r.reason.clone()))
        .collect()
}

/// The `Ready` condition's status and reason (the READY column).
fn ready_of(st: &hearth::api::BuildCacheStatus) -> (String, String) {
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    (c.status.clone(), c.reason.clone())
}

#[tokio::test]
async fn caches_get_the_snapshots_finalizer() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    let bc = c.cache(&cache_of("shop:main")).await;
    assert_eq!(bc.finalizers(), [FINALIZER.to_string()]);
}

#[tokio::test]
async fn a_node_over_budget_evicts_its_least_valuable_saved_replica() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    build(&mut c, "old", "shop:old", Some(&saved("s-old", 6))).await;
    c.advance(1800);
    build(&mut c, "new", "shop:new", Some(&saved("s-new", 6))).await;
    // 12 GiB on n1; a 10 GiB budget must lose one replica: the one idle longest.
    set_budget(&c, "n1", "10Gi").await;
    c.reconcile_cache(&cache_of("shop:new")).await;
    assert_eq!(
        replica_state(&c, &cache_of("shop:new")).await,
        [(ReplicaState::Idle, None)],
        "the newer, more valuable replica stays"
    );
    c.reconcile_cache(&cache_of("shop:old")).await;
    assert_eq!(
        replica_state(&c, &cache_of("shop:old")).await,
        [(ReplicaState::Evicting, Some("Budget".into()))]
    );
    let pvc = format!("{}-r0", cache_of("shop:old"));
    assert!(c.claims().get_opt(&pvc).await.unwrap().is_some());
    c.reconcile_cache(&cache_of("shop:old")).await;
    assert!(
        c.claims().get_opt(&pvc).await.unwrap().is_none(),
        "PVC deleted"
    );
    c.reconcile_cache(&cache_of("shop:old")).await;
    assert!(replica_state(&c, &cache_of("shop:old")).await.is_empty());
    let metrics = c.ctx.metrics.encode();
    assert!(
        metrics.contains(r#"hearth_cache_evictions_total{reason="Budget"} 1"#),
        "{metrics}"
    );
    // Its snapshot is still there: the next build of the key restores it.
    submit(&c, "again", "shop:old").await;
    assert_eq!(c.settle("again").await, Some(Phase::Restoring));
}

#[tokio::test]
async fn the_planner_makes_room_for_a_new_replica_by_evicting_a_saved_idle_one() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    build(&mut c, "old", "shop:old", Some(&saved("s-old", 6))).await;
    // 6 GiB used of 8: a new key's replica (4 GB assumed, no history) does not fit beside it.
    set_budget(&c, "n1", "8Gi").await;
    c.advance(3600);
    submit(&c, "b", "shop:other").await;
    assert_eq!(c.settle("b").await, Some(Phase::Building));
    assert_eq!(
        replica_state(&c, &cache_of("shop:old")).await,
        [(ReplicaState::Evicting, Some("Room".into()))],
        "evicted when the build was placed, not later by the budget pass"
    );
    assert!(c
        .ctx
        .metrics
        .encode()
        .contains(r#"hearth_cache_evictions_total{reason="Room"} 1"#));
    // A replica in use is never chosen: with "other" building, a third key finds no room
    // to make and gets a throwaway volume.
    submit(&c, "c", "shop:third").await;
    assert_eq!(c.settle("c").await, Some(Phase::Building));
    assert_eq!(
        replica_state(&c, &cache_of("shop:other")).await,
        [(ReplicaState::InUse, None)]
    );
}

#[tokio::test]
async fn an_unsaved_replica_over_budget_is_saved_before_it_is_evicted() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    // The save after the build fails: the replica holds the only copy of its state.
    build(&mut c, "b1", "shop:main", None).await;
    let cache = cache_of("shop:main");
    let mut bc = c.cache(&cache).await;
    bc.status.as_mut().unwrap().replicas[0].size_bytes = Some(20 * GIB);
    c.caches()
        .replace_status(&cache, &Default::default(), &bc)
        .await
        .unwrap();
    set_budget(&c, "n1", "10Gi").await;
    c.advance(600);
    c.reconcile_cache(&cache).await;
    let st = c.cache(&cache).await.status.unwrap();
    let op = st.operation.clone().expect("a save job in flight");
    assert_eq!(op.kind, OperationKind::Save);
    assert_eq!(st.replicas[0].state, ReplicaState::Snapshotting);
    assert!(c.jobs().get_opt(&op.job).await.unwrap().is_some());
    assert!(
        c.claims()
            .get_opt(&st.replicas[0].pvc)
            .await
            .unwrap()
            .is_some(),
        "nothing deleted before the save"
    );
    // A failed save leaves it in place (and backs off); nothing is lost.
    c.finish_job(&op.job, false, "store unreachable").await;
    c.reconcile_cache(&cache).await;
    let st = c.cache(&cache).await.status.unwrap();
    assert_eq!(st.replicas[0].state, ReplicaState::Idle);
    assert!(st.operation.is_none());
    c.reconcile_cache(&cache).await;
    assert!(
        c.cache(&cache).await.status.unwrap().operation.is_none(),
        "no new store job during the backoff"
    );
    c.advance(301);
    c.reconcile_cache(&cache).await;
    let op = c.cache(&cache).await.status.unwrap().operation.unwrap();
    c.finish_job(&op.job, true, &saved("s2", 20)).await;
    c.reconcile_cache(&cache).await;
    let st = c.cache(&cache).await.status.unwrap();
    assert_eq!(st.replicas[0].snapshot_id.as_deref(), Some("s2"));
    assert_eq!(st.snapshots[0].id, "s2");
    c.reconcile_cache(&cache).await;
    assert_eq!(
        replica_state(&c, &cache).await,
        [(ReplicaState::Evicting, Some("Budget".into()))],
        "saved, then evicted"
    );
}

#[tokio::test]
async fn a_replica_in_use_is_never_evicted() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 20))).await;
    submit(&c, "b2", "shop:main").await;
    assert_eq!(c.settle("b2").await, Some(Phase::Building));
    set_budget(&c, "n1", "1Gi").await;
    c.reconcile_cache(&cache_of("shop:main")).await;
    assert_eq!(
        replica_state(&c, &cache_of("shop:main")).await,
        [(ReplicaState::InUse, None)]
    );
}

#[tokio::test]
async fn a_replica_idle_past_its_ttl_is_evicted() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    let cache = cache_of("shop:main");
    c.reconcile_cache(&cache).await;
    assert_eq!(
        replica_state(&c, &cache).await,
        [(ReplicaState::Idle, None)]
    );
    c.advance(7 * 86400 + 1);
    c.reconcile_cache(&cache).await;
    // gc is due after so long; it runs first, then the eviction.
    finish_gc(&mut c, &cache, "s1").await;
    c.reconcile_cache(&cache).await;
    assert_eq!(
        replica_state(&c, &cache).await,
        [(ReplicaState::Evicting, Some("IdleTtl".into()))]
    );
}

#[tokio::test]
async fn lowering_max_replicas_retires_the_extra_idle_replica() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    // A second replica, saved in the newer snapshot s2 (as two concurrent builds leave).
    let mut bc = c.cache(&cache).await;
    let st = bc.status.as_mut().unwrap();
    let mut second = st.replicas[0].clone();
    second.pvc = format!("{cache}-r1");
    second.node = Some("n2".into());
    second.snapshot_id = Some("s2".into());
    let mut newer = st.snapshots[0].clone();
    newer.id = "s2".into();
    newer.time = Time(c.ctx.now() + jiff::SignedDuration::from_secs(60));
    st.snapshots.insert(0, newer);
    st.replicas.push(second);
    c.caches()
        .replace_status(&cache, &Default::default(), &bc)
        .await
        .unwrap();
    let mut claim = c.claims().get(&format!("{cache}-r0")).await.unwrap();
    claim.metadata = kube::api::ObjectMeta {
        name: Some(format!("{cache}-r1")),
        namespace: claim.metadata.namespace.clone(),
        labels: claim.metadata.labels.clone(),
        ..Default::default()
    };
    c.claims()
        .create(&Default::default(), &claim)
        .await
        .unwrap();
    assert_eq!(c.cache(&cache).await.status.unwrap().replicas.len(), 2);
    c.caches()
        .patch(
            &cache,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxReplicas": 1}})),
        )
        .await
        .unwrap();
    c.reconcile_cache(&cache).await;
    let st = c.cache(&cache).await.status.unwrap();
    let retired: Vec<_> = st
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Evicting)
        .collect();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].reason.as_deref(), Some("MaxReplicas"));
    assert_eq!(
        retired[0].snapshot_id.as_deref(),
        Some("s2"),
        "the replica saved in the newest snapshot goes first"
    );
}

#[tokio::test]
async fn a_save_deferred_by_min_interval_runs_once_it_has_passed() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    // Within minInterval (10m): the second build's save is skipped.
    submit(&c, "b2", "shop:main").await;
    c.settle("b2").await;
    let (meta, _) = metadata('b');
    c.finish_pod("b2-build-1", 0, &meta).await;
    assert_eq!(c.settle("b2").await, Some(Phase::Succeeded));
    let r = c.cache(&cache).await.status.unwrap().replicas[0].clone();
    assert_eq!(r.snapshot_id, None, "unsaved state after b2");
    c.reconcile_cache(&cache).await;
    let op = c.cache(&cache).await.status.unwrap().operation;
    assert!(op.is_none_or(|o| o.kind != OperationKind::Save), "not yet");
    finish_gc(&mut c, &cache, "s1").await;
    c.advance(601);
    c.reconcile_cache(&cache).await;
    let op = c.cache(&cache).await.status.unwrap().operation.unwrap();
    assert_eq!(
        (op.kind, op.pvc.as_deref()),
        (OperationKind::Save, Some(r.pvc.as_str()))
    );
    c.finish_job(&op.job, true, &saved("s2", 1)).await;
    c.reconcile_cache(&cache).await;
    let st = c.cache(&cache).await.status.unwrap();
    assert_eq!(st.replicas[0].snapshot_id.as_deref(), Some("s2"));
    assert_eq!(st.replicas[0].state, ReplicaState::Idle);
}

#[tokio::test]
async fn gc_applies_retention_keeps_what_replicas_match_and_lists_the_store() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let cache = cache_of("shop:main");
    for (i, b) in ["b1", "b2", "b3", "b4"].iter().enumerate() {
        build(
            &mut c,
            b,
            "shop:main",
            Some(&saved(&format!("s{}", i + 1), 1)),
        )
        .await;
        c.advance(700);
    }
    let st = c.cache(&cache).await.status.unwrap();
    assert_eq!(st.snapshots.len(), 3, "status keeps retain (3) records");
    c.reconcile_cache(&cache).await;
    let op = c
        .cache(&cache)
        .await
        .status
        .unwrap()
        .operation
        .expect("gc runs");
    assert_eq!(op.kind, OperationKind::Gc);
    let job = c.jobs().get(&op.job).await.unwrap();
    let args = job.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    let line = args.join(" ");
    assert!(line.contains("gc --retain 3"), "{line}");
    assert!(
        line.contains("--keep s4 --keep s3 --keep s2"),
        "the replica's snapshot and the newest pinned ones are kept (manifests planted in the \
         store cannot push them out of --retain): {line}"
    );
    c.finish_job(
        &op.job,
        true,
        r#"{"forgotten":["c/s1"],"livePacks":3,"condemned":1,"rescued":0,"deletedPacks":0,"deletedBytes":0,"snapshotCount":3,
           "snapshots":[{"id":"s4","created":"2026-11-23T10:00:00Z","bytes":1073741824,"newBytes":1000},
                        {"id":"s3","created":"2026-11-23T09:00:00Z","bytes":1073741824,"newBytes":2000},
                        {"id":"s2","created":"2026-11-23T08:00:00Z","bytes":1073741824,"newBytes":3000}]}"#,
    )
    .await;
    c.reconcile_cache(&cache).await;
    let st = c.cache(&cache).await.status.unwrap();
    assert_eq!(
        st.snapshots
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["s4", "s3", "s2"]
    );
    // Records the controller made from saves keep what the saves reported (the store's
    // copy of a manifest is not trusted), their digests included.
    assert_eq!(st.snapshot_bytes, Some(3000));
    assert_eq!(st.stored.as_deref(), Some("2.9Ki"), "the Stored column");
    assert_eq!(ready_of(&st), ("True".into(), "Warm".into()));
    assert!(st.snapshots.iter().all(|s| s.manifest_sha256.is_some()));
    assert_eq!(st.snapshot_count, Some(3));
    assert!(st.last_gc.is_some() && st.operation.is_none());
    c.reconcile_cache(&cache).await;
    assert!(
        c.cache(&cache).await.status.unwrap().operation.is_none(),
        "not again until gcInterval"
    );
}

/// Reconciles `cache` until a maintenance operation is in flight (at most `rounds` times).
async fn until_operation(
    c: &mut Cluster,
    cache: &str,
    rounds: usize,
) -> Option<hearth::api::CacheOperation> {
    for _ in 0..rounds {
        c.reconcile_cache(cache).await;
        if let Some(op) = c.cache(cache).await.status.unwrap().operation {
            return Some(op);
        }
    }
    None
}

#[tokio::test]
async fn a_lost_node_drops_its_replicas_then_the_cache_is_prewarmed_elsewhere() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    finish_gc(&mut c, &cache, "s1").await;
    let st = c.cache(&cache).await.status.unwrap();
    let (pvc, node) = (
        st.replicas[0].pvc.clone(),
        st.replicas[0].node.clone().unwrap(),
    );
    let other = if node == "n1" { "n2" } else { "n1" };
    c.delete_node(&node).await;
    c.reconcile_cache(&cache).await;
    assert_eq!(
        replica_state(&c, &cache).await,
        [(ReplicaState::Lost, Some("NodeLost".into()))]
    );
    c.reconcile_cache(&cache).await;
    assert!(c.claims().get_opt(&pvc).await.unwrap().is_none());
    let st = c.cache(&cache).await.status.unwrap();
    if st.replicas.iter().all(|r| !r.state.is_live()) {
        assert_eq!(
            ready_of(&st),
            ("True".into(), "Stored".into()),
            "no replica, a snapshot: the next build restores"
        );
    }
    // With no replica left and a snapshot the planner ranks worth it (the key was built and
    // restoring saves a rebuild), it is restored in the background onto the node left.
    let op = until_operation(&mut c, &cache, 3)
        .await
        .expect("a pre-warm starts");
    assert_eq!(op.kind, OperationKind::Prewarm);
    let st = c.cache(&cache).await.status.unwrap();
    assert_eq!(
        st.replicas.len(),
        1,
        "the lost entry is gone: {:?}",
        st.replicas
    );
    let r = &st.replicas[0];
    assert_eq!(
        (
            r.state,
            r.node.as_deref(),
            r.snapshot_id.as_deref(),
            r.holder.as_deref()
        ),
        (ReplicaState::Restoring, Some(other), Some("s1"), None)
    );
    assert_eq!(r.size_bytes, Some(GIB), "counted against the node at once");
    let new_pvc = r.pvc.clone();
    assert!(
        c.claims().get_opt(&new_pvc).await.unwrap().is_some(),
        "its PVC exists"
    );
    let job = c.jobs().get(&op.job).await.unwrap();
    let args = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap_or_default()
        .join(" ");
    assert!(args.contains("restore s1"), "{args}");
    let learned = |st: &hearth::api::BuildCacheStatus| {
        st.history.as_ref().and_then(|h| h.restore_bytes_per_second)
    };
    assert_eq!(learned(&c.cache(&cache).await.status.unwrap()), None);
    c.finish_job(&op.job, true, r#"{"bytes":1073741824,"seconds":4.0}"#)
        .await;
    c.reconcile_cache(&cache).await;
    let st = c.cache(&cache).await.status.unwrap();
    assert!(st.operation.is_none());
    // A pre-warm is a restore: the planner learns its throughput (1 GiB in 4 s).
    assert_eq!(learned(&st), Some(268435456.0));
    assert_eq!(
        (st.replicas[0].state, st.replicas[0].pvc.as_str()),
        (ReplicaState::Idle, new_pvc.as_str())
    );
    // The next build finds it hot on that node.
    submit(&c, "b2", "shop:main").await;
    assert_eq!(c.settle("b2").await, Some(Phase::Building));
    let placement = c.build("b2").await.status.unwrap().placement.unwrap();
    assert_eq!(
        (placement.warmth, placement.node.as_deref()),
        (Some(hearth::api::Warmth::Hot), Some(other))
    );
}

#[tokio::test]
async fn a_prewarm_whose_node_goes_away_is_abandoned_and_tried_elsewhere() {
    let mut c = Cluster::new(&["n1", "n2", "n3"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    finish_gc(&mut c, &cache, "s1").await;
    let first = c.cache(&cache).await.status.unwrap().replicas[0]
        .node
        .clone()
        .unwrap();
    c.delete_node(&first).await;
    let op = until_operation(&mut c, &cache, 5)
        .await
        .expect("a pre-warm starts");
    let target = c
        .cache(&cache)
        .await
        .status
        .unwrap()
        .replicas
        .iter()
        .find(|r| Some(&r.pvc) == op.pvc.as_ref())
        .and_then(|r| r.node.clone())
        .unwrap();
    c.delete_node(&target).await;
    c.reconcile_cache(&cache).await;
    assert_eq!(
        replica_state(&c, &cache).await.last().cloned(),
        Some((ReplicaState::Lost, Some("NodeLost".into())))
    );
    c.reconcile_cache(&cache).await;
    assert!(
        c.jobs().get_opt(&op.job).await.unwrap().is_none(),
        "its Job is deleted"
    );
    // The operation is given up, and the last node left gets the next pre-warm.
    let next = until_operation(&mut c, &cache, 6)
        .await
        .expect("another pre-warm");
    assert_ne!(next.job, op.job);
    let st = c.cache(&cache).await.status.unwrap();
    let r = st
        .replicas
        .iter()
        .find(|r| Some(&r.pvc) == next.pvc.as_ref())
        .unwrap();
    let left = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != first && *n != target)
        .unwrap();
    assert_eq!(
        (r.state, r.node.as_deref()),
        (ReplicaState::Restoring, Some(left))
    );
}

#[tokio::test]
async fn a_failed_prewarm_never_leaves_a_half_restored_replica() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    finish_gc(&mut c, &cache, "s1").await;
    let node = c.cache(&cache).await.status.unwrap().replicas[0]
        .node
        .clone()
        .unwrap();
    c.delete_node(&node).await;
    let op = until_operation(&mut c, &cache, 5)
        .await
        .expect("a pre-warm starts");
    assert_eq!(op.kind, OperationKind::Prewarm);
    c.finish_job(&op.job, false, "").await;
    // (One reconcile may first drop the lost replica's entry.)
    for _ in 0..3 {
        c.reconcile_cache(&cache).await;
        if c.cache(&cache).await.status.unwrap().operation.is_none() {
            break;
        }
    }
    let st = c.cache(&cache).await.status.unwrap();
    assert!(st.operation.is_none(), "{:?}", st.operation);
    assert_eq!(
        replica_state(&c, &cache).await,
        [(ReplicaState::Evicting, Some("PrewarmFailed".into()))],
        "the volume goes, and no build is handed it"
    );
    assert!(
        st.conditions
            .iter()
            .any(|k| k.type_ == STORE_REACHABLE && k.status == "False"),
        "the store failure is reported and backs off further store jobs"
    );
}

#[tokio::test]
async fn a_replica_is_located_from_its_bound_volume() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    let r = c.cache(&cache).await.status.unwrap().replicas[0].clone();
    let other = if r.node.as_deref() == Some("n1") {
        "n2"
    } else {
        "n1"
    };
    // The provisioner put the volume elsewhere than asked: the PV is the truth.
    c.bind_pvc(&r.pvc, other).await;
    c.reconcile_cache(&cache).await;
    let r = c.cache(&cache).await.status.unwrap().replicas[0].clone();
    assert_eq!(r.node.as_deref(), Some(other));
}

/// Finishes the gc job in flight, if any, its listing holding `snapshot`.
async fn finish_gc(c: &mut Cluster, cache: &str, snapshot: &str) {
    let Some(op) = c.cache(cache).await.status.unwrap().operation else {
        return;
    };
    assert_eq!(op.kind, OperationKind::Gc);
    let listing = format!(
        r#"{{"forgotten":[],"snapshotCount":1,"snapshots":[{{"id":"{snapshot}","created":"2026-11-22T10:00:00Z","bytes":1073741824,"newBytes":1000}}]}}"#
    );
    c.finish_job(&op.job, true, &listing).await;
    c.reconcile_cache(cache).await;
}

/// Hands the reconciler the cache as the API server shows it once deleted: still there,
/// with a deletionTimestamp, until the finalizer goes. (The fake API deletes at once.)
async fn reconcile_deleted(c: &mut Cluster, name: &str, deleted_at: jiff::Timestamp) -> BuildCache {
    c.sync().await;
    let mut marked = c.cache(name).await;
    marked.metadata.deletion_timestamp = Some(Time(deleted_at));
    build_cache::reconcile(Arc::new(marked), c.ctx.clone())
        .await
        .unwrap();
    c.cache(name).await
}

async fn set_policy(c: &Cluster, cache: &str, policy: &str) {
    c.caches()
        .patch(
            cache,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": policy}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn deleting_with_retain_leaves_the_snapshots_and_lets_the_cache_go() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    assert_eq!(
        c.cache(&cache).await.spec.deletion_policy,
        DeletionPolicy::Retain
    );
    let now = c.ctx.now();
    let bc = reconcile_deleted(&mut c, &cache, now).await;
    assert!(bc.finalizers().is_empty());
    let jobs = c.jobs().list(&Default::default()).await.unwrap().items;
    assert!(
        jobs.iter().all(|j| !j.name_any().contains("forget")),
        "no forget job"
    );
}

#[tokio::test]
async fn deleting_with_delete_forgets_the_snapshots_first() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    set_policy(&c, &cache, "Delete").await;
    let now = c.ctx.now();
    let bc = reconcile_deleted(&mut c, &cache, now).await;
    assert_eq!(
        bc.finalizers(),
        [FINALIZER.to_string()],
        "kept until forgotten"
    );
    let op = bc.status.unwrap().operation.unwrap();
    assert_eq!(op.kind, OperationKind::Forget);
    let job = c.jobs().get(&op.job).await.unwrap();
    let args = job.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert!(args.contains("forget --all"), "{args}");
    // Idempotent: another reconcile does not start a second job.
    let bc = reconcile_deleted(&mut c, &cache, now).await;
    assert_eq!(bc.status.unwrap().operation.unwrap().job, op.job);
    c.finish_job(&op.job, true, r#"{"forgotten":1}"#).await;
    let bc = reconcile_deleted(&mut c, &cache, now).await;
    assert!(bc.finalizers().is_empty());
}

#[tokio::test]
async fn deleting_with_delete_waits_for_a_build_holding_a_replica() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    set_policy(&c, &cache, "Delete").await;
    submit(&c, "b2", "shop:main").await;
    assert_eq!(c.settle("b2").await, Some(Phase::Building));
    let now = c.ctx.now();
    let bc = reconcile_deleted(&mut c, &cache, now).await;
    assert!(
        bc.status.unwrap().operation.is_none(),
        "no forget while a build may still save"
    );
}

#[tokio::test]
async fn deleting_with_an_unreachable_store_retries_then_lets_go_with_a_warning() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let cache = cache_of("shop:main");
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 1))).await;
    set_policy(&c, &cache, "Delete").await;
    let deleted_at = c.ctx.now();
    let bc = reconcile_deleted(&mut c, &cache, deleted_at).await;
    let first = bc.status.unwrap().operation.unwrap().job;
    c.finish_job(&first, false, "dial tcp: connection refused")
        .await;
    let bc = reconcile_deleted(&mut c, &cache, deleted_at).await;
    let st = bc.status.clone().unwrap();
    let reachable = st
        .conditions
        .iter()
        .find(|x| x.type_ == STORE_REACHABLE)
        .unwrap();
    assert_eq!(reachable.status, "False");
    assert!(
        reachable.message.contains("connection refused"),
        "{reachable:?}"
    );
    assert_eq!(bc.finalizers(), [FINALIZER.to_string()]);
    c.advance(31);
    let bc = reconcile_deleted(&mut c, &cache, deleted_at).await;
    let second = bc.status.unwrap().operation.unwrap().job;
    assert_ne!(first, second, "retried with a new job");
    c.finish_job(&second, false, "dial tcp: connection refused")
        .await;
    reconcile_deleted(&mut c, &cache, deleted_at).await;
    // Past snapshot.deleteTimeout (10m): the cache goes, leaving its snapshots.
    c.advance(600);
    let bc = reconcile_deleted(&mut c, &cache, deleted_at).await;
    assert!(bc.finalizers().is_empty());
    let metrics = c.ctx.metrics.encode();
    assert!(
        metrics.contains(r#"hearth_store_errors_total{op="forget"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn gauges_show_bytes_per_node_and_replicas_by_state() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    build(&mut c, "b1", "shop:main", Some(&saved("s1", 3))).await;
    set_budget(&c, "n1", "100Gi").await;
    c.reconcile_cache(&cache_of("shop:main")).await;
    hearth::controller::gauges::refresh(&c.ctx);
    let m = c.ctx.metrics.encode();
    for line in [
        r#"hearth_cache_node_bytes{node="n1"} 3221225472"#,
        r#"hearth_cache_node_budget_bytes{node="n1"} 107374182400"#,
        r#"hearth_cache_replicas{state="Idle"} 1"#,
        r#"hearth_cache_uses_total{namespace="shop",warmth="Cold"} 1"#,
        r#"hearth_store_bytes_total{op="save"} 1000"#,
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
}

#[tokio::test]
async fn describe_tells_why_a_build_was_cold() {
    // No store: a replica is the only copy, so a lost node means a cold build.
    let mut c = Cluster::new(&["n1", "n2"], Default::default()).await;
    let cache = cache_of("shop:main");
    submit(&c, "b1", "shop:main").await;
    assert_eq!(c.settle("b1").await, Some(Phase::Building));
    let (meta, _) = metadata('a');
    c.finish_pod("b1-build-1", 0, &meta).await;
    assert_eq!(c.settle("b1").await, Some(Phase::Succeeded));
    let node = c.cache(&cache).await.status.unwrap().replicas[0]
        .node
        .clone()
        .unwrap();
    c.delete_node(&node).await;
    c.reconcile_cache(&cache).await;
    c.submit(
        "b2",
        spec(
            "registry.example.com/shop/api:2",
            json!({"cache": {"key": "shop:main", "restoreKeys": ["shop:base"]}}),
        ),
    )
    .await;
    assert_eq!(c.settle("b2").await, Some(Phase::Building));
    let ready = c
        .build("b2")
        .await
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|x| x.type_ == "CacheReady")
        .unwrap();
    assert_eq!(ready.reason, "Cold");
    for part in [
        "looked for key \"shop:main@amd64\" and restore keys [\"shop:base@amd64\"]",
        "0 snapshot(s)",
        "Lost (NodeLost)",
    ] {
        assert!(
            ready.message.contains(part),
            "{part:?} not in {:?}",
            ready.message
        );
    }
}
