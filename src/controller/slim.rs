//! What the controller keeps of each watched object in memory. Every object a real API server
//! returns carries `metadata.managedFields` (one entry per field manager, each a tree of the
//! fields it owns: often larger than the object itself) and, after `kubectl apply`, the whole
//! object again in the `kubectl.kubernetes.io/last-applied-configuration` annotation. No
//! reconciler reads either, and at 50,000 ImageBuilds they were most of the controller's heap.
//! Nodes also list every image they hold (`status.images`), which nothing here reads.
//! Finished ImageBuilds, most of the builds of a busy cluster, are kept as the few fields
//! deciding about a finished build reads ([`StoredBuild`]), retention included.
//! Pure: applied to each watch event before the reflector stores it.

use std::borrow::Cow;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::{Deserialize, Deserializer};

use crate::api::{ImageBuild, ImageBuildStatus, Phase, Placement};
use crate::controller::image_build::status::saving;

/// The annotation `kubectl apply` writes: the object again, as last applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconciler reads from an object's metadata. `managedFields` becomes absent
/// (not empty): were the object ever written back whole, an absent list leaves the server's
/// field ownership as it is, where an empty one would reset it.
pub fn metadata<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A Node as the planner's view reads it: metadata, conditions, capacity and allocatable, not
/// the images it holds nor the volumes attached to it.
pub fn node(node: &mut Node) {
    metadata(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
    }
}

/// The in-memory annotation a finished build rebuilt from its compact form carries: such a
/// build has no spec and only part of its status, so its status must never be written back.
pub const COMPACTED: &str = "hearth.dev/compacted-in-memory";

/// What the ImageBuild controller keeps of one build: the whole of a build under way (or
/// still saving its cache), and of a finished one only what deciding about a finished build
/// reads: its metadata (deletion, finalizers, name), its phase and the replica it was placed
/// on (released by a cancel, or on deletion), and for retention when it ended and the TTL its
/// spec sets for its outcome. A finished build whole costs about 3 KiB in
/// memory, compact about 0.7 KiB; at 50,000 builds that is most of the controller's heap.
/// Deserializes from an ImageBuild, so a watcher of it reads the ImageBuild API.
// Finished is the common variant (most builds are finished): boxing it would add an
// allocation to nearly every stored build to shrink the few whole ones.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum StoredBuild {
    /// A build not finished, or finished and still saving.
    Whole(Arc<ImageBuild>),
    /// A finished build, compact.
    Finished(FinishedBuild),
}

/// The compact form of a finished build.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedBuild {
    metadata: ObjectMeta,
    phase: Phase,
    observed_generation: Option<i64>,
    cache: Option<String>,
    replica: Option<String>,
    /// `status.completionTime`.
    completed: Option<Timestamp>,
    /// The build's own TTL for its outcome (`spec.retention`), if it sets one.
    ttl: Option<std::time::Duration>,
}

impl FinishedBuild {
    /// Its metadata (name, uid, resourceVersion, deletion).
    pub fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    /// Succeeded, Failed or Cancelled.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// When it ended (`status.completionTime`), if recorded.
    pub fn completed(&self) -> Option<Timestamp> {
        self.completed
    }
    /// The TTL its spec sets for its outcome, if any.
    pub fn ttl(&self) -> Option<std::time::Duration> {
        self.ttl
    }
}

impl From<ImageBuild> for StoredBuild {
    fn from(build: ImageBuild) -> Self {
        let finished = build
            .status
            .as_ref()
            .and_then(|s| s.phase.filter(|p| p.is_terminal()).map(|p| (s, p)))
            .filter(|(s, _)| !saving(s));
        let Some((status, phase)) = finished else {
            return StoredBuild::Whole(Arc::new(build));
        };
        let placement = status.placement.as_ref();
        let cache = placement.and_then(|p| p.cache.clone());
        let replica = placement.and_then(|p| p.replica.clone());
        let completed = status.completion_time.as_ref().map(|t| t.0);
        let retention = build.spec.retention.as_ref();
        let ttl = match phase {
            Phase::Succeeded => retention.and_then(|r| r.ttl_after_succeeded),
            _ => retention.and_then(|r| r.ttl_after_failed),
        }
        .map(std::time::Duration::from);
        StoredBuild::Finished(FinishedBuild {
            completed,
            ttl,
            observed_generation: status.observed_generation,
            metadata: build.metadata,
            phase,
            cache,
            replica,
        })
    }
}

