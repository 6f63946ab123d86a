//! The replica PVC: one buildkitd state directory of one BuildCache, empty or cloned from
//! another replica's PVC.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, TypedLocalObjectReference,
    TypedObjectReference, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::labels;
use crate::api::{BuildCache, VolumeAccessMode};
use crate::controller::config::OperatorConfig;

/// The PVC of replica `n` of `cache`, owned by the BuildCache (deleted with it).
pub fn replica_pvc(
    cache: &BuildCache,
    n: u32,
    owner: OwnerReference,
    config: &OperatorConfig,
) -> PersistentVolumeClaim {
    let cache_name = cache.metadata.name.clone().unwrap_or_default();
    let mut labels = BTreeMap::new();
    labels.insert(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string());
    labels.insert(labels::CACHE.to_string(), cache_name.clone());
    let storage_class = storage_class(cache, config);
    let access_mode = match cache.spec.storage.access_mode {
        VolumeAccessMode::ReadWriteOnce => "ReadWriteOnce",
        VolumeAccessMode::ReadWriteOncePod => "ReadWriteOncePod",
    };
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(labels::replica_pvc_name(&cache_name, n)),
            namespace: cache.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![access_mode.to_string()]),
            storage_class_name: storage_class,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    cache.spec.storage.size.clone(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The StorageClass a replica PVC of `cache` gets: the cache's own, else the operator's
/// default, else none (the cluster's default class).
pub fn storage_class(cache: &BuildCache, config: &OperatorConfig) -> Option<String> {
    cache
        .spec
        .storage
        .storage_class_name
        .clone()
        .or_else(|| Some(config.cache.storage_class_name.clone()).filter(|s| !s.is_empty()))
}

/// Makes `pvc` a clone of the PVC `source` of its namespace: its volume is provisioned as a
/// copy of the source's (a CSI volume clone). Kubernetes clones only within a namespace and
/// into a request at least the source's size, and the CSI driver must have `CLONE_VOLUME`;
/// for node-local volumes the clone is on the source's node. `dataSourceRef` says the same as
/// `dataSource`, as the API server would fill it in.
pub fn clone_of(mut pvc: PersistentVolumeClaim, source: &str) -> PersistentVolumeClaim {
    let spec = pvc.spec.get_or_insert_with(Default::default);
    spec.data_source = Some(TypedLocalObjectReference {
        api_group: None,
        kind: "PersistentVolumeClaim".into(),
        name: source.into(),
    });
    spec.data_source_ref = Some(TypedObjectReference {
        api_group: None,
        kind: "PersistentVolumeClaim".into(),
        name: source.into(),
        namespace: None,
    });
    pvc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BuildCacheSpec;

    fn cache(class: Option<&str>) -> BuildCache {
        let mut spec: BuildCacheSpec =
            serde_json::from_value(serde_json::json!({"key": "k"})).unwrap();
        spec.storage.storage_class_name = class.map(Into::into);
        let mut bc = BuildCache::new("shop-main", spec);
        bc.metadata.namespace = Some("shop".into());
        bc
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "hearth.dev/v1alpha1".into(),
            kind: "BuildCache".into(),
            name: "shop-main".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn pvc_takes_size_class_and_owner() {
        let mut config = OperatorConfig::default();
        config.cache.storage_class_name = "local-path".into();
        let pvc = replica_pvc(&cache(None), 2, owner(), &config);
        assert_eq!(pvc.metadata.name.as_deref(), Some("shop-main-r2"));
        assert_eq!(pvc.metadata.namespace.as_deref(), Some("shop"));
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
        assert_eq!(spec.access_modes.unwrap(), vec!["ReadWriteOnce"]);
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"].0,
            "50Gi"
        );
        assert_eq!(pvc.metadata.owner_references.unwrap()[0].kind, "BuildCache");
        // The cache's own class wins over the operator default; no default means the cluster's.
        let pvc = replica_pvc(&cache(Some("topolvm")), 0, owner(), &config);
        assert_eq!(
            pvc.spec.unwrap().storage_class_name.as_deref(),
            Some("topolvm")
        );
        let pvc = replica_pvc(&cache(None), 0, owner(), &OperatorConfig::default());
        assert_eq!(pvc.spec.unwrap().storage_class_name, None);
    }

    #[test]
    fn a_clone_names_its_source_pvc_as_data_source() {
        let mut config = OperatorConfig::default();
        config.cache.storage_class_name = "topolvm-thin".into();
        let pvc = clone_of(
            replica_pvc(&cache(None), 1, owner(), &config),
            "shop-base-r0",
        );
        let value = serde_json::to_value(&pvc).unwrap();
        let source = serde_json::json!({"kind": "PersistentVolumeClaim", "name": "shop-base-r0"});
        assert_eq!(value["spec"]["dataSource"], source);
        assert_eq!(value["spec"]["dataSourceRef"], source);
        // Everything else is the replica's own PVC: its name, class, size and owner.
        assert_eq!(value["metadata"]["name"], "shop-main-r1");
        assert_eq!(value["spec"]["storageClassName"], "topolvm-thin");
        assert_eq!(value["spec"]["resources"]["requests"]["storage"], "50Gi");
        let plain = serde_json::to_value(replica_pvc(&cache(None), 1, owner(), &config)).unwrap();
        assert!(plain["spec"].get("dataSource").is_none());
    }
}
