//! Clones, with the real `hearth controller` process against the process-level cluster: a
//! branch's first build on the node that holds main's idle replica gets a new replica cloned
//! from it (a PVC `dataSource`, which the test cluster's volume binder honours by copying the
//! source PV's dir, as a CSI driver with CLONE_VOLUME would) instead of a restore; a clone the
//! storage refuses falls back to a restore, saying why.

mod cluster;

use std::time::{Duration, Instant};

use cluster::scheduler::CLONE_ANNOTATION;
use cluster::{build_spec, secs, ClusterOpts, TestCluster, Values, STORAGE_CLASS};
use hearth::api::{keys, ImageBuild, ReplicaState, Warmth};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

fn cache_ready(ib: &ImageBuild) -> Option<(String, String)> {
    ib.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "CacheReady")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

fn placement(ib: &ImageBuild) -> hearth::api::Placement {
    ib.status
        .as_ref()
        .and_then(|s| s.placement.clone())
        .expect("placement")
}

/// A cluster whose operator may clone replicas of the test StorageClass (`clone`), or not.
async fn cluster(clone: bool) -> TestCluster {
    let values = Values {
        clone_storage_classes: if clone {
            vec![STORAGE_CLASS.to_string()]
        } else {
            Vec::new()
        },
        clone_bind_timeout: "30s".into(),
        ..Values::default()
    };
    TestCluster::start(ClusterOpts {
        values,
        start_latency: Duration::from_millis(800),
        ..ClusterOpts::default()
    })
    .await
}

/// main built and saved, its replica idle again; returns main's build.
async fn main_built(c: &TestCluster) -> ImageBuild {
    c.apply_build("main-1", build_spec("shop:main", json!({})))
        .await;
    c.wait_build("main-1", "Succeeded", secs(60)).await;
    let pvc = placement(&c.builds().get("main-1").await.unwrap())
        .replica
        .expect("replica");
    let name = keys::cache_name_for_key("shop:main@amd64");
    let caches = c.caches();
    c.wait_for("main's replica saved and idle", secs(60), || {
        let (caches, name, pvc) = (caches.clone(), name.clone(), pvc.clone());
        async move {
            let status = caches.get(&name).await.ok()?.status?;
            let r = status.replicas.iter().find(|r| r.pvc == pvc)?;
            (r.state == ReplicaState::Idle && r.snapshot_id.is_some()).then_some(())
        }
    })
    .await;
    c.builds().get("main-1").await.unwrap()
}

/// A branch build falling back to main; returns it once Succeeded, with its creation to
/// Succeeded time.
async fn branch_built(c: &TestCluster, name: &str) -> (ImageBuild, Duration) {
    let mut spec = build_spec("shop:feature-x", json!({}));
    spec.cache.restore_keys = vec!["shop:main".into()];
    let created = Instant::now();
    c.apply_build(name, spec).await;
    let built = c.wait_build(name, "Succeeded", secs(90)).await;
    (built, created.elapsed())
}

