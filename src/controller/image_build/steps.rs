//! One reconcile step per phase. Each reads the build's status and owned objects, acts once
//! (claim, create a child, release) and returns the next status.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::outcome::{pod_outcome, restored_bytes, saved_snapshot, JobOutcome, PodOutcome};
use super::status::{between, finish, go_duration, set_condition, set_condition_unknown};
use super::{abort, release_claim, Step};
use crate::api::common::condition;
use crate::api::{
    keys, BuildCache, CacheMode, Durations, ImageBuild, ImageBuildStatus, Phase, Placement,
    ReplicaState, RestoredFrom, SnapshotRecord, Warmth,
};
use crate::controller::build_cache;
use crate::controller::builders::jobs::{snapshot_job, SnapshotJobInputs, SnapshotOp};
use crate::controller::builders::pod::{buildctl_args, builder_pod, BuilderInputs, StateVolume};
use crate::controller::builders::{labels, Pin};
use crate::controller::cache_policy::EvictReason;
use crate::controller::claims::{self, owner_ref, Release};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::job_runner::job_state;
use crate::controller::key_history::FinishedBuild;
use crate::controller::quantity;
use crate::controller::view::{build_request, seconds, view_from_stores, NODE_LABEL};
use crate::planner::{self, Action as Plan};

const SOON: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_secs(30);
/// Builds retried after their node was lost, at most this many attempts in all.
const MAX_ATTEMPTS: i32 = 2;

/// The step for the build's current phase.
pub(crate) async fn step(build: &ImageBuild, ctx: &Context) -> Result<Step> {
    let mut status = build.status.clone().unwrap_or_default();
    let now = ctx.now();
    let generation = build.metadata.generation;
    if build.spec.cancel {
        abort(build, ctx).await?;
        finish(
            &mut status,
            Phase::Cancelled,
            "Cancelled",
            "cancelled by spec.cancel",
            generation,
            now,
        );
        return Ok(Step::new(status, Action::await_change()).with_event(
            EventType::Normal,
            "Cancelled",
            "build cancelled".into(),
        ));
    }
    let deadline = deadline(build);
    if now >= deadline {
        abort(build, ctx).await?;
        let message = format!(
            "the build ran past spec.timeout ({})",
            go_duration(between(created(build), deadline))
        );
        finish(
            &mut status,
            Phase::Failed,
            "Timeout",
            &message,
            generation,
            now,
        );
        return Ok(Step::new(status, Action::await_change()).with_event(
            EventType::Warning,
            "Timeout",
            message,
        ));
    }
    match status.phase {
        None | Some(Phase::Pending) => start(build, status, now),
        Some(Phase::Placing) => place(build, ctx, status).await,
        Some(Phase::Restoring) => restoring(build, ctx, status).await,
        Some(Phase::Building) => building(build, ctx, status).await,
        Some(Phase::Snapshotting) => snapshotting(build, ctx, status).await,
        Some(_) => Ok(Step::new(status, Action::await_change())),
    }
}

/// A build that cannot run as written: Failed, with the field named.
pub(crate) fn invalid(build: &ImageBuild, ctx: &Context, message: &str) -> Step {
    let mut status = build.status.clone().unwrap_or_default();
    finish(
        &mut status,
        Phase::Failed,
        "InvalidSpec",
        message,
        build.metadata.generation,
        ctx.now(),
    );
    Step::new(status, Action::await_change()).with_event(
        EventType::Warning,
        "InvalidSpec",
        message.to_string(),
    )
}

