//! A build of several platforms built natively (issue 17's fan-out), as one pure decision.
//! The parent never runs a builder, has no cache key nor placement and never reaches the
//! planner: it creates one child ImageBuild per platform (each an ordinary build, placed on
//! nodes of its architecture), follows them into `status.platforms`, and once all have
//! succeeded runs the index Job that pushes one image index of their digests under its names.
//! A child that fails or is cancelled fails the parent at once (the others are cancelled); a
//! cancelled parent cancels its children and ends once they have.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde::Deserialize;

use super::decide::{created, deadline, remaining_seconds, Decision, Effect};
use super::status::{finish, set_condition};
use crate::api::common::condition;
use crate::api::{ImageBuild, ImageBuildStatus, Phase, PlatformBuild};
use crate::controller::builders::platform_builds::{
    child_build, child_build_name, index_job, is_child_of,
};
use crate::controller::config::OperatorConfig;
use crate::controller::durations::{between, go_duration};
use crate::controller::error::Result;
use crate::controller::outcome::{tail_of, JobOutcome};
use crate::controller::replica_table::owner_ref;
use crate::controller::requeue::Next;

/// Everything the parent's decision reads.
#[derive(Clone, Debug)]
pub struct ParentObserved {
    /// The parent, with the status it was read with.
    pub build: ImageBuild,
    /// One clock reading for the whole decision.
    pub now: Timestamp,
    /// The operator's configuration.
    pub config: Arc<OperatorConfig>,
    /// The ImageBuilds bearing the parent's label or its children's names, read fresh
    /// (whoever owns them: [`is_child_of`] decides).
    pub children: Vec<ImageBuild>,
    /// The index Job (`None`: not created yet).
    pub index: Option<JobOutcome>,
}

/// What `hearth index create --json` reports (the fields read here).
#[derive(Deserialize)]
struct IndexResult {
    digest: String,
}

/// One platform's child as observed: its name, and the child if it exists and is the parent's.
struct Platform<'a> {
    platform: &'a str,
    name: String,
    child: Option<&'a ImageBuild>,
}

impl Platform<'_> {
    fn phase(&self) -> Option<Phase> {
        self.child
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.phase)
    }

    fn ended(&self) -> bool {
        self.phase().is_some_and(Phase::is_terminal)
    }

    /// The child's status line in the parent's `status.platforms`.
    fn entry(&self) -> PlatformBuild {
        let status = self.child.and_then(|c| c.status.as_ref());
        let placement = status.and_then(|s| s.placement.as_ref());
        PlatformBuild {
            platform: self.platform.to_string(),
            build: self.name.clone(),
            phase: self.phase(),
            node: placement.and_then(|p| p.node.clone()),
            warmth: placement.and_then(|p| p.warmth),
            image_digest: status.and_then(|s| s.image_digest.clone()),
        }
    }

    /// `linux/arm64 (build api-42-arm64)`.
    fn named(&self) -> String {
        format!("{} (build {})", self.platform, self.name)
    }
}

