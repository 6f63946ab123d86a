//! `verify`: checks that a snapshot is restorable. Always: the manifest's checksum, binding
//! and consistency, and that every pack it references is present and large enough. With
//! `read_data`: downloads every chunk it uses and checks its hash, as a restore would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use super::catalog;
use super::layout;
use super::pipeline::Buffers;
use super::restore::{fetch_pack, fetches, plan, RestoreError};

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Snapshot checked.
    pub id: String,
    /// Packs referenced.
    pub packs: u64,
    /// Chunks referenced.
    pub chunks: u64,
    /// Bytes downloaded and re-hashed (with `read_data`).
    pub bytes_read: u64,
    /// Every problem found; empty when the snapshot is sound.
    pub problems: Vec<String>,
}

/// Verifies snapshot `id` (or `latest`) of a cache.
pub async fn verify(
    store: &crate::store::Store,
    ns: &str,
    cache: &str,
    id: &str,
    read_data: bool,
) -> Result<VerifyReport, RestoreError> {
    let id = catalog::resolve(store, ns, cache, id).await?;
    let m = Arc::new(catalog::load(store, ns, cache, &id).await?);
    let mut report = VerifyReport {
        id,
        packs: m.packs.len() as u64,
        chunks: m.chunks.len() as u64,
        ..Default::default()
    };
    let (present, indexed) = catalog::pack_objects(store, ns).await?;
    let mut needed = vec![0u64; m.packs.len()];
    for c in &m.chunks {
        let end = c.loc.offset + c.loc.stored as u64;
        needed[c.loc.pack as usize] = needed[c.loc.pack as usize].max(end);
    }
    for (p, pack) in m.packs.iter().enumerate() {
        match present.get(&pack.id) {
            None => report.problems.push(format!(
                "pack {} is missing (object {})",
                pack.id,
                layout::pack_key(ns, &pack.id)
            )),
            // A save and gc treat a pack without its index as absent (the index is written
            // last: a pack without one may be incomplete).
            Some(_) if !indexed.contains(&pack.id) => report.problems.push(format!(
                "the index of pack {} is missing (object {}); the pack itself is there",
                pack.id,
                layout::pack_index_key(ns, &pack.id)
            )),
            Some(size) if *size < needed[p] => report.problems.push(format!(
                "pack {} is truncated: {size} bytes, {} needed",
                pack.id, needed[p]
            )),
            Some(_) => {}
        }
    }
    if read_data && report.problems.is_empty() {
        let (_, per_pack) = plan(&m, 0..m.entries.len());
        let read = AtomicU64::new(0);
        let buffers = Arc::new(Buffers::new(4, 0));
        let results: Vec<Result<u64, RestoreError>> = futures::stream::iter(fetches(&m, per_pack))
            .map(|(p, chunks)| fetch_pack(store, &m, p, chunks, &buffers, |_, _| Ok(())))
            .buffer_unordered(4)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(n) => {
                    read.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        report.bytes_read = read.load(Ordering::Relaxed);
    }
    Ok(report)
}
