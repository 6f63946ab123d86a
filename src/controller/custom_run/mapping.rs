//! Pure mapping between a Tekton CustomRun and its ImageBuild: params → ImageBuild spec, and
//! ImageBuild status → CustomRun status (the `Succeeded` condition, times, results). No
//! client here: the reconciler gathers the objects, calls these, and writes the result.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use super::types::{CustomRun, CustomRunSpec, RunCondition, RunResult, RunStatus};
use crate::api::common::{condition, LocalObjectReference};
use crate::api::image_build::{clean_dir, dockerfile_from_context};
use crate::api::{CacheMode, GitSource, ImageBuild, ImageBuildSpec, Phase, PlatformMode};

/// `customRef`/`customSpec` apiVersion that selects Hearth.
pub const API_VERSION: &str = "hearth.dev/v1alpha1";
/// `customRef`/`customSpec` kind that selects Hearth.
pub const KIND: &str = "ImageBuild";
/// `spec.status` value with which Tekton cancels a run (user cancel or pipeline timeout).
pub const RUN_CANCELLED: &str = "RunCancelled";
/// Condition type Tekton reads.
pub const SUCCEEDED: &str = "Succeeded";

/// Condition reasons, as Tekton spells them where it has a convention.
pub mod reason {
    /// Unknown: the ImageBuild exists and is not finished.
    pub const RUNNING: &str = "Running";
    /// True: the image was built (and pushed).
    pub const SUCCEEDED: &str = "Succeeded";
    /// False: the run was cancelled through `spec.status: RunCancelled`, or its build was.
    pub const CANCELLED: &str = "CustomRunCancelled";
    /// False: `spec.timeout` passed (or the ImageBuild hit its own timeout).
    pub const TIMED_OUT: &str = "CustomRunTimedOut";
    /// False: a required param is absent.
    pub const PARAMETER_MISSING: &str = "ParameterMissing";
    /// False: a param has the wrong type or a value the ImageBuild schema refuses.
    pub const INVALID_PARAM_VALUE: &str = "InvalidParamValue";
    /// False: the run asks for something Hearth does not do (`customRef.name`).
    pub const NOT_SUPPORTED: &str = "CustomRunNotSupported";
    /// False: an ImageBuild of the run's name exists and belongs to something else.
    pub const NAME_TAKEN: &str = "ImageBuildExists";
    /// False: the run's ImageBuild was deleted before it ended (it is not made again).
    pub const BUILD_DELETED: &str = "ImageBuildDeleted";
    /// False: the ImageBuild failed; its own reason is used when it has one.
    pub const FAILED: &str = "Failed";
}

/// Result names, as Tekton Chains reads them (`*IMAGE_URL`, `*IMAGE_DIGEST`).
pub const IMAGE_URL: &str = "IMAGE_URL";
/// See [`IMAGE_URL`].
pub const IMAGE_DIGEST: &str = "IMAGE_DIGEST";

/// Every param the custom task reads; any other name fails the run (a typo should not
/// silently build something else).
pub const PARAMS: [&str; 24] = [
    "IMAGE",
    "GIT_URL",
    "GIT_REVISION",
    "GIT_SECRET",
    "CONTEXT",
    "DOCKERFILE",
    "TARGET",
    "BUILD_ARGS",
    "PLATFORMS",
    "PLATFORM_MODE",
    "CACHE_KEY",
    "RESTORE_KEYS",
    "CACHE_MODE",
    "PUSH_SECRET",
    "TAGS",
    "ANNOTATIONS",
    "SBOM",
    "PROVENANCE",
    "CACHE_FROM",
    "CACHE_TO",
    "CACHE_TO_MODE",
    "SKIP_PUSH",
    "NO_CACHE",
    "PULL",
];

/// Why a run cannot start: a Tekton-style reason and a message naming the param or field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
}

impl Refusal {
    fn invalid(param: &str, what: impl std::fmt::Display) -> Self {
        Refusal {
            reason: reason::INVALID_PARAM_VALUE,
            message: format!("param {param}: {what}"),
        }
    }
}

