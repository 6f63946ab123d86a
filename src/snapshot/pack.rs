//! Packs: many chunks concatenated into one object of tens of MiB, each chunk stored raw or
//! as one zstd frame, with a sealed index object beside it. Encoding and decoding of chunks
//! (compress, or keep raw what does not compress; decode and verify). Pure code.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::layout::ChunkId;
use super::manifest::{ChunkLoc, Codec};

/// Magic and version of pack indexes.
pub const INDEX_MAGIC: &[u8; 8] = b"HEARTHP1";

/// Errors decoding chunks.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The pack is shorter than a chunk's location says.
    #[error("pack {pack}: chunk {chunk} lies beyond the end of the pack")]
    Short { pack: String, chunk: ChunkId },
    /// The chunk does not decode to its length or its hash.
    #[error("pack {pack}: chunk {chunk} is corrupt ({reason})")]
    Corrupt {
        pack: String,
        chunk: ChunkId,
        reason: String,
    },
    /// A pack index could not be read.
    #[error("pack index {pack}: {source}")]
    Index { pack: String, source: CodecError },
}

/// What a pack holds: chunk ids and locations (`loc.pack` is 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackIndex {
    /// Chunks in pack order.
    pub chunks: Vec<(ChunkId, ChunkLoc)>,
}

impl PackIndex {
    /// Encodes the index.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::seal(INDEX_MAGIC, self)
    }

    /// Decodes the index of `pack`.
    pub fn decode(pack: &str, bytes: &[u8]) -> Result<PackIndex, PackError> {
        codec::open(INDEX_MAGIC, bytes).map_err(|source| PackError::Index {
            pack: pack.to_string(),
            source,
        })
    }
}

/// A finished pack, ready to upload.
#[derive(Debug)]
pub struct SealedPack {
    /// Pack id (hex BLAKE3 of its chunk ids and locations).
    pub id: String,
    /// The pack's bytes.
    pub data: Vec<u8>,
    /// Its index.
    pub index: PackIndex,
}

/// Accumulates encoded chunks into a pack.
#[derive(Debug, Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    index: PackIndex,
}

impl PackBuilder {
    /// An empty pack with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> PackBuilder {
        PackBuilder {
            data: Vec::with_capacity(capacity),
            index: PackIndex::default(),
        }
    }

    /// An empty pack in `buf` (a used buffer, emptied).
    pub fn with_buffer(mut buf: Vec<u8>) -> PackBuilder {
        buf.clear();
        PackBuilder {
            data: buf,
            index: PackIndex::default(),
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.index.chunks.is_empty()
    }

    /// Appends an encoded chunk and returns its location (with `pack` 0).
    pub fn push(&mut self, id: ChunkId, raw_len: usize, codec: Codec, stored: &[u8]) -> ChunkLoc {
        let offset = self.data.len();
        self.data.extend_from_slice(stored);
        self.record(id, offset, raw_len, codec)
    }

    /// Encodes `raw` straight into the pack (no intermediate buffer): a zstd frame if it
    /// saves at least 1/32 of the size, else the raw bytes. With `try_compress` false the
    /// chunk is stored raw without trying. Returns its location (with `pack` 0).
    pub fn push_encoded(
        &mut self,
        enc: &mut Encoder,
        id: ChunkId,
        raw: &[u8],
        try_compress: bool,
    ) -> ChunkLoc {
        let offset = self.data.len();
        if try_compress && raw.len() >= 64 {
            self.data
                .reserve(zstd::zstd_safe::compress_bound(raw.len()));
            let mut out = std::io::Cursor::new(&mut self.data);
            out.set_position(offset as u64);
            match enc.compressor.compress_to_buffer(raw, &mut out) {
                Ok(n) if n < raw.len() - raw.len() / 32 => {
                    return self.record(id, offset, raw.len(), Codec::Zstd);
                }
                _ => self.data.truncate(offset),
            }
        }
        self.data.extend_from_slice(raw);
        self.record(id, offset, raw.len(), Codec::Raw)
    }

    fn record(&mut self, id: ChunkId, offset: usize, raw_len: usize, codec: Codec) -> ChunkLoc {
        let loc = ChunkLoc {
            pack: 0,
            offset: offset as u64,
            stored: (self.data.len() - offset) as u32,
            raw: raw_len as u32,
            codec,
        };
        self.index.chunks.push((id, loc));
        loc
    }

    /// Finishes the pack, leaving this builder empty with the same capacity.
    pub fn seal(&mut self) -> SealedPack {
        let capacity = self.data.capacity();
        self.seal_with(Vec::with_capacity(capacity))
    }

    /// Finishes the pack; the builder goes on in `next` (a used buffer, emptied).
    pub fn seal_with(&mut self, mut next: Vec<u8>) -> SealedPack {
        next.clear();
        let data = std::mem::replace(&mut self.data, next);
        let index = std::mem::take(&mut self.index);
        let mut h = blake3::Hasher::new();
        for (id, loc) in &index.chunks {
            h.update(&id.0);
            h.update(&loc.offset.to_le_bytes());
            h.update(&loc.stored.to_le_bytes());
        }
        h.update(&(data.len() as u64).to_le_bytes());
        SealedPack {
            id: h.finalize().to_hex().to_string(),
            data,
            index,
        }
    }
}

