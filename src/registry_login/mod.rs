//! `hearth registry-login`: the pod's cloud identity turned into short-lived registry
//! credentials, written as a docker `config.json` for buildctl and the index Job, so no
//! credential helper has to be in the builder image (as kpack's built-in keychains do). Which
//! provider serves a host is [`hosts`] (pure); the merge over the push Secret's config and the
//! writing are [`docker_config`]; the token requests are [`ecr`] and [`gcp`].

pub mod docker_config;
mod ecr;
mod gcp;
pub mod hosts;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use docker_config::Login;
use hosts::{Provider, Registry};

/// `hearth registry-login`
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// A provider whose registries to log in to (`ecr`, `gcp`); repeated.
    #[arg(long = "provider", required = true, value_name = "PROVIDER")]
    pub providers: Vec<Provider>,
    /// A registry host to log in to; repeated. A host no given provider serves is left as
    /// the base config has it.
    #[arg(long = "registry", value_name = "HOST")]
    pub registries: Vec<String>,
    /// Directory of the config.json to merge over (the push Secret's), which must exist.
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    /// Directory to write config.json into (mode 0600); the DOCKER_CONFIG of its readers.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Give up after this long (all token requests together).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: kube::core::Duration,
}

/// Runs `hearth registry-login`: exit 0 with config.json written, 1 without writing anything.
pub fn run(args: &LoginArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    match runtime.block_on(login(args)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("hearth registry-login: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Fetches every token, then writes the merged config; on any error, nothing is written.
pub async fn login(args: &LoginArgs) -> Result<(), String> {
    let base = match &args.base {
        Some(dir) => {
            let path = dir.join("config.json");
            Some(std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?)
        }
        None => None,
    };
    let mut wanted: BTreeMap<String, Registry> = BTreeMap::new();
    for host in &args.registries {
        match hosts::classify(host).filter(|r| args.providers.contains(&r.provider())) {
            Some(registry) => {
                wanted.insert(host.to_ascii_lowercase(), registry);
            }
            None => eprintln!(
                "hearth registry-login: {host}: no provider of {} serves it; left as the base config has it",
                names(&args.providers)
            ),
        }
    }
    let timeout: std::time::Duration = args.timeout.into();
    let logins = tokio::time::timeout(timeout, fetch(&wanted))
        .await
        .map_err(|_| format!("no token within {timeout:?}"))??;
    let content = docker_config::merge(base.as_deref(), &logins).map_err(|e| match &args.base {
        Some(dir) => format!("{}: {e}", dir.join("config.json").display()),
        None => e,
    })?;
    docker_config::write(&args.out, &content)?;
    if logins.is_empty() {
        println!("hearth registry-login: no registry to log in to; wrote the base config");
    }
    Ok(())
}

fn names(providers: &[Provider]) -> String {
    providers
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One token per ECR region and one Google token, shared by the hosts they serve.
async fn fetch(wanted: &BTreeMap<String, Registry>) -> Result<Vec<Login>, String> {
    let mut ecr_tokens: BTreeMap<(String, bool), ecr::Token> = BTreeMap::new();
    let mut gcp_token: Option<gcp::Token> = None;
    let mut logins = Vec::new();
    for (host, registry) in wanted {
        let (username, password, expiry) = match registry {
            Registry::Ecr { region, fips, .. } => {
                let key = (region.clone(), *fips);
                if !ecr_tokens.contains_key(&key) {
                    ecr_tokens.insert(key.clone(), ecr::token(region, *fips).await?);
                }
                let token = &ecr_tokens[&key];
                let expiry = token.expires_at.as_ref().map(|t| format!("expires {t}"));
                (ecr::USERNAME, token.password.clone(), expiry)
            }
            Registry::Gcp => {
                if gcp_token.is_none() {
                    gcp_token = Some(gcp::token(&gcp::metadata_host()).await?);
                }
                let token = gcp_token.as_ref().expect("fetched above");
                let expiry = token.expires_in.map(|s| format!("expires in {s}s"));
                (gcp::USERNAME, token.password.clone(), expiry)
            }
        };
        println!(
            "hearth registry-login: {host}: {} token{}",
            registry.provider().as_str(),
            expiry.map(|e| format!(", {e}")).unwrap_or_default()
        );
        logins.push(Login {
            host: host.clone(),
            username: username.to_string(),
            password,
        });
    }
    Ok(logins)
}
