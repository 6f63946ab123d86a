//! The resources the fake API server serves: built-in kinds, custom resources registered from
//! CustomResourceDefinitions, and the discovery documents (`/api`, `/apis`, `/api/v1`,
//! `/apis/<group>/<version>`) that describe them.

use std::sync::Arc;

use serde_json::{json, Value};

/// One served resource (one group/version/plural).
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    /// Has a `status` subresource: writes to the main resource leave status alone.
    pub status: bool,
    pub short_names: Vec<String>,
    /// Registered from a CRD (create drops `status`, as for every CR with a status subresource).
    pub custom: bool,
    /// The CRD version's openAPIV3Schema: objects are pruned, defaulted and validated by it.
    pub schema: Option<Arc<Value>>,
}

impl ResourceType {
    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            status: false,
            short_names: Vec::new(),
            custom: false,
            schema: None,
        }
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Identifies the collection: `v1/pods`, `batch/v1/jobs`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.api_version(), self.plural)
    }

    /// `pods`, `jobs.batch`: how the real server names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Every served resource type.
#[derive(Clone, Debug)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Registry {
    /// The built-in resources a Hearth cluster uses.
    pub fn builtin() -> Self {
        let b = ResourceType::builtin;
        let types = vec![
            b("", "v1", "Pod", "pods", true).with_status(),
            b(
                "",
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
            )
            .with_status(),
            b("", "v1", "PersistentVolume", "persistentvolumes", false).with_status(),
            b("", "v1", "Node", "nodes", false).with_status(),
            b("", "v1", "Namespace", "namespaces", false).with_status(),
            b("", "v1", "Secret", "secrets", true),
            b("", "v1", "ConfigMap", "configmaps", true),
            b("", "v1", "Event", "events", true),
            b("", "v1", "Service", "services", true).with_status(),
            b("", "v1", "ServiceAccount", "serviceaccounts", true),
            b("", "v1", "Endpoints", "endpoints", true),
            b("batch", "v1", "Job", "jobs", true).with_status(),
            b("coordination.k8s.io", "v1", "Lease", "leases", true),
            b("events.k8s.io", "v1", "Event", "events", true),
            b(
                "storage.k8s.io",
                "v1",
                "StorageClass",
                "storageclasses",
                false,
            ),
            b(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            )
            .with_status(),
        ];
        Registry { types }
    }

    /// Adds a type, replacing one with the same group/version/plural.
    pub fn add(&mut self, rt: ResourceType) {
        self.types.retain(|t| t.key() != rt.key());
        self.types.push(rt);
    }

    pub fn remove(&mut self, rt: &ResourceType) {
        self.types.retain(|t| t.key() != rt.key());
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The `/api` document.
    pub fn api_versions(&self, address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
        })
    }

    /// The `/apis` document: every group but the core one.
    pub fn group_list(&self) -> Value {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) if !versions.contains(&t.version) => {
                    versions.push(t.version.clone())
                }
                Some(_) => {}
                None => groups.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(name, versions)| {
                let gv = |v: &String| json!({"groupVersion": format!("{name}/{v}"), "version": v});
                json!({
                    "name": name,
                    "versions": versions.iter().map(gv).collect::<Vec<_>>(),
                    "preferredVersion": gv(&versions[0]),
                })
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// The APIResourceList of one group/version, or None when nothing is served there.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut resources = Vec::new();
        for t in self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
        {
            resources.push(json!({
                "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
                "kind": t.kind, "verbs": verbs, "shortNames": t.short_names,
            }));
            let mut subs = Vec::new();
            if t.status {
                subs.push(("status", t.kind.as_str(), json!(["get", "patch", "update"])));
            }
            if t.group.is_empty() && t.plural == "pods" {
                subs.push(("log", "Pod", json!(["get"])));
                subs.push(("binding", "Binding", json!(["create"])));
            }
            for (sub, kind, verbs) in subs {
                resources.push(json!({
                    "name": format!("{}/{sub}", t.plural), "singularName": "",
                    "namespaced": t.namespaced, "kind": kind, "verbs": verbs,
                }));
            }
        }
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources,
        }))
    }
}

/// The served versions of a CustomResourceDefinition (JSON form), as resource types.
pub fn types_from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
        return Err("not a CustomResourceDefinition".into());
    }
    let spec = crd.get("spec").ok_or("CRD without spec")?;
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).map(str::to_string);
    let group = s("/group").ok_or("CRD without spec.group")?;
    let kind = s("/names/kind").ok_or("CRD without spec.names.kind")?;
    let plural = s("/names/plural").ok_or("CRD without spec.names.plural")?;
    let singular = s("/names/singular").unwrap_or_else(|| kind.to_lowercase());
    let namespaced = s("/scope").as_deref() != Some("Cluster");
    let short_names: Vec<String> = spec
        .pointer("/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("CRD without spec.versions")?;
    Ok(versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
        .filter_map(|v| {
            Some(ResourceType {
                group: group.clone(),
                version: v.get("name")?.as_str()?.to_string(),
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                namespaced,
                status: v.pointer("/subresources/status").is_some(),
                short_names: short_names.clone(),
                custom: true,
                schema: v
                    .pointer("/schema/openAPIV3Schema")
                    .map(|s| Arc::new(s.clone())),
            })
        })
        .collect())
}
