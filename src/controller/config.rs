//! The operator's configuration: a YAML file (from the chart's ConfigMap) with defaults for
//! everything, so `hearth controller` runs with no file at all against a test cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::Duration;
use serde::{Deserialize, Serialize};

use super::buildkitd_config::BuildkitdSettings;
use crate::api::BuildResources;
use crate::registry_login::hosts::{self, Provider};

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
    /// buildkitd's configuration in builder pods (registry mirrors, plain HTTP, CAs).
    pub buildkitd: BuildkitdSettings,
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
    /// Fixed cost of a clone (`cache.cloneStorageClasses`): provisioning a volume from
    /// another, which copy-on-write storage does without moving the bytes.
    pub clone_overhead_seconds: f64,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        PlannerSettings {
            builds_per_node: 2,
            store_bytes_per_second: 200e6,
            restore_overhead_seconds: 15.0,
            expected_busy_seconds: 120.0,
            clone_overhead_seconds: 5.0,
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
    /// ServiceAccount of builder pods, in each build namespace, for workload identity (an
    /// IRSA role to push to ECR, a GKE Workload Identity binding); empty: the namespace's
    /// `default`.
    pub service_account_name: String,
    /// Mount the ServiceAccount's Kubernetes API token into builder pods. Off: a build needs
    /// no API access, and workload identity does not use this token (IRSA and EKS Pod Identity
    /// inject their own projected token, GKE answers from the node's metadata server). Turn on
    /// only for an identity system that reads the standard token path.
    pub automount_service_account_token: bool,
    /// Image pull secrets (Secret names, which must exist in each build namespace) of builder
    /// pods and snapshot jobs.
    pub image_pull_secrets: Vec<String>,
    /// Labels added to builder pods (Hearth's own `hearth.dev/*` and `managed-by` labels
    /// cannot be set here).
    pub pod_labels: BTreeMap<String, String>,
    /// Annotations added to builder pods.
    pub pod_annotations: BTreeMap<String, String>,
    /// PriorityClass of builder pods; empty: the cluster default.
    pub priority_class_name: String,
    /// RuntimeClass of builder pods; empty: the node's default runtime. The runtime must let
    /// rootless BuildKit make user namespaces (Kata Containers does).
    pub runtime_class_name: String,
    /// RuntimeClass of `ReadOnly` builds (untrusted ones, e.g. fork pull requests), to sandbox
    /// them apart from trusted builds; empty: `runtimeClassName`.
    pub read_only_runtime_class_name: String,
    /// Proxy settings of builder pods.
    pub proxy: ProxySettings,
    /// Architecture (`kubernetes.io/arch`) of builds that name no platform, and of nodes
    /// without that label. Caches are scoped to an architecture (docs/planner.md).
    pub default_arch: String,
    /// Registry credentials from the builder pod's cloud identity (`hearth registry-login` in
    /// an init container), for the registries a build pushes to and caches in.
    pub registry_login: RegistryLoginSettings,
}

/// Registry credentials from the cloud identity of builder pods and index Jobs (the
/// ServiceAccount of `serviceAccountName`): before buildctl runs, an init container asks each
/// provider for a short-lived token and writes it, merged over the push Secret's config, as
/// buildctl's `config.json`. No credential helper in the builder image. Off by default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RegistryLoginSettings {
    /// Providers to log in with: `ecr` (IRSA, EKS Pod Identity), `gcp` (GKE Workload
    /// Identity). A build logs in to each registry host of its output names and registry
    /// cache refs that one of them serves. Empty: off.
    pub providers: Vec<Provider>,
    /// More registry hosts to log in to for every build, such as the one private base images
    /// come from; each must be served by one of `providers`.
    pub registries: Vec<String>,
}

