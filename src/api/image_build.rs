//! `ImageBuild`: one container image build, from source to a pushed image, with its cache
//! choice and the story of how it ran in status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalObjectReference;
use super::registry::{OutputSpec, RegistryCache};

/// `os/arch[/variant]`, as BuildKit's `--opt platform=` takes it.
pub const PLATFORM_PATTERN: &str = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$";
/// Cache keys: printable, no spaces, starting with a letter or digit.
pub const CACHE_KEY_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$";

const REL_PATH_RULE: &str = "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')";
/// CEL rule on `spec.dockerfile`: relative, `..` only as leading segments (out of the context,
/// never back into it through a detour): `../docker/Dockerfile`, not `a/../b` nor `../..`.
const DOCKERFILE_PATH_RULE: &str = "!self.startsWith('/') && self.matches('^([.][.]/)*([^/.][^/]*|[.][^/.][^/]*|[.][.][^/]+|[.])(/([^/.][^/]*|[.][^/.][^/]*|[.][.][^/]+|[.])?)*$')";
/// CEL rule on the spec: a Dockerfile out of the context (`../`) is read from the repository
/// or volume the context is a directory of, or travels apart from an uploaded context; a
/// tarball carries the context only.
const DOCKERFILE_OUTSIDE_RULE: &str = "!self.dockerfile.startsWith('../') || (has(self.source.git) && has(self.source.git.subPath)) || (has(self.source.context) && has(self.source.context.pvc) && has(self.source.context.pvc.path)) || (has(self.source.upload) && has(self.source.upload.separateDockerfile) && self.source.upload.separateDockerfile)";

/// CEL rule: the spec (all of it but `cancel` and `retention`) cannot change once the build has
/// left `Pending`. Optional fields are compared by presence first, so adding or removing one is a
/// change too. `retention` says how long the object is kept, not what is built: it may change at
/// any time, also after the build ended (to keep a build for an investigation, or let it go).
pub const SPEC_IMMUTABLE_RULE: &str = "!has(oldSelf.status) || !has(oldSelf.status.phase) \
|| oldSelf.status.phase == 'Pending' \
|| (self.spec.source == oldSelf.spec.source && self.spec.output == oldSelf.spec.output \
&& has(self.spec.dockerfile) == has(oldSelf.spec.dockerfile) && (!has(self.spec.dockerfile) || self.spec.dockerfile == oldSelf.spec.dockerfile) \
&& has(self.spec.target) == has(oldSelf.spec.target) && (!has(self.spec.target) || self.spec.target == oldSelf.spec.target) \
&& has(self.spec.buildArgs) == has(oldSelf.spec.buildArgs) && (!has(self.spec.buildArgs) || self.spec.buildArgs == oldSelf.spec.buildArgs) \
&& has(self.spec.platforms) == has(oldSelf.spec.platforms) && (!has(self.spec.platforms) || self.spec.platforms == oldSelf.spec.platforms) \
&& has(self.spec.platformMode) == has(oldSelf.spec.platformMode) && (!has(self.spec.platformMode) || self.spec.platformMode == oldSelf.spec.platformMode) \
&& has(self.spec.secrets) == has(oldSelf.spec.secrets) && (!has(self.spec.secrets) || self.spec.secrets == oldSelf.spec.secrets) \
&& has(self.spec.labels) == has(oldSelf.spec.labels) && (!has(self.spec.labels) || self.spec.labels == oldSelf.spec.labels) \
&& has(self.spec.cache) == has(oldSelf.spec.cache) && (!has(self.spec.cache) || self.spec.cache == oldSelf.spec.cache) \
&& has(self.spec.frontendOptions) == has(oldSelf.spec.frontendOptions) && (!has(self.spec.frontendOptions) || self.spec.frontendOptions == oldSelf.spec.frontendOptions) \
&& has(self.spec.timeout) == has(oldSelf.spec.timeout) && (!has(self.spec.timeout) || self.spec.timeout == oldSelf.spec.timeout) \
&& has(self.spec.resources) == has(oldSelf.spec.resources) && (!has(self.spec.resources) || self.spec.resources == oldSelf.spec.resources) \
&& has(self.spec.nodeSelector) == has(oldSelf.spec.nodeSelector) && (!has(self.spec.nodeSelector) || self.spec.nodeSelector == oldSelf.spec.nodeSelector) \
&& has(self.spec.tolerations) == has(oldSelf.spec.tolerations) && (!has(self.spec.tolerations) || self.spec.tolerations == oldSelf.spec.tolerations) \
&& has(self.spec.buildContexts) == has(oldSelf.spec.buildContexts) && (!has(self.spec.buildContexts) || self.spec.buildContexts == oldSelf.spec.buildContexts) \
&& has(self.spec.ssh) == has(oldSelf.spec.ssh) && (!has(self.spec.ssh) || self.spec.ssh == oldSelf.spec.ssh) \
&& has(self.spec.pull) == has(oldSelf.spec.pull) && (!has(self.spec.pull) || self.spec.pull == oldSelf.spec.pull) \
&& has(self.spec.noCache) == has(oldSelf.spec.noCache) && (!has(self.spec.noCache) || self.spec.noCache == oldSelf.spec.noCache))";

