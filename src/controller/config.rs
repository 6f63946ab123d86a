//! The operator's configuration: a YAML file (from the chart's ConfigMap) with defaults for
//! everything, so `hearth controller` runs with no file at all against a test cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::Duration;
use serde::{Deserialize, Serialize};

use crate::api::BuildResources;

/// Default rootless BuildKit image of builder pods.
pub const DEFAULT_BUILDER_IMAGE: &str = "docker.io/moby/buildkit:v0.25.1-rootless";
/// Default image of the restore and save jobs (this project's own image).
pub const DEFAULT_HEARTH_IMAGE: &str =
    concat!("ghcr.io/hearth-dev/hearth:", env!("CARGO_PKG_VERSION"));

/// The whole operator configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct OperatorConfig {
    /// Builder pods and jobs.
    pub builder: BuilderConfig,
    /// Replica volumes and budgets.
    pub cache: CacheDefaults,
    /// The snapshot store and policy defaults.
    pub snapshot: SnapshotDefaults,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Planner tunables.
    pub planner: PlannerSettings,
    /// Tekton integration (the custom task reconciler).
    pub tekton: TektonSettings,
    /// When finished ImageBuilds (and their pods) are deleted.
    pub retention: RetentionSettings,
}

/// When finished ImageBuilds are deleted, with their pods (owned by them, they go with them):
/// after a TTL (as a Job's `ttlSecondsAfterFinished`), and beyond per-namespace history limits
/// (as a CronJob's or kpack's). Failed and Cancelled builds count as failed. On by default: a
/// namespace where `hearth build` creates one ImageBuild per CI job would otherwise fill its
/// quota. `null` turns a TTL or a limit off.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Delete a succeeded build this long after it ended (a build's
    /// `spec.retention.ttlAfterSucceeded` overrides it).
    pub ttl_after_succeeded: Option<Duration>,
    /// Delete a failed or cancelled build this long after it ended (a build's
    /// `spec.retention.ttlAfterFailed` overrides it). Longer than for succeeded builds by
    /// default: failures are what people come back to read.
    pub ttl_after_failed: Option<Duration>,
    /// Succeeded builds kept per namespace, newest first; older ones are deleted.
    pub succeeded_limit: Option<u32>,
    /// Failed and cancelled builds kept per namespace, newest first.
    pub failed_limit: Option<u32>,
    /// No build is deleted sooner than this after it ended, whatever its TTL or the limits:
    /// the time `hearth wait`, the Tekton custom task and Argo's resource template take to read
    /// its outcome.
    pub min_age: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let hours = |h: u64| Duration::from(std::time::Duration::from_secs(h * 3600));
        RetentionSettings {
            ttl_after_succeeded: Some(hours(24)),
            ttl_after_failed: Some(hours(72)),
            succeeded_limit: Some(100),
            failed_limit: Some(100),
            min_age: Duration::from(std::time::Duration::from_secs(600)),
        }
    }
}

/// Tekton integration. Off by default: the reconciler watches `tekton.dev/v1beta1`
/// CustomRuns, which exist only where Tekton Pipelines is installed, and needs the chart's
/// extra RBAC rules (`tekton.enabled` in the chart turns both on).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TektonSettings {
    /// Reconcile CustomRuns whose `customRef` is `hearth.dev/v1alpha1` `ImageBuild`.
    pub enabled: bool,
}

/// What the planner assumes about the cluster until it has measured better.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PlannerSettings {
    /// Builds one node runs at once.
    pub builds_per_node: u32,
    /// Restore throughput from the store, bytes per second.
    pub store_bytes_per_second: f64,
    /// Fixed cost of a restore: job start, volume provisioning, manifest read.
    pub restore_overhead_seconds: f64,
    /// How long a busy replica is expected to stay busy when nothing better is known.
    pub expected_busy_seconds: f64,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        PlannerSettings {
            builds_per_node: 2,
            store_bytes_per_second: 200e6,
            restore_overhead_seconds: 15.0,
            expected_busy_seconds: 120.0,
        }
    }
}

