//! Reading a directory tree into manifest entries: one `lstat` and the extended attributes
//! per entry, directories read in parallel and the entries put back depth first with
//! children sorted by name bytes, hard links resolved in that order, data
//! extents of sparse files found with `SEEK_DATA`/`SEEK_HOLE`. Nothing that exists is skipped
//! except sockets (which cannot be restored), and each of those is reported.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::iter::{IntoParallelIterator, ParallelIterator};

use super::codec::ByteBuf;
use super::manifest::{check_device, Entry, Kind, Stats};

pub use super::manifest::INDEX_DIR;

/// The lock file buildkitd holds (an exclusive `flock`) in its state dir while it runs.
pub const BUILDKITD_LOCK: &str = "buildkitd.lock";

/// Errors reading the tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A filesystem call failed on `path`.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// buildkitd (or another save) holds the state dir's lock.
    #[error("{0} is locked by another process: buildkitd is still running on this state dir (or another save is); stop it, then save")]
    Live(PathBuf),
    /// A device node BuildKit state never holds (see [`check_device`]).
    #[error("{path} {what}")]
    Device { path: PathBuf, what: String },
    /// A file changed between the scan and the end of its reading.
    #[error("{path} changed during the save ({what}): the snapshot would hold a version that never existed, so none was written; is buildkitd still running on this state dir? Stop it, then save again")]
    Changed { path: PathBuf, what: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TreeError + 'a {
    move |source| TreeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A regular file found by the scan, with what the save needs to read it.
#[derive(Clone, Debug)]
pub struct FileInfo {
    /// Index of its entry.
    pub entry: usize,
    /// Absolute path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Data runs (offset, length); a file without holes has one run covering it.
    pub extents: Vec<(u64, u64)>,
    /// Identity and change time, for the local index.
    pub ino: u64,
    /// Modification time in nanoseconds.
    pub mtime_ns: i64,
    /// Change time in nanoseconds.
    pub ctime_ns: i64,
}

impl FileInfo {
    /// Fails if `meta` (an `fstat` of the open file, taken after a segment of it was read)
    /// is no longer what the scan saw: size, mtime, ctime or inode. Each segment is checked
    /// once read, so a file rewritten, appended to or replaced between the scan and any of
    /// its reads is never stored torn; a file that passes every check held, at the scan, the
    /// bytes that were read, so the snapshot is the tree as the scan saw it. (A rewrite of
    /// the same size within one timestamp tick of the scan would go unseen;
    /// [`lock_state_dir`] keeps buildkitd from running meanwhile.)
    pub fn check_unchanged(&self, meta: &std::fs::Metadata) -> Result<(), TreeError> {
        let mut what = Vec::new();
        let mut compare = |field: &str, was: i128, now: i128| {
            if was != now {
                what.push(format!("{field} was {was}, now {now}"));
            }
        };
        compare("size", self.size.into(), meta.len().into());
        let mtime = time_ns(meta.mtime(), meta.mtime_nsec());
        compare("mtime (ns)", self.mtime_ns.into(), mtime.into());
        let ctime = time_ns(meta.ctime(), meta.ctime_nsec());
        compare("ctime (ns)", self.ctime_ns.into(), ctime.into());
        compare("inode", self.ino.into(), meta.ino().into());
        if what.is_empty() && meta.is_file() {
            return Ok(());
        }
        if !meta.is_file() {
            what.push("no longer a regular file".into());
        }
        Err(TreeError::Changed {
            path: self.path.clone(),
            what: what.join(", "),
        })
    }
}

/// Takes buildkitd's lock on the state dir at `root` (non-blocking, exclusive), or fails with
/// [`TreeError::Live`] when another process holds it: a running buildkitd rewrites its
/// databases and blobs, and a save then would store torn files. Holding the returned file
/// keeps buildkitd from starting until the save ends. `None` when there is no lock file (or
/// it is not a regular file, which buildkitd never makes).
pub fn lock_state_dir(root: &Path) -> Result<Option<std::fs::File>, TreeError> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let path = root.join(BUILDKITD_LOCK);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match rustix::fs::open(&path, flags, Mode::empty()) {
        Ok(fd) => std::fs::File::from(fd),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Ok(None),
        Err(e) => return Err(io("open", &path)(e.into())),
    };
    if !file.metadata().map_err(io("stat", &path))?.is_file() {
        return Ok(None);
    }
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(TreeError::Live(path)),
        Err(e) => Err(io("lock", &path)(e.into())),
    }
}

