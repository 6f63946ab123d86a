//! Shared helpers of the snapshot tests: an in-process S3 server (s3s-fs) on 127.0.0.1 that
//! stops when dropped, stores of both kinds, a tree with every kind of entry Hearth must keep,
//! and a full description of a tree for comparisons.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hearth::store::{S3Options, Store};

/// An S3 server on 127.0.0.1 serving a temporary directory; stopped on drop.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const BUCKET: &str = "hearth-test";

impl S3Server {
    /// Starts the server and creates the bucket.
    pub async fn start() -> S3Server {
        S3Server::serve(None, false).await
    }

    /// As [`S3Server::start`], over HTTPS with `tls` (an `https://` endpoint).
    pub async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> S3Server {
        S3Server::serve(Some(tls), false).await
    }

    /// As [`S3Server::start`], with [`FastGet`]'s GetObject: the benchmark's server.
    pub async fn start_fast_get() -> S3Server {
        S3Server::serve(None, true).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, fast_get: bool) -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder;
        // The SDK reads credentials and region from the environment, as in production.
        std::env::set_var("AWS_ACCESS_KEY_ID", "hearth");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "hearth-secret");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut b = if fast_get {
            s3s::service::S3ServiceBuilder::new(FastGet {
                fs,
                root: root.path().to_path_buf(),
            })
        } else {
            s3s::service::S3ServiceBuilder::new(fs)
        };
        b.set_auth(s3s::auth::SimpleAuth::from_single(
            "hearth",
            "hearth-secret",
        ));
        let service = b.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let svc = service.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let builder = Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        Some(tls) => match tls.accept(socket).await {
                            Ok(stream) => builder.serve_connection(TokioIo::new(stream), svc).await,
                            Err(_) => return,
                        },
                        None => builder.serve_connection(TokioIo::new(socket), svc).await,
                    };
                });
            }
        });
        S3Server {
            endpoint: format!("{scheme}://{addr}"),
            root,
            task,
        }
    }

    /// S3 options pointing at this server.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint.clone()),
            region: None,
            path_style: true,
            ..Default::default()
        }
    }

    /// `hearth` (the binary at `bin`) with only this store's location in its environment
    /// (namespace `team-a`, cache `shop`): no credentials.
    pub fn hearth_command(&self, bin: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin);
        cmd.env_clear()
            .env("HEARTH_STORE", self.url())
            .env("HEARTH_NAMESPACE", "team-a")
            .env("HEARTH_CACHE", "shop")
            .env("AWS_ENDPOINT_URL_S3", &self.endpoint)
            .env("AWS_S3_FORCE_PATH_STYLE", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }

    /// The store URL with a prefix.
    pub fn url(&self) -> String {
        format!("s3://{BUCKET}/snapshots")
    }

    /// Where the server keeps an object of the store.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join("snapshots").join(key)
    }

    /// Opens the store.
    pub async fn store(&self) -> Store {
        Store::open(&self.url(), &self.options()).await.unwrap()
    }
}

/// s3s-fs with its own GetObject, for the benchmark: the object (or the range asked) is read
/// in one `pread` on the blocking pool and sent as one body. s3s-fs 0.14 streams every object
/// in 4 KiB reads, each a hop to tokio's blocking pool; on a 2-core machine that server, in
/// the benchmark's process, spent more CPU per restored byte than Hearth itself, so the
/// benchmark measured the server, which in production runs elsewhere. Hearth's restore and
/// the baseline's both read through it; every other operation is s3s-fs's.
pub struct FastGet {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
}

