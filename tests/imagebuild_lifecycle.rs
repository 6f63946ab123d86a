//! The ImageBuild lifecycle as state transitions on a stateful fake API: given these
//! objects, after reconcile, these objects and this status.

mod support;

use hearth::api::common::condition;
use hearth::api::{keys, Phase, ReplicaState, Warmth};
use hearth::controller::image_build::status::saving;
use kube::ResourceExt;
use serde_json::json;
use support::{metadata, s3_config, spec, Cluster, SAVED, SAVED_PIN};

fn cache_name() -> String {
    keys::cache_name_for_key("shop:main@amd64")
}

/// Replica `pvc` of shop:main's BuildCache, as its status says.
async fn replica_of(c: &Cluster, pvc: &str) -> hearth::api::ReplicaStatus {
    c.cache(&cache_name())
        .await
        .status
        .unwrap()
        .replicas
        .into_iter()
        .find(|r| r.pvc == pvc)
        .expect("replica")
}

/// Runs `build` to its end and binds its replica's PVC on its node; returns its placement.
async fn run_and_bind(c: &mut Cluster, build: &str, digest: char) -> hearth::api::Placement {
    let placement = c
        .run_to_end(build, digest)
        .await
        .status
        .unwrap()
        .placement
        .unwrap();
    c.bind_pvc(
        placement.replica.as_deref().unwrap(),
        placement.node.as_deref().unwrap(),
    )
    .await;
    placement
}

#[tokio::test]
async fn first_build_is_cold_creates_its_cache_and_is_saved() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;

    // Pending -> Placing -> Building: a BuildCache for the key, a replica claimed, a PVC, a pod.
    assert_eq!(c.settle("b1").await, Some(Phase::Building));
    let ib = c.build("b1").await;
    let st = ib.status.clone().unwrap();
    let placement = st.placement.clone().unwrap();
    assert_eq!(placement.warmth, Some(Warmth::Cold));
    let node = placement.node.clone().unwrap();
    let pvc = placement.replica.clone().unwrap();
    assert_eq!(placement.cache.as_deref(), Some(cache_name().as_str()));
    assert!(ib.finalizers().iter().any(|f| f == "hearth.dev/release"));
    let bc = c.cache(&cache_name()).await;
    let replica = &bc.status.as_ref().unwrap().replicas[0];
    assert_eq!(
        (replica.state, replica.holder.as_deref()),
        (ReplicaState::InUse, Some("b1"))
    );
    assert!(
        c.claims().get_opt(&pvc).await.unwrap().is_some(),
        "replica PVC created"
    );
    let pod = c.pods().get("b1-build-1").await.unwrap();
    assert_eq!(pod.labels()["hearth.dev/node"], node);

    // The pod succeeds -> Succeeded at once (the image is pushed), the save running after
    // it in a job on the same node and PVC, which stays held (Snapshotting) meanwhile.
    let (meta, digest) = metadata('a');
    c.finish_pod("b1-build-1", 0, &meta).await;
    assert_eq!(c.settle("b1").await, Some(Phase::Succeeded));
    let st = c.build("b1").await.status.unwrap();
    assert!(saving(&st), "Snapshotted=Unknown while the save runs");
    assert_eq!(st.image_digest.as_deref(), Some(digest.as_str()));
    let job = c.jobs().get("b1-save-1").await.unwrap();
    let tpl = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        tpl.volumes.unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        pvc
    );
    assert_eq!(
        c.cache(&cache_name()).await.status.unwrap().replicas[0].state,
        ReplicaState::Snapshotting
    );

    // The save succeeds -> Succeeded; the replica is idle and matches the new snapshot.
    c.finish_job("b1-save-1", true, SAVED).await;
    assert_eq!(c.settle("b1").await, Some(Phase::Succeeded));
    let st = c.build("b1").await.status.unwrap();
    assert_eq!(st.image_digest.as_deref(), Some(digest.as_str()));
    for t in [
        condition::PLACED,
        condition::CACHE_READY,
        condition::BUILT,
        condition::SNAPSHOTTED,
        condition::SUCCEEDED,
    ] {
        let cond = st
            .conditions
            .iter()
            .find(|x| x.type_ == t)
            .unwrap_or_else(|| panic!("{t}"));
        assert_eq!(cond.status, "True", "{t}: {cond:?}");
    }
    let d = st.durations.unwrap();
    assert_eq!(
        (d.build.as_deref(), d.snapshot.as_deref()),
        (Some("40s"), Some("9s"))
    );
    let bcs = c.cache(&cache_name()).await.status.unwrap();
    let r = &bcs.replicas[0];
    assert_eq!(
        (r.state, r.holder.as_deref(), r.snapshot_id.as_deref()),
        (ReplicaState::Idle, None, Some("snap-1"))
    );
    assert_eq!(
        (bcs.snapshots[0].id.as_str(), bcs.snapshots[0].new_bytes),
        ("snap-1", 800000)
    );
    assert_eq!(
        bcs.snapshots[0].manifest_sha256.as_deref(),
        Some(SAVED_PIN),
        "the save's manifest digest is recorded, pinning the snapshot"
    );
    assert_eq!(bcs.hits.unwrap().cold, 1);
    assert_eq!(bcs.snapshot_count, Some(1));
}

