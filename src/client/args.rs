//! The flags of `hearth build`, `hearth wait` and `hearth logs`, and the pure translation of
//! `hearth build`'s flags into an ImageBuild. Every refusal names the flag to fix.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kube::core::Duration;

use crate::api::common::LocalObjectReference;
use crate::api::image_build::RetentionSpec;
use crate::api::image_build::{
    clean_dir, dockerfile_from_context, CacheMode, GitSource, ImageBuildSpec, PlatformMode,
    SourceSpec,
};
use crate::api::OutputSpec;
use crate::api::{ImageBuild, SecretKeyRef, SshAgent, UploadSource};

use super::bad_input::BadInput;
use super::buildx::BuildxArgs;

/// How the result is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Progress and a summary for people.
    #[default]
    Text,
    /// One JSON object with the outcome on stdout (progress still goes to stderr).
    Json,
}

/// `hearth build`: build DIR (uploaded) or a git repository on the cluster, with its cache.
#[derive(Clone, Debug, Default, Args)]
pub struct BuildArgs {
    /// Local build context to upload (honours its `.dockerignore`). Leave out with `--git`.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Image to build and push: a full reference with a registry host (`registry/app:tag`).
    /// Repeat to push more names: a full reference, or a bare tag in the first one's
    /// repository.
    #[arg(short = 't', long = "tag", value_name = "IMAGE")]
    pub tags: Vec<String>,
    /// Dockerfile: a path on this machine inside DIR (like `docker build -f`), or with
    /// `--git` a path inside the repository. `Dockerfile` in the context by default.
    #[arg(short = 'f', long = "file", value_name = "DOCKERFILE")]
    pub file: Option<PathBuf>,
    /// Build stage to stop at.
    #[arg(long)]
    pub target: Option<String>,
    /// Build argument `KEY=VALUE` (`KEY` alone takes the value from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Target platform (`linux/amd64`); repeat or separate with commas.
    #[arg(long = "platform", value_name = "PLATFORM")]
    pub platforms: Vec<String>,
    /// Build every `--platform` in one pass, the ones not native to the node emulated (the
    /// nodes need binfmt; `spec.platformMode: Emulate`). Without it, several platforms are
    /// built natively: one build per architecture on its nodes, then one image index.
    #[arg(long)]
    pub emulate: bool,
    /// Image label `KEY=VALUE`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Cache key (default: derived from the repository or directory, Dockerfile and target).
    #[arg(long = "cache-key", value_name = "KEY")]
    pub cache_key: Option<String>,
    /// Fallback cache key, tried in order when the key has no cache yet.
    #[arg(long = "restore-key", value_name = "KEY")]
    pub restore_keys: Vec<String>,
    /// Named build context `NAME=docker-image://REF` or `NAME=https://URL` (as buildx's
    /// `--build-context`; a local directory cannot be used).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Forward an SSH key to `RUN --mount=type=ssh`: `ID=SECRET[:KEY]`, a key of a Secret in
    /// the namespace (`ssh-privatekey` by default); `default=...` for a mount without an id.
    #[arg(long = "ssh", value_name = "ID=SECRET[:KEY]")]
    pub ssh: Vec<String>,
    /// Resolve base images in the registry anew.
    #[arg(long)]
    pub pull: bool,
    /// Run every step again, ignoring cached results; the cache is still kept up to date
    /// (as buildx's `--no-cache`). `--cache-mode Disabled` builds without a cache.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// `ReadWrite` (default), `ReadOnly` (use the cache, never write back: untrusted code such
    /// as fork pull requests) or `Disabled` (no persistent cache).
    #[arg(long = "cache-mode", value_name = "MODE", value_parser = parse_cache_mode)]
    pub cache_mode: Option<CacheMode>,
    /// Same as `--cache-mode ReadOnly`.
    #[arg(long = "read-only", conflicts_with = "cache_mode")]
    pub read_only: bool,
    /// Build and do not push the image.
    #[arg(long = "no-push")]
    pub no_push: bool,
    /// Secret (type `kubernetes.io/dockerconfigjson`) in the namespace with push credentials.
    #[arg(long = "push-secret", value_name = "NAME")]
    pub push_secret: Option<String>,
    /// Build this git repository instead of a local DIR (fetched by BuildKit in the cluster);
    /// `URL#REF:SUBDIR` as in buildx takes a revision and a subdirectory as the context.
    #[arg(long, value_name = "URL[#REF[:SUBDIR]]")]
    pub git: Option<String>,
    /// Branch, tag or commit of `--git`.
    #[arg(long, value_name = "REV", requires = "git")]
    pub revision: Option<String>,
    /// Namespace of the ImageBuild (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Return once the build is created (and DIR uploaded) instead of waiting for it.
    #[arg(long = "no-wait")]
    pub no_wait: bool,
    /// Longest the build may take, queueing included (`spec.timeout`; Go duration, at most
    /// 24h). The command waits that long plus a minute, then cancels it and exits 3.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Delete the ImageBuild (and its pods) this long after it ended, succeeded or not
    /// (`spec.retention`; Go duration, 1m to 8760h), instead of the operator's defaults.
    #[arg(long = "keep-for", value_name = "DURATION")]
    pub keep_for: Option<String>,
    /// How long the builder waits for the upload once it is ready (at most 1h).
    #[arg(
        long = "upload-timeout",
        value_name = "DURATION",
        default_value = "10m"
    )]
    pub upload_timeout: String,
    /// Write the image digest to this file.
    #[arg(long = "digest-file", value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Write the build result as JSON (`containerimage.digest`, `image.name`, Hearth's cache
    /// story) to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Annotations, attestations, registry caches and frontend options, as buildx spells them.
    #[command(flatten)]
    pub buildx: BuildxArgs,
}

