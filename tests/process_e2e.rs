//! Process-level end to end: the real `hearth controller` binary, started as users run it
//! (a kubeconfig and the chart's config file), against the fake API server over HTTPS, with
//! the test cluster's scheduler, controllers and kubelets running the real snapshot Jobs
//! against a loopback S3 server (see tests/cluster/mod.rs).

mod cluster;

use std::time::{Duration, Instant};

use cluster::{build_spec, secs, ClusterOpts, TestCluster};
use hearth::api::{keys, ImageBuild, ImageBuildSpec, ReplicaState, Warmth};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The status of a build's condition, e.g. ("True", "Saved").
fn condition(ib: &ImageBuild, type_: &str) -> Option<(String, String)> {
    ib.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Waits for a build's save to end, and returns the build (`Snapshotted=True`).
async fn wait_saved(c: &TestCluster, name: &str) -> ImageBuild {
    let api = c.builds();
    c.wait_for(
        &format!("ImageBuild {name} Snapshotted=True"),
        secs(60),
        || {
            let api = api.clone();
            async move {
                let ib = api.get_opt(name).await.ok()??;
                (condition(&ib, "Snapshotted")?.0 == "True").then_some(ib)
            }
        },
    )
    .await
}

/// Waits until the replica `pvc` of `key`'s BuildCache (None once its entry is dropped)
/// satisfies `ok`.
async fn wait_replica(
    c: &TestCluster,
    key: &str,
    pvc: &str,
    what: &str,
    ok: impl Fn(Option<&hearth::api::ReplicaStatus>) -> bool,
) {
    let caches = c.caches();
    let name = keys::cache_name_for_key(&keys::arch_scoped(key, "amd64"));
    let ok = &ok;
    c.wait_for(&format!("replica {pvc}: {what}"), secs(20), || {
        let caches = caches.clone();
        let name = name.clone();
        async move {
            let status = caches.get(&name).await.ok()?.status?;
            ok(status.replicas.iter().find(|r| r.pvc == pvc)).then_some(())
        }
    })
    .await;
}

/// Applies a ReadWrite build of `key`, waits for it to succeed and for its save to end;
/// returns the saved build.
async fn build_and_save(c: &TestCluster, name: &str, key: &str) -> ImageBuild {
    c.apply_build(name, build_spec(key, json!({}))).await;
    c.wait_build(name, "Succeeded", secs(60)).await;
    wait_saved(c, name).await
}

/// The placement of a finished build.
fn placement(ib: &ImageBuild) -> hearth::api::Placement {
    ib.status
        .as_ref()
        .and_then(|s| s.placement.clone())
        .expect("placement")
}

/// The notes of the build namespace's Events (of `reason` only, when given).
async fn event_notes(c: &TestCluster, reason: Option<&str>) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.client(), "shop");
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| reason.is_none() || e.reason.as_deref() == reason)
        .filter_map(|e| e.note)
        .collect()
}

/// A ReadWrite build of `key` taking `seconds`.
fn sleeping(key: &str, seconds: u32) -> ImageBuildSpec {
    build_spec(key, json!({"SLEEP": seconds.to_string()}))
}

