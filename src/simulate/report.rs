//! Turning outcomes into the comparison: per strategy the builds, hot / restored / cold
//! counts, mean, p50 and p95 of submit-to-finish time, store bytes read and evictions; the
//! `bound` (every build served by the best cache that exists at its submit time, with no
//! queueing and free restores); the table and the `--json` document.

use std::collections::HashMap;
use std::fmt::Write;

use serde::Serialize;

use crate::api::{CacheMode, Warmth};

use super::engine::Outcome;
use super::workload::Workload;

/// Names of the strategies, in report order.
pub const STRATEGIES: [&str; 4] = ["cold", "registry-cache", "sticky-hash", "hearth"];

/// Every build's outcome under every strategy, for `hearth simulate --trace`.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Per strategy (in [`STRATEGIES`] order), the outcome of every build that finished.
    pub outcomes: Vec<Vec<Outcome>>,
    /// Per build, its time under the bound.
    pub bound: Vec<f64>,
}

/// One strategy's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyReport {
    /// Strategy name.
    pub name: String,
    /// Builds that finished.
    pub builds: usize,
    /// Builds that found their own key's cache in place.
    pub hot: usize,
    /// Builds seeded from elsewhere: a restore, a registry import, or a restore key's cache.
    pub restored: usize,
    /// Builds with no cache.
    pub cold: usize,
    /// Mean seconds from submit to finish.
    pub mean_seconds: f64,
    /// Median.
    pub p50_seconds: f64,
    /// 95th percentile.
    pub p95_seconds: f64,
    /// Bytes read from the store or registry.
    pub store_bytes_read: u64,
    /// Replicas or cache entries evicted for room.
    pub evictions: u64,
}

/// The lower bound no strategy can beat.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bound {
    /// Mean seconds if every build were served by the best cache that exists for it at
    /// submit time, with no queueing and free restores.
    pub mean_seconds: f64,
    /// The same builds run on the cluster's builder slots in submit order (free restores,
    /// any live node): how much of every strategy's time is queueing the slots impose.
    pub with_slots_mean_seconds: f64,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Workload name or path.
    pub workload: String,
    /// The bound.
    pub bound: Bound,
    /// One row per strategy.
    pub strategies: Vec<StrategyReport>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Summarises one strategy's outcomes.
pub fn summarise(
    name: &str,
    outcomes: &[Outcome],
    store_bytes_read: f64,
    evictions: u64,
) -> StrategyReport {
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort_by(f64::total_cmp);
    let count = |w: Warmth| outcomes.iter().filter(|o| o.warmth == w).count();
    let mean = mean(&latencies);
    StrategyReport {
        name: name.to_string(),
        builds: outcomes.len(),
        hot: count(Warmth::Hot),
        restored: count(Warmth::Restored),
        cold: count(Warmth::Cold),
        mean_seconds: mean,
        p50_seconds: percentile(&latencies, 50.0),
        p95_seconds: percentile(&latencies, 95.0),
        store_bytes_read: store_bytes_read as u64,
        evictions,
    }
}

/// The bound: a key's cache exists from the earliest time a `ReadWrite` build of it would
/// finish if it never queued; each build then takes the best build time that cache allows.
/// `seconds` are the builds' times under it ([`bound_seconds`]).
pub fn bound(workload: &Workload, factors: &[f64], seconds: &[f64]) -> Bound {
    let perfect = &mut super::pool::Pool::perfect(seconds.to_vec());
    let (outcomes, _, _) = super::engine::run(workload, factors, perfect);
    let latencies: Vec<f64> = outcomes.iter().map(|o| o.latency).collect();
    Bound {
        mean_seconds: mean(seconds),
        with_slots_mean_seconds: mean(&latencies),
    }
}

/// The mean, 0 for no values.
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Per build, its time under the bound.
pub fn bound_seconds(workload: &Workload, factors: &[f64]) -> Vec<f64> {
    let mut ready: HashMap<(&str, &str), f64> = HashMap::new();
    let mut out = Vec::with_capacity(workload.builds.len());
    for (i, b) in workload.builds.iter().enumerate() {
        let exists = |key: &str| {
            ready
                .get(&(b.namespace.as_str(), key))
                .is_some_and(|t| *t <= b.at)
        };
        let nominal = if b.mode == CacheMode::Disabled {
            b.cold_seconds
        } else if exists(&b.key) {
            b.warm_seconds
        } else if b.restore_keys.iter().any(|k| exists(k)) {
            b.fallback()
        } else {
            b.cold_seconds
        };
        let seconds = nominal * factors[i];
        out.push(seconds);
        if b.mode == CacheMode::ReadWrite {
            let t = ready
                .entry((b.namespace.as_str(), b.key.as_str()))
                .or_insert(f64::INFINITY);
            *t = t.min(b.at + seconds);
        }
    }
    out
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e12 {
        format!("{:.2} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{b:.0} B")
    }
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "workload: {}", report.workload);
    let _ = writeln!(
        out,
        "{:<15} {:>7} {:>7} {:>8} {:>7} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "strategy",
        "builds",
        "hot",
        "restored",
        "cold",
        "mean s",
        "p50 s",
        "p95 s",
        "store read",
        "evictions"
    );
    for s in &report.strategies {
        let _ = writeln!(
            out,
            "{:<15} {:>7} {:>7} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>11} {:>9}",
            s.name,
            s.builds,
            s.hot,
            s.restored,
            s.cold,
            s.mean_seconds,
            s.p50_seconds,
            s.p95_seconds,
            human_bytes(s.store_bytes_read),
            s.evictions
        );
    }
    let _ = writeln!(out, "{:<15} {:>51.1}", "bound", report.bound.mean_seconds);
    let _ = writeln!(
        out,
        "{:<15} {:>51.1}",
        "bound+slots", report.bound.with_slots_mean_seconds
    );
    out
}

/// One line of `hearth simulate --trace`: how one build went under one strategy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceLine<'w> {
    /// Strategy name.
    pub strategy: &'static str,
    /// Line of the build record in the workload.
    pub line: usize,
    /// Submit time.
    pub at: f64,
    /// Namespace.
    pub namespace: &'w str,
    /// Cache key.
    pub key: &'w str,
    /// `Hot`, `Restored` or `Cold`.
    pub warmth: Warmth,
    /// Node it last started on.
    pub node: &'w str,
    /// Seconds from submit to its last start.
    pub queued_seconds: f64,
    /// Seconds from submit to finish.
    pub seconds: f64,
    /// Its time under the bound.
    pub bound_seconds: f64,
}

/// Writes the trace as JSON Lines: one line per build and strategy, strategies in report
/// order, builds in submit order.
pub fn write_trace(
    out: &mut dyn std::io::Write,
    workload: &Workload,
    trace: &Trace,
) -> std::io::Result<()> {
    for (strategy, outcomes) in STRATEGIES.iter().zip(&trace.outcomes) {
        for o in outcomes {
            let b = &workload.builds[o.build];
            let line = TraceLine {
                strategy,
                line: b.line,
                at: b.at,
                namespace: &b.namespace,
                key: &b.key,
                warmth: o.warmth,
                node: &workload.cluster.nodes[o.node].name,
                queued_seconds: round1(o.queued),
                seconds: round1(o.latency),
                bound_seconds: round1(trace.bound[o.build]),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
