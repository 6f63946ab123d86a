//! The manifest: everything a snapshot is, in one sealed object written last. It binds the
//! snapshot to its namespace, cache and id, lists every entry of the tree in depth-first
//! order (so a subtree is a contiguous run of entries, restorable alone), and references file
//! data as chunks located in packs. Pure data and encoding.

use serde::{Deserialize, Serialize};

use super::codec::{self, ByteBuf, CodecError};
use super::layout::ChunkId;

/// Magic and format version of manifests.
pub const MAGIC: &[u8; 8] = b"HEARTHM1";

/// Directory at the root of a saved tree that holds Hearth's local index; never part of a
/// snapshot, and refused in a manifest (a restore writes the index there: an entry of that
/// name, a symlink out of the volume above all, would redirect the write). A directory, so
/// that rewriting the index does not change the root's mtime.
pub const INDEX_DIR: &str = ".hearth";

/// Errors reading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The object is damaged or not a manifest.
    #[error("manifest {key}: {source}")]
    Damaged { key: String, source: CodecError },
    /// The manifest is valid but belongs to another namespace, cache or snapshot id.
    #[error("manifest {key} belongs to namespace {namespace:?}, cache {cache:?}, snapshot {id:?}: refusing it")]
    Foreign {
        key: String,
        namespace: String,
        cache: String,
        id: String,
    },
    /// The manifest refers to a chunk or pack it does not list.
    #[error("manifest {key} is inconsistent: {reason}")]
    Inconsistent { key: String, reason: String },
}

/// How a chunk is stored in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// As is (data that does not compress, such as gzip layer blobs).
    Raw,
    /// One zstd frame.
    Zstd,
}

/// Where a chunk lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLoc {
    /// Index into [`Manifest::packs`] (in a manifest) or unused (in a pack index).
    pub pack: u32,
    /// Offset of the stored bytes in the pack.
    pub offset: u64,
    /// Stored length.
    pub stored: u32,
    /// Length once decoded.
    pub raw: u32,
    /// Encoding.
    pub codec: Codec,
}

/// A chunk of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the decoded bytes.
    pub id: ChunkId,
    /// Its location.
    pub loc: ChunkLoc,
}

/// A pack a snapshot uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    /// Pack id (hex).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
}

/// A run of file data starting at `offset`; everything between runs is a hole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Offset in the file.
    pub offset: u64,
    /// Indexes into [`Manifest::chunks`], in order.
    pub chunks: Vec<u32>,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A directory; its children follow it.
    Dir,
    /// A regular file of `size` bytes.
    File { size: u64, extents: Vec<Extent> },
    /// A symbolic link.
    Symlink { target: ByteBuf },
    /// Another name of the file at entry index `entry` (an earlier entry).
    HardLink { entry: u32 },
    /// A character device (overlay whiteouts are 0/0).
    CharDev { rdev: u64 },
    /// A block device.
    BlockDev { rdev: u64 },
    /// A named pipe.
    Fifo,
}

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the snapshot root, as bytes; empty for the root itself.
    pub path: ByteBuf,
    /// What it is.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Extended attributes (name, value), sorted by name.
    pub xattrs: Vec<(ByteBuf, ByteBuf)>,
}

/// Totals recorded at save time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Entries of each kind.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Other entries (links, devices, FIFOs).
    pub others: u64,
    /// Logical size of the regular files (holes excluded).
    pub bytes: u64,
    /// Bytes this snapshot added to the store (packs and their indexes).
    pub new_bytes: u64,
    /// Decoded size of the chunks this snapshot added.
    pub new_raw_bytes: u64,
    /// Sockets and other entries that cannot be kept, by path.
    pub skipped: Vec<ByteBuf>,
}

/// A snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Namespace the snapshot belongs to.
    pub namespace: String,
    /// Cache the snapshot belongs to.
    pub cache: String,
    /// Snapshot id.
    pub id: String,
    /// The snapshot this one was saved on top of, if any.
    pub parent: Option<String>,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: i64,
    /// Totals.
    pub stats: Stats,
    /// Packs used.
    pub packs: Vec<PackRef>,
    /// Chunks used.
    pub chunks: Vec<ChunkRef>,
    /// The tree, depth first, children sorted by name bytes; entry 0 is the root.
    pub entries: Vec<Entry>,
}

