//! The garbage collector and the volume controllers, as API clients.
//!
//! - Garbage collector: an object whose ownerReferences all name uids that no longer exist is
//!   deleted (pods of deleted Jobs, Jobs and pods of deleted ImageBuilds, PVCs of deleted
//!   BuildCaches...). Orphans must be seen on two consecutive ticks, so an owner created just
//!   after the first list is not missed. Owners of kinds it does not list are assumed to exist.
//!   The `foregroundDeletion` and `orphan` finalizers are honoured if the API server sets them.
//! - PVC protection: `kubernetes.io/pvc-protection` leaves a deleted PVC only once no pod in
//!   its namespace, in ANY phase (finished pods too, as in Kubernetes), lists it in
//!   `spec.volumes`.
//! - PV reclaim (policy Delete): once its claim is gone, a PV's host dir is removed (when it
//!   lies under the cluster's root and its node still exists), then the PV is deleted and its
//!   `kubernetes.io/pv-protection` finalizer removed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Preconditions};
use kube::{Client, ResourceExt};

use super::util::{self, is_code, report, TICK};
use hearth::api::{BuildCache, ImageBuild};

const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Starts the garbage collector and the volume controllers.
pub fn spawn(client: Client, root: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut suspects: HashSet<String> = HashSet::new();
        loop {
            if let Err(e) = gc_tick(&client, &mut suspects).await {
                report("gc", "tick", &e);
            }
            if let Err(e) = volumes_tick(&client, &root).await {
                report("volumes", "tick", &e);
            }
            tokio::time::sleep(TICK).await;
        }
    })
}

/// The kinds the collector lists (dependents and owners).
fn kinds() -> Vec<(ApiResource, bool)> {
    vec![
        (ApiResource::erase::<Pod>(&()), true),
        (ApiResource::erase::<Job>(&()), true),
        (ApiResource::erase::<PersistentVolumeClaim>(&()), true),
        (ApiResource::erase::<ImageBuild>(&()), true),
        (ApiResource::erase::<BuildCache>(&()), true),
        (ApiResource::erase::<ConfigMap>(&()), true),
        (ApiResource::erase::<Secret>(&()), true),
        (ApiResource::erase::<Lease>(&()), true),
        (ApiResource::erase::<Node>(&()), false),
        (ApiResource::erase::<Namespace>(&()), false),
        (ApiResource::erase::<PersistentVolume>(&()), false),
    ]
}

async fn gc_tick(client: &Client, suspects: &mut HashSet<String>) -> kube::Result<()> {
    let mut all: Vec<(ApiResource, bool, Vec<DynamicObject>)> = Vec::new();
    for (ar, namespaced) in kinds() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let items = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) if is_code(&e, 404) => Vec::new(),
            Err(e) => return Err(e),
        };
        all.push((ar, namespaced, items));
    }
    let known: HashSet<&str> = all.iter().map(|(ar, _, _)| ar.kind.as_str()).collect();
    let uids: HashSet<String> = all
        .iter()
        .flat_map(|(_, _, items)| items.iter().filter_map(|o| o.uid()))
        .collect();
    let mut next = HashSet::new();
    for (ar, namespaced, items) in &all {
        for obj in items {
            let uid = obj.uid().unwrap_or_default();
            let api = api_for(client, ar, *namespaced, obj);
            if obj.metadata.deletion_timestamp.is_some() {
                if let Err(e) = finish_propagation(client, &all, &api, obj).await {
                    report("gc", &format!("propagating {}", obj.name_any()), &e);
                }
                continue;
            }
            let owners = obj.owner_references();
            let orphaned = !owners.is_empty()
                && owners
                    .iter()
                    .all(|o| known.contains(o.kind.as_str()) && !uids.contains(&o.uid));
            if !orphaned {
                continue;
            }
            if suspects.contains(&uid) {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                if let Err(e) = util::delete(&api, &obj.name_any(), &dp).await {
                    report(
                        "gc",
                        &format!("deleting {} {}", ar.kind, obj.name_any()),
                        &e,
                    );
                }
            } else {
                next.insert(uid);
            }
        }
    }
    *suspects = next;
    Ok(())
}

fn api_for(
    client: &Client,
    ar: &ApiResource,
    namespaced: bool,
    obj: &DynamicObject,
) -> Api<DynamicObject> {
    match (namespaced, obj.namespace()) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), &ns, ar),
        _ => Api::all_with(client.clone(), ar),
    }
}

