//! Offline admission check: applies a CRD's structural schema (types, patterns, bounds,
//! defaults) and its CEL rules to an object, as the API server would on create or update.
//! Used by `hearth validate` and by the tests of every rule and sample.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{apply_defaults, compile_schema, Validator};
use kube::CustomResourceExt;
use serde_json::Value;

use super::{BuildCache, ImageBuild};

/// One reason the API server would refuse an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, like `spec.output.image` (empty for the object itself).
    pub field: String,
    /// What was expected.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Errors that stop a check before any rule runs.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// `apiVersion`/`kind` name no Hearth resource.
    #[error("apiVersion/kind {api_version}/{kind} is not a Hearth resource (expected hearth.dev/v1alpha1 ImageBuild or BuildCache)")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// The CRD's own schema is not usable (a bug in Hearth, caught by the tests).
    #[error("the {kind} CRD schema is invalid: {reason}")]
    BadSchema {
        /// The kind.
        kind: &'static str,
        /// Why.
        reason: String,
    },
}

/// Every Hearth CRD, in the order `hearth crds` prints them.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![ImageBuild::crd(), BuildCache::crd()]
}

fn crd_for(object: &Value) -> Result<(CustomResourceDefinition, &'static str), CheckError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (api_version, kind) {
        ("hearth.dev/v1alpha1", "ImageBuild") => Ok((ImageBuild::crd(), "ImageBuild")),
        ("hearth.dev/v1alpha1", "BuildCache") => Ok((BuildCache::crd(), "BuildCache")),
        _ => Err(CheckError::UnknownKind {
            api_version: api_version.into(),
            kind: kind.into(),
        }),
    }
}

/// The openAPIV3Schema of a CRD's first version, as JSON.
pub fn schema_of(crd: &CustomResourceDefinition) -> Value {
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

/// Checks `object` (with `old` for an update) against its CRD. `Ok(vec![])` means the API
/// server would accept it.
pub fn check(object: &Value, old: Option<&Value>) -> Result<Vec<Violation>, CheckError> {
    let (crd, kind) = crd_for(object)?;
    let schema = schema_of(&crd);
    let defaulted = apply_defaults(&schema, object);
    let mut violations = schema_violations(kind, &schema, &defaulted)?;
    if !violations.is_empty() {
        // The API server stops at schema errors; CEL rules run only on well-typed objects.
        return Ok(violations);
    }
    let old = old.map(|o| apply_defaults(&schema, o));
    if let Err(errors) = Validator::new().validate(&schema, &defaulted, old.as_ref()) {
        violations.extend(errors.into_vec().into_iter().map(|e| Violation {
            field: e.field_path.trim_start_matches('.').to_string(),
            message: e.message,
        }));
    }
    Ok(violations)
}

fn schema_violations(
    kind: &'static str,
    schema: &Value,
    object: &Value,
) -> Result<Vec<Violation>, CheckError> {
    // The API server ignores metadata beyond name/namespace here and validates it itself.
    let mut body = object.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("metadata");
    }
    let mut schema = schema.clone();
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("metadata");
    }
    let validator = jsonschema::draft4::new(&schema).map_err(|e| CheckError::BadSchema {
        kind,
        reason: e.to_string(),
    })?;
    Ok(validator
        .iter_errors(&body)
        .map(|e| Violation {
            field: e
                .instance_path()
                .to_string()
                .trim_start_matches('/')
                .replace('/', "."),
            message: without_long_value(&e.to_string(), e.instance()),
        })
        .collect())
}

/// Longest offending value a message repeats in full.
const VALUE_SHOWN: usize = 64;

/// A schema message (`"<value>" is longer than 253 characters`) with an over-long value cut to
/// its start and its length: a 10 KB key is not echoed back whole.
fn without_long_value(message: &str, value: &Value) -> String {
    let rendered = value.to_string();
    let length = match value {
        Value::String(s) => s.chars().count(),
        _ => rendered.chars().count(),
    };
    match message.strip_prefix(&rendered) {
        Some(rest) if rendered.chars().count() > VALUE_SHOWN => {
            let head: String = rendered.chars().take(VALUE_SHOWN / 2).collect();
            format!("{head}... ({length} characters){rest}")
        }
        _ => message.to_string(),
    }
}

/// CEL rules in a schema that would not compile on an API server, or whose estimated cost
/// exceeds its budget. Empty for Hearth's own CRDs (a test holds this).
pub fn rule_problems(crd: &CustomResourceDefinition) -> Vec<String> {
    let schema = schema_of(crd);
    let compiled = compile_schema(&schema);
    let mut problems: Vec<String> = compiled
        .compilation_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    collect_cost_warnings(&schema, &mut problems);
    problems
}

fn collect_cost_warnings(schema: &Value, out: &mut Vec<String>) {
    for_each_rule_node(schema, &mut |node, rules| {
        let compiled = compile_schema(node);
        for rule in rules
            .iter()
            .filter_map(|r| r.get("rule").and_then(Value::as_str))
        {
            for w in kube::core::cel::estimate_rule_cost(rule, &compiled) {
                out.push(format!("{}: {}", w.rule, w.message));
            }
        }
    });
}

/// The `message` of every CEL rule in a schema, depth first.
pub fn rule_messages(node: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for_each_rule_node(node, &mut |_, rules| {
        out.extend(
            rules
                .iter()
                .filter_map(|r| r.get("message").and_then(Value::as_str))
                .map(String::from),
        );
    });
    out
}

/// Calls `visit` with every schema node that carries CEL rules, and its rules, depth first
/// through properties, items and additionalProperties.
fn for_each_rule_node(node: &Value, visit: &mut impl FnMut(&Value, &[Value])) {
    if let Some(rules) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        visit(node, rules);
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for child in props.values() {
            for_each_rule_node(child, visit);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            for_each_rule_node(child, visit);
        }
    }
}
