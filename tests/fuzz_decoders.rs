//! Fuzzing what a hostile store or client hands Hearth: the manifest decoder, the pack-index
//! decoder, the local index reader and the upload receiver get mutated and random input, both
//! as raw bytes (caught by the envelope's checksum) and re-sealed with a valid checksum (so the
//! CBOR decoder and the consistency checks see it). Each must answer with an error or a sound
//! value, never panic, and the receiver must leave nothing behind when it refuses.
//!
//! `.ci/test` runs a bounded number of cases (64 per property); run longer by hand with
//! `PROPTEST_CASES=20000 cargo test --release --test fuzz_decoders`.

mod snapshot_support;

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use hearth::snapshot::index::LocalIndex;
use hearth::snapshot::manifest::Manifest;
use hearth::snapshot::pack::PackIndex;
use hearth::snapshot::{save, SaveOptions};
use hearth::upload::receive::receive;
use hearth::upload::{done_line, header_line};
use proptest::prelude::*;
use snapshot_support::*;

const NS: &str = "team-a";
const CACHE: &str = "shop";

/// A valid manifest, pack index and local index, from a real save of a small tree.
struct Valid {
    id: String,
    manifest: Vec<u8>,
    pack_index: Vec<u8>,
    local_index: Vec<u8>,
}

fn valid() -> &'static Valid {
    static VALID: OnceLock<Valid> = OnceLock::new();
    VALID.get_or_init(|| {
        let work = tempfile::tempdir().unwrap().keep();
        let src = work.join("src");
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::write(src.join("d/blob"), noise(1, 300_000)).unwrap();
        std::fs::write(src.join("d/e/small"), b"small").unwrap();
        std::os::unix::fs::symlink("../small", src.join("d/link")).unwrap();
        let objects = work.join("store");
        std::fs::create_dir_all(&objects).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let id = rt.block_on(async {
            let (store, url) = fs_store(&objects).await;
            let opts = SaveOptions::new(&url, NS, CACHE);
            save(&store, &src, &opts).await.unwrap().id
        });
        let one = |suffix: &str| {
            let found = files_ending(&objects, suffix);
            std::fs::read(found.first().unwrap_or_else(|| panic!("no {suffix}"))).unwrap()
        };
        let local = files_ending(&src, "index");
        Valid {
            id,
            manifest: one(".manifest"),
            pack_index: one(".idx"),
            local_index: local
                .first()
                .map(|p| std::fs::read(p).unwrap())
                .unwrap_or_default(),
        }
    })
}

/// The envelope's CBOR payload (after the 8-byte magic and the 32-byte checksum).
fn payload(sealed: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(&sealed[40..]).unwrap()
}

/// Seals `cbor` under `magic` as the codec does, so the checksum holds.
fn reseal(magic: &[u8], cbor: &[u8]) -> Vec<u8> {
    let body = zstd::bulk::compress(cbor, 1).unwrap();
    let mut out = magic.to_vec();
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out.extend_from_slice(&body);
    out
}

/// How one input is damaged.
#[derive(Clone, Debug)]
enum Damage {
    /// Bytes overwritten at positions (taken modulo the length).
    Flip(Vec<(usize, u8)>),
    /// Cut at a position.
    Truncate(usize),
    /// Bytes inserted at a position.
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Damage::Flip),
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, b)| Damage::Insert(at, b)),
    ]
}

fn apply(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.is_empty() {
        return v;
    }
    match d {
        Damage::Flip(flips) => {
            for (at, b) in flips {
                let i = at % v.len();
                v[i] ^= b.max(&1);
            }
        }
        Damage::Truncate(at) => v.truncate(at % v.len()),
        Damage::Insert(at, bytes) => {
            let i = at % v.len();
            v.splice(i..i, bytes.iter().copied());
        }
    }
    v
}

fn decode_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let key = format!("{NS}/snapshots/{CACHE}/{}.manifest", valid().id);
    Manifest::decode(bytes, &key, NS, CACHE, &valid().id).map_err(|e| e.to_string())
}