#[tokio::test]
async fn second_build_of_a_key_runs_hot_on_the_same_node_and_replica() {
    let mut c = Cluster::new(&["n1", "n2", "n3"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let first = run_and_bind(&mut c, "b1", 'a').await;

    c.submit("b2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    assert_eq!(c.settle("b2").await, Some(Phase::Building));
    let second = c.build("b2").await.status.unwrap().placement.unwrap();
    assert_eq!(second.warmth, Some(Warmth::Hot));
    assert_eq!((second.node, second.replica), (first.node, first.replica));
    assert!(
        c.jobs().get_opt("b2-restore-1").await.unwrap().is_none(),
        "no restore for a hot build"
    );
}

#[tokio::test]
async fn lost_replica_is_restored_from_its_snapshot_on_another_node() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let first = c
        .run_to_end("b1", 'a')
        .await
        .status
        .unwrap()
        .placement
        .unwrap();
    let first_node = first.node.clone().unwrap();
    c.bind_pvc(first.replica.as_deref().unwrap(), &first_node)
        .await;
    c.delete_node(&first_node).await;

    c.submit("b2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    assert_eq!(c.settle("b2").await, Some(Phase::Restoring));
    let p = c.build("b2").await.status.unwrap().placement.unwrap();
    assert_eq!(p.warmth, Some(Warmth::Restored));
    assert_ne!(p.node.as_deref(), Some(first_node.as_str()));
    let from = p.restored_from.clone().unwrap();
    assert_eq!(
        (from.key.as_str(), from.snapshot.as_str()),
        ("shop:main@amd64", "snap-1")
    );
    // The restore runs in the builder pod's init container, on the new replica: no Job.
    assert!(c.jobs().get_opt("b2-restore-1").await.unwrap().is_none());
    let pod = c.pods().get("b2-build-1").await.unwrap().spec.unwrap();
    let init = &pod.init_containers.unwrap()[0];
    let args = init.args.clone().unwrap();
    assert_eq!(
        args[..4],
        ["snapshot", "restore", "snap-1", "/cache/buildkit"]
    );
    assert!(pod.volumes.unwrap().iter().any(|v| v
        .persistent_volume_claim
        .as_ref()
        .is_some_and(|c| Some(&c.claim_name) == p.replica.as_ref())));
    assert_eq!(
        args[4..6],
        ["--manifest-sha256", SAVED_PIN],
        "the restore is pinned to the digest the save reported"
    );
    assert_eq!(from.manifest_sha256.as_deref(), Some(SAVED_PIN));
    let replica = replica_of(&c, p.replica.as_deref().unwrap()).await;
    assert_eq!(replica.state, ReplicaState::Restoring);
    assert_eq!(
        replica.snapshot_id, None,
        "not before the restore succeeded"
    );

    c.finish_restore("b2-build-1", 0, r#"{"bytes":2000000000,"seconds":8.0}"#)
        .await;
    assert_eq!(c.settle("b2").await, Some(Phase::Building));
    let st = c.build("b2").await.status.unwrap();
    assert_eq!(st.durations.unwrap().restore.as_deref(), Some("9s"));
    let replica = replica_of(&c, p.replica.as_deref().unwrap()).await;
    assert_eq!(
        (replica.state, replica.snapshot_id.as_deref()),
        (ReplicaState::InUse, Some("snap-1")),
        "the replica records the snapshot it now holds"
    );
    let history = c
        .cache(&cache_name())
        .await
        .status
        .unwrap()
        .history
        .unwrap();
    assert_eq!(
        history.restore_bytes_per_second,
        Some(250e6),
        "the cache learns the throughput the restore reported"
    );
    assert!(
        c.pods().get_opt("b2-build-2").await.unwrap().is_none(),
        "the build goes on in the same pod"
    );
    let cond = st
        .conditions
        .iter()
        .find(|x| x.type_ == condition::CACHE_READY)
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "Restored")
    );
}

#[tokio::test]
async fn failed_restore_builds_cold_on_the_empty_replica_and_says_why() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let first = run_and_bind(&mut c, "b1", 'a').await;
    c.delete_node(first.node.as_deref().unwrap()).await;
    c.submit("b2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    assert_eq!(c.settle("b2").await, Some(Phase::Restoring));
    c.finish_restore(
        "b2-build-1",
        1,
        "error: chunk 4f2a… in pack p-9: hash mismatch",
    )
    .await;
    assert_eq!(c.settle("b2").await, Some(Phase::Building));
    let st = c.build("b2").await.status.unwrap();
    assert_eq!(st.attempts, Some(2));
    let p = st.placement.clone().unwrap();
    assert_eq!(p.warmth, Some(Warmth::Cold));
    // The next attempt builds cold on the same (untouched) replica, which holds no snapshot.
    let pod = c.pods().get("b2-build-2").await.unwrap().spec.unwrap();
    assert!(pod.init_containers.is_none(), "no restore this time");
    assert!(pod.volumes.unwrap().iter().any(|v| v
        .persistent_volume_claim
        .as_ref()
        .is_some_and(|c| Some(&c.claim_name) == p.replica.as_ref())));
    let replica = replica_of(&c, p.replica.as_deref().unwrap()).await;
    assert_eq!(
        (replica.state, replica.snapshot_id),
        (ReplicaState::InUse, None)
    );
    let (meta, _) = metadata('e');
    c.finish_pod("b2-build-2", 0, &meta).await;
    assert_eq!(c.settle("b2").await, Some(Phase::Succeeded));
    let cond = st
        .conditions
        .iter()
        .find(|x| x.type_ == condition::CACHE_READY)
        .unwrap();
    assert_eq!(cond.reason, "RestoreFailed");
    assert!(cond.message.contains("hash mismatch"), "{}", cond.message);
}

#[tokio::test]
async fn two_builds_of_one_key_never_hold_one_replica() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    run_and_bind(&mut c, "b1", 'a').await;

    c.submit("b2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    c.submit("b3", spec("registry.example.com/shop/api:3", json!({})))
        .await;
    // Both plan from the same view, in which the replica is idle: the second claim loses the
    // race on the BuildCache's resourceVersion and must re-plan.
    c.sync().await;
    let ctx = c.ctx.clone();
    let b2 = std::sync::Arc::new(c.build("b2").await);
    let b3 = std::sync::Arc::new(c.build("b3").await);
    // Start both (Pending -> Placing), then place both from one stale view.
    hearth::controller::image_build::reconcile(b2, ctx.clone())
        .await
        .unwrap();
    hearth::controller::image_build::reconcile(b3, ctx.clone())
        .await
        .unwrap();
    let (b2, b3) = (
        std::sync::Arc::new(c.build("b2").await),
        std::sync::Arc::new(c.build("b3").await),
    );
    let r2 = hearth::controller::image_build::reconcile(b2, ctx.clone()).await;
    let r3 = hearth::controller::image_build::reconcile(b3, ctx.clone()).await;
    assert!(r2.is_ok(), "{r2:?}");
    assert!(
        matches!(r3, Err(hearth::controller::error::Error::ClaimConflict(_))),
        "{r3:?}"
    );
    // After re-planning on a fresh view, b3 runs elsewhere (a new replica) or waits.
    c.settle("b3").await;
    let p2 = c.build("b2").await.status.unwrap().placement.unwrap();
    let p3 = c.build("b3").await.status.unwrap().placement.unwrap();
    assert_eq!(p2.warmth, Some(Warmth::Hot));
    assert_ne!(p2.replica, p3.replica, "never one replica for two builds");
    let holders: Vec<_> = c
        .cache(&cache_name())
        .await
        .status
        .unwrap()
        .replicas
        .iter()
        .filter_map(|r| r.holder.clone())
        .collect();
    let mut dedup = holders.clone();
    dedup.dedup();
    assert_eq!(holders.len(), dedup.len());
}

#[tokio::test]
async fn failed_build_reports_the_log_tail_and_releases_without_saving() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.settle("b1").await;
    c.finish_pod(
        "b1-build-1",
        1,
        "#9 ERROR: process \"/bin/sh -c pytest\" did not complete successfully: exit code: 1",
    )
    .await;
    assert_eq!(c.settle("b1").await, Some(Phase::Failed));
    let st = c.build("b1").await.status.unwrap();
    let succeeded = st
        .conditions
        .iter()
        .find(|x| x.type_ == condition::SUCCEEDED)
        .unwrap();
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("False", "BuildFailed")
    );
    assert!(st.message.unwrap().contains("pytest"));
    assert!(st.completion_time.is_some());
    assert!(
        c.jobs().get_opt("b1-save-1").await.unwrap().is_none(),
        "a failed build is not saved"
    );
    let r = &c.cache(&cache_name()).await.status.unwrap().replicas[0];
    assert_eq!(
        (r.state, r.holder.as_deref(), r.snapshot_id.as_deref()),
        (ReplicaState::Idle, None, None)
    );
}