/// Foreground deletion and orphaning of a deleted owner's dependents.
async fn finish_propagation(
    client: &Client,
    all: &[(ApiResource, bool, Vec<DynamicObject>)],
    api: &Api<DynamicObject>,
    owner: &DynamicObject,
) -> kube::Result<()> {
    let finalizers = owner.finalizers();
    let foreground = finalizers.iter().any(|f| f == "foregroundDeletion");
    let orphan = finalizers.iter().any(|f| f == "orphan");
    if !foreground && !orphan {
        return Ok(());
    }
    let uid = owner.uid().unwrap_or_default();
    let mut remaining = 0;
    for (ar, namespaced, items) in all {
        for dep in items
            .iter()
            .filter(|d| d.owner_references().iter().any(|o| o.uid == uid))
        {
            let dep_api = api_for(client, ar, *namespaced, dep);
            if orphan {
                util::update(&dep_api, &dep.name_any(), |d| {
                    let refs = d.metadata.owner_references.get_or_insert_with(Vec::new);
                    refs.retain(|o| o.uid != uid);
                    true
                })
                .await?;
            } else {
                remaining += 1;
                if dep.metadata.deletion_timestamp.is_none() {
                    util::delete(&dep_api, &dep.name_any(), &DeleteParams::foreground()).await?;
                }
            }
        }
    }
    if remaining == 0 {
        let name = owner.name_any();
        util::remove_finalizer(api, &name, "foregroundDeletion").await?;
        util::remove_finalizer(api, &name, "orphan").await?;
    }
    Ok(())
}

fn claims_of(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

async fn volumes_tick(client: &Client, root: &Path) -> kube::Result<()> {
    let lp = ListParams::default();
    let claims = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    let deleting: Vec<&PersistentVolumeClaim> = claims
        .iter()
        .filter(|c| {
            c.metadata.deletion_timestamp.is_some()
                && c.finalizers().iter().any(|f| f == PVC_PROTECTION)
        })
        .collect();
    if !deleting.is_empty() {
        let pods = Api::<Pod>::all(client.clone()).list(&lp).await?.items;
        for claim in deleting {
            let ns = claim.namespace().unwrap_or_default();
            let name = claim.name_any();
            let in_use = pods
                .iter()
                .any(|p| p.namespace().as_deref() == Some(&ns) && claims_of(p).any(|c| c == name));
            if !in_use {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
                util::remove_finalizer(&api, &name, PVC_PROTECTION).await?;
            }
        }
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let nodes: HashSet<String> = Api::<Node>::all(client.clone())
        .list(&lp)
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    for pv in pvs.list(&lp).await?.items {
        let Some(spec) = &pv.spec else { continue };
        let Some(claim_ref) = &spec.claim_ref else {
            continue;
        };
        let claim_exists = claims.iter().any(|c| {
            c.namespace() == claim_ref.namespace
                && Some(c.name_any()) == claim_ref.name
                && c.uid() == claim_ref.uid
        });
        if claim_exists || spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete") {
            continue;
        }
        let name = pv.name_any();
        // The claim may have been created after the list: check it again before deleting.
        let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(
            client.clone(),
            claim_ref.namespace.as_deref().unwrap_or_default(),
        );
        if let Some(c) = claim_api
            .get_opt(claim_ref.name.as_deref().unwrap_or_default())
            .await?
        {
            if c.uid() == claim_ref.uid {
                continue;
            }
        }
        let node = spec
            .node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref())
            .and_then(|s| s.node_selector_terms.first())
            .and_then(|t| t.match_expressions.as_ref()?.first())
            .and_then(|r| r.values.as_ref()?.first().cloned());
        let path = spec
            .local
            .as_ref()
            .map(|l| PathBuf::from(&l.path))
            .or_else(|| spec.host_path.as_ref().map(|h| PathBuf::from(&h.path)));
        if let Some(path) = path {
            let node_alive = node.as_ref().is_none_or(|n| nodes.contains(n));
            if path.starts_with(root) && node_alive && path.exists() {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    eprintln!("[cluster:volumes] removing {}: {e}", path.display());
                    continue;
                }
            }
        }
        util::update_status(&pvs, &name, |p| {
            let status = p.status.get_or_insert_with(Default::default);
            if status.phase.as_deref() == Some("Released") {
                return false;
            }
            status.phase = Some("Released".into());
            true
        })
        .await?;
        if pv.metadata.deletion_timestamp.is_none() {
            util::delete(&pvs, &name, &DeleteParams::default()).await?;
        }
        util::remove_finalizer(&pvs, &name, PV_PROTECTION).await?;
    }
    Ok(())
}
