//! Clones: a new replica made by the storage as a copy of a replica the chosen node already
//! holds (a CSI volume clone: a PVC whose `dataSource` is the source's PVC), instead of a
//! restore from the store. Only a replica with no writer is a source (idle, or being saved
//! after its build: the save only reads), of the build's key or of a restore key, in the
//! build's namespace and StorageClass and no larger than the build's volume; the clone lands
//! where the source lives, so it needs a free slot there. It costs the view's clone overhead
//! (provisioning, not moving bytes) plus a warm build (own key) or a fallback build (restore
//! key).

use crate::api::{ReplicaState, Warmth};

use super::decision::{Action, Decision, Estimate, Reason};
use super::place::{best_node, NodeLoad, Scene};
use super::request::BuildRequest;
use super::view::{ClusterView, KeyId, KeyStats, Location, NodeId};

/// Offers a clone of every replica that may seed the build's new replica.
pub fn clone_options(
    scene: &Scene,
    req: &BuildRequest,
    own: Option<KeyId>,
    stats: &KeyStats,
    consider: &mut impl FnMut(Decision),
) {
    let view = scene.view;
    let Some(target) = &req.clone_into else {
        return;
    };
    let slots = req.slots.max(1);
    let overhead = view.clone_overhead();
    for (key, own_key) in source_keys(view, req, own) {
        let build = if own_key {
            stats.warm_seconds
        } else {
            stats.fallback()
        };
        for &id in &view.key(key).replicas {
            let Some(r) = view.replica(id) else { continue };
            // A busy replica has a writer (buildkitd, or a restore filling it): never cloned.
            if !matches!(r.state, ReplicaState::Idle | ReplicaState::Snapshotting) {
                continue;
            }
            let fits = view.clonable(id).is_some_and(|c| {
                c.storage_class == target.storage_class && c.capacity_bytes <= target.capacity_bytes
            });
            if !fits {
                continue;
            }
            // A node-local clone is on the source's node and counts against its budget; a
            // zonal one is in the source's zone, on any of its nodes.
            let (node, bytes) = match &r.location {
                Location::Node(n) if req.can_start_on(view.node(*n)) => (*n, r.size_bytes),
                Location::Zone(zone) => match zone_node(view, req, zone) {
                    Some(n) => (n, 0),
                    None => continue,
                },
                Location::Node(_) => continue,
            };
            let load = NodeLoad::of(scene, node);
            let Some(choice) = best_node(scene, &[load], slots, bytes, overhead + build) else {
                continue;
            };
            // Room is never made by evicting the very replica being cloned.
            if choice.evictions.contains(&id) {
                continue;
            }
            consider(Decision {
                action: Action::Clone {
                    node,
                    source: id,
                    key,
                    own_key,
                },
                warmth: Warmth::Restored,
                reason: Reason::Cloned,
                estimate: Estimate {
                    wait: 0.0,
                    restore: overhead,
                    build,
                    displacement: choice.displacement,
                },
                evictions: choice.evictions,
            });
        }
    }
}

/// The keys whose replicas may seed the build: its own, then its restore keys in order up to
/// the first that has a snapshot or a replica (the one a restore would fall back to).
fn source_keys(view: &ClusterView, req: &BuildRequest, own: Option<KeyId>) -> Vec<(KeyId, bool)> {
    let mut keys: Vec<(KeyId, bool)> = own.map(|k| (k, true)).into_iter().collect();
    for rk in &req.restore_keys {
        let Some(k) = view.key_id(&req.namespace, rk) else {
            continue;
        };
        keys.push((k, false));
        let entry = view.key(k);
        if entry.snapshot.is_some() || !entry.replicas.is_empty() {
            break;
        }
    }
    keys
}

/// The node of `zone` the build can start on with the most free slots.
fn zone_node(view: &ClusterView, req: &BuildRequest, zone: &str) -> Option<NodeId> {
    view.nodes()
        .filter(|(_, n)| n.zone == zone && req.can_start_on(n))
        .max_by_key(|(id, n)| (n.free_slots, std::cmp::Reverse(*id)))
        .map(|(id, _)| id)
}