/// `hearth wait`: wait for an ImageBuild created by any means.
#[derive(Clone, Debug, Args)]
pub struct WaitArgs {
    /// Name of the ImageBuild.
    pub name: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Give up after this long (Go duration) and exit 3; the build goes on.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `hearth logs`: the builder's log (BuildKit's plain progress) of an ImageBuild.
#[derive(Clone, Debug, Args)]
pub struct LogsArgs {
    /// Name of the ImageBuild.
    pub name: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Keep streaming until the builder exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// A Go duration flag, bounded.
pub fn parse_duration(flag: &str, value: &str, max_hours: u64) -> Result<Duration, BadInput> {
    let d: Duration = value.parse().map_err(|_| {
        BadInput::new(
            flag,
            format!("{value:?} is not a duration like 30m or 1h30m"),
        )
    })?;
    let std: std::time::Duration = d.into();
    if d.is_negative() || std.is_zero() || std > std::time::Duration::from_secs(max_hours * 3600) {
        return Err(BadInput::new(
            flag,
            format!("must be greater than 0s and at most {max_hours}h"),
        ));
    }
    Ok(d)
}

/// The uploaded context, as packed by the caller (see [`crate::upload::pack`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    /// Tar size.
    pub size: u64,
    /// Tar sha256.
    pub sha256: String,
    /// Origin for the derived cache key (see [`origin_for`]).
    pub origin: String,
    /// The Dockerfile's path from DIR (leading `../` when it lies outside and travels apart).
    pub dockerfile: String,
    /// The Dockerfile lies outside DIR: the tar holds the context and it apart
    /// (`source.upload.separateDockerfile`).
    pub separate_dockerfile: bool,
}

