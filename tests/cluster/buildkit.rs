//! buildkitd and buildctl of the builder pods' `buildkit` container, played in-process (there
//! is no buildkitd in CI); the container's real script then runs around what they printed
//! (see `containers.rs`). It reads what the real container would: buildctl's args (`--opt build-arg:SLEEP=<s>` makes
//! the build take that long, `--opt build-arg:FAIL=1` makes it fail with exit 1 and a log
//! tail), `--metadata-file`, and `BUILDKITD_FLAGS --root <state dir>`. It holds an exclusive
//! flock on `<state>/buildkitd.lock` while it runs (a second buildkitd on the same volume
//! fails at once, as the real one does), and writes a realistic BuildKit state: the bbolt
//! databases, compressed blobs under `runc-overlayfs/content/blobs/sha256/`, and one new
//! `runc-overlayfs/snapshots/<n>/fs/` tree of many small files per build, rewriting some files
//! of the previous one. On success it writes buildctl's metadata (the image digest) to the
//! metadata file, as buildctl does. When the cluster runs the loopback registry
//! ([`BuildkitOpts::registry`]) and `--output` has `push=true` and a name on it, it PUSHES a
//! real small image there through the distribution protocol: a config of each platform of
//! `--opt platform=` (default linux/amd64), a layer and the manifest (an index over them for
//! several platforms), under the name's tag, or by digest only with `push-by-digest=true`;
//! the metadata's `containerimage.digest` is then that manifest's real digest. With `--opt build-arg:LEAK=1` it prints each `--secret` file (a
//! `RUN` step printing a build secret) before failing. On SIGTERM it
//! keeps writing to the state dir for a while (a buildkitd finishing its step), then exits 143.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::registry_support::{self, digest_of, OCI_INDEX, OCI_MANIFEST};
use super::runtime::wait_term;
use super::snapshot_support::noise;

/// Knobs of the played buildkitd.
#[derive(Clone, Debug)]
pub struct BuildkitOpts {
    /// Small files in each build's new snapshot tree.
    pub files_per_build: usize,
    /// How long it keeps writing after SIGTERM before it exits (the kubelet SIGKILLs it at the
    /// end of the grace period if that comes first).
    pub term_linger: Duration,
    /// The loopback registry (`127.0.0.1:PORT`) and its credentials: images named on it are
    /// pushed there. None: nothing is pushed anywhere.
    pub registry: Option<(String, Option<(String, String)>)>,
}

impl Default for BuildkitOpts {
    fn default() -> Self {
        BuildkitOpts {
            files_per_build: 2000,
            term_linger: Duration::from_secs(2),
            registry: None,
        }
    }
}

/// What the container was given, paths already on the host.
pub struct Play {
    /// The container's args (`-c SCRIPT hearth-build build ...`).
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Where buildctl's output goes.
    pub log: PathBuf,
    /// A seed for contents and the digest (the pod uid).
    pub seed: String,
}

/// What buildctl was asked.
#[derive(Debug, Default)]
struct Request {
    build_args: BTreeMap<String, String>,
    metadata_file: Option<PathBuf>,
    /// `--secret id=...,src=FILE` files.
    secrets: Vec<PathBuf>,
    image: String,
    /// `push=true` and `push-by-digest=true` of `--output`.
    push: bool,
    push_by_digest: bool,
    /// `--opt platform=` (comma-separated).
    platforms: Vec<String>,
    state_dir: Option<PathBuf>,
    /// `--import-cache type=registry,ref=REF` refs.
    import_cache: Vec<String>,
    /// What buildctl itself refuses before it reaches buildkitd (a bad `--output`).
    refused: Option<String>,
}

/// Go's `encoding/csv` read of one record, as buildctl reads `--output`: a field starting
/// with a quote is quoted (`""` is a quote inside it); a quote anywhere else is an error.
fn csv_record(record: &str) -> Result<Vec<String>, String> {
    let mut fields = vec![String::new()];
    let (mut quoted, mut at_start) = (false, true);
    let mut chars = record.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => quoted = true,
            (false, '"') => return Err(format!("bare \" in non-quoted field: {record}")),
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            (true, '"') => quoted = false,
            (false, ',') => {
                fields.push(String::new());
                at_start = true;
                continue;
            }
            (_, c) => fields.last_mut().unwrap().push(c),
        }
        at_start = false;
    }
    Ok(fields)
}

