//! The upload protocol end to end: the CLI's packer and sender on one end of a local socket
//! pair, the builder's receiver on the other. Contents arrive identical; `.dockerignore` is
//! honoured; truncated, corrupted and escaping uploads are refused with nothing written.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth::upload::pack::{pack, pack_apart};
use hearth::upload::receive::{receive, receive_once, wait_for_upload, Expect};
use hearth::upload::send::{read_reply, send_frame};
use hearth::upload::{done_line, header_line, UploadError};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    hearth::upload::hex_digest({
        let mut h = Sha256::new();
        h.update(bytes);
        h
    })
}

fn write(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A context with what real ones have: modes, nested and empty directories, symlinks (one
/// dangling inside), a hard link, and a `.dockerignore` with an exception.
fn context() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(&d.join("Dockerfile"), "FROM scratch\nCOPY . /\n", 0o644);
    write(&d.join("bin/run.sh"), "#!/bin/sh\necho hi\n", 0o755);
    write(&d.join("conf/private.key"), "k", 0o600);
    write(&d.join("src/app/main.py"), "print('hi')\n", 0o644);
    fs::create_dir_all(d.join("empty/nested")).unwrap();
    fs::set_permissions(d.join("empty"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("src/app/main.py", d.join("main-link")).unwrap();
    std::os::unix::fs::symlink("../app/missing", d.join("src/dangling")).unwrap();
    fs::hard_link(d.join("bin/run.sh"), d.join("bin/run-again.sh")).unwrap();
    write(&d.join("debug.log"), "noise", 0o644);
    write(&d.join("logs/keep.log"), "kept", 0o644);
    write(
        &d.join("logs/drop.txt"),
        "excluded with its directory",
        0o644,
    );
    write(
        &d.join("src/app/deep.log"),
        "anchored patterns do not reach here",
        0o644,
    );
    write(&d.join("node_modules/x/index.js"), "big", 0o644);
    write(&d.join("src/node_modules/y.js"), "also big", 0o644);
    write(
        &d.join(".dockerignore"),
        "# comment\n*.log\nlogs\n!logs/keep.log\n/node_modules/\n**/node_modules\nDockerfile\n",
        0o644,
    );
    t
}

#[derive(Debug, PartialEq)]
enum Kind {
    File(String, u32),
    Dir(u32),
    Link(PathBuf),
}

fn snapshot(root: &Path) -> BTreeMap<String, Kind> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Kind>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(rel, Kind::Link(fs::read_link(&p).unwrap()));
            } else if m.is_dir() {
                out.insert(rel, Kind::Dir(m.mode() & 0o7777));
                walk(root, &p, out);
            } else {
                let c = fs::read_to_string(&p).unwrap();
                out.insert(rel, Kind::File(c, m.mode() & 0o7777));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Packs `src`, streams it over a socket pair into a receiver in `dst`; the sender's view
/// of the reply and the receiver's result.
async fn transfer(src: &Path, dst: &Path) -> (Result<u64, UploadError>, Result<(), UploadError>) {
    let mut tar = tempfile::NamedTempFile::new().unwrap();
    let packed = pack(src, &[PathBuf::from("Dockerfile")], tar.as_file_mut()).unwrap();
    let (client, server) = UnixStream::pair().unwrap();
    let dst = dst.to_path_buf();
    let receiver = std::thread::spawn(move || {
        let mut out = server.try_clone().unwrap();
        let r = receive(&server, &dst, None);
        hearth::upload::receive::reply(&mut out, &r).unwrap();
        r.map(|_| ())
    });
    client.set_nonblocking(true).unwrap();
    let client = tokio::net::UnixStream::from_std(client).unwrap();
    let (read, mut write) = client.into_split();
    let file = tokio::fs::File::open(tar.path()).await.unwrap();
    let mut progress = 0;
    send_frame(file, packed.size, &packed.sha256, &mut write, |n| {
        progress = n
    })
    .await
    .unwrap();
    assert_eq!(progress, packed.size);
    let reply = read_reply(read, &packed.sha256).await;
    (reply, receiver.join().unwrap())
}

#[tokio::test]
async fn contents_arrive_identical_and_dockerignore_is_honoured() {
    let src = context();
    let dst = tempfile::tempdir().unwrap();
    let (reply, received) = transfer(src.path(), dst.path()).await;
    received.unwrap();
    let entries = reply.unwrap();
    let got = snapshot(&dst.path().join("context"));

    let mut want = snapshot(src.path());
    for ignored in [
        "debug.log",
        "logs/drop.txt",
        "node_modules",
        "node_modules/x",
        "node_modules/x/index.js",
        "src/node_modules",
        "src/node_modules/y.js",
    ] {
        assert!(want.remove(ignored).is_some(), "{ignored} in the source");
    }
    assert_eq!(got, want);
    // The exception and the always-sent Dockerfile are there; so are the modes and links.
    assert!(matches!(got["logs/keep.log"], Kind::File(ref c, _) if c == "kept"));
    assert!(got.contains_key("Dockerfile"));
    // Docker anchors `*.log` at the root: a deeper one is sent (gitignore would drop it).
    assert!(got.contains_key("src/app/deep.log"));
    assert_eq!(
        got["bin/run.sh"],
        Kind::File("#!/bin/sh\necho hi\n".into(), 0o755)
    );
    assert_eq!(got["conf/private.key"], Kind::File("k".into(), 0o600));
    assert_eq!(got["empty"], Kind::Dir(0o750));
    assert_eq!(got["empty/nested"], snapshot(src.path())["empty/nested"]);
    assert_eq!(got["main-link"], Kind::Link("src/app/main.py".into()));
    let ino = |p: &str| {
        fs::metadata(dst.path().join("context").join(p))
            .unwrap()
            .ino()
    };
    assert_eq!(ino("bin/run.sh"), ino("bin/run-again.sh"), "hard link kept");
    // Every entry but `logs/`, excluded itself and created as the parent of the exception.
    assert_eq!(entries as usize + 1, got.len());
    // Nothing but the context is left behind.
    let left: Vec<_> = fs::read_dir(dst.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["context"]);
}

#[test]
fn the_same_tree_packs_to_the_same_bytes() {
    let src = context();
    let mut a = Vec::new();
    let mut b = Vec::new();
    let pa = pack(src.path(), &[], &mut a).unwrap();
    let pb = pack(src.path(), &[], &mut b).unwrap();
    assert_eq!(pa, pb);
    assert_eq!(a, b);
    assert_eq!(pa.sha256, sha(&a));
    assert_eq!(pa.size, a.len() as u64);
}

/// Asserts the receiver's directory holds nothing after a refused upload.
fn assert_nothing_written(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn frame(tar: &[u8], stated_sha: &str, done: bool) -> Vec<u8> {
    let mut v = header_line(tar.len() as u64, stated_sha).into_bytes();
    v.extend_from_slice(tar);
    if done {
        v.extend_from_slice(done_line(stated_sha).as_bytes());
    }
    v
}

fn small_tar() -> Vec<u8> {
    let src = context();
    let mut v = Vec::new();
    pack(src.path(), &[], &mut v).unwrap();
    v
}

#[test]
fn a_truncated_stream_is_refused() {
    let tar = small_tar();
    let full = frame(&tar, &sha(&tar), true);
    for cut in [10, 60, full.len() / 2, full.len() - 5] {
        let dir = tempfile::tempdir().unwrap();
        let err = receive(&full[..cut], dir.path(), None).unwrap_err();
        assert!(
            matches!(err, UploadError::Truncated(_)),
            "cut at {cut}: {err}"
        );
        assert_nothing_written(dir.path());
    }
    // All the bytes but no done signal: still not accepted.
    let dir = tempfile::tempdir().unwrap();
    let err = receive(&frame(&tar, &sha(&tar), false)[..], dir.path(), None).unwrap_err();
    assert!(matches!(err, UploadError::Truncated(_)), "{err}");
    assert_nothing_written(dir.path());
}

#[test]
fn a_wrong_hash_is_refused() {
    let tar = small_tar();
    let mut corrupted = tar.clone();
    corrupted[700] ^= 0x20;
    let dir = tempfile::tempdir().unwrap();
    let err = receive(&frame(&corrupted, &sha(&tar), true)[..], dir.path(), None).unwrap_err();
    assert!(
        err.to_string().contains(&format!("expected {}", sha(&tar))),
        "{err}"
    );
    assert_nothing_written(dir.path());

    // A whole, valid frame of another tar than the ImageBuild states is refused too.
    let dir = tempfile::tempdir().unwrap();
    let expect = Expect {
        size: tar.len() as u64,
        sha256: "0".repeat(64),
    };
    let err = receive(
        &frame(&tar, &sha(&tar), true)[..],
        dir.path(),
        Some(&expect),
    )
    .unwrap_err();
    assert!(matches!(err, UploadError::NotExpected { .. }), "{err}");
    assert_nothing_written(dir.path());
}

/// One raw tar entry, written without the tar crate's own path checks.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn each_escaping_entry_is_refused_with_nothing_written() {
    use tar::EntryType::{Block, Directory, Link, Regular, Symlink};
    type Case = (
        &'static str,
        Vec<(tar::EntryType, &'static str, &'static str)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "dot-dot path",
            vec![(Regular, "ok.txt", ""), (Regular, "../evil", "")],
            "contains '..'",
        ),
        (
            "nested dot-dot",
            vec![(Directory, "a/", ""), (Regular, "a/../../evil", "")],
            "contains '..'",
        ),
        (
            "absolute path",
            vec![(Regular, "/tmp/hearth-evil", "")],
            "is an absolute path",
        ),
        (
            "symlink out",
            vec![(Symlink, "out", "../../etc")],
            "leads outside the context",
        ),
        (
            "absolute symlink",
            vec![(Symlink, "passwd", "/etc/passwd")],
            "absolute path",
        ),
        (
            "symlink chain out",
            vec![(Symlink, "r", "."), (Symlink, "s", "r/..")],
            "leads outside the context",
        ),
        (
            "write through a symlink out",
            vec![
                (Directory, "d/", ""),
                (Symlink, "d/up", "../.."),
                (Regular, "d/up/evil", ""),
            ],
            "outside the context",
        ),
        (
            "hard link out",
            vec![(Link, "h", "../outside")],
            "contains '..'",
        ),
        (
            "absolute hard link",
            vec![(Link, "h", "/etc/passwd")],
            "is an absolute path",
        ),
        (
            "hard link to nothing",
            vec![(Link, "h", "not-there")],
            "not a file earlier",
        ),
        ("device node", vec![(Block, "sda", "")], "refused type"),
    ];
    for (what, entries, why) in cases {
        let mut b = tar::Builder::new(Vec::new());
        for (kind, name, link) in entries {
            raw_entry(&mut b, kind, name, link, b"x");
        }
        let tar = b.into_inner().unwrap();
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("recv");
        fs::create_dir(&dir).unwrap();
        let err = receive(&frame(&tar, &sha(&tar), true)[..], &dir, None).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, UploadError::Refused { .. })
                && msg.contains(why)
                && msg.contains("nothing was written"),
            "{what}: {msg}"
        );
        assert_nothing_written(&dir);
        let siblings: Vec<_> = fs::read_dir(parent.path()).unwrap().collect();
        assert_eq!(
            siblings.len(),
            1,
            "{what}: something appeared beside the receiver's directory"
        );
    }
    assert!(!Path::new("/tmp/hearth-evil").exists());
}

