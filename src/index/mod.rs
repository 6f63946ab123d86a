//! `hearth index create`: the multi-arch index Job. Fetches each child image by digest
//! (checked), assembles one OCI image index ([`assemble`], pure), makes the children present
//! in each target repository (mounted within a registry, streamed to another, [`registry`])
//! and pushes the index
//! under every target tag. Credentials come from docker's config.json ([`auth`]).

pub mod args;
pub mod assemble;
pub mod auth;
pub mod proxy;
pub mod reference;
pub mod registry;
pub mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use serde_json::Value;

use args::{CreateArgs, IndexCommand};
use assemble::{Parsed, ACCEPTED, MAX_MANIFEST_BYTES, OCI_INDEX};
use proxy::Proxies;
use reference::Reference;
use registry::{Registry, RegistryError, Transport};

/// Why `hearth index create` stopped. Names the reference; never a credential.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A flag's value is not what was expected.
    #[error("{flag} {value}: {expected}")]
    BadArg {
        flag: &'static str,
        value: String,
        expected: String,
    },
    /// A case this command refuses rather than half-doing it.
    #[error("{0}")]
    Refused(String),
    /// `$DOCKER_CONFIG/config.json` cannot be used.
    #[error("registry credentials: {0}")]
    Credentials(String),
    /// A registry call about `what` failed.
    #[error("{what}: {error}")]
    Registry { what: String, error: RegistryError },
    /// A source's manifest is not one an index can hold.
    #[error("{what}: {detail}")]
    BadManifest { what: String, detail: String },
}

/// What was pushed (the Job's termination message, contract: docs/index.md).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pushed {
    pub digest: String,
    pub media_type: &'static str,
    pub size: usize,
    pub targets: Vec<String>,
    pub manifests: usize,
}

