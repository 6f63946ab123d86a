//! `restore`: load and check the manifest, build the tree in a staging directory next to the
//! target (inside it when the target is a mount point), stream the packs in parallel and
//! write each chunk, verified, where it belongs as it arrives, set metadata, write the local
//! index, and only then move the tree into place. On any error the staging directory is
//! removed and the target is left as it was.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::apply::{self, entry_path, ApplyError, Privileges};
use super::catalog::{self, CatalogError};
use super::index::{IndexedFile, LocalIndex};
use super::layout;
use super::manifest::{Kind, Manifest};
use super::open_files::OpenFiles;
use super::pack::{Decoder, PackError};
use super::pin::ManifestDigest;
use super::pipeline::Buffers;
use super::staging;
use crate::store::{Store, StoreError};

/// Errors of a restore (and of `verify`).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot cannot be found or its manifest is damaged or foreign.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A pack the snapshot needs is missing.
    #[error("pack {pack} is missing from the store (object {key})")]
    MissingPack { pack: String, key: String },
    /// A chunk is corrupt or a pack truncated.
    #[error(transparent)]
    Corrupt(#[from] PackError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Creating the tree failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A pin names one snapshot's manifest; `latest` is not one snapshot.
    #[error("a manifest digest pins one snapshot: give its id, not \"latest\"")]
    PinnedLatest,
    /// The target holds files already.
    #[error("target {0} exists and is not an empty directory")]
    TargetNotEmpty(PathBuf),
    /// Something that cannot happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Namespace.
    pub namespace: String,
    /// Cache.
    pub cache: String,
    /// Identity of the store, recorded in the local index.
    pub store_url: String,
    /// Concurrent pack downloads.
    pub downloads: usize,
    /// Restore numeric owners (needs root or CAP_CHOWN); on by default when root.
    pub owners: bool,
    /// Write the local index so the next save of this tree need not read it.
    pub write_index: bool,
    /// The SHA-256 the manifest must have (what the save reported). Without it nothing
    /// authenticates the manifest, so setuid/setgid bits and file capabilities are stripped.
    pub manifest_sha256: Option<ManifestDigest>,
}

