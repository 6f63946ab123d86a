//! The cluster as the planner sees it: nodes (zone, labels, taints, free builder slots, cache
//! budget), replicas (namespace, key, where they live, size, state, expected free time, whether
//! their state is in a snapshot), the newest snapshot per key, the store's measured throughput
//! and per-key history. Built by the controller from Kubernetes objects, or by the simulator;
//! indexed so that one decision touches only what it needs.

use std::collections::{BTreeMap, HashMap};

use crate::api::ReplicaState;

/// Seconds on the caller's clock (the planner never reads a clock of its own).
pub type Seconds = f64;

/// Index of a node in a [`ClusterView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// Index of a replica in a [`ClusterView`]; stable until the replica is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaId(pub u32);

/// Index of an interned `(namespace, key)` pair in a [`ClusterView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

/// Effect of a node taint, as in Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    /// Pods that do not tolerate it are not scheduled there.
    NoSchedule,
    /// A soft preference: never blocks placement.
    PreferNoSchedule,
    /// Not scheduled, and evicted if already running.
    NoExecute,
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (empty when the taint has none).
    pub value: String,
    /// What the taint does to pods that do not tolerate it.
    pub effect: TaintEffect,
}

/// A node that can run builders and hold node-local cache volumes.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Node name (`kubernetes.io/hostname`).
    pub name: String,
    /// Zone (`topology.kubernetes.io/zone`); zonal volumes attach to any node of their zone.
    pub zone: String,
    /// Node labels, matched against a build's node selector.
    pub labels: BTreeMap<String, String>,
    /// Node taints, matched against a build's tolerations.
    pub taints: Vec<Taint>,
    /// Whether the node is Ready and schedulable.
    pub ready: bool,
    /// Builder slots not taken by a running build.
    pub free_slots: u32,
    /// When the next slot is expected to free (the earliest expected finish of the builds
    /// running there); `None` when unknown.
    pub next_slot_free_at: Option<Seconds>,
    /// Builds already waiting for a slot on this node, served before a new one.
    pub slot_waiting: u32,
    /// Bytes of node-local cache volumes Hearth may keep on the node.
    pub cache_budget_bytes: u64,
}

/// Where a replica's volume lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A node-local volume (local PV, TopoLVM, OpenEBS LVM): usable only on that node.
    Node(NodeId),
    /// A zonal volume (EBS, PD): attachable to any node of the zone.
    Zone(String),
}

/// A replica: one volume holding a buildkitd state directory for one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Replica {
    /// Name of the PVC.
    pub name: String,
    /// The `(namespace, key)` it holds a cache for.
    pub key: KeyId,
    /// Where its volume lives.
    pub location: Location,
    /// Bytes used on the volume.
    pub size_bytes: u64,
    /// `Idle`, `InUse`, `Restoring`, `Snapshotting` or `Lost`.
    pub state: ReplicaState,
    /// When busy: when the current holder is expected to release it.
    pub free_at: Option<Seconds>,
    /// Builds already waiting for this replica, served before a new one.
    pub waiting: u32,
    /// Whether its latest state is in a snapshot (only then may it be evicted).
    pub saved: bool,
    /// When a build last released it.
    pub last_used: Seconds,
}

/// The newest snapshot of a key in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Snapshot id in the store.
    pub id: String,
    /// Size of the tree it restores.
    pub bytes: u64,
    /// When it was written.
    pub taken_at: Seconds,
}

/// What history says about builds of a key.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyStats {
    /// Build time with no cache.
    pub cold_seconds: Seconds,
    /// Build time from a replica of the key itself.
    pub warm_seconds: Seconds,
    /// Build time from a cache of a restore key; `None` estimates it from cold and warm.
    pub fallback_seconds: Option<Seconds>,
    /// Size of the key's cache after a build.
    pub cache_bytes: u64,
    /// Recent arrival rate of builds of the key.
    pub builds_per_hour: f64,
    /// Builds of the key seen so far; 0 when unknown.
    pub builds: u32,
}

impl KeyStats {
    /// Chance that the key is still being built at all: after `n` builds, `n / (n + 1)` (a key
    /// built once, like most pull-request branches, is as likely abandoned as pushed again; a
    /// key built every day is almost surely built again). 1 when the count is unknown.
    pub fn alive(&self) -> f64 {
        if self.builds == 0 {
            1.0
        } else {
            let n = f64::from(self.builds);
            n / (n + 1.0)
        }
    }

    /// Builds per second of a key idle for `idle` seconds, if it is alive: its recent rate,
    /// capped by the time since it was last used (a key unused for an hour is not built every
    /// minute, whatever its history says).
    fn rate_if_alive(&self, idle: Seconds) -> f64 {
        let cap = if idle > 0.0 {
            3600.0 / idle
        } else {
            f64::INFINITY
        };
        self.builds_per_hour.max(0.0).min(cap) / 3600.0
    }