impl StoredBuild {
    /// The compact form of a finished build (`None` for a build under way or still saving).
    pub fn finished(&self) -> Option<&FinishedBuild> {
        match self {
            StoredBuild::Finished(f) => Some(f),
            StoredBuild::Whole(_) => None,
        }
    }

    /// The build to reconcile: the one stored, or a finished build rebuilt from its compact
    /// form (no spec; status with its phase, observed generation and placement's cache and
    /// replica, completion time; marked [`COMPACTED`]).
    pub fn build(&self) -> Arc<ImageBuild> {
        match self {
            StoredBuild::Whole(build) => build.clone(),
            StoredBuild::Finished(f) => {
                let mut metadata = f.metadata.clone();
                metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(COMPACTED.into(), "true".into());
                let placement = (f.cache.is_some() || f.replica.is_some()).then(|| Placement {
                    cache: f.cache.clone(),
                    replica: f.replica.clone(),
                    ..Placement::default()
                });
                Arc::new(ImageBuild {
                    metadata,
                    spec: Default::default(),
                    status: Some(ImageBuildStatus {
                        phase: Some(f.phase),
                        observed_generation: f.observed_generation,
                        placement,
                        completion_time: f.completed.map(Time),
                        ..ImageBuildStatus::default()
                    }),
                })
            }
        }
    }
}

/// Whether `build` was rebuilt from a compact finished build (so only part of it is known).
pub fn compacted(build: &ImageBuild) -> bool {
    build
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(COMPACTED))
}

impl<'de> Deserialize<'de> for StoredBuild {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ImageBuild::deserialize(deserializer).map(StoredBuild::from)
    }
}

impl Resource for StoredBuild {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ImageBuild::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        ImageBuild::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        ImageBuild::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        ImageBuild::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            StoredBuild::Whole(b) => &b.metadata,
            StoredBuild::Finished(f) => &f.metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            StoredBuild::Whole(b) => &mut Arc::make_mut(b).metadata,
            StoredBuild::Finished(f) => &mut f.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageBuildSpec;
    use serde_json::json;

