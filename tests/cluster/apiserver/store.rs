//! The server's state and the semantics of each write, as the real API server has them: one
//! global resourceVersion, an event log per collection, create defaults and admission,
//! optimistic concurrency, status subresources, generation, finalizers and graceful pod
//! deletion. Everything here runs under the server's one lock and never awaits.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use jiff::{SignedDuration, Timestamp, Unit};
use serde_json::{json, Map, Value};

use super::registry::{types_from_crd, Registry, ResourceType};
use super::selectors::Selectors;
use super::{admission, apply};

/// An error answered as a `Status` object.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let msg = format!("{} \"{name}\" not found", rt.qualified());
        Self::new(404, "NotFound", msg).about(rt, name)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let msg = format!("{} \"{name}\" already exists", rt.qualified());
        Self::new(409, "AlreadyExists", msg).about(rt, name)
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            rt.qualified()
        );
        Self::new(409, "Conflict", msg).about(rt, name)
    }

    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(rt: &ResourceType, name: &str, why: &str) -> Self {
        let msg = format!("{} \"{name}\" is invalid: {why}", rt.kind);
        Self::new(422, "Invalid", msg).about(rt, name)
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

pub type Result<T> = std::result::Result<T, ApiError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change in a collection; `prev` is the object before it (for selector transitions).
#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub object: Value,
    pub prev: Option<Value>,
}

/// The objects of one resource type, by (namespace, name), and its change log.
#[derive(Default, Debug)]
pub struct Collection {
    pub objects: BTreeMap<(String, String), Value>,
    pub log: Vec<Event>,
}

/// What a DELETE did.
pub enum Deletion {
    /// Removed; the object as last seen (with the deletion's resourceVersion).
    Gone(Value),
    /// Still there (finalizers, or a running pod's grace period), marked for deletion.
    Remains(Value),
}

/// DeleteOptions, from the query and the body.
#[derive(Default, Debug)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    /// Strategic merge patch, approximated by a merge patch: lists are replaced, not merged
    /// by key, and `$`-directives are dropped.
    Strategic,
    Json,
    /// Server-side apply, approximated by a merge patch plus field-ownership conflicts.
    Apply {
        force: bool,
    },
}

/// A write that is made to fail (to test retries).
#[derive(Clone, Debug)]
pub struct Fault {
    pub code: u16,
}

/// All state of the server.
pub struct State {
    pub rv: u64,
    pub registry: Registry,
    pub collections: HashMap<String, Collection>,
    /// Events with a resourceVersion at or below this are no longer in the logs.
    pub compacted: u64,
    pub pod_logs: HashMap<(String, String), String>,
    /// Requests by (resource[/subresource], verb).
    pub requests: BTreeMap<(String, String), u64>,
    /// Pending failures of writes, by resource plural.
    pub faults: HashMap<String, VecDeque<Fault>>,
    pub latency: std::time::Duration,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: std::time::Duration,
    seed: u64,
    counter: u64,
}

pub fn now() -> Timestamp {
    Timestamp::now()
        .round(Unit::Second)
        .unwrap_or(Timestamp::now())
}

fn meta(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str)
}

fn finalizers_empty(obj: &Value) -> bool {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty())
}

fn add_finalizer(obj: &mut Value, name: &str) {
    let m = meta_mut(obj);
    let f = m.entry("finalizers").or_insert_with(|| json!([]));
    if !f.is_array() {
        *f = json!([]);
    }
    let list = f.as_array_mut().expect("array");
    if !list.iter().any(|v| v == name) {
        list.push(json!(name));
    }
}

/// Everything but metadata and status (what `generation` counts changes of).
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

