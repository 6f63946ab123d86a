//! `hearth snapshot bench`: generates a BuildKit-shaped tree and measures, in one run and
//! against the same store, Hearth's full save, incremental save after a ~3% change and full
//! restore, next to `tar -c | zstd -T0 -3` (and `zstd -d | tar -x`) streamed to the store
//! in 32 MiB parts, 4 at a time; plus the local ceilings (read, BLAKE3, zstd).
//! Hearth and the baseline run as child processes, under `/usr/bin/time` for peak RSS, each
//! phase after a `sync` so that none pays for the write-back of the one before; the restores
//! alternate over several rounds and are compared by their medians.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::bench_tree;
use crate::store::{S3Options, Store};

/// Benchmark options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Store to measure against (both Hearth and the baseline use it).
    #[arg(long, env = "HEARTH_STORE")]
    pub store: String,
    #[command(flatten)]
    pub s3: S3Options,
    /// Where the tree and the restores go.
    #[arg(long, default_value = "/tmp/hearth-bench")]
    pub workdir: PathBuf,
    /// Size of the generated tree: bytes, or with a KiB, MiB or GiB suffix.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub size: u64,
    /// Seed of the generated tree.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The `hearth` binary to measure (default: this one).
    #[arg(long)]
    pub exe: Option<PathBuf>,
    /// Seconds a restore waits after the benchmark last deleted a tree, here or in an earlier
    /// run: ext4 without a journal does not reuse freed inodes for 60 to 360 s and slows
    /// every creation meanwhile. 0 on a filesystem with a journal (or XFS, btrfs).
    #[arg(long, default_value_t = 361)]
    pub inode_reuse_wait: u64,
    /// Restores of each kind, alternating (the restore ratio is of their medians).
    #[arg(long, default_value_t = 3)]
    pub restore_rounds: usize,
    /// The baseline restores first in odd rounds and Hearth in even ones (the other way round
    /// by default): on a machine where the first process to write after a pause pays more,
    /// compare the two orders.
    #[arg(long)]
    pub baseline_first: bool,
    /// Print the results as JSON too.
    #[arg(long)]
    pub json: bool,
}

/// Parses `4GiB`, `512MiB`, `64KiB` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?}: use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// One measured phase.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// What ran.
    pub name: String,
    /// Wall time.
    pub seconds: f64,
    /// Logical bytes of the tree / MB per second over them.
    pub mb_per_s: f64,
    /// Bytes sent to or read from the store.
    pub store_bytes: u64,
    /// Peak RSS of the process (or pipeline) in bytes.
    pub peak_rss: u64,
}

/// Everything the benchmark measured.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    /// Tree size in bytes.
    pub tree_bytes: u64,
    /// Files in the tree.
    pub tree_files: u64,
    /// Ceilings (MB/s): read, BLAKE3, zstd -1 and -3, one core each; writing the tree's
    /// bytes through the page cache and to the disk.
    pub ceilings: Vec<(String, f64)>,
    /// The measured phases.
    pub phases: Vec<Phase>,
    /// The change before the incremental save.
    pub change: bench_tree::Change,
}

const PART: usize = 32 << 20;

fn mb(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds.max(1e-9)
}

fn tree_size(root: &Path) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() && e.file_name() != super::tree::INDEX_DIR {
                stack.push(e.path());
            } else if m.is_file() {
                bytes += m.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

/// Calls `f` with the path of every regular file under `root`.
fn for_each_file(
    root: &Path,
    mut f: impl FnMut(PathBuf) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                f(e.path())?;
            }
        }
    }
    Ok(())
}

/// Reads every file once; returns MB/s and the first `sample` bytes for the CPU ceilings.
fn read_ceiling(root: &Path, sample: usize) -> std::io::Result<(f64, Vec<u8>)> {
    let started = Instant::now();
    let (mut total, mut keep) = (0u64, Vec::with_capacity(sample));
    let mut buf = vec![0u8; 1 << 20];
    for_each_file(root, |path| {
        let mut f = std::fs::File::open(path)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            total += n as u64;
            let room = sample - keep.len();
            keep.extend_from_slice(&buf[..n.min(room)]);
        }
    })?;
    Ok((mb(total, started.elapsed().as_secs_f64()), keep))
}

