//! Restores that must fail, and fail cleanly: a corrupted pack, a missing pack, a truncated
//! manifest, a manifest from another namespace or cache. Each names what is wrong and leaves
//! the target as it was. And a save killed mid-way leaves no snapshot, keeps the earlier
//! ones, and the next save reuses what it had uploaded.

mod snapshot_support;

use std::path::{Path, PathBuf};

use hearth::snapshot::catalog::CatalogError;
use hearth::snapshot::layout;
use hearth::snapshot::manifest::ManifestError;
use hearth::snapshot::pack::{PackError, PackIndex};
use hearth::snapshot::restore::RestoreError;
use hearth::snapshot::{restore, save, RestoreOptions, SaveOptions};
use hearth::store::Store;
use snapshot_support::*;

/// A small tree saved into `ns`/`cache`, in packs of 1 MiB; returns the snapshot id.
async fn saved(store: &Store, url: &str, src: &Path, ns: &str, cache: &str) -> String {
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..4u64 {
        std::fs::write(src.join(format!("d/blob{i}")), noise(i + 1, 1 << 20)).unwrap();
    }
    std::fs::write(src.join("small"), b"small file").unwrap();
    let mut opts = SaveOptions::new(url, ns, cache);
    opts.tuning.pack_size = 1 << 20;
    // Without the local index, whose creation would change the root's mtime after the scan.
    opts.use_index = false;
    save(store, src, &opts).await.unwrap().id
}

/// Restores into an absent target and into an empty one; both must fail, leave the target
/// as it was and leave no staging directory behind. Returns the error.
async fn failing_restore(store: &Store, url: &str, work: &Path, id: &str) -> RestoreError {
    let opts = RestoreOptions::new(url, "team-a", "shop");
    let parent = work.join("targets");
    std::fs::create_dir_all(&parent).unwrap();
    let absent = parent.join("absent");
    let err = restore(store, id, &absent, &opts).await.unwrap_err();
    assert!(!absent.exists(), "the absent target was created");
    let empty = parent.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err2 = restore(store, id, &empty, &opts).await.unwrap_err();
    assert_eq!(err.to_string(), err2.to_string());
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "the empty target was written"
    );
    let names: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("empty")],
        "staging left behind"
    );
    std::fs::remove_dir(&empty).unwrap();
    err
}

