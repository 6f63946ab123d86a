//! The BuildCache reconciler: keeps a cache's fleet of replicas true to the cluster and within
//! its budgets, and its snapshots listed and collected. One step per reconcile:
//!
//! 1. deletion (finalizer `hearth.dev/snapshots`): with `deletionPolicy: Delete`, a Job forgets
//!    the cache's snapshots, then the finalizer goes; `Retain` lets it go at once;
//! 2. bookkeeping: replicas located from their bound PVs, idle ones whose PVC or node is gone
//!    marked `Lost`, claims of vanished builds released, `Lost` and `Evicting` replicas'
//!    PVCs deleted and their entries dropped;
//! 3. the maintenance Job in flight (save, gc, forget), followed to its end;
//! 4. the next duty from [`cache_policy::next_duty`]: evict, save before evicting, a deferred
//!    save, pre-warm (restore the newest snapshot onto a node with room when the cache has no
//!    replica left and the planner ranks it among those the next builds will want), or gc.
//!
//! Store operations run as Jobs in the cache's namespace with that namespace's store
//! credentials; the controller never holds them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use tracing::{info, warn};

use super::builders::jobs::{cache_job, CacheJobInputs, SnapshotOp};
use super::builders::Pin;
use super::cache_policy::{
    self, budget_victims, CostModel, Duty, Facts, NodeReplica, PrewarmTarget,
};
use super::context::Context;
use super::error::{ignore_missing, is_status, Error, Result};
use super::events::publish;
use super::finalizer::{self, Cleanup};
use super::job_runner::job_state;
use super::key_history;
use super::outcome::{restore_sample, restored_bytes, saved_snapshot, JobOutcome};
use super::replica_table::{
    self, create_replica_pvc, owner_ref, push_replica, set_store_condition, update_status,
    STORE_REACHABLE,
};
use super::requeue::{CACHE_CONFLICT, CACHE_ERROR, DELETE_RETRY, FOLLOW, RESYNC, SOON};
use super::snapshot_records;
use super::view::{
    mounted_claims, node_budget, pod_claims, pv_location, seconds, view_from_stores,
};
use super::writes::delete_ignoring_missing;
use crate::api::{
    BuildCache, BuildCacheStatus, CacheOperation, DeletionPolicy, OperationKind, ReplicaState,
};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "buildcache";
/// After a failed store operation, none is started for this long.
const STORE_BACKOFF: Duration = Duration::from_secs(300);
/// Most caches the planner ranks for pre-warming at one time, cluster-wide.
const PREWARM_LIMIT: usize = 32;

/// Reconciles one BuildCache.
pub async fn reconcile(cache: Arc<BuildCache>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile(CONTROLLER);
    let api: Api<BuildCache> =
        Api::namespaced(ctx.client.clone(), &cache.namespace().unwrap_or_default());
    finalizer::reconcile_with(
        &api,
        cache,
        finalizer::SNAPSHOTS,
        |cache| apply(cache, &ctx),
        |cache| cleanup(cache, &ctx),
    )
    .await
}

/// Reconciles a live BuildCache: bookkeeping first, then the operation in flight, then what
/// the policy asks for.
async fn apply(cache: Arc<BuildCache>, ctx: &Context) -> Result<Action> {
    let ctx = ctx.clone();
    if cache.status.is_none() {
        return Ok(Action::requeue(RESYNC));
    }
    // Replicas an unfinished pod still mounts: read once, for bookkeeping and the duties.
    let mounted = mounted_replicas(&cache, &ctx);
    let step = async {
        if let Some(action) = bookkeeping(&cache, &ctx, &mounted).await? {
            return Ok(action);
        }
        if let Some(op) = cache.status.as_ref().and_then(|s| s.operation.clone()) {
            return follow(&cache, &ctx, op).await.map(pending);
        }
        duty(&cache, &ctx, mounted).await
    };
    match step.await {
        Err(Error::ClaimConflict(_)) => Ok(Action::requeue(CACHE_CONFLICT)),
        other => other,
    }
}

/// Backs off on errors.
pub fn error_policy(_cache: Arc<BuildCache>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.category());
    Action::requeue(CACHE_ERROR)
}

/// A live cache's next look from a follow step (a cache can only be done when deleted).
fn pending(step: Cleanup) -> Action {
    match step {
        Cleanup::Pending(next) => next,
        Cleanup::Done => Action::await_change(),
    }
}