/// Every entry of a manifest that decoded names a path inside the tree.
fn sound(m: &Manifest) -> bool {
    m.entries.iter().all(|e| {
        let p = &e.path.0;
        !p.starts_with(b"/") && !p.split(|b| *b == b'/').any(|c| c == b"..")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn manifest_decoder_refuses_or_decodes_soundly(d in damage(), sealed in any::<bool>()) {
        let v = valid();
        let bytes = if sealed {
            reseal(&v.manifest[..8], &apply(&payload(&v.manifest), &d))
        } else {
            apply(&v.manifest, &d)
        };
        if let Ok(m) = decode_manifest(&bytes) {
            prop_assert!(sound(&m), "a decoded manifest escapes its tree: {m:?}");
        }
    }

    #[test]
    fn manifest_decoder_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let v = valid();
        prop_assert!(decode_manifest(&bytes).is_err());
        let resealed = reseal(&v.manifest[..8], &bytes);
        let _ = decode_manifest(&resealed);
    }

    #[test]
    fn pack_index_decoder_never_panics(d in damage(), sealed in any::<bool>()) {
        let v = valid();
        let bytes = if sealed {
            reseal(&v.pack_index[..8], &apply(&payload(&v.pack_index), &d))
        } else {
            apply(&v.pack_index, &d)
        };
        let _ = PackIndex::decode("p", &bytes);
    }

    #[test]
    fn local_index_reader_falls_back_to_empty_on_damage(d in damage()) {
        let v = valid();
        prop_assume!(!v.local_index.is_empty());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".hearth")).unwrap();
        std::fs::write(dir.path().join(".hearth/index"), apply(&v.local_index, &d)).unwrap();
        // Whatever it reads, it must not panic; an index for another store is never used.
        let index = LocalIndex::load(dir.path(), "s3://other/bucket");
        prop_assert!(index.files.is_empty());
        let _ = LocalIndex::load(dir.path(), &index.store);
    }

    #[test]
    fn upload_receiver_refuses_damaged_frames_leaving_nothing(d in damage()) {
        let tar = small_tar();
        let sha = hearth::upload::hex_digest({
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(&tar);
            h
        });
        let mut frame = header_line(tar.len() as u64, &sha).into_bytes();
        frame.extend_from_slice(&tar);
        frame.extend_from_slice(done_line(&sha).as_bytes());
        let damaged = apply(&frame, &d);
        let dir = tempfile::tempdir().unwrap();
        match receive(&damaged[..], dir.path(), None) {
            Ok(got) => {
                prop_assert_eq!(got.sha256, sha, "accepted a tar other than the stated one");
                prop_assert!(got.context.starts_with(dir.path()));
            }
            Err(_) => prop_assert!(left_in(dir.path()).is_empty(), "left behind: {:?}", left_in(dir.path())),
        }
    }
}

/// Cases per property: 64 in CI, `PROPTEST_CASES` by hand.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[test]
fn a_metadata_object_that_decompresses_without_bound_is_refused() {
    // 4 MiB of zeros compress to a few hundred bytes: a valid checksum over a bomb.
    let mut body = Vec::new();
    zstd::stream::copy_encode(std::io::repeat(0).take(4 << 20), &mut body, 1).unwrap();
    let mut sealed = hearth::snapshot::manifest::MAGIC.to_vec();
    sealed.extend_from_slice(blake3::hash(&body).as_bytes());
    sealed.extend_from_slice(&body);
    let err = hearth::snapshot::codec::open_limited::<Manifest>(
        hearth::snapshot::manifest::MAGIC,
        &sealed,
        1 << 20,
    )
    .unwrap_err();
    assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
}

fn left_in(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

fn small_tar() -> Vec<u8> {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    TAR.get_or_init(|| {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("app")).unwrap();
        std::fs::write(
            src.path().join("Dockerfile"),
            "FROM scratch\nCOPY app /app\n",
        )
        .unwrap();
        std::fs::write(src.path().join("app/main.py"), "print('hi')\n").unwrap();
        let mut v = Vec::new();
        hearth::upload::pack::pack(src.path(), &[], &mut v).unwrap();
        v
    })
    .clone()
}
