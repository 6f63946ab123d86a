//! Making filesystem objects from manifest entries on restore: directories, sized (sparse)
//! files, symlinks, devices and FIFOs, then their metadata in the order the kernel needs:
//! owner first (it clears setuid bits and capabilities), then mode, then extended attributes
//! (`security.capability` survives only if set after the owner), then times. Setuid and
//! setgid bits and file capabilities are privileges: they are restored only from a manifest
//! pinned by its digest ([`Privileges::Keep`]), stripped otherwise.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FallocateFlags, FileType, Gid, Mode, Uid, CWD};
use rustix::io::Errno;

use super::codec::ByteBuf;
use super::manifest::{Entry, Kind};

/// Errors creating the restored tree.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A filesystem call failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ApplyError + 'a {
    move |source| ApplyError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The path of an entry under `root`.
pub fn entry_path(root: &Path, e: &Entry) -> PathBuf {
    if e.path.0.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(&e.path.0))
    }
}

/// Files at least this large get their data runs allocated when they are created, before
/// any data arrives: their chunks come from several packs at once and are written in
/// parallel, in any order, so the filesystem can lay each file out in a few extents, and a
/// volume too small fails at once rather than after most of the download.
pub const PREALLOCATE_MIN: u64 = 1 << 20;

/// Creates the object of `e` (not its metadata). The root directory must already exist;
/// hard links are made by [`link`] once their target is written.
pub fn create(root: &Path, e: &Entry) -> Result<(), ApplyError> {
    create_with_data(root, e, &[])
}

/// [`create`], allocating the data runs `data` ((offset, length) pairs inside the file) of a
/// file of at least [`PREALLOCATE_MIN`] bytes. Holes stay holes.
pub fn create_with_data(root: &Path, e: &Entry, data: &[(u64, u64)]) -> Result<(), ApplyError> {
    let path = entry_path(root, e);
    match &e.kind {
        Kind::Dir if e.path.0.is_empty() => Ok(()),
        Kind::Dir => std::fs::create_dir(&path).map_err(io("create dir", &path)),
        Kind::File { size, .. } => {
            let f = std::fs::File::create_new(&path).map_err(io("create", &path))?;
            // Extending the length leaves everything not written later as a hole.
            f.set_len(*size).map_err(io("size", &path))?;
            if *size >= PREALLOCATE_MIN {
                preallocate(&f, data).map_err(io("allocate space for", &path))?;
            }
            Ok(())
        }
        Kind::Symlink { target } => std::os::unix::fs::symlink(OsStr::from_bytes(&target.0), &path)
            .map_err(io("create symlink", &path)),
        Kind::HardLink { .. } => Ok(()),
        Kind::CharDev { rdev } => mknod(&path, FileType::CharacterDevice, *rdev),
        Kind::BlockDev { rdev } => mknod(&path, FileType::BlockDevice, *rdev),
        Kind::Fifo => mknod(&path, FileType::Fifo, 0),
    }
}

