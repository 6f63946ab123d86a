//! Field ownership (`metadata.managedFields`) just deep enough for server-side apply's
//! conflicts, which leader election relies on: kube-lease-manager takes an orphaned Lease
//! with an apply patch and no `force`, and counts on a 409 Conflict when another manager took
//! it first. Approximations: a field is a leaf path of objects (a list is one atomic field,
//! no `k:`/`v:` keys), and an apply never removes fields the manager stopped applying.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::store::now;

type Path = Vec<String>;

/// Metadata a manager never owns.
fn excluded(path: &[String]) -> bool {
    match path {
        [top] => top == "apiVersion" || top == "kind",
        [m, field, ..] if m == "metadata" => !matches!(
            field.as_str(),
            "labels" | "annotations" | "finalizers" | "ownerReferences"
        ),
        _ => false,
    }
}

/// Leaf paths of a document with their values (nulls included: they remove a field).
fn leaves(v: &Value) -> Vec<(Path, Value)> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut Vec<(Path, Value)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ if !prefix.is_empty() => out.push((prefix.clone(), v.clone())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out.retain(|(p, _)| !excluded(p));
    out
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

fn to_fields(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut cur = &mut root;
        for k in path {
            cur = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
        }
    }
    Value::Object(root)
}

fn from_fields(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        if children.is_empty() && !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, child) in children {
            prefix.push(k[2..].to_string());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    fields: BTreeSet<Path>,
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    Entry {
                        manager: s("manager"),
                        operation: s("operation"),
                        api_version: s("apiVersion"),
                        time: s("time"),
                        fields: from_fields(e.get("fieldsV1").unwrap_or(&Value::Null)),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields(&e.fields),
            })
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// The fields an operation leaves to its manager's entry: `own` (added to it, or replacing
/// it), `steal` (taken away from every other entry), `removed` (gone from all entries).
struct Assignment<'a> {
    own: BTreeSet<Path>,
    steal: &'a BTreeSet<Path>,
    removed: &'a BTreeSet<Path>,
    replace: bool,
}

fn assign(obj: &mut Value, manager: &str, operation: &str, api_version: &str, a: Assignment) {
    let Assignment {
        own: taken,
        steal,
        removed,
        replace,
    } = a;
    let mut all = entries(obj);
    for e in all.iter_mut() {
        let mine = e.manager == manager && e.operation == operation;
        e.fields
            .retain(|p| !removed.contains(p) && (mine || !steal.contains(p)));
    }
    let time = now().to_string();
    match all
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == operation)
    {
        Some(e) => {
            if replace {
                e.fields = taken;
            } else {
                e.fields.extend(taken);
            }
            e.time = time;
            e.api_version = api_version.into();
        }
        None => all.push(Entry {
            manager: manager.into(),
            operation: operation.into(),
            api_version: api_version.into(),
            time,
            fields: taken,
        }),
    }
    store_entries(obj, all);
}

/// After an update (create, PUT, non-apply patch): the manager owns what it changed.
pub fn record_update(
    obj: &mut Value,
    old: Option<&Value>,
    manager: Option<&str>,
    operation: &str,
    api_version: &str,
) {
    let Some(manager) = manager else { return };
    if operation == "Apply" {
        return;
    }
    let new_leaves = leaves(obj);
    let changed: BTreeSet<Path> = new_leaves
        .iter()
        .filter(|(p, v)| old.and_then(|o| value_at(o, p)) != Some(v))
        .filter(|(p, _)| p.first().is_none_or(|top| top != "status" || old.is_none()))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: BTreeSet<Path> = old
        .map(|o| {
            leaves(o)
                .into_iter()
                .filter(|(p, _)| value_at(obj, p).is_none())
                .map(|(p, _)| p)
                .collect()
        })
        .unwrap_or_default();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    let own = changed.clone();
    let a = Assignment {
        own,
        steal: &changed,
        removed: &removed,
        replace: false,
    };
    assign(obj, manager, operation, api_version, a);
}

/// The fields another manager owns that this apply would change, or Ok.
pub fn check_conflicts(
    old: &Value,
    patch: &Value,
    manager: &str,
    force: bool,
) -> Result<(), String> {
    if force {
        return Ok(());
    }
    let applied = leaves(patch);
    let mut conflicts = Vec::new();
    for e in entries(old) {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for (p, v) in &applied {
            if e.fields.contains(p) && value_at(old, p) != Some(v) {
                conflicts.push(format!(
                    "conflict with \"{}\" using {}: .{}",
                    e.manager,
                    e.api_version,
                    p.join(".")
                ));
            }
        }
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    let n = conflicts.len();
    let plural = if n == 1 { "" } else { "s" };
    Err(format!(
        "Apply failed with {n} conflict{plural}: {}",
        conflicts.join("\n")
    ))
}

/// After an apply: the manager's Apply entry holds exactly the applied fields; fields whose
/// value changed leave their other owners (shared when the value was already the same).
pub fn record_apply(
    doc: &mut Value,
    old: Option<&Value>,
    patch: &Value,
    manager: Option<&str>,
    api_version: &str,
) {
    let manager = manager.unwrap_or("unknown");
    let applied = leaves(patch);
    let removed: BTreeSet<Path> = applied
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(p, _)| p.clone())
        .collect();
    let owned: BTreeSet<Path> = applied
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(p, _)| p.clone())
        .collect();
    let changed: BTreeSet<Path> = applied
        .iter()
        .filter(|(p, v)| !v.is_null() && old.and_then(|o| value_at(o, p)) != Some(v))
        .map(|(p, _)| p.clone())
        .collect();
    let a = Assignment {
        own: owned,
        steal: &changed,
        removed: &removed,
        replace: true,
    };
    assign(doc, manager, "Apply", api_version, a);
}
