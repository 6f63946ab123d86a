//! `BuildCache`: one logical BuildKit cache (by key) in a namespace, with its replicas (PVCs
//! holding a buildkitd state dir) and its snapshots in a store.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const QUANTITY_BOUNDS_RULE: &str =
    "quantity(string(self)).compareTo(quantity('1Gi')) >= 0 && quantity(string(self)).compareTo(quantity('64Ti')) <= 0";

/// One logical cache, shared by every build of its key in this namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hearth.dev",
    version = "v1alpha1",
    kind = "BuildCache",
    doc = "A BuildKit cache shared by the builds of one key: its replicas (volumes) and snapshots.",
    plural = "buildcaches",
    shortname = "hbc",
    category = "hearth",
    namespaced,
    status = "BuildCacheStatus",
    derive = "Default",
    cel,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".spec.key"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicaCount"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.locations"}"#,
    printcolumn = r#"{"name":"Snapshots","type":"integer","jsonPath":".status.snapshotCount"}"#,
    printcolumn = r#"{"name":"Stored","type":"string","jsonPath":".status.stored"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"Hot","type":"integer","jsonPath":".status.hits.hot"}"#,
    printcolumn = r#"{"name":"Restored","type":"integer","jsonPath":".status.hits.restored","priority":1}"#,
    printcolumn = r#"{"name":"Cold","type":"integer","jsonPath":".status.hits.cold","priority":1}"#,
    printcolumn = r#"{"name":"Last Used","type":"date","jsonPath":".status.lastUsed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BuildCacheSpec {
    /// The cache key builds use to find this cache, for example
    /// `github.com/acme/shop:main:Dockerfile`. Immutable.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("immutable; create a new BuildCache for another key"))]
    pub key: String,
    /// Volume of each replica.
    #[serde(default)]
    pub storage: CacheStorage,
    /// Most replicas (copies on different nodes) the cache may have at once; more replicas
    /// let concurrent builds of the key run hot. 1 to 64.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 64))]
    pub max_replicas: i32,
    /// When replicas are saved to the store, and how many snapshots are kept.
    #[serde(default)]
    pub snapshot: SnapshotPolicy,
    /// Garbage collection: inside buildkitd, and of idle replicas.
    #[serde(default)]
    pub gc: CacheGcPolicy,
    /// What happens to the snapshots in the store when the BuildCache is deleted: `Retain`
    /// (default) keeps them, `Delete` removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl Default for BuildCacheSpec {
    fn default() -> Self {
        BuildCacheSpec {
            key: String::new(),
            storage: CacheStorage::default(),
            max_replicas: default_max_replicas(),
            snapshot: SnapshotPolicy::default(),
            gc: CacheGcPolicy::default(),
            deletion_policy: DeletionPolicy::default(),
        }
    }
}

fn default_max_replicas() -> i32 {
    2
}

/// Volume of a replica.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheStorage {
    /// Size of each replica's PVC, between 1Gi and 64Ti.
    #[serde(default = "default_size")]
    #[x_kube(validation = Rule::new(QUANTITY_BOUNDS_RULE).message("must be a quantity between 1Gi and 64Ti, for example 50Gi"))]
    pub size: Quantity,
    /// StorageClass of the replicas; the operator's default when empty. Node-local classes
    /// (local-path, TopoLVM, OpenEBS LVM) give the fastest caches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Access mode of the PVCs. A buildkitd state dir is used by one pod at a time.
    #[serde(default)]
    pub access_mode: VolumeAccessMode,
}

impl Default for CacheStorage {
    fn default() -> Self {
        CacheStorage {
            size: default_size(),
            storage_class_name: None,
            access_mode: VolumeAccessMode::default(),
        }
    }
}

fn default_size() -> Quantity {
    Quantity("50Gi".to_string())
}

/// PVC access modes that suit a buildkitd state dir.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VolumeAccessMode {
    /// Mounted by one node at a time.
    #[default]
    ReadWriteOnce,
    /// Mounted by one pod at a time (Kubernetes 1.29+ and CSI drivers that support it).
    ReadWriteOncePod,
}

