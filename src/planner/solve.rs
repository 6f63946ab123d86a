//! The decision itself: gather every way the build could get its cache (an idle replica, a busy
//! one, a clone of a replica on the chosen node, the key's snapshot, a restore key's snapshot,
//! nothing), estimate each one's finish time
//! plus the cost it puts on other builds, and take the cheapest.

use crate::api::keys::ARCH_LABEL;
use crate::api::{CacheMode, ReplicaState, Warmth};

use super::clone::clone_options;
use super::config::PlannerConfig;
use super::decision::{Action, Decision, Estimate, Reason, RestoreSource};
use super::place::{best_node, slot_pressure, startable, NodeLoad, Scene};
use super::request::BuildRequest;
use super::view::{ClusterView, KeyId, KeyStats, Location, ReplicaId, Seconds};

/// Inputs the planner refuses.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// `now` is not a finite number.
    #[error("time {0} is not a finite number of seconds")]
    BadTime(f64),
    /// The store model has a non-positive or non-finite throughput or overhead.
    #[error("store throughput must be positive and overhead non-negative")]
    BadStore,
}

/// Decides where and from what cache `req` runs, at time `now`.
pub fn plan(
    view: &ClusterView,
    req: &BuildRequest,
    now: Seconds,
    cfg: &PlannerConfig,
) -> Result<Decision, PlanError> {
    let mut decision = decide(view, req, now, cfg)?;
    // A build queued for want of any ready node of its architecture says so: no slot will
    // ever free for it until such a node joins.
    if decision.action == Action::Queue {
        if let Some(arch) = &req.arch {
            let any = view
                .nodes()
                .any(|(_, n)| n.ready && n.labels.get(ARCH_LABEL) == Some(arch));
            if !any {
                decision.reason = Reason::NoNodeOfArch;
            }
        }
    }
    Ok(decision)
}

fn decide(
    view: &ClusterView,
    req: &BuildRequest,
    now: Seconds,
    cfg: &PlannerConfig,
) -> Result<Decision, PlanError> {
    if !now.is_finite() {
        return Err(PlanError::BadTime(now));
    }
    let store = &view.store;
    let valid = store.bytes_per_second.is_finite()
        && store.bytes_per_second > 0.0
        && store.overhead_seconds.is_finite()
        && store.overhead_seconds >= 0.0;
    if !valid {
        return Err(PlanError::BadStore);
    }
    let own = view.key_id(&req.namespace, &req.key);
    let stats = own
        .and_then(|k| view.key(k).stats.clone())
        .unwrap_or_else(|| cfg.default_stats.clone());

    let scene = Scene { view, cfg, now };
    let slots = req.slots.max(1);
    if req.mode == CacheMode::Disabled {
        let loads = startable(&scene, req);
        let reason = if req.registry_seed {
            Reason::CacheDisabledRegistrySeed
        } else {
            Reason::CacheDisabled
        };
        return Ok(cold(&scene, &loads, slots, &stats, true, reason));
    }
    let mut options: Vec<Decision> = Vec::new();
    if req.mode == CacheMode::ReadWrite {
        if let Some(own) = own {
            replica_options(&scene, req, own, &stats, &mut |d| options.push(d));
        }
    }
    // An idle replica on a startable node finishes in `warm`, which no wait, restore
    // (overhead >= 0) or cold build can beat: the node scan below is not needed.
    let hot = options
        .iter()
        .filter(|d| matches!(d.action, Action::UseReplica { .. }))
        .min_by(|a, b| a.estimate.score().total_cmp(&b.estimate.score()));
    if let Some(hot) = hot {
        return Ok(hot.clone());
    }
    // A clone of a replica the node already holds, before a restore: ties go to the clone.
    if req.mode == CacheMode::ReadWrite {
        clone_options(&scene, req, own, &stats, &mut |d| options.push(d));
    }
    let loads = startable(&scene, req);
    let source = restore_source(view, req, own);
    let throwaway = req.mode == CacheMode::ReadOnly;
    if let Some(src) = &source {
        let build = if src.own_key {
            stats.warm_seconds
        } else {
            stats.fallback()
        };
        let restore = store.restore_seconds(src.bytes);
        let bytes = if throwaway {
            0
        } else {
            src.bytes.max(stats.cache_bytes)
        };
        if let Some(choice) = best_node(&scene, &loads, slots, bytes, restore + build) {
            options.push(Decision {
                action: Action::Restore {
                    node: choice.node,
                    source: src.clone(),
                    throwaway,
                },
                warmth: Warmth::Restored,
                reason: if src.own_key {
                    Reason::SnapshotOfKey
                } else {
                    Reason::SnapshotOfRestoreKey
                },
                estimate: Estimate {
                    wait: 0.0,
                    restore,
                    build,
                    displacement: choice.displacement,
                },
                evictions: choice.evictions,
            });
        }
    }
    // Registry caches seed only a build with no cache of its own anywhere: a faster cold
    // start beside an existing snapshot stays unseeded (its key's own cache is what counts).
    let reason = match (&source, req.registry_seed) {
        (Some(_), _) => Reason::ColdIsFaster,
        (None, true) => Reason::RegistrySeed,
        (None, false) => Reason::NoCache,
    };
    let cold = cold(&scene, &loads, slots, &stats, throwaway, reason);
    if cold.action != Action::Queue {
        options.push(cold);
    }
    // The first of equal scores wins: hot, then waits, then clones, then restore, then cold.
    let mut best: Option<Decision> = None;
    for d in options {
        if best
            .as_ref()
            .is_none_or(|b| d.estimate.score() < b.estimate.score())
        {
            best = Some(d);
        }
    }
    Ok(best.unwrap_or_else(|| queue(stats.cold_seconds)))
}

