//! What the real server does for particular built-in kinds, beyond storing them: defaults
//! and admission on create (a pod starts Pending, claims and volumes get their protection
//! finalizers, a Job gets its generated selector and labels, a CRD must be servable), and
//! the fields an update may not change.

use serde_json::{json, Value};

use super::registry::{types_from_crd, ResourceType};
use super::store::{add_finalizer, meta_mut, meta_str, ApiError, Result};

/// What the real server's defaulting and admission do on create.
pub fn admit_create(rt: &ResourceType, obj: &mut Value, uid: &str) -> Result<()> {
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

/// The validation of updates the real server does for the built-in kinds a Hearth cluster
/// writes: a pod's spec is fixed but for images, deadlines, tolerations and scheduling gates
/// (placing a pod is `pods/binding`, not an update of `spec.nodeName`); a Job's template and
/// selector are fixed; a claim's spec is fixed but for its requests and (once) its volume.
pub fn immutable_spec(rt: &ResourceType, name: &str, old: &Value, new: &Value) -> Result<()> {
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

pub fn is_core(rt: &ResourceType, plural: &str) -> bool {
    rt.group.is_empty() && rt.plural == plural
}