/// The next step of a parent that is not being deleted.
pub fn decide_parent(o: &ParentObserved) -> Result<Decision> {
    let mut status = o.build.status.clone().unwrap_or_default();
    if status.phase.is_some_and(Phase::is_terminal) {
        return Ok(Decision::new(status, Next::Done));
    }
    let parent = &o.build;
    let (now, generation) = (o.now, parent.metadata.generation);
    let parent_name = parent.name_any();
    let platforms: Vec<Platform> = parent
        .spec
        .platforms
        .iter()
        .map(|p| {
            let name = child_build_name(&parent_name, p);
            let child = o.children.iter().find(|c| c.name_any() == name);
            Platform {
                platform: p,
                name,
                child,
            }
        })
        .collect();
    status.start_time.get_or_insert(Time(now));
    status.phase = Some(Phase::Building);
    // An ImageBuild of a child's name that is not this parent's: never adopted.
    let stranger = platforms
        .iter()
        .find(|p| p.child.is_some_and(|c| !is_child_of(c, parent)))
        .map(|p| (p.name.clone(), p.platform));
    let platforms: Vec<Platform> = platforms
        .into_iter()
        .map(|p| Platform {
            child: p.child.filter(|c| is_child_of(c, parent)),
            ..p
        })
        .collect();
    status.platforms = platforms.iter().map(Platform::entry).collect();
    if let Some((name, platform)) = stranger {
        let message = format!(
            "spec.platforms: ImageBuild {name} exists and is not this build's child (for {platform}): delete or rename it, or rename this build"
        );
        return Ok(fail(o, status, &platforms, "ChildConflict", &message));
    }
    if parent.spec.cancel {
        return Ok(cancel(o, status, &platforms));
    }
    if now >= deadline(parent) {
        let message = format!(
            "the build ran past spec.timeout ({})",
            go_duration(between(created(parent), deadline(parent)))
        );
        return Ok(fail(o, status, &platforms, "Timeout", &message));
    }
    // A child that was observed under way and is gone was deleted: not silently built again.
    if let Some(p) = platforms.iter().find(|p| {
        p.child.is_none()
            && o.build
                .status
                .iter()
                .flat_map(|s| &s.platforms)
                .any(|e| e.build == p.name && e.phase.is_some())
    }) {
        let message = format!("{} was deleted before it ended", p.named());
        return Ok(fail(o, status, &platforms, "PlatformFailed", &message));
    }
    if let Some((p, phase)) = platforms.iter().find_map(|p| {
        p.phase()
            .filter(|ph| matches!(ph, Phase::Failed | Phase::Cancelled))
            .map(|ph| (p, ph))
    }) {
        let why = p
            .child
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.message.clone())
            .unwrap_or_default();
        let message = match phase {
            Phase::Cancelled => format!("{} was cancelled", p.named()),
            _ => format!("{} failed: {why}", p.named()),
        };
        return Ok(fail(o, status, &platforms, "PlatformFailed", &message));
    }
    let missing: Vec<Effect> = platforms
        .iter()
        .filter(|p| p.child.is_none())
        .map(|p| Ok(Effect::CreateBuild(Box::new(child(o, p.platform)?))))
        .collect::<Result<_>>()?;
    if !missing.is_empty() {
        let names: Vec<&str> = platforms.iter().map(|p| p.platform).collect();
        let note = format!(
            "building {} natively, one ImageBuild per platform",
            names.join(", ")
        );
        status.message = Some(note.clone());
        let decision =
            Decision::new(status, Next::Poll).event(EventType::Normal, "PlatformsStarted", note);
        return Ok(decision.effects(missing));
    }
    if !platforms
        .iter()
        .all(|p| p.phase() == Some(Phase::Succeeded))
    {
        let waiting: Vec<String> = platforms
            .iter()
            .filter(|p| !p.ended())
            .map(|p| {
                let phase = p.phase().map(|ph| ph.to_string());
                format!("{} {}", p.platform, phase.as_deref().unwrap_or("Pending"))
            })
            .collect();
        status.message = Some(format!("building: {}", waiting.join(", ")));
        return Ok(Decision::new(status, Next::Poll));
    }
    let all: Vec<&str> = platforms.iter().map(|p| p.platform).collect();
    let built = format!("built {}", all.join(", "));
    // Every platform's image: known only when each child read its own (a layer shared by two
    // platforms counts twice here; a registry stores it once).
    status.image_size = platforms
        .iter()
        .map(|p| p.child.and_then(|c| c.status.as_ref()?.image_size))
        .sum();
    set_condition(
        &mut status,
        condition::BUILT,
        true,
        "Built",
        &built,
        generation,
        now,
    );
    if !parent.spec.output.push {
        return Ok(succeed(o, status, format!("{built} (not pushed)")));
    }
    let mut digests = Vec::new();
    for p in &platforms {
        match p.entry().image_digest {
            Some(d) => digests.push(d),
            None => {
                let message = format!("{} succeeded without reporting its digest", p.named());
                return Ok(fail(o, status, &platforms, "IndexFailed", &message));
            }
        }
    }
    match &o.index {
        None => {
            let owner = owner_ref(parent)?;
            let job = index_job(
                parent,
                &digests,
                owner,
                remaining_seconds(parent, now),
                &o.config,
            );
            status.message = Some(format!("{built}; pushing the image index"));
            Ok(Decision::new(status, Next::Poll).effect(Effect::CreateJob(Box::new(job))))
        }
        Some(JobOutcome::Running) => {
            status.message = Some(format!("{built}; pushing the image index"));
            Ok(Decision::new(status, Next::Poll))
        }
        Some(JobOutcome::Failed { message }) => {
            let message = format!("the image index was not pushed: {message}");
            Ok(fail(o, status, &platforms, "IndexFailed", &message))
        }
        Some(JobOutcome::Succeeded { result, .. }) => {
            let digest = result
                .as_deref()
                .and_then(|r| serde_json::from_str::<IndexResult>(r.trim()).ok())
                .map(|r| r.digest)
                .filter(|d| is_digest(d));
            let Some(digest) = digest else {
                let message = format!(
                    "the index Job reported no digest: {}",
                    tail_of(result.as_deref().unwrap_or("(no result)"))
                );
                return Ok(fail(o, status, &platforms, "IndexFailed", &message));
            };
            let output = &parent.spec.output;
            status.image = Some(output.by_digest(&digest));
            status.image_digest = Some(digest.clone());
            status.tags = output.names();
            let message = format!("pushed {} ({}): {digest}", output.image, all.join(", "));
            Ok(succeed(o, status, message))
        }
    }
}

