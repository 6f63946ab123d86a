//! Hostile volumes and manifests (issue 15): whoever can write a replica (a build step, an exec
//! into the builder) or a manifest must not make the root save and restore Jobs write outside
//! the volume, restore device nodes or data a BuildKit state dir never holds, or store a torn
//! file as a sound snapshot. Everything runs the real save and restore against a filesystem
//! store in a temporary directory.

mod snapshot_support;

use std::path::Path;

use hearth::snapshot::catalog::{self, CatalogError};
use hearth::snapshot::codec::ByteBuf;
use hearth::snapshot::layout;
use hearth::snapshot::manifest::{Entry, Kind, Manifest, ManifestError};
use hearth::snapshot::restore::RestoreError;
use hearth::snapshot::{restore, save, RestoreOptions, SaveOptions};
use hearth::store::Store;
use snapshot_support::*;

const NS: &str = "team-a";
const CACHE: &str = "shop";

/// A small state dir: two files, one of them big enough for several chunks.
fn small_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::write(dir.join("db/meta.db"), noise(7, 600 << 10)).unwrap();
    std::fs::write(dir.join("small"), b"small file").unwrap();
}

/// What every test starts from: a filesystem store in a temporary directory, and a small
/// state dir `src` in another.
struct Setup {
    store_dir: tempfile::TempDir,
    store: Store,
    url: String,
    work: tempfile::TempDir,
    src: std::path::PathBuf,
}