/// Compresses chunks with one reusable zstd context, keeping raw what does not shrink.
pub struct Encoder {
    compressor: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
}

impl Encoder {
    /// An encoder at zstd `level`.
    pub fn new(level: i32) -> std::io::Result<Encoder> {
        Ok(Encoder {
            compressor: zstd::bulk::Compressor::new(level)?,
            buf: Vec::new(),
        })
    }

    /// Encodes `raw`: a zstd frame if it saves at least 1/32 of the size, else raw. With
    /// `try_compress` false the chunk is stored raw without trying.
    pub fn encode<'a>(&'a mut self, raw: &'a [u8], try_compress: bool) -> (Codec, &'a [u8]) {
        if try_compress && raw.len() >= 64 {
            self.buf.clear();
            self.buf.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            if let Ok(n) = self.compressor.compress_to_buffer(raw, &mut self.buf) {
                if n < raw.len() - raw.len() / 32 {
                    return (Codec::Zstd, &self.buf[..n]);
                }
            }
        }
        (Codec::Raw, raw)
    }
}

/// Whether data starting with these bytes is already compressed (gzip, zstd, xz, bzip2,
/// zip/jar/wheel, lz4), so compressing it would waste time.
pub fn looks_compressed(head: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        &[0x1f, 0x8b],
        &[0x28, 0xb5, 0x2f, 0xfd],
        &[0xfd, b'7', b'z', b'X', b'Z', 0],
        b"BZh",
        b"PK\x03\x04",
        &[0x04, 0x22, 0x4d, 0x18],
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
}

/// Decodes the chunk `id` stored at `loc` in `pack_bytes` (which starts at pack offset
/// `base`) and checks its length and hash.
pub fn decode_chunk(
    pack: &str,
    pack_bytes: &[u8],
    base: u64,
    id: ChunkId,
    loc: &ChunkLoc,
) -> Result<Vec<u8>, PackError> {
    let mut d = Decoder::new().map_err(|e| PackError::Corrupt {
        pack: pack.to_string(),
        chunk: id,
        reason: e.to_string(),
    })?;
    d.decode(pack, pack_bytes, base, id, loc)
        .map(<[u8]>::to_vec)
}

/// Decodes and verifies chunks with one reusable zstd context and output buffer; a raw
/// chunk is verified where it lies, without a copy.
pub struct Decoder {
    decompressor: zstd::bulk::Decompressor<'static>,
    buf: Vec<u8>,
}

impl Decoder {
    /// A decoder.
    pub fn new() -> std::io::Result<Decoder> {
        Ok(Decoder {
            decompressor: zstd::bulk::Decompressor::new()?,
            buf: Vec::new(),
        })
    }

