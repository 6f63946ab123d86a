//! The pure half of `hearth index create`: what a fetched manifest contributes to the index,
//! the platform read from an image config, and the index itself, serialized deterministically
//! (same inputs, same bytes, same digest). No I/O here.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest v2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What a source may be, in the order of the `Accept` header.
pub const ACCEPTED: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// The most a manifest (or an image config) may weigh.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// `sha256:<hex>` of bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A blob or manifest a manifest points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    pub media_type: String,
    pub digest: String,
}

/// What one fetched source manifest is.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// An index or manifest list: its descriptors, as they are.
    Index { descriptors: Vec<Value> },
    /// An image manifest: its config blob (the platform) and its layers.
    Image {
        media_type: String,
        config: Pointer,
        layers: Vec<Pointer>,
    },
}

/// Reads a manifest's kind from its `mediaType` (else the response's `Content-Type`).
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON manifest: {e}"))?;
    let media_type = value
        .get("mediaType")
        .and_then(Value::as_str)
        .or(content_type.map(|c| c.split(';').next().unwrap_or(c).trim()))
        .unwrap_or_default()
        .to_string();
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let descriptors = value
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or("an index without a manifests array")?;
            for d in descriptors {
                pointer(d).map_err(|e| format!("an index descriptor {e}"))?;
            }
            Ok(Parsed::Index {
                descriptors: descriptors.clone(),
            })
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = value
                .get("config")
                .ok_or("an image manifest without a config")
                .and_then(|c| pointer(c).map_err(|_| "an image manifest with a bad config"))?;
            let layers = match value.get("layers") {
                Some(Value::Array(layers)) => layers
                    .iter()
                    .map(pointer)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("a layer {e}"))?,
                None => Vec::new(),
                Some(_) => return Err("layers is not an array".into()),
            };
            Ok(Parsed::Image {
                media_type,
                config,
                layers,
            })
        }
        "" => Err("a manifest without a mediaType".into()),
        other => Err(format!(
            "media type {other} (expected an OCI index or image manifest, or a Docker manifest list or v2 manifest)"
        )),
    }
}

/// A descriptor's media type and digest; the error says which is missing or wrong.
pub fn pointer(descriptor: &Value) -> Result<Pointer, String> {
    let digest = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .ok_or("without a digest")?;
    if !super::reference::is_sha256_digest(digest) {
        return Err(format!("with digest {digest:?} (expected sha256:<64 hex>)"));
    }
    if !descriptor.get("size").is_some_and(Value::is_u64) {
        return Err(format!("{digest} without a size"));
    }
    let media_type = descriptor
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{digest} without a mediaType"))?;
    Ok(Pointer {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
    })
}

/// The OCI platform of an image config: `os`, `architecture`, and `variant`,
/// `os.version`, `os.features` when present.
pub fn platform_of_config(config: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(config).map_err(|e| format!("image config is not JSON: {e}"))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    let (os, architecture) = (field("os"), field("architecture"));
    if os.is_empty() || architecture.is_empty() {
        return Err("image config without os or architecture".into());
    }
    let mut platform = Map::new();
    platform.insert("architecture".into(), json!(architecture));
    platform.insert("os".into(), json!(os));
    for (from, to) in [("variant", "variant"), ("os.version", "os.version")] {
        if let Some(v) = value.get(from).and_then(Value::as_str) {
            platform.insert(to.into(), json!(v));
        }
    }
    if let Some(features) = value.get("os.features").and_then(Value::as_array) {
        platform.insert("os.features".into(), Value::Array(features.clone()));
    }
    Ok(Value::Object(platform))
}

/// The descriptor an image manifest contributes.
pub fn image_descriptor(media_type: &str, digest: &str, size: usize, platform: Value) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size, "platform": platform})
}

/// The index over `descriptors` (duplicates by digest dropped, first kept, order otherwise
/// as given), with `annotations` (left out when empty). Keys are written in a fixed order
/// (struct fields, then sorted maps), so the bytes depend only on the inputs.
pub fn build_index(descriptors: &[Value], annotations: &BTreeMap<String, String>) -> Vec<u8> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index<'a> {
        schema_version: u32,
        media_type: &'a str,
        manifests: Vec<Value>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        annotations: &'a BTreeMap<String, String>,
    }
    let mut seen = std::collections::BTreeSet::new();
    let manifests = descriptors
        .iter()
        .filter(|d| seen.insert(d.get("digest").and_then(Value::as_str).map(str::to_string)))
        .map(sorted)
        .collect();
    serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
        annotations,
    })
    .expect("an index serializes")
}

