//! The local index kept on the saved volume (`.hearth/index` at the root of the tree): for
//! each file, its (size, mtime, ctime, inode) and chunk ids when last saved or restored, so
//! the next save reuses the chunk list of an unchanged file without reading it. It is only
//! a cache: a lost, stale or foreign index costs time, never correctness, because a chunk is
//! reused only when the store still holds it.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::codec::{self, ByteBuf};
use super::layout::{self, ChunkId, FastMap};
use super::manifest::INDEX_DIR;

/// Name of the index file in [`INDEX_DIR`].
pub const INDEX_FILE: &str = "index";

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
    pub files: FastMap<ByteBuf, IndexedFile>,
}

impl LocalIndex {
    /// A new empty index for `store`.
    pub fn new(store: &str) -> LocalIndex {
        LocalIndex {
            store: store.to_string(),
            files: FastMap::default(),
        }
    }

    /// Loads the index of the tree at `root` if it exists, is intact and belongs to `store`;
    /// an empty index otherwise. Neither `.hearth` nor the index is followed if it is a
    /// symlink, and only a regular file is read (a FIFO planted there cannot block the save).
    pub fn load(root: &Path, store: &str) -> LocalIndex {
        let bytes = match read_index(root) {
            Ok(Some(b)) => b,
            Ok(None) => return LocalIndex::new(store),
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "cannot read the local index {INDEX_DIR}/{INDEX_FILE}; every file will be read");
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
                tracing::warn!(root = %root.display(), error = %e, "local index damaged; every file will be read");
                LocalIndex::new(store)
            }
        }
    }

    /// The chunk list of `path` if the file still has the recorded identity.
    pub fn lookup(&self, path: &[u8], file: &IndexedFile) -> Option<&Vec<(u64, Vec<ChunkId>)>> {
        let hit = self.files.get(path)?;
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

    /// Writes the index of the tree at `root` atomically, without following any symlink the
    /// tree's writer may have planted: relative to `.hearth` opened with `O_NOFOLLOW |
    /// O_DIRECTORY` (a symlink or file named `.hearth` is removed and replaced by a
    /// directory), into a temporary file with a random name created with `O_CREAT | O_EXCL |
    /// O_NOFOLLOW`, then renamed over `index` (which replaces a symlink there, never its target).
    pub fn write(&self, root: &Path) -> std::io::Result<()> {
        write_encoded(root, &self.encode()?)
    }

    /// The index's bytes, for [`write_encoded`] (so the encoding can run beside other work).
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        codec::seal(MAGIC, self).map_err(std::io::Error::other)
    }
}

/// Writes the bytes of an index ([`LocalIndex::encode`]) as [`LocalIndex::write`] does.
pub fn write_encoded(root: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = open_index_dir(root)?;
    let (tmp, fd) = create_temp(&dir)?;
    let written = std::fs::File::from(fd)
        .write_all(bytes)
        .and_then(|()| Ok(rustix::fs::renameat(&dir, &tmp, &dir, INDEX_FILE)?));
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
    }
    written
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(root, flags, Mode::empty())?)
}

/// Reads `.hearth/index` under `root`; `None` when there is none.
fn read_index(root: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let dir = match rustix::fs::openat(open_root(root)?, INDEX_DIR, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{INDEX_DIR} is not a directory (a symlink or file?): {e}"),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&dir, INDEX_FILE, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{INDEX_DIR}/{INDEX_FILE} is not a regular file"),
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Opens `.hearth` under `root` as a directory without following a symlink, creating it, or
/// replacing whatever non-directory is there.
fn open_index_dir(root: &Path) -> std::io::Result<OwnedFd> {
    let root_fd = open_root(root)?;
    for _ in 0..4 {
        match rustix::fs::openat(&root_fd, INDEX_DIR, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(Errno::LOOP | Errno::NOTDIR) => {
                tracing::warn!(root = %root.display(), "{INDEX_DIR} is not a directory (a symlink or a file): replacing it, not following it");
                match rustix::fs::unlinkat(&root_fd, INDEX_DIR, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        match rustix::fs::mkdirat(&root_fd, INDEX_DIR, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(format!(
        "{INDEX_DIR} kept changing while the index was written"
    )))
}

/// Creates a new temporary file with a random name in `dir` (`O_EXCL | O_NOFOLLOW`: a name
/// planted in advance, symlink or not, is never opened).
fn create_temp(dir: &OwnedFd) -> std::io::Result<(String, OwnedFd)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut attempt = 0;
    loop {
        let name = format!(
            "{INDEX_FILE}.tmp-{:08x}{:08x}",
            layout::entropy(),
            layout::entropy()
        );
        match rustix::fs::openat(dir, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) if attempt < 8 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
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
        let root = dir.path();
        index.write(root).unwrap();
        assert_eq!(LocalIndex::load(root, "file:///s#ns").files.len(), 1);
        assert!(LocalIndex::load(root, "file:///other#ns").files.is_empty());
        std::fs::write(root.join(INDEX_DIR).join(INDEX_FILE), b"garbage").unwrap();
        assert!(LocalIndex::load(root, "file:///s#ns").files.is_empty());
    }
}