fn parse(play: &Play) -> Request {
    let mut r = Request::default();
    let mut args = play.args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--opt" => {
                if let Some((k, v)) = args.next().and_then(|o| o.split_once('=')) {
                    if let Some(name) = k.strip_prefix("build-arg:") {
                        r.build_args.insert(name.into(), v.into());
                    } else if k == "platform" {
                        r.platforms = v.split(',').map(str::to_string).collect();
                    }
                }
            }
            "--metadata-file" => r.metadata_file = args.next().map(PathBuf::from),
            "--secret" => {
                if let Some(src) = args
                    .next()
                    .and_then(|s| s.split(',').find_map(|kv| kv.strip_prefix("src=")))
                {
                    r.secrets.push(PathBuf::from(src));
                }
            }
            "--output" => {
                let fields = csv_record(args.next().map(String::as_str).unwrap_or_default());
                match fields {
                    Ok(fields) => {
                        for f in fields {
                            match f.split_once('=') {
                                Some(("name", names)) => r.image = names.to_string(),
                                Some(("push", v)) => r.push = v == "true",
                                Some(("push-by-digest", v)) => r.push_by_digest = v == "true",
                                Some(_) => {}
                                None => r.refused = Some(format!("error: invalid value {f}")),
                            }
                        }
                    }
                    Err(e) => r.refused = Some(format!("error: {e}")),
                }
            }
            "--import-cache" => {
                if let Some(reference) = args
                    .next()
                    .and_then(|s| s.split(',').find_map(|kv| kv.strip_prefix("ref=")))
                {
                    r.import_cache.push(reference.to_string());
                }
            }
            _ => {}
        }
    }
    let flags = play
        .env
        .iter()
        .find(|(k, _)| k == "BUILDKITD_FLAGS")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut flags = flags.split_whitespace();
    while let Some(f) = flags.next() {
        if f == "--root" {
            r.state_dir = flags.next().map(PathBuf::from);
        }
    }
    r
}

/// Text-like (compressible) contents.
fn text(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "import ", "def ", "return ", "self", "(x)", ": ", "\n    ", "value", " = ", "None",
    ];
    noise(seed, len)
        .iter()
        .flat_map(|b| words[(*b as usize) % words.len()].bytes())
        .take(len)
        .collect()
}

fn seed_of(s: &str) -> u64 {
    u64::from_le_bytes(
        blake3::hash(s.as_bytes()).as_bytes()[..8]
            .try_into()
            .unwrap(),
    )
}