async fn setup() -> Setup {
    let store_dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(store_dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    small_tree(&src);
    Setup {
        store_dir,
        store,
        url,
        work,
        src,
    }
}

/// Saves `dir` and returns the snapshot id and its manifest, to forge from.
async fn saved(store: &Store, url: &str, dir: &Path) -> (String, Manifest) {
    let id = save_dir(store, url, dir).await.id;
    let m = catalog::load(store, NS, CACHE, &id).await.unwrap();
    (id, m)
}

/// Saves `dir` with the local index on, as the save Job does.
async fn save_dir(store: &Store, url: &str, dir: &Path) -> hearth::snapshot::SaveReport {
    save(store, dir, &SaveOptions::new(url, NS, CACHE))
        .await
        .unwrap()
}

/// Replaces the manifest of `original`'s snapshot with `edit` applied to a copy of it, sealed
/// again (so the checksum holds: a forged manifest, as someone with write access to the store
/// would make).
fn forge(objects: &Path, original: &Manifest, edit: impl FnOnce(&mut Manifest)) {
    let mut m = original.clone();
    edit(&mut m);
    std::fs::write(
        objects.join(layout::manifest_key(NS, CACHE, &m.id)),
        m.encode().unwrap(),
    )
    .unwrap();
}

/// Restores a forged snapshot into an absent target: it must fail as an inconsistent
/// manifest, with a message naming `what` and saying `why`, and create nothing.
async fn refused(store: &Store, url: &str, id: &str, dst: &Path, what: &str, why: &str) {
    let r = restore(store, id, dst, &RestoreOptions::new(url, NS, CACHE)).await;
    let err = r.expect_err(what);
    assert!(
        matches!(
            &err,
            RestoreError::Catalog(CatalogError::Manifest(ManifestError::Inconsistent { .. }))
        ),
        "{what}: {err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(what) && msg.contains(why), "{what}: {msg}");
    assert!(!dst.exists(), "{what}: the target was created");
}

fn entry(path: &str, kind: Kind) -> Entry {
    Entry {
        path: ByteBuf(path.as_bytes().to_vec()),
        kind,
        mode: 0o666,
        uid: 0,
        gid: 0,
        mtime_ns: 1_600_000_000_000_000_000,
        xattrs: vec![],
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hearth_symlink_in_the_volume_is_replaced_not_followed() {
    let Setup {
        store_dir: _store_dir,
        store,
        url,
        work,
        src,
    } = setup().await;
    // Somewhere the Job can write and the volume's writer cannot: a victim file named
    // `index` in another directory.
    let elsewhere = work.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("index"), b"victim").unwrap();
    std::os::unix::fs::symlink(&elsewhere, src.join(".hearth")).unwrap();

    // Older than the index's racy window, so that the save records them.
    std::thread::sleep(std::time::Duration::from_millis(150));
    save_dir(&store, &url, &src).await;
    assert_eq!(
        std::fs::read(elsewhere.join("index")).unwrap(),
        b"victim",
        "the save wrote its index through the .hearth symlink"
    );
    assert_eq!(names(&elsewhere), vec!["index"]);
    let meta = std::fs::symlink_metadata(src.join(".hearth")).unwrap();
    assert!(meta.is_dir(), ".hearth was not replaced by a directory");
    assert!(src.join(".hearth/index").is_file());
    // The new index is used: nothing unchanged is read again.
    let again = save_dir(&store, &url, &src).await;
    assert_eq!(again.unchanged_files, again.files, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hearth_file_in_the_volume_is_replaced_by_the_index_directory() {
    let Setup {
        store_dir: _store_dir,
        store,
        url,
        work: _work,
        src,
    } = setup().await;
    std::fs::write(src.join(".hearth"), b"not a directory").unwrap();
    save_dir(&store, &url, &src).await;
    assert!(
        std::fs::symlink_metadata(src.join(".hearth"))
            .unwrap()
            .is_dir(),
        ".hearth is still a file: the index was not written"
    );
    assert!(src.join(".hearth/index").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_index_symlinks_are_not_followed() {
    let Setup {
        store_dir: _store_dir,
        store,
        url,
        work,
        src,
    } = setup().await;
    let victim = work.path().join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    let hearth = src.join(".hearth");
    std::fs::create_dir(&hearth).unwrap();
    // The temporary name the index writer used (`index.tmp-<pid>`), and the index itself.
    std::os::unix::fs::symlink(
        &victim,
        hearth.join(format!("index.tmp-{}", std::process::id())),
    )
    .unwrap();
    std::os::unix::fs::symlink(&victim, hearth.join("index")).unwrap();

    save_dir(&store, &url, &src).await;
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"victim",
        "the save wrote its index through a planted symlink"
    );
    let index = std::fs::symlink_metadata(hearth.join("index")).unwrap();
    assert!(index.is_file(), "the index is not a regular file");
    assert!(!names(&hearth).iter().any(|n| n.starts_with("index.tmp-")
        && std::fs::symlink_metadata(hearth.join(n)).unwrap().is_file()));
}

/// A manifest with a root `.hearth` entry (a symlink out of the volume, or a directory whose
/// `index` the restore would then overwrite) is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_a_hearth_entry_is_refused() {
    let Setup {
        store_dir,
        store,
        url,
        work,
        src,
    } = setup().await;
    let (id, original) = saved(&store, &url, &src).await;
    let elsewhere = work.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let target = elsewhere.to_string_lossy().into_owned();

    let forgeries: Vec<(&str, Vec<Entry>)> = vec![
        (
            "symlink",
            vec![entry(
                ".hearth",
                Kind::Symlink {
                    target: ByteBuf(target.into_bytes()),
                },
            )],
        ),
        (
            "directory",
            vec![
                entry(".hearth", Kind::Dir),
                entry(
                    ".hearth/index",
                    Kind::File {
                        size: 0,
                        extents: vec![],
                    },
                ),
            ],
        ),
    ];
    for (what, extra) in forgeries {
        forge(store_dir.path(), &original, |m| m.entries.extend(extra));
        let dst = work.path().join(format!("dst-{what}"));
        let r = restore(&store, &id, &dst, &RestoreOptions::new(&url, NS, CACHE)).await;
        assert!(
            names(&elsewhere).is_empty(),
            "{what}: the restore wrote outside the target"
        );
        drop(r);
        refused(&store, &url, &id, &dst, "\".hearth\"", "reserved").await;
    }
}

fn manifests(store_dir: &Path) -> Vec<std::path::PathBuf> {
    files_ending(&store_dir.join(NS).join("snapshots"), ".manifest")
}

/// buildkitd holds an exclusive `flock` on `buildkitd.lock` in its state dir while it runs:
/// a save then would store a tree being rewritten, so it is refused, naming the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_is_refused_while_buildkitd_holds_its_lock() {
    let Setup {
        store_dir,
        url,
        work: _work,
        src,
        ..
    } = setup().await;
    std::fs::write(src.join("buildkitd.lock"), b"").unwrap();
    let save = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["snapshot", "save"])
            .arg(&src)
            .args(["--store", &url, "--namespace", NS, "--cache", CACHE])
            .output()
            .unwrap()
    };
    // "buildkitd": another open file description holding the lock.
    let lock = std::fs::File::open(src.join("buildkitd.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let out = save();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the save of a live state dir succeeded: {stderr}"
    );
    assert!(
        stderr.contains("buildkitd.lock") && stderr.contains("buildkitd is still running"),
        "{stderr}"
    );
    assert!(
        manifests(store_dir.path()).is_empty(),
        "a snapshot was written"
    );
    // buildkitd stopped: the same tree saves.
    drop(lock);
    let out = save();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(manifests(store_dir.path()).len(), 1);
}

/// A file rewritten (same size) or appended to between the scan and its reading would be
/// stored torn, or as a version other than the one the scan recorded: the save fails instead,
/// naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_during_the_save_fails_it() {
    use futures::FutureExt;
    let store_dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(store_dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    for (what, len) in [("rewritten", 600usize << 10), ("appended", 700 << 10)] {
        let src = work.path().join(what);
        small_tree(&src);
        let victim = src.join("db/meta.db");
        let mut opts = SaveOptions::new(&url, NS, CACHE);
        opts.use_index = false;
        // Runs once the tree is scanned, before any file is read.
        opts.after_scan = Some(std::sync::Arc::new(move || {
            let victim = victim.clone();
            async move {
                // Past the coarsest timestamp tick, so the change shows in mtime and ctime.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                std::fs::write(&victim, noise(8, len)).unwrap();
            }
            .boxed()
        }));
        let err = save(&store, &src, &opts).await.expect_err(what).to_string();
        assert!(
            err.contains("db/meta.db") && err.contains("changed during the save"),
            "{what}: {err}"
        );
        assert!(
            manifests(store_dir.path()).is_empty(),
            "{what}: a snapshot was written"
        );
    }
}

/// BuildKit state holds overlay whiteouts (0/0 character devices) and no other device: a
/// manifest with a block device or a real character device (a world-writable /dev/mem on the
/// node) is refused before anything is created; a whiteout restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_device_nodes_other_than_whiteouts_is_refused() {
    let Setup {
        store_dir,
        store,
        url,
        work,
        src,
    } = setup().await;
    let (id, original) = saved(&store, &url, &src).await;
    let makedev = rustix::fs::makedev;
    for (n, kind) in [
        Kind::BlockDev {
            rdev: makedev(8, 0),
        },
        Kind::BlockDev { rdev: 0 },
        Kind::CharDev {
            rdev: makedev(1, 1),
        },
        Kind::CharDev {
            rdev: makedev(1, 3),
        },
        Kind::CharDev {
            rdev: makedev(0, 1),
        },
    ]
    .into_iter()
    .enumerate()
    {
        forge(store_dir.path(), &original, |m| {
            m.entries.push(entry("dev", kind))
        });
        let dst = work.path().join(format!("dst-{n}"));
        refused(&store, &url, &id, &dst, "\"dev\"", "device").await;
    }
    if is_root() {
        forge(store_dir.path(), &original, |m| {
            m.entries.push(entry("whiteout", Kind::CharDev { rdev: 0 }))
        });
        let dst = work.path().join("whiteout");
        restore(&store, &id, &dst, &RestoreOptions::new(&url, NS, CACHE))
            .await
            .unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::symlink_metadata(dst.join("whiteout")).unwrap();
        assert!(meta.file_type().is_char_device() && meta.rdev() == 0);
    } else {
        eprintln!("not root: the whiteout restore is not tried");
    }
}

/// File data past the declared size (which a restore would write, growing the file) is
/// refused, whatever the offsets (including ones that overflow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_data_past_a_files_size_is_refused() {
    let Setup {
        store_dir,
        store,
        url,
        work,
        src,
    } = setup().await;
    let (id, original) = saved(&store, &url, &src).await;
    let file = original
        .entries
        .iter()
        .position(|e| e.path.0 == b"db/meta.db")
        .unwrap();
    type Edit = fn(&mut u64, &mut Vec<hearth::snapshot::manifest::Extent>);
    let edits: [(&str, Edit); 3] = [
        ("shrunk", |size, _| *size = 10),
        ("moved past the end", |size, x| x[0].offset = *size),
        ("overflowing", |_, x| x[0].offset = u64::MAX - 10),
    ];
    for (what, edit) in edits {
        forge(store_dir.path(), &original, |m| {
            if let Kind::File { size, extents } = &mut m.entries[file].kind {
                edit(size, extents);
            }
        });
        let dst = work.path().join(what.replace(' ', "-"));
        refused(&store, &url, &id, &dst, "\"db/meta.db\"", "past").await;
    }
    // The untouched manifest still restores.
    forge(store_dir.path(), &original, |_| {});
    let dst = work.path().join("ok");
    restore(&store, &id, &dst, &RestoreOptions::new(&url, NS, CACHE))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dst.join("db/meta.db")).unwrap(),
        std::fs::read(src.join("db/meta.db")).unwrap()
    );
}

