//! The sender's half: a directory packed into an uncompressed tar, honouring `.dockerignore`,
//! with its size and sha256 computed as it is written (they go into the ImageBuild and the
//! frame header before a byte is sent).
//!
//! What goes in: regular files, directories (empty ones too), symlinks as symlinks (never
//! followed), and hard links between packed files as hard links; modes and modification
//! times are kept, owners are not (the receiver runs unprivileged). Sockets, FIFOs and device
//! nodes are skipped and reported. Entries are sorted, so the same tree packs the same way.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};

use super::{hex_digest, UploadError};

/// The tar that was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// Bytes of tar written.
    pub size: u64,
    /// Hex sha256 of those bytes.
    pub sha256: String,
    /// Entries written (files, directories, links).
    pub entries: u64,
    /// Entries left out because they are not files, directories or symlinks.
    pub skipped: Vec<PathBuf>,
}

/// `.dockerignore` rules as a matcher over paths relative to the context root.
///
/// Docker anchors every pattern at the context root (`foo` excludes `/foo`, not `a/foo`;
/// `**/foo` excludes it at any depth), cleans `./`, a leading `/` and a trailing `/`, and lets
/// `!pattern` re-include. Each pattern is rewritten into an anchored gitignore line, which
/// then has the same meaning.
pub struct DockerIgnore {
    matcher: Gitignore,
    has_exceptions: bool,
}

impl DockerIgnore {
    /// Reads `<dir>/.dockerignore` (no file: nothing is ignored).
    pub fn load(dir: &Path) -> Result<DockerIgnore, UploadError> {
        let path = dir.join(".dockerignore");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(UploadError::io(&path, e)),
        };
        Self::parse(dir, &text)
    }

    /// Parses `.dockerignore` text for the context `dir`.
    pub fn parse(dir: &Path, text: &str) -> Result<DockerIgnore, UploadError> {
        let mut builder = GitignoreBuilder::new(dir);
        let mut has_exceptions = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (neg, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let mut pattern = pattern.trim_start_matches('/');
            while let Some(rest) = pattern.strip_prefix("./") {
                pattern = rest.trim_start_matches('/');
            }
            let pattern = pattern.trim_end_matches('/');
            if pattern.is_empty() || pattern == "." {
                continue;
            }
            has_exceptions |= neg;
            let rule = format!("{}/{pattern}", if neg { "!" } else { "" });
            builder
                .add_line(None, &rule)
                .map_err(|e| UploadError::BadFrame(format!(".dockerignore: {line:?}: {e}")))?;
        }
        let matcher = builder
            .build()
            .map_err(|e| UploadError::BadFrame(format!(".dockerignore: {e}")))?;
        Ok(DockerIgnore {
            matcher,
            has_exceptions,
        })
    }

    /// Whether `rel` (relative to the context root) is excluded.
    pub fn is_ignored(&self, rel: &Path, is_dir: bool) -> bool {
        self.matcher
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Packs `dir` into `out`. Paths in `always` (relative, for example the Dockerfile) are sent
/// even when `.dockerignore` excludes them, as Docker does.
pub fn pack(dir: &Path, always: &[PathBuf], out: impl Write) -> Result<Packed, UploadError> {
    pack_into(dir, always, None, out)
}

/// Packs `dir` under `context/` and, apart from it, the file `dockerfile` (a Dockerfile
/// outside `dir`) as `dockerfile/<its name>` (the names of [`crate::contract`]).
pub fn pack_apart(dir: &Path, dockerfile: &Path, out: impl Write) -> Result<Packed, UploadError> {
    pack_into(dir, &[], Some(dockerfile), out)
}

fn pack_into(
    dir: &Path,
    always: &[PathBuf],
    apart: Option<&Path>,
    out: impl Write,
) -> Result<Packed, UploadError> {
    let ignore = DockerIgnore::load(dir)?;
    let mut packer = Packer {
        root: dir,
        prefix: match apart {
            Some(_) => PathBuf::from(crate::contract::UPLOAD_APART_CONTEXT),
            None => PathBuf::new(),
        },
        ignore: &ignore,
        always,
        builder: tar::Builder::new(HashingWriter {
            inner: out,
            hasher: Sha256::new(),
            written: 0,
        }),
        links: HashMap::new(),
        entries: 0,
        skipped: Vec::new(),
    };
    // Apart, each of the two directories is an entry of its own, with DIR's mode.
    let dir_meta = fs::metadata(dir).map_err(|e| UploadError::io(dir, e))?;
    let top = Path::new("");
    if apart.is_some() {
        packer.append(top, &dir_meta, tar::EntryType::Directory, None, None)?;
    }
    packer.walk(top)?;
    if let Some(file) = apart {
        let name = file.file_name().ok_or_else(|| {
            UploadError::io(
                file,
                io::Error::other("the Dockerfile's path has no file name"),
            )
        })?;
        let meta = fs::metadata(file).map_err(|e| UploadError::io(file, e))?;
        let opened = fs::File::open(file).map_err(|e| UploadError::io(file, e))?;
        packer.prefix = PathBuf::from(crate::contract::UPLOAD_APART_DOCKERFILE);
        packer.append(top, &dir_meta, tar::EntryType::Directory, None, None)?;
        packer.append(
            Path::new(name),
            &meta,
            tar::EntryType::Regular,
            None,
            Some(opened),
        )?;
    }
    let Packer {
        builder,
        entries,
        skipped,
        ..
    } = packer;
    let mut writer = builder.into_inner()?;
    writer.flush()?;
    Ok(Packed {
        size: writer.written,
        sha256: hex_digest(writer.hasher),
        entries,
        skipped,
    })
}

struct Packer<'a, W: Write> {
    root: &'a Path,
    /// Directory of the tar the entries go under (empty: its root).
    prefix: PathBuf,
    ignore: &'a DockerIgnore,
    always: &'a [PathBuf],
    builder: tar::Builder<HashingWriter<W>>,
    /// (device, inode) of packed files with more than one link, to their first path.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
    skipped: Vec<PathBuf>,
}

