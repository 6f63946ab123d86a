//! The server's state: the objects of each collection, one global resourceVersion and an
//! event log per collection (what watches read), request counters and injected faults; and
//! the reads, creates and deletes (finalizers, graceful deletion of running pods, binding).
//! Updates and patches are in `update.rs`. Everything runs under the server's one lock and
//! never awaits.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use jiff::{SignedDuration, Timestamp, Unit};
use serde_json::{json, Map, Value};

use super::builtins::is_core;
use super::registry::{types_from_crd, Registry, ResourceType};
use super::selectors::Selectors;
pub use super::status::{ApiError, Result};
use super::{apply, builtins};

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
    /// Strategic merge patch, approximated (see `strategic.rs`).
    Strategic,
    Json,
    /// Server-side apply, approximated by a merge patch plus field-ownership conflicts.
    Apply {
        force: bool,
    },
}

/// Which page of a List to serve (`limit` and `continue` of the request).
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// A write that is made to fail (to test retries).
#[derive(Clone, Debug)]
pub struct Fault {
    pub code: u16,
    /// The refusal's reason and message, as a real server's admission gives them; none for
    /// a generic injected failure.
    pub refusal: Option<(String, String)>,
}

/// All state of the server.
pub struct State {
    pub rv: u64,
    pub registry: Registry,
    pub collections: HashMap<String, Collection>,
    /// Events with a resourceVersion at or below this are no longer in the logs.
    pub compacted: u64,
    /// Bumped to end every open watch (as the real server ends the watchers it can no
    /// longer serve); each resumes from its last resourceVersion.
    pub watch_generation: u64,
    /// Logs by (namespace, pod, container); container "" is every container's.
    pub pod_logs: HashMap<(String, String, String), String>,
    /// Requests by (resource[/subresource], verb).
    pub requests: BTreeMap<(String, String), u64>,
    /// Pending failures of writes, by resource plural.
    pub faults: HashMap<String, VecDeque<Fault>>,
    pub latency: std::time::Duration,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: std::time::Duration,
    /// Runs `pods/exec` commands (a test's node agent); None refuses them.
    pub exec: Option<super::exec::ExecHandler>,
    seed: u64,
    counter: u64,
}

pub fn now() -> Timestamp {
    Timestamp::now()
        .round(Unit::Second)
        .unwrap_or(Timestamp::now())
}

pub fn meta(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
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

pub fn finalizers_empty(obj: &Value) -> bool {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty())
}

pub fn add_finalizer(obj: &mut Value, name: &str) {
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

impl State {
    pub fn new() -> Self {
        let seed = RandomState::new().hash_one(0u8);
        let mut s = State {
            rv: 1,
            registry: Registry::builtin(),
            collections: HashMap::new(),
            compacted: 0,
            watch_generation: 0,
            pod_logs: HashMap::new(),
            requests: BTreeMap::new(),
            faults: HashMap::new(),
            latency: std::time::Duration::ZERO,
            bookmark_interval: std::time::Duration::from_secs(2),
            exec: None,
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
    pub(super) fn commit(
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
        if kind == EventType::Deleted {
            let ns = meta_str(&obj, "namespace").unwrap_or("").to_string();
            self.object_removed(rt, &ns);
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

    pub(super) fn key(rt: &ResourceType, ns: Option<&str>, name: &str) -> (String, String) {
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
        self.list_page(rt, ns, sel, &Page::default())
            .expect("a whole list needs no continue token")
    }

    /// One page of a List: at most `page.limit` objects (all when None) after the object
    /// the continue token names, with a continue token while more remain. A continued page
    /// reports the resourceVersion of the first (the token carries it), so a watch from the
    /// last page replays what changed meanwhile; the pages themselves show the current state
    /// (a real server serves them from one snapshot).
    pub fn list_page(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
        page: &Page,
    ) -> Result<Value> {
        let (rv, after) = match &page.continue_token {
            Some(token) => {
                let (rv, key) = serde_json::from_str::<(u64, (String, String))>(token)
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?;
                (rv, Some(key))
            }
            None => (self.rv, None),
        };
        let limit = page.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let start = match &after {
            Some(key) => std::ops::Bound::Excluded(key.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut matching = self
            .collection(rt)
            .objects
            .range((start, std::ops::Bound::Unbounded))
            .filter(|((o_ns, _), _)| ns.is_none_or(|ns| !rt.namespaced || ns == o_ns))
            .filter(|(_, obj)| sel.matches(obj));
        let mut items = Vec::new();
        let mut last = None;
        for (key, obj) in matching.by_ref().take(limit) {
            items.push(obj.clone());
            last = Some(key.clone());
        }
        let more = matching.next().is_some();
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let (true, Some(last)) = (more, last) {
            metadata["continue"] = json!(serde_json::to_string(&(rv, last)).expect("token"));
        }
        Ok(json!({
            "kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
            "metadata": metadata, "items": items,
        }))
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
        if let Some(ns) = &ns {
            self.check_namespace(rt, ns, &name)?;
        }
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
        builtins::admit_create(rt, &mut obj, &uid)?;
        let obj = Self::admit_schema(rt, &name, obj, None)?;
        Ok(self.commit(rt, key, EventType::Added, obj, None))
    }

    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deletion> {
        if is_core(rt, "namespaces") && opts.uid.is_none() && opts.resource_version.is_none() {
            return self.delete_namespace(name);
        }
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
