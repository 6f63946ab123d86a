//! Applies a decision: its effects in order (a claim lost to another build stops here, before
//! anything else is written, and the build re-plans), then the status if it changed, then its
//! Events.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::info;

use super::decide::{Decision, Effect, Sample};
use crate::api::{BuildCache, ImageBuild, ImageBuildStatus, Phase};
use crate::controller::cache_policy::EvictReason;
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::events::publish;
use crate::controller::replica_table::{self, NewReplica};
use crate::controller::slim;
use crate::controller::writes::{
    create_or_get, delete_ignoring_missing, patch_params, write_status_if_changed,
};

/// Applies `decision` for `build` (as read); `cache` is the BuildCache observed, if any.
pub async fn act(
    build: &ImageBuild,
    cache: Option<BuildCache>,
    decision: Decision,
    ctx: &Context,
) -> Result<()> {
    let Decision {
        mut status,
        effects,
        ..
    } = decision;
    let (events, changes): (Vec<_>, Vec<_>) = effects
        .into_iter()
        .partition(|e| matches!(e, Effect::Event { .. }));
    apply_effects(build, cache, changes, ctx).await?;
    status.observed_generation = build.metadata.generation;
    write_status(build, status, ctx).await?;
    for event in events {
        if let Effect::Event {
            type_,
            reason,
            note,
        } = event
        {
            publish(ctx, build, type_, reason, note).await;
        }
    }
    Ok(())
}

/// Applies effects other than Events, in order.
pub async fn apply_effects(
    build: &ImageBuild,
    mut cache: Option<BuildCache>,
    effects: Vec<Effect>,
    ctx: &Context,
) -> Result<()> {
    let namespace = build.namespace().unwrap_or_default();
    let name = build.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let builds: Api<ImageBuild> = Api::namespaced(ctx.client.clone(), &namespace);
    for effect in effects {
        match effect {
            Effect::CreateCache(new) => {
                cache = Some(replica_table::create_cache(ctx, &new).await?);
            }
            Effect::Evict(v) => {
                // Each only if it is still deletable when marked (a build claiming it first
                // wins; the node's budget pass then evicts something else if need be).
                replica_table::evict_by_name(
                    ctx,
                    &v.namespace,
                    &v.cache,
                    &v.pvc,
                    EvictReason::Room,
                )
                .await?;
            }
            Effect::Claim {
                namespace,
                cache,
                pvc,
            } => {
                if !replica_table::claim_idle(ctx, &namespace, &cache, &pvc, &name).await? {
                    return Err(Error::ClaimConflict(cache));
                }
            }
            Effect::AddReplica {
                pvc,
                node,
                state,
                size_bytes,
                clone_of,
            } => {
                let cache = cache.as_ref().ok_or_else(|| {
                    Error::Internal("a replica added without its BuildCache".into())
                })?;
                let replica = NewReplica {
                    pvc: &pvc,
                    node: &node,
                    state,
                    holder: &name,
                    size_bytes,
                    clone_of,
                };
                replica_table::add_replica(ctx, cache, replica).await?;
            }
            Effect::HoldForClone { cache, pvc } => {
                if !replica_table::hold_for_clone(ctx, &namespace, &cache, &pvc, &name).await? {
                    return Err(Error::ClaimConflict(cache));
                }
            }
            Effect::ReleaseCloneHold { cache, pvc } => {
                replica_table::release_clone_hold(ctx, &namespace, &cache, &pvc, &name).await?;
            }
            Effect::CreatePod(pod) => {
                if let Err(e) = create_or_get(&pods, &pod).await {
                    say_if_refused(build, "builder pod", &pod.name_any(), &e, ctx).await;
                    return Err(e);
                }
            }
            Effect::DeletePod(pod) => delete_ignoring_missing(&pods, &pod).await?,
            Effect::CreateJob(job) => {
                if let Err(e) = create_or_get(&jobs, &job).await {
                    say_if_refused(build, "Job", &job.name_any(), &e, ctx).await;
                    return Err(e);
                }
            }
            Effect::CreateBuild(child) => {
                create_or_get(&builds, &child).await?;
            }
            Effect::CancelBuild(child) => {
                let cancel = serde_json::json!({"spec": {"cancel": true}});
                builds
                    .patch(&child, &patch_params(), &Patch::Merge(&cancel))
                    .await?;
            }
            Effect::StopChildren(children) => {
                for job in &children.jobs {
                    delete_ignoring_missing(&jobs, job).await?;
                }
                for pod in &children.pods {
                    delete_ignoring_missing(&pods, pod).await?;
                }
            }
            Effect::Release { cache, how } => {
                replica_table::release(ctx, &namespace, &cache, &name, how, ctx.now()).await?;
            }
            Effect::SaveFailed { cache, message } => {
                replica_table::save_failed(ctx, &namespace, &cache, &message).await;
            }
            Effect::Measure(sample) => measure(ctx, sample),
            Effect::Event { .. } => {}
        }
    }
    Ok(())
}

