//! Pinning a snapshot to the exact bytes of its manifest. A save reports the SHA-256 of the
//! manifest object it wrote; the controller keeps it in BuildCache status (the Kubernetes API,
//! which no store credential can write) and every restore it starts passes it back. The
//! restore compares it with the manifest it fetched before decoding a byte, and the manifest
//! lists every chunk's BLAKE3, which the restore checks: a pinned restore writes only what the
//! controller saw saved, whoever else can write the store.

use std::fmt;

use sha2::{Digest, Sha256};

/// The SHA-256 of a manifest object's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManifestDigest([u8; 32]);

/// A digest given as text that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("manifest digest {given:?}: expected the SHA-256 of the manifest as 64 hex digits")]
pub struct MalformedDigest {
    /// What was given.
    pub given: String,
}

impl ManifestDigest {
    /// The digest of a manifest object's bytes.
    pub fn of(manifest_bytes: &[u8]) -> ManifestDigest {
        ManifestDigest(Sha256::digest(manifest_bytes).into())
    }

    /// Parses 64 hex digits (either case).
    pub fn parse(text: &str) -> Result<ManifestDigest, MalformedDigest> {
        let malformed = || MalformedDigest {
            given: text.to_string(),
        };
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return Err(malformed());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let high = (pair[0] as char).to_digit(16).ok_or_else(malformed)?;
            let low = (pair[1] as char).to_digit(16).ok_or_else(malformed)?;
            *byte = (high * 16 + low) as u8;
        }
        Ok(ManifestDigest(out))
    }
}

impl fmt::Display for ManifestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ManifestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestDigest({self})")
    }
}

impl std::str::FromStr for ManifestDigest {
    type Err = MalformedDigest;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ManifestDigest::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_print_as_lowercase_hex_and_parse_back() {
        let d = ManifestDigest::of(b"abc");
        let text = d.to_string();
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ManifestDigest::parse(&text).unwrap(), d);
        assert_eq!(ManifestDigest::parse(&text.to_uppercase()).unwrap(), d);
    }

    #[test]
    fn malformed_digests_are_refused_naming_what_was_expected() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            let e = ManifestDigest::parse(bad).unwrap_err().to_string();
            assert!(e.contains("64 hex digits"), "{e}");
        }
        // Non-ASCII must not panic on a char boundary.
        assert!(ManifestDigest::parse(&"é".repeat(32)).is_err());
    }
}
