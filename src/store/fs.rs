//! The filesystem store: one file per object under a root directory. Writes go to a
//! temporary file that is synced and then renamed (or hard-linked, for conditional writes)
//! into place, so a reader never sees a half-written object.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::object::{ObjectInfo, StoreError};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A store rooted at a local (or NFS) directory.
#[derive(Clone, Debug)]
pub struct FsStore {
    root: Arc<PathBuf>,
}

fn io_err<'a>(op: &'static str, key: &'a str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                key: key.to_string(),
            }
        } else {
            StoreError::Io {
                op,
                key: key.to_string(),
                source,
            }
        }
    }
}

impl FsStore {
    /// A store at `root`, created if missing.
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<FsStore> {
        std::fs::create_dir_all(root.as_ref())?;
        Ok(FsStore {
            root: Arc::new(root.as_ref().to_path_buf()),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key.is_empty()
            || key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(StoreError::Io {
                op: "check key",
                key: key.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid object key"),
            });
        }
        Ok(self.root.join(key))
    }

    pub(super) async fn put(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let key = key.to_string();
        blocking(move || {
            let dir = path.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir).map_err(io_err("create dir for", &key))?;
            let tmp = dir.join(format!(
                ".tmp-{}-{}-{}",
                std::process::id(),
                TMP_SEQ.fetch_add(1, Ordering::Relaxed),
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err("write", &key)(e));
            }
            let placed = if if_absent {
                std::fs::hard_link(&tmp, &path)
            } else {
                std::fs::rename(&tmp, &path)
            };
            if if_absent {
                let _ = std::fs::remove_file(&tmp);
            }
            match placed {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(StoreError::AlreadyExists { key })
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(io_err("place", &key)(e))
                }
                Ok(()) => Ok(()),
            }
        })
        .await
    }

    /// Reads an object (or `range` of it) into `buf`, emptied first; returns the buffer
    /// whatever happens.
    pub(super) async fn get_into(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        mut buf: Vec<u8>,
    ) -> (Vec<u8>, Result<(), StoreError>) {
        let path = match self.path(key) {
            Ok(p) => p,
            Err(e) => return (buf, Err(e)),
        };
        let key = key.to_string();
        let task = tokio::task::spawn_blocking(move || {
            buf.clear();
            let r = (|| {
                let mut f = std::fs::File::open(&path).map_err(io_err("open", &key))?;
                match range {
                    None => {
                        f.read_to_end(&mut buf).map_err(io_err("read", &key))?;
                    }
                    Some((start, len)) => {
                        buf.reserve(usize::try_from(len).unwrap_or(0));
                        f.seek(SeekFrom::Start(start))
                            .map_err(io_err("seek", &key))?;
                        f.take(len)
                            .read_to_end(&mut buf)
                            .map_err(io_err("read", &key))?;
                    }
                }
                Ok(())
            })();
            (buf, r)
        });
        match task.await {
            Ok(done) => done,
            Err(e) => (
                Vec::new(),
                Err(StoreError::Io {
                    op: "run",
                    key: String::new(),
                    source: std::io::Error::other(e.to_string()),
                }),
            ),
        }
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out: Vec<ObjectInfo> = walk(&root, &prefix)?
                .into_iter()
                .filter(|f| !f.unfinished)
                .map(|f| f.info)
                .collect();
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    /// Removes, under `prefix`, the temporary files of writes that never finished (their
    /// writer was killed between writing and renaming) last modified before `cutoff`. A write
    /// in progress keeps its file for seconds, so a cutoff of gc's grace period spares it.
    /// Returns how many files went and their bytes.
    pub(super) async fn sweep_unfinished(
        &self,
        prefix: &str,
        cutoff: std::time::SystemTime,
    ) -> Result<(u64, u64), StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut swept = (0, 0);
            for f in walk(&root, &prefix)? {
                if f.unfinished && f.info.modified < cutoff {
                    match std::fs::remove_file(&f.path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io_err("delete", &f.info.key)(e));
                        }
                        _ => {
                            swept.0 += 1;
                            swept.1 += f.info.size;
                        }
                    }
                }
            }
            Ok(swept)
        })
        .await
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let key = key.to_string();
        blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("delete", &key)(e)),
            _ => Ok(()),
        })
        .await
    }
}

/// A file found under a prefix: an object, or the temporary file of an unfinished write
/// (named `.tmp-*`, keyed by its name in its directory).
struct Found {
    info: ObjectInfo,
    path: PathBuf,
    unfinished: bool,
}

/// Every file whose key starts with `prefix`, from the deepest directory the prefix names.
fn walk(root: &Path, prefix: &str) -> Result<Vec<Found>, StoreError> {
    let dir_part = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mut out = Vec::new();
    let mut stack = vec![(root.join(dir_part), dir_part.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &rel)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &rel))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let unfinished = name.starts_with(".tmp-");
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = match entry.metadata() {
                // A temporary file renamed away while listing.
                Err(e) if unfinished && e.kind() == std::io::ErrorKind::NotFound => continue,
                m => m.map_err(io_err("stat", &key))?,
            };
            if meta.is_dir() {
                if !unfinished
                    && (key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")))
                {
                    stack.push((entry.path(), key));
                }
            } else if key.starts_with(prefix) {
                let modified = meta.modified().map_err(io_err("stat", &key))?;
                out.push(Found {
                    info: ObjectInfo {
                        key,
                        size: meta.len(),
                        modified,
                    },
                    path: entry.path(),
                    unfinished,
                });
            }
        }
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Io {
            op: "run",
            key: String::new(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}
