//! A small cache of files open for writing, for restore: a pack's chunks arrive mostly in file
//! order, so keeping the last few files open saves reopening a large file for each of its
//! chunks, while the descriptors held stay bounded whatever the number of files (a pod's soft
//! open-files limit is often 1,024; a BuildKit state dir holds tens of thousands of files).

use std::fs::File;
use std::path::Path;

/// Files open for writing, at most `capacity` of them; the least recently used is closed
/// first.
#[derive(Debug)]
pub struct OpenFiles {
    /// Open files by key, most recently used last.
    files: Vec<(u32, File)>,
    capacity: usize,
}

impl OpenFiles {
    /// An empty cache holding at most `capacity` files (at least one).
    pub fn new(capacity: usize) -> OpenFiles {
        let capacity = capacity.max(1);
        OpenFiles {
            files: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// The file `key` (at `path`, which must exist), opened for writing unless it is open
    /// already; closes the least recently used file when the cache is full.
    pub fn get(&mut self, key: u32, path: &Path) -> std::io::Result<&File> {
        match self.files.iter().position(|(k, _)| *k == key) {
            Some(i) => self.files[i..].rotate_left(1),
            None => {
                let f = std::fs::OpenOptions::new().write(true).open(path)?;
                if self.files.len() == self.capacity {
                    self.files.remove(0);
                }
                self.files.push((key, f));
            }
        }
        Ok(&self.files.last().expect("an open file").1)
    }

    /// Files open now.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holds_at_most_capacity_files_and_keeps_the_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..10)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, [0u8; 4]).unwrap();
                p
            })
            .collect();
        let mut open = OpenFiles::new(3);
        assert!(open.is_empty());
        for (i, p) in paths.iter().enumerate() {
            open.get(i as u32, p)
                .unwrap()
                .write_all_at(b"a", 0)
                .unwrap();
            assert!(open.len() <= 3);
        }
        assert_eq!(open.len(), 3);
        // 9 is the most recent: using 7 again must not evict it, nor reopen 7.
        std::fs::remove_file(&paths[7]).unwrap();
        open.get(7, &paths[7])
            .unwrap()
            .write_all_at(b"b", 1)
            .unwrap();
        open.get(9, &paths[9])
            .unwrap()
            .write_all_at(b"b", 1)
            .unwrap();
        // 8 is now the least recently used: opening 0 closes it.
        open.get(0, &paths[0])
            .unwrap()
            .write_all_at(b"c", 2)
            .unwrap();
        std::fs::remove_file(&paths[8]).unwrap();
        assert!(open.get(8, &paths[8]).is_err(), "8 was closed and is gone");
        for (i, want) in [(0, b"a\0c\0"), (9, b"ab\0\0"), (5, b"a\0\0\0")] {
            assert_eq!(&std::fs::read(&paths[i]).unwrap(), want, "file {i}");
        }
    }
}