/// The headline case, then the restore it replaces, each from creation to Succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_clones_main_s_replica_on_its_node_instead_of_restoring() {
    let c = cluster(true).await;
    let main = main_built(&c).await;
    let main_pvc = placement(&main).replica.expect("main's replica");
    let (fx, cloned_time) = branch_built(&c, "fx-1").await;
    let p = placement(&fx);
    assert_eq!(p.warmth, Some(Warmth::Restored), "{p:?}");
    let from = p.cloned_from.clone().expect("clonedFrom");
    assert_eq!(from.key, "shop:main@amd64");
    assert_eq!(from.replica, main_pvc);
    assert!(
        from.snapshot.is_some(),
        "main's replica was saved: {from:?}"
    );
    assert_eq!(p.restored_from, None, "nothing restored: {p:?}");
    assert_eq!(
        p.node,
        placement(&main).node,
        "the clone is on its source's node"
    );
    assert_eq!(cache_ready(&fx).map(|c| c.0).as_deref(), Some("Cloned"));
    let took = fx.status.as_ref().and_then(|s| s.durations.as_ref());
    assert!(
        took.and_then(|d| d.restore.as_deref())
            .is_some_and(|d| d.ends_with('s')),
        "a clone says how long its volume took: {took:?}"
    );
    // The builder pod ran no restore, and no restore Job ran either.
    let fx_runs: Vec<_> = c
        .runs
        .all()
        .into_iter()
        .filter(|r| r.pod.starts_with("fx-1-"))
        .collect();
    assert!(
        fx_runs.iter().all(|r| r.container != "restore"),
        "{fx_runs:?}"
    );
    // The branch's replica is a PVC cloned from main's, holding main's state.
    let pvc = p.replica.clone().expect("replica");
    let claim = c.claims().get(&pvc).await.unwrap();
    let source = claim.spec.as_ref().and_then(|s| s.data_source.clone());
    assert_eq!(
        source.map(|s| (s.kind, s.name)),
        Some(("PersistentVolumeClaim".into(), main_pvc.clone()))
    );
    let dir = c.pv_dir(&pvc).await.expect("bound");
    // main's build left snapshot tree 1; the branch's build, on main's state, added tree 2.
    let trees = dir.join("buildkit/runc-overlayfs/snapshots");
    assert!(
        trees.join("1/fs").is_dir() && trees.join("2/fs").is_dir(),
        "the branch built on main's state: {trees:?}"
    );
    assert_ne!(
        Some(dir),
        c.pv_dir(&main_pvc).await,
        "a copy, not main's volume"
    );
    // Main's replica is free again: neither held for the clone nor claimed.
    let main_cache = c
        .caches()
        .get(&keys::cache_name_for_key("shop:main@amd64"))
        .await
        .unwrap();
    let r = main_cache
        .status
        .unwrap()
        .replicas
        .into_iter()
        .find(|r| r.pvc == main_pvc)
        .unwrap();
    assert_eq!(
        (r.state, r.cloning_for, r.holder),
        (ReplicaState::Idle, None, None)
    );
    // The replica belongs to the branch's own BuildCache.
    let branch_cache = c
        .caches()
        .get(&keys::cache_name_for_key("shop:feature-x@amd64"))
        .await
        .unwrap();
    assert!(branch_cache
        .status
        .unwrap()
        .replicas
        .iter()
        .any(|r| r.pvc == pvc));
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
    drop(c);

    // The same builds where the storage may not clone: the branch restores main's snapshot.
    let c = cluster(false).await;
    main_built(&c).await;
    let (fy, restored_time) = branch_built(&c, "fx-1").await;
    let p = placement(&fy);
    assert!(
        p.restored_from.is_some() && p.cloned_from.is_none(),
        "{p:?}"
    );
    eprintln!(
        "creation to Succeeded, a branch's first build from main: cloned {:.2} s, restored {:.2} s",
        cloned_time.as_secs_f64(),
        restored_time.as_secs_f64()
    );
}

/// Storage that cannot clone after all (the operator was told it could): the clone's PVC is
/// refused with a ProvisioningFailed Event, the build deletes it and restores instead, and
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_clone_falls_back_to_a_restore_saying_why() {
    let c = cluster(true).await;
    let main = main_built(&c).await;
    let main_pvc = placement(&main).replica.expect("main's replica");
    let classes: Api<StorageClass> = Api::all(c.client());
    let patch = json!({"metadata": {"annotations": {CLONE_ANNOTATION: null}}});
    classes
        .patch(
            STORAGE_CLASS,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();

    let (fx, _) = branch_built(&c, "fx-1").await;
    let p = placement(&fx);
    assert!(
        p.restored_from.is_some() && p.cloned_from.is_none(),
        "{p:?}"
    );
    assert_eq!(
        fx.status.as_ref().and_then(|s| s.attempts),
        Some(2),
        "the restore is the build's next attempt"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.client(), "shop");
    let notes: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("CloneFailed"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("restoring instead")
                && n.contains("does not support volume cloning")),
        "{notes:?}"
    );
    // Main's replica was let go; the refused clone's replica is retired.
    let caches = c.caches();
    let main_name = keys::cache_name_for_key("shop:main@amd64");
    let branch_name = keys::cache_name_for_key("shop:feature-x@amd64");
    c.wait_for(
        "the clone's replica retired and main's free",
        secs(30),
        || {
            let (caches, main_name, branch_name, main_pvc) = (
                caches.clone(),
                main_name.clone(),
                branch_name.clone(),
                main_pvc.clone(),
            );
            let used = p.replica.clone();
            async move {
                let main = caches.get(&main_name).await.ok()?.status?;
                let r = main.replicas.iter().find(|r| r.pvc == main_pvc)?;
                let branch = caches.get(&branch_name).await.ok()?.status?;
                let retired = branch
                    .replicas
                    .iter()
                    .all(|r| Some(&r.pvc) == used.as_ref() || !r.state.is_live());
                (r.cloning_for.is_none() && r.holder.is_none() && retired).then_some(())
            }
        },
    )
    .await;
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
}
