//! A real BuildKit state dir through `hearth snapshot` (skipped unless `HEARTH_BUILDKITD` names
//! a buildkitd; root, runc and a static busybox needed, see docs/snapshots.md): a rootful
//! buildkitd builds a project with cache mounts, the builder container's exact script builds
//! its next commit and prunes, buildkitd stops, the real `hearth` saves the state dir to a
//! file store and restores it into a fresh dir, and a buildkitd on the restored dir builds the
//! commit after: unchanged steps are CACHED, the cache mount's objects are reused, and the
//! prune's report parses to the bytes BuildKit dropped. Timing is in `benches/buildkit_restore.rs`.

mod buildkit_support;

use std::path::Path;

use buildkit_support::{Buildkitd, Project, SOURCES};
use hearth::api::PruneResult;
use hearth::controller::builders::build_script::split_termination_message;
use hearth::controller::builders::pod::digest_from_metadata;

/// Steps of the project's Dockerfile that no commit changes.
const UNCHANGED: [&str; 5] = [
    "COPY --from=base / /",
    "WORKDIR /app",
    "COPY deps.txt fetch-deps.sh ./",
    "RUN --mount=type=cache,target=/cache/deps sh fetch-deps.sh",
    "COPY build.sh ./",
];

#[test]
fn a_restored_buildkit_state_builds_the_next_commit_from_its_cache() {
    let Some(tools) = buildkit_support::tools("the real BuildKit state test") else {
        return;
    };
    let hearth = Path::new(env!("CARGO_BIN_EXE_hearth"));
    let tmp = tempfile::tempdir().unwrap();
    let (state, restored, store) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("store"),
    );
    let project = Project::create(&tmp.path().join("project"), &tools);

    // Commit 0, cold: every object compiled, every dependency fetched.
    let bk = Buildkitd::start(&tools, &state, &tmp.path().join("run-a"));
    let cold = buildkit_support::build(&tools, &bk, &project, &tmp.path().join("m0.json"));
    assert_eq!(
        cold.counts("objects:"),
        Some(vec![SOURCES as u64, 0]),
        "{}",
        cold.log
    );
    assert_eq!(cold.counts("deps:"), Some(vec![8, 0]), "{}", cold.log);

    // Commit 1 through the builder container's script: build, then prune what commit 1 did
    // not use (commit 0's source layer and objects layer...), everything unused for 3 s, as
    // long as the cache holds more than 1 MB.
    std::thread::sleep(std::time::Duration::from_secs(5));
    project.commit(1);
    let run = buildkit_support::run_builder_script(
        &tools,
        &bk,
        &project,
        &tmp.path().join("pod"),
        "3s",
        1,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.output, run.termination_message);
    assert!(
        run.output.contains("objects: compiled 2, reused 38"),
        "{}",
        run.output
    );
    let report = split_termination_message(&run.termination_message);
    let (prune, metadata) = (report.prune.expect("the prune's report"), report.metadata);
    let script_digest = report.digest.clone();
    assert_eq!(
        prune.result,
        PruneResult::Pruned,
        "{prune:?}\n{}",
        run.output
    );
    let pruned = prune.bytes.expect("bytes");
    assert!(pruned > 0, "nothing pruned:\n{}", run.output);
    // buildctl's own Total line, as the container log shows it.
    let total = run
        .output
        .lines()
        .rev()
        .find(|l| l.starts_with("Total:"))
        .expect("a Total line");
    println!("prune: {total:?} -> {pruned} bytes");
    assert!(
        digest_from_metadata(metadata).is_some_and(|d| d.starts_with("sha256:")),
        "{metadata}"
    );
    // The script's own digest line, read from what the real buildctl wrote, is the same.
    assert_eq!(script_digest, digest_from_metadata(metadata), "{metadata}");
    // And its size line: the manifest's config and layers, as BuildKit's content store has it.
    let size = buildkit_support::image_size_in(&state, script_digest.as_deref().unwrap());
    assert!(
        size.is_some_and(|s| s > 0),
        "no manifest in the content store"
    );
    assert_eq!(report.image_size, size, "{}", run.termination_message);
    println!("image size: {size:?} bytes");
    bk.stop();

    // Save the stopped state dir, restore it elsewhere (pinned, as the controller does).
    let saved = buildkit_support::save(hearth, &state, &store);
    buildkit_support::restore(hearth, &saved, &restored, &store);
    println!("snapshot {}: {} bytes", saved.id, saved.bytes);

    // A buildkitd accepts the restored state and builds commit 2 from it.
    let bk = Buildkitd::start(&tools, &restored, &tmp.path().join("run-b"));
    project.commit(2);
    let next = buildkit_support::build(&tools, &bk, &project, &tmp.path().join("m2.json"));
    let cached = next.cached_steps();
    for step in UNCHANGED {
        assert!(
            cached.iter().any(|c| c.ends_with(step)),
            "{step} was not CACHED after the restore (cached: {cached:?}):\n{}",
            next.log
        );
    }
    // The objects cache mount survived: only the two changed sources were compiled.
    assert_eq!(
        next.counts("objects:"),
        Some(vec![2, SOURCES as u64 - 2]),
        "{}",
        next.log
    );
    bk.stop();
}
