//! The Tekton custom task on the stateful fake API: a CustomRun whose customRef is
//! `hearth.dev/v1alpha1` `ImageBuild` gets an owned ImageBuild from its params, and its
//! `Succeeded` condition, times and results follow the build; Tekton's cancel and timeout
//! stop the build.

mod support;

use hearth::api::Phase;
use hearth::controller::config::OperatorConfig;
use hearth::controller::custom_run::mapping::{reason, IMAGE_DIGEST, IMAGE_URL};
use hearth::controller::custom_run::{CustomRun, RunStatus, CUSTOM_RUN_LABEL};
use kube::api::{Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use support::{metadata, Cluster, NS};

const IMAGE: &str = "registry.example.com/shop/api:7";

async fn cluster() -> Cluster {
    let mut config = OperatorConfig::default();
    config.tekton.enabled = true;
    Cluster::new(&["n1", "n2"], config).await
}

/// A CustomRun as Tekton's PipelineRun controller creates it for `taskRef: {apiVersion:
/// hearth.dev/v1alpha1, kind: ImageBuild}`.
async fn submit(c: &Cluster, name: &str, params: serde_json::Value, extra: serde_json::Value) {
    let mut list = vec![];
    for (k, v) in params.as_object().unwrap() {
        list.push(json!({"name": k, "value": v}));
    }
    let mut spec = json!({
        "customRef": {"apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild"},
        "params": list,
        "serviceAccountName": "default",
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let run: CustomRun = serde_json::from_value(json!({
        "apiVersion": "tekton.dev/v1beta1", "kind": "CustomRun",
        "metadata": {"name": name, "namespace": NS, "labels": {
            "tekton.dev/pipelineRun": "release-42", "tekton.dev/pipelineTask": "build", "team": "shop"}},
        "spec": spec,
    }))
    .unwrap();
    c.runs()
        .create(&PostParams::default(), &run)
        .await
        .expect("create CustomRun");
}

fn good_params() -> serde_json::Value {
    json!({
        "IMAGE": IMAGE,
        "GIT_URL": "https://github.com/acme/shop.git",
        "GIT_REVISION": "main",
        "BUILD_ARGS": ["VERSION=7"],
        "CACHE_KEY": "shop:main",
        "RESTORE_KEYS": ["shop:base"],
    })
}

async fn status(c: &Cluster, name: &str) -> RunStatus {
    c.runs().get(name).await.unwrap().status.unwrap_or_default()
}

/// (status, reason, message) of the run's Succeeded condition.
async fn succeeded(c: &Cluster, name: &str) -> (String, String, String) {
    let s = status(c, name).await;
    let cond = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .unwrap_or_else(|| panic!("{name} has no Succeeded condition: {s:?}"));
    (
        cond.status.clone(),
        cond.reason.clone().unwrap_or_default(),
        cond.message.clone().unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_run_starts_an_owned_image_build_from_its_params() {
    let mut c = cluster().await;
    submit(&c, "release-42-build", good_params(), json!({})).await;
    c.reconcile_run("release-42-build")
        .await
        .expect("reconcile");

    let ib = c.build("release-42-build").await;
    let run = c.runs().get("release-42-build").await.unwrap();
    let owner = &ib.owner_references()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            Some(&owner.uid),
            owner.controller
        ),
        (
            "CustomRun",
            "release-42-build",
            run.uid().as_ref(),
            Some(true)
        )
    );
    assert_eq!(ib.labels()[CUSTOM_RUN_LABEL], "release-42-build");
    assert_eq!(ib.labels()["tekton.dev/pipelineRun"], "release-42");
    assert!(
        !ib.labels().contains_key("team"),
        "only Tekton's labels follow the run"
    );
    assert_eq!(ib.spec.output.image, IMAGE);
    assert_eq!(
        ib.spec.source.git.as_ref().unwrap().revision.as_deref(),
        Some("main")
    );
    assert_eq!(ib.spec.build_args["VERSION"], "7");
    assert_eq!(ib.spec.cache.key.as_deref(), Some("shop:main"));
    assert_eq!(ib.spec.cache.restore_keys, ["shop:base"]);

    let (state, why, _) = succeeded(&c, "release-42-build").await;
    assert_eq!((state.as_str(), why.as_str()), ("Unknown", reason::RUNNING));
    assert!(status(&c, "release-42-build").await.start_time.is_some());

    // The build moves on; the run says where it is, still Unknown, same start time.
    let started = status(&c, "release-42-build").await.start_time;
    assert_eq!(c.settle("release-42-build").await, Some(Phase::Building));
    c.reconcile_run("release-42-build").await.unwrap();
    let (state, _, message) = succeeded(&c, "release-42-build").await;
    assert_eq!(state, "Unknown");
    assert!(message.contains("Building (Cold on n"), "{message}");
    assert_eq!(status(&c, "release-42-build").await.start_time, started);
    // A second reconcile with nothing new writes nothing and creates nothing more.
    let rv = c
        .runs()
        .get("release-42-build")
        .await
        .unwrap()
        .resource_version();
    c.reconcile_run("release-42-build").await.unwrap();
    assert_eq!(
        c.runs()
            .get("release-42-build")
            .await
            .unwrap()
            .resource_version(),
        rv
    );
}

#[tokio::test]
async fn a_succeeded_build_succeeds_the_run_with_image_url_and_digest() {
    let mut c = cluster().await;
    submit(&c, "r-ok", good_params(), json!({})).await;
    c.reconcile_run("r-ok").await.unwrap();
    c.settle("r-ok").await;
    let (meta, digest) = metadata('d');
    c.finish_pod("r-ok-build-1", 0, &meta).await;
    assert_eq!(c.settle("r-ok").await, Some(Phase::Succeeded));
    c.reconcile_run("r-ok").await.unwrap();

    let (state, why, message) = succeeded(&c, "r-ok").await;
    assert_eq!((state.as_str(), why.as_str()), ("True", reason::SUCCEEDED));
    assert!(message.contains(&digest), "{message}");
    let s = status(&c, "r-ok").await;
    assert_eq!(
        (s.result(IMAGE_URL), s.result(IMAGE_DIGEST)),
        (Some(IMAGE), Some(digest.as_str()))
    );
    assert!(s.completion_time.is_some() && s.start_time.is_some());
    assert_eq!(s.extra_fields.unwrap()["warmth"], "Cold");
    // Done: later reconciles leave it alone.
    let rv = c.runs().get("r-ok").await.unwrap().resource_version();
    c.reconcile_run("r-ok").await.unwrap();
    assert_eq!(c.runs().get("r-ok").await.unwrap().resource_version(), rv);
}

#[tokio::test]
async fn a_failed_build_fails_the_run_with_its_reason() {
    let mut c = cluster().await;
    submit(&c, "r-bad", good_params(), json!({})).await;
    c.reconcile_run("r-bad").await.unwrap();
    c.settle("r-bad").await;
    c.finish_pod(
        "r-bad-build-1",
        1,
        "ERROR: failed to solve: process \"/bin/sh -c make\" did not complete successfully",
    )
    .await;
    assert_eq!(c.settle("r-bad").await, Some(Phase::Failed));
    c.reconcile_run("r-bad").await.unwrap();
    let (state, why, message) = succeeded(&c, "r-bad").await;
    assert_eq!((state.as_str(), why.as_str()), ("False", "BuildFailed"));
    assert!(
        message.contains("did not complete successfully"),
        "{message}"
    );
    let s = status(&c, "r-bad").await;
    assert!(s.completion_time.is_some());
    assert!(s.results.is_empty(), "no results from a failed build");
}

async fn cancel_run(c: &Cluster, name: &str, message: &str) {
    c.runs()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"status": "RunCancelled", "statusMessage": message}})),
        )
        .await
        .expect("cancel");
}