/// True when the run is for Hearth (`customRef` or `customSpec` of `hearth.dev/v1alpha1`
/// `ImageBuild`); other custom tasks' runs are left alone.
pub fn targets_hearth(spec: &CustomRunSpec) -> bool {
    let by_ref = spec
        .custom_ref
        .as_ref()
        .is_some_and(|r| r.api_version.as_deref() == Some(API_VERSION) && r.kind == KIND);
    let by_spec = spec
        .custom_spec
        .as_ref()
        .is_some_and(|s| s.api_version == API_VERSION && s.kind == KIND);
    by_ref || by_spec
}

/// The run's `spec.timeout` (a Go duration such as `1h0m0s`); `None` when unset or zero
/// (Tekton's "no timeout").
pub fn timeout(spec: &CustomRunSpec) -> Result<Option<std::time::Duration>, Refusal> {
    let Some(text) = spec.timeout.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let parsed: kube::core::Duration = text.parse().map_err(|e| Refusal {
        reason: reason::INVALID_PARAM_VALUE,
        message: format!("spec.timeout {text:?} is not a duration: {e}"),
    })?;
    let d = std::time::Duration::from(parsed);
    Ok((!d.is_zero()).then_some(d))
}

/// The ImageBuild spec a run asks for: `customSpec.spec` (when embedded) as the base, with
/// the params on top. Checked against the ImageBuild CRD's schema and CEL rules, so a bad
/// value fails the run with the param's name rather than being refused by the API server.
pub fn build_spec(spec: &CustomRunSpec) -> Result<ImageBuildSpec, Refusal> {
    if let Some(name) = spec.custom_ref.as_ref().and_then(|r| r.name.as_deref()) {
        return Err(Refusal {
            reason: reason::NOT_SUPPORTED,
            message: format!(
                "customRef.name {name:?}: an ImageBuild is a build, not a template; \
                 leave the name out and pass params (or embed a spec with taskSpec)"
            ),
        });
    }
    let mut base = match &spec.custom_spec {
        Some(embedded) if !embedded.spec.is_null() => {
            serde_json::from_value::<ImageBuildSpec>(embedded.spec.clone()).map_err(|e| {
                Refusal {
                    reason: reason::INVALID_PARAM_VALUE,
                    message: format!("customSpec.spec is not an ImageBuild spec: {e}"),
                }
            })?
        }
        _ => ImageBuildSpec::default(),
    };
    let params = Params::read(spec)?;
    params.apply(&mut base)?;
    // The run's timeout bounds the build too (at most the ImageBuild's 24h), unless the
    // embedded spec sets its own.
    let explicit = spec
        .custom_spec
        .as_ref()
        .is_some_and(|s| s.spec.get("timeout").is_some());
    if let (Some(t), false) = (timeout(spec)?, explicit) {
        let day = std::time::Duration::from_secs(24 * 3600);
        base.timeout = kube::core::Duration::from(t.min(day));
    }
    check(&base)?;
    Ok(base)
}

#[path = "output_params.rs"]
mod output_params;

/// The params, by name, with their JSON values.
struct Params(BTreeMap<String, Value>);

impl Params {
    fn read(spec: &CustomRunSpec) -> Result<Self, Refusal> {
        let mut map = BTreeMap::new();
        for p in &spec.params {
            if !PARAMS.contains(&p.name.as_str()) {
                return Err(Refusal::invalid(
                    &p.name,
                    format!("unknown param (Hearth reads {})", PARAMS.join(", ")),
                ));
            }
            map.insert(p.name.clone(), p.value.clone());
        }
        Ok(Params(map))
    }

