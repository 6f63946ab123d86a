//! Choosing a node for a new replica (a restore or a cold build), and what that choice costs
//! other builds: the slot it takes from keys whose idle replicas live on that node (expected
//! misses while it runs), and the replicas it evicts (valued by how likely their key is to be
//! built again soon and what a restore would then cost). Only idle replicas whose state is in a
//! snapshot are ever evicted.

use crate::api::ReplicaState;

use super::request::BuildRequest;
use super::view::{ClusterView, KeyStats, Location, NodeId, Replica, ReplicaId, Seconds};
use super::PlannerConfig;

/// A node chosen for a new replica.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeChoice {
    /// The node.
    pub node: NodeId,
    /// Expected seconds the choice costs other builds.
    pub displacement: Seconds,
    /// Replicas to evict first.
    pub evictions: Vec<ReplicaId>,
}

/// What one decision looks at: the view, the tunables and the time.
#[derive(Clone, Copy, Debug)]
pub struct Scene<'a> {
    /// The cluster.
    pub view: &'a ClusterView,
    /// The tunables.
    pub cfg: &'a PlannerConfig,
    /// The caller's clock.
    pub now: Seconds,
}

impl Scene<'_> {
    /// Expected builds per second that want `replica`: the key's recent rate, capped by the
    /// time since the replica was last used (a key unused for an hour is not built every
    /// minute, whatever its history says).
    pub fn rate(&self, replica: &Replica) -> f64 {
        let per_hour = self
            .view
            .key(replica.key)
            .stats
            .as_ref()
            .map_or(self.cfg.default_stats.builds_per_hour, |s: &KeyStats| {
                s.builds_per_hour
            })
            .max(0.0);
        let idle = (self.now - replica.last_used).max(0.0);
        let cap = if idle > 0.0 {
            3600.0 / idle
        } else {
            f64::INFINITY
        };
        per_hour.min(cap) / 3600.0
    }
}

/// Probability that a Poisson variable of mean `mu` exceeds `k`.
fn poisson_tail(mu: f64, k: u32) -> f64 {
    if mu <= 0.0 {
        return 0.0;
    }
    let mut term = (-mu).exp();
    let mut cdf = term;
    for i in 1..=k.min(64) {
        term *= mu / f64::from(i);
        cdf += term;
    }
    (1.0 - cdf).max(0.0)
}

/// Expected seconds lost by the keys whose idle replicas live on `node` if a build holding
/// `slots` slots for `duration` leaves fewer slots than their builds will ask for meanwhile.
pub fn slot_pressure(scene: &Scene, node: NodeId, slots: u32, duration: Seconds) -> Seconds {
    let (view, cfg) = (scene.view, scene.cfg);
    let mut lambda = 0.0;
    let mut weighted_miss = 0.0;
    for r in view
        .replicas_on(node)
        .iter()
        .filter_map(|id| view.replica(*id))
    {
        if r.state != ReplicaState::Idle {
            continue;
        }
        let rate = scene.rate(r);
        lambda += rate;
        weighted_miss += rate * view.store.restore_seconds(r.size_bytes);
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    let free_after = view.node(node).free_slots.saturating_sub(slots);
    let miss = weighted_miss / lambda;
    cfg.slot_weight * poisson_tail(lambda * duration.max(0.0), free_after) * miss
}

/// Expected seconds lost if `replica` is evicted: the chance its key is built within the
/// horizon times the restore that build would then need, shared among the key's replicas.
pub fn eviction_value(scene: &Scene, replica: &Replica) -> Seconds {
    let view = scene.view;
    let p = 1.0 - (-scene.rate(replica) * scene.cfg.horizon_seconds).exp();
    let copies = view.key(replica.key).replicas.len().max(1) as f64;
    p * view.store.restore_seconds(replica.size_bytes) / copies
}

/// Whether a replica may be evicted: idle, and its latest state saved in a snapshot.
pub fn evictable(replica: &Replica) -> bool {
    replica.state == ReplicaState::Idle && replica.saved
}

/// The cheapest evictions on `node` that free `needed` bytes, with their value; `None` when
/// even evicting every evictable replica would not make room.
fn evictions_for(scene: &Scene, node: NodeId, needed: u64) -> Option<(Seconds, Vec<ReplicaId>)> {
    let view = scene.view;
    let budget = view.node(node).cache_budget_bytes;
    let used = view.used_bytes(node);
    // A throwaway volume is not a cache replica: it never needs room in the budget.
    if needed == 0 || used.saturating_add(needed) <= budget {
        return Some((0.0, Vec::new()));
    }
    if needed > budget {
        return None;
    }
    let mut candidates: Vec<(f64, ReplicaId, u64, Seconds)> = view
        .replicas_on(node)
        .iter()
        .filter_map(|id| view.replica(*id).map(|r| (*id, r)))
        .filter(|(_, r)| evictable(r) && matches!(r.location, Location::Node(_)))
        .map(|(id, r)| {
            let value = eviction_value(scene, r);
            (value / r.size_bytes.max(1) as f64, id, r.size_bytes, value)
        })
        .collect();
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut freed_to = used;
    let mut cost = 0.0;
    let mut chosen = Vec::new();
    for (_, id, size, value) in candidates {
        if freed_to.saturating_add(needed) <= budget {
            break;
        }
        freed_to = freed_to.saturating_sub(size);
        cost += value;
        chosen.push(id);
    }
    (freed_to.saturating_add(needed) <= budget).then_some((cost, chosen))
}

/// The best node to start `req` on now with a new replica of `bytes` (0 for a throwaway
/// volume) for about `duration`: least displacement, then most free slots, then lowest id.
pub fn best_node(
    scene: &Scene,
    req: &BuildRequest,
    bytes: u64,
    duration: Seconds,
) -> Option<NodeChoice> {
    let view = scene.view;
    let mut best: Option<(f64, u32, NodeChoice)> = None;
    for (id, node) in view.nodes() {
        if !req.can_start_on(node) {
            continue;
        }
        let Some((evict_cost, evictions)) = evictions_for(scene, id, bytes) else {
            continue;
        };
        let displacement = evict_cost + slot_pressure(scene, id, req.slots.max(1), duration);
        let better = match &best {
            None => true,
            Some((d, free, _)) => {
                displacement < *d - 1e-9 || (displacement <= *d + 1e-9 && node.free_slots > *free)
            }
        };
        if better {
            best = Some((
                displacement,
                node.free_slots,
                NodeChoice {
                    node: id,
                    displacement,
                    evictions,
                },
            ));
        }
    }
    best.map(|(_, _, choice)| choice)
}