/// Writes `total` bytes (the sample, repeated) into one new file under `dir`, in writes of
/// a restore's largest ([`super::restore::WRITE_PIECE`]): the rate a restore's writes could
/// reach on this filesystem through the page cache (neither restore syncs), then the same
/// with an `fsync` at the end (the disk's own rate).
fn write_ceilings(dir: &Path, sample: &[u8], total: u64) -> std::io::Result<Vec<(String, f64)>> {
    use std::io::Write;
    let block: Vec<u8> = sample
        .iter()
        .copied()
        .cycle()
        .take(super::restore::WRITE_PIECE)
        .collect();
    let mut out = Vec::new();
    for (name, sync) in [
        ("write tree bytes (1 thread, page cache)", false),
        ("write tree bytes + fsync (disk)", true),
    ] {
        let path = dir.join("write-ceiling.tmp");
        let started = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        let mut left = total;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        if sync {
            f.sync_all()?;
        }
        drop(f);
        out.push((name.to_string(), mb(total, started.elapsed().as_secs_f64())));
        std::fs::remove_file(&path)?;
    }
    Ok(out)
}

fn cpu_ceilings(sample: &[u8]) -> Vec<(String, f64)> {
    let time = |f: &dyn Fn(&[u8])| {
        let started = Instant::now();
        for block in sample.chunks(4 << 20) {
            f(block);
        }
        mb(sample.len() as u64, started.elapsed().as_secs_f64())
    };
    vec![
        (
            "blake3 (1 core)".into(),
            time(&|b| {
                std::hint::black_box(blake3::hash(b));
            }),
        ),
        (
            "zstd level -1 (--fast=1, 1 core)".into(),
            time(&|b| {
                let _ = std::hint::black_box(zstd::bulk::compress(b, -1));
            }),
        ),
        (
            "zstd level 1 (1 core)".into(),
            time(&|b| {
                let _ = std::hint::black_box(zstd::bulk::compress(b, 1));
            }),
        ),
        (
            "zstd level 3 (1 core)".into(),
            time(&|b| {
                let _ = std::hint::black_box(zstd::bulk::compress(b, 3));
            }),
        ),
    ]
}

