//! Cache keys and names: the key a build uses when `spec.cache.key` is empty, the
//! architecture every key is scoped to, and the deterministic BuildCache name Hearth gives the
//! cache of a key. Pure functions.

use super::image_build::{ImageBuildSpec, SourceSpec};

/// Longest cache key the API accepts.
pub const MAX_KEY_LEN: usize = 253;

/// Node label holding a node's architecture, in Go's names (`amd64`, `arm64`, `arm`...).
pub const ARCH_LABEL: &str = "kubernetes.io/arch";

/// The cache key of a build: `spec.cache.key` when set, else one derived from the source
/// (repository or context), the Dockerfile path and the target, so that every build of the
/// same Dockerfile in the same repository shares a cache whatever its revision; either way
/// scoped to the architecture of the nodes it runs on ([`build_arch`], [`arch_scoped`]): a
/// BuildKit state directory holds that architecture's base layers and tools, and must never
/// reach a node of another.
///
/// `github.com/acme/shop` + `docker/api.Dockerfile` + target `prod` on arm64 gives
/// `github.com/acme/shop:docker/api.Dockerfile:prod@arm64`.
pub fn cache_key(spec: &ImageBuildSpec, default_arch: &str) -> String {
    let key = match &spec.cache.key {
        Some(key) => key.clone(),
        None => derive_cache_key(&spec.source, &spec.dockerfile, spec.target.as_deref()),
    };
    arch_scoped(&key, &build_arch(spec, default_arch))
}

/// The restore keys of a build, each scoped to the build's architecture as its key is.
pub fn restore_keys(spec: &ImageBuildSpec, default_arch: &str) -> Vec<String> {
    let arch = build_arch(spec, default_arch);
    spec.cache
        .restore_keys
        .iter()
        .map(|k| arch_scoped(k, &arch))
        .collect()
}

/// The architecture of the nodes a build runs on (their `kubernetes.io/arch`): that of its
/// first platform (`linux/arm64/v8` gives `arm64`), else `default_arch` (the operator's
/// `builder.defaultArch`). A build of several platforms in one pass runs on nodes of its
/// first platform and emulates the others.
pub fn build_arch(spec: &ImageBuildSpec, default_arch: &str) -> String {
    spec.platforms
        .first()
        .and_then(|p| platform_arch(p))
        .unwrap_or(default_arch)
        .to_string()
}

/// The architecture of an `os/arch[/variant]` platform.
pub fn platform_arch(platform: &str) -> Option<&str> {
    platform.split('/').nth(1).filter(|a| !a.is_empty())
}

