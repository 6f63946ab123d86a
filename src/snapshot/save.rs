//! `save`: scan the tree, learn which chunks the store already holds (the cache's latest
//! manifest, then the indexes of other packs of the namespace), reuse the chunk lists of
//! files the local index shows unchanged, run the chunking pipeline on the rest, check that
//! every referenced pack is present (rescuing any that gc condemned meanwhile) and write the
//! manifest last, with a conditional write.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::catalog::{self, CatalogError};
use super::codec::ByteBuf;
use super::index::{IndexedFile, LocalIndex};
use super::layout::{self, ChunkId, FastMap, NameError};
use super::manifest::{ChunkRef, Extent, Kind, Manifest, PackRef};
use super::pack::PackIndex;
use super::pin::ManifestDigest;
use super::pipeline::{self, Counters, Dedup, PipelineError, Tuning, Work};
use super::tree::{self, TreeError};
use crate::store::{Store, StoreError};

/// Errors of a save.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Reading the tree failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Chunking or uploading failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A pack the snapshot needs disappeared before the manifest was written.
    #[error("pack {0} vanished from the store during the save (was gc run with a grace period shorter than the save?)")]
    PackVanished(String),
    /// Removing the staging a killed restore left failed.
    #[error(transparent)]
    Staging(#[from] super::apply::ApplyError),
    /// Something that cannot happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A test hook: see [`SaveOptions::after_scan`] and [`SaveOptions::before_commit`].
pub type Hook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// What to save and how.
#[derive(Clone)]
pub struct SaveOptions {
    /// Namespace (store prefix).
    pub namespace: String,
    /// Cache name.
    pub cache: String,
    /// Identity of the store, recorded in the local index.
    pub store_url: String,
    /// Chunking, packing and concurrency.
    pub tuning: Tuning,
    /// Use and update the local index at the root of the tree.
    pub use_index: bool,
    /// Test hook: called once the tree is scanned, before any file is read.
    pub after_scan: Option<Hook>,
    /// Test hook: called once the data is uploaded, before the packs are checked and the
    /// manifest written.
    pub before_commit: Option<Hook>,
}

impl SaveOptions {
    /// Defaults for a cache.
    pub fn new(store_url: &str, namespace: &str, cache: &str) -> SaveOptions {
        SaveOptions {
            namespace: namespace.to_string(),
            cache: cache.to_string(),
            store_url: store_url.to_string(),
            tuning: Tuning::default(),
            use_index: true,
            after_scan: None,
            before_commit: None,
        }
    }
}

/// What a save did.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SaveReport {
    /// The new snapshot's id.
    pub id: String,
    /// The snapshot it was saved on top of.
    pub parent: Option<String>,
    /// SHA-256 of the manifest object written, hex: pass it to `restore --manifest-sha256`
    /// to restore exactly this snapshot, whoever else can write the store.
    pub manifest_sha256: String,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Links, devices and FIFOs.
    pub others: u64,
    /// Logical bytes of the files.
    pub bytes: u64,
    /// Bytes read (files the local index showed unchanged are not read).
    pub bytes_read: u64,
    /// Files reused from the local index without reading.
    pub unchanged_files: u64,
    /// New chunks.
    pub new_chunks: u64,
    /// Decoded bytes of the new chunks.
    pub new_raw_bytes: u64,
    /// Bytes uploaded: packs, their indexes and the manifest.
    pub uploaded_bytes: u64,
    /// Packs uploaded.
    pub new_packs: u64,
    /// Entries that could not be kept (sockets).
    pub skipped: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Learns the chunks the namespace's store holds: from the cache's latest manifest, then
/// from the indexes of the other packs. Condemned packs are not reused.
async fn known_chunks(
    store: &Store,
    ns: &str,
    cache: &str,
) -> Result<(Dedup, Option<String>), SaveError> {
    let (packs, condemned) = catalog::packs(store, ns).await?;
    let mut dedup = Dedup::default();
    let mut numbers: HashMap<String, u32> = HashMap::new();
    let number = |dedup: &mut Dedup, numbers: &mut HashMap<String, u32>, id: &str| -> Option<u32> {
        if condemned.contains(id) {
            return None;
        }
        let size = *packs.get(id)?;
        Some(*numbers.entry(id.to_string()).or_insert_with(|| {
            dedup.packs.push((id.to_string(), size));
            dedup.packs.len() as u32 - 1
        }))
    };
    let parent = catalog::snapshot_ids(store, ns, cache).await?.pop();
    if let Some(id) = &parent {
        match catalog::load(store, ns, cache, id).await {
            Ok(m) => {
                for c in &m.chunks {
                    if let Some(no) =
                        number(&mut dedup, &mut numbers, &m.packs[c.loc.pack as usize].id)
                    {
                        dedup
                            .map
                            .insert(c.id, Some(super::manifest::ChunkLoc { pack: no, ..c.loc }));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the latest snapshot as a base; saving without it")
            }
        }
    }
    let others: Vec<String> = packs
        .keys()
        .filter(|id| !numbers.contains_key(*id) && !condemned.contains(*id))
        .cloned()
        .collect();
    let indexes: Vec<(String, Result<Bytes, StoreError>)> = futures::stream::iter(others)
        .map(|id| async move {
            let r = store.get(&layout::pack_index_key(ns, &id)).await;
            (id, r)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (id, bytes) in indexes {
        let index = match bytes
            .map_err(|e| e.to_string())
            .and_then(|b| PackIndex::decode(&id, &b).map_err(|e| e.to_string()))
        {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(pack = %id, error = %e, "ignoring an unreadable pack index");
                continue;
            }
        };
        if let Some(no) = number(&mut dedup, &mut numbers, &id) {
            for (cid, loc) in index.chunks {
                dedup
                    .map
                    .entry(cid)
                    .or_insert(Some(super::manifest::ChunkLoc { pack: no, ..loc }));
            }
        }
    }
    Ok((dedup, parent))
}

/// Saves the tree at `dir` as a new snapshot.
pub async fn save(store: &Store, dir: &Path, opts: &SaveOptions) -> Result<SaveReport, SaveError> {
    let started = Instant::now();
    let (ns, cache) = (opts.namespace.as_str(), opts.cache.as_str());
    layout::check_name("namespace", ns)?;
    layout::check_name("cache", cache)?;
    // Refused while buildkitd runs; held until the save ends so that it cannot start meanwhile.
    let _lock = tree::lock_state_dir(dir)?;
    // A restore killed outright left its staging beside (or inside, where it would be saved)
    // the state dir; a cold build that followed on this volume ran no restore to sweep it.
    super::staging::sweep(dir)?;
    // Files changed after this instant are not trusted to the index (see index::RACY_NS).
    let scan_started_ns = now_ns();
    // The scan, what the store holds and the local index are independent: learn them at once
    // (the first error stops the save, as before).
    let dir_owned = dir.to_path_buf();
    let scan = async {
        let scan = tokio::task::spawn_blocking(move || tree::scan(&dir_owned))
            .await
            .map_err(|e| SaveError::Internal(e.to_string()))?
            .map_err(SaveError::from);
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "scanned the tree"
        );
        scan
    };
    let index_identity = format!("{}#{ns}", opts.store_url);
    let (root, identity, use_index) = (dir.to_path_buf(), index_identity.clone(), opts.use_index);
    let load_index = async {
        let index = tokio::task::spawn_blocking(move || {
            if use_index {
                LocalIndex::load(&root, &identity)
            } else {
                LocalIndex::new(&identity)
            }
        })
        .await
        .map_err(|e| SaveError::Internal(e.to_string()));
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "loaded the local index"
        );
        index
    };
    let known = async {
        let known = known_chunks(store, ns, cache).await;
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "learned the stored chunks"
        );
        known
    };
    let (scan, (dedup, parent), old_index) = tokio::try_join!(scan, known, load_index)?;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "scanned the tree, learned the stored chunks, loaded the local index"
    );

    if let Some(hook) = &opts.after_scan {
        hook().await;
    }
    // Files the index shows unchanged, with every chunk still in the store, are not read.
    // Their chunk lists are moved out of the old index, not copied.
    let mut old_index = old_index;
    let mut file_extents: Vec<Vec<(u64, Vec<ChunkId>)>> = vec![Vec::new(); scan.files.len()];
    let mut unchanged = 0;
    let mut to_read = Vec::new();
    for (n, f) in scan.files.iter().enumerate() {
        let e = &scan.entries[f.entry];
        let probe = IndexedFile {
            size: f.size,
            mtime_ns: e.mtime_ns,
            ctime_ns: f.ctime_ns,
            ino: f.ino,
            extents: vec![],
        };
        let reusable = old_index.lookup(&e.path.0, &probe).is_some_and(|ext| {
            ext.iter()
                .flat_map(|(_, ids)| ids)
                .all(|id| matches!(dedup.map.get(id), Some(Some(_))))
        });
        match old_index.files.remove(e.path.0.as_slice()) {
            Some(old) if reusable => {
                file_extents[n] = old.extents;
                unchanged += 1;
            }
            _ => to_read.push((n, f)),
        }
    }
    drop(old_index);
    let tuning = opts.tuning;
    let (items, units) = pipeline::plan(&to_read, &tuning);
    let to_read_bytes: u64 = items.iter().map(|i| i.len).sum();
    let results: Arc<Vec<OnceLock<Vec<ChunkId>>>> =
        Arc::new((0..items.len()).map(|_| OnceLock::new()).collect());
    let items = Arc::new(items);
    let dedup = Arc::new(Mutex::new(dedup));
    let counters = Arc::new(Counters::default());
    let files = Arc::new(scan.files);
    let progress = indicatif::ProgressBar::with_draw_target(
        Some(to_read_bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    tracing::info!(
        files = files.len(),
        unchanged,
        to_read = to_read_bytes,
        "saving"
    );

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // Room for one more chunk's worst-case zstd frame past the sealing size: a pack buffer
    // is never reallocated. Buffers in use at most: one per worker, one in the channel, one
    // per upload.
    let room = zstd::zstd_safe::compress_bound(tuning.max_chunk as usize);
    let buffers = Arc::new(pipeline::Buffers::new(
        tuning.workers + tuning.uploads + 1,
        tuning.pack_size + room,
    ));
    let work = Work {
        files: files.clone(),
        items: items.clone(),
        units,
        dedup: dedup.clone(),
        results: results.clone(),
        counters: counters.clone(),
        buffers: buffers.clone(),
        progress: progress.clone(),
        tuning,
    };
    let uploader = pipeline::upload_packs(store, ns, rx, tuning.uploads, &counters, &buffers);
    let workers = tokio::task::spawn_blocking(move || pipeline::run_workers(&work, tx));
    let (w, u) = tokio::join!(workers, uploader);
    progress.finish_and_clear();
    u?;
    w.map_err(|e| SaveError::Internal(e.to_string()))??;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "chunked and uploaded"
    );

    // Assemble the file extents from the reused lists and the pipeline's results.
    let mut entries = scan.entries;
    for (i, item) in items.iter().enumerate() {
        let ids = results[i]
            .get()
            .ok_or_else(|| SaveError::Internal("a segment was not chunked".into()))?;
        let f = &files[item.file];
        let extent_start = f
            .extents
            .iter()
            .find(|(s, l)| item.offset >= *s && item.offset < s + l)
            .map(|(s, _)| *s);
        let fe = &mut file_extents[item.file];
        match fe.last_mut() {
            Some((start, list)) if Some(*start) == extent_start => list.extend_from_slice(ids),
            _ => fe.push((extent_start.unwrap_or(item.offset), ids.clone())),
        }
    }

    let dedup = std::mem::take(&mut *dedup.lock().unwrap_or_else(|p| p.into_inner()));
    let mut chunk_no: FastMap<ChunkId, u32> = FastMap::default();
    let mut pack_no: HashMap<u32, u32> = HashMap::new();
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut packs: Vec<PackRef> = Vec::new();
    let mut new_index = LocalIndex::new(&index_identity);
    let now = now_ns();
    for (n, f) in files.iter().enumerate() {
        let mut extents = Vec::new();
        for (offset, ids) in &file_extents[n] {
            let mut list = Vec::with_capacity(ids.len());
            for id in ids {
                let no = match chunk_no.get(id) {
                    Some(no) => *no,
                    None => {
                        let loc = dedup.map.get(id).copied().flatten().ok_or_else(|| {
                            SaveError::Internal(format!("chunk {id} has no location"))
                        })?;
                        let p = *pack_no.entry(loc.pack).or_insert_with(|| {
                            let (id, size) = &dedup.packs[loc.pack as usize];
                            packs.push(PackRef {
                                id: id.clone(),
                                size: *size,
                            });
                            packs.len() as u32 - 1
                        });
                        chunks.push(ChunkRef {
                            id: *id,
                            loc: super::manifest::ChunkLoc { pack: p, ..loc },
                        });
                        chunk_no.insert(*id, chunks.len() as u32 - 1);
                        chunks.len() as u32 - 1
                    }
                };
                list.push(no);
            }
            extents.push(Extent {
                offset: *offset,
                chunks: list,
            });
        }
        let e = &mut entries[f.entry];
        let indexed = IndexedFile {
            size: f.size,
            mtime_ns: e.mtime_ns,
            ctime_ns: f.ctime_ns,
            ino: f.ino,
            extents: std::mem::take(&mut file_extents[n]),
        };
        new_index.record(&e.path.0, indexed, scan_started_ns);
        e.kind = Kind::File {
            size: f.size,
            extents,
        };
    }
    let new_packs: HashSet<&str> = dedup
        .new_packs
        .iter()
        .map(|n| dedup.packs[*n as usize].0.as_str())
        .collect();

    // The new index is encoded while the packs are checked and the manifest is encoded and
    // written; it is written once the manifest is.
    let index_bytes = opts.use_index.then(|| {
        tokio::task::spawn_blocking(move || {
            let bytes = new_index.encode();
            drop(new_index);
            bytes
        })
    });
    if let Some(hook) = &opts.before_commit {
        hook().await;
    }
    let created_ms = now / 1_000_000;
    let id = layout::new_snapshot_id(created_ms, layout::entropy());
    let mut stats = scan.stats;
    stats.new_bytes = counters.uploaded.load(Ordering::Relaxed);
    stats.new_raw_bytes = counters.new_raw.load(Ordering::Relaxed);
    let skipped = stats
        .skipped
        .iter()
        .map(|p: &ByteBuf| String::from_utf8_lossy(&p.0).into_owned())
        .collect();
    let pack_refs = packs.clone();
    let manifest = Manifest {
        namespace: ns.to_string(),
        cache: cache.to_string(),
        id: id.clone(),
        parent: parent.clone(),
        created_ms,
        stats,
        packs,
        chunks,
        entries,
    };
    // The manifest is encoded while the packs it references are checked.
    let encode = async {
        tokio::task::spawn_blocking(move || {
            let encoded = manifest.encode();
            (manifest.stats, encoded)
        })
        .await
        .map_err(|e| SaveError::Internal(e.to_string()))
    };
    let ((), (stats, encoded)) = tokio::try_join!(commit_check(store, ns, &pack_refs), encode)?;
    let encoded = encoded.map_err(|e| SaveError::Internal(e.to_string()))?;
    let manifest_len = encoded.len() as u64;
    let manifest_sha256 = ManifestDigest::of(&encoded).to_string();
    store
        .put_if_absent(&layout::manifest_key(ns, cache, &id), Bytes::from(encoded))
        .await?;
    if let Some(bytes) = index_bytes {
        let written = match bytes.await {
            Ok(Ok(bytes)) => super::index::write_encoded(dir, &bytes),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        if let Err(e) = written {
            tracing::warn!(root = %dir.display(), error = %e, "cannot write the local index; the next save will read every file");
        }
    }
    let s = &stats;
    Ok(SaveReport {
        id,
        parent,
        manifest_sha256,
        files: s.files,
        dirs: s.dirs,
        others: s.others,
        bytes: s.bytes,
        bytes_read: counters.read.load(Ordering::Relaxed),
        unchanged_files: unchanged as u64,
        new_chunks: counters.new_chunks.load(Ordering::Relaxed),
        new_raw_bytes: s.new_raw_bytes,
        uploaded_bytes: s.new_bytes + manifest_len,
        new_packs: new_packs.len() as u64,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Checks that every pack the manifest references is in the store, and takes back from gc's
/// trash any it condemned while the save ran.
async fn commit_check(store: &Store, ns: &str, packs: &[PackRef]) -> Result<(), SaveError> {
    let (present, condemned) = catalog::packs(store, ns).await?;
    if let Some(p) = packs.iter().find(|p| !present.contains_key(&p.id)) {
        return Err(SaveError::PackVanished(p.id.clone()));
    }
    let rescue: Vec<&PackRef> = packs.iter().filter(|p| condemned.contains(&p.id)).collect();
    futures::stream::iter(rescue)
        .map(|p| async move {
            tracing::info!(pack = %p.id, "taking a condemned pack back from gc");
            store.delete(&layout::trash_key(ns, &p.id)).await
        })
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    Ok(())
}
