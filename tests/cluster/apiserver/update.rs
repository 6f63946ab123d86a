//! Writes to an existing object (PUT and the four PATCH types, on the object or its
//! `status`), as the real server makes them: resourceVersion preconditions, immutable
//! metadata, the status subresource split, fixed specs of built-in kinds, the CRD schema,
//! `generation`, no-op writes that change nothing, and removal once the last finalizer of
//! an object being deleted is gone.

use serde_json::{json, Value};

use super::builtins;
use super::registry::ResourceType;
use super::store::{
    finalizers_empty, meta, meta_mut, meta_str, ApiError, EventType, PatchKind, Result, State,
};
use super::{admission, apply, strategic};

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

impl State {
    /// A custom resource, pruned, defaulted and validated by its CRD's schema.
    pub(super) fn admit_schema(
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
        patch: Value,
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
            PatchKind::Strategic => strategic::merge(&mut doc, &patch),
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
            builtins::immutable_spec(rt, name, &old, &result)?;
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
}