/// Cold then hot: the first build of a key succeeds with the digest the builder wrote and
/// leaves a snapshot; the second build of the key is Hot on the same node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_then_hot_on_the_same_node() {
    let c = TestCluster::start(ClusterOpts::default()).await;

    c.apply_build("shop-1", build_spec("shop:main", json!({})))
        .await;
    let first = c.wait_build("shop-1", "Succeeded", secs(60)).await;
    let status = first.status.clone().expect("status");
    let builder = c
        .runs
        .runs("build")
        .into_iter()
        .find(|r| r.container == "buildkit" && r.pod.starts_with("shop-1-"))
        .expect("the builder ran");
    let written = hearth::controller::builders::pod::digest_from_metadata(&builder.message)
        .expect("the builder wrote a digest");
    assert_eq!(status.image_digest.as_deref(), Some(written.as_str()));
    let placement = status.placement.expect("placement");
    assert_eq!(placement.warmth, Some(Warmth::Cold), "{placement:?}");
    wait_saved(&c, "shop-1").await;
    assert!(
        !c.runs.runs("save").is_empty(),
        "a ReadWrite build is saved: {:?}",
        c.runs.all()
    );

    c.apply_build("shop-2", build_spec("shop:main", json!({})))
        .await;
    let second = c.wait_build("shop-2", "Succeeded", secs(60)).await;
    let again = second.status.expect("status").placement.expect("placement");
    assert_eq!(again.warmth, Some(Warmth::Hot), "{again:?}");
    assert_eq!(again.node, placement.node, "hot means the same node");
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
    // What users read: Events in words, not Rust's debug formatting; text logs in a pod's
    // log file (not a terminal) without colour codes.
    let notes = event_notes(&c, None).await;
    assert!(
        notes.iter().any(|n| n.contains("Hot")),
        "a Placed event says Hot: {notes:?}"
    );
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("Some(") || n.contains("None")),
        "{notes:?}"
    );
    assert!(
        !c.controller_log().contains('\u{1b}'),
        "ANSI escape codes in the controller's text log"
    );
    eprintln!("runs:\n{}", c.runs.describe(c.started));
}

