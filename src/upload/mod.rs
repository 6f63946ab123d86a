//! Uploading a local build context into the builder pod: the wire protocol, the sender
//! (packs a directory honouring `.dockerignore`) and the receiver (verifies, refuses escaping
//! entries, unpacks). Pure code over readers and writers; the `pods/exec` plumbing lives in
//! [`crate::client`].
//!
//! The frame, sent on the exec stream's stdin:
//!
//! ```text
//! HEARTH-UPLOAD 1 <size> <sha256 hex>\n
//! <size bytes: an uncompressed tar of the context>
//! HEARTH-DONE <sha256 hex>\n
//! ```
//!
//! The receiver answers on its stdout with `HEARTH-OK <sha256> <entries>\n` or
//! `HEARTH-ERROR <message>\n`. The explicit size and done line mean nothing depends on stdin
//! reaching EOF, which exec over WebSocket cannot always signal.

pub mod cli;
pub mod pack;
pub mod receive;
pub mod send;
mod verify;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// First word of the frame header.
pub const MAGIC: &str = "HEARTH-UPLOAD";
/// Protocol version in the header.
pub const VERSION: u32 = 1;
/// First word of the done line.
pub const DONE: &str = "HEARTH-DONE";
/// Reply on success.
pub const OK: &str = "HEARTH-OK";
/// Reply on failure.
pub const ERROR: &str = "HEARTH-ERROR";
/// Largest context accepted (8 GiB, as the API's `upload.size` bound).
pub const MAX_SIZE: u64 = 8 << 30;

/// What went wrong with an upload. Each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The stream is not a Hearth upload frame.
    #[error("not a hearth upload stream: {0}")]
    BadFrame(String),
    /// The stream ended before the stated size or before the done line.
    #[error("upload truncated: {0}")]
    Truncated(String),
    /// The bytes received do not hash to the stated sha256.
    #[error("upload corrupted: sha256 of the received tar is {got}, expected {want}")]
    HashMismatch {
        /// What arrived.
        got: String,
        /// What was stated.
        want: String,
    },
    /// The frame states another tar than the ImageBuild's `spec.source.upload`.
    #[error("upload refused: the stream carries {got}, but the ImageBuild expects {want}")]
    NotExpected {
        /// What the frame states.
        got: String,
        /// What the receiver was started with.
        want: String,
    },
    /// A tar entry would land outside the context directory (or is of a refused kind).
    #[error("upload refused: entry {entry:?} {why}; nothing was written")]
    Refused {
        /// The entry's path as in the tar.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// Nothing arrived in time.
    #[error("no upload arrived within {0:?}")]
    Timeout(std::time::Duration),
    /// The receiver reported a failure (sender side), or a previous attempt failed.
    #[error("receiver: {0}")]
    Remote(String),
    /// The context directory or a file in it.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The stream itself.
    #[error("upload stream: {0}")]
    Stream(#[from] std::io::Error),
}

impl UploadError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> UploadError {
        UploadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The first line of a frame.
pub fn header_line(size: u64, sha256: &str) -> String {
    format!("{MAGIC} {VERSION} {size} {sha256}\n")
}

/// The done line that closes a frame.
pub fn done_line(sha256: &str) -> String {
    format!("{DONE} {sha256}\n")
}

/// Lower-case hex of a sha256 state's digest.
pub fn hex_digest(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` looks like a sha256 in lower-case hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
