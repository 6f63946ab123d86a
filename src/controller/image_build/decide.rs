//! The ImageBuild lifecycle as one pure decision. From what was observed (the build, its
//! BuildCache, its pod or Job, the planner's choice, its children, one `now`) it returns the
//! next status, the effects to apply and when to look again. Every rule of the lifecycle is
//! here (plan, claim, restore, build, save, release, cancel, timeout, node loss, deletion);
//! nothing here talks to the API.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::status::{condition_of, finish, saving, set_condition, set_condition_unknown};
use crate::api::common::condition;
use crate::api::image_build::ClonedFrom;
use crate::api::quantity;
use crate::api::{
    keys, BuildCache, CacheMode, Durations, ImageBuild, ImageBuildStatus, Phase, Placement,
    ReplicaState, RestoredFrom, SnapshotRecord, Warmth,
};
use crate::contract::child_name;
use crate::controller::builders::jobs::{snapshot_job, SnapshotJobInputs, SnapshotOp};
use crate::controller::builders::pod::{
    buildctl_args, builder_pod, BuilderInputs, Seed, StateVolume,
};
use crate::controller::builders::Pin;
use crate::controller::config::OperatorConfig;
use crate::controller::durations::{between, go_duration};
use crate::controller::error::{Error, Result};
use crate::controller::key_history::FinishedBuild;
use crate::controller::outcome::{
    restore_sample, restored_bytes, saved_snapshot, JobOutcome, PodOutcome,
};
use crate::controller::replica_table::{
    cache_mismatch, new_cache, next_replica_name, owner_ref, Release,
};
use crate::controller::requeue::Next;
use crate::controller::snapshot_records;
use crate::controller::view::NODE_LABEL;

/// Builds retried after their node was lost, at most this many attempts in all (besides the
/// cold attempt after a failed restore).
pub const MAX_ATTEMPTS: i32 = 2;
/// A save Job may run at least this long, whatever is left of the build's timeout.
const SAVE_MIN_SECONDS: i64 = 600;

/// Everything the decision reads, gathered by `observe` (only what the build's state needs:
/// see [`wanted`]).
#[derive(Clone, Debug)]
pub struct Observed {
    /// The build, with the status it was read with.
    pub build: ImageBuild,
    /// One clock reading for the whole decision.
    pub now: Timestamp,
    /// The operator's configuration.
    pub config: Arc<OperatorConfig>,
    /// The build's BuildCache, read fresh (when [`Wanted::cache`] names one).
    pub cache: Option<BuildCache>,
    /// The builder pod of the current attempt (`None`: not created yet).
    pub pod: Option<PodOutcome>,
    /// The restore init container of that pod (`None`: the pod has none, or is not created).
    pub restore: Option<JobOutcome>,
    /// The save Job of the current attempt (`None`: not created yet).
    pub job: Option<JobOutcome>,
    /// The planner's choice, for a build being placed.
    pub plan: Option<Planned>,
    /// Whether the build still holds a replica in its BuildCache.
    pub holds_claim: bool,
    /// The build's pods and Jobs, when it is being stopped.
    pub children: Option<Children>,
    /// The PVC of a replica being cloned, read fresh (`None`: not looked for, or gone).
    pub clone: Option<CloneClaim>,
}

/// What the API says of a clone's PVC.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloneClaim {
    /// Bound: its volume was provisioned from the source's.
    pub bound: bool,
    /// When it was created (the bind timeout runs from here).
    pub created: Option<Timestamp>,
    /// The provisioner's last `ProvisioningFailed` Event on it, if any.
    pub failure: Option<String>,
}

/// The planner's decision, in names.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// Why, for people.
    pub reason: String,
    /// How warm the build starts.
    pub warmth: Warmth,
    /// Seconds the build is expected to wait.
    pub wait_seconds: f64,
    /// Replicas to evict to make room on the chosen node.
    pub evictions: Vec<Victim>,
    /// What to do.
    pub action: PlannedAction,
    /// A cold start seeded from the build's registry caches (`spec.cache.registry.importFrom`).
    pub registry_seed: bool,
}

/// A replica the planner would evict.
#[derive(Clone, Debug, PartialEq)]
pub struct Victim {
    /// Namespace of its BuildCache.
    pub namespace: String,
    /// Its BuildCache.
    pub cache: String,
    /// Its PVC.
    pub pvc: String,
}

/// What the planner chose.
#[derive(Clone, Debug, PartialEq)]
pub enum PlannedAction {
    /// Wait for a replica or a builder slot.
    Wait,
    /// Build on an idle replica.
    UseReplica {
        /// Namespace of its BuildCache.
        namespace: String,
        /// Its BuildCache.
        cache: String,
        /// Its PVC.
        pvc: String,
        /// Its node.
        node: String,
    },
    /// Restore a snapshot onto `node`.
    Restore {
        /// The node.
        node: String,
        /// The key whose snapshot it is.
        key: String,
        /// The snapshot id.
        snapshot: String,
        /// Its size.
        bytes: u64,
        /// The BuildCache that saved it.
        source_cache: Option<String>,
        /// SHA-256 of its manifest, recorded when it was saved: the restore refuses any other.
        manifest_sha256: Option<String>,
        /// Into a volume discarded after the build (ReadOnly builds).
        throwaway: bool,
    },
    /// Clone replica `pvc` of BuildCache `cache` (of the build's namespace) into a new
    /// replica on `node`, where it lives.
    Clone {
        /// The node.
        node: String,
        /// The key the source holds.
        key: String,
        /// The source's BuildCache.
        cache: String,
        /// The source's PVC.
        pvc: String,
        /// The snapshot the source matches, if saved.
        snapshot: Option<String>,
        /// Bytes on the source.
        bytes: u64,
    },
    /// Build without a cache on `node`.
    Cold {
        /// The node.
        node: String,
        /// In a volume discarded after the build.
        throwaway: bool,
    },
}

