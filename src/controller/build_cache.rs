//! The BuildCache reconciler's first duties: keep `status.replicas` true to the cluster.
//! An idle replica whose PVC or node is gone is marked `Lost` (it can never be used again
//! and no longer counts against `maxReplicas`); a claim whose holder build no longer exists
//! is released. Retention, GC, budgets and eviction are not here yet.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::info;

use super::claims::update_status;
use super::context::Context;
use super::error::{Error, Result};
use crate::api::{BuildCache, ImageBuild, ReplicaState};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "buildcache";

/// Reconciles one BuildCache.
pub async fn reconcile(cache: Arc<BuildCache>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile(CONTROLLER);
    let namespace = cache.namespace().unwrap_or_default();
    let name = cache.name_any();
    let Some(status) = &cache.status else {
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let claims: HashSet<String> = ctx
        .stores
        .claims
        .iter()
        .flat_map(|s| s.state())
        .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
        .map(|c| c.name_any())
        .collect();
    let nodes: HashSet<String> = ctx
        .stores
        .nodes
        .state()
        .iter()
        .map(|n| n.name_any())
        .collect();
    let builds: Api<ImageBuild> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut gone_holders = HashSet::new();
    for holder in status.replicas.iter().filter_map(|r| r.holder.clone()) {
        if builds.get_opt(&holder).await?.is_none() {
            gone_holders.insert(holder);
        }
    }
    let lost = |pvc: &str, node: Option<&str>| {
        !claims.contains(pvc) || node.is_some_and(|n| !nodes.contains(n))
    };
    let needs_change = status.replicas.iter().any(|r| {
        (r.state == ReplicaState::Idle && lost(&r.pvc, r.node.as_deref()))
            || r.holder.as_ref().is_some_and(|h| gone_holders.contains(h))
    });
    if needs_change {
        let result = update_status(&ctx, &namespace, &name, |status, _| {
            for r in &mut status.replicas {
                if r.holder.as_ref().is_some_and(|h| gone_holders.contains(h)) {
                    info!(cache = %name, pvc = %r.pvc, holder = ?r.holder, "releasing a claim whose build is gone");
                    r.holder = None;
                    r.state = ReplicaState::Idle;
                    r.snapshot_id = None;
                }
                if r.state == ReplicaState::Idle && lost(&r.pvc, r.node.as_deref()) {
                    info!(cache = %name, pvc = %r.pvc, "replica lost: its PVC or node is gone");
                    r.state = ReplicaState::Lost;
                }
            }
            true
        })
        .await;
        match result {
            Err(Error::ClaimConflict(_)) => return Ok(Action::requeue(Duration::from_secs(1))),
            other => {
                other?;
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Backs off on errors.
pub fn error_policy(_cache: Arc<BuildCache>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.category());
    Action::requeue(Duration::from_secs(10))
}
