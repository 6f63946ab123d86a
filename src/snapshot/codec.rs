//! The sealed envelope every Hearth metadata object uses (manifests, pack indexes, the local
//! index): an 8-byte magic naming the kind and version, the BLAKE3 hash of the rest, then
//! zstd-compressed CBOR. Pure functions, plus serde helpers for byte strings.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::layout::ChunkId;

/// Errors opening an envelope.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Shorter than its header: a truncated object.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// Another kind of object, or a version this build does not read.
    #[error("not a {expected} object (magic {found:?})")]
    Magic { expected: String, found: String },
    /// The content does not match its checksum: truncated or corrupt.
    #[error("checksum mismatch: corrupt or truncated")]
    Checksum,
    /// The content could not be decompressed or decoded.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// The value could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

const HEADER: usize = 8 + 32;

/// Encodes `value` under `magic`.
pub fn seal<T: Serialize>(magic: &[u8; 8], value: &T) -> Result<Vec<u8>, CodecError> {
    let mut cbor = Vec::new();
    ciborium::into_writer(value, &mut cbor).map_err(|e| CodecError::Encode(e.to_string()))?;
    let body = zstd::bulk::compress(&cbor, 1).map_err(|e| CodecError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Largest decompressed metadata object read (a manifest of a few million files fits): the
/// checksum is not a signature, so a crafted object could otherwise decompress without bound.
pub const DECODED_LIMIT: u64 = 512 << 20;

/// Decodes an envelope written by [`seal`] with the same `magic`, checking its checksum.
pub fn open<T: DeserializeOwned>(magic: &[u8; 8], bytes: &[u8]) -> Result<T, CodecError> {
    open_limited(magic, bytes, DECODED_LIMIT)
}

/// [`open`], refusing a body that decompresses to more than `limit` bytes.
pub fn open_limited<T: DeserializeOwned>(
    magic: &[u8; 8],
    bytes: &[u8],
    limit: u64,
) -> Result<T, CodecError> {
    if bytes.len() < HEADER {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if &bytes[..8] != magic {
        return Err(CodecError::Magic {
            expected: String::from_utf8_lossy(magic).into_owned(),
            found: String::from_utf8_lossy(&bytes[..8]).into_owned(),
        });
    }
    let body = &bytes[HEADER..];
    if blake3::hash(body).as_bytes() != &bytes[8..HEADER] {
        return Err(CodecError::Checksum);
    }
    let mut cbor = Vec::new();
    let decoder =
        zstd::stream::read::Decoder::new(body).map_err(|e| CodecError::Decode(e.to_string()))?;
    std::io::Read::read_to_end(&mut std::io::Read::take(decoder, limit + 1), &mut cbor)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if cbor.len() as u64 > limit {
        return Err(CodecError::Decode(format!(
            "decompresses to more than {limit} bytes"
        )));
    }
    ciborium::from_reader(cbor.as_slice()).map_err(|e| CodecError::Decode(e.to_string()))
}

/// A byte string (paths, xattr names and values, link targets): CBOR bytes, not UTF-8.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteBuf(pub Vec<u8>);

impl std::borrow::Borrow<[u8]> for ByteBuf {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ByteBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a byte string")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BytesVisitor).map(ByteBuf)
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_byte_buf(BytesVisitor)?;
        let arr: [u8; 32] = v
            .try_into()
            .map_err(|_| serde::de::Error::custom("a chunk id has 32 bytes"))?;
        Ok(ChunkId(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_detects_damage() {
        let value = (ByteBuf(vec![0xff, 0, b'a']), ChunkId::of(b"x"), 42u64);
        let sealed = seal(b"HEARTHT1", &value).unwrap();
        let back: (ByteBuf, ChunkId, u64) = open(b"HEARTHT1", &sealed).unwrap();
        assert_eq!(back, value);
        assert!(matches!(
            open::<u64>(b"HEARTHX1", &sealed),
            Err(CodecError::Magic { .. })
        ));
        assert!(matches!(
            open::<u64>(b"HEARTHT1", &sealed[..sealed.len() - 1]),
            Err(CodecError::Checksum)
        ));
        assert!(matches!(
            open::<u64>(b"HEARTHT1", &sealed[..10]),
            Err(CodecError::Truncated(10))
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            open::<u64>(b"HEARTHT1", &flipped),
            Err(CodecError::Checksum)
        ));
    }
}