#[tokio::test]
async fn deleting_a_build_mid_way_stops_its_pod_and_releases_its_replica() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    assert_eq!(c.settle("b1").await, Some(Phase::Building));
    assert!(c.pods().get_opt("b1-build-1").await.unwrap().is_some());
    // What the API server does on delete while a finalizer is set: the object stays, with a
    // deletionTimestamp, until the controller removes its finalizer. (The fake API deletes at
    // once, so the marked object is handed to the reconciler as a watch would deliver it.)
    let mut marked = c.build("b1").await;
    marked.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    hearth::controller::image_build::reconcile(std::sync::Arc::new(marked), c.ctx.clone())
        .await
        .unwrap();
    assert!(
        c.build("b1").await.finalizers().is_empty(),
        "finalizer removed: the API server may now delete it"
    );
    assert!(
        c.pods().get_opt("b1-build-1").await.unwrap().is_none(),
        "builder pod stopped"
    );
    let r = &c.cache(&cache_name()).await.status.unwrap().replicas[0];
    assert_eq!((r.state, r.holder.as_deref()), (ReplicaState::Idle, None));
}

#[tokio::test]
async fn a_restarted_controller_resumes_the_build_where_it_stood() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    assert_eq!(c.settle("b1").await, Some(Phase::Building));
    let before = c.build("b1").await.status.unwrap().placement.unwrap();
    c.restart_controller().await;
    assert_eq!(c.settle("b1").await, Some(Phase::Building));
    let after = c.build("b1").await.status.unwrap().placement.unwrap();
    assert_eq!(before, after, "same node and replica after the restart");
    let pods = c.pods().list(&Default::default()).await.unwrap().items;
    assert_eq!(pods.len(), 1, "no second builder pod");
    let (meta, _) = metadata('c');
    c.finish_pod("b1-build-1", 0, &meta).await;
    c.restart_controller().await;
    assert_eq!(c.settle("b1").await, Some(Phase::Succeeded));
    assert!(saving(&c.build("b1").await.status.unwrap()));
    c.restart_controller().await;
    c.finish_job("b1-save-1", true, SAVED).await;
    assert_eq!(c.settle("b1").await, Some(Phase::Succeeded));
}

