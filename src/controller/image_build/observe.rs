//! Gathers what the decision needs about one build, and nothing more ([`wanted`] says what):
//! its BuildCache, builder pod (and its restore init container) and children read fresh from
//! the API (claims and stops must not act on a stale view), nodes and replicas from the
//! reflector stores, the planner's choice from the view those stores give, and one clock
//! reading.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::decide::clone::failed_before;
use super::decide::{
    key_of, wanted, Children, CloneClaim, Observed, Planned, PlannedAction, Victim,
};
use super::fanout::ParentObserved;
use crate::api::{BuildCache, ImageBuild, Phase};
use crate::controller::builders::labels;
use crate::controller::builders::platform_builds::{child_build_name, index_job_name};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::job_runner::read_job;
use crate::controller::outcome::{pod_outcome, restore_step};
use crate::controller::replica_table::cache_name;
use crate::controller::view::{
    build_request, clone_target, pod_unfinished, seconds, view_from_stores, View,
};
use crate::planner::{self, Action as Plan};

/// Observes `build` (as read) now.
pub async fn observe(build: &ImageBuild, ctx: &Context) -> Result<Observed> {
    let now = ctx.now();
    let want = wanted(build, now, &ctx.config);
    let namespace = build.namespace().unwrap_or_default();
    let cache = match &want.cache {
        Some(name) => {
            Api::<BuildCache>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(name)
                .await?
        }
        None => None,
    };
    let plan = if want.plan {
        Some(plan(build, ctx, now)?)
    } else {
        None
    };
    let (pod, restore) = match &want.pod {
        Some(name) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let nodes = ctx.stores.nodes.state();
            let exists = |n: &str| nodes.iter().any(|node| node.name_any() == n);
            match pods.get_opt(name).await? {
                Some(pod) => (Some(pod_outcome(&pod, exists)), restore_step(&pod)),
                None => (None, None),
            }
        }
        None => (None, None),
    };
    let job = match &want.job {
        Some(name) => read_job(ctx, &namespace, name).await?,
        None => None,
    };
    let clone = match &want.clone {
        Some(pvc) => clone_claim(ctx, &namespace, pvc).await?,
        None => None,
    };
    let holds_claim = want.claim && holds_claim(build, ctx);
    let children = if want.children || holds_claim {
        Some(children(build, ctx).await?)
    } else {
        None
    };
    Ok(Observed {
        build: build.clone(),
        now,
        config: ctx.config.clone(),
        cache,
        pod,
        restore,
        job,
        plan,
        holds_claim,
        children,
        clone,
    })
}

/// Observes a build of several platforms built natively (`build.spec.fans_out()`): each
/// platform's child ImageBuild by its name, read fresh (whoever owns it), and the index Job
/// once every child has succeeded. Nothing for a parent that has ended.
pub async fn observe_parent(build: &ImageBuild, ctx: &Context) -> Result<ParentObserved> {
    let now = ctx.now();
    let mut observed = ParentObserved {
        build: build.clone(),
        now,
        config: ctx.config.clone(),
        children: Vec::new(),
        index: None,
    };
    let ended = build
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_terminal);
    if ended {
        return Ok(observed);
    }
    let namespace = build.namespace().unwrap_or_default();
    let name = build.name_any();
    let builds: Api<ImageBuild> = Api::namespaced(ctx.client.clone(), &namespace);
    for platform in &build.spec.platforms {
        if let Some(child) = builds.get_opt(&child_build_name(&name, platform)).await? {
            observed.children.push(child);
        }
    }
    let all_succeeded = observed.children.len() == build.spec.platforms.len()
        && observed
            .children
            .iter()
            .all(|c| c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded));
    if all_succeeded && build.spec.output.push {
        observed.index = read_job(ctx, &namespace, &index_job_name(&name)).await?;
    }
    Ok(observed)
}

/// A clone's PVC read fresh, with the provisioner's last `ProvisioningFailed` Event on it
/// (Kubernetes says a clone was refused only in Events).
async fn clone_claim(ctx: &Context, namespace: &str, pvc: &str) -> Result<Option<CloneClaim>> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(claim) = claims.get_opt(pvc).await? else {
        return Ok(None);
    };
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let failure = if bound {
        None
    } else {
        let events: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
        let fields = format!(
            "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={pvc},reason=ProvisioningFailed"
        );
        let listed = events.list(&ListParams::default().fields(&fields)).await?;
        // Only the events about this very claim (not an earlier one of the same name).
        let uid = claim.metadata.uid.clone();
        listed
            .items
            .into_iter()
            .filter(|e| e.involved_object.uid.is_none() || e.involved_object.uid == uid)
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
            .and_then(|e| e.message)
    };
    Ok(Some(CloneClaim {
        bound,
        created: claim.metadata.creation_timestamp.map(|t| t.0),
        failure,
    }))
}

