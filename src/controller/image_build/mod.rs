//! The ImageBuild lifecycle: plan → claim → (restore) → build → (snapshot) → release, one
//! step per reconcile, every step's state in status and owned objects (never only in
//! memory), so a restarted controller resumes each build where it stood.

pub mod outcome;
pub mod status;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::ResourceExt;
use tracing::{info, warn};

use super::builders::labels;
use super::claims::{self, Release};
use super::context::Context;
use super::error::{ignore_missing, Error, Result};
use super::finalizer;
use super::view::pod_unfinished;
use crate::api::{ImageBuild, ImageBuildStatus, Phase};
use status::differs;

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "imagebuild";
/// Finalizer that releases the build's replica claim before the ImageBuild goes.
pub const FINALIZER: &str = "hearth.dev/release";
/// How soon to look again at a build whose pods are still terminating.
const LINGER: Duration = Duration::from_secs(2);

/// Reconciles one ImageBuild.
pub async fn reconcile(build: Arc<ImageBuild>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile(CONTROLLER);
    let namespace = build.namespace().unwrap_or_default();
    let api: Api<ImageBuild> = Api::namespaced(ctx.client.clone(), &namespace);
    if build.metadata.deletion_timestamp.is_some() {
        // The finalizer stays until the build's pods are gone and its replica released.
        if !abort(&build, &ctx).await? {
            return Ok(Action::requeue(LINGER));
        }
        finalizer::remove(&api, build.as_ref(), FINALIZER).await?;
        return Ok(Action::await_change());
    }
    let build = match finalizer::ensure(&api, build.as_ref(), FINALIZER).await? {
        Some(updated) => updated,
        None => build.as_ref().clone(),
    };
    apply(&build, &ctx).await
}

