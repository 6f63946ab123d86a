//! A restore's staging directory: its name, and the sweep of those a restore killed outright
//! (node lost, SIGKILL, OOM) left behind. One restore or save owns a state dir at a time, so
//! every staging name of that state dir is stale when either starts: the restore sweeps them
//! before it stages, and the save (the `hearth` step that follows a cold build on the same
//! replica, which runs no restore) sweeps them before it scans.

use std::path::{Path, PathBuf};

use super::apply::ApplyError;

/// What every staging name holds after its owner's prefix.
const MARK: &str = "hearth-restore-";

/// The directory that holds a staging directory beside `target` (its parent, or `.`).
pub fn parent(target: &Path) -> &Path {
    target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A staging directory beside `target` (same filesystem, renamed into place when whole).
pub fn beside(target: &Path, tag: &str) -> PathBuf {
    parent(target).join(format!("{}{tag}", beside_prefix(target)))
}

/// A staging directory inside `target` (when it is a mount point).
pub fn inside(target: &Path, tag: &str) -> PathBuf {
    target.join(format!(".{MARK}{tag}"))
}

fn beside_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    format!(".{name}.{MARK}")
}

/// Removes the staging directories of earlier restores into `target`: beside it, and inside it
/// when it is a directory. Another target's staging is left alone; a symlink under such a name
/// is removed, never followed.
pub fn sweep(target: &Path) -> Result<(), ApplyError> {
    sweep_dir(parent(target), &beside_prefix(target))?;
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => sweep_dir(target, &format!(".{MARK}")),
        _ => Ok(()),
    }
}

/// Removes the entries of `dir` whose names start with `prefix`; a missing `dir` has none.
fn sweep_dir(dir: &Path, prefix: &str) -> Result<(), ApplyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("read", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io("read", dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        // `file_type` does not follow symlinks: a link is removed as a file.
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed the staging directory of an earlier restore")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove a stale staging directory", &path, e)),
        }
    }
    Ok(())
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> ApplyError {
    ApplyError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
