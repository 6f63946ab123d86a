//! A real BuildKit for `tests/buildkit_state.rs` and `benches/buildkit_restore.rs`: finds
//! `buildkitd` and `buildctl` (`HEARTH_BUILDKITD`, `HEARTH_BUILDCTL`), runs a rootful buildkitd
//! (runc worker) on a state dir with its socket in a temp dir, stopped on drop; a
//! self-contained project (a static busybox as the base, a named local context, so nothing
//! is pulled) with a dependency step and a compile step over cache mounts, whose every commit
//! changes two of its 40 sources; the builder container's exact script run against it; and
//! `hearth snapshot save` / `restore` with the real binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth::controller::builders::build_script::{
    self, PRUNE_DEADLINE_ENV, PRUNE_KEEP_DURATION_ENV, PRUNE_KEEP_STORAGE_ENV, REDACT_DIRS_ENV,
    TERMINATION_LOG_ENV, WORK_DIR_ENV,
};
use hearth::controller::builders::jobs::STATE_DIR;

/// Sources of the project; each commit changes the first two.
pub const SOURCES: usize = 40;
/// Dependencies the project "downloads" into its cache mount, and MiB each.
pub const DEPS: usize = 8;
pub const DEP_MIB: usize = 4;
/// Hash rounds per compiled object (about 0.2 s each here).
pub const COMPILE_ROUNDS: usize = 200;

/// The BuildKit binaries and what a rootful runc worker needs.
pub struct Tools {
    pub buildkitd: PathBuf,
    pub buildctl: PathBuf,
    pub runc: PathBuf,
    pub busybox: PathBuf,
}

/// The tools, or `None` (after saying why) when `HEARTH_BUILDKITD` is unset. Set but unusable
/// (not root, no runc, no static busybox) panics: whoever set it asked for the real thing.
pub fn tools(what: &str) -> Option<Tools> {
    let Some(buildkitd) = std::env::var_os("HEARTH_BUILDKITD").map(PathBuf::from) else {
        // Straight to stderr, past the test harness's capture: a skip is seen, not hidden.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipping {what}: HEARTH_BUILDKITD is not set (the path to a buildkitd, run as root \
             with runc; buildctl next to it or HEARTH_BUILDCTL; see docs/snapshots.md)"
        );
        return None;
    };
    let buildctl = std::env::var_os("HEARTH_BUILDCTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| buildkitd.with_file_name("buildctl"));
    for exe in [&buildkitd, &buildctl] {
        assert!(exe.is_file(), "{} does not exist", exe.display());
    }
    assert!(
        rustix::process::getuid().is_root(),
        "HEARTH_BUILDKITD is set but this is not root: the test runs a rootful buildkitd"
    );
    let runc = std::env::var_os("HEARTH_RUNC")
        .map(PathBuf::from)
        .or_else(|| on_path("runc"))
        .expect("runc is not on PATH (apt-get install runc, or HEARTH_RUNC)");
    let busybox = std::env::var_os("HEARTH_BUSYBOX")
        .map(PathBuf::from)
        .or_else(|| on_path("busybox"))
        .expect("busybox is not on PATH (apt-get install busybox-static, or HEARTH_BUSYBOX)");
    let bytes = std::fs::read(&busybox).expect("read busybox");
    assert!(
        !has_interpreter(&bytes),
        "{} is dynamically linked: the build's rootfs holds nothing else (busybox-static)",
        busybox.display()
    );
    Some(Tools {
        buildkitd,
        buildctl,
        runc,
        busybox,
    })
}