    /// Decodes the chunk `id` stored at `loc` in `pack_bytes` (which starts at pack offset
    /// `base`), checks its length and its BLAKE3 hash, and returns its bytes (valid until the
    /// next call).
    pub fn decode<'a>(
        &'a mut self,
        pack: &str,
        pack_bytes: &'a [u8],
        base: u64,
        id: ChunkId,
        loc: &ChunkLoc,
    ) -> Result<&'a [u8], PackError> {
        let short = || PackError::Short {
            pack: pack.to_string(),
            chunk: id,
        };
        let start = loc.offset.checked_sub(base).ok_or_else(short)?;
        let stored = usize::try_from(start)
            .ok()
            .and_then(|s| Some(s..s.checked_add(loc.stored as usize)?))
            .and_then(|r| pack_bytes.get(r))
            .ok_or_else(short)?;
        let corrupt = |reason: String| PackError::Corrupt {
            pack: pack.to_string(),
            chunk: id,
            reason,
        };
        let raw: &[u8] = match loc.codec {
            Codec::Raw => stored,
            Codec::Zstd => {
                // Never more than the chunk's declared length: a hostile frame cannot make
                // the restore allocate without bound.
                self.buf.clear();
                self.buf.reserve(loc.raw as usize);
                self.decompressor
                    .decompress_to_buffer(stored, &mut self.buf)
                    .map_err(|e| corrupt(e.to_string()))?;
                &self.buf
            }
        };
        if raw.len() != loc.raw as usize {
            return Err(corrupt(format!(
                "{} bytes instead of {}",
                raw.len(),
                loc.raw
            )));
        }
        if ChunkId::of(raw) != id {
            return Err(corrupt("hash mismatch".into()));
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_corruption_is_caught() {
        let mut enc = Encoder::new(1).unwrap();
        let text =
            b"hello hello hello hello hello hello hello hello hello hello hello hello".repeat(10);
        let mut noise = vec![0u8; 4096];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut noise);
        let mut pb = PackBuilder::with_capacity(1024);
        let mut locs = vec![];
        for data in [&text[..], &noise[..]] {
            let id = ChunkId::of(data);
            let (codec, stored) = enc.encode(data, true);
            let stored = stored.to_vec();
            locs.push((id, pb.push(id, data.len(), codec, &stored), data.to_vec()));
        }
        assert_eq!(locs[0].1.codec, Codec::Zstd);
        assert_eq!(locs[1].1.codec, Codec::Raw);
        let mut sealed = pb.seal();
        assert!(pb.is_empty());
        let idx = PackIndex::decode(&sealed.id, &sealed.index.encode().unwrap()).unwrap();
        assert_eq!(idx, sealed.index);
        for (id, loc, data) in &locs {
            assert_eq!(&decode_chunk("p", &sealed.data, 0, *id, loc).unwrap(), data);
        }
        let (id, loc, _) = &locs[1];
        sealed.data[loc.offset as usize + 5] ^= 0xff;
        assert!(matches!(
            decode_chunk("p", &sealed.data, 0, *id, loc),
            Err(PackError::Corrupt { .. })
        ));
        sealed.data.truncate(loc.offset as usize + 3);
        assert!(matches!(
            decode_chunk("p", &sealed.data, 0, *id, loc),
            Err(PackError::Short { .. })
        ));
    }

    #[test]
    fn chunks_encoded_into_the_pack_decode_with_one_reused_decoder() {
        let mut enc = Encoder::new(-1).unwrap();
        let text = b"a line of text that repeats; ".repeat(40_000);
        let mut noise = vec![0u8; 300_000];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut noise);
        let small_text = b"short, and repeated: ".repeat(100);
        // Capacity for one chunk only: the builder makes room for the rest as it goes.
        let mut pb = PackBuilder::with_capacity(64);
        let cases: [(&[u8], bool, Codec); 5] = [
            (&text, true, Codec::Zstd),
            (&noise, true, Codec::Raw),
            (&small_text, true, Codec::Zstd),
            (&text, false, Codec::Raw),
            (b"tiny", true, Codec::Raw),
        ];
        let mut locs = vec![];
        for (data, try_compress, codec) in cases {
            let id = ChunkId::of(data);
            let loc = pb.push_encoded(&mut enc, id, data, try_compress);
            assert_eq!(loc.codec, codec, "{} bytes", data.len());
            assert_eq!(loc.raw as usize, data.len());
            locs.push((id, loc, data));
        }
        assert!(locs[0].1.stored < locs[0].1.raw / 10);
        let sealed = pb.seal();
        let stored: u64 = locs.iter().map(|(_, l, _)| l.stored as u64).sum();
        assert_eq!(sealed.data.len() as u64, stored, "no bytes between chunks");
        // Large, raw, small, large again: each decode returns exactly its chunk, never what
        // a previous, longer one left in the buffer.
        let mut dec = Decoder::new().unwrap();
        for (id, loc, data) in &locs {
            assert_eq!(dec.decode("p", &sealed.data, 0, *id, loc).unwrap(), *data);
        }
        // From a range of the pack (base > 0), as a restore fetches it.
        let (id, loc, data) = &locs[2];
        let base = loc.offset - 7;
        let part = &sealed.data[base as usize..];
        assert_eq!(dec.decode("p", part, base, *id, loc).unwrap(), *data);
        // A frame that decodes to more than its declared length is corrupt.
        let (id, loc, _) = &locs[0];
        let short = ChunkLoc {
            raw: loc.raw - 1,
            ..*loc
        };
        assert!(matches!(
            dec.decode("p", &sealed.data, 0, *id, &short),
            Err(PackError::Corrupt { .. })
        ));
    }

    #[test]
    fn compressed_formats_are_recognised() {
        assert!(looks_compressed(&[0x1f, 0x8b, 8, 0]));
        assert!(!looks_compressed(b"plain text"));
    }
}
