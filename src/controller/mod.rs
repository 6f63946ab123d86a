//! `hearth controller`: the operator. Pure parts (object builders, config) are apart from the
//! parts that talk to the API server.

pub mod builders;
pub mod config;
