//! What a key's history learns from each finished build, and what the planner reads from it.
//! Pure: [`record`] folds one build into a BuildCache's `status.history` (exponentially
//! weighted averages of build seconds by how the build started, the cache's size, the gap
//! between submissions; the throughput of restores into the cache); [`stats`] turns a history
//! into the planner's [`KeyStats`], falling back field by field to the planner's defaults, and
//! [`store_throughput`] the restores' figures of every cache into the store's.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{ImageBuildStatus, KeyHistory, Warmth};
use crate::planner::KeyStats;

/// Weight of the newest build in every moving average (the older history keeps the rest).
/// 0.3 follows a Dockerfile that changes within three or four builds, yet one odd build
/// (a slow registry, a noisy neighbour) moves a figure by less than a third of its error.
/// The CRD description of `KeyHistory` states this value.
pub const SMOOTHING: f64 = 0.3;

/// What cache a build started from, as far as its build time goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The key's own cache: a hot replica, or a snapshot of the key restored first.
    Warm,
    /// A snapshot of one of the build's restore keys.
    Fallback,
    /// No cache.
    Cold,
}

impl Start {
    /// How a build started: `warmth` from its placement, `restored_from` the key whose
    /// snapshot (or cloned replica) seeded it. `None` when the placement does not say (nothing is learned).
    pub fn of(warmth: Option<Warmth>, key: &str, restored_from: Option<&str>) -> Option<Start> {
        match (warmth?, restored_from) {
            (Warmth::Hot, _) => Some(Start::Warm),
            (Warmth::Cold, _) => Some(Start::Cold),
            (Warmth::Restored, Some(from)) if from == key => Some(Start::Warm),
            (Warmth::Restored, Some(_)) => Some(Start::Fallback),
            (Warmth::Restored, None) => None,
        }
    }
}

/// The facts of one finished build that the history learns from.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedBuild {
    /// Only successful builds are learned from: a failure's time says nothing about the cache.
    pub succeeded: bool,
    /// What cache it started from.
    pub start: Option<Start>,
    /// Seconds of the build step (buildkitd: build and push).
    pub build_seconds: Option<f64>,
    /// When it was submitted (its `creationTimestamp`).
    pub submitted: Timestamp,
    /// Size of the cache after it, when a snapshot save measured it.
    pub cache_bytes: Option<i64>,
}

impl FinishedBuild {
    /// The facts of a build from its status (placement, cache key, durations). The cache
    /// size is left to the caller, who knows whether a save measured it.
    pub fn of(status: &ImageBuildStatus, submitted: Timestamp, succeeded: bool) -> Self {
        let placement = status.placement.as_ref();
        let start = Start::of(
            placement.and_then(|p| p.warmth),
            status.cache_key.as_deref().unwrap_or_default(),
            // A clone seeds a build as a restore of the same key would.
            placement.and_then(|p| {
                p.restored_from
                    .as_ref()
                    .map(|r| r.key.as_str())
                    .or_else(|| p.cloned_from.as_ref().map(|c| c.key.as_str()))
            }),
        );
        let build_seconds = status
            .durations
            .as_ref()
            .and_then(|d| d.build.as_deref())
            .and_then(|s| s.parse::<kube::core::Duration>().ok())
            .map(|d| std::time::Duration::from(d).as_secs_f64());
        FinishedBuild {
            succeeded,
            start,
            build_seconds,
            submitted,
            cache_bytes: None,
        }
    }
}

/// Folds one finished build into a key's history. Failed builds change nothing. The caller
/// makes sure a build is folded in once (the replica claim it releases).
pub fn record(history: &mut Option<KeyHistory>, build: &FinishedBuild) {
    if !build.succeeded {
        return;
    }
    let h = history.get_or_insert_with(KeyHistory::default);
    h.builds += 1;
    if let (Some(start), Some(seconds)) = (build.start, build.build_seconds) {
        let figure = match start {
            Start::Warm => &mut h.warm_seconds,
            Start::Fallback => &mut h.fallback_seconds,
            Start::Cold => &mut h.cold_seconds,
        };
        average(figure, seconds);
    }
    if let Some(bytes) = build.cache_bytes.filter(|b| *b >= 0) {
        h.cache_bytes = Some(bytes);
    }
    // Builds finish out of order: only a build submitted after the newest one counted adds a
    // gap, so no gap is ever negative.
    let last = h.last_build_at.as_ref().map(|t| t.0);
    match last {
        Some(last) if build.submitted <= last => {}
        _ => {
            if let Some(last) = last {
                average(
                    &mut h.mean_gap_seconds,
                    seconds_between(last, build.submitted),
                );
            }
            h.last_build_at = Some(Time(build.submitted));
        }
    }
}