/// The ImageBuild `hearth build` creates, without a name (the caller picks one). `upload`
/// is the packed DIR when there is one. Pure: flags and packed context in, object out.
pub fn image_build(
    args: &BuildArgs,
    upload: Option<&UploadInfo>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ImageBuild, BadInput> {
    let (image, more_tags) = args
        .tags
        .split_first()
        .ok_or_else(|| BadInput::new("-t/--tag", "an image to build is required"))?;
    let image = image.clone();
    let source = match (&args.git, upload, &args.dir) {
        (Some(_), _, Some(_)) => {
            return Err(BadInput::new(
                "--git",
                "give either a local DIR or --git, not both",
            ))
        }
        (Some(url), _, None) => SourceSpec {
            git: Some(git_source(url, args.revision.as_deref())?),
            ..Default::default()
        },
        (None, Some(u), _) => SourceSpec {
            upload: Some(UploadSource {
                sha256: u.sha256.clone(),
                size: i64::try_from(u.size).unwrap_or(i64::MAX),
                timeout: parse_duration("--upload-timeout", &args.upload_timeout, 1)?,
                origin: Some(u.origin.clone()),
                separate_dockerfile: u.separate_dockerfile,
            }),
            ..Default::default()
        },
        (None, None, _) => {
            return Err(BadInput::new(
                "DIR",
                "give a local context directory (for example `.`) or --git URL",
            ))
        }
    };
    let subdir = source
        .git
        .as_ref()
        .and_then(|g| g.sub_path.clone())
        .unwrap_or_default();
    let dockerfile = match (upload, &args.file) {
        (Some(u), _) => u.dockerfile.clone(),
        // From the repository root, as in the Tekton Task and custom task; BuildKit reads it
        // from the repository, in the subdir or not.
        (None, Some(f)) => dockerfile_from_context(&subdir, &f.to_string_lossy()).ok_or_else(|| {
            BadInput::new(
                "-f/--file",
                format!(
                    "{} must be a file in the repository (with --git, paths are from the repository root)",
                    f.display()
                ),
            )
        })?,
        (None, None) => "Dockerfile".to_string(),
    };
    let mut build_args = BTreeMap::new();
    for arg in &args.build_args {
        let (k, v) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match env(arg) {
                Some(v) => (arg.clone(), v),
                None => {
                    return Err(BadInput::new(
                        "--build-arg",
                        format!("{arg:?} has no value and no such environment variable is set"),
                    ))
                }
            },
        };
        build_args.insert(k, v);
    }
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .ok_or_else(|| BadInput::new("--label", format!("{label:?} is not KEY=VALUE")))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let platforms: Vec<String> = args
        .platforms
        .iter()
        .flat_map(|p| p.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let mut spec = ImageBuildSpec {
        source,
        dockerfile,
        target: args.target.clone(),
        build_args,
        platforms,
        labels,
        output: OutputSpec {
            image,
            push: !args.no_push,
            push_secret_ref: args
                .push_secret
                .clone()
                .map(|name| LocalObjectReference { name }),
            tags: more_tags.to_vec(),
            ..Default::default()
        },
        ..Default::default()
    };
    spec.platform_mode = args.emulate.then_some(PlatformMode::Emulate);
    spec.cache.key = args.cache_key.clone();
    spec.cache.restore_keys = fallback_keys(args.cache_key.as_deref(), &args.restore_keys);
    spec.cache.mode = match (args.cache_mode, args.read_only) {
        (Some(mode), _) => mode,
        (None, true) => CacheMode::ReadOnly,
        (None, false) => CacheMode::ReadWrite,
    };
    spec.no_cache = args.no_cache;
    spec.pull = args.pull;
    for context in &args.build_contexts {
        let (name, value) = context.split_once('=').ok_or_else(|| {
            BadInput::new(
                "--build-context",
                format!("{context:?} is not NAME=docker-image://REF or NAME=https://URL"),
            )
        })?;
        spec.build_contexts
            .insert(name.to_string(), value.to_string());
    }
    for agent in &args.ssh {
        spec.ssh.push(ssh_agent(agent)?);
    }
    if let Some(t) = &args.timeout {
        spec.timeout = parse_duration("--timeout", t, 24)?;
    }
    if let Some(keep) = &args.keep_for {
        let ttl = parse_duration("--keep-for", keep, 8760)?;
        spec.retention = Some(RetentionSpec {
            ttl_after_succeeded: Some(ttl),
            ttl_after_failed: Some(ttl),
        });
    }
    super::buildx::apply(&args.buildx, &mut spec)?;
    let mut ib = ImageBuild::new("", spec);
    ib.metadata.name = None;
    ib.metadata.namespace = args.namespace.clone();
    ib.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/created-by".to_string(),
        "hearth-cli".to_string(),
    )]));
    check_like_the_api_server(&ib)?;
    Ok(ib)
}

