//! Builds the planner's view of the cluster from Kubernetes objects: nodes (zone, labels,
//! taints, readiness, free builder slots, cache budget), every BuildCache's replicas (located
//! by their bound PV, else by where they were placed), newest snapshots and each key's history
//! (measured build times, size, rate). Pure: objects in, view out; the controller feeds it
//! from its reflector stores.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;

use super::builders::labels;
use super::builders::pvc::storage_class;
use super::config::OperatorConfig;
use super::key_history;
use super::snapshot_records;
use crate::api::quantity;
use crate::api::{keys, BuildCache, ImageBuild, ReplicaState};
use crate::planner::{
    BuildRequest, Clonable, CloneTarget, ClusterView, KeyId, Location, PlannerConfig, Replica,
    ReplicaId, Snapshot, StoreModel, Taint, TaintEffect, Toleration, TolerationOperator,
};

/// Label naming the node a builder pod is pinned to (counted against the node's slots).
pub const NODE_LABEL: &str = "hearth.dev/node";

/// The objects a view is built from.
#[derive(Default)]
pub struct Objects<'a> {
    /// Every node.
    pub nodes: Vec<&'a Node>,
    /// Every PersistentVolume.
    pub volumes: Vec<&'a PersistentVolume>,
    /// Hearth's replica PVCs.
    pub claims: Vec<&'a PersistentVolumeClaim>,
    /// Hearth's pods.
    pub pods: Vec<&'a Pod>,
    /// Every BuildCache, all namespaces (node budgets count every tenant's bytes).
    pub caches: Vec<&'a BuildCache>,
}

/// Which BuildCache replica a planner replica id stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRef {
    /// Namespace of the BuildCache.
    pub namespace: String,
    /// Name of the BuildCache.
    pub cache: String,
    /// PVC of the replica.
    pub pvc: String,
    /// The snapshot its state matches, if saved (a clone of it matches it too).
    pub snapshot_id: Option<String>,
}

/// The view and the way back from its ids to objects.
pub struct View {
    /// What the planner reads.
    pub cluster: ClusterView,
    /// Replica ids to their BuildCache entries.
    pub replicas: HashMap<ReplicaId, ReplicaRef>,
    /// Newest restorable (pinned) snapshot per `(namespace, key)`: where it is.
    pub snapshot_caches: HashMap<(String, String), SnapshotSource>,
}

/// Where the planner's snapshot of a key is, and the digest its restore must find.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotSource {
    /// The BuildCache that saved it (whose store prefix it is read from).
    pub cache: String,
    /// SHA-256 of its manifest, as the save reported it.
    pub manifest_sha256: String,
}

/// How long the planner expects a pod that still mounts an idle replica to take to go (a
/// deleted builder's grace period).
const LINGER_SECONDS: f64 = 30.0;

/// Seconds since the epoch, the planner's clock.
pub fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// A node's cache budget: its `hearth.dev/cache-budget` annotation, else the operator's.
pub fn node_budget(node: &Node, config: &OperatorConfig) -> u64 {
    node.annotations()
        .get(labels::NODE_BUDGET_ANNOTATION)
        .and_then(|q| quantity::to_bytes(q))
        .or_else(|| quantity::to_bytes(&config.cache.node_budget.0))
        .unwrap_or(200 << 30)
}

/// Whether a pod may still run: not yet Succeeded or Failed. A pod being deleted stays
/// running through its grace period (buildkitd finishing a step), and still holds its volumes.
pub fn pod_unfinished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p != "Succeeded" && p != "Failed")
}

/// The PVCs each pod mounts, as `(namespace, claim)`.
pub fn pod_claims(pod: &Pod) -> impl Iterator<Item = (String, String)> + '_ {
    let namespace = pod.namespace().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(move |c| (namespace.clone(), c.claim_name.clone()))
}

/// Replica PVCs that an unfinished pod still mounts: whatever the BuildCache status says,
/// such a replica is not free for a build, a save or an eviction until the pod is gone.
pub fn mounted_claims<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> HashSet<(String, String)> {
    pods.into_iter()
        .filter(|p| pod_unfinished(p))
        .flat_map(pod_claims)
        .collect()
}