fn peak_rss(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().lines().last()?.trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Runs `hearth snapshot <args>` under `/usr/bin/time`; returns its JSON, wall time and RSS.
fn hearth(
    exe: &Path,
    args: &BenchArgs,
    sub: &[&str],
    work: &Path,
) -> anyhow::Result<(serde_json::Value, f64, u64)> {
    let rss = work.join("rss.txt");
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(exe)
        .arg("snapshot")
        .args(sub);
    cmd.args([
        "--store",
        &args.store,
        "--namespace",
        "bench",
        "--cache",
        "tree",
        "--json",
    ]);
    if let Some(e) = &args.s3.endpoint {
        cmd.args(["--s3-endpoint", e]);
    }
    if let Some(r) = &args.s3.region {
        cmd.args(["--s3-region", r]);
    }
    if args.s3.path_style {
        cmd.arg("--s3-path-style");
    }
    let started = Instant::now();
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running hearth")?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "hearth snapshot {} failed",
        sub.join(" ")
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing hearth's JSON")?;
    Ok((v, secs, peak_rss(&rss)))
}

/// `tar -c | zstd -T0 -3` streamed to the store in 32 MiB parts, 4 uploads at a time.
async fn baseline_save(
    store: &Store,
    dir: &Path,
    prefix: &str,
    work: &Path,
) -> anyhow::Result<(f64, u64, u64)> {
    let rss = work.join("rss-tar.txt");
    let started = Instant::now();
    let mut child = tokio::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .args(["sh", "-c", "tar -C \"$0\" -cf - . | zstd -q -T0 -3"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut inflight = FuturesUnordered::new();
    let (mut n, mut sent) = (0usize, 0u64);
    loop {
        let mut part = Vec::with_capacity(PART);
        while part.len() < PART {
            if out.read_buf(&mut part).await? == 0 {
                break;
            }
        }
        if part.is_empty() {
            break;
        }
        let eof = part.len() < PART;
        sent += part.len() as u64;
        while inflight.len() >= 4 {
            inflight.next().await.context("upload")??;
        }
        let key = format!("{prefix}/part-{n:06}");
        inflight.push(async move { store.put(&key, Bytes::from(part)).await });
        n += 1;
        if eof {
            break;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    anyhow::ensure!(child.wait().await?.success(), "tar | zstd failed");
    Ok((started.elapsed().as_secs_f64(), sent, peak_rss(&rss)))
}

/// Parts fetched 4 at a time, in order, into `zstd -d | tar -x`.
async fn baseline_restore(
    store: &Store,
    dir: &Path,
    prefix: &str,
    work: &Path,
) -> anyhow::Result<(f64, u64, u64)> {
    let rss = work.join("rss-untar.txt");
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let mut keys: Vec<String> = store
        .list(&format!("{prefix}/"))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    let mut child = tokio::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .args(["sh", "-c", "zstd -q -d -T0 | tar -C \"$0\" -xf -"])
        .arg(dir)
        .stdin(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().context("no stdin")?;
    let mut parts = futures::stream::iter(keys)
        .map(|k| async move { store.get(&k).await })
        .buffered(4);
    let mut got = 0u64;
    while let Some(part) = parts.next().await {
        let part = part?;
        got += part.len() as u64;
        input.write_all(&part).await?;
    }
    drop(input);
    anyhow::ensure!(child.wait().await?.success(), "zstd -d | tar -x failed");
    Ok((started.elapsed().as_secs_f64(), got, peak_rss(&rss)))
}

/// Writes back every dirty page before a phase starts, so that no phase pays for the writes
/// of the one before it (the generated tree, the store's objects, the last restore): on
/// this machine that write-back made consecutive restores vary by 2x and more. A phase's
/// own writes are not synced (neither restore syncs, nor does a build that follows one).
fn settle() {
    rustix::fs::sync();
}

/// Removes a tree the benchmark made, noting in the workdir when its inodes were freed
/// (kept across runs: see [`wait_for_freed_inodes`]).
fn remove_tree(work: &Path, path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => std::fs::write(work.join(FREED_STAMP), unix_seconds().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// When the benchmark last freed a tree's inodes (seconds since the epoch).
const FREED_STAMP: &str = "inodes-freed-at";

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Frees the data blocks of every regular file under `root` but keeps its inodes (the
/// restored tree stays until the run ends, without filling the disk at 4 GiB).
fn empty_files(root: &Path) -> std::io::Result<()> {
    for_each_file(root, |path| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(0)
    })
}

/// Before a restore: on ext4 without a journal (this machine's root filesystem), a new
/// inode is allocated past every free inode whose deletion is under a minute old, or under
/// six while its inode table block is dirty (as the restore's own creations make it), reading
/// the inode table for each (`recently_deleted` in `fs/ext4/ialloc.c`). Creating a tree's
/// 35,000 entries right after deleting another tree took 6 s instead of 0.3 s, for Hearth
/// and the baseline alike. A restore onto a node's new volume meets no such thing, so the
/// benchmark frees no inodes within a run (the tree is regenerated in place, the restored
/// trees are removed when the run ends), and each restore starts `wait` after the last
/// removal (an earlier run's).
fn wait_for_freed_inodes(work: &Path, wait: u64) {
    settle();
    let Some(freed) = std::fs::read_to_string(work.join(FREED_STAMP))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    let now = unix_seconds();
    let left = (freed + wait).saturating_sub(now);
    if left > 0 {
        eprintln!("waiting {left} s until the inodes freed {} s ago are reused as on a fresh volume (--inode-reuse-wait)", now.saturating_sub(freed));
        std::thread::sleep(std::time::Duration::from_secs(left));
    }
}

/// Runs the benchmark and prints the results.
pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let exe = match &args.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe()?,
    };
    let work = &args.workdir;
    let tree = work.join(format!("tree-{}-{}", args.size, args.seed));
    std::fs::create_dir_all(work)?;
    eprintln!("generating {} bytes under {}", args.size, tree.display());
    bench_tree::generate(&tree, args.size, args.seed)?;
    let (tree_bytes, tree_files) = tree_size(&tree)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = rt.block_on(Store::open(&args.store, &args.s3))?;
    let mut r = Results {
        tree_bytes,
        tree_files,
        ..Default::default()
    };

    let (read_mbs, sample) = read_ceiling(&tree, 256 << 20)?;
    r.ceilings
        .push(("read tree (1 thread, page cache)".into(), read_mbs));
    r.ceilings.extend(cpu_ceilings(&sample));
    r.ceilings
        .extend(write_ceilings(work, &sample, tree_bytes)?);
    drop(sample);
    let phase = |name: &str, seconds: f64, bytes: u64, store_bytes: u64, peak_rss: u64| Phase {
        name: name.into(),
        seconds,
        mb_per_s: mb(bytes, seconds),
        store_bytes,
        peak_rss,
    };
    let tag = format!("{:08x}", super::layout::entropy());
    settle();
    eprintln!("baseline save");
    let (s, b, m) = rt.block_on(baseline_save(
        &store,
        &tree,
        &format!("bench-baseline/{tag}/full"),
        work,
    ))?;
    r.phases.push(phase(
        "baseline save: tar | zstd -T0 -3",
        s,
        tree_bytes,
        b,
        m,
    ));
    settle();
    eprintln!("hearth save");
    let tree_s = tree.to_string_lossy().into_owned();
    let (v, s, m) = hearth(&exe, args, &["save", &tree_s], work)?;
    r.phases.push(phase(
        "hearth save (full)",
        s,
        tree_bytes,
        v["uploadedBytes"].as_u64().unwrap_or(0),
        m,
    ));

    r.change = bench_tree::change(&tree, args.size, args.seed)?;
    let (tree_bytes2, _) = tree_size(&tree)?;
    settle();
    eprintln!("hearth incremental save");
    let (v, s, m) = hearth(&exe, args, &["save", &tree_s], work)?;
    r.phases.push(phase(
        "hearth save (incremental, ~3% changed)",
        s,
        tree_bytes2,
        v["uploadedBytes"].as_u64().unwrap_or(0),
        m,
    ));
    settle();
    eprintln!("baseline save after the change");
    let (s, b, m) = rt.block_on(baseline_save(
        &store,
        &tree,
        &format!("bench-baseline/{tag}/changed"),
        work,
    ))?;
    r.phases.push(phase(
        "baseline save after the change",
        s,
        tree_bytes2,
        b,
        m,
    ));

    // The restores alternate, Hearth first in odd rounds and the baseline first in even
    // ones (or the reverse, `--baseline-first`), and the ratio is of the medians: on this
    // machine the rate of writing into the page cache swings several times over within a
    // minute, so one restore of each, one after the other, compares the machine's moments
    // more than the two restores.
    let rounds = args.restore_rounds.max(1);
    let restored = |who: &str, k: usize| work.join(format!("restored-{who}-{k}"));
    for k in 1..=rounds {
        remove_tree(work, &restored("hearth", k))?;
        remove_tree(work, &restored("baseline", k))?;
    }
    wait_for_freed_inodes(work, args.inode_reuse_wait);
    for k in 1..=rounds {
        let hearth_first = (k % 2 == 1) != args.baseline_first;
        for hearth_turn in [hearth_first, !hearth_first] {
            settle();
            if hearth_turn {
                eprintln!("hearth restore, round {k} of {rounds}");
                let dir = restored("hearth", k);
                let dir_s = dir.to_string_lossy().into_owned();
                let (v, s, m) = hearth(&exe, args, &["restore", "latest", &dir_s], work)?;
                r.phases.push(phase(
                    &format!("{HEARTH_RESTORE}, round {k}"),
                    s,
                    tree_bytes2,
                    v["downloadedBytes"].as_u64().unwrap_or(0),
                    m,
                ));
                let (check_bytes, _) = tree_size(&dir)?;
                anyhow::ensure!(
                    check_bytes == tree_bytes2,
                    "restored tree has {check_bytes} bytes, expected {tree_bytes2}"
                );
                empty_files(&dir)?;
            } else {
                eprintln!("baseline restore, round {k} of {rounds}");
                let dir = restored("baseline", k);
                let (s, b, m) = rt.block_on(baseline_restore(
                    &store,
                    &dir,
                    &format!("bench-baseline/{tag}/changed"),
                    work,
                ))?;
                r.phases.push(phase(
                    &format!("{BASELINE_RESTORE}, round {k}"),
                    s,
                    tree_bytes2,
                    b,
                    m,
                ));
                empty_files(&dir)?;
            }
        }
    }
    for k in 1..=rounds {
        remove_tree(work, &restored("hearth", k))?;
        remove_tree(work, &restored("baseline", k))?;
    }
    print_results(&r);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Names of the restore phases, one per round.
const HEARTH_RESTORE: &str = "hearth restore";
const BASELINE_RESTORE: &str = "baseline restore: zstd -d | tar -x";

/// The median wall time of the phases whose name starts with `name` (NaN if none).
fn median_seconds(r: &Results, name: &str) -> f64 {
    let mut s: Vec<f64> = r
        .phases
        .iter()
        .filter(|p| p.name.starts_with(name))
        .map(|p| p.seconds)
        .collect();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn print_results(r: &Results) {
    println!(
        "tree: {:.1} MB in {} files",
        r.tree_bytes as f64 / 1e6,
        r.tree_files
    );
    for (name, v) in &r.ceilings {
        println!("ceiling  {name:<34} {v:>8.0} MB/s");
    }
    println!(
        "{:<42} {:>8} {:>8} {:>12} {:>9}",
        "phase", "wall s", "MB/s", "store MB", "RSS MiB"
    );
    for p in &r.phases {
        println!(
            "{:<42} {:>8.2} {:>8.0} {:>12.1} {:>9.0}",
            p.name,
            p.seconds,
            p.mb_per_s,
            p.store_bytes as f64 / 1e6,
            p.peak_rss as f64 / 1048576.0
        );
    }
    let s = |i: usize| r.phases.get(i).map(|p| p.seconds).unwrap_or(f64::NAN);
    let incr_bytes = r.phases.get(2).map(|p| p.store_bytes).unwrap_or(0);
    println!(
        "save throughput vs baseline:    {:.2}x (target >= 1.5x)",
        s(0) / s(1)
    );
    let (hearth, baseline) = (
        median_seconds(r, HEARTH_RESTORE),
        median_seconds(r, BASELINE_RESTORE),
    );
    println!(
        "restore throughput vs baseline: {:.2}x (target >= 1.5x; medians, {:.2} s against {:.2} s)",
        baseline / hearth,
        hearth,
        baseline
    );
    println!(
        "incremental vs full save:       {:.2}x faster (target >= 5x)",
        s(1) / s(2)
    );
    println!(
        "incremental upload:             {:.1} MB for {:.1} MB changed ({:.1} MB zstd -3): {:.2}x (target <= 1.5x)",
        incr_bytes as f64 / 1e6,
        r.change.bytes as f64 / 1e6,
        r.change.compressed_bytes as f64 / 1e6,
        incr_bytes as f64 / r.change.compressed_bytes.max(1) as f64
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse() {
        assert_eq!(super::parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(super::parse_size("512M"), Ok(512 << 20));
        assert_eq!(super::parse_size("1000"), Ok(1000));
        assert!(super::parse_size("1TB").is_err());
    }

    #[test]
    fn restore_ratios_are_of_the_medians_of_each_kind() {
        let phase = |name: &str, seconds: f64| super::Phase {
            name: name.into(),
            seconds,
            ..Default::default()
        };
        let mut r = super::Results::default();
        r.phases.push(phase("hearth save (full)", 9.0));
        for (k, (h, b)) in [(1.0, 3.0), (5.0, 2.0), (2.0, 2.5)].into_iter().enumerate() {
            r.phases
                .push(phase(&format!("{}, round {k}", super::HEARTH_RESTORE), h));
            r.phases
                .push(phase(&format!("{}, round {k}", super::BASELINE_RESTORE), b));
        }
        assert_eq!(super::median_seconds(&r, super::HEARTH_RESTORE), 2.0);
        assert_eq!(super::median_seconds(&r, super::BASELINE_RESTORE), 2.5);
        r.phases.pop();
        assert_eq!(super::median_seconds(&r, super::BASELINE_RESTORE), 2.5);
        r.phases.pop();
        assert_eq!(super::median_seconds(&r, super::HEARTH_RESTORE), 3.0);
        assert!(super::median_seconds(&r, "nothing").is_nan());
    }
}
