//! What the controller keeps of each watched object in memory. Every object a real API server
//! returns carries `metadata.managedFields` (one entry per field manager, each a tree of the
//! fields it owns: often larger than the object itself) and, after `kubectl apply`, the whole
//! object again in the `kubectl.kubernetes.io/last-applied-configuration` annotation. No
//! reconciler reads either, and at 50,000 ImageBuilds they were most of the controller's heap.
//! Nodes also list every image they hold (`status.images`), which nothing here reads.
//! Pure: applied to each watch event before the reflector stores it.

use k8s_openapi::api::core::v1::Node;
use kube::Resource;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageBuild;
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
}
