//! Garbage collection: retention, the two phases and their grace period, and a save running
//! while gc condemns the packs it reuses loses nothing. Ages are simulated by backdating the
//! store's files (the file store reports file mtimes as object times), never by sleeping.

mod snapshot_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use hearth::snapshot::{
    catalog, gc, layout, restore, save, verify, GcOptions, RestoreOptions, SaveOptions,
};
use hearth::store::Store;
use snapshot_support::*;

const HOUR: Duration = Duration::from_secs(3600);

/// Moves the mtime of every file under `dir` two hours back.
fn age(dir: &Path) {
    let old = filetime::FileTime::from_system_time(SystemTime::now() - 2 * HOUR);
    for f in files_ending(dir, "") {
        filetime::set_file_mtime(&f, old).unwrap();
    }
}

fn options() -> GcOptions {
    let mut o = GcOptions::new("team-a");
    o.grace = HOUR;
    o
}

fn write_blobs(dir: &Path, prefix: &str, seeds: std::ops::Range<u64>) {
    std::fs::create_dir_all(dir).unwrap();
    for i in seeds {
        std::fs::write(dir.join(format!("{prefix}{i}")), noise(i, 1 << 20)).unwrap();
    }
}

fn save_opts(url: &str) -> SaveOptions {
    let mut o = SaveOptions::new(url, "team-a", "shop");
    o.tuning.pack_size = 1 << 20;
    o.use_index = false;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_alongside_a_running_save_loses_nothing() {
    let store_dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(store_dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_blobs(&src.join("keep"), "k", 0..4);
    write_blobs(&src.join("gone"), "g", 10..14);
    let first = save(&store, &src, &save_opts(&url)).await.unwrap();
    let packs_dir = store_dir.path().join("team-a/packs");
    age(&packs_dir);

    // The next save reuses `keep/`'s packs. While it uploads, the first snapshot is
    // forgotten and gc runs: it condemns every pack of the first snapshot, including the
    // ones the running save reuses; the save's own new packs are too young to condemn.
    std::fs::remove_dir_all(src.join("gone")).unwrap();
    write_blobs(&src.join("new"), "n", 20..24);
    let mut opts = save_opts(&url);
    let (s, u, id) = (store.clone(), url.clone(), first.id.clone());
    let during = Arc::new(tokio::sync::Mutex::new(None));
    let report_slot = during.clone();
    opts.before_commit = Some(Arc::new(move || {
        let (s, id, slot) = (s.clone(), id.clone(), report_slot.clone());
        let _ = &u;
        async move {
            catalog::forget(&s, "team-a", "shop", &id).await.unwrap();
            let r = gc(&s, &options()).await.unwrap();
            *slot.lock().await = Some(r);
        }
        .boxed()
    }));
    let second = save(&store, &src, &opts).await.unwrap();
    let during = during.lock().await.clone().expect("gc ran during the save");
    assert_eq!(during.condemned, 8, "{during:?}");
    assert_eq!(during.deleted_packs, 0, "{during:?}");

    // The save took back the packs it reuses; only `gone/`'s stay condemned.
    let trash: Vec<_> = store.list(&layout::trash_prefix("team-a")).await.unwrap();
    assert_eq!(trash.len(), 4, "{trash:?}");

    // A grace period later, gc deletes exactly those.
    age(&store_dir.path().join("team-a/trash"));
    let after = gc(&store, &options()).await.unwrap();
    assert_eq!((after.deleted_packs, after.rescued), (4, 0), "{after:?}");
    let check = verify::verify(&store, "team-a", "shop", &second.id, true)
        .await
        .unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    let dst = work.path().join("dst");
    restore(
        &store,
        "latest",
        &dst,
        &RestoreOptions::new(&url, "team-a", "shop"),
    )
    .await
    .unwrap();
    assert_same(&describe(&src), &describe(&dst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_two_phases() {
    let store_dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(store_dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut ids = Vec::new();
    for round in 0..3u64 {
        let _ = std::fs::remove_dir_all(&src);
        write_blobs(&src, "b", round * 10..round * 10 + 2);
        ids.push(save(&store, &src, &save_opts(&url)).await.unwrap().id);
    }
    let listed = hearth::snapshot::list_snapshots(&store, "team-a", "shop")
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), ids);
    assert!(listed.iter().all(|s| s.bytes == 2 << 20 && s.new_bytes > 0));

    // Keep the newest: two snapshots forgotten, but their packs are too young to condemn.
    let mut o = options();
    o.retain = Some(1);
    let r = gc(&store, &o).await.unwrap();
    assert_eq!(
        (r.forgotten.len(), r.condemned, r.deleted_packs),
        (2, 0, 0),
        "{r:?}"
    );
    // Two hours later (an injected clock): condemned first, deleted only on the next run.
    let mut later = options();
    later.now = SystemTime::now() + 2 * HOUR;
    let r = gc(&store, &later).await.unwrap();
    assert_eq!(
        (r.condemned, r.deleted_packs, r.live_packs),
        (4, 0, 2),
        "{r:?}"
    );
    later.now += 2 * HOUR;
    let r = gc(&store, &later).await.unwrap();
    assert_eq!(
        (r.condemned, r.deleted_packs, r.live_packs),
        (0, 4, 2),
        "{r:?}"
    );
    assert!(r.deleted_bytes >= 4 << 20);
    let check = verify::verify(&store, "team-a", "shop", "latest", true)
        .await
        .unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);

    // Deleting a cache forgets all its snapshots.
    assert_eq!(
        catalog::forget_cache(&store, "team-a", "shop")
            .await
            .unwrap(),
        1
    );
    assert!(hearth::snapshot::list_snapshots(&store, "team-a", "shop")
        .await
        .unwrap()
        .is_empty());
    let _: &Store = &store;
}

/// What the controller's gc Job runs, against the S3 protocol server: `hearth snapshot gc
/// --retain --keep --json` forgets the oldest snapshots except those kept for live replicas,
/// and its output is the listing the controller copies into BuildCache status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_job_on_s3_keeps_replica_snapshots_and_lists_what_remains() {
    let server = S3Server::start().await;
    let store = server.store().await;
    let url = server.url();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut ids = Vec::new();
    for round in 0..4u64 {
        let _ = std::fs::remove_dir_all(&src);
        write_blobs(&src, "b", round * 10..round * 10 + 2);
        ids.push(save(&store, &src, &save_opts(&url)).await.unwrap().id);
    }
    let endpoint = server.options().endpoint.unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "snapshot", "gc", "--cache", "shop", "--retain", "1", "--keep",
        ])
        .arg(&ids[0])
        .args(["--json", "--store", &url, "--namespace", "team-a"])
        .args(["--s3-endpoint", &endpoint, "--s3-path-style"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.len() < 4096, "fits a termination message: {stdout}");
    let listed = hearth::controller::snapshot_records::after_gc(&[], stdout.trim()).expect(&stdout);
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [ids[3].as_str(), ids[0].as_str()],
        "newest first: the retained one and the one a replica matches"
    );
    assert!(listed.iter().all(|s| s.bytes == 2 << 20 && s.new_bytes > 0));
    // The kept snapshot still restores whole.
    let dst = work.path().join("dst");
    restore(
        &store,
        &ids[0],
        &dst,
        &RestoreOptions::new(&url, "team-a", "shop"),
    )
    .await
    .unwrap();
    let forgotten = catalog::forget_cache(&store, "team-a", "shop")
        .await
        .unwrap();
    assert_eq!(forgotten, 2);
}