/// The build's pods and Jobs (all attempts), for stopping it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Children {
    /// Jobs to delete.
    pub jobs: Vec<String>,
    /// Pods not yet being deleted.
    pub pods: Vec<String>,
    /// Pods still running (terminating ones included).
    pub unfinished: usize,
}

/// A measurement the decision asks to record.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    /// Seconds of a lifecycle step (`queued`, `restore`, `build`, `snapshot`).
    Step(&'static str, f64),
    /// Bytes moved to or from the store by `restore` or `save`.
    Transfer(&'static str, u64),
    /// A failed store operation.
    StoreFailed(&'static str),
}

/// A change to the world, applied in order before the status is written (Events after it).
#[derive(Clone, Debug)]
pub enum Effect {
    /// Create the build's BuildCache (its key's first ReadWrite build).
    CreateCache(Box<BuildCache>),
    /// Evict a replica to make room, if it is still deletable.
    Evict(Victim),
    /// Claim an idle replica; losing it to another build is a conflict (re-plan).
    Claim {
        /// Namespace of the BuildCache.
        namespace: String,
        /// The BuildCache.
        cache: String,
        /// The replica.
        pvc: String,
    },
    /// Add a replica held by the build to its BuildCache, and its PVC.
    AddReplica {
        /// Its PVC name.
        pvc: String,
        /// Its node.
        node: String,
        /// `Restoring` or `InUse`.
        state: ReplicaState,
        /// Bytes a restore will write.
        size_bytes: Option<i64>,
        /// The replica whose PVC it is cloned from, and the snapshot that one matches.
        clone_of: Option<(String, Option<String>)>,
    },
    /// Keep replica `pvc` of BuildCache `cache` from being claimed or evicted while the
    /// build's new replica is cloned from it; losing it to another build is a conflict.
    HoldForClone {
        /// The source's BuildCache.
        cache: String,
        /// The source's PVC.
        pvc: String,
    },
    /// Lift the build's hold on a clone's source (nothing if it holds none).
    ReleaseCloneHold {
        /// The source's BuildCache.
        cache: String,
        /// The source's PVC.
        pvc: String,
    },
    /// Create the builder pod.
    CreatePod(Box<Pod>),
    /// Delete a pod.
    DeletePod(String),
    /// Create a save Job (or a multi-platform build's index Job).
    CreateJob(Box<Job>),
    /// Create a child ImageBuild of a multi-platform build (one platform's).
    CreateBuild(Box<ImageBuild>),
    /// Cancel a child ImageBuild of a multi-platform build (`spec.cancel: true`).
    CancelBuild(String),
    /// Delete the build's Jobs and pods.
    StopChildren(Children),
    /// Change the replica the build holds in BuildCache `cache`.
    Release {
        /// The BuildCache.
        cache: String,
        /// How.
        how: Release,
    },
    /// Record a failed save on the BuildCache (`StoreReachable=False`).
    SaveFailed {
        /// The BuildCache.
        cache: String,
        /// What happened.
        message: String,
    },
    /// Record a measurement.
    Measure(Sample),
    /// Publish an Event about the build (after the status write).
    Event {
        /// Normal or Warning.
        type_: EventType,
        /// CamelCase reason.
        reason: &'static str,
        /// What happened.
        note: String,
    },
}

/// The decision: the status to write, the effects, and when to look again.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The next status.
    pub status: ImageBuildStatus,
    /// What to change first.
    pub effects: Vec<Effect>,
    /// When to look again.
    pub next: Next,
}

/// Which Job of the build is followed (a restore runs in the builder pod, not a Job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobRole {
    /// The save after a build.
    Save,
}

impl JobRole {
    /// The role in the Job's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobRole::Save => "save",
        }
    }
}

/// What `observe` must gather for the build as it stands (and nothing more: a finished build
/// at rest costs no API call).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wanted {
    /// The BuildCache of this name, read fresh.
    pub cache: Option<String>,
    /// The planner's choice.
    pub plan: bool,
    /// The builder pod of this name.
    pub pod: Option<String>,
    /// The Job of this name.
    pub job: Option<String>,
    /// Whether the build still holds a replica.
    pub claim: bool,
    /// The build's pods and Jobs (always when stopping; when it holds a claim otherwise).
    pub children: bool,
    /// The PVC of the replica being cloned for the build.
    pub clone: Option<String>,
}

/// What to observe for `build` at `now`.
pub fn wanted(build: &ImageBuild, now: Timestamp, config: &OperatorConfig) -> Wanted {
    let status = build.status.clone().unwrap_or_default();
    let name = build.name_any();
    let attempt = attempt(&status);
    let placement = status.placement.clone().unwrap_or_default();
    let job = |role: JobRole| Some(child_name(&name, role.as_str(), attempt));
    if build.metadata.deletion_timestamp.is_some() {
        return Wanted {
            children: true,
            ..Wanted::default()
        };
    }
    match status.phase {
        Some(p) if p.is_terminal() && saving(&status) => Wanted {
            job: job(JobRole::Save),
            ..Wanted::default()
        },
        Some(p) if p.is_terminal() => Wanted {
            claim: true,
            ..Wanted::default()
        },
        _ if build.spec.cancel || now >= deadline(build) => Wanted {
            children: true,
            ..Wanted::default()
        },
        Some(Phase::Placing) => {
            let key = key_of(build, &status, config);
            Wanted {
                cache: Some(crate::controller::replica_table::cache_name(
                    &key,
                    build.spec.cache.cache_ref.as_deref(),
                )),
                plan: true,
                ..Wanted::default()
            }
        }
        // Restoring: the builder pod's restore init container runs, or its clone binds.
        Some(Phase::Restoring | Phase::Building) => Wanted {
            clone: placement
                .replica
                .clone()
                .filter(|_| status.phase == Some(Phase::Restoring))
                .filter(|_| placement.cloned_from.is_some()),
            cache: placement.cache,
            pod: Some(child_name(&name, "build", attempt)),
            ..Wanted::default()
        },
        Some(Phase::Snapshotting) => Wanted {
            job: job(JobRole::Save),
            ..Wanted::default()
        },
        _ => Wanted::default(),
    }
}

