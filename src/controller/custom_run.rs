//! Tekton custom task: reconciles `tekton.dev/v1beta1` CustomRuns whose `customRef` (or
//! `customSpec`) is `hearth.dev/v1alpha1` `ImageBuild`. Each run gets one owned ImageBuild of
//! the same name, made from its params; the run's `Succeeded` condition, times and results
//! (`IMAGE_URL`, `IMAGE_DIGEST`) follow the build. `spec.status: RunCancelled` and
//! `spec.timeout` cancel the build (`spec.cancel: true`). Off unless `tekton.enabled`.
//!
//! The pure parts (params → ImageBuild spec, build → run status) are in [`mapping`]; this
//! file only reads the build, creates or cancels it, and writes the run's status.

pub mod mapping;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::context::Context;
use super::error::{is_status, Error, Result};
use super::requeue;
use super::writes::{patch_params, post_params};
use crate::api::ImageBuild;
use mapping::{reason, Refusal};
pub use types::{CustomRun, CustomRunSpec, RunStatus};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "customrun";
/// Label on the ImageBuild naming its CustomRun (the owned-objects watch selects on it).
pub const CUSTOM_RUN_LABEL: &str = "tekton.dev/customRun";

/// Reconciles one CustomRun.
pub async fn reconcile(run: Arc<CustomRun>, ctx: Arc<Context>) -> Result<Action> {
    if !mapping::targets_hearth(&run.spec) || mapping::is_done(&run) {
        return Ok(Action::await_change());
    }
    ctx.metrics.reconcile(CONTROLLER);
    let namespace = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let builds: Api<ImageBuild> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = ctx.now();

    // Dereference: the run's build, if it exists and is really this run's.
    let mut stop = None;
    let mut build = builds.get_opt(&name).await?;
    if build.as_ref().is_some_and(|b| !owned_by(b, &run)) {
        build = None;
        stop = Some(Refusal {
            reason: reason::NAME_TAKEN,
            message: format!(
                "an ImageBuild named {name} exists and does not belong to this CustomRun"
            ),
        });
    }
    let deadline = match mapping::timeout(&run.spec) {
        Ok(t) => t.map(|t| started(&run, now) + t),
        Err(refusal) => {
            stop = stop.or(Some(refusal));
            None
        }
    };
    // A build that existed and is gone was deleted by someone: the run fails rather than
    // building again behind the pipeline's back.
    if build.is_none() && stop.is_none() {
        if let Some(gone) = mapping::reported_build(&run) {
            stop = Some(Refusal {
                reason: reason::BUILD_DELETED,
                message: format!("ImageBuild {gone} was deleted before it ended"),
            });
        }
    }
    // Tekton's stop signals come before anything is created.
    stop = stop
        .or_else(|| cancelled(&run))
        .or_else(|| deadline.filter(|d| now >= *d).map(|_| timed_out(&run)));
    if stop.is_none() && build.is_none() {
        match mapping::build_spec(&run.spec) {
            Ok(spec) => match create(&builds, &run, spec).await? {
                Some(created) => build = Some(created),
                None => return Ok(Action::requeue(requeue::CREATED_ELSEWHERE)),
            },
            Err(refusal) => stop = Some(refusal),
        }
    }
    if let (Some(r), Some(b)) = (&stop, &build) {
        if [reason::CANCELLED, reason::TIMED_OUT].contains(&r.reason) {
            cancel(&builds, b).await?;
        }
    }

    let old = run.status.clone().unwrap_or_default();
    let status = mapping::status_for(&run, build.as_ref(), stop.as_ref(), now);
    if mapping::differs(&old, &status) {
        let runs: Api<CustomRun> = Api::namespaced(ctx.client.clone(), &namespace);
        runs.patch_status(
            &name,
            &patch_params(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
        if let Some(c) = status.conditions.first().filter(|c| c.status != "Unknown") {
            info!(run = %name, %namespace, status = %c.status, reason = ?c.reason, "custom run finished");
        }
    }
    let done = status.conditions.iter().any(|c| c.status != "Unknown");
    Ok(match deadline {
        Some(d) if !done => {
            let left = d.duration_since(now).unsigned_abs();
            Action::requeue(left.max(requeue::DEADLINE_MIN))
        }
        _ => Action::await_change(),
    })
}

/// Conflicts retry at once; everything else backs off.
pub fn error_policy(_run: Arc<CustomRun>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.category());
    match error {
        Error::Kube(e) if is_status(e, 409) => Action::requeue(requeue::CLAIM_CONFLICT),
        _ => Action::requeue(requeue::BUILD_ERROR),
    }
}

fn owned_by(build: &ImageBuild, run: &CustomRun) -> bool {
    let uid = run.uid();
    build
        .owner_references()
        .iter()
        .any(|o| o.kind == "CustomRun" && Some(&o.uid) == uid.as_ref())
}

fn started(run: &CustomRun, now: jiff::Timestamp) -> jiff::Timestamp {
    run.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now)
}

fn cancelled(run: &CustomRun) -> Option<Refusal> {
    (run.spec.status.as_deref() == Some(mapping::RUN_CANCELLED)).then(|| Refusal {
        reason: reason::CANCELLED,
        message: run
            .spec
            .status_message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("CustomRun {} was cancelled", run.name_any())),
    })
}

fn timed_out(run: &CustomRun) -> Refusal {
    Refusal {
        reason: reason::TIMED_OUT,
        message: format!(
            "CustomRun {:?} failed to finish within {:?}",
            run.name_any(),
            run.spec.timeout.clone().unwrap_or_default()
        ),
    }
}

/// Creates the run's ImageBuild, owned by the run; `None` when one appeared meanwhile.
async fn create(
    builds: &Api<ImageBuild>,
    run: &CustomRun,
    spec: crate::api::ImageBuildSpec,
) -> Result<Option<ImageBuild>> {
    let mut build = ImageBuild::new(&run.name_any(), spec);
    build.metadata.namespace = run.namespace();
    build.metadata.owner_references = run.controller_owner_ref(&()).map(|o| vec![o]);
    // Tekton's own labels (pipeline, pipelineRun, pipelineTask...) follow the run, as they
    // do from a PipelineRun to its TaskRuns.
    let mut labels: BTreeMap<String, String> = run
        .labels()
        .iter()
        .filter(|(k, _)| k.starts_with("tekton.dev/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(CUSTOM_RUN_LABEL.into(), run.name_any());
    build.metadata.labels = Some(labels);
    match builds.create(&post_params(), &build).await {
        Ok(b) => {
            info!(run = %run.name_any(), "created ImageBuild for custom run");
            Ok(Some(b))
        }
        Err(e) if is_status(&e, 409) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Asks the build to stop; a no-op once it has ended or was already asked.
async fn cancel(builds: &Api<ImageBuild>, build: &ImageBuild) -> Result<()> {
    let ended = build
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_terminal());
    if ended || build.spec.cancel {
        return Ok(());
    }
    builds
        .patch(
            &build.name_any(),
            &patch_params(),
            &Patch::Merge(&json!({"spec": {"cancel": true}})),
        )
        .await?;
    Ok(())
}