/// The child ImageBuild of `platform`.
fn child(o: &ParentObserved, platform: &str) -> Result<ImageBuild> {
    let owner = owner_ref(&o.build)?;
    Ok(child_build(&o.build, platform, owner))
}

/// `sha256:` and 64 lowercase hex digits.
fn is_digest(value: &str) -> bool {
    value.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// Cancels every child still under way (and not cancelled yet).
fn cancel_children(platforms: &[Platform]) -> Vec<Effect> {
    platforms
        .iter()
        .filter_map(|p| p.child)
        .filter(|c| {
            !c.spec.cancel
                && !c
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(Phase::is_terminal)
        })
        .map(|c| Effect::CancelBuild(c.name_any()))
        .collect()
}

/// The parent has succeeded.
fn succeed(o: &ParentObserved, mut status: ImageBuildStatus, message: String) -> Decision {
    finish(
        &mut status,
        Phase::Succeeded,
        "Succeeded",
        &message,
        o.build.metadata.generation,
        o.now,
    );
    Decision::new(status, Next::Done).event(EventType::Normal, "Succeeded", message)
}

/// The parent fails at once (`Succeeded=False`, so pipelines stop), its children still under
/// way cancelled.
fn fail(
    o: &ParentObserved,
    mut status: ImageBuildStatus,
    platforms: &[Platform],
    reason: &'static str,
    message: &str,
) -> Decision {
    finish(
        &mut status,
        Phase::Failed,
        reason,
        message,
        o.build.metadata.generation,
        o.now,
    );
    Decision::new(status, Next::Done)
        .effects(cancel_children(platforms))
        .event(EventType::Warning, reason, message.to_string())
}

/// `spec.cancel`: the children are cancelled; the parent is `Cancelled` once they all ended.
fn cancel(o: &ParentObserved, mut status: ImageBuildStatus, platforms: &[Platform]) -> Decision {
    let effects = cancel_children(platforms);
    let running: Vec<&str> = platforms
        .iter()
        .filter(|p| p.child.is_some() && !p.ended())
        .map(|p| p.platform)
        .collect();
    if running.is_empty() {
        finish(
            &mut status,
            Phase::Cancelled,
            "Cancelled",
            "cancelled by spec.cancel",
            o.build.metadata.generation,
            o.now,
        );
        return Decision::new(status, Next::Done).effects(effects).event(
            EventType::Normal,
            "Cancelled",
            "build cancelled".into(),
        );
    }
    status.message = Some(format!(
        "cancelling: waiting for {} to stop",
        running.join(", ")
    ));
    Decision::new(status, Next::Linger).effects(effects)
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