/// The save refuses the same device nodes, naming them, rather than write a snapshot no
/// restore accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_of_a_tree_with_a_device_node_other_than_a_whiteout_is_refused() {
    if !is_root() {
        eprintln!("not root: device nodes cannot be made; skipped");
        return;
    }
    let Setup {
        store_dir,
        store,
        url,
        work: _work,
        src,
    } = setup().await;
    let (block, char) = (
        rustix::fs::FileType::BlockDevice,
        rustix::fs::FileType::CharacterDevice,
    );
    for (name, ft, rdev, what) in [
        ("loop", block, rustix::fs::makedev(7, 0), "block device"),
        (
            "mem",
            char,
            rustix::fs::makedev(1, 1),
            "character device 1:1",
        ),
    ] {
        let path = src.join("db").join(name);
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        rustix::fs::mknodat(rustix::fs::CWD, &path, ft, mode, rdev).unwrap();
        let err = save(&store, &src, &SaveOptions::new(&url, NS, CACHE))
            .await
            .expect_err(what)
            .to_string();
        assert!(
            err.contains(&format!("db/{name}")) && err.contains(what),
            "{err}"
        );
        assert!(
            manifests(store_dir.path()).is_empty(),
            "{what}: a snapshot was written"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

/// One damaged manifest must not take the rest of the namespace with it: `ls` lists the
/// sound snapshots, `restore latest` falls back to the newest sound one and says which it
/// skipped, and gc goes on (reporting it) and keeps every pack the sound snapshots use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_manifest_is_skipped_and_reported() {
    let Setup {
        store_dir,
        store,
        url,
        work,
        src,
    } = setup().await;
    let mut opts = SaveOptions::new(&url, NS, CACHE);
    opts.use_index = false;
    let older = save(&store, &src, &opts).await.unwrap().id;
    std::fs::write(src.join("small"), b"changed").unwrap();
    let newer = save(&store, &src, &opts).await.unwrap().id;
    let key = store_dir
        .path()
        .join(layout::manifest_key(NS, CACHE, &newer));
    let bytes = std::fs::read(&key).unwrap();
    std::fs::write(&key, &bytes[..bytes.len() / 2]).unwrap();

    let listed = catalog::list_snapshots(&store, NS, CACHE).await;
    let ids: Vec<String> = listed.expect("ls").into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![older.clone()]);

    let dst = work.path().join("latest");
    let r = restore(
        &store,
        "latest",
        &dst,
        &RestoreOptions::new(&url, NS, CACHE),
    )
    .await
    .expect("restore latest");
    assert_eq!(r.id, older);
    let skipped = serde_json::to_value(&r).unwrap()["skipped"].to_string();
    assert!(skipped.contains(&newer), "{skipped}");

    // Twice, past the grace period: what only the damaged snapshot used may go, nothing else.
    let mut g = hearth::snapshot::GcOptions::new(NS);
    g.grace = std::time::Duration::ZERO;
    for _ in 0..2 {
        g.now = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        let report = hearth::snapshot::gc(&store, &g).await.expect("gc");
        let damaged = serde_json::to_value(&report).unwrap()["damaged"].to_string();
        assert!(damaged.contains(&newer), "{damaged}");
    }
    let dst = work.path().join("after-gc");
    restore(&store, &older, &dst, &RestoreOptions::new(&url, NS, CACHE))
        .await
        .expect("the sound snapshot after gc");
    assert_eq!(
        std::fs::read(dst.join("db/meta.db")).unwrap(),
        noise(7, 600 << 10)
    );
}