impl RegistryLoginSettings {
    /// The hosts a build whose image references are `references` logs in to: those the
    /// providers serve, and `registries`. Empty when login is off.
    pub fn hosts<'a>(&'a self, references: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let of_build = references.into_iter().map(hosts::registry_host);
        let extra = self.registries.iter().map(String::as_str);
        hosts::login_hosts(of_build.chain(extra), &self.providers)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let mut providers = self.providers.clone();
        providers.sort();
        providers.dedup();
        if providers.len() != self.providers.len() {
            return Err((
                "builder.registryLogin.providers",
                "expected each provider at most once".into(),
            ));
        }
        for host in &self.registries {
            let served =
                hosts::classify(host).is_some_and(|r| self.providers.contains(&r.provider()));
            if !served {
                return Err((
                    "builder.registryLogin.registries",
                    format!("{host:?} is not a registry host of the providers {:?} (ecr: <account>.dkr.ecr.<region>.amazonaws.com; gcp: gcr.io, <region>.gcr.io, <location>-docker.pkg.dev)", self.providers.iter().map(|p| p.as_str()).collect::<Vec<_>>()),
                ));
            }
        }
        Ok(())
    }
}

/// Proxy settings of builder pods: buildkitd (pulls, pushes, https contexts) and git read them
/// from the environment (upper and lower case are both set: curl, under git, reads only
/// `http_proxy` in lower case), and `RUN` steps get them as Docker's predefined proxy build
/// args, which stay out of the image's history, unless the build sets its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ProxySettings {
    /// `HTTP_PROXY`.
    pub http_proxy: String,
    /// `HTTPS_PROXY`.
    pub https_proxy: String,
    /// `NO_PROXY`: hosts, domains and CIDRs reached directly, comma-separated.
    pub no_proxy: String,
}

