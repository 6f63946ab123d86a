//! A claim whose status write conflicts: the ImageBuild reconciler claims a replica in the
//! BuildCache, then writes the build's status; when someone else updated the build in
//! between, that write answers 409 Conflict. The next reconcile must find the claim it made
//! (neither a second replica nor a leaked first one) and the build runs once, on it.

mod support;

use hearth::api::{keys, BuildCache, Phase, ReplicaState, Warmth};
use serde_json::json;
use support::{metadata, s3_config, spec, Cluster, SAVED};

fn cache_name() -> String {
    keys::cache_name_for_key("shop:main@amd64")
}

/// The replicas of the cache held by `build`.
fn held_by(cache: &BuildCache, build: &str) -> Vec<hearth::api::ReplicaStatus> {
    cache
        .status
        .iter()
        .flat_map(|s| &s.replicas)
        .filter(|r| r.holder.as_deref() == Some(build))
        .cloned()
        .collect()
}

async fn warmth(c: &Cluster, name: &str) -> Option<Warmth> {
    c.build(name).await.status?.placement?.warmth
}

/// After the conflict, the build goes on to Building on exactly the replica it claimed, runs
/// once there, and releases it at the end.
async fn proceeds_once_on_its_claim(c: &mut Cluster, name: &str) {
    let claimed = held_by(&c.cache(&cache_name()).await, name);
    assert_eq!(claimed.len(), 1, "the claim was made: {claimed:?}");
    let claimed = claimed[0].clone();

    assert_eq!(c.settle(name).await, Some(Phase::Building));
    let cache = c.cache(&cache_name()).await;
    let held = held_by(&cache, name);
    assert_eq!(
        held.iter().map(|r| r.pvc.as_str()).collect::<Vec<_>>(),
        vec![claimed.pvc.as_str()],
        "one claim, the first: {:?}",
        cache.status
    );
    let placement = c
        .build(name)
        .await
        .status
        .and_then(|s| s.placement)
        .unwrap();
    assert_eq!(placement.replica.as_deref(), Some(claimed.pvc.as_str()));
    assert_eq!(
        placement.node, claimed.node,
        "the build runs where its replica is"
    );
    let pods: Vec<String> = c
        .pods()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .filter(|p| p.starts_with(&format!("{name}-build-")))
        .collect();
    assert_eq!(pods, vec![format!("{name}-build-1")]);

    let (meta, _) = metadata('b');
    c.finish_pod(&format!("{name}-build-1"), 0, &meta).await;
    assert_eq!(c.settle(name).await, Some(Phase::Succeeded));
    let save = format!("{name}-save-1");
    if c.jobs().get_opt(&save).await.unwrap().is_some() {
        c.finish_job(&save, true, SAVED).await;
        c.settle(name).await;
    }
    let cache = c.cache(&cache_name()).await;
    assert!(held_by(&cache, name).is_empty(), "{:?}", cache.status);
    let replicas = &cache.status.as_ref().unwrap().replicas;
    assert!(
        replicas
            .iter()
            .all(|r| r.state == ReplicaState::Idle && r.holder.is_none()),
        "every replica released: {replicas:?}"
    );
}

#[tokio::test]
async fn a_conflict_after_claiming_a_hot_replica_keeps_that_one_claim() {
    let mut c = Cluster::new(&["n1", "n2", "n3"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let first = c.run_to_end("b1", 'a').await;
    assert_eq!(Cluster::phase_of(&first), Some(Phase::Succeeded));
    let first = first.status.unwrap().placement.unwrap();
    c.bind_pvc(
        first.replica.as_deref().unwrap(),
        first.node.as_deref().unwrap(),
    )
    .await;

    c.submit("b2", spec("registry.example.com/shop/api:2", json!({})))
        .await;
    c.until_placing("b2").await;
    let err = c.reconcile_behind_another_writer("b2").await;
    assert!(err.contains("409") || err.contains("onflict"), "{err}");
    proceeds_once_on_its_claim(&mut c, "b2").await;
    assert_eq!(warmth(&c, "b2").await, Some(Warmth::Hot));
    let replicas = c.cache(&cache_name()).await.status.unwrap().replicas;
    assert_eq!(replicas.len(), 1, "no second replica: {replicas:?}");
}

#[tokio::test]
async fn a_conflict_after_adding_a_cold_replica_keeps_that_one_claim() {
    let mut c = Cluster::new(&["n1", "n2", "n3"], s3_config()).await;
    c.submit("b1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.until_placing("b1").await;
    let err = c.reconcile_behind_another_writer("b1").await;
    assert!(err.contains("409") || err.contains("onflict"), "{err}");
    proceeds_once_on_its_claim(&mut c, "b1").await;
    assert_eq!(warmth(&c, "b1").await, Some(Warmth::Cold));
    let cache = c.cache(&cache_name()).await.status.unwrap();
    assert_eq!(cache.replicas.len(), 1, "no second replica: {cache:?}");
    let claims = c.claims().list(&Default::default()).await.unwrap().items;
    assert_eq!(claims.len(), 1, "one replica PVC: {claims:?}");
}
