//! What an ImageBuild exchanges with registries: the image's names, OCI annotations,
//! exporter options and attestations (`spec.output`), and the registry caches it may import
//! and export next to Hearth's own (`spec.cache.registry`).

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalObjectReference;

/// Full image reference with a registry host: `host[:port]/path[:tag]`.
pub const IMAGE_REF_PATTERN: &str = r"^((localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)(:[0-9]{1,5})?|[A-Za-z0-9-]+:[0-9]{1,5})(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$";

/// Where the built image goes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(PUSH_BY_DIGEST_RULE).message("pushes the image by digest only: it needs push: true and no tags (a tag is a name pushed)").field_path(".pushByDigest"))]
#[x_kube(validation = Rule::new(COMPRESSION_LEVEL_RULE).message("must be 0-9 for gzip and estargz (gzip when compression is unset), 0-22 for zstd; uncompressed has no level").field_path(".compressionLevel"))]
pub struct OutputSpec {
    /// Full image reference with its registry host, for example
    /// `registry.example.com/team/app:1.2.3` (`:latest` when the tag is left out).
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", image_ref_cel())).message("must be a full image reference with a registry host, like registry.example.com/team/app:tag"))]
    pub image: String,
    /// Push the image. `false` builds only (a check that the image still builds).
    #[serde(default = "default_true")]
    pub push: bool,
    /// Secret of type `kubernetes.io/dockerconfigjson` with push credentials for the registry
    /// (and for every registry named in `tags` and `spec.cache.registry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_secret_ref: Option<LocalObjectReference>,
    /// More names for the same image (`docker buildx build -t`, repeated): a bare tag
    /// (`1.2.3`, in the repository of `image`) or a full reference with a registry host.
    /// At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new(format!("self.all(t, t.matches('{TAG_CEL}') || t.matches('{}'))", image_ref_cel())).message("each entry must be a tag (like 1.2.3: letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-') or a full image reference with a registry host, like registry.example.com/team/app:tag"))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u == t))").message("entries must be unique"))]
    pub tags: Vec<String>,
    /// OCI annotations (`docker buildx build --annotation`). A plain key annotates the image
    /// manifest; `index:KEY`, `manifest-descriptor:KEY` or `index-descriptor:KEY` another
    /// level (`manifest:KEY` is the default spelled out). Index levels need an index: a
    /// multi-platform build, or attestations (on by default). At most 32.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new(ANNOTATIONS_RULE).message("keys must be [LEVEL:]KEY with LEVEL one of manifest, index, manifest-descriptor, index-descriptor and KEY like org.opencontainers.image.source (letters, digits, '.', '_', '-', '/', at most 256); values at most 4096 characters"))]
    pub annotations: BTreeMap<String, String>,
    /// Layer compression (the image exporter's `compression`): `gzip` (BuildKit's default),
    /// `zstd`, `estargz` or `uncompressed`. `zstd` and `estargz` turn on OCI media types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Recompress layers pulled from base images with `compression` too
    /// (`force-compression`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_compression: bool,
    /// Compression level (the image exporter's `compression-level`): 0-9 for gzip and
    /// estargz, 0-22 for zstd; unset is the algorithm's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 22))]
    pub compression_level: Option<i32>,
    /// OCI media types instead of Docker's (`oci-mediatypes`). Unset leaves BuildKit's choice
    /// (Docker media types, OCI where compression, annotations or attestations need them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_media_types: Option<bool>,
    /// Supply-chain attestations attached to the pushed image: SLSA provenance (`min` by
    /// default, as buildx) and an SBOM (off by default, as buildx).
    #[serde(default, skip_serializing_if = "Attestations::is_default")]
    pub attestations: Attestations,
    /// Push the image without a tag, only by its digest (buildx `push-by-digest=true`): into
    /// the repository of `image`, named in `status.image` as `repository@sha256:...`. Needs
    /// `push` and no `tags`. Each platform's child of a multi-platform build pushes so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub push_by_digest: bool,
}

/// CEL rule: `compressionLevel` within the range of the compression (gzip by default).
pub const COMPRESSION_LEVEL_RULE: &str = "!has(self.compressionLevel) \
|| (has(self.compression) && self.compression == 'zstd') \
|| ((!has(self.compression) || self.compression != 'uncompressed') && self.compressionLevel <= 9)";

/// CEL rule: `pushByDigest` pushes, and pushes no name.
pub const PUSH_BY_DIGEST_RULE: &str = "!has(self.pushByDigest) || !self.pushByDigest \
|| ((!has(self.push) || self.push) && (!has(self.tags) || size(self.tags) == 0))";

impl OutputSpec {
    /// `image` without its tag: the repository bare `tags` belong to.
    pub fn repository(&self) -> &str {
        let last_slash = self.image.rfind('/').unwrap_or(0);
        match self.image[last_slash..].rfind(':') {
            Some(colon) => &self.image[..last_slash + colon],
            None => &self.image,
        }
    }