impl ProxySettings {
    /// The set variables, upper-case names, in a fixed order.
    pub fn vars(&self) -> Vec<(&'static str, &str)> {
        [
            ("HTTP_PROXY", self.http_proxy.as_str()),
            ("HTTPS_PROXY", self.https_proxy.as_str()),
            ("NO_PROXY", self.no_proxy.as_str()),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .collect()
    }

    /// [`ProxySettings::vars`], each under its upper- and lower-case name (curl, under git,
    /// reads only `http_proxy` in lower case).
    pub fn vars_both_cases(&self) -> Vec<(String, &str)> {
        self.vars()
            .into_iter()
            .flat_map(|(name, value)| {
                [
                    (name.to_string(), value),
                    (name.to_ascii_lowercase(), value),
                ]
            })
            .collect()
    }
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
            service_account_name: String::new(),
            automount_service_account_token: false,
            image_pull_secrets: Vec::new(),
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            priority_class_name: String::new(),
            runtime_class_name: String::new(),
            read_only_runtime_class_name: String::new(),
            proxy: ProxySettings::default(),
            default_arch: "amd64".to_string(),
            registry_login: RegistryLoginSettings::default(),
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
    /// StorageClasses whose CSI driver can clone a volume (the `CLONE_VOLUME` capability: a
    /// PVC whose `dataSource` is another PVC of the class). A build's new replica is then
    /// cloned from a replica of its key or a restore key on the chosen node instead of
    /// restored from the store. Kubernetes has no API that says so: list them here. `[]`
    /// (default): never clone.
    pub clone_storage_classes: Vec<String>,
    /// How long a clone's PVC may stay unbound before the build gives up on the clone,
    /// deletes it and restores instead.
    pub clone_bind_timeout: Duration,
}

impl Default for CacheDefaults {
    fn default() -> Self {
        CacheDefaults {
            storage_class_name: String::new(),
            size: Quantity("50Gi".into()),
            node_budget: Quantity("200Gi".into()),
            max_replicas: 2,
            clone_storage_classes: Vec::new(),
            clone_bind_timeout: Duration::from(std::time::Duration::from_secs(120)),
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

impl BuilderConfig {
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !crate::api::keys::is_arch(&self.default_arch) {
            return Err((
                "builder.defaultArch",
                format!(
                    "expected a kubernetes.io/arch value such as amd64 or arm64, got {:?}",
                    self.default_arch
                ),
            ));
        }
        let named = [
            ("builder.serviceAccountName", &self.service_account_name),
            ("builder.priorityClassName", &self.priority_class_name),
            ("builder.runtimeClassName", &self.runtime_class_name),
            (
                "builder.readOnlyRuntimeClassName",
                &self.read_only_runtime_class_name,
            ),
        ];
        for (field, name) in named {
            if !name.is_empty() && !is_dns_subdomain(name) {
                return Err((field, format!("expected a Kubernetes object name (lower-case letters, digits, '-' and '.'), got {name:?}")));
            }
        }
        if let Some(name) = self
            .image_pull_secrets
            .iter()
            .find(|n| !is_dns_subdomain(n))
        {
            return Err((
                "builder.imagePullSecrets",
                format!("expected Secret names, got {name:?}"),
            ));
        }
        for (key, value) in &self.pod_labels {
            if !is_qualified_name(key) || !is_label_value(value) {
                return Err(("builder.podLabels", format!("expected valid label keys and values (values at most 63 letters, digits, '-', '_', '.'), got {key:?}: {value:?}")));
            }
            if key.starts_with("hearth.dev/")
                || key == crate::controller::builders::labels::MANAGED_BY
            {
                return Err((
                    "builder.podLabels",
                    format!("{key:?} is Hearth's own label (it finds its pods by it)"),
                ));
            }
        }
        if let Some(key) = self.pod_annotations.keys().find(|k| !is_qualified_name(k)) {
            return Err((
                "builder.podAnnotations",
                format!("expected valid annotation keys, got {key:?}"),
            ));
        }
        self.registry_login.check()?;
        for (name, value) in self.proxy.vars() {
            if value.chars().any(char::is_whitespace) {
                return Err((
                    "builder.proxy",
                    format!("{name} must have no whitespace, got {value:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// A DNS subdomain (RFC 1123), as most Kubernetes object names are.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// A label value: at most 63 letters, digits, `-`, `_` and `.`, starting and ending with an
/// alphanumeric; or empty.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
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
        if let Some(bad) = self
            .cache
            .clone_storage_classes
            .iter()
            .find(|c| !is_dns_subdomain(c))
        {
            return Err((
                "cache.cloneStorageClasses",
                format!("expected StorageClass names (lower-case letters, digits, '-' and '.'), got {bad:?}"),
            ));
        }
        let overhead = self.planner.clone_overhead_seconds;
        if !(overhead.is_finite() && overhead >= 0.0) {
            return Err((
                "planner.cloneOverheadSeconds",
                format!("expected a number of seconds, 0 or more, got {overhead}"),
            ));
        }
        self.builder.check()?;
        self.buildkitd
            .check()
            .map_err(|expected| ("buildkitd", expected))
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
    fn clone_settings_are_read_and_checked() {
        let c = OperatorConfig::parse(
            "x",
            "cache: {cloneStorageClasses: [topolvm-thin], cloneBindTimeout: 30s}\nplanner: {cloneOverheadSeconds: 2}",
        )
        .unwrap();
        assert_eq!(c.cache.clone_storage_classes, vec!["topolvm-thin"]);
        assert_eq!(
            std::time::Duration::from(c.cache.clone_bind_timeout).as_secs(),
            30
        );
        assert_eq!(c.planner.clone_overhead_seconds, 2.0);
        assert!(OperatorConfig::default()
            .cache
            .clone_storage_classes
            .is_empty());
        let err = OperatorConfig::parse("c.yaml", "cache: {cloneStorageClasses: [Fast_SSD]}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache.cloneStorageClasses") && err.contains("Fast_SSD"),
            "{err}"
        );
        let err = OperatorConfig::parse("c.yaml", "planner: {cloneOverheadSeconds: -1}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("planner.cloneOverheadSeconds"), "{err}");
    }

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
        let err = OperatorConfig::parse("c.yaml", "buildkitd: {registries: [{host: 'http://r'}]}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml: buildkitd: registries[0].host: expected a registry host"),
            "{err}"
        );
        let err = OperatorConfig::parse("c.yaml", "builder: {defaultArch: linux/arm64}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("builder.defaultArch") && err.contains("linux/arm64"),
            "{err}"
        );
        let arm = OperatorConfig::parse("c.yaml", "builder: {defaultArch: arm64}").unwrap();
        assert_eq!(arm.builder.default_arch, "arm64");
    }

    #[test]
    fn builder_pod_settings_parse_and_bad_ones_name_the_field() {
        let text = r#"
builder:
  serviceAccountName: builder
  imagePullSecrets: [mirror-pull]
  podLabels: {team: platform, example.com/cost-center: "42"}
  podAnnotations: {cluster-autoscaler.kubernetes.io/safe-to-evict: "false"}
  priorityClassName: builds
  runtimeClassName: runc
  readOnlyRuntimeClassName: kata
  proxy: {httpProxy: "http://proxy.corp:3128", httpsProxy: "http://proxy.corp:3128", noProxy: "10.0.0.0/8,.svc,.cluster.local"}
"#;
        let b = OperatorConfig::parse("c.yaml", text).unwrap().builder;
        assert_eq!(b.service_account_name, "builder");
        assert!(!b.automount_service_account_token);
        assert_eq!(b.read_only_runtime_class_name, "kata");
        assert_eq!(b.proxy.vars().len(), 3);
        for (yaml, field, says) in [
            (
                "serviceAccountName: Builder",
                "builder.serviceAccountName",
                "\"Builder\"",
            ),
            (
                "priorityClassName: 'a b'",
                "builder.priorityClassName",
                "\"a b\"",
            ),
            ("runtimeClassName: -x", "builder.runtimeClassName", "-x"),
            (
                "readOnlyRuntimeClassName: x_y",
                "builder.readOnlyRuntimeClassName",
                "x_y",
            ),
            ("imagePullSecrets: ['']", "builder.imagePullSecrets", "\"\""),
            (
                "podLabels: {hearth.dev/role: x}",
                "builder.podLabels",
                "Hearth's own",
            ),
            (
                "podLabels: {app.kubernetes.io/managed-by: x}",
                "builder.podLabels",
                "Hearth's own",
            ),
            ("podLabels: {team: 'a b'}", "builder.podLabels", "\"a b\""),
            (
                "podAnnotations: {'a b': x}",
                "builder.podAnnotations",
                "\"a b\"",
            ),
            ("proxy: {noProxy: 'a, b'}", "builder.proxy", "NO_PROXY"),
        ] {
            let err = OperatorConfig::parse("c.yaml", &format!("builder: {{{yaml}}}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field) && err.contains(says), "{yaml}: {err}");
        }
    }

    #[test]
    fn registry_login_is_read_and_bad_settings_name_the_field() {
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let text =
            format!("builder: {{registryLogin: {{providers: [ecr, gcp], registries: [{ecr}]}}}}");
        let login = OperatorConfig::parse("c.yaml", &text)
            .unwrap()
            .builder
            .registry_login;
        assert_eq!(login.providers, [Provider::Ecr, Provider::Gcp]);
        assert_eq!(
            login.hosts(["ghcr.io/a/b:1", "europe-docker.pkg.dev/p/r/app:1"]),
            [
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "europe-docker.pkg.dev"
            ]
        );
        assert!(RegistryLoginSettings::default()
            .hosts([format!("{ecr}/app:1").as_str()])
            .is_empty());
        for (yaml, field, says) in [
            (
                "providers: [azure]",
                "registryLogin.providers",
                "unknown variant `azure`",
            ),
            (
                "providers: [ecr, ecr]",
                "builder.registryLogin.providers",
                "at most once",
            ),
            (
                "providers: [gcp], registries: [ghcr.io]",
                "builder.registryLogin.registries",
                "\"ghcr.io\"",
            ),
            (
                &format!("providers: [gcp], registries: [{ecr}]"),
                "builder.registryLogin.registries",
                "ecr: <account>",
            ),
            (
                "registries: [gcr.io]",
                "builder.registryLogin.registries",
                "providers []",
            ),
        ] {
            let err =
                OperatorConfig::parse("c.yaml", &format!("builder: {{registryLogin: {{{yaml}}}}}"))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(field) && err.contains(says), "{yaml}: {err}");
        }
    }
}
