//! A fleet at rest, as the API server stores it, for the benchmarks: Ready Nodes with a cache
//! budget, BuildCaches whose replicas are Idle and saved in their newest snapshot (each with
//! its bound PVC and local PV), and finished ImageBuilds (Succeeded, saved, replica released),
//! spread over namespaces. Deterministic: object `i` is the same in every run.

use serde_json::{json, Value};

/// Bytes in one replica and one snapshot.
const REPLICA_BYTES: i64 = 4 << 30;

/// The sizes of a fleet.
#[derive(Clone, Copy, Debug)]
pub struct Fleet {
    pub nodes: usize,
    pub caches: usize,
    pub replicas_per_cache: usize,
    pub builds: usize,
    pub namespaces: usize,
}

impl Fleet {
    /// Namespace of cache `i` (and of the builds that use it).
    pub fn namespace(&self, cache: usize) -> String {
        format!("team-{}", cache % self.namespaces.max(1))
    }

    /// Every namespace of the fleet.
    pub fn namespace_names(&self) -> Vec<String> {
        (0..self.namespaces.min(self.caches.max(1)))
            .map(|i| self.namespace(i))
            .collect()
    }

    pub fn node_name(&self, i: usize) -> String {
        format!("node-{i:05}")
    }

    /// Node `i`: Ready, in one of three zones, with a budget no cache of the fleet fills.
    pub fn node(&self, i: usize) -> Value {
        let name = self.node_name(i);
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/zone": format!("zone-{}", i % 3)},
                "annotations": {"hearth.dev/cache-budget": "2Ti"},
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            },
        })
    }

    fn key(i: usize) -> String {
        format!("github.com/acme/repo-{i}:main")
    }

    pub fn cache_name(i: usize) -> String {
        hearth::api::keys::cache_name_for_key(&Self::key(i))
    }

    fn pvc_name(cache: usize, r: usize) -> String {
        format!("{}-r{r}", Self::cache_name(cache))
    }

    fn pv_name(cache: usize, r: usize) -> String {
        format!("pv-{cache}-{r}")
    }

    /// Node of replica `r` of cache `i`: the replicas of one cache on different nodes.
    fn replica_node(&self, cache: usize, r: usize) -> usize {
        (cache * self.replicas_per_cache + r) % self.nodes.max(1)
    }

    /// BuildCache `i`: `replicas_per_cache` Idle replicas saved in the newest of two
    /// snapshots, gc done an hour ago, used `now - i % 3600` seconds ago.
    pub fn cache(&self, i: usize, now: i64) -> Value {
        let used = ts(now - (i % 3600) as i64);
        let newest = format!("snap-{i}-2");
        let replicas: Vec<Value> = (0..self.replicas_per_cache)
            .map(|r| {
                let node = self.replica_node(i, r);
                json!({
                    // No zone: a replica on a local PV is located by its node alone, as
                    // the controller records it.
                    "pvc": Self::pvc_name(i, r), "node": self.node_name(node), "state": "Idle",
                    "sizeBytes": REPLICA_BYTES, "lastUsed": used, "snapshotId": newest,
                    "buildsSinceSnapshot": 0, "uses": 10,
                })
            })
            .collect();
        let mut locations: Vec<String> = (0..self.replicas_per_cache)
            .map(|r| self.node_name(self.replica_node(i, r)))
            .collect();
        locations.sort();
        locations.dedup();
        json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "BuildCache",
            "metadata": {"name": Self::cache_name(i), "namespace": self.namespace(i),
                "finalizers": ["hearth.dev/snapshots"]},
            "spec": {"key": Self::key(i), "storage": {"size": "10Gi"},
                "maxReplicas": self.replicas_per_cache.max(1)},
            "status": {
                "replicas": replicas,
                "snapshots": [
                    {"id": format!("snap-{i}-1"), "time": ts(now - 7200), "bytes": REPLICA_BYTES, "newBytes": REPLICA_BYTES},
                    {"id": newest, "time": ts(now - 3600 - (i % 600) as i64), "bytes": REPLICA_BYTES, "newBytes": 1 << 28},
                ],
                "replicaCount": self.replicas_per_cache,
                "locations": locations.join(","),
                "snapshotCount": 2,
                "totalBytes": REPLICA_BYTES * self.replicas_per_cache as i64,
                "lastUsed": used,
                "lastBuild": format!("build-{i}"),
                "hits": {"hot": 8, "restored": 1, "cold": 1},
                "history": {"builds": 10, "warmSeconds": 40.0, "coldSeconds": 400.0,
                    "cacheBytes": REPLICA_BYTES, "meanGapSeconds": 3600.0, "lastBuildAt": used},
                "snapshotBytes": REPLICA_BYTES + (1 << 28),
                "operations": 3,
                "lastGc": ts(now - 1800),
                "observedGeneration": 1,
                "conditions": [{"type": "StoreReachable", "status": "True", "reason": "Saved",
                    "message": "the last store operation worked", "lastTransitionTime": ts(now - 7200)}],
            },
        })
    }

    /// The PVC of replica `r` of cache `i`, bound to its PV.
    pub fn claim(&self, i: usize, r: usize) -> Value {
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": Self::pvc_name(i, r), "namespace": self.namespace(i),
                "labels": {"app.kubernetes.io/managed-by": "hearth", "hearth.dev/cache": Self::cache_name(i)}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                "resources": {"requests": {"storage": "10Gi"}}, "volumeName": Self::pv_name(i, r)},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}},
        })
    }

    /// The local PV of replica `r` of cache `i`, pinned to its node.
    pub fn volume(&self, i: usize, r: usize) -> Value {
        let node = self.node_name(self.replica_node(i, r));
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": Self::pv_name(i, r)},
            "spec": {
                "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local",
                "local": {"path": format!("/var/lib/hearth/pv-{i}-{r}")},
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": self.namespace(i), "name": Self::pvc_name(i, r)},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            },
            "status": {"phase": "Bound"},
        })
    }

    /// ImageBuild `i`: a Hot build of cache `i % caches` that finished `i` seconds before
    /// `now` and whose save ended; its replica is released.
    pub fn build(&self, i: usize, now: i64) -> Value {
        let cache = i % self.caches.max(1);
        let done = now - (i % 86_400) as i64;
        let condition = |type_: &str, reason: &str| {
            json!({"type": type_, "status": "True", "reason": reason, "message": "",
                "lastTransitionTime": ts(done), "observedGeneration": 1})
        };
        json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild",
            "metadata": {"name": format!("build-{i}"), "namespace": self.namespace(cache),
                "finalizers": ["hearth.dev/release"]},
            "spec": {
                "source": {"git": {"url": format!("https://github.com/acme/repo-{cache}.git"), "revision": "main"}},
                "output": {"image": format!("registry.example/acme/repo-{cache}:main")},
                "cache": {"key": Self::key(cache), "mode": "ReadWrite"},
            },
            "status": {
                "phase": "Succeeded",
                "observedGeneration": 1,
                "cacheKey": Self::key(cache),
                "placement": {"node": self.node_name(self.replica_node(cache, 0)),
                    "replica": Self::pvc_name(cache, 0), "cache": Self::cache_name(cache),
                    "warmth": "Hot", "reason": "an idle replica of the key is on the node"},
                "imageDigest": format!("sha256:{i:064x}"),
                "startTime": ts(done - 60),
                "completionTime": ts(done),
                "durations": {"queued": "1s", "build": "40s", "snapshot": "12s"},
                "attempts": 1,
                "conditions": [
                    condition("Placed", "Hot"), condition("CacheReady", "Hot"),
                    condition("Built", "Pushed"), condition("Snapshotted", "Saved"),
                    condition("Succeeded", "Succeeded"),
                ],
            },
        })
    }
}

/// RFC 3339 of seconds since the epoch.
fn ts(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .expect("a valid time")
        .to_string()
}