    /// Expected builds per second of a key idle for `idle` seconds.
    pub fn rate_after(&self, idle: Seconds) -> f64 {
        self.alive() * self.rate_if_alive(idle)
    }

    /// Chance of a build of the key within `horizon` seconds, when it has been idle `idle`.
    pub fn chance_within(&self, idle: Seconds, horizon: Seconds) -> f64 {
        self.alive() * (1.0 - (-self.rate_if_alive(idle) * horizon.max(0.0)).exp())
    }

    /// Build time when seeded from a restore key's cache.
    pub fn fallback(&self) -> Seconds {
        self.fallback_seconds
            .unwrap_or(self.warm_seconds + 0.3 * (self.cold_seconds - self.warm_seconds))
    }
}

/// The store snapshots are restored from.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreModel {
    /// Measured restore throughput.
    pub bytes_per_second: f64,
    /// Fixed cost of a restore (Job start, volume provisioning, manifest read).
    pub overhead_seconds: Seconds,
}

impl StoreModel {
    /// Expected time to restore `bytes` into a new replica.
    pub fn restore_seconds(&self, bytes: u64) -> Seconds {
        self.overhead_seconds + bytes as f64 / self.bytes_per_second.max(1.0)
    }
}

/// What a replica's volume offers a clone (a CSI volume clone: a new PVC whose `dataSource` is
/// the replica's): set only when its StorageClass can clone.
#[derive(Clone, Debug, PartialEq)]
pub struct Clonable {
    /// Its StorageClass: a clone has the same one.
    pub storage_class: String,
    /// The size its PVC requested: a clone asks for at least as much.
    pub capacity_bytes: u64,
}

/// Everything the planner knows about one `(namespace, key)`.
#[derive(Clone, Debug, Default)]
pub struct KeyEntry {
    /// Namespace of the key.
    pub namespace: String,
    /// Cache key.
    pub key: String,
    /// Replicas of the key (any state).
    pub replicas: Vec<ReplicaId>,
    /// Newest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// History, if any build of the key finished.
    pub stats: Option<KeyStats>,
}

/// Errors in building or updating a view.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ViewError {
    /// Two nodes with one name.
    #[error("node {0} is already in the view")]
    DuplicateNode(String),
    /// A replica names a node that is not in the view.
    #[error("unknown node id {0}")]
    UnknownNode(u32),
    /// A replica id that is not (or no longer) in the view.
    #[error("unknown replica id {0}")]
    UnknownReplica(u32),
}

/// The cluster as the planner sees it.
#[derive(Clone, Debug)]
pub struct ClusterView {
    nodes: Vec<Node>,
    node_names: HashMap<String, NodeId>,
    replicas: Vec<Option<Replica>>,
    free_replica_ids: Vec<u32>,
    on_node: Vec<Vec<ReplicaId>>,
    keys: Vec<KeyEntry>,
    key_ids: HashMap<String, HashMap<String, KeyId>>,
    clonable: HashMap<ReplicaId, Clonable>,
    clone_overhead_seconds: Seconds,
    /// The store snapshots are restored from.
    pub store: StoreModel,
}

/// What a clone is expected to cost until the caller says otherwise: provisioning a volume
/// from another (a copy-on-write snapshot in LVM thin pools, ZFS, Ceph RBD), not moving bytes.
pub const DEFAULT_CLONE_OVERHEAD_SECONDS: Seconds = 5.0;

impl ClusterView {
    /// An empty cluster using `store`.
    pub fn new(store: StoreModel) -> Self {
        ClusterView {
            nodes: Vec::new(),
            node_names: HashMap::new(),
            replicas: Vec::new(),
            free_replica_ids: Vec::new(),
            on_node: Vec::new(),
            keys: Vec::new(),
            key_ids: HashMap::new(),
            clonable: HashMap::new(),
            clone_overhead_seconds: DEFAULT_CLONE_OVERHEAD_SECONDS,
            store,
        }
    }

    /// Records what replica `id` offers a clone (`None`: its storage cannot clone).
    pub fn set_clonable(&mut self, id: ReplicaId, clonable: Option<Clonable>) {
        match clonable {
            Some(c) => self.clonable.insert(id, c),
            None => self.clonable.remove(&id),
        };
    }

    /// What replica `id` offers a clone, if its storage can clone.
    pub fn clonable(&self, id: ReplicaId) -> Option<&Clonable> {
        self.clonable.get(&id)
    }

    /// Sets the expected seconds from creating a clone's PVC to its volume being usable.
    pub fn set_clone_overhead(&mut self, seconds: Seconds) {
        self.clone_overhead_seconds = seconds.max(0.0);
    }