/// Runs every failure case against a store whose objects live as files under `objects`.
async fn failures(store: &Store, url: &str, objects: &Path) {
    let work = tempfile::tempdir().unwrap();
    let id = saved(store, url, &work.path().join("src"), "team-a", "shop").await;
    let manifest_file = objects.join(layout::manifest_key("team-a", "shop", &id));
    let packs = files_ending(&objects.join("team-a/packs"), ".pack");
    assert!(packs.len() >= 4, "{packs:?}");

    // A target that is not empty is refused and untouched.
    let full = work.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep"), b"mine").unwrap();
    let err = restore(
        store,
        &id,
        &full,
        &RestoreOptions::new(url, "team-a", "shop"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RestoreError::TargetNotEmpty(_)), "{err}");
    assert_eq!(std::fs::read(full.join("keep")).unwrap(), b"mine");

    // A corrupted pack: one flipped byte.
    let victim = &packs[1];
    let original = std::fs::read(victim).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(victim, &bad).unwrap();
    let err = failing_restore(store, url, work.path(), &id).await;
    let pack_id = victim.file_stem().unwrap().to_string_lossy().into_owned();
    assert!(
        matches!(&err, RestoreError::Corrupt(PackError::Corrupt { pack, .. }) if *pack == pack_id),
        "{err}"
    );
    assert!(err.to_string().contains(&pack_id), "{err}");

    // A missing pack.
    std::fs::remove_file(victim).unwrap();
    let err = failing_restore(store, url, work.path(), &id).await;
    assert!(
        matches!(&err, RestoreError::MissingPack { pack, .. } if *pack == pack_id),
        "{err}"
    );
    assert!(err.to_string().contains(&pack_id), "{err}");
    std::fs::write(victim, &original).unwrap();

    // A truncated manifest.
    let manifest = std::fs::read(&manifest_file).unwrap();
    std::fs::write(&manifest_file, &manifest[..manifest.len() * 2 / 3]).unwrap();
    let err = failing_restore(store, url, work.path(), &id).await;
    assert!(
        matches!(
            err,
            RestoreError::Catalog(CatalogError::Manifest(ManifestError::Damaged { .. }))
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&id), "{err}");
    std::fs::write(&manifest_file, &manifest).unwrap();

    // A manifest from another namespace, put where team-a's would be.
    let other = saved(store, url, &work.path().join("src-b"), "team-b", "shop").await;
    let foreign =
        std::fs::read(objects.join(layout::manifest_key("team-b", "shop", &other))).unwrap();
    let planted = objects.join(layout::manifest_key("team-a", "shop", &other));
    std::fs::write(&planted, &foreign).unwrap();
    let err = failing_restore(store, url, work.path(), &other).await;
    assert!(
        matches!(&err, RestoreError::Catalog(CatalogError::Manifest(ManifestError::Foreign { namespace, .. })) if namespace == "team-b"),
        "{err}"
    );
    std::fs::remove_file(&planted).unwrap();
    // And one from another cache of the same namespace.
    let sibling = saved(
        store,
        url,
        &work.path().join("src-c"),
        "team-a",
        "other-cache",
    )
    .await;
    let bytes =
        std::fs::read(objects.join(layout::manifest_key("team-a", "other-cache", &sibling)))
            .unwrap();
    std::fs::write(
        objects.join(layout::manifest_key("team-a", "shop", &sibling)),
        &bytes,
    )
    .unwrap();
    let err = failing_restore(store, url, work.path(), &sibling).await;
    assert!(
        matches!(
            &err,
            RestoreError::Catalog(CatalogError::Manifest(ManifestError::Foreign { .. }))
        ),
        "{err}"
    );

    // Everything repaired: the original restores.
    let ok = work.path().join("ok");
    restore(store, &id, &ok, &RestoreOptions::new(url, "team-a", "shop"))
        .await
        .unwrap();
    assert_same(&describe(&work.path().join("src")), &describe(&ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshots_fail_cleanly_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(dir.path()).await;
    failures(&store, &url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshots_fail_cleanly_s3() {
    let server = S3Server::start().await;
    let store = server.store().await;
    let objects: PathBuf = server.object_path("");
    failures(&store, &server.url(), &objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_save_leaves_no_snapshot_and_the_next_save_resumes() {
    let store_dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(store_dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let earlier = saved(&store, &url, &work.path().join("earlier"), "team-a", "shop").await;

    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..32u64 {
        std::fs::write(src.join(format!("blob{i:02}")), noise(100 + i, 2 << 20)).unwrap();
    }
    let tree_bytes = 64u64 << 20;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["snapshot", "save"])
        .arg(&src)
        .args([
            "--store",
            &url,
            "--namespace",
            "team-a",
            "--cache",
            "shop",
            "--pack-size-mib",
            "1",
            "--uploads",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a few packs are complete (their index is written after the pack).
    let packs_dir = store_dir.path().join("team-a/packs");
    let earlier_indexes = files_ending(&packs_dir, ".idx");
    let before = earlier_indexes.len();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the save finished ({status}) before it could be killed; make the tree bigger");
        }
        if files_ending(&packs_dir, ".idx").len() >= before + 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // No new snapshot; the earlier one is intact.
    let ids = hearth::snapshot::catalog::snapshot_ids(&store, "team-a", "shop")
        .await
        .unwrap();
    assert_eq!(ids, vec![earlier.clone()]);
    let check = hearth::snapshot::verify::verify(&store, "team-a", "shop", &earlier, true)
        .await
        .unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);

    // What the killed save completed (packs with their index) is not uploaded again.
    let mut reusable = 0u64;
    for idx in files_ending(&packs_dir, ".idx")
        .into_iter()
        .filter(|i| !earlier_indexes.contains(i))
    {
        let id = idx.file_stem().unwrap().to_string_lossy().into_owned();
        let index = PackIndex::decode(&id, &std::fs::read(&idx).unwrap()).unwrap();
        reusable += index
            .chunks
            .iter()
            .map(|(_, loc)| loc.raw as u64)
            .sum::<u64>();
    }
    assert!(reusable > 0, "the killed save completed no pack");
    let mut opts = SaveOptions::new(&url, "team-a", "shop");
    opts.tuning.pack_size = 1 << 20;
    opts.use_index = false;
    let resumed = save(&store, &src, &opts).await.unwrap();
    assert_eq!(resumed.new_raw_bytes, tree_bytes - reusable, "{resumed:?}");
    let dst = work.path().join("dst");
    restore(
        &store,
        &resumed.id,
        &dst,
        &RestoreOptions::new(&url, "team-a", "shop"),
    )
    .await
    .unwrap();
    assert_same(&describe(&src), &describe(&dst));
}
