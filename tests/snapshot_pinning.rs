//! Snapshots pinned by their manifest's digest, through the real `hearth` binary against both
//! stores (a filesystem and an S3 server on loopback): `save --json` reports the SHA-256 of
//! the manifest it wrote; `restore --manifest-sha256` refuses any other manifest under that
//! snapshot's key (one replaced by someone who can write the store, with the right namespace,
//! cache and id in it) before writing a byte, and restores the real one whatever else was
//! planted beside it; setuid bits and file capabilities are restored only when pinned.

mod snapshot_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use bytes::Bytes;
use hearth::snapshot::catalog;
use hearth::snapshot::layout;
use hearth::snapshot::pin::ManifestDigest;
use hearth::store::Store;
use snapshot_support::*;

const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");
const NS: &str = "team-a";
const CACHE: &str = "shop";

/// Runs `hearth` with the store settings a Job gets in its env.
async fn hearth(env: &[(String, String)], args: &[&str]) -> Output {
    let out = tokio::process::Command::new(HEARTH)
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .env("HEARTH_NAMESPACE", NS)
        .env("HEARTH_CACHE", CACHE)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked at"), "{args:?}: {stderr}");
    out
}

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The restore the controller's Jobs run.
fn pinned_restore<'a>(id: &'a str, dst: &'a str, pin: &'a str) -> [&'a str; 7] {
    [
        "snapshot",
        "restore",
        id,
        dst,
        "--manifest-sha256",
        pin,
        "--json",
    ]
}