/// `--git URL[#REF[:SUBDIR]]`, as buildx takes a git context (`--revision` is the same REF).
fn git_source(url: &str, revision: Option<&str>) -> Result<GitSource, BadInput> {
    let (url, fragment) = url.split_once('#').unwrap_or((url, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    if !reference.is_empty() && revision.is_some() {
        return Err(BadInput::new(
            "--revision",
            format!("--git already names the revision {reference:?} after '#'; give one"),
        ));
    }
    let subdir = clean_dir(subdir);
    let reference = (!reference.is_empty()).then(|| reference.to_string());
    Ok(GitSource {
        url: url.to_string(),
        revision: reference.or_else(|| revision.map(str::to_string)),
        sub_path: (!subdir.is_empty()).then_some(subdir),
        secret_ref: None,
    })
}

/// `--ssh ID=SECRET[:KEY]`.
fn ssh_agent(flag: &str) -> Result<SshAgent, BadInput> {
    let bad = || {
        BadInput::new(
            "--ssh",
            format!("{flag:?} is not ID=SECRET[:KEY] (a Secret in the namespace holding the private key)"),
        )
    };
    let (id, secret) = flag.split_once('=').ok_or_else(bad)?;
    let (name, key) = secret.split_once(':').unwrap_or((secret, "ssh-privatekey"));
    if id.is_empty() || name.is_empty() || key.is_empty() {
        return Err(bad());
    }
    Ok(SshAgent {
        id: id.to_string(),
        secret_ref: SecretKeyRef {
            name: name.to_string(),
            key: key.to_string(),
        },
    })
}

/// `--cache-mode`: the API's own spellings.
fn parse_cache_mode(value: &str) -> Result<CacheMode, String> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| format!("{value:?} is not ReadWrite, ReadOnly or Disabled"))
}

/// Which flag sets a field of the spec, for errors from the API's own rules.
fn flag_of(field: &str) -> &'static str {
    const FLAGS: [(&str, &str); 23] = [
        ("spec.buildContexts", "--build-context"),
        ("spec.ssh", "--ssh"),
        ("spec.output.pushSecretRef", "--push-secret"),
        ("spec.platformMode", "--emulate"),
        ("spec.output.tags", "-t/--tag"),
        ("spec.output.annotations", "--annotation"),
        ("spec.cache.registry.importFrom", "--cache-from"),
        ("spec.cache.registry.exportTo", "--cache-to"),
        ("spec.frontendOptions", "--add-host/--shm-size/--ulimit"),
        ("spec.output", "-t/--tag"),
        ("spec.dockerfile", "-f/--file"),
        ("spec.target", "--target"),
        ("spec.buildArgs", "--build-arg"),
        ("spec.platforms", "--platform"),
        ("spec.labels", "--label"),
        ("spec.cache.restoreKeys", "--restore-key"),
        ("spec.cache.key", "--cache-key"),
        ("spec.source.git.revision", "--revision"),
        ("spec.source.git", "--git"),
        ("spec.source.upload.timeout", "--upload-timeout"),
        ("spec.source.upload", "DIR"),
        ("spec.timeout", "--timeout"),
        ("spec.retention", "--keep-for"),
    ];
    FLAGS
        .iter()
        .find(|(prefix, _)| field.starts_with(prefix))
        .map(|(_, flag)| *flag)
        .unwrap_or("arguments")
}

/// Applies the CRD's schema and CEL rules offline, so a bad flag is named before anything
/// is created.
fn check_like_the_api_server(ib: &ImageBuild) -> Result<(), BadInput> {
    let mut obj =
        serde_json::to_value(ib).map_err(|e| BadInput::new("arguments", e.to_string()))?;
    obj["metadata"]["name"] = "hearth-build-check".into();
    obj["metadata"]["namespace"] = "default".into();
    let violations = crate::api::check::check(&obj, None)
        .map_err(|e| BadInput::new("arguments", e.to_string()))?;
    match violations.into_iter().next() {
        None => Ok(()),
        Some(v) => Err(BadInput::new(
            flag_of(&v.field),
            format!("{} ({})", v.message, v.field),
        )),
    }
}

/// The upload's origin for the derived cache key: the repository and directory when DIR is
/// in a git checkout with a remote, so uploads share the cache of git builds of the same
/// place (`github.com/acme/shop/svc/api`), else `upload/<directory name>`.
pub fn origin_for(remote: Option<&str>, prefix_in_repo: &str, dir_name: &str) -> String {
    let raw = match remote.map(str::trim).filter(|r| !r.is_empty()) {
        Some(remote) => {
            let repo = crate::api::keys::normalize_git_url(remote);
            match prefix_in_repo.trim_matches('/') {
                "" => repo,
                sub => format!("{repo}/{sub}"),
            }
        }
        None => format!("upload/{dir_name}"),
    };
    let mut origin = crate::api::keys::sanitize_key(&raw);
    origin.truncate(200);
    origin
}

/// The name `hearth build` gives an ImageBuild: the image's last path component, a DNS
/// label, and a random suffix (names are picked client-side, so a conflict retries).
pub fn build_name(image: &str, suffix: &str) -> String {
    let repo = image.rsplit('/').next().unwrap_or(image);
    let repo = repo.split([':', '@']).next().unwrap_or(repo);
    let mut base: String = repo
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "build" } else { base };
    format!("{base}-{suffix}")
}