/// Step 2: makes `status.replicas` true to PVCs, PVs, nodes and builds.
async fn bookkeeping(
    cache: &BuildCache,
    ctx: &Context,
    mounted: &[String],
) -> Result<Option<Action>> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let status = cache.status.clone().unwrap_or_default();
    // Lookups by name in the stores, for this cache's replicas only: at rest every cache is
    // reconciled once a minute, and indexing every PVC, PV and node of the cluster on each
    // reconcile made that O(caches x cluster).
    let claim = |pvc: &str| -> Option<Arc<PersistentVolumeClaim>> {
        let key = ObjectRef::new(pvc).within(&namespace);
        ctx.stores.claims.iter().find_map(|s| s.get(&key))
    };
    let has_claim = |pvc: &str| claim(pvc).is_some();
    let node_exists = |n: &str| ctx.stores.nodes.get(&ObjectRef::new(n)).is_some();
    let located = |pvc: &str| {
        let volume = claim(pvc)?.spec.as_ref()?.volume_name.clone()?;
        let pv = ctx.stores.volumes.get(&ObjectRef::new(&volume))?;
        Some(pv_location(&pv))
    };
    // A claim whose build is gone is released once no pod of it still mounts the replica.
    let mut gone_holders = HashSet::new();
    for r in &status.replicas {
        let Some(holder) = r.holder.clone() else {
            continue;
        };
        if !mounted.contains(&r.pvc) && !ctx.stores.has_build(&namespace, &holder) {
            gone_holders.insert(holder);
        }
    }
    // Replicas that are finished with: delete their PVC; once it is gone, drop the entry.
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut dropped = HashSet::new();
    for r in status.replicas.iter().filter(|r| !r.state.is_live()) {
        if has_claim(&r.pvc) {
            // Kubernetes keeps a PVC while any pod names it, finished ones included (PVC
            // protection): the pods and Jobs that once mounted the replica go first, or its
            // volume, and the node's bytes, are never freed.
            remove_finished_users(ctx, &namespace, &r.pvc).await?;
            match claims_api.delete(&r.pvc, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(cache = %name, pvc = %r.pvc, state = ?r.state, "deleting the PVC of a finished replica")
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            dropped.insert(r.pvc.clone());
        }
    }
    let lost =
        |pvc: &str, node: Option<&str>| !has_claim(pvc) || node.is_some_and(|n| !node_exists(n));
    // An idle replica whose PVC or node is gone, or one being pre-warmed (no build holds it)
    // whose node is gone (its PVC may be too new for the store yet).
    let gone = |r: &crate::api::ReplicaStatus| match r.state {
        ReplicaState::Idle => lost(&r.pvc, r.node.as_deref()),
        ReplicaState::Restoring if r.holder.is_none() => {
            r.node.as_deref().is_some_and(|n| !node_exists(n))
        }
        _ => false,
    };
    let relocate = |r: &crate::api::ReplicaStatus| {
        located(&r.pvc).filter(|(node, zone)| {
            (node.is_some() || zone.is_some()) && (node, zone) != (&r.node, &r.zone)
        })
    };
    // A clone's source held for a build that no longer clones it (it failed, was cancelled or
    // deleted before lifting the hold): back to the pool.
    let stale_hold = |r: &crate::api::ReplicaStatus| {
        r.cloning_for
            .as_ref()
            .is_some_and(|b| !ctx.stores.may_clone(&namespace, b, &r.pvc))
    };
    let needs_change = !dropped.is_empty()
        || status.replicas.iter().any(|r| {
            stale_hold(r)
                || gone(r)
                || r.holder.as_ref().is_some_and(|h| gone_holders.contains(h))
                || relocate(r).is_some()
        });
    if !needs_change {
        return Ok(None);
    }
    let mut newly_lost = Vec::new();
    update_status(ctx, &namespace, &name, |status, _| {
        status.replicas.retain(|r| !dropped.contains(&r.pvc));
        for r in &mut status.replicas {
            if let Some((node, zone)) = relocate(r) {
                r.node = node;
                r.zone = zone;
            }
            if stale_hold(r) {
                info!(cache = %name, pvc = %r.pvc, build = ?r.cloning_for, "lifting a clone's hold whose build no longer clones");
                r.cloning_for = None;
            }
            if r.holder.as_ref().is_some_and(|h| gone_holders.contains(h)) {
                info!(cache = %name, pvc = %r.pvc, holder = ?r.holder, "releasing a claim whose build is gone");
                r.holder = None;
                r.state = ReplicaState::Idle;
                r.snapshot_id = None;
            }
            if gone(r) {
                info!(cache = %name, pvc = %r.pvc, "replica lost: its PVC or node is gone");
                r.state = ReplicaState::Lost;
                r.reason = Some("NodeLost".into());
                newly_lost.push(r.pvc.clone());
            }
        }
        true
    })
    .await?;
    for pvc in newly_lost {
        publish(
            ctx,
            cache,
            EventType::Warning,
            "ReplicaLost",
            format!("replica {pvc}: its PVC or node is gone; the next build restores elsewhere"),
        )
        .await;
    }
    Ok(Some(Action::requeue(SOON)))
}

