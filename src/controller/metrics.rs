//! Prometheus metrics of the controller. Every label set is bounded: controller names,
//! error categories, warmth, outcome and step names; never an object name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `imagebuild` or `buildcache`.
    pub controller: String,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `imagebuild` or `buildcache`.
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

/// The controller's metrics and their registry.
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Reconciles started.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconcile errors by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Finished builds by warmth and outcome.
    pub builds: Family<BuildLabels, Counter>,
    /// Seconds spent in each step of a build.
    pub step_seconds: Family<StepLabels, Histogram>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors by category",
            errors.clone(),
        );
        let builds = Family::<BuildLabels, Counter>::default();
        registry.register(
            "builds",
            "Finished builds by cache warmth and outcome",
            builds.clone(),
        );
        let step_seconds = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 14))
        });
        registry.register(
            "build_step_duration_seconds",
            "Time builds spend queued, restoring, building and snapshotting",
            step_seconds.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this controller replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            builds,
            step_seconds,
            leader,
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

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