/// Runs `hearth index ...`.
pub fn run(command: IndexCommand) -> anyhow::Result<ExitCode> {
    let IndexCommand::Create(args) = command;
    let pushed = tokio::runtime::Runtime::new()?.block_on(create(&args, docker_config_dir()))?;
    if args.json {
        println!("{}", serde_json::to_string(&pushed)?);
    } else {
        println!(
            "pushed index {} ({} manifests) as {}",
            pushed.digest,
            pushed.manifests,
            pushed.targets.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `$DOCKER_CONFIG`, else `$HOME/.docker`, as docker reads it.
fn docker_config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
}

/// One checked child: where it is, its bytes and what it is.
struct Child {
    reference: Reference,
    digest: String,
    bytes: Bytes,
    media_type: String,
    parsed: Parsed,
}

/// Assembles and pushes the index.
pub async fn create(
    args: &CreateArgs,
    docker_config: Option<PathBuf>,
) -> Result<Pushed, IndexError> {
    let sources = parse_all("--source", &args.sources, true)?;
    let targets = parse_all("--target", &args.targets, false)?;
    let mut annotations = BTreeMap::new();
    for a in &args.annotations {
        let (key, value) = a
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| IndexError::BadArg {
                flag: "--annotation",
                value: a.clone(),
                expected: "expected KEY=VALUE".into(),
            })?;
        annotations.insert(key.to_string(), value.to_string());
    }
    // The children are read from one registry; targets may be in others (blobs copied).
    let source_host = sources[0].api_host().to_string();
    if let Some(other) = sources.iter().find(|s| s.api_host() != source_host) {
        return Err(IndexError::Refused(format!(
            "--source {other} is in registry {}, --source {} in {}: the children must be in one registry",
            other.registry, sources[0], sources[0].registry
        )));
    }
    let transport = Transport {
        plain_http: args
            .plain_http
            .iter()
            .map(|h| reference::api_host(h).into())
            .collect(),
        insecure: args
            .insecure
            .iter()
            .map(|h| reference::api_host(h).into())
            .collect(),
        cas: registry_cas(&args.ca_env)?,
        proxies: Proxies::from_env().map_err(IndexError::Refused)?,
    };
    // One client per registry, its token scoped to the repositories used there.
    let mut registries: BTreeMap<String, Registry> = BTreeMap::new();
    let mut hosts: Vec<(&str, &Reference)> = vec![(&source_host, &sources[0])];
    hosts.extend(targets.iter().map(|t| (t.api_host(), t)));
    for (host, named) in hosts {
        if registries.contains_key(host) {
            continue;
        }
        let mut scopes: Vec<String> = targets
            .iter()
            .filter(|t| t.api_host() == host)
            .map(|t| format!("repository:{}:pull,push", t.repository))
            .collect();
        if host == source_host {
            scopes.extend(
                sources
                    .iter()
                    .map(|s| format!("repository:{}:pull", s.repository)),
            );
        }
        scopes.sort();
        scopes.dedup();
        let credential = match &docker_config {
            Some(dir) => {
                auth::credentials(dir, &named.registry).map_err(IndexError::Credentials)?
            }
            None => None,
        };
        let registry = Registry::new(host, &transport, credential, scopes).map_err(|error| {
            IndexError::Registry {
                what: named.registry.clone(),
                error,
            }
        })?;
        registries.insert(host.to_string(), registry);
    }
    let registry = &registries[&source_host];

    let mut children = Vec::new();
    let mut descriptors = Vec::new();
    for source in sources {
        let child = fetch_child(registry, source).await?;
        match &child.parsed {
            Parsed::Index { descriptors: d } => descriptors.extend(d.iter().cloned()),
            Parsed::Image { config, .. } => {
                let what = format!("--source {}: config {}", child.reference, config.digest);
                let bytes = registry
                    .blob(
                        &child.reference.repository,
                        &config.digest,
                        MAX_MANIFEST_BYTES,
                    )
                    .await
                    .map_err(|error| IndexError::Registry {
                        what: what.clone(),
                        error,
                    })?;
                let platform = assemble::platform_of_config(&bytes)
                    .map_err(|detail| IndexError::BadManifest { what, detail })?;
                descriptors.push(assemble::image_descriptor(
                    &child.media_type,
                    &child.digest,
                    child.bytes.len(),
                    platform,
                ));
            }
        }
        children.push(child);
    }
    let index = Bytes::from(assemble::build_index(&descriptors, &annotations));
    let digest = assemble::sha256_digest(&index);
    let manifests = serde_json::from_slice::<Value>(&index)
        .ok()
        .and_then(|v| v["manifests"].as_array().map(Vec::len))
        .unwrap_or_default();

    for target in &targets {
        let into = &registries[target.api_host()];
        let same_registry = target.api_host() == source_host;
        for child in &children {
            if !same_registry || child.reference.repository != target.repository {
                make_present(registry, into, same_registry, child, target).await?;
            }
        }
        let tag = target.tag.as_deref().unwrap_or("latest");
        into.put_manifest(&target.repository, tag, OCI_INDEX, index.clone())
            .await
            .map_err(|error| IndexError::Registry {
                what: format!("--target {target}: pushing index {digest}"),
                error,
            })?;
    }
    Ok(Pushed {
        digest,
        media_type: OCI_INDEX,
        size: index.len(),
        targets: targets.iter().map(ToString::to_string).collect(),
        manifests,
    })
}

fn parse_all(
    flag: &'static str,
    values: &[String],
    source: bool,
) -> Result<Vec<Reference>, IndexError> {
    values
        .iter()
        .map(|value| {
            let bad = |expected: String| IndexError::BadArg {
                flag,
                value: value.clone(),
                expected,
            };
            let mut r = Reference::parse(value).map_err(bad)?;
            if source && r.digest.is_none() {
                return Err(bad(
                    "expected <repository>@sha256:<hex> (a child image by digest)".into(),
                ));
            }
            if !source && r.digest.is_some() {
                return Err(bad(
                    "expected <repository>:<tag> (an index is pushed by tag)".into(),
                ));
            }
            if source {
                r.tag = None;
            }
            Ok(r)
        })
        .collect()
}

/// Fetches a source by its digest, checked, and reads what it is.
async fn fetch_child(registry: &Registry, reference: Reference) -> Result<Child, IndexError> {
    let digest = reference.digest.clone().unwrap_or_default();
    let what = format!("--source {reference}");
    let (bytes, content_type) = registry
        .manifest(
            &reference.repository,
            &digest,
            &ACCEPTED,
            MAX_MANIFEST_BYTES,
        )
        .await
        .map_err(|error| IndexError::Registry {
            what: what.clone(),
            error,
        })?;
    let parsed = assemble::parse_manifest(&bytes, content_type.as_deref()).map_err(|detail| {
        IndexError::BadManifest {
            what: what.clone(),
            detail,
        }
    })?;
    let media_type = match &parsed {
        Parsed::Image { media_type, .. } => media_type.clone(),
        Parsed::Index { .. } => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .or(content_type)
            .unwrap_or_else(|| OCI_INDEX.into()),
    };
    Ok(Child {
        reference,
        digest,
        bytes,
        media_type,
        parsed,
    })
}

/// Makes a child present in the target's repository: its blobs mounted from the source
/// repository (same registry) or streamed from it (another registry, which checks each
/// blob's digest), then its manifest (and, for an index, each manifest it lists) pushed by
/// digest, exactly the bytes fetched.
async fn make_present(
    registry: &Registry,
    target_registry: &Registry,
    same_registry: bool,
    child: &Child,
    target: &Reference,
) -> Result<(), IndexError> {
    let from = &child.reference.repository;
    let into = &target.repository;
    let err = |what: String| move |error| IndexError::Registry { what, error };
    let mut manifests = Vec::new();
    match &child.parsed {
        Parsed::Image { .. } => manifests.push((
            child.digest.clone(),
            child.media_type.clone(),
            child.bytes.clone(),
            child.parsed.clone(),
        )),
        Parsed::Index { descriptors } => {
            for d in descriptors {
                let p = assemble::pointer(d).map_err(|detail| IndexError::BadManifest {
                    what: format!("--source {}", child.reference),
                    detail: format!("a descriptor {detail}"),
                })?;
                let what = format!("--source {}: manifest {}", child.reference, p.digest);
                let (bytes, content_type) = registry
                    .manifest(from, &p.digest, &ACCEPTED, MAX_MANIFEST_BYTES)
                    .await
                    .map_err(err(what.clone()))?;
                let parsed = assemble::parse_manifest(&bytes, content_type.as_deref())
                    .map_err(|detail| IndexError::BadManifest { what, detail })?;
                if matches!(parsed, Parsed::Index { .. }) {
                    return Err(IndexError::Refused(format!(
                        "--source {}: manifest {} is itself an index; nested indexes are not copied between repositories",
                        child.reference, p.digest
                    )));
                }
                manifests.push((p.digest, p.media_type, bytes, parsed));
            }
            manifests.push((
                child.digest.clone(),
                child.media_type.clone(),
                child.bytes.clone(),
                child.parsed.clone(),
            ));
        }
    }
    for (digest, media_type, bytes, parsed) in manifests {
        if let Parsed::Image { config, layers, .. } = &parsed {
            for blob in std::iter::once(config).chain(layers) {
                let what = format!(
                    "--target {target}: blob {} of {}@{digest}",
                    blob.digest, child.reference.repository
                );
                if target_registry
                    .exists(into, "blobs", &blob.digest, &[])
                    .await
                    .map_err(err(what.clone()))?
                {
                    continue;
                }
                if same_registry {
                    registry
                        .mount(into, &blob.digest, from)
                        .await
                        .map_err(err(what))?;
                } else {
                    // A stream cannot be sent twice: a transient failure copies the blob anew.
                    let mut attempt = 1;
                    loop {
                        let (stream, length) =
                            registry.blob_stream(from, &blob.digest).await.map_err(err(
                                format!("--source {}: blob {}", child.reference, blob.digest),
                            ))?;
                        match target_registry
                            .upload_stream(into, &blob.digest, stream, length)
                            .await
                        {
                            Err(e) if e.is_transient() && attempt < registry::ATTEMPTS => {
                                registry::retry_after(&mut attempt, &format!("{what}: {e}"), None)
                                    .await
                            }
                            r => break r.map_err(err(what.clone()))?,
                        }
                    }
                }
            }
        }
        target_registry
            .put_manifest(into, &digest, &media_type, bytes)
            .await
            .map_err(err(format!("--target {target}: manifest {digest}")))?;
    }
    Ok(())
}

/// `--ca-env HOST=VAR`: each registry's CA bundle, read from the environment (the index Job
/// gets them as env values, as the builder does, since a ConfigMap cannot cross namespaces).
fn registry_cas(ca_env: &[String]) -> Result<BTreeMap<String, String>, IndexError> {
    let mut cas = BTreeMap::new();
    for entry in ca_env {
        let refused = |why: &str| IndexError::Refused(format!("--ca-env {entry}: {why}"));
        let (host, var) = entry
            .split_once('=')
            .filter(|(h, v)| !h.is_empty() && !v.is_empty())
            .ok_or_else(|| refused("expected HOST=VAR"))?;
        let pem = std::env::var(var)
            .ok()
            .filter(|p| p.contains("-----BEGIN CERTIFICATE-----"))
            .ok_or_else(|| refused(&format!("{var} holds no PEM certificate")))?;
        cas.insert(reference::api_host(host).to_string(), pem);
    }
    Ok(cas)
}