    /// Expected seconds from creating a clone's PVC to its volume being usable.
    pub fn clone_overhead(&self) -> Seconds {
        self.clone_overhead_seconds
    }

    /// Adds a node.
    pub fn add_node(&mut self, node: Node) -> Result<NodeId, ViewError> {
        if self.node_names.contains_key(&node.name) {
            return Err(ViewError::DuplicateNode(node.name));
        }
        let id = NodeId(self.nodes.len() as u32);
        self.node_names.insert(node.name.clone(), id);
        self.nodes.push(node);
        self.on_node.push(Vec::new());
        Ok(id)
    }

    /// The node with this name.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.node_names.get(name).copied()
    }

    /// A node. Panics on an id this view did not hand out.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// A node, to update its readiness, free slots or budget.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.0 as usize]
    }

    /// All nodes with their ids.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId(i as u32), n))
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Replicas whose volume lives on this node.
    pub fn replicas_on(&self, node: NodeId) -> &[ReplicaId] {
        &self.on_node[node.0 as usize]
    }

    /// Bytes of the node-local replicas on this node.
    pub fn used_bytes(&self, node: NodeId) -> u64 {
        self.replicas_on(node)
            .iter()
            .filter_map(|r| self.replica(*r))
            .map(|r| r.size_bytes)
            .sum()
    }

    /// The id of `(namespace, key)`, if the view has heard of it.
    pub fn key_id(&self, namespace: &str, key: &str) -> Option<KeyId> {
        self.key_ids
            .get(namespace)
            .and_then(|m| m.get(key))
            .copied()
    }

    /// The id of `(namespace, key)`, interning it when new.
    pub fn intern_key(&mut self, namespace: &str, key: &str) -> KeyId {
        if let Some(id) = self.key_id(namespace, key) {
            return id;
        }
        let id = KeyId(self.keys.len() as u32);
        self.keys.push(KeyEntry {
            namespace: namespace.to_string(),
            key: key.to_string(),
            ..KeyEntry::default()
        });
        self.key_ids
            .entry(namespace.to_string())
            .or_default()
            .insert(key.to_string(), id);
        id
    }

    /// What the view knows about a key.
    pub fn key(&self, id: KeyId) -> &KeyEntry {
        &self.keys[id.0 as usize]
    }

    /// Every key with its id.
    pub fn keys(&self) -> impl Iterator<Item = (KeyId, &KeyEntry)> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| (KeyId(i as u32), k))
    }

    /// Records the newest snapshot of a key.
    pub fn set_snapshot(&mut self, key: KeyId, snapshot: Option<Snapshot>) {
        self.keys[key.0 as usize].snapshot = snapshot;
    }

    /// Records the history of a key.
    pub fn set_stats(&mut self, key: KeyId, stats: KeyStats) {
        self.keys[key.0 as usize].stats = Some(stats);
    }

    /// Adds a replica.
    pub fn add_replica(&mut self, replica: Replica) -> Result<ReplicaId, ViewError> {
        if let Location::Node(n) = replica.location {
            if n.0 as usize >= self.nodes.len() {
                return Err(ViewError::UnknownNode(n.0));
            }
        }
        let key = replica.key;
        let location = replica.location.clone();
        let id = match self.free_replica_ids.pop() {
            Some(i) => {
                self.replicas[i as usize] = Some(replica);
                ReplicaId(i)
            }
            None => {
                self.replicas.push(Some(replica));
                ReplicaId(self.replicas.len() as u32 - 1)
            }
        };
        if let Location::Node(n) = location {
            self.on_node[n.0 as usize].push(id);
        }
        self.keys[key.0 as usize].replicas.push(id);
        Ok(id)
    }

    /// Removes a replica (evicted, discarded, or lost with its node).
    pub fn remove_replica(&mut self, id: ReplicaId) -> Result<Replica, ViewError> {
        let replica = self
            .replicas
            .get_mut(id.0 as usize)
            .and_then(Option::take)
            .ok_or(ViewError::UnknownReplica(id.0))?;
        self.clonable.remove(&id);
        if let Location::Node(n) = replica.location {
            self.on_node[n.0 as usize].retain(|r| *r != id);
        }
        self.keys[replica.key.0 as usize]
            .replicas
            .retain(|r| *r != id);
        self.free_replica_ids.push(id.0);
        Ok(replica)
    }

    /// A replica, if it is in the view.
    pub fn replica(&self, id: ReplicaId) -> Option<&Replica> {
        self.replicas.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// A replica, to update its state, size or timestamps (not its key or location).
    pub fn replica_mut(&mut self, id: ReplicaId) -> Option<&mut Replica> {
        self.replicas
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
    }

    /// All replicas with their ids.
    pub fn replicas(&self) -> impl Iterator<Item = (ReplicaId, &Replica)> {
        self.replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (ReplicaId(i as u32), r)))
    }
}
