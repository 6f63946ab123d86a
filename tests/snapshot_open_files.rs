//! Open files: the real `hearth` binary saves and restores BuildKit-shaped trees of many files
//! under `ulimit -n 1024` (soft and hard, so raising the soft limit cannot help), through the
//! file store (60,000 files) and S3 (3,000 files), and raises a low soft limit to the hard
//! limit at start.

mod snapshot_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use snapshot_support::*;

const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

/// `hearth ARGS` under `ulimit LIMIT` (e.g. `-n 1024`), with only the environment `env`.
fn hearth(limit: &str, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
        .arg(HEARTH)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// A temporary directory for trees of many small files: in `/dev/shm` when it has room and
/// `TMPDIR` is not set, as creating and deleting 120,000 files on a disk can take minutes (the
/// filesystem does not matter to open files; the round-trip tests cover fidelity on disk).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let room = rustix::fs::statvfs(shm).is_ok_and(|s| s.f_bavail * s.f_frsize >= 2 << 30);
    if std::env::var_os("TMPDIR").is_none() && room {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Checks that the command succeeded and returns the JSON object it printed.
fn json_of(what: &str, out: Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A tree shaped like a BuildKit state dir, of `layers * pkgs * 50` small files (one in ten
/// empty, one in ten the same license text) in nested unpacked layer trees, with symlinks
/// (some dangling), a hard link, executables and private directories, plus a few large
/// databases and layer blobs. Returns the number of regular files.
fn buildkit_like_tree(root: &Path, layers: usize, pkgs: usize) -> usize {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let worker = root.join("runc-overlayfs");
    let mut files = 0;
    for (i, (name, len)) in [
        ("cache.db", 6 << 20),
        ("history.db", 1 << 20),
        ("runc-overlayfs/metadata_v2.db", 3 << 20),
        ("runc-overlayfs/content/blobs/sha256/4f1c0ffee", 8 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, noise(1000 + i as u64, len)).unwrap();
        files += 1;
    }
    let license = b"Permission is hereby granted, free of charge, to any person\n".repeat(20);
    let mut n = 0u64;
    for layer in 0..layers {
        let fs = worker.join(format!("snapshots/snapshots/{layer}/fs"));
        for pkg in 0..pkgs {
            let site = fs.join(format!("usr/lib/python3/site-packages/pkg{pkg}"));
            for sub in 0..5 {
                let dir = site.join(format!("sub{sub}"));
                std::fs::create_dir_all(&dir).unwrap();
                for f in 0..10 {
                    let path = dir.join(format!("mod{f}.py"));
                    match n % 10 {
                        0 => std::fs::write(&path, b"").unwrap(),
                        1 => std::fs::write(&path, &license).unwrap(),
                        k if k % 2 == 0 => {
                            let text = format!("# module {n}\nimport os\n").repeat(1 + k as usize);
                            std::fs::write(&path, text).unwrap()
                        }
                        k => std::fs::write(&path, noise(n, 64 << (k % 5))).unwrap(),
                    }
                    if n.is_multiple_of(97) {
                        mode(&path, 0o755);
                    }
                    n += 1;
                    files += 1;
                }
            }
            symlink("sub0", site.join("current")).unwrap();
            symlink(format!("/nonexistent/pkg{pkg}"), site.join("dangling")).unwrap();
            if pkg.is_multiple_of(7) {
                mode(&site.join("sub4"), 0o700);
            }
        }
        std::fs::create_dir_all(worker.join(format!("snapshots/snapshots/{layer}/work/work")))
            .unwrap();
        symlink("python3", fs.join("usr/lib/python")).unwrap();
    }
    std::fs::hard_link(
        worker.join("snapshots/snapshots/0/fs/usr/lib/python3/site-packages/pkg0/sub0/mod3.py"),
        worker.join("snapshots/snapshots/0/fs/usr/lib/hardlink.py"),
    )
    .unwrap();
    files
}

/// Saves `src` and restores it into `dst` with the binary under `ulimit -n 1024`, and checks
/// the restored tree is the same.
fn round_trip_under_1024(src: &Path, dst: &Path, env: &[(&str, String)]) {
    let before = describe(src);
    let saved = json_of(
        "save",
        hearth(
            "-n 1024",
            &["snapshot", "save", src.to_str().unwrap(), "--json"],
            env,
        )
        .output()
        .unwrap(),
    );
    let id = saved["id"].as_str().unwrap();
    json_of(
        "restore",
        hearth(
            "-n 1024",
            &["snapshot", "restore", id, dst.to_str().unwrap(), "--json"],
            env,
        )
        .output()
        .unwrap(),
    );
    assert_same(&before, &describe(dst));
}

#[test]
fn file_store_round_trip_of_60000_files_under_1024_descriptors() {
    let started = Instant::now();
    let work = scratch();
    let src = work.path().join("state");
    let files = buildkit_like_tree(&src, 24, 50);
    assert!(files > 60_000, "{files} files");
    let env = [
        (
            "HEARTH_STORE",
            format!("file://{}", work.path().join("store").display()),
        ),
        ("HEARTH_NAMESPACE", "team-a".to_string()),
        ("HEARTH_CACHE", "shop".to_string()),
    ];
    round_trip_under_1024(&src, &work.path().join("restored"), &env);
    eprintln!("{files} files in {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_of_3000_files_under_1024_descriptors() {
    let server = S3Server::start().await;
    let work = scratch();
    let src = work.path().join("state");
    assert!(buildkit_like_tree(&src, 6, 10) > 3_000);
    // What the controller gives its snapshot Jobs.
    let env = [
        ("HEARTH_STORE", server.url()),
        ("HEARTH_NAMESPACE", "team-a".to_string()),
        ("HEARTH_CACHE", "shop".to_string()),
        ("AWS_ENDPOINT_URL_S3", server.endpoint.clone()),
        ("AWS_S3_FORCE_PATH_STYLE", "true".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "hearth".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "hearth-secret".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let dst = work.path().join("restored");
    // The server runs on this runtime: the binary runs on the blocking pool.
    tokio::task::spawn_blocking(move || round_trip_under_1024(&src, &dst, &env))
        .await
        .unwrap();
}

/// The soft and hard open-files limits of process `pid`.
fn open_files_limits(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut words = line.split_whitespace().skip(3);
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

#[test]
fn a_low_soft_limit_is_raised_to_the_hard_limit_at_start() {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    if hard.is_none_or(|h| h <= 256) {
        eprintln!("hard open-files limit {hard:?}: nothing to raise 256 to; skipping");
        return;
    }
    // `validate -` waits for standard input: the limits of the running process can be read.
    let mut child = hearth("-Sn 256", &["validate", "-"], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while Instant::now() < deadline {
        // Only once the shell has run `ulimit` and exec'd hearth do the limits tell anything.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).next() == Some(HEARTH.as_bytes()) {
            seen = open_files_limits(pid);
            if seen.as_ref().is_some_and(|(soft, hard)| soft == hard) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child.stdin.take());
    child.wait().unwrap();
    let (soft, hard) = seen.expect("hearth never ran");
    assert_eq!(
        soft, hard,
        "hearth kept its soft open-files limit of {soft}"
    );
}