/// What to do when a reconcile fails: conflicts re-plan at once, invalid specs wait for a
/// change, everything else backs off.
pub fn error_policy(_build: Arc<ImageBuild>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.category());
    match error {
        Error::ClaimConflict(_) => Action::requeue(Duration::from_millis(200)),
        Error::InvalidSpec(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

/// One step's result: the status to write and when to look again.
pub(crate) struct Step {
    pub status: ImageBuildStatus,
    pub next: Action,
    pub event: Option<(EventType, &'static str, String)>,
}

impl Step {
    pub(crate) fn new(status: ImageBuildStatus, next: Action) -> Self {
        Step {
            status,
            next,
            event: None,
        }
    }

    pub(crate) fn with_event(
        mut self,
        kind: EventType,
        reason: &'static str,
        note: String,
    ) -> Self {
        self.event = Some((kind, reason, note));
        self
    }
}

async fn apply(build: &ImageBuild, ctx: &Context) -> Result<Action> {
    let old = build.status.clone().unwrap_or_default();
    if old.phase.is_some_and(Phase::is_terminal) {
        return after_finish(build, ctx, old).await;
    }
    let step = match steps::step(build, ctx).await {
        Ok(step) => step,
        Err(Error::InvalidSpec(message)) => steps::invalid(build, ctx, &message),
        Err(e) => return Err(e),
    };
    write_status(build, ctx, &old, step).await
}

async fn write_status(
    build: &ImageBuild,
    ctx: &Context,
    old: &ImageBuildStatus,
    step: Step,
) -> Result<Action> {
    let Step {
        mut status,
        next,
        event,
    } = step;
    status.observed_generation = build.metadata.generation;
    if differs(old, &status) {
        let api: Api<ImageBuild> =
            Api::namespaced(ctx.client.clone(), &build.namespace().unwrap_or_default());
        let mut object = build.clone();
        object.status = Some(status.clone());
        // A full status write guarded by the resourceVersion read: a stale view conflicts
        // and is retried, never written over newer state.
        api.replace_status(
            &build.name_any(),
            &PostParams {
                field_manager: Some(labels::FIELD_MANAGER.into()),
                ..Default::default()
            },
            &object,
        )
        .await?;
        if old.phase != status.phase {
            info!(build = %build.name_any(), namespace = %build.namespace().unwrap_or_default(), from = ?old.phase, to = ?status.phase, "phase");
            if let Some(phase) = status.phase.filter(|p| p.is_terminal()) {
                record_finish(ctx, build, &status, phase);
            }
        }
    }
    if let Some((type_, reason, note)) = event {
        publish(ctx, build, type_, reason, note).await;
    }
    Ok(next)
}

fn record_finish(ctx: &Context, build: &ImageBuild, status: &ImageBuildStatus, phase: Phase) {
    let warmth = status
        .placement
        .as_ref()
        .and_then(|p| p.warmth)
        .map(|w| format!("{w:?}"));
    ctx.metrics
        .build_finished(warmth.as_deref().unwrap_or("None"), &format!("{phase:?}"));
    if let (Some(warmth), Phase::Succeeded) = (&warmth, phase) {
        ctx.metrics
            .cache_used(&build.namespace().unwrap_or_default(), warmth);
    }
}

/// Publishes an Event; failures are logged, never fatal.
pub(crate) async fn publish<K: kube::Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

/// A finished build still has work: the save after a Succeeded build, or, after a cancel,
/// timeout or failure, the release of a replica its pods held until they were gone.
async fn after_finish(build: &ImageBuild, ctx: &Context, old: ImageBuildStatus) -> Result<Action> {
    if status::saving(&old) {
        let step = steps::snapshotting(build, ctx, old.clone()).await?;
        return write_status(build, ctx, &old, step).await;
    }
    if holds_claim(build, ctx) && !abort(build, ctx).await? {
        return Ok(Action::requeue(LINGER));
    }
    Ok(Action::await_change())
}

/// Whether the build still holds a replica in its BuildCache (from the reflector store).
fn holds_claim(build: &ImageBuild, ctx: &Context) -> bool {
    let namespace = build.namespace();
    let name = build.name_any();
    let Some(cache) = build
        .status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .filter(|p| p.replica.is_some())
        .and_then(|p| p.cache.clone())
    else {
        return false;
    };
    ctx.stores.caches.iter().flat_map(|s| s.state()).any(|c| {
        c.namespace() == namespace
            && c.name_any() == cache
            && c.status
                .iter()
                .flat_map(|s| &s.replicas)
                .any(|r| r.holder.as_deref() == Some(name.as_str()))
    })
}

/// Stops the build's pods and jobs, and once none is still running, releases its replica
/// (whose state it may have changed, so it no longer matches a snapshot). Until then the
/// replica stays held: a buildkitd finishing its step on a cancelled build must not share
/// its volume with a save, an eviction or the next build. Returns whether it was released.
/// Idempotent.
pub(crate) async fn abort(build: &ImageBuild, ctx: &Context) -> Result<bool> {
    if stop_children(build, ctx).await? > 0 {
        return Ok(false);
    }
    let how = Release::Done {
        changed: true,
        saved: None,
        warmth: None,
        build: None,
    };
    release_claim(build, ctx, how).await?;
    Ok(true)
}

/// Deletes the build's pods and jobs (all attempts); returns how many of its pods are still
/// running (terminating over their grace period).
pub(crate) async fn stop_children(build: &ImageBuild, ctx: &Context) -> Result<usize> {
    let namespace = build.namespace().unwrap_or_default();
    let selector = format!("{}={}", labels::BUILD, build.name_any());
    let dp = DeleteParams::background();
    let lp = kube::api::ListParams::default().labels(&selector);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    for job in jobs.list(&lp).await?.items {
        ignore_missing(jobs.delete(&job.name_any(), &dp).await)?;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = pods.list(&lp).await?.items;
    for pod in listed
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        ignore_missing(pods.delete(&pod.name_any(), &dp).await)?;
    }
    if listed.is_empty() {
        return Ok(0);
    }
    // Deleted pods either went at once or run on through their grace period.
    let left = pods.list(&lp).await?.items;
    Ok(left.iter().filter(|p| pod_unfinished(p)).count())
}

/// Releases whatever replica the build holds in its BuildCache.
pub(crate) async fn release_claim(build: &ImageBuild, ctx: &Context, how: Release) -> Result<()> {
    let status = build.status.clone().unwrap_or_default();
    let Some(cache) = status
        .placement
        .as_ref()
        .filter(|p| p.replica.is_some())
        .and_then(|p| p.cache.clone())
    else {
        return Ok(());
    };
    claims::release(
        ctx,
        &build.namespace().unwrap_or_default(),
        &cache,
        &build.name_any(),
        how,
        ctx.now(),
    )
    .await
}