/// The planner's choice for the build at `now` (the one clock reading the decision also
/// uses), on the view the reflector stores give.
fn plan(build: &ImageBuild, ctx: &Context, now: Timestamp) -> Result<Planned> {
    let key = key_of(
        build,
        &build.status.clone().unwrap_or_default(),
        &ctx.config,
    );
    let mut request = build_request(build, &key, &ctx.config);
    // A clone only into a replica of the build's own cache, never again after one failed.
    if request.mode == crate::api::CacheMode::ReadWrite && !failed_before(build) {
        let name = cache_name(&key, build.spec.cache.cache_ref.as_deref());
        let own = ObjectRef::new(&name).within(&request.namespace);
        let cache = ctx.stores.caches.iter().find_map(|s| s.get(&own));
        request.clone_into = clone_target(cache.as_deref(), &ctx.config);
    }
    let namespace = build.namespace().unwrap_or_default();
    if request.clone_into.is_some() {
        if let Some(resumed) = held_clone(ctx, &namespace, &build.name_any()) {
            return Ok(resumed);
        }
    }
    // Built only when the planner is asked: a resumed clone needs no view.
    let view = view_from_stores(&ctx.stores, &ctx.config, &ctx.planner, now);
    let decision = planner::plan(&view.cluster, &request, seconds(now), &ctx.planner)
        .map_err(|e| Error::Internal(format!("planner: {e}")))?;
    let action = named(&view, &namespace, decision.action)?;
    let evictions = decision
        .evictions
        .iter()
        .filter_map(|id| view.replicas.get(id))
        .map(|r| Victim {
            namespace: r.namespace.clone(),
            cache: r.cache.clone(),
            pvc: r.pvc.clone(),
        })
        .collect();
    Ok(Planned {
        reason: decision.reason.to_string(),
        registry_seed: decision.reason.seeds_from_registry(),
        warmth: decision.warmth,
        wait_seconds: decision.estimate.wait,
        evictions,
        action,
    })
}

/// The clone a placement of `build` started when the status recording it was lost (its write
/// conflicted, or the controller stopped in between): the replica held for it (`cloningFor`)
/// in a cache of its namespace. That clone is made again as it was (holding, adding and
/// creating the PVC are idempotent for the build) rather than planned afresh: the planner
/// sees the source held and the build's own replica busy, so it would wait for them, or
/// restore into the cloned volume, which is not empty. `None` for a zonal source, whose
/// node the status does not say (planned afresh, as before).
fn held_clone(ctx: &Context, namespace: &str, build: &str) -> Option<Planned> {
    ctx.stores
        .caches
        .iter()
        .flat_map(|s| s.state())
        .filter(|c| c.namespace().as_deref() == Some(namespace))
        .find_map(|c| {
            let status = c.status.as_ref()?;
            let r = status
                .replicas
                .iter()
                .find(|r| r.cloning_for.as_deref() == Some(build))?;
            Some(Planned {
                reason: format!(
                    "clone of replica {} made earlier (its placement was not recorded)",
                    r.pvc
                ),
                registry_seed: false,
                warmth: crate::api::Warmth::Restored,
                wait_seconds: 0.0,
                evictions: Vec::new(),
                action: PlannedAction::Clone {
                    node: r.node.clone()?,
                    key: c.spec.key.clone(),
                    cache: c.name_any(),
                    pvc: r.pvc.clone(),
                    snapshot: r.snapshot_id.clone(),
                    bytes: r.size_bytes.unwrap_or(0).max(0) as u64,
                },
            })
        })
}

/// The planner's action with its ids turned into names.
fn named(view: &View, namespace: &str, action: Plan) -> Result<PlannedAction> {
    let node_name = |id| view.cluster.node(id).name.clone();
    Ok(match action {
        Plan::Queue | Plan::WaitForReplica { .. } | Plan::WaitForSlot { .. } => PlannedAction::Wait,
        Plan::UseReplica { replica, node } => {
            let r = view
                .replicas
                .get(&replica)
                .ok_or_else(|| Error::Internal("the planner chose an unknown replica".into()))?;
            PlannedAction::UseReplica {
                namespace: r.namespace.clone(),
                cache: r.cache.clone(),
                pvc: r.pvc.clone(),
                node: node_name(node),
            }
        }
        Plan::Restore {
            node,
            source,
            throwaway,
        } => {
            let key = view.cluster.key(source.key).key.clone();
            let found = view
                .snapshot_caches
                .get(&(namespace.to_string(), key.clone()));
            PlannedAction::Restore {
                node: node_name(node),
                source_cache: found.map(|s| s.cache.clone()),
                manifest_sha256: found.map(|s| s.manifest_sha256.clone()),
                key,
                snapshot: source.snapshot.clone(),
                bytes: source.bytes,
                throwaway,
            }
        }
        Plan::Clone {
            node, source, key, ..
        } => {
            let r = view
                .replicas
                .get(&source)
                .ok_or_else(|| Error::Internal("the planner chose an unknown replica".into()))?;
            PlannedAction::Clone {
                node: node_name(node),
                key: view.cluster.key(key).key.clone(),
                cache: r.cache.clone(),
                pvc: r.pvc.clone(),
                snapshot: r.snapshot_id.clone(),
                bytes: view.cluster.replica(source).map_or(0, |x| x.size_bytes),
            }
        }
        Plan::Cold { node, throwaway } => PlannedAction::Cold {
            node: node_name(node),
            throwaway,
        },
    })
}

/// Whether the build still holds a replica in its BuildCache (one lookup in the reflector
/// store: a finished build at rest must not cost a walk over every cache).
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
    let key = ObjectRef::new(&cache).within(&namespace.unwrap_or_default());
    ctx.stores
        .caches
        .iter()
        .filter_map(|s| s.get(&key))
        .any(|c| {
            c.status
                .iter()
                .flat_map(|s| &s.replicas)
                .any(|r| r.holder.as_deref() == Some(name.as_str()))
        })
}

/// The build's Jobs and pods, all attempts, listed fresh.
async fn children(build: &ImageBuild, ctx: &Context) -> Result<Children> {
    let namespace = build.namespace().unwrap_or_default();
    let selector = format!("{}={}", labels::BUILD, build.name_any());
    let lp = ListParams::default().labels(&selector);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs = jobs.list(&lp).await?.items;
    let pods = pods.list(&lp).await?.items;
    Ok(Children {
        jobs: jobs.iter().map(|j| j.name_any()).collect(),
        pods: pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect(),
        unfinished: pods.iter().filter(|p| pod_unfinished(p)).count(),
    })
}