/// A Dockerfile outside DIR, packed apart: the context (hard links, symlinks and
/// `.dockerignore` as always) under `context/`, that one file under `dockerfile/`; the
/// receiver takes it as any tar, and the context arrives as it would alone.
#[test]
fn a_dockerfile_packed_apart_arrives_beside_the_context() {
    let src = context();
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("api.Dockerfile");
    write(&file, "FROM scratch\n", 0o640);
    let mut tar = Vec::new();
    pack_apart(src.path(), &file, &mut tar).unwrap();
    let dir = tempfile::tempdir().unwrap();
    receive(&frame(&tar, &sha(&tar), true)[..], dir.path(), None).unwrap();
    let alone = tempfile::tempdir().unwrap();
    let mut plain = Vec::new();
    pack(src.path(), &[], &mut plain).unwrap();
    receive(&frame(&plain, &sha(&plain), true)[..], alone.path(), None).unwrap();
    assert_eq!(
        snapshot(&dir.path().join("context/context")),
        snapshot(&alone.path().join("context"))
    );
    let got = dir.path().join("context/dockerfile");
    let apart = snapshot(&got);
    assert_eq!(
        apart.into_iter().collect::<Vec<_>>(),
        [(
            "api.Dockerfile".to_string(),
            Kind::File("FROM scratch\n".into(), 0o640)
        )]
    );
    // The hard link still names its first path, now under context/.
    let again = dir.path().join("context/context/bin/run-again.sh");
    let first = dir.path().join("context/context/bin/run.sh");
    assert_eq!(
        fs::metadata(again).unwrap().ino(),
        fs::metadata(first).unwrap().ino()
    );
}

