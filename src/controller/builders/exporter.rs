//! What buildctl is told to do with the result: the image exporter's `--output` value (names,
//! annotations, compression, media types, push), the attestation frontend options, the
//! registry cache flags (`--import-cache`, `--export-cache`) and the allow-listed frontend
//! options passed through. Pure: strings in, arguments out.

use crate::api::{
    CacheMode, ImageBuildSpec, OutputSpec, ProvenanceMode, RegistryExport, FRONTEND_OPTIONS,
};

/// The `--output` value of the image exporter. buildctl reads it as one CSV record, so a
/// field holding a comma or a quote (several names, an annotation's value) is quoted.
pub fn output_value(output: &OutputSpec) -> String {
    // Pushed by digest: the repository alone names it, and BuildKit pushes no tag.
    let names = if output.push_by_digest {
        output.repository().to_string()
    } else {
        output.names().join(",")
    };
    let mut fields = vec!["type=image".to_string(), format!("name={names}")];
    fields.push(format!("push={}", output.push));
    if output.push_by_digest {
        fields.push("push-by-digest=true".to_string());
    }
    if let Some(c) = output.compression {
        fields.push(format!("compression={}", c.as_str()));
    }
    if let Some(level) = output.compression_level {
        fields.push(format!("compression-level={level}"));
    }
    if output.force_compression {
        fields.push("force-compression=true".to_string());
    }
    if let Some(oci) = output.oci_media_types {
        fields.push(format!("oci-mediatypes={oci}"));
    }
    for (key, value) in &output.annotations {
        let key = match key.split_once(':') {
            Some((level, key)) => format!("annotation-{level}.{key}"),
            None => format!("annotation.{key}"),
        };
        fields.push(format!("{key}={value}"));
    }
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// One field of a CSV record as Go's `encoding/csv` reads it: quoted (inner quotes doubled)
/// when it holds a comma, a quote, a line break or leading space.
fn csv_field(field: &str) -> String {
    let needs_quotes =
        field.starts_with(' ') || field.starts_with('\t') || field.contains([',', '"', '\n', '\r']);
    if needs_quotes {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Frontend options (`--opt KEY=VALUE`) asking for attestations: SLSA provenance in the
/// chosen mode, and an SBOM when asked. None when the image is not pushed: nothing would
/// carry them.
pub fn attestation_opts(output: &OutputSpec) -> Vec<(String, String)> {
    if !output.push {
        return Vec::new();
    }
    let mut opts = Vec::new();
    let mode = match output.attestations.provenance.mode {
        ProvenanceMode::Min => Some("min"),
        ProvenanceMode::Max => Some("max"),
        ProvenanceMode::Disabled => None,
    };
    if let Some(mode) = mode {
        opts.push(("attest:provenance".to_string(), format!("mode={mode}")));
    }
    if output.attestations.sbom {
        // Empty: BuildKit's default scanner image.
        opts.push(("attest:sbom".to_string(), String::new()));
    }
    opts
}

/// The allow-listed frontend options of the spec (the CRD refuses others; any that predate
/// the rule are dropped here, never passed through).
pub fn passthrough_opts(spec: &ImageBuildSpec) -> Vec<(String, String)> {
    spec.frontend_options
        .iter()
        .filter(|(k, _)| FRONTEND_OPTIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The registry cache a build exports to: `spec.cache.registry.exportTo`, never for a
/// `ReadOnly` (untrusted) build.
pub fn cache_export(spec: &ImageBuildSpec) -> Option<&RegistryExport> {
    spec.cache
        .registry
        .as_ref()
        .and_then(|r| r.export_to.as_ref())
        .filter(|_| spec.cache.mode != CacheMode::ReadOnly)
}

/// `--import-cache` for each registry ref the placement seeds the build from, and
/// `--export-cache` to the spec's export ref unless the build is `ReadOnly` (the CRD refuses
/// that pairing; a ReadOnly build never writes a cache, whatever its spec says).
pub fn cache_args(spec: &ImageBuildSpec, import_from: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    for reference in import_from {
        args.push("--import-cache".to_string());
        args.push(format!("type=registry,ref={reference}"));
    }
    if let Some(export) = cache_export(spec) {
        args.push("--export-cache".to_string());
        args.push(format!(
            "type=registry,ref={},mode={}",
            export.reference,
            export.mode.as_str()
        ));
    }
    args
}

#[cfg(test)]
#[path = "exporter_tests.rs"]
mod tests;