/// Writes one build's worth of BuildKit state. Returns the build number.
fn write_state(dir: &Path, files: usize, seed: u64) -> std::io::Result<usize> {
    let worker = dir.join("runc-overlayfs");
    let snapshots = worker.join("snapshots");
    let blobs = worker.join("content/blobs/sha256");
    std::fs::create_dir_all(&snapshots)?;
    std::fs::create_dir_all(&blobs)?;
    std::fs::create_dir_all(worker.join("executor"))?;
    let n = std::fs::read_dir(&snapshots)?
        .flatten()
        .filter(|e| e.path().is_dir())
        .count()
        + 1;
    let seed = seed ^ n as u64;
    std::fs::write(dir.join("cache.db"), noise(seed, 256 << 10))?;
    let mut history = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("history.db"))?;
    history.write_all(&noise(seed + 1, 32 << 10))?;
    std::fs::write(worker.join("metadata_v2.db"), noise(seed + 2, 64 << 10))?;
    std::fs::write(worker.join("containerdmeta.db"), noise(seed + 3, 64 << 10))?;
    std::fs::write(snapshots.join("metadata.db"), noise(seed + 4, 64 << 10))?;
    for b in 0..2u64 {
        let blob = noise(seed + 10 + b, 64 << 10);
        std::fs::write(blobs.join(blake3::hash(&blob).to_hex().as_str()), blob)?;
    }
    let tree = snapshots.join(n.to_string()).join("fs");
    for i in 0..files {
        let sub = tree.join(format!("usr/lib/python3/pkg{}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let len = 200 + (seed as usize + i * 37) % 1800;
        std::fs::write(sub.join(format!("mod{i}.py")), text(seed + i as u64, len))?;
    }
    // Some files of the previous build change (a layer rebuilt in place, as overlay upper
    // dirs of running steps do).
    let prev = snapshots
        .join((n - 1).to_string())
        .join("fs/usr/lib/python3/pkg0");
    if n > 1 && prev.is_dir() {
        for e in std::fs::read_dir(&prev)?.flatten().step_by(10) {
            std::fs::write(e.path(), text(seed + 99, 500))?;
        }
    }
    Ok(n)
}

fn log(play: &Play, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&play.log)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Plays the container to its exit code. Dropping the future is SIGKILL.
pub async fn play(
    opts: &BuildkitOpts,
    play: Play,
    mut term: watch::Receiver<Option<Duration>>,
) -> i32 {
    let req = parse(&play);
    if let Some(refused) = &req.refused {
        log(&play, refused);
        return 1;
    }
    for reference in &req.import_cache {
        log(
            &play,
            &format!("#2 importing cache manifest from {reference}"),
        );
    }
    let Some(state) = req.state_dir.clone() else {
        log(&play, "buildkitd: no --root in BUILDKITD_FLAGS");
        return 1;
    };
    if let Err(e) = std::fs::create_dir_all(&state) {
        log(&play, &format!("buildkitd: {}: {e}", state.display()));
        return 1;
    }
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("buildkitd.lock"))
    {
        Ok(f) => f,
        Err(e) => {
            log(&play, &format!("buildkitd: opening lock: {e}"));
            return 1;
        }
    };
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        log(
            &play,
            &format!(
                "buildkitd: could not lock {}/buildkitd.lock, another instance running?",
                state.display()
            ),
        );
        return 1;
    }
    log(&play, "#1 [internal] load build definition from Dockerfile");
    let seed = seed_of(&play.seed);
    let files = opts.files_per_build;
    let dir = state.clone();
    let written = tokio::task::spawn_blocking(move || write_state(&dir, files, seed)).await;
    let n = match written {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            log(&play, &format!("buildkitd: writing state: {e}"));
            return 1;
        }
        Err(e) => {
            log(&play, &format!("buildkitd: {e}"));
            return 1;
        }
    };
    log(&play, &format!("#2 [1/3] FROM python:3.12 (snapshot {n})"));
    let sleep: f64 = req
        .build_args
        .get("SLEEP")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let terminated = tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(sleep.max(0.0))) => false,
        _ = wait_term(&mut term) => true,
    };
    if terminated {
        log(
            &play,
            "buildkitd: received SIGTERM, finishing the running step",
        );
        let linger = tokio::time::Instant::now() + opts.term_linger;
        let mut i = 0;
        while tokio::time::Instant::now() < linger {
            let path = state.join(format!("runc-overlayfs/executor/step-{i}"));
            let _ = std::fs::write(path, noise(seed + i, 4096));
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(lock);
        return 143;
    }
    if req.build_args.get("FAIL").map(String::as_str) == Some("1") {
        if req.build_args.contains_key("LEAK") {
            for file in &req.secrets {
                let value = std::fs::read_to_string(file).unwrap_or_default();
                log(&play, &format!("#3 [2/3] RUN echo $(cat secret) # {value}"));
            }
        }
        log(&play, "#3 [2/3] RUN false");
        log(
            &play,
            "#3 ERROR: process \"/bin/sh -c false\" did not complete successfully: exit code: 1",
        );
        log(&play, "error: failed to solve: process \"/bin/sh -c false\" did not complete successfully: exit code: 1");
        drop(lock);
        return 1;
    }
    let pushed = match push(opts, &req, &format!("{}-{n}", play.seed)).await {
        Ok(pushed) => pushed,
        Err(e) => {
            log(&play, &format!("#9 ERROR: {e}"));
            log(&play, &format!("error: failed to solve: {e}"));
            drop(lock);
            return 1;
        }
    };
    let (digest, media_type, size) = pushed.unwrap_or_else(|| {
        let digest = format!(
            "sha256:{}",
            blake3::hash(format!("{}-{n}-{}", play.seed, req.image).as_bytes()).to_hex()
        );
        (digest, OCI_MANIFEST.to_string(), 1234)
    });
    let metadata = serde_json::json!({
        "buildx.build.ref": format!("builder/builder0/{}", &play.seed),
        "containerimage.config.digest": format!("sha256:{}", blake3::hash(digest.as_bytes()).to_hex()),
        "containerimage.descriptor": {
            "mediaType": media_type,
            "digest": digest,
            "size": size
        },
        "containerimage.digest": digest,
        "image.name": req.image,
    })
    .to_string();
    if let Some(file) = &req.metadata_file {
        let _ = std::fs::write(file, &metadata);
    }
    log(
        &play,
        &format!("#9 exporting to image\n#9 naming to {} done", req.image),
    );
    drop(lock);
    0
}