#[async_trait::async_trait]
impl s3s::S3 for FastGet {
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        use std::os::unix::fs::FileExt;
        let input = req.input;
        let key = Path::new(&input.key);
        if key.is_absolute()
            || key
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(s3s::s3_error!(InvalidArgument, "bad key"));
        }
        let path = self.root.join(&input.bucket).join(key);
        let range = input.range;
        let read = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(|_| s3s::s3_error!(NoSuchKey))?;
            let meta = file
                .metadata()
                .map_err(|e| s3s::s3_error!(e, InternalError))?;
            let full = meta.len();
            let span = match range {
                None => 0..full,
                Some(r) => r.check(full).map_err(|_| s3s::s3_error!(InvalidRange))?,
            };
            let mut buf = vec![0u8; (span.end - span.start) as usize];
            file.read_exact_at(&mut buf, span.start)
                .map_err(|e| s3s::s3_error!(e, InternalError))?;
            let content_range =
                range.map(|_| format!("bytes {}-{}/{full}", span.start, span.end - 1));
            let modified = meta
                .modified()
                .map_err(|e| s3s::s3_error!(e, InternalError))?;
            Ok::<_, s3s::S3Error>((buf, content_range, modified))
        });
        let (buf, content_range, modified) =
            read.await.map_err(|e| s3s::s3_error!(e, InternalError))??;
        let output = s3s::dto::GetObjectOutput {
            content_length: Some(buf.len() as i64),
            body: Some(s3s::dto::StreamingBlob::from(s3s::Body::from(buf))),
            content_range,
            last_modified: Some(s3s::dto::Timestamp::from(modified)),
            ..Default::default()
        };
        Ok(s3s::S3Response::new(output))
    }

    async fn put_object(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
        self.fs.put_object(req).await
    }

    async fn list_objects_v2(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn delete_object(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }
}

/// A filesystem store in a temporary directory.
pub async fn fs_store(dir: &Path) -> (Store, String) {
    let url = format!("file://{}", dir.display());
    (Store::open(&url, &S3Options::default()).await.unwrap(), url)
}