impl RestoreOptions {
    /// Defaults for a cache.
    pub fn new(store_url: &str, namespace: &str, cache: &str) -> RestoreOptions {
        RestoreOptions {
            namespace: namespace.to_string(),
            cache: cache.to_string(),
            store_url: store_url.to_string(),
            downloads: 4,
            owners: rustix::process::geteuid().is_root(),
            write_index: true,
            manifest_sha256: None,
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// Snapshot restored.
    pub id: String,
    /// Entries created.
    pub entries: u64,
    /// Logical bytes of the files.
    pub bytes: u64,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Packs read.
    pub packs: u64,
    /// For `latest`: why newer snapshots were skipped (damaged manifests).
    pub skipped: Vec<String>,
    /// Whether the manifest was pinned by its digest (and so privileges kept).
    pub pinned: bool,
    /// Entries whose setuid/setgid bits or file capabilities were left out because the
    /// restore was not pinned.
    pub stripped_privileges: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Files each download (a range of a pack) keeps open for writing: enough for chunks that arrive in file
/// order, and a bound on descriptors (`downloads` times this) whatever the number of files.
pub const OPEN_PER_PACK: usize = 4;

/// For each chunk of the manifest, the (entry, file offset) places it goes.
pub type Targets = Vec<Vec<(u32, u64)>>;

/// Where every chunk of the entries in `range` goes, and the chunks each pack must supply.
pub fn plan(m: &Manifest, range: std::ops::Range<usize>) -> (Targets, Vec<Vec<u32>>) {
    let mut targets: Targets = vec![Vec::new(); m.chunks.len()];
    let mut per_pack: Vec<Vec<u32>> = vec![Vec::new(); m.packs.len()];
    for i in range {
        if let Kind::File { extents, .. } = &m.entries[i].kind {
            for x in extents {
                let mut off = x.offset;
                for c in &x.chunks {
                    if targets[*c as usize].is_empty() {
                        per_pack[m.chunks[*c as usize].loc.pack as usize].push(*c);
                    }
                    targets[*c as usize].push((i as u32, off));
                    off += m.chunks[*c as usize].loc.raw as u64;
                }
            }
        }
    }
    (targets, per_pack)
}

/// The most a download reads in one request (one chunk more when a chunk is larger): packs
/// are read in ranges of this size, so the buffers of the downloads in flight stay small
/// whatever the pack size. A restore's buffers are new memory each time it runs, and each
/// 4 KiB of them costs a zeroed page: with whole 32 MiB packs they were 128 MiB of its
/// 205 MiB peak RSS.
pub const FETCH_RANGE: u64 = 8 << 20;

/// The downloads of `per_pack` (the chunks each pack must supply, from [`plan`]): for each
/// pack, its chunks in pack order, cut into ranges of at most [`FETCH_RANGE`] bytes.
pub fn fetches(m: &Manifest, per_pack: Vec<Vec<u32>>) -> Vec<(usize, Vec<u32>)> {
    let mut out = Vec::new();
    for (p, mut chunks) in per_pack.into_iter().enumerate() {
        chunks.sort_unstable_by_key(|c| m.chunks[*c as usize].loc.offset);
        let mut range: Vec<u32> = Vec::new();
        let mut start = 0;
        for c in chunks {
            let loc = &m.chunks[c as usize].loc;
            if !range.is_empty() && loc.offset + loc.stored as u64 - start > FETCH_RANGE {
                out.push((p, std::mem::take(&mut range)));
            }
            if range.is_empty() {
                start = loc.offset;
            }
            range.push(c);
        }
        if !range.is_empty() {
            out.push((p, range));
        }
    }
    out
}

/// Fetches the part of pack `p` holding `chunks` into a buffer of `buffers`, verifies each
/// chunk and hands it to `sink` on the blocking pool. Returns the bytes downloaded.
pub async fn fetch_pack<F>(
    store: &Store,
    m: &Arc<Manifest>,
    p: usize,
    chunks: Vec<u32>,
    buffers: &Arc<Buffers>,
    mut sink: F,
) -> Result<u64, RestoreError>
where
    F: FnMut(u32, &[u8]) -> Result<(), RestoreError> + Send + 'static,
{
    let pack = &m.packs[p];
    let start = chunks
        .iter()
        .map(|c| m.chunks[*c as usize].loc.offset)
        .min()
        .unwrap_or(0);
    let end = chunks
        .iter()
        .map(|c| m.chunks[*c as usize].loc)
        .map(|l| l.offset + l.stored as u64)
        .max()
        .unwrap_or(0);
    let key = layout::pack_key(&m.namespace, &pack.id);
    let mut bytes = buffers.take();
    let fetched = store
        .get_range_into(&key, start, end - start, &mut bytes)
        .await;
    fetched.map_err(|e| match e {
        StoreError::NotFound { key } => RestoreError::MissingPack {
            pack: pack.id.clone(),
            key,
        },
        other => RestoreError::Store(other),
    })?;
    let len = bytes.len() as u64;
    let (m, buffers) = (m.clone(), buffers.clone());
    let task = tokio::task::spawn_blocking(move || {
        let pack_id = &m.packs[p].id;
        let mut decoder = Decoder::new().map_err(|e| RestoreError::Internal(e.to_string()))?;
        for c in chunks {
            let chunk = &m.chunks[c as usize];
            let data = decoder.decode(pack_id, &bytes, start, chunk.id, &chunk.loc)?;
            sink(c, data)?;
        }
        buffers.give(bytes);
        Ok::<(), RestoreError>(())
    });
    task.await
        .map_err(|e| RestoreError::Internal(e.to_string()))??;
    Ok(len)
}

/// Restores snapshot `id` (or `latest`) of the cache into `target`, which must be absent or
/// an empty directory.
pub async fn restore(
    store: &Store,
    id: &str,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let (ns, cache) = (opts.namespace.as_str(), opts.cache.as_str());
    let (m, skipped) = match &opts.manifest_sha256 {
        Some(_) if id == "latest" => return Err(RestoreError::PinnedLatest),
        Some(pin) => (
            catalog::load_pinned(store, ns, cache, id, Some(pin)).await?,
            Vec::new(),
        ),
        None => catalog::load_resolved(store, ns, cache, id).await?,
    };
    let (id, m) = (m.id.clone(), Arc::new(m));
    let privileges = if opts.manifest_sha256.is_some() {
        Privileges::Keep
    } else {
        Privileges::Strip
    };
    let stripped = match privileges {
        Privileges::Keep => 0,
        Privileges::Strip => m
            .entries
            .iter()
            .filter(|e| apply::carries_privileges(e))
            .count() as u64,
    };
    let (staging, inside) = staging_dir(target)?;
    let result = fill(store, &m, &staging, inside, opts, privileges).await;
    let result = match result {
        Ok(downloaded) => {
            let how = Metadata {
                owners: opts.owners,
                privileges,
            };
            finalize(&staging, target, inside, &m, how).map(|_| downloaded)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((downloaded, packs)) => {
            if stripped > 0 {
                tracing::warn!(id = %id, stripped, "the restore was not pinned by a manifest digest (--manifest-sha256): setuid/setgid bits and file capabilities of {stripped} entries were left out");
            }
            Ok(RestoreReport {
                id,
                entries: m.entries.len() as u64,
                bytes: m.stats.bytes,
                downloaded_bytes: downloaded,
                packs,
                skipped,
                pinned: privileges == Privileges::Keep,
                stripped_privileges: stripped,
                seconds: started.elapsed().as_secs_f64(),
            })
        }
        Err(e) => {
            let s = staging.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(s)).await;
            Err(e)
        }
    }
}

/// Picks the staging directory: beside the target, or inside it when the target is a mount
/// point (a rename cannot replace a mount point or cross filesystems).
fn staging_dir(target: &Path) -> Result<(PathBuf, bool), RestoreError> {
    let tag = format!("{:08x}", layout::entropy());
    let parent = staging::parent(target);
    let not_empty = || RestoreError::TargetNotEmpty(target.to_path_buf());
    // A restore killed outright (node lost, SIGKILL) leaves its staging directory behind: one
    // restore owns its target's staging names, so earlier ones are swept, not kept for ever.
    staging::sweep(target)?;
    let (staging, inside) = match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = std::fs::read_dir(target).map_err(|e| apply_io("read", target, e))?;
            if entries.next().is_some() {
                return Err(not_empty());
            }
            let parent_dev = std::fs::metadata(parent)
                .map_err(|e| apply_io("stat", parent, e))?
                .dev();
            if parent_dev != meta.dev() {
                (staging::inside(target, &tag), true)
            } else {
                (staging::beside(target, &tag), false)
            }
        }
        Ok(_) => return Err(not_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (staging::beside(target, &tag), false)
        }
        Err(e) => return Err(apply_io("stat", target, e)),
    };
    if !inside {
        std::fs::create_dir_all(parent).map_err(|e| apply_io("create", parent, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| apply_io("create", &staging, e))?;
    Ok((staging, inside))
}

fn apply_io(op: &'static str, path: &Path, source: std::io::Error) -> RestoreError {
    RestoreError::Apply(ApplyError::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
}

/// Creates every entry under `staging`, writes the data and the metadata. Returns the
/// bytes downloaded and the packs read.
async fn fill(
    store: &Store,
    m: &Arc<Manifest>,
    staging: &Path,
    inside: bool,
    opts: &RestoreOptions,
    privileges: Privileges,
) -> Result<(u64, u64), RestoreError> {
    let started = Instant::now();
    // The entries are created while the first packs download; a pack's chunks are written
    // once they exist (each download's writer waits at the gate).
    let gate = Arc::new(Gate::default());
    let creation = {
        let (root, mc, gate) = (staging.to_path_buf(), m.clone(), gate.clone());
        tokio::task::spawn_blocking(move || {
            let created = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                create_entries(&root, &mc)
            }));
            // Opened whatever happens, a panic included, so that no writer waits for ever.
            gate.open(matches!(created, Ok(Ok(()))));
            let created = created.unwrap_or_else(|p| std::panic::resume_unwind(p));
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                "created the entries"
            );
            created
        })
    };
    let (targets, per_pack) = plan(m, 0..m.entries.len());
    let targets = Arc::new(targets);
    let downloaded = AtomicU64::new(0);
    let progress = indicatif::ProgressBar::with_draw_target(
        Some(m.stats.bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let packs = per_pack.iter().filter(|c| !c.is_empty()).count() as u64;
    let jobs = fetches(m, per_pack);
    let writing = Arc::new(FileLocks::new(m.entries.len()));
    // One buffer per download in flight, reused from range to range.
    let buffers = Arc::new(Buffers::new(opts.downloads.max(1), 0));
    let downloads = futures::stream::iter(jobs)
        .map(|(p, chunks)| {
            let (targets, root, m2, progress) = (
                targets.clone(),
                staging.to_path_buf(),
                m.clone(),
                progress.clone(),
            );
            let mut open = OpenFiles::new(OPEN_PER_PACK);
            let (gate, writing) = (gate.clone(), writing.clone());
            let sink = move |c: u32, data: &[u8]| -> Result<(), RestoreError> {
                if !gate.wait() {
                    return Err(RestoreError::Internal(
                        "the entries were not created".into(),
                    ));
                }
                for &(entry, off) in &targets[c as usize] {
                    let path = entry_path(&root, &m2.entries[entry as usize]);
                    let f = open
                        .get(entry, &path)
                        .map_err(|e| apply_io("open", &path, e))?;
                    let _held = writing.hold(entry);
                    write_in_pieces(f, data, off).map_err(|e| apply_io("write", &path, e))?;
                    progress.inc(data.len() as u64);
                }
                Ok(())
            };
            let (downloaded, buffers) = (&downloaded, &buffers);
            async move {
                let n = fetch_pack(store, m, p, chunks, buffers, sink).await?;
                downloaded.fetch_add(n, Ordering::Relaxed);
                Ok::<(), RestoreError>(())
            }
        })
        .buffer_unordered(opts.downloads.max(1))
        .try_collect::<()>()
        .await;
    // A failed creation is the error to report (the downloads stopped because of it).
    creation
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))??;
    downloads?;
    progress.finish_and_clear();
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "downloaded and wrote the data"
    );
    let started = Instant::now();
    let (root, mc, owners, write_index) = (
        staging.to_path_buf(),
        m.clone(),
        opts.owners,
        opts.write_index,
    );
    let identity = format!("{}#{}", opts.store_url, opts.namespace);
    tokio::task::spawn_blocking(move || {
        let how = Metadata { owners, privileges };
        finish_tree(&root, &mc, how, inside, write_index.then_some(identity))
    })
    .await
    .map_err(|e| RestoreError::Internal(e.to_string()))??;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "set the metadata"
    );
    Ok((downloaded.load(Ordering::Relaxed), packs))
}

