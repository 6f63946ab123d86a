//! The operator's config values and the `config.yaml` the chart renders from them
//! (`charts/hearth/templates/_helpers.tpl`, `hearth.config`), with the store on the loopback
//! S3 server.

use super::snapshot_support::S3Server;
use super::STORAGE_CLASS;

/// The values the chart renders into the operator's `config.yaml` (see
/// `charts/hearth/templates/_helpers.tpl`, `hearth.config`). The store is always the loopback
/// S3 server.
#[derive(Clone, Debug)]
pub struct Values {
    pub builder_image: String,
    pub hearth_image: String,
    pub cache_size: String,
    pub node_budget: String,
    pub max_replicas: u32,
    pub credentials_secret: String,
    pub every: u32,
    pub min_interval: String,
    pub gc_interval: String,
    pub gc_grace: String,
    pub delete_timeout: String,
    pub retain: u32,
    pub namespaces: Vec<String>,
    /// `builder.serviceAccountName`.
    pub service_account_name: String,
    /// `builder.runtimeClassName`.
    pub runtime_class_name: String,
    /// `builder.proxy.httpProxy`.
    pub http_proxy: String,
    /// `buildkitd.registries`, as the chart's `toYaml` renders it (`[]` when empty).
    pub buildkitd_registries: String,
    pub retention: RetentionValues,
    /// `cache.cloneStorageClasses`.
    pub clone_storage_classes: Vec<String>,
    /// `cache.cloneBindTimeout`.
    pub clone_bind_timeout: String,
}

/// The chart's `retention` values (`None` renders `null`: that TTL or limit off).
#[derive(Clone, Debug)]
pub struct RetentionValues {
    pub ttl_after_succeeded: Option<String>,
    pub ttl_after_failed: Option<String>,
    pub succeeded_limit: Option<u32>,
    pub failed_limit: Option<u32>,
    pub min_age: String,
}

impl Default for RetentionValues {
    fn default() -> Self {
        RetentionValues {
            ttl_after_succeeded: Some("24h".into()),
            ttl_after_failed: Some("72h".into()),
            succeeded_limit: Some(100),
            failed_limit: Some(100),
            min_age: "10m".into(),
        }
    }
}

/// `value`, or YAML's `null`.
fn or_null<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "null".to_string(), T::to_string)
}

impl Default for Values {
    fn default() -> Self {
        Values {
            builder_image: "docker.io/moby/buildkit:v0.25.1-rootless".into(),
            hearth_image: "ghcr.io/hearth-dev/hearth:test".into(),
            cache_size: "1Gi".into(),
            node_budget: "4Gi".into(),
            max_replicas: 2,
            credentials_secret: "hearth-store".into(),
            every: 1,
            min_interval: "0s".into(),
            gc_interval: "6h".into(),
            gc_grace: "1h".into(),
            delete_timeout: "10m".into(),
            retain: 3,
            namespaces: vec![],
            service_account_name: String::new(),
            runtime_class_name: String::new(),
            http_proxy: String::new(),
            buildkitd_registries: " []".into(),
            retention: RetentionValues::default(),
            clone_storage_classes: Vec::new(),
            clone_bind_timeout: "2m".into(),
        }
    }
}

/// The operator config exactly as the chart renders it (`hearth.config`).
pub fn render_config(v: &Values, s3: &S3Server) -> String {
    let namespaces = if v.namespaces.is_empty() {
        " []".to_string()
    } else {
        v.namespaces.iter().map(|n| format!("\n  - {n}")).collect()
    };
    format!(
        r#"builder:
  image: "{builder_image}"
  hearthImage: "{hearth_image}"
  imagePullPolicy: IfNotPresent
  resources:
    requests:
      cpu: "1"
      memory: 2Gi
  nodeSelector: {{}}
  tolerations: []
  serviceAccountName: "{service_account_name}"
  automountServiceAccountToken: false
  imagePullSecrets: []
  podLabels: {{}}
  podAnnotations: {{}}
  priorityClassName: ""
  runtimeClassName: "{runtime_class_name}"
  readOnlyRuntimeClassName: ""
  proxy:
    httpProxy: "{http_proxy}"
    httpsProxy: ""
    noProxy: ""
cache:
  storageClassName: "{class}"
  size: "{size}"
  nodeBudget: "{budget}"
  maxReplicas: {max_replicas}
  cloneStorageClasses: [{clone_classes}]
  cloneBindTimeout: "{clone_bind_timeout}"
snapshot:
  store: "{store}"
  credentialsSecret: "{secret}"
  fileStoreClaim: ""
  s3:
    endpoint: "{endpoint}"
    region: "us-east-1"
    pathStyle: true
  every: {every}
  minInterval: "{min_interval}"
  gcInterval: "{gc_interval}"
  gcGrace: "{gc_grace}"
  deleteTimeout: "{delete_timeout}"
  retain: {retain}
namespaces:{namespaces}
tekton:
  enabled: false
buildkitd:
  registries:{buildkitd_registries}
retention:
  ttlAfterSucceeded: {ttl_succeeded}
  ttlAfterFailed: {ttl_failed}
  succeededLimit: {succeeded_limit}
  failedLimit: {failed_limit}
  minAge: "{min_age}"
"#,
        service_account_name = v.service_account_name,
        runtime_class_name = v.runtime_class_name,
        http_proxy = v.http_proxy,
        buildkitd_registries = v.buildkitd_registries,
        builder_image = v.builder_image,
        hearth_image = v.hearth_image,
        class = STORAGE_CLASS,
        size = v.cache_size,
        budget = v.node_budget,
        max_replicas = v.max_replicas,
        clone_classes = v.clone_storage_classes.join(", "),
        clone_bind_timeout = v.clone_bind_timeout,
        store = s3.url(),
        secret = v.credentials_secret,
        endpoint = s3.endpoint,
        every = v.every,
        min_interval = v.min_interval,
        gc_interval = v.gc_interval,
        gc_grace = v.gc_grace,
        delete_timeout = v.delete_timeout,
        retain = v.retain,
        failed_limit = or_null(&v.retention.failed_limit),
        min_age = v.retention.min_age,
        succeeded_limit = or_null(&v.retention.succeeded_limit),
        ttl_failed = or_null(
            &v.retention
                .ttl_after_failed
                .as_ref()
                .map(|t| format!("{t:?}"))
        ),
        ttl_succeeded = or_null(
            &v.retention
                .ttl_after_succeeded
                .as_ref()
                .map(|t| format!("{t:?}"))
        ),
    )
}
