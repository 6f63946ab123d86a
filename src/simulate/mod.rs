//! `hearth simulate`: a deterministic, seeded discrete-event simulation that replays a workload
//! of builds against a model cluster under four placement strategies (`cold`,
//! `registry-cache`, `sticky-hash`, `hearth`) with one cost model, and compares them with the
//! `bound` no strategy can beat.
//!
//! - [`workload`]: the JSON Lines format and its parser;
//! - [`builtin`]: the built-in workloads (`config/workloads/*.jsonl`);
//! - [`engine`]: the event loop, slots and books;
//! - [`pool`], [`sticky`], [`hearth`]: the strategies;
//! - [`report`]: summaries, the bound, table and JSON;
//! - [`cli`]: the subcommand.

pub mod builtin;
pub mod cli;
pub mod engine;
pub mod hearth;
pub mod pool;
pub mod report;
pub mod sticky;
pub mod workload;

use crate::planner::{PlanError, PlannerConfig};

pub use report::{Bound, Report, StrategyReport};
use report::{Trace, STRATEGIES};
pub use workload::{parse, Workload, WorkloadError};

/// What can go wrong in a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The workload could not be read.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The planner refused its input.
    #[error("planner: {0}")]
    Planner(#[from] PlanError),
    /// Neither a built-in name nor a readable file.
    #[error("workload `{name}`: not a built-in ({builtins}) and not a readable file: {source}")]
    NotFound {
        /// What was asked for.
        name: String,
        /// The built-in names.
        builtins: String,
        /// Why the file could not be read.
        source: std::io::Error,
    },
}

/// Options of one simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Seed of the build-time noise.
    pub seed: u64,
    /// Spread of real build times around the workload's (log-normal sigma); 0 for none.
    pub jitter: f64,
    /// The planner's tunables for the `hearth` strategy.
    pub planner: PlannerConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            jitter: 0.1,
            planner: PlannerConfig::default(),
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Per build, the factor its real build time differs from the nominal one: log-normal with
/// spread `jitter`, a pure function of the seed and the build's index (so every strategy sees
/// the same noise).
pub fn factors(builds: usize, seed: u64, jitter: f64) -> Vec<f64> {
    (0..builds as u64)
        .map(|i| {
            let a = splitmix(seed ^ splitmix(i.wrapping_mul(2)));
            let b = splitmix(seed ^ splitmix(i.wrapping_mul(2) + 1));
            let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (jitter * z).clamp(-3.0 * jitter, 3.0 * jitter).exp()
        })
        .collect()
}

/// Replays `workload` under every strategy.
pub fn simulate(name: &str, workload: &Workload, opts: &Options) -> Result<Report, SimError> {
    Ok(simulate_traced(name, workload, opts)?.0)
}

/// Replays `workload` under every strategy and also returns every build's outcome per
/// strategy (in report order) and its time under the bound.
pub fn simulate_traced(
    name: &str,
    workload: &Workload,
    opts: &Options,
) -> Result<(Report, Trace), SimError> {
    let factors = factors(workload.builds.len(), opts.seed, opts.jitter);
    let mut strategies = Vec::new();
    let mut outcomes = Vec::new();
    for name in STRATEGIES {
        let (row, out) = match name {
            "cold" => row(name, workload, &factors, &mut pool::Pool::cold()),
            "registry-cache" => row(name, workload, &factors, &mut pool::Pool::registry()),
            "sticky-hash" => row(
                name,
                workload,
                &factors,
                &mut sticky::Sticky::new(workload.cluster.nodes.len()),
            ),
            _ => {
                let mut h = hearth::Hearth::new(workload, opts.planner.clone());
                let r = row(name, workload, &factors, &mut h);
                if let Some(e) = h.error {
                    return Err(e.into());
                }
                r
            }
        };
        strategies.push(row);
        outcomes.push(out);
    }
    let bound = report::bound_seconds(workload, &factors);
    let report = Report {
        workload: name.to_string(),
        bound: report::bound(workload, &factors, &bound),
        strategies,
    };
    Ok((report, Trace { outcomes, bound }))
}

fn row(
    name: &str,
    workload: &Workload,
    factors: &[f64],
    strategy: &mut dyn engine::Strategy,
) -> (StrategyReport, Vec<engine::Outcome>) {
    let (outcomes, bytes, evictions) = engine::run(workload, factors, strategy);
    (
        report::summarise(name, &outcomes, bytes, evictions),
        outcomes,
    )
}
