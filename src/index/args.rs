//! The command line of `hearth index`, as the index Job runs it (docs/index.md).

use clap::{Args, Subcommand};

/// `hearth index ...`
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Assemble an OCI image index from per-platform images pushed by digest, and push it
    /// under every target name. Credentials: `$DOCKER_CONFIG/config.json` (`auths`).
    Create(CreateArgs),
}

/// `hearth index create`
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// A child image by digest, `<repository>@sha256:<hex>`; repeated, in platform order.
    #[arg(long = "source", required = true, value_name = "REPOSITORY@DIGEST")]
    pub sources: Vec<String>,
    /// A name to push the index under, `<repository>:<tag>`; repeated.
    #[arg(long = "target", required = true, value_name = "REFERENCE")]
    pub targets: Vec<String>,
    /// An index-level annotation, `KEY=VALUE`; repeated.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// A registry (`host[:port]`) reached over plain HTTP; repeated.
    #[arg(long = "plain-http", value_name = "HOST")]
    pub plain_http: Vec<String>,
    /// A registry (`host[:port]`) reached over TLS without verifying its certificate.
    #[arg(long = "insecure", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// A registry (`host[:port]`) whose certificate chains to the PEM bundle in environment
    /// variable VAR (the operator's `buildkitd.registries[].ca`), besides the system roots.
    #[arg(long = "ca-env", value_name = "HOST=VAR")]
    pub ca_env: Vec<String>,
    /// Print the result as one line of JSON.
    #[arg(long)]
    pub json: bool,
}