/// Pushes the build's image to the loopback registry when `--output` asks to push a name on
/// it: one image per platform, and an index over them when there are several. Returns the
/// pushed manifest's digest, media type and size; None when nothing was to be pushed there.
async fn push(
    opts: &BuildkitOpts,
    req: &Request,
    seed: &str,
) -> Result<Option<(String, String, usize)>, String> {
    let Some((registry, credentials)) = &opts.registry else {
        return Ok(None);
    };
    let prefix = format!("{registry}/");
    let names: Vec<&str> = req
        .image
        .split(',')
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if !req.push || names.is_empty() {
        return Ok(None);
    }
    let base = format!("http://{registry}");
    let creds = credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let platforms = if req.platforms.is_empty() {
        vec!["linux/amd64".to_string()]
    } else {
        req.platforms.clone()
    };
    let mut pushed = None;
    for name in names {
        let path = &name[prefix.len()..];
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (path, None),
        };
        let tag = if req.push_by_digest {
            None
        } else {
            Some(tag.unwrap_or("latest"))
        };
        let mut images = Vec::new();
        for platform in &platforms {
            // Several platforms: each image by digest, the index under the tag.
            let reference = if platforms.len() == 1 { tag } else { None };
            let digest =
                registry_support::push_image(&base, repository, reference, platform, seed, creds)
                    .await
                    .map_err(|e| format!("pushing {name}: {e}"))?;
            let (_, bytes) = registry_support::get_manifest(&base, repository, &digest, creds)
                .await
                .map_err(|e| format!("pushing {name}: {e}"))?;
            images.push((digest, bytes.len(), platform));
        }
        pushed = Some(if let [(digest, size, _)] = images.as_slice() {
            (digest.clone(), OCI_MANIFEST.to_string(), *size)
        } else {
            let manifests: Vec<serde_json::Value> = images
                .iter()
                .map(|(digest, size, platform)| {
                    let (os, architecture, variant) = registry_support::split_platform(platform);
                    let mut p = serde_json::json!({"os": os, "architecture": architecture});
                    if let Some(v) = variant {
                        p["variant"] = v.into();
                    }
                    serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": p})
                })
                .collect();
            let index = bytes::Bytes::from(
                serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
                    .to_string(),
            );
            let digest = digest_of(&index);
            let size = index.len();
            let reference = tag.map(str::to_string).unwrap_or_else(|| digest.clone());
            registry_support::push_manifest(&base, repository, &reference, OCI_INDEX, index, creds)
                .await
                .map_err(|e| format!("pushing {name}: {e}"))?;
            (digest, OCI_INDEX.to_string(), size)
        });
    }
    Ok(pushed)
}
