//! The builder Pod: rootless buildkitd and buildctl in one container (BuildKit's daemonless
//! script), the cache replica at buildkitd's state dir, pinned to the replica's node. BuildKit
//! fetches git sources itself. A restore placement's pod first runs `hearth snapshot restore`
//! in an init container ([`RESTORE_CONTAINER`]) that fills the volume; build secrets, git and registry credentials are mounted
//! read-only from Secrets, never put in env or args. The container's script (see
//! [`super::build_script`]) writes its termination message: buildctl's metadata (with the
//! image digest), or a failed build's log tail with those secrets redacted. The operator config
//! adds the pod's ServiceAccount, pull secrets, labels, annotations, priority and runtime
//! classes, proxy, and buildkitd's configuration ([`crate::controller::buildkitd_config`]).

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, EmptyDirVolumeSource, KeyToPath, PersistentVolumeClaimVolumeSource,
    Pod, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::build_script::{
    self, BUILDKITD_CA_ENV_PREFIX, BUILDKITD_CONFIG_ENV, BUILDKITD_DIR_ENV, GIT_AUTH_SUBDIR,
    GIT_HOST_ENV, GIT_SECRET_DIR_ENV, GIT_TRANSPORT_ENV, REDACT_DIRS_ENV, TERMINATION_LOG_ENV,
    WORK_DIR_ENV,
};
use super::docker_config::docker_config;
use super::jobs::{
    env_var, image_pull_secrets, non_empty, proxy_env, snapshot_container, store_volume,
    SnapshotOp, CACHE_MOUNT, STATE_DIR,
};
use super::{affinity, exporter, frontend, labels, unprivileged, Pin};
use crate::api::image_build::normalize_path;
use crate::api::{CacheMode, ImageBuild};
use crate::contract::{self, RECEIVER_CONTAINER, UPLOAD_DIR};
use crate::controller::config::OperatorConfig;

/// Name of the init container that restores a snapshot into the cache volume.
pub const RESTORE_CONTAINER: &str = "restore";
/// The builder's scratch dir (an emptyDir): buildctl's metadata and log.
pub const WORK_DIR: &str = "/tmp/hearth";
/// Where buildctl writes its metadata (image digest) before it is copied to the termination log.
pub const METADATA_FILE: &str = "/tmp/hearth/metadata.json";
const SECRETS_DIR: &str = "/run/hearth/secrets";
const GIT_DIR: &str = "/run/hearth/git";
const DOCKER_CONFIG_DIR: &str = "/run/hearth/docker";
const WORKSPACE: &str = "/workspace";
const TERMINATION_LOG: &str = "/dev/termination-log";

/// The cache volume of a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateVolume {
    /// A replica PVC (ReadWrite builds): the build's state stays on it.
    Replica(String),
    /// A new replica PVC that an init container fills from `seed` before buildkitd starts
    /// (the restore builds the state dir in a staging dir on the volume and moves it into
    /// place only when whole: a failed restore leaves the volume as it was).
    Restored {
        /// The replica PVC.
        pvc: String,
        /// Snapshot to restore into it.
        seed: Seed,
    },
    /// A throwaway emptyDir (ReadOnly and Disabled builds), optionally seeded from a snapshot
    /// by an init container: nothing the build writes survives it.
    Throwaway {
        /// Snapshot to restore first.
        seed: Option<Seed>,
    },
}

/// The snapshot a volume is restored from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The BuildCache that saved it (whose store prefix it is read from).
    pub cache: String,
    /// Snapshot id.
    pub snapshot: String,
    /// SHA-256 of its manifest, recorded when it was saved.
    pub manifest_sha256: String,
}