/// A branch's first build restores main's snapshot (its restore key) into the branch's new
/// replica: the builder pod's restore init container reads main's store prefix and succeeds,
/// then buildkitd runs in the same pod, so the build is Restored,
/// not the cold build a wrong cache name gave on a real cluster. The state dir has more files
/// than a pod's 1024 open-files limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_starts_from_main_s_snapshot() {
    let buildkit = cluster::buildkit::BuildkitOpts {
        files_per_build: 3000,
        ..Default::default()
    };
    let c = TestCluster::start(ClusterOpts {
        buildkit,
        ..ClusterOpts::default()
    })
    .await;
    build_and_save(&c, "main-1", "shop:main").await;

    let mut spec = build_spec("shop:feature-x", json!({}));
    spec.cache.restore_keys = vec!["shop:main".into()];
    c.apply_build("fx-1", spec).await;
    let fx = c.wait_build("fx-1", "Succeeded", secs(60)).await;
    let p = placement(&fx);
    assert_eq!(p.warmth, Some(Warmth::Restored), "{p:?}");
    let from = p.restored_from.clone().expect("restoredFrom");
    assert_eq!(from.key, "shop:main@amd64");
    assert_eq!(
        from.cache.as_deref(),
        Some(keys::cache_name_for_key("shop:main@amd64").as_str())
    );
    assert_eq!(
        condition(&fx, "CacheReady").map(|c| c.1).as_deref(),
        Some("Restored"),
        "{:?}",
        fx.status
    );
    let restores: Vec<_> = c
        .runs
        .runs("build")
        .into_iter()
        .filter(|r| r.pod == "fx-1-build-1" && r.container == "restore")
        .collect();
    assert!(
        restores.iter().any(|r| r.exit_code == Some(0)),
        "the restore init container ran and succeeded: {restores:?}"
    );
    assert!(
        c.runs.runs("restore").is_empty(),
        "no restore Job: {:?}",
        c.runs.all()
    );
    let builders: Vec<_> = c
        .runs
        .all()
        .into_iter()
        .filter(|r| r.pod.starts_with("fx-1-") && r.container == "buildkit")
        .collect();
    assert_eq!(builders.len(), 1, "one builder pod: {builders:?}");
    assert!(
        restores[0]
            .ended
            .is_some_and(|end| end <= builders[0].started),
        "the restore ends before buildkitd starts"
    );
    // Its termination message is the real command's JSON result, which the controller reads
    // for the restore's bytes and seconds (the throughput the planner learns).
    let sample = hearth::controller::outcome::restore_sample(&restores[0].message);
    assert!(
        sample.is_some_and(|(bytes, seconds)| bytes > 0 && seconds > 0.0),
        "{:?}",
        restores[0].message
    );
    let durations = fx.status.as_ref().and_then(|s| s.durations.clone());
    assert!(
        durations.and_then(|d| d.restore).is_some(),
        "durations.restore from the init container: {:?}",
        fx.status
    );
    // Pinned: the restore carried the digest main's save reported, recorded in main's
    // BuildCache status, and the real `hearth` checked it (its result says so).
    let main_cache = c
        .caches()
        .get(&keys::cache_name_for_key("shop:main@amd64"))
        .await
        .unwrap();
    let recorded = main_cache.status.unwrap().snapshots;
    let record = recorded.iter().find(|s| s.id == from.snapshot).unwrap();
    assert!(record.manifest_sha256.is_some(), "{recorded:?}");
    assert_eq!(from.manifest_sha256, record.manifest_sha256);
    assert!(
        restores
            .iter()
            .any(|r| r.exit_code == Some(0) && r.message.contains(r#""pinned":true"#)),
        "the restore was pinned: {restores:?}"
    );
    // The branch's replica holds main's state: main's build files are there.
    let dir = c
        .pv_dir(p.replica.as_deref().expect("replica"))
        .await
        .expect("bound");
    assert!(dir.join("buildkit/cache.db").exists(), "{dir:?}");
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
}

/// A restore that fails in the builder pod's init container (here the real `hearth` refuses
/// a manifest whose digest differs from the one recorded) leaves the new replica untouched:
/// the build's next attempt builds cold on it, and the status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_builds_cold_in_the_next_attempt_saying_why() {
    let c = TestCluster::start(ClusterOpts::default()).await;
    build_and_save(&c, "main-1", "shop:main").await;
    let wrong = "0".repeat(64);
    cluster::util::update_status(
        &c.caches(),
        &keys::cache_name_for_key("shop:main@amd64"),
        |bc| {
            let status = bc.status.as_mut().expect("status");
            for s in &mut status.snapshots {
                s.manifest_sha256 = Some(wrong.clone());
            }
            true
        },
    )
    .await
    .unwrap();

    let mut spec = build_spec("shop:feature-x", json!({}));
    spec.cache.restore_keys = vec!["shop:main".into()];
    c.apply_build("fx-1", spec).await;
    let fx = c.wait_build("fx-1", "Succeeded", secs(60)).await;
    let st = fx.status.clone().unwrap();
    let p = placement(&fx);
    assert_eq!(p.warmth, Some(Warmth::Cold), "{p:?}");
    assert_eq!(st.attempts, Some(2), "{st:?}");
    assert_eq!(
        condition(&fx, "CacheReady").map(|c| c.1).as_deref(),
        Some("RestoreFailed")
    );
    let why = st
        .conditions
        .iter()
        .find(|c| c.type_ == "CacheReady")
        .map(|c| c.message.clone())
        .unwrap();
    assert!(
        why.contains("restore of") && why.contains("refusing it"),
        "the restore's own error: {why}"
    );
    let runs: Vec<_> = c
        .runs
        .all()
        .into_iter()
        .filter(|r| r.pod.starts_with("fx-1-"))
        .map(|r| (r.pod, r.container, r.exit_code.map(|c| c != 0)))
        .collect();
    assert_eq!(
        runs,
        [
            ("fx-1-build-1".into(), "restore".into(), Some(true)),
            ("fx-1-build-2".into(), "buildkit".into(), Some(false)),
        ],
        "the failed restore's pod never ran buildkitd; the next attempt did, without a restore"
    );
    let notes = event_notes(&c, Some("RestoreFailed")).await;
    assert!(
        notes.iter().any(|n| n.contains("refusing it")),
        "a RestoreFailed Event says why: {notes:?}"
    );
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
}

