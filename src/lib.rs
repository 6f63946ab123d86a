//! Hearth: a Kubernetes operator that keeps BuildKit caches warm. Builds run in short-lived
//! buildkitd pods on the node whose volume already holds their cache; caches are snapshotted
//! to a store between runs so they can follow a build to any node.
//!
//! Modules: [`api`] (the custom resources), [`crds`] (their YAML), [`crypto`] (the TLS provider), [`controller`] (the
//! operator), [`planner`] (where a build runs and from what cache), [`simulate`] (replays
//! workloads under placement strategies), [`snapshot`] (the snapshot engine), [`store`]
//! (where snapshots live), [`upload`] (a local build context streamed into the builder pod)
//! and [`client`] (`hearth build`, `wait` and `logs`).
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod controller;
pub mod crds;
pub mod crypto;
pub mod planner;
pub mod simulate;
pub mod snapshot;
pub mod store;
pub mod upload;
