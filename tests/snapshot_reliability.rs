//! Snapshot reliability with the real `hearth` binary as a process, against a filesystem store
//! and an S3 server on 127.0.0.1 (s3s-fs): a save SIGKILLed mid-upload leaves nothing
//! visible, the next save is the one `ls` and `restore latest` see, and gc (after its grace)
//! takes the killed attempt's orphan packs and nothing live; forgetting snapshots whose data
//! already vanished succeeds, forgetting an id that never existed does not. Ages are
//! simulated by backdating the objects' files (both stores report file mtimes as object
//! times), never by sleeping.

mod snapshot_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use hearth::snapshot::{catalog, layout};
use hearth::store::Store;
use snapshot_support::*;

const NS: &str = "team-a";
const CACHE: &str = "shop";

/// A store as the binary reaches it: its environment, the directory where its objects are
/// files, and a client of it for the test's own reads.
struct Target {
    env: Vec<(&'static str, String)>,
    objects: PathBuf,
    store: Store,
    _server: Option<S3Server>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    async fn fs() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let (store, url) = fs_store(dir.path()).await;
        Target {
            env: vec![("HEARTH_STORE", url)],
            objects: dir.path().to_path_buf(),
            store,
            _server: None,
            _dir: Some(dir),
        }
    }

    async fn s3() -> Target {
        let server = S3Server::start().await;
        Target {
            // What the controller gives its snapshot Jobs.
            env: vec![
                ("HEARTH_STORE", server.url()),
                ("AWS_ENDPOINT_URL_S3", server.endpoint.clone()),
                ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID", "hearth".into()),
                ("AWS_SECRET_ACCESS_KEY", "hearth-secret".into()),
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ],
            objects: server.object_path(""),
            store: server.store().await,
            _server: Some(server),
            _dir: None,
        }
    }