/// The cleanup of a build being deleted: its pods and Jobs stopped, then its replica
/// released. The effects, and whether the finalizer may go.
pub fn cleanup(o: &Observed) -> (Vec<Effect>, bool) {
    abort(o)
}

/// The next step of a build that is not being deleted.
pub fn decide(o: &Observed) -> Result<Decision> {
    let status = o.build.status.clone().unwrap_or_default();
    if status.phase.is_some_and(Phase::is_terminal) {
        return after_finish(o, status);
    }
    let decision = if o.build.spec.cancel {
        stop(
            o,
            status,
            Phase::Cancelled,
            "Cancelled",
            "cancelled by spec.cancel",
        )
    } else if o.now >= deadline(&o.build) {
        let message = format!(
            "the build ran past spec.timeout ({})",
            go_duration(between(created(&o.build), deadline(&o.build)))
        );
        stop(o, status, Phase::Failed, "Timeout", &message)
    } else {
        match status.phase {
            None | Some(Phase::Pending) => Ok(start(o, status)),
            Some(Phase::Placing) => place(o, status),
            Some(Phase::Restoring | Phase::Building) => building(o, status),
            Some(Phase::Snapshotting) => snapshotting(o, status),
            Some(_) => Ok(Decision::new(status, Next::Done)),
        }
    };
    match decision {
        Err(Error::InvalidSpec(message)) => Ok(invalid(o, &message)),
        other => other,
    }
}

impl Decision {
    pub(super) fn new(status: ImageBuildStatus, next: Next) -> Self {
        Decision {
            status,
            effects: Vec::new(),
            next,
        }
    }