    /// Every name the image is pushed as, in order: `image`, then each of `tags` as a full
    /// reference (a bare tag in the repository of `image`).
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.image.clone()];
        for tag in &self.tags {
            let name = if tag.contains('/') {
                tag.clone()
            } else {
                format!("{}:{tag}", self.repository())
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The names pushed: [`OutputSpec::names`], none when pushed by digest only.
    pub fn pushed_names(&self) -> Vec<String> {
        if self.push_by_digest {
            Vec::new()
        } else {
            self.names()
        }
    }

    /// The image by digest: `repository@digest`.
    pub fn by_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository())
    }
}

/// A bare tag, as a CEL regex (no backslashes to escape).
const TAG_CEL: &str = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$";

/// [`IMAGE_REF_PATTERN`] inside a single-quoted CEL string.
pub(crate) fn image_ref_cel() -> String {
    IMAGE_REF_PATTERN.replace('\\', "\\\\")
}

/// `annotations` keys: an optional level, then a key BuildKit's `annotation.` parser takes
/// (no spaces, no '=' or ',' that buildctl's own syntax uses).
const ANNOTATIONS_RULE: &str = "self.all(k, k.matches('^((manifest|index|manifest-descriptor|index-descriptor):)?[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$') && size(self[k]) <= 4096)";

/// Layer compression of the pushed image.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip, readable everywhere (BuildKit's default).
    Gzip,
    /// zstd: smaller and faster to unpack; needs containerd 1.5+ or a recent runtime.
    Zstd,
    /// eStargz: gzip that lazy-pulling snapshotters can mount before the whole layer is fetched.
    Estargz,
    /// No compression.
    Uncompressed,
}

impl Compression {
    /// BuildKit's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Estargz => "estargz",
            Compression::Uncompressed => "uncompressed",
        }
    }
}

/// Supply-chain attestations of the image (BuildKit's `attest:provenance`, `attest:sbom`).
/// They are attached only to a pushed image (`push: true`): with `push: false` nothing leaves
/// the builder, so they are not made.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Attestations {
    /// SLSA provenance: how the image was built.
    #[serde(default, skip_serializing_if = "Provenance::is_default")]
    pub provenance: Provenance,
    /// An SPDX SBOM of the image, made by BuildKit's scanner image
    /// (`docker/buildkit-syft-scanner`, pulled by buildkitd). Off by default, as in buildx.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sbom: bool,
}

impl Attestations {
    fn is_default(&self) -> bool {
        self == &Attestations::default()
    }
}

/// SLSA provenance settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// `min` (default, as buildx: no build arguments or secrets' names), `max` (also the
    /// build's arguments, Dockerfile and sources) or `disabled`.
    #[serde(default)]
    pub mode: ProvenanceMode,
}

impl Provenance {
    fn is_default(&self) -> bool {
        self == &Provenance::default()
    }
}

/// How much SLSA provenance to attach.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProvenanceMode {
    /// The build's materials and invocation without its arguments' values (buildx's default).
    #[default]
    Min,
    /// Everything BuildKit knows: build arguments, the Dockerfile, source maps. Build args are
    /// then visible to anyone who can pull the image.
    Max,
    /// No provenance.
    Disabled,
}

fn default_true() -> bool {
    true
}

/// Registry cache refs (`docker buildx build --cache-from/--cache-to type=registry`).
/// Credentials come from `spec.output.pushSecretRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCache {
    /// Cache images to import from, in order, when the planner finds no replica or snapshot
    /// of the key or its restore keys (the cold build then starts seeded:
    /// `status.placement.importedFrom`). Hot and restored builds never import. At most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new(format!("self.all(r, r.matches('{}'))", image_ref_cel())).message("each entry must be a full image reference with a registry host, like registry.example.com/team/app:buildcache"))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(q, q == r))").message("entries must be unique"))]
    pub import_from: Vec<String>,
    /// Cache image every build exports its cache to. Refused for `ReadOnly` (untrusted)
    /// builds, which must never write a cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Option<RegistryExport>,
}

/// Where a build exports its cache.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryExport {
    /// Cache image reference, for example `registry.example.com/team/app:buildcache`.
    #[serde(rename = "ref")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", image_ref_cel())).message("must be a full image reference with a registry host, like registry.example.com/team/app:buildcache"))]
    pub reference: String,
    /// `min` (default: the final image's layers only) or `max` (every intermediate step too:
    /// larger and slower to export, more hits).
    #[serde(default)]
    pub mode: ExportMode,
}

/// How much of the build a registry cache export holds.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportMode {
    /// The layers of the final image only (BuildKit's default).
    #[default]
    Min,
    /// Every intermediate step as well.
    Max,
}

impl ExportMode {
    /// BuildKit's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportMode::Min => "min",
            ExportMode::Max => "max",
        }
    }
}