/// CEL rule: several platforms built natively (no `platformMode`, or `Native`) each run on
/// nodes of their own architecture, under a key of that architecture, in a child build named
/// after it: no two may share an architecture.
pub const NATIVE_ARCHS_RULE: &str = "!has(self.platforms) || size(self.platforms) <= 1 \
|| (has(self.platformMode) && self.platformMode == 'Emulate') \
|| self.platforms.all(p, self.platforms.exists_one(q, q.split('/')[1] == p.split('/')[1]))";

/// CEL rule: a `cacheRef` names one BuildCache, whose key is one architecture's; several
/// platforms built natively need one cache per architecture.
pub const NATIVE_CACHE_REF_RULE: &str = "!has(self.cache) || !has(self.cache.cacheRef) \
|| !has(self.platforms) || size(self.platforms) <= 1 \
|| (has(self.platformMode) && self.platformMode == 'Emulate')";

/// CEL rule: an SSH git source with credentials has its key in the `default` agent (the builder
/// script puts it there), so `spec.ssh` may not name another `default`.
pub const SSH_DEFAULT_AGENT_RULE: &str = "!has(self.spec.ssh) || !has(self.spec.source.git) \
|| !has(self.spec.source.git.secretRef) \
|| !self.spec.source.git.url.matches('^(ssh://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)') \
|| !self.spec.ssh.exists(s, s.id == 'default')";

/// CEL rule on `spec.buildContexts`' names: a stage or image name as a Dockerfile spells it.
pub const NAMED_CONTEXT_NAMES_RULE: &str =
    "self.all(k, size(k) <= 255 && k.matches('^[A-Za-z0-9][A-Za-z0-9._/:@-]*$'))";
/// CEL rule on `spec.buildContexts`' values: an image or an https URL, bounded.
pub const NAMED_CONTEXT_VALUES_RULE: &str = "self.all(k, size(self[k]) <= 2048 && self[k].matches('^(docker-image://[^ ]+|https://[^ ]+)$'))";
/// CEL rule on `spec.buildContexts`' values: no user before the host, and no credential in the
/// query string ([`CREDENTIAL_QUERY_RULE`] applied to each value).
pub fn named_context_credentials_rule() -> String {
    format!(
        "self.all(k, !self[k].matches('^https://[^/@]*@') && {})",
        CREDENTIAL_QUERY_RULE.replace("self.", "self[k].")
    )
}

/// One container image build. The spec is what to build; status tells where it ran, how warm
/// its cache was and how long each step took.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hearth.dev",
    version = "v1alpha1",
    kind = "ImageBuild",
    doc = "One container image build: what to build (spec) and how it ran (status).",
    plural = "imagebuilds",
    shortname = "ib",
    category = "hearth",
    namespaced,
    status = "ImageBuildStatus",
    derive = "Default",
    cel,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason"}"#,
    printcolumn = r#"{"name":"Warmth","type":"string","jsonPath":".status.placement.warmth"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.placement.node"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.output.image"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.imageDigest","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(SPEC_IMMUTABLE_RULE)
        .message("immutable once the build has started (status.phase past Pending); only spec.cancel may change, create a new ImageBuild instead")
        .field_path(".spec")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new(SSH_DEFAULT_AGENT_RULE)
        .message("the default agent carries the SSH git source's key (source.git.secretRef), which RUN --mount=type=ssh also sees; give this key another id")
        .field_path(".spec.ssh"),
)]
#[x_kube(
    validation = Rule::new(DOCKERFILE_OUTSIDE_RULE)
        .message("a Dockerfile outside the context ('../') needs a git source with subPath or a pvc context with path, whose repository or volume holds it, or an upload with separateDockerfile; a context url carries the context only")
        .field_path(".dockerfile"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(NATIVE_ARCHS_RULE).message("with platformMode Native (the default) each platform is built on nodes of its own architecture, so no two may share one (linux/amd64 and linux/amd64/v2 are both amd64): build them with platformMode: Emulate, or in separate ImageBuilds").field_path(".platforms"))]
