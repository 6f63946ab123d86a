//! Round trips through both stores: every kind of entry comes back identical, and a second
//! save uploads only what changed (with and without the local index).

mod snapshot_support;

use hearth::snapshot::{restore, save, RestoreOptions, SaveOptions};
use hearth::store::Store;
use snapshot_support::*;

async fn round_trip(store: &Store, url: &str) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let root_only = fidelity_tree(&src);
    if root_only.is_empty() {
        eprintln!(
            "not root: skipping trusted.*/security.* xattrs, whiteout devices and foreign owners"
        );
    }
    let before = describe(&src);
    let opts = SaveOptions::new(url, "team-a", "shop");
    let report = save(store, &src, &opts).await.unwrap();
    assert_eq!(
        report.skipped,
        vec!["buildkitd.sock".to_string()],
        "the socket is skipped and reported"
    );
    // Sockets are not restored: expect the tree without it.
    let mut expected = before.clone();
    expected.remove(b"buildkitd.sock".as_slice());

    // Pinned by the digest the save reported, as the controller restores: every entry comes
    // back, setuid bits and file capabilities included.
    let dst = work.path().join("restored");
    let mut pinned = RestoreOptions::new(url, "team-a", "shop");
    pinned.manifest_sha256 = Some(report.manifest_sha256.parse().unwrap());
    let r = restore(store, &report.id, &dst, &pinned).await.unwrap();
    assert_eq!(r.id, report.id);
    assert_same(&expected, &describe(&dst));
    // Holes stay holes: the 8 MiB sparse file holds two 4 KiB blocks.
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(dst.join("sparse.img")).unwrap().blocks();
    assert!(
        blocks * 512 <= 64 * 1024,
        "sparse file restored with {blocks} blocks"
    );
    // No staging directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");

    // `latest` into an existing empty directory works too; unpinned, nothing vouches for the
    // manifest, so the setuid bit and the file capabilities are left out.
    let dst2 = work.path().join("restored2");
    std::fs::create_dir(&dst2).unwrap();
    let r = restore(
        store,
        "latest",
        &dst2,
        &RestoreOptions::new(url, "team-a", "shop"),
    )
    .await
    .unwrap();
    let privileged = if root_only.is_empty() { 1 } else { 2 };
    assert_eq!((r.pinned, r.stripped_privileges), (false, privileged));
    let mut unprivileged = expected.clone();
    let setuid = unprivileged.get_mut(b"setuid-bin".as_slice()).unwrap();
    *setuid = setuid.replace(" mode=104755 ", " mode=100755 ");
    if let Some(cap) = unprivileged.get_mut(b"cap-bin".as_slice()) {
        let at = cap.find(" xattrs=").unwrap();
        cap.replace_range(at.., " xattrs=[]");
    }
    assert_same(&unprivileged, &describe(&dst2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fidelity_round_trip_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(dir.path()).await;
    round_trip(&store, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fidelity_round_trip_s3() {
    let server = S3Server::start().await;
    let store = server.store().await;
    round_trip(&store, &server.url()).await;
}

/// The benchmark's server (s3s-fs with its own GetObject, which reads each object or range
/// in one piece) serves what a restore needs, ranges included, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fidelity_round_trip_s3_through_the_benchmarks_server() {
    let server = S3Server::start_fast_get().await;
    let store = server.store().await;
    round_trip(&store, &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_save_uploads_only_new_data() {
    let server = S3Server::start().await;
    let store = server.store().await;
    let url = server.url();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("blobs")).unwrap();
    for i in 0..8u64 {
        std::fs::write(src.join(format!("blobs/b{i}")), noise(i + 10, 2 << 20)).unwrap();
    }
    for i in 0..200u64 {
        std::fs::write(
            src.join(format!("f{i}.txt")),
            format!("small file {i}\n").repeat(20),
        )
        .unwrap();
    }
    let mut opts = SaveOptions::new(&url, "team-a", "shop");
    opts.tuning.pack_size = 4 << 20;
    let first = save(&store, &src, &opts).await.unwrap();
    assert!(first.uploaded_bytes >= 16 << 20, "{first:?}");

    // Change: one new 1 MiB blob, one small file rewritten, one blob deleted.
    std::fs::write(src.join("blobs/new"), noise(99, 1 << 20)).unwrap();
    std::fs::write(src.join("f7.txt"), b"rewritten").unwrap();
    std::fs::remove_file(src.join("blobs/b3")).unwrap();
    let second = save(&store, &src, &opts).await.unwrap();
    assert_eq!(second.parent.as_deref(), Some(first.id.as_str()));
    assert_eq!(second.new_raw_bytes, (1 << 20) + 9, "{second:?}");
    assert!(
        second.uploaded_bytes < (1 << 20) + 64 * 1024,
        "uploaded {} bytes for ~1 MiB of change",
        second.uploaded_bytes
    );

    // Nothing changed: the local index lets the save skip reading the files, except the two
    // written just before the previous save (inside the index's racy window, re-read to be safe).
    let third = save(&store, &src, &opts).await.unwrap();
    assert_eq!(third.new_chunks, 0, "{third:?}");
    assert!(third.bytes_read <= (1 << 20) + 9, "{third:?}");
    assert!(third.unchanged_files >= third.files - 2, "{third:?}");

    // Without the index every file is read again, and still nothing old is uploaded.
    std::fs::remove_dir_all(src.join(".hearth")).unwrap();
    // (Re-creating `.hearth` changes the root's mtime after the scan: describe before.)
    let saved = describe(&src);
    let fourth = save(&store, &src, &opts).await.unwrap();
    assert_eq!(fourth.new_chunks, 0, "{fourth:?}");
    assert_eq!(fourth.bytes_read, fourth.bytes);

    let dst = work.path().join("dst");
    restore(
        &store,
        &fourth.id,
        &dst,
        &RestoreOptions::new(&url, "team-a", "shop"),
    )
    .await
    .unwrap();
    assert_same(&saved, &describe(&dst));
    // The restore wrote an index: saving the restored tree reads nothing.
    let mut opts2 = SaveOptions::new(&url, "team-a", "shop-branch");
    opts2.tuning.pack_size = 4 << 20;
    let from_restored = save(&store, &dst, &opts2).await.unwrap();
    assert_eq!(
        (from_restored.bytes_read, from_restored.new_chunks),
        (0, 0),
        "{from_restored:?}"
    );
}
