//! Builders of the Kubernetes objects the controller creates: pure functions from an
//! ImageBuild, its placement and the operator config to a Pod, Job or PVC. No client here;
//! each is unit-tested on its output.

pub mod build_script;
pub mod exporter;
pub mod jobs;
pub mod labels;
pub mod pod;
pub mod pvc;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

/// Where a pod must run: on one node (a node-local replica, or the node the planner chose for
/// a new one), in one zone (a zonal replica), or anywhere the scheduler likes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// `kubernetes.io/hostname` = node.
    Node(String),
    /// `topology.kubernetes.io/zone` = zone.
    Zone(String),
    /// No constraint beyond the node selector.
    Anywhere,
}

/// Required node affinity for a pin. Pods are never created with `spec.nodeName`: that
/// bypasses the scheduler, and a `WaitForFirstConsumer` PVC would then never bind.
pub fn affinity(pin: &Pin) -> Option<Affinity> {
    let (key, value) = match pin {
        Pin::Node(node) => ("kubernetes.io/hostname", node),
        Pin::Zone(zone) => ("topology.kubernetes.io/zone", zone),
        Pin::Anywhere => return None,
    };
    Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: key.to_string(),
                        operator: "In".to_string(),
                        values: Some(vec![value.clone()]),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