fn created(build: &ImageBuild) -> Timestamp {
    build
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn deadline(build: &ImageBuild) -> Timestamp {
    let timeout: Duration = build.spec.timeout.into();
    created(build)
        .saturating_add(SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn start(build: &ImageBuild, mut status: ImageBuildStatus, now: Timestamp) -> Result<Step> {
    buildctl_args(build).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    status.cache_key = Some(keys::cache_key(&build.spec));
    status.start_time.get_or_insert(Time(now));
    status.attempts = Some(status.attempts.unwrap_or(0).max(1));
    status.phase = Some(Phase::Placing);
    status.message = Some("choosing a node and cache".into());
    Ok(Step::new(status, Action::requeue(SOON)))
}

async fn place(build: &ImageBuild, ctx: &Context, mut status: ImageBuildStatus) -> Result<Step> {
    let now = ctx.now();
    let generation = build.metadata.generation;
    let namespace = build.namespace().unwrap_or_default();
    let name = build.name_any();
    let key = status
        .cache_key
        .clone()
        .unwrap_or_else(|| keys::cache_key(&build.spec));
    let mode = build.spec.cache.mode;
    // The build's own cache must exist before planning, so its snapshots and replicas count
    // and a `cacheRef` mismatch is reported; ReadOnly builds never create one.
    let cache = claims::cache_for_key(
        ctx,
        &namespace,
        &key,
        build.spec.cache.cache_ref.as_deref(),
        mode == CacheMode::ReadWrite,
    )
    .await?;

    let view = view_from_stores(&ctx.stores, &ctx.config, &ctx.planner, now);
    let request = build_request(build, &key, &ctx.config);
    let decision = planner::plan(&view.cluster, &request, seconds(now), &ctx.planner)
        .map_err(|e| Error::Planner(e.to_string()))?;
    let reason = decision.reason.to_string();
    let node_name = |id| view.cluster.node(id).name.clone();
    let mut placement = Placement {
        reason: Some(reason.clone()),
        warmth: Some(decision.warmth),
        ..Placement::default()
    };
    make_room(ctx, &view, &decision.evictions).await?;

    match decision.action {
        Plan::Queue | Plan::WaitForReplica { .. } | Plan::WaitForSlot { .. } => {
            let wait = decision.estimate.wait.max(0.0);
            placement.expected_wait = Some(go_duration(wait));
            status.placement = Some(placement);
            status.message = Some(format!("waiting: {reason}"));
            return Ok(Step::new(
                status,
                Action::requeue(Duration::from_secs_f64(wait.clamp(5.0, 30.0))),
            ));
        }
        Plan::UseReplica { replica, node } => {
            let Some(r) = view.replicas.get(&replica) else {
                return Err(Error::Planner("planner chose an unknown replica".into()));
            };
            if !claims::claim_idle(ctx, &r.namespace, &r.cache, &r.pvc, &name).await? {
                return Err(Error::ClaimConflict(r.cache.clone()));
            }
            placement.node = Some(node_name(node));
            placement.replica = Some(r.pvc.clone());
            placement.cache = Some(r.cache.clone());
            set_condition(
                &mut status,
                condition::CACHE_READY,
                true,
                "Hot",
                &format!("replica {} on {}", r.pvc, node_name(node)),
                generation,
                now,
            );
            status.phase = Some(Phase::Building);
        }
        Plan::Restore {
            node,
            source,
            throwaway,
        } => {
            let source_key = view.cluster.key(source.key).key.clone();
            let source_cache = view
                .snapshot_caches
                .get(&(namespace.clone(), source_key.clone()))
                .cloned();
            placement.node = Some(node_name(node));
            placement.restored_from = Some(RestoredFrom {
                key: source_key,
                snapshot: source.snapshot.clone(),
                cache: source_cache.clone(),
            });
            if throwaway {
                placement.cache = source_cache;
                set_condition(&mut status, condition::CACHE_READY, true, "ThrowawayCopy", "restored by the builder's init container into a volume discarded after the build", generation, now);
                status.phase = Some(Phase::Building);
            } else {
                let cache = cache
                    .ok_or_else(|| Error::Planner("no BuildCache for a ReadWrite build".into()))?;
                let Some(pvc) = claims::add_replica(
                    ctx,
                    &cache,
                    &node_name(node),
                    ReplicaState::Restoring,
                    &name,
                    Some(source.bytes as i64),
                )
                .await?
                else {
                    return Ok(at_capacity(status, placement, &cache));
                };
                placement.replica = Some(pvc);
                placement.cache = Some(cache.name_any());
                set_condition(
                    &mut status,
                    condition::CACHE_READY,
                    false,
                    "Restoring",
                    &format!("restoring snapshot {}", source.snapshot),
                    generation,
                    now,
                );
                status.phase = Some(Phase::Restoring);
            }
        }
        Plan::Cold { node, throwaway } => {
            placement.node = Some(node_name(node));
            let story = cold_story(
                &key,
                &build.spec.cache.restore_keys,
                cache.as_ref(),
                &reason,
            );
            if !throwaway {
                let cache = cache
                    .ok_or_else(|| Error::Planner("no BuildCache for a ReadWrite build".into()))?;
                let Some(pvc) = claims::add_replica(
                    ctx,
                    &cache,
                    &node_name(node),
                    ReplicaState::InUse,
                    &name,
                    None,
                )
                .await?
                else {
                    return Ok(at_capacity(status, placement, &cache));
                };
                placement.replica = Some(pvc);
                placement.cache = Some(cache.name_any());
            }
            set_condition(
                &mut status,
                condition::CACHE_READY,
                true,
                "Cold",
                &story,
                generation,
                now,
            );
            status.phase = Some(Phase::Building);
        }
    }
    let started = status.start_time.as_ref().map(|t| t.0).unwrap_or(now);
    status
        .durations
        .get_or_insert_with(Durations::default)
        .queued = Some(go_duration(between(started, now)));
    ctx.metrics.step("queued", between(started, now));
    let where_ = placement.node.clone().unwrap_or_default();
    let warmth = decision.warmth;
    set_condition(
        &mut status,
        condition::PLACED,
        true,
        &warmth.to_string(),
        &format!("on {where_}: {reason}"),
        generation,
        now,
    );
    status.message = Some(format!("placed on {where_} ({warmth}): {reason}"));
    status.placement = Some(placement);
    Ok(Step::new(status, Action::requeue(SOON)).with_event(
        EventType::Normal,
        "Placed",
        format!("on {where_}, {warmth}: {reason}"),
    ))
}

/// Why a build starts cold, for `kubectl describe`: the planner's reason, what it looked for,
/// and what the cache's status says happened to its replicas and snapshots.
pub fn cold_story(
    key: &str,
    restore_keys: &[String],
    cache: Option<&BuildCache>,
    reason: &str,
) -> String {
    let mut story = format!("{reason}; looked for key {key:?}");
    if !restore_keys.is_empty() {
        story.push_str(&format!(" and restore keys {restore_keys:?}"));
    }
    let Some(status) = cache.and_then(|c| c.status.as_ref()) else {
        story.push_str(" (no BuildCache yet: the key's first build)");
        return story;
    };
    let count = |state: ReplicaState| status.replicas.iter().filter(|r| r.state == state).count();
    story.push_str(&format!(
        "; BuildCache has {} usable replica(s) ({} in use), {} snapshot(s)",
        count(ReplicaState::Idle) + count(ReplicaState::InUse),
        count(ReplicaState::InUse),
        status.snapshots.len()
    ));
    let gone: Vec<String> = status
        .replicas
        .iter()
        .filter(|r| !r.state.is_live())
        .map(|r| {
            format!(
                "{} {:?}{}",
                r.pvc,
                r.state,
                r.reason
                    .as_ref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !gone.is_empty() {
        story.push_str(&format!("; gone: {}", gone.join(", ")));
    }
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == "StoreReachable" && c.status == "False")
    {
        story.push_str(&format!("; the store is failing: {}", c.message));
    }
    story
}

/// The cache is at `maxReplicas`: wait for one of its replicas rather than exceed the
/// platform team's budget.
fn at_capacity(mut status: ImageBuildStatus, mut placement: Placement, cache: &BuildCache) -> Step {
    placement.node = None;
    placement.expected_wait = None;
    placement.reason = Some(format!(
        "BuildCache {} is at maxReplicas ({}); waiting for a replica",
        cache.name_any(),
        cache.spec.max_replicas
    ));
    status.message = placement.reason.clone();
    status.placement = Some(placement);
    Step::new(status, Action::requeue(Duration::from_secs(15)))
}

/// What the image step did, for status and events.
fn pushed_message(build: &ImageBuild) -> String {
    if build.spec.output.push {
        format!("pushed {}", build.spec.output.image)
    } else {
        "built (not pushed)".to_string()
    }
}

/// The restore or save job's inputs for this build's replica.
fn job_inputs(
    build: &ImageBuild,
    status: &ImageBuildStatus,
    cache: &str,
    pvc: String,
    deadline_seconds: i64,
) -> Result<SnapshotJobInputs> {
    Ok(SnapshotJobInputs {
        namespace: build.namespace().unwrap_or_default(),
        cache: cache.to_string(),
        build: build.name_any(),
        attempt: attempt(status),
        pvc,
        pin: pin(status),
        tolerations: build.spec.tolerations.clone(),
        deadline_seconds,
        owner: owner_ref(build)?,
    })
}

fn attempt(status: &ImageBuildStatus) -> i32 {
    status.attempts.unwrap_or(1).max(1)
}

fn pin(status: &ImageBuildStatus) -> Pin {
    match status.placement.as_ref().and_then(|p| p.node.clone()) {
        Some(node) => Pin::Node(node),
        None => Pin::Anywhere,
    }
}

/// The BuildCache whose store prefix holds a restored snapshot: recorded at placement;
/// `fallback` (the placement's cache) for builds placed before it was recorded.
fn snapshot_owner(from: &RestoredFrom, fallback: &str) -> String {
    from.cache.clone().unwrap_or_else(|| fallback.to_string())
}

fn remaining_seconds(build: &ImageBuild, now: Timestamp) -> i64 {
    between(now, deadline(build)).ceil().max(1.0) as i64
}

async fn restoring(
    build: &ImageBuild,
    ctx: &Context,
    mut status: ImageBuildStatus,
) -> Result<Step> {
    let now = ctx.now();
    let generation = build.metadata.generation;
    let namespace = build.namespace().unwrap_or_default();
    let placement = status.placement.clone().unwrap_or_default();
    let (Some(pvc), Some(cache), Some(from)) = (
        placement.replica.clone(),
        placement.cache.clone(),
        placement.restored_from.clone(),
    ) else {
        return Err(Error::Planner(
            "Restoring without a replica and snapshot in status".into(),
        ));
    };
    let inputs = job_inputs(build, &status, &cache, pvc, remaining_seconds(build, now))?;
    // The snapshot is read from the cache that saved it (a restore key's, for a branch's
    // first build), not from the cache whose new replica it fills.
    let op = SnapshotOp::Restore {
        snapshot: from.snapshot.clone(),
        from: snapshot_owner(&from, &cache),
    };
    match job_state(ctx, &namespace, snapshot_job(&op, &inputs, &ctx.config)).await? {
        JobOutcome::Running => Ok(Step::new(status, Action::requeue(POLL))),
        JobOutcome::Succeeded { seconds, result } => {
            if let Some(bytes) = result.as_deref().and_then(restored_bytes) {
                ctx.metrics.store_transfer("restore", bytes);
            }
            claims::release(
                ctx,
                &namespace,
                &cache,
                &build.name_any(),
                Release::Restored {
                    snapshot: from.snapshot.clone(),
                },
                now,
            )
            .await?;
            if let Some(s) = seconds {
                status
                    .durations
                    .get_or_insert_with(Durations::default)
                    .restore = Some(go_duration(s));
                ctx.metrics.step("restore", s);
            }
            set_condition(
                &mut status,
                condition::CACHE_READY,
                true,
                "Restored",
                &format!("restored {} of {}", from.snapshot, from.key),
                generation,
                now,
            );
            status.phase = Some(Phase::Building);
            Ok(Step::new(status, Action::requeue(SOON)))
        }
        JobOutcome::Failed { message } => {
            ctx.metrics.store_failed("restore");
            // The engine restores into a staging dir and moves it into place only when whole,
            // so the replica is empty: build cold on it rather than fail the build.
            let note = format!(
                "restore of {} failed, building cold: {message}",
                from.snapshot
            );
            set_condition(
                &mut status,
                condition::CACHE_READY,
                true,
                "RestoreFailed",
                &note,
                generation,
                now,
            );
            if let Some(p) = status.placement.as_mut() {
                p.warmth = Some(Warmth::Cold);
                p.reason = Some(note.clone());
            }
            claims::release(
                ctx,
                &namespace,
                &cache,
                &build.name_any(),
                Release::Restored {
                    snapshot: String::new(),
                },
                now,
            )
            .await?;
            status.phase = Some(Phase::Building);
            Ok(Step::new(status, Action::requeue(SOON)).with_event(
                EventType::Warning,
                "RestoreFailed",
                note,
            ))
        }
    }
}

async fn building(build: &ImageBuild, ctx: &Context, mut status: ImageBuildStatus) -> Result<Step> {
    let now = ctx.now();
    let generation = build.metadata.generation;
    let namespace = build.namespace().unwrap_or_default();
    let placement = status.placement.clone().unwrap_or_default();
    let cache = match &placement.cache {
        Some(c) => {
            Api::<BuildCache>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(c)
                .await?
        }
        None => None,
    };
    let state = match (
        &placement.replica,
        &placement.restored_from,
        &placement.cache,
    ) {
        (Some(pvc), _, _) => StateVolume::Replica(pvc.clone()),
        (None, Some(from), Some(cache)) => StateVolume::Throwaway {
            seed: Some((snapshot_owner(from, cache), from.snapshot.clone())),
        },
        _ => StateVolume::Throwaway { seed: None },
    };
    let size = cache
        .as_ref()
        .map(|c| c.spec.storage.size.0.clone())
        .unwrap_or_else(|| ctx.config.cache.size.0.clone());
    let keep = cache
        .as_ref()
        .and_then(|c| c.spec.gc.keep_storage.as_ref())
        .and_then(|q| quantity::to_bytes(&q.0));
    let inputs = BuilderInputs {
        attempt: attempt(&status),
        state,
        pin: pin(&status),
        gc_keep_bytes: keep.or_else(|| quantity::to_bytes(&size).map(|b| b / 10 * 8)),
        deadline_seconds: remaining_seconds(build, now),
        owner: owner_ref(build)?,
    };
    let mut pod =
        builder_pod(build, &inputs, &ctx.config).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    if let Some(node) = &placement.node {
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(NODE_LABEL.into(), node.clone());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod_name = pod.name_any();
    let current = match pods.get_opt(&pod_name).await? {
        Some(p) => p,
        None => {
            pods.create(
                &PostParams {
                    field_manager: Some(labels::FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &pod,
            )
            .await?;
            status.message = Some(format!(
                "building on {}",
                placement.node.clone().unwrap_or_default()
            ));
            return Ok(Step::new(status, Action::requeue(POLL)));
        }
    };
    let nodes = ctx.stores.nodes.state();
    let exists = |n: &str| nodes.iter().any(|node| node.name_any() == n);
    match pod_outcome(&current, exists) {
        PodOutcome::Running => Ok(Step::new(status, Action::requeue(POLL))),
        PodOutcome::Succeeded { digest, seconds } => {
            if let Some(s) = seconds {
                status
                    .durations
                    .get_or_insert_with(Durations::default)
                    .build = Some(go_duration(s));
                ctx.metrics.step("build", s);
            }
            status.image_digest = digest.clone();
            let pushed = pushed_message(build);
            set_condition(
                &mut status,
                condition::BUILT,
                true,
                "Built",
                format!("{pushed} {}", digest.clone().unwrap_or_default()).trim(),
                generation,
                now,
            );
            let due = match (&cache, &placement.replica) {
                (Some(c), Some(pvc))
                    if build.spec.cache.mode == CacheMode::ReadWrite
                        && ctx.config.snapshots_enabled() =>
                {
                    snapshot_due(c, pvc, now)
                }
                _ => false,
            };
            // The image is pushed and its digest known: the build has Succeeded, and pipelines
            // waiting on it go on. A save that is due runs after it, the replica held
            // (Snapshotting) until it ends; `Snapshotted` says how it went.
            let (next, note) = if due {
                release_claim(build, ctx, Release::Snapshotting).await?;
                set_condition_unknown(
                    &mut status,
                    condition::SNAPSHOTTED,
                    "Saving",
                    "saving the cache after the build",
                    generation,
                    now,
                );
                (Action::requeue(SOON), format!("{pushed}; saving the cache"))
            } else {
                let why = if build.spec.cache.mode == CacheMode::ReadWrite {
                    "not due by the snapshot policy"
                } else {
                    "the build may not write back to the cache"
                };
                set_condition(
                    &mut status,
                    condition::SNAPSHOTTED,
                    false,
                    "NotNeeded",
                    why,
                    generation,
                    now,
                );
                let changed = build.spec.cache.mode == CacheMode::ReadWrite;
                release_claim(build, ctx, done(build, &status, changed, None, true)).await?;
                (Action::await_change(), pushed.clone())
            };
            finish(
                &mut status,
                Phase::Succeeded,
                "Succeeded",
                &pushed,
                generation,
                now,
            );
            Ok(Step::new(status, next).with_event(EventType::Normal, "Succeeded", note))
        }
        PodOutcome::Failed { reason, message } => {
            release_claim(build, ctx, done(build, &status, true, None, false)).await?;
            set_condition(
                &mut status,
                condition::BUILT,
                false,
                &reason,
                &message,
                generation,
                now,
            );
            finish(
                &mut status,
                Phase::Failed,
                &reason,
                &message,
                generation,
                now,
            );
            Ok(Step::new(status, Action::await_change()).with_event(
                EventType::Warning,
                "BuildFailed",
                format!("{reason}: {message}"),
            ))
        }
        PodOutcome::NodeLost => {
            release_claim(build, ctx, Release::Lost).await?;
            let _ = pods
                .delete(&pod_name, &kube::api::DeleteParams::background())
                .await;
            let node = placement.node.unwrap_or_default();
            if attempt(&status) >= MAX_ATTEMPTS {
                let message = format!(
                    "node {node} was lost during the build (attempt {})",
                    attempt(&status)
                );
                finish(
                    &mut status,
                    Phase::Failed,
                    "NodeLost",
                    &message,
                    generation,
                    now,
                );
                return Ok(Step::new(status, Action::await_change()).with_event(
                    EventType::Warning,
                    "NodeLost",
                    message,
                ));
            }
            status.attempts = Some(attempt(&status) + 1);
            status.phase = Some(Phase::Placing);
            status.placement = None;
            set_condition(
                &mut status,
                condition::PLACED,
                false,
                "NodeLost",
                &format!("node {node} was lost; retrying"),
                generation,
                now,
            );
            status.message = Some(format!(
                "node {node} was lost during the build; retrying once"
            ));
            Ok(Step::new(status, Action::requeue(SOON)).with_event(
                EventType::Warning,
                "NodeLost",
                format!("node {node} lost; retrying"),
            ))
        }
    }
}

/// How a finished build leaves its replica: `changed` and `saved` as in [`Release::Done`],
/// with its warmth for the hit counts and its facts for the key's history.
fn done(
    build: &ImageBuild,
    status: &ImageBuildStatus,
    changed: bool,
    saved: Option<SnapshotRecord>,
    succeeded: bool,
) -> Release {
    Release::Done {
        changed,
        saved,
        warmth: status.placement.as_ref().and_then(|p| p.warmth),
        build: Some(FinishedBuild::of(status, created(build), succeeded)),
    }
}

/// Evicts what the planner chose to make room on the node of a new replica: each only if it
/// is still deletable when marked (a build claiming it first wins; the node's budget pass
/// then evicts something else if the node ends up over budget).
async fn make_room(
    ctx: &Context,
    view: &crate::controller::view::View,
    evictions: &[planner::ReplicaId],
) -> Result<()> {
    for id in evictions {
        let Some(r) = view.replicas.get(id) else {
            continue;
        };
        let api: Api<BuildCache> = Api::namespaced(ctx.client.clone(), &r.namespace);
        if let Some(cache) = api.get_opt(&r.cache).await? {
            build_cache::evict_replica(&cache, ctx, &r.pvc, EvictReason::Room).await?;
        }
    }
    Ok(())
}

/// Whether the snapshot policy asks for a save after this build: every N builds, at most once
/// per `minInterval`.
pub fn snapshot_due(cache: &BuildCache, pvc: &str, now: Timestamp) -> bool {
    let status = cache.status.clone().unwrap_or_default();
    let builds = status
        .replicas
        .iter()
        .find(|r| r.pvc == pvc)
        .and_then(|r| r.builds_since_snapshot)
        .unwrap_or(0)
        + 1;
    if builds < cache.spec.snapshot.every {
        return false;
    }
    let min: Duration = cache.spec.snapshot.min_interval.into();
    match status.snapshots.iter().map(|s| s.time.0).max() {
        Some(last) => between(last, now) >= min.as_secs_f64(),
        None => true,
    }
}

/// Marks a build Succeeded unless it already is (a build left `Snapshotting` by an earlier
/// controller finishes when its save ends; a current one finished before the save began).
fn succeeded_once(
    status: &mut ImageBuildStatus,
    pushed: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    if status.phase != Some(Phase::Succeeded) {
        finish(
            status,
            Phase::Succeeded,
            "Succeeded",
            pushed,
            generation,
            now,
        );
    }
}

/// Follows the save after a build: a Succeeded build whose `Snapshotted` is `Unknown`, or one
/// left in the `Snapshotting` phase by an earlier version of the controller (finished here).
pub(crate) async fn snapshotting(
    build: &ImageBuild,
    ctx: &Context,
    mut status: ImageBuildStatus,
) -> Result<Step> {
    let now = ctx.now();
    let generation = build.metadata.generation;
    let namespace = build.namespace().unwrap_or_default();
    let placement = status.placement.clone().unwrap_or_default();
    let (Some(pvc), Some(cache)) = (placement.replica.clone(), placement.cache.clone()) else {
        return Err(Error::Planner(
            "Snapshotting without a replica in status".into(),
        ));
    };
    let inputs = job_inputs(
        build,
        &status,
        &cache,
        pvc,
        remaining_seconds(build, now).max(600),
    )?;
    let pushed = pushed_message(build);
    match job_state(
        ctx,
        &namespace,
        snapshot_job(&SnapshotOp::Save, &inputs, &ctx.config),
    )
    .await?
    {
        JobOutcome::Running => Ok(Step::new(status, Action::requeue(POLL))),
        JobOutcome::Succeeded { result, seconds } => {
            let record = result.as_deref().and_then(|r| saved_snapshot(r, now));
            if let Some(r) = &record {
                ctx.metrics
                    .store_transfer("save", r.new_bytes.max(0) as u64);
            }
            if let Some(s) = seconds {
                status
                    .durations
                    .get_or_insert_with(Durations::default)
                    .snapshot = Some(go_duration(s));
                ctx.metrics.step("snapshot", s);
            }
            let note = match &record {
                Some(r) => format!("saved snapshot {} ({} new bytes)", r.id, r.new_bytes),
                None => "saved (the job's result could not be read)".to_string(),
            };
            set_condition(
                &mut status,
                condition::SNAPSHOTTED,
                true,
                "Saved",
                &note,
                generation,
                now,
            );
            release_claim(
                build,
                ctx,
                done(build, &status, record.is_none(), record, true),
            )
            .await?;
            succeeded_once(&mut status, &pushed, generation, now);
            Ok(Step::new(status, Action::await_change()).with_event(
                EventType::Normal,
                "Snapshotted",
                note,
            ))
        }
        JobOutcome::Failed { message } => {
            ctx.metrics.store_failed("save");
            // The image is pushed: the build succeeded; only the cache stays unsaved.
            set_condition(
                &mut status,
                condition::SNAPSHOTTED,
                false,
                "SaveFailed",
                &message,
                generation,
                now,
            );
            release_claim(build, ctx, done(build, &status, true, None, true)).await?;
            succeeded_once(&mut status, &pushed, generation, now);
            status.message = Some(format!("{pushed}; the cache was not saved: {message}"));
            build_cache::save_failed(ctx, &namespace, &cache, &message).await;
            Ok(Step::new(status, Action::await_change()).with_event(
                EventType::Warning,
                "SaveFailed",
                message,
            ))
        }
    }
}
