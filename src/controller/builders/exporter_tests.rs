//! Tests of the exporter's arguments: what buildctl's CSV parser and BuildKit's exporter read.

use super::*;
use crate::api::ImageBuildSpec;

fn spec(value: serde_json::Value) -> ImageBuildSpec {
    let mut base = serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git"}},
        "output": {"image": "registry.example.com/shop/api:1"}
    });
    json_merge(&mut base, value);
    serde_json::from_value(base).expect("spec")
}

fn json_merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

#[test]
fn one_name_is_a_plain_field() {
    let s = spec(serde_json::json!({}));
    assert_eq!(
        output_value(&s.output),
        "type=image,name=registry.example.com/shop/api:1,push=true"
    );
}

#[test]
fn pushed_by_digest_the_repository_alone_names_it() {
    let s = spec(serde_json::json!({"output": {
        "image": "registry.example.com:5000/shop/api",
        "pushByDigest": true
    }}));
    assert_eq!(
        output_value(&s.output),
        "type=image,name=registry.example.com:5000/shop/api,push=true,push-by-digest=true"
    );
    // A tag left in `image` is not pushed either: the name is the repository.
    let s = spec(serde_json::json!({"output": {"pushByDigest": true}}));
    assert_eq!(
        output_value(&s.output),
        "type=image,name=registry.example.com/shop/api,push=true,push-by-digest=true"
    );
}

#[test]
fn several_names_are_one_quoted_field_with_bare_tags_in_the_image_repository() {
    let s = spec(serde_json::json!({"output": {
        "image": "registry.example.com:5000/shop/api:1",
        "tags": ["latest", "1", "mirror.example.com/shop/api:1.2"]
    }}));
    let value = output_value(&s.output);
    assert_eq!(
        value,
        "type=image,\"name=registry.example.com:5000/shop/api:1,registry.example.com:5000/shop/api:latest,mirror.example.com/shop/api:1.2\",push=true"
    );
}

#[test]
fn exporter_options_and_annotations_by_level() {
    let s = spec(serde_json::json!({"output": {
        "push": false,
        "compression": "zstd",
        "compressionLevel": 19,
        "forceCompression": true,
        "ociMediaTypes": true,
        "annotations": {
            "org.opencontainers.image.source": "https://github.com/acme/shop",
            "index:org.opencontainers.image.description": "shop, \"api\"",
            "manifest-descriptor:team": "shop"
        }
    }}));
    // Quoted where buildctl's CSV reader needs it: the value with a comma and quotes.
    assert_eq!(
        output_value(&s.output),
        "type=image,name=registry.example.com/shop/api:1,push=false,compression=zstd,\
compression-level=19,force-compression=true,oci-mediatypes=true,\
\"annotation-index.org.opencontainers.image.description=shop, \"\"api\"\"\",\
annotation-manifest-descriptor.team=shop,\
annotation.org.opencontainers.image.source=https://github.com/acme/shop"
    );
}

#[test]
fn provenance_min_by_default_max_or_off_on_request_and_sbom_when_asked() {
    let default = spec(serde_json::json!({}));
    assert_eq!(
        attestation_opts(&default.output),
        [("attest:provenance".to_string(), "mode=min".to_string())]
    );
    let max = spec(serde_json::json!({"output": {"attestations": {
        "provenance": {"mode": "max"}, "sbom": true
    }}}));
    assert_eq!(
        attestation_opts(&max.output),
        [
            ("attest:provenance".to_string(), "mode=max".to_string()),
            ("attest:sbom".to_string(), String::new()),
        ]
    );
    let off = spec(serde_json::json!({"output": {"attestations": {
        "provenance": {"mode": "disabled"}
    }}}));
    assert!(attestation_opts(&off.output).is_empty());
}

#[test]
fn an_image_that_is_not_pushed_gets_no_attestations() {
    let s = spec(serde_json::json!({"output": {"push": false, "attestations": {"sbom": true}}}));
    assert!(attestation_opts(&s.output).is_empty());
}

#[test]
fn registry_cache_imports_what_the_placement_says_and_exports_unless_read_only() {
    let cache = serde_json::json!({"registry": {
        "importFrom": ["registry.example.com/shop/api:buildcache"],
        "exportTo": {"ref": "registry.example.com/shop/api:buildcache", "mode": "max"}
    }});
    let s = spec(serde_json::json!({ "cache": cache.clone() }));
    assert_eq!(
        cache_args(&s, &[]),
        [
            "--export-cache",
            "type=registry,ref=registry.example.com/shop/api:buildcache,mode=max"
        ]
    );
    let seeded = ["registry.example.com/shop/api:buildcache".to_string()];
    assert_eq!(
        cache_args(&s, &seeded)[..2],
        [
            "--import-cache",
            "type=registry,ref=registry.example.com/shop/api:buildcache"
        ]
    );
    let mut read_only = cache;
    read_only["mode"] = "ReadOnly".into();
    let s = spec(serde_json::json!({ "cache": read_only }));
    assert_eq!(
        cache_args(&s, &seeded),
        [
            "--import-cache",
            "type=registry,ref=registry.example.com/shop/api:buildcache"
        ],
        "a ReadOnly build imports but never exports"
    );
}

#[test]
fn only_allow_listed_frontend_options_pass() {
    let mut s = spec(serde_json::json!({"frontendOptions": {"shm-size": "1073741824"}}));
    s.frontend_options
        .insert("force-network-mode".into(), "host".into());
    assert_eq!(
        passthrough_opts(&s),
        [("shm-size".to_string(), "1073741824".to_string())]
    );
}