#[x_kube(validation = Rule::new(NATIVE_CACHE_REF_RULE).message("names one BuildCache, of one architecture's key: several platforms built natively each use a cache of their own architecture; remove cacheRef, or use platformMode: Emulate").field_path(".cache.cacheRef"))]
pub struct ImageBuildSpec {
    /// Where the build context comes from: exactly one of `git`, `context` or `upload`.
    pub source: SourceSpec,
    /// Path of the Dockerfile, relative to the context root. It may lie outside the context,
    /// with leading `../` (`../docker/Dockerfile` for `source.git.subPath: app`), when the
    /// context is a directory of a git repository (`subPath`) or of a volume (`pvc.path`), as
    /// long as it stays in that repository or volume.
    #[serde(default = "default_dockerfile")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(DOCKERFILE_PATH_RULE).message("must be a relative path (no leading '/'), '..' only at its start to leave the context, like ../docker/Dockerfile"))]
    pub dockerfile: String,
    /// Build stage to stop at (`docker build --target`). Empty builds the last stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    )]
    pub target: Option<String>,
    /// Build arguments (`--build-arg`). Never put secrets here: they end up in the image
    /// history; use `secrets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$') && size(self[k]) <= 4096)").message("names must match [A-Za-z_][A-Za-z0-9_]* and values be at most 4096 characters"))]
    pub build_args: BTreeMap<String, String>,
    /// Target platforms, `os/arch[/variant]` (for example `linux/amd64`, `linux/arm64/v8`).
    /// One platform: the build runs on nodes of its architecture (`kubernetes.io/arch`);
    /// empty builds for the operator's default architecture. Several: see `platformMode`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            regex(pattern = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"),
            length(max = 64)
        )
    )]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q == p))").message("entries must be unique"))]
    pub platforms: Vec<String>,
    /// How several `platforms` are built. `Native` (the default): one child ImageBuild per
    /// platform, each on nodes of its architecture with its own cache, then one image index
    /// of their digests pushed under this build's names (no two platforms may share an
    /// architecture). `Emulate`: one build for all of them on nodes of the first platform's
    /// architecture, the others run under QEMU emulation (the nodes need binfmt handlers
    /// registered, as `tonistiigi/binfmt` installs them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_mode: Option<PlatformMode>,
    /// Build secrets (`RUN --mount=type=secret,id=...`), each taken from a key of a Secret in
    /// this namespace. They are mounted read-only into the builder, never passed in env or args.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.id == s.id))").message("ids must be unique"))]
    pub secrets: Vec<BuildSecret>,
    /// Labels set on the image (`LABEL`-style metadata in the image config).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 256 && size(self[k]) <= 4096)").message("keys at most 256 and values at most 4096 characters"))]
    pub labels: BTreeMap<String, String>,
    /// Where the image goes.
    pub output: OutputSpec,
    /// Which cache the build uses and whether it may write back to it.
    #[serde(default)]
    pub cache: CacheSpec,
    /// Extra Dockerfile frontend options, from an allow-list: `add-hosts`
    /// (`host=ip[,host=ip]`, buildx `--add-host`), `shm-size` (bytes, `--shm-size`) and
    /// `ulimit` (`name=soft[:hard][,...]`, `--ulimit`). At most 3.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 3))]
    #[x_kube(validation = Rule::new(frontend_keys_rule()).message("keys must be add-hosts, shm-size or ulimit (other frontend options are spec fields, or not allowed; BUILDKIT_* build arguments go in buildArgs)"))]
    #[x_kube(validation = Rule::new(FRONTEND_VALUES_RULE).message("add-hosts must be host=ip[,host=ip...], shm-size a number of bytes, ulimit name=soft[:hard][,...]; each at most 1024 characters"))]
    pub frontend_options: BTreeMap<String, String>,
    /// Longest the whole build may take, queueing included (Go duration, `1h` by default,
    /// at most `24h`). A build past its timeout fails with reason `Timeout`.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s') && duration(self) <= duration('24h')").message("must be a duration greater than 0s and at most 24h, for example 45m"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub timeout: Duration,
    /// Compute resources of the builder (buildkitd) container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BuildResources>,
    /// Node labels the build's node must have, on top of Hearth's own cache placement.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the builder pod (and of the restore and snapshot jobs it needs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Named build contexts (buildx `--build-context NAME=VALUE`): each name a Dockerfile's
    /// `FROM NAME` or `COPY --from=NAME` refers to, replaced by `docker-image://REF` (an image,
    /// for example to pin or mirror a base image) or an `https://` git repository or tarball.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[x_kube(validation = Rule::new(NAMED_CONTEXT_NAMES_RULE).message("names must match [A-Za-z0-9][A-Za-z0-9._/:@-]* and be at most 255 characters"))]
    #[x_kube(validation = Rule::new(NAMED_CONTEXT_VALUES_RULE).message("values must be docker-image://REF or an https:// URL (a git repository or a tarball) of at most 2048 characters"))]
    #[x_kube(validation = Rule::new(named_context_credentials_rule()).message("values must not carry credentials (a user before the host, or a token, signature or key in the query string): they would show in the pod spec and Events"))]
    pub build_contexts: BTreeMap<String, String>,
    /// SSH agents forwarded to `RUN --mount=type=ssh[,id=ID]` (buildx `--ssh`), each a
    /// private key from a Secret in this namespace, mounted read-only into the builder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.id == s.id))").message("ids must be unique"))]
    pub ssh: Vec<SshAgent>,
    /// Resolve every base image in the registry anew, rather than trusting a cached copy
    /// (buildx `--pull`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pull: bool,
    /// Run every step again, ignoring cached results (buildx `--no-cache`). The cache is
    /// still used for `RUN --mount=type=cache` and the new state is stored as usual; to build
    /// without a persistent cache, set `cache.mode: Disabled`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// Set to `true` to cancel the build: its pods stop and it ends `Cancelled`. Cannot be undone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("a cancelled build cannot be resumed; create a new ImageBuild"))]
    pub cancel: bool,
    /// How long this build is kept once it has ended, instead of the operator's defaults
    /// (`retention` in the operator config). May be changed at any time, also after the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
}

