//! What a build asks the planner for: its namespace, cache key, ordered restore keys, cache
//! mode, architecture, scheduling constraints (node selector, tolerations) and how many builder
//! slots it takes; and the Kubernetes matching rules for those constraints.

use std::collections::BTreeMap;

use crate::api::keys::ARCH_LABEL;
use crate::api::CacheMode;

use super::view::{Node, Taint, TaintEffect};

/// How a toleration matches a taint's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TolerationOperator {
    /// Any value (and, with an empty key, any taint).
    Exists,
    /// Exactly the toleration's value.
    Equal,
}

/// A pod toleration, as in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    /// Taint key; empty with `Exists` tolerates every taint.
    pub key: String,
    /// `Exists` or `Equal`.
    pub operator: TolerationOperator,
    /// Value compared under `Equal`.
    pub value: String,
    /// Effect tolerated; `None` tolerates every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }
}

/// The volume a build's new replica would get, when it may be a clone: only a replica of this
/// StorageClass, no larger than this, can be cloned into it.
#[derive(Clone, Debug, PartialEq)]
pub struct CloneTarget {
    /// The StorageClass of the build's new replicas (one the operator says can clone).
    pub storage_class: String,
    /// The size the new replica's PVC asks for.
    pub capacity_bytes: u64,
}

/// One build, as the planner needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildRequest {
    /// Namespace of the ImageBuild: only caches of this namespace are used.
    pub namespace: String,
    /// Cache key.
    pub key: String,
    /// Ordered fallback keys.
    pub restore_keys: Vec<String>,
    /// `ReadWrite`, `ReadOnly` or `Disabled`.
    pub mode: CacheMode,
    /// Architecture the build runs on: only nodes whose `kubernetes.io/arch` label has this
    /// value are eligible, for a new replica and for an existing one alike. `None`: any node.
    pub arch: Option<String>,
    /// Labels a node must carry.
    pub node_selector: BTreeMap<String, String>,
    /// Taints the builder pod tolerates.
    pub tolerations: Vec<Toleration>,
    /// Builder slots the build takes (from its resources); at least 1.
    pub slots: u32,
    /// The build names registry caches to import (`spec.cache.registry.importFrom`): a cold
    /// start with no cache of the key or its restore keys is seeded from them.
    pub registry_seed: bool,
    /// The new replica may be a clone of a replica of the key or of a restore key on the
    /// chosen node; `None`: never cloned (its storage cannot clone, a `ReadOnly` build, or a
    /// clone of this build failed).
    pub clone_into: Option<CloneTarget>,
}

impl BuildRequest {
    /// A `ReadWrite` build of `key` in `namespace`, with no constraints.
    pub fn new(namespace: impl Into<String>, key: impl Into<String>) -> Self {
        BuildRequest {
            namespace: namespace.into(),
            key: key.into(),
            restore_keys: Vec::new(),
            mode: CacheMode::ReadWrite,
            arch: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            slots: 1,
            registry_seed: false,
            clone_into: None,
        }
    }

    /// Whether the builder pod may be scheduled on `node` (ignoring free slots).
    pub fn fits(&self, node: &Node) -> bool {
        node.ready
            && self
                .arch
                .as_ref()
                .is_none_or(|arch| node.labels.get(ARCH_LABEL) == Some(arch))
            && self
                .node_selector
                .iter()
                .all(|(k, v)| node.labels.get(k) == Some(v))
            && node.taints.iter().all(|t| {
                t.effect == TaintEffect::PreferNoSchedule
                    || self.tolerations.iter().any(|tol| tol.tolerates(t))
            })
    }

    /// Whether the build may start on `node` now.
    pub fn can_start_on(&self, node: &Node) -> bool {
        node.free_slots >= self.slots.max(1) && self.fits(node)
    }
}