/// Drops strategic-merge-patch directives (`$patch`, `$setElementOrder/...`...).
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// The validation of updates the real server does for the built-in kinds a Hearth cluster
/// writes: a pod's spec is fixed but for images, deadlines, tolerations and scheduling gates
/// (placing a pod is `pods/binding`, not an update of `spec.nodeName`); a Job's template and
/// selector are fixed; a claim's spec is fixed but for its requests and (once) its volume.
fn immutable_spec(rt: &ResourceType, name: &str, old: &Value, new: &Value) -> Result<()> {
    let strip = |obj: &Value, drop: &dyn Fn(&mut Value)| {
        let mut spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        drop(&mut spec);
        spec
    };
    let (message, drop): (&str, &dyn Fn(&mut Value)) = if is_core(rt, "pods") {
        (
            "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            &|spec: &mut Value| {
                if let Some(m) = spec.as_object_mut() {
                    for k in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates"] {
                        m.remove(k);
                    }
                    for list in ["containers", "initContainers"] {
                        for c in m.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                            if let Some(c) = c.as_object_mut() {
                                c.remove("image");
                            }
                        }
                    }
                }
            },
        )
    } else if rt.group == "batch" && rt.plural == "jobs" {
        (
            "spec.template: Invalid value: field is immutable",
            &|spec: &mut Value| {
                if let Some(m) = spec.as_object_mut() {
                    m.retain(|k, _| k == "template" || k == "selector");
                }
            },
        )
    } else if is_core(rt, "persistentvolumeclaims") {
        (
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            &|spec: &mut Value| {
                if let Some(m) = spec.as_object_mut() {
                    m.remove("volumeAttributesClassName");
                    if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                        r.remove("requests");
                    }
                }
            },
        )
    } else {
        return Ok(());
    };
    let mut new_spec = strip(new, drop);
    let old_spec = strip(old, drop);
    // A claim's volumeName may be set once (binding).
    if is_core(rt, "persistentvolumeclaims")
        && old_spec
            .get("volumeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        if let Some(m) = new_spec.as_object_mut() {
            match old_spec.get("volumeName") {
                Some(v) => m.insert("volumeName".into(), v.clone()),
                None => m.remove("volumeName"),
            };
        }
    }
    if new_spec != old_spec {
        return Err(ApiError::invalid(rt, name, message));
    }
    Ok(())
}

fn is_core(rt: &ResourceType, plural: &str) -> bool {
    rt.group.is_empty() && rt.plural == plural
}

