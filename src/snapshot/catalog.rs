//! The snapshots of a store: listing them (for `ls` and the controller), finding the latest,
//! loading and checking a manifest, forgetting snapshots, and knowing which packs exist.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use serde::Serialize;

use super::layout::{self, NameError};
use super::manifest::{Manifest, ManifestError};
use super::pin::ManifestDigest;
use crate::store::{Store, StoreError};

/// Errors finding or reading snapshots.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest is damaged, foreign or inconsistent.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// `latest` was asked of a cache without (sound) snapshots.
    #[error("cache {cache:?} in namespace {namespace:?} has no {}snapshot{}", if damaged.is_empty() { "" } else { "sound " }, damaged_list(damaged))]
    NoSnapshot {
        namespace: String,
        cache: String,
        /// Why each damaged manifest was skipped.
        damaged: Vec<String>,
    },
    /// The snapshot id does not exist.
    #[error("snapshot {id} of cache {cache:?} not found (manifest {key} is missing)")]
    NotFound {
        cache: String,
        id: String,
        key: String,
    },
    /// The manifest's bytes are not those the snapshot was pinned to: it was replaced or
    /// planted by someone who can write the store.
    #[error("snapshot {id} of cache {cache:?}: manifest {key} has SHA-256 {}, but the snapshot is pinned to {}: refusing it (the manifest in the store is not the one that was saved)", .digests.found, .digests.expected)]
    Mismatch {
        cache: String,
        id: String,
        key: String,
        /// Boxed: the error type stays small.
        digests: Box<Digests>,
    },
}

/// The digest a pinned snapshot's manifest should have, and the one it has.
#[derive(Debug)]
pub struct Digests {
    /// The pin.
    pub expected: ManifestDigest,
    /// The manifest in the store.
    pub found: ManifestDigest,
}

fn damaged_list(damaged: &[String]) -> String {
    if damaged.is_empty() {
        String::new()
    } else {
        format!(" ({} damaged: {})", damaged.len(), damaged.join("; "))
    }
}

/// One snapshot, as `ls` and the controller see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    /// Cache name.
    pub cache: String,
    /// Snapshot id.
    pub id: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// The snapshot it was saved on top of.
    pub parent: Option<String>,
    /// Regular files.
    pub files: u64,
    /// Logical bytes of its files: what a restore writes.
    pub bytes: u64,
    /// Bytes it added to the store.
    pub new_bytes: u64,
    /// Bytes of the packs it references (store usage if it were alone).
    pub stored_bytes: u64,
}

impl SnapshotInfo {
    /// The summary of a manifest.
    pub fn of(m: &Manifest) -> SnapshotInfo {
        let created = jiff::Timestamp::from_millisecond(m.created_ms)
            .map(|t| t.to_string())
            .unwrap_or_default();
        SnapshotInfo {
            cache: m.cache.clone(),
            id: m.id.clone(),
            created,
            created_ms: m.created_ms,
            parent: m.parent.clone(),
            files: m.stats.files,
            bytes: m.stats.bytes,
            new_bytes: m.stats.new_bytes,
            stored_bytes: m.packs.iter().map(|p| p.size).sum(),
        }
    }
}