#[test]
fn links_that_stay_inside_are_accepted() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, Directory, "a/", "", b"");
    raw_entry(&mut b, Regular, "a/f", "", b"x");
    raw_entry(&mut b, Symlink, "a/up", "..", b"");
    raw_entry(&mut b, Symlink, "a/sib", "../a/f", b"");
    raw_entry(&mut b, Link, "g", "a/f", b"");
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = receive(&frame(&tar, &sha(&tar), true)[..], dir.path(), None).unwrap();
    assert_eq!(r.entries, 5);
    assert_eq!(
        fs::read_to_string(dir.path().join("context/a/sib")).unwrap(),
        "x"
    );
}

#[test]
fn the_waiting_receiver_follows_the_exec_d_one() {
    let tar = small_tar();
    let dir = tempfile::tempdir().unwrap();
    let expect = Expect {
        size: tar.len() as u64,
        sha256: sha(&tar),
    };
    // The exec may come first, the instant the container starts: it waits for `.expect`.
    let exec_d = {
        let dir = dir.path().to_path_buf();
        let frame = frame(&tar, &sha(&tar), true);
        std::thread::spawn(move || {
            let mut reply = Vec::new();
            receive_once(&frame[..], &mut reply, &dir).map(|_| reply)
        })
    };
    // The init container's process announces what it accepts and waits.
    wait_for_upload(
        dir.path(),
        &expect,
        Duration::from_secs(3600),
        Duration::from_millis(5),
    )
    .unwrap();
    let reply = exec_d.join().unwrap().unwrap();
    assert!(String::from_utf8(reply)
        .unwrap()
        .starts_with(&format!("HEARTH-OK {} ", sha(&tar))));

    // A failed upload fails the waiting process with the reason.
    let dir = tempfile::tempdir().unwrap();
    let waiting = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            wait_for_upload(
                &dir,
                &expect,
                Duration::from_secs(3600),
                Duration::from_millis(5),
            )
        })
    };
    while !dir.path().join(".expect").exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut reply = Vec::new();
    let mut corrupted = tar.clone();
    corrupted[600] ^= 1;
    receive_once(
        &frame(&corrupted, &sha(&tar), true)[..],
        &mut reply,
        dir.path(),
    )
    .unwrap_err();
    assert!(String::from_utf8(reply)
        .unwrap()
        .starts_with("HEARTH-ERROR upload corrupted"));
    let err = waiting.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("upload corrupted"), "{err}");
}

