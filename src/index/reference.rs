//! Image references as docker reads them: `[registry/]repository[:tag][@sha256:hex]`, with
//! Docker Hub's defaults (`docker.io`, `library/`) and its API host.

use std::fmt;

/// One parsed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The registry as written (`127.0.0.1:5000`, `ghcr.io`), `docker.io` when none was.
    pub registry: String,
    /// The repository path (`shop/app`; `library/alpine` on Docker Hub).
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference; the error says what was expected.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(format!(
                        "{text}: the digest must be sha256: and 64 lowercase hex digits"
                    ));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(format!("{text}: invalid tag {tag:?}"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid_repository = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            });
        if !valid_repository {
            return Err(format!(
                "{text}: invalid repository {repository:?} (lowercase letters, digits, '.', '_', '-' and '/')"
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the distribution API is reached at (Docker Hub's is not `docker.io`).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// What the registry's manifests endpoint takes: the digest if any, else the tag
    /// (`latest` when none).
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The API host of a registry name: Docker Hub's aliases go to `registry-1.docker.io`.
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// The name docker's config.json files a registry under, for matching `auths` keys:
/// scheme and path dropped, Docker Hub's aliases folded into `docker.io`.
pub fn auth_key(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Whether `text` is `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn registry_port_tag_and_digest() {
        let r = Reference::parse(&format!("127.0.0.1:5000/shop/app:v1@{D}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "shop/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.manifest_ref(), D);
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", None)
        );
        assert_eq!(r.manifest_ref(), "latest");
    }

    #[test]
    fn docker_hub_defaults() {
        let r = Reference::parse("alpine:3").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(auth_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(auth_key("http://127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn bad_references_say_why() {
        assert!(Reference::parse("r.io/app@sha256:abc")
            .unwrap_err()
            .contains("64 lowercase hex"));
        assert!(Reference::parse("r.io/App:v1")
            .unwrap_err()
            .contains("invalid repository"));
        assert!(Reference::parse("r.io/app:-x")
            .unwrap_err()
            .contains("invalid tag"));
    }
}