    fn build() -> ImageBuild {
        serde_json::from_value(json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild",
            "metadata": {
                "name": "b", "namespace": "team-a", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "shop"},
                "annotations": {LAST_APPLIED: "{\"spec\":{}}", "team": "payments"},
                "finalizers": ["hearth.dev/release"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "apiVersion": "hearth.dev/v1alpha1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:output": {"f:image": {}}}}}]
            },
            "spec": {"source": {"git": {"url": "https://github.com/acme/shop.git"}},
                     "output": {"image": "registry.example/acme/shop:1"}},
            "status": {"phase": "Succeeded", "cacheKey": "k"}
        }))
        .unwrap()
    }

    #[test]
    fn metadata_drops_field_ownership_and_last_applied_but_nothing_read() {
        let mut b = build();
        let before = b.clone();
        metadata(&mut b);
        assert_eq!(b.metadata.managed_fields, None);
        let annotations = b.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["team"], "payments");
        // Everything else is as it was.
        b.metadata.managed_fields = before.metadata.managed_fields.clone();
        b.metadata.annotations = before.metadata.annotations.clone();
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::to_value(&before).unwrap()
        );
    }

    #[test]
    fn metadata_leaves_no_empty_annotations() {
        let mut b = build();
        b.metadata
            .annotations
            .as_mut()
            .unwrap()
            .retain(|k, _| k == LAST_APPLIED);
        metadata(&mut b);
        assert_eq!(b.metadata.annotations, None);
    }

    #[test]
    fn node_keeps_what_the_view_reads() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "a"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {"ephemeral-storage": "100Gi"},
                "images": [{"names": ["debian:12"], "sizeBytes": 50000000}],
                "volumesInUse": ["kubernetes.io/csi/x"]
            }
        }))
        .unwrap();
        node(&mut n);
        let status = n.status.as_ref().unwrap();
        assert_eq!(status.images, None);
        assert_eq!(status.volumes_in_use, None);
        assert_eq!(n.metadata.managed_fields, None);
        assert_eq!(status.conditions.as_ref().unwrap()[0].status, "True");
        assert!(status
            .allocatable
            .as_ref()
            .unwrap()
            .contains_key("ephemeral-storage"));
        assert_eq!(n.metadata.labels.as_ref().unwrap().len(), 1);
    }

    fn finished(phase: &str, snapshotted: &str) -> ImageBuild {
        let mut b = build();
        let status = json!({
            "phase": phase, "cacheKey": "k", "imageDigest": "sha256:abc",
            "completionTime": "2026-11-30T00:00:00Z",
            "placement": {"node": "n1", "replica": "c-r0", "cache": "c", "warmth": "Hot"},
            "conditions": [{"type": "Snapshotted", "status": snapshotted, "reason": "r",
                "message": "", "lastTransitionTime": "2026-11-30T00:00:00Z"}]
        });
        b.status = Some(serde_json::from_value(status).unwrap());
        b
    }

    #[test]
    fn a_finished_build_is_kept_compact_with_what_deciding_about_it_reads() {
        for phase in ["Succeeded", "Failed", "Cancelled"] {
            let whole = finished(phase, "True");
            let stored: StoredBuild =
                serde_json::from_value(serde_json::to_value(&whole).unwrap()).unwrap();
            assert!(matches!(stored, StoredBuild::Finished(_)), "{phase}");
            let b = stored.build();
            assert!(compacted(&b));
            assert!(!compacted(&whole));
            assert_eq!(b.spec, ImageBuildSpec::default());
            let status = b.status.clone().unwrap();
            assert_eq!(status.phase, whole.status.as_ref().unwrap().phase);
            let placement = status.placement.unwrap();
            assert_eq!(placement.cache.as_deref(), Some("c"));
            assert_eq!(placement.replica.as_deref(), Some("c-r0"));
            assert_eq!(placement.node, None);
            assert!(status.conditions.is_empty());
            assert_eq!(
                status.completion_time,
                whole.status.as_ref().unwrap().completion_time
            );
            // Metadata whole: deletion, finalizers and names are read from it.
            let mut meta = b.metadata.clone();
            meta.annotations.as_mut().unwrap().remove(COMPACTED);
            assert_eq!(meta, whole.metadata);
        }
    }

    #[test]
    fn a_finished_build_keeps_when_it_ended_and_its_own_ttl_for_its_outcome() {
        let retention = json!({"ttlAfterSucceeded": "2h", "ttlAfterFailed": "90m"});
        for (phase, ttl) in [("Succeeded", 7200), ("Failed", 5400), ("Cancelled", 5400)] {
            let mut b = finished(phase, "True");
            b.spec.retention = Some(serde_json::from_value(retention.clone()).unwrap());
            let stored = StoredBuild::from(b);
            let f = stored.finished().expect("compact");
            assert_eq!(f.phase().to_string(), phase);
            assert_eq!(
                f.ttl(),
                Some(std::time::Duration::from_secs(ttl)),
                "{phase}"
            );
            assert_eq!(f.completed(), Some("2026-11-30T00:00:00Z".parse().unwrap()));
        }
        let only_failed = json!({"ttlAfterFailed": "90m"});
        let mut b = finished("Succeeded", "True");
        b.spec.retention = Some(serde_json::from_value(only_failed).unwrap());
        assert_eq!(StoredBuild::from(b).finished().unwrap().ttl(), None);
        assert_eq!(StoredBuild::from(build()).finished().unwrap().ttl(), None);
    }

    #[test]
    fn builds_under_way_or_still_saving_are_kept_whole() {
        let mut under_way = build();
        under_way.status.as_mut().unwrap().phase = Some(Phase::Building);
        let saving = finished("Succeeded", "Unknown");
        let pending = {
            let mut b = build();
            b.status = None;
            b
        };
        for b in [under_way, saving, pending] {
            match StoredBuild::from(b.clone()) {
                StoredBuild::Whole(kept) => {
                    assert_eq!(
                        serde_json::to_value(&*kept).unwrap(),
                        serde_json::to_value(&b).unwrap()
                    );
                    assert!(!compacted(&StoredBuild::Whole(kept).build()));
                }
                StoredBuild::Finished(_) => panic!("compacted: {:?}", b.status),
            }
        }
    }

    #[test]
    fn a_stored_build_reads_and_watches_the_imagebuild_api() {
        assert_eq!(
            StoredBuild::url_path(&(), Some("team-a")),
            ImageBuild::url_path(&(), Some("team-a"))
        );
        assert_eq!(StoredBuild::kind(&()), "ImageBuild");
        assert_eq!(StoredBuild::api_version(&()), "hearth.dev/v1alpha1");
        // What owner references name (the builds' pods and Jobs) maps to the stored build.
        let mut stored = StoredBuild::from(finished("Succeeded", "True"));
        metadata(&mut stored);
        assert_eq!(stored.meta().name.as_deref(), Some("b"));
        assert_eq!(stored.meta().managed_fields, None);
    }
}