#[test]
fn no_upload_within_the_timeout_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let expect = Expect {
        size: 1,
        sha256: "0".repeat(64),
    };
    let err = wait_for_upload(
        dir.path(),
        &expect,
        Duration::ZERO,
        Duration::from_millis(1),
    )
    .unwrap_err();
    assert!(matches!(err, UploadError::Timeout(_)), "{err}");
}

#[test]
fn the_receive_command_exits_non_zero_on_refusal_and_timeout() {
    let bin = env!("CARGO_BIN_EXE_hearth");
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(bin)
        .args(["receive", "--dir"])
        .arg(dir.path())
        .args([
            "--sha256",
            &"0".repeat(64),
            "--size",
            "1",
            "--timeout",
            "0s",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "timeout");

    // The exec'd side with a corrupted frame: exit 1 and the error as its reply.
    let tar = small_tar();
    fs::write(
        dir.path().join(".expect"),
        format!("{} {}\n", tar.len(), sha(&tar)),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin)
        .args(["receive", "--stdin", "--dir"])
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut bad = tar.clone();
    bad[600] ^= 1;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&frame(&bad, &sha(&tar), true))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HEARTH-ERROR"));
    assert!(dir.path().join(".failed").exists());
    assert!(!dir.path().join("context").exists());
}

/// A reader that hands out what a channel sends, blocking until it does (a slow sender).
struct Trickle(std::sync::mpsc::Receiver<Vec<u8>>, Vec<u8>);

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.1.is_empty() {
            match self.0.recv() {
                Ok(more) => self.1 = more,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1[..n]);
        self.1.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_second_receiver_in_the_same_directory_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = small_tar();
    let b = {
        let src = context();
        write(&src.path().join("other.txt"), "B's file\n", 0o644);
        let mut v = Vec::new();
        pack(src.path(), &[], &mut v).unwrap();
        v
    };
    assert_ne!(sha(&a), sha(&b));
    let frame_a = frame(&a, &sha(&a), true);
    let (send, recv) = std::sync::mpsc::channel();
    send.send(frame_a[..frame_a.len() / 2].to_vec()).unwrap();
    let path = dir.path().to_path_buf();
    let first = std::thread::spawn(move || receive(Trickle(recv, Vec::new()), &path, None));
    // Wait until A is half way through (its staged tar exists).
    let started = std::time::Instant::now();
    while !fs::read_dir(dir.path()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".incoming")
    }) {
        assert!(
            started.elapsed().as_secs() < 10,
            "the first receiver never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = receive(&frame(&b, &sha(&b), true)[..], dir.path(), None);
    let err = second.expect_err("a second upload interleaved with the first");
    assert!(err.to_string().contains("in progress"), "{err}");
    send.send(frame_a[frame_a.len() / 2..].to_vec()).unwrap();
    drop(send);
    let got = first.join().unwrap().expect("the first upload");
    assert_eq!(got.sha256, sha(&a));
    assert!(
        !got.context.join("other.txt").exists(),
        "the context holds B's files under A's verified hash"
    );
}
