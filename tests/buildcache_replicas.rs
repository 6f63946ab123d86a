//! BuildCache status stays true to the cluster: replicas whose PVC or node is gone become
//! Lost, claims of builds that no longer exist are released.

mod support;

use hearth::api::{keys, Phase, ReplicaState, Warmth};
use serde_json::json;
use support::{metadata, s3_config, spec, Cluster};

#[tokio::test]
async fn a_deleted_replica_pvc_marks_the_replica_lost_and_the_next_build_restores() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let cache = keys::cache_name_for_key("shop:main@amd64");
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.settle("b1").await;
    let (meta, _) = metadata('a');
    c.finish_pod("b1-build-1", 0, &meta).await;
    c.settle("b1").await;
    c.finish_job(
        "b1-save-1",
        true,
        r#"{"id":"snap-1","bytes":10,"manifestSha256":"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a","uploadedBytes":10}"#,
    )
    .await;
    assert_eq!(c.settle("b1").await, Some(Phase::Succeeded));
    let pvc = c
        .build("b1")
        .await
        .status
        .unwrap()
        .placement
        .unwrap()
        .replica
        .unwrap();

    // Untouched while the PVC exists.
    c.reconcile_cache(&cache).await;
    assert_eq!(
        c.cache(&cache).await.status.unwrap().replicas[0].state,
        ReplicaState::Idle
    );

    c.claims().delete(&pvc, &Default::default()).await.unwrap();
    c.reconcile_cache(&cache).await;
    let replicas = c.cache(&cache).await.status.unwrap().replicas;
    assert_eq!(
        (replicas[0].pvc.as_str(), replicas[0].state),
        (pvc.as_str(), ReplicaState::Lost)
    );

    c.submit("b2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    assert_eq!(c.settle("b2").await, Some(Phase::Restoring));
    let p = c.build("b2").await.status.unwrap().placement.unwrap();
    assert_eq!(p.warmth, Some(Warmth::Restored));
    assert_ne!(
        p.replica.as_deref(),
        Some(pvc.as_str()),
        "a new replica, not the lost one"
    );
}

#[tokio::test]
async fn a_claim_whose_build_is_gone_is_released() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let cache = keys::cache_name_for_key("shop:main@amd64");
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    assert_eq!(c.settle("b1").await, Some(Phase::Building));
    assert_eq!(
        c.cache(&cache).await.status.unwrap().replicas[0]
            .holder
            .as_deref(),
        Some("b1")
    );
    // The build vanishes without its finalizer running (force-removed, or lost with etcd).
    c.builds().delete("b1", &Default::default()).await.unwrap();
    c.reconcile_cache(&cache).await;
    let r = &c.cache(&cache).await.status.unwrap().replicas[0];
    assert_eq!((r.state, r.holder.as_deref()), (ReplicaState::Idle, None));
    assert_eq!(
        r.snapshot_id, None,
        "its state may have changed: not a match for any snapshot"
    );
}
