//! The restore and save Jobs (`hearth snapshot restore|save`) that run on a replica's node with
//! its PVC, and the restore init container of throwaway (ReadOnly) builds. They run as root with
//! just the capabilities needed to read every file of a rootless buildkitd's state dir and to
//! recreate numeric owners, device nodes (overlay whiteouts) and file capabilities.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, LocalObjectReference, PersistentVolumeClaimVolumeSource,
    PodSpec, PodTemplateSpec, SeccompProfile, SecretVolumeSource, SecurityContext, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{affinity, labels, Pin};
use crate::controller::config::OperatorConfig;

/// Where a replica PVC is mounted in every Hearth pod.
pub const CACHE_MOUNT: &str = "/cache";
/// buildkitd's state dir inside the replica (a subdirectory, so the volume root can hold
/// `lost+found` and Hearth's temporary restore dirs).
pub const STATE_DIR: &str = "/cache/buildkit";
/// Where the snapshot containers of an S3 store find the namespace's store Secret, as files
/// (`HEARTH_STORE_CREDENTIALS_DIR`), mounted read-only and readable by their user only.
pub const STORE_CREDENTIALS_DIR: &str = "/run/hearth/store-credentials";
const STORE_CREDENTIALS_VOLUME: &str = "store-credentials";
/// Runs `hearth` with the container's args, its stdout into the termination message.
const RESULT_SCRIPT: &str = "hearth \"$@\" > /dev/termination-log";
/// What the snapshot jobs may do beyond an unprivileged user: read and traverse everything
/// (DAC_READ_SEARCH), restore numeric owners and modes (CHOWN, FOWNER, FSETID), recreate
/// overlay whiteouts (MKNOD) and file capabilities (SETFCAP).
const CAPABILITIES: [&str; 6] = [
    "DAC_READ_SEARCH",
    "CHOWN",
    "FOWNER",
    "FSETID",
    "MKNOD",
    "SETFCAP",
];

/// What a snapshot pod does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotOp {
    /// `hearth snapshot restore <id> <state dir> --manifest-sha256 <digest>`.
    Restore {
        /// Snapshot id (never `latest`: the planner chose one).
        snapshot: String,
        /// The BuildCache that saved the snapshot: the restore reads its store prefix
        /// (`HEARTH_CACHE`), whatever cache the replica being filled belongs to. A branch's
        /// first build restores its restore key's (main's) snapshot into the branch's replica.
        from: String,
        /// SHA-256 of the snapshot's manifest, recorded in BuildCache status when it was
        /// saved: the restore refuses any other manifest (one planted by someone who can
        /// write the store), and keeps setuid bits and file capabilities only when pinned.
        manifest_sha256: String,
    },
    /// `hearth snapshot save <state dir>`.
    Save,
    /// `hearth snapshot gc --cache C --retain N [--keep ID]... --grace G`: retention, pack
    /// collection and the cache's snapshot list.
    Gc {
        /// Snapshots kept.
        retain: i32,
        /// Snapshot ids live replicas match: never forgotten.
        keep: Vec<String>,
        /// Grace period between condemning and deleting data, in seconds.
        grace_seconds: u64,
    },
    /// `hearth snapshot forget --all`: every snapshot of the cache (deletion policy `Delete`).
    Forget,
}

impl SnapshotOp {
    /// Role label and name part of the op's Job.
    pub fn role(&self) -> &'static str {
        match self {
            SnapshotOp::Restore { .. } => "restore",
            SnapshotOp::Save => "save",
            SnapshotOp::Gc { .. } => "gc",
            SnapshotOp::Forget => "forget",
        }
    }

    /// Whether the op works on a replica's state dir (mounted from its PVC).
    fn uses_replica(&self) -> bool {
        matches!(self, SnapshotOp::Restore { .. } | SnapshotOp::Save)
    }
}