fn measure(ctx: &Context, sample: Sample) {
    match sample {
        Sample::Step(step, seconds) => ctx.metrics.step(step, seconds),
        Sample::Transfer(op, bytes) => ctx.metrics.store_transfer(op, bytes),
        Sample::StoreFailed(op) => ctx.metrics.store_failed(op),
    }
}

/// Writes the status if it changed, logging phase changes and counting finished builds.
async fn write_status(build: &ImageBuild, status: ImageBuildStatus, ctx: &Context) -> Result<()> {
    if slim::compacted(build) {
        return write_compacted_status(build, status, ctx).await;
    }
    let api: Api<ImageBuild> =
        Api::namespaced(ctx.client.clone(), &build.namespace().unwrap_or_default());
    let old_phase = build.status.as_ref().and_then(|s| s.phase);
    let new_phase = status.phase;
    let Some(written) = write_status_if_changed(&api, build, status).await? else {
        return Ok(());
    };
    if old_phase != new_phase {
        info!(build = %build.name_any(), namespace = %build.namespace().unwrap_or_default(), from = ?old_phase, to = ?new_phase, "phase");
        if let Some(phase) = new_phase.filter(|p| p.is_terminal()) {
            record_finish(ctx, &written, phase);
        }
    }
    Ok(())
}

/// The status of a finished build known only in its compact form: its spec and most of its
/// status are not in memory, so replacing the status would erase them. The one change a
/// finished build takes, a new `observedGeneration` (its `spec.cancel` set after it ended),
/// is patched alone, guarded by the resourceVersion read; any other is a broken invariant.
async fn write_compacted_status(
    build: &ImageBuild,
    status: ImageBuildStatus,
    ctx: &Context,
) -> Result<()> {
    let read = build.status.clone().unwrap_or_default();
    let generation = status.observed_generation;
    if (ImageBuildStatus {
        observed_generation: read.observed_generation,
        ..status
    }) != read
    {
        return Err(Error::Internal(format!(
            "a status change was decided for the finished build {} from its compact form",
            build.name_any()
        )));
    }
    if generation == read.observed_generation {
        return Ok(());
    }
    let api: Api<ImageBuild> =
        Api::namespaced(ctx.client.clone(), &build.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "metadata": {"resourceVersion": build.resource_version()},
        "status": {"observedGeneration": generation},
    });
    api.patch_status(&build.name_any(), &patch_params(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

fn record_finish(ctx: &Context, build: &ImageBuild, phase: Phase) {
    if build.spec.fans_out() {
        // A parent runs nothing itself: its children, one per platform, are the builds
        // counted (each with its own warmth), so hit rates are not diluted by it.
        return;
    }
    let warmth = build
        .status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .and_then(|p| p.warmth)
        .map(|w| format!("{w:?}"));
    ctx.metrics
        .build_finished(warmth.as_deref().unwrap_or("None"), &format!("{phase:?}"));
    if let (Some(warmth), Phase::Succeeded) = (&warmth, phase) {
        ctx.metrics
            .cache_used(&build.namespace().unwrap_or_default(), warmth);
    }
}

/// A pod or Job the API server refused (403: an admission plugin, such as a ServiceAccount,
/// PriorityClass or RuntimeClass of the operator config that does not exist in the namespace,
/// or a ResourceQuota; 422: invalid) as a Warning Event on the build with the server's own
/// message, so `kubectl describe` says why the build waits; the create is tried again.
async fn say_if_refused(build: &ImageBuild, what: &str, name: &str, error: &Error, ctx: &Context) {
    if let Error::Kube(kube::Error::Api(status)) = error {
        if status.code == 403 || status.code == 422 {
            let note = format!(
                "the API server refused {what} {name} ({}): {}; trying again",
                status.code, status.message
            );
            publish(ctx, build, EventType::Warning, "CreateRefused", note).await;
        }
    }
}