/// Everything the builder pod needs besides the ImageBuild and the config.
#[derive(Clone, Debug)]
pub struct BuilderInputs {
    /// Build attempt (part of the pod name).
    pub attempt: i32,
    /// The cache volume.
    pub state: StateVolume,
    /// Node or zone to run on.
    pub pin: Pin,
    /// buildkitd's own GC limit, in bytes (from the BuildCache).
    pub gc_keep_bytes: Option<u64>,
    /// The prune after a successful build, before the save; only on a replica (ReadWrite).
    pub prune: Option<build_script::Prune>,
    /// What is left of the build's timeout.
    pub deadline_seconds: i64,
    /// Registry cache refs to import (a cold build the planner seeded from
    /// `spec.cache.registry.importFrom`); empty for every other build.
    pub import_cache: Vec<String>,
    /// The ImageBuild, as owner.
    pub owner: OwnerReference,
}

/// Sources the builder cannot take (yet), with the field to blame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuilderError {
    /// A context URL scheme BuildKit cannot fetch by itself.
    #[error("spec.source.context.url: {0} contexts are not supported yet; use an https:// tarball, a git source or a PVC")]
    UnsupportedContext(String),
    /// No source (the CRD's CEL rule forbids it; kept for objects that predate it).
    #[error("spec.source: set exactly one of git, context or upload")]
    NoSource,
    /// `spec.dockerfile` leads out of the repository or volume, or out of a context that is
    /// not a directory of one.
    #[error("spec.dockerfile: {0}")]
    DockerfileOutside(String),
}

/// Where a Dockerfile out of the context (`../`) is, from the root of the repository or volume
/// whose directory `sub` is the context.
fn dockerfile_from_root(sub: &str, dockerfile: &str, root: &str) -> Result<String, BuilderError> {
    normalize_path(sub, dockerfile)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            BuilderError::DockerfileOutside(format!(
                "{dockerfile:?} from the context {sub:?} leads out of the {root}"
            ))
        })
}

