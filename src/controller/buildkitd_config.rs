//! buildkitd's own configuration from the operator config: per-registry mirrors, plain HTTP,
//! insecure TLS and CA bundles, checked, and rendered as the `buildkitd.toml` of builder pods
//! (`[registry."host"]` tables, as BuildKit's `RegistryConfig` reads them).
//!
//! The file travels in the builder pod's own spec: the TOML and each CA bundle are env
//! values the builder's script writes to files in its scratch dir before buildkitd starts
//! (`--config`). Neither is a secret (a CA bundle holds public certificates). A ConfigMap the
//! chart renders lives in the controller's namespace, and a pod cannot mount another
//! namespace's ConfigMap; one the controller kept in every build namespace would need
//! write access to ConfigMaps everywhere and could be edited by the namespace's users
//! between builds. In the pod spec the configuration cannot change under a build, and the pod
//! shows exactly what its build ran with.

use serde::{Deserialize, Serialize};

/// Most registries configured.
pub const MAX_REGISTRIES: usize = 64;
/// Most mirrors of one registry.
pub const MAX_MIRRORS: usize = 16;
/// Largest CA bundle of one registry, in bytes.
pub const MAX_CA_BYTES: usize = 64 * 1024;
/// Largest rendered configuration, TOML and CA bundles together, in bytes (it is part of every
/// builder pod's spec).
pub const MAX_TOTAL_BYTES: usize = 512 * 1024;

/// buildkitd settings of builder pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct BuildkitdSettings {
    /// Per-registry settings (`[registry."host"]` in `buildkitd.toml`).
    pub registries: Vec<RegistrySettings>,
}

/// One registry's settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// The registry host as image references name it (`docker.io`, `registry.internal:5000`).
    pub host: String,
    /// Mirrors tried before the registry itself, for pulls (`mirror.corp:5000`, `mirror.gcr.io`).
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to it (an in-cluster registry without TLS).
    pub http: bool,
    /// Skip TLS verification. Prefer `ca`.
    pub insecure: bool,
    /// PEM certificates of CAs to trust for it, besides the image's system roots.
    pub ca: String,
}

/// A file the builder writes before buildkitd starts: its path and content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path in the builder container.
    pub path: String,
    /// Content.
    pub content: String,
}

/// The rendered configuration: `buildkitd.toml` and the CA bundles it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// `buildkitd.toml`.
    pub config: RenderedFile,
    /// One CA bundle per registry with a `ca`, in the registries' order, with the registry's
    /// index: its file is `ca-<index>.pem` (the builder's script writes the env value
    /// `HEARTH_BUILDKITD_CA_<index>` there).
    pub cas: Vec<(usize, RenderedFile)>,
}

/// `buildkitd.toml`'s name in the dir it is rendered for.
pub const CONFIG_FILE: &str = "buildkitd.toml";

impl BuildkitdSettings {
    /// Checks the settings; the error names the field and what was expected.
    pub fn check(&self) -> Result<(), String> {
        if self.registries.len() > MAX_REGISTRIES {
            return Err(format!(
                "at most {MAX_REGISTRIES} registries, got {}",
                self.registries.len()
            ));
        }
        for (i, r) in self.registries.iter().enumerate() {
            let at = format!("registries[{i}]");
            if !is_host(&r.host) {
                return Err(format!(
                    "{at}.host: expected a registry host[:port] such as docker.io or registry.internal:5000, got {:?}",
                    r.host
                ));
            }
            if self.registries[..i].iter().any(|o| o.host == r.host) {
                return Err(format!(
                    "{at}.host: {:?} is configured twice; merge its settings",
                    r.host
                ));
            }
            let at = format!("{at} ({})", r.host);
            if r.mirrors.len() > MAX_MIRRORS {
                return Err(format!("{at}.mirrors: at most {MAX_MIRRORS}"));
            }
            if let Some(m) = r.mirrors.iter().find(|m| !is_mirror(m)) {
                return Err(format!(
                    "{at}.mirrors: expected host[:port][/path] without a scheme, got {m:?}"
                ));
            }
            if !r.ca.is_empty() && !r.ca.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "{at}.ca: expected PEM certificates (-----BEGIN CERTIFICATE-----)"
                ));
            }
            if r.ca.len() > MAX_CA_BYTES {
                return Err(format!(
                    "{at}.ca: at most {MAX_CA_BYTES} bytes, got {}",
                    r.ca.len()
                ));
            }
        }
        let total = self.render("/d").map_or(0, |r| {
            r.config.content.len() + r.cas.iter().map(|(_, c)| c.content.len()).sum::<usize>()
        });
        if total > MAX_TOTAL_BYTES {
            return Err(format!(
                "the rendered configuration is {total} bytes, at most {MAX_TOTAL_BYTES} (it is part of every builder pod)"
            ));
        }
        Ok(())
    }

    /// `buildkitd.toml` and its CA bundles, as files of `dir`; `None` with no registries.
    pub fn render(&self, dir: &str) -> Option<Rendered> {
        if self.registries.is_empty() {
            return None;
        }
        let mut toml =
            String::from("# Rendered by Hearth from its operator config (buildkitd.registries).\n");
        let mut cas = Vec::new();
        for (i, r) in self.registries.iter().enumerate() {
            toml.push_str(&format!("\n[registry.{}]\n", quote(&r.host)));
            if !r.mirrors.is_empty() {
                let mirrors: Vec<String> = r.mirrors.iter().map(|m| quote(m)).collect();
                toml.push_str(&format!("  mirrors = [{}]\n", mirrors.join(", ")));
            }
            if r.http {
                toml.push_str("  http = true\n");
            }
            if r.insecure {
                toml.push_str("  insecure = true\n");
            }
            if !r.ca.is_empty() {
                let path = format!("{dir}/ca-{i}.pem");
                toml.push_str(&format!("  ca = [{}]\n", quote(&path)));
                cas.push((
                    i,
                    RenderedFile {
                        path,
                        content: r.ca.clone(),
                    },
                ));
            }
        }
        Some(Rendered {
            config: RenderedFile {
                path: format!("{dir}/{CONFIG_FILE}"),
                content: toml,
            },
            cas,
        })
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `host[:port]`: DNS labels or an IPv4 address, or a bracketed IPv6 address.
fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !v6.is_empty() && v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
    } else {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    port_ok && name_ok
}

/// A mirror: `host[:port]` and an optional path (BuildKit takes no scheme: `http` says how).
fn is_mirror(mirror: &str) -> bool {
    let (host, path) = mirror.split_once('/').unwrap_or((mirror, ""));
    is_host(host)
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
}

#[cfg(test)]
#[path = "buildkitd_config_tests.rs"]
mod tests;