/// Restores of fewer bytes say more about fixed costs (the manifest, the first pack's round
/// trip) than about throughput: they are not learned from.
pub const MIN_RESTORE_SAMPLE_BYTES: u64 = 64 << 20;

/// Folds one successful restore into the cache's history: `bytes` written in `seconds` (as
/// `hearth snapshot restore --json` reported them). Whether it was counted.
pub fn record_restore(history: &mut Option<KeyHistory>, bytes: u64, seconds: f64) -> bool {
    if bytes < MIN_RESTORE_SAMPLE_BYTES || !seconds.is_finite() || seconds <= 0.0 {
        return false;
    }
    let h = history.get_or_insert_with(KeyHistory::default);
    average(&mut h.restore_bytes_per_second, bytes as f64 / seconds);
    true
}

/// The store's restore throughput, bytes per second: the mean of what the caches' histories
/// learned from restores, or `configured` while none has a figure. The figures live in
/// BuildCache status, so a restarted controller (or a new leader) starts from them, not from
/// the constant.
pub fn store_throughput<'a>(
    histories: impl IntoIterator<Item = &'a KeyHistory>,
    configured: f64,
) -> f64 {
    let (sum, n) = histories
        .into_iter()
        .filter_map(|h| h.restore_bytes_per_second)
        .filter(|b| b.is_finite() && *b > 0.0)
        .fold((0.0, 0u32), |(sum, n), b| (sum + b, n + 1));
    if n == 0 {
        configured
    } else {
        sum / f64::from(n)
    }
}

/// Exponentially weighted moving average; the first sample is taken as it is. Samples that
/// are not finite non-negative numbers are ignored.
fn average(figure: &mut Option<f64>, sample: f64) {
    if !sample.is_finite() || sample < 0.0 {
        return;
    }
    *figure = Some(match *figure {
        Some(old) => SMOOTHING * sample + (1.0 - SMOOTHING) * old,
        None => sample,
    });
}

fn seconds_between(start: Timestamp, end: Timestamp) -> f64 {
    (end.as_millisecond() - start.as_millisecond()) as f64 / 1000.0
}

/// What the planner reads about a key: measured figures where the history has them, the
/// planner's defaults elsewhere. When only one of the warm and cold figures is measured, the
/// other is scaled from it by the defaults' ratio (a measured 30 s cold build must not be
/// compared with a default 60 s warm one). `builds_per_hour` comes from the mean gap between
/// submissions, or from the time since the last one when that is longer (a key no longer
/// built loses its value), and stays the default until two builds were counted.
pub fn stats(history: &KeyHistory, defaults: &KeyStats, now: Timestamp) -> KeyStats {
    // Warm over cold, in (0, 1]: defaults that make no sense scale nothing.
    let ratio = defaults.warm_seconds / defaults.cold_seconds;
    let ratio = if ratio.is_finite() && ratio > 0.0 {
        ratio.min(1.0)
    } else {
        1.0
    };
    let (warm, cold) = match (history.warm_seconds, history.cold_seconds) {
        (Some(w), Some(c)) => (w, c),
        (Some(w), None) => (w, w / ratio),
        (None, Some(c)) => (c * ratio, c),
        (None, None) => (defaults.warm_seconds, defaults.cold_seconds),
    };
    let builds_per_hour = match (history.mean_gap_seconds, &history.last_build_at) {
        (Some(gap), Some(last)) => {
            let since = seconds_between(last.0, now);
            3600.0 / gap.max(since).max(1.0)
        }
        (Some(gap), None) => 3600.0 / gap.max(1.0),
        _ => defaults.builds_per_hour,
    };
    KeyStats {
        cold_seconds: cold,
        warm_seconds: warm,
        fallback_seconds: history.fallback_seconds.or(defaults.fallback_seconds),
        cache_bytes: history
            .cache_bytes
            .map(|b| b.max(0) as u64)
            .unwrap_or(defaults.cache_bytes),
        builds_per_hour,
        builds: history.builds.clamp(0, i64::from(u32::MAX)) as u32,
    }
}

#[cfg(test)]
#[path = "key_history_tests.rs"]
mod tests;