/// Everything a restore or save needs besides the operator config.
#[derive(Clone, Debug)]
pub struct SnapshotJobInputs {
    /// Namespace (tenant) of the cache; also its prefix in the store.
    pub namespace: String,
    /// Name of the BuildCache whose snapshots these are.
    pub cache: String,
    /// The ImageBuild this job works for.
    pub build: String,
    /// Build attempt (part of the job name).
    pub attempt: i32,
    /// The replica PVC.
    pub pvc: String,
    /// Node (or zone) of the replica.
    pub pin: Pin,
    /// Tolerations of the build, added to the operator's.
    pub tolerations: Vec<Toleration>,
    /// Longest the job may run.
    pub deadline_seconds: i64,
    /// The ImageBuild, as owner.
    pub owner: OwnerReference,
}

/// The container running `hearth snapshot ...` on `dir`, with the store settings in its env
/// and, for an S3 store, the namespace's store Secret mounted as files (never env or args). `cache` is the cache
/// whose snapshots a save, gc or forget works on; a restore reads its own `from`.
pub fn snapshot_container(
    op: &SnapshotOp,
    dir: &str,
    namespace: &str,
    cache: &str,
    config: &OperatorConfig,
) -> Container {
    let s = &config.snapshot;
    let mut args = vec!["snapshot".to_string()];
    match op {
        SnapshotOp::Restore {
            snapshot,
            manifest_sha256,
            ..
        } => args.extend([
            "restore".into(),
            snapshot.clone(),
            dir.to_string(),
            "--manifest-sha256".into(),
            manifest_sha256.clone(),
        ]),
        SnapshotOp::Save => args.extend(["save".into(), dir.to_string()]),
        SnapshotOp::Gc {
            retain,
            keep,
            grace_seconds,
        } => {
            args.extend([
                "gc".into(),
                "--retain".into(),
                retain.max(&1).to_string(),
                "--grace".into(),
                format!("{grace_seconds}s"),
            ]);
            for id in keep {
                args.extend(["--keep".into(), id.clone()]);
            }
        }
        SnapshotOp::Forget => args.extend(["forget".into(), "--all".into()]),
    }
    args.push("--json".into());
    let cache = match op {
        SnapshotOp::Restore { from, .. } => from.as_str(),
        _ => cache,
    };
    let mut env = vec![
        env_var("HEARTH_STORE", &s.store),
        env_var("HEARTH_NAMESPACE", namespace),
        env_var("HEARTH_CACHE", cache),
        env_var("HEARTH_LOG_FORMAT", "json"),
    ];
    if s.store.starts_with("s3://") {
        env.push(env_var("AWS_REGION", &s.s3.region));
        if !s.s3.endpoint.is_empty() {
            env.push(env_var("AWS_ENDPOINT_URL_S3", &s.s3.endpoint));
        }
        if s.s3.path_style {
            env.push(env_var("AWS_S3_FORCE_PATH_STYLE", "true"));
        }
        env.push(env_var(
            "HEARTH_STORE_CREDENTIALS_DIR",
            STORE_CREDENTIALS_DIR,
        ));
        env.push(env_var(
            "HEARTH_STORE_CREDENTIALS_SECRET",
            &s.credentials_secret,
        ));
    }
    let mut mounts = Vec::new();
    if s.store.starts_with("s3://") {
        mounts.push(VolumeMount {
            name: STORE_CREDENTIALS_VOLUME.into(),
            mount_path: STORE_CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if op.uses_replica() {
        mounts.push(VolumeMount {
            name: "cache".into(),
            mount_path: CACHE_MOUNT.into(),
            ..Default::default()
        });
    }
    if let Some(path) = s.store.strip_prefix("file://") {
        mounts.push(VolumeMount {
            name: "store".into(),
            mount_path: path.to_string(),
            ..Default::default()
        });
    }
    Container {
        name: op.role().into(),
        image: Some(config.builder.hearth_image.clone()),
        image_pull_policy: Some(config.builder.image_pull_policy.clone()),
        command: Some(result_command()),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The volume [`snapshot_container`] needs for the store: a `file://` store's RWX claim, or
/// an S3 store's credentials Secret. The Secret is required (`optional: false`): without it
/// the pod does not start, rather than falling back to the node's own cloud role. Mode 0400:
/// only the Job's user (root) reads it.
pub fn store_volume(config: &OperatorConfig) -> Option<Volume> {
    let s = &config.snapshot;
    if s.store.starts_with("file://") {
        Some(Volume {
            name: "store".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: s.file_store_claim.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        })
    } else if s.store.starts_with("s3://") {
        Some(Volume {
            name: STORE_CREDENTIALS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(s.credentials_secret.clone()),
                default_mode: Some(0o400),
                optional: Some(false),
                items: None,
            }),
            ..Default::default()
        })
    } else {
        None
    }
}

/// A restore or save Job on the replica's node with its PVC, working for a build.
pub fn snapshot_job(op: &SnapshotOp, inputs: &SnapshotJobInputs, config: &OperatorConfig) -> Job {
    let role = op.role();
    job(
        op,
        JobTarget {
            name: crate::contract::child_name(&inputs.build, role, inputs.attempt),
            labels: labels::for_build(&inputs.build, Some(&inputs.cache), role),
            namespace: &inputs.namespace,
            cache: &inputs.cache,
            pvc: Some(&inputs.pvc),
            pin: &inputs.pin,
            tolerations: &inputs.tolerations,
            deadline_seconds: inputs.deadline_seconds,
            owner: &inputs.owner,
        },
        config,
    )
}

/// A maintenance Job of a BuildCache (save before eviction, gc, forget), owned by the cache.
#[derive(Clone, Debug)]
pub struct CacheJobInputs {
    /// Namespace of the cache.
    pub namespace: String,
    /// The BuildCache.
    pub cache: String,
    /// Sequence number of the operation (part of the Job name).
    pub seq: i32,
    /// The replica PVC and where it lives, for a save.
    pub replica: Option<(String, Pin)>,
    /// Longest the Job may run.
    pub deadline_seconds: i64,
    /// The BuildCache, as owner.
    pub owner: OwnerReference,
}

/// The Job of a cache maintenance operation.
pub fn cache_job(op: &SnapshotOp, inputs: &CacheJobInputs, config: &OperatorConfig) -> Job {
    let role = op.role();
    let mut labels = BTreeMap::new();
    labels.insert(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string());
    labels.insert(
        labels::CACHE.to_string(),
        labels::truncate_label(&inputs.cache),
    );
    labels.insert(labels::ROLE.to_string(), role.to_string());
    let (pvc, pin) = match &inputs.replica {
        Some((pvc, pin)) => (Some(pvc.as_str()), pin.clone()),
        None => (None, Pin::Anywhere),
    };
    job(
        op,
        JobTarget {
            name: crate::contract::child_name(&inputs.cache, role, inputs.seq),
            labels,
            namespace: &inputs.namespace,
            cache: &inputs.cache,
            pvc,
            pin: &pin,
            tolerations: &[],
            deadline_seconds: inputs.deadline_seconds,
            owner: &inputs.owner,
        },
        config,
    )
}

/// Where and for whom a snapshot Job runs.
struct JobTarget<'a> {
    name: String,
    labels: BTreeMap<String, String>,
    namespace: &'a str,
    cache: &'a str,
    pvc: Option<&'a str>,
    pin: &'a Pin,
    tolerations: &'a [Toleration],
    deadline_seconds: i64,
    owner: &'a OwnerReference,
}

fn job(op: &SnapshotOp, t: JobTarget<'_>, config: &OperatorConfig) -> Job {
    let mut volumes: Vec<Volume> = t
        .pvc
        .filter(|_| op.uses_replica())
        .map(|pvc| Volume {
            name: "cache".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.to_string(),
                read_only: Some(false),
            }),
            ..Default::default()
        })
        .into_iter()
        .collect();
    volumes.extend(store_volume(config));
    let mut tolerations = config.builder.tolerations.clone();
    tolerations.extend(t.tolerations.iter().cloned());
    let pod = PodSpec {
        affinity: affinity(t.pin),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        containers: vec![snapshot_container(
            op,
            STATE_DIR,
            t.namespace,
            t.cache,
            config,
        )],
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..Default::default()
    };
    let metadata = ObjectMeta {
        name: Some(t.name),
        namespace: Some(t.namespace.to_string()),
        labels: Some(t.labels),
        owner_references: Some(vec![t.owner.clone()]),
        ..Default::default()
    };
    hearth_job(metadata, t.deadline_seconds, pod, config)
}

