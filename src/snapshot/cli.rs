//! `hearth snapshot ...`: the save and restore Jobs run these, and platform teams by hand.
//! Each subcommand prints a human summary, or one JSON object with `--json`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::pin::ManifestDigest;
use super::{catalog, gc, restore, save, verify};
use crate::store::{S3Options, Store};

/// Where the snapshots are and whose they are.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store URL: `file:///path` or `s3://bucket/prefix`.
    #[arg(long, env = "HEARTH_STORE")]
    pub store: String,
    /// Namespace: each has its own prefix in the store, with no sharing between namespaces.
    #[arg(long, env = "HEARTH_NAMESPACE", default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub s3: S3Options,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Snapshot subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a directory (a stopped buildkitd's state dir) as a new snapshot; prints its id.
    Save {
        /// Directory to save.
        dir: PathBuf,
        /// Cache name.
        #[arg(long, env = "HEARTH_CACHE")]
        cache: String,
        /// Ignore the local index (`.hearth/index`): read every file.
        #[arg(long)]
        no_index: bool,
        /// zstd level; negative levels trade ratio for speed.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        zstd_level: i32,
        /// Concurrent uploads.
        #[arg(long, default_value_t = 4)]
        uploads: usize,
        /// Seal packs at this size, in MiB.
        #[arg(long, default_value_t = 32)]
        pack_size_mib: usize,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Restore a snapshot (an id or `latest`) into DIR, which must be absent or empty.
    Restore {
        /// Snapshot id, or `latest`.
        id: String,
        /// Target directory.
        dir: PathBuf,
        /// Cache name.
        #[arg(long, env = "HEARTH_CACHE")]
        cache: String,
        /// Concurrent pack downloads.
        #[arg(long, default_value_t = 4)]
        downloads: usize,
        /// SHA-256 of the snapshot's manifest, as `save --json` reported it
        /// (`manifestSha256`): the restore refuses any other manifest, and only a pinned
        /// restore keeps setuid/setgid bits and file capabilities.
        #[arg(long, value_name = "HEX", value_parser = ManifestDigest::parse)]
        manifest_sha256: Option<ManifestDigest>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List snapshots, of one cache or of every cache of the namespace.
    Ls {
        /// Cache name; all caches when omitted.
        #[arg(long, env = "HEARTH_CACHE")]
        cache: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check that a snapshot is restorable; exit code 1 when it is not.
    Verify {
        /// Snapshot id, or `latest`.
        id: String,
        /// Cache name.
        #[arg(long, env = "HEARTH_CACHE")]
        cache: String,
        /// Download every chunk and check its hash.
        #[arg(long)]
        read_data: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete old snapshots and unreferenced data, in two phases separated by a grace period.
    Gc {
        /// Apply `--retain` to this cache only.
        #[arg(long, env = "HEARTH_CACHE")]
        cache: Option<String>,
        /// Keep this many newest snapshots per cache (all when omitted).
        #[arg(long)]
        retain: Option<usize>,
        /// Never forget this snapshot (repeatable): the ones live replicas match.
        #[arg(long = "keep", value_name = "ID")]
        keep: Vec<String>,
        /// Grace period between condemning and deleting data; longer than any save.
        #[arg(long, default_value = "1h")]
        grace: jiff::SignedDuration,
        /// Report without changing anything.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Forget snapshots of a cache (their data goes at a later gc): one id, or `--all`.
    Forget {
        /// Snapshot id; omit with `--all`.
        id: Option<String>,
        /// Cache name.
        #[arg(long, env = "HEARTH_CACHE")]
        cache: String,
        /// Forget every snapshot of the cache.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Benchmark save, incremental save and restore against `tar | zstd` on the same store.
    Bench(super::bench::BenchArgs),
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().try_init()
    };
}

/// Peak resident memory of this process, from `/proc/self/status` (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(value)?;
    if let (Some(obj), Some(rss)) = (v.as_object_mut(), peak_rss_bytes()) {
        obj.insert("peakRssBytes".into(), rss.into());
    }
    println!("{v}");
    Ok(())
}

async fn open(args: &StoreArgs) -> anyhow::Result<Store> {
    Store::open(&args.store, &args.s3)
        .await
        .with_context(|| format!("opening store {}", args.store))
}

/// Runs a snapshot subcommand.
pub fn run(cmd: SnapshotCommand) -> anyhow::Result<ExitCode> {
    init_logging();
    if let SnapshotCommand::Bench(args) = cmd {
        return super::bench::run(&args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: SnapshotCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCommand::Save {
            dir,
            cache,
            no_index,
            zstd_level,
            uploads,
            pack_size_mib,
            store: args,
        } => {
            let store = open(&args).await?;
            let mut opts = save::SaveOptions::new(&args.store, &args.namespace, &cache);
            opts.use_index = !no_index;
            opts.tuning.zstd_level = zstd_level;
            opts.tuning.uploads = uploads;
            opts.tuning.pack_size = pack_size_mib.max(1) << 20;
            let r = save::save(&store, &dir, &opts)
                .await
                .with_context(|| format!("saving {}", dir.display()))?;
            tracing::info!(
                id = %r.id, files = r.files, bytes = r.bytes, read = r.bytes_read, unchanged = r.unchanged_files,
                uploaded = r.uploaded_bytes, seconds = r.seconds, "snapshot saved"
            );
            for s in &r.skipped {
                tracing::warn!(path = %s, "not saved: sockets cannot be kept");
            }
            if args.json {
                print_json(&r)?;
            } else {
                println!("{}", r.id);
            }
        }
        SnapshotCommand::Restore {
            id,
            dir,
            cache,
            downloads,
            manifest_sha256,
            store: args,
        } => {
            let store = open(&args).await?;
            let mut opts = restore::RestoreOptions::new(&args.store, &args.namespace, &cache);
            opts.downloads = downloads;
            opts.manifest_sha256 = manifest_sha256;
            let r = restore::restore(&store, &id, &dir, &opts)
                .await
                .with_context(|| format!("restoring into {}", dir.display()))?;
            if args.json {
                print_json(&r)?;
            } else {
                println!(
                    "restored {} into {}: {} entries, {} bytes in {:.1} s",
                    r.id,
                    dir.display(),
                    r.entries,
                    r.bytes,
                    r.seconds
                );
            }
        }
        SnapshotCommand::Ls { cache, store: args } => {
            let store = open(&args).await?;
            let caches: Vec<String> = match cache {
                Some(c) => vec![c],
                None => {
                    let mut c: Vec<String> = catalog::all_snapshots(&store, &args.namespace)
                        .await?
                        .into_iter()
                        .map(|(c, _)| c)
                        .collect();
                    c.dedup();
                    c
                }
            };
            let mut all = Vec::new();
            for c in &caches {
                all.extend(catalog::list_snapshots(&store, &args.namespace, c).await?);
            }
            if args.json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                println!(
                    "{:<24} {:<32} {:<26} {:>8} {:>14} {:>14}",
                    "CACHE", "ID", "CREATED", "FILES", "BYTES", "NEW BYTES"
                );
                for s in &all {
                    println!(
                        "{:<24} {:<32} {:<26} {:>8} {:>14} {:>14}",
                        s.cache, s.id, s.created, s.files, s.bytes, s.new_bytes
                    );
                }
            }
        }
        SnapshotCommand::Verify {
            id,
            cache,
            read_data,
            store: args,
        } => {
            let store = open(&args).await?;
            let r = verify::verify(&store, &args.namespace, &cache, &id, read_data).await?;
            if args.json {
                print_json(&r)?;
            } else {
                for p in &r.problems {
                    println!("problem: {p}");
                }
                let what = if read_data {
                    "manifest, packs and every chunk"
                } else {
                    "manifest and packs"
                };
                let verdict = if r.problems.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                };
                println!(
                    "{}: {verdict} ({what}; {} packs, {} chunks)",
                    r.id, r.packs, r.chunks
                );
            }
            if !r.problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        SnapshotCommand::Gc {
            cache,
            retain,
            keep,
            grace,
            dry_run,
            store: args,
        } => {
            let store = open(&args).await?;
            let mut opts = gc::GcOptions::new(&args.namespace);
            opts.cache = cache.clone();
            opts.retain = retain;
            opts.keep = keep;
            opts.grace = grace.unsigned_abs();
            opts.dry_run = dry_run;
            let r = gc::gc(&store, &opts).await?;
            if args.json {
                // With a cache, the result also lists its snapshots (newest first, at most
                // LISTED: the result must fit a pod's 4 KiB termination message).
                let listed = match &cache {
                    Some(c) => Some(catalog::list_snapshots(&store, &args.namespace, c).await?),
                    None => None,
                };
                print_json(&GcResult::new(r, listed))?;
            } else {
                println!(
                    "forgot {} snapshots; {} live packs; condemned {}, rescued {}, deleted {} packs ({} bytes){}",
                    r.forgotten.len(), r.live_packs, r.condemned, r.rescued, r.deleted_packs, r.deleted_bytes,
                    if dry_run { " (dry run)" } else { "" }
                );
                for d in &r.damaged {
                    println!("skipped a damaged manifest: {d}");
                }
            }
        }
        SnapshotCommand::Forget {
            id,
            cache,
            all,
            store: args,
        } => {
            let store = open(&args).await?;
            let n = match (id, all) {
                (_, true) => catalog::forget_cache(&store, &args.namespace, &cache).await?,
                (Some(id), false) => catalog::forget_existing(&store, &args.namespace, &cache, &id)
                    .await
                    .map(|_| 1)?,
                (None, false) => anyhow::bail!("give a snapshot id or --all"),
            };
            if args.json {
                println!("{}", serde_json::json!({ "forgotten": n }));
            } else {
                println!("forgot {n} snapshot(s) of {cache}; run gc to free their data");
            }
        }
        SnapshotCommand::Bench(_) => unreachable!("handled before the runtime starts"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Most snapshots a gc result lists.
pub const LISTED: usize = 24;

/// Most damaged manifests a gc result lists.
pub const DAMAGED_LISTED: usize = 4;

/// `gc --json`: the report, and with `--cache` the cache's snapshots (newest first, at most
/// [`LISTED`]) and their count, which the controller copies into BuildCache status.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GcResult {
    #[serde(flatten)]
    report: gc::GcReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots: Option<Vec<ListedSnapshot>>,
}

/// One snapshot in a gc result.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedSnapshot {
    id: String,
    created: String,
    bytes: u64,
    new_bytes: u64,
}

impl GcResult {
    fn new(mut report: gc::GcReport, listed: Option<Vec<catalog::SnapshotInfo>>) -> GcResult {
        // Bounded too (the 4 KiB termination message); every one is logged as a warning.
        report.damaged.truncate(DAMAGED_LISTED);
        GcResult {
            report,
            snapshot_count: listed.as_ref().map(Vec::len),
            snapshots: listed.map(|all| {
                all.into_iter()
                    .rev()
                    .take(LISTED)
                    .map(|s| ListedSnapshot {
                        id: s.id,
                        created: s.created,
                        bytes: s.bytes,
                        new_bytes: s.new_bytes,
                    })
                    .collect()
            }),
        }
    }
}