#[tokio::test]
async fn cancel_stops_the_build_and_ends_cancelled() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.settle("b1").await;
    let mut ib = c.build("b1").await;
    ib.spec.cancel = true;
    c.builds()
        .replace("b1", &Default::default(), &ib)
        .await
        .unwrap();
    assert_eq!(c.settle("b1").await, Some(Phase::Cancelled));
    assert!(c.pods().get_opt("b1-build-1").await.unwrap().is_none());
    let st = c.build("b1").await.status.unwrap();
    assert_eq!(
        st.conditions
            .iter()
            .find(|x| x.type_ == condition::SUCCEEDED)
            .unwrap()
            .status,
        "False"
    );
    assert_eq!(
        c.cache(&cache_name()).await.status.unwrap().replicas[0].holder,
        None
    );
}

/// The controller keeps a finished build compact (no spec, little status); a `spec.cancel` set
/// after it ended is still acknowledged, and nothing else of its status is lost.
#[tokio::test]
async fn a_late_cancel_of_a_finished_build_is_acknowledged_without_losing_its_status() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let done = c.run_to_end("b1", 'a').await;
    assert_eq!(Cluster::phase_of(&done), Some(Phase::Succeeded));
    let mut ib = done.clone();
    ib.spec.cancel = true;
    let cancelled = c
        .builds()
        .replace("b1", &Default::default(), &ib)
        .await
        .unwrap();
    assert!(cancelled.metadata.generation > done.metadata.generation);
    c.reconcile("b1").await.expect("reconcile");
    let after = c.build("b1").await;
    let (mut now, mut before) = (after.status.clone().unwrap(), done.status.unwrap());
    assert_eq!(now.observed_generation, cancelled.metadata.generation);
    now.observed_generation = None;
    before.observed_generation = None;
    assert_eq!(
        now, before,
        "the status is as it was, but for observedGeneration"
    );
    assert_eq!(after.spec, ib.spec);
}