/// Builds the view from the controller's reflector stores.
pub fn view_from_stores(
    stores: &super::context::Stores,
    config: &OperatorConfig,
    planner: &PlannerConfig,
    now: Timestamp,
) -> View {
    fn all<K>(stores: &[kube::runtime::reflector::Store<K>]) -> Vec<std::sync::Arc<K>>
    where
        K: kube::runtime::reflector::Lookup + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        stores.iter().flat_map(|s| s.state()).collect()
    }
    let (nodes, volumes, pvcs, pods, caches) = (
        stores.nodes.state(),
        stores.volumes.state(),
        all(&stores.claims),
        all(&stores.pods),
        all(&stores.caches),
    );
    let objects = Objects {
        nodes: nodes.iter().map(AsRef::as_ref).collect(),
        volumes: volumes.iter().map(AsRef::as_ref).collect(),
        claims: pvcs.iter().map(AsRef::as_ref).collect(),
        pods: pods.iter().map(AsRef::as_ref).collect(),
        caches: caches.iter().map(AsRef::as_ref).collect(),
    };
    build_view(&objects, config, planner, now)
}

/// Builds the view. Each key's history (`status.history` of its BuildCache) becomes the
/// planner's stats for it, with `planner.default_stats` for what was never measured.
pub fn build_view(
    objects: &Objects,
    config: &OperatorConfig,
    planner: &PlannerConfig,
    now: Timestamp,
) -> View {
    let now_s = seconds(now);
    let learned = key_history::store_throughput(
        objects
            .caches
            .iter()
            .filter_map(|c| c.status.as_ref()?.history.as_ref()),
        config.planner.store_bytes_per_second,
    );
    let mut cluster = ClusterView::new(StoreModel {
        bytes_per_second: learned,
        overhead_seconds: config.planner.restore_overhead_seconds,
    });
    cluster.set_clone_overhead(config.planner.clone_overhead_seconds);
    let mounted = mounted_claims(objects.pods.iter().copied());
    // Replicas a builder pod still runs on: buildkitd may be writing to them.
    let written = mounted_claims(
        objects
            .pods
            .iter()
            .copied()
            .filter(|p| p.labels().get(labels::ROLE).map(String::as_str) == Some("build")),
    );
    let mut busy: HashMap<&str, u32> = HashMap::new();
    for pod in &objects.pods {
        let running = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Pending" || p == "Running");
        if let (true, Some(node)) = (running, pod.labels().get(NODE_LABEL)) {
            if pod.labels().get(labels::ROLE).map(String::as_str) == Some("build") {
                *busy.entry(node.as_str()).or_default() += 1;
            }
        }
    }
    for node in &objects.nodes {
        let name = node.name_any();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            && !node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
        let budget = node_budget(node, config);
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| {
                        Some(Taint {
                            key: t.key.clone(),
                            value: t.value.clone().unwrap_or_default(),
                            effect: effect(&t.effect)?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let used = busy.get(name.as_str()).copied().unwrap_or(0);
        // Every kubelet sets `kubernetes.io/arch`; a node without it is taken to be of the
        // default architecture, so builds are only ever placed by architecture.
        let mut node_labels = node.labels().clone();
        node_labels
            .entry(keys::ARCH_LABEL.to_string())
            .or_insert_with(|| config.builder.default_arch.clone());
        let _ = cluster.add_node(crate::planner::Node {
            zone: node
                .labels()
                .get("topology.kubernetes.io/zone")
                .cloned()
                .unwrap_or_default(),
            labels: node_labels,
            taints,
            ready,
            free_slots: config.planner.builds_per_node.saturating_sub(used),
            next_slot_free_at: None,
            slot_waiting: 0,
            cache_budget_bytes: budget,
            name,
        });
    }

    let existing_claims: std::collections::HashSet<(String, String)> = objects
        .claims
        .iter()
        .filter_map(|c| Some((c.namespace()?, c.name_any())))
        .collect();
    let claim_of: HashMap<(String, String), &PersistentVolumeClaim> = objects
        .claims
        .iter()
        .filter_map(|c| Some(((c.namespace()?, c.name_any()), *c)))
        .collect();
    let claim_volume: HashMap<(String, String), String> = objects
        .claims
        .iter()
        .filter_map(|c| {
            Some((
                (c.namespace()?, c.name_any()),
                c.spec.as_ref()?.volume_name.clone()?,
            ))
        })
        .collect();
    let volume_location: HashMap<String, (Option<String>, Option<String>)> = objects
        .volumes
        .iter()
        .map(|pv| (pv.name_any(), pv_location(pv)))
        .collect();

    let mut replicas = HashMap::new();
    let mut snapshot_caches = HashMap::new();
    let mut learned: HashMap<KeyId, i64> = HashMap::new();
    for cache in &objects.caches {
        let (Some(namespace), name) = (cache.namespace(), cache.name_any()) else {
            continue;
        };
        let key = cluster.intern_key(&namespace, &cache.spec.key);
        let Some(status) = &cache.status else {
            continue;
        };
        if let Some(history) = &status.history {
            // Two BuildCaches of one key (a `cacheRef` beside the derived name): the one that
            // counted more builds speaks for the key.
            let counted = learned.entry(key).or_insert(-1);
            if history.builds > *counted {
                *counted = history.builds;
                let mut history = history.clone();
                history.cache_bytes = history.cache_bytes.or_else(|| {
                    status
                        .snapshots
                        .iter()
                        .max_by_key(|s| s.time.0)
                        .map(|s| s.bytes)
                });
                let stats = key_history::stats(&history, &planner.default_stats, now);
                cluster.set_stats(key, stats);
            }
        }
        // Only a snapshot pinned by its manifest digest is restored: one listed from the
        // store, or saved before pinning, is not a candidate.
        if let Some((newest, pin)) = snapshot_records::newest_pinned(&status.snapshots)
            .and_then(|s| Some((s, snapshot_records::pin(s)?)))
        {
            let better = cluster
                .key(key)
                .snapshot
                .as_ref()
                .is_none_or(|s| s.taken_at < seconds(newest.time.0));
            if better {
                cluster.set_snapshot(
                    key,
                    Some(Snapshot {
                        id: newest.id.clone(),
                        bytes: newest.bytes.max(0) as u64,
                        taken_at: seconds(newest.time.0),
                    }),
                );
                let source = SnapshotSource {
                    cache: name.clone(),
                    manifest_sha256: pin.to_string(),
                };
                snapshot_caches.insert((namespace.clone(), cache.spec.key.clone()), source);
            }
        }
        for r in &status.replicas {
            if !r.state.is_live() {
                continue;
            }
            // An idle replica whose PVC is gone (deleted by hand, or its namespace emptied)
            // cannot be used; held ones keep their place (their PVC may not be listed yet).
            if r.state == ReplicaState::Idle
                && !existing_claims.contains(&(namespace.clone(), r.pvc.clone()))
            {
                continue;
            }
            let bound = claim_volume
                .get(&(namespace.clone(), r.pvc.clone()))
                .and_then(|v| volume_location.get(v));
            let (node, zone) = match bound {
                Some((node, zone)) => (node.clone(), zone.clone()),
                None => (r.node.clone(), r.zone.clone()),
            };
            let location = match (node.and_then(|n| cluster.node_id(&n)), zone) {
                (Some(id), _) => Location::Node(id),
                (None, Some(zone)) => Location::Zone(zone),
                (None, None) => continue,
            };
            // Idle in status but still mounted by a pod on its way out: busy for a moment. Or
            // the source of a clone not yet bound: neither claimed nor written meanwhile.
            let lingering = r.state == ReplicaState::Idle
                && mounted.contains(&(namespace.clone(), r.pvc.clone()));
            let held_for_clone = r.state == ReplicaState::Idle && r.cloning_for.is_some();
            let size_bytes = r.size_bytes.unwrap_or(0).max(0) as u64;
            let free_at = match r.state {
                ReplicaState::Idle if lingering => Some(now_s + LINGER_SECONDS),
                ReplicaState::Idle if held_for_clone => {
                    Some(now_s + config.planner.clone_overhead_seconds)
                }
                ReplicaState::Idle => None,
                // A save after a Succeeded build: busy for about a save's time (incremental
                // saves are shorter; a full one is bounded by the store's throughput).
                ReplicaState::Snapshotting => Some(
                    now_s
                        + (config.planner.restore_overhead_seconds
                            + size_bytes as f64 / config.planner.store_bytes_per_second.max(1.0))
                        .min(config.planner.expected_busy_seconds),
                ),
                _ => Some(now_s + config.planner.expected_busy_seconds),
            };
            let replica = Replica {
                name: r.pvc.clone(),
                key,
                location,
                size_bytes,
                state: if lingering || held_for_clone {
                    ReplicaState::InUse
                } else {
                    r.state
                },
                free_at,
                waiting: 0,
                saved: r.snapshot_id.is_some(),
                last_used: r.last_used.as_ref().map(|t| seconds(t.0)).unwrap_or(now_s),
            };
            let claim_key = (namespace.clone(), r.pvc.clone());
            // A replica a builder pod may still write to is no clone's source.
            let clonable = (!written.contains(&claim_key))
                .then(|| clonable(cache, claim_of.get(&claim_key).copied(), config))
                .flatten();
            if let Ok(id) = cluster.add_replica(replica) {
                cluster.set_clonable(id, clonable);
                replicas.insert(
                    id,
                    ReplicaRef {
                        namespace: namespace.clone(),
                        cache: name.clone(),
                        pvc: r.pvc.clone(),
                        snapshot_id: r.snapshot_id.clone(),
                    },
                );
            }
        }
    }
    View {
        cluster,
        replicas,
        snapshot_caches,
    }
}

/// What a replica of `cache` (its PVC when listed) offers a clone: its StorageClass, when the
/// operator lists it in `cache.cloneStorageClasses`, and the size its PVC requested.
fn clonable(
    cache: &BuildCache,
    claim: Option<&PersistentVolumeClaim>,
    config: &OperatorConfig,
) -> Option<Clonable> {
    let spec = claim.and_then(|c| c.spec.as_ref());
    let class = match spec {
        Some(s) => s.storage_class_name.clone(),
        None => storage_class(cache, config),
    }?;
    let requested = spec
        .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
        .unwrap_or(&cache.spec.storage.size);
    config
        .cache
        .clone_storage_classes
        .contains(&class)
        .then(|| {
            Some(Clonable {
                storage_class: class,
                capacity_bytes: quantity::to_bytes(&requested.0)?,
            })
        })
        .flatten()
}

/// The volume a build's new replica gets in its BuildCache (`None`: the key's first build,
/// whose cache takes the operator's defaults), when the operator says its StorageClass can
/// clone; `None` otherwise.
pub fn clone_target(cache: Option<&BuildCache>, config: &OperatorConfig) -> Option<CloneTarget> {
    let (class, size) = match cache {
        Some(c) => (storage_class(c, config), c.spec.storage.size.0.clone()),
        None => (
            Some(config.cache.storage_class_name.clone()).filter(|s| !s.is_empty()),
            config.cache.size.0.clone(),
        ),
    };
    let class = class.filter(|c| config.cache.clone_storage_classes.contains(c))?;
    Some(CloneTarget {
        storage_class: class,
        capacity_bytes: quantity::to_bytes(&size)?,
    })
}

fn effect(e: &str) -> Option<TaintEffect> {
    match e {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

/// Node (local volumes) or zone (zonal volumes) a PV is pinned to, from its node affinity.
pub fn pv_location(pv: &PersistentVolume) -> (Option<String>, Option<String>) {
    let terms = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.clone())
        .unwrap_or_default();
    let mut node = None;
    let mut zone = None;
    for expr in terms
        .iter()
        .flat_map(|t| t.match_expressions.clone().unwrap_or_default())
    {
        let first = expr.values.as_ref().and_then(|v| v.first()).cloned();
        match expr.key.as_str() {
            "kubernetes.io/hostname" => node = node.or(first),
            "topology.kubernetes.io/zone"
            | "topology.ebs.csi.aws.com/zone"
            | "topology.gke.io/zone" => zone = zone.or(first),
            _ => {}
        }
    }
    (node, zone)
}

/// The planner request of a build.
pub fn build_request(build: &ImageBuild, key: &str, config: &OperatorConfig) -> BuildRequest {
    let mut req = BuildRequest::new(build.namespace().unwrap_or_default(), key);
    let default_arch = &config.builder.default_arch;
    req.restore_keys = keys::restore_keys(&build.spec, default_arch);
    req.arch = Some(keys::build_arch(&build.spec, default_arch));
    req.mode = build.spec.cache.mode;
    req.registry_seed = build
        .spec
        .cache
        .registry
        .as_ref()
        .is_some_and(|r| !r.import_from.is_empty());
    req.node_selector = config.builder.node_selector.clone();
    req.node_selector.extend(build.spec.node_selector.clone());
    req.tolerations = config
        .builder
        .tolerations
        .iter()
        .chain(build.spec.tolerations.iter())
        .map(|t| Toleration {
            key: t.key.clone().unwrap_or_default(),
            operator: if t.operator.as_deref() == Some("Exists") {
                TolerationOperator::Exists
            } else {
                TolerationOperator::Equal
            },
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.as_deref().and_then(effect),
        })
        .collect();
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn view_reads_nodes_volumes_and_caches() {
        let n1: Node = obj(
            json!({"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "a"}, "annotations": {"hearth.dev/cache-budget": "500Gi"}},
            "spec": {"taints": [{"key": "builders", "effect": "NoSchedule"}]}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let n2: Node = obj(
            json!({"metadata": {"name": "n2"}, "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let pv: PersistentVolume = obj(
            json!({"metadata": {"name": "pv1"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}),
        );
        let claim: PersistentVolumeClaim = obj(
            json!({"metadata": {"name": "c-r0", "namespace": "shop"}, "spec": {"volumeName": "pv1"}}),
        );
        let busy: Pod = obj(
            json!({"metadata": {"name": "b-build-1", "namespace": "shop", "labels": {"hearth.dev/node": "n1", "hearth.dev/role": "build"}}, "status": {"phase": "Running"}}),
        );
        let cache: BuildCache = obj(
            json!({"metadata": {"name": "c", "namespace": "shop"}, "spec": {"key": "shop:main"}, "status": {
            "replicas": [
                {"pvc": "c-r0", "node": "n2", "state": "Idle", "sizeBytes": 1000, "snapshotId": "s2"},
                {"pvc": "c-r1", "node": "n1", "state": "Idle"},
                {"pvc": "c-r2", "node": "n2", "state": "Lost"}
            ],
            "snapshots": [
                {"id": "s1", "time": "2026-11-01T00:00:00Z", "bytes": 10, "newBytes": 10, "manifestSha256": "a1".repeat(32)},
                {"id": "s2", "time": "2026-11-02T00:00:00Z", "bytes": 20, "newBytes": 5, "manifestSha256": "a2".repeat(32)},
                // Newer, but not pinned (listed from the store, perhaps planted there): never
                // the snapshot a build restores.
                {"id": "s3", "time": "2026-11-03T00:00:00Z", "bytes": 30, "newBytes": 5}
            ]}}),
        );
        let objects = Objects {
            nodes: vec![&n1, &n2],
            volumes: vec![&pv],
            claims: vec![&claim],
            pods: vec![&busy],
            caches: vec![&cache],
        };
        let view = build_view(
            &objects,
            &OperatorConfig::default(),
            &PlannerConfig::default(),
            Timestamp::from_second(1_800_000_000).unwrap(),
        );
        let c = &view.cluster;
        let (id1, id2) = (c.node_id("n1").unwrap(), c.node_id("n2").unwrap());
        assert_eq!(c.node(id1).cache_budget_bytes, 500 << 30);
        assert_eq!(
            c.node(id1).free_slots,
            1,
            "one of two slots taken by a running build"
        );
        assert_eq!(c.node(id1).taints.len(), 1);
        assert!(
            c.node(id1).ready && !c.node(id2).ready,
            "a cordoned node takes no builds"
        );
        // Only c-r0 is usable: c-r1's PVC is gone, c-r2 is Lost. Its bound PV puts it on n1,
        // whatever status said.
        let replicas: Vec<_> = c.replicas().collect();
        assert_eq!(replicas.len(), 1);
        assert_eq!(replicas[0].1.location, Location::Node(id1));
        assert!(replicas[0].1.saved);
        let key = c.key_id("shop", "shop:main").unwrap();
        assert_eq!(
            c.key(key).snapshot.as_ref().unwrap().id,
            "s2",
            "newest pinned snapshot"
        );
        assert_eq!(
            view.snapshot_caches[&("shop".to_string(), "shop:main".to_string())],
            SnapshotSource {
                cache: "c".into(),
                manifest_sha256: "a2".repeat(32)
            },
            "its restore is pinned to the digest its save reported"
        );
        assert_eq!(view.replicas[&replicas[0].0].pvc, "c-r0");
        assert_eq!(
            c.store.bytes_per_second,
            OperatorConfig::default().planner.store_bytes_per_second,
            "no restore measured yet: the configured throughput"
        );
        // Once restores reported their throughput, the planner's store model uses it.
        let mut learned = cache.clone();
        learned.status.as_mut().unwrap().history = Some(crate::api::KeyHistory {
            restore_bytes_per_second: Some(40e6),
            ..Default::default()
        });
        let objects = Objects {
            caches: vec![&learned],
            ..objects
        };
        let view = build_view(
            &objects,
            &OperatorConfig::default(),
            &PlannerConfig::default(),
            Timestamp::from_second(1_800_000_000).unwrap(),
        );
        assert_eq!(view.cluster.store.bytes_per_second, 40e6);
    }

    #[test]
    fn an_idle_replica_a_terminating_pod_still_mounts_is_busy() {
        let n1: Node = obj(
            json!({"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let claim: PersistentVolumeClaim =
            obj(json!({"metadata": {"name": "c-r0", "namespace": "shop"}}));
        let cache: BuildCache = obj(
            json!({"metadata": {"name": "c", "namespace": "shop"}, "spec": {"key": "shop:main"},
            "status": {"replicas": [{"pvc": "c-r0", "node": "n1", "state": "Idle"}]}}),
        );
        // A cancelled build's pod: deleted, but its buildkitd still runs on the volume.
        let pod = |phase: &str| -> Pod {
            obj(
                json!({"metadata": {"name": "b-build-1", "namespace": "shop",
                "deletionTimestamp": "2026-11-29T10:00:00Z"},
                "spec": {"containers": [{"name": "buildkit"}],
                    "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c-r0"}}]},
                "status": {"phase": phase}}),
            )
        };
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let state_with = |p: &Pod| {
            let objects = Objects {
                nodes: vec![&n1],
                claims: vec![&claim],
                pods: vec![p],
                caches: vec![&cache],
                ..Objects::default()
            };
            let view = build_view(
                &objects,
                &OperatorConfig::default(),
                &PlannerConfig::default(),
                now,
            );
            let (_, r) = view.cluster.replicas().next().expect("the replica");
            (r.state, r.free_at.is_some())
        };
        assert_eq!(state_with(&pod("Running")), (ReplicaState::InUse, true));
        assert_eq!(
            state_with(&pod("Failed")),
            (ReplicaState::Idle, false),
            "a finished pod holds nothing"
        );
    }

    #[test]
    fn each_key_gets_the_stats_its_own_namespace_measured() {
        let cache = |ns: &str, name: &str, history: serde_json::Value| -> BuildCache {
            obj(
                json!({"metadata": {"name": name, "namespace": ns}, "spec": {"key": "shop:main"},
                "status": {"history": history,
                    "snapshots": [{"id": "s1", "time": "2026-11-01T00:00:00Z", "bytes": 7000, "newBytes": 7000}]}}),
            )
        };
        let shop = cache(
            "shop",
            "c",
            json!({"builds": 5, "warmSeconds": 21.5, "coldSeconds": 300.0, "meanGapSeconds": 900.0,
                "lastBuildAt": "2027-01-15T08:00:00Z"}),
        );
        // A second cache of the key by `cacheRef`, with less history: it does not speak.
        let shop_ref = cache("shop", "c-ref", json!({"builds": 1, "warmSeconds": 5.0}));
        let other = cache("lab", "c", json!({"builds": 2, "coldSeconds": 42.0}));
        let fresh: BuildCache = obj(
            json!({"metadata": {"name": "d", "namespace": "shop"}, "spec": {"key": "shop:dev"}, "status": {}}),
        );
        let objects = Objects {
            caches: vec![&shop, &shop_ref, &other, &fresh],
            ..Objects::default()
        };
        let planner = PlannerConfig::default();
        let now = Timestamp::from_second(1_800_000_000).unwrap(); // 2027-01-15T08:00:00Z
        let view = build_view(&objects, &OperatorConfig::default(), &planner, now);
        let c = &view.cluster;
        let stats = |ns: &str, key: &str| c.key(c.key_id(ns, key).unwrap()).stats.clone();

        let shop = stats("shop", "shop:main").expect("measured");
        assert_eq!(
            (shop.warm_seconds, shop.cold_seconds),
            (21.5, 300.0),
            "measured, not the defaults"
        );
        assert_eq!(shop.builds_per_hour, 4.0, "one build every 900 s");
        assert_eq!(
            shop.cache_bytes, 7000,
            "the snapshot's size, none measured by a build"
        );
        assert_eq!(
            shop.fallback_seconds, planner.default_stats.fallback_seconds,
            "never measured"
        );
        let lab = stats("lab", "shop:main").expect("measured");
        assert_eq!(lab.cold_seconds, 42.0, "namespaces never mix");
        assert_eq!(
            lab.builds_per_hour, planner.default_stats.builds_per_hour,
            "no gap measured"
        );
        assert_eq!(
            stats("shop", "shop:dev"),
            None,
            "no history: the planner's defaults"
        );
    }
}

#[cfg(test)]
mod clone_tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_replicas_of_a_class_the_operator_says_clones_and_with_no_writer_are_clonable() {
        let mut config = OperatorConfig::default();
        config.cache.clone_storage_classes = vec!["lvm".into()];
        let n1: Node = obj(
            json!({"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let claim = |name: &str, class: &str| -> PersistentVolumeClaim {
            obj(json!({"metadata": {"name": name, "namespace": "shop"},
                "spec": {"storageClassName": class, "resources": {"requests": {"storage": "20Gi"}}}}))
        };
        let (lvm, plain, busy) = (
            claim("c-r0", "lvm"),
            claim("c-r1", "local"),
            claim("c-r2", "lvm"),
        );
        let writer: Pod = obj(
            json!({"metadata": {"name": "b-build-1", "namespace": "shop",
            "labels": {"hearth.dev/role": "build"}},
            "spec": {"containers": [{"name": "buildkit"}],
                "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c-r2"}}]},
            "status": {"phase": "Running"}}),
        );
        let cache: BuildCache = obj(json!({"metadata": {"name": "c", "namespace": "shop"},
            "spec": {"key": "shop:main"}, "status": {"replicas": [
                {"pvc": "c-r0", "node": "n1", "state": "Idle"},
                {"pvc": "c-r1", "node": "n1", "state": "Idle"},
                {"pvc": "c-r2", "node": "n1", "state": "Snapshotting", "holder": "b"},
                {"pvc": "c-r3", "node": "n1", "state": "Idle", "cloningFor": "other"}]}}));
        let held = claim("c-r3", "lvm");
        let objects = Objects {
            nodes: vec![&n1],
            claims: vec![&lvm, &plain, &busy, &held],
            pods: vec![&writer],
            caches: vec![&cache],
            ..Objects::default()
        };
        config.planner.clone_overhead_seconds = 3.0;
        let view = build_view(
            &objects,
            &config,
            &PlannerConfig::default(),
            Timestamp::from_second(1_800_000_000).unwrap(),
        );
        let c = &view.cluster;
        assert_eq!(c.clone_overhead(), 3.0);
        let by_pvc = |pvc: &str| {
            let id = *view.replicas.iter().find(|(_, r)| r.pvc == pvc).unwrap().0;
            (c.replica(id).unwrap().state, c.clonable(id).cloned())
        };
        assert_eq!(
            by_pvc("c-r0"),
            (
                ReplicaState::Idle,
                Some(Clonable {
                    storage_class: "lvm".into(),
                    capacity_bytes: 20 << 30
                })
            )
        );
        assert_eq!(by_pvc("c-r1").1, None, "a class the operator did not list");
        assert_eq!(by_pvc("c-r2").1, None, "a builder pod still runs on it");
        assert_eq!(
            by_pvc("c-r3").0,
            ReplicaState::InUse,
            "held for another clone: busy to the planner"
        );
        // The build's own new replica: its cache's class and size, or the operator's defaults.
        assert_eq!(
            clone_target(None, &config),
            None,
            "the default class is not listed"
        );
        config.cache.storage_class_name = "lvm".into();
        assert_eq!(
            clone_target(None, &config),
            Some(CloneTarget {
                storage_class: "lvm".into(),
                capacity_bytes: 50 << 30
            })
        );
    }
}