fn hearth_snapshot(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("snapshot")
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Issue 15's CLI nits: `forget` of an id the cache does not have fails naming it (it said
/// "forgot 1" and exited 0), and `verify` says it is a pack's index that is missing when only
/// the index is (it said the pack was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_of_a_missing_id_fails_and_verify_names_a_missing_index() {
    let Setup {
        store_dir,
        store,
        url,
        work: _work,
        src,
    } = setup().await;
    let (id, original) = saved(&store, &url, &src).await;
    let common = ["--store", url.as_str(), "--namespace", NS, "--cache", CACHE];

    let missing = "20200101T000000.000Z-00000000";
    let (ok, stdout, stderr) = hearth_snapshot(&[&["forget", missing][..], &common].concat());
    assert!(!ok, "forget of a missing id succeeded: {stdout}");
    assert!(
        stderr.contains(missing) && stderr.contains("not found"),
        "{stderr}"
    );
    assert!(!stdout.contains("forgot"), "{stdout}");
    assert_eq!(manifests(store_dir.path()).len(), 1);

    let pack = &original.packs[0].id;
    let index_key = layout::pack_index_key(NS, pack);
    std::fs::remove_file(store_dir.path().join(&index_key)).unwrap();
    let (ok, stdout, _) = hearth_snapshot(&[&["verify", id.as_str()][..], &common].concat());
    assert!(!ok, "{stdout}");
    let problem = stdout.lines().find(|l| l.starts_with("problem:")).unwrap();
    assert!(
        problem.contains(&format!("index of pack {pack} is missing"))
            && problem.contains(&index_key),
        "{problem}"
    );
    assert!(!problem.contains(".pack"), "the pack is there: {problem}");
}

