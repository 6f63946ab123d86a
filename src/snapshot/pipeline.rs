//! The parallel half of a save: worker threads read file segments, cut them into chunks
//! (FastCDC; fixed-size for already compressed blobs), hash them with BLAKE3, skip chunks the store or another worker already has,
//! compress the rest and fill packs; an async uploader sends sealed packs (and their indexes)
//! to the store a few at a time. Bounded memory: each worker holds one segment and one pack,
//! the channel one pack, the uploader `uploads` packs.

use std::collections::hash_map::Entry as MapEntry;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::layout::{self, ChunkId, FastMap};
use super::manifest::ChunkLoc;
use super::pack::{looks_compressed, Encoder, PackBuilder, SealedPack};
use super::tree::FileInfo;
use crate::store::{Store, StoreError};

/// Errors of the chunking pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file changed between the scan and its reading.
    #[error(transparent)]
    Changed(#[from] super::tree::TreeError),
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The uploader stopped (its own error is reported instead).
    #[error("the uploader stopped")]
    UploadStopped,
    /// Uploading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A pack index could not be encoded.
    #[error("encoding a pack index: {0}")]
    Encode(String),
    /// A worker thread panicked.
    #[error("a save worker panicked")]
    Panicked,
}

/// Chunking and packing parameters.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// FastCDC minimum chunk size.
    pub min_chunk: u32,
    /// FastCDC average chunk size.
    pub avg_chunk: u32,
    /// FastCDC maximum chunk size.
    pub max_chunk: u32,
    /// Files are chunked in independent segments of this size (so one big file keeps every
    /// core busy and memory stays bounded); boundaries are fixed, so dedup is stable.
    pub segment: u64,
    /// A pack is sealed once it reaches this size.
    pub pack_size: usize,
    /// zstd level (-1: zstd's fastest regular mode, about twice level 1's speed for ~10%
    /// more bytes on layer data; throughput matters more than a few bytes).
    pub zstd_level: i32,
    /// Worker threads.
    pub workers: usize,
    /// Concurrent uploads.
    pub uploads: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            min_chunk: 256 * 1024,
            avg_chunk: 1024 * 1024,
            max_chunk: 4 * 1024 * 1024,
            segment: 16 * 1024 * 1024,
            pack_size: 32 * 1024 * 1024,
            zstd_level: -1,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            uploads: 4,
        }
    }
}

/// A segment of a file to read.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    /// Index into the file list.
    pub file: usize,
    /// Offset in the file.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

/// Which chunks exist: located in a pack (`Some`) or claimed by a worker and not yet sealed.
#[derive(Debug, Default)]
pub struct Dedup {
    /// Chunk locations; `loc.pack` indexes `packs`.
    pub map: FastMap<ChunkId, Option<ChunkLoc>>,
    /// Packs by number: id and size.
    pub packs: Vec<(String, u64)>,
    /// Numbers of the packs written by this save.
    pub new_packs: Vec<u32>,
}

/// Pack buffers the uploader hands back once a pack is sent, for the workers' next packs. A
/// buffer of tens of MiB is beyond malloc's mmap threshold, so a new one for every pack
/// costs a page fault and a zeroed page per 4 KiB, then an unmap: about a fifth of a save's
/// CPU before they were reused.
#[derive(Debug)]
pub struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    capacity: usize,
}

impl Buffers {
    /// A pool keeping at most `keep` buffers of `capacity` bytes.
    pub fn new(keep: usize, capacity: usize) -> Buffers {
        Buffers {
            free: Mutex::new(Vec::new()),
            keep,
            capacity,
        }
    }

    /// A used buffer, or a new one.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Hands a buffer back (dropped if the pool is full or it is not one of the pool's).
    pub fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep && buf.capacity() >= self.capacity {
            free.push(buf);
        }
    }
}

/// Totals of a pipeline run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from files.
    pub read: AtomicU64,
    /// New chunks.
    pub new_chunks: AtomicU64,
    /// Decoded bytes of new chunks.
    pub new_raw: AtomicU64,
    /// Bytes uploaded (packs and indexes).
    pub uploaded: AtomicU64,
}

