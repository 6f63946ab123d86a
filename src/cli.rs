//! Command-line interface: one subcommand per job, each a thin wrapper over a library module.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::api::check::{self, Violation};

/// Hearth keeps BuildKit caches warm on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "hearth", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CRD as multi-document YAML (the content of `crds/`).
    Crds,
    /// Run the operator (leader election, `/healthz`, `/readyz`, `/metrics`).
    Controller(crate::controller::run::ControllerArgs),
    /// Check ImageBuild and BuildCache manifests offline against the CRD schemas and CEL
    /// rules, as the API server would. Exit code 1 when any object is refused.
    Validate {
        /// YAML files (multi-document allowed); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check updates: documents come in pairs, the stored object then its update, so
        /// rules on `oldSelf` (immutable fields) apply.
        #[arg(long)]
        update: bool,
    },
    /// Replay a workload of builds under each placement strategy and compare them.
    Simulate(crate::simulate::cli::SimulateArgs),
    /// Save, restore, list, verify and garbage-collect cache snapshots.
    #[command(subcommand)]
    Snapshot(crate::snapshot::cli::SnapshotCommand),
    /// Build an image on the cluster, next to its warm cache: uploads DIR (or passes --git
    /// through), follows the build, prints the digest. Exit 0 built, 1 failed, 2 bad input,
    /// 3 timed out or cancelled.
    Build(Box<crate::client::args::BuildArgs>),
    /// Wait for an ImageBuild; exits at once when it fails or is cancelled (codes as build).
    Wait(crate::client::args::WaitArgs),
    /// Print the builder's log of an ImageBuild (BuildKit's plain progress).
    Logs(crate::client::args::LogsArgs),
    /// The builder pod's side of an upload (run by the receiver init container).
    Receive(crate::upload::cli::ReceiveArgs),
    /// Assemble and push a multi-arch image index (run by the index Job).
    #[command(subcommand)]
    Index(crate::index::args::IndexCommand),
    /// Write a docker config.json with short-lived registry credentials from the pod's cloud
    /// identity (ECR, Google), merged over a base config (run by builder pods' and the index
    /// Job's init container).
    RegistryLogin(crate::registry_login::LoginArgs),
}

/// Runs a parsed command line.
/// An error as the `hearth` binary prints it: each cause once. Many error types show their
/// cause in their own message and also return it as their source, so a plain `{:#}` printed
/// it twice ("reading X: Is a directory: Is a directory").
pub fn report(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    raise_open_files_limit();
    match cli.command {
        Command::Crds => {
            print!("{}", crate::crds::render()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files, update } => validate(&files, update),
        Command::Controller(args) => {
            tokio::runtime::Runtime::new()?.block_on(crate::controller::run::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => crate::simulate::cli::run(&args),
        Command::Snapshot(cmd) => crate::snapshot::cli::run(cmd),
        Command::Build(args) => client_command(|env| crate::client::build(*args, env)),
        Command::Wait(args) => client_command(|env| crate::client::wait(args, env)),
        Command::Logs(args) => client_command(|env| crate::client::logs(args, env)),
        Command::Receive(args) => Ok(crate::upload::cli::run(&args)),
        Command::Index(cmd) => crate::index::run(cmd),
        Command::RegistryLogin(args) => crate::registry_login::run(&args),
    }
}

/// Raises the soft limit on open files to the hard limit, as Go programs do at start: pods
/// often get a soft limit of 1,024 under a far higher hard limit, and a BuildKit state dir
/// holds tens of thousands of files. Best effort and silent: when the limit cannot be raised,
/// it stays as it was.
pub fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

/// Runs a client command with the kubeconfig's client; a kubeconfig that does not work is
/// bad input (exit 2).
fn client_command<F, Fut>(command: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(crate::client::Env) -> Fut,
    Fut: std::future::Future<Output = crate::client::follow::Exit>,
{
    tokio::runtime::Runtime::new()?.block_on(async {
        match crate::client::Env::from_kubeconfig().await {
            Ok(env) => Ok(ExitCode::from(command(env).await.code())),
            Err(e) => {
                eprintln!("hearth: kubeconfig: {e}");
                Ok(ExitCode::from(crate::client::follow::Exit::BadInput.code()))
            }
        }
    })
}

fn validate(files: &[PathBuf], update: bool) -> anyhow::Result<ExitCode> {
    let mut refused = 0usize;
    for file in files {
        let text = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        let documents =
            parse_documents(&text).with_context(|| format!("parsing {}", file.display()))?;
        if update && documents.len() % 2 != 0 {
            anyhow::bail!(
                "{}: --update needs documents in pairs (stored object, then update), found {}",
                file.display(),
                documents.len()
            );
        }
        let step = if update { 2 } else { 1 };
        for (i, pair) in documents.chunks(step).enumerate() {
            let (old, object) = match pair {
                [old, new] => (Some(old), new),
                [object] => (None, object),
                _ => unreachable!("chunks of 1 or 2"),
            };
            let name = object
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or("<unnamed>");
            let kind = object
                .get("kind")
                .and_then(|v| v.as_str())
                .unwrap_or("<no kind>");
            let violations: Vec<Violation> = check::check(object, old)?;
            if violations.is_empty() {
                println!("{}#{}: {kind}/{name}: valid", file.display(), i + 1);
            } else {
                refused += 1;
                println!("{}#{}: {kind}/{name}: refused", file.display(), i + 1);
                for v in violations {
                    println!("  - {v}");
                }
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Parses multi-document YAML into JSON values, skipping empty documents.
pub fn parse_documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Reading {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_reported_once() {
        let io = std::io::Error::other("Is a directory");
        let err = anyhow::Error::new(Reading {
            path: "/etc".into(),
            source: io,
        })
        .context("loading the config");
        assert_eq!(
            report(&err),
            "loading the config: reading /etc: Is a directory"
        );
        let plain = anyhow::anyhow!("top").context("outer");
        assert_eq!(report(&plain), "outer: top");
    }
}
