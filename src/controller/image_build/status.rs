//! Pure status transitions of an ImageBuild: its conditions (through the one condition
//! setter, in a fixed order), the save in progress, and terminal outcomes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::controller::conditions;

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
    put_condition(status, type_, Some(value), reason, message, generation, now);
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
    put_condition(status, type_, None, reason, message, generation, now);
}

/// A Succeeded build whose snapshot is still being saved (`Snapshotted=Unknown`).
pub fn saving(status: &ImageBuildStatus) -> bool {
    status.phase == Some(Phase::Succeeded)
        && condition_of(status, condition::SNAPSHOTTED).is_some_and(|c| c.status == "Unknown")
}

fn put_condition(
    status: &mut ImageBuildStatus,
    type_: &str,
    value: Option<bool>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    conditions::put(
        &mut status.conditions,
        type_,
        value,
        reason,
        message,
        generation,
        now,
    );
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
}