impl<W: Write> Packer<'_, W> {
    fn walk(&mut self, rel_dir: &Path) -> Result<(), UploadError> {
        let abs = self.root.join(rel_dir);
        let mut children: Vec<_> = fs::read_dir(&abs)
            .map_err(|e| UploadError::io(&abs, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| UploadError::io(&abs, e))?;
        children.sort();
        for name in children {
            let rel = rel_dir.join(&name);
            let path = self.root.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(|e| UploadError::io(&path, e))?;
            let ft = meta.file_type();
            let ignored =
                self.ignore.is_ignored(&rel, ft.is_dir()) && !self.always.iter().any(|a| a == &rel);
            if ft.is_dir() {
                if !ignored {
                    self.append(&rel, &meta, tar::EntryType::Directory, None, None)?;
                    self.walk(&rel)?;
                } else if self.ignore.has_exceptions {
                    // A `!pattern` may re-include something below an excluded directory.
                    self.walk(&rel)?;
                }
                continue;
            }
            if ignored {
                continue;
            }
            if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| UploadError::io(&path, e))?;
                self.append(&rel, &meta, tar::EntryType::Symlink, Some(&target), None)?;
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key).cloned() {
                        self.append(&rel, &meta, tar::EntryType::Link, Some(&first), None)?;
                        continue;
                    }
                    self.links.insert(key, rel.clone());
                }
                let file = fs::File::open(&path).map_err(|e| UploadError::io(&path, e))?;
                self.append(&rel, &meta, tar::EntryType::Regular, None, Some(file))?;
            } else {
                self.skipped.push(rel);
            }
        }
        Ok(())
    }

    fn append(
        &mut self,
        rel: &Path,
        meta: &fs::Metadata,
        kind: tar::EntryType,
        link: Option<&Path>,
        data: Option<fs::File>,
    ) -> Result<(), UploadError> {
        let rel = &self.prefix.join(rel);
        let prefixed = link.map(|target| match kind {
            // A hard link names another entry of the tar; a symlink's target is its own.
            tar::EntryType::Link => self.prefix.join(target),
            _ => target.to_path_buf(),
        });
        let link = prefixed.as_deref();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_uid(0);
        header.set_gid(0);
        self.entries += 1;
        match (link, data) {
            (Some(target), _) => {
                header.set_size(0);
                self.builder.append_link(&mut header, rel, target)?;
            }
            (None, Some(file)) => {
                header.set_size(meta.len());
                // A file that changes size while being read makes the tar invalid: refuse it.
                let mut limited = io::Read::take(file, meta.len());
                self.builder.append_data(&mut header, rel, &mut limited)?;
            }
            (None, None) => {
                header.set_size(0);
                self.builder.append_data(&mut header, rel, io::empty())?;
            }
        }
        Ok(())
    }
}