/// buildctl arguments for the build (after `buildctl-daemonless.sh`); `import_cache` are the
/// registry cache refs the placement seeds a cold build from.
pub fn buildctl_args(
    build: &ImageBuild,
    import_cache: &[String],
) -> Result<Vec<String>, BuilderError> {
    let spec = &build.spec;
    let mut opts: Vec<(String, String)> = Vec::new();
    let mut locals: Vec<String> = Vec::new();
    let leaves_context = spec.dockerfile.starts_with("../");
    let mut dockerfile = spec.dockerfile.clone();
    match (&spec.source.git, &spec.source.context) {
        (Some(git), _) => {
            // A Dockerfile out of the subdir: the whole repository is the frontend's source (its
            // Dockerfile read from there), and `contextsubdir` scopes the build context.
            let outside = git.sub_path.as_deref().filter(|_| leaves_context);
            let mut context = git.url.clone();
            if git.revision.is_some() || git.sub_path.is_some() {
                context.push('#');
                context.push_str(git.revision.as_deref().unwrap_or(""));
                if let (Some(sub), None) = (&git.sub_path, outside) {
                    context.push(':');
                    context.push_str(sub);
                }
            }
            opts.push(("context".into(), context));
            if let Some(sub) = outside {
                opts.push(("contextsubdir".into(), sub.to_string()));
                dockerfile = dockerfile_from_root(sub, &spec.dockerfile, "repository")?;
            }
        }
        (None, Some(ctx)) => match (&ctx.url, &ctx.pvc) {
            (Some(url), _) if url.starts_with("https://") => {
                opts.push(("context".into(), url.clone()))
            }
            (Some(url), _) => {
                let scheme = url.split("://").next().unwrap_or("unknown");
                return Err(BuilderError::UnsupportedContext(format!("{scheme}://")));
            }
            (None, Some(pvc)) => {
                let dir = match pvc.path.as_deref() {
                    Some(p) => format!("{WORKSPACE}/{}", p.trim_matches('/')),
                    None => WORKSPACE.to_string(),
                };
                locals.push(format!("context={dir}"));
                match pvc.path.as_deref().filter(|_| leaves_context) {
                    // Out of the directory: read from the volume's root.
                    Some(sub) => {
                        dockerfile = dockerfile_from_root(sub, &spec.dockerfile, "volume")?;
                        locals.push(format!("dockerfile={WORKSPACE}"));
                    }
                    None => locals.push(format!("dockerfile={dir}")),
                }
            }
            (None, None) => return Err(BuilderError::NoSource),
        },
        (None, None) if spec.source.upload.is_some() => {
            let dir = contract::context_dir(UPLOAD_DIR);
            match spec
                .source
                .upload
                .as_ref()
                .filter(|u| u.separate_dockerfile)
            {
                // The tar's two directories: the context, and the Dockerfile apart.
                Some(_) => {
                    locals.push(format!("context={dir}/{}", contract::UPLOAD_APART_CONTEXT));
                    locals.push(format!(
                        "dockerfile={dir}/{}",
                        contract::UPLOAD_APART_DOCKERFILE
                    ));
                    let name = spec.dockerfile.rsplit('/').next().unwrap_or_default();
                    dockerfile = name.to_string();
                }
                None => {
                    locals.push(format!("context={dir}"));
                    locals.push(format!("dockerfile={dir}"));
                }
            }
        }
        (None, None) => return Err(BuilderError::NoSource),
    }
    if dockerfile.starts_with("../") {
        // An upload or a tarball (the CRD's rule refuses it; kept for objects before it).
        return Err(BuilderError::DockerfileOutside(format!(
            "{dockerfile:?} is outside the context, which is all an upload or a context url carries"
        )));
    }
    opts.push(("filename".into(), dockerfile));
    if let Some(target) = &spec.target {
        opts.push(("target".into(), target.clone()));
    }
    opts.extend(
        spec.build_args
            .iter()
            .map(|(k, v)| (format!("build-arg:{k}"), v.clone())),
    );
    opts.extend(
        spec.labels
            .iter()
            .map(|(k, v)| (format!("label:{k}"), v.clone())),
    );
    if !spec.platforms.is_empty() {
        opts.push(("platform".into(), spec.platforms.join(",")));
    }
    opts.extend(exporter::attestation_opts(&spec.output));
    opts.extend(exporter::passthrough_opts(spec));

    let mut args: Vec<String> = [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--progress",
        "plain",
    ]
    .map(String::from)
    .to_vec();
    for local in locals {
        args.extend(["--local".to_string(), local]);
    }
    for (k, v) in opts {
        args.extend(["--opt".to_string(), format!("{k}={v}")]);
    }
    for secret in &spec.secrets {
        args.extend([
            "--secret".to_string(),
            format!("id={},src={SECRETS_DIR}/{}", secret.id, secret.id),
        ]);
    }
    // Git credentials are added by the script, by which keys the mounted Secret has
    // (`git_credentials_env`).
    args.extend(frontend::frontend_args(spec));
    args.extend(exporter::cache_args(spec, import_cache));
    args.extend([
        "--output".to_string(),
        exporter::output_value(&spec.output),
        "--metadata-file".to_string(),
        METADATA_FILE.to_string(),
    ]);
    Ok(args)
}

/// The registries a build logs in to with the pod's cloud identity (none unless the operator's
/// `builder.registryLogin` serves them): its output names when it pushes, the registry caches
/// it imports, and the one it exports to.
pub fn login_hosts(
    build: &ImageBuild,
    import_cache: &[String],
    config: &OperatorConfig,
) -> Vec<String> {
    let spec = &build.spec;
    let names = if spec.output.push {
        spec.output.names()
    } else {
        Vec::new()
    };
    let export = exporter::cache_export(spec).map(|e| e.reference.as_str());
    let references = names
        .iter()
        .chain(import_cache)
        .map(String::as_str)
        .chain(export);
    config.builder.registry_login.hosts(references)
}

fn is_ssh(url: &str) -> bool {
    url.starts_with("ssh://") || (!url.contains("://") && url.contains('@'))
}

/// The host of an http(s) git URL as BuildKit's git source scopes credentials by it (Go's
/// `url.URL.Host`: `host[:port]`, no user info).
fn git_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// The script's git-credential environment (see [`build_script::git_auth`]): where the whole
/// Secret is mounted, the transport and, for https, the host the credential is scoped to.
fn git_credentials_env(git: &crate::api::GitSource) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let mut env = vec![env_var(GIT_SECRET_DIR_ENV, GIT_DIR)];
    if is_ssh(&git.url) {
        env.push(env_var(GIT_TRANSPORT_ENV, "ssh"));
    } else {
        env.push(env_var(GIT_TRANSPORT_ENV, "https"));
        env.push(env_var(GIT_HOST_ENV, git_host(&git.url)));
    }
    env
}

