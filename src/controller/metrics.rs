//! Prometheus metrics of the controller. Every label set is bounded: controller names,
//! error categories, warmth, outcome and step names; never an object name.

use std::future::Future;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `imagebuild`, `buildcache` or `customrun` (the Tekton custom task, when enabled).
    pub controller: String,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `imagebuild`, `buildcache` or `customrun`.
    pub controller: String,
    /// Error category (see `Error::category`).
    pub category: String,
}

/// Labels of finished builds.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// `Hot`, `Restored`, `Cold` or `None` (failed before placement).
    pub warmth: String,
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub outcome: String,
}

/// Labels of step durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// `queued`, `restore`, `build` or `snapshot`.
    pub step: String,
}

/// Labels of per-node cache gauges. Node names are bounded by the cluster's size.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Node name.
    pub node: String,
}

/// Labels of replica gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaStateLabels {
    /// `Idle`, `InUse`, `Restoring`, `Snapshotting` or `Lost`.
    pub state: String,
}

/// Labels of eviction counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    /// `Room` (the planner made room for a new replica), `Budget` (node over its cache
    /// budget), `IdleTtl` (unused past `gc.idleTtl`) or `MaxReplicas` (more replicas than the
    /// cache allows).
    pub reason: String,
}

/// Labels of store transfer counters and store error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    /// `save`, `restore`, `gc` or `forget`.
    pub op: String,
}

/// Labels of per-namespace cache use. Namespaces are bounded by the watched set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceWarmthLabels {
    /// Namespace of the build.
    pub namespace: String,
    /// `Hot`, `Restored` or `Cold`.
    pub warmth: String,
}

/// Labels of retention deletions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetentionLabels {
    /// `ttl` (past its TTL) or `limit` (beyond the namespace's history limit).
    pub reason: String,
    /// `Succeeded` or `Failed` (Failed and Cancelled builds).
    pub outcome: String,
}

/// Labels of per-namespace gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// Namespace.
    pub namespace: String,
}

/// The controller's metrics and their registry.
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Every registered family: its exposed base name and kind.
    families: Vec<(String, Kind)>,
    /// Reconciles started.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconcile errors by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Seconds each reconcile took, by controller.
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    /// Finished builds by warmth and outcome.
    pub builds: Family<BuildLabels, Counter>,
    /// Seconds spent in each step of a build.
    pub step_seconds: Family<StepLabels, Histogram>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// Bytes of cache replicas on each node (every namespace).
    pub node_bytes: Family<NodeLabels, Gauge>,
    /// Cache budget of each node in bytes.
    pub node_budget_bytes: Family<NodeLabels, Gauge>,
    /// Replicas by state, every cache.
    pub replicas: Family<ReplicaStateLabels, Gauge>,
    /// Idle replicas whose state is not in any snapshot, per namespace.
    pub unsaved_replicas: Family<NamespaceLabels, Gauge>,
    /// Replicas evicted (PVC deleted), by reason.
    pub evictions: Family<EvictionLabels, Counter>,
    /// Bytes moved to or from the store: `save` counts new bytes uploaded, `restore` the
    /// bytes of the restored tree.
    pub store_bytes: Family<StoreOpLabels, Counter>,
    /// Store operations (Jobs) that failed, by operation.
    pub store_errors: Family<StoreOpLabels, Counter>,
    /// Cache uses of finished builds by namespace and warmth (hit ratio by namespace).
    pub cache_uses: Family<NamespaceWarmthLabels, Counter>,
    /// Finished ImageBuilds deleted by retention, by reason and outcome.
    pub retention_deletions: Family<RetentionLabels, Counter>,
}