#[tokio::test]
async fn a_cancelled_run_cancels_its_build() {
    let mut c = cluster().await;
    submit(&c, "r-cancel", good_params(), json!({})).await;
    c.reconcile_run("r-cancel").await.unwrap();
    assert_eq!(c.settle("r-cancel").await, Some(Phase::Building));
    cancel_run(
        &c,
        "r-cancel",
        "CustomRun cancelled as the PipelineRun it belongs to has been cancelled.",
    )
    .await;
    c.reconcile_run("r-cancel").await.unwrap();

    assert!(
        c.build("r-cancel").await.spec.cancel,
        "the build is asked to stop"
    );
    let (state, why, message) = succeeded(&c, "r-cancel").await;
    assert_eq!((state.as_str(), why.as_str()), ("False", reason::CANCELLED));
    assert!(
        message.contains("PipelineRun it belongs to has been cancelled"),
        "{message}"
    );
    assert!(status(&c, "r-cancel").await.completion_time.is_some());
    // The ImageBuild controller then stops the pod and ends the build Cancelled.
    assert_eq!(c.settle("r-cancel").await, Some(Phase::Cancelled));
    assert!(c
        .pods()
        .get_opt("r-cancel-build-1")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_run_cancelled_before_it_started_creates_nothing() {
    let mut c = cluster().await;
    submit(
        &c,
        "r-early",
        good_params(),
        json!({"status": "RunCancelled"}),
    )
    .await;
    c.reconcile_run("r-early").await.unwrap();
    assert!(c.builds().get_opt("r-early").await.unwrap().is_none());
    assert_eq!(succeeded(&c, "r-early").await.1, reason::CANCELLED);
}

#[tokio::test]
async fn a_run_past_its_timeout_times_out_and_cancels_its_build() {
    let mut c = cluster().await;
    submit(&c, "r-slow", good_params(), json!({"timeout": "10m0s"})).await;
    let next = c.reconcile_run("r-slow").await.unwrap();
    assert_eq!(
        next,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(600)),
        "looks again when the timeout is due"
    );
    assert_eq!(
        std::time::Duration::from(c.build("r-slow").await.spec.timeout).as_secs(),
        600,
        "the build is bounded by the run's timeout too"
    );
    c.settle("r-slow").await;
    c.advance(300);
    c.reconcile_run("r-slow").await.unwrap();
    assert_eq!(succeeded(&c, "r-slow").await.0, "Unknown", "not yet");

    c.advance(301);
    c.reconcile_run("r-slow").await.unwrap();
    let (state, why, message) = succeeded(&c, "r-slow").await;
    assert_eq!((state.as_str(), why.as_str()), ("False", reason::TIMED_OUT));
    assert!(
        message.contains("failed to finish within \"10m0s\""),
        "{message}"
    );
    assert!(c.build("r-slow").await.spec.cancel);
}

#[tokio::test]
async fn missing_or_invalid_params_fail_the_run_naming_the_param() {
    let mut c = cluster().await;
    let mut no_image = good_params();
    no_image.as_object_mut().unwrap().remove("IMAGE");
    submit(&c, "r-noimage", no_image, json!({})).await;
    c.reconcile_run("r-noimage").await.unwrap();
    let (state, why, message) = succeeded(&c, "r-noimage").await;
    assert_eq!(
        (state.as_str(), why.as_str()),
        ("False", reason::PARAMETER_MISSING)
    );
    assert!(message.contains("IMAGE"), "{message}");
    assert!(c.builds().get_opt("r-noimage").await.unwrap().is_none());

    let mut bad = good_params();
    bad["RESTORE_KEYS"] = json!("shop:base");
    submit(&c, "r-badparam", bad, json!({})).await;
    c.reconcile_run("r-badparam").await.unwrap();
    let (state, why, message) = succeeded(&c, "r-badparam").await;
    assert_eq!(
        (state.as_str(), why.as_str()),
        ("False", reason::INVALID_PARAM_VALUE)
    );
    assert!(message.starts_with("param RESTORE_KEYS:"), "{message}");
    assert!(c.builds().get_opt("r-badparam").await.unwrap().is_none());
}

#[tokio::test]
async fn runs_of_other_custom_tasks_and_foreign_builds_are_left_alone() {
    let mut c = cluster().await;
    let other: CustomRun = serde_json::from_value(json!({
        "apiVersion": "tekton.dev/v1beta1", "kind": "CustomRun",
        "metadata": {"name": "wait-1", "namespace": NS},
        "spec": {"customRef": {"apiVersion": "wait.testing.tekton.dev/v1beta1", "kind": "Wait"},
                 "params": [{"name": "duration", "value": "1s"}]}
    }))
    .unwrap();
    c.runs()
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    c.reconcile_run("wait-1").await.unwrap();
    assert!(c.runs().get("wait-1").await.unwrap().status.is_none());
    assert!(c.builds().get_opt("wait-1").await.unwrap().is_none());

    // An ImageBuild of the run's name that someone else made is not taken over.
    c.submit("taken", support::spec(IMAGE, json!({}))).await;
    submit(&c, "taken", good_params(), json!({})).await;
    c.reconcile_run("taken").await.unwrap();
    assert_eq!(succeeded(&c, "taken").await.1, reason::NAME_TAKEN);
    assert!(c.build("taken").await.owner_references().is_empty());
}

#[tokio::test]
async fn a_deleted_build_fails_the_run_instead_of_building_again() {
    let mut c = cluster().await;
    submit(&c, "r-gone", good_params(), json!({})).await;
    c.reconcile_run("r-gone").await.unwrap();
    c.builds()
        .delete("r-gone", &Default::default())
        .await
        .expect("delete");
    // The finalizer of a build that never ran is not there yet: the object is gone at once.
    if c.builds().get_opt("r-gone").await.unwrap().is_some() {
        c.reconcile("r-gone").await.unwrap();
    }
    c.reconcile_run("r-gone").await.unwrap();
    let (state, why, message) = succeeded(&c, "r-gone").await;
    assert_eq!(
        (state.as_str(), why.as_str()),
        ("False", reason::BUILD_DELETED)
    );
    assert!(message.contains("r-gone"), "{message}");
    assert!(
        c.builds().get_opt("r-gone").await.unwrap().is_none(),
        "not made again"
    );
}

/// Retention deletes finished builds: a run that ended keeps its outcome and results when its
/// build goes afterwards (Tekton treats a finished run's status as final).
#[tokio::test]
async fn a_finished_run_keeps_its_outcome_when_its_build_is_deleted_later() {
    let mut c = cluster().await;
    submit(&c, "r-kept", good_params(), json!({})).await;
    c.reconcile_run("r-kept").await.unwrap();
    c.settle("r-kept").await;
    let (meta, digest) = metadata('e');
    c.finish_pod("r-kept-build-1", 0, &meta).await;
    assert_eq!(c.settle("r-kept").await, Some(Phase::Succeeded));
    c.reconcile_run("r-kept").await.unwrap();
    let before = status(&c, "r-kept").await;

    c.builds()
        .delete("r-kept", &Default::default())
        .await
        .expect("delete");
    for _ in 0..3 {
        if c.builds().get_opt("r-kept").await.unwrap().is_some() {
            let _ = c.reconcile("r-kept").await;
        }
    }
    assert!(c.builds().get_opt("r-kept").await.unwrap().is_none());
    c.reconcile_run("r-kept").await.unwrap();
    let (state, why, _) = succeeded(&c, "r-kept").await;
    assert_eq!((state.as_str(), why.as_str()), ("True", reason::SUCCEEDED));
    let after = status(&c, "r-kept").await;
    assert_eq!(after.result(IMAGE_DIGEST), Some(digest.as_str()));
    assert_eq!(after.completion_time, before.completion_time);
    assert!(
        c.builds().get_opt("r-kept").await.unwrap().is_none(),
        "not built again"
    );
}
