//! Pre-positioning: after replicas are lost (a node went down), restore the caches that the
//! next builds are likely to want onto other nodes in the background, so that those builds find
//! them hot instead of paying the restore themselves. Only keys with a snapshot and no live
//! replica are candidates; only room that needs no eviction is used, on nodes of the key's
//! architecture; the most valuable first.

use crate::api::keys::{key_arch, ARCH_LABEL};
use crate::api::ReplicaState;

use super::config::PlannerConfig;
use super::place::{slot_pressure, Scene};
use super::view::{ClusterView, KeyId, NodeId, Seconds};

/// A restore to start in the background, before any build asks for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Prewarm {
    /// The key whose newest snapshot is restored.
    pub key: KeyId,
    /// The node that gets the new replica.
    pub node: NodeId,
    /// Bytes restored.
    pub bytes: u64,
    /// Expected restore time.
    pub restore_seconds: Seconds,
    /// Expected seconds it saves the key's next builds.
    pub value: Seconds,
}

/// Up to `limit` background restores worth doing now, most valuable first. A key qualifies when
/// it has a snapshot, history, and no replica that is not lost, and when the chance of a build
/// within the planner's horizon times the restore it saves is at least
/// [`PlannerConfig::prewarm_min_seconds`]. The controller should offer only keys whose builds
/// may run on any node (the view does not know a key's node selector).
pub fn prewarm(
    view: &ClusterView,
    now: Seconds,
    cfg: &PlannerConfig,
    limit: usize,
) -> Vec<Prewarm> {
    let scene = Scene { view, cfg, now };
    let mut wanted: Vec<(Seconds, KeyId, u64)> = view
        .keys()
        .filter_map(|(id, entry)| {
            let snapshot = entry.snapshot.as_ref()?;
            let stats = entry.stats.as_ref()?;
            let live = entry
                .replicas
                .iter()
                .filter_map(|r| view.replica(*r))
                .any(|r| r.state != ReplicaState::Lost);
            if live {
                return None;
            }
            let idle = (now - snapshot.taken_at).max(1.0);
            let p = stats.chance_within(idle, cfg.horizon_seconds);
            let value = p * view.store.restore_seconds(snapshot.bytes);
            (value >= cfg.prewarm_min_seconds).then_some((value, id, snapshot.bytes))
        })
        .collect();
    wanted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut used: Vec<u64> = view.nodes().map(|(id, _)| view.used_bytes(id)).collect();
    let mut out = Vec::new();
    for (value, key, bytes) in wanted.into_iter().take(limit) {
        // A key scoped to an architecture is restored only onto nodes of that architecture.
        let arch = key_arch(&view.key(key).key);
        let best = view
            .nodes()
            .filter(|(id, n)| {
                n.ready
                    && arch.is_none_or(|a| n.labels.get(ARCH_LABEL).map(String::as_str) == Some(a))
                    && used[id.0 as usize].saturating_add(bytes) <= n.cache_budget_bytes
            })
            .map(|(id, n)| {
                let room = n.cache_budget_bytes - used[id.0 as usize];
                (
                    slot_pressure(&scene, id, 0, 0.0),
                    std::cmp::Reverse(room),
                    id,
                )
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        if let Some((_, _, node)) = best {
            used[node.0 as usize] += bytes;
            let restore_seconds = view.store.restore_seconds(bytes);
            out.push(Prewarm {
                key,
                node,
                bytes,
                restore_seconds,
                value,
            });
        }
    }
    out
}
