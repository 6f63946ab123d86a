//! Retention of finished ImageBuilds, decided: which finished builds of one namespace are
//! deleted now (past their TTL, or beyond the namespace's history limit for their outcome) and
//! when to look again. Pure: `retention_sweep` gathers the builds and deletes what this says.
//!
//! Never deleted: a build under way or still saving its cache (it is not [`Finished`] here),
//! one being deleted already, one holding a replica in its BuildCache (or, for a
//! multi-platform build, whose child is still under way), and any build sooner than `minAge`
//! after it ended (a pipeline waiting on it must read its outcome first). One platform's child
//! of a multi-platform build is never deleted nor counted on its own: it goes with its parent.

use std::collections::HashSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::config::RetentionSettings;
use super::slim::StoredBuild;
use crate::api::Phase;

/// A build skipped because it holds a replica is looked at again this soon (its release may
/// not be in the BuildCache store yet).
pub const HELD_RETRY: Duration = Duration::from_secs(30);

/// Which history a finished build counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded.
    Succeeded,
    /// Failed or Cancelled.
    Failed,
}

impl Outcome {
    /// The outcome of a terminal phase.
    pub fn of(phase: Phase) -> Self {
        match phase {
            Phase::Succeeded => Outcome::Succeeded,
            _ => Outcome::Failed,
        }
    }

    /// For metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "Succeeded",
            Outcome::Failed => "Failed",
        }
    }
}

/// Why a build is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Past its TTL.
    Ttl,
    /// Beyond the namespace's history limit for its outcome.
    Limit,
}

impl Why {
    /// For metrics (`reason` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Ttl => "ttl",
            Why::Limit => "limit",
        }
    }
}

/// A finished build as retention sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// Its name.
    pub name: String,
    /// Its uid (the deletion's precondition).
    pub uid: Option<String>,
    /// The resourceVersion read (the deletion's precondition: a build changed since is not
    /// deleted blindly).
    pub resource_version: Option<String>,
    /// Its history.
    pub outcome: Outcome,
    /// When it ended.
    pub completed: Timestamp,
    /// Its own TTL (`spec.retention`), over the operator's default.
    pub ttl: Option<Duration>,
    /// It holds a replica of its BuildCache (never deleted while it does).
    pub holds_replica: bool,
}

/// One deletion.
#[derive(Clone, Debug, PartialEq)]
pub struct Deletion {
    /// The build.
    pub build: Finished,
    /// Why.
    pub why: Why,
}

/// What retention decided for one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Builds to delete now, oldest first.
    pub delete: Vec<Deletion>,
    /// When the next kept build falls due (`None`: none ever will until something changes).
    pub next: Option<Timestamp>,
}

/// The finished build `stored` is, if retention may consider it: compact (ended and not
/// saving), not being deleted. `held` names the builds holding a replica in the namespace.
/// A build with no completion time counts from its creation.
pub fn finished(stored: &StoredBuild, held: &HashSet<String>) -> Option<Finished> {
    let f = stored.finished()?;
    let meta = f.metadata();
    // One platform's child of a multi-platform build goes with its parent (owner GC), never
    // on its own, nor counted in the history on its own.
    if meta.deletion_timestamp.is_some() || parent_of(meta).is_some() {
        return None;
    }
    let completed = f
        .completed()
        .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0))?;
    let name = stored.name_any();
    Some(Finished {
        holds_replica: held.contains(&name),
        name,
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        outcome: Outcome::of(f.phase()),
        completed,
        ttl: f.ttl(),
    })
}

/// The parent ImageBuild of a build of one platform of a multi-platform build: the name in
/// its controller ownerReference of kind ImageBuild.
pub fn parent_of(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| {
            r.controller == Some(true)
                && r.kind == "ImageBuild"
                && r.api_version.starts_with("hearth.dev/")
        })
        .map(|r| r.name.as_str())
}

/// Decides for the finished builds of one namespace at `now`.
pub fn plan(builds: &[Finished], policy: &RetentionSettings, now: Timestamp) -> Plan {
    let min_age = Duration::from(policy.min_age);
    let mut plan = Plan::default();
    for outcome in [Outcome::Succeeded, Outcome::Failed] {
        let (default_ttl, limit) = match outcome {
            Outcome::Succeeded => (policy.ttl_after_succeeded, policy.succeeded_limit),
            Outcome::Failed => (policy.ttl_after_failed, policy.failed_limit),
        };
        let mut history: Vec<&Finished> = builds.iter().filter(|b| b.outcome == outcome).collect();
        // Newest first; names break ties so the same builds are kept on every look.
        history.sort_by(|a, b| b.completed.cmp(&a.completed).then(a.name.cmp(&b.name)));
        for (rank, b) in history.into_iter().enumerate() {
            let earliest = after(b.completed, min_age);
            let ttl = b.ttl.or(default_ttl.map(Duration::from));
            let by_ttl = ttl.map(|t| (after(b.completed, t).max(earliest), Why::Ttl));
            let by_limit = limit
                .filter(|l| rank >= *l as usize)
                .map(|_| (earliest, Why::Limit));
            let due = match (by_ttl, by_limit) {
                (Some(t), Some(l)) => Some(if l.0 <= t.0 { l } else { t }),
                (t, l) => t.or(l),
            };
            let Some((at, why)) = due else { continue };
            let look_again = if at > now {
                at
            } else if b.holds_replica {
                after(now, HELD_RETRY)
            } else {
                plan.delete.push(Deletion {
                    build: b.clone(),
                    why,
                });
                continue;
            };
            plan.next = Some(plan.next.map_or(look_again, |n| n.min(look_again)));
        }
    }
    plan.delete.sort_by_key(|d| d.build.completed);
    plan
}

/// `t + d`, saturating.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