/// Deletes the pods that mount `pvc` (finished ones: a replica is only retired once no pod
/// runs on it) and the Jobs that own them, whose results have been read.
async fn remove_finished_users(ctx: &Context, namespace: &str, pvc: &str) -> Result<()> {
    let users: Vec<_> = ctx
        .stores
        .pods
        .iter()
        .flat_map(|s| s.state())
        .filter(|p| pod_claims(p).any(|(ns, c)| ns == namespace && c == pvc))
        .collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    for pod in users {
        for owner in pod.owner_references().iter().filter(|o| o.kind == "Job") {
            ignore_missing(jobs.delete(&owner.name, &DeleteParams::background()).await)?;
        }
        ignore_missing(
            pods.delete(&pod.name_any(), &DeleteParams::background())
                .await,
        )?;
    }
    Ok(())
}

/// This cache's replica PVCs that an unfinished pod still mounts.
fn mounted_replicas(cache: &BuildCache, ctx: &Context) -> Vec<String> {
    let namespace = cache.namespace().unwrap_or_default();
    let pods: Vec<_> = ctx.stores.pods.iter().flat_map(|s| s.state()).collect();
    let mounted = mounted_claims(pods.iter().map(AsRef::as_ref));
    cache
        .status
        .iter()
        .flat_map(|s| &s.replicas)
        .filter(|r| mounted.contains(&(namespace.clone(), r.pvc.clone())))
        .map(|r| r.pvc.clone())
        .collect()
}

/// Step 4: starts what the policy asks for.
async fn duty(cache: &BuildCache, ctx: &Context, mounted: Vec<String>) -> Result<Action> {
    let now = ctx.now();
    let status = cache.status.clone().unwrap_or_default();
    let config = &ctx.config;
    let snapshots_enabled = config.snapshots_enabled();
    let backoff = store_backoff(&status, now, STORE_BACKOFF);
    let facts = Facts {
        budget_victims: victims_of(cache, ctx, now),
        now: seconds(now),
        snapshots_enabled,
        gc_interval: Duration::from(config.snapshot.gc_interval).as_secs_f64(),
        store_backoff: backoff,
        prewarm: (snapshots_enabled && !backoff)
            .then(|| prewarm_target(cache, ctx, now))
            .flatten(),
        mounted,
    };
    match cache_policy::next_duty(cache, &facts) {
        Duty::Nothing => Ok(Action::requeue(RESYNC)),
        Duty::Evict { pvc, reason } => evict(cache, ctx, &pvc, reason).await,
        Duty::SaveBeforeEvict { pvc, reason } => {
            let why = format!("save before eviction ({})", reason.as_str());
            start(cache, ctx, OperationKind::Save, Some(pvc), &why).await
        }
        Duty::DeferredSave { pvc } => {
            start(
                cache,
                ctx,
                OperationKind::Save,
                Some(pvc),
                "a save the policy deferred (minInterval) is due",
            )
            .await
        }
        Duty::Prewarm(target) => start_prewarm(cache, ctx, target).await,
        Duty::Gc => start(cache, ctx, OperationKind::Gc, None, "retention and listing").await,
    }
}