/// CEL rule of a retention TTL: at least a minute (a pipeline waiting on the build must see
/// its outcome before it goes), at most a year.
const TTL_RULE: &str = "duration(self) >= duration('1m') && duration(self) <= duration('8760h')";
/// The message of [`TTL_RULE`].
const TTL_MESSAGE: &str = "must be a duration of at least 1m and at most 8760h, for example 72h";

/// How long a finished build is kept (as a Job's `ttlSecondsAfterFinished`, Shipwright's
/// `retention`). The namespace's history limits still apply; no build is deleted while it is
/// saving its cache or holds a replica, nor sooner than the operator's `retention.minAge`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Delete the build this long after it succeeded (Go duration, 1m to 8760h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(TTL_RULE).message(TTL_MESSAGE))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub ttl_after_succeeded: Option<Duration>,
    /// Delete the build this long after it failed or was cancelled (Go duration, 1m to 8760h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(TTL_RULE).message(TTL_MESSAGE))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub ttl_after_failed: Option<Duration>,
}

impl ImageBuildSpec {
    /// Whether the build fans out: several platforms built natively (`platformMode` unset or
    /// `Native`), one child ImageBuild each, and an image index of their digests. Such a build
    /// never runs a builder itself, nor has a cache key or a placement of its own.
    pub fn fans_out(&self) -> bool {
        self.platforms.len() > 1 && self.platform_mode != Some(PlatformMode::Emulate)
    }
}

impl Default for ImageBuildSpec {
    fn default() -> Self {
        ImageBuildSpec {
            source: SourceSpec::default(),
            dockerfile: default_dockerfile(),
            target: None,
            build_args: BTreeMap::new(),
            platforms: Vec::new(),
            platform_mode: None,
            secrets: Vec::new(),
            labels: BTreeMap::new(),
            output: OutputSpec::default(),
            cache: CacheSpec::default(),
            frontend_options: BTreeMap::new(),
            timeout: default_timeout(),
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            build_contexts: BTreeMap::new(),
            ssh: Vec::new(),
            pull: false,
            no_cache: false,
            cancel: false,
            retention: None,
        }
    }
}

fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}

fn default_timeout() -> Duration {
    Duration::from(std::time::Duration::from_secs(3600))
}

/// Where the build context comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.git), has(self.context), has(self.upload)].exists_one(x, x)").message("set exactly one of git, context or upload"))]
pub struct SourceSpec {
    /// A git repository, fetched by BuildKit itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// A prepared context: a tarball in a store, or a directory on a PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextSource>,
    /// A context streamed into the builder pod by `hearth build DIR` through `pods/exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSource>,
}

