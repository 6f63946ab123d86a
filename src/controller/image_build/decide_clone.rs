//! A new replica cloned from one its node already holds: the rules of the `Restoring` phase
//! when the placement says `clonedFrom`. The builder pod is created at once (its scheduling
//! is what provisions a `WaitForFirstConsumer` clone) and runs no restore. The source stays
//! held (`cloningFor`) until the clone's PVC is bound, then goes back to the pool; a clone
//! that is refused (`ProvisioningFailed`) or not bound within `cache.cloneBindTimeout` is
//! deleted and the build placed again, never cloning, so it restores instead.

use jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::{
    attempt, builder_pod_for, pod_ended, release, Decision, Effect, ImageBuildStatus, Observed,
    Phase,
};
use crate::api::common::condition;
use crate::api::ImageBuild;
use crate::controller::durations::{between, go_duration};
use crate::controller::error::Result;
use crate::controller::image_build::status::{condition_of, set_condition};
use crate::controller::replica_table::Release;
use crate::controller::requeue::Next;

/// `CacheReady` reason of a build whose clone failed: its next placement never clones.
pub const CLONE_FAILED: &str = "CloneFailed";

/// Whether a clone of this build failed, so that it is placed without one.
pub fn failed_before(build: &ImageBuild) -> bool {
    build
        .status
        .as_ref()
        .and_then(|s| condition_of(s, condition::CACHE_READY))
        .is_some_and(|c| c.reason == CLONE_FAILED)
}

/// The new replica's `AddReplica`, made a clone of `source` (matching `snapshot`).
pub(super) fn from_source(add: Effect, source: &str, snapshot: Option<String>) -> Effect {
    match add {
        Effect::AddReplica {
            pvc,
            node,
            state,
            size_bytes,
            ..
        } => Effect::AddReplica {
            pvc,
            node,
            state,
            size_bytes,
            clone_of: Some((source.to_string(), snapshot)),
        },
        other => other,
    }
}

/// Lifts the hold the build may have on its clone's source (as its status read says).
pub(super) fn release_hold(o: &Observed) -> Option<Effect> {
    let from = o
        .build
        .status
        .as_ref()?
        .placement
        .as_ref()?
        .cloned_from
        .as_ref()?;
    Some(Effect::ReleaseCloneHold {
        cache: from.cache.clone(),
        pvc: from.replica.clone(),
    })
}

/// Follows a clone: waits for its PVC to bind (creating the builder pod meanwhile), then
/// releases the source and goes on as a build; falls back to a restore when it fails.
pub(super) fn follow(o: &Observed, mut status: ImageBuildStatus) -> Result<Decision> {
    let (now, generation) = (o.now, o.build.metadata.generation);
    let placement = status.placement.clone().unwrap_or_default();
    let Some(from) = placement.cloned_from.clone() else {
        return Ok(Decision::new(status, Next::Poll));
    };
    let bound = o.clone.as_ref().is_some_and(|c| c.bound);
    if !bound {
        if let Some(why) = failure(o) {
            return Ok(failed(o, status, &why));
        }
    }
    let node = placement.node.clone().unwrap_or_default();
    let mut effects = Vec::new();
    if bound {
        effects.extend(release_hold(o));
        effects.extend(release(o, Release::Cloned));
        set_condition(
            &mut status,
            condition::CACHE_READY,
            true,
            "Cloned",
            &format!(
                "cloned replica {} (key {}) on {node}",
                from.replica, from.key
            ),
            generation,
            now,
        );
        status.phase = Some(Phase::Building);
        status.message = Some(format!("building on {node}"));
        // What a restore would have taken, a clone took: from its PVC's creation to the
        // moment it is seen bound. Not a store transfer, so the planner learns nothing of it.
        if let Some(created) = o.clone.as_ref().and_then(|c| c.created) {
            status
                .durations
                .get_or_insert_with(Default::default)
                .restore = Some(go_duration(between(created, now)));
        }
    }
    let pod = builder_pod_for(o, &status)?;
    let Some(outcome) = &o.pod else {
        if !bound {
            status.message = Some(format!(
                "cloning replica {} into a new replica on {node}",
                from.replica
            ));
        }
        let next = if bound { Next::Poll } else { Next::Soon };
        return Ok(Decision::new(status, next)
            .effects(effects)
            .effect(Effect::CreatePod(Box::new(pod))));
    };
    if !bound && matches!(outcome, crate::controller::outcome::PodOutcome::Running) {
        return Ok(Decision::new(status, Next::Soon));
    }
    // A pod that ended before its clone bound (a timeout, a lost node, a missing Secret)
    // ends the build as any pod does; the source goes back.
    if !bound {
        effects.extend(release_hold(o));
    }
    let mut decision = pod_ended(o, status, &pod, outcome)?;
    decision.effects.splice(0..0, effects);
    Ok(decision)
}

/// Why the clone has failed, if it has: its PVC gone, refused by the provisioner, or not
/// bound within the timeout.
fn failure(o: &Observed) -> Option<String> {
    let Some(claim) = &o.clone else {
        return Some("its PVC is gone".into());
    };
    if let Some(event) = &claim.failure {
        return Some(format!("the provisioner refused it: {event}"));
    }
    let timeout: std::time::Duration = o.config.cache.clone_bind_timeout.into();
    let created = claim.created.unwrap_or(Timestamp::UNIX_EPOCH);
    (between(created, o.now) > timeout.as_secs_f64()).then(|| {
        format!(
            "its PVC was not bound within {}s (cache.cloneBindTimeout)",
            timeout.as_secs()
        )
    })
}

/// The clone failed: its pod and PVC go (the replica is retired with reason `CloneFailed`),
/// the source goes back, and the build is placed again in its next attempt, never cloning:
/// it restores instead. Said in `CacheReady`, the message and a Warning Event.
fn failed(o: &Observed, mut status: ImageBuildStatus, why: &str) -> Decision {
    let (now, generation) = (o.now, o.build.metadata.generation);
    let placement = status.placement.clone().unwrap_or_default();
    let from = placement.cloned_from.clone();
    let note = format!(
        "clone of replica {} into {} failed, restoring instead: {why}",
        from.as_ref()
            .map(|f| f.replica.as_str())
            .unwrap_or_default(),
        placement.replica.as_deref().unwrap_or_default(),
    );
    let mut effects = Vec::new();
    if o.pod.is_some() {
        effects.push(Effect::DeletePod(super::child_name(
            &o.build.name_any(),
            "build",
            attempt(&status),
        )));
    }
    effects.extend(release_hold(o));
    effects.extend(release(o, Release::CloneFailed));
    set_condition(
        &mut status,
        condition::CACHE_READY,
        false,
        CLONE_FAILED,
        &note,
        generation,
        now,
    );
    status.attempts = Some(attempt(&status) + 1);
    status.phase = Some(Phase::Placing);
    status.placement = None;
    status.message = Some(note.clone());
    Decision::new(status, Next::Soon)
        .effects(effects)
        .event(EventType::Warning, CLONE_FAILED, note)
}
