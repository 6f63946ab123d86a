//! What the real server does to a custom resource before storing it, from its CRD version's
//! structural schema: prune unknown fields (unless `x-kubernetes-preserve-unknown-fields`),
//! apply `default`s, check types, patterns and bounds, and evaluate the CEL rules
//! (`x-kubernetes-validations`, with the old object for transition rules), refusing with
//! 422 Invalid. Uses the same kube-cel and jsonschema crates as `hearth validate`.
//! Approximation: metadata is left alone (the real server prunes it to ObjectMeta), and a
//! null is checked as absent (the real server drops nulls that are not `nullable`).

use std::sync::{Arc, Mutex};

use kube::core::cel::{apply_defaults, compile_schema, CompiledSchema, Validator};
use serde_json::{Map, Value};

/// The openAPIV3Schema of one version of a CRD (JSON form).
pub fn schema_of(crd: &Value, version: &str) -> Option<Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
        .pointer("/schema/openAPIV3Schema")
        .cloned()
}

/// Drops the fields the schema does not know.
fn prune(value: &mut Value, schema: &Value, root: bool) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (k, v) in map.iter_mut() {
                if root && k == "metadata" {
                    continue;
                }
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => prune(v, s, false),
                    (None, Some(s)) if s.is_object() => prune(v, s, false),
                    _ => {}
                }
            }
            if props.is_some() || additional.is_none() {
                map.retain(|k, _| {
                    (root && (k == "metadata" || k == "apiVersion" || k == "kind"))
                        || props.is_some_and(|p| p.contains_key(k))
                        || additional.is_some_and(|a| a != &Value::Bool(false))
                });
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|i| prune(i, s, false));
            }
        }
        _ => {}
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn without_metadata(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
    }
    v
}

/// A CRD version's schema compiled once: its JSON-schema validator and its CEL rules. (Compiling
/// them for every object made seeding a large fake cluster take 0.1 s per object.)
struct Compiled {
    schema: Value,
    json: jsonschema::Validator,
    cel: CompiledSchema,
}

fn compiled(schema: &Value, structural: &Value) -> Result<Arc<Compiled>, Vec<(String, String)>> {
    static CACHE: Mutex<Vec<Arc<Compiled>>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = cache.iter().find(|c| &c.schema == schema) {
        return Ok(hit.clone());
    }
    let json = jsonschema::draft4::new(structural)
        .map_err(|e| vec![(String::new(), format!("the CRD schema is invalid: {e}"))])?;
    let entry = Arc::new(Compiled {
        schema: schema.clone(),
        json,
        cel: compile_schema(schema),
    });
    cache.push(entry.clone());
    Ok(entry)
}

/// The object as it would be stored (pruned, defaulted), or every reason it is refused as
/// (field, message).
pub fn admit(
    schema: &Value,
    object: &Value,
    old: Option<&Value>,
) -> Result<Value, Vec<(String, String)>> {
    let mut pruned = object.clone();
    prune(&mut pruned, schema, true);
    let defaulted = apply_defaults(schema, &pruned);

    let mut body = without_metadata(&defaulted);
    strip_nulls(&mut body);
    let mut structural = schema.clone();
    if let Some(props) = structural
        .get_mut("properties")
        .and_then(Value::as_object_mut)
    {
        props.remove("metadata");
    }
    let compiled = compiled(schema, &structural)?;
    let problems: Vec<(String, String)> = compiled
        .json
        .iter_errors(&body)
        .map(|e| {
            let field = e
                .instance_path()
                .to_string()
                .trim_start_matches('/')
                .replace('/', ".");
            (field, e.to_string())
        })
        .collect();
    if !problems.is_empty() {
        // As the real server: CEL rules run only on a well-typed object.
        return Err(problems);
    }
    let old = old.map(|o| {
        let mut o = o.clone();
        prune(&mut o, schema, true);
        apply_defaults(schema, &o)
    });
    let mut cel_body = defaulted.clone();
    strip_nulls(&mut cel_body);
    if let Err(errors) = Validator::new().validate_compiled(&compiled.cel, &cel_body, old.as_ref())
    {
        return Err(errors
            .into_vec()
            .into_iter()
            .map(|e| (e.field_path.trim_start_matches('.').to_string(), e.message))
            .collect());
    }
    Ok(defaulted)
}

/// The causes of a 422, as the real server lists them.
pub fn causes(problems: &[(String, String)]) -> Value {
    Value::Array(
        problems
            .iter()
            .map(|(field, message)| {
                let mut m = Map::new();
                m.insert("reason".into(), "FieldValueInvalid".into());
                m.insert("field".into(), field.clone().into());
                m.insert("message".into(), message.clone().into());
                Value::Object(m)
            })
            .collect(),
    )
}
