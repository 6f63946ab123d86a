//! The replica table: the one module that writes BuildCache status (replicas, their claims,
//! evictions, snapshots learned from saves, the store's health). Every change is a
//! read-modify-write of the status with the resourceVersion read, so two builds can never
//! hold one replica; a claim that loses the race is a conflict and the build re-plans.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::Api;
use kube::{Resource, ResourceExt};

use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::builders::labels;
use super::builders::pvc::{self, replica_pvc};
use super::cache_policy::{self, EvictReason};
use super::conditions;
use super::context::Context;
use super::error::{is_status, Error, Result};
use super::events::publish;
use super::finalizer;
use super::key_history::{self, FinishedBuild};
use super::snapshot_records;
use super::writes::{create_or_get, write_status_if_changed};
use crate::api::{
    keys, BuildCache, BuildCacheSpec, BuildCacheStatus, HitCounts, ReplicaState, ReplicaStatus,
    SnapshotRecord, Warmth,
};

/// Condition telling whether the last store operation worked.
pub const STORE_REACHABLE: &str = "StoreReachable";
/// BuildCache condition: whether the key's next build can start warm.
pub const READY: &str = "Ready";

/// The name of the BuildCache of `key`: `cacheRef`, or the key's derived name.
pub fn cache_name(key: &str, cache_ref: Option<&str>) -> String {
    cache_ref
        .map(String::from)
        .unwrap_or_else(|| keys::cache_name_for_key(key))
}

/// Checks that a BuildCache found for a build is the build's: `None` when it is, otherwise
/// the message naming `spec.cache.cacheRef`.
pub fn cache_mismatch(
    cache: Option<&BuildCache>,
    key: &str,
    cache_ref: Option<&str>,
    namespace: &str,
) -> Option<String> {
    let name = cache_name(key, cache_ref);
    match cache {
        Some(c) if c.spec.key != key => Some(format!(
            "spec.cache.cacheRef: BuildCache {name} has key {:?}, not the build's key {key:?}",
            c.spec.key
        )),
        None if cache_ref.is_some() => Some(format!(
            "spec.cache.cacheRef: BuildCache {name} does not exist in namespace {namespace}"
        )),
        _ => None,
    }
}

/// A new BuildCache for `key` with the operator's defaults (what a ReadWrite build of a key
/// without one creates).
pub fn new_cache(
    config: &super::config::OperatorConfig,
    namespace: &str,
    key: &str,
) -> Result<BuildCache> {
    let mut spec: BuildCacheSpec = serde_json::from_value(serde_json::json!({"key": key}))
        .map_err(|e| Error::Internal(format!("default BuildCache spec: {e}")))?;
    let c = &config;
    spec.max_replicas = c.cache.max_replicas;
    spec.storage.size = c.cache.size.clone();
    spec.snapshot.every = c.snapshot.every;
    spec.snapshot.retain = c.snapshot.retain;
    spec.snapshot.min_interval = c.snapshot.min_interval;
    let mut cache = BuildCache::new(&cache_name(key, None), spec);
    cache.metadata.namespace = Some(namespace.to_string());
    cache.metadata.labels =
        Some([(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string())].into());
    cache.metadata.finalizers = Some(vec![finalizer::SNAPSHOTS.to_string()]);
    Ok(cache)
}