/// Whether a 64-bit little-endian ELF file names a program interpreter (`PT_INTERP`): a
/// dynamically linked executable.
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return true;
    };
    (0..count).any(|i| u32_at(phoff + i * size) == Some(3))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A buildkitd on one state dir, its socket in `run`; stopped (SIGTERM, then SIGKILL after
/// 20 s) when dropped, so a failing test leaves none behind.
pub struct Buildkitd {
    child: Option<Child>,
    pub addr: String,
    pub log: PathBuf,
    /// Its `--root`.
    pub state: PathBuf,
}

impl Buildkitd {
    /// Starts buildkitd and waits until it answers (`buildctl debug workers`).
    pub fn start(tools: &Tools, state: &Path, run: &Path) -> Buildkitd {
        std::fs::create_dir_all(run).expect("run dir");
        let config = run.join("buildkitd.toml");
        // No /etc/buildkit/buildkitd.toml of the host; GC only when the test prunes.
        std::fs::write(&config, "").expect("config");
        let addr = format!("unix://{}", run.join("buildkitd.sock").display());
        let log = run.join("buildkitd.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(&tools.buildkitd)
            .arg("--root")
            .arg(state)
            .args(["--addr", &addr, "--config"])
            .arg(&config)
            .arg("--oci-worker-binary")
            .arg(&tools.runc)
            .args(["--containerd-worker=false", "--oci-worker-gc=false"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start buildkitd");
        let mut bk = Buildkitd {
            child: Some(child),
            addr,
            log,
            state: state.to_path_buf(),
        };
        let started = Instant::now();
        loop {
            let ok = Command::new(&tools.buildctl)
                .args(["--addr", &bk.addr, "debug", "workers"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return bk;
            }
            if let Some(status) = bk.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("buildkitd exited {status}:\n{}", bk.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "buildkitd did not answer within 60 s:\n{}",
                bk.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops buildkitd as a pod's end would (SIGTERM) and waits for it to exit by itself
    /// (it exits 1, "context canceled", once its server stopped): its databases are closed
    /// and its state dir's lock released.
    pub fn stop(mut self) {
        let exited = self.terminate();
        assert!(
            exited,
            "buildkitd did not exit within 20 s of SIGTERM:\n{}",
            self.log_text()
        );
    }

    /// SIGTERM, then SIGKILL after 20 s; whether it exited before the SIGKILL.
    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Buildkitd {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The project: `base/` (a busybox rootfs) and `ctx/` (Dockerfile, scripts, sources).
pub struct Project {
    pub dir: PathBuf,
}

const DOCKERFILE: &str = "FROM scratch
COPY --from=base / /
WORKDIR /app
COPY deps.txt fetch-deps.sh ./
RUN --mount=type=cache,target=/cache/deps sh fetch-deps.sh
COPY build.sh ./
COPY src/ src/
RUN --mount=type=cache,target=/cache/obj sh build.sh
";

/// Downloads each dependency once into the cache mount, then installs it into the image.
const FETCH_DEPS: &str = r#"set -e
mkdir -p /app/deps
got=0; had=0
while read name size; do
  [ -n "$name" ] || continue
  if [ ! -f "/cache/deps/$name.pkg" ]; then
    head -c $((size * 1048576)) /dev/urandom > "/cache/deps/$name.pkg.tmp"
    mv "/cache/deps/$name.pkg.tmp" "/cache/deps/$name.pkg"
    got=$((got + 1))
  else
    had=$((had + 1))
  fi
  cp "/cache/deps/$name.pkg" /app/deps/
done < deps.txt
echo "deps: fetched $got, from cache $had"
"#;

/// Compiles each source into an object keyed by its content, reusing the cache mount's.
const BUILD: &str = r#"set -e
compiled=0; reused=0
for f in src/*.c; do
  key=$(sha256sum "$f" | cut -c1-32)
  obj="/cache/obj/$key.o"
  if [ ! -f "$obj" ]; then
    i=0; h=$key
    while [ $i -lt ROUNDS ]; do h=$(echo "$h" | sha256sum | cut -c1-64); i=$((i + 1)); done
    { cat "$f"; head -c 262144 /dev/zero | tr '\0' x; echo "$h"; } > "$obj.tmp"
    mv "$obj.tmp" "$obj"
    compiled=$((compiled + 1))
  else
    reused=$((reused + 1))
  fi
  cat "$obj" >> /app/app.bin
done
echo "objects: compiled $compiled, reused $reused"
"#;

impl Project {
    /// Writes the project at commit 0.
    pub fn create(dir: &Path, tools: &Tools) -> Project {
        let bin = dir.join("base/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.join("base/tmp")).unwrap();
        std::fs::copy(&tools.busybox, bin.join("busybox")).unwrap();
        let list = Command::new(&tools.busybox)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        let ctx = dir.join("ctx");
        std::fs::create_dir_all(ctx.join("src")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        std::fs::write(ctx.join("fetch-deps.sh"), FETCH_DEPS).unwrap();
        std::fs::write(
            ctx.join("build.sh"),
            BUILD.replace("ROUNDS", &COMPILE_ROUNDS.to_string()),
        )
        .unwrap();
        let deps: String = (1..=DEPS).map(|i| format!("dep{i} {DEP_MIB}\n")).collect();
        std::fs::write(ctx.join("deps.txt"), deps).unwrap();
        let project = Project {
            dir: dir.to_path_buf(),
        };
        project.commit(0);
        project
    }

    /// Checks out commit `n`: sources 1 and 2 say `v<n>`, the others `v0`.
    pub fn commit(&self, n: u32) {
        for i in 1..=SOURCES {
            let version = if i <= 2 { n } else { 0 };
            let text = format!("int f{i}(void) {{ return {i}; }} /* v{version} */\n");
            std::fs::write(self.dir.join(format!("ctx/src/f{i}.c")), text).unwrap();
        }
    }

    /// buildctl's arguments for the build (after `--addr`), as the builder pod's: the image
    /// stays in buildkitd's store (no registry here), metadata to `metadata`.
    pub fn build_args(&self, metadata: &Path) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            "build".into(),
            "--frontend".into(),
            "dockerfile.v0".into(),
            "--progress".into(),
            "plain".into(),
            "--local".into(),
            format!("context={}", d("ctx")),
            "--local".into(),
            format!("dockerfile={}", d("ctx")),
            "--local".into(),
            format!("base={}", d("base")),
            "--opt".into(),
            "context:base=local:base".into(),
            "--output".into(),
            "type=image,name=hearth.test/app:latest".into(),
            "--metadata-file".into(),
            metadata.display().to_string(),
        ]
    }
}

/// A finished build: its plain progress log and how long it took.
pub struct Build {
    pub log: String,
    pub wall: Duration,
}

impl Build {
    /// Names of the steps BuildKit reported `CACHED` (`[stage-0 4/7] RUN ...`).
    pub fn cached_steps(&self) -> Vec<String> {
        let mut names: BTreeMap<&str, &str> = BTreeMap::new();
        let mut cached = Vec::new();
        for line in self.log.lines() {
            let Some((id, rest)) = line.split_once(' ') else {
                continue;
            };
            if !id.starts_with('#') {
                continue;
            }
            if rest.starts_with('[') {
                names.entry(id).or_insert(rest);
            } else if rest == "CACHED" {
                cached.push(names.get(id).copied().unwrap_or(rest).to_string());
            }
        }
        cached
    }

    /// The numbers a step's summary line printed: `objects: compiled 2, reused 38` gives
    /// `[2, 38]` for `objects:`.
    pub fn counts(&self, label: &str) -> Option<Vec<u64>> {
        let line = self.log.lines().find_map(|l| {
            let at = l.find(label)?;
            Some(&l[at + label.len()..])
        })?;
        Some(
            line.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect(),
        )
    }
}

/// Builds with buildctl against `bk`; panics with the log when the build fails.
pub fn build(tools: &Tools, bk: &Buildkitd, project: &Project, metadata: &Path) -> Build {
    let started = Instant::now();
    let out = Command::new(&tools.buildctl)
        .args(["--addr", &bk.addr])
        .args(project.build_args(metadata))
        .output()
        .expect("run buildctl");
    let wall = started.elapsed();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build failed:\n{log}\n{}",
        bk.log_text()
    );
    Build { log, wall }
}

/// What the builder container's script did: its exit code, output and termination message.
pub struct ScriptRun {
    pub code: i32,
    pub output: String,
    pub termination_message: String,
    pub wall: Duration,
    /// Each buildctl call's subcommand (`build`, `prune`) and seconds.
    pub seconds: Vec<(String, f64)>,
}

/// Runs the builder container's exact script in `work`, its `buildctl-daemonless.sh` a shim
/// that runs the real buildctl against `bk`, pruning with `keep_duration` (a Go duration) and
/// `keep_storage_mb`.
pub fn run_builder_script(
    tools: &Tools,
    bk: &Buildkitd,
    project: &Project,
    work: &Path,
    keep_duration: &str,
    keep_storage_mb: u64,
) -> ScriptRun {
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let shim = bin.join("buildctl-daemonless.sh");
    let times = work.join("buildctl.times");
    // The real buildctl against `bk`; each call's subcommand and seconds to `times`.
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nstart=$(date +%s.%N)\n'{}' --addr '{}' \"$@\"\nrc=$?\necho \"$1 $start $(date +%s.%N)\" >> '{}'\nexit $rc\n",
            tools.buildctl.display(),
            bk.addr,
            times.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let scratch = work.join("hearth");
    let message = work.join("termination-log");
    let deadline = jiff::Timestamp::now().as_second() + 3600;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        // The pod's state dir is this buildkitd's (the size is read from its content store).
        .arg(build_script::script().replace(STATE_DIR, &bk.state.to_string_lossy()))
        .arg("hearth-build")
        .args(project.build_args(&scratch.join("metadata.json")))
        .env("PATH", path)
        .env(WORK_DIR_ENV, &scratch)
        .env(TERMINATION_LOG_ENV, &message)
        .env(REDACT_DIRS_ENV, work.join("no-secrets"))
        .env(PRUNE_KEEP_DURATION_ENV, keep_duration)
        .env(PRUNE_KEEP_STORAGE_ENV, keep_storage_mb.to_string())
        .env(PRUNE_DEADLINE_ENV, deadline.to_string())
        .output()
        .expect("run the builder script");
    let seconds = std::fs::read_to_string(&times)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let what = f.next()?.to_string();
            let (a, b): (f64, f64) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
            Some((what, b - a))
        })
        .collect();
    ScriptRun {
        seconds,
        code: out.status.code().unwrap_or(-1),
        output: String::from_utf8_lossy(&out.stdout).into_owned(),
        termination_message: std::fs::read_to_string(&message).unwrap_or_default(),
        wall: started.elapsed(),
    }
}

/// A snapshot `hearth snapshot save --json` reported.
pub struct Saved {
    pub id: String,
    pub manifest_sha256: String,
    pub bytes: u64,
}

/// `hearth snapshot save DIR` to the file store at `store`.
pub fn save(hearth: &Path, dir: &Path, store: &Path) -> Saved {
    let out = snapshot_cmd(hearth, store, &["save".as_ref(), dir.as_os_str()]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("save --json");
    Saved {
        id: v["id"].as_str().expect("id").to_string(),
        manifest_sha256: v["manifestSha256"].as_str().expect("digest").to_string(),
        bytes: v["bytes"].as_u64().unwrap_or(0),
    }
}

/// `hearth snapshot restore ID DIR --manifest-sha256 ...` (pinned, as the controller runs it).
pub fn restore(hearth: &Path, saved: &Saved, dir: &Path, store: &Path) {
    snapshot_cmd(
        hearth,
        store,
        &[
            "restore".as_ref(),
            saved.id.as_ref(),
            dir.as_os_str(),
            "--manifest-sha256".as_ref(),
            saved.manifest_sha256.as_ref(),
        ],
    );
}

fn snapshot_cmd(hearth: &Path, store: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(hearth)
        .arg("snapshot")
        .args(args)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(["--namespace", "team", "--cache", "app-main", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run hearth");
    assert!(
        out.status.success(),
        "hearth snapshot {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bytes under `dir` (regular files' lengths, hard links once).
pub fn tree_bytes(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sb"])
        .arg(dir)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The image's size as the builder should report it, computed here from the manifest BuildKit's
/// exporter wrote to `state`'s content store: its config and layers.
pub fn image_size_in(state: &Path, digest: &str) -> Option<i64> {
    let hex = digest.strip_prefix("sha256:")?;
    let blobs = std::fs::read_dir(state)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("content/blobs/sha256"))
        .find(|p| p.is_dir())?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(hex)).ok()?).ok()?;
    let size = |d: &serde_json::Value| d["size"].as_i64();
    let layers = manifest["layers"].as_array()?;
    Some(size(&manifest["config"])? + layers.iter().map(size).sum::<Option<i64>>()?)
}