/// Builder pods and jobs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct BuilderConfig {
    /// Rootless BuildKit image (buildkitd and buildctl).
    pub image: String,
    /// Image of the restore/save jobs (`hearth snapshot ...`).
    pub hearth_image: String,
    /// Pull policy of both images.
    pub image_pull_policy: String,
    /// Builder resources when an ImageBuild sets none.
    pub resources: BuildResources,
    /// Node labels every build's node must have, merged with the build's own selector.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations added to every builder pod and job.
    pub tolerations: Vec<Toleration>,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        let mut requests = BTreeMap::new();
        requests.insert("cpu".to_string(), Quantity("1".into()));
        requests.insert("memory".to_string(), Quantity("2Gi".into()));
        BuilderConfig {
            image: DEFAULT_BUILDER_IMAGE.to_string(),
            hearth_image: DEFAULT_HEARTH_IMAGE.to_string(),
            image_pull_policy: "IfNotPresent".to_string(),
            resources: BuildResources {
                requests,
                limits: BTreeMap::new(),
            },
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

/// Replica volumes and budgets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CacheDefaults {
    /// StorageClass of replica PVCs; empty means the cluster default.
    pub storage_class_name: String,
    /// Replica size when a BuildCache is created for a new key.
    pub size: Quantity,
    /// Per-node cache budget (node annotation `hearth.dev/cache-budget` overrides it).
    pub node_budget: Quantity,
    /// Replicas per auto-created BuildCache.
    pub max_replicas: i32,
}

impl Default for CacheDefaults {
    fn default() -> Self {
        CacheDefaults {
            storage_class_name: String::new(),
            size: Quantity("50Gi".into()),
            node_budget: Quantity("200Gi".into()),
            max_replicas: 2,
        }
    }
}

/// The snapshot store and policy defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SnapshotDefaults {
    /// `s3://bucket/prefix` or `file:///path`; empty disables snapshots (replicas stay hot
    /// on their node but cannot follow a build elsewhere).
    pub store: String,
    /// Secret, in each build's namespace, with the store credentials
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`).
    pub credentials_secret: String,
    /// For `file://` stores: a ReadWriteMany PVC of this name in each build namespace,
    /// mounted at the store path in restore/save jobs.
    pub file_store_claim: String,
    /// S3 connection details.
    pub s3: S3Settings,
    /// Save after every N ReadWrite builds.
    pub every: i32,
    /// Save at most once per interval.
    pub min_interval: Duration,
    /// Snapshots kept per key.
    pub retain: i32,
    /// How often each cache's gc Job runs (retention, data collection, listing the store's
    /// snapshots into status); it also runs after a save leaves more than `retain`.
    pub gc_interval: Duration,
    /// Grace period between condemning unreferenced data and deleting it; longer than any save.
    pub gc_grace: Duration,
    /// With `deletionPolicy: Delete`, how long a deleted BuildCache waits for its snapshots
    /// to be removed (a store that stays unreachable) before it goes anyway, leaving them.
    pub delete_timeout: Duration,
}

impl Default for SnapshotDefaults {
    fn default() -> Self {
        SnapshotDefaults {
            store: String::new(),
            credentials_secret: "hearth-store".to_string(),
            file_store_claim: String::new(),
            s3: S3Settings::default(),
            every: 1,
            min_interval: Duration::from(std::time::Duration::from_secs(600)),
            retain: 3,
            gc_interval: Duration::from(std::time::Duration::from_secs(6 * 3600)),
            gc_grace: Duration::from(std::time::Duration::from_secs(3600)),
            delete_timeout: Duration::from(std::time::Duration::from_secs(600)),
        }
    }
}

/// S3 connection details passed to the jobs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct S3Settings {
    /// Custom endpoint (MinIO, Ceph RGW, R2); empty for AWS.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Path-style addressing (MinIO and most S3-compatible stores).
    pub path_style: bool,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: String::new(),
            region: "us-east-1".to_string(),
            path_style: false,
        }
    }
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading operator config {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or has an unknown or mistyped key.
    #[error("operator config {path}: {source}")]
    Parse {
        /// The path.
        path: String,
        /// Why, with the location and field.
        source: serde_yaml::Error,
    },
    /// A value is out of range.
    #[error("operator config {path}: {field}: {expected}")]
    Invalid {
        /// The path.
        path: String,
        /// The field.
        field: &'static str,
        /// What was expected.
        expected: String,
    },
}