/// A Job of one `hearth` pod, named, labelled and owned by `metadata` (its pod labelled the
/// same): retried twice, at most `deadline_seconds` (a minute at least), kept a day after it
/// ends. The pod never restarts in place, has no API token nor service links, pulls with the
/// operator's image pull secrets and runs on the builder's `nodeSelector`.
pub(crate) fn hearth_job(
    metadata: ObjectMeta,
    deadline_seconds: i64,
    pod: PodSpec,
    config: &OperatorConfig,
) -> Job {
    Job {
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            active_deadline_seconds: Some(deadline_seconds.max(60)),
            ttl_seconds_after_finished: Some(86_400),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: metadata.labels.clone(),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    image_pull_secrets: image_pull_secrets(config),
                    enable_service_links: Some(false),
                    node_selector: non_empty(config.builder.node_selector.clone()),
                    ..pod
                }),
            },
            ..Default::default()
        }),
        metadata,
        ..Default::default()
    }
}

/// The command of a Job container running `hearth` with its args: the command's JSON result
/// (stdout) becomes the termination message the controller reads; its logs go to stderr, and
/// to the message when it fails.
pub(crate) fn result_command() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        RESULT_SCRIPT.into(),
        "hearth-job".into(),
    ]
}

/// The operator's image pull secrets, for builder pods and snapshot jobs.
pub(crate) fn image_pull_secrets(config: &OperatorConfig) -> Option<Vec<LocalObjectReference>> {
    let secrets = &config.builder.image_pull_secrets;
    (!secrets.is_empty()).then(|| {
        secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}

pub(crate) fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

/// The operator's proxy settings as env, upper- and lower-case names.
pub(crate) fn proxy_env(config: &OperatorConfig) -> impl Iterator<Item = EnvVar> + '_ {
    config
        .builder
        .proxy
        .vars_both_cases()
        .into_iter()
        .map(|(name, value)| env_var(&name, value))
}

pub(crate) fn non_empty<V>(map: BTreeMap<String, V>) -> Option<BTreeMap<String, V>> {
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pinned restore of main's snapshot `s-1`.
    fn restore() -> SnapshotOp {
        SnapshotOp::Restore {
            snapshot: "s-1".into(),
            from: "shop-main".into(),
            manifest_sha256: "ab".repeat(32),
        }
    }

    fn inputs() -> SnapshotJobInputs {
        SnapshotJobInputs {
            namespace: "shop".into(),
            cache: "shop-main".into(),
            build: "api-42".into(),
            attempt: 1,
            pvc: "shop-main-r0".into(),
            pin: Pin::Node("node-3".into()),
            tolerations: vec![],
            deadline_seconds: 1800,
            owner: OwnerReference {
                api_version: "hearth.dev/v1alpha1".into(),
                kind: "ImageBuild".into(),
                name: "api-42".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    fn s3_config() -> OperatorConfig {
        let mut c = OperatorConfig::default();
        c.snapshot.store = "s3://caches/prod".into();
        c.snapshot.s3.endpoint = "http://minio.minio:9000".into();
        c.snapshot.s3.path_style = true;
        c
    }

    #[test]
    fn restore_job_runs_on_the_replica_node_with_its_pvc() {
        let job = snapshot_job(&restore(), &inputs(), &s3_config());
        assert_eq!(job.metadata.name.as_deref(), Some("api-42-restore-1"));
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let terms = &pod
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        let req = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (req.key.as_str(), req.values.as_ref().unwrap()[0].as_str()),
            ("kubernetes.io/hostname", "node-3")
        );
        assert!(pod.node_name.is_none(), "never bypass the scheduler");
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "snapshot",
                "restore",
                "s-1",
                STATE_DIR,
                "--manifest-sha256",
                &"ab".repeat(32),
                "--json"
            ],
            "the restore is pinned to the manifest digest its save reported"
        );
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap()))
            .collect();
        assert_eq!(env["HEARTH_NAMESPACE"], "shop");
        assert_eq!(env["HEARTH_CACHE"], "shop-main");
        assert_eq!(env["AWS_ENDPOINT_URL_S3"], "http://minio.minio:9000");
        assert_eq!(env["AWS_S3_FORCE_PATH_STYLE"], "true");
        assert_eq!(
            pod.volumes.as_ref().unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "shop-main-r0"
        );
    }

    /// Every way a container can get a Secret's value into its environment.
    fn env_holds_no_credentials(c: &Container) {
        assert!(c.env_from.is_none(), "no envFrom: {:?}", c.env_from);
        for var in c.env.iter().flatten() {
            assert!(
                var.value_from.is_none()
                    && !var.name.starts_with("AWS_ACCESS_KEY")
                    && !var.name.starts_with("AWS_SECRET")
                    && !var.name.starts_with("AWS_SESSION"),
                "{var:?}"
            );
        }
        let args = c.args.as_ref().unwrap().join(" ");
        assert!(
            !args.contains("hearth-store") && !args.contains("AWS_"),
            "{args}"
        );
    }

    #[test]
    fn s3_credentials_are_the_required_secret_mounted_read_only_as_files() {
        let jobs = [
            snapshot_job(&SnapshotOp::Save, &inputs(), &s3_config()),
            snapshot_job(&restore(), &inputs(), &s3_config()),
        ];
        for job in jobs {
            let pod = job.spec.unwrap().template.spec.unwrap();
            let c = &pod.containers[0];
            env_holds_no_credentials(c);
            let env: BTreeMap<_, _> = c
                .env
                .iter()
                .flatten()
                .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
                .collect();
            assert_eq!(env["HEARTH_STORE_CREDENTIALS_DIR"], STORE_CREDENTIALS_DIR);
            assert_eq!(env["HEARTH_STORE_CREDENTIALS_SECRET"], "hearth-store");
            let mount = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == STORE_CREDENTIALS_DIR)
                .expect("credentials mounted");
            assert_eq!(mount.read_only, Some(true));
            let volume = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .expect("credentials volume");
            let secret = volume.secret.as_ref().expect("a Secret volume");
            assert_eq!(secret.secret_name.as_deref(), Some("hearth-store"));
            assert_eq!(
                secret.default_mode,
                Some(0o400),
                "only the Job's user reads it"
            );
            assert_eq!(
                secret.optional,
                Some(false),
                "a missing Secret keeps the pod from starting, never the node's role"
            );
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.run_as_user, Some(0), "mode 0400 is for this user");
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
                &["ALL"]
            );
        }
    }

    #[test]
    fn snapshot_jobs_take_the_builders_image_pull_secrets() {
        let mut config = s3_config();
        let spec = |config: &OperatorConfig| {
            snapshot_job(&restore(), &inputs(), config)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        assert_eq!(spec(&config).image_pull_secrets, None);
        config.builder.image_pull_secrets = vec!["mirror-pull".into()];
        assert_eq!(
            spec(&config).image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "mirror-pull".into()
            }])
        );
    }

    #[test]
    fn file_store_mounts_the_namespace_claim_at_the_store_path() {
        let mut c = OperatorConfig::default();
        c.snapshot.store = "file:///srv/hearth".into();
        c.snapshot.file_store_claim = "hearth-store".into();
        let job = snapshot_job(&SnapshotOp::Save, &inputs(), &c);
        let pod = job.spec.unwrap().template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.name == "store" && m.mount_path == "/srv/hearth"));
        let volumes = pod.volumes.unwrap();
        assert!(volumes.iter().any(|v| v
            .persistent_volume_claim
            .as_ref()
            .is_some_and(|p| p.claim_name == "hearth-store")));
        assert!(
            volumes.iter().all(|v| v.secret.is_none()),
            "no credentials Secret for a file store: {volumes:?}"
        );
        let c = &pod.containers[0];
        env_holds_no_credentials(c);
        assert!(
            !format!("{:?}", c.env).contains("CREDENTIALS"),
            "{:?}",
            c.env
        );
    }
}