#[tokio::test]
async fn a_build_past_its_timeout_fails_with_reason_timeout() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    c.submit(
        "b1",
        spec("registry.example.com/shop/api:1", json!({"timeout": "10m"})),
    )
    .await;
    c.settle("b1").await;
    c.advance(11 * 60);
    assert_eq!(c.settle("b1").await, Some(Phase::Failed));
    let st = c.build("b1").await.status.unwrap();
    assert_eq!(
        st.conditions
            .iter()
            .find(|x| x.type_ == condition::SUCCEEDED)
            .unwrap()
            .reason,
        "Timeout"
    );
    assert!(c.pods().get_opt("b1-build-1").await.unwrap().is_none());
}

#[tokio::test]
async fn readonly_build_uses_a_throwaway_copy_and_leaves_the_cache_untouched() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    run_and_bind(&mut c, "b1", 'a').await;
    let before = c.cache(&cache_name()).await.status.unwrap();

    c.submit(
        "pr",
        spec(
            "registry.example.com/shop/api:pr-7",
            json!({"cache": {"key": "shop:main", "mode": "ReadOnly"}}),
        ),
    )
    .await;
    let phase = c.settle("pr").await;
    let p = c.build("pr").await.status.unwrap().placement.unwrap();
    let restoring = p.warmth == Some(Warmth::Restored);
    assert_eq!(
        phase,
        Some(if restoring {
            Phase::Restoring
        } else {
            Phase::Building
        })
    );
    assert_eq!(p.replica, None, "never a replica it could write back to");
    let pod = c.pods().get("pr-build-1").await.unwrap().spec.unwrap();
    assert!(pod
        .volumes
        .unwrap()
        .iter()
        .all(|v| v.persistent_volume_claim.is_none()));
    if restoring {
        assert_eq!(
            pod.init_containers.unwrap()[0].args.clone().unwrap()[..3],
            ["snapshot", "restore", "snap-1"]
        );
        c.finish_restore("pr-build-1", 0, "{}").await;
        assert_eq!(c.settle("pr").await, Some(Phase::Building));
    }
    let (meta, _) = metadata('d');
    c.finish_pod("pr-build-1", 0, &meta).await;
    assert_eq!(c.settle("pr").await, Some(Phase::Succeeded));
    assert!(
        c.jobs().get_opt("pr-save-1").await.unwrap().is_none(),
        "no snapshot from a ReadOnly build"
    );
    let after = c.cache(&cache_name()).await.status.unwrap();
    assert_eq!(before.replicas, after.replicas);
    assert_eq!(before.snapshots, after.snapshots);
}

#[tokio::test]
async fn a_cache_ref_to_a_missing_buildcache_fails_naming_the_field() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    c.submit(
        "b1",
        spec(
            "registry.example.com/shop/api:1",
            json!({"cache": {"key": "shop:main", "cacheRef": "nope"}}),
        ),
    )
    .await;
    assert_eq!(c.settle("b1").await, Some(Phase::Failed));
    let st = c.build("b1").await.status.unwrap();
    let cond = st
        .conditions
        .iter()
        .find(|x| x.type_ == condition::SUCCEEDED)
        .unwrap();
    assert_eq!(cond.reason, "InvalidSpec");
    assert!(
        cond.message
            .starts_with("spec.cache.cacheRef: BuildCache nope does not exist"),
        "{}",
        cond.message
    );
}

#[tokio::test]
async fn a_build_whose_node_is_lost_is_retried_once_elsewhere() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.settle("b1").await;
    let node = c
        .build("b1")
        .await
        .status
        .unwrap()
        .placement
        .unwrap()
        .node
        .unwrap();
    c.schedule_pod("b1-build-1", &node).await;
    c.delete_node(&node).await;
    c.settle("b1").await;
    let st = c.build("b1").await.status.unwrap();
    assert_eq!(st.attempts, Some(2));
    let p = st.placement.unwrap();
    assert_ne!(p.node.as_deref(), Some(node.as_str()));
    assert!(
        c.pods().get_opt("b1-build-2").await.unwrap().is_some(),
        "second attempt's pod"
    );
    let lost = c
        .cache(&cache_name())
        .await
        .status
        .unwrap()
        .replicas
        .into_iter()
        .filter(|r| r.state == ReplicaState::Lost)
        .count();
    assert_eq!(lost, 1, "the lost node's replica is marked Lost");
}

