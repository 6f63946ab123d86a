//! What a BuildCache needs next, decided as pure code (no client, no clock of its own):
//! which replicas to evict and why (node budget, idle TTL, `maxReplicas`), whether one must be
//! saved first, whether a save the policy deferred is due, and whether gc is due.
//!
//! The safety rule lives in one place, [`deletable`]: a replica is only ever removed when it
//! is idle, unclaimed, and its content is a snapshot the store still lists. Every eviction
//! path goes through [`next_duty`], which evicts only what `deletable` allows and otherwise
//! saves first, so the only copy of a cache's latest state is never deleted.

use std::collections::BTreeMap;

use crate::api::{BuildCache, BuildCacheStatus, ReplicaState, ReplicaStatus};

/// Why a replica is evicted (also the `reason` label of the eviction metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EvictReason {
    /// Its node holds more cache bytes than its budget.
    Budget,
    /// Unused for longer than the cache's `gc.idleTtl`.
    IdleTtl,
    /// The cache has more live replicas than `maxReplicas`.
    MaxReplicas,
    /// The planner chose it to make room for a new replica on its node (the least valuable
    /// saved idle replicas there, by expected restore time saved).
    Room,
}

impl EvictReason {
    /// Name in status, Events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::Budget => "Budget",
            EvictReason::IdleTtl => "IdleTtl",
            EvictReason::MaxReplicas => "MaxReplicas",
            EvictReason::Room => "Room",
        }
    }

    /// Why, for people (Events).
    pub fn explain(self) -> &'static str {
        match self {
            EvictReason::Budget => "the node is over its cache budget",
            EvictReason::IdleTtl => "unused for longer than gc.idleTtl",
            EvictReason::MaxReplicas => "more replicas than maxReplicas",
            EvictReason::Room => "the planner makes room on the node for a build's new replica",
        }
    }
}

/// One replica on a node, from any cache of any namespace, for budget ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReplica {
    /// Namespace of its cache.
    pub namespace: String,
    /// Its BuildCache.
    pub cache: String,
    /// Its PVC.
    pub pvc: String,
    /// Bytes it holds (or will hold, while restoring).
    pub size_bytes: u64,
    /// Idle and unclaimed: the only replicas that may be evicted.
    pub idle: bool,
    /// Builds that used it.
    pub uses: i64,
    /// Seconds since the epoch it was last used.
    pub last_used: f64,
}

/// What eviction must weigh: the cost of bringing a replica back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Store throughput for a restore, bytes per second.
    pub store_bytes_per_second: f64,
    /// Fixed cost of a restore, seconds.
    pub restore_overhead_seconds: f64,
}

/// The value of keeping a replica: how often it is used, what it costs to bring back (a
/// restore of its bytes), discounted by how long it has been idle. The least valuable go
/// first.
pub fn value(r: &NodeReplica, now: f64, cost: &CostModel) -> f64 {
    let restore =
        cost.restore_overhead_seconds + r.size_bytes as f64 / cost.store_bytes_per_second.max(1.0);
    let idle_hours = ((now - r.last_used) / 3600.0).max(0.0);
    (r.uses.max(0) as f64 + 1.0) * restore / (1.0 + idle_hours)
}

/// The idle replicas to evict from one node so its bytes fit `budget`, least valuable first.
/// Replicas in use are never chosen; if evicting every idle one is not enough, all idle ones
/// are chosen (the node stays over budget until builds release theirs).
pub fn budget_victims(
    on_node: &[NodeReplica],
    budget: u64,
    now: f64,
    cost: &CostModel,
) -> Vec<NodeReplica> {
    let used: u64 = on_node.iter().map(|r| r.size_bytes).sum();
    if used <= budget {
        return Vec::new();
    }
    let mut idle: Vec<&NodeReplica> = on_node.iter().filter(|r| r.idle).collect();
    idle.sort_by(|a, b| {
        value(a, now, cost)
            .total_cmp(&value(b, now, cost))
            .then_with(|| (&a.namespace, &a.cache, &a.pvc).cmp(&(&b.namespace, &b.cache, &b.pvc)))
    });
    let mut over = used - budget;
    let mut victims = Vec::new();
    for r in idle {
        if over == 0 {
            break;
        }
        over = over.saturating_sub(r.size_bytes);
        victims.push(r.clone());
    }
    victims
}

/// Whether deleting the replica loses nothing: idle, unclaimed, and its content is a snapshot
/// the store still lists. The one test every path that removes a replica must pass.
pub fn deletable(r: &ReplicaStatus, status: &BuildCacheStatus) -> bool {
    r.state == ReplicaState::Idle
        && r.holder.is_none()
        && r.cloning_for.is_none()
        && r.snapshot_id
            .as_ref()
            .is_some_and(|id| status.snapshots.iter().any(|s| &s.id == id))
}

/// The next maintenance step of a cache (one per reconcile).
#[derive(Clone, Debug, PartialEq)]
pub enum Duty {
    /// Nothing to do.
    Nothing,
    /// Remove the replica: its state is in the store.
    Evict {
        /// The PVC.
        pvc: String,
        /// Why.
        reason: EvictReason,
    },
    /// Save the replica first: it is to be evicted but holds unsaved state.
    SaveBeforeEvict {
        /// The PVC.
        pvc: String,
        /// Why it is to be evicted.
        reason: EvictReason,
    },
    /// A save the snapshot policy deferred (`minInterval`) is now due.
    DeferredSave {
        /// The PVC.
        pvc: String,
    },
    /// Restore the newest snapshot onto a new replica before a build asks for it.
    Prewarm(PrewarmTarget),
    /// Run gc: retention, unreferenced data, and the store's listing into status.
    Gc,
}

