//! The simulator on small workloads whose outcome can be worked out by hand, determinism, and
//! the subcommand refusing a bad file before simulating anything.

use hearth::simulate::builtin::find;
use hearth::simulate::cli::{run, SimulateArgs};
use hearth::simulate::{parse, simulate, Options, Report, StrategyReport};

const CLUSTER: &str = r#"{"kind":"cluster","nodes":[{"name":"n1","builders":1,"cacheBudgetBytes":100e9},{"name":"n2","builders":1,"cacheBudgetBytes":100e9}],"storeBytesPerSecond":1e9,"restoreOverheadSeconds":5}"#;

fn build(at: f64, key: &str, extra: &str) -> String {
    format!(
        r#"{{"kind":"build","at":{at},"namespace":"ns","key":"{key}","coldSeconds":600,"warmSeconds":60,"cacheBytes":10e9{extra}}}"#
    )
}

fn run_lines(lines: &[String]) -> Report {
    let text = format!("{CLUSTER}\n{}\n", lines.join("\n"));
    let w = parse(&text).expect("valid workload");
    let opts = Options {
        jitter: 0.0,
        ..Options::default()
    };
    simulate("test", &w, &opts).expect("simulates")
}

fn row<'a>(r: &'a Report, name: &str) -> &'a StrategyReport {
    r.strategies
        .iter()
        .find(|s| s.name == name)
        .expect("strategy present")
}

#[test]
fn a_repeated_key_is_cold_then_warm() {
    let r = run_lines(&[build(0.0, "main", ""), build(1000.0, "main", "")]);
    let cold = row(&r, "cold");
    assert_eq!((cold.cold, cold.mean_seconds), (2, 600.0));
    // Registry: second build imports 10 GB (10 s) and exports it again (10 s) around 60 s.
    let reg = row(&r, "registry-cache");
    assert_eq!((reg.cold, reg.restored), (1, 1));
    assert_eq!(reg.mean_seconds, (610.0 + 80.0) / 2.0);
    assert_eq!(reg.store_bytes_read, 10_000_000_000);
    let sticky = row(&r, "sticky-hash");
    assert_eq!(
        (sticky.cold, sticky.hot, sticky.mean_seconds),
        (1, 1, 330.0)
    );
    let hearth = row(&r, "hearth");
    assert_eq!(
        (hearth.cold, hearth.hot, hearth.mean_seconds),
        (1, 1, 330.0)
    );
    assert_eq!(r.bound.mean_seconds, 330.0);
}