    /// `hearth snapshot ARGS` for namespace `team-a`, cache `shop`, nothing else inherited.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearth"));
        c.arg("snapshot")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HEARTH_NAMESPACE", NS)
            .env("HEARTH_CACHE", CACHE)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs `hearth snapshot ARGS`: whether it succeeded, and its stdout and stderr.
    async fn run(&self, args: &[&str]) -> (bool, String) {
        let out = self.command(args).output().await.unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Runs `hearth snapshot ARGS`, which must succeed; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "hearth snapshot {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The snapshot ids `hearth snapshot ls` shows.
    async fn listed(&self) -> Vec<String> {
        let out = self.ok(&["ls", "--json"]).await;
        let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        all.iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Saves `dir` in packs of 1 MiB and returns the id it prints. Without the local index,
    /// whose creation would change the root's mtime after the scan.
    async fn save(&self, dir: &Path) -> String {
        let dir = dir.to_str().unwrap();
        let out = self
            .ok(&["save", dir, "--pack-size-mib", "1", "--no-index"])
            .await;
        out.trim().to_string()
    }

    /// The ids of the pack objects (`.pack`) in the store.
    fn pack_ids(&self) -> BTreeSet<String> {
        files_ending(&self.objects.join(NS).join("packs"), ".pack")
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// The packs snapshot `id`'s manifest refers to.
    async fn packs_of(&self, id: &str) -> BTreeSet<String> {
        let m = catalog::load(&self.store, NS, CACHE, id).await.unwrap();
        m.packs.into_iter().map(|p| p.id).collect()
    }

    /// Moves every object's time two hours back (past gc's one-hour grace).
    fn age_everything(&self) {
        let old = filetime::FileTime::from_system_time(SystemTime::now() - 2 * HOUR);
        for f in files_ending(&self.objects, "") {
            filetime::set_file_mtime(&f, old).unwrap();
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// `count` files of 2 MiB of noise from `seed` on.
fn write_tree(dir: &Path, seed: u64, count: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let name = dir.join(format!("blob{:03}", seed + i));
        std::fs::write(name, noise(seed + i, 2 << 20)).unwrap();
    }
}

/// What a killed restore into `<volume>/buildkit` left, and what an attacker planted beside it.
struct StaleStaging {
    /// The killed restore's staging directory, half written.
    beside: PathBuf,
    /// A symlink under a staging name, pointing at `outside`.
    link: PathBuf,
    outside: PathBuf,
    /// Another target's staging directory.
    other: PathBuf,
}

impl StaleStaging {
    fn plant(work: &Path, volume: &Path) -> StaleStaging {
        let beside = volume.join(".buildkit.hearth-restore-0badc0de");
        std::fs::create_dir_all(beside.join("runc-overlayfs/snapshots")).unwrap();
        std::fs::write(beside.join("runc-overlayfs/half-written"), noise(9, 4096)).unwrap();
        let outside = work.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"not the restore's").unwrap();
        let link = volume.join(".buildkit.hearth-restore-link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let other = volume.join(".other.hearth-restore-12345678");
        std::fs::create_dir(&other).unwrap();
        StaleStaging {
            beside,
            link,
            outside,
            other,
        }
    }

    fn assert_swept(&self) {
        assert!(
            !self.beside.exists(),
            "the killed restore's staging is swept"
        );
        assert!(
            std::fs::symlink_metadata(&self.link).is_err(),
            "the planted link is removed"
        );
        assert_eq!(
            std::fs::read(self.outside.join("keep")).unwrap(),
            b"not the restore's",
            "the link is not followed"
        );
        assert!(self.other.exists(), "another target's staging is left");
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A restore killed outright leaves its staging directory beside the target; the next restore
/// into that target removes it (a symlink planted under such a name is removed, not followed)
/// and leaves another target's staging alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_sweeps_the_staging_left_by_a_killed_one() {
    let t = Target::fs().await;
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write_tree(&tree, 1, 3);
    t.save(&tree).await;
    let volume = work.path().join("volume");
    let stale = StaleStaging::plant(work.path(), &volume);

    let target = volume.join("buildkit");
    t.ok(&["restore", "latest", target.to_str().unwrap()]).await;
    assert_same(&describe(&tree), &describe(&target));
    stale.assert_swept();
    let left = names_in(&volume);
    assert_eq!(left.len(), 2, "{left:?}");
}

/// A cold build after a killed restore runs on the same volume without a restore: the save
/// that follows it sweeps the staging beside the state dir, and inside it (where it would be
/// saved), removing a planted symlink without following it and leaving another target's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_sweeps_the_staging_left_by_a_killed_restore() {
    let t = Target::fs().await;
    let work = tempfile::tempdir().unwrap();
    let volume = work.path().join("volume");
    let state = volume.join("buildkit");
    write_tree(&state, 1, 2);
    let stale = StaleStaging::plant(work.path(), &volume);
    let inside = state.join(".hearth-restore-1badc0de");
    std::fs::create_dir_all(inside.join("content")).unwrap();
    std::fs::write(inside.join("content/half-written"), noise(8, 4096)).unwrap();

    t.save(&state).await;
    stale.assert_swept();
    assert!(
        !inside.exists(),
        "the staging inside the state dir is swept"
    );
    let restored = work.path().join("restored");
    t.ok(&["restore", "latest", restored.to_str().unwrap()])
        .await;
    assert_same(&describe(&state), &describe(&restored));
    let names = names_in(&restored);
    assert!(
        !names.iter().any(|n| n.contains("hearth-restore")),
        "{names:?}"
    );
}

/// Two saves of one cache, the first SIGKILLed once the store holds a pack it uploaded, the
/// second completing; then `ls`, `restore latest` and two gc runs a grace period apart.
async fn a_killed_save_leaves_nothing_but_collectable_orphans(t: Target) {
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    write_tree(&first, 0, 32);
    let first_arg = first.to_str().unwrap().to_string();
    let mut killed = t
        .command(&["save", &first_arg, "--pack-size-mib", "1", "--uploads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Mid-upload, without timing: once a pack of this save is in the store (there was none
    // before), and while the save still runs.
    loop {
        if let Some(status) = killed.try_wait().unwrap() {
            panic!("the save finished ({status}) before it could be killed; make the tree bigger");
        }
        if !t.pack_ids().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let orphans = t.pack_ids();
    assert!(!orphans.is_empty());
    assert!(t.listed().await.is_empty(), "the killed save is not listed");

    // The second save: the first tree's last files (which the killed save had not reached,
    // so its packs are orphans), and new ones.
    let second = work.path().join("second");
    write_tree(&second, 24, 8);
    write_tree(&second, 100, 8);
    let id = t.save(&second).await;
    assert_eq!(t.listed().await, vec![id.clone()]);
    let restored = work.path().join("restored");
    t.ok(&["restore", "latest", restored.to_str().unwrap()])
        .await;
    assert_same(&describe(&second), &describe(&restored));

    // gc after its grace: the first run condemns the orphans, the next deletes them.
    let live = t.packs_of(&id).await;
    let gc = ["gc", "--grace", "1h", "--json"];
    t.age_everything();
    t.ok(&gc).await;
    t.age_everything();
    t.ok(&gc).await;
    let left = t.pack_ids();
    assert_eq!(left, live, "exactly the live snapshot's packs remain");
    assert!(
        orphans.iter().any(|p| !left.contains(p)),
        "some of the killed save's packs were orphans, and went"
    );
    t.ok(&["verify", &id, "--read-data"]).await;
    assert_eq!(t.listed().await, vec![id]);
    let again = work.path().join("again");
    t.ok(&["restore", "latest", again.to_str().unwrap()]).await;
    assert_same(&describe(&second), &describe(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_killed_mid_upload_file_store() {
    a_killed_save_leaves_nothing_but_collectable_orphans(Target::fs().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_killed_mid_upload_s3() {
    a_killed_save_leaves_nothing_but_collectable_orphans(Target::s3().await).await;
}

/// Deletes the pack objects (and their indexes) of `packs`.
async fn remove_packs(t: &Target, packs: impl IntoIterator<Item = String>) {
    for p in packs {
        t.store.delete(&layout::pack_key(NS, &p)).await.unwrap();
        t.store
            .delete(&layout::pack_index_key(NS, &p))
            .await
            .unwrap();
    }
}

/// `forget` of snapshots whose packs are partly or wholly gone succeeds and removes the
/// manifest; `forget --all` succeeds on a half-deleted prefix and on an empty one; an id
/// that never existed still fails.
async fn forgetting_what_already_vanished(t: Target) {
    let work = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for round in 0..3u64 {
        let dir = work.path().join(format!("tree{round}"));
        write_tree(&dir, round * 10, 2);
        ids.push(t.save(&dir).await);
    }
    // Half of the first snapshot's packs gone, all of the second's.
    let first: Vec<String> = t.packs_of(&ids[0]).await.into_iter().collect();
    assert!(first.len() >= 2, "{first:?}");
    remove_packs(&t, first[..first.len() / 2].to_vec()).await;
    remove_packs(&t, t.packs_of(&ids[1]).await).await;
    for id in &ids[..2] {
        t.ok(&["forget", id]).await;
    }
    assert_eq!(t.listed().await, vec![ids[2].clone()]);

    let (ok, out) = t.run(&["forget", "20200101T000000.000Z-00000000"]).await;
    assert!(!ok, "forgetting an id that never existed fails: {out}");

    // Half-deleted: every pack gone, the manifest left.
    remove_packs(&t, t.pack_ids()).await;
    t.ok(&["forget", "--all"]).await;
    assert!(t.listed().await.is_empty());
    // Empty: nothing left under the cache, and a cache never saved at all.
    t.ok(&["forget", "--all"]).await;
    let (ok, out) = t.run(&["forget", "--all", "--cache", "never-saved"]).await;
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_what_already_vanished_file_store() {
    forgetting_what_already_vanished(Target::fs().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_what_already_vanished_s3() {
    forgetting_what_already_vanished(Target::s3().await).await;
}

/// A writer killed between writing an object's temporary file and placing it leaves the file
/// (the file store's; `ls` and restore never see it): gc removes it once older than its
/// grace, and spares a younger one (a write in progress).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_sweeps_a_killed_writers_temporary_files_after_its_grace() {
    let t = Target::fs().await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_tree(&src, 7, 20);
    t.save(&src).await;
    fn find_pack(dir: &Path) -> Option<PathBuf> {
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let path = e.path();
            if path.is_dir() {
                find_pack(&path)
            } else {
                path.extension()
                    .is_some_and(|x| x == "pack")
                    .then_some(path)
            }
        })
    }
    let pack = find_pack(&t.objects).expect("a pack");
    let dir = pack.parent().unwrap();
    let stale = dir.join(".tmp-4242-0-killed.pack");
    let fresh = dir.join(".tmp-4243-0-writing.pack");
    std::fs::write(&stale, vec![7u8; 1000]).unwrap();
    std::fs::write(&fresh, vec![7u8; 10]).unwrap();
    let old = filetime::FileTime::from_system_time(SystemTime::now() - 2 * HOUR);
    filetime::set_file_mtime(&stale, old).unwrap();

    let report: serde_json::Value =
        serde_json::from_str(&t.ok(&["gc", "--grace", "1h", "--json"]).await).unwrap();
    assert_eq!(report["sweptUnfinished"], 1, "{report}");
    assert!(!stale.exists(), "the stale temporary file went");
    assert!(fresh.exists(), "a write in progress is spared");
    assert!(pack.exists(), "the live pack stays");
}