/// A ReadOnly fork build with its own key seeds a throwaway state dir from main's snapshot in
/// its init container, and writes nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_fork_build_seeds_from_main_and_writes_nothing() {
    let c = TestCluster::start(ClusterOpts::default()).await;
    let main = build_and_save(&c, "main-1", "shop:main").await;
    let main_cache = keys::cache_name_for_key("shop:main@amd64");
    let snapshots = |c: &TestCluster| {
        let caches = c.caches();
        let name = main_cache.clone();
        async move {
            caches
                .get(&name)
                .await
                .unwrap()
                .status
                .unwrap()
                .snapshots
                .len()
        }
    };
    let before = snapshots(&c).await;
    let saves = c.runs.runs("save").len();

    let mut spec = build_spec("shop:pr-7", json!({}));
    spec.cache.mode = hearth::api::CacheMode::ReadOnly;
    spec.cache.restore_keys = vec!["shop:main".into()];
    c.apply_build("pr-7", spec).await;
    let pr = c.wait_build("pr-7", "Succeeded", secs(60)).await;
    let p = placement(&pr);
    assert_eq!(p.warmth, Some(Warmth::Restored), "{p:?}");
    assert_eq!(p.replica, None, "a throwaway state dir, not a replica");
    let seeded = c
        .runs
        .all()
        .into_iter()
        .find(|r| r.pod.starts_with("pr-7-") && r.container != "buildkit")
        .expect("the seed init container ran");
    assert_eq!(seeded.exit_code, Some(0), "{seeded:?}");
    assert!(
        seeded.message.contains(r#""pinned":true"#),
        "the seed restore was pinned: {seeded:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.runs.runs("save").len(), saves, "nothing saved");
    assert_eq!(snapshots(&c).await, before, "main's snapshots unchanged");
    assert!(main.status.is_some());
}

/// Succeeded is published once the image is pushed, while the save still runs: pipelines
/// waiting on the build do not wait for the cache. The save's outcome lands after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn succeeded_is_published_before_the_save_ends() {
    let c = TestCluster::start(ClusterOpts {
        // A Job pod that takes a moment to start, as on a real node.
        start_latency: Duration::from_millis(800),
        ..ClusterOpts::default()
    })
    .await;
    build_and_save(&c, "shop-1", "shop:main").await;

    let created = Instant::now();
    c.apply_build("shop-2", build_spec("shop:main", json!({})))
        .await;
    let done = c.wait_build("shop-2", "Succeeded", secs(60)).await;
    let to_succeeded = created.elapsed();
    assert_eq!(
        condition(&done, "Snapshotted").map(|c| c.0).as_deref(),
        Some("Unknown"),
        "the save is still running when Succeeded is published: {:?}",
        done.status
    );
    assert!(done.status.as_ref().unwrap().image_digest.is_some());
    let saved = wait_saved(&c, "shop-2").await;
    let to_saved = created.elapsed();
    let st = saved.status.unwrap();
    assert!(st.durations.and_then(|d| d.snapshot).is_some());
    eprintln!("hot build: Succeeded after {to_succeeded:?}, saved after {to_saved:?}");
    // While saving, the replica was held: nobody else used it.
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
}

/// Issue 16's goal: a Restored build's creation-to-Succeeded time within 2x a Hot build's of
/// the same change. Measured and printed, never asserted (a loaded machine would make it
/// flaky): a hot build of main, then a branch's first build of the same change restoring
/// main's snapshot, with pods that take a moment to start as on a real node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_and_hot_creation_to_succeeded() {
    let c = TestCluster::start(ClusterOpts {
        start_latency: Duration::from_millis(800),
        ..ClusterOpts::default()
    })
    .await;
    build_and_save(&c, "main-1", "shop:main").await;

    let created = Instant::now();
    c.apply_build("main-2", build_spec("shop:main", json!({})))
        .await;
    let hot = c.wait_build("main-2", "Succeeded", secs(60)).await;
    let hot_time = created.elapsed();
    assert_eq!(placement(&hot).warmth, Some(Warmth::Hot));
    // Its save (if due) ends before the restored build starts: one thing at a time.
    let pvc = placement(&hot).replica.expect("replica");
    wait_replica(&c, "shop:main", &pvc, "released", |r| {
        r.is_some_and(|r| r.holder.is_none())
    })
    .await;

    let mut spec = build_spec("shop:feature-x", json!({}));
    spec.cache.restore_keys = vec!["shop:main".into()];
    let created = Instant::now();
    c.apply_build("fx-1", spec).await;
    let restored = c.wait_build("fx-1", "Succeeded", secs(60)).await;
    let restored_time = created.elapsed();
    assert_eq!(placement(&restored).warmth, Some(Warmth::Restored));
    let durations = restored.status.and_then(|s| s.durations);
    eprintln!(
        "creation to Succeeded: hot {:.2} s, restored {:.2} s ({:.2}x hot; goal <= 2x); restored durations {durations:?}",
        hot_time.as_secs_f64(),
        restored_time.as_secs_f64(),
        restored_time.as_secs_f64() / hot_time.as_secs_f64()
    );
}

