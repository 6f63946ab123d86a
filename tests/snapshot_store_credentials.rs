//! `hearth snapshot` as the real binary against the loopback S3 server (which checks SigV4
//! signatures against one access key), with the credentials given as the snapshot Jobs give
//! them: files in `HEARTH_STORE_CREDENTIALS_DIR`, the mounted store Secret. Files win over the
//! AWS variables and never fall back to them; a missing file is named with its Secret; no
//! output ever holds a credential.

mod snapshot_support;

use std::path::Path;
use std::process::Output;

use snapshot_support::{assert_same, describe, fidelity_source, S3Server};

const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");
/// What the loopback server accepts (see `S3Server::start`).
const ACCESS_KEY: &str = "hearth";
const SECRET_KEY: &str = "hearth-secret";

/// A Secret as Kubernetes projects it: one file per key, with the newline `--from-file` keeps.
fn secret_dir(root: &Path, name: &str, keys: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    for (key, value) in keys {
        std::fs::write(dir.join(key), format!("{value}\n")).unwrap();
    }
    dir
}

/// Runs `hearth` with only the store's location in its environment, plus `extra`.
fn hearth(server: &S3Server, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let out = server
        .hearth_command(HEARTH)
        .args(args)
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("panicked at"), "{args:?}: {all}");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_and_restore_with_credentials_only_as_files() {
    let server = S3Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let creds = secret_dir(
        work.path(),
        "store-credentials",
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    );
    let src = work.path().join("state");
    let before = fidelity_source(&src);
    let dst = work.path().join("restored");
    let files = [
        ("HEARTH_STORE_CREDENTIALS_DIR", creds.to_str().unwrap()),
        ("HEARTH_STORE_CREDENTIALS_SECRET", "hearth-store"),
    ];
    let (src_s, dst_s) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let saved = hearth(&server, &["snapshot", "save", src_s, "--json"], &files);
    assert!(saved.status.success(), "save: {}", stderr(&saved));
    let saved: serde_json::Value = serde_json::from_slice(&saved.stdout).unwrap();
    let id = saved["id"].as_str().unwrap();
    // Pinned, as the controller restores: setuid bits and capabilities come back.
    let digest = saved["manifestSha256"].as_str().unwrap();
    let restored = hearth(
        &server,
        &[
            "snapshot",
            "restore",
            id,
            dst_s,
            "--manifest-sha256",
            digest,
            "--json",
        ],
        &files,
    );
    assert!(restored.status.success(), "restore: {}", stderr(&restored));
    assert_same(&before, &describe(&dst));

    // By hand, without the dir, the usual AWS variables still work.
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let listed = hearth(&server, &["snapshot", "ls", "--json"], &env);
    assert!(listed.status.success(), "ls: {}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_missing_or_absent_credentials_fail_without_showing_them() {
    let server = S3Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("state");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("cache.db"), b"bbolt").unwrap();
    let src_s = src.to_str().unwrap();
    let save = ["snapshot", "save", src_s, "--json"];
    let good_env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];

    // Wrong credentials in the files: refused by the server, even with good ones in the
    // environment (the files are the only source when the dir is given).
    let wrong = secret_dir(
        work.path(),
        "wrong",
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", "Wr0ng/Secret+Value"),
        ],
    );
    let mut extra = vec![("HEARTH_STORE_CREDENTIALS_DIR", wrong.to_str().unwrap())];
    extra.extend(good_env);
    let out = hearth(&server, &save, &extra);
    let err = stderr(&out);
    assert!(!out.status.success(), "wrong secret accepted: {err}");
    assert!(
        !err.contains("Wr0ng/Secret+Value") && !err.contains(SECRET_KEY),
        "{err}"
    );

    // A Secret without AWS_SECRET_ACCESS_KEY: the error names the file and the Secret.
    let partial = secret_dir(
        work.path(),
        "partial",
        &[("AWS_ACCESS_KEY_ID", "AKIA-ONLY-ID")],
    );
    let out = hearth(
        &server,
        &save,
        &[
            ("HEARTH_STORE_CREDENTIALS_DIR", partial.to_str().unwrap()),
            ("HEARTH_STORE_CREDENTIALS_SECRET", "team-a-store"),
        ],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}/AWS_SECRET_ACCESS_KEY", partial.display()))
            && err.contains("\"team-a-store\""),
        "{err}"
    );
    assert!(!err.contains("AKIA-ONLY-ID"), "{err}");

    // No credentials anywhere: the server refuses the anonymous request.
    let out = hearth(&server, &save, &[]);
    assert!(
        !out.status.success(),
        "saved without credentials: {}",
        stderr(&out)
    );

    // And nothing of these attempts reached the store.
    let listed = hearth(&server, &["snapshot", "ls", "--json"], &good_env);
    assert!(listed.status.success(), "ls: {}", stderr(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed, serde_json::json!([]));
}
