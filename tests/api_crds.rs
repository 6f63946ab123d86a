//! The CRDs in `crds/` are exactly what `hearth crds` prints, and an API server would accept
//! them: structural schemas, CEL rules that compile within the cost budget, status subresource.

use hearth::api::check::{all_crds, rule_messages, rule_problems, schema_of};
use serde_json::Value;

#[test]
fn crds_dir_matches_hearth_crds_output() {
    let expected = hearth::crds::render().expect("render CRDs");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/hearth.dev.yaml");
    let on_disk = std::fs::read_to_string(path).expect("read crds/hearth.dev.yaml");
    assert!(
        on_disk == expected,
        "crds/hearth.dev.yaml is stale: run `cargo run -- crds > crds/hearth.dev.yaml` and commit it"
    );
}

/// A structural schema types every node (or marks it int-or-string / preserve-unknown),
/// and uses no `$ref`, `additionalProperties: true` or `properties` beside `additionalProperties`.
fn assert_structural(path: &str, node: &Value) {
    let obj = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: schema node is not an object"));
    assert!(
        !obj.contains_key("$ref"),
        "{path}: $ref is not allowed in a structural schema"
    );
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !int_or_string && !preserve {
        assert!(
            obj.contains_key("type"),
            "{path}: every schema node needs a type"
        );
    }
    if let Some(kind) = obj.get("type").and_then(Value::as_str) {
        assert!(
            ["object", "array", "string", "integer", "number", "boolean"].contains(&kind),
            "{path}: unknown type {kind}"
        );
    }
    for key in ["x-kubernetes-list-type", "x-kubernetes-list-map-keys"] {
        if obj.contains_key(key) {
            assert_eq!(
                obj.get("type").and_then(Value::as_str),
                Some("array"),
                "{path}: {key} only on arrays"
            );
        }
    }
    if obj.contains_key("additionalProperties") {
        assert!(
            !obj.contains_key("properties"),
            "{path}: properties and additionalProperties are exclusive"
        );
        assert!(
            obj["additionalProperties"].is_object(),
            "{path}: additionalProperties must be a schema"
        );
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get(combinator).and_then(Value::as_array) {
            assert!(
                int_or_string,
                "{path}: {combinator} only for int-or-string ({list:?})"
            );
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            assert_structural(&format!("{path}.{name}"), child);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get(key) {
            assert_structural(&format!("{path}.{key}"), child);
        }
    }
}

#[test]
fn schemas_are_structural() {
    for crd in all_crds() {
        let schema = schema_of(&crd);
        assert_structural(&crd.spec.names.kind, &schema);
    }
}

#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    for crd in all_crds() {
        let problems = rule_problems(&crd);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn rules_are_found_and_counted() {
    // Guards the walk above: if rule_problems stopped visiting rules it would pass vacuously.
    let total: usize = all_crds()
        .iter()
        .map(|crd| rule_messages(&schema_of(crd)).len())
        .sum();
    assert!(
        total >= 20,
        "expected the CRDs to carry their CEL rules, found {total}"
    );
}

#[test]
fn crds_have_names_columns_and_status_subresource() {
    let crds = all_crds();
    let expect = [
        (
            "imagebuilds.hearth.dev",
            "ib",
            vec![
                "Phase", "Reason", "Warmth", "Node", "Image", "Digest", "Age",
            ],
        ),
        (
            "buildcaches.hearth.dev",
            // Not `bc`: that is OpenShift's BuildConfig.
            "hbc",
            vec![
                "Key",
                "Ready",
                "Replicas",
                "Nodes",
                "Snapshots",
                "Stored",
                "Size",
                "Hot",
                "Restored",
                "Cold",
                "Last Used",
                "Age",
            ],
        ),
    ];
    for (crd, (name, short, columns)) in crds.iter().zip(expect) {
        assert_eq!(crd.metadata.name.as_deref(), Some(name));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name}: status subresource"
        );
        let got: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(got, columns, "{name}: printer columns");
    }
}