/// Allocates the runs `data` of `f` without changing its size; a filesystem that cannot
/// (`EOPNOTSUPP`) allocates as the writes come instead.
fn preallocate(f: &std::fs::File, data: &[(u64, u64)]) -> std::io::Result<()> {
    for &(offset, len) in data.iter().filter(|(_, len)| *len > 0) {
        match rustix::fs::fallocate(f, FallocateFlags::KEEP_SIZE, offset, len) {
            Ok(()) => {}
            Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn mknod(path: &Path, ft: FileType, rdev: u64) -> Result<(), ApplyError> {
    rustix::fs::mknodat(CWD, path, ft, Mode::from_raw_mode(0o600), rdev)
        .map_err(|e| io("mknod", path)(e.into()))
}

/// Makes the hard link `e` to the already restored `target` entry.
pub fn link(root: &Path, e: &Entry, target: &Entry) -> Result<(), ApplyError> {
    let path = entry_path(root, e);
    std::fs::hard_link(entry_path(root, target), &path).map_err(io("hard link", &path))
}

/// The extended attribute holding a file's capabilities.
pub const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Mode bits that raise the privileges of whoever runs a file.
const SET_ID_BITS: u32 = 0o6000;

/// Whether a restore recreates setuid/setgid bits and file capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privileges {
    /// Restore them: the manifest is authenticated (pinned by its digest).
    Keep,
    /// Leave them out: nothing vouches for the manifest, and a planted one must not give a
    /// build a setuid-root or capability-carrying binary.
    Strip,
}

/// Whether `e` carries a privilege [`Privileges::Strip`] leaves out: setuid or setgid on
/// anything but a directory (on a directory, setgid only passes its group on), or file
/// capabilities. A hard link has its target's (whose entry counts).
pub fn carries_privileges(e: &Entry) -> bool {
    if matches!(e.kind, Kind::HardLink { .. }) {
        return false;
    }
    let dir = matches!(e.kind, Kind::Dir);
    (!dir && e.mode & SET_ID_BITS != 0) || e.xattrs.iter().any(is_capability)
}

/// Sets owner (when `owner` is true), mode, extended attributes and mtime of `e` at `path`,
/// leaving out setuid/setgid bits and file capabilities under [`Privileges::Strip`].
pub fn set_metadata(
    path: &Path,
    e: &Entry,
    owner: bool,
    privileges: Privileges,
) -> Result<(), ApplyError> {
    let strip = privileges == Privileges::Strip;
    let symlink = matches!(e.kind, Kind::Symlink { .. });
    if owner && e.uid != u32::MAX && e.gid != u32::MAX {
        rustix::fs::chownat(
            CWD,
            path,
            Some(Uid::from_raw(e.uid)),
            Some(Gid::from_raw(e.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| io("chown", path)(err.into()))?;
    }
    if !symlink {
        let mode = if strip && !matches!(e.kind, Kind::Dir) {
            e.mode & !SET_ID_BITS
        } else {
            e.mode
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod", path))?;
    }
    for (name, value) in e.xattrs.iter().filter(|x| !(strip && is_capability(x))) {
        xattr::set(path, OsStr::from_bytes(&name.0), &value.0).map_err(io("set xattr on", path))?;
    }
    let t = filetime::FileTime::from_unix_time(
        e.mtime_ns.div_euclid(1_000_000_000),
        e.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t).map_err(io("set times of", path))
}

fn is_capability((name, _): &(ByteBuf, ByteBuf)) -> bool {
    name.0 == CAPABILITY_XATTR
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn large_files_get_their_data_runs_allocated_and_holes_stay_holes() {
        let root = tempfile::tempdir().unwrap();
        let file = |name: &str, size: u64| Entry {
            path: ByteBuf(name.as_bytes().to_vec()),
            kind: Kind::File {
                size,
                extents: vec![],
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            xattrs: vec![],
        };
        const MIB: u64 = 1 << 20;
        // 8 MiB with data at [0, 2 MiB) and [6 MiB, 7 MiB): 3 MiB allocated, nothing written.
        create_with_data(
            root.path(),
            &file("big", 8 * MIB),
            &[(0, 2 * MIB), (6 * MIB, MIB)],
        )
        .unwrap();
        let meta = std::fs::metadata(root.path().join("big")).unwrap();
        assert_eq!(
            meta.len(),
            8 * MIB,
            "the size is the entry's, not the runs'"
        );
        let allocated = meta.blocks() * 512;
        assert!(
            (3 * MIB..4 * MIB).contains(&allocated),
            "{allocated} bytes allocated for 3 MiB of data runs"
        );
        // Below the threshold nothing is allocated ahead of the writes.
        create_with_data(root.path(), &file("small", MIB - 1), &[(0, MIB - 1)]).unwrap();
        let meta = std::fs::metadata(root.path().join("small")).unwrap();
        assert_eq!((meta.len(), meta.blocks()), (MIB - 1, 0));
    }
}
