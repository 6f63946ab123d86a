//! S3 credentials read from files: the directory where the snapshot Jobs mount the namespace's
//! store Secret, one file per key (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
//! `AWS_SESSION_TOKEN`), as Kubernetes projects a Secret. Values never appear in errors or in
//! `Debug` output.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The file (Secret key) holding the access key id.
pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// The file (Secret key) holding the secret access key.
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// The file (Secret key) holding a session token, if any.
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// Longest value read from a file: far above any real key or session token, and it keeps a
/// planted device or huge file from being read whole.
const MAX_VALUE_BYTES: u64 = 8 * 1024;

/// Static S3 credentials. `Debug` shows no value.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token (temporary credentials).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StoreCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCredentials")
            .field("access_key_id", &"***")
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Why the credentials directory cannot be used. Each names the file and the Secret, never a
/// value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A required key file is absent.
    #[error("store credentials: {} is missing: the store Secret{} mounted at {} needs the key {file}", .dir.join(.file).display(), named(.secret), .dir.display())]
    Missing {
        dir: PathBuf,
        file: &'static str,
        secret: Option<String>,
    },
    /// A key file could not be read.
    #[error("store credentials: cannot read {} (from the store Secret{}): {source}", .dir.join(.file).display(), named(.secret))]
    Unreadable {
        dir: PathBuf,
        file: &'static str,
        secret: Option<String>,
        source: std::io::Error,
    },
    /// A key file holds something that cannot be a credential.
    #[error("store credentials: {} (from the store Secret{}) {problem}", .dir.join(.file).display(), named(.secret))]
    Invalid {
        dir: PathBuf,
        file: &'static str,
        secret: Option<String>,
        problem: &'static str,
    },
}

/// ` "name"` when the Secret's name is known, for messages.
fn named(secret: &Option<String>) -> String {
    secret
        .as_ref()
        .map(|s| format!(" {s:?}"))
        .unwrap_or_default()
}

/// A credential from a key file's bytes: surrounding whitespace (the newline of a Secret made
/// from a file) is dropped; what is left must be one non-empty token of printable ASCII.
/// The error names what was expected, never the bytes.
pub fn parse_value(bytes: &[u8]) -> Result<String, &'static str> {
    if bytes.len() as u64 > MAX_VALUE_BYTES {
        return Err("is longer than 8 KiB: expected one key or token");
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "is not text: expected one key or token in printable ASCII")?;
    let value = text.trim();
    if value.is_empty() {
        return Err("is empty: expected the key's value");
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("holds spaces, line breaks or non-ASCII characters: expected one key or token in printable ASCII");
    }
    Ok(value.to_string())
}

/// Reads the credentials from `dir`. `secret` names the Secret mounted there, for errors.
pub fn read_dir(dir: &Path, secret: Option<&str>) -> Result<StoreCredentials, CredentialsError> {
    let read = |file: &'static str| -> Result<Option<String>, CredentialsError> {
        let path = dir.join(file);
        let bytes = match std::fs::File::open(&path) {
            Ok(f) => {
                let mut bytes = Vec::new();
                f.take(MAX_VALUE_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|source| CredentialsError::Unreadable {
                        dir: dir.to_path_buf(),
                        file,
                        secret: secret.map(str::to_string),
                        source,
                    })?;
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CredentialsError::Unreadable {
                    dir: dir.to_path_buf(),
                    file,
                    secret: secret.map(str::to_string),
                    source,
                })
            }
        };
        parse_value(&bytes)
            .map(Some)
            .map_err(|problem| CredentialsError::Invalid {
                dir: dir.to_path_buf(),
                file,
                secret: secret.map(str::to_string),
                problem,
            })
    };
    let required = |file: &'static str| {
        read(file)?.ok_or_else(|| CredentialsError::Missing {
            dir: dir.to_path_buf(),
            file,
            secret: secret.map(str::to_string),
        })
    };
    Ok(StoreCredentials {
        access_key_id: required(ACCESS_KEY_ID)?,
        secret_access_key: required(SECRET_ACCESS_KEY)?,
        session_token: read(SESSION_TOKEN)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_trimmed_and_checked_without_echoing_them() {
        assert_eq!(parse_value(b"AKIA123\n").unwrap(), "AKIA123");
        assert_eq!(parse_value(b"  s3cr/t+=  \r\n").unwrap(), "s3cr/t+=");
        for bad in [
            &b""[..],
            b" \n",
            b"two words",
            b"a\nb",
            b"\xff\xfe",
            &[b'x'; 9000],
        ] {
            let problem = parse_value(bad).unwrap_err();
            assert!(problem.contains("expected"), "{problem}");
        }
    }

    #[test]
    fn a_missing_or_bad_file_names_the_file_and_the_secret_not_the_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ACCESS_KEY_ID), "AKIA-VISIBLE-ID\n").unwrap();
        let err = read_dir(dir.path(), Some("hearth-store"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(SECRET_ACCESS_KEY), "{err}");
        assert!(err.contains("hearth-store"), "{err}");
        assert!(!err.contains("AKIA-VISIBLE-ID"), "{err}");

        std::fs::write(dir.path().join(SECRET_ACCESS_KEY), "not a key\n").unwrap();
        let err = read_dir(dir.path(), Some("hearth-store"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(SECRET_ACCESS_KEY) && err.contains("expected"),
            "{err}"
        );
        assert!(!err.contains("not a key"), "{err}");

        std::fs::write(dir.path().join(SECRET_ACCESS_KEY), "wJalr/XUtnFEMI\n").unwrap();
        let creds = read_dir(dir.path(), Some("hearth-store")).unwrap();
        assert_eq!(creds.access_key_id, "AKIA-VISIBLE-ID");
        assert_eq!(creds.secret_access_key, "wJalr/XUtnFEMI");
        assert_eq!(creds.session_token, None);
        let debug = format!("{creds:?}");
        assert!(
            !debug.contains("wJalr") && !debug.contains("AKIA"),
            "{debug}"
        );

        std::fs::write(dir.path().join(SESSION_TOKEN), "tok\n").unwrap();
        let creds = read_dir(dir.path(), Some("hearth-store")).unwrap();
        assert_eq!(creds.session_token.as_deref(), Some("tok"));
    }
}