impl OperatorConfig {
    /// Reads and checks a config file.
    pub fn load(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks config text (`origin` names it in errors).
    pub fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let config: OperatorConfig = if text.trim().is_empty() {
            OperatorConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
                path: origin.into(),
                source,
            })?
        };
        config
            .check()
            .map_err(|(field, expected)| ConfigError::Invalid {
                path: origin.into(),
                field,
                expected,
            })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let s = &self.snapshot;
        if !(s.store.is_empty() || s.store.starts_with("s3://") || s.store.starts_with("file:///"))
        {
            return Err((
                "snapshot.store",
                format!(
                    "expected s3://bucket/prefix, file:///path or empty, got {:?}",
                    s.store
                ),
            ));
        }
        if s.store.starts_with("file://") && s.file_store_claim.is_empty() {
            return Err((
                "snapshot.fileStoreClaim",
                "a file:// store needs the RWX claim to mount in each namespace".into(),
            ));
        }
        if s.store.starts_with("s3://") && s.credentials_secret.is_empty() {
            return Err((
                "snapshot.credentialsSecret",
                "an s3:// store needs the name of the Secret with its credentials in each build namespace (the snapshot Jobs never fall back to the node's cloud role)".into(),
            ));
        }
        if s.every < 1 {
            return Err((
                "snapshot.every",
                format!("expected at least 1, got {}", s.every),
            ));
        }
        if s.retain < 1 {
            return Err((
                "snapshot.retain",
                format!("expected at least 1, got {}", s.retain),
            ));
        }
        if self.cache.max_replicas < 1 {
            return Err((
                "cache.maxReplicas",
                format!("expected at least 1, got {}", self.cache.max_replicas),
            ));
        }
        if self.builder.image.is_empty() || self.builder.hearth_image.is_empty() {
            return Err((
                "builder.image",
                "builder.image and builder.hearthImage must be set".into(),
            ));
        }
        Ok(())
    }

    /// Whether snapshots are configured at all.
    pub fn snapshots_enabled(&self) -> bool {
        !self.snapshot.store.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = OperatorConfig::parse("x", "").unwrap();
        assert_eq!(c, OperatorConfig::default());
        assert!(!c.snapshots_enabled());
        assert!(
            !c.tekton.enabled,
            "the Tekton custom task is off unless enabled"
        );
        let r = &c.retention;
        let ttl = |d: Option<Duration>| d.map(std::time::Duration::from).unwrap_or_default();
        assert!(
            ttl(r.ttl_after_failed) > ttl(r.ttl_after_succeeded)
                && ttl(r.ttl_after_succeeded) > std::time::Duration::from(r.min_age),
            "retention is on by default, keeps failed builds longer, and never below minAge: {r:?}"
        );
        assert!(r.succeeded_limit.is_some() && r.failed_limit.is_some());
    }

    #[test]
    fn chart_shaped_config_parses() {
        let text = r#"
builder:
  image: docker.io/moby/buildkit:v0.25.1-rootless
  hearthImage: ghcr.io/hearth-dev/hearth:0.1.0
  resources: {requests: {cpu: "2"}}
cache: {storageClassName: local-path, size: 20Gi, nodeBudget: 100Gi, maxReplicas: 3}
snapshot:
  store: s3://caches/prod
  s3: {endpoint: "http://minio.minio:9000", pathStyle: true}
  minInterval: 5m
namespaces: [shop]
tekton: {enabled: true}
retention: {ttlAfterSucceeded: 2h, failedLimit: null, minAge: 30s}
"#;
        let c = OperatorConfig::parse("config.yaml", text).unwrap();
        assert_eq!(c.cache.max_replicas, 3);
        assert!(c.snapshot.s3.path_style);
        assert_eq!(c.snapshot.credentials_secret, "hearth-store");
        assert!(c.tekton.enabled);
        let r = &c.retention;
        assert_eq!(
            r.ttl_after_succeeded.map(std::time::Duration::from),
            Some(std::time::Duration::from_secs(7200))
        );
        assert_eq!(r.failed_limit, None, "null turns a limit off");
        assert_eq!(r.succeeded_limit, Some(100), "absent keeps the default");
        assert_eq!(
            std::time::Duration::from(r.min_age),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            std::time::Duration::from(c.snapshot.min_interval),
            std::time::Duration::from_secs(300)
        );
    }

    #[test]
    fn the_charts_default_config_parses_with_the_same_retention_defaults() {
        let manifest = include_str!("../../config/install.yaml");
        let doc = manifest
            .split("\n---")
            .find(|d| d.contains("config.yaml: |"))
            .expect("the ConfigMap");
        let map: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
        let text = map["data"]["config.yaml"].as_str().unwrap();
        let c = OperatorConfig::parse("config/install.yaml", text).unwrap();
        assert_eq!(c.retention, RetentionSettings::default());
        let off = "retention: {ttlAfterSucceeded: null, succeededLimit: null, failedLimit: 0}";
        let r = OperatorConfig::parse("c.yaml", off).unwrap().retention;
        assert_eq!(
            (r.ttl_after_succeeded, r.succeeded_limit, r.failed_limit),
            (None, None, Some(0))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = OperatorConfig::parse("c.yaml", "snapshot: {store: ftp://x}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("snapshot.store") && err.contains("ftp://x"),
            "{err}"
        );
        let err = OperatorConfig::parse("c.yaml", "cache: {maxReplica: 3}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("maxReplica"), "{err}");
        let err = OperatorConfig::parse("c.yaml", "snapshot: {store: file:///nfs}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("snapshot.fileStoreClaim"), "{err}");
        let err = OperatorConfig::parse(
            "c.yaml",
            "snapshot: {store: s3://b/p, credentialsSecret: \"\"}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("snapshot.credentialsSecret"), "{err}");
    }
}