/// buildkitd flags: rootless without a process sandbox, state on the replica, GC bounded.
pub fn buildkitd_flags(gc_keep_bytes: Option<u64>) -> String {
    let mut flags = format!("--oci-worker-no-process-sandbox --root {STATE_DIR}");
    if let Some(bytes) = gc_keep_bytes {
        flags.push_str(&format!(
            " --oci-worker-gc --oci-worker-gc-keepstorage={}",
            (bytes / 1_000_000).max(1)
        ));
    }
    flags
}

/// The builder Pod of one attempt of `build`.
pub fn builder_pod(
    build: &ImageBuild,
    inputs: &BuilderInputs,
    config: &OperatorConfig,
) -> Result<Pod, BuilderError> {
    let name = build.metadata.name.clone().unwrap_or_default();
    let namespace = build.metadata.namespace.clone().unwrap_or_default();
    let spec = &build.spec;
    let mut args = vec![
        "-c".to_string(),
        build_script::script(),
        "hearth-build".to_string(),
    ];
    args.extend(buildctl_args(build, &inputs.import_cache)?);
    args.extend(proxy_build_args(build, config));

    let mut volumes = vec![
        match &inputs.state {
            StateVolume::Replica(pvc) | StateVolume::Restored { pvc, .. } => Volume {
                name: "cache".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: pvc.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            },
            StateVolume::Throwaway { .. } => Volume {
                name: "cache".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "cache".into(),
            mount_path: CACHE_MOUNT.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: WORK_DIR.into(),
            ..Default::default()
        },
    ];
    // buildkitd's configuration travels in the pod's spec (see `buildkitd_config`).
    let buildkitd_dir = format!("{WORK_DIR}/buildkitd");
    let buildkitd_config = config.buildkitd.render(&buildkitd_dir);
    let mut flags = buildkitd_flags(inputs.gc_keep_bytes);
    if let Some(rendered) = &buildkitd_config {
        flags.push_str(&format!(" --config {}", rendered.config.path));
    }
    let mut env = vec![
        env_var("BUILDKITD_FLAGS", &flags),
        env_var(WORK_DIR_ENV, WORK_DIR),
        env_var(TERMINATION_LOG_ENV, TERMINATION_LOG),
        // Every dir a build's secrets may be mounted at, and the one the script writes the git
        // Authorization header to; the script skips absent ones.
        env_var(
            REDACT_DIRS_ENV,
            &[
                SECRETS_DIR,
                GIT_DIR,
                DOCKER_CONFIG_DIR,
                frontend::SSH_DIR,
                &format!("{WORK_DIR}/{GIT_AUTH_SUBDIR}"),
            ]
            .join(" "),
        ),
    ];
    if let Some(rendered) = buildkitd_config {
        env.push(env_var(BUILDKITD_DIR_ENV, &buildkitd_dir));
        env.push(env_var(BUILDKITD_CONFIG_ENV, &rendered.config.content));
        env.extend(rendered.cas.iter().map(|(registry, ca)| {
            env_var(&format!("{BUILDKITD_CA_ENV_PREFIX}{registry}"), &ca.content)
        }));
    }
    if let Some(git) = &spec.source.git {
        env.push(env_var(build_script::GIT_URL_ENV, &git.url));
    }
    env.extend(proxy_env(config));
    // Only a replica's state is saved after the build: a throwaway volume is never pruned.
    if let (StateVolume::Replica(_), Some(prune)) = (&inputs.state, &inputs.prune) {
        env.extend(prune.env());
    }

    if !spec.secrets.is_empty() {
        let (volume, mount) = super::secret_keys_volume(
            "build-secrets",
            SECRETS_DIR,
            spec.secrets.iter().map(|s| (&s.secret_ref, s.id.as_str())),
        );
        volumes.push(volume);
        mounts.push(mount);
    }
    if let Some((volume, mount)) = frontend::ssh_keys_volume(spec) {
        volumes.push(volume);
        mounts.push(mount);
    }
    if let Some((git, secret)) = spec
        .source
        .git
        .as_ref()
        .and_then(|g| Some((g, g.secret_ref.as_ref()?)))
    {
        // The whole Secret: the script picks the credential by which keys it has.
        volumes.push(secret_volume("git-credentials", &secret.name, None));
        env.extend(git_credentials_env(git));
        mounts.push(VolumeMount {
            name: "git-credentials".into(),
            mount_path: GIT_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let docker_config = docker_config(
        spec.output
            .push_secret_ref
            .as_ref()
            .map(|s| s.name.as_str()),
        "registry-credentials",
        &login_hosts(build, &inputs.import_cache, config),
        DOCKER_CONFIG_DIR,
        config,
    );
    let mut login = None;
    if let Some(docker) = docker_config {
        volumes.extend(docker.volumes);
        mounts.push(docker.mount);
        env.push(env_var("DOCKER_CONFIG", DOCKER_CONFIG_DIR));
        login = docker.login;
    }
    if let Some(pvc) = spec.source.context.as_ref().and_then(|c| c.pvc.as_ref()) {
        volumes.push(Volume {
            name: "workspace".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "workspace".into(),
            mount_path: WORKSPACE.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    // The login first: a misconfigured identity fails the pod before a restore's minutes.
    let mut init_containers: Vec<Container> = login.into_iter().collect();
    init_containers.extend(match &inputs.state {
        StateVolume::Throwaway { seed: Some(seed) } | StateVolume::Restored { seed, .. } => {
            volumes.extend(store_volume(config));
            vec![snapshot_container(
                &SnapshotOp::Restore {
                    snapshot: seed.snapshot.clone(),
                    from: seed.cache.clone(),
                    manifest_sha256: seed.manifest_sha256.clone(),
                },
                STATE_DIR,
                &namespace,
                &seed.cache,
                config,
            )]
        }
        _ => Vec::new(),
    });
    if let Some(upload) = &spec.source.upload {
        volumes.push(Volume {
            name: "upload".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "upload".into(),
            mount_path: UPLOAD_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        // Last, so the upload window opens only once the cache is ready.
        init_containers.push(receiver_container(upload, config));
    }
    let init_containers = (!init_containers.is_empty()).then_some(init_containers);

    let resources = spec
        .resources
        .clone()
        .unwrap_or_else(|| config.builder.resources.clone());
    let mut node_selector = config.builder.node_selector.clone();
    node_selector.extend(spec.node_selector.clone());
    let mut tolerations = config.builder.tolerations.clone();
    tolerations.extend(spec.tolerations.iter().cloned());
    let cache_label = match &inputs.state {
        StateVolume::Throwaway { seed: Some(seed) } => Some(seed.cache.as_str()),
        _ => None,
    };

    // The operator's labels first: Hearth's own (which it selects its pods by) win.
    let mut pod_labels = config.builder.pod_labels.clone();
    pod_labels.extend(labels::for_build(
        &name,
        cache_label,
        contract::BUILDER_ROLE,
    ));
    let builder = &config.builder;
    let runtime_class = match spec.cache.mode {
        CacheMode::ReadOnly if !builder.read_only_runtime_class_name.is_empty() => {
            &builder.read_only_runtime_class_name
        }
        _ => &builder.runtime_class_name,
    };

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(contract::builder_pod_name(&name, inputs.attempt)),
            namespace: Some(namespace),
            labels: Some(pod_labels),
            annotations: non_empty(builder.pod_annotations.clone()),
            owner_references: Some(vec![inputs.owner.clone()]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(inputs.deadline_seconds.max(1)),
            service_account_name: some_name(&builder.service_account_name),
            // No Kubernetes API token unless the operator asks: see
            // `BuilderConfig::automount_service_account_token`.
            automount_service_account_token: Some(builder.automount_service_account_token),
            image_pull_secrets: image_pull_secrets(config),
            priority_class_name: some_name(&builder.priority_class_name),
            runtime_class_name: some_name(runtime_class),
            enable_service_links: Some(false),
            affinity: affinity(&inputs.pin),
            node_selector: non_empty(node_selector),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(1000),
                run_as_non_root: Some(true),
                fs_group: Some(1000),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                ..Default::default()
            }),
            init_containers,
            containers: vec![Container {
                name: "buildkit".into(),
                image: Some(config.builder.image.clone()),
                image_pull_policy: Some(config.builder.image_pull_policy.clone()),
                command: Some(vec!["sh".into()]),
                args: Some(args),
                env: Some(env),
                volume_mounts: Some(mounts),
                resources: Some(ResourceRequirements {
                    requests: non_empty(resources.requests),
                    limits: non_empty(resources.limits),
                    ..Default::default()
                }),
                // The script writes the message, redacted; never the kubelet's raw log tail.
                termination_message_policy: Some("File".into()),
                // What rootless BuildKit needs and no more: its own user namespace (rootlesskit,
                // newuidmap) needs unconfined seccomp and AppArmor; no privileged mode, no added
                // capabilities, not root.
                security_context: Some(SecurityContext {
                    seccomp_profile: Some(SeccompProfile {
                        type_: "Unconfined".into(),
                        ..Default::default()
                    }),
                    app_armor_profile: Some(AppArmorProfile {
                        type_: "Unconfined".into(),
                        ..Default::default()
                    }),
                    run_as_user: Some(1000),
                    run_as_group: Some(1000),
                    privileged: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The receiver init container of an upload build: `hearth receive` waits (at most the
/// source's timeout) for `hearth build` to exec `hearth receive --stdin` in it and stream the
/// context, and exits 0 once the stated tar has arrived whole, verified and unpacked.
/// Unprivileged, read-only root, no capabilities, no service account token.
pub fn receiver_container(upload: &crate::api::UploadSource, config: &OperatorConfig) -> Container {
    let timeout: std::time::Duration = upload.timeout.into();
    Container {
        name: RECEIVER_CONTAINER.into(),
        image: Some(config.builder.hearth_image.clone()),
        image_pull_policy: Some(config.builder.image_pull_policy.clone()),
        command: Some(vec!["hearth".into()]),
        args: Some(vec![
            "receive".into(),
            "--dir".into(),
            UPLOAD_DIR.into(),
            "--sha256".into(),
            upload.sha256.clone(),
            "--size".into(),
            upload.size.to_string(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs().max(1)),
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: "upload".into(),
            mount_path: UPLOAD_DIR.into(),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(unprivileged()),
        ..Default::default()
    }
}

/// Docker's predefined proxy build args (kept out of the image's history by the Dockerfile
/// frontend) from the operator's proxy settings, for `RUN` steps; a build's own win.
fn proxy_build_args(build: &ImageBuild, config: &OperatorConfig) -> Vec<String> {
    config
        .builder
        .proxy
        .vars_both_cases()
        .into_iter()
        .filter(|(name, _)| !build.spec.build_args.contains_key(name))
        .flat_map(|(name, value)| ["--opt".to_string(), format!("build-arg:{name}={value}")])
        .collect()
}

fn some_name(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| name.to_string())
}

fn secret_volume(name: &str, secret: &str, item: Option<(&str, &str)>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: item.map(|(key, path)| {
                vec![KeyToPath {
                    key: key.into(),
                    path: path.into(),
                    mode: None,
                }]
            }),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

/// The image digest from a builder container's termination message (buildctl's metadata
/// JSON, possibly cut at 4000 bytes).
pub fn digest_from_metadata(message: &str) -> Option<String> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(message) {
        if let Some(d) = value.get("containerimage.digest").and_then(|d| d.as_str()) {
            return Some(d.to_string());
        }
    }
    let at = message.find("\"containerimage.digest\"")?;
    let rest = &message[at + "\"containerimage.digest\"".len()..];
    let start = rest.find("sha256:")?;
    let digest: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
        .collect();
    (digest.len() == "sha256:".len() + 64).then_some(digest)
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
