//! Times and durations as status shows them: seconds between two instants, and Go-style
//! durations (`1m2.5s`) as Kubernetes users read them.

use jiff::Timestamp;

/// Seconds between two times.
pub fn between(start: Timestamp, end: Timestamp) -> f64 {
    (end.as_millisecond() - start.as_millisecond()) as f64 / 1000.0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(3.25), "3.2s");
        assert_eq!(go_duration(62.0), "1m2s");
        assert_eq!(go_duration(3723.5), "1h2m3.5s");
    }

    #[test]
    fn between_counts_milliseconds() {
        let a = Timestamp::from_millisecond(1_000).unwrap();
        let b = Timestamp::from_millisecond(3_500).unwrap();
        assert_eq!(between(a, b), 2.5);
        assert_eq!(between(b, a), -2.5);
    }
}