/// The entries are created while the first packs download: when creating them fails (here
/// a file whose size no filesystem takes), the restore fails with that error, naming the
/// file, instead of waiting for ever with its downloads held, and leaves nothing behind.
/// (The restore runs on a thread of its own, so that a restore that hangs fails the test
/// instead of hanging it.)
#[test]
fn a_restore_whose_entries_cannot_be_created_fails_and_leaves_nothing() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let Setup {
                store_dir,
                store,
                url,
                work,
                src,
            } = setup().await;
            let (id, original) = saved(&store, &url, &src).await;
            forge(store_dir.path(), &original, |m| {
                m.entries.push(entry(
                    "huge",
                    Kind::File {
                        size: u64::MAX,
                        extents: vec![],
                    },
                ))
            });
            let dst = work.path().join("dst");
            let result = restore(&store, &id, &dst, &RestoreOptions::new(&url, NS, CACHE)).await;
            let err = result.map(|_| ()).map_err(|e| e.to_string());
            tx.send((err, dst.exists(), names(work.path()))).unwrap();
        });
    });
    let (err, dst_exists, left) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the restore waited for ever");
    let err = err.expect_err("a file of u64::MAX bytes was created");
    assert!(err.contains("huge"), "{err}");
    assert!(!dst_exists);
    // No staging directory is left beside the target.
    assert_eq!(left, ["src"]);
}