/// A build context that the client uploads into the builder pod: a tar whose size and
/// sha256 are stated here up front. The builder's receiver (`hearth receive`, an init
/// container) accepts exactly that tar, refuses anything else, and fails the build if none
/// arrives within `timeout`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UploadSource {
    /// Hex sha256 of the context tar the client will send.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// Size of that tar in bytes (at most 8 GiB).
    #[schemars(range(min = 1, max = 8589934592i64))]
    pub size: i64,
    /// How long the receiver waits for the upload once it runs (Go duration, `10m` by
    /// default, at most `1h`).
    #[serde(default = "default_upload_timeout")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s') && duration(self) <= duration('1h')").message("must be a duration greater than 0s and at most 1h, for example 10m"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub timeout: Duration,
    /// Where the context came from, for the derived cache key: a normalised repository and
    /// directory (`github.com/acme/shop/svc/api`) when the directory is in a git checkout,
    /// else `upload/<directory name>`. `hearth build` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 200),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$")
    )]
    pub origin: Option<String>,
    /// The tar holds the context in `context/` and, apart from it, the Dockerfile (the last
    /// segment of `spec.dockerfile`, which may then lead out of the context with `../`) in
    /// `dockerfile/`: `hearth build -f` naming a Dockerfile outside DIR sends that one file
    /// besides the context, as buildx does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub separate_dockerfile: bool,
}

fn default_upload_timeout() -> Duration {
    Duration::from(std::time::Duration::from_secs(600))
}

/// A URL whose query string carries a credential-like parameter (`?token=`, `&X-Amz-Signature=`,
/// `?sig=`, `?access_key=`...) is refused: it would be copied into status, Events, logs and the
/// derived cache key.
pub const CREDENTIAL_QUERY_RULE: &str =
    "!self.matches('[?&][^=&#]*(?i:token|signature|sig|credential|password|passwd|secret|key|auth)[^=&#]*=')";

/// A git repository as the build context.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Clone URL: `https://`, `http://`, `ssh://`, `git://` or `user@host:path`. Credentials
    /// never go in the URL: use `secretRef`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(https?|ssh|git)://[^ #]+$') || self.matches('^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^ #]+$')").message("must be an https://, http://, ssh://, git:// or user@host:path URL without spaces or '#'"))]
    #[x_kube(validation = Rule::new("!self.matches('^[a-z]+://[^/@]*:[^/@]*@')").message("must not embed credentials; put them in a Secret and set secretRef"))]
    #[x_kube(validation = Rule::new("!self.matches('^https?://[^/@]*@')").message("must not carry a user or token before the host (it would show in status, Events and the cache key); put credentials in a Secret and set secretRef"))]
    #[x_kube(validation = Rule::new(CREDENTIAL_QUERY_RULE).message("must not carry credentials in its query string (token, signature, key, password...); put them in a Secret"))]
    pub url: String,
    /// Branch, tag, full ref or commit to build. Empty means the remote's default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._/+@-]*$")
    )]
    pub revision: Option<String>,
    /// Directory inside the repository to use as the context root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(REL_PATH_RULE).message("must be a relative path inside the repository (no leading '/', no '..')"))]
    pub sub_path: Option<String>,
    /// Secret with git credentials, read by the builder by which keys it has: for HTTPS,
    /// `username` and `password` (a `kubernetes.io/basic-auth` Secret) or a `token` key; for
    /// SSH, `ssh-privatekey` and optionally `known_hosts` (a `kubernetes.io/ssh-auth` Secret).
    /// Sent only to the repository's own host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// `./app/` → `app`; `.` → `` (the root): a directory as pipelines and people spell it.