/// Every object file under `dir` whose name ends with `suffix` (not the file store's
/// temporary files, which a killed writer may leave).
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix)
                && !e.file_name().to_string_lossy().starts_with(".tmp-")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Pseudo-random bytes from a seed (xorshift), for file contents.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn set_mtime(path: &Path, sec: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(sec, nsec);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// Builds a tree with every kind of entry. Returns the paths of the parts that need root
/// (trusted.* and security.* xattrs, foreign owners) when they were made.
/// A fidelity tree at `dir` (created), and the description a restore must reproduce
/// (sockets are skipped by design; snapshot_roundtrip checks that).
pub fn fidelity_source(dir: &Path) -> BTreeMap<Vec<u8>, String> {
    std::fs::create_dir(dir).unwrap();
    fidelity_tree(dir);
    let mut expected = describe(dir);
    expected.remove(b"buildkitd.sock".as_slice());
    expected
}

pub fn fidelity_tree(root: &Path) -> Vec<&'static str> {
    let mut root_only = Vec::new();
    std::fs::create_dir_all(root.join("db/nested/deeper")).unwrap();
    std::fs::create_dir(root.join("empty-dir")).unwrap();
    std::fs::create_dir(root.join("sticky")).unwrap();
    std::fs::set_permissions(root.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir(root.join("setgid")).unwrap();
    std::fs::set_permissions(root.join("setgid"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    std::fs::write(root.join("empty-file"), b"").unwrap();
    std::fs::write(
        root.join("db/nested/small.txt"),
        b"hello hearth\n".repeat(50),
    )
    .unwrap();
    std::fs::write(root.join("db/nested/deeper/big.bin"), noise(1, 3 << 20)).unwrap();
    let text: Vec<u8> = b"compressible layer text ".repeat(100_000);
    std::fs::write(root.join("db/text.txt"), &text).unwrap();
    std::fs::write(root.join("setuid-bin"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        root.join("setuid-bin"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9-latin1")),
        b"not utf-8 name",
    )
    .unwrap();
    std::os::unix::fs::symlink("db/nested/small.txt", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"\xff\xfe-target"),
        root.join("link-bytes"),
    )
    .unwrap();
    std::fs::write(root.join("hard-a"), b"shared inode").unwrap();
    std::fs::hard_link(root.join("hard-a"), root.join("db/hard-b")).unwrap();
    std::fs::hard_link(root.join("hard-a"), root.join("hard-c")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let sock = std::os::unix::net::UnixListener::bind(root.join("buildkitd.sock")).unwrap();
    drop(sock);
    // Sparse: 8 MiB with two 4 KiB data blocks.
    let mut f = std::fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&noise(2, 4096), 1 << 20).unwrap();
    f.write_all_at(&noise(3, 4096), (8 << 20) - 4096).unwrap();
    f.flush().unwrap();
    drop(f);
    xattr::set(
        root.join("db/nested/small.txt"),
        "user.hearth",
        b"value\0with nul",
    )
    .unwrap();
    if is_root() {
        // Overlay whiteout: a 0/0 character device, and an opaque directory.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("db/whiteout"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        xattr::set(root.join("db/nested"), "trusted.overlay.opaque", b"y").unwrap();
        // security.capability v2: cap_net_bind_service permitted and effective.
        let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        std::fs::write(root.join("cap-bin"), b"\x7fELF").unwrap();
        std::fs::set_permissions(root.join("cap-bin"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        xattr::set(root.join("cap-bin"), "security.capability", &cap).unwrap();
        std::os::unix::fs::chown(root.join("db/text.txt"), Some(165577), Some(1000)).unwrap();
        std::os::unix::fs::lchown(root.join("link-rel"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::chown(root.join("sticky"), Some(1000), Some(165577)).unwrap();
        root_only.extend([
            "db/whiteout",
            "trusted.overlay.opaque",
            "security.capability",
            "numeric owners",
        ]);
    }
    // Nanosecond mtimes, set last (children before parents).
    for (i, p) in [
        "hard-a",
        "db/nested/deeper/big.bin",
        "link-rel",
        "fifo",
        "sparse.img",
        "db/nested/deeper",
        "db/nested",
        "db",
        "",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(
            &root.join(p),
            1_600_000_000 + i as i64,
            123_456_789 + i as u32,
        );
    }
    root_only
}

/// A full description of a tree: for each path, everything Hearth must keep.
pub fn describe(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), Vec::new())];
    while let Some((path, rel)) = stack.pop() {
        let m = std::fs::symlink_metadata(&path).unwrap();
        let ft = m.file_type();
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&path)
            .unwrap()
            .map(|n| {
                let v = xattr::get(&path, &n).unwrap().unwrap_or_default();
                (n.as_bytes().to_vec(), v)
            })
            .collect();
        xattrs.sort();
        let what = if ft.is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            children.sort();
            for c in children {
                if rel.is_empty() && c == ".hearth" {
                    continue;
                }
                let mut crel = rel.clone();
                if !crel.is_empty() {
                    crel.push(b'/');
                }
                crel.extend_from_slice(c.as_bytes());
                stack.push((path.join(&c), crel));
            }
            "dir".to_string()
        } else if ft.is_file() {
            let link = if m.nlink() > 1 {
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
                format!(" linked-with={:?}", String::from_utf8_lossy(&first))
            } else {
                String::new()
            };
            let data = std::fs::read(&path).unwrap();
            format!(
                "file size={} blake3={} allocated<={}{link}",
                m.len(),
                blake3::hash(&data),
                m.blocks() * 512 <= m.len().max(4096) * 2
            )
        } else if ft.is_symlink() {
            format!(
                "symlink -> {:?}",
                std::fs::read_link(&path).unwrap().as_os_str().as_bytes()
            )
        } else {
            use std::os::unix::fs::FileTypeExt;
            format!(
                "special char={} fifo={} socket={} rdev={}",
                ft.is_char_device(),
                ft.is_fifo(),
                ft.is_socket(),
                m.rdev()
            )
        };
        let sparse = if ft.is_file() && m.len() >= 8 << 20 {
            format!(" blocks={}", m.blocks())
        } else {
            String::new()
        };
        out.insert(
            rel,
            format!(
                "{what}{sparse} mode={:o} uid={} gid={} mtime={}.{:09} xattrs={xattrs:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            ),
        );
    }
    out
}

/// Asserts two descriptions are equal, showing the first differences.
pub fn assert_same(expected: &BTreeMap<Vec<u8>, String>, actual: &BTreeMap<Vec<u8>, String>) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            Some(a) if a == v => {}
            Some(a) => diffs.push(format!(
                "{:?}:\n  expected {v}\n  actual   {a}",
                String::from_utf8_lossy(k)
            )),
            None => diffs.push(format!("{:?}: missing", String::from_utf8_lossy(k))),
        }
    }
    for k in actual.keys().filter(|k| !expected.contains_key(*k)) {
        diffs.push(format!("{:?}: unexpected", String::from_utf8_lossy(k)));
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}