#[tokio::test]
async fn a_branch_restores_main_s_snapshot_from_main_s_cache() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    c.submit("main-1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let first = c.run_to_end("main-1", 'a').await;
    let node = first.status.unwrap().placement.unwrap().node.unwrap();
    // main's only replica is busy, so the branch restores main's snapshot onto a new one.
    c.submit("main-2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    assert_eq!(c.settle("main-2").await, Some(Phase::Building));
    let branch = json!({"cache": {"key": "shop:feature-x", "restoreKeys": ["shop:main"]}});
    c.submit("fx-1", spec("registry.example.com/shop/api:fx", branch))
        .await;
    assert_eq!(c.settle("fx-1").await, Some(Phase::Restoring));
    let p = c.build("fx-1").await.status.unwrap().placement.unwrap();
    let from = p.restored_from.unwrap();
    assert_eq!(from.key, "shop:main@amd64");
    assert_eq!(from.cache.as_deref(), Some(cache_name().as_str()));
    assert_eq!(
        p.cache.as_deref(),
        Some(keys::cache_name_for_key("shop:feature-x@amd64").as_str()),
        "the new replica is the branch's"
    );
    assert_eq!(p.node.as_deref(), Some(node.as_str()));
    let pod = c.pods().get("fx-1-build-1").await.unwrap();
    let container = &pod.spec.unwrap().init_containers.unwrap()[0];
    let env = |name: &str| {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        env("HEARTH_CACHE"),
        Some(cache_name()),
        "the snapshot is read from the cache that saved it"
    );
    assert!(c.jobs().get_opt("fx-1-restore-1").await.unwrap().is_none());
}

fn seeded_spec(image: &str) -> hearth::api::ImageBuildSpec {
    spec(
        image,
        json!({"cache": {"key": "shop:main", "registry": {
            "importFrom": ["registry.example.com/shop/api:buildcache"],
            "exportTo": {"ref": "registry.example.com/shop/api:buildcache"}
        }}}),
    )
}

async fn builder_args(c: &Cluster, pod: &str) -> Vec<String> {
    let pod = c.pods().get(pod).await.unwrap();
    pod.spec.unwrap().containers[0].args.clone().unwrap()
}

#[tokio::test]
async fn a_cold_build_with_registry_caches_starts_seeded_and_a_hot_one_does_not() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    c.submit("b1", seeded_spec("registry.example.com/shop/api:1"))
        .await;
    assert_eq!(c.settle("b1").await, Some(Phase::Building));
    let placement = c.build("b1").await.status.unwrap().placement.unwrap();
    assert_eq!(placement.warmth, Some(Warmth::Cold));
    assert_eq!(
        placement.imported_from,
        ["registry.example.com/shop/api:buildcache"]
    );
    assert!(
        placement
            .reason
            .as_deref()
            .unwrap()
            .contains("seeded from the registry cache"),
        "{placement:?}"
    );
    let args = builder_args(&c, "b1-build-1").await;
    let import = [
        "--import-cache",
        "type=registry,ref=registry.example.com/shop/api:buildcache",
    ];
    let export = [
        "--export-cache",
        "type=registry,ref=registry.example.com/shop/api:buildcache,mode=min",
    ];
    assert!(args.windows(2).any(|w| w == import), "{args:?}");
    assert!(args.windows(2).any(|w| w == export), "{args:?}");

    run_and_bind(&mut c, "b1", 'a').await;
    c.submit("b2", seeded_spec("registry.example.com/shop/api:2"))
        .await;
    assert_eq!(c.settle("b2").await, Some(Phase::Building));
    let second = c.build("b2").await.status.unwrap().placement.unwrap();
    assert_eq!(second.warmth, Some(Warmth::Hot));
    assert!(second.imported_from.is_empty(), "{second:?}");
    let args = builder_args(&c, "b2-build-1").await;
    assert!(!args.iter().any(|a| a == "--import-cache"), "{args:?}");
    assert!(
        args.windows(2).any(|w| w == export),
        "a hot build still exports: {args:?}"
    );
}