/// Splits files into segments and groups consecutive segments into units of work.
pub fn plan(files: &[(usize, &FileInfo)], tuning: &Tuning) -> (Vec<Item>, Vec<Range<usize>>) {
    let mut items = Vec::new();
    for (n, f) in files {
        for &(start, len) in &f.extents {
            let mut off = start;
            while off < start + len {
                let l = tuning.segment.min(start + len - off);
                items.push(Item {
                    file: *n,
                    offset: off,
                    len: l,
                });
                off += l;
            }
        }
    }
    let mut units = Vec::new();
    let (mut begin, mut bytes) = (0, 0u64);
    for (i, item) in items.iter().enumerate() {
        bytes += item.len;
        if bytes >= tuning.segment / 2 {
            units.push(begin..i + 1);
            begin = i + 1;
            bytes = 0;
        }
    }
    if begin < items.len() {
        units.push(begin..items.len());
    }
    (items, units)
}

/// State shared by the workers (owned, so the workers can run on the blocking pool).
pub struct Work {
    /// Every file of the tree.
    pub files: Arc<Vec<FileInfo>>,
    /// Segments.
    pub items: Arc<Vec<Item>>,
    /// Units of consecutive segments.
    pub units: Vec<Range<usize>>,
    /// Known chunks.
    pub dedup: Arc<Mutex<Dedup>>,
    /// Chunk ids of each item, once done.
    pub results: Arc<Vec<OnceLock<Vec<ChunkId>>>>,
    /// Totals.
    pub counters: Arc<Counters>,
    /// Pack buffers, reused.
    pub buffers: Arc<Buffers>,
    /// Progress display.
    pub progress: indicatif::ProgressBar,
    /// Parameters.
    pub tuning: Tuning,
}

/// Runs the workers to completion on this thread's scope.
pub fn run_workers(work: &Work, tx: mpsc::Sender<SealedPack>) -> Result<(), PipelineError> {
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let results: Vec<Result<(), PipelineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..work.tuning.workers.max(1))
            .map(|_| {
                let tx = tx.clone();
                let (next, abort) = (&next, &abort);
                s.spawn(move || {
                    let r = worker(work, next, abort, &tx);
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(PipelineError::Panicked)))
            .collect()
    });
    results.into_iter().collect()
}

fn worker(
    work: &Work,
    next: &AtomicUsize,
    abort: &AtomicBool,
    tx: &mpsc::Sender<SealedPack>,
) -> Result<(), PipelineError> {
    let t = &work.tuning;
    let mut enc = Encoder::new(t.zstd_level).map_err(|e| PipelineError::Encode(e.to_string()))?;
    let mut pack = PackBuilder::with_buffer(work.buffers.take());
    let mut buf = Vec::new();
    while !abort.load(Ordering::Relaxed) {
        let u = next.fetch_add(1, Ordering::Relaxed);
        let Some(unit) = work.units.get(u) else { break };
        for i in unit.clone() {
            let item = work.items[i];
            let ids = chunk_item(work, item, &mut buf, &mut enc, &mut pack, tx)?;
            let _ = work.results[i].set(ids);
        }
    }
    if !pack.is_empty() && !abort.load(Ordering::Relaxed) {
        seal(work, &mut pack, tx)?;
    }
    Ok(())
}