/// Whether `value` looks like a `kubernetes.io/arch` value (`amd64`, `arm64`, `s390x`...).
pub fn is_arch(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The architecture a key in use is scoped to (what follows its last `@`, when it looks like
/// a `kubernetes.io/arch` value); `None` for a key from before keys were scoped.
pub fn key_arch(key: &str) -> Option<&str> {
    let (_, arch) = key.rsplit_once('@')?;
    is_arch(arch).then_some(arch)
}

/// `key` scoped to `arch`: `<key>@<arch>`, within the key pattern and length (a key too long
/// for the suffix is shortened with a hash, as [`sanitize_key`] does).
pub fn arch_scoped(key: &str, arch: &str) -> String {
    sanitize_key(&format!("{key}@{arch}"))
}

/// The derived key of [`cache_key`], always within the API's key pattern and length.
pub fn derive_cache_key(source: &SourceSpec, dockerfile: &str, target: Option<&str>) -> String {
    let origin = match (&source.git, &source.context) {
        // An uploaded context: the origin the client stated (a git checkout's repository and
        // directory, so it shares the cache of git builds of the same place), else `upload`.
        (None, None) if source.upload.is_some() => source
            .upload
            .as_ref()
            .and_then(|u| u.origin.clone())
            .unwrap_or_else(|| "upload".to_string()),
        (Some(git), _) => {
            let repo = normalize_git_url(&git.url);
            match git.sub_path.as_deref().map(|p| p.trim_matches('/')) {
                Some(sub) if !sub.is_empty() && sub != "." => format!("{repo}/{sub}"),
                _ => repo,
            }
        }
        (None, Some(ctx)) => match (&ctx.url, &ctx.pvc) {
            (Some(url), _) => without_secrets(strip_scheme(url)).to_string(),
            (None, Some(pvc)) => match pvc.path.as_deref().map(|p| p.trim_matches('/')) {
                Some(path) if !path.is_empty() => format!("pvc/{}/{}", pvc.claim_name, path),
                _ => format!("pvc/{}", pvc.claim_name),
            },
            (None, None) => "context".to_string(),
        },
        (None, None) => "source".to_string(),
    };
    let mut key = format!("{origin}:{}", dockerfile.trim_start_matches("./"));
    if let Some(target) = target {
        key.push(':');
        key.push_str(target);
    }
    sanitize_key(&key)
}

/// `https://user@GitHub.com/acme/shop.git/` and `git@github.com:acme/shop.git` both become
/// `github.com/acme/shop`.
pub fn normalize_git_url(url: &str) -> String {
    let rest = without_secrets(strip_scheme(url));
    // scp-like `host:path` becomes `host/path` (a `host:port/` keeps its port).
    let rest = match rest.split_once(':') {
        Some((host, path))
            if !path.starts_with(|c: char| c.is_ascii_digit()) || !path.contains('/') =>
        {
            format!("{host}/{path}")
        }
        _ => rest.to_string(),
    };
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(".git").unwrap_or(rest);
    match rest.split_once('/') {
        Some((host, path)) => format!("{}/{}", host.to_ascii_lowercase(), path),
        None => rest.to_ascii_lowercase(),
    }
}

/// A URL without its scheme, as a key may show it: no user info (`user:token@`), no query
/// string (a pre-signed URL's signature), no fragment. Admission refuses credentials in URLs;
/// this keeps any that predate the rules out of keys, status and store paths.
fn without_secrets(rest: &str) -> &str {
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    match (rest.find('@'), rest.find('/')) {
        (Some(at), Some(slash)) if at < slash => &rest[at + 1..],
        (Some(at), None) => &rest[at + 1..],
        _ => rest,
    }
}

fn strip_scheme(url: &str) -> &str {
    url.split_once("://").map(|(_, rest)| rest).unwrap_or(url)
}

/// Replaces characters the key pattern refuses with `_` and shortens an over-long key,
/// keeping it unique with a hash suffix.
pub fn sanitize_key(raw: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:/@+=-".contains(c);
    let mut key: String = raw
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    if !key.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        key.insert(0, 'k');
    }
    if key.len() > MAX_KEY_LEN {
        let hash = short_hash(raw);
        key.truncate(MAX_KEY_LEN - hash.len() - 1);
        key.push('-');
        key.push_str(&hash);
    }
    key
}

/// Name of the BuildCache Hearth creates for a key: a readable slug of the key plus a hash,
/// a valid DNS label of at most 52 characters (room for `-rNN` replica suffixes in PVC names).
pub fn cache_name_for_key(key: &str) -> String {
    let mut slug = String::with_capacity(key.len());
    for c in key.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let mut slug: String = slug.chars().take(40).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    let hash = short_hash(key);
    if slug.is_empty() {
        format!("cache-{hash}")
    } else {
        format!("{slug}-{hash}")
    }
}

fn short_hash(s: &str) -> String {
    blake3::hash(s.as_bytes()).to_hex()[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::image_build::{ContextSource, GitSource, PvcContext};

    fn git(url: &str, sub: Option<&str>) -> SourceSpec {
        SourceSpec {
            git: Some(GitSource {
                url: url.into(),
                revision: Some("main".into()),
                sub_path: sub.map(Into::into),
                secret_ref: None,
            }),
            context: None,
            upload: None,
        }
    }

    #[test]
    fn git_urls_normalize_to_host_and_path() {
        for url in [
            "https://github.com/acme/shop.git",
            "https://user@GitHub.com/acme/shop/",
            "git@github.com:acme/shop.git",
            "ssh://git@github.com/acme/shop",
        ] {
            assert_eq!(normalize_git_url(url), "github.com/acme/shop", "{url}");
        }
        assert_eq!(
            normalize_git_url("ssh://git@gitea.local:2222/a/b.git"),
            "gitea.local:2222/a/b"
        );
    }

    #[test]
    fn credentials_in_urls_never_reach_a_key() {
        let key = |url: &str| derive_cache_key(&git(url, None), "Dockerfile", None);
        for url in [
            "https://ghp_TOKEN@github.com/acme/shop.git",
            "https://bot:ghp_TOKEN@github.com/acme/shop.git",
            "https://github.com/acme/shop.git?access_token=ghp_TOKEN",
            "https://github.com/acme/shop.git#ghp_TOKEN",
        ] {
            assert_eq!(key(url), "github.com/acme/shop:Dockerfile", "{url}");
        }
        let presigned = SourceSpec {
            git: None,
            context: Some(ContextSource {
                url: Some(
                    "https://u:pw@bucket.s3.example.com/ctx.tar.gz?X-Amz-Signature=SECRET".into(),
                ),
                pvc: None,
            }),
            upload: None,
        };
        let k = derive_cache_key(&presigned, "Dockerfile", None);
        assert_eq!(k, "bucket.s3.example.com/ctx.tar.gz:Dockerfile");
        assert!(!k.contains("SECRET") && !k.contains("pw"));
    }

    #[test]
    fn derived_key_uses_repo_subpath_dockerfile_and_target() {
        assert_eq!(
            derive_cache_key(
                &git("https://github.com/acme/shop", None),
                "Dockerfile",
                None
            ),
            "github.com/acme/shop:Dockerfile"
        );
        assert_eq!(
            derive_cache_key(
                &git("https://github.com/acme/shop", Some("svc/api/")),
                "./docker/Dockerfile",
                Some("prod")
            ),
            "github.com/acme/shop/svc/api:docker/Dockerfile:prod"
        );
        let ctx = SourceSpec {
            git: None,
            context: Some(ContextSource {
                url: None,
                pvc: Some(PvcContext {
                    claim_name: "src".into(),
                    path: Some("app".into()),
                }),
            }),
            upload: None,
        };
        assert_eq!(
            derive_cache_key(&ctx, "Dockerfile", None),
            "pvc/src/app:Dockerfile"
        );
        let upload = |origin: Option<&str>| SourceSpec {
            upload: Some(crate::api::UploadSource {
                sha256: "0".repeat(64),
                size: 1,
                timeout: std::time::Duration::from_secs(60).into(),
                origin: origin.map(Into::into),
                separate_dockerfile: false,
            }),
            ..Default::default()
        };
        // An upload from a checkout shares the key of git builds of the same directory.
        assert_eq!(
            derive_cache_key(
                &upload(Some("github.com/acme/shop/svc/api")),
                "Dockerfile",
                None
            ),
            derive_cache_key(
                &git("https://github.com/acme/shop.git", Some("svc/api")),
                "Dockerfile",
                None
            )
        );
        assert_eq!(
            derive_cache_key(&upload(None), "Dockerfile", Some("prod")),
            "upload:Dockerfile:prod"
        );
        // A Dockerfile outside the directory, sent apart, too.
        let mut apart = upload(Some("github.com/acme/shop/svc/api"));
        apart.upload.as_mut().unwrap().separate_dockerfile = true;
        assert_eq!(
            derive_cache_key(&apart, "../../docker/api.Dockerfile", None),
            derive_cache_key(
                &git("https://github.com/acme/shop.git", Some("svc/api")),
                "../../docker/api.Dockerfile",
                None
            )
        );
    }

    #[test]
    fn every_key_is_scoped_to_the_build_arch() {
        let mut spec = ImageBuildSpec {
            source: git("https://github.com/acme/shop", None),
            ..Default::default()
        };
        // No platform: the operator's default architecture.
        assert_eq!(
            cache_key(&spec, "amd64"),
            "github.com/acme/shop:Dockerfile@amd64"
        );
        assert_eq!(
            cache_key(&spec, "arm64"),
            "github.com/acme/shop:Dockerfile@arm64"
        );
        // One platform: its architecture, whatever the default; the variant does not split it.
        spec.platforms = vec!["linux/arm64/v8".into()];
        assert_eq!(build_arch(&spec, "amd64"), "arm64");
        assert_eq!(
            cache_key(&spec, "amd64"),
            "github.com/acme/shop:Dockerfile@arm64"
        );
        // Several in one pass: the first platform's nodes build (and emulate the rest).
        spec.platforms = vec!["linux/s390x".into(), "linux/amd64".into()];
        assert_eq!(build_arch(&spec, "amd64"), "s390x");
        // An explicit key and the restore keys are scoped too: a replica's state is arch-specific.
        spec.platforms = vec!["linux/arm64".into()];
        spec.cache.key = Some("shop-main".into());
        spec.cache.restore_keys = vec!["shop-base".into()];
        assert_eq!(cache_key(&spec, "amd64"), "shop-main@arm64");
        assert_eq!(restore_keys(&spec, "amd64"), ["shop-base@arm64"]);
        assert_eq!(key_arch(&cache_key(&spec, "amd64")), Some("arm64"));
        assert_eq!(key_arch("shop:main"), None);
        assert_eq!(key_arch("git@github.com/acme/shop:Dockerfile"), None);
        let re = regex::Regex::new(crate::api::image_build::CACHE_KEY_PATTERN).unwrap();
        let long = arch_scoped(&"k".repeat(MAX_KEY_LEN), "arm64");
        assert!(long.len() <= MAX_KEY_LEN && re.is_match(&long), "{long}");
        assert_ne!(long, arch_scoped(&"k".repeat(MAX_KEY_LEN), "amd64"));
    }

    #[test]
    fn keys_stay_within_pattern_and_length() {
        let re = |s: &str| {
            regex::Regex::new(crate::api::image_build::CACHE_KEY_PATTERN)
                .unwrap()
                .is_match(s)
        };
        let long = format!("https://example.com/{}", "a/".repeat(300));
        let key = derive_cache_key(&git(&long, None), "Dockerfile", None);
        assert!(key.len() <= MAX_KEY_LEN);
        assert!(re(&key), "{key}");
        let odd = sanitize_key("~weird key with spaces");
        assert!(re(&odd), "{odd}");
        // Two long keys that differ only past the cut stay distinct.
        let a = sanitize_key(&format!("{}a", "x".repeat(300)));
        let b = sanitize_key(&format!("{}b", "x".repeat(300)));
        assert_ne!(a, b);
    }

    #[test]
    fn cache_names_are_dns_labels_and_distinct() {
        let a = cache_name_for_key("github.com/acme/shop:main:Dockerfile");
        let b = cache_name_for_key("github.com/acme/shop:Main:Dockerfile");
        assert!(
            a.starts_with("github-com-acme-shop-main-dockerfile-"),
            "{a}"
        );
        assert_ne!(a, b, "keys differing in case get different names");
        for name in [
            a,
            b,
            cache_name_for_key("::::"),
            cache_name_for_key(&"z".repeat(253)),
        ] {
            assert!(name.len() <= 52, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
    }
}