/// Refuses the device nodes BuildKit state never holds: every block device, and character
/// devices other than 0/0 (overlay whiteouts). A restore runs as root and would create them,
/// world-writable if the manifest says so (a block device of the node's disk, `/dev/mem`).
/// The error completes "entry <path> ...".
pub fn check_device(kind: &Kind) -> Result<(), String> {
    match kind {
        Kind::BlockDev { rdev } => Err(format!(
            "is a block device ({}:{}): BuildKit state holds none, refusing it",
            rustix::fs::major(*rdev),
            rustix::fs::minor(*rdev)
        )),
        Kind::CharDev { rdev } if *rdev != 0 => Err(format!(
            "is a character device {}:{}: only 0/0 (overlay whiteouts) belong in BuildKit state, refusing it",
            rustix::fs::major(*rdev),
            rustix::fs::minor(*rdev)
        )),
        _ => Ok(()),
    }
}

impl Manifest {
    /// Encodes the manifest.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::seal(MAGIC, self)
    }

    /// Decodes the manifest stored at `key` and checks that it is the snapshot `id` of
    /// `namespace`/`cache` and that its references are consistent.
    pub fn decode(
        bytes: &[u8],
        key: &str,
        namespace: &str,
        cache: &str,
        id: &str,
    ) -> Result<Manifest, ManifestError> {
        let m: Manifest = codec::open(MAGIC, bytes).map_err(|source| ManifestError::Damaged {
            key: key.to_string(),
            source,
        })?;
        if m.namespace != namespace || m.cache != cache || m.id != id {
            return Err(ManifestError::Foreign {
                key: key.to_string(),
                namespace: m.namespace,
                cache: m.cache,
                id: m.id,
            });
        }
        m.check().map_err(|reason| ManifestError::Inconsistent {
            key: key.to_string(),
            reason,
        })?;
        Ok(m)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(c) = self
            .chunks
            .iter()
            .find(|c| c.loc.pack as usize >= self.packs.len())
        {
            return Err(format!("chunk {} in unknown pack {}", c.id, c.loc.pack));
        }
        if self.entries.first().map(|e| (e.path.0.is_empty(), &e.kind)) != Some((true, &Kind::Dir))
        {
            return Err("the first entry is not the root directory".into());
        }
        // Every entry's parent must be a directory listed before it, so that no path can go
        // through a symlink or outside the root, and no path may repeat.
        let mut dirs: super::layout::FastSet<&[u8]> = Default::default();
        let mut seen: super::layout::FastSet<&[u8]> = Default::default();
        for (i, e) in self.entries.iter().enumerate() {
            let p = e.path.0.as_slice();
            if !seen.insert(p) {
                return Err(format!("entry {:?} appears twice", e.path));
            }
            if p == INDEX_DIR.as_bytes() {
                return Err(format!(
                    "entry {:?} is reserved for Hearth's local index and never part of a snapshot",
                    e.path
                ));
            }
            if i > 0 {
                let bad_part = p
                    .split(|b| *b == b'/')
                    .any(|c| c.is_empty() || c == b".." || c == b".");
                let parent = p
                    .iter()
                    .rposition(|b| *b == b'/')
                    .map(|n| &p[..n])
                    .unwrap_or(b"");
                if bad_part || !dirs.contains(parent) {
                    return Err(format!(
                        "entry {:?} is not under a directory of the snapshot",
                        e.path
                    ));
                }
            }
            if e.kind == Kind::Dir {
                dirs.insert(p);
            }
            check_device(&e.kind).map_err(|what| format!("entry {:?} {what}", e.path))?;
            match &e.kind {
                Kind::File { extents, .. }
                    if extents
                        .iter()
                        .flat_map(|x| &x.chunks)
                        .any(|c| *c as usize >= self.chunks.len()) =>
                {
                    return Err(format!("entry {:?} refers to an unknown chunk", e.path));
                }
                Kind::File { size, extents } => {
                    for x in extents {
                        let len = x.chunks.iter().fold(0u64, |n, c| {
                            n.saturating_add(self.chunks[*c as usize].loc.raw.into())
                        });
                        if x.offset.checked_add(len).is_none_or(|end| end > *size) {
                            return Err(format!(
                                "entry {:?} has {len} bytes of data at offset {}, past the file's declared size of {size} bytes",
                                e.path, x.offset
                            ));
                        }
                    }
                }
                Kind::HardLink { entry } => {
                    let ok = (*entry as usize) < i
                        && matches!(self.entries[*entry as usize].kind, Kind::File { .. });
                    if !ok {
                        return Err(format!("hard link {:?} to a bad entry", e.path));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Entry indexes of the subtree at `path` (the entry and its descendants): a contiguous
    /// range, found without looking at the rest of the tree's data.
    pub fn subtree(&self, path: &[u8]) -> Option<std::ops::Range<usize>> {
        let start = self.entries.iter().position(|e| e.path.0 == path)?;
        let end = self.entries[start + 1..]
            .iter()
            .position(|e| {
                !(path.is_empty()
                    || (e.path.0.starts_with(path) && e.path.0.get(path.len()) == Some(&b'/')))
            })
            .map(|n| start + 1 + n)
            .unwrap_or(self.entries.len());
        Some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: ByteBuf(path.as_bytes().to_vec()),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            xattrs: vec![],
        }
    }

    fn sample() -> Manifest {
        Manifest {
            namespace: "ns".into(),
            cache: "c".into(),
            id: "20260101T000000.000Z-00000001".into(),
            parent: None,
            created_ms: 0,
            stats: Stats::default(),
            packs: vec![PackRef {
                id: "ab".into(),
                size: 10,
            }],
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"x"),
                loc: ChunkLoc {
                    pack: 0,
                    offset: 0,
                    stored: 1,
                    raw: 1,
                    codec: Codec::Raw,
                },
            }],
            entries: vec![
                entry("", Kind::Dir),
                entry("a", Kind::Dir),
                entry(
                    "a/f",
                    Kind::File {
                        size: 1,
                        extents: vec![Extent {
                            offset: 0,
                            chunks: vec![0],
                        }],
                    },
                ),
                entry("a/g", Kind::HardLink { entry: 2 }),
                entry("a.b", Kind::Fifo),
            ],
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(Manifest::decode(&bytes, "k", "ns", "c", &m.id).unwrap(), m);
        assert!(matches!(
            Manifest::decode(&bytes, "k", "other", "c", &m.id),
            Err(ManifestError::Foreign { .. })
        ));
        assert!(matches!(
            Manifest::decode(&bytes, "k", "ns", "d", &m.id),
            Err(ManifestError::Foreign { .. })
        ));
        let truncated = &bytes[..bytes.len() / 2];
        assert!(matches!(
            Manifest::decode(truncated, "k", "ns", "c", &m.id),
            Err(ManifestError::Damaged { .. })
        ));
    }

    #[test]
    fn inconsistent_references_are_refused() {
        let mut m = sample();
        m.entries.push(entry("z", Kind::HardLink { entry: 4 }));
        let bytes = m.encode().unwrap();
        assert!(matches!(
            Manifest::decode(&bytes, "k", "ns", "c", &m.id),
            Err(ManifestError::Inconsistent { .. })
        ));
        for bad in ["../x", "a/f/x", "a//x", "/abs", "a"] {
            let mut m = sample();
            m.entries.push(entry(bad, Kind::Fifo));
            let bytes = m.encode().unwrap();
            let r = Manifest::decode(&bytes, "k", "ns", "c", &m.id);
            assert!(
                matches!(r, Err(ManifestError::Inconsistent { .. })),
                "{bad}: {r:?}"
            );
        }
    }

    #[test]
    fn subtrees_are_contiguous() {
        let m = sample();
        assert_eq!(m.subtree(b"a"), Some(1..4));
        assert_eq!(m.subtree(b""), Some(0..5));
        assert_eq!(m.subtree(b"a.b"), Some(4..5));
        assert_eq!(m.subtree(b"nope"), None);
    }
}
