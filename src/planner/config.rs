//! The planner's tunables, with the defaults the controller and the simulator start from.

use super::view::{KeyStats, Seconds};

/// Tunables of the planner.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannerConfig {
    /// History assumed for a key that has none.
    pub default_stats: KeyStats,
    /// How far ahead an evicted replica is expected to be missed.
    pub horizon_seconds: Seconds,
    /// Weight of the slots a placement takes from keys with idle replicas on the node.
    pub slot_weight: f64,
    /// Least expected saving for a background restore to be worth starting.
    pub prewarm_min_seconds: Seconds,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            default_stats: KeyStats {
                cold_seconds: 600.0,
                warm_seconds: 60.0,
                fallback_seconds: None,
                cache_bytes: 4_000_000_000,
                builds_per_hour: 1.0,
                builds: 0,
            },
            horizon_seconds: 3600.0,
            slot_weight: 1.0,
            prewarm_min_seconds: 2.0,
        }
    }
}
