//! A reproducible tree shaped like a BuildKit state dir, for the benchmark: bbolt-like
//! databases of 1-64 MiB, compressed layer blobs of 10-60 MiB (like the gzip blobs in
//! `content/`, 17% of the bytes), unpacked layer files of 10-400 MiB, ~20,000 small files in
//! nested unpacked layer trees, overlay `work/` dirs with 0/0 whiteout devices, symlinks and
//! hard links; and the ~3% change the incremental save measures. Same seed and size, same
//! bytes.

use std::io::Write;
use std::path::Path;

/// A small, fast, seeded generator (SplitMix64); reproducibility matters, not quality.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const CORPUS: usize = 8 << 20;
const REGION: usize = 32 << 10;

/// Content generator: text-like and binary-like data that compresses about 3x with zstd
/// (level 1 about 10-15% less, as on real binaries and sources),
/// built from slices of a word corpus mixed with random bytes (fast to produce).
pub struct Content {
    corpus: Vec<u8>,
}

impl Content {
    /// A corpus from `seed`.
    pub fn new(seed: u64) -> Content {
        let mut rng = Rng::new(seed ^ 0xc0ffee);
        let words: Vec<String> = (0..50_000)
            .map(|_| {
                let len = rng.range(2, 12) as usize;
                (0..len)
                    .map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char)
                    .collect()
            })
            .collect();
        let mut corpus = Vec::with_capacity(CORPUS);
        while corpus.len() < CORPUS {
            corpus.extend_from_slice(words[rng.range(0, words.len() as u64) as usize].as_bytes());
            corpus.push(if rng.next_u64().is_multiple_of(8) {
                b'\n'
            } else {
                b' '
            });
        }
        Content { corpus }
    }

    /// Writes `len` bytes of compressible data to `out`.
    pub fn compressible(&self, rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
        // Each call draws from its own region of the corpus, as files of one package share a
        // vocabulary; redundancy is mostly local, as in real binaries and sources.
        let base = rng.range(0, (CORPUS - REGION) as u64) as usize;
        let end = out.len() + len;
        while out.len() < end {
            let n = (rng.range(64, 2048) as usize).min(end - out.len());
            if rng.next_u64() % 10 < 3 {
                let start = out.len();
                out.resize(start + n, 0);
                rng.fill(&mut out[start..]);
            } else {
                let at = base + rng.range(0, (REGION - n) as u64) as usize;
                out.extend_from_slice(&self.corpus[at..at + n]);
            }
        }
        out.truncate(end);
    }

    /// Writes `len` incompressible bytes (a gzip-looking blob) to `out`.
    pub fn compressed(&self, rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + len, 0);
        rng.fill(&mut out[start..]);
        if len >= 3 {
            out[start..start + 3].copy_from_slice(&[0x1f, 0x8b, 8]);
        }
    }
}

const MIB: u64 = 1 << 20;

/// An entry that already exists is the one an earlier run made.
fn exists(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        Ok(())
    } else {
        Err(e)
    }
}

/// An entry to remove that is not there is already as wanted.
fn missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(path)?.write_all(data)
}

fn zstd3_len(data: &[u8]) -> u64 {
    zstd::bulk::compress(data, 3)
        .map(|c| c.len() as u64)
        .unwrap_or(data.len() as u64)
}

/// Writes a large file in 8 MiB pieces (bounded memory); returns its zstd -3 size when
/// `measure` (else 0).
fn write_big(
    path: &Path,
    len: u64,
    rng: &mut Rng,
    content: &Content,
    compressed: bool,
    measure: bool,
) -> std::io::Result<u64> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = len;
    let mut buf = Vec::with_capacity(8 * MIB as usize);
    let mut packed = 0;
    while left > 0 {
        let n = left.min(8 * MIB) as usize;
        buf.clear();
        if compressed {
            content.compressed(rng, n, &mut buf);
        } else {
            content.compressible(rng, n, &mut buf);
        }
        f.write_all(&buf)?;
        if measure {
            packed += zstd3_len(&buf);
        }
        left -= n as u64;
    }
    f.flush()?;
    Ok(packed)
}