pub fn clean_dir(path: &str) -> String {
    let mut p = path.trim();
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// `spec.dockerfile` from a Dockerfile path given from the repository (or workspace) root, as
/// the CLI, the Tekton Task and custom task take it: the path from `context` (also from the
/// root; empty is the root), with leading `../` when the Dockerfile lies outside it. `None`
/// for a path that leaves the root or names no file.
pub fn dockerfile_from_context(context: &str, dockerfile: &str) -> Option<String> {
    let context = normalize_path("", &clean_dir(context))?;
    let dockerfile = normalize_path("", &clean_dir(dockerfile))?;
    if dockerfile.is_empty() {
        return None;
    }
    let (context, dockerfile): (Vec<&str>, Vec<&str>) = (
        context.split('/').filter(|s| !s.is_empty()).collect(),
        dockerfile.split('/').collect(),
    );
    let common = context
        .iter()
        .zip(&dockerfile)
        .take_while(|(a, b)| a == b)
        .count()
        .min(dockerfile.len() - 1);
    let mut rel = vec![".."; context.len() - common];
    rel.extend(&dockerfile[common..]);
    Some(rel.join("/"))
}

/// `path` (relative, `..` segments allowed) resolved from directory `base` (relative to a
/// root, no `..`): the path from the root, without `.` and `..`. `None` when it leaves the root.
pub fn normalize_path(base: &str, path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for segment in base.split('/').chain(path.split('/')) {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    Some(out.join("/"))
}

/// A prepared build context.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.url), has(self.pvc)].exists_one(x, x)").message("set exactly one of url or pvc"))]
pub struct ContextSource {
    /// A tarball (optionally gzip or zstd compressed) over `https://...`. (`s3://` and
    /// `file://` are refused here rather than failing at run time: the builder has no
    /// store credentials for a context, nor a node path to read.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https://[^\s]+$"))]
    #[x_kube(validation = Rule::new("!self.matches('^[a-z0-9]+://[^/@]*@')").message("must not carry a user or password before the host (it would show in status, Events and the cache key)"))]
    #[x_kube(validation = Rule::new(CREDENTIAL_QUERY_RULE).message("must not carry credentials in its query string (a pre-signed URL's signature, a token, a key...): they would show in status, Events and the cache key"))]
    pub url: Option<String>,
    /// A directory on a PersistentVolumeClaim in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcContext>,
}

/// A directory on a PVC as the build context.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcContext {
    /// Name of the PersistentVolumeClaim, in the build's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub claim_name: String,
    /// Directory inside the volume; the volume root when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(REL_PATH_RULE).message("must be a relative path inside the volume (no leading '/', no '..')"))]
    pub path: Option<String>,
}

/// One build secret taken from a Secret key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BuildSecret {
    /// Id the Dockerfile uses: `RUN --mount=type=secret,id=<id>`.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub id: String,
    /// The Secret key holding the value.
    pub secret_ref: SecretKeyRef,
}

/// One SSH agent forwarded to the build: `RUN --mount=type=ssh,id=<id>` sees the key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SshAgent {
    /// Id the Dockerfile uses (`default` when a `RUN --mount=type=ssh` names none).
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub id: String,
    /// The Secret key holding the private key (for example the `ssh-privatekey` key of a
    /// `kubernetes.io/ssh-auth` Secret). Passphrase-protected keys are not supported.
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Values of the allowed frontend options, each in the form the frontend parses.
const FRONTEND_VALUES_RULE: &str = "self.all(k, size(self[k]) <= 1024 && (k != 'add-hosts' || self[k].matches('^[A-Za-z0-9.-]+=[0-9A-Fa-f:.]+(,[A-Za-z0-9.-]+=[0-9A-Fa-f:.]+)*$')) && (k != 'shm-size' || self[k].matches('^[0-9]{1,15}$')) && (k != 'ulimit' || self[k].matches('^[a-z]+=-?[0-9]+(:-?[0-9]+)?(,[a-z]+=-?[0-9]+(:-?[0-9]+)?)*$')))";

/// Keys of `frontendOptions`: [`FRONTEND_OPTIONS`].
fn frontend_keys_rule() -> String {
    let keys: Vec<String> = FRONTEND_OPTIONS.iter().map(|k| format!("'{k}'")).collect();
    format!("self.all(k, k in [{}])", keys.join(", "))
}

/// How an ImageBuild of several platforms is built.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlatformMode {
    /// One child ImageBuild per platform, each on nodes of its own architecture with a cache
    /// of that architecture, pushed by digest; then one image index of their digests pushed
    /// under every name of the parent. The default with several platforms.
    Native,
    /// One build for every platform on nodes of the first platform's architecture; BuildKit
    /// runs the other platforms' steps under QEMU (binfmt), slower but one pass.
    Emulate,
}

/// How a build may use its cache.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum CacheMode {
    /// Restore and write back: the replica keeps this build's state and may be snapshotted.
    #[default]
    ReadWrite,
    /// For untrusted builds (fork pull requests): may start from a cache, but runs on a
    /// throwaway copy and never writes back to a replica or a snapshot.
    ReadOnly,
    /// No persistent cache: the build starts cold on an empty volume that is then discarded.
    Disabled,
}