fn chunk_item(
    work: &Work,
    item: Item,
    buf: &mut Vec<u8>,
    enc: &mut Encoder,
    pack: &mut PackBuilder,
    tx: &mpsc::Sender<SealedPack>,
) -> Result<Vec<ChunkId>, PipelineError> {
    let t = &work.tuning;
    let f = &work.files[item.file];
    let read_err = |source| PipelineError::Read {
        path: f.path.clone(),
        source,
    };
    let file = std::fs::File::open(&f.path).map_err(read_err)?;
    // The buffer only grows (zeroed once), whatever the order of small and large segments.
    let len = item.len as usize;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    file.read_exact_at(&mut buf[..len], item.offset)
        .map_err(read_err)?;
    let buf = &buf[..len];
    work.counters.read.fetch_add(item.len, Ordering::Relaxed);
    let compressible = if item.offset == 0 {
        !looks_compressed(buf)
    } else {
        let mut head = [0u8; 8];
        let n = file.read_at(&mut head, 0).map_err(read_err)?;
        !looks_compressed(&head[..n])
    };
    f.check_unchanged(&file.metadata().map_err(read_err)?)?;
    let mut misses = 0;
    let mut ids = Vec::new();
    for c in cut(buf, compressible, t) {
        let data = &buf[c];
        let id = ChunkId::of(data);
        ids.push(id);
        let claimed = match work
            .dedup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .entry(id)
        {
            MapEntry::Occupied(_) => false,
            MapEntry::Vacant(v) => {
                v.insert(None);
                true
            }
        };
        if claimed {
            let attempt = compressible && misses < 2;
            let loc = pack.push_encoded(enc, id, data, attempt);
            if attempt {
                misses = if loc.codec == super::manifest::Codec::Raw {
                    misses + 1
                } else {
                    0
                };
            }
            work.counters.new_chunks.fetch_add(1, Ordering::Relaxed);
            work.counters
                .new_raw
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if pack.len() >= t.pack_size {
                seal(work, pack, tx)?;
            }
        }
    }
    work.progress.inc(item.len);
    Ok(ids)
}

/// Where a segment is cut into chunks. Content-defined (FastCDC) cuts find unchanged data
/// again after an insertion; an already compressed blob (BuildKit's `content/` layers) is
/// never edited, only added or removed whole, so it is cut every `avg_chunk` bytes of the
/// segment instead (on the fixed segment grid, so the same blob gives the same chunks): no
/// rolling hash over bytes that are also stored raw. FastCDC was the largest single cost of
/// a save.
pub fn cut(buf: &[u8], content_defined: bool, t: &Tuning) -> Vec<Range<usize>> {
    if content_defined {
        fastcdc::v2020::FastCDC::new(buf, t.min_chunk, t.avg_chunk, t.max_chunk)
            .map(|c| c.offset..c.offset + c.length)
            .collect()
    } else {
        let step = (t.avg_chunk as usize).max(1);
        (0..buf.len())
            .step_by(step)
            .map(|start| start..buf.len().min(start + step))
            .collect()
    }
}

fn seal(
    work: &Work,
    pack: &mut PackBuilder,
    tx: &mpsc::Sender<SealedPack>,
) -> Result<(), PipelineError> {
    let sealed = pack.seal_with(work.buffers.take());
    {
        let mut d = work.dedup.lock().unwrap_or_else(|p| p.into_inner());
        let no = d.packs.len() as u32;
        d.packs.push((sealed.id.clone(), sealed.data.len() as u64));
        d.new_packs.push(no);
        for (id, loc) in &sealed.index.chunks {
            d.map.insert(*id, Some(ChunkLoc { pack: no, ..*loc }));
        }
    }
    tx.blocking_send(sealed)
        .map_err(|_| PipelineError::UploadStopped)
}

