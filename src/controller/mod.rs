//! `hearth controller`: the operator. Pure parts (object builders, config) are apart from the
//! parts that talk to the API server.

pub mod admin;
pub mod build_cache;
pub mod builders;
pub mod cache_policy;
pub mod claims;
pub mod config;
pub mod context;
pub mod custom_run;
pub mod error;
pub mod finalizer;
pub mod gauges;
pub mod image_build;
pub mod job_runner;
pub mod key_history;
pub mod metrics;
pub mod quantity;
pub mod run;
pub mod view;
