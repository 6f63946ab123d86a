//! The ImageBuild lifecycle as state transitions on a stateful fake API: given these
//! objects, after reconcile, these objects and this status.

mod support;

use hearth::api::common::condition;
use hearth::api::{keys, Phase, ReplicaState, Warmth};
use kube::ResourceExt;
use serde_json::json;
use support::{metadata, s3_config, spec, Cluster};

const SAVED: &str = r#"{"bytes":1200000,"id":"snap-1","uploadedBytes":800000}"#;

fn cache_name() -> String {
    keys::cache_name_for_key("shop:main")
}

/// Runs build `name` from submit to the end on a cluster, finishing its pod (and save job).
async fn run_to_end(c: &mut Cluster, name: &str, digest_char: char) -> hearth::api::ImageBuild {
    c.settle(name).await;
    let (meta, _) = metadata(digest_char);
    c.finish_pod(&format!("{name}-build-1"), 0, &meta).await;
    c.settle(name).await;
    if c.jobs()
        .get_opt(&format!("{name}-save-1"))
        .await
        .unwrap()
        .is_some()
    {
        c.finish_job(&format!("{name}-save-1"), true, SAVED).await;
        c.settle(name).await;
    }
    c.build(name).await
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

    // The pod succeeds -> Snapshotting with a save job on the same node and PVC.
    let (meta, digest) = metadata('a');
    c.finish_pod("b1-build-1", 0, &meta).await;
    assert_eq!(c.settle("b1").await, Some(Phase::Snapshotting));
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
    assert_eq!(bcs.hits.unwrap().cold, 1);
    assert_eq!(bcs.snapshot_count, Some(1));
}

#[tokio::test]
async fn second_build_of_a_key_runs_hot_on_the_same_node_and_replica() {
    let mut c = Cluster::new(&["n1", "n2", "n3"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let first = run_to_end(&mut c, "b1", 'a')
        .await
        .status
        .unwrap()
        .placement
        .unwrap();
    c.bind_pvc(
        first.replica.as_deref().unwrap(),
        first.node.as_deref().unwrap(),
    )
    .await;

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
