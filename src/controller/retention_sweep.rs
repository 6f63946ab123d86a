//! Deletes finished ImageBuilds as [`retention`](super::retention) decides, namespace by
//! namespace, from the builds' and caches' reflector stores (no API read). Each deletion is
//! made on the uid and resourceVersion read, so a build changed meanwhile (its `retention`
//! extended) is not deleted blindly; the build's finalizer then stops its pods and releases
//! anything it holds, and the garbage collector removes what it owns. One Event and one log
//! line per deletion, counted in `hearth_retention_deletions_total`.
//!
//! It runs while this replica leads: once at start, then at the next build's due time, or
//! when a reconcile of a finished build wakes it ([`Context::retention_wake`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{debug, info, warn};

use super::context::Context;
use super::durations::{between, go_duration};
use super::error::is_status;
use super::events;
use super::retention::{self, Deletion, Why};
use crate::api::ImageBuild;

/// A burst of builds ending (or a controller start, which reconciles every build) makes one
/// sweep: after a wake, wait this long for more.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// Longest time between two sweeps, whatever is due: a safety net, not the schedule.
pub const MAX_IDLE: Duration = Duration::from_secs(3600);
/// Most deletions one sweep makes; the rest wait [`BATCH_PAUSE`]. The first sweep after an
/// upgrade that turns retention on may find thousands of builds due: deleting them all at once
/// (each a DELETE, an Event and a finalizer's cleanup) would flood the API server.
pub const BATCH: usize = 50;
/// Pause between two batches of deletions.
pub const BATCH_PAUSE: Duration = Duration::from_secs(2);
/// After a deletion the API failed (not a 404 or a changed build), look again this soon.
pub const RETRY: Duration = Duration::from_secs(30);

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Swept {
    /// Builds deleted (`namespace/name`).
    pub deleted: Vec<String>,
    /// When the next kept build falls due.
    pub next: Option<Timestamp>,
}

/// One sweep of every watched namespace at the context's `now`, at most [`BATCH`] deletions.
pub async fn sweep(ctx: &Context) -> Swept {
    sweep_at_most(ctx, BATCH).await
}