    pub(super) fn effect(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    pub(super) fn effects(mut self, effects: impl IntoIterator<Item = Effect>) -> Self {
        self.effects.extend(effects);
        self
    }

    pub(super) fn event(self, type_: EventType, reason: &'static str, note: String) -> Self {
        self.effect(Effect::Event {
            type_,
            reason,
            note,
        })
    }
}

/// A build that cannot run as written: Failed, with the field named.
fn invalid(o: &Observed, message: &str) -> Decision {
    let mut status = o.build.status.clone().unwrap_or_default();
    finish(
        &mut status,
        Phase::Failed,
        "InvalidSpec",
        message,
        o.build.metadata.generation,
        o.now,
    );
    Decision::new(status, Next::Done).event(EventType::Warning, "InvalidSpec", message.to_string())
}

/// Cancel or timeout: the build ends at once; its children are stopped, and its replica is
/// released once they are gone (by [`after_finish`] if not now).
fn stop(
    o: &Observed,
    mut status: ImageBuildStatus,
    phase: Phase,
    reason: &'static str,
    message: &str,
) -> Result<Decision> {
    let (effects, _) = abort(o);
    finish(
        &mut status,
        phase,
        reason,
        message,
        o.build.metadata.generation,
        o.now,
    );
    let (type_, note) = match phase {
        Phase::Cancelled => (EventType::Normal, "build cancelled".to_string()),
        _ => (EventType::Warning, message.to_string()),
    };
    Ok(Decision::new(status, Next::Done)
        .effects(effects)
        .event(type_, reason, note))
}

/// Stops the build's pods and Jobs, and once none is still running, releases its replica
/// (whose state it may have changed, so it no longer matches a snapshot). Until then the
/// replica stays held: a buildkitd finishing its step on a cancelled build must not share
/// its volume with a save, an eviction or the next build. Whether it is released.
fn abort(o: &Observed) -> (Vec<Effect>, bool) {
    let children = o.children.clone().unwrap_or_default();
    let mut effects = Vec::new();
    let released = children.unfinished == 0;
    if !children.jobs.is_empty() || !children.pods.is_empty() {
        effects.push(Effect::StopChildren(children));
    }
    // A clone's source held for the build goes back at once: nothing of the build writes it.
    effects.extend(clone::release_hold(o));
    if released {
        effects.extend(release(
            o,
            Release::Done {
                changed: true,
                saved: None,
                warmth: None,
                build: None,
            },
        ));
    }
    (effects, released)
}

/// The release of the replica the build holds (as its status read says), if any.
fn release(o: &Observed, how: Release) -> Option<Effect> {
    let placement = o.build.status.as_ref()?.placement.as_ref()?;
    placement.replica.as_ref()?;
    Some(Effect::Release {
        cache: placement.cache.clone()?,
        how,
    })
}

/// A finished build still has work: the save after a Succeeded build, or, after a cancel,
/// timeout or failure, the release of a replica its pods held until they were gone.
fn after_finish(o: &Observed, status: ImageBuildStatus) -> Result<Decision> {
    if saving(&status) {
        return snapshotting(o, status);
    }
    if !o.holds_claim {
        return Ok(Decision::new(status, Next::Done));
    }
    let (effects, released) = abort(o);
    let next = if released { Next::Done } else { Next::Linger };
    Ok(Decision::new(status, next).effects(effects))
}

fn start(o: &Observed, mut status: ImageBuildStatus) -> Decision {
    if let Err(e) = buildctl_args(&o.build, &[]) {
        return invalid(o, &e.to_string());
    }
    status.cache_key = Some(keys::cache_key(
        &o.build.spec,
        &o.config.builder.default_arch,
    ));
    status.start_time.get_or_insert(Time(o.now));
    status.attempts = Some(status.attempts.unwrap_or(0).max(1));
    status.phase = Some(Phase::Placing);
    status.message = Some("choosing a node and cache".into());
    Decision::new(status, Next::Soon)
}

fn place(o: &Observed, mut status: ImageBuildStatus) -> Result<Decision> {
    let build = &o.build;
    let (now, generation) = (o.now, build.metadata.generation);
    let namespace = build.namespace().unwrap_or_default();
    let name = build.name_any();
    let key = key_of(build, &status, &o.config);
    let mode = build.spec.cache.mode;
    if let Some(message) = cache_mismatch(
        o.cache.as_ref(),
        &key,
        build.spec.cache.cache_ref.as_deref(),
        &namespace,
    ) {
        return Err(Error::InvalidSpec(message));
    }
    let mut effects = Vec::new();
    // The build's own cache must exist before its replica, so its snapshots and replicas
    // count; ReadOnly builds never create one.
    let cache = match (&o.cache, mode) {
        (Some(c), _) => Some(c.clone()),
        (None, CacheMode::ReadWrite) => {
            let created = new_cache(&o.config, &namespace, &key)?;
            effects.push(Effect::CreateCache(Box::new(created.clone())));
            Some(created)
        }
        (None, _) => None,
    };
    let planned = o
        .plan
        .as_ref()
        .ok_or_else(|| Error::Internal("placing without the planner's decision".into()))?;
    let resumed = resume_lost_claim(o.cache.as_ref(), build, planned);
    let plan = resumed.as_ref().unwrap_or(planned);
    let reason = plan.reason.clone();
    let mut placement = Placement {
        reason: Some(reason.clone()),
        warmth: Some(plan.warmth),
        ..Placement::default()
    };
    effects.extend(plan.evictions.iter().cloned().map(Effect::Evict));

    match &plan.action {
        PlannedAction::Wait => {
            let wait = plan.wait_seconds.max(0.0);
            placement.expected_wait = Some(go_duration(wait));
            status.placement = Some(placement);
            status.message = Some(format!("waiting: {reason}"));
            return Ok(Decision::new(status, Next::Wait(wait)).effects(effects));
        }
        PlannedAction::UseReplica {
            namespace,
            cache,
            pvc,
            node,
        } => {
            effects.push(Effect::Claim {
                namespace: namespace.clone(),
                cache: cache.clone(),
                pvc: pvc.clone(),
            });
            placement.node = Some(node.clone());
            placement.replica = Some(pvc.clone());
            placement.cache = Some(cache.clone());
            set_condition(
                &mut status,
                condition::CACHE_READY,
                true,
                "Hot",
                &format!("replica {pvc} on {node}"),
                generation,
                now,
            );
            status.phase = Some(Phase::Building);
        }
        PlannedAction::Restore {
            node,
            key: source_key,
            snapshot,
            bytes,
            source_cache,
            manifest_sha256,
            throwaway,
        } => {
            placement.node = Some(node.clone());
            placement.restored_from = Some(RestoredFrom {
                key: source_key.clone(),
                snapshot: snapshot.clone(),
                cache: source_cache.clone(),
                manifest_sha256: manifest_sha256.clone(),
            });
            // Either way the builder pod restores the snapshot in an init container first
            // (the Restoring phase), into a new replica or a throwaway volume.
            let into = if *throwaway {
                placement.cache = source_cache.clone();
                "a volume discarded after the build"
            } else {
                let restoring = (ReplicaState::Restoring, Some(*bytes as i64));
                match add_replica(cache.as_ref(), &name, node, restoring, &mut placement)? {
                    Ok(add) => effects.push(add),
                    Err(full) => return Ok(at_capacity(status, placement, full).effects(effects)),
                }
                "a new replica"
            };
            set_condition(
                &mut status,
                condition::CACHE_READY,
                false,
                "Restoring",
                &format!(
                    "restoring snapshot {snapshot} into {into} in the builder pod's init container"
                ),
                generation,
                now,
            );
            status.phase = Some(Phase::Restoring);
        }
        PlannedAction::Clone {
            node,
            key: source_key,
            cache: source_cache,
            pvc: source_pvc,
            snapshot,
            bytes,
        } => {
            placement.node = Some(node.clone());
            let filling = (ReplicaState::Restoring, Some(*bytes as i64));
            let add = match add_replica(cache.as_ref(), &name, node, filling, &mut placement)? {
                Ok(add) => add,
                Err(full) => return Ok(at_capacity(status, placement, full).effects(effects)),
            };
            // The source is held first: its clone's PVC exists only once nothing else may
            // claim or evict it.
            effects.push(Effect::HoldForClone {
                cache: source_cache.clone(),
                pvc: source_pvc.clone(),
            });
            effects.push(clone::from_source(add, source_pvc, snapshot.clone()));
            placement.cloned_from = Some(ClonedFrom {
                key: source_key.clone(),
                cache: source_cache.clone(),
                replica: source_pvc.clone(),
                snapshot: snapshot.clone(),
            });
            set_condition(
                &mut status,
                condition::CACHE_READY,
                false,
                "Cloning",
                &format!(
                    "cloning replica {source_pvc} (key {source_key}) into a new replica on {node}: its volume is copied by the storage, nothing restored"
                ),
                generation,
                now,
            );
            status.phase = Some(Phase::Restoring);
        }
        PlannedAction::Cold { node, throwaway } => {
            placement.node = Some(node.clone());
            if plan.registry_seed {
                placement.imported_from = build
                    .spec
                    .cache
                    .registry
                    .as_ref()
                    .map(|r| r.import_from.clone())
                    .unwrap_or_default();
            }
            let story = cold_story(
                &key,
                &keys::restore_keys(&build.spec, &o.config.builder.default_arch),
                o.cache.as_ref(),
                &reason,
            );
            if !throwaway {
                let in_use = (ReplicaState::InUse, None);
                match add_replica(cache.as_ref(), &name, node, in_use, &mut placement)? {
                    Ok(add) => effects.push(add),
                    Err(full) => return Ok(at_capacity(status, placement, full).effects(effects)),
                }
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
    let queued = between(started, now);
    status
        .durations
        .get_or_insert_with(Durations::default)
        .queued = Some(go_duration(queued));
    effects.push(Effect::Measure(Sample::Step("queued", queued)));
    let where_ = placement.node.clone().unwrap_or_default();
    let warmth = plan.warmth;
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
    Ok(Decision::new(status, Next::Soon).effects(effects).event(
        EventType::Normal,
        "Placed",
        format!("on {where_}, {warmth}: {reason}"),
    ))
}

/// The placement a build already made when the status recording it was lost (its write
/// conflicted, or the controller stopped in between): the replica it holds in `cache`, where
/// that replica is. The planner's fresh choice sees that replica busy (held by this very
/// build) and would wait for it, or restore or claim a second one elsewhere. Claiming and
/// adding are idempotent for their holder, so the placement's effects are made again as they
/// were. `None` when the build holds no replica (or one whose placement cannot be told).
fn resume_lost_claim(
    cache: Option<&BuildCache>,
    build: &ImageBuild,
    plan: &Planned,
) -> Option<Planned> {
    let importing = build
        .spec
        .cache
        .registry
        .as_ref()
        .is_some_and(|r| !r.import_from.is_empty());
    let build = build.name_any();
    let build = build.as_str();
    let cache = cache?;
    let held = cache
        .status
        .iter()
        .flat_map(|s| &s.replicas)
        .find(|r| r.holder.as_deref() == Some(build))?;
    let node = held.node.clone()?;
    let used_before = held.last_used.is_some() || held.snapshot_id.is_some();
    let (warmth, action) = match (&plan.action, held.state) {
        (_, ReplicaState::InUse) if !used_before => (
            Warmth::Cold,
            PlannedAction::Cold {
                node,
                throwaway: false,
            },
        ),
        (_, ReplicaState::InUse) => (
            Warmth::Hot,
            PlannedAction::UseReplica {
                namespace: cache.namespace().unwrap_or_default(),
                cache: cache.name_any(),
                pvc: held.pvc.clone(),
                node,
            },
        ),
        (
            restore @ PlannedAction::Restore {
                throwaway: false, ..
            },
            ReplicaState::Restoring,
        ) => {
            let mut restore = restore.clone();
            if let PlannedAction::Restore { node: to, .. } = &mut restore {
                *to = node;
            }
            (plan.warmth, restore)
        }
        _ => return None,
    };
    Some(Planned {
        reason: format!(
            "replica {} claimed earlier (its placement was not recorded)",
            held.pvc
        ),
        warmth,
        wait_seconds: 0.0,
        evictions: Vec::new(),
        // A cold claim was made when no cache of the key existed (or a cold start was
        // faster): seed it again when the build names registry caches.
        registry_seed: importing && matches!(action, PlannedAction::Cold { .. }),
        action,
    })
}

/// The replica a ReadWrite build adds to its `cache` on `node` (`state`, bytes a restore will
/// write), recorded in `placement`: the one it already holds (a placement whose status write
/// was lost), else the next free name. `Err` with the reason when the cache is at
/// `maxReplicas`.
fn add_replica(
    cache: Option<&BuildCache>,
    build: &str,
    node: &str,
    (state, size_bytes): (ReplicaState, Option<i64>),
    placement: &mut Placement,
) -> Result<Result<Effect, String>> {
    let cache =
        cache.ok_or_else(|| Error::Internal("no BuildCache for a ReadWrite build".into()))?;
    let held = cache
        .status
        .iter()
        .flat_map(|s| &s.replicas)
        .find(|r| r.holder.as_deref() == Some(build))
        .map(|r| r.pvc.clone());
    let Some(pvc) = held.or_else(|| next_replica_name(cache)) else {
        return Ok(Err(format!(
            "BuildCache {} is at maxReplicas ({}); waiting for a replica",
            cache.name_any(),
            cache.spec.max_replicas
        )));
    };
    placement.replica = Some(pvc.clone());
    placement.cache = Some(cache.name_any());
    Ok(Ok(Effect::AddReplica {
        pvc,
        node: node.to_string(),
        state,
        size_bytes,
        clone_of: None,
    }))
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
    let unpinned = status
        .snapshots
        .iter()
        .filter(|s| snapshot_records::pin(s).is_none())
        .count();
    if unpinned > 0 {
        story.push_str(&format!(
            " ({unpinned} without a recorded manifest digest, never restored: saved before Hearth pinned manifests, or only listed from the store)"
        ));
    }
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
fn at_capacity(mut status: ImageBuildStatus, mut placement: Placement, why: String) -> Decision {
    placement.node = None;
    placement.expected_wait = None;
    placement.reason = Some(why);
    status.message = placement.reason.clone();
    status.placement = Some(placement);
    Decision::new(status, Next::AtCapacity)
}

/// The restore init container succeeded: the volume holds the snapshot. The replica (if the
/// volume is one) records it, the step's time and bytes are measured, and the build goes on.
fn restored(
    o: &Observed,
    status: &mut ImageBuildStatus,
    result: Option<&str>,
    seconds: Option<f64>,
) -> Vec<Effect> {
    let (now, generation) = (o.now, o.build.metadata.generation);
    let placement = status.placement.clone().unwrap_or_default();
    let Some(from) = placement.restored_from else {
        return Vec::new();
    };
    let mut effects = Vec::new();
    if let Some(bytes) = result.and_then(restored_bytes) {
        effects.push(Effect::Measure(Sample::Transfer("restore", bytes)));
    }
    if let Some(s) = seconds {
        status
            .durations
            .get_or_insert_with(Durations::default)
            .restore = Some(go_duration(s));
        effects.push(Effect::Measure(Sample::Step("restore", s)));
    }
    effects.extend(release(
        o,
        Release::Restored {
            snapshot: from.snapshot.clone(),
            sample: result.and_then(restore_sample),
        },
    ));
    let into = if placement.replica.is_some() {
        ""
    } else {
        " into a volume discarded after the build"
    };
    set_condition(
        status,
        condition::CACHE_READY,
        true,
        "Restored",
        &format!("restored {} of {}{into}", from.snapshot, from.key),
        generation,
        now,
    );
    status.phase = Some(Phase::Building);
    status.message = Some(format!(
        "building on {}",
        placement.node.unwrap_or_default()
    ));
    effects
}

/// The restore failed (`retry`: its init container failed, so the pod did) or could not
/// start (no recorded manifest digest). The engine restores into a staging dir and moves it
/// into place only when whole, so the volume is as it was: the build goes on cold on it, in
/// the next attempt's pod when this one failed, saying why in the condition, the placement,
/// the message and a Warning Event. The replica matches no snapshot.
fn restore_failed(
    o: &Observed,
    mut status: ImageBuildStatus,
    note: String,
    retry: bool,
) -> Decision {
    let (now, generation) = (o.now, o.build.metadata.generation);
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
    let mut effects: Vec<Effect> = release(o, Release::RestoreFailed).into_iter().collect();
    if retry {
        effects.push(Effect::Measure(Sample::StoreFailed("restore")));
        status.attempts = Some(attempt(&status) + 1);
    }
    status.phase = Some(Phase::Building);
    status.message = Some(note.clone());
    Decision::new(status, Next::Soon).effects(effects).event(
        EventType::Warning,
        "RestoreFailed",
        note,
    )
}

/// Follows the builder pod: in the Restoring phase its restore init container first (the
/// restore and the build may both have ended by the time they are seen), then the build.
fn building(o: &Observed, mut status: ImageBuildStatus) -> Result<Decision> {
    let restoring = status.phase == Some(Phase::Restoring);
    let placement = status.placement.clone().unwrap_or_default();
    if restoring && placement.cloned_from.is_some() {
        return clone::follow(o, status);
    }
    if restoring && o.pod.is_none() {
        let from = placement
            .restored_from
            .as_ref()
            .ok_or_else(|| Error::Internal("Restoring without a snapshot in status".into()))?;
        // Placed by a version before pinning: nothing vouches for the manifest in the store.
        if from.manifest_sha256.is_none() {
            let note = format!(
                "restore of {} not started, building cold: {}",
                from.snapshot,
                snapshot_records::unpinned_note(&from.snapshot)
            );
            return Ok(restore_failed(o, status, note, false));
        }
    }
    let pod = builder_pod_for(o, &status)?;
    let outcome = match &o.pod {
        None => {
            let node = placement.node.clone().unwrap_or_default();
            status.message = Some(match (&placement.restored_from, restoring) {
                (Some(from), true) => format!("restoring {} on {node}", from.snapshot),
                _ => format!("building on {node}"),
            });
            return Ok(Decision::new(status, Next::Poll).effect(Effect::CreatePod(Box::new(pod))));
        }
        Some(outcome) => outcome,
    };
    let mut effects = Vec::new();
    if restoring {
        match (&o.restore, outcome) {
            (Some(JobOutcome::Failed { message }), _) => {
                let snapshot = placement.restored_from.map(|f| f.snapshot);
                let note = format!(
                    "restore of {} failed, building cold in the next attempt: {message}",
                    snapshot.unwrap_or_default()
                );
                return Ok(restore_failed(o, status, note, true));
            }
            (Some(JobOutcome::Succeeded { result, seconds }), _) => {
                effects = restored(o, &mut status, result.as_deref(), *seconds);
            }
            // The build ran, so the restore before it succeeded (its status unread).
            (_, PodOutcome::Succeeded { .. }) => effects = restored(o, &mut status, None, None),
            (_, PodOutcome::Running) => return Ok(Decision::new(status, Next::Poll)),
            // A timeout or a lost node while restoring: as for the build.
            (_, PodOutcome::Failed { .. } | PodOutcome::NodeLost) => {}
        }
    }
    let mut decision = pod_ended(o, status, &pod, outcome)?;
    decision.effects.splice(0..0, effects);
    Ok(decision)
}

/// What the builder pod's outcome makes of the build.
fn pod_ended(
    o: &Observed,
    mut status: ImageBuildStatus,
    pod: &Pod,
    outcome: &PodOutcome,
) -> Result<Decision> {
    let build = &o.build;
    let (now, generation) = (o.now, build.metadata.generation);
    let placement = status.placement.clone().unwrap_or_default();
    match outcome {
        PodOutcome::Running => Ok(Decision::new(status, Next::Poll)),
        PodOutcome::Succeeded {
            digest,
            seconds,
            prune,
            git_commit,
            image_size,
        } => {
            let mut effects = Vec::new();
            status.cache_prune = prune.clone();
            status.image_size = *image_size;
            // Only a git source has a commit to resolve; a report for any other is ignored.
            status.git_commit = git_commit
                .clone()
                .filter(|_| build.spec.source.git.is_some());
            if let Some(s) = seconds {
                status
                    .durations
                    .get_or_insert_with(Durations::default)
                    .build = Some(go_duration(*s));
                effects.push(Effect::Measure(Sample::Step("build", *s)));
            }
            status.image_digest = digest.clone();
            // What was pushed, by digest and by every name (nothing for a build-only check).
            if let Some(d) = digest.as_deref().filter(|_| build.spec.output.push) {
                status.image = Some(build.spec.output.by_digest(d));
                status.tags = build.spec.output.pushed_names();
            }
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
            let read_write = build.spec.cache.mode == CacheMode::ReadWrite;
            let due = match (&o.cache, &placement.replica) {
                (Some(c), Some(pvc)) if read_write && o.config.snapshots_enabled() => {
                    snapshot_due(c, pvc, now)
                }
                _ => false,
            };
            // The image is pushed and its digest known: the build has Succeeded, and pipelines
            // waiting on it go on. A save that is due runs after it, the replica held
            // (Snapshotting) until it ends; `Snapshotted` says how it went.
            let (next, note) = if due {
                effects.extend(release(o, Release::Snapshotting));
                set_condition_unknown(
                    &mut status,
                    condition::SNAPSHOTTED,
                    "Saving",
                    "saving the cache after the build",
                    generation,
                    now,
                );
                (Next::Soon, format!("{pushed}; saving the cache"))
            } else {
                let why = if read_write {
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
                effects.extend(release(o, done(build, &status, read_write, None, true)));
                (Next::Done, pushed.clone())
            };
            finish(
                &mut status,
                Phase::Succeeded,
                "Succeeded",
                &pushed,
                generation,
                now,
            );
            Ok(Decision::new(status, next).effects(effects).event(
                EventType::Normal,
                "Succeeded",
                note,
            ))
        }
        PodOutcome::Failed { reason, message } => {
            let released = release(o, done(build, &status, true, None, false));
            set_condition(
                &mut status,
                condition::BUILT,
                false,
                reason,
                message,
                generation,
                now,
            );
            finish(&mut status, Phase::Failed, reason, message, generation, now);
            Ok(Decision::new(status, Next::Done).effects(released).event(
                EventType::Warning,
                "BuildFailed",
                format!("{reason}: {message}"),
            ))
        }
        PodOutcome::NodeLost => {
            let effects = release(o, Release::Lost)
                .into_iter()
                .chain([Effect::DeletePod(pod.name_any())]);
            let node = placement.node.unwrap_or_default();
            let attempt = attempt(&status);
            // The cold attempt that followed a failed restore was not a node's loss: it does
            // not use up the retry (the bound stays: at most one such attempt is forgiven).
            let after_failed_restore = condition_of(&status, condition::CACHE_READY)
                .is_some_and(|c| c.reason == "RestoreFailed");
            if attempt - i32::from(after_failed_restore) >= MAX_ATTEMPTS {
                let message = format!("node {node} was lost during the build (attempt {attempt})");
                finish(
                    &mut status,
                    Phase::Failed,
                    "NodeLost",
                    &message,
                    generation,
                    now,
                );
                return Ok(Decision::new(status, Next::Done).effects(effects).event(
                    EventType::Warning,
                    "NodeLost",
                    message,
                ));
            }
            status.attempts = Some(attempt + 1);
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
            Ok(Decision::new(status, Next::Soon).effects(effects).event(
                EventType::Warning,
                "NodeLost",
                format!("node {node} lost; retrying"),
            ))
        }
    }
}

/// The builder pod of the current attempt, on the placement's volume and node.
fn builder_pod_for(o: &Observed, status: &ImageBuildStatus) -> Result<Pod> {
    let build = &o.build;
    let placement = status.placement.clone().unwrap_or_default();
    // Restored only in the Restoring phase (a failed restore's next attempt builds cold), and
    // only from a pinned snapshot (a placement made before pinning has no digest).
    let seed = match (&placement.restored_from, &placement.cache) {
        (Some(from), Some(cache)) if status.phase == Some(Phase::Restoring) => {
            from.manifest_sha256.as_ref().map(|pin| Seed {
                cache: snapshot_owner(from, cache),
                snapshot: from.snapshot.clone(),
                manifest_sha256: pin.clone(),
            })
        }
        _ => None,
    };
    let state = match (&placement.replica, seed) {
        (Some(pvc), Some(seed)) => StateVolume::Restored {
            pvc: pvc.clone(),
            seed,
        },
        (Some(pvc), None) => StateVolume::Replica(pvc.clone()),
        (None, seed) => StateVolume::Throwaway { seed },
    };
    let size = o
        .cache
        .as_ref()
        .map(|c| c.spec.storage.size.0.clone())
        .unwrap_or_else(|| o.config.cache.size.0.clone());
    let keep = o
        .cache
        .as_ref()
        .and_then(|c| c.spec.gc.keep_storage.as_ref())
        .and_then(|q| quantity::to_bytes(&q.0));
    let gc_keep_bytes = keep.or_else(|| quantity::to_bytes(&size).map(|b| b / 10 * 8));
    let inputs = BuilderInputs {
        attempt: attempt(status),
        state,
        pin: pin(status),
        gc_keep_bytes,
        // After a ReadWrite build, before the save: BuildKit's prune with the cache's gc settings.
        prune: gc_keep_bytes.map(
            |keep_bytes| crate::controller::builders::build_script::Prune {
                keep_duration: o
                    .cache
                    .as_ref()
                    .map(|c| c.spec.gc.keep_duration.into())
                    .unwrap_or_else(|| crate::api::CacheGcPolicy::default().keep_duration.into()),
                keep_bytes,
                deadline_unix: deadline(build).as_second(),
            },
        ),
        deadline_seconds: remaining_seconds(build, o.now),
        import_cache: placement.imported_from.clone(),
        owner: owner_ref(build)?,
    };
    let mut pod =
        builder_pod(build, &inputs, &o.config).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    if let Some(node) = &placement.node {
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(NODE_LABEL.into(), node.clone());
    }
    Ok(pod)
}

/// Follows the save after a build: a Succeeded build whose `Snapshotted` is `Unknown`, or one
/// left in the `Snapshotting` phase by an earlier version of the controller (finished here).
fn snapshotting(o: &Observed, mut status: ImageBuildStatus) -> Result<Decision> {
    let build = &o.build;
    let (now, generation) = (o.now, build.metadata.generation);
    let placement = status.placement.clone().unwrap_or_default();
    let (Some(pvc), Some(cache)) = (placement.replica.clone(), placement.cache.clone()) else {
        return Err(Error::Internal(
            "Snapshotting without a replica in status".into(),
        ));
    };
    let deadline = remaining_seconds(build, now).max(SAVE_MIN_SECONDS);
    let outcome = match &o.job {
        None => {
            let job = job_for(o, &status, &SnapshotOp::Save, &cache, pvc, deadline)?;
            return Ok(Decision::new(status, Next::Poll).effect(Effect::CreateJob(Box::new(job))));
        }
        Some(outcome) => outcome,
    };
    let pushed = pushed_message(build);
    let mut effects = Vec::new();
    let (reason, note) = match outcome {
        JobOutcome::Running => return Ok(Decision::new(status, Next::Poll)),
        JobOutcome::Succeeded { result, seconds } => {
            let record = result.as_deref().and_then(|r| saved_snapshot(r, now));
            if let Some(r) = &record {
                effects.push(Effect::Measure(Sample::Transfer(
                    "save",
                    r.new_bytes.max(0) as u64,
                )));
            }
            if let Some(s) = seconds {
                status
                    .durations
                    .get_or_insert_with(Durations::default)
                    .snapshot = Some(go_duration(*s));
                effects.push(Effect::Measure(Sample::Step("snapshot", *s)));
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
            effects.extend(release(
                o,
                done(build, &status, record.is_none(), record, true),
            ));
            succeeded_once(&mut status, &pushed, generation, now);
            ("Snapshotted", note)
        }
        JobOutcome::Failed { message } => {
            effects.push(Effect::Measure(Sample::StoreFailed("save")));
            // The image is pushed: the build succeeded; only the cache stays unsaved.
            set_condition(
                &mut status,
                condition::SNAPSHOTTED,
                false,
                "SaveFailed",
                message,
                generation,
                now,
            );
            effects.extend(release(o, done(build, &status, true, None, true)));
            succeeded_once(&mut status, &pushed, generation, now);
            status.message = Some(format!("{pushed}; the cache was not saved: {message}"));
            effects.push(Effect::SaveFailed {
                cache,
                message: message.clone(),
            });
            ("SaveFailed", message.clone())
        }
    };
    let type_ = if reason == "SaveFailed" {
        EventType::Warning
    } else {
        EventType::Normal
    };
    Ok(Decision::new(status, Next::Done)
        .effects(effects)
        .event(type_, reason, note))
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

/// The save Job for the build's replica.
fn job_for(
    o: &Observed,
    status: &ImageBuildStatus,
    op: &SnapshotOp,
    cache: &str,
    pvc: String,
    deadline_seconds: i64,
) -> Result<Job> {
    let build = &o.build;
    let inputs = SnapshotJobInputs {
        namespace: build.namespace().unwrap_or_default(),
        cache: cache.to_string(),
        build: build.name_any(),
        attempt: attempt(status),
        pvc,
        pin: pin(status),
        tolerations: build.spec.tolerations.clone(),
        deadline_seconds,
        owner: owner_ref(build)?,
    };
    Ok(snapshot_job(op, &inputs, &o.config))
}

/// What the image step did, for status and events.
fn pushed_message(build: &ImageBuild) -> String {
    if build.spec.output.push_by_digest {
        format!("pushed {} by digest", build.spec.output.repository())
    } else if build.spec.output.push {
        format!("pushed {}", build.spec.output.image)
    } else {
        "built (not pushed)".to_string()
    }
}

/// The build's cache key: as recorded at start, else derived from its spec.
pub(super) fn key_of(
    build: &ImageBuild,
    status: &ImageBuildStatus,
    config: &OperatorConfig,
) -> String {
    status
        .cache_key
        .clone()
        .unwrap_or_else(|| keys::cache_key(&build.spec, &config.builder.default_arch))
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

pub(super) fn created(build: &ImageBuild) -> Timestamp {
    build
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(super) fn deadline(build: &ImageBuild) -> Timestamp {
    let timeout: Duration = build.spec.timeout.into();
    created(build)
        .saturating_add(SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

pub(super) fn remaining_seconds(build: &ImageBuild, now: Timestamp) -> i64 {
    between(now, deadline(build)).ceil().max(1.0) as i64
}

#[path = "decide_clone.rs"]
pub mod clone;

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