/// Where the planner wants a cache pre-warmed ([`crate::planner::prewarm`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrewarmTarget {
    /// The node with room for it.
    pub node: String,
    /// The snapshot to restore.
    pub snapshot: String,
    /// Bytes the restore writes (counted against the node at once).
    pub bytes: i64,
}

/// What the reconciler knows besides the cache itself.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Replicas of this cache that a node's budget ranking chose, by PVC.
    pub budget_victims: Vec<String>,
    /// Seconds since the epoch.
    pub now: f64,
    /// Snapshots are configured (a store exists).
    pub snapshots_enabled: bool,
    /// Seconds between gc runs.
    pub gc_interval: f64,
    /// The store failed recently: start no store operation yet.
    pub store_backoff: bool,
    /// The planner ranks this cache among those worth restoring ahead of their next build.
    pub prewarm: Option<PrewarmTarget>,
    /// PVCs of this cache that an unfinished pod still mounts (a cancelled build's buildkitd
    /// still terminating, a Job still running): not idle, whatever status says, so nothing
    /// saves or evicts them until the pod is gone.
    pub mounted: Vec<String>,
}

/// Decides the next duty of `cache`. Evicts only what [`deletable`] allows; anything else
/// that should go is saved first, or, with no store, kept.
pub fn next_duty(cache: &BuildCache, facts: &Facts) -> Duty {
    let status = cache.status.clone().unwrap_or_default();
    let now = facts.now;
    let idle = |r: &&ReplicaStatus| {
        r.state == ReplicaState::Idle && r.holder.is_none() && !facts.mounted.contains(&r.pvc)
    };
    let mut victims: BTreeMap<String, EvictReason> = BTreeMap::new();
    for pvc in &facts.budget_victims {
        victims.insert(pvc.clone(), EvictReason::Budget);
    }
    let ttl = std::time::Duration::from(cache.spec.gc.idle_ttl).as_secs_f64();
    for r in status.replicas.iter().filter(idle) {
        if r.last_used
            .as_ref()
            .is_some_and(|t| now - seconds(t) >= ttl)
        {
            victims.entry(r.pvc.clone()).or_insert(EvictReason::IdleTtl);
        }
    }
    let live = status.replicas.iter().filter(|r| r.state.is_live()).count();
    let extra = live.saturating_sub(cache.spec.max_replicas.max(1) as usize);
    if extra > 0 {
        // Retire the replicas that are cheapest to lose: saved in the newest snapshot first,
        // then saved at all, then the least recently used.
        let newest = status
            .snapshots
            .iter()
            .max_by_key(|s| s.time.0)
            .map(|s| s.id.clone());
        let mut idle: Vec<&ReplicaStatus> = status.replicas.iter().filter(idle).collect();
        idle.sort_by_key(|r| {
            (
                r.snapshot_id.is_none() || r.snapshot_id != newest,
                !deletable(r, &status),
                r.last_used.as_ref().map(|t| t.0),
                r.pvc.clone(),
            )
        });
        for r in idle.into_iter().take(extra) {
            victims
                .entry(r.pvc.clone())
                .or_insert(EvictReason::MaxReplicas);
        }
    }
    for (pvc, reason) in &victims {
        let Some(r) = status.replicas.iter().find(|r| &r.pvc == pvc) else {
            continue;
        };
        if !idle(&r) {
            continue;
        }
        if deletable(r, &status) {
            return Duty::Evict {
                pvc: pvc.clone(),
                reason: *reason,
            };
        }
        if facts.snapshots_enabled && !facts.store_backoff {
            return Duty::SaveBeforeEvict {
                pvc: pvc.clone(),
                reason: *reason,
            };
        }
    }
    if !facts.snapshots_enabled || facts.store_backoff {
        return Duty::Nothing;
    }
    let min_interval = std::time::Duration::from(cache.spec.snapshot.min_interval).as_secs_f64();
    let last_save = status
        .snapshots
        .iter()
        .map(|s| seconds(&s.time))
        .fold(f64::MIN, f64::max);
    if now - last_save >= min_interval {
        let every = cache.spec.snapshot.every.max(1);
        if let Some(r) = status
            .replicas
            .iter()
            .filter(idle)
            .find(|r| r.snapshot_id.is_none() && r.builds_since_snapshot.unwrap_or(0) >= every)
        {
            return Duty::DeferredSave { pvc: r.pvc.clone() };
        }
    }
    if let Some(target) = &facts.prewarm {
        let live = status.replicas.iter().any(|r| r.state.is_live());
        if !live && status.snapshots.iter().any(|s| s.id == target.snapshot) {
            return Duty::Prewarm(target.clone());
        }
    }
    let last_gc = status.last_gc.as_ref().map(seconds);
    let saved_since_gc = last_gc.is_none_or(|gc| last_save > gc);
    let gc_due = match last_gc {
        None => !status.snapshots.is_empty(),
        Some(gc) => now - gc >= facts.gc_interval,
    };
    if gc_due
        || (saved_since_gc && status.snapshots.len() > cache.spec.snapshot.retain.max(1) as usize)
    {
        return Duty::Gc;
    }
    Duty::Nothing
}

fn seconds(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    super::view::seconds(t.0)
}

#[cfg(test)]
#[path = "cache_policy_tests.rs"]
mod tests;
