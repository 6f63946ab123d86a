//! Object stores that hold snapshots: a filesystem directory (`file:///path`, also right for an
//! NFS or RWX volume) and S3 or any S3-compatible service (`s3://bucket/prefix`).
//!
//! Every store offers the same small set of operations on immutable objects named by
//! `/`-separated keys relative to the store root; failures that may pass (timeouts, 5xx,
//! throttling) are retried with exponential backoff and jitter, the rest surface at once.

mod credentials;
mod fs;
mod object;
mod s3;

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;

pub use credentials::{CredentialsError, StoreCredentials};
pub use fs::FsStore;
pub use object::{ObjectInfo, StoreError};
pub use s3::{S3Options, S3Store};

/// A snapshot store. An enum rather than a trait object: two implementations, async methods.
#[derive(Clone, Debug)]
pub enum Store {
    /// `file:///path`.
    Fs(FsStore),
    /// `s3://bucket/prefix`.
    S3(S3Store),
}

/// How many times a transient failure is retried before giving up.
pub const RETRIES: usize = 6;

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(RETRIES)
        .with_jitter()
}

/// Runs `op` until it succeeds, fails for good, or exhausts the retries.
async fn retry<T, F, Fut>(op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempts = 0usize;
    let result = (op)
        .retry(backoff())
        .when(|e: &StoreError| e.is_transient())
        .notify(|e: &StoreError, after: Duration| {
            attempts += 1;
            tracing::warn!(error = %e, retry_in = ?after, "store request failed, retrying");
        })
        .await;
    match result {
        Err(e) if e.is_transient() => Err(StoreError::Exhausted {
            attempts: attempts + 1,
            last: Box::new(e),
        }),
        other => other,
    }
}

impl Store {
    /// Opens the store named by `url`: `file:///path` or `s3://bucket/prefix`.
    pub async fn open(url: &str, s3: &S3Options) -> Result<Store, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a file store URL needs an absolute path: file:///path",
                ));
            }
            Ok(Store::Fs(
                FsStore::new(path).map_err(|e| invalid(&e.to_string()))?,
            ))
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket: s3://bucket/prefix"));
            }
            Ok(Store::S3(
                S3Store::new(bucket, prefix.trim_matches('/'), s3).await?,
            ))
        } else {
            Err(invalid("expected file:///path or s3://bucket/prefix"))
        }
    }

    /// Writes an object, replacing any previous one.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        retry(|| async {
            match self {
                Store::Fs(s) => s.put(key, data.clone(), false).await,
                Store::S3(s) => s.put(key, data.clone(), false).await,
            }
        })
        .await
    }

    /// Writes an object only if no object has that key (`If-None-Match: *` on S3, a hard
    /// link on a filesystem). Fails with [`StoreError::AlreadyExists`] otherwise.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        retry(|| async {
            match self {
                Store::Fs(s) => s.put(key, data.clone(), true).await,
                Store::S3(s) => s.put(key, data.clone(), true).await,
            }
        })
        .await
    }

    /// One read of an object (or a range of it) into `buf`; gives the buffer back.
    async fn read_once(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        buf: Vec<u8>,
    ) -> (Vec<u8>, Result<(), StoreError>) {
        match self {
            Store::Fs(s) => s.get_into(key, range, buf).await,
            Store::S3(s) => s.get_into(key, range, buf).await,
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        retry(|| async {
            let (buf, read) = self.read_once(key, None, Vec::new()).await;
            read.map(|()| Bytes::from(buf))
        })
        .await
    }

    /// Reads `len` bytes of an object from `start`.
    pub async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Bytes, StoreError> {
        retry(|| async {
            let (buf, read) = self.read_once(key, Some((start, len)), Vec::new()).await;
            read.map(|()| Bytes::from(buf))
        })
        .await
    }

    /// Reads `len` bytes of an object from `start` into `buf` (emptied first), reusing its
    /// allocation: a restore reads tens of MiB per pack, and a new buffer each time costs a
    /// page fault and a zeroed page per 4 KiB, then an unmap.
    pub async fn get_range_into(
        &self,
        key: &str,
        start: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let cell = std::sync::Mutex::new(std::mem::take(buf));
        let take = || std::mem::take(&mut *cell.lock().unwrap_or_else(|p| p.into_inner()));
        let result = retry(|| async {
            let (b, r) = self.read_once(key, Some((start, len)), take()).await;
            *cell.lock().unwrap_or_else(|p| p.into_inner()) = b;
            r
        })
        .await;
        *buf = take();
        result
    }

    /// Lists the objects whose key starts with `prefix` (which should end with `/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        retry(|| async {
            match self {
                Store::Fs(s) => s.list(prefix).await,
                Store::S3(s) => s.list(prefix).await,
            }
        })
        .await
    }

    /// Removes what writes that never finished left under `prefix`, last modified before
    /// `cutoff`: the file store's temporary files (an S3 put is atomic and leaves nothing).
    /// Returns how many files went and their bytes.
    pub async fn sweep_unfinished(
        &self,
        prefix: &str,
        cutoff: std::time::SystemTime,
    ) -> Result<(u64, u64), StoreError> {
        match self {
            Store::Fs(s) => s.sweep_unfinished(prefix, cutoff).await,
            Store::S3(_) => Ok((0, 0)),
        }
    }

    /// Deletes an object; deleting an absent object succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        retry(|| async {
            match self {
                Store::Fs(s) => s.delete(key).await,
                Store::S3(s) => s.delete(key).await,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_checked() {
        let o = S3Options::default();
        assert!(matches!(
            Store::open("file://relative", &o).await,
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Store::open("gs://b", &o).await,
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Store::open("s3:///p", &o).await,
            Err(StoreError::InvalidUrl { .. })
        ));
    }

    #[tokio::test]
    async fn fs_store_conditional_write_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = Store::open(&url, &S3Options::default()).await.unwrap();
        store
            .put_if_absent("a/b/x", Bytes::from_static(b"one"))
            .await
            .unwrap();
        let again = store
            .put_if_absent("a/b/x", Bytes::from_static(b"two"))
            .await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists { .. })),
            "{again:?}"
        );
        assert_eq!(
            store.get("a/b/x").await.unwrap(),
            Bytes::from_static(b"one")
        );
        assert_eq!(
            store.get_range("a/b/x", 1, 2).await.unwrap(),
            Bytes::from_static(b"ne")
        );
        store.put("a/c", Bytes::from_static(b"c")).await.unwrap();
        let keys: Vec<String> = store
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["a/b/x".to_string(), "a/c".to_string()]);
        store.delete("a/b/x").await.unwrap();
        store.delete("a/b/x").await.unwrap();
        assert!(store.get("a/b/x").await.unwrap_err().is_not_found());
    }
}
