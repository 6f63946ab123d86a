//! `hearth controller`: the operator.
//!
//! Layering (each layer uses only those below it; `tests/module_layering.rs` keeps it so):
//! - reconcilers: `image_build` (observe -> decide -> act), `build_cache`, `custom_run`, wired
//!   to the cluster by `run` (with `admin` and `metrics`);
//! - services they share, the only code that writes to the API: `replica_table` (the one
//!   writer of BuildCache status), `job_runner`, `events`, `finalizer`, `writes`,
//!   `retention_sweep` (deletes finished builds as `retention` decides), over
//!   `context` and `error`;
//! - pure code: `cache_policy`, `retention`, `snapshot_records`, `builders`, `outcome`, `conditions`,
//!   `durations`, `key_history`, `view`, `requeue`, `quantity`, `config`, `buildkitd_config`, and the
//!   `planner` crate module.

pub mod admin;
pub mod build_cache;
pub mod builders;
pub mod buildkitd_config;
pub mod cache_policy;
pub mod conditions;
pub mod config;
pub mod context;
pub mod custom_run;
pub mod durations;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod gauges;
pub mod image_build;
pub mod job_runner;
pub mod key_history;
pub mod metrics;
pub mod outcome;
pub mod replica_table;
pub mod requeue;
pub mod retention;
pub mod retention_sweep;
pub mod run;
pub mod slim;
pub mod snapshot_records;
pub mod view;
pub mod writes;
