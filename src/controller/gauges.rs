//! The cluster-wide cache gauges (bytes and budget per node, replicas by state, unsaved idle
//! replicas per namespace), computed from the reflector stores on a timer. Walking every
//! BuildCache is O(caches); doing it once per reconcile made a full resync O(caches²).

use std::collections::HashMap;
use std::time::Duration;

use kube::ResourceExt;

use super::context::Context;
use super::metrics::{NamespaceLabels, NodeLabels, ReplicaStateLabels};
use super::view::node_budget;
use crate::api::ReplicaState;

/// How often the gauges are recomputed (a Prometheus scrape interval is typically 15-60 s).
pub const INTERVAL: Duration = Duration::from_secs(15);

/// Sets the gauges from every cache the controller sees: bytes and budget per node, replicas
/// by state, idle replicas holding unsaved state per namespace.
pub fn refresh(ctx: &Context) {
    let m = &ctx.metrics;
    let mut node_bytes: HashMap<String, i64> = HashMap::new();
    let mut by_state: HashMap<String, i64> = HashMap::new();
    let mut unsaved: HashMap<String, i64> = HashMap::new();
    for c in ctx.stores.caches.iter().flat_map(|s| s.state()) {
        let ns = c.namespace().unwrap_or_default();
        let unsaved_here = unsaved.entry(ns).or_insert(0);
        for r in c.status.iter().flat_map(|s| &s.replicas) {
            *by_state.entry(format!("{:?}", r.state)).or_default() += 1;
            if !r.state.is_live() {
                continue;
            }
            if let Some(node) = &r.node {
                *node_bytes.entry(node.clone()).or_default() += r.size_bytes.unwrap_or(0);
            }
            if r.state == ReplicaState::Idle && r.snapshot_id.is_none() {
                *unsaved_here += 1;
            }
        }
    }
    m.node_bytes.clear();
    m.node_budget_bytes.clear();
    for node in ctx.stores.nodes.state().iter() {
        let labels = NodeLabels {
            node: node.name_any(),
        };
        m.node_budget_bytes
            .get_or_create(&labels)
            .set(node_budget(node, &ctx.config) as i64);
        m.node_bytes
            .get_or_create(&labels)
            .set(node_bytes.get(&labels.node).copied().unwrap_or(0));
    }
    for state in [
        "Idle",
        "InUse",
        "Restoring",
        "Snapshotting",
        "Lost",
        "Evicting",
    ] {
        m.replicas
            .get_or_create(&ReplicaStateLabels {
                state: state.into(),
            })
            .set(by_state.get(state).copied().unwrap_or(0));
    }
    m.unsaved_replicas.clear();
    for (namespace, n) in unsaved {
        m.unsaved_replicas
            .get_or_create(&NamespaceLabels { namespace })
            .set(n);
    }
}

/// Refreshes the gauges every [`INTERVAL`], the first time at once, until `stop` turns true.
pub async fn every_interval(ctx: &Context, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => refresh(ctx),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