/// Generates the tree of about `size` bytes under `root`. Over a tree an earlier run left,
/// every file is rewritten in place (same inode) and what [`change`] added is removed,
/// Hearth's local index too, so that a new run frees almost no inodes: see
/// `bench::wait_for_freed_inodes`.
pub fn generate(root: &Path, size: u64, seed: u64) -> std::io::Result<()> {
    std::fs::remove_dir_all(root.join(super::manifest::INDEX_DIR)).or_else(missing)?;
    let content = Content::new(seed);
    let mut rng = Rng::new(seed);
    let worker = root.join("runc-overlayfs");
    // Databases: 5 files of 1-64 MiB, about 6% of the tree.
    let db_total = (size * 6 / 100).max(5 * MIB);
    let dbs = [
        "cache.db",
        "history.db",
        "runc-overlayfs/metadata_v2.db",
        "runc-overlayfs/containerdmeta.db",
        "runc-overlayfs/snapshots/metadata.db",
    ];
    for (i, name) in dbs.iter().enumerate() {
        let len = (db_total / 5).clamp(MIB, 64 * MIB) / 4096 * 4096 + if i == 0 { 4096 } else { 0 };
        write_big(&root.join(name), len, &mut rng, &content, false, false)?;
    }
    // Small files: ~20,000 in nested unpacked layer trees (scaled down below 1 GiB).
    let small_count = (20_000 * size / (1 << 30)).clamp(500, 20_000);
    let mut small_bytes = 0u64;
    let mut buf = Vec::new();
    for i in 0..small_count {
        let layer = i % 12;
        let dir = worker.join(format!(
            "snapshots/snapshots/{layer}/fs/usr/lib/python3/site-packages/pkg{}/sub{}",
            (i / 12) % 150,
            i % 7
        ));
        let len = (1u64 << rng.range(7, 16)) + rng.range(0, 1024);
        buf.clear();
        content.compressible(&mut rng, len as usize, &mut buf);
        write_file(&dir.join(format!("mod{i}.py")), &buf)?;
        small_bytes += len;
    }
    for layer in 0..12 {
        let base = worker.join(format!("snapshots/snapshots/{layer}"));
        std::fs::create_dir_all(base.join("work/work"))?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            base.join("fs/usr/lib/whiteout"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .or_else(|e| {
            if e == rustix::io::Errno::PERM || e == rustix::io::Errno::EXIST {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        std::os::unix::fs::symlink("python3", base.join("fs/usr/lib/python")).or_else(exists)?;
        std::fs::hard_link(
            base.join("fs/usr/lib/python3/site-packages/pkg0/sub0")
                .join(format!("mod{layer}.py")),
            base.join("fs/usr/lib/hardlink.py"),
        )
        .or_else(|e| missing(e).or_else(exists))?;
    }
    std::fs::create_dir_all(worker.join("cachemounts"))?;
    std::fs::create_dir_all(worker.join("executor"))?;
    // Compressed layer blobs in `content/` (about 17% of the tree, 10-60 MiB each), then
    // unpacked layer files of 10-400 MiB fill the rest.
    let mut left = size.saturating_sub(db_total + small_bytes);
    let mut blobs = left.min(size * 17 / 100);
    left -= blobs;
    let mut n = 0;
    while blobs > MIB {
        let len = rng.range(10 * MIB, 60 * MIB).min(blobs);
        let path = worker.join(format!(
            "content/blobs/sha256/{:016x}{:016x}",
            rng.next_u64(),
            n
        ));
        write_big(&path, len, &mut rng, &content, true, false)?;
        blobs -= len;
        n += 1;
    }
    // The blobs an earlier run's change added.
    for i in 0..2 {
        let added = worker.join(format!("content/blobs/sha256/new{seed:x}{i}"));
        std::fs::remove_file(added).or_else(missing)?;
    }
    while left > MIB {
        let len = rng.range(10 * MIB, 400 * MIB).min(left);
        let path = worker.join(format!(
            "snapshots/snapshots/{}/fs/usr/lib/layer{n}.so",
            n % 12
        ));
        write_big(&path, len, &mut rng, &content, false, false)?;
        left -= len;
        n += 1;
    }
    Ok(())
}

/// What [`change`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Bytes written (new files, rewritten files, appended data).
    pub bytes: u64,
    /// Their size compressed with zstd -3.
    pub compressed_bytes: u64,
    /// Files written or removed.
    pub files: u64,
}

/// Applies the ~3% change (rewrite small files, append to a database, add two blobs, delete
/// one).
pub fn change(root: &Path, size: u64, seed: u64) -> std::io::Result<Change> {
    let content = Content::new(seed);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut ch = Change::default();
    let mut buf = Vec::new();
    // Rewrite 5% of the small files.
    let small_count = (20_000 * size / (1 << 30)).clamp(500, 20_000);
    for i in (0..small_count).step_by(20) {
        let layer = i % 12;
        let path = root.join(format!(
            "runc-overlayfs/snapshots/snapshots/{layer}/fs/usr/lib/python3/site-packages/pkg{}/sub{}/mod{i}.py",
            (i / 12) % 150,
            i % 7
        ));
        let len = (1u64 << rng.range(7, 16)) + rng.range(0, 1024);
        buf.clear();
        content.compressible(&mut rng, len as usize, &mut buf);
        write_file(&path, &buf)?;
        ch.files += 1;
        ch.bytes += len;
        ch.compressed_bytes += zstd3_len(&buf);
    }
    // Append 0.5% of the size to the first database.
    let append = (size / 200).max(MIB) as usize;
    buf.clear();
    content.compressible(&mut rng, append, &mut buf);
    let db = root.join("cache.db");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&db)?
        .write_all(&buf)?;
    ch.files += 1;
    ch.bytes += append as u64;
    ch.compressed_bytes += zstd3_len(&buf);
    // Two new blobs of 1% each (one compressed), and one blob deleted.
    for (i, compressed) in [(0, true), (1, false)] {
        let path = root.join(format!(
            "runc-overlayfs/content/blobs/sha256/new{seed:x}{i}"
        ));
        let len = (size / 100).max(MIB);
        ch.compressed_bytes += write_big(&path, len, &mut rng, &content, compressed, true)?;
        ch.files += 1;
        ch.bytes += len;
    }
    let blobs = root.join("runc-overlayfs/content/blobs/sha256");
    // The smallest old blob goes (sorted by size, then name, for reproducibility).
    let mut names: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&blobs)?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with("new"))
        .filter_map(|e| Some((e.metadata().ok()?.len(), e.path())))
        .collect();
    names.sort();
    if let Some((_, victim)) = names.first() {
        std::fs::remove_file(victim)?;
        ch.files += 1;
    }
    Ok(ch)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// Every path under `root` with its size and inode.
    fn listing(root: &Path) -> BTreeMap<std::path::PathBuf, (u64, u64)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    stack.push(e.path());
                }
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                out.insert(
                    rel,
                    (if meta.is_dir() { 0 } else { meta.len() }, meta.ino()),
                );
            }
        }
        out
    }

    /// A second run regenerates the changed tree in place: the same paths and sizes as a
    /// fresh tree, and every entry but the blob the change deleted (which may get its old
    /// inode number back) keeps its inode.
    #[test]
    fn a_changed_tree_is_regenerated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        let size = 24 << 20;
        super::generate(&root, size, 3).unwrap();
        let fresh = listing(&root);
        super::change(&root, size, 3).unwrap();
        std::fs::create_dir_all(root.join(".hearth")).unwrap();
        std::fs::write(root.join(".hearth/index"), b"stale").unwrap();
        assert_ne!(listing(&root).len(), fresh.len());
        super::generate(&root, size, 3).unwrap();
        let again = listing(&root);
        let sizes = |l: &BTreeMap<std::path::PathBuf, (u64, u64)>| {
            l.iter()
                .map(|(p, (len, _))| (p.clone(), *len))
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(&again), sizes(&fresh));
        let new_inodes = fresh.iter().filter(|(p, (_, ino))| again[*p].1 != *ino);
        assert!(
            new_inodes.count() <= 1,
            "only the deleted blob is made anew"
        );
    }
}
