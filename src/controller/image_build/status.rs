//! Pure status transitions of an ImageBuild: conditions (with transition times kept when the
//! status does not change), phase changes, terminal outcomes, durations as Go strings, and
//! the comparison that skips no-op writes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::common::condition;
use crate::api::{ImageBuildStatus, Phase};

/// Sets a condition, keeping its `lastTransitionTime` when its status did not change.
pub fn set_condition(
    status: &mut ImageBuildStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let value = if value { "True" } else { "False" };
    put_condition(status, type_, value, reason, message, generation, now);
}

/// Sets a condition to `Unknown`: under way, not yet decided (a save after the build).
pub fn set_condition_unknown(
    status: &mut ImageBuildStatus,
    type_: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    put_condition(status, type_, "Unknown", reason, message, generation, now);
}

/// A Succeeded build whose snapshot is still being saved (`Snapshotted=Unknown`).
pub fn saving(status: &ImageBuildStatus) -> bool {
    status.phase == Some(Phase::Succeeded)
        && condition_of(status, condition::SNAPSHOTTED).is_some_and(|c| c.status == "Unknown")
}

fn put_condition(
    status: &mut ImageBuildStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let previous = status.conditions.iter().find(|c| c.type_ == type_);
    let since = match previous {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let new = Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: since,
    };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = new,
        None => status.conditions.push(new),
    }
    status.conditions.sort_by_key(|c| {
        condition::ALL
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(usize::MAX)
    });
}

/// The condition of a type, if set.
pub fn condition_of<'a>(status: &'a ImageBuildStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// Ends the build: phase, completion time, message, and `Succeeded` set at once so that
/// `kubectl wait` and pipelines learn about a failure without waiting for a timeout.
pub fn finish(
    status: &mut ImageBuildStatus,
    phase: Phase,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.phase = Some(phase);
    status.completion_time = Some(Time(now));
    status.message = Some(message.to_string());
    set_condition(
        status,
        condition::SUCCEEDED,
        phase == Phase::Succeeded,
        reason,
        message,
        generation,
        now,
    );
}

/// A Go-style duration (`1m2.5s`) for status.
pub fn go_duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    let hours = (seconds / 3600.0).floor();
    let minutes = ((seconds - hours * 3600.0) / 60.0).floor();
    let secs = seconds - hours * 3600.0 - minutes * 60.0;
    let secs = format!("{secs:.1}");
    let secs = secs.trim_end_matches(".0");
    match (hours as u64, minutes as u64) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// Seconds between two times.
pub fn between(start: Timestamp, end: Timestamp) -> f64 {
    (end.as_millisecond() - start.as_millisecond()) as f64 / 1000.0
}

/// True when two statuses differ in more than condition timestamps (a write is needed).
pub fn differs(old: &ImageBuildStatus, new: &ImageBuildStatus) -> bool {
    let strip = |s: &ImageBuildStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn conditions_keep_their_transition_time_until_they_change() {
        let mut s = ImageBuildStatus::default();
        set_condition(
            &mut s,
            condition::PLACED,
            true,
            "Hot",
            "on n1",
            Some(1),
            t(10),
        );
        set_condition(
            &mut s,
            condition::PLACED,
            true,
            "Hot",
            "still on n1",
            Some(1),
            t(20),
        );
        assert_eq!(
            condition_of(&s, condition::PLACED)
                .unwrap()
                .last_transition_time,
            Time(t(10))
        );
        set_condition(
            &mut s,
            condition::PLACED,
            false,
            "Lost",
            "node gone",
            Some(1),
            t(30),
        );
        assert_eq!(
            condition_of(&s, condition::PLACED)
                .unwrap()
                .last_transition_time,
            Time(t(30))
        );
        set_condition(
            &mut s,
            condition::SUCCEEDED,
            false,
            "Failed",
            "x",
            Some(1),
            t(30),
        );
        set_condition(
            &mut s,
            condition::CACHE_READY,
            true,
            "Hot",
            "",
            Some(1),
            t(30),
        );
        let order: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(order, ["Placed", "CacheReady", "Succeeded"]);
    }

    #[test]
    fn failure_sets_succeeded_false_at_once() {
        let mut s = ImageBuildStatus::default();
        finish(
            &mut s,
            Phase::Failed,
            "BuildFailed",
            "exit 1",
            Some(2),
            t(5),
        );
        let c = condition_of(&s, condition::SUCCEEDED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "BuildFailed")
        );
        assert_eq!(s.completion_time, Some(Time(t(5))));
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(3.25), "3.2s");
        assert_eq!(go_duration(62.0), "1m2s");
        assert_eq!(go_duration(3723.5), "1h2m3.5s");
    }

    #[test]
    fn timestamp_only_changes_are_not_writes() {
        let mut a = ImageBuildStatus::default();
        set_condition(&mut a, condition::PLACED, true, "Hot", "", None, t(1));
        let mut b = a.clone();
        b.conditions[0].last_transition_time = Time(t(99));
        assert!(!differs(&a, &b));
        b.message = Some("x".into());
        assert!(differs(&a, &b));
    }
}