/// A cancelled build's buildkitd keeps running through its grace period; nothing else (a
/// save, another build) may touch the replica until its pod is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_touches_a_cancelled_build_s_replica_until_its_pod_is_gone() {
    let buildkit = cluster::buildkit::BuildkitOpts {
        term_linger: Duration::from_secs(3),
        ..Default::default()
    };
    let c = TestCluster::start(ClusterOpts {
        buildkit,
        nodes: vec![cluster::NodeOpts::new("node-a")],
        ..ClusterOpts::default()
    })
    .await;
    build_and_save(&c, "shop-1", "shop:main").await;

    c.apply_build("shop-2", sleeping("shop:main", 60)).await;
    let builds = c.builds();
    c.wait_for("shop-2's buildkitd to run", secs(60), || {
        let runs = c.runs.runs("build");
        async move {
            runs.iter()
                .any(|r| r.pod.starts_with("shop-2-") && r.container == "buildkit")
                .then_some(())
        }
    })
    .await;
    builds
        .patch(
            "shop-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cancel": true}})),
        )
        .await
        .unwrap();
    c.wait_build("shop-2", "Cancelled", secs(30)).await;
    // The next build of the key wants the same (only) replica.
    c.apply_build("shop-3", build_spec("shop:main", json!({})))
        .await;
    c.wait_build("shop-3", "Succeeded", secs(60)).await;
    wait_saved(&c, "shop-3").await;
    let overlaps = c.runs.overlaps();
    assert!(
        overlaps.is_empty(),
        "a run used the replica while the cancelled buildkitd still ran: {overlaps:?}\n{}",
        c.runs.describe(c.started)
    );
}

/// Budget eviction really frees the volume: the replica's PVC goes (no finished pod or Job
/// keeps it Terminating) and with it the node's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_eviction_frees_the_volume_and_the_node_s_bytes() {
    let c = TestCluster::start(ClusterOpts {
        nodes: vec![cluster::NodeOpts::new("node-a")],
        ..ClusterOpts::default()
    })
    .await;
    let ib = build_and_save(&c, "shop-1", "shop:main").await;
    let p = placement(&ib);
    let pvc = p.replica.clone().expect("replica");
    let dir = c.pv_dir(&pvc).await.expect("bound");
    assert!(dir.exists());
    // The platform team shrinks the node's cache budget below the replica.
    Api::<Node>::all(c.client())
        .patch(
            p.node.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"hearth.dev/cache-budget": "1"}}})),
        )
        .await
        .unwrap();
    let claims = c.claims();
    c.wait_for("the evicted replica's PVC to be gone", secs(60), || {
        let claims = claims.clone();
        let pvc = pvc.clone();
        async move { claims.get_opt(&pvc).await.ok()?.is_none().then_some(()) }
    })
    .await;
    c.wait_for("the node's bytes to be freed", secs(20), || {
        let gone = !dir.exists();
        async move { gone.then_some(()) }
    })
    .await;
    wait_replica(&c, "shop:main", &pvc, "its entry dropped", |r| r.is_none()).await;
}

/// The controller killed mid-build: a new process picks the build up where it stood, with
/// no second builder pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_build_resumes_it() {
    let mut c = TestCluster::start(ClusterOpts::default()).await;
    c.apply_build("shop-1", sleeping("shop:main", 3)).await;
    c.wait_build("shop-1", "Building", secs(60)).await;
    c.kill_controller();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.start_controller().await;
    c.wait_build("shop-1", "Succeeded", secs(60)).await;
    wait_saved(&c, "shop-1").await;
    let builders: Vec<_> = c
        .runs
        .runs("build")
        .into_iter()
        .filter(|r| r.container == "buildkit")
        .collect();
    assert_eq!(builders.len(), 1, "{builders:?}");
}

