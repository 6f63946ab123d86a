//! The history update rule and the stats the planner reads, one fact at a time.

use super::*;
use crate::api::{Durations, Placement, RestoredFrom};
use crate::planner::PlannerConfig;

const T0: i64 = 1_800_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).unwrap()
}

fn ok(start: Start, seconds: f64, submitted: i64) -> FinishedBuild {
    FinishedBuild {
        succeeded: true,
        start: Some(start),
        build_seconds: Some(seconds),
        submitted: at(submitted),
        cache_bytes: None,
    }
}

fn defaults() -> KeyStats {
    PlannerConfig::default().default_stats
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn first_sample_is_taken_as_it_is_then_averaged_with_the_smoothing_weight() {
    let mut h = None;
    record(&mut h, &ok(Start::Warm, 100.0, 0));
    assert!(close(h.as_ref().unwrap().warm_seconds, 100.0));
    record(&mut h, &ok(Start::Warm, 200.0, 60));
    let expected = SMOOTHING * 200.0 + (1.0 - SMOOTHING) * 100.0;
    assert!(close(h.as_ref().unwrap().warm_seconds, expected), "{h:?}");
    assert!((expected - 130.0).abs() < 1e-9, "the documented 0.3");
    assert_eq!(h.unwrap().builds, 2);
}

#[test]
fn each_start_feeds_its_own_figure() {
    let mut h = None;
    record(&mut h, &ok(Start::Cold, 600.0, 0));
    record(&mut h, &ok(Start::Fallback, 200.0, 10));
    record(&mut h, &ok(Start::Warm, 50.0, 20));
    let h = h.unwrap();
    assert!(close(h.cold_seconds, 600.0));
    assert!(close(h.fallback_seconds, 200.0));
    assert!(close(h.warm_seconds, 50.0));
    assert_eq!(h.builds, 3);
}

#[test]
fn a_restore_is_warm_from_the_key_itself_and_fallback_from_a_restore_key() {
    let key = "shop:feature";
    assert_eq!(Start::of(Some(Warmth::Hot), key, None), Some(Start::Warm));
    assert_eq!(Start::of(Some(Warmth::Cold), key, None), Some(Start::Cold));
    assert_eq!(
        Start::of(Some(Warmth::Restored), key, Some("shop:feature")),
        Some(Start::Warm)
    );
    assert_eq!(
        Start::of(Some(Warmth::Restored), key, Some("shop:main")),
        Some(Start::Fallback)
    );
    assert_eq!(Start::of(Some(Warmth::Restored), key, None), None);
    assert_eq!(Start::of(None, key, None), None);
}

#[test]
fn facts_are_read_from_the_build_status() {
    let status = ImageBuildStatus {
        cache_key: Some("shop:feature".into()),
        placement: Some(Placement {
            warmth: Some(Warmth::Restored),
            restored_from: Some(RestoredFrom {
                key: "shop:main".into(),
                snapshot: "s1".into(),
                cache: Some("shop-main".into()),
                manifest_sha256: None,
            }),
            ..Placement::default()
        }),
        durations: Some(Durations {
            build: Some("1m2.5s".into()),
            ..Durations::default()
        }),
        ..ImageBuildStatus::default()
    };
    let b = FinishedBuild::of(&status, at(5), true);
    assert_eq!(b.start, Some(Start::Fallback));
    assert!(close(b.build_seconds, 62.5));
    assert_eq!(
        (b.submitted, b.succeeded, b.cache_bytes),
        (at(5), true, None)
    );
}

#[test]
fn failed_builds_change_nothing() {
    let mut h = None;
    let failed = FinishedBuild {
        succeeded: false,
        cache_bytes: Some(10),
        ..ok(Start::Warm, 5.0, 0)
    };
    record(&mut h, &failed);
    assert_eq!(h, None);
    record(&mut h, &ok(Start::Warm, 100.0, 0));
    let before = h.clone();
    record(
        &mut h,
        &FinishedBuild {
            submitted: at(100),
            ..failed
        },
    );
    assert_eq!(h, before);
}

#[test]
fn a_build_with_unknown_time_or_start_is_counted_but_moves_no_figure() {
    let mut h = None;
    record(
        &mut h,
        &FinishedBuild {
            build_seconds: None,
            ..ok(Start::Warm, 0.0, 0)
        },
    );
    record(
        &mut h,
        &FinishedBuild {
            start: None,
            ..ok(Start::Warm, 90.0, 10)
        },
    );
    record(&mut h, &ok(Start::Cold, f64::NAN, 20));
    record(&mut h, &ok(Start::Cold, -3.0, 30));
    let h = h.unwrap();
    assert_eq!(h.builds, 4);
    assert_eq!((h.warm_seconds, h.cold_seconds), (None, None));
}

#[test]
fn gaps_between_submissions_are_averaged_and_never_negative() {
    let mut h = None;
    record(&mut h, &ok(Start::Cold, 1.0, 0));
    assert_eq!(
        h.as_ref().unwrap().mean_gap_seconds,
        None,
        "one build, no gap"
    );
    record(&mut h, &ok(Start::Warm, 1.0, 600));
    assert!(close(h.as_ref().unwrap().mean_gap_seconds, 600.0));
    // A build submitted earlier that finishes later adds no gap and keeps the newest time.
    record(&mut h, &ok(Start::Warm, 1.0, 300));
    assert!(close(h.as_ref().unwrap().mean_gap_seconds, 600.0));
    assert_eq!(h.as_ref().unwrap().last_build_at, Some(Time(at(600))));
    record(&mut h, &ok(Start::Warm, 1.0, 900));
    let expected = SMOOTHING * 300.0 + (1.0 - SMOOTHING) * 600.0;
    assert!(close(h.as_ref().unwrap().mean_gap_seconds, expected));
    assert_eq!(h.unwrap().builds, 4);
}

#[test]
fn cache_size_is_the_last_measured_one() {
    let mut h = None;
    record(
        &mut h,
        &FinishedBuild {
            cache_bytes: Some(5 << 30),
            ..ok(Start::Cold, 1.0, 0)
        },
    );
    record(&mut h, &ok(Start::Warm, 1.0, 10));
    assert_eq!(h.as_ref().unwrap().cache_bytes, Some(5 << 30), "kept");
    record(
        &mut h,
        &FinishedBuild {
            cache_bytes: Some(2 << 30),
            ..ok(Start::Warm, 1.0, 20)
        },
    );
    assert_eq!(h.unwrap().cache_bytes, Some(2 << 30));
}

#[test]
fn stats_use_what_was_measured_and_defaults_for_the_rest() {
    let d = defaults();
    let empty = stats(&KeyHistory::default(), &d, at(0));
    assert_eq!(empty, d, "nothing measured: the defaults");

    let h = KeyHistory {
        builds: 3,
        warm_seconds: Some(20.0),
        cold_seconds: Some(300.0),
        fallback_seconds: Some(90.0),
        cache_bytes: Some(1 << 30),
        mean_gap_seconds: Some(600.0),
        last_build_at: Some(Time(at(0))),
        restore_bytes_per_second: None,
    };
    let s = stats(&h, &d, at(60));
    assert_eq!(
        s,
        KeyStats {
            cold_seconds: 300.0,
            warm_seconds: 20.0,
            fallback_seconds: Some(90.0),
            cache_bytes: 1 << 30,
            builds_per_hour: 6.0,
            builds: 3,
        }
    );
}

#[test]
fn one_measured_speed_scales_the_other_by_the_defaults_ratio() {
    let d = defaults();
    let ratio = d.warm_seconds / d.cold_seconds;
    let cold_only = KeyHistory {
        cold_seconds: Some(30.0),
        ..KeyHistory::default()
    };
    let s = stats(&cold_only, &d, at(0));
    assert!((s.warm_seconds - 30.0 * ratio).abs() < 1e-9, "{s:?}");
    assert!(s.warm_seconds < s.cold_seconds);
    let warm_only = KeyHistory {
        warm_seconds: Some(12.0),
        ..KeyHistory::default()
    };
    let s = stats(&warm_only, &d, at(0));
    assert!((s.cold_seconds - 12.0 / ratio).abs() < 1e-9, "{s:?}");
}

#[test]
fn a_key_no_longer_built_loses_its_rate() {
    let d = defaults();
    let h = KeyHistory {
        mean_gap_seconds: Some(60.0),
        last_build_at: Some(Time(at(0))),
        ..KeyHistory::default()
    };
    assert!((stats(&h, &d, at(30)).builds_per_hour - 60.0).abs() < 1e-9);
    assert!((stats(&h, &d, at(7200)).builds_per_hour - 0.5).abs() < 1e-9);
    let one_build = KeyHistory {
        last_build_at: Some(Time(at(0))),
        ..KeyHistory::default()
    };
    assert_eq!(
        stats(&one_build, &d, at(30)).builds_per_hour,
        d.builds_per_hour
    );
}

#[test]
fn restores_teach_the_cache_their_throughput_but_small_ones_do_not() {
    let mut h = None;
    assert!(!record_restore(&mut h, MIN_RESTORE_SAMPLE_BYTES - 1, 0.1));
    assert!(!record_restore(&mut h, 1 << 30, 0.0), "no time, no rate");
    assert!(!record_restore(&mut h, 1 << 30, f64::NAN));
    assert_eq!(h, None, "nothing learned");
    assert!(record_restore(&mut h, 1_000_000_000, 10.0));
    assert!(close(h.as_ref().unwrap().restore_bytes_per_second, 1e8));
    assert!(record_restore(&mut h, 2_000_000_000, 10.0));
    let expected = SMOOTHING * 2e8 + (1.0 - SMOOTHING) * 1e8;
    assert!(
        close(h.as_ref().unwrap().restore_bytes_per_second, expected),
        "{h:?}"
    );
    assert_eq!(h.unwrap().builds, 0, "a restore is not a build");
}

#[test]
fn the_store_throughput_is_the_caches_mean_or_the_configured_constant() {
    let learned = |b: Option<f64>| KeyHistory {
        restore_bytes_per_second: b,
        ..KeyHistory::default()
    };
    assert_eq!(store_throughput([], 2e8), 2e8);
    assert_eq!(store_throughput([&learned(None)], 2e8), 2e8);
    let (a, b, none, bad) = (
        learned(Some(1e8)),
        learned(Some(3e8)),
        learned(None),
        learned(Some(-1.0)),
    );
    assert_eq!(store_throughput([&a, &b, &none, &bad], 2e8), 2e8);
    assert_eq!(store_throughput([&a, &none], 5e8), 1e8);
}
