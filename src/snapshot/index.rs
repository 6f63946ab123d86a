//! The local index kept on the saved volume (`.hearth/index` at the root of the tree): for
//! each file, its (size, mtime, ctime, inode) and chunk ids when last saved or restored, so
//! the next save reuses the chunk list of an unchanged file without reading it. It is only
//! a cache: a lost, stale or foreign index costs time, never correctness, because a chunk is
//! reused only when the store still holds it.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::codec::{self, ByteBuf};
use super::layout::ChunkId;

/// Magic and version of the local index.
pub const MAGIC: &[u8; 8] = b"HEARTHI1";

/// Files changed this close (in nanoseconds) before the scan are not indexed: a write in the
/// same timestamp tick (coarse kernel clocks tick every 1-10 ms) would go unnoticed.
pub const RACY_NS: i64 = 100_000_000;

/// What the index remembers of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedFile {
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns).
    pub mtime_ns: i64,
    /// Change time (ns).
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Data runs: offset and chunk ids.
    pub extents: Vec<(u64, Vec<ChunkId>)>,
}

/// The index of one tree, valid for one store and namespace.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocalIndex {
    /// Store URL and namespace the chunk ids were saved to.
    pub store: String,
    /// Files by path relative to the tree.
    pub files: HashMap<ByteBuf, IndexedFile>,
}

impl LocalIndex {
    /// A new empty index for `store`.
    pub fn new(store: &str) -> LocalIndex {
        LocalIndex {
            store: store.to_string(),
            files: HashMap::new(),
        }
    }

    /// Loads the index at `path` if it exists, is intact and belongs to `store`; an empty
    /// index otherwise.
    pub fn load(path: &Path, store: &str) -> LocalIndex {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the local index; every file will be read");
                }
                return LocalIndex::new(store);
            }
        };
        match codec::open::<LocalIndex>(MAGIC, &bytes) {
            Ok(index) if index.store == store => index,
            Ok(_) => {
                tracing::info!("the local index belongs to another store or namespace; every file will be read");
                LocalIndex::new(store)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "local index damaged; every file will be read");
                LocalIndex::new(store)
            }
        }
    }

    /// The chunk list of `path` if the file still has the recorded identity.
    pub fn lookup(&self, path: &[u8], file: &IndexedFile) -> Option<&Vec<(u64, Vec<ChunkId>)>> {
        let hit = self.files.get(&ByteBuf(path.to_vec()))?;
        (hit.size == file.size
            && hit.mtime_ns == file.mtime_ns
            && hit.ctime_ns == file.ctime_ns
            && hit.ino == file.ino)
            .then_some(&hit.extents)
    }

    /// Records a file unless it changed within [`RACY_NS`] before `now_ns` (or after it).
    pub fn record(&mut self, path: &[u8], file: IndexedFile, now_ns: i64) {
        if file.mtime_ns.max(file.ctime_ns) < now_ns - RACY_NS {
            self.files.insert(ByteBuf(path.to_vec()), file);
        }
    }

    /// Writes the index atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = codec::seal(MAGIC, self).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_need_the_same_identity_and_racy_files_are_not_recorded() {
        let file = IndexedFile {
            size: 3,
            mtime_ns: 10,
            ctime_ns: 20,
            ino: 7,
            extents: vec![(0, vec![ChunkId::of(b"abc")])],
        };
        let mut index = LocalIndex::new("file:///s#ns");
        index.record(b"a", file.clone(), 10_000_000_000);
        index.record(b"racy", file.clone(), 100);
        assert!(index.lookup(b"racy", &file).is_none());
        assert_eq!(index.lookup(b"a", &file), Some(&file.extents));
        let touched = IndexedFile {
            ctime_ns: 21,
            ..file.clone()
        };
        assert!(index.lookup(b"a", &touched).is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        index.write(&path).unwrap();
        assert_eq!(LocalIndex::load(&path, "file:///s#ns").files.len(), 1);
        assert!(LocalIndex::load(&path, "file:///other#ns").files.is_empty());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(LocalIndex::load(&path, "file:///s#ns").files.is_empty());
    }
}