/// A failing build is reported Failed promptly and its replica released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_is_reported_and_its_replica_released() {
    let c = TestCluster::start(ClusterOpts::default()).await;
    // A RUN step prints a build secret (with regex metacharacters) before the build fails.
    const SECRET: &str = r"s3cr&t\1.*[pw]$";
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "pip-creds"},
        "data": {"index-url": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, SECRET)},
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(c.client(), cluster::NS)
        .create(&Default::default(), &secret)
        .await
        .expect("build secret");
    let mut spec = build_spec("shop:main", json!({"FAIL": "1", "LEAK": "1"}));
    spec.secrets = serde_json::from_value(
        json!([{"id": "pip", "secretRef": {"name": "pip-creds", "key": "index-url"}}]),
    )
    .unwrap();
    c.apply_build("bad-1", spec).await;
    let ib = c.wait_build("bad-1", "Failed", secs(60)).await;
    assert_eq!(
        condition(&ib, "Succeeded").map(|c| c.0).as_deref(),
        Some("False")
    );
    // The log tail is in the status, redacted by the builder's script.
    let message = ib.status.clone().unwrap().message.unwrap_or_default();
    assert!(
        message.contains("did not complete successfully") && message.contains("# ***"),
        "{message}"
    );
    assert!(!message.contains(SECRET), "{message}");
    let pvc = placement(&ib).replica.expect("replica");
    wait_replica(&c, "shop:main", &pvc, "released", |r| {
        r.is_some_and(|r| r.holder.is_none() && r.state == ReplicaState::Idle)
    })
    .await;
}

/// Its node deleted, a key's next build restores the snapshot on the node left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_on_another_node_after_node_loss() {
    let c = TestCluster::start(ClusterOpts::default()).await;
    // A cold build that takes longer than a restore, so the planner (which learns the key's
    // build times) restores rather than rebuilds.
    c.apply_build("shop-1", sleeping("shop:main", 20)).await;
    let first = c.wait_build("shop-1", "Succeeded", secs(90)).await;
    wait_saved(&c, "shop-1").await;
    let lost = placement(&first).node.expect("node");
    c.delete_node(&lost).await;
    c.apply_build("shop-2", build_spec("shop:main", json!({})))
        .await;
    let second = c.wait_build("shop-2", "Succeeded", secs(60)).await;
    let p = placement(&second);
    assert_ne!(p.node.as_deref(), Some(lost.as_str()));
    assert_eq!(p.warmth, Some(Warmth::Restored), "{p:?}");
}

/// Two builds of one key at once never share a volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_builds_of_one_key_use_separate_volumes() {
    let c = TestCluster::start(ClusterOpts::default()).await;
    c.apply_build("a", sleeping("shop:main", 2)).await;
    c.apply_build("b", sleeping("shop:main", 2)).await;
    c.wait_build("a", "Succeeded", secs(60)).await;
    c.wait_build("b", "Succeeded", secs(60)).await;
    // Each waits for the other's replica or takes a new one; never both on one volume.
    let builders = c.runs.runs("build");
    assert_eq!(builders.len(), 2, "{builders:?}");
    assert!(c.runs.overlaps().is_empty(), "{:?}", c.runs.overlaps());
}

/// The value of one series in a Prometheus text exposition.
fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Every reconcile is timed per controller: after a build, `/metrics` of the real process
/// counts reconciles of both controllers in `hearth_reconcile_duration_seconds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_durations_are_exported_per_controller() {
    let c = TestCluster::start(ClusterOpts::default()).await;
    build_and_save(&c, "timed-1", "timed:main").await;
    let metrics = c.metrics().await;
    for controller in ["imagebuild", "buildcache"] {
        let series =
            format!(r#"hearth_reconcile_duration_seconds_count{{controller="{controller}"}}"#);
        let count = series_value(&metrics, &series);
        assert!(
            count.is_some_and(|n| n > 0.0),
            "{series}: {count:?}\n{metrics}"
        );
        let inf = format!(
            r#"hearth_reconcile_duration_seconds_bucket{{le="+Inf",controller="{controller}"}}"#
        );
        assert_eq!(series_value(&metrics, &inf), count, "{inf}\n{metrics}");
    }
}