/// Opened once the restore's entries exist (or their creation failed); writers wait on it.
#[derive(Default)]
struct Gate {
    created: std::sync::Mutex<Option<bool>>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn open(&self, created: bool) {
        *self.created.lock().unwrap_or_else(|p| p.into_inner()) = Some(created);
        self.opened.notify_all();
    }

    /// Blocks until the gate opens; whether the entries were created.
    fn wait(&self) -> bool {
        let mut state = self.created.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(created) = *state {
                return created;
            }
            state = self.opened.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// One lock per entry, held while a chunk is written. A large file's chunks come from several
/// packs decoded at once, and two tasks writing one file take turns at its inode lock piece by
/// piece, the waiting one spinning in the kernel (`rwsem_spin_on_owner`) for as long as the
/// other's write lasts: on two cores, one core's work lost. Waiting here, a task sleeps instead
/// and leaves its core to the downloads and the other packs.
struct FileLocks(Vec<std::sync::Mutex<()>>);

impl FileLocks {
    fn new(entries: usize) -> FileLocks {
        FileLocks((0..entries).map(|_| std::sync::Mutex::new(())).collect())
    }

    /// Holds entry `entry`'s lock until the guard is dropped.
    fn hold(&self, entry: u32) -> std::sync::MutexGuard<'_, ()> {
        self.0[entry as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// The largest write a restore makes. A chunk is up to 4 MiB; written whole, each write asks
/// the page cache for a folio as large, and with memory full of cache the kernel compacts
/// memory to make one: on this machine (kernel 6.18, ext4) writing 1 GiB in 2 or 4 MiB
/// writes took 0.25 s to 2.1 s from run to run, in 1 MiB writes or smaller 0.21-0.26 s.
pub const WRITE_PIECE: usize = 1 << 20;

/// Writes `data` at `offset` of `f` in pieces of at most [`WRITE_PIECE`] bytes.
fn write_in_pieces(f: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut at = offset;
    for piece in data.chunks(WRITE_PIECE) {
        f.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Runs `f` on every item of `items` on all cores, in batches taken in order; stops at the
/// first error and returns it. Returns what `f` produced, by item, in order.
fn in_parallel<T, R, E, F>(items: &[T], f: F) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
    F: Fn(&T) -> Result<Option<R>, E> + Sync,
{
    const BATCH: usize = 64;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(items.len().div_ceil(BATCH))
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let run = || -> Result<Vec<(usize, R)>, E> {
        let mut out = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let start = next.fetch_add(BATCH, Ordering::Relaxed);
            if start >= items.len() {
                break;
            }
            for (i, item) in items.iter().enumerate().skip(start).take(BATCH) {
                match f(item) {
                    Ok(Some(r)) => out.push((i, r)),
                    Ok(None) => {}
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }
        Ok(out)
    };
    let parts: Vec<Result<Vec<(usize, R)>, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(run)).collect();
        let mine = run();
        let mut parts = vec![mine];
        for h in handles {
            parts.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        parts
    });
    let mut all = Vec::new();
    for part in parts {
        all.extend(part?);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

/// Creates every entry of `m` under `root`: directories first, in order (parents before
/// children), then everything else on all cores, large files with their data runs allocated.
fn create_entries(root: &Path, m: &Manifest) -> Result<(), RestoreError> {
    let (dirs, others): (Vec<&super::manifest::Entry>, Vec<_>) =
        m.entries.iter().partition(|e| matches!(e.kind, Kind::Dir));
    for e in dirs {
        apply::create(root, e)?;
    }
    in_parallel(&others, |e| {
        let mut runs = Vec::new();
        if let Kind::File { extents, .. } = &e.kind {
            runs.extend(extents.iter().map(|x| {
                let len = x
                    .chunks
                    .iter()
                    .map(|c| m.chunks[*c as usize].loc.raw as u64);
                (x.offset, len.sum::<u64>())
            }));
        }
        apply::create_with_data(root, e, &runs).map(|()| None::<()>)
    })?;
    Ok(())
}

/// How a restore sets metadata: numeric owners or not, privileges kept or stripped.
#[derive(Clone, Copy)]
struct Metadata {
    owners: bool,
    privileges: Privileges,
}

impl Metadata {
    fn set(self, path: &Path, e: &super::manifest::Entry) -> Result<(), ApplyError> {
        apply::set_metadata(path, e, self.owners, self.privileges)
    }
}

/// Hard links, metadata (directories deepest first, after their content) and the local index.
fn finish_tree(
    root: &Path,
    m: &Manifest,
    how: Metadata,
    inside: bool,
    index: Option<String>,
) -> Result<(), RestoreError> {
    for e in &m.entries {
        if let Kind::HardLink { entry } = e.kind {
            apply::link(root, e, &m.entries[entry as usize])?;
        }
    }
    // Everything but directories, on all cores; each file is stat'ed for the local index once
    // its metadata is final.
    let others: Vec<&super::manifest::Entry> = m
        .entries
        .iter()
        .filter(|e| !matches!(e.kind, Kind::Dir | Kind::HardLink { .. }))
        .collect();
    let indexed = in_parallel(&others, |e| {
        let path = entry_path(root, e);
        how.set(&path, e)?;
        let Kind::File { size, extents } = &e.kind else {
            return Ok(None);
        };
        if index.is_none() {
            return Ok(None);
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|err| apply_io("stat", &path, err))?;
        let extents = extents
            .iter()
            .map(|x| {
                (
                    x.offset,
                    x.chunks.iter().map(|c| m.chunks[*c as usize].id).collect(),
                )
            })
            .collect();
        let file = IndexedFile {
            size: *size,
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            extents,
        };
        Ok::<_, RestoreError>(Some((&e.path.0, file)))
    })?;
    if let Some(identity) = index {
        let mut idx = LocalIndex::new(&identity);
        for (path, file) in indexed {
            // Nothing else writes the tree before the restore ends: no racy entries.
            idx.record(path, file, i64::MAX);
        }
        if let Err(err) = idx.write(root) {
            tracing::warn!(root = %root.display(), error = %err, "cannot write the local index");
        }
    }
    for e in m
        .entries
        .iter()
        .rev()
        .filter(|e| matches!(e.kind, Kind::Dir))
    {
        if !(inside && e.path.0.is_empty()) {
            how.set(&entry_path(root, e), e)?;
        }
    }
    Ok(())
}

/// Moves the finished tree into place.
fn finalize(
    staging: &Path,
    target: &Path,
    inside: bool,
    m: &Manifest,
    how: Metadata,
) -> Result<(), RestoreError> {
    if !inside {
        // Replaces an empty target directory atomically.
        return std::fs::rename(staging, target)
            .map_err(|e| apply_io("move into place", target, e));
    }
    for child in std::fs::read_dir(staging).map_err(|e| apply_io("read", staging, e))? {
        let child = child.map_err(|e| apply_io("read", staging, e))?;
        let dest = target.join(child.file_name());
        std::fs::rename(child.path(), &dest).map_err(|e| apply_io("move into place", &dest, e))?;
    }
    std::fs::remove_dir(staging).map_err(|e| apply_io("remove", staging, e))?;
    how.set(target, &m.entries[0])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::pipeline::Tuning;
    use crate::snapshot::{save, SaveOptions};
    use crate::store::S3Options;
    use std::os::unix::fs::MetadataExt;

    /// Half noise, half runs of one byte, in 64 KiB blocks: chunks both raw and compressed.
    fn data(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        for (i, block) in out.chunks_mut(64 << 10).enumerate() {
            if i % 2 == 0 {
                block.fill(i as u8);
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_files_from_many_packs_are_preallocated_written_in_parallel_and_round_trip() {
        let work = tempfile::tempdir().unwrap();
        let url = format!("file://{}", work.path().join("store").display());
        let store = Store::open(&url, &S3Options::default()).await.unwrap();
        let src = work.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let big = data(1, (20 << 20) + 12_345);
        let other = data(2, (6 << 20) + 1);
        std::fs::write(src.join("big"), &big).unwrap();
        std::fs::write(src.join("other"), &other).unwrap();
        std::fs::write(src.join("small"), b"small").unwrap();
        let mut opts = SaveOptions::new(&url, "team-a", "shop");
        // Small chunks and 1 MiB packs: each file's chunks are spread over many packs, which
        // the restore fetches and writes 8 at a time, in whatever order they finish.
        opts.tuning = Tuning {
            min_chunk: 16 << 10,
            avg_chunk: 64 << 10,
            max_chunk: 256 << 10,
            segment: 1 << 20,
            pack_size: 1 << 20,
            ..Tuning::default()
        };
        let saved = save(&store, &src, &opts).await.unwrap();
        assert!(saved.new_packs >= 10, "{saved:?}");
        let dst = work.path().join("dst");
        let mut ro = RestoreOptions::new(&url, "team-a", "shop");
        ro.downloads = 8;
        let r = restore(&store, &saved.id, &dst, &ro).await.unwrap();
        assert!(r.packs >= 10, "{r:?}");
        for (name, want) in [
            ("big", &big[..]),
            ("other", &other[..]),
            ("small", b"small"),
        ] {
            let got = std::fs::read(dst.join(name)).unwrap();
            assert!(got == want, "{name} differs after the round trip");
        }
        let meta = std::fs::metadata(dst.join("big")).unwrap();
        assert!(meta.blocks() * 512 >= big.len() as u64, "{meta:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn packs_are_fetched_in_ranges_of_bounded_size_covering_every_chunk_once() {
        let work = tempfile::tempdir().unwrap();
        let url = format!("file://{}", work.path().join("store").display());
        let store = Store::open(&url, &S3Options::default()).await.unwrap();
        let src = work.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let big = data(3, 48 << 20);
        std::fs::write(src.join("big"), &big).unwrap();
        let saved = save(&store, &src, &SaveOptions::new(&url, "team-a", "shop"))
            .await
            .unwrap();
        let (m, _) = catalog::load_resolved(&store, "team-a", "shop", &saved.id)
            .await
            .unwrap();
        let (_, per_pack) = plan(&m, 0..m.entries.len());
        let mut wanted: Vec<(usize, u32)> = per_pack
            .iter()
            .enumerate()
            .flat_map(|(p, c)| c.iter().map(move |c| (p, *c)))
            .collect();
        let largest = m.packs.iter().map(|p| p.size).max().unwrap_or(0);
        assert!(largest > 2 * FETCH_RANGE, "a pack of {largest} bytes");
        let ranges = fetches(&m, per_pack);
        let mut got: Vec<(usize, u32)> = Vec::new();
        for (p, chunks) in &ranges {
            let locs: Vec<_> = chunks.iter().map(|c| m.chunks[*c as usize].loc).collect();
            assert!(locs.windows(2).all(|w| w[0].offset < w[1].offset));
            let (first, last) = (locs[0], locs[locs.len() - 1]);
            let span = last.offset + last.stored as u64 - first.offset;
            assert!(span <= FETCH_RANGE || chunks.len() == 1, "{span} bytes");
            got.extend(chunks.iter().map(|c| (*p, *c)));
        }
        assert!(
            ranges.len() as u64 > largest / FETCH_RANGE,
            "{}",
            ranges.len()
        );
        wanted.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, wanted, "every chunk fetched once, from its own pack");
        let r = restore(
            &store,
            &saved.id,
            &work.path().join("dst"),
            &RestoreOptions::new(&url, "team-a", "shop"),
        )
        .await
        .unwrap();
        assert_eq!(
            r.packs,
            m.packs.len() as u64,
            "packs read, not ranges: {r:?}"
        );
        assert!(std::fs::read(work.path().join("dst/big")).unwrap() == big);
    }
}
