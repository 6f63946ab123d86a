//! Builders of the Kubernetes objects the controller creates: pure functions from an
//! ImageBuild, its placement and the operator config to a Pod, Job or PVC. No client here;
//! each is unit-tested on its output.

pub mod build_script;
pub mod docker_config;
pub mod exporter;
pub mod frontend;
pub mod jobs;
pub mod labels;
pub mod platform_builds;
pub mod pod;
pub mod pvc;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, KeyToPath, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, ProjectedVolumeSource, SeccompProfile, SecretProjection, SecurityContext,
    Volume, VolumeMount, VolumeProjection,
};

use crate::api::SecretKeyRef;

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

/// A read-only volume of single Secret keys, each a file of mode 0400 named `file`, mounted at
/// `dir` (build secrets, SSH keys). Every Secret must exist: a missing one keeps the pod from
/// starting rather than building without it.
pub fn secret_keys_volume<'a>(
    name: &str,
    dir: &str,
    keys: impl IntoIterator<Item = (&'a SecretKeyRef, &'a str)>,
) -> (Volume, VolumeMount) {
    let sources = keys
        .into_iter()
        .map(|(secret, file)| VolumeProjection {
            secret: Some(SecretProjection {
                name: secret.name.clone(),
                items: Some(vec![KeyToPath {
                    key: secret.key.clone(),
                    path: file.to_string(),
                    mode: Some(0o400),
                }]),
                optional: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    (
        Volume {
            name: name.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                default_mode: Some(0o400),
            }),
            ..Default::default()
        },
        VolumeMount {
            name: name.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

/// The security context of a container that needs no privilege at all (the receiver, the
/// index Job): the builder's user, read-only root, every capability dropped.
pub(crate) fn unprivileged() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(1000),
        run_as_group: Some(1000),
        run_as_non_root: Some(true),
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// [`unprivileged`] under the container runtime's default seccomp profile: what a container
/// that only talks to registries gets (the index Job, the registry login), as the `restricted`
/// Pod Security Standard asks.
pub(crate) fn restricted() -> SecurityContext {
    SecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..unprivileged()
    }
}
