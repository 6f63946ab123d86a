//! The one condition setter of both kinds: a condition's `lastTransitionTime` moves only when
//! its status does, and its message is bounded (a log tail must not bloat the object).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Longest message kept in a condition.
pub const MESSAGE_LIMIT: usize = 1024;

/// `True`, `False` or `Unknown`, as Kubernetes conditions spell them.
pub fn status_word(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
}

/// Sets condition `type_` in `conditions` (`value` None is `Unknown`), keeping its
/// `lastTransitionTime` when its status did not change.
pub fn put(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: Option<bool>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let value = status_word(value);
    let since = match conditions.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let new = Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message: message.chars().take(MESSAGE_LIMIT).collect(),
        observed_generation: generation,
        last_transition_time: since,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// The condition of a type, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut c = Vec::new();
        put(&mut c, "A", Some(true), "R", "m", Some(1), t(10));
        put(&mut c, "A", Some(true), "R2", "m2", Some(2), t(20));
        assert_eq!(c[0].last_transition_time, Time(t(10)));
        assert_eq!(
            (c[0].reason.as_str(), c[0].observed_generation),
            ("R2", Some(2))
        );
        put(&mut c, "A", None, "R3", "", Some(2), t(30));
        assert_eq!(
            (c[0].status.as_str(), c[0].last_transition_time.clone()),
            ("Unknown", Time(t(30)))
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn messages_are_bounded() {
        let mut c = Vec::new();
        put(&mut c, "A", Some(false), "R", &"x".repeat(5000), None, t(1));
        assert_eq!(c[0].message.len(), MESSAGE_LIMIT);
    }
}