/// Kind of a registered family, for [`Metrics::exposed_names`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn register(
    registry: &mut Registry,
    families: &mut Vec<(String, Kind)>,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
    kind: Kind,
) {
    registry.register(name, help, metric);
    families.push((format!("hearth_{name}"), kind));
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let mut families = Vec::new();
        let reconciles = Family::<ControllerLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "reconciles",
            "Reconciles started",
            reconciles.clone(),
            Kind::Counter,
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "reconcile_errors",
            "Reconcile errors by category",
            errors.clone(),
            Kind::Counter,
        );
        // 1 ms to 8 s: a reconcile at rest reads caches only (well under 1 ms); one that
        // writes waits for the API (tens of ms); seconds mean a slow API or a stuck step.
        let reconcile_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        register(
            &mut registry,
            &mut families,
            "reconcile_duration_seconds",
            "Time each reconcile took, by controller",
            reconcile_seconds.clone(),
            Kind::Histogram,
        );
        let builds = Family::<BuildLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "builds",
            "Finished builds by cache warmth and outcome",
            builds.clone(),
            Kind::Counter,
        );
        let step_seconds = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 14))
        });
        register(
            &mut registry,
            &mut families,
            "build_step_duration_seconds",
            "Time builds spend queued, restoring, building and snapshotting",
            step_seconds.clone(),
            Kind::Histogram,
        );
        let leader = Gauge::default();
        register(
            &mut registry,
            &mut families,
            "leader",
            "1 while this controller replica holds the leader lease",
            leader.clone(),
            Kind::Gauge,
        );
        let node_bytes = Family::<NodeLabels, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "cache_node_bytes",
            "Bytes of cache replicas on each node, every namespace",
            node_bytes.clone(),
            Kind::Gauge,
        );
        let node_budget_bytes = Family::<NodeLabels, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "cache_node_budget_bytes",
            "Cache budget of each node in bytes (operator config or node annotation)",
            node_budget_bytes.clone(),
            Kind::Gauge,
        );
        let replicas = Family::<ReplicaStateLabels, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "cache_replicas",
            "Cache replicas by state",
            replicas.clone(),
            Kind::Gauge,
        );
        let unsaved_replicas = Family::<NamespaceLabels, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "cache_unsaved_replicas",
            "Idle replicas whose latest state is in no snapshot, per namespace",
            unsaved_replicas.clone(),
            Kind::Gauge,
        );
        let evictions = Family::<EvictionLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "cache_evictions",
            "Replicas evicted (their PVC deleted) by reason",
            evictions.clone(),
            Kind::Counter,
        );
        let store_bytes = Family::<StoreOpLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "store_bytes",
            "Bytes saved to (new bytes) or restored from the snapshot store",
            store_bytes.clone(),
            Kind::Counter,
        );
        let store_errors = Family::<StoreOpLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "store_errors",
            "Snapshot store operations that failed, by operation",
            store_errors.clone(),
            Kind::Counter,
        );
        let cache_uses = Family::<NamespaceWarmthLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "cache_uses",
            "Cache use of finished builds by namespace and warmth (Hot, Restored, Cold)",
            cache_uses.clone(),
            Kind::Counter,
        );
        let retention_deletions = Family::<RetentionLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "retention_deletions",
            "Finished ImageBuilds deleted by retention, by reason (ttl, limit) and outcome",
            retention_deletions.clone(),
            Kind::Counter,
        );
        Metrics {
            registry,
            families,
            reconciles,
            errors,
            reconcile_seconds,
            builds,
            step_seconds,
            leader,
            node_bytes,
            node_budget_bytes,
            replicas,
            unsaved_replicas,
            evictions,
            store_bytes,
            store_errors,
            cache_uses,
            retention_deletions,
        }
    }
}

impl Metrics {
    /// Counts a reconcile.
    pub fn reconcile(&self, controller: &str) {
        self.reconciles
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .inc();
    }

    /// Runs one reconcile of `controller` and records how long it took, whatever it returns.
    pub async fn timed<F: Future>(&self, controller: &str, reconcile: F) -> F::Output {
        let start = Instant::now();
        let out = reconcile.await;
        self.reconcile_seconds
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .observe(start.elapsed().as_secs_f64());
        out
    }