/// When replicas are saved and how many snapshots are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.store)").message("per-cache stores are not supported yet: every cache is saved to the operator's store (snapshot.store in the operator config), so a cache pointed elsewhere would silently not be; remove spec.snapshot.store").field_path(".store"))]
pub struct SnapshotPolicy {
    /// Reserved: a store for this cache's snapshots. Refused at admission today (every cache
    /// is saved to the operator's store, `snapshot.store` in its config); accepted once
    /// per-cache stores exist behind an allow-list in the operator config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub store: Option<String>,
    /// Save after every N successful ReadWrite builds (1 saves after each). 1 to 1000.
    #[serde(default = "default_every")]
    #[schemars(range(min = 1, max = 1000))]
    pub every: i32,
    /// Save at most once per this interval (Go duration); a replica about to be evicted is
    /// always saved first.
    #[serde(default = "default_min_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('720h')").message("must be a duration between 0s and 720h"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub min_interval: Duration,
    /// Snapshots kept per key; older ones are garbage-collected. 1 to 100.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1, max = 100))]
    pub retain: i32,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            store: None,
            every: default_every(),
            min_interval: default_min_interval(),
            retain: default_retain(),
        }
    }
}

fn default_every() -> i32 {
    1
}
fn default_min_interval() -> Duration {
    Duration::from(std::time::Duration::from_secs(600))
}
fn default_retain() -> i32 {
    3
}

/// Garbage collection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.keepStorage) || quantity(string(self.keepStorage)).compareTo(quantity('0')) > 0").message("must be a positive quantity, for example 40Gi").field_path(".keepStorage"))]
pub struct CacheGcPolicy {
    /// buildkitd's own GC limit (`gckeepstorage`); by default 80% of `storage.size`. Also the
    /// `--keep-storage` of the prune after each ReadWrite build: BuildKit prunes only while
    /// the cache holds more than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_storage: Option<Quantity>,
    /// After each successful ReadWrite build, before its state can be saved, the builder runs
    /// `buildctl prune --keep-duration <this> --keep-storage <keepStorage>`: while the cache
    /// is over `keepStorage`, BuildKit drops the records no build used for this long, oldest
    /// first (`0s`: any unused record). Go duration, 0s to 8760h.
    #[serde(default = "default_keep_duration")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('8760h')").message("must be a duration between 0s and 8760h"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub keep_duration: Duration,
    /// A replica unused for this long may be evicted (after its state is saved). Go duration.
    #[serde(default = "default_idle_ttl")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("must be a duration of at least 1m"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub idle_ttl: Duration,
}

impl Default for CacheGcPolicy {
    fn default() -> Self {
        CacheGcPolicy {
            keep_storage: None,
            keep_duration: default_keep_duration(),
            idle_ttl: default_idle_ttl(),
        }
    }
}

fn default_keep_duration() -> Duration {
    Duration::from(std::time::Duration::from_secs(7 * 24 * 3600))
}

fn default_idle_ttl() -> Duration {
    Duration::from(std::time::Duration::from_secs(7 * 24 * 3600))
}

/// What happens to the store's snapshots when the BuildCache goes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the snapshots in the store.
    #[default]
    Retain,
    /// Delete the snapshots from the store before the BuildCache is removed.
    Delete,
}

/// State of a replica.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaState {
    /// Ready and unclaimed.
    Idle,
    /// Claimed by a build (`holder`).
    InUse,
    /// A snapshot is being restored into it.
    Restoring,
    /// Its state is being saved to the store.
    Snapshotting,
    /// Its node (or volume) is gone.
    Lost,
    /// Being removed (its state is in a snapshot); its PVC is deleted, then the entry.
    Evicting,
}

impl ReplicaState {
    /// Whether the replica still counts: neither `Lost` nor `Evicting`.
    pub fn is_live(self) -> bool {
        !matches!(self, ReplicaState::Lost | ReplicaState::Evicting)
    }
}

/// One replica: a PVC holding a buildkitd state dir.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Name of the PVC.
    pub pvc: String,
    /// Node that holds the volume (node-local storage), from the bound PV's node affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Zone that holds the volume (zonal storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// `Idle`, `InUse`, `Restoring`, `Snapshotting` or `Lost`.
    pub state: ReplicaState,
    /// `ImageBuild` holding the replica, when claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Bytes used on the volume, as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// When a build last released it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Time>,
    /// Snapshot whose content it matches; empty when it holds unsaved state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// ReadWrite builds since the replica was last saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builds_since_snapshot: Option<i32>,
    /// Builds that have used the replica (its value when a node must make room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<i64>,
    /// Why the replica is `Evicting` or being saved by the controller (`Budget`, `IdleTtl`,
    /// `MaxReplicas`, `NodeLost`, `CloneFailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `ImageBuild` whose new replica is being cloned from this one: until the clone's PVC is
    /// bound (its volume provisioned from this one), no build claims this replica and nothing
    /// evicts it, so nothing writes to it while the storage copies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloning_for: Option<String>,
}

