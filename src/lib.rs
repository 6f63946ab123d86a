//! Hearth: a Kubernetes operator that keeps BuildKit caches warm. Builds run in short-lived
//! buildkitd pods on the node whose volume already holds their cache; caches are snapshotted
//! to a store between runs so they can follow a build to any node.
//!
//! Modules: [`api`] (the custom resources), [`contract`] (what the `hearth` client and the
//! builder pod agree on), [`crds`] (their YAML), [`crypto`] (the TLS provider), [`controller`]
//! (the operator), [`planner`] (where a build runs and from what cache), [`simulate`] (replays
//! workloads under placement strategies), [`snapshot`] (the snapshot engine), [`store`]
//! (where snapshots live), [`index`] (`hearth index create`, the multi-arch index Job's
//! registry client), [`registry_login`] (`hearth registry-login`, registry credentials from
//! the pod's cloud identity), [`upload`] (a local build context streamed into the builder
//! pod), [`client`] (`hearth build`, `wait` and `logs`) and [`cli`] (the command line).
//!
//! Layering: a module uses only modules below it, and no module imports one that imports it
//! back. At the bottom, [`api`] and [`contract`] (which uses only `api`), with [`crypto`],
//! [`index`], which uses nothing of ours, and [`store`] and [`registry_login`], which use only
//! `crypto` (the AWS SDK's HTTPS client). Above them the pure or nearly pure engines:
//! [`snapshot`] (on `store`), [`planner`] (on `api`), [`upload`] (on `contract`),
//! [`simulate`] (on `planner`) and [`crds`]. Then the two programs that talk to a cluster,
//! side by side and never using each other: [`controller`] (on `api`, `contract`, `planner`,
//! `snapshot`, `store`, `crypto`, and `registry_login`'s host patterns) and [`client`] (on
//! `api`, `contract`, `upload`); what both need goes into `contract` (names, paths) or `api`
//! (types, quantities). [`cli`] is at the top and wires everything. `tests/module_layering.rs`
//! checks this, file by file.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod contract;
pub mod controller;
pub mod crds;
pub mod crypto;
pub mod index;
pub mod planner;
pub mod registry_login;
pub mod simulate;
pub mod snapshot;
pub mod store;
pub mod upload;