/// The cache a build uses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.key) || !has(self.restoreKeys) || !(self.key in self.restoreKeys)").message("must not repeat spec.cache.key").field_path(".restoreKeys"))]
#[x_kube(validation = Rule::new("!has(self.registry) || !has(self.registry.exportTo) || !has(self.mode) || self.mode != 'ReadOnly'").message("a ReadOnly (untrusted) build must not export a cache; remove exportTo or use ReadWrite").field_path(".registry.exportTo"))]
pub struct CacheSpec {
    /// Cache key. When empty, Hearth derives one from the source URL, Dockerfile path and target
    /// (reported in `status.cacheKey`). Builds with the same key share warm replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$")
    )]
    pub key: Option<String>,
    /// Ordered fallback keys (like actions/cache `restore-keys`): when `key` has no replica or
    /// snapshot, the first of these that has one seeds the cache. At most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 10),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$")
        )
    )]
    #[x_kube(validation = Rule::new("self.all(k, self.exists_one(j, j == k))").message("entries must be unique"))]
    pub restore_keys: Vec<String>,
    /// `ReadWrite` (default), `ReadOnly` (untrusted builds: may restore, never writes back)
    /// or `Disabled`.
    #[serde(default)]
    pub mode: CacheMode,
    /// Name of a BuildCache in this namespace to use, instead of the one Hearth finds or
    /// creates for the key. Its key must match the build's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub cache_ref: Option<String>,
    /// Registry caches, next to Hearth's own (BuildKit's `type=registry` cache import and
    /// export): refs a cold build imports from when neither the key nor a restore key has a
    /// replica or snapshot, and a ref every build exports to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryCache>,
}

/// Frontend options a build may pass through to the Dockerfile frontend: the keys buildx
/// sets from `--add-host`, `--shm-size` and `--ulimit`. Every other option is set by a field
/// of the spec (context, Dockerfile, target, platforms, labels, attestations) or is not
/// allowed (network mode, cgroup parent); `BUILDKIT_*` build arguments go in `buildArgs`.
pub const FRONTEND_OPTIONS: [&str; 3] = ["add-hosts", "shm-size", "ulimit"];

/// Compute resources of the builder container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BuildResources {
    /// Minimum resources, by name (`cpu`, `memory`, `ephemeral-storage`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 8))]
    pub requests: BTreeMap<String, Quantity>,
    /// Maximum resources, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 8))]
    pub limits: BTreeMap<String, Quantity>,
}

/// Where a build is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Accepted, not yet placed.
    Pending,
    /// Choosing a node and replica, or waiting for a busy replica of its key.
    Placing,
    /// Restoring a snapshot into a new replica.
    Restoring,
    /// buildkitd is building (and pushing).
    Building,
    /// Saving the replica's new state to the store.
    Snapshotting,
    /// Done; the image is pushed (when asked).
    Succeeded,
    /// Ended with an error; `message` and the `Succeeded` condition say why.
    Failed,
    /// Cancelled by `spec.cancel`.
    Cancelled,
}

/// The phase as users read it in `kubectl get` (the serialized name).
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The warmth as users read it in status (the serialized name).
impl std::fmt::Display for Warmth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl Phase {
    /// True once the build can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

/// How warm the cache was when the build started.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Warmth {
    /// A replica of the key was already on the node: as fast as it gets.
    Hot,
    /// A snapshot (of the key or a restore key) was restored into a new replica, or a replica
    /// of one of them was cloned into it (`placement.clonedFrom`).
    Restored,
    /// No cache: built from scratch.
    Cold,
}

/// The snapshot a replica was restored from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// Cache key the snapshot belongs to: the build's own key or one of its restore keys.
    pub key: String,
    /// Snapshot id in the store.
    pub snapshot: String,
    /// BuildCache that saved the snapshot, whose store prefix it is read from: for a restore
    /// key, that key's cache, not the build's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// SHA-256 of the snapshot's manifest, from that BuildCache's status: the restore refuses
    /// any other manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
}

/// The replica a new replica was cloned from (a CSI volume clone on the same node).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClonedFrom {
    /// Cache key the source replica holds: the build's own key or one of its restore keys.
    pub key: String,
    /// BuildCache of the source replica (of this namespace).
    pub cache: String,
    /// PVC of the source replica: the clone's `dataSource`.
    pub replica: String,
    /// Snapshot the source matched, which the clone then matches too; none when the source
    /// held unsaved state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// Where a build runs, and why there.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node the builder runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// PVC of the cache replica used (none for a throwaway cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// BuildCache the replica belongs to (or whose snapshot seeds a throwaway cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// `Hot`, `Restored` or `Cold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmth: Option<Warmth>,
    /// Where a restored cache came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
    /// Where a cloned cache came from (a `Restored` build whose new replica is a clone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloned_from: Option<ClonedFrom>,
    /// Registry cache refs a cold build imported from (`spec.cache.registry.importFrom`):
    /// set only when neither the key nor a restore key had a replica or snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imported_from: Vec<String>,
    /// The planner's reason, in words (for example why the build is cold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// While waiting for a busy replica: the expected wait, as a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_wait: Option<String>,
}