/// Where the planner would pre-warm this cache, when it has snapshots and no live replica:
/// its rank among every cache worth restoring ahead of its next build, and a node with room
/// that needs no eviction.
fn prewarm_target(cache: &BuildCache, ctx: &Context, now: Timestamp) -> Option<PrewarmTarget> {
    let status = cache.status.as_ref()?;
    let live = status.replicas.iter().any(|r| r.state.is_live());
    if live || status.snapshots.is_empty() {
        return None;
    }
    let namespace = cache.namespace()?;
    let view = view_from_stores(&ctx.stores, &ctx.config, &ctx.planner, now);
    let key = view.cluster.key_id(&namespace, &cache.spec.key)?;
    let chosen = crate::planner::prewarm(&view.cluster, seconds(now), &ctx.planner, PREWARM_LIMIT)
        .into_iter()
        .find(|p| p.key == key)?;
    Some(PrewarmTarget {
        node: view.cluster.node(chosen.node).name.clone(),
        snapshot: view.cluster.key(key).snapshot.as_ref()?.id.clone(),
        bytes: chosen.bytes as i64,
    })
}

/// Adds a `Restoring` replica on the chosen node (its bytes count against the node at once)
/// with the snapshot it will hold, records the operation, creates the PVC, then the Job.
async fn start_prewarm(cache: &BuildCache, ctx: &Context, target: PrewarmTarget) -> Result<Action> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let now = ctx.now();
    let mut op = None;
    let updated = update_status(ctx, &namespace, &name, |status, bc| {
        let live = status.replicas.iter().any(|r| r.state.is_live());
        if status.operation.is_some() || live {
            return false;
        }
        let Some(pvc) = push_replica(
            status,
            bc,
            &target.node,
            ReplicaState::Restoring,
            None,
            Some(target.bytes),
        ) else {
            return false;
        };
        if let Some(r) = status.replicas.last_mut() {
            r.snapshot_id = Some(target.snapshot.clone());
        }
        let reason = format!(
            "restore snapshot {} onto {} before the next build asks for it",
            target.snapshot, target.node
        );
        op = Some(begin_operation(
            status,
            &name,
            OperationKind::Prewarm,
            Some(pvc),
            reason,
            now,
        ));
        true
    })
    .await?;
    let (Some(op), Some(fresh)) = (op, updated) else {
        return Ok(Action::requeue(CACHE_CONFLICT));
    };
    info!(cache = %name, namespace = %namespace, job = %op.job, node = %target.node, snapshot = %target.snapshot, "pre-warming");
    create_replica_pvc(ctx, &fresh, op.pvc.as_deref().unwrap_or_default(), None).await?;
    follow(&fresh, ctx, op).await.map(pending)
}

/// Replicas of this cache that their node's budget ranking (over every cache on the node,
/// every namespace) chose for eviction.
fn victims_of(cache: &BuildCache, ctx: &Context, now: Timestamp) -> Vec<String> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let ours: HashSet<&str> = cache
        .status
        .iter()
        .flat_map(|s| s.replicas.iter())
        .filter_map(|r| r.node.as_deref())
        .collect();
    // The common case at rest: every node this cache uses is within its budget. Summing bytes
    // per node needs no copies; only a node over budget is ranked replica by replica.
    if !any_over_budget(ctx, &ours) {
        return Vec::new();
    }
    let mut by_node: HashMap<String, Vec<NodeReplica>> = HashMap::new();
    for (ns, cache_name, r) in all_replicas(ctx) {
        let Some(node) = r.node.clone().filter(|n| ours.contains(n.as_str())) else {
            continue;
        };
        by_node.entry(node).or_default().push(NodeReplica {
            namespace: ns,
            cache: cache_name,
            pvc: r.pvc.clone(),
            size_bytes: r.size_bytes.unwrap_or(0).max(0) as u64,
            idle: r.state == ReplicaState::Idle && r.holder.is_none(),
            uses: r.uses.unwrap_or(0),
            last_used: r.last_used.as_ref().map(|t| seconds(t.0)).unwrap_or(0.0),
        });
    }
    let nodes = ctx.stores.nodes.state();
    let cost = CostModel {
        store_bytes_per_second: ctx.config.planner.store_bytes_per_second,
        restore_overhead_seconds: ctx.config.planner.restore_overhead_seconds,
    };
    let mut victims = Vec::new();
    for node in nodes.iter() {
        let Some(on_node) = by_node.get(&node.name_any()) else {
            continue;
        };
        let budget = node_budget(node, &ctx.config);
        for v in budget_victims(on_node, budget, seconds(now), &cost) {
            if v.namespace == namespace && v.cache == name {
                victims.push(v.pvc);
            }
        }
    }
    victims
}

