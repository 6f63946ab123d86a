//! `hearth snapshot` against an S3 server over HTTPS, as the real binary, trusting a private
//! CA given as `SSL_CERT_FILE` (as with a MinIO behind a cluster's own CA): the SDK's HTTP
//! client (rustls with ring chosen explicitly, so it never depends on the process default
//! provider) must verify and talk TLS; the other tests' S3 server is plain HTTP.

mod snapshot_support;
#[path = "cluster/apiserver/tls.rs"]
mod tls;

use snapshot_support::{assert_same, describe, fidelity_source, S3Server};

const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_and_restore_through_an_https_s3_endpoint() {
    let (ca, acceptor) = tls::make();
    let server = S3Server::start_tls(acceptor).await;
    assert!(server.endpoint.starts_with("https://"));
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let src = work.path().join("state");
    let before = fidelity_source(&src);
    let dst = work.path().join("restored");
    let run = move |args: &[&str]| {
        let out = server
            .hearth_command(HEARTH)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "hearth")
            .env("AWS_SECRET_ACCESS_KEY", "hearth-secret")
            .env("SSL_CERT_FILE", &ca_file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked at"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {}\n{stderr}", out.status);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (src_s, dst_s) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let (src_s, dst_s) = (src_s.to_string(), dst_s.to_string());
    let restored = tokio::task::spawn_blocking(move || {
        let saved = run(&["snapshot", "save", &src_s, "--json"]);
        let id = saved["id"].as_str().unwrap().to_string();
        let pin = saved["manifestSha256"].as_str().unwrap().to_string();
        let pin = ["--manifest-sha256", &pin];
        run(&[&["snapshot", "restore", &id, &dst_s, "--json"][..], &pin].concat());
    });
    restored.await.unwrap();
    assert_same(&before, &describe(&dst));
}
