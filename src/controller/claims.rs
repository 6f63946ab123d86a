//! Replica claims in BuildCache status, with optimistic concurrency: every change is a
//! read-modify-write of the status with the resourceVersion read, so two builds can never
//! hold one replica; a claim that loses the race is a conflict and the build re-plans.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use super::builders::{labels, pvc::replica_pvc};
use super::context::Context;
use super::error::{is_status, Error, Result};
use super::key_history::{self, FinishedBuild};
use crate::api::{
    keys, BuildCache, BuildCacheSpec, BuildCacheStatus, HitCounts, ReplicaState, ReplicaStatus,
    SnapshotRecord, Warmth,
};

/// Gets the BuildCache of `key` (by `cacheRef` or the key's derived name), creating it with
/// the operator's defaults when it does not exist and `create` is set.
pub async fn cache_for_key(
    ctx: &Context,
    namespace: &str,
    key: &str,
    cache_ref: Option<&str>,
    create: bool,
) -> Result<Option<BuildCache>> {
    let api: Api<BuildCache> = Api::namespaced(ctx.client.clone(), namespace);
    let name = cache_ref
        .map(String::from)
        .unwrap_or_else(|| keys::cache_name_for_key(key));
    if let Some(cache) = api.get_opt(&name).await? {
        if cache.spec.key != key {
            return Err(Error::InvalidSpec(format!(
                "spec.cache.cacheRef: BuildCache {name} has key {:?}, not the build's key {key:?}",
                cache.spec.key
            )));
        }
        return Ok(Some(cache));
    }
    if cache_ref.is_some() {
        return Err(Error::InvalidSpec(format!(
            "spec.cache.cacheRef: BuildCache {name} does not exist in namespace {namespace}"
        )));
    }
    if !create {
        return Ok(None);
    }
    let c = &ctx.config;
    let mut spec: BuildCacheSpec = serde_json::from_value(serde_json::json!({"key": key}))
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    spec.max_replicas = c.cache.max_replicas;
    spec.storage.size = c.cache.size.clone();
    spec.snapshot.every = c.snapshot.every;
    spec.snapshot.retain = c.snapshot.retain;
    spec.snapshot.min_interval = c.snapshot.min_interval;
    let mut cache = BuildCache::new(&name, spec);
    cache.metadata.namespace = Some(namespace.to_string());
    cache.metadata.labels =
        Some([(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string())].into());
    cache.metadata.finalizers = Some(vec![super::build_cache::FINALIZER.to_string()]);
    match api
        .create(
            &PostParams {
                field_manager: Some(labels::FIELD_MANAGER.into()),
                ..Default::default()
            },
            &cache,
        )
        .await
    {
        Ok(created) => Ok(Some(created)),
        Err(e) if is_status(&e, 409) => Ok(api.get_opt(&name).await?),
        Err(e) => Err(e.into()),
    }
}

