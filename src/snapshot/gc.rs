//! Garbage collection, two-phase with a grace period so it can run while saves run.
//!
//! 1. Forget the snapshots beyond the newest `retain` of each cache (optional).
//! 2. List packs and condemnation markers, *then* read every manifest of the namespace.
//! 3. A referenced pack that is condemned is taken back (marker removed). An unreferenced
//!    pack older than the grace period is condemned (a marker is written). An unreferenced
//!    pack condemned more than the grace period ago is deleted, then its marker.
//!
//! Why a save never loses data: it reuses only packs that were not condemned when it
//! started, takes back any condemned while it ran just before writing its manifest, and gc
//! deletes only packs condemned a grace period earlier and unreferenced by every manifest
//! it read after listing the markers. So any save shorter than the grace period is safe, and
//! packs a save uploads are younger than the grace period until it commits.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::catalog::{self, CatalogError};
use super::layout;
use super::manifest::Manifest;
use crate::store::{Store, StoreError};

/// Errors of a gc run.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Listing or reading manifests failed; nothing is deleted when a manifest is unreadable.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to collect.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Namespace.
    pub namespace: String,
    /// Apply `retain` to this cache only; all caches of the namespace when `None`.
    pub cache: Option<String>,
    /// Keep this many newest snapshots per cache; keep all when `None`.
    pub retain: Option<usize>,
    /// Snapshot ids never forgotten by `retain` (those live replicas match, so a replica
    /// stays provably saved while it exists).
    pub keep: Vec<String>,
    /// Grace period between condemning and deleting a pack (longer than any save).
    pub grace: Duration,
    /// The current time (injected for tests).
    pub now: SystemTime,
    /// Report what would happen without changing anything.
    pub dry_run: bool,
}

impl GcOptions {
    /// Defaults: keep every snapshot, one hour of grace.
    pub fn new(namespace: &str) -> GcOptions {
        GcOptions {
            namespace: namespace.to_string(),
            cache: None,
            retain: None,
            keep: Vec::new(),
            grace: Duration::from_secs(3600),
            now: SystemTime::now(),
            dry_run: false,
        }
    }
}

/// What a gc run did.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Snapshots forgotten by `retain`, as `cache/id`.
    pub forgotten: Vec<String>,
    /// Packs referenced by some snapshot.
    pub live_packs: u64,
    /// Packs condemned in this run.
    pub condemned: u64,
    /// Condemned packs taken back because a snapshot uses them again.
    pub rescued: u64,
    /// Packs deleted.
    pub deleted_packs: u64,
    /// Bytes freed.
    pub deleted_bytes: u64,
    /// Damaged manifests skipped (they protect no data), with the reason.
    pub damaged: Vec<String>,
    /// Temporary files of writes killed before they finished (file store), older than the
    /// grace period, removed (their bytes are in `deleted_bytes`).
    pub swept_unfinished: u64,
}

#[derive(Default)]
struct PackObjects {
    size: u64,
    newest: Option<SystemTime>,
}

/// Runs garbage collection on a namespace.
pub async fn gc(store: &Store, opts: &GcOptions) -> Result<GcReport, GcError> {
    let ns = opts.namespace.as_str();
    let mut report = GcReport::default();
    if let Some(retain) = opts.retain {
        let mut by_cache: HashMap<String, Vec<String>> = HashMap::new();
        for (cache, id) in catalog::all_snapshots(store, ns).await? {
            if opts.cache.as_ref().is_none_or(|c| *c == cache) {
                by_cache.entry(cache).or_default().push(id);
            }
        }
        for (cache, ids) in by_cache {
            for id in &ids[..ids.len().saturating_sub(retain)] {
                if opts.keep.contains(id) {
                    continue;
                }
                if !opts.dry_run {
                    catalog::forget(store, ns, &cache, id).await?;
                }
                report.forgotten.push(format!("{cache}/{id}"));
            }
        }
    }

    // Phase order matters: list packs and markers before reading the manifests.
    let mut packs: HashMap<String, PackObjects> = HashMap::new();
    for o in store.list(&layout::packs_prefix(ns)).await? {
        if let Some((id, _)) = layout::parse_pack_key(&o.key) {
            let p = packs.entry(id.to_string()).or_default();
            p.size += o.size;
            p.newest = p.newest.max(Some(o.modified));
        }
    }
    let markers: HashMap<String, SystemTime> = store
        .list(&layout::trash_prefix(ns))
        .await?
        .into_iter()
        .filter_map(|o| {
            o.key
                .rsplit('/')
                .next()
                .map(|id| (id.to_string(), o.modified))
        })
        .collect();
    let snapshots = catalog::all_snapshots(store, ns).await?;
    let loaded: Vec<Result<Manifest, CatalogError>> = futures::stream::iter(snapshots)
        .map(|(cache, id)| async move { catalog::load(store, ns, &cache, &id).await })
        .buffer_unordered(8)
        .collect()
        .await;
    // A damaged manifest cannot be restored, so it protects nothing: skip it and report it
    // (its data goes like any unreferenced data, two runs and a grace period later). A store
    // failure still stops gc before it deletes anything.
    let mut referenced: HashSet<String> = HashSet::new();
    for r in loaded {
        match r {
            Ok(m) => referenced.extend(m.packs.into_iter().map(|p| p.id)),
            Err(e) => report.damaged.extend(catalog::skippable(e)?),
        }
    }

    let old = |t: SystemTime| t.checked_add(opts.grace).is_some_and(|t| t <= opts.now);
    for (id, p) in &packs {
        let marker = markers.get(id);
        if referenced.contains(id) {
            report.live_packs += 1;
            if marker.is_some() {
                report.rescued += 1;
                if !opts.dry_run {
                    store.delete(&layout::trash_key(ns, id)).await?;
                }
            }
        } else if let Some(marked) = marker {
            if old(*marked) {
                report.deleted_packs += 1;
                report.deleted_bytes += p.size;
                if !opts.dry_run {
                    store.delete(&layout::pack_index_key(ns, id)).await?;
                    store.delete(&layout::pack_key(ns, id)).await?;
                    store.delete(&layout::trash_key(ns, id)).await?;
                }
            }
        } else if p.newest.is_some_and(old) {
            report.condemned += 1;
            if !opts.dry_run {
                store.put(&layout::trash_key(ns, id), Bytes::new()).await?;
            }
        }
    }
    for id in markers.keys().filter(|id| !packs.contains_key(*id)) {
        if !opts.dry_run {
            store.delete(&layout::trash_key(ns, id)).await?;
        }
    }
    // A writer killed between writing and placing an object leaves its temporary file; a
    // write in progress is seconds old, far younger than the grace period.
    if let Some(cutoff) = opts.now.checked_sub(opts.grace).filter(|_| !opts.dry_run) {
        let (files, bytes) = store
            .sweep_unfinished(&layout::namespace_prefix(ns), cutoff)
            .await?;
        report.swept_unfinished = files;
        report.deleted_bytes += bytes;
    }
    Ok(report)
}
