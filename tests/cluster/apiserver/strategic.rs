//! Strategic merge patch, approximated: a JSON merge patch (RFC 7386) in which the lists the
//! Kubernetes types declare `patchStrategy: merge` are merged item by item on their merge
//! key instead of replaced, with the `$patch: delete` / `$patch: replace` item directives
//! and `$deleteFromPrimitiveList/<field>`. The strategy is looked up by field name alone
//! (below), not by the object's schema; other `$` directives (`$setElementOrder`,
//! `$retainKeys`) are ignored.

use serde_json::{Map, Value};

/// How a list field merges, by its name: the merge key of its items, or None for a list of
/// scalars merged as a set.
fn list_strategy(field: &str) -> Option<Option<&'static str>> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ports" => Some("containerPort"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "finalizers" => None,
        _ => return None,
    })
}

fn merge_list(target: &mut Value, patch: &[Value], key: Option<&str>) {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let items = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        *target = Value::Array(items);
        return;
    }
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let list = target.as_array_mut().expect("array");
    for item in patch {
        match key {
            None => {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
            Some(key) => {
                let id = item.get(key);
                let pos = list.iter().position(|l| id.is_some() && l.get(key) == id);
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => merge(&mut list[i], item),
                    (None, false) => {
                        let mut fresh = Value::Null;
                        merge(&mut fresh, item);
                        list.push(fresh);
                    }
                }
            }
        }
    }
}

/// Applies a strategic merge patch to `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("object");
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(gone)) = (
                map.get_mut(field).and_then(Value::as_array_mut),
                v.as_array(),
            ) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match (v, list_strategy(k)) {
            (Value::Null, _) => {
                map.remove(k);
            }
            (Value::Array(items), Some(key)) => {
                merge_list(map.entry(k.clone()).or_insert(Value::Null), items, key)
            }
            (Value::Object(_), _) => merge(map.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                map.insert(k.clone(), v.clone());
            }
        }
    }
}