/// Whether any of `nodes` holds more live replica bytes (every cache, every namespace) than
/// its budget.
fn any_over_budget(ctx: &Context, nodes: &HashSet<&str>) -> bool {
    let caches: Vec<Arc<BuildCache>> = ctx.stores.caches.iter().flat_map(|s| s.state()).collect();
    let mut bytes: HashMap<&str, u64> = HashMap::new();
    for r in caches
        .iter()
        .flat_map(|c| c.status.iter().flat_map(|s| s.replicas.iter()))
        .filter(|r| r.state.is_live())
    {
        if let Some(node) = r.node.as_deref().filter(|n| nodes.contains(n)) {
            *bytes.entry(node).or_default() += r.size_bytes.unwrap_or(0).max(0) as u64;
        }
    }
    ctx.stores.nodes.state().iter().any(|node| {
        let name = node.name_any();
        bytes.get(name.as_str()).copied().unwrap_or(0) > node_budget(node, &ctx.config)
    })
}

/// Every live replica of every cache the controller sees, with namespace and cache name.
fn all_replicas(ctx: &Context) -> Vec<(String, String, crate::api::ReplicaStatus)> {
    ctx.stores
        .caches
        .iter()
        .flat_map(|s| s.state())
        .flat_map(|c| {
            let ns = c.namespace().unwrap_or_default();
            let name = c.name_any();
            c.status
                .iter()
                .flat_map(|s| s.replicas.clone())
                .filter(|r| r.state.is_live())
                .map(move |r| (ns.clone(), name.clone(), r))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Marks a replica `Evicting`, then the bookkeeping step deletes its PVC.
async fn evict(
    cache: &BuildCache,
    ctx: &Context,
    pvc: &str,
    reason: cache_policy::EvictReason,
) -> Result<Action> {
    replica_table::evict(ctx, cache, pvc, reason).await?;
    Ok(Action::requeue(SOON))
}

/// Records a maintenance operation in status (a save also marks its replica `Snapshotting`,
/// so no build claims it meanwhile), then creates its Job.
async fn start(
    cache: &BuildCache,
    ctx: &Context,
    kind: OperationKind,
    pvc: Option<String>,
    reason: &str,
) -> Result<Action> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let now = ctx.now();
    let mut op = None;
    update_status(ctx, &namespace, &name, |status, _| {
        if status.operation.is_some() {
            return false;
        }
        if let Some(pvc) = &pvc {
            match status.replicas.iter_mut().find(|r| &r.pvc == pvc) {
                Some(r) if r.state == ReplicaState::Idle && r.holder.is_none() => {
                    r.state = ReplicaState::Snapshotting;
                }
                _ => return false,
            }
        }
        op = Some(begin_operation(
            status,
            &name,
            kind,
            pvc.clone(),
            reason.to_string(),
            now,
        ));
        true
    })
    .await?;
    let Some(op) = op else {
        return Ok(Action::requeue(CACHE_CONFLICT));
    };
    info!(cache = %name, namespace = %namespace, job = %op.job, kind = ?kind, reason, "starting a maintenance job");
    // The fresh object (with the operation) is what `follow` reads; creating the Job now
    // saves a round trip.
    let fresh: Api<BuildCache> = Api::namespaced(ctx.client.clone(), &namespace);
    match fresh.get_opt(&name).await? {
        Some(c) => follow(&c, ctx, op).await.map(pending),
        None => Ok(Action::await_change()),
    }
}

/// Records operation `kind` in flight in `status`, its Job named from the next sequence number
/// (so a restarted controller finds the same Job).
fn begin_operation(
    status: &mut BuildCacheStatus,
    cache: &str,
    kind: OperationKind,
    pvc: Option<String>,
    reason: String,
    now: Timestamp,
) -> CacheOperation {
    let seq = status.operations.unwrap_or(0) + 1;
    status.operations = Some(seq);
    let op = CacheOperation {
        kind,
        job: crate::contract::child_name(cache, role(kind), seq),
        pvc,
        reason,
        started: Time(now),
    };
    status.operation = Some(op.clone());
    op
}

/// The Job name part and `op` metrics label of an operation.
fn role(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Save => "save",
        OperationKind::Gc => "gc",
        OperationKind::Forget => "forget",
        OperationKind::Prewarm => "prewarm",
    }
}

/// The Job of an operation, rebuilt from status (so a restarted controller recreates the
/// same Job if it was never created).
fn operation_job(
    cache: &BuildCache,
    ctx: &Context,
    op: &CacheOperation,
) -> Result<k8s_openapi::api::batch::v1::Job> {
    let status = cache.status.clone().unwrap_or_default();
    let seq = status.operations.unwrap_or(1);
    let pvc = op.pvc.clone().unwrap_or_default();
    let r = status.replicas.iter().find(|r| r.pvc == pvc);
    let pin = match (
        r.and_then(|r| r.node.clone()),
        r.and_then(|r| r.zone.clone()),
    ) {
        (Some(node), _) => Pin::Node(node),
        (None, Some(zone)) => Pin::Zone(zone),
        (None, None) => Pin::Anywhere,
    };
    let (snapshot_op, replica) = match op.kind {
        OperationKind::Save => (SnapshotOp::Save, Some((pvc, pin))),
        OperationKind::Prewarm => {
            let (snapshot, manifest_sha256) =
                prewarm_source(&status, &pvc).map_err(Error::Internal)?;
            // A pre-warm restores the cache's own newest snapshot.
            let from = cache.name_any();
            let restore = SnapshotOp::Restore {
                snapshot,
                from,
                manifest_sha256,
            };
            (restore, Some((pvc, pin)))
        }
        OperationKind::Gc => (
            SnapshotOp::Gc {
                retain: cache.spec.snapshot.retain,
                keep: snapshot_records::gc_keep(&status, cache.spec.snapshot.retain),
                grace_seconds: Duration::from(ctx.config.snapshot.gc_grace).as_secs(),
            },
            None,
        ),
        OperationKind::Forget => (SnapshotOp::Forget, None),
    };
    let mut job = cache_job(
        &snapshot_op,
        &CacheJobInputs {
            namespace: cache.namespace().unwrap_or_default(),
            cache: cache.name_any(),
            seq,
            replica,
            deadline_seconds: 3600,
            owner: owner_ref(cache)?,
        },
        &ctx.config,
    );
    job.metadata.name = Some(op.job.clone());
    Ok(job)
}

/// The snapshot a pre-warm of `pvc` restores and the digest pinning it, or why it cannot run
/// (a record without a digest is never restored).
fn prewarm_source(
    status: &BuildCacheStatus,
    pvc: &str,
) -> std::result::Result<(String, String), String> {
    let snapshot = status
        .replicas
        .iter()
        .find(|r| r.pvc == pvc)
        .and_then(|r| r.snapshot_id.clone())
        .ok_or_else(|| format!("pre-warm of {pvc}: the replica names no snapshot"))?;
    let pin = snapshot_records::pin_of(&status.snapshots, &snapshot)?;
    Ok((snapshot, pin))
}

/// Step 3: follows the Job of the operation in flight and applies its result.
/// `Done` only for a cache being deleted whose snapshots are forgotten (or cannot be).
async fn follow(cache: &BuildCache, ctx: &Context, op: CacheOperation) -> Result<Cleanup> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let now = ctx.now();
    if op.kind == OperationKind::Prewarm && !still_restoring(cache, &op) {
        return abandon(cache, ctx, &op).await.map(Cleanup::Pending);
    }
    let unpinned = match op.kind {
        OperationKind::Prewarm => prewarm_source(
            cache.status.as_ref().unwrap_or(&Default::default()),
            op.pvc.as_deref().unwrap_or_default(),
        )
        .err(),
        _ => None,
    };
    let state = match unpinned {
        // Reported like a failed restore: the half-made replica goes.
        Some(message) => Ok(JobOutcome::Failed { message }),
        None => job_state(ctx, &namespace, operation_job(cache, ctx, &op)?).await,
    };
    let outcome = match state {
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 403 => {
            // A terminating namespace refuses new objects: the operation cannot run. A cache
            // being deleted with its namespace goes at once, leaving its snapshots, rather
            // than hold the namespace up.
            if cache.metadata.deletion_timestamp.is_some() {
                let note = format!(
                    "namespace {namespace} is terminating, so no Job can remove the snapshots of {name}; they stay in the store: remove them with `hearth snapshot forget --all --namespace {namespace} --cache {name}`"
                );
                warn!(cache = %name, namespace = %namespace, "{note}");
                ctx.metrics.store_failed("forget");
                publish(ctx, cache, EventType::Warning, "SnapshotsLeft", note).await;
                return Ok(Cleanup::Done);
            }
            JobOutcome::Failed {
                message: format!("could not create Job {}: {}", op.job, s.message),
            }
        }
        other => other?,
    };
    let store_op = role(op.kind);
    match outcome {
        JobOutcome::Running => Ok(Cleanup::Pending(Action::requeue(FOLLOW))),
        JobOutcome::Succeeded { result, .. } => {
            let mut note = String::new();
            update_status(ctx, &namespace, &name, |status, _| {
                status.operation = None;
                set_store_condition(
                    status,
                    true,
                    "Succeeded",
                    &format!("{} job {} succeeded", store_op, op.job),
                    cache.metadata.generation,
                    now,
                );
                match op.kind {
                    OperationKind::Save | OperationKind::Prewarm => {
                        let Some(r) = status
                            .replicas
                            .iter_mut()
                            .find(|r| Some(&r.pvc) == op.pvc.as_ref())
                        else {
                            return true;
                        };
                        r.state = ReplicaState::Idle;
                        if op.kind == OperationKind::Prewarm {
                            r.last_used = Some(Time(now));
                            note = format!(
                                "pre-warmed replica {} on {} from snapshot {}",
                                r.pvc,
                                r.node.as_deref().unwrap_or_default(),
                                r.snapshot_id.as_deref().unwrap_or_default()
                            );
                            if let Some(bytes) = result.as_deref().and_then(restored_bytes) {
                                ctx.metrics.store_transfer("restore", bytes);
                            }
                            // A pre-warm is a restore too: the planner learns its speed.
                            if let Some((bytes, seconds)) =
                                result.as_deref().and_then(restore_sample)
                            {
                                key_history::record_restore(&mut status.history, bytes, seconds);
                            }
                        } else if let Some(record) =
                            result.as_deref().and_then(|r| saved_snapshot(r, now))
                        {
                            note = format!(
                                "saved replica {} as snapshot {} ({} new bytes): {}",
                                r.pvc, record.id, record.new_bytes, op.reason
                            );
                            ctx.metrics
                                .store_transfer("save", record.new_bytes.max(0) as u64);
                            r.snapshot_id = Some(record.id.clone());
                            r.builds_since_snapshot = Some(0);
                            r.size_bytes = Some(record.bytes);
                            snapshot_records::record_save(
                                &mut status.snapshots,
                                record,
                                usize::MAX,
                            );
                        }
                    }
                    OperationKind::Gc => {
                        status.last_gc = Some(Time(now));
                        let previous = &status.snapshots;
                        if let Some(listed) = result
                            .as_deref()
                            .and_then(|r| snapshot_records::after_gc(previous, r))
                        {
                            status.snapshots = listed;
                        }
                    }
                    OperationKind::Forget => {
                        status.snapshots.clear();
                        note = format!("removed the snapshots of {name} from the store");
                    }
                }
                true
            })
            .await?;
            if !note.is_empty() {
                let reason = match op.kind {
                    OperationKind::Forget => "SnapshotsDeleted",
                    OperationKind::Prewarm => "Prewarmed",
                    _ => "Snapshotted",
                };
                publish(ctx, cache, EventType::Normal, reason, note).await;
            }
            if op.kind == OperationKind::Forget && cache.metadata.deletion_timestamp.is_some() {
                return Ok(Cleanup::Done);
            }
            Ok(Cleanup::Pending(Action::requeue(SOON)))
        }
        JobOutcome::Failed { message } => {
            ctx.metrics.store_failed(store_op);
            warn!(cache = %name, namespace = %namespace, job = %op.job, %message, "maintenance job failed");
            update_status(ctx, &namespace, &name, |status, _| {
                status.operation = None;
                set_store_condition(
                    status,
                    false,
                    "JobFailed",
                    &format!("{store_op} job {} failed: {message}", op.job),
                    cache.metadata.generation,
                    now,
                );
                if let Some(r) = status
                    .replicas
                    .iter_mut()
                    .find(|r| Some(&r.pvc) == op.pvc.as_ref())
                {
                    if r.state == ReplicaState::Snapshotting {
                        r.state = ReplicaState::Idle;
                    } else if op.kind == OperationKind::Prewarm {
                        // A half-restored volume is never used: it goes.
                        r.state = ReplicaState::Evicting;
                        r.reason = Some("PrewarmFailed".into());
                    }
                }
                true
            })
            .await?;
            publish(
                ctx,
                cache,
                EventType::Warning,
                "StoreOperationFailed",
                format!("{store_op} ({}) failed: {message}", op.reason),
            )
            .await;
            Ok(Cleanup::Pending(Action::requeue(CACHE_CONFLICT)))
        }
    }
}

