//! Choosing a node for a new replica (a restore or a cold build), and what that choice costs
//! other builds: the slot it takes from keys whose idle replicas live on that node (expected
//! misses while it runs), and the replicas it evicts (valued by how likely their key is to be
//! built again soon and what a restore would then cost). Only idle replicas whose state is in a
//! snapshot are ever evicted.

use crate::api::ReplicaState;

use super::config::PlannerConfig;
use super::request::BuildRequest;
use super::view::{ClusterView, KeyStats, Location, NodeId, Replica, ReplicaId, Seconds};

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
    /// Expected builds per second that want `replica` (see [`KeyStats::rate_after`]).
    pub fn rate(&self, replica: &Replica) -> f64 {
        self.stats(replica)
            .rate_after((self.now - replica.last_used).max(0.0))
    }

    /// The history of the replica's key, or the default for a key with none.
    pub fn stats(&self, replica: &Replica) -> &KeyStats {
        self.view
            .key(replica.key)
            .stats
            .as_ref()
            .unwrap_or(&self.cfg.default_stats)
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

/// What one pass over a node's replicas learns: free slots, bytes used against the budget, and
/// the summed arrival rate and restore cost of the keys whose idle replicas live there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeLoad {
    /// The node.
    pub node: NodeId,
    /// Its free builder slots.
    pub free_slots: u32,
    /// Bytes of its node-local replicas.
    pub used: u64,
    /// Its cache budget.
    pub budget: u64,
    lambda: f64,
    weighted_miss: f64,
}

impl NodeLoad {
    /// Reads a node's load.
    pub fn of(scene: &Scene, node: NodeId) -> NodeLoad {
        let view = scene.view;
        let n = view.node(node);
        let mut load = NodeLoad {
            node,
            free_slots: n.free_slots,
            used: 0,
            budget: n.cache_budget_bytes,
            lambda: 0.0,
            weighted_miss: 0.0,
        };
        for r in view
            .replicas_on(node)
            .iter()
            .filter_map(|id| view.replica(*id))
        {
            load.used += r.size_bytes;
            if r.state == ReplicaState::Idle {
                let rate = scene.rate(r);
                load.lambda += rate;
                load.weighted_miss += rate * view.store.restore_seconds(r.size_bytes);
            }
        }
        load
    }

    /// Expected seconds lost by the keys whose idle replicas live here if a build holding
    /// `slots` slots for `duration` leaves fewer slots than their builds will ask for meanwhile.
    pub fn pressure(&self, cfg: &PlannerConfig, slots: u32, duration: Seconds) -> Seconds {
        if self.lambda <= 0.0 {
            return 0.0;
        }
        let free_after = self.free_slots.saturating_sub(slots);
        let miss = self.weighted_miss / self.lambda;
        cfg.slot_weight * poisson_tail(self.lambda * duration.max(0.0), free_after) * miss
    }
}

/// Expected seconds lost by the keys whose idle replicas live on `node` (see
/// [`NodeLoad::pressure`]).
pub fn slot_pressure(scene: &Scene, node: NodeId, slots: u32, duration: Seconds) -> Seconds {
    NodeLoad::of(scene, node).pressure(scene.cfg, slots, duration)
}

/// The loads of the nodes `req` can start on now, read once per decision.
pub fn startable(scene: &Scene, req: &BuildRequest) -> Vec<NodeLoad> {
    scene
        .view
        .nodes()
        .filter(|(_, n)| req.can_start_on(n))
        .map(|(id, _)| NodeLoad::of(scene, id))
        .collect()
}

/// Expected seconds lost if `replica` is evicted: the chance its key is built within the
/// horizon times the restore that build would then need, shared among the key's replicas.
pub fn eviction_value(scene: &Scene, replica: &Replica) -> Seconds {
    let view = scene.view;
    let idle = (scene.now - replica.last_used).max(0.0);
    let p = scene
        .stats(replica)
        .chance_within(idle, scene.cfg.horizon_seconds);
    let copies = view.key(replica.key).replicas.len().max(1) as f64;
    p * view.store.restore_seconds(replica.size_bytes) / copies
}

/// Whether a replica may be evicted: idle, and its latest state saved in a snapshot.
pub fn evictable(replica: &Replica) -> bool {
    replica.state == ReplicaState::Idle && replica.saved
}

/// The cheapest evictions on `node` that free `needed` bytes, with their value; `None` when
/// even evicting every evictable replica would not make room.
fn evictions_for(scene: &Scene, load: &NodeLoad, needed: u64) -> Option<(Seconds, Vec<ReplicaId>)> {
    let view = scene.view;
    let (node, budget, used) = (load.node, load.budget, load.used);
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

/// The best of the startable nodes `loads` for a new replica of `bytes` (0 for a throwaway
/// volume) held for about `duration` by a build of `slots` slots: least displacement, then most
/// free slots, then lowest id.
pub fn best_node(
    scene: &Scene,
    loads: &[NodeLoad],
    slots: u32,
    bytes: u64,
    duration: Seconds,
) -> Option<NodeChoice> {
    let mut best: Option<(f64, u32, NodeChoice)> = None;
    for load in loads {
        let pressure = load.pressure(scene.cfg, slots, duration);
        // Evictions only add to the pressure: skip a node that cannot win even without them.
        if let Some((d, free, _)) = &best {
            if pressure > *d + 1e-9 || (pressure >= *d - 1e-9 && load.free_slots <= *free) {
                continue;
            }
        }
        let Some((evict_cost, evictions)) = evictions_for(scene, load, bytes) else {
            continue;
        };
        let displacement = evict_cost + pressure;
        let better = match &best {
            None => true,
            Some((d, free, _)) => {
                displacement < *d - 1e-9 || (displacement <= *d + 1e-9 && load.free_slots > *free)
            }
        };
        if better {
            let choice = NodeChoice {
                node: load.node,
                displacement,
                evictions,
            };
            best = Some((displacement, load.free_slots, choice));
        }
    }
    best.map(|(_, _, choice)| choice)
}
