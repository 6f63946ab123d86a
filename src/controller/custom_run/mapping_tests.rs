//! Params to ImageBuild spec, and ImageBuild status to CustomRun status, without a cluster.

use super::*;
use crate::api::ImageBuildStatus;
use serde_json::json;

fn run(v: serde_json::Value) -> CustomRun {
    let mut r: CustomRun = serde_json::from_value(json!({
        "apiVersion": "tekton.dev/v1beta1", "kind": "CustomRun",
        "metadata": {"name": "r1", "namespace": "shop", "generation": 1},
        "spec": v
    }))
    .expect("custom run");
    r.metadata.uid = Some("uid-1".into());
    r
}

fn params(p: serde_json::Value) -> CustomRunSpec {
    let mut list = vec![];
    for (k, v) in p.as_object().unwrap() {
        list.push(json!({"name": k, "value": v}));
    }
    run(json!({
        "customRef": {"apiVersion": API_VERSION, "kind": KIND},
        "params": list,
    }))
    .spec
}

fn base() -> serde_json::Value {
    json!({"IMAGE": "registry.example.com/shop/api:1", "GIT_URL": "https://github.com/acme/shop.git"})
}

fn with(extra: serde_json::Value) -> CustomRunSpec {
    let mut b = base();
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    params(b)
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

#[test]
fn only_runs_for_hearth_image_builds_are_ours() {
    assert!(targets_hearth(&params(base())));
    let other = run(json!({"customRef": {"apiVersion": "example.dev/v1", "kind": "ImageBuild"}}));
    assert!(!targets_hearth(&other.spec));
    let wait = run(json!({"customRef": {"apiVersion": API_VERSION, "kind": "Wait"}}));
    assert!(!targets_hearth(&wait.spec));
    let embedded =
        run(json!({"customSpec": {"apiVersion": API_VERSION, "kind": KIND, "spec": {}}}));
    assert!(targets_hearth(&embedded.spec));
}

#[test]
fn every_param_lands_in_the_image_build_spec() {
    let spec = build_spec(&with(json!({
        "GIT_REVISION": "feature-x",
        "GIT_SECRET": "git-creds",
        "CONTEXT": "./services/api/",
        "DOCKERFILE": "services/api/build/Dockerfile",
        "TARGET": "runtime",
        "BUILD_ARGS": ["VERSION=1.2", "EMPTY=", "URL=https://x?a=b"],
        "PLATFORMS": ["linux/amd64", "linux/arm64"],
        "PLATFORM_MODE": "Emulate",
        "CACHE_KEY": "github.com/acme/shop:feature-x",
        "RESTORE_KEYS": ["github.com/acme/shop:main"],
        "CACHE_MODE": "ReadOnly",
        "PUSH_SECRET": "registry-push",
    })))
    .expect("valid");
    let git = spec.source.git.clone().unwrap();
    assert_eq!(git.url, "https://github.com/acme/shop.git");
    assert_eq!(git.revision.as_deref(), Some("feature-x"));
    assert_eq!(git.sub_path.as_deref(), Some("services/api"));
    assert_eq!(git.secret_ref.unwrap().name, "git-creds");
    assert_eq!(spec.dockerfile, "build/Dockerfile");
    assert_eq!(spec.target.as_deref(), Some("runtime"));
    assert_eq!(spec.build_args["VERSION"], "1.2");
    assert_eq!(spec.build_args["EMPTY"], "");
    assert_eq!(spec.build_args["URL"], "https://x?a=b");
    assert_eq!(spec.platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(spec.platform_mode, Some(crate::api::PlatformMode::Emulate));
    assert_eq!(
        spec.cache.key.as_deref(),
        Some("github.com/acme/shop:feature-x")
    );
    assert_eq!(spec.cache.restore_keys, ["github.com/acme/shop:main"]);
    assert_eq!(spec.cache.mode, CacheMode::ReadOnly);
    assert_eq!(spec.output.push_secret_ref.unwrap().name, "registry-push");
}

#[test]
fn output_attestation_and_registry_cache_params_land_in_the_spec() {
    let spec = build_spec(&with(json!({
        "TAGS": ["latest", "mirror.example.com/shop/api:1"],
        "ANNOTATIONS": ["org.opencontainers.image.source=https://github.com/acme/shop"],
        "SBOM": "true",
        "PROVENANCE": "max",
        "CACHE_FROM": ["registry.example.com/shop/api:cache"],
        "CACHE_TO": "registry.example.com/shop/api:cache",
        "CACHE_TO_MODE": "max",
        "SKIP_PUSH": "true",
        "NO_CACHE": "true",
        "PULL": "true",
    })))
    .expect("valid");
    assert!(!spec.output.push && spec.no_cache && spec.pull);
    assert_eq!(
        spec.output.tags,
        ["latest", "mirror.example.com/shop/api:1"]
    );
    assert_eq!(
        spec.output.annotations["org.opencontainers.image.source"],
        "https://github.com/acme/shop"
    );
    assert!(spec.output.attestations.sbom);
    assert_eq!(
        spec.output.attestations.provenance.mode,
        crate::api::ProvenanceMode::Max
    );
    let registry = spec.cache.registry.unwrap();
    assert_eq!(
        registry.import_from,
        ["registry.example.com/shop/api:cache"]
    );
    let export = registry.export_to.unwrap();
    assert_eq!(
        (export.reference.as_str(), export.mode),
        (
            "registry.example.com/shop/api:cache",
            crate::api::ExportMode::Max
        )
    );
    // None given: the API's defaults (provenance min, no SBOM, no registry cache).
    let spec = build_spec(&with(json!({}))).unwrap();
    assert_eq!(
        spec.output.attestations,
        crate::api::Attestations::default()
    );
    assert!(spec.cache.registry.is_none());
}

#[test]
fn defaults_are_the_repository_root_and_its_dockerfile() {
    let spec = build_spec(&with(
        json!({"CONTEXT": ".", "DOCKERFILE": "", "CACHE_KEY": ""}),
    ))
    .unwrap();
    assert_eq!(spec.source.git.unwrap().sub_path, None);
    assert_eq!(spec.dockerfile, "Dockerfile");
    assert_eq!(spec.cache.key, None, "an empty string means unset");
    // Out of CONTEXT, from the repository root: BuildKit reads it from the repository.
    let spec = build_spec(&with(
        json!({"CONTEXT": "services/api", "DOCKERFILE": "docker/api.Dockerfile"}),
    ))
    .unwrap();
    assert_eq!(spec.dockerfile, "../../docker/api.Dockerfile");
    let spec = build_spec(&with(json!({"DOCKERFILE": "./docker/Dockerfile.prod"}))).unwrap();
    assert_eq!(spec.dockerfile, "docker/Dockerfile.prod");
}

#[test]
fn a_restore_key_equal_to_the_key_is_dropped() {
    // key: repo:$(params.branch), restoreKeys: [repo:main], on main.
    let spec = build_spec(&with(json!({
        "CACHE_KEY": "shop:main",
        "RESTORE_KEYS": ["shop:main", "shop:base", "shop:base"],
    })))
    .unwrap();
    assert_eq!(spec.cache.restore_keys, ["shop:base"]);
}

#[test]
fn missing_params_fail_naming_the_param() {
    let e = build_spec(&params(
        json!({"GIT_URL": "https://github.com/acme/shop.git"}),
    ))
    .unwrap_err();
    assert_eq!(e.reason, reason::PARAMETER_MISSING);
    assert!(e.message.contains("IMAGE"), "{}", e.message);
    let e = build_spec(&params(json!({"IMAGE": "registry.example.com/a:1"}))).unwrap_err();
    assert_eq!(e.reason, reason::PARAMETER_MISSING);
    assert!(e.message.contains("GIT_URL"), "{}", e.message);
}

#[test]
fn invalid_params_fail_naming_the_param() {
    let cases = [
        (json!({"IMAGE": "shop/api:1"}), "IMAGE"),
        (json!({"BUILD_ARGS": ["NO_EQUALS"]}), "BUILD_ARGS"),
        (json!({"BUILD_ARGS": "A=1"}), "BUILD_ARGS"),
        (json!({"RESTORE_KEYS": [1]}), "RESTORE_KEYS"),
        (json!({"CACHE_MODE": "Sometimes"}), "CACHE_MODE"),
        (json!({"CACHE_KEY": "has spaces in it"}), "CACHE_KEY"),
        (json!({"PLATFORMS": ["windows"]}), "PLATFORMS"),
        (
            json!({"PLATFORMS": ["linux/amd64", "linux/amd64/v2"]}),
            "PLATFORMS",
        ),
        (json!({"PLATFORM_MODE": "Sometimes"}), "PLATFORM_MODE"),
        (json!({"GIT_URL": "ftp://example.com/x"}), "GIT_URL"),
        (json!({"DOCKERFILE": "../Dockerfile"}), "DOCKERFILE"),
        (
            json!({"CONTEXT": "app", "DOCKERFILE": "app/../../Dockerfile"}),
            "DOCKERFILE",
        ),
        (json!({"IMAGE_NAME": "x"}), "IMAGE_NAME"),
        (json!({"TARGET": ["a"]}), "TARGET"),
        (json!({"TAGS": ["shop/api:2"]}), "TAGS"),
        (json!({"ANNOTATIONS": ["novalue"]}), "ANNOTATIONS"),
        (json!({"SBOM": "yes"}), "SBOM"),
        (json!({"SKIP_PUSH": "no"}), "SKIP_PUSH"),
        (json!({"NO_CACHE": "1"}), "NO_CACHE"),
        (json!({"PROVENANCE": "full"}), "PROVENANCE"),
        (json!({"CACHE_FROM": ["cache"]}), "CACHE_FROM"),
        (json!({"CACHE_TO": "cache"}), "CACHE_TO"),
        (json!({"CACHE_TO_MODE": "all"}), "CACHE_TO_MODE"),
        (
            json!({"CACHE_MODE": "ReadOnly", "CACHE_TO": "registry.example.com/a:c"}),
            "CACHE_TO",
        ),
    ];
    for (extra, param) in cases {
        let e = build_spec(&with(extra.clone())).expect_err(&format!("{extra} must fail"));
        assert_eq!(e.reason, reason::INVALID_PARAM_VALUE, "{extra}: {e:?}");
        assert!(
            e.message.starts_with(&format!("param {param}:")),
            "{extra}: {}",
            e.message
        );
    }
}

#[test]
fn a_named_custom_ref_is_refused() {
    let mut spec = params(base());
    spec.custom_ref.as_mut().unwrap().name = Some("template".into());
    assert_eq!(build_spec(&spec).unwrap_err().reason, reason::NOT_SUPPORTED);
}

#[test]
fn an_embedded_spec_is_the_base_and_params_override_it() {
    let spec = run(json!({
        "customSpec": {"apiVersion": API_VERSION, "kind": KIND, "spec": {
            "source": {"git": {"url": "https://github.com/acme/shop.git"}},
            "output": {"image": "registry.example.com/shop/api:base"},
            "cache": {"mode": "Disabled"},
            "timeout": "10m"
        }},
        "params": [{"name": "IMAGE", "value": "registry.example.com/shop/api:2"}],
        "timeout": "2h"
    }))
    .spec;
    let b = build_spec(&spec).unwrap();
    assert_eq!(b.output.image, "registry.example.com/shop/api:2");
    assert_eq!(b.cache.mode, CacheMode::Disabled);
    assert_eq!(
        std::time::Duration::from(b.timeout).as_secs(),
        600,
        "the embedded timeout wins"
    );
}

#[test]
fn the_run_timeout_bounds_the_build() {
    let mut spec = params(base());
    spec.timeout = Some("1h30m0s".into());
    assert_eq!(
        std::time::Duration::from(build_spec(&spec).unwrap().timeout).as_secs(),
        5400
    );
    spec.timeout = Some("48h".into());
    assert_eq!(
        std::time::Duration::from(build_spec(&spec).unwrap().timeout).as_secs(),
        86400
    );
    spec.timeout = Some("0s".into());
    assert_eq!(timeout(&spec).unwrap(), None, "0s is Tekton's no timeout");
    spec.timeout = Some("soon".into());
    assert!(timeout(&spec).unwrap_err().message.contains("spec.timeout"));
}

fn build_with(status: serde_json::Value) -> ImageBuild {
    let mut b = ImageBuild::new("r1", build_spec(&params(base())).unwrap());
    b.status = Some(serde_json::from_value::<ImageBuildStatus>(status).unwrap());
    b
}

fn succeeded(s: &RunStatus) -> &RunCondition {
    s.conditions.iter().find(|c| c.type_ == SUCCEEDED).unwrap()
}

#[test]
fn a_running_build_is_unknown_with_a_start_time() {
    let r = run(json!({"customRef": {"apiVersion": API_VERSION, "kind": KIND}}));
    let s = status_for(&r, None, None, t(100));
    assert_eq!(succeeded(&s).status, "Unknown");
    assert_eq!(s.start_time, Some(Time(t(100))));
    let mut r = r;
    r.status = Some(s);
    let b = build_with(json!({"phase": "Building", "placement": {"warmth": "Hot", "node": "n1"}}));
    let s = status_for(&r, Some(&b), None, t(110));
    let c = succeeded(&s);
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("Unknown", Some("Running"))
    );
    assert!(c
        .message
        .as_deref()
        .unwrap()
        .contains("Building (Hot on n1)"));
    assert_eq!(s.start_time, Some(Time(t(100))), "start time kept");
    assert_eq!(
        c.last_transition_time,
        Some(Time(t(100))),
        "no transition while Unknown"
    );
    assert!(s.completion_time.is_none() && s.results.is_empty());
    assert!(
        differs(r.status.as_ref().unwrap(), &s),
        "the build's progress is news"
    );
}

#[test]
fn a_succeeded_build_gives_the_results() {
    let r = run(json!({"customRef": {"apiVersion": API_VERSION, "kind": KIND}}));
    let digest = format!("sha256:{}", "a".repeat(64));
    let b = build_with(
        json!({"phase": "Succeeded", "imageDigest": digest, "completionTime": "2026-11-22T10:00:00Z"}),
    );
    let s = status_for(&r, Some(&b), None, t(200));
    assert_eq!(succeeded(&s).status, "True");
    assert_eq!(succeeded(&s).reason.as_deref(), Some("Succeeded"));
    assert_eq!(
        (s.result(IMAGE_URL), s.result(IMAGE_DIGEST), s.results.len()),
        (
            Some("registry.example.com/shop/api:1"),
            Some(digest.as_str()),
            2
        )
    );
    assert_eq!(
        s.completion_time.unwrap().0.to_string(),
        "2026-11-22T10:00:00Z",
        "the build's own completion time"
    );
}

#[test]
fn failures_carry_the_build_reason_and_timeouts_tektons() {
    let r = run(json!({"customRef": {"apiVersion": API_VERSION, "kind": KIND}}));
    let failed = build_with(json!({"phase": "Failed", "message": "exit 1: no such file",
        "conditions": [{"type": "Succeeded", "status": "False", "reason": "BuildFailed", "message": "x", "lastTransitionTime": "2026-11-22T10:00:00Z"}]}));
    let s = status_for(&r, Some(&failed), None, t(300));
    let c = succeeded(&s);
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("BuildFailed"))
    );
    assert!(c.message.as_deref().unwrap().contains("no such file"));
    assert_eq!(s.completion_time, Some(Time(t(300))));
    let timed_out = build_with(json!({"phase": "Failed", "message": "past spec.timeout",
        "conditions": [{"type": "Succeeded", "status": "False", "reason": "Timeout", "message": "x", "lastTransitionTime": "2026-11-22T10:00:00Z"}]}));
    assert_eq!(
        succeeded(&status_for(&r, Some(&timed_out), None, t(300)))
            .reason
            .as_deref(),
        Some(reason::TIMED_OUT)
    );
    let cancelled = build_with(json!({"phase": "Cancelled"}));
    assert_eq!(
        succeeded(&status_for(&r, Some(&cancelled), None, t(300)))
            .reason
            .as_deref(),
        Some(reason::CANCELLED)
    );
}

#[test]
fn a_refusal_ends_the_run_whatever_the_build_says() {
    let r = run(json!({"customRef": {"apiVersion": API_VERSION, "kind": KIND}}));
    let b = build_with(json!({"phase": "Building"}));
    let stop = Refusal {
        reason: reason::CANCELLED,
        message: "by the user".into(),
    };
    let s = status_for(&r, Some(&b), Some(&stop), t(400));
    let c = succeeded(&s);
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
        ("False", Some(reason::CANCELLED), Some("by the user"))
    );
    assert_eq!(s.completion_time, Some(Time(t(400))));
    let mut done = r.clone();
    done.status = Some(s);
    assert!(is_done(&done));
}