/// Whether the replica a pre-warm restores is still `Restoring` (bookkeeping marks it `Lost`
/// when its node goes away).
fn still_restoring(cache: &BuildCache, op: &CacheOperation) -> bool {
    cache
        .status
        .iter()
        .flat_map(|s| s.replicas.iter())
        .any(|r| Some(&r.pvc) == op.pvc.as_ref() && r.state == ReplicaState::Restoring)
}

/// Gives up an operation whose replica is gone: deletes its Job (with its pods) and clears it.
async fn abandon(cache: &BuildCache, ctx: &Context, op: &CacheOperation) -> Result<Action> {
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    delete_ignoring_missing(&jobs, &op.job).await?;
    info!(cache = %name, namespace = %namespace, job = %op.job, "abandoning an operation whose replica is gone");
    update_status(ctx, &namespace, &name, |status, _| {
        if status.operation.as_ref().map(|o| &o.job) != Some(&op.job) {
            return false;
        }
        status.operation = None;
        true
    })
    .await?;
    Ok(Action::requeue(SOON))
}

/// Whether a store operation failed less than `backoff` ago.
fn store_backoff(status: &BuildCacheStatus, now: Timestamp, backoff: Duration) -> bool {
    status
        .store_failed_at
        .as_ref()
        .is_some_and(|t| seconds(now) - seconds(t.0) < backoff.as_secs_f64())
}