/// One sweep deleting at most `batch` builds; with more due, the next look is
/// [`BATCH_PAUSE`] away.
pub async fn sweep_at_most(ctx: &Context, batch: usize) -> Swept {
    let now = ctx.now();
    let policy = &ctx.config.retention;
    let mut held: HashMap<String, HashSet<String>> = HashMap::new();
    for cache in ctx.stores.caches.iter().flat_map(|s| s.state()) {
        let holders = held
            .entry(cache.namespace().unwrap_or_default())
            .or_default();
        let replicas = cache.status.iter().flat_map(|s| &s.replicas);
        holders.extend(replicas.filter_map(|r| r.holder.clone()));
    }
    // A parent whose child is still under way (or saving its cache) is held as a build holding
    // a replica is: deleting it would take the child with it.
    for stored in ctx.stores.builds.iter().flat_map(|s| s.state()) {
        if let (None, Some(parent)) = (
            stored.finished(),
            retention::parent_of(kube::Resource::meta(stored.as_ref())),
        ) {
            held.entry(stored.namespace().unwrap_or_default())
                .or_default()
                .insert(parent.to_string());
        }
    }
    let none = HashSet::new();
    let mut by_namespace: BTreeMap<String, Vec<retention::Finished>> = BTreeMap::new();
    for stored in ctx.stores.builds.iter().flat_map(|s| s.state()) {
        let namespace = stored.namespace().unwrap_or_default();
        let holders = held.get(&namespace).unwrap_or(&none);
        if let Some(f) = retention::finished(&stored, holders) {
            by_namespace.entry(namespace).or_default().push(f);
        }
    }
    let mut swept = Swept::default();
    let considered: usize = by_namespace.values().map(Vec::len).sum();
    let mut attempts = 0;
    for (namespace, builds) in by_namespace {
        let plan = retention::plan(&builds, policy, now);
        swept.next = earliest(swept.next, plan.next);
        for deletion in plan.delete {
            if attempts == batch {
                swept.next = earliest(swept.next, Some(retention::after(now, BATCH_PAUSE)));
                break;
            }
            attempts += 1;
            match delete(ctx, &namespace, &deletion, now).await {
                Some(true) => swept
                    .deleted
                    .push(format!("{namespace}/{}", deletion.build.name)),
                Some(false) => {}
                // The API refused or failed: try again shortly, not at the next due time.
                None => swept.next = earliest(swept.next, Some(retention::after(now, RETRY))),
            }
        }
    }
    debug!(considered, deleted = swept.deleted.len(), next = ?swept.next, "retention: swept");
    swept
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Deletes one build on its uid and resourceVersion: `Some(true)` when this call deleted it,
/// `Some(false)` when it was gone or changed since it was read, `None` when the API failed.
async fn delete(ctx: &Context, namespace: &str, d: &Deletion, now: Timestamp) -> Option<bool> {
    let b = &d.build;
    let api: Api<ImageBuild> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: b.uid.clone(),
            resource_version: b.resource_version.clone(),
        }),
        ..DeleteParams::background()
    };
    match api.delete(&b.name, &params).await {
        Ok(_) => {}
        // Gone already, or changed since it was read (a watch event brings the new version
        // and the next sweep decides again).
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => {
            debug!(build = %b.name, %namespace, error = %e, "retention: not deleted");
            return Some(false);
        }
        Err(e) => {
            warn!(build = %b.name, %namespace, error = %e, "retention: deleting a finished build");
            return None;
        }
    }
    let outcome = b.outcome.as_str();
    let age = go_duration(between(b.completed, now));
    let note = match d.why {
        Why::Ttl => format!("deleted {age} after it ended ({outcome}): past its retention TTL"),
        Why::Limit => format!(
            "deleted {age} after it ended ({outcome}): beyond the namespace's history limit of {} builds",
            match b.outcome {
                retention::Outcome::Succeeded => "succeeded",
                retention::Outcome::Failed => "failed",
            }
        ),
    };
    info!(build = %b.name, %namespace, reason = d.why.as_str(), outcome, %age, "retention: deleted a finished build");
    ctx.metrics.retention_deleted(d.why.as_str(), outcome);
    let mut about = ImageBuild::new(&b.name, Default::default());
    about.metadata.namespace = Some(namespace.to_string());
    about.metadata.uid = b.uid.clone();
    let reason = match d.why {
        Why::Ttl => "Expired",
        Why::Limit => "HistoryLimit",
    };
    events::publish(ctx, &about, EventType::Normal, reason, note).await;
    Some(true)
}

/// Sweeps until `stop` turns true: once the builds' stores are synced (the caches' stores
/// are synced before the controller leads), then at the next due time (at most [`MAX_IDLE`]
/// later) or shortly after a wake. Poll it in the task that runs the ImageBuild controllers
/// (see `run`): a kube `Store` wakes only one task of those awaiting its readiness.
pub async fn run(ctx: Arc<Context>, mut stop: tokio::sync::watch::Receiver<bool>) {
    for store in &ctx.stores.builds {
        tokio::select! {
            ready = store.wait_until_ready() => if ready.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    let policy = &ctx.config.retention;
    info!(?policy, "retention: sweeping finished builds");
    loop {
        let swept = sweep(&ctx).await;
        let wait = swept
            .next
            .map(|t| {
                t.duration_since(ctx.now())
                    .max(SignedDuration::ZERO)
                    .unsigned_abs()
            })
            .unwrap_or(MAX_IDLE)
            .min(MAX_IDLE);
        let woken = tokio::select! {
            _ = ctx.retention_wake.notified() => true,
            _ = tokio::time::sleep(wait) => false,
            _ = stop.wait_for(|s| *s) => return,
        };
        if woken {
            tokio::select! {
                _ = tokio::time::sleep(DEBOUNCE) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