/// What the played buildctl of a build's pod printed (buildctl's own output, before the
/// container's script tees it).
async fn buildctl_output(c: &TestCluster, ib: &ImageBuild, pod: &str) -> String {
    let uid = c.pods().get(pod).await.expect("builder pod").metadata.uid;
    let node = placement(ib).node.expect("node");
    let file = c
        .root
        .path()
        .join("nodes")
        .join(node)
        .join("pods")
        .join(uid.unwrap_or_default())
        .join("buildctl.out");
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// A key with no cache on the cluster starts seeded from its registry cache: the real
/// controller records it in placement and its builder's buildctl imports it, with every tag
/// in one export buildctl can read. The next build of the key is hot and imports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_node_starts_seeded_from_the_registry_cache_and_a_hot_one_does_not() {
    let c = TestCluster::start(ClusterOpts::default()).await;
    let cache_ref = "registry.example/acme/shop:buildcache";
    let spec = || {
        let mut spec = build_spec("shop:seeded", json!({}));
        spec.output.tags = vec!["latest".into()];
        spec.cache.registry = Some(hearth::api::RegistryCache {
            import_from: vec![cache_ref.into()],
            export_to: None,
        });
        spec
    };
    c.apply_build("seeded-1", spec()).await;
    let first = wait_saved(&c, "seeded-1").await;
    let p = placement(&first);
    assert_eq!(p.warmth, Some(Warmth::Cold), "{p:?}");
    assert_eq!(p.imported_from, [cache_ref], "{p:?}");
    let out = buildctl_output(&c, &first, "seeded-1-build-1").await;
    assert!(
        out.contains(&format!("importing cache manifest from {cache_ref}")),
        "{out}"
    );
    assert!(
        out.contains("naming to registry.example/acme/shop:main,registry.example/acme/shop:latest"),
        "{out}"
    );
    let status = first.status.expect("status");
    assert_eq!(
        status.tags,
        [
            "registry.example/acme/shop:main",
            "registry.example/acme/shop:latest"
        ]
    );
    let digest = status.image_digest.expect("digest");
    assert_eq!(
        status.image,
        Some(format!("registry.example/acme/shop@{digest}"))
    );

    c.apply_build("seeded-2", spec()).await;
    let second = c.wait_build("seeded-2", "Succeeded", secs(60)).await;
    let p = placement(&second);
    assert_eq!(p.warmth, Some(Warmth::Hot), "{p:?}");
    assert!(p.imported_from.is_empty(), "{p:?}");
    let out = buildctl_output(&c, &second, "seeded-2-build-1").await;
    assert!(!out.contains("importing cache"), "{out}");
}

/// The API server refuses the builder pod (a ServiceAccount of the operator config missing in
/// the namespace, as its ServiceAccount admission says): the build says so in a Warning Event
/// with the server's own message, keeps trying, and runs once the pod is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_builder_pod_is_told_on_the_build_and_tried_again() {
    let c = TestCluster::start(ClusterOpts::default()).await;
    let message = "pods \"shop-1-build-1\" is forbidden: error looking up service account shop/hearth-builder: serviceaccount \"hearth-builder\" not found";
    c.api
        .refuse_next_writes("pods", 2, 403, "Forbidden", message);
    c.apply_build("shop-1", build_spec("shop:main", json!({})))
        .await;
    c.wait_build("shop-1", "Succeeded", secs(90)).await;
    let notes = event_notes(&c, Some("CreateRefused")).await;
    assert!(
        notes.iter().any(|n| n.starts_with(
            "the API server refused builder pod shop-1-build-1 (403): pods \"shop-1-build-1\" is forbidden: error looking up service account"
        ) && n.ends_with("; trying again")),
        "{notes:?}"
    );
}