/// Step 1: a BuildCache being deleted: its snapshots forgotten (deletionPolicy Delete)
/// once no build holds a replica.
async fn cleanup(cache: Arc<BuildCache>, ctx: &Context) -> Result<Cleanup> {
    let cache = cache.as_ref();
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let status = cache.status.clone().unwrap_or_default();
    if cache.spec.deletion_policy == DeletionPolicy::Retain || !ctx.config.snapshots_enabled() {
        return Ok(Cleanup::Done);
    }
    let now = ctx.now();
    let since = cache
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| seconds(now) - seconds(t.0))
        .unwrap_or(0.0);
    let timeout = Duration::from(ctx.config.snapshot.delete_timeout).as_secs_f64();
    if since >= timeout {
        let why = status
            .conditions
            .iter()
            .find(|c| c.type_ == STORE_REACHABLE && c.status == "False")
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "the store did not answer".into());
        let note = format!(
            "the snapshots of {name} could not be deleted within {}s ({why}); they stay in the store under {namespace}/snapshots/{name}: remove them with `hearth snapshot forget --all --namespace {namespace} --cache {name}`",
            timeout as i64
        );
        warn!(cache = %name, namespace = %namespace, "{note}");
        ctx.metrics.store_failed("forget");
        publish(ctx, cache, EventType::Warning, "SnapshotsLeft", note).await;
        return Ok(Cleanup::Done);
    }
    if let Some(op) = status.operation.clone() {
        // A save or gc in flight ends first (a save finishing after the forget would leave a
        // snapshot behind); a forget's success is the end of the cleanup.
        return follow(cache, ctx, op).await;
    }
    let held = status
        .replicas
        .iter()
        .any(|r| r.holder.is_some() && r.state != ReplicaState::Lost);
    if held {
        return Ok(Cleanup::Pending(Action::requeue(FOLLOW)));
    }
    if store_backoff(&status, now, DELETE_RETRY) {
        return Ok(Cleanup::Pending(Action::requeue(DELETE_RETRY)));
    }
    let started = start(
        cache,
        ctx,
        OperationKind::Forget,
        None,
        "deletionPolicy Delete",
    )
    .await?;
    Ok(Cleanup::Pending(started))
}