impl State {
    pub fn new() -> Self {
        let seed = RandomState::new().hash_one(0u8);
        let mut s = State {
            rv: 1,
            registry: Registry::builtin(),
            collections: HashMap::new(),
            compacted: 0,
            pod_logs: HashMap::new(),
            requests: BTreeMap::new(),
            faults: HashMap::new(),
            latency: std::time::Duration::ZERO,
            bookmark_interval: std::time::Duration::from_secs(2),
            seed,
            counter: 0,
        };
        let ns = s
            .registry
            .find("", "v1", "namespaces")
            .cloned()
            .expect("namespaces");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            s.create(&ns, None, obj, None).expect("namespace");
        }
        s
    }

    fn random(&mut self) -> u64 {
        self.counter += 1;
        RandomState::new().hash_one((self.seed, self.counter))
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.random();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
                r /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    pub fn collection(&mut self, rt: &ResourceType) -> &mut Collection {
        self.collections.entry(rt.key()).or_default()
    }

    /// Records a change: bumps the global resourceVersion, stores or removes, logs the event.
    fn commit(
        &mut self,
        rt: &ResourceType,
        key: (String, String),
        kind: EventType,
        mut obj: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let col = self.collection(rt);
        if kind == EventType::Deleted {
            col.objects.remove(&key);
        } else {
            col.objects.insert(key, obj.clone());
        }
        col.log.push(Event {
            rv,
            kind,
            object: obj.clone(),
            prev,
        });
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            self.crd_changed(&obj, kind == EventType::Deleted);
        }
        obj
    }

    fn crd_changed(&mut self, crd: &Value, deleted: bool) {
        if let Ok(types) = types_from_crd(crd) {
            for t in types {
                if deleted {
                    self.registry.remove(&t);
                } else {
                    self.registry.add(t);
                }
            }
        }
    }

    fn key(rt: &ResourceType, ns: Option<&str>, name: &str) -> (String, String) {
        let ns = if rt.namespaced { ns.unwrap_or("") } else { "" };
        (ns.to_string(), name.to_string())
    }

    pub fn get(&mut self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value> {
        let key = Self::key(rt, ns, name);
        self.collection(rt)
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// A List of the objects in `ns` (all namespaces when None) that match.
    pub fn list(&mut self, rt: &ResourceType, ns: Option<&str>, sel: &Selectors) -> Value {
        let rv = self.rv;
        let items: Vec<Value> = self
            .collection(rt)
            .objects
            .iter()
            .filter(|((o_ns, _), _)| ns.is_none_or(|ns| !rt.namespaced || ns == o_ns))
            .filter(|(_, obj)| sel.matches(obj))
            .map(|(_, obj)| obj.clone())
            .collect();
        json!({
            "kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": rv.to_string()}, "items": items,
        })
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        manager: Option<&str>,
    ) -> Result<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not an object",
            ));
        }
        for (field, want) in [("apiVersion", rt.api_version()), ("kind", rt.kind.clone())] {
            match obj.get(field).and_then(Value::as_str) {
                Some(v) if v != want => {
                    return Err(ApiError::bad_request(format!(
                        "{field} {v} does not match the resource ({want})"
                    )))
                }
                _ => obj[field] = json!(want),
            }
        }
        let ns = if rt.namespaced {
            let path_ns = ns.ok_or_else(|| ApiError::bad_request("a namespace is required"))?;
            match meta_str(&obj, "namespace") {
                Some(body_ns) if !body_ns.is_empty() && body_ns != path_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => Some(path_ns.to_string()),
            }
        } else {
            None
        };
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => {
                    let prefix = prefix.to_string();
                    loop {
                        let candidate = format!("{prefix}{}", self.suffix());
                        let key = Self::key(rt, ns.as_deref(), &candidate);
                        if !self.collection(rt).objects.contains_key(&key) {
                            break candidate;
                        }
                    }
                }
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ))
                }
            },
        };
        let key = Self::key(rt, ns.as_deref(), &name);
        if self.collection(rt).objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        let uid = self.uid();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        match &ns {
            Some(ns) => m.insert("namespace".into(), json!(ns)),
            None => m.remove("namespace"),
        };
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now().to_string()));
        m.insert("generation".into(), json!(1));
        for gone in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ] {
            m.remove(gone);
        }
        if rt.custom && rt.status {
            obj.as_object_mut().expect("object").remove("status");
        }
        // The manager owns what it sent, not what defaulting and admission add.
        apply::record_update(&mut obj, None, manager, "Update", &rt.api_version());
        self.admit_create(rt, &mut obj, &uid)?;
        let obj = Self::admit_schema(rt, &name, obj, None)?;
        Ok(self.commit(rt, key, EventType::Added, obj, None))
    }

    /// What the real server's defaulting and admission do on create.
    fn admit_create(&mut self, rt: &ResourceType, obj: &mut Value, uid: &str) -> Result<()> {
        let default_phase = |obj: &mut Value, phase: &str| {
            if obj.pointer("/status/phase").is_none() {
                if !obj["status"].is_object() {
                    obj["status"] = json!({});
                }
                obj["status"]["phase"] = json!(phase);
            }
        };
        if is_core(rt, "pods") {
            default_phase(obj, "Pending");
        } else if is_core(rt, "persistentvolumeclaims") {
            add_finalizer(obj, "kubernetes.io/pvc-protection");
            default_phase(obj, "Pending");
        } else if is_core(rt, "persistentvolumes") {
            add_finalizer(obj, "kubernetes.io/pv-protection");
            default_phase(obj, "Pending");
        } else if is_core(rt, "namespaces") {
            default_phase(obj, "Active");
        } else if rt.group == "batch" && rt.plural == "jobs" {
            // The Job strategy's generated selector (unless spec.manualSelector).
            if obj.pointer("/spec/manualSelector") != Some(&json!(true)) {
                let name = meta_str(obj, "name").unwrap_or_default().to_string();
                let labels = json!({
                    "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                    "controller-uid": uid, "job-name": name,
                });
                if !obj["spec"].is_object() {
                    obj["spec"] = json!({});
                }
                obj["spec"]["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                let template = &mut obj["spec"]["template"];
                if !template.is_object() {
                    *template = json!({});
                }
                let tm = meta_mut(template);
                let tl = tm.entry("labels").or_insert_with(|| json!({}));
                if !tl.is_object() {
                    *tl = json!({});
                }
                for (k, v) in labels.as_object().expect("object") {
                    tl[k] = v.clone();
                }
            }
        } else if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let name = meta_str(obj, "name").unwrap_or_default().to_string();
            types_from_crd(obj).map_err(|e| ApiError::invalid(rt, &name, &e))?;
        }
        Ok(())
    }

    /// A custom resource, pruned, defaulted and validated by its CRD's schema.
    fn admit_schema(
        rt: &ResourceType,
        name: &str,
        obj: Value,
        old: Option<&Value>,
    ) -> Result<Value> {
        let Some(schema) = &rt.schema else {
            return Ok(obj);
        };
        admission::admit(schema, &obj, old).map_err(|problems| {
            let list: Vec<String> = problems
                .iter()
                .map(|(f, m)| {
                    if f.is_empty() {
                        m.clone()
                    } else {
                        format!("{f}: {m}")
                    }
                })
                .collect();
            let mut e = ApiError::invalid(rt, name, &format!("[{}]", list.join(", ")));
            e.message = format!(
                "{}.{} \"{name}\" is invalid: [{}]",
                rt.kind,
                rt.group,
                list.join(", ")
            );
            if let Some(d) = e.details.as_mut() {
                d["causes"] = admission::causes(&problems);
            }
            e
        })
    }

    /// PUT on the object (`sub` None) or on its status.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        body: Value,
        manager: Option<&str>,
    ) -> Result<Value> {
        let old = self.get(rt, ns, name)?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not an object",
            ));
        }
        self.write_existing(rt, ns, name, old, body, sub, manager, "Update")
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        kind: PatchKind,
        mut patch: Value,
        manager: Option<&str>,
    ) -> Result<Value> {
        let old = match self.get(rt, ns, name) {
            Ok(old) => old,
            Err(e) => {
                if matches!(kind, PatchKind::Apply { .. }) && sub.is_none() && e.code == 404 {
                    let mut obj = json!({});
                    json_patch::merge(&mut obj, &patch);
                    meta_mut(&mut obj).insert("name".into(), json!(name));
                    let mut owned = self.create(rt, ns, obj, None)?;
                    apply::record_apply(&mut owned, None, &patch, manager, &rt.api_version());
                    let key = Self::key(rt, ns, name);
                    self.collection(rt).objects.insert(key, owned.clone());
                    return Ok(owned);
                }
                return Err(e);
            }
        };
        let mut doc = old.clone();
        match kind {
            PatchKind::Merge => json_patch::merge(&mut doc, &patch),
            PatchKind::Strategic => {
                strip_directives(&mut patch);
                json_patch::merge(&mut doc, &patch)
            }
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut doc, &ops)
                    .map_err(|e| ApiError::invalid(rt, name, &e.to_string()))?;
            }
            PatchKind::Apply { force } => {
                if let Some(manager) = manager {
                    apply::check_conflicts(&old, &patch, manager, force)
                        .map_err(|fields| ApiError::conflict(rt, name, &fields))?;
                }
                json_patch::merge(&mut doc, &patch);
                apply::record_apply(&mut doc, Some(&old), &patch, manager, &rt.api_version());
            }
        }
        let op = match kind {
            PatchKind::Apply { .. } => "Apply",
            _ => "Update",
        };
        self.write_existing(rt, ns, name, old, doc, sub, manager, op)
    }

    /// The common end of update and patch: preconditions, immutable fields, status
    /// subresource, generation, no-op detection, and removal once the last finalizer is gone.
    #[allow(clippy::too_many_arguments)]
    fn write_existing(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        old: Value,
        new: Value,
        sub: Option<&str>,
        manager: Option<&str>,
        op: &str,
    ) -> Result<Value> {
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|rv| !rv.is_empty()) {
            if Some(rv) != meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(rt, name));
            }
        }
        if let Some(n) = meta_str(&new, "name").filter(|n| !n.is_empty()) {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if let (Some(a), Some(b)) = (meta_str(&new, "namespace"), ns) {
            if rt.namespaced && !a.is_empty() && a != b {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty()) {
            if Some(uid) != meta_str(&old, "uid") {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    "Precondition failed: UID in precondition does not match the UID of the object",
                ));
            }
        }
        let mut result = match sub {
            Some("status") => {
                let mut r = old.clone();
                match new.get("status") {
                    Some(s) => r["status"] = s.clone(),
                    None => {
                        r.as_object_mut().expect("object").remove("status");
                    }
                }
                r
            }
            Some(other) => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource ({other})"),
                ))
            }
            None => {
                let mut r = new;
                if rt.status {
                    match old.get("status") {
                        Some(s) => r["status"] = s.clone(),
                        None => {
                            r.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                r
            }
        };
        result["apiVersion"] = json!(rt.api_version());
        result["kind"] = json!(rt.kind);
        {
            let old_meta = meta(&old).clone();
            let m = meta_mut(&mut result);
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(field) {
                    Some(v) => m.insert(field.into(), v.clone()),
                    None => m.remove(field),
                };
            }
            if op != "Apply" {
                if let Some(v) = old_meta.get("managedFields") {
                    m.insert("managedFields".into(), v.clone());
                }
            }
        }
        if meta(&old).contains_key("deletionTimestamp") {
            let had: Vec<Value> = meta(&old)
                .get("finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let added = meta(&result)
                .get("finalizers")
                .and_then(Value::as_array)
                .is_some_and(|now| now.iter().any(|f| !had.contains(f)));
            if added {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if sub.is_none() {
            immutable_spec(rt, name, &old, &result)?;
        }
        let mut result = Self::admit_schema(rt, name, result, Some(&old))?;
        if spec_part(&result) != spec_part(&old) {
            let generation = meta(&old)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut result).insert("generation".into(), json!(generation + 1));
        }
        apply::record_update(&mut result, Some(&old), manager, op, &rt.api_version());
        if result == old {
            return Ok(old);
        }
        let key = Self::key(rt, ns, name);
        if Self::may_remove(&result) {
            return Ok(self.commit(rt, key, EventType::Deleted, result, Some(old)));
        }
        Ok(self.commit(rt, key, EventType::Modified, result, Some(old)))
    }

    /// Marked for deletion, no finalizers left, and no grace period running.
    fn may_remove(obj: &Value) -> bool {
        let m = meta(obj);
        m.contains_key("deletionTimestamp")
            && finalizers_empty(obj)
            && m.get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
    }

    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deletion> {
        let old = self.get(rt, ns, name)?;
        if let Some(uid) = &opts.uid {
            if Some(uid.as_str()) != meta_str(&old, "uid") {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    "Precondition failed: UID in precondition does not match the UID of the object",
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if Some(rv.as_str()) != meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(rt, name));
            }
        }
        let running_pod = is_core(rt, "pods")
            && old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            && !matches!(
                old.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
        let grace = if running_pod {
            opts.grace_period_seconds
                .or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
                .max(0)
        } else {
            0
        };
        let key = Self::key(rt, ns, name);
        let current_grace = meta(&old).get("deletionTimestamp").map(|_| {
            meta(&old)
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        });
        if grace == 0 && finalizers_empty(&old) {
            return Ok(Deletion::Gone(self.commit(
                rt,
                key,
                EventType::Deleted,
                old.clone(),
                Some(old),
            )));
        }
        // Already being deleted with a grace period no longer than asked: nothing changes.
        if current_grace.is_some_and(|g| g <= grace) {
            return Ok(Deletion::Remains(old));
        }
        let mut obj = old.clone();
        let m = meta_mut(&mut obj);
        let at = now() + SignedDuration::from_secs(grace);
        m.insert("deletionTimestamp".into(), json!(at.to_string()));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        Ok(Deletion::Remains(self.commit(
            rt,
            key,
            EventType::Modified,
            obj,
            Some(old),
        )))
    }

    /// `POST pods/<name>/binding`: what the scheduler does to place a pod.
    pub fn bind(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        body: &Value,
    ) -> Result<Value> {
        let old = self.get(rt, ns, name)?;
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid(rt, name, "target.name: Required value"))?;
        if let Some(current) = old.pointer("/spec/nodeName").and_then(Value::as_str) {
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
        }
        let mut obj = old.clone();
        obj["spec"]["nodeName"] = json!(node);
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        let mut conditions: Vec<Value> = obj["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(json!({"type": "PodScheduled", "status": "True",
            "lastTransitionTime": now().to_string()}));
        obj["status"]["conditions"] = json!(conditions);
        let key = Self::key(rt, ns, name);
        self.commit(rt, key, EventType::Modified, obj, Some(old));
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }

    /// Counts a request and takes the next pending fault of a write, if any.
    pub fn count(&mut self, resource: &str, verb: &str) -> Option<Fault> {
        *self
            .requests
            .entry((resource.to_string(), verb.to_string()))
            .or_default() += 1;
        let plural = resource.split('/').next().unwrap_or(resource);
        if matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) {
            return self.faults.get_mut(plural).and_then(VecDeque::pop_front);
        }
        None
    }
}