    /// A string param; empty strings count as unset (pipelines pass "" for "default").
    fn string(&self, name: &str) -> Result<Option<String>, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(other) => Err(Refusal::invalid(
                name,
                format!("expected a string, got {}", kind_of(other)),
            )),
        }
    }

    /// A `"true"`/`"false"` param (Tekton params are strings); empty counts as unset.
    fn boolean(&self, name: &str) -> Result<Option<bool>, Refusal> {
        match self.string(name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(Refusal::invalid(
                name,
                format!("{other:?}: expected true or false"),
            )),
        }
    }

    /// An array param of strings (Tekton's `type: array`).
    fn array(&self, name: &str) -> Result<Vec<String>, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(Refusal::invalid(
                        name,
                        format!("expected an array of strings, found {}", kind_of(other)),
                    )),
                })
                .filter(|r| !matches!(r, Ok(s) if s.trim().is_empty()))
                .collect(),
            Some(other) => Err(Refusal::invalid(
                name,
                format!("expected an array (type: array), got {}", kind_of(other)),
            )),
        }
    }

    fn apply(&self, spec: &mut ImageBuildSpec) -> Result<(), Refusal> {
        if let Some(image) = self.string("IMAGE")? {
            spec.output.image = image;
        }
        if spec.output.image.is_empty() {
            return Err(missing("IMAGE", "the image reference to build and push"));
        }
        self.apply_source(spec)?;
        if let Some(target) = self.string("TARGET")? {
            spec.target = Some(target);
        }
        if let Some(no_cache) = self.boolean("NO_CACHE")? {
            spec.no_cache = no_cache;
        }
        if let Some(pull) = self.boolean("PULL")? {
            spec.pull = pull;
        }
        for arg in self.array("BUILD_ARGS")? {
            let Some((k, v)) = arg.split_once('=') else {
                return Err(Refusal::invalid(
                    "BUILD_ARGS",
                    format!("{arg:?} is not KEY=VALUE"),
                ));
            };
            spec.build_args.insert(k.to_string(), v.to_string());
        }
        let platforms = self.array("PLATFORMS")?;
        if !platforms.is_empty() {
            spec.platforms = platforms;
        }
        if let Some(mode) = self.string("PLATFORM_MODE")? {
            spec.platform_mode = match mode.as_str() {
                "Emulate" => Some(PlatformMode::Emulate),
                "Native" => Some(PlatformMode::Native),
                _ => {
                    return Err(Refusal::invalid(
                        "PLATFORM_MODE",
                        format!("{mode:?}: expected Native or Emulate"),
                    ))
                }
            };
        }
        if let Some(key) = self.string("CACHE_KEY")? {
            spec.cache.key = Some(key);
        }
        let restore = self.array("RESTORE_KEYS")?;
        if !restore.is_empty() {
            spec.cache.restore_keys = restore;
        }
        // `key: repo:$(params.branch)` with `restoreKeys: [repo:main]` is the usual pattern,
        // and on main the two are equal, which the ImageBuild refuses: a restore key equal to
        // the key (or repeated) adds nothing, so it is dropped.
        let mut seen = std::collections::BTreeSet::new();
        let key = spec.cache.key.clone();
        spec.cache
            .restore_keys
            .retain(|k| Some(k) != key.as_ref() && seen.insert(k.clone()));
        if let Some(mode) = self.string("CACHE_MODE")? {
            spec.cache.mode = match mode.as_str() {
                "ReadWrite" => CacheMode::ReadWrite,
                "ReadOnly" => CacheMode::ReadOnly,
                "Disabled" => CacheMode::Disabled,
                _ => {
                    return Err(Refusal::invalid(
                        "CACHE_MODE",
                        format!("{mode:?}: expected ReadWrite, ReadOnly or Disabled"),
                    ))
                }
            };
        }
        if let Some(secret) = self.string("PUSH_SECRET")? {
            spec.output.push_secret_ref = Some(LocalObjectReference { name: secret });
        }
        self.apply_output(spec)
    }

    /// GIT_URL, GIT_REVISION, GIT_SECRET, CONTEXT and DOCKERFILE. DOCKERFILE is a path from
    /// the repository root, as in the catalog's build Tasks; the ImageBuild wants it relative
    /// to the context (`../` out of CONTEXT; default: `CONTEXT/Dockerfile`).
    fn apply_source(&self, spec: &mut ImageBuildSpec) -> Result<(), Refusal> {
        if let Some(url) = self.string("GIT_URL")? {
            spec.source.context = None;
            let git = spec.source.git.get_or_insert(GitSource {
                url: String::new(),
                revision: None,
                sub_path: None,
                secret_ref: None,
            });
            git.url = url;
        }
        let Some(git) = spec.source.git.as_mut() else {
            if spec.source.context.is_some() {
                return Ok(()); // an embedded spec with a prepared context
            }
            return Err(missing("GIT_URL", "the repository to build"));
        };
        if let Some(rev) = self.string("GIT_REVISION")? {
            git.revision = Some(rev);
        }
        if let Some(secret) = self.string("GIT_SECRET")? {
            git.secret_ref = Some(LocalObjectReference { name: secret });
        }
        if let Some(context) = self.string("CONTEXT")? {
            let context = clean_dir(&context);
            git.sub_path = (!context.is_empty()).then_some(context);
        }
        let context = git.sub_path.clone().unwrap_or_default();
        if let Some(dockerfile) = self.string("DOCKERFILE")? {
            spec.dockerfile = dockerfile_from_context(&context, &dockerfile).ok_or_else(|| {
                Refusal::invalid(
                    "DOCKERFILE",
                    format!(
                        "{:?} must be a file in the repository \
                         (paths are from the repository root)",
                        clean_dir(&dockerfile)
                    ),
                )
            })?;
        }
        Ok(())
    }
}