/// Time spent in each step, as Go durations (`1m2.5s`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    /// From creation to the start of the restore or build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<String>,
    /// Restoring the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Running buildkitd: build and push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Saving the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// What happened to the build. Written only by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageBuildStatus {
    /// `Pending`, `Placing`, `Restoring`, `Building`, `Snapshotting`, `Succeeded`, `Failed`
    /// or `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Placed`, `CacheReady`, `Built`, `Snapshotted` and `Succeeded`. `Succeeded` turns
    /// `False` as soon as the build fails, so `kubectl wait` and pipelines can stop at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The cache key in use: `spec.cache.key`, or the one derived from the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// Node, replica, warmth and the planner's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Digest of the pushed image (`sha256:...`), from BuildKit's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The commit BuildKit resolved `spec.source.git.revision` to (a branch or tag moves; this
    /// is what was built), from its build info. Git sources only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The pushed image by digest, `repository@sha256:...` of `spec.output.image`: the
    /// reference to deploy or sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's size in bytes: the compressed config and layers as pushed (every platform
    /// of a multi-platform image, attestations left out, each layer counted once), read from
    /// the manifests BuildKit's exporter wrote. Unset when it could not be read. For a build
    /// of several platforms built natively, the sum of its platforms' (a layer two platforms
    /// share counts for each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<i64>,
    /// Every name pushed: `spec.output.image` and each of `spec.output.tags`, as full
    /// references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// When the controller started working on the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the build reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Time spent queued, restoring, building and snapshotting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durations: Option<Durations>,
    /// How many times the build was started (a lost node retries it once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Human-readable summary of the latest transition or failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The cache prune after a successful ReadWrite build, before its save (`buildctl prune`
    /// with the BuildCache's `gc.keepDuration` and `gc.keepStorage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_prune: Option<CachePrune>,
    /// A build of several platforms built natively: each platform's child ImageBuild, where
    /// it ran and what it pushed, in `spec.platforms` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub platforms: Vec<PlatformBuild>,
}

/// One platform of a build of several platforms built natively: its child ImageBuild.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlatformBuild {
    /// The platform, `os/arch[/variant]`.
    pub platform: String,
    /// Name of the child ImageBuild building it.
    pub build: String,
    /// The child's phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Node the child ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How warm the child's cache was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmth: Option<Warmth>,
    /// Digest the child pushed (by digest, no tag), `sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

/// How the prune after a ReadWrite build went. A prune that fails never fails the build.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachePrune {
    /// `Pruned` (`bytes` says how much, possibly 0), `Failed` (the build still succeeded) or
    /// `Skipped` (too little of `spec.timeout` was left).
    pub result: PruneResult,
    /// Bytes BuildKit dropped, from the `Total:` line `buildctl prune` prints (three
    /// significant digits: `2.05MB` is 2050000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of the cache prune.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneResult {
    /// `buildctl prune` exited 0 and reported its total.
    Pruned,
    /// `buildctl prune` failed, timed out, or printed no total.
    Failed,
    /// Not run: too little of the build's timeout was left.
    Skipped,
}

#[cfg(test)]
mod path_tests {
    use super::{dockerfile_from_context, normalize_path};

    #[test]
    fn a_dockerfile_from_the_root_becomes_a_path_from_the_context() {
        for (context, dockerfile, want) in [
            ("", "Dockerfile", Some("Dockerfile")),
            (".", "./docker/Dockerfile", Some("docker/Dockerfile")),
            ("svc/api", "svc/api/Dockerfile", Some("Dockerfile")),
            (
                "./svc/api/",
                "svc/api/docker/Dockerfile",
                Some("docker/Dockerfile"),
            ),
            ("svc/api", "Dockerfile", Some("../../Dockerfile")),
            ("svc/api", "svc/Dockerfile", Some("../Dockerfile")),
            ("svc/api", "svc/apix/Dockerfile", Some("../apix/Dockerfile")),
            ("svc/api", "docker/../Dockerfile", Some("../../Dockerfile")),
            ("svc", "../Dockerfile", None),
            ("svc", "", None),
        ] {
            assert_eq!(
                dockerfile_from_context(context, dockerfile).as_deref(),
                want,
                "{context} {dockerfile}"
            );
        }
    }

    #[test]
    fn a_path_is_resolved_from_its_base_and_never_leaves_the_root() {
        assert_eq!(
            normalize_path("svc/api", "../../docker/Dockerfile").as_deref(),
            Some("docker/Dockerfile")
        );
        assert_eq!(
            normalize_path("svc/api", "./../x").as_deref(),
            Some("svc/x")
        );
        assert_eq!(normalize_path("svc/api", "../../../x"), None);
        assert_eq!(normalize_path("", "..").as_deref(), None);
    }
}
