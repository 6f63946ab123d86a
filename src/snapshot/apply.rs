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

use rustix::fs::{AtFlags, FileType, Gid, Mode, Uid, CWD};

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

/// Creates the object of `e` (not its metadata). The root directory must already exist;
/// hard links are made by [`link`] once their target is written.
pub fn create(root: &Path, e: &Entry) -> Result<(), ApplyError> {
    let path = entry_path(root, e);
    match &e.kind {
        Kind::Dir if e.path.0.is_empty() => Ok(()),
        Kind::Dir => std::fs::create_dir(&path).map_err(io("create dir", &path)),
        Kind::File { size, .. } => {
            let f = std::fs::File::create_new(&path).map_err(io("create", &path))?;
            // Extending the length leaves everything not written later as a hole.
            f.set_len(*size).map_err(io("size", &path))
        }
        Kind::Symlink { target } => std::os::unix::fs::symlink(OsStr::from_bytes(&target.0), &path)
            .map_err(io("create symlink", &path)),
        Kind::HardLink { .. } => Ok(()),
        Kind::CharDev { rdev } => mknod(&path, FileType::CharacterDevice, *rdev),
        Kind::BlockDev { rdev } => mknod(&path, FileType::BlockDevice, *rdev),
        Kind::Fifo => mknod(&path, FileType::Fifo, 0),
    }
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