/// Applies `change` to the BuildCache's status and writes it with the resourceVersion read.
/// `change` returns `false` to give up (nothing written). A write conflict is returned as
/// [`Error::ClaimConflict`].
pub async fn update_status(
    ctx: &Context,
    namespace: &str,
    cache: &str,
    change: impl FnOnce(&mut BuildCacheStatus, &BuildCache) -> bool,
) -> Result<Option<BuildCache>> {
    let api: Api<BuildCache> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(mut bc) = api.get_opt(cache).await? else {
        return Ok(None);
    };
    let mut status = bc.status.clone().unwrap_or_default();
    if !change(&mut status, &bc) {
        return Ok(None);
    }
    summarize(&mut status);
    bc.status = Some(status);
    match api
        .replace_status(
            cache,
            &PostParams {
                field_manager: Some(labels::FIELD_MANAGER.into()),
                ..Default::default()
            },
            &bc,
        )
        .await
    {
        Ok(updated) => Ok(Some(updated)),
        Err(e) if is_status(&e, 409) => Err(Error::ClaimConflict(cache.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the printer-column fields in step with the lists.
pub fn summarize(status: &mut BuildCacheStatus) {
    status.replica_count = Some(status.replicas.len() as i32);
    let mut places: Vec<String> = status
        .replicas
        .iter()
        .filter(|r| r.state.is_live())
        .filter_map(|r| r.node.clone().or_else(|| r.zone.clone()))
        .collect();
    places.sort();
    places.dedup();
    status.locations = (!places.is_empty()).then(|| places.join(","));
    status.snapshot_count = Some(status.snapshots.len() as i32);
    let total: i64 = status.replicas.iter().filter_map(|r| r.size_bytes).sum();
    status.total_bytes = Some(total);
    status.size = Some(super::quantity::human(total.max(0) as u64));
    status.last_used = status
        .replicas
        .iter()
        .filter_map(|r| r.last_used.clone())
        .max_by_key(|t| t.0);
}

/// Claims an idle replica for `holder`. `Ok(false)` when it is no longer idle (re-plan).
pub async fn claim_idle(
    ctx: &Context,
    namespace: &str,
    cache: &str,
    pvc: &str,
    holder: &str,
) -> Result<bool> {
    let mut taken = false;
    let updated = update_status(ctx, namespace, cache, |status, _| {
        match status.replicas.iter_mut().find(|r| r.pvc == pvc) {
            Some(r) if r.holder.as_deref() == Some(holder) => {
                taken = true;
                false
            }
            Some(r) if r.state == ReplicaState::Idle && r.holder.is_none() => {
                r.state = ReplicaState::InUse;
                r.holder = Some(holder.to_string());
                true
            }
            _ => false,
        }
    })
    .await?;
    Ok(taken || updated.is_some())
}

/// Adds a new replica held by `holder` on `node` (state `Restoring` or `InUse`) and creates
/// its PVC. Returns the PVC name, or `None` when the cache is at `maxReplicas`. `size_bytes`
/// is what a restore will write: the node's budget counts it at once, so replicas are evicted
/// to make room while the restore runs.
pub async fn add_replica(
    ctx: &Context,
    cache: &BuildCache,
    node: &str,
    state: ReplicaState,
    holder: &str,
    size_bytes: Option<i64>,
) -> Result<Option<String>> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let mut chosen = None;
    let updated = update_status(ctx, &namespace, &name, |status, bc| {
        if let Some(existing) = status
            .replicas
            .iter()
            .find(|r| r.holder.as_deref() == Some(holder))
        {
            chosen = Some(existing.pvc.clone());
            return false;
        }
        chosen = push_replica(status, bc, node, state, Some(holder), size_bytes);
        chosen.is_some()
    })
    .await?;
    let Some(pvc) = chosen else { return Ok(None) };
    create_replica_pvc(ctx, updated.as_ref().unwrap_or(cache), &pvc).await?;
    Ok(Some(pvc))
}

/// Appends a replica entry on `node` to `status` under the next free PVC name and returns the
/// name, or `None` when the cache is at `maxReplicas`.
pub fn push_replica(
    status: &mut BuildCacheStatus,
    cache: &BuildCache,
    node: &str,
    state: ReplicaState,
    holder: Option<&str>,
    size_bytes: Option<i64>,
) -> Option<String> {
    let name = cache.name_any();
    let live = status.replicas.iter().filter(|r| r.state.is_live()).count() as i32;
    if live >= cache.spec.max_replicas {
        return None;
    }
    let n = (0u32..)
        .find(|n| {
            !status
                .replicas
                .iter()
                .any(|r| r.pvc == labels::replica_pvc_name(&name, *n))
        })
        .unwrap_or(0);
    let pvc = labels::replica_pvc_name(&name, n);
    status.replicas.push(ReplicaStatus {
        pvc: pvc.clone(),
        node: Some(node.to_string()),
        zone: None,
        state,
        holder: holder.map(str::to_string),
        size_bytes,
        last_used: None,
        snapshot_id: None,
        builds_since_snapshot: None,
        uses: None,
        reason: None,
    });
    Some(pvc)
}

/// Creates the PVC of replica `pvc` of `cache` (nothing if it exists).
pub async fn create_replica_pvc(ctx: &Context, cache: &BuildCache, pvc: &str) -> Result<()> {
    let namespace = cache.namespace().unwrap_or_default();
    let owner = owner_ref(cache)?;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &namespace);
    let index: u32 = pvc
        .rsplit_once("-r")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0);
    let object = replica_pvc(cache, index, owner, &ctx.config);
    match claims
        .create(
            &PostParams {
                field_manager: Some(labels::FIELD_MANAGER.into()),
                ..Default::default()
            },
            &object,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How a build left its replica.
#[derive(Clone, Debug, PartialEq)]
pub enum Release {
    /// Restore finished: the replica now matches `snapshot` and the build may use it.
    Restored {
        /// The restored snapshot.
        snapshot: String,
    },
    /// About to be saved.
    Snapshotting,
    /// The build is done with it; `changed` when a ReadWrite build succeeded (state no longer
    /// matches the last snapshot); `saved` with the new snapshot when one was taken.
    Done {
        /// The build wrote to the replica.
        changed: bool,
        /// Snapshot just taken, if any.
        saved: Option<SnapshotRecord>,
        /// Warmth of the build, for hit counts.
        warmth: Option<Warmth>,
        /// What the key's history learns from the build (none when it was aborted).
        build: Option<FinishedBuild>,
    },
    /// The replica's node is gone.
    Lost,
}

/// Updates the replica held by `holder` (nothing if it holds none: idempotent). Retries
/// read-modify-write on conflicts, since a release must not be lost.
pub async fn release(
    ctx: &Context,
    namespace: &str,
    cache: &str,
    holder: &str,
    how: Release,
    now: Timestamp,
) -> Result<()> {
    let change = |status: &mut BuildCacheStatus, bc: &BuildCache| {
        let Some(r) = status
            .replicas
            .iter_mut()
            .find(|r| r.holder.as_deref() == Some(holder))
        else {
            return false;
        };
        match how.clone() {
            Release::Restored { snapshot } => {
                r.state = ReplicaState::InUse;
                r.snapshot_id = Some(snapshot);
            }
            Release::Snapshotting => r.state = ReplicaState::Snapshotting,
            Release::Lost => {
                r.state = ReplicaState::Lost;
                r.holder = None;
            }
            Release::Done {
                changed,
                saved,
                warmth,
                build,
            } => {
                r.state = ReplicaState::Idle;
                r.holder = None;
                r.last_used = Some(Time(now));
                r.uses = Some(r.uses.unwrap_or(0) + 1);
                if let Some(record) = &saved {
                    r.snapshot_id = Some(record.id.clone());
                    r.builds_since_snapshot = Some(0);
                    r.size_bytes = Some(record.bytes);
                } else if changed {
                    r.snapshot_id = None;
                    r.builds_since_snapshot = Some(r.builds_since_snapshot.unwrap_or(0) + 1);
                }
                // Under the claim, like the hit counts: a build is learned from once.
                if let Some(mut facts) = build {
                    facts.cache_bytes = saved.as_ref().map(|s| s.bytes);
                    key_history::record(&mut status.history, &facts);
                }
                if let Some(record) = saved {
                    status.snapshots.insert(0, record);
                    let keep = bc.spec.snapshot.retain.max(1) as usize;
                    status.snapshots.truncate(keep);
                }
                let hits = status.hits.get_or_insert_with(HitCounts::default);
                match warmth {
                    Some(Warmth::Hot) => hits.hot += 1,
                    Some(Warmth::Restored) => hits.restored += 1,
                    Some(Warmth::Cold) => hits.cold += 1,
                    None => {}
                }
                status.last_build = Some(holder.to_string());
            }
        }
        true
    };
    update_status_retrying(ctx, namespace, cache, 5, "release", change)
        .await
        .map(|_| ())
}

/// [`update_status`] retried on write conflicts, each attempt applying `change` to a fresh
/// read: for changes that must not be lost to a concurrent writer (a release, a failed save).
/// After `attempts` conflicts, a conflict naming `what`.
pub async fn update_status_retrying(
    ctx: &Context,
    namespace: &str,
    cache: &str,
    attempts: usize,
    what: &str,
    mut change: impl FnMut(&mut BuildCacheStatus, &BuildCache) -> bool,
) -> Result<Option<BuildCache>> {
    for _ in 0..attempts {
        match update_status(ctx, namespace, cache, &mut change).await {
            Err(Error::ClaimConflict(_)) => continue,
            other => return other,
        }
    }
    Err(Error::ClaimConflict(format!(
        "{cache}: {what} kept conflicting"
    )))
}

/// Owner reference to an object (controller, blocking deletion).
pub fn owner_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Result<OwnerReference> {
    obj.controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidSpec("object has no uid yet".into()))
}
