//! The placement planner: pure code (no client, no clock, no I/O) that takes a view of the
//! cluster and one build request and answers where the build runs and from what cache, with a
//! reason, the estimates behind it, and the evictions needed to make room. Modelled on
//! Karpenter's scheduler: an in-memory snapshot in, a decision out, time injected by the caller.
//!
//! - [`config`]: the planner's tunables;
//! - [`view`]: nodes, replicas, snapshots, store and history, indexed by key and node;
//! - [`request`]: the build and its scheduling constraints;
//! - [`decision`]: actions, reasons and estimates;
//! - [`clone`]: new replicas cloned from one the chosen node holds;
//! - [`place`]: node choice, slot pressure and eviction by value;
//! - [`solve`]: the decision;
//! - [`prewarm`]: background restores of lost caches that the next builds will want.

pub mod clone;
pub mod config;
pub mod decision;
pub mod place;
pub mod prewarm;
pub mod request;
pub mod solve;
pub mod view;

#[cfg(test)]
mod clone_tests;
#[cfg(test)]
mod tests;

pub use config::PlannerConfig;
pub use decision::{Action, Decision, Estimate, Reason, RestoreSource};
pub use prewarm::{prewarm, Prewarm};
pub use request::{BuildRequest, CloneTarget, Toleration, TolerationOperator};
pub use solve::{plan, PlanError};
pub use view::{
    Clonable, ClusterView, KeyEntry, KeyId, KeyStats, Location, Node, NodeId, Replica, ReplicaId,
    Seconds, Snapshot, StoreModel, Taint, TaintEffect, ViewError, DEFAULT_CLONE_OVERHEAD_SECONDS,
};
