//! Clones as state transitions on the stateful fake API: a branch's first build holds main's
//! idle replica while a replica cloned from it (a PVC `dataSource`) binds, no other build
//! claims main's replica meanwhile, and once bound the hold is lifted and the branch's new
//! replica, in its own BuildCache, carries main's snapshot; a hold left by a build that no
//! longer clones is lifted by the BuildCache's bookkeeping.

mod support;

use hearth::api::{keys, Phase, ReplicaState, Warmth};
use hearth::controller::config::OperatorConfig;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{metadata, s3_config, spec, Cluster};

const SAVED: &str = r#"{"id":"snap-1","bytes":10,"manifestSha256":"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a","uploadedBytes":10}"#;

/// Replicas on StorageClass `lvm`, which the operator says can clone.
fn clone_config() -> OperatorConfig {
    let mut c = s3_config();
    c.cache.storage_class_name = "lvm".into();
    c.cache.clone_storage_classes = vec!["lvm".into()];
    c
}

/// main built and saved on one node; returns its replica's PVC.
async fn main_saved(c: &mut Cluster) -> String {
    c.submit("m1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.settle("m1").await;
    let (meta, _) = metadata('a');
    c.finish_pod("m1-build-1", 0, &meta).await;
    c.settle("m1").await;
    c.finish_job("m1-save-1", true, SAVED).await;
    assert_eq!(c.settle("m1").await, Some(Phase::Succeeded));
    c.build("m1")
        .await
        .status
        .unwrap()
        .placement
        .unwrap()
        .replica
        .unwrap()
}

fn branch() -> hearth::api::ImageBuildSpec {
    let mut s = spec(
        "registry.example.com/shop/api:fx",
        json!({"cache": {"key": "shop:feature-x", "restoreKeys": ["shop:main"]}}),
    );
    s.cache.key = Some("shop:feature-x".into());
    s
}

async fn set_bound(claims: &Api<PersistentVolumeClaim>, pvc: &str) {
    let mut claim = claims.get(pvc).await.expect("pvc");
    claim.status.get_or_insert_with(Default::default).phase = Some("Bound".into());
    claims
        .replace_status(pvc, &PostParams::default(), &claim)
        .await
        .expect("bound");
}

#[tokio::test]
async fn a_branch_clones_main_s_idle_replica_which_no_build_claims_until_the_clone_is_bound() {
    let mut c = Cluster::new(&["n1"], clone_config()).await;
    let main_cache = keys::cache_name_for_key("shop:main@amd64");
    let main_pvc = main_saved(&mut c).await;

    c.submit("fx-1", branch()).await;
    assert_eq!(c.settle("fx-1").await, Some(Phase::Restoring));
    let p = c.build("fx-1").await.status.unwrap().placement.unwrap();
    assert_eq!(p.warmth, Some(Warmth::Restored));
    let from = p.cloned_from.clone().expect("clonedFrom");
    assert_eq!(
        (from.replica.as_str(), from.snapshot.as_deref()),
        (main_pvc.as_str(), Some("snap-1"))
    );
    // main's replica is held for the clone...
    let main_replica = |bc: hearth::api::BuildCache| {
        bc.status
            .unwrap()
            .replicas
            .into_iter()
            .find(|r| r.pvc == main_pvc)
            .unwrap()
    };
    let held = main_replica(c.cache(&main_cache).await);
    assert_eq!(
        (held.state, held.cloning_for.as_deref()),
        (ReplicaState::Idle, Some("fx-1"))
    );
    // ...and the branch's replica, in the branch's own BuildCache, is a PVC cloned from it.
    let pvc = p.replica.clone().expect("replica");
    let branch_cache = keys::cache_name_for_key("shop:feature-x@amd64");
    assert_eq!(p.cache.as_deref(), Some(branch_cache.as_str()));
    let claim = c.claims().get(&pvc).await.unwrap();
    let source = claim
        .spec
        .as_ref()
        .and_then(|s| s.data_source.clone())
        .expect("dataSource");
    assert_eq!(
        (source.kind.as_str(), source.name.as_str()),
        ("PersistentVolumeClaim", main_pvc.as_str())
    );
    let mine = c.cache(&branch_cache).await.status.unwrap().replicas;
    assert_eq!(
        (
            mine[0].state,
            mine[0].snapshot_id.as_deref(),
            mine[0].holder.as_deref()
        ),
        (ReplicaState::Restoring, Some("snap-1"), Some("fx-1")),
        "the clone carries main's snapshot lineage"
    );
    assert!(
        c.pods().get_opt("fx-1-build-1").await.unwrap().is_some(),
        "the builder pod is created at once (it is what binds the clone)"
    );

    // A build of main arriving meanwhile does not claim the held replica.
    c.submit("m2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    c.settle("m2").await;
    let m2 = c.build("m2").await.status.unwrap();
    assert_ne!(
        m2.placement.and_then(|p| p.replica),
        Some(main_pvc.clone()),
        "a held replica is never claimed"
    );
    assert_eq!(main_replica(c.cache(&main_cache).await).holder, None);

    // Bound: the hold is lifted, the branch builds on its replica.
    set_bound(&c.claims(), &pvc).await;
    assert_eq!(c.settle("fx-1").await, Some(Phase::Building));
    let released = main_replica(c.cache(&main_cache).await);
    assert_eq!(released.cloning_for, None);
    let mine = c.cache(&branch_cache).await.status.unwrap().replicas;
    assert_eq!(mine[0].state, ReplicaState::InUse);
}

#[tokio::test]
async fn a_clone_whose_placement_was_not_recorded_is_resumed_as_that_clone() {
    let mut c = Cluster::new(&["n1"], clone_config()).await;
    let main_cache = keys::cache_name_for_key("shop:main@amd64");
    let main_pvc = main_saved(&mut c).await;
    c.submit("fx-1", branch()).await;
    c.until_placing("fx-1").await;
    // The clone is made (main's replica held, the branch's replica added, its PVC created
    // from main's), then the build's status write conflicts: nothing records the placement.
    let err = c.reconcile_behind_another_writer("fx-1").await;
    assert!(err.contains("409") || err.contains("onflict"), "{err}");
    let branch_cache = keys::cache_name_for_key("shop:feature-x@amd64");
    let mine = c.cache(&branch_cache).await.status.unwrap().replicas;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let pvc = mine[0].pvc.clone();

    // The next reconciles resume that clone: not a restore into the cloned volume (which
    // would find it not empty and fail the attempt), nor a second replica.
    assert_eq!(c.settle("fx-1").await, Some(Phase::Restoring));
    let p = c.build("fx-1").await.status.unwrap().placement.unwrap();
    assert_eq!(p.replica.as_deref(), Some(pvc.as_str()), "{p:?}");
    assert_eq!(p.restored_from, None, "{p:?}");
    assert_eq!(
        p.cloned_from.as_ref().map(|f| f.replica.as_str()),
        Some(main_pvc.as_str()),
        "{p:?}"
    );
    let pod = c.pods().get("fx-1-build-1").await.unwrap();
    let inits = pod.spec.unwrap().init_containers.unwrap_or_default();
    assert!(
        inits.iter().all(|i| i.name != "restore"),
        "no restore into the clone: {:?}",
        inits.iter().map(|i| &i.name).collect::<Vec<_>>()
    );
    let mine = c.cache(&branch_cache).await.status.unwrap().replicas;
    assert_eq!(mine.len(), 1, "no second replica: {mine:?}");
    assert_eq!(
        c.claims()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    set_bound(&c.claims(), &pvc).await;
    assert_eq!(c.settle("fx-1").await, Some(Phase::Building));
    let main = c.cache(&main_cache).await.status.unwrap().replicas;
    assert!(main.iter().all(|r| r.cloning_for.is_none()), "{main:?}");
}

#[tokio::test]
async fn a_hold_of_a_build_that_no_longer_clones_is_lifted() {
    let mut c = Cluster::new(&["n1"], clone_config()).await;
    let main_cache = keys::cache_name_for_key("shop:main@amd64");
    let main_pvc = main_saved(&mut c).await;
    // A hold by a build that is gone (deleted before it lifted it).
    let mut bc = c.cache(&main_cache).await;
    let status = bc.status.as_mut().unwrap();
    status.replicas[0].cloning_for = Some("gone".into());
    let body =
        json!({"metadata": {"resourceVersion": bc.metadata.resource_version}, "status": status});
    c.caches()
        .patch_status(&main_cache, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap();
    c.reconcile_cache(&main_cache).await;
    let r = c.cache(&main_cache).await.status.unwrap().replicas;
    let r = r.iter().find(|r| r.pvc == main_pvc).unwrap();
    assert_eq!(
        (r.state, r.cloning_for.as_deref()),
        (ReplicaState::Idle, None)
    );
}