/// Restore keys as given, without repeats and without the build's own key: CI templates pass
/// `--cache-key repo:$BRANCH --restore-key repo:main`, which on main names the key twice (the
/// API refuses that, and the key is looked up first anyway).
fn fallback_keys(key: Option<&str>, given: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for k in given {
        if Some(k.as_str()) != key && !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_keys_drop_the_key_itself_and_repeats() {
        let given = ["shop:main", "shop:base", "shop:base"].map(String::from);
        assert_eq!(fallback_keys(Some("shop:main"), &given), ["shop:base"]);
        assert_eq!(fallback_keys(None, &given), ["shop:main", "shop:base"]);
    }

    #[test]
    fn origins_follow_the_checkout_else_the_directory() {
        assert_eq!(
            origin_for(Some("git@github.com:acme/shop.git\n"), "svc/api/", "api"),
            "github.com/acme/shop/svc/api"
        );
        assert_eq!(
            origin_for(Some("https://github.com/acme/shop"), "", "shop"),
            "github.com/acme/shop"
        );
        assert_eq!(origin_for(None, "", "my app"), "upload/my_app");
        assert!(origin_for(None, "", &"x".repeat(400)).len() <= 200);
    }

    #[test]
    fn build_names_are_dns_labels_from_the_image() {
        assert_eq!(
            build_name("registry.example.com/shop/api:1.2", "abcde"),
            "api-abcde"
        );
        assert_eq!(
            build_name("localhost:5000/My_App@sha256:00", "x"),
            "my-app-x"
        );
        assert_eq!(build_name("r.io/a/___", "x"), "build-x");
    }

    #[test]
    fn a_git_context_takes_buildx_ref_and_subdir_and_the_dockerfile_from_the_repository_root() {
        let args = BuildArgs {
            git: Some("https://github.com/acme/shop.git#v2:./svc/api/".into()),
            tags: vec!["registry.example.com/shop/api:2".into()],
            file: Some("svc/api/docker/Dockerfile".into()),
            upload_timeout: "10m".into(),
            ..Default::default()
        };
        let ib = image_build(&args, None, |_| None).unwrap();
        let git = ib.spec.source.git.unwrap();
        assert_eq!(git.url, "https://github.com/acme/shop.git");
        assert_eq!(git.revision.as_deref(), Some("v2"));
        assert_eq!(git.sub_path.as_deref(), Some("svc/api"));
        assert_eq!(ib.spec.dockerfile, "docker/Dockerfile");
        // Out of the subdirectory: BuildKit reads it from the repository (`../`).
        let outside = BuildArgs {
            file: Some("./docker/api.Dockerfile".into()),
            ..args.clone()
        };
        let ib = image_build(&outside, None, |_| None).unwrap();
        assert_eq!(ib.spec.dockerfile, "../../docker/api.Dockerfile");
        // --keep-for: both TTLs of spec.retention.
        let keep = BuildArgs {
            keep_for: Some("2h".into()),
            ..args.clone()
        };
        let retention = image_build(&keep, None, |_| None)
            .unwrap()
            .spec
            .retention
            .unwrap();
        let two_hours: Duration = "2h".parse().unwrap();
        assert_eq!(
            (retention.ttl_after_succeeded, retention.ttl_after_failed),
            (Some(two_hours), Some(two_hours))
        );
        // Without a subdirectory the context is the repository root.
        let args = BuildArgs {
            git: Some("https://github.com/acme/shop.git".into()),
            revision: Some("main".into()),
            file: None,
            ..args
        };
        let ib = image_build(&args, None, |_| None).unwrap();
        let git = ib.spec.source.git.unwrap();
        assert_eq!(
            (git.revision.as_deref(), git.sub_path),
            (Some("main"), None)
        );
        assert_eq!(ib.spec.dockerfile, "Dockerfile");
    }

    #[test]
    fn durations_are_bounded() {
        assert!(parse_duration("--timeout", "90m", 24).is_ok());
        assert_eq!(
            parse_duration("--timeout", "0s", 24).unwrap_err().flag,
            "--timeout"
        );
        assert!(parse_duration("--timeout", "25h", 24).is_err());
    }
}
