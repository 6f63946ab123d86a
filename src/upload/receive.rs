//! The receiver's half, run in the builder pod: [`receive`] reads one frame (the process that
//! `hearth build` execs), [`wait_for_upload`] is the init container's main process, which
//! waits for it and fails the pod with the reason when the upload fails or never comes.
//!
//! Layout of the receiver's directory `DIR` (an emptyDir):
//! - `DIR/.expect`: `<size> <sha256>` from the pod spec, written by the waiting process, so
//!   the exec'd one accepts only the tar the ImageBuild states;
//! - `DIR/.incoming-<unique>.tar`, `DIR/.staging-<unique>/`: work areas of one receiver,
//!   created exclusively (never an existing file or a planted symlink), removed on success and
//!   on failure;
//! - `DIR/context/`: the unpacked context, moved into place only once whole;
//! - `DIR/.done` (the sha256) or `DIR/.failed` (the reason): the outcome.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{done_line, hex_digest, is_sha256_hex, verify, UploadError, MAGIC, MAX_SIZE, VERSION};

/// The tar the receiver accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Its size in bytes.
    pub size: u64,
    /// Its hex sha256.
    pub sha256: String,
}

/// What was received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The verified sha256.
    pub sha256: String,
    /// Entries unpacked.
    pub entries: u64,
    /// Where they are.
    pub context: PathBuf,
}

/// The work areas of one receiver (names no other receiver uses) and the context's place.
fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let unique = format!(
        "{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    (
        dir.join(format!(".incoming-{unique}.tar")),
        dir.join(format!(".staging-{unique}")),
        PathBuf::from(crate::contract::context_dir(&dir.to_string_lossy())),
    )
}

/// Holds the receiver's directory for one upload: an exclusive lock on the directory itself
/// (released when dropped), so a second receiver cannot interleave with the first.
fn lock_dir(dir: &Path) -> Result<fs::File, UploadError> {
    let handle = fs::File::open(dir).map_err(|e| UploadError::io(dir, e))?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(fs::TryLockError::WouldBlock) => Err(UploadError::Remote(format!(
            "another upload into {} is in progress; an upload is accepted once",
            dir.display()
        ))),
        Err(fs::TryLockError::Error(e)) => Err(UploadError::io(dir, e)),
    }
}

/// Reads one frame from `input` into `dir`: header, exactly `size` bytes, the done line;
/// verifies the sha256 (and `expect`, when given), checks every entry, unpacks into a
/// staging directory and moves it to `dir/context`. On any error nothing is left in `dir`
/// but what was there before.
pub fn receive(
    input: impl Read,
    dir: &Path,
    expect: Option<&Expect>,
) -> Result<Received, UploadError> {
    let _held = lock_dir(dir)?;
    let (incoming, staging, context) = paths(dir);
    if context.exists() {
        return Err(UploadError::Remote(format!(
            "{} already holds a context; an upload is accepted once",
            context.display()
        )));
    }
    let result = receive_into(input, &incoming, &staging, &context, expect);
    let _ = fs::remove_file(&incoming);
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn receive_into(
    input: impl Read,
    incoming: &Path,
    staging: &Path,
    context: &Path,
    expect: Option<&Expect>,
) -> Result<Received, UploadError> {
    let mut input = BufReader::new(input);
    let header = read_line(&mut input, "header")?;
    let stated = parse_header(&header)?;
    if let Some(want) = expect {
        if want != &stated {
            return Err(UploadError::NotExpected {
                got: format!("{} bytes, sha256 {}", stated.size, stated.sha256),
                want: format!("{} bytes, sha256 {}", want.size, want.sha256),
            });
        }
    }

    // The tar, to a new file beside the context (same filesystem), hashed on the way; it is
    // checked and unpacked through this same descriptor, so what was hashed is what lands.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(incoming)
        .map_err(|e| UploadError::io(incoming, e))?;
    let mut hasher = Sha256::new();
    let mut remaining = stated.size;
    let mut buf = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        let n = input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(UploadError::Truncated(format!(
                "the stream ended after {} of {} bytes",
                stated.size - remaining,
                stated.size
            )));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| UploadError::io(incoming, e))?;
        remaining -= n as u64;
    }
    file.sync_all().map_err(|e| UploadError::io(incoming, e))?;
    let done = read_line(&mut input, "done signal")?;
    if done != done_line(&stated.sha256) {
        return Err(UploadError::BadFrame(format!(
            "expected the done signal after {} bytes, got {:?}",
            stated.size,
            done.trim_end()
        )));
    }
    let got = hex_digest(hasher);
    if got != stated.sha256 {
        return Err(UploadError::HashMismatch {
            got,
            want: stated.sha256,
        });
    }

    let rewind = |mut f: &fs::File| f.rewind().map_err(|e| UploadError::io(incoming, e));
    rewind(&file)?;
    let entries = verify::check_entries(&file)?;
    fs::create_dir(staging).map_err(|e| UploadError::io(staging, e))?;
    rewind(&file)?;
    let mut archive = tar::Archive::new(&file);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(false);
    archive
        .unpack(staging)
        .map_err(|e| UploadError::io(staging, e))?;
    fs::rename(staging, context).map_err(|e| UploadError::io(context, e))?;
    Ok(Received {
        sha256: got,
        entries,
        context: context.to_path_buf(),
    })
}

