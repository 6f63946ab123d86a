//! The placement planner: pure code (no client, no clock, no I/O) that takes a view of the
//! cluster and one build request and answers where the build runs and from what cache, with a
//! reason, the estimates behind it, and the evictions needed to make room. Modelled on
//! Karpenter's scheduler: an in-memory snapshot in, a decision out, time injected by the caller.
//!
//! - [`view`]: nodes, replicas, snapshots, store and history, indexed by key and node;
//! - [`request`]: the build and its scheduling constraints;
//! - [`decision`]: actions, reasons and estimates;
//! - [`place`]: node choice, slot pressure and eviction by value;
//! - [`solve`]: the decision;
//! - [`prewarm`]: background restores of lost caches that the next builds will want.

pub mod decision;
pub mod place;
pub mod prewarm;
pub mod request;
pub mod solve;
pub mod view;

#[cfg(test)]
mod tests;

pub use decision::{Action, Decision, Estimate, Reason, RestoreSource};
pub use prewarm::{prewarm, Prewarm};
pub use request::{BuildRequest, Toleration, TolerationOperator};
pub use solve::plan;
pub use view::{
    ClusterView, KeyEntry, KeyId, KeyStats, Location, Node, NodeId, Replica, ReplicaId, Seconds,
    Snapshot, StoreModel, Taint, TaintEffect, ViewError,
};

/// Tunables of the planner.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannerConfig {
    /// History assumed for a key that has none.
    pub default_stats: KeyStats,
    /// How far ahead an evicted replica is expected to be missed.
    pub horizon_seconds: Seconds,
    /// Weight of the slots a placement takes from keys with idle replicas on the node.
    pub slot_weight: f64,
    /// Least expected saving for a background restore to be worth starting.
    pub prewarm_min_seconds: Seconds,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            default_stats: KeyStats {
                cold_seconds: 600.0,
                warm_seconds: 60.0,
                fallback_seconds: None,
                cache_bytes: 4_000_000_000,
                builds_per_hour: 1.0,
                builds: 0,
            },
            horizon_seconds: 3600.0,
            slot_weight: 1.0,
            prewarm_min_seconds: 2.0,
        }
    }
}

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