/// One snapshot in the store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// Snapshot id.
    pub id: String,
    /// When it was written.
    pub time: Time,
    /// Size of the tree it holds.
    pub bytes: i64,
    /// Bytes this snapshot added to the store (what the save uploaded).
    pub new_bytes: i64,
    /// SHA-256 of the manifest the save wrote, as it reported it. Restores pass it to
    /// `hearth snapshot restore --manifest-sha256`, which refuses any other manifest: only a
    /// snapshot recorded with it is restored (one listed from the store, or saved by a
    /// version before pinning, is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
}

/// What a cache-maintenance Job does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// Save an idle replica (before evicting it, or a save the policy deferred).
    Save,
    /// Apply `snapshot.retain`, collect unreferenced data and list the snapshots.
    Gc,
    /// Remove every snapshot of the cache (deletion with `deletionPolicy: Delete`).
    Forget,
    /// Restore the newest snapshot into a new replica ahead of the next build, after the
    /// cache lost its replicas (a node went away, or eviction), onto a node with room.
    Prewarm,
}

/// The cache-maintenance Job in flight (at most one per cache).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheOperation {
    /// `Save`, `Gc` or `Forget`.
    pub kind: OperationKind,
    /// Name of the Job.
    pub job: String,
    /// The replica it works on (`Save`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// Why it runs.
    pub reason: String,
    /// When it started.
    pub started: Time,
}

/// How often builds found the cache hot, restored it, or started cold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HitCounts {
    /// Builds that ran on a replica already on their node.
    #[serde(default)]
    pub hot: i64,
    /// Builds that restored a snapshot first.
    #[serde(default)]
    pub restored: i64,
    /// Builds that started with no cache.
    #[serde(default)]
    pub cold: i64,
}

/// What the planner has learned about builds of the key, from the successful builds that
/// released a replica of this cache (ReadWrite builds; ReadOnly and Disabled builds run on
/// throwaway volumes and are not counted). Averages are exponentially weighted, each new
/// build weighing 0.3, so the figures follow a Dockerfile that changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeyHistory {
    /// Successful builds counted.
    #[serde(default)]
    pub builds: i64,
    /// Seconds of the build step when it started from the key's own cache (a hot replica,
    /// or a snapshot of the key restored first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_seconds: Option<f64>,
    /// Seconds of the build step when it started from a restore key's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_seconds: Option<f64>,
    /// Seconds of the build step when it started with no cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_seconds: Option<f64>,
    /// Size of the cache, in bytes, as last measured by a snapshot save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_bytes: Option<i64>,
    /// Average seconds between the submissions of two successive builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_gap_seconds: Option<f64>,
    /// When the newest counted build was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_build_at: Option<Time>,
    /// Bytes per second of the restores into this cache's replicas, as each reported them
    /// (bytes written over its own wall time; restores under 64 MiB are not counted: fixed
    /// costs dominate them). The planner estimates the store's restore throughput as the mean
    /// of this figure over every BuildCache, and uses its configured constant until one has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_bytes_per_second: Option<f64>,
}

/// State of the cache. Written only by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BuildCacheStatus {
    /// Replicas of the cache, one per PVC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pvc"]))]
    pub replicas: Vec<ReplicaStatus>,
    /// Snapshots in the store, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotRecord>,
    /// Number of replicas (for the printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_count: Option<i32>,
    /// Where the live replicas are: their nodes (or zones), comma-separated (printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<String>,
    /// Number of snapshots (for the printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_count: Option<i32>,
    /// Total bytes on all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Total bytes on all replicas, for people (`12.3Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// When any replica was last used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Time>,
    /// The ImageBuild that used the cache last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_build: Option<String>,
    /// Hot, restored and cold uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<HitCounts>,
    /// What the planner learned from the key's successful ReadWrite builds: build seconds by
    /// how each started (moving averages weighing each new build 0.3), cache size and how
    /// often the key is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<KeyHistory>,
    /// Bytes the listed snapshots added to the store (an estimate of the cache's share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_bytes: Option<i64>,
    /// `snapshotBytes` for people (`1.2Gi`, printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
    /// The maintenance Job in flight (a save before eviction, gc, or deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<CacheOperation>,
    /// Maintenance Jobs started so far (numbers the next Job's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<i32>,
    /// When gc last listed the store's snapshots into status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gc: Option<Time>,
    /// Conditions (`Ready`, `StoreReachable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When a store operation last failed: no store operation starts for a while after it
    /// (the back-off); cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_failed_at: Option<Time>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