fn missing(param: &str, what: &str) -> Refusal {
    Refusal {
        reason: reason::PARAMETER_MISSING,
        message: format!("param {param} is required: {what}"),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// ImageBuild fields and the param that sets each, to name the param in an error.
const FIELD_PARAMS: [(&str, &str); 16] = [
    ("spec.output.image", "IMAGE"),
    ("spec.platformMode", "PLATFORM_MODE"),
    ("spec.output.tags", "TAGS"),
    ("spec.output.annotations", "ANNOTATIONS"),
    ("spec.cache.registry.importFrom", "CACHE_FROM"),
    ("spec.cache.registry.exportTo", "CACHE_TO"),
    ("spec.output.pushSecretRef", "PUSH_SECRET"),
    ("spec.source.git.url", "GIT_URL"),
    ("spec.source.git.revision", "GIT_REVISION"),
    ("spec.source.git.subPath", "CONTEXT"),
    ("spec.source.git.secretRef", "GIT_SECRET"),
    ("spec.dockerfile", "DOCKERFILE"),
    ("spec.buildArgs", "BUILD_ARGS"),
    ("spec.platforms", "PLATFORMS"),
    ("spec.cache.key", "CACHE_KEY"),
    ("spec.cache.restoreKeys", "RESTORE_KEYS"),
];

/// The spec against the ImageBuild CRD (schema and CEL), as the API server will check it.
fn check(spec: &ImageBuildSpec) -> Result<(), Refusal> {
    let object = ImageBuild::new("check", spec.clone());
    let value = serde_json::to_value(&object).map_err(|e| Refusal::invalid("(all)", e))?;
    let violations = crate::api::check::check(&value, None).map_err(|e| Refusal {
        reason: reason::INVALID_PARAM_VALUE,
        message: e.to_string(),
    })?;
    let Some(v) = violations.first() else {
        return Ok(());
    };
    let param = FIELD_PARAMS
        .iter()
        .find(|(field, _)| v.field.starts_with(field))
        .map(|(_, p)| *p)
        .unwrap_or(if v.field == "spec.target" {
            "TARGET"
        } else {
            "customSpec.spec"
        });
    Err(Refusal::invalid(param, format!("{v}")))
}

/// The Succeeded condition, times and results a run should show, given its build (or a
/// refusal or stop decided before looking at the build).
pub fn status_for(
    run: &CustomRun,
    build: Option<&ImageBuild>,
    ended: Option<&Refusal>,
    now: Timestamp,
) -> RunStatus {
    let old = run.status.clone().unwrap_or_default();
    let start = old.start_time.clone().unwrap_or(Time(now));
    let mut status = RunStatus {
        observed_generation: run.metadata.generation,
        start_time: Some(start),
        ..old.clone()
    };
    let (state, why, message) = match (ended, build) {
        (Some(r), _) => ("False", r.reason.to_string(), r.message.clone()),
        (None, None) => (
            "Unknown",
            reason::RUNNING.to_string(),
            "creating the ImageBuild".to_string(),
        ),
        (None, Some(b)) => from_build(b, &mut status),
    };
    if state != "Unknown" && status.completion_time.is_none() {
        let done = build
            .filter(|_| ended.is_none())
            .and_then(|b| b.status.as_ref())
            .and_then(|s| s.completion_time.clone());
        status.completion_time = Some(done.unwrap_or(Time(now)));
    }
    let since = match old.conditions.iter().find(|c| c.type_ == SUCCEEDED) {
        Some(c) if c.status == state => c.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    status.conditions = vec![RunCondition {
        type_: SUCCEEDED.into(),
        status: state.into(),
        reason: Some(why),
        message: Some(message),
        last_transition_time: since,
    }];
    status
}

/// The run's condition from its ImageBuild; results and extra fields filled in `status`.
fn from_build(build: &ImageBuild, status: &mut RunStatus) -> (&'static str, String, String) {
    let name = build.metadata.name.clone().unwrap_or_default();
    let st = build.status.clone().unwrap_or_default();
    let placement = st.placement.clone().unwrap_or_default();
    status.extra_fields = Some(json!({
        "imageBuild": name,
        "phase": st.phase,
        "warmth": placement.warmth,
        "node": placement.node,
        "cacheKey": st.cache_key,
    }));
    let story = match (placement.warmth, placement.node.as_deref()) {
        (Some(w), Some(n)) => format!(" ({w:?} on {n})"),
        _ => String::new(),
    };
    let build_reason = st
        .conditions
        .iter()
        .find(|c| c.type_ == condition::SUCCEEDED)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let message = st.message.clone().unwrap_or_default();
    match st.phase {
        Some(Phase::Succeeded) => {
            let image = build.spec.output.image.clone();
            let mut results = vec![RunResult {
                name: IMAGE_URL.into(),
                value: image.clone(),
            }];
            if let Some(d) = &st.image_digest {
                results.push(RunResult {
                    name: IMAGE_DIGEST.into(),
                    value: d.clone(),
                });
            }
            status.results = results;
            let digest = st.image_digest.as_deref().unwrap_or("no digest");
            (
                "True",
                reason::SUCCEEDED.to_string(),
                format!("built {image}@{digest}{story}"),
            )
        }
        Some(Phase::Cancelled) => (
            "False",
            reason::CANCELLED.to_string(),
            format!("ImageBuild {name} was cancelled"),
        ),
        Some(Phase::Failed) if build_reason == "Timeout" => {
            ("False", reason::TIMED_OUT.to_string(), message)
        }
        Some(Phase::Failed) => {
            // The ImageBuild's own reason (BuildFailed, NodeLost, InvalidSpec, an image pull
            // or missing Secret reason) says more than a generic one.
            let why = if build_reason.is_empty() {
                reason::FAILED.to_string()
            } else {
                build_reason
            };
            ("False", why, format!("ImageBuild {name} failed: {message}"))
        }
        phase => {
            let phase = phase.map(|p| format!("{p:?}")).unwrap_or("Pending".into());
            (
                "Unknown",
                reason::RUNNING.to_string(),
                format!("ImageBuild {name} is {phase}{story}"),
            )
        }
    }
}

/// The ImageBuild this run has already reported on, if any (recorded in `extraFields`).
pub fn reported_build(run: &CustomRun) -> Option<String> {
    run.status
        .as_ref()
        .and_then(|s| s.extra_fields.as_ref())
        .and_then(|e| e.get("imageBuild"))
        .and_then(Value::as_str)
        .map(String::from)
}

/// True once the run's Succeeded condition is True or False.
pub fn is_done(run: &CustomRun) -> bool {
    run.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == SUCCEEDED && c.status != "Unknown")
    })
}

/// True when two statuses differ in more than the condition's transition time.
pub fn differs(old: &RunStatus, new: &RunStatus) -> bool {
    let strip = |s: &RunStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = None;
        }
        s
    };
    strip(old) != strip(new)
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