/// A small state dir with a setuid binary (and, as root, one with file capabilities).
fn state_tree(root: &Path) {
    std::fs::create_dir_all(root.join("db")).unwrap();
    std::fs::write(root.join("db/cache.db"), noise(7, 300_000)).unwrap();
    std::fs::write(root.join("su"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("su"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(root.join("sgid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("sgid"), std::fs::Permissions::from_mode(0o2755)).unwrap();
    if is_root() {
        // security.capability v2: cap_net_bind_service permitted and effective.
        let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        std::fs::write(root.join("ping"), b"\x7fELF").unwrap();
        xattr::set(root.join("ping"), "security.capability", &cap).unwrap();
    }
}

/// `expected` as an unpinned restore leaves it: setuid/setgid bits and capabilities gone.
fn without_privileges(
    expected: &std::collections::BTreeMap<Vec<u8>, String>,
) -> std::collections::BTreeMap<Vec<u8>, String> {
    let mut out = expected.clone();
    for (path, from, to) in [
        (&b"su"[..], " mode=104755 ", " mode=100755 "),
        (&b"sgid"[..], " mode=102755 ", " mode=100755 "),
    ] {
        let d = out.get_mut(path).unwrap();
        assert!(d.contains(from), "{d}");
        *d = d.replace(from, to);
    }
    if let Some(d) = out.get_mut(&b"ping"[..]) {
        let at = d.find(" xattrs=").unwrap();
        d.replace_range(at.., " xattrs=[]");
    }
    out
}

async fn pinning(store: &Store, env: Vec<(String, String)>) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("state");
    std::fs::create_dir(&src).unwrap();
    state_tree(&src);
    let expected = describe(&src);
    let src_s = src.to_str().unwrap().to_string();
    let saved = ok_json(&hearth(&env, &["snapshot", "save", &src_s, "--json"]).await);
    let id = saved["id"].as_str().unwrap().to_string();
    let pin = saved["manifestSha256"].as_str().unwrap().to_string();
    let key = layout::manifest_key(NS, CACHE, &id);
    let real = store.get(&key).await.unwrap();
    assert_eq!(
        pin,
        ManifestDigest::of(&real).to_string(),
        "the digest of the bytes written"
    );

    // Someone with write access to the store plants a newer snapshot of the cache: the real
    // manifest with another id and a root-owned setuid shell where the database was.
    let mut forged = catalog::load(store, NS, CACHE, &id).await.unwrap();
    for e in forged
        .entries
        .iter_mut()
        .filter(|e| e.path.0 == b"db/cache.db")
    {
        (e.mode, e.uid, e.gid) = (0o4755, 0, 0);
    }
    let planted_id = layout::new_snapshot_id(4_000_000_000_000, 1);
    forged.id = planted_id.clone();
    let planted = forged.encode().unwrap();
    store
        .put(
            &layout::manifest_key(NS, CACHE, &planted_id),
            Bytes::from(planted),
        )
        .await
        .unwrap();

    // The pinned restore the controller starts restores the real snapshot, privileges kept.
    let dst = work.path().join("pinned");
    let dst_s = dst.to_str().unwrap().to_string();
    let r = ok_json(&hearth(&env, &pinned_restore(&id, &dst_s, &pin)).await);
    assert_eq!(
        (r["pinned"].as_bool(), r["strippedPrivileges"].as_u64()),
        (Some(true), Some(0))
    );
    assert_same(&expected, &describe(&dst));

    // By hand, unpinned, `latest` is the planted one (nothing vouches for either): its setuid
    // bit is stripped like every other, with one warning giving the count.
    let dst = work.path().join("unpinned");
    let dst_s = dst.to_str().unwrap().to_string();
    let out = hearth(&env, &["snapshot", "restore", "latest", &dst_s, "--json"]).await;
    let r = ok_json(&out);
    assert_eq!(r["id"].as_str(), Some(planted_id.as_str()));
    let privileged = if is_root() { 4 } else { 3 };
    assert_eq!(
        (r["pinned"].as_bool(), r["strippedPrivileges"].as_u64()),
        (Some(false), Some(privileged))
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("not pinned by a manifest digest").count(),
        1,
        "{stderr}"
    );
    let mode = std::fs::metadata(dst.join("db/cache.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid stripped");
    // The real snapshot restored unpinned loses its privileges the same way.
    let dst = work.path().join("unpinned-real");
    let dst_s = dst.to_str().unwrap().to_string();
    ok_json(&hearth(&env, &["snapshot", "restore", &id, &dst_s, "--json"]).await);
    assert_same(&without_privileges(&expected), &describe(&dst));

    // The real manifest replaced in place by the forgery (right namespace, cache and id, so
    // the manifest's own checks accept it): the pinned restore refuses it, writing nothing.
    forged.id = id.clone();
    let replaced = forged.encode().unwrap();
    let found = ManifestDigest::of(&replaced).to_string();
    store.put(&key, Bytes::from(replaced)).await.unwrap();
    assert!(
        catalog::load(store, NS, CACHE, &id).await.is_ok(),
        "a well-formed forgery"
    );
    let dst = work.path().join("refused");
    let dst_s = dst.to_str().unwrap().to_string();
    let out = hearth(&env, &pinned_restore(&id, &dst_s, &pin)).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in [id.as_str(), pin.as_str(), found.as_str(), "pinned"] {
        assert!(stderr.contains(part), "names {part}: {stderr}");
    }
    assert!(!dst.exists(), "nothing written");
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("hearth-restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Bad input is refused naming the flag and what it expects.
    let out = hearth(
        &env,
        &[
            "snapshot",
            "restore",
            &id,
            &dst_s,
            "--manifest-sha256",
            "abc",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("--manifest-sha256")
            && stderr.contains("64 hex digits"),
        "{stderr}"
    );
    let out = hearth(
        &env,
        &[
            "snapshot",
            "restore",
            "latest",
            &dst_s,
            "--manifest-sha256",
            &pin,
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not \"latest\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_restores_refuse_forged_manifests_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(dir.path()).await;
    pinning(&store, vec![("HEARTH_STORE".into(), url)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_restores_refuse_forged_manifests_s3() {
    let server = S3Server::start().await;
    let store = server.store().await;
    let env = [
        ("HEARTH_STORE", server.url().as_str()),
        ("AWS_ENDPOINT_URL_S3", server.endpoint.as_str()),
        ("AWS_S3_FORCE_PATH_STYLE", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "hearth"),
        ("AWS_SECRET_ACCESS_KEY", "hearth-secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    pinning(&store, env).await;
}

/// gc is not steered by planted manifests: newer ones fill `--retain`, but a snapshot the
/// controller keeps (`--keep`: replicas' and the newest pinned ones) is never forgotten, and
/// still restores, pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_newer_manifests_never_make_gc_forget_a_kept_snapshot() {
    use hearth::snapshot::{gc, restore, save, GcOptions, RestoreOptions, SaveOptions};
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = fs_store(dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("state");
    std::fs::create_dir(&src).unwrap();
    state_tree(&src);
    let saved = save(&store, &src, &SaveOptions::new(&url, NS, CACHE))
        .await
        .unwrap();
    let real = catalog::load(&store, NS, CACHE, &saved.id).await.unwrap();
    let mut planted = Vec::new();
    for i in 0..3 {
        let mut forged = real.clone();
        forged.id = layout::new_snapshot_id(4_000_000_000_000 + i, 9);
        let key = layout::manifest_key(NS, CACHE, &forged.id);
        store
            .put(&key, Bytes::from(forged.encode().unwrap()))
            .await
            .unwrap();
        planted.push(forged.id);
    }
    let mut opts = GcOptions::new(NS);
    opts.cache = Some(CACHE.into());
    opts.retain = Some(1);
    opts.keep = vec![saved.id.clone()];
    let report = gc(&store, &opts).await.unwrap();
    assert_eq!(
        report.forgotten,
        [
            format!("{CACHE}/{}", planted[0]),
            format!("{CACHE}/{}", planted[1])
        ],
        "only planted ones beyond --retain go; the kept one stays"
    );
    let ids = catalog::snapshot_ids(&store, NS, CACHE).await.unwrap();
    assert_eq!(ids, [saved.id.clone(), planted[2].clone()]);
    let mut pinned = RestoreOptions::new(&url, NS, CACHE);
    pinned.manifest_sha256 = Some(saved.manifest_sha256.parse().unwrap());
    let dst = work.path().join("dst");
    restore(&store, &saved.id, &dst, &pinned).await.unwrap();
}