/// Creates a BuildCache (or reads it when another build created it first).
pub async fn create_cache(ctx: &Context, cache: &BuildCache) -> Result<BuildCache> {
    let api: Api<BuildCache> =
        Api::namespaced(ctx.client.clone(), &cache.namespace().unwrap_or_default());
    create_or_get(&api, cache).await
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
    let Some(bc) = api.get_opt(cache).await? else {
        return Ok(None);
    };
    let mut status = bc.status.clone().unwrap_or_default();
    if !change(&mut status, &bc) {
        return Ok(None);
    }
    summarize(&mut status);
    set_ready_condition(&mut status, bc.metadata.generation, ctx.now());
    status.observed_generation = bc.metadata.generation;
    match write_status_if_changed(&api, &bc, status).await {
        // A change that changed nothing is done as it stands.
        Ok(written) => Ok(Some(written.unwrap_or(bc))),
        Err(e) if is_status(&e, 409) => Err(Error::ClaimConflict(cache.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// `Ready`: whether the key's next build can start warm. `True` with reason `Warm` while a live
/// replica exists, or `Stored` when only a snapshot does (the next build restores it); `False`
/// with reason `Empty` otherwise (the next build starts cold, or from a restore key).
pub fn set_ready_condition(status: &mut BuildCacheStatus, generation: Option<i64>, now: Timestamp) {
    let live = status.replicas.iter().filter(|r| r.state.is_live()).count();
    let (ready, reason, message) = match (live, status.snapshots.first()) {
        (0, None) => (
            false,
            "Empty",
            "no replica and no snapshot yet: the next build starts cold (or from a restore key)"
                .to_string(),
        ),
        (0, Some(s)) => (
            true,
            "Stored",
            format!("no replica; the next build restores snapshot {}", s.id),
        ),
        (n, _) => (true, "Warm", format!("{n} live replica(s)")),
    };
    conditions::put(
        &mut status.conditions,
        READY,
        Some(ready),
        reason,
        &message,
        generation,
        now,
    );
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
    status.size = Some(crate::api::quantity::human(total.max(0) as u64));
    let stored: i64 = status.snapshots.iter().map(|s| s.new_bytes.max(0)).sum();
    status.snapshot_bytes = Some(stored);
    status.stored = Some(crate::api::quantity::human(stored as u64));
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
            Some(r)
                if r.state == ReplicaState::Idle
                    && r.holder.is_none()
                    && r.cloning_for.is_none() =>
            {
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

/// Adds replica `pvc` (the name [`next_replica_name`] gave) held by `holder` on `node` (state
/// `Restoring` or `InUse`) and creates its PVC. Idempotent: a holder that already holds `pvc`
/// keeps it. A conflict when the name was taken or the cache reached `maxReplicas` meanwhile
/// (the build re-plans). `size_bytes` is what a restore will write: the node's budget counts
/// it at once, so replicas are evicted to make room while the restore runs.
pub async fn add_replica(ctx: &Context, cache: &BuildCache, replica: NewReplica<'_>) -> Result<()> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let mut held = false;
    let mut lost = false;
    let updated = update_status(ctx, &namespace, &name, |status, bc| {
        if let Some(existing) = status
            .replicas
            .iter()
            .find(|r| r.holder.as_deref() == Some(replica.holder))
        {
            held = existing.pvc == replica.pvc;
            lost = !held;
            return false;
        }
        if status.replicas.iter().any(|r| r.pvc == replica.pvc) {
            lost = true;
            return false;
        }
        let pushed = push_replica(
            status,
            bc,
            replica.node,
            replica.state,
            Some(replica.holder),
            replica.size_bytes,
        );
        lost = pushed.as_deref() != Some(replica.pvc);
        // A clone holds its source's state from the start: the snapshot it matches.
        if let (false, Some((_, snapshot)), Some(r)) =
            (lost, &replica.clone_of, status.replicas.last_mut())
        {
            r.snapshot_id = snapshot.clone();
        }
        !lost
    })
    .await?;
    if lost || (updated.is_none() && !held) {
        return Err(Error::ClaimConflict(name));
    }
    let source = replica.clone_of.as_ref().map(|(pvc, _)| pvc.as_str());
    create_replica_pvc(ctx, updated.as_ref().unwrap_or(cache), replica.pvc, source).await
}

/// Holds replica `pvc` of `cache` for `build`, which clones it: only a replica no build
/// writes (idle and unclaimed, or being saved after its build) and that no other clone
/// holds. `Ok(false)` when it is no longer such a replica (re-plan); idempotent for `build`.
pub async fn hold_for_clone(
    ctx: &Context,
    namespace: &str,
    cache: &str,
    pvc: &str,
    build: &str,
) -> Result<bool> {
    let mut held = false;
    let updated = update_status(ctx, namespace, cache, |status, _| {
        let Some(r) = status.replicas.iter_mut().find(|r| r.pvc == pvc) else {
            return false;
        };
        if r.cloning_for.as_deref() == Some(build) {
            held = true;
            return false;
        }
        let no_writer = (r.state == ReplicaState::Idle && r.holder.is_none())
            || r.state == ReplicaState::Snapshotting;
        if !no_writer || r.cloning_for.is_some() {
            return false;
        }
        r.cloning_for = Some(build.to_string());
        true
    })
    .await?;
    Ok(held || updated.is_some())
}

/// Lifts `build`'s hold on replica `pvc` of `cache` (nothing if it has none). Retried on
/// conflicts: a hold left behind would keep the replica from every build.
pub async fn release_clone_hold(
    ctx: &Context,
    namespace: &str,
    cache: &str,
    pvc: &str,
    build: &str,
) -> Result<()> {
    update_status_retrying(
        ctx,
        namespace,
        cache,
        5,
        "a clone's release",
        |status, _| match status
            .replicas
            .iter_mut()
            .find(|r| r.pvc == pvc && r.cloning_for.as_deref() == Some(build))
        {
            Some(r) => {
                r.cloning_for = None;
                true
            }
            None => false,
        },
    )
    .await
    .map(|_| ())
}

/// A replica a build adds to its cache.
#[derive(Clone, Debug, PartialEq)]
pub struct NewReplica<'a> {
    /// Its PVC name.
    pub pvc: &'a str,
    /// Its node.
    pub node: &'a str,
    /// `Restoring` or `InUse`.
    pub state: ReplicaState,
    /// The build holding it.
    pub holder: &'a str,
    /// Bytes a restore will write into it.
    pub size_bytes: Option<i64>,
    /// The PVC it is cloned from, and the snapshot that one matches (which the clone then
    /// matches too).
    pub clone_of: Option<(String, Option<String>)>,
}

/// The PVC name the next replica of `cache` gets, or `None` when the cache is at
/// `maxReplicas`.
pub fn next_replica_name(cache: &BuildCache) -> Option<String> {
    let mut status = cache.status.clone().unwrap_or_default();
    push_replica(&mut status, cache, "", ReplicaState::InUse, None, None)
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
        cloning_for: None,
    });
    Some(pvc)
}

/// Creates the PVC of replica `pvc` of `cache` (nothing if it exists), a clone of the PVC
/// `clone_of` when given.
pub async fn create_replica_pvc(
    ctx: &Context,
    cache: &BuildCache,
    pvc: &str,
    clone_of: Option<&str>,
) -> Result<()> {
    let namespace = cache.namespace().unwrap_or_default();
    let owner = owner_ref(cache)?;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &namespace);
    let index: u32 = pvc
        .rsplit_once("-r")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0);
    let mut object = replica_pvc(cache, index, owner, &ctx.config);
    if let Some(source) = clone_of {
        object = pvc::clone_of(object, source);
    }
    create_or_get(&claims, &object).await.map(|_| ())
}

/// How a build left its replica.
#[derive(Clone, Debug, PartialEq)]
pub enum Release {
    /// Restore finished: the replica now matches `snapshot` and the build may use it.
    Restored {
        /// The restored snapshot.
        snapshot: String,
        /// Bytes written and seconds taken, as the restore reported them (for the store's
        /// throughput the planner learns).
        sample: Option<(u64, f64)>,
    },
    /// The restore failed or was never started: the replica is as it was (empty), held by
    /// the build, which goes on cold on it; it matches no snapshot.
    RestoreFailed,
    /// The clone's PVC is bound: the replica holds its source's state (and matches the
    /// snapshot the source did, recorded when it was added); the build uses it.
    Cloned,
    /// The clone failed: the replica is retired (reason `CloneFailed`; the bookkeeping
    /// deletes its PVC) and the build, no longer holding it, is placed again.
    CloneFailed,
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
            Release::Restored { snapshot, sample } => {
                r.state = ReplicaState::InUse;
                r.snapshot_id = Some(snapshot);
                if let Some((bytes, seconds)) = sample {
                    key_history::record_restore(&mut status.history, bytes, seconds);
                }
            }
            Release::RestoreFailed => {
                r.state = ReplicaState::InUse;
                r.snapshot_id = None;
            }
            Release::Cloned => r.state = ReplicaState::InUse,
            Release::CloneFailed => {
                r.state = ReplicaState::Lost;
                r.reason = Some("CloneFailed".into());
                r.holder = None;
                r.snapshot_id = None;
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
                    let keep = bc.spec.snapshot.retain.max(1) as usize;
                    snapshot_records::record_save(&mut status.snapshots, record, keep);
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

/// Marks replica `pvc` of `cache` `Evicting` if it is still deletable (the write is guarded by
/// the resourceVersion, so a build claiming it at the same time wins), with an Event and the
/// eviction metric; the BuildCache's bookkeeping then deletes its PVC. Whether it was marked.
pub async fn evict(
    ctx: &Context,
    cache: &BuildCache,
    pvc: &str,
    reason: EvictReason,
) -> Result<bool> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let mut marked = None;
    let updated = update_status(ctx, &namespace, &name, |status, _| {
        let check = status.clone();
        let Some(r) = status.replicas.iter_mut().find(|r| r.pvc == pvc) else {
            return false;
        };
        if !cache_policy::deletable(r, &check) {
            return false;
        }
        marked = Some((
            r.size_bytes.unwrap_or(0),
            r.node.clone().unwrap_or_default(),
        ));
        r.state = ReplicaState::Evicting;
        r.reason = Some(reason.as_str().into());
        true
    })
    .await?;
    let (Some(_), Some((size, where_))) = (updated, marked) else {
        return Ok(false);
    };
    ctx.metrics.evicted(reason.as_str());
    let note = format!(
        "evicting replica {pvc} on {where_} ({}, {size} bytes): {}; its state is in the store",
        reason.as_str(),
        reason.explain(),
    );
    info!(cache = %name, namespace = %namespace, pvc, reason = reason.as_str(), "evicting");
    publish(ctx, cache, EventType::Normal, "Evicted", note).await;
    Ok(true)
}

/// Evicts replica `pvc` of the BuildCache `cache` (read fresh) if it still exists.
pub async fn evict_by_name(
    ctx: &Context,
    namespace: &str,
    cache: &str,
    pvc: &str,
    reason: EvictReason,
) -> Result<bool> {
    let api: Api<BuildCache> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(cache).await? {
        Some(c) => evict(ctx, &c, pvc, reason).await,
        None => Ok(false),
    }
}

/// Sets `StoreReachable`; a failure also starts the store back-off (`storeFailedAt`).
pub fn set_store_condition(
    status: &mut BuildCacheStatus,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    conditions::put(
        &mut status.conditions,
        STORE_REACHABLE,
        Some(ok),
        reason,
        message,
        generation,
        now,
    );
    status.store_failed_at = (!ok).then_some(Time(now));
}

/// A build's save failed (the build itself Succeeded): the cache says so in its
/// `StoreReachable` condition, which also holds back its store operations for a while.
/// Best effort: a write that keeps conflicting is logged, never fatal to the build.
pub async fn save_failed(ctx: &Context, namespace: &str, cache: &str, message: &str) {
    let now = ctx.now();
    let recorded =
        update_status_retrying(ctx, namespace, cache, 3, "a failed save", |status, bc| {
            set_store_condition(
                status,
                false,
                "SaveFailed",
                message,
                bc.metadata.generation,
                now,
            );
            true
        })
        .await;
    if let Err(e) = recorded {
        warn!(cache, namespace, error = %e, "could not record a failed save");
    }
}

/// Owner reference to an object (controller, blocking deletion).
pub fn owner_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Result<OwnerReference> {
    obj.controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidSpec("object has no uid yet".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SnapshotRecord;

    fn ready(status: &BuildCacheStatus) -> (String, String) {
        let c = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn ready_says_whether_the_next_build_can_start_warm() {
        let now = Timestamp::now();
        let mut status = BuildCacheStatus::default();
        set_ready_condition(&mut status, Some(1), now);
        assert_eq!(ready(&status), ("False".into(), "Empty".into()));
        let record: SnapshotRecord = serde_json::from_value(serde_json::json!({
            "id": "s1", "time": "2026-11-30T00:00:00Z", "bytes": 10, "newBytes": 10
        }))
        .unwrap();
        status.snapshots.push(record);
        set_ready_condition(&mut status, Some(1), now);
        assert_eq!(ready(&status), ("True".into(), "Stored".into()));
        status.replicas.push(
            serde_json::from_value(serde_json::json!({"pvc": "r0", "state": "Idle"})).unwrap(),
        );
        set_ready_condition(&mut status, Some(1), now);
        assert_eq!(ready(&status), ("True".into(), "Warm".into()));
        status.replicas[0].state = crate::api::ReplicaState::Lost;
        set_ready_condition(&mut status, Some(1), now);
        assert_eq!(ready(&status), ("True".into(), "Stored".into()));
    }
}
