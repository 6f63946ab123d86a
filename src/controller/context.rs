//! What every reconcile shares: the client, the operator config, the planner's tunables,
//! reflector stores of the cluster (nodes, volumes, Hearth's pods and claims, caches and
//! builds), metrics, the event reporter and an injected clock (tests set the time).

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;

use super::config::OperatorConfig;
use super::metrics::Metrics;
use super::slim::StoredBuild;
use crate::api::{BuildCache, Phase};
use crate::planner::PlannerConfig;

/// The clock reconcilers read; tests replace it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Read-only caches of the cluster the planner's view is built from.
#[derive(Clone)]
pub struct Stores {
    /// Nodes: names, zones, labels, taints, readiness, budget annotations.
    pub nodes: Store<Node>,
    /// PersistentVolumes: where a bound replica lives (node affinity or zone).
    pub volumes: Store<PersistentVolume>,
    /// Hearth's replica PVCs, one store per watched namespace (or one for all).
    pub claims: Vec<Store<PersistentVolumeClaim>>,
    /// Hearth's pods (builder slots in use per node), per watched namespace.
    pub pods: Vec<Store<Pod>>,
    /// BuildCaches of the watched namespaces (their replicas count against node budgets).
    pub caches: Vec<Store<BuildCache>>,
    /// ImageBuilds of the watched namespaces: the ImageBuild controllers' own stores, so
    /// BuildCache bookkeeping finds a replica's holder without a GET per holder (finished
    /// builds compact).
    pub builds: Vec<Store<StoredBuild>>,
}

impl Stores {
    /// Whether the build `namespace/name` exists (in the builds' reflector stores).
    pub fn has_build(&self, namespace: &str, name: &str) -> bool {
        let key = ObjectRef::new(name).within(namespace);
        self.builds.iter().any(|s| s.get(&key).is_some())
    }

    /// Whether the build `namespace/name` may still be cloning replica `pvc`: it is being
    /// placed, or its new replica is being cloned from `pvc`. A hold (`cloningFor`) of a build
    /// that is neither is left over and lifted by the BuildCache's bookkeeping.
    pub fn may_clone(&self, namespace: &str, name: &str, pvc: &str) -> bool {
        let key = ObjectRef::new(name).within(namespace);
        self.builds
            .iter()
            .filter_map(|s| s.get(&key))
            .any(|b| match b.as_ref() {
                super::slim::StoredBuild::Whole(build) => {
                    let status = build.status.clone().unwrap_or_default();
                    let from = status
                        .placement
                        .as_ref()
                        .and_then(|p| p.cloned_from.as_ref());
                    match status.phase {
                        Some(Phase::Placing) | None => true,
                        Some(Phase::Restoring) => from.is_some_and(|f| f.replica == pvc),
                        _ => false,
                    }
                }
                super::slim::StoredBuild::Finished(_) => false,
            })
    }
}

/// Shared state of the reconcilers.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Operator configuration.
    pub config: Arc<OperatorConfig>,
    /// Planner tunables.
    pub planner: PlannerConfig,
    /// Cluster caches.
    pub stores: Stores,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Kubernetes Events.
    pub recorder: Recorder,
    /// The time.
    pub clock: Clock,
    /// Wakes the retention sweep (a build ended, or a finished build changed).
    pub retention_wake: Arc<tokio::sync::Notify>,
}

impl Context {
    /// A context with the system clock.
    pub fn new(
        client: Client,
        config: OperatorConfig,
        stores: Stores,
        metrics: Arc<Metrics>,
        identity: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: "hearth-controller".into(),
            instance: Some(identity.to_string()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config: Arc::new(config),
            planner: PlannerConfig::default(),
            stores,
            metrics,
            clock: Arc::new(Timestamp::now),
            retention_wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Now, from the injected clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }
}