/// The result of a scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Entries, depth first; file entries have no extents yet.
    pub entries: Vec<Entry>,
    /// Regular files (not their extra hard links), in entry order.
    pub files: Vec<FileInfo>,
    /// Counts and skipped entries.
    pub stats: Stats,
}

/// Scans the tree at `root`. Directories are read in parallel (a work-stealing pool of one
/// thread per available core; the scan is mostly `fstatat` and `llistxattr` calls, so on a
/// tree of many small files it was the longest part of an incremental save), and the result
/// is put back in depth-first order, with hard links resolved in that order.
pub fn scan(root: &Path) -> Result<Scan, TreeError> {
    let meta = std::fs::symlink_metadata(root).map_err(io("stat", root))?;
    if !meta.is_dir() {
        return Err(TreeError::Io {
            op: "scan",
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // A large stack: a thread waiting on a subdirectory runs other directories' work on top
    // of its own frames, so deep trees need more than the default.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(SCAN_STACK)
        .thread_name(|i| format!("hearth-scan-{i}"))
        .build()
        .map_err(|e| TreeError::Io {
            op: "start the scan threads for",
            path: root.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    let node = pool.install(|| visit(root, Vec::new(), &meta))?;
    let mut scan = Scan::default();
    flatten(node, &mut scan, &mut HashMap::new());
    Ok(scan)
}

/// Stack of each scan thread (virtual: only the pages touched are used).
const SCAN_STACK: usize = 32 << 20;

fn time_ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Reads the extended attributes of `path` (not following symlinks), sorted by name.
pub fn read_xattrs(path: &Path) -> Result<Vec<(ByteBuf, ByteBuf)>, TreeError> {
    let mut out = Vec::new();
    for name in xattr::list(path).map_err(io("list xattrs of", path))? {
        if let Some(value) = xattr::get(path, &name).map_err(io("read xattr of", path))? {
            out.push((ByteBuf(name.into_vec()), ByteBuf(value)));
        }
    }
    out.sort();
    Ok(out)
}

/// A scanned subtree, before it is put in order into a [`Scan`].
enum Node {
    /// A directory's entry, then its children's subtrees in name order.
    Dir(Entry, Vec<Node>),
    /// A regular file, with its identity when it has other hard links.
    File(Entry, FileInfo, Option<(u64, u64)>),
    /// A link, device or FIFO.
    Other(Entry),
    /// A socket, which cannot be saved.
    Skipped(Vec<u8>),
}

fn visit(path: &Path, rel: Vec<u8>, meta: &std::fs::Metadata) -> Result<Node, TreeError> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        let info = FileInfo {
            entry: 0,
            path: path.to_path_buf(),
            size: meta.len(),
            extents: data_extents(path, meta)?,
            ino: meta.ino(),
            mtime_ns: time_ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: time_ns(meta.ctime(), meta.ctime_nsec()),
        };
        let link = (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
        let kind = Kind::File {
            size: meta.len(),
            extents: Vec::new(),
        };
        let xattrs = read_xattrs(path)?;
        return Ok(Node::File(entry(rel, kind, meta, xattrs), info, link));
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(io("read link", path))?;
        Kind::Symlink {
            target: ByteBuf(target.into_os_string().into_vec()),
        }
    } else if ft.is_char_device() {
        Kind::CharDev { rdev: meta.rdev() }
    } else if ft.is_block_device() {
        Kind::BlockDev { rdev: meta.rdev() }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        tracing::warn!(path = %path.display(), "skipping a socket: sockets cannot be saved");
        return Ok(Node::Skipped(rel));
    };
    check_device(&kind).map_err(|what| TreeError::Device {
        path: path.to_path_buf(),
        what,
    })?;
    let xattrs = read_xattrs(path)?;
    if !ft.is_dir() {
        return Ok(Node::Other(entry(rel, kind, meta, xattrs)));
    }
    // Each child is stat'ed relative to the open directory (`DirEntry::metadata` is an
    // `fstatat` without following symlinks), not by walking its whole path again.
    let mut children: Vec<(OsString, std::fs::Metadata)> = Vec::new();
    for child in std::fs::read_dir(path).map_err(io("read dir", path))? {
        let child = child.map_err(io("read dir", path))?;
        let name = child.file_name();
        if rel.is_empty() && name == INDEX_DIR {
            continue;
        }
        let cmeta = child.metadata().map_err(io("stat", &child.path()))?;
        children.push((name, cmeta));
    }
    children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let nodes = children
        .into_par_iter()
        .map(|(name, cmeta)| {
            let mut crel = rel.clone();
            if !crel.is_empty() {
                crel.push(b'/');
            }
            crel.extend_from_slice(name.as_bytes());
            visit(&path.join(&name), crel, &cmeta)
        })
        .collect::<Result<Vec<Node>, TreeError>>()?;
    Ok(Node::Dir(entry(rel, kind, meta, xattrs), nodes))
}

/// Appends a subtree to the scan in depth-first order. The first path of a file with other
/// hard links (in that order) is the file; each later one becomes a link to it, without
/// extended attributes of its own (they are the inode's, restored with the file).
fn flatten(node: Node, scan: &mut Scan, links: &mut HashMap<(u64, u64), u32>) {
    let index = scan.entries.len() as u32;
    match node {
        Node::Dir(entry, children) => {
            scan.stats.dirs += 1;
            scan.entries.push(entry);
            for child in children {
                flatten(child, scan, links);
            }
        }
        Node::File(mut entry, mut info, link) => {
            if let Some(key) = link {
                if let Some(first) = links.get(&key) {
                    scan.stats.others += 1;
                    entry.kind = Kind::HardLink { entry: *first };
                    entry.xattrs = Vec::new();
                    scan.entries.push(entry);
                    return;
                }
                links.insert(key, index);
            }
            scan.stats.files += 1;
            scan.stats.bytes += info.size;
            info.entry = index as usize;
            scan.entries.push(entry);
            scan.files.push(info);
        }
        Node::Other(entry) => {
            scan.stats.others += 1;
            scan.entries.push(entry);
        }
        Node::Skipped(rel) => scan.stats.skipped.push(ByteBuf(rel)),
    }
}

fn entry(
    rel: Vec<u8>,
    kind: Kind,
    meta: &std::fs::Metadata,
    xattrs: Vec<(ByteBuf, ByteBuf)>,
) -> Entry {
    Entry {
        path: ByteBuf(rel),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: time_ns(meta.mtime(), meta.mtime_nsec()),
        xattrs,
    }
}

/// The data runs of a file: one run unless the file has fewer blocks than its size needs.
fn data_extents(path: &Path, meta: &std::fs::Metadata) -> Result<Vec<(u64, u64)>, TreeError> {
    let size = meta.len();
    if size == 0 {
        return Ok(Vec::new());
    }
    if meta.blocks().saturating_mul(512) >= size {
        return Ok(vec![(0, size)]);
    }
    use rustix::fs::SeekFrom;
    let file = std::fs::File::open(path).map_err(io("open", path))?;
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(&file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(io("seek data in", path)(e.into())),
        };
        let hole = rustix::fs::seek(&file, SeekFrom::Hole(data))
            .map_err(|e| io("seek hole in", path)(e.into()))?;
        let end = hole.min(size);
        if end > data {
            out.push((data, end - data));
        }
        pos = end.max(data + 1);
    }
    Ok(out)
}