/// Uploads sealed packs as they come, `uploads` at a time: the pack, then its index (a pack
/// counts as present only with its index).
pub async fn upload_packs(
    store: &Store,
    ns: &str,
    rx: mpsc::Receiver<SealedPack>,
    uploads: usize,
    counters: &Counters,
    buffers: &Buffers,
) -> Result<(), PipelineError> {
    let mut rx = rx;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|p: SealedPack| async move {
            let index = p
                .index
                .encode()
                .map_err(|e| PipelineError::Encode(e.to_string()))?;
            let (pack_len, index_len) = (p.data.len() as u64, index.len() as u64);
            let data = Bytes::from(p.data);
            store
                .put(&layout::pack_key(ns, &p.id), data.clone())
                .await?;
            // Sent: the store holds no reference any more, and the buffer goes back.
            if let Ok(mut data) = data.try_into_mut() {
                data.clear();
                buffers.give(data.into());
            }
            store
                .put(&layout::pack_index_key(ns, &p.id), Bytes::from(index))
                .await?;
            counters
                .uploaded
                .fetch_add(pack_len + index_len, Ordering::Relaxed);
            Ok::<(), PipelineError>(())
        })
        .buffer_unordered(uploads.max(1))
        .try_collect::<()>()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::manifest::Codec;

    fn file(extents: Vec<(u64, u64)>) -> FileInfo {
        FileInfo {
            entry: 0,
            path: PathBuf::new(),
            size: 0,
            extents,
            ino: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        }
    }

    fn noise(seed: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn compressed_blobs_are_cut_every_average_chunk_and_the_rest_by_content() {
        let t = Tuning {
            min_chunk: 1 << 10,
            avg_chunk: 4 << 10,
            max_chunk: 16 << 10,
            ..Tuning::default()
        };
        let data = noise(1, (40 << 10) + 123);
        let fixed = cut(&data, false, &t);
        let starts: Vec<usize> = fixed.iter().map(|r| r.start).collect();
        assert_eq!(
            starts,
            (0..=40).step_by(4).map(|k| k << 10).collect::<Vec<_>>()
        );
        assert_eq!(fixed.last(), Some(&((40 << 10)..(40 << 10) + 123)));
        // Content-defined cuts are FastCDC's, contiguous and covering the segment.
        let cdc = cut(&data, true, &t);
        let want: Vec<Range<usize>> =
            fastcdc::v2020::FastCDC::new(&data, t.min_chunk, t.avg_chunk, t.max_chunk)
                .map(|c| c.offset..c.offset + c.length)
                .collect();
        assert_eq!(cdc, want);
        assert_ne!(cdc, fixed);
        assert!(cut(&[], false, &t).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_save_cuts_compressed_blobs_on_a_fixed_grid_and_dedups_them() {
        use crate::snapshot::{catalog, save, SaveOptions};
        use crate::store::{S3Options, Store};
        let work = tempfile::tempdir().unwrap();
        let url = format!("file://{}", work.path().join("store").display());
        let store = Store::open(&url, &S3Options::default()).await.unwrap();
        let src = work.path().join("src");
        std::fs::create_dir(&src).unwrap();
        // A gzip-looking blob of 5.5 MiB, and the same bytes again under another name.
        let mut blob = noise(2, (11 << 20) / 2);
        blob[..3].copy_from_slice(&[0x1f, 0x8b, 8]);
        std::fs::write(src.join("blob.gz"), &blob).unwrap();
        std::fs::write(src.join("copy.gz"), &blob).unwrap();
        let saved = save(&store, &src, &SaveOptions::new(&url, "team-a", "shop"))
            .await
            .unwrap();
        let m = catalog::load(&store, "team-a", "shop", &saved.id)
            .await
            .unwrap();
        let mut sizes: Vec<u32> = m.chunks.iter().map(|c| c.loc.raw).collect();
        sizes.sort_unstable();
        assert_eq!(
            sizes,
            vec![512 << 10, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20]
        );
        assert!(m.chunks.iter().all(|c| c.loc.codec == Codec::Raw));
        assert_eq!(
            saved.new_raw_bytes,
            blob.len() as u64,
            "the copy is deduplicated"
        );
    }

    #[test]
    fn plan_splits_files_on_a_fixed_grid_and_groups_neighbours() {
        let tuning = Tuning {
            segment: 10,
            ..Tuning::default()
        };
        let (a, b, c) = (
            file(vec![(0, 25)]),
            file(vec![(0, 3), (100, 4)]),
            file(vec![]),
        );
        let (items, units) = plan(&[(0, &a), (1, &b), (2, &c)], &tuning);
        let got: Vec<(usize, u64, u64)> = items.iter().map(|i| (i.file, i.offset, i.len)).collect();
        assert_eq!(
            got,
            vec![(0, 0, 10), (0, 10, 10), (0, 20, 5), (1, 0, 3), (1, 100, 4)]
        );
        // Units close once they hold half a segment: every item is in exactly one unit, in order.
        assert_eq!(units, vec![0..1, 1..2, 2..3, 3..5]);
    }
}
