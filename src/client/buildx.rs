//! The flags of `hearth build` spelled as `docker buildx build` spells them, for what goes
//! beyond the image itself: annotations, attestations, registry caches and the frontend
//! options Hearth passes through. Pure: flags in, ImageBuild spec fields out; every refusal
//! names its flag.

use clap::Args;

use super::bad_input::BadInput;
use crate::api::{ExportMode, ImageBuildSpec, ProvenanceMode, RegistryCache, RegistryExport};

/// buildx's output, attestation and cache flags.
#[derive(Clone, Debug, Default, Args)]
pub struct BuildxArgs {
    /// OCI annotation `[LEVEL:]KEY=VALUE`, LEVEL one of manifest (default), index,
    /// manifest-descriptor, index-descriptor.
    #[arg(long = "annotation", value_name = "[LEVEL:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Attestation: `type=provenance[,mode=min|max][,disabled=true]` or
    /// `type=sbom[,disabled=true]`. Provenance (mode=min) is on by default.
    #[arg(long = "attest", value_name = "type=provenance|sbom,...")]
    pub attest: Vec<String>,
    /// Shorthand for `--attest type=sbom`: `--sbom`, `--sbom=true` or `--sbom=false` (with
    /// `=`, as buildx: `--sbom DIR` leaves DIR the context).
    #[arg(
        long = "sbom",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub sbom: Option<String>,
    /// Shorthand for `--attest type=provenance`: `--provenance`, or `=true`, `=false`,
    /// `=mode=min`, `=mode=max`.
    #[arg(
        long = "provenance",
        value_name = "true|false|mode=min|max",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub provenance: Option<String>,
    /// Registry cache to import when the build has no cache of its own on the cluster:
    /// `type=registry,ref=REF` or just `REF`. Repeat for several.
    #[arg(long = "cache-from", value_name = "type=registry,ref=REF")]
    pub cache_from: Vec<String>,
    /// Registry cache to export to after the build: `type=registry,ref=REF[,mode=min|max]`.
    /// Not with --read-only.
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF[,mode=max]")]
    pub cache_to: Option<String>,
    /// Extra `/etc/hosts` entry for RUN steps, `HOST:IP` (repeat for several).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Size of `/dev/shm` for RUN steps: bytes, or with a unit (`512m`, `2g`).
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Ulimit for RUN steps, `NAME=SOFT[:HARD]` (repeat for several).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
}

/// Sets the spec fields the flags name. The API's own rules check the values afterwards.
pub fn apply(flags: &BuildxArgs, spec: &mut ImageBuildSpec) -> Result<(), BadInput> {
    for a in &flags.annotations {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| BadInput::new("--annotation", format!("{a:?} is not KEY=VALUE")))?;
        spec.output.annotations.insert(k.to_string(), v.to_string());
    }
    for a in &flags.attest {
        attest("--attest", a, spec)?;
    }
    if let Some(v) = &flags.sbom {
        let on = boolean("--sbom", v)?;
        attest("--sbom", &format!("type=sbom,disabled={}", !on), spec)?;
    }
    if let Some(v) = &flags.provenance {
        let value = match v.as_str() {
            "true" | "false" => format!("type=provenance,disabled={}", v == "false"),
            "min" | "max" => format!("type=provenance,mode={v}"),
            other => format!("type=provenance,{other}"),
        };
        attest("--provenance", &value, spec)?;
    }
    let mut registry = RegistryCache::default();
    for c in &flags.cache_from {
        registry
            .import_from
            .push(registry_ref("--cache-from", c)?.0);
    }
    if let Some(c) = &flags.cache_to {
        let (reference, mode) = registry_ref("--cache-to", c)?;
        registry.export_to = Some(RegistryExport { reference, mode });
    }
    if registry != RegistryCache::default() {
        spec.cache.registry = Some(registry);
    }
    let hosts = flags
        .add_hosts
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(host, ip)| format!("{host}={ip}"))
                .ok_or_else(|| BadInput::new("--add-host", format!("{h:?} is not HOST:IP")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = &mut spec.frontend_options;
    if !hosts.is_empty() {
        options.insert("add-hosts".into(), hosts.join(","));
    }
    if let Some(size) = &flags.shm_size {
        options.insert("shm-size".into(), bytes("--shm-size", size)?.to_string());
    }
    if !flags.ulimits.is_empty() {
        options.insert("ulimit".into(), flags.ulimits.join(","));
    }
    Ok(())
}

/// `KEY=VALUE` pairs of a comma-separated flag value.
fn pairs<'a>(flag: &str, value: &'a str) -> Result<Vec<(&'a str, &'a str)>, BadInput> {
    value
        .split(',')
        .map(|kv| {
            kv.split_once('=')
                .ok_or_else(|| BadInput::new(flag, format!("{kv:?} in {value:?} is not KEY=VALUE")))
        })
        .collect()
}