/// Snapshot ids of a cache, oldest first.
pub async fn snapshot_ids(
    store: &Store,
    ns: &str,
    cache: &str,
) -> Result<Vec<String>, CatalogError> {
    layout::check_name("namespace", ns)?;
    layout::check_name("cache", cache)?;
    let mut ids: Vec<String> = store
        .list(&layout::cache_prefix(ns, cache))
        .await?
        .iter()
        .filter_map(|o| {
            layout::parse_manifest_key(ns, &o.key)
                .filter(|(c, _)| *c == cache)
                .map(|(_, id)| id.to_string())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Every (cache, snapshot id) of a namespace.
pub async fn all_snapshots(store: &Store, ns: &str) -> Result<Vec<(String, String)>, CatalogError> {
    layout::check_name("namespace", ns)?;
    let mut all: Vec<(String, String)> = store
        .list(&layout::snapshots_prefix(ns))
        .await?
        .iter()
        .filter_map(|o| {
            layout::parse_manifest_key(ns, &o.key).map(|(c, id)| (c.to_string(), id.to_string()))
        })
        .collect();
    all.sort();
    Ok(all)
}

/// Resolves `latest` (or checks an explicit id) to a snapshot id.
pub async fn resolve(
    store: &Store,
    ns: &str,
    cache: &str,
    id: &str,
) -> Result<String, CatalogError> {
    if id == "latest" {
        return snapshot_ids(store, ns, cache).await?.pop().ok_or_else(|| {
            CatalogError::NoSnapshot {
                namespace: ns.to_string(),
                cache: cache.to_string(),
                damaged: Vec::new(),
            }
        });
    }
    layout::check_snapshot_id(id)?;
    Ok(id.to_string())
}

/// Loads and checks the manifest of snapshot `id` (not `latest`).
pub async fn load(
    store: &Store,
    ns: &str,
    cache: &str,
    id: &str,
) -> Result<Manifest, CatalogError> {
    load_pinned(store, ns, cache, id, None).await
}

/// Loads and checks the manifest of snapshot `id` (not `latest`); with `pin`, refuses it
/// unless its bytes have that SHA-256, before decoding any of them.
pub async fn load_pinned(
    store: &Store,
    ns: &str,
    cache: &str,
    id: &str,
    pin: Option<&ManifestDigest>,
) -> Result<Manifest, CatalogError> {
    layout::check_name("namespace", ns)?;
    layout::check_name("cache", cache)?;
    layout::check_snapshot_id(id)?;
    let key = layout::manifest_key(ns, cache, id);
    let bytes = store.get(&key).await.map_err(|e| match e {
        StoreError::NotFound { key } => CatalogError::NotFound {
            cache: cache.to_string(),
            id: id.to_string(),
            key,
        },
        other => CatalogError::Store(other),
    })?;
    if let Some(expected) = pin {
        let found = ManifestDigest::of(&bytes);
        if found != *expected {
            return Err(CatalogError::Mismatch {
                cache: cache.to_string(),
                id: id.to_string(),
                key,
                digests: Box::new(Digests {
                    expected: *expected,
                    found,
                }),
            });
        }
    }
    Ok(Manifest::decode(&bytes, &key, ns, cache, id)?)
}

/// Sorts out a failed [`load`] of a listed manifest: `Ok(Some(reason))` when the manifest is
/// unusable for good (damaged, foreign or inconsistent: skip it and report the reason),
/// `Ok(None)` when it vanished since the listing (forgotten meanwhile), the error otherwise
/// (the store failed: nothing can be concluded).
pub fn skippable(e: CatalogError) -> Result<Option<String>, CatalogError> {
    match e {
        CatalogError::Manifest(m) => {
            tracing::warn!(error = %m, "skipping a damaged snapshot manifest");
            Ok(Some(m.to_string()))
        }
        CatalogError::NotFound { .. } => Ok(None),
        other => Err(other),
    }
}

/// The snapshots of a cache, oldest first, with time and sizes (one read per manifest). A
/// damaged manifest is skipped with a warning, not fatal to the listing.
pub async fn list_snapshots(
    store: &Store,
    ns: &str,
    cache: &str,
) -> Result<Vec<SnapshotInfo>, CatalogError> {
    let ids = snapshot_ids(store, ns, cache).await?;
    let loaded: Vec<Result<Manifest, CatalogError>> = futures::stream::iter(ids)
        .map(|id| async move { load(store, ns, cache, &id).await })
        .buffered(8)
        .collect()
        .await;
    let mut out = Vec::new();
    for r in loaded {
        match r {
            Ok(m) => out.push(SnapshotInfo::of(&m)),
            Err(e) => drop(skippable(e)?),
        }
    }
    Ok(out)
}

/// Loads snapshot `id`, or for `latest` the newest snapshot whose manifest is sound. Returns
/// it and, for `latest`, the reasons newer manifests were skipped (damaged ones).
pub async fn load_resolved(
    store: &Store,
    ns: &str,
    cache: &str,
    id: &str,
) -> Result<(Manifest, Vec<String>), CatalogError> {
    if id != "latest" {
        return Ok((load(store, ns, cache, id).await?, Vec::new()));
    }
    let mut skipped = Vec::new();
    for id in snapshot_ids(store, ns, cache).await?.iter().rev() {
        match load(store, ns, cache, id).await {
            Ok(m) => {
                if !skipped.is_empty() {
                    tracing::warn!(id = %m.id, skipped = skipped.len(), "latest: newer snapshots are damaged; using the newest sound one");
                }
                return Ok((m, skipped));
            }
            Err(e) => skipped.extend(skippable(e)?),
        }
    }
    Err(CatalogError::NoSnapshot {
        namespace: ns.to_string(),
        cache: cache.to_string(),
        damaged: skipped,
    })
}

/// Forgets one snapshot (deletes its manifest). Its data goes at the next `gc`.
pub async fn forget(store: &Store, ns: &str, cache: &str, id: &str) -> Result<(), CatalogError> {
    layout::check_snapshot_id(id)?;
    Ok(store.delete(&layout::manifest_key(ns, cache, id)).await?)
}

/// Forgets snapshot `id` of a cache, failing with [`CatalogError::NotFound`] when the cache
/// has no such snapshot (for a person typing an id: a typo must not read as success).
pub async fn forget_existing(
    store: &Store,
    ns: &str,
    cache: &str,
    id: &str,
) -> Result<(), CatalogError> {
    layout::check_snapshot_id(id)?;
    if !snapshot_ids(store, ns, cache)
        .await?
        .iter()
        .any(|i| i == id)
    {
        return Err(CatalogError::NotFound {
            cache: cache.to_string(),
            id: id.to_string(),
            key: layout::manifest_key(ns, cache, id),
        });
    }
    forget(store, ns, cache, id).await
}

/// Forgets every snapshot of a cache (for a BuildCache deleted with `deletionPolicy:
/// Delete`); returns how many. Their data goes at the next `gc`.
pub async fn forget_cache(store: &Store, ns: &str, cache: &str) -> Result<usize, CatalogError> {
    let ids = snapshot_ids(store, ns, cache).await?;
    for id in &ids {
        forget(store, ns, cache, id).await?;
    }
    Ok(ids.len())
}

/// The pack objects of a namespace by id with size, and the ids that have an index object,
/// each whether or not the other is there.
pub async fn pack_objects(
    store: &Store,
    ns: &str,
) -> Result<(HashMap<String, u64>, HashSet<String>), CatalogError> {
    let mut packs = HashMap::new();
    let mut indexed = HashSet::new();
    for o in store.list(&layout::packs_prefix(ns)).await? {
        match layout::parse_pack_key(&o.key) {
            Some((id, true)) => {
                packs.insert(id.to_string(), o.size);
            }
            Some((id, false)) => {
                indexed.insert(id.to_string());
            }
            None => {}
        }
    }
    Ok((packs, indexed))
}

/// The packs of a namespace: those with both the pack and its index, by id with size, and
/// the ids condemned by gc.
pub async fn packs(
    store: &Store,
    ns: &str,
) -> Result<(HashMap<String, u64>, HashSet<String>), CatalogError> {
    let (mut packs, indexed) = pack_objects(store, ns).await?;
    packs.retain(|id, _| indexed.contains(id));
    let condemned = store
        .list(&layout::trash_prefix(ns))
        .await?
        .iter()
        .filter_map(|o| o.key.rsplit('/').next().map(str::to_string))
        .collect();
    Ok((packs, condemned))
}