fn read_line(input: &mut impl BufRead, what: &str) -> Result<String, UploadError> {
    let mut line = Vec::new();
    input.take(256).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() < 256 {
            UploadError::Truncated(format!("the stream ended before the {what}"))
        } else {
            UploadError::BadFrame(format!("{what} line too long"))
        });
    }
    String::from_utf8(line).map_err(|_| UploadError::BadFrame(format!("{what} is not text")))
}

fn parse_header(line: &str) -> Result<Expect, UploadError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [magic, version, size, sha] if *magic == MAGIC => {
            if *version != VERSION.to_string() {
                return Err(UploadError::BadFrame(format!(
                    "protocol version {version}, this receiver speaks {VERSION}"
                )));
            }
            let size: u64 = size
                .parse()
                .map_err(|_| UploadError::BadFrame(format!("size {size:?}")))?;
            if size > MAX_SIZE {
                return Err(UploadError::BadFrame(format!(
                    "{size} bytes is over the {MAX_SIZE} byte limit"
                )));
            }
            if !is_sha256_hex(sha) {
                return Err(UploadError::BadFrame(format!("sha256 {sha:?}")));
            }
            Ok(Expect {
                size,
                sha256: sha.to_string(),
            })
        }
        _ => Err(UploadError::BadFrame(format!(
            "header {:?}",
            line.chars().take(64).collect::<String>()
        ))),
    }
}

/// Writes the reply line for `result` (the sender waits for it).
pub fn reply(out: &mut impl Write, result: &Result<Received, UploadError>) -> io::Result<()> {
    match result {
        Ok(r) => writeln!(out, "{} {} {}", super::OK, r.sha256, r.entries)?,
        Err(e) => writeln!(out, "{} {}", super::ERROR, e.to_string().replace('\n', " "))?,
    }
    out.flush()
}

/// The exec'd side: reads the expectation the waiting process left, receives, records the
/// outcome for it, and replies on `out`.
pub fn receive_once(
    input: impl Read,
    out: &mut impl Write,
    dir: &Path,
) -> Result<Received, UploadError> {
    let expect = match wait_for_expect(dir) {
        Ok(e) => e,
        Err(e) => {
            // Not this pod's receiver (or not started): nothing to record for the build.
            let result = Err(e);
            reply(out, &result)?;
            return result;
        }
    };
    let result = receive(input, dir, Some(&expect));
    record(dir, &result);
    reply(out, &result)?;
    result
}

/// The exec may arrive the instant the container starts, before the waiting process has
/// written `.expect`: give it a few seconds.
fn wait_for_expect(dir: &Path) -> Result<Expect, UploadError> {
    let mut tries = 0;
    loop {
        match read_expect(dir) {
            Err(_) if tries < 50 && !dir.join(".failed").exists() => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn read_expect(dir: &Path) -> Result<Expect, UploadError> {
    let path = dir.join(".expect");
    let text = fs::read_to_string(&path).map_err(|_| {
        UploadError::Remote(format!(
            "no receiver is waiting in {} (is this the builder's receive container?)",
            dir.display()
        ))
    })?;
    match text.split_whitespace().collect::<Vec<_>>().as_slice() {
        [size, sha] => Ok(Expect {
            size: size
                .parse()
                .map_err(|_| UploadError::Remote(format!("bad {}", path.display())))?,
            sha256: sha.to_string(),
        }),
        _ => Err(UploadError::Remote(format!("bad {}", path.display()))),
    }
}

/// Records the outcome for the waiting process (`.done` or `.failed`).
pub fn record(dir: &Path, result: &Result<Received, UploadError>) {
    let (name, text) = match result {
        Ok(r) => (".done", r.sha256.clone()),
        // A second attempt after success must not fail the build that already has its context.
        Err(UploadError::Remote(_)) if dir.join(".done").exists() => return,
        Err(e) => (".failed", e.to_string()),
    };
    let tmp = dir.join(format!("{name}.tmp"));
    if fs::write(&tmp, text).is_ok() {
        let _ = fs::rename(&tmp, dir.join(name));
    }
}

/// The init container's main process: announces `expect`, then waits until an upload has
/// been received (`Ok`), has failed (`Err` with its reason) or `timeout` has passed.
pub fn wait_for_upload(
    dir: &Path,
    expect: &Expect,
    timeout: Duration,
    poll: Duration,
) -> Result<(), UploadError> {
    let path = dir.join(".expect");
    fs::write(&path, format!("{} {}\n", expect.size, expect.sha256))
        .map_err(|e| UploadError::io(&path, e))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(sha) = fs::read_to_string(dir.join(".done")) {
            return if sha.trim() == expect.sha256 {
                Ok(())
            } else {
                Err(UploadError::HashMismatch {
                    got: sha.trim().to_string(),
                    want: expect.sha256.clone(),
                })
            };
        }
        if let Ok(why) = fs::read_to_string(dir.join(".failed")) {
            return Err(UploadError::Remote(why));
        }
        if Instant::now() >= deadline {
            return Err(UploadError::Timeout(timeout));
        }
        std::thread::sleep(poll);
    }
}