/// Offers every replica of the build's own key: idle ones that can start now, busy ones to
/// wait for.
fn replica_options(
    scene: &Scene,
    req: &BuildRequest,
    own: KeyId,
    stats: &KeyStats,
    consider: &mut impl FnMut(Decision),
) {
    let (view, now) = (scene.view, scene.now);
    let warm = stats.warm_seconds;
    for &id in &view.key(own).replicas {
        let Some(r) = view.replica(id) else { continue };
        match (r.state, &r.location) {
            (ReplicaState::Idle, Location::Node(n)) if req.can_start_on(view.node(*n)) => {
                let displacement = slot_pressure(scene, *n, req.slots.max(1), warm) * 0.01;
                consider(hot(id, *n, warm, displacement));
            }
            (ReplicaState::Idle, Location::Zone(zone)) => {
                let node = view
                    .nodes()
                    .filter(|(_, n)| &n.zone == zone && req.can_start_on(n))
                    .max_by_key(|(id, n)| (n.free_slots, std::cmp::Reverse(*id)));
                if let Some((n, _)) = node {
                    consider(hot(id, n, warm, 0.0));
                }
            }
            (ReplicaState::Idle, Location::Node(n)) if req.fits(view.node(*n)) => {
                let node = view.node(*n);
                if let Some(at) = node.next_slot_free_at {
                    let wait = (at - now).max(0.0) + f64::from(node.slot_waiting) * warm;
                    let action = Action::WaitForSlot {
                        replica: id,
                        node: *n,
                    };
                    consider(waiting(action, Reason::SlotFreesSoon, wait, warm));
                }
            }
            (
                ReplicaState::InUse | ReplicaState::Restoring | ReplicaState::Snapshotting,
                Location::Node(n),
            ) if req.fits(view.node(*n)) => {
                let free_at = r.free_at.unwrap_or(now + warm);
                let wait = (free_at - now).max(0.0) + f64::from(r.waiting) * warm;
                let action = Action::WaitForReplica {
                    replica: id,
                    node: *n,
                };
                consider(waiting(action, Reason::BusyReplicaFreesSoon, wait, warm));
            }
            _ => {}
        }
    }
}

fn waiting(action: Action, reason: Reason, wait: Seconds, warm: Seconds) -> Decision {
    Decision {
        action,
        warmth: Warmth::Hot,
        reason,
        estimate: Estimate {
            wait,
            restore: 0.0,
            build: warm,
            displacement: 0.0,
        },
        evictions: Vec::new(),
    }
}

fn hot(
    replica: ReplicaId,
    node: super::view::NodeId,
    warm: Seconds,
    displacement: Seconds,
) -> Decision {
    Decision {
        action: Action::UseReplica { replica, node },
        warmth: Warmth::Hot,
        reason: Reason::IdleReplica,
        estimate: Estimate {
            wait: 0.0,
            restore: 0.0,
            build: warm,
            displacement,
        },
        evictions: Vec::new(),
    }
}

/// The newest snapshot of the key, else of the first restore key that has one.
fn restore_source(
    view: &ClusterView,
    req: &BuildRequest,
    own: Option<KeyId>,
) -> Option<RestoreSource> {
    let own_snapshot = own.and_then(|k| view.key(k).snapshot.as_ref().map(|s| (k, s, true)));
    own_snapshot
        .or_else(|| {
            req.restore_keys.iter().find_map(|rk| {
                let k = view.key_id(&req.namespace, rk)?;
                view.key(k).snapshot.as_ref().map(|s| (k, s, false))
            })
        })
        .map(|(key, s, own_key)| RestoreSource {
            key,
            snapshot: s.id.clone(),
            bytes: s.bytes,
            own_key,
        })
}

/// A cold start on the best node (a throwaway volume, or a new replica sized for the key's
/// cache when one fits; a throwaway when none does), or a queue decision.
fn cold(
    scene: &Scene,
    loads: &[NodeLoad],
    slots: u32,
    stats: &KeyStats,
    throwaway: bool,
    reason: Reason,
) -> Decision {
    let build = stats.cold_seconds;
    let with_replica = (!throwaway)
        .then(|| best_node(scene, loads, slots, stats.cache_bytes, build))
        .flatten();
    let (choice, throwaway) = match with_replica {
        Some(c) => (Some(c), false),
        None => (best_node(scene, loads, slots, 0, build), true),
    };
    match choice {
        Some(c) => Decision {
            action: Action::Cold {
                node: c.node,
                throwaway,
            },
            warmth: Warmth::Cold,
            reason,
            estimate: Estimate {
                wait: 0.0,
                restore: 0.0,
                build,
                displacement: c.displacement,
            },
            evictions: c.evictions,
        },
        None => queue(build),
    }
}

fn queue(build: Seconds) -> Decision {
    Decision {
        action: Action::Queue,
        warmth: Warmth::Cold,
        reason: Reason::NoCapacity,
        estimate: Estimate {
            wait: 0.0,
            restore: 0.0,
            build,
            displacement: 0.0,
        },
        evictions: Vec::new(),
    }
}