    /// Counts an error.
    pub fn error(&self, controller: &str, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                category: category.into(),
            })
            .inc();
    }

    /// Counts a finished build.
    pub fn build_finished(&self, warmth: &str, outcome: &str) {
        self.builds
            .get_or_create(&BuildLabels {
                warmth: warmth.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records a step's duration.
    pub fn step(&self, step: &str, seconds: f64) {
        self.step_seconds
            .get_or_create(&StepLabels { step: step.into() })
            .observe(seconds.max(0.0));
    }

    /// Counts an eviction.
    pub fn evicted(&self, reason: &str) {
        self.evictions
            .get_or_create(&EvictionLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts bytes moved by a store operation.
    pub fn store_transfer(&self, op: &str, bytes: u64) {
        self.store_bytes
            .get_or_create(&StoreOpLabels { op: op.into() })
            .inc_by(bytes);
    }

    /// Counts a failed store operation.
    pub fn store_failed(&self, op: &str) {
        self.store_errors
            .get_or_create(&StoreOpLabels { op: op.into() })
            .inc();
    }

    /// Counts the cache use of a finished build.
    pub fn cache_used(&self, namespace: &str, warmth: &str) {
        self.cache_uses
            .get_or_create(&NamespaceWarmthLabels {
                namespace: namespace.into(),
                warmth: warmth.into(),
            })
            .inc();
    }

    /// Names of every metric family as exposed (`hearth_` prefix, counters with `_total`),
    /// for dashboards and alert rules to be checked against.
    pub fn exposed_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (name, kind) in &self.families {
            match kind {
                Kind::Counter => names.push(format!("{name}_total")),
                Kind::Histogram => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.push(format!("{name}{suffix}"));
                    }
                }
                Kind::Gauge => names.push(name.clone()),
            }
        }
        names
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Label values of the counters whose label sets are known in advance.
const BUILD_WARMTHS: [&str; 4] = ["Hot", "Restored", "Cold", "None"];
const BUILD_OUTCOMES: [&str; 3] = ["Succeeded", "Failed", "Cancelled"];
const STORE_OPS: [&str; 5] = ["save", "restore", "gc", "forget", "prewarm"];
const EVICTION_REASONS: [&str; 4] = ["Room", "Budget", "IdleTtl", "MaxReplicas"];
const CONTROLLERS: [&str; 2] = ["imagebuild", "buildcache"];

impl Metrics {
    /// Exposes every counter series whose labels are known in advance at 0, so the first
    /// build, store error or eviction after a start is a visible increase: `rate()` and
    /// `increase()` miss the first sample of a series that appears with the value 1, and the
    /// alerts (store errors, build failure ratio) would miss it. Called once at start.
    pub fn zero_known_series(&self) {
        for controller in CONTROLLERS {
            let labels = ControllerLabels {
                controller: controller.into(),
            };
            let _ = self.reconciles.get_or_create(&labels);
            let _ = self.reconcile_seconds.get_or_create(&labels);
        }
        for warmth in BUILD_WARMTHS {
            for outcome in BUILD_OUTCOMES {
                let _ = self.builds.get_or_create(&BuildLabels {
                    warmth: warmth.into(),
                    outcome: outcome.into(),
                });
            }
        }
        for op in STORE_OPS {
            let _ = self
                .store_errors
                .get_or_create(&StoreOpLabels { op: op.into() });
        }
        for op in ["save", "restore"] {
            let _ = self
                .store_bytes
                .get_or_create(&StoreOpLabels { op: op.into() });
        }
        for reason in EVICTION_REASONS {
            let _ = self.evictions.get_or_create(&EvictionLabels {
                reason: reason.into(),
            });
        }
        for reason in ["ttl", "limit"] {
            for outcome in ["Succeeded", "Failed"] {
                let _ = self.retention_deletions.get_or_create(&RetentionLabels {
                    reason: reason.into(),
                    outcome: outcome.into(),
                });
            }
        }
    }

    /// Counts a build deleted by retention.
    pub fn retention_deleted(&self, reason: &str, outcome: &str) {
        self.retention_deletions
            .get_or_create(&RetentionLabels {
                reason: reason.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_names_list_every_family_even_before_first_use() {
        let names = Metrics::default().exposed_names();
        for name in [
            "hearth_reconciles_total",
            "hearth_reconcile_duration_seconds_bucket",
            "hearth_builds_total",
            "hearth_build_step_duration_seconds_bucket",
            "hearth_leader",
            "hearth_cache_node_bytes",
            "hearth_cache_node_budget_bytes",
            "hearth_cache_replicas",
            "hearth_cache_unsaved_replicas",
            "hearth_cache_evictions_total",
            "hearth_store_bytes_total",
            "hearth_store_errors_total",
            "hearth_cache_uses_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
    }

    #[test]
    fn known_series_start_at_zero() {
        let m = Metrics::default();
        m.zero_known_series();
        let text = m.encode();
        for series in [
            r#"hearth_builds_total{warmth="Restored",outcome="Failed"} 0"#,
            r#"hearth_store_errors_total{op="save"} 0"#,
            r#"hearth_cache_evictions_total{reason="Budget"} 0"#,
            r#"hearth_reconciles_total{controller="buildcache"} 0"#,
            r#"hearth_retention_deletions_total{reason="limit",outcome="Failed"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn exposition_names_every_metric_with_bounded_labels() {
        let m = Metrics::default();
        m.reconcile("imagebuild");
        m.error("imagebuild", "kube");
        m.build_finished("Hot", "Succeeded");
        m.step("build", 12.0);
        let text = m.encode();
        for name in [
            "hearth_reconciles_total",
            "hearth_reconcile_errors_total",
            "hearth_builds_total",
            "hearth_build_step_duration_seconds_bucket",
            "hearth_leader",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(
            text.contains(r#"hearth_builds_total{warmth="Hot",outcome="Succeeded"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn timed_reconciles_are_counted_per_controller() {
        let m = Metrics::default();
        let out = m.timed("buildcache", async { 7 }).await;
        assert_eq!(out, 7);
        let text = m.encode();
        assert!(
            text.contains(r#"hearth_reconcile_duration_seconds_count{controller="buildcache"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"hearth_reconcile_duration_seconds_bucket{le="0.001",controller="buildcache"} 1"#
            ),
            "{text}"
        );
    }
}
