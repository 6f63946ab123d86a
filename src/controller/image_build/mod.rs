//! The ImageBuild reconciler: observe -> decide -> act. `observe` gathers the build, its
//! BuildCache, its pod or Job, its children and the planner's choice; `decide` (pure) holds
//! every rule of the lifecycle (plan -> claim -> (restore) -> build -> (save) -> release) and
//! returns the next status and the effects; `act` applies them. A build of several platforms
//! built natively takes `fanout`'s decision instead: one child build per platform, then the
//! image index. Every step's state lives in status and owned objects (never only in memory),
//! so a restarted controller resumes each build where it stood.

mod act;
pub mod decide;
pub mod fanout;
mod observe;
pub mod status;

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::context::Context;
use super::error::{Error, Result};
use super::finalizer::{self, Cleanup};
use super::requeue::{self, Next};
use super::slim::StoredBuild;
use crate::api::ImageBuild;

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "imagebuild";

/// Reconciles one ImageBuild.
pub async fn reconcile(build: Arc<ImageBuild>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile(CONTROLLER);
    let api: Api<ImageBuild> =
        Api::namespaced(ctx.client.clone(), &build.namespace().unwrap_or_default());
    finalizer::reconcile_with(
        &api,
        build,
        finalizer::RELEASE,
        |build| apply(build, &ctx),
        |build| cleanup(build, &ctx),
    )
    .await
}

/// Reconciles one build as the controller's store keeps it ([`StoredBuild`]). A finished one
/// (ended, saved) wakes the retention sweep once its reconcile is done: it may have just
/// ended, released its replica, or had its `spec.retention` changed.
pub async fn reconcile_stored(stored: Arc<StoredBuild>, ctx: Arc<Context>) -> Result<Action> {
    let result = reconcile(stored.build(), ctx.clone()).await;
    if stored.finished().is_some() {
        ctx.retention_wake.notify_one();
    }
    result
}

/// What to do when a reconcile fails: conflicts re-plan at once, invalid specs wait for a
/// change, everything else backs off.
pub fn error_policy<K>(_build: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.category());
    match error {
        Error::ClaimConflict(_) => Action::requeue(requeue::CLAIM_CONFLICT),
        Error::InvalidSpec(_) => Action::await_change(),
        _ => Action::requeue(requeue::BUILD_ERROR),
    }
}

async fn apply(build: Arc<ImageBuild>, ctx: &Context) -> Result<Action> {
    // Several platforms built natively: the parent of one child build per platform, which
    // never reaches the planner itself.
    if build.spec.fans_out() {
        let observed = observe::observe_parent(&build, ctx).await?;
        let decision = fanout::decide_parent(&observed)?;
        let next = decision.next;
        act::act(&build, None, decision, ctx).await?;
        return Ok(next.action());
    }
    let observed = observe::observe(&build, ctx).await?;
    let decision = decide::decide(&observed)?;
    let next = decision.next;
    act::act(&build, observed.cache, decision, ctx).await?;
    Ok(next.action())
}

/// The finalizer stays until the build's pods are gone and its replica released. Pods just
/// deleted either go at once or run on through their grace period: after stopping them, one
/// more look decides.
async fn cleanup(build: Arc<ImageBuild>, ctx: &Context) -> Result<Cleanup> {
    for _ in 0..2 {
        let observed = observe::observe(&build, ctx).await?;
        let (effects, done) = decide::cleanup(&observed);
        let stopped = effects
            .iter()
            .any(|e| matches!(e, decide::Effect::StopChildren(_)));
        act::apply_effects(&build, observed.cache, effects, ctx).await?;
        if done {
            return Ok(Cleanup::Done);
        }
        if !stopped {
            break;
        }
    }
    Ok(Cleanup::Pending(Next::Linger.action()))
}
