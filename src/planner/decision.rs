//! What the planner answers: an action (use an idle replica, wait for a busy one, restore a
//! snapshot onto a new replica, clone a replica the node holds, start cold, or queue for capacity), the cache warmth that
//! results, a reason a human can read, the time estimates behind the choice, and the replicas
//! to evict to make room.

use std::fmt;

use crate::api::Warmth;

use super::view::{KeyId, NodeId, ReplicaId, Seconds};

/// Where the build's cache comes from when it is restored.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreSource {
    /// The key whose snapshot is restored: the build's own key or one of its restore keys.
    pub key: KeyId,
    /// Snapshot id.
    pub snapshot: String,
    /// Bytes to restore.
    pub bytes: u64,
    /// Whether it is the build's own key (warm build) or a restore key (fallback build).
    pub own_key: bool,
}

/// What to do with the build.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Claim an idle replica of the key and build on `node` now.
    UseReplica {
        /// The replica to claim.
        replica: ReplicaId,
        /// The node to run on (the replica's node, or a node of its zone).
        node: NodeId,
    },
    /// Wait for a busy replica of the key; its holder's slot is handed over when it finishes.
    WaitForReplica {
        /// The replica to wait for.
        replica: ReplicaId,
        /// Its node.
        node: NodeId,
    },
    /// Claim an idle replica of the key whose node has no free slot now, and take the node's
    /// next free slot.
    WaitForSlot {
        /// The replica to claim.
        replica: ReplicaId,
        /// Its node.
        node: NodeId,
    },
    /// Restore a snapshot onto a new replica on `node`, then build there.
    Restore {
        /// The node to create the replica on.
        node: NodeId,
        /// The snapshot restored.
        source: RestoreSource,
        /// A throwaway copy (a `ReadOnly` build): discarded after the build, never saved.
        throwaway: bool,
    },
    /// Create a new replica on `node` as a clone of replica `source` (a PVC whose `dataSource`
    /// is the source's: the storage copies the volume), then build there. The source is idle
    /// or being saved (no writer), of the build's key or of a restore key, in the build's
    /// namespace and StorageClass, and lives on `node` (or in its zone).
    Clone {
        /// The node to create the replica on (where the source's volume is).
        node: NodeId,
        /// The replica cloned.
        source: ReplicaId,
        /// The key the source holds a cache for.
        key: KeyId,
        /// Whether it is the build's own key (warm build) or a restore key (fallback build).
        own_key: bool,
    },
    /// Build from scratch on `node`.
    Cold {
        /// The node to run on.
        node: NodeId,
        /// No replica is kept (`Disabled`, or `ReadOnly`).
        throwaway: bool,
    },
    /// No eligible node has a free slot and no replica of the key will free up: try again when
    /// capacity changes.
    Queue,
}

impl Action {
    /// The node the build will run on, if it is placed.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            Action::UseReplica { node, .. }
            | Action::WaitForReplica { node, .. }
            | Action::WaitForSlot { node, .. }
            | Action::Restore { node, .. }
            | Action::Clone { node, .. }
            | Action::Cold { node, .. } => Some(*node),
            Action::Queue => None,
        }
    }
}

/// Why the planner chose the action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// An idle replica of the key is on an eligible node with a free slot.
    IdleReplica,
    /// A replica of the key frees up sooner than any restore or cold build would finish.
    BusyReplicaFreesSoon,
    /// An idle replica of the key is on a full node that frees a slot before any alternative
    /// would finish.
    SlotFreesSoon,
    /// No usable replica: the key's own snapshot is the fastest way to a warm build.
    SnapshotOfKey,
    /// Neither replica nor snapshot of the key: a restore key's snapshot seeds the cache.
    SnapshotOfRestoreKey,
    /// A replica of the key or of a restore key lives on a node with a free slot and its
    /// storage can clone: a clone of it is the fastest way to a warm build.
    Cloned,
    /// No cache exists for the key or its restore keys.
    NoCache,
    /// No cache exists for the key or its restore keys: the cold build imports the build's
    /// registry caches.
    RegistrySeed,
    /// A cache exists but restoring it would take longer than building cold.
    ColdIsFaster,
    /// The cache mode is `Disabled`.
    CacheDisabled,
    /// The cache mode is `Disabled`: the build imports its registry caches only.
    CacheDisabledRegistrySeed,
    /// No eligible node has a free builder slot.
    NoCapacity,
    /// No ready node has the build's architecture (`kubernetes.io/arch`).
    NoNodeOfArch,
}

impl Reason {
    /// Whether the build starts seeded from its registry caches (a cold start, no cache of
    /// its own).
    pub fn seeds_from_registry(self) -> bool {
        matches!(
            self,
            Reason::RegistrySeed | Reason::CacheDisabledRegistrySeed
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::IdleReplica => "an idle replica of the key is on a node with a free slot",
            Reason::SlotFreesSoon => {
                "the node of an idle replica frees a slot before any alternative would finish"
            }
            Reason::BusyReplicaFreesSoon => {
                "a busy replica of the key frees up before any alternative would finish"
            }
            Reason::SnapshotOfKey => {
                "restoring the key's snapshot is the fastest way to a warm build"
            }
            Reason::SnapshotOfRestoreKey => {
                "no cache of the key: a restore key's snapshot seeds it"
            }
            Reason::Cloned => {
                "a replica of the key or a restore key is on a node with a free slot: its volume is cloned, near free next to a restore"
            }
            Reason::NoCache => "no cache exists for the key or its restore keys",
            Reason::RegistrySeed => {
                "no cache exists for the key or its restore keys: the cold build is seeded from the registry cache"
            }
            Reason::ColdIsFaster => "restoring the cache would take longer than a cold build",
            Reason::CacheDisabled => "the cache is disabled for this build",
            Reason::CacheDisabledRegistrySeed => {
                "the cache is disabled for this build: it is seeded from the registry cache only"
            }
            Reason::NoCapacity => "no eligible node has a free builder slot",
            Reason::NoNodeOfArch => {
                "no ready node has the build's architecture (kubernetes.io/arch, the suffix of its cache key)"
            }
        })
    }
}

/// The estimates behind a decision, in seconds from `now`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Estimate {
    /// Time waiting for a busy replica.
    pub wait: Seconds,
    /// Time restoring a snapshot.
    pub restore: Seconds,
    /// Time building.
    pub build: Seconds,
    /// Expected cost the choice puts on other builds (slots and replicas it takes from them).
    pub displacement: Seconds,
}

impl Estimate {
    /// Expected time from now until the build finishes.
    pub fn finish(&self) -> Seconds {
        self.wait + self.restore + self.build
    }

    /// What the planner minimises: the build's own finish plus the cost it puts on others.
    pub fn score(&self) -> Seconds {
        self.finish() + self.displacement
    }
}

/// The planner's answer for one build.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// How warm the cache will be when the build starts.
    pub warmth: Warmth,
    /// Why.
    pub reason: Reason,
    /// The estimates behind it.
    pub estimate: Estimate,
    /// Replicas to delete first, on the chosen node, to make room for the new replica.
    pub evictions: Vec<ReplicaId>,
}
