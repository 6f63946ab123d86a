//! What every store backend returns: an object's entry in a listing, and the errors.

use std::time::SystemTime;

/// Errors from a store. Each names the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not one Hearth understands.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The object does not exist.
    #[error("object {key} not found in the store")]
    NotFound { key: String },
    /// A conditional write found the object already there.
    #[error("object {key} already exists in the store")]
    AlreadyExists { key: String },
    /// A filesystem store operation failed.
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        source: std::io::Error,
    },
    /// An S3 request failed.
    #[error("S3 {op} {key}: {message}")]
    S3 {
        op: &'static str,
        key: String,
        message: String,
        transient: bool,
    },
    /// The credentials directory cannot be used.
    #[error(transparent)]
    Credentials(#[from] super::credentials::CredentialsError),
    /// A transient failure persisted through every retry.
    #[error("store still failing after {attempts} attempts: {last}")]
    Exhausted {
        attempts: usize,
        last: Box<StoreError>,
    },
}

impl StoreError {
    /// Whether retrying the same request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::S3 { transient, .. } => *transient,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// Whether the error says the object is absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// One object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time as reported by the store.
    pub modified: SystemTime,
}