fn boolean(flag: &str, value: &str) -> Result<bool, BadInput> {
    value
        .parse()
        .map_err(|_| BadInput::new(flag, format!("{value:?} is not true or false")))
}

/// One `--attest` value.
fn attest(flag: &str, value: &str, spec: &mut ImageBuildSpec) -> Result<(), BadInput> {
    let attrs = pairs(flag, value)?;
    let get = |key: &str| attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let disabled = get("disabled").map(|v| boolean(flag, v)).transpose()?;
    let known = |allowed: &[&str]| match attrs.iter().find(|(k, _)| !allowed.contains(k)) {
        Some((k, _)) => Err(BadInput::new(
            flag,
            format!("{k} is not supported (Hearth takes type, mode and disabled)"),
        )),
        None => Ok(()),
    };
    let a = &mut spec.output.attestations;
    match get("type") {
        Some("sbom") => {
            known(&["type", "disabled"])?;
            a.sbom = disabled != Some(true);
        }
        Some("provenance") => {
            known(&["type", "mode", "disabled"])?;
            a.provenance.mode = match (disabled, get("mode")) {
                (Some(true), _) => ProvenanceMode::Disabled,
                (_, None | Some("min")) => ProvenanceMode::Min,
                (_, Some("max")) => ProvenanceMode::Max,
                (_, Some(m)) => {
                    return Err(BadInput::new(flag, format!("mode {m:?} is not min or max")))
                }
            };
        }
        other => {
            return Err(BadInput::new(
                flag,
                format!("type {other:?} is not provenance or sbom"),
            ))
        }
    }
    Ok(())
}

/// A registry cache flag: `type=registry,ref=REF[,mode=...]` or a bare `REF`.
fn registry_ref(flag: &str, value: &str) -> Result<(String, ExportMode), BadInput> {
    if !value.contains('=') {
        return Ok((value.to_string(), ExportMode::default()));
    }
    let mut reference = None;
    let mut mode = ExportMode::default();
    for (k, v) in pairs(flag, value)? {
        match (k, v) {
            ("type", "registry") => {}
            ("type", other) => {
                return Err(BadInput::new(
                    flag,
                    format!("type={other} is not supported: only type=registry (Hearth keeps the local cache itself)"),
                ))
            }
            ("ref", r) => reference = Some(r.to_string()),
            ("mode", "min") if flag == "--cache-to" => mode = ExportMode::Min,
            ("mode", "max") if flag == "--cache-to" => mode = ExportMode::Max,
            (k, v) => {
                return Err(BadInput::new(
                    flag,
                    format!("{k}={v} is not supported (Hearth takes type=registry, ref and, for --cache-to, mode=min|max)"),
                ))
            }
        }
    }
    let reference =
        reference.ok_or_else(|| BadInput::new(flag, format!("{value:?} has no ref=")))?;
    Ok((reference, mode))
}

/// A size as Docker reads `--shm-size`: bytes, or with a binary unit (`b`, `k`, `m`, `g`).
fn bytes(flag: &str, value: &str) -> Result<u64, BadInput> {
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1u64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| BadInput::new(flag, format!("{value:?} is not a size like 512m or 2g")))
}

#[cfg(test)]
#[path = "buildx_tests.rs"]
mod tests;
