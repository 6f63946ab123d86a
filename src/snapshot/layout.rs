//! Where things live in a store, and how snapshots and chunks are named. Pure functions.
//!
//! ```text
//! <namespace>/packs/<id[..2]>/<id>.pack       chunks, each raw or one zstd frame
//! <namespace>/packs/<id[..2]>/<id>.idx        what a pack holds (lets a save reuse orphans)
//! <namespace>/snapshots/<cache>/<id>.manifest one per snapshot, written last
//! <namespace>/trash/<pack id>                 gc phase one: pack condemned at this time
//! ```

use std::fmt;

/// A hash map with foldhash's fast, randomly seeded hasher (see `Cargo.toml`).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set with foldhash's fast, randomly seeded hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A chunk's BLAKE3 hash, which is also its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..16] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

/// Errors in names given by users.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Namespaces and cache names are Kubernetes-like names.
    #[error("invalid {what} {name:?}: use 1-253 characters from [A-Za-z0-9._-], not starting with '.' or '-'")]
    Invalid { what: &'static str, name: String },
    /// Snapshot ids are `YYYYMMDDTHHMMSS.mmmZ-xxxxxxxx` as printed by save.
    #[error("invalid snapshot id {0:?}")]
    SnapshotId(String),
}

/// Checks a namespace or cache name.
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid {
            what,
            name: name.to_string(),
        })
    }
}

/// Checks a snapshot id's shape (it becomes part of an object key).
pub fn check_snapshot_id(id: &str) -> Result<(), NameError> {
    let ok = id.len() >= 10
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    if ok && !id.starts_with('.') {
        Ok(())
    } else {
        Err(NameError::SnapshotId(id.to_string()))
    }
}

/// A new snapshot id: the UTC time to the millisecond (so ids sort by age) and 32 random bits.
pub fn new_snapshot_id(unix_ms: i64, entropy: u32) -> String {
    let ts = jiff::Timestamp::from_millisecond(unix_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!(
        "{}.{:03}Z-{entropy:08x}",
        ts.strftime("%Y%m%dT%H%M%S"),
        unix_ms.rem_euclid(1000)
    )
}

/// Some entropy for ids: process, time and a counter hashed together.
pub fn entropy() -> u32 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&SEQ.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let b = h.finalize();
    u32::from_le_bytes([
        b.as_bytes()[0],
        b.as_bytes()[1],
        b.as_bytes()[2],
        b.as_bytes()[3],
    ])
}

/// Prefix of everything a namespace stores.
pub fn namespace_prefix(ns: &str) -> String {
    format!("{ns}/")
}

/// Prefix of every pack of a namespace.
pub fn packs_prefix(ns: &str) -> String {
    format!("{ns}/packs/")
}

/// Key of a pack.
pub fn pack_key(ns: &str, pack: &str) -> String {
    format!("{ns}/packs/{}/{pack}.pack", &pack[..2.min(pack.len())])
}

/// Key of a pack's index.
pub fn pack_index_key(ns: &str, pack: &str) -> String {
    format!("{ns}/packs/{}/{pack}.idx", &pack[..2.min(pack.len())])
}

/// The pack id and whether the key is the pack itself (`true`) or its index (`false`).
pub fn parse_pack_key(key: &str) -> Option<(&str, bool)> {
    let name = key.rsplit('/').next()?;
    if let Some(id) = name.strip_suffix(".pack") {
        Some((id, true))
    } else {
        name.strip_suffix(".idx").map(|id| (id, false))
    }
}

/// Prefix of every manifest of a namespace (all caches).
pub fn snapshots_prefix(ns: &str) -> String {
    format!("{ns}/snapshots/")
}

/// Prefix of the manifests of one cache.
pub fn cache_prefix(ns: &str, cache: &str) -> String {
    format!("{ns}/snapshots/{cache}/")
}

/// Key of a snapshot's manifest.
pub fn manifest_key(ns: &str, cache: &str, id: &str) -> String {
    format!("{ns}/snapshots/{cache}/{id}.manifest")
}

/// The cache and snapshot id of a manifest key under [`snapshots_prefix`].
pub fn parse_manifest_key<'a>(ns: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = key.strip_prefix(ns)?.strip_prefix("/snapshots/")?;
    let (cache, file) = rest.split_once('/')?;
    Some((cache, file.strip_suffix(".manifest")?))
}

/// Prefix of gc's condemnation markers.
pub fn trash_prefix(ns: &str) -> String {
    format!("{ns}/trash/")
}

/// Key of the condemnation marker of a pack.
pub fn trash_key(ns: &str, pack: &str) -> String {
    format!("{ns}/trash/{pack}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_round_trip_through_keys() {
        let a = new_snapshot_id(1_700_000_000_123, 7);
        let b = new_snapshot_id(1_700_000_001_000, 1);
        assert_eq!(a, "20231114T221320.123Z-00000007");
        assert!(a < b);
        check_snapshot_id(&a).unwrap();
        let key = manifest_key("team-a", "shop", &a);
        assert_eq!(
            parse_manifest_key("team-a", &key),
            Some(("shop", a.as_str()))
        );
        assert_eq!(parse_manifest_key("team-b", &key), None);
        assert_eq!(
            parse_pack_key(&pack_key("ns", "abcdef")),
            Some(("abcdef", true))
        );
        assert_eq!(
            parse_pack_key(&pack_index_key("ns", "abcdef")),
            Some(("abcdef", false))
        );
    }

    #[test]
    fn names_are_checked() {
        check_name("cache", "shop-main.v1_x").unwrap();
        for bad in ["", ".hidden", "-x", "a/b", "a b", "é"] {
            assert!(check_name("cache", bad).is_err(), "{bad}");
        }
        assert!(check_snapshot_id("../../etc/passwd").is_err());
    }
}
