//! `HEARTH_BUILDKITD=/path/to/buildkitd cargo bench --bench buildkit_restore [-- --runs 3]`:
//! on a real BuildKit state dir (the project of `tests/buildkit_support`), how the next
//! commit's build on a restored state compares with the same build on the hot state it was
//! saved from. Each run: a fresh state dir, commit 0 cold, commit 1 through the builder
//! container's script (build, then `buildctl prune`), buildkitd stopped, `hearth snapshot
//! save` to a file store; then commit 2 hot (buildkitd start + build on that dir) and restored
//! (`hearth snapshot restore` into a fresh dir + buildkitd start + build). Prints each run's
//! figures and the ratio restored / hot (the goal: within 1.5x, three runs out of three).
//! Skips, saying why, without `HEARTH_BUILDKITD`.

#[path = "../tests/buildkit_support/mod.rs"]
mod buildkit_support;

use std::path::Path;
use std::time::{Duration, Instant};

use buildkit_support::{Buildkitd, Project};
use hearth::controller::builders::build_script::split_termination_message;

const GOAL: f64 = 1.5;

struct Run {
    state_bytes: u64,
    pruned_bytes: Option<i64>,
    prune_seconds: f64,
    save: Duration,
    hot: Duration,
    restore: Duration,
    restored_build: Duration,
}

fn main() {
    let Some(tools) = buildkit_support::tools("the BuildKit restore benchmark") else {
        return;
    };
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let hearth = Path::new(env!("CARGO_BIN_EXE_hearth"));
    println!(
        "project: {} sources (2 change per commit), {} deps x {} MiB in a cache mount",
        buildkit_support::SOURCES,
        buildkit_support::DEPS,
        buildkit_support::DEP_MIB
    );
    println!(
        "{:>3} {:>9} {:>10} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>6}",
        "run",
        "state MB",
        "pruned MB",
        "prune s",
        "save s",
        "hot s",
        "restore s",
        "build s",
        "total s",
        "ratio"
    );
    let mut met = 0;
    for i in 1..=runs {
        let r = one_run(&tools, hearth);
        let restored = r.restore + r.restored_build;
        let ratio = restored.as_secs_f64() / r.hot.as_secs_f64();
        met += usize::from(ratio <= GOAL);
        println!(
            "{:>3} {:>9.1} {:>10} {:>7.2} {:>7.2} {:>7.2} {:>9.2} {:>9.2} {:>9.2} {:>5.2}x",
            i,
            r.state_bytes as f64 / 1e6,
            r.pruned_bytes
                .map(|b| format!("{:.2}", b as f64 / 1e6))
                .unwrap_or_else(|| "failed".into()),
            r.prune_seconds,
            r.save.as_secs_f64(),
            r.hot.as_secs_f64(),
            r.restore.as_secs_f64(),
            r.restored_build.as_secs_f64(),
            restored.as_secs_f64(),
            ratio
        );
    }
    println!("restore + next build within {GOAL}x the hot build: {met} of {runs} runs");
}

fn one_run(tools: &buildkit_support::Tools, hearth: &Path) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let at = |p: &str| tmp.path().join(p);
    let project = Project::create(&at("project"), tools);
    let (state, restored, store) = (at("a"), at("b"), at("store"));

    let bk = Buildkitd::start(tools, &state, &at("run-a"));
    buildkit_support::build(tools, &bk, &project, &at("m0.json"));
    std::thread::sleep(Duration::from_secs(5));
    project.commit(1);
    // What no build used for 3 s goes (commit 0's layers), as the pod's prune would with
    // gc.keepDuration: 3s and a small gc.keepStorage.
    let run = buildkit_support::run_builder_script(tools, &bk, &project, &at("pod"), "3s", 1);
    assert_eq!(run.code, 0, "{}", run.output);
    let prune = split_termination_message(&run.termination_message).prune;
    let prune_seconds = run
        .seconds
        .iter()
        .find(|(what, _)| what == "prune")
        .map_or(0.0, |(_, s)| *s);
    bk.stop();
    let state_bytes = buildkit_support::tree_bytes(&state);

    let started = Instant::now();
    let saved = buildkit_support::save(hearth, &state, &store);
    let save = started.elapsed();

    project.commit(2);
    // Hot: the state stayed on the node.
    let started = Instant::now();
    let bk = Buildkitd::start(tools, &state, &at("run-hot"));
    buildkit_support::build(tools, &bk, &project, &at("m-hot.json"));
    let hot = started.elapsed();
    bk.stop();

    // Restored: the state comes from the store onto another node.
    let started = Instant::now();
    buildkit_support::restore(hearth, &saved, &restored, &store);
    let restore = started.elapsed();
    let started = Instant::now();
    let bk = Buildkitd::start(tools, &restored, &at("run-b"));
    let next = buildkit_support::build(tools, &bk, &project, &at("m-b.json"));
    let restored_build = started.elapsed();
    bk.stop();
    assert_eq!(
        next.counts("objects:"),
        Some(vec![2, buildkit_support::SOURCES as u64 - 2]),
        "{}",
        next.log
    );
    Run {
        state_bytes,
        pruned_bytes: prune.and_then(|p| p.bytes),
        prune_seconds,
        save,
        hot,
        restore,
        restored_build,
    }
}