/// A JSON value with every object's keys sorted (whatever order the source registry wrote).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            let mut out = Map::new();
            for (k, v) in ordered {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn image_manifest(config: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(9), "size": 3}],
        }))
        .unwrap()
    }

    #[test]
    fn platform_comes_from_the_config() {
        let config = br#"{"architecture":"arm64","os":"linux","variant":"v8","rootfs":{}}"#;
        assert_eq!(
            platform_of_config(config).unwrap(),
            json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
        );
        let plain = br#"{"architecture":"amd64","os":"linux"}"#;
        assert_eq!(
            platform_of_config(plain).unwrap(),
            json!({"architecture": "amd64", "os": "linux"})
        );
        assert!(platform_of_config(br#"{"os":"linux"}"#)
            .unwrap_err()
            .contains("architecture"));
    }

    #[test]
    fn an_image_manifest_gives_its_config_and_layers() {
        let parsed = parse_manifest(&image_manifest(&digest(1)), None).unwrap();
        let Parsed::Image { config, layers, .. } = parsed else {
            panic!("not an image: {parsed:?}")
        };
        assert_eq!(config.digest, digest(1));
        assert_eq!(layers[0].digest, digest(9));
        // Without a mediaType field, the Content-Type decides.
        let bare = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:0101010101010101010101010101010101010101010101010101010101010101","size":1}}"#;
        assert!(matches!(
            parse_manifest(bare, Some(&format!("{DOCKER_MANIFEST}; charset=utf-8"))),
            Ok(Parsed::Image { .. })
        ));
        assert!(parse_manifest(bare, None)
            .unwrap_err()
            .contains("without a mediaType"));
        assert!(parse_manifest(br#"{"mediaType":"text/html"}"#, None)
            .unwrap_err()
            .contains("text/html"));
    }

    #[test]
    fn index_sources_merge_with_their_attestations_as_they_are() {
        let amd = image_descriptor(
            OCI_MANIFEST,
            &digest(1),
            500,
            json!({"os": "linux", "architecture": "amd64"}),
        );
        let child = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest(2), "size": 600,
                 "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": digest(3), "size": 700,
                 "platform": {"architecture": "unknown", "os": "unknown"},
                 "annotations": {"vnd.docker.reference.digest": digest(2),
                                 "vnd.docker.reference.type": "attestation-manifest"}},
            ],
        }))
        .unwrap();
        let Parsed::Index { descriptors } = parse_manifest(&child, None).unwrap() else {
            panic!("not an index")
        };
        let mut all = vec![amd.clone()];
        all.extend(descriptors);
        all.push(amd); // the same child twice counts once
        let annotations =
            BTreeMap::from([("org.opencontainers.image.version".into(), "1.0".into())]);
        let bytes = build_index(&all, &annotations);
        let index: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], OCI_INDEX);
        let manifests = index["manifests"].as_array().unwrap();
        let digests: Vec<&str> = manifests
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, [digest(1), digest(2), digest(3)]);
        assert_eq!(manifests[0]["platform"]["architecture"], "amd64");
        assert_eq!(
            manifests[2]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(
            index["annotations"]["org.opencontainers.image.version"],
            "1.0"
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_digest() {
        let a = json!({"mediaType": OCI_MANIFEST, "digest": digest(1), "size": 5,
                       "platform": {"os": "linux", "architecture": "amd64"}});
        let b: Value = serde_json::from_str(&format!(
            r#"{{"size":5,"platform":{{"architecture":"amd64","os":"linux"}},"digest":"{}","mediaType":"{OCI_MANIFEST}"}}"#,
            digest(1)
        ))
        .unwrap();
        let none = BTreeMap::new();
        let first = build_index(&[a], &none);
        assert_eq!(
            sha256_digest(&first),
            sha256_digest(&build_index(&[b], &none))
        );
        assert_eq!(
            String::from_utf8(first).unwrap(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"{}","mediaType":"{OCI_MANIFEST}","platform":{{"architecture":"amd64","os":"linux"}},"size":5}}]}}"#,
                digest(1)
            )
        );
        assert_eq!(
            sha256_digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn descriptors_without_digest_or_size_are_refused() {
        let bad = serde_json::to_vec(&json!({"mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:zz", "size": 1}]}))
        .unwrap();
        assert!(parse_manifest(&bad, None)
            .unwrap_err()
            .contains("expected sha256"));
    }
}