#[test]
fn a_branch_falls_back_to_main() {
    let r = run_lines(&[
        build(0.0, "main", ""),
        build(1000.0, "feature", r#","restoreKeys":["main"]"#),
    ]);
    let fallback = 60.0 + 0.3 * 540.0;
    assert_eq!(r.bound.mean_seconds, (600.0 + fallback) / 2.0);
    // Hearth restores main's 10 GB snapshot (5 + 10 s) and builds with the fallback time.
    let hearth = row(&r, "hearth");
    assert_eq!(
        (hearth.restored, hearth.store_bytes_read),
        (1, 10_000_000_000)
    );
    assert_eq!(hearth.mean_seconds, (600.0 + 15.0 + fallback) / 2.0);
}

#[test]
fn a_lost_node_costs_sticky_a_cold_build_and_hearth_a_restore_unless_prewarmed() {
    let lines = |third: f64| {
        vec![
            build(0.0, "main", r#","context":"repo""#),
            build(1000.0, "main", r#","context":"repo""#),
            r#"{"kind":"node-down","at":1500,"node":"n1"}"#.to_string(),
            r#"{"kind":"node-down","at":1500,"node":"n2"}"#.to_string(),
            r#"{"kind":"node-up","at":1600,"node":"n2"}"#.to_string(),
            build(third, "main", r#","context":"repo""#),
        ]
    };
    // Right after the node is back, the build restores the snapshot itself (5 s overhead,
    // 10 GB at 1 GB/s, then warm).
    let r = run_lines(&lines(1601.0));
    let hearth = row(&r, "hearth");
    assert_eq!((hearth.cold, hearth.hot, hearth.restored), (1, 1, 1));
    assert_eq!(hearth.mean_seconds, (600.0 + 60.0 + 75.0) / 3.0);
    let sticky = row(&r, "sticky-hash");
    assert_eq!((sticky.cold, sticky.hot), (2, 1));
    // Later, the minutely look for caches with no replica left has restored it in the
    // background: the build finds it hot, and the store was read once all the same.
    let r = run_lines(&lines(2000.0));
    let hearth = row(&r, "hearth");
    assert_eq!((hearth.cold, hearth.hot, hearth.restored), (1, 2, 0));
    assert_eq!(hearth.store_bytes_read, 10_000_000_000);
}

#[test]
fn busy_builders_queue() {
    // Three cold builds at once on two single-slot nodes: the third waits 600 s.
    let r = run_lines(&[
        build(0.0, "a", ""),
        build(0.0, "b", ""),
        build(0.0, "c", ""),
    ]);
    assert_eq!(row(&r, "cold").mean_seconds, (600.0 + 600.0 + 1200.0) / 3.0);
    assert_eq!(row(&r, "cold").p95_seconds, 1200.0);
    // The bound counts no queueing; the same builds on the cluster's slots queue as well.
    assert_eq!(r.bound.mean_seconds, 600.0);
    assert_eq!(r.bound.with_slots_mean_seconds, 800.0);
}

#[test]
fn same_seed_same_report_other_seed_other_noise() {
    let w = parse(find("node-churn").expect("built-in").text).expect("valid");
    let one = simulate("x", &w, &Options::default()).expect("simulates");
    assert_eq!(
        one,
        simulate("x", &w, &Options::default()).expect("simulates")
    );
    let other = simulate(
        "x",
        &w,
        &Options {
            seed: 2,
            ..Options::default()
        },
    )
    .expect("simulates");
    assert_ne!(
        one.strategies[0].mean_seconds,
        other.strategies[0].mean_seconds
    );
    for s in &one.strategies {
        assert_eq!(s.builds, w.builds.len(), "{} lost builds", s.name);
        assert_eq!(s.hot + s.restored + s.cold, s.builds);
    }
}

#[test]
fn a_bad_file_is_refused_before_simulating() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.jsonl");
    let text = format!(
        "{CLUSTER}\n{}\n{}\n",
        build(0.0, "a", ""),
        r#"{"kind":"build","at":-5}"#
    );
    std::fs::write(&path, text).expect("write");
    let args = SimulateArgs {
        workload: path.display().to_string(),
        seed: 1,
        jitter: 0.1,
        json: true,
        trace: None,
        list: false,
    };
    let err = run(&args).expect_err("refused").to_string();
    assert!(err.contains("line 3") && err.contains("`at`"), "{err}");
}

#[test]
fn the_trace_explains_every_build_under_every_strategy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (workload, trace) = (dir.path().join("w.jsonl"), dir.path().join("t.jsonl"));
    let lines = [
        build(0.0, "main", ""),
        build(1.0, "other", ""),
        build(2.0, "main", ""),
    ];
    std::fs::write(&workload, format!("{CLUSTER}\n{}\n", lines.join("\n"))).expect("write");
    let args = SimulateArgs {
        workload: workload.display().to_string(),
        seed: 1,
        jitter: 0.0,
        json: true,
        trace: Some(trace.clone()),
        list: false,
    };
    run(&args).expect("simulates");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .expect("trace written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 3 * 4, "one line per build and strategy");
    let hearth: Vec<_> = rows.iter().filter(|r| r["strategy"] == "hearth").collect();
    // Lines count from the file's first line (the cluster is line 1).
    let got: Vec<_> = hearth
        .iter()
        .map(|r| (r["line"].as_u64(), r["key"].as_str(), r["warmth"].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(2), Some("main"), Some("Cold")),
            (Some(3), Some("other"), Some("Cold")),
            // Both slots are busy with the two cold builds: the hot build waits for its
            // replica, on the node it was built on.
            (Some(4), Some("main"), Some("Hot")),
        ]
    );
    let third = hearth[2];
    assert_eq!(third["node"], hearth[0]["node"]);
    assert_eq!(third["queuedSeconds"].as_f64(), Some(598.0));
    assert_eq!(third["seconds"].as_f64(), Some(658.0));
    // The bound counts no queueing and main's cache only exists once its build is done.
    assert_eq!(third["boundSeconds"].as_f64(), Some(600.0));
}
