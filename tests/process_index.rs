//! The real `hearth` binary's `index create`, run as the index Job runs it (the contract's
//! args, `DOCKER_CONFIG`, one line of JSON on stdout), against the loopback OCI registry
//! with token auth: the pushed index, then what it refuses.

mod registry_support;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use bytes::Bytes;
use registry_support::*;
use serde_json::{json, Value};

const USER: &str = "ci-robot";
const PASSWORD: &str = "pa55-w0rd-never-printed";

fn token_auth() -> AuthMode {
    AuthMode::Token {
        username: USER.into(),
        password: PASSWORD.into(),
        realm: None,
    }
}

/// A DOCKER_CONFIG dir whose config.json holds `password` for `registry`.
fn docker_config(dir: &Path, registry: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    let config = json!({"auths": {registry: {"auth": auth}}});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// `hearth index create ARGS` with only DOCKER_CONFIG (and PATH) in its environment.
fn index_create(config: &Path, args: &[String]) -> Output {
    index_create_with(config, args, &[])
}

/// As [`index_create`], with `env` added (as the index Job's CA bundles are).
fn index_create_with(config: &Path, args: &[String], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["index", "create"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DOCKER_CONFIG", config)
        .envs(env.iter().copied())
        .output()
        .expect("running hearth")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Neither the password nor anything that carries it (basic auth's base64) was printed.
fn assert_no_secret(out: &Output) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for stream in [&out.stdout, &out.stderr] {
        let s = text(stream);
        assert!(
            !s.contains(PASSWORD) && !s.contains(&basic),
            "a credential was printed: {s}"
        );
    }
}

async fn manifest_size(base: &str, repo: &str, digest: &str) -> usize {
    let creds = Some((USER, PASSWORD));
    get_manifest(base, repo, digest, creds)
        .await
        .unwrap()
        .1
        .len()
}

/// A token-auth registry holding one linux/amd64 image in shop/app: the registry, its
/// `host:port` and the image's digest.
async fn registry_with_amd_image() -> (RegistryServer, String, String) {
    let registry = RegistryServer::start(token_auth()).await;
    let host = registry.addr.to_string();
    let creds = Some((USER, PASSWORD));
    let amd = push_image(
        &registry.base,
        "shop/app",
        None,
        "linux/amd64",
        "amd",
        creds,
    )
    .await
    .unwrap();
    (registry, host, amd)
}

/// A child with attestations, as BuildKit pushes one: an index of the image manifest and an
/// attestation manifest (platform unknown/unknown), pushed by digest.
async fn push_child_with_attestation(base: &str, repo: &str) -> (String, String, String) {
    let creds = Some((USER, PASSWORD));
    let image = push_image(base, repo, None, "linux/arm64/v8", "arm", creds)
        .await
        .unwrap();
    let attestation = push_image(base, repo, None, "unknown/unknown", "att", creds)
        .await
        .unwrap();
    let index = Bytes::from(
        json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": image, "size": manifest_size(base, repo, &image).await,
                 "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "digest": attestation, "size": manifest_size(base, repo, &attestation).await,
                 "platform": {"architecture": "unknown", "os": "unknown"},
                 "annotations": {"vnd.docker.reference.digest": image,
                                 "vnd.docker.reference.type": "attestation-manifest"}},
            ],
        })
        .to_string(),
    );
    let digest = digest_of(&index);
    push_manifest(base, repo, &digest, OCI_INDEX, index, creds)
        .await
        .unwrap();
    (digest, image, attestation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_create_pushes_the_index_under_every_name_with_token_auth() {
    let registry = RegistryServer::start(token_auth()).await;
    let host = registry.addr.to_string();
    let base = registry.base.clone();
    let creds = Some((USER, PASSWORD));
    let amd = push_image(&base, "shop/app", None, "linux/amd64", "amd", creds)
        .await
        .unwrap();
    let (arm_index, arm, attestation) = push_child_with_attestation(&base, "shop/app").await;
    let config = tempfile::tempdir().unwrap();
    docker_config(config.path(), &host, PASSWORD);

    // The index Job's args, in the contract's order.
    let args: Vec<String> = [
        "--source",
        &format!("{host}/shop/app@{amd}"),
        "--source",
        &format!("{host}/shop/app@{arm_index}"),
        "--target",
        &format!("{host}/shop/app:v1"),
        "--target",
        &format!("{host}/shop/release:stable"),
        "--annotation",
        "org.opencontainers.image.version=1.0",
        "--plain-http",
        &host,
        "--json",
    ]
    .map(String::from)
    .into();
    let out = index_create(config.path(), &args);
    assert!(out.status.success(), "hearth failed: {}", text(&out.stderr));
    assert_no_secret(&out);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    assert!(stdout.len() < 4096);
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["mediaType"], OCI_INDEX);
    assert_eq!(result["manifests"], 3);
    assert_eq!(
        result["targets"],
        json!([
            format!("{host}/shop/app:v1"),
            format!("{host}/shop/release:stable")
        ])
    );
    let digest = result["digest"].as_str().unwrap();

    for (repo, tag) in [("shop/app", "v1"), ("shop/release", "stable")] {
        let (content_type, bytes) = get_manifest(&base, repo, tag, creds).await.unwrap();
        assert_eq!(content_type, OCI_INDEX);
        assert_eq!(digest_of(&bytes), digest, "{repo}:{tag}");
        assert_eq!(result["size"], bytes.len());
        let index: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(
            index["annotations"]["org.opencontainers.image.version"],
            "1.0"
        );
        let manifests = index["manifests"].as_array().unwrap();
        let got: Vec<(&str, &Value)> = manifests
            .iter()
            .map(|m| (m["digest"].as_str().unwrap(), &m["platform"]))
            .collect();
        assert_eq!(
            got,
            [
                (
                    amd.as_str(),
                    &json!({"architecture": "amd64", "os": "linux"})
                ),
                (
                    arm.as_str(),
                    &json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
                ),
                (
                    attestation.as_str(),
                    &json!({"architecture": "unknown", "os": "unknown"})
                ),
            ]
        );
        assert_eq!(
            manifests[2]["annotations"]["vnd.docker.reference.digest"],
            arm.as_str()
        );
        // Each child is there, in this repository too.
        for m in manifests {
            let d = m["digest"].as_str().unwrap();
            let (_, child) = get_manifest(&base, repo, d, creds).await.unwrap();
            assert_eq!(m["size"], child.len());
        }
    }
    // The other repository got the blobs by cross-repository mount, not by upload.
    let log = registry.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST /v2/shop/release/blobs/uploads/") && l.ends_with("201")),
        "no mount: {log:#?}"
    );
    // The same inputs give the same index.
    let again = index_create(config.path(), &args);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["digest"], digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_give_a_clear_error_without_the_password() {
    let (registry, host, amd) = registry_with_amd_image().await;
    let config = tempfile::tempdir().unwrap();
    docker_config(config.path(), &format!("http://{host}"), "not-the-password");
    let out = index_create(
        config.path(),
        &[
            "--source".into(),
            format!("{host}/shop/app@{amd}"),
            "--target".into(),
            format!("{host}/shop/app:v1"),
            "--plain-http".into(),
            host.clone(),
            "--json".into(),
        ],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("--source {host}/shop/app@{amd}"))
            && stderr.contains("401")
            && stderr.contains("UNAUTHORIZED")
            && stderr.contains("credentials of $DOCKER_CONFIG/config.json were refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    assert_eq!(registry.tag("shop/app", "v1"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_oversized_sources_are_refused() {
    let (registry, host, amd) = registry_with_amd_image().await;
    let creds = Some((USER, PASSWORD));
    let arm = push_image(
        &registry.base,
        "shop/app",
        None,
        "linux/arm64",
        "arm",
        creds,
    )
    .await
    .unwrap();
    let config = tempfile::tempdir().unwrap();
    docker_config(config.path(), &host, PASSWORD);
    let run = |source: &str| {
        index_create(
            config.path(),
            &[
                "--source".into(),
                format!("{host}/shop/app@{amd}"),
                "--source".into(),
                format!("{host}/shop/app@{source}"),
                "--target".into(),
                format!("{host}/shop/app:v1"),
                "--plain-http".into(),
                host.clone(),
            ],
        )
    };
    // The registry serves other bytes (the amd64 manifest) for the arm64 digest.
    let (content_type, amd_bytes) = registry.manifest("shop/app", &amd).unwrap();
    registry.forge_manifest("shop/app", &arm, &content_type, &amd_bytes);
    let out = run(&arm);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("--source {host}/shop/app@{arm}"))
            && stderr.contains(&format!("whose digest is {amd}"))
            && stderr.contains("refused"),
        "{stderr}"
    );
    assert_no_secret(&out);
    // A manifest over 4 MiB is not read whole.
    let mut huge = amd_bytes.to_vec();
    huge.extend(std::iter::repeat_n(b' ', 5 << 20));
    registry.forge_manifest("shop/app", &arm, &content_type, &huge);
    let out = run(&arm);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("more than 4194304 bytes"), "{stderr}");
    assert_eq!(registry.tag("shop/app", "v1"), None, "nothing pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_token_realm_of_an_https_registry_gets_no_credentials() {
    // The realm is an HTTP server on loopback that records what reaches it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm_addr = listener.local_addr().unwrap();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = reached.clone();
    let realm_task = tokio::spawn(async move {
        if listener.accept().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let registry = RegistryServer::start_with(
        AuthMode::Token {
            username: USER.into(),
            password: PASSWORD.into(),
            realm: Some(format!("http://{realm_addr}/token")),
        },
        true,
    )
    .await;
    let host = registry.addr.to_string();
    let config = tempfile::tempdir().unwrap();
    docker_config(config.path(), &host, PASSWORD);
    let digest = digest_of(b"any");
    let out = index_create(
        config.path(),
        &[
            "--source".into(),
            format!("{host}/shop/app@{digest}"),
            "--target".into(),
            format!("{host}/shop/app:v1"),
            "--insecure".into(),
            host.clone(),
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("token realm http://{realm_addr}/token is not"))
            && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(!reached.load(std::sync::atomic::Ordering::SeqCst));
    realm_task.abort();
}

#[test]
fn bad_arguments_are_refused_before_any_request() {
    let config = tempfile::tempdir().unwrap();
    let d = digest_of(b"x");
    let other_registry = format!("ghcr.io/shop/app@{d}");
    let same_registry = format!("127.0.0.1:5000/shop/app@{d}");
    let cases = [
        (
            vec![
                "--source",
                "127.0.0.1:5000/shop/app:v1",
                "--target",
                "127.0.0.1:5000/shop/app:v1",
            ],
            "--source 127.0.0.1:5000/shop/app:v1: expected <repository>@sha256:<hex>".to_string(),
        ),
        (
            vec![
                "--source",
                &same_registry,
                "--source",
                &other_registry,
                "--target",
                "127.0.0.1:5000/shop/app:v1",
            ],
            "the children must be in one registry".to_string(),
        ),
        (
            vec![
                "--source",
                &same_registry,
                "--target",
                "127.0.0.1:5000/shop/app:v1",
                "--annotation",
                "novalue",
            ],
            "--annotation novalue: expected KEY=VALUE".to_string(),
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = index_create(config.path(), &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_challenge_gets_the_config_credentials() {
    let registry = RegistryServer::start(AuthMode::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    })
    .await;
    let host = registry.addr.to_string();
    let config = tempfile::tempdir().unwrap();
    let run = |password: &str| {
        docker_config(config.path(), &host, password);
        index_create(
            config.path(),
            &[
                "--source".into(),
                format!("{host}/shop/app@{}", digest_of(b"missing")),
                "--target".into(),
                format!("{host}/shop/app:v1"),
                "--plain-http".into(),
                host.clone(),
            ],
        )
    };
    let out = run("wrong");
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("401") && stderr.contains("were refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong"), "{stderr}");
    // The right password gets past auth to the registry's answer for an unknown digest.
    let out = run(PASSWORD);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("404") && stderr.contains("MANIFEST_UNKNOWN"),
        "{stderr}"
    );
    assert_no_secret(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_token_is_traded_at_the_realm() {
    let (registry, host, amd) = registry_with_amd_image().await;
    let config = tempfile::tempdir().unwrap();
    let run = |token: &str| {
        let config_json =
            json!({"auths": {format!("https://{host}/v1/"): {"identitytoken": token}}});
        std::fs::write(config.path().join("config.json"), config_json.to_string()).unwrap();
        index_create(
            config.path(),
            &[
                "--source".into(),
                format!("{host}/shop/app@{amd}"),
                "--target".into(),
                format!("{host}/shop/app:v1"),
                "--plain-http".into(),
                host.clone(),
                "--json".into(),
            ],
        )
    };
    let out = run("not-the-token");
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("were refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-token"), "{stderr}");
    let out = run(PASSWORD);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_secret(&out);
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        registry.tag("shop/app", "v1").as_deref(),
        result["digest"].as_str()
    );
    // The refresh token went in POST bodies, never in a URL.
    assert!(registry.log().iter().all(|l| !l.contains(PASSWORD)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_in_another_registry_gets_the_blobs_streamed_there() {
    let source = RegistryServer::start(token_auth()).await;
    // The other registry has its own user.
    let target = RegistryServer::start(AuthMode::Token {
        username: "mirror-bot".into(),
        password: "mirror-pass".into(),
        realm: None,
    })
    .await;
    let (from, to) = (source.addr.to_string(), target.addr.to_string());
    let creds = Some((USER, PASSWORD));
    let amd = push_image(&source.base, "shop/app", None, "linux/amd64", "amd", creds)
        .await
        .unwrap();
    let (arm_index, arm, attestation) = push_child_with_attestation(&source.base, "shop/app").await;
    let config = tempfile::tempdir().unwrap();
    let basic =
        |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    let config_json = json!({"auths": {
        from.clone(): {"auth": basic(USER, PASSWORD)},
        to.clone(): {"auth": basic("mirror-bot", "mirror-pass")},
    }});
    std::fs::write(config.path().join("config.json"), config_json.to_string()).unwrap();
    // The first streamed blob's PUT meets a busy registry: the blob is copied anew.
    target.set_busy_on("PUT /v2/mirror/app/blobs/uploads/", 1);
    let out = index_create(
        config.path(),
        &[
            "--source",
            &format!("{from}/shop/app@{amd}"),
            "--source",
            &format!("{from}/shop/app@{arm_index}"),
            "--target",
            &format!("{from}/shop/app:v1"),
            "--target",
            &format!("{to}/mirror/app:v1"),
            "--plain-http",
            &from,
            "--plain-http",
            &to,
            "--json",
        ]
        .map(String::from),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = result["digest"].as_str().unwrap();
    assert_eq!(source.tag("shop/app", "v1").as_deref(), Some(digest));
    let mirror = ("mirror-bot", "mirror-pass");
    let (_, bytes) = get_manifest(&target.base, "mirror/app", "v1", Some(mirror))
        .await
        .unwrap();
    assert_eq!(digest_of(&bytes), digest);
    // Every child manifest, and every blob they name, is in the other registry now.
    for child in [&amd, &arm, &attestation, &arm_index] {
        let (_, m) = get_manifest(&target.base, "mirror/app", child, Some(mirror))
            .await
            .unwrap();
        assert_eq!(digest_of(&m), *child);
        let m: Value = serde_json::from_slice(&m).unwrap();
        let blobs = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(m.get("config"));
        for blob in blobs {
            let d = blob["digest"].as_str().unwrap();
            let b = get_blob(&target.base, "mirror/app", d, Some(mirror))
                .await
                .unwrap();
            assert_eq!(digest_of(&b), d);
        }
    }
    // Uploaded (POST then PUT with the digest), not mounted.
    let log = target.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("PUT /v2/mirror/app/blobs/uploads/") && l.ends_with("201")),
        "{log:#?}"
    );
    let busy: Vec<_> = log.iter().filter(|l| l.ends_with("-> 503")).collect();
    assert_eq!(busy.len(), 1, "{log:#?}");
    assert!(busy[0].starts_with("PUT /v2/mirror/app/blobs/uploads/"));
    assert!(
        text(&out.stderr).contains("attempt 2 of 4"),
        "{}",
        text(&out.stderr)
    );
    assert_no_secret(&out);
}

/// A child as the fan-out pushes it with attestations, an index of one platform's image,
/// placed straight into the registry's store (the test pusher speaks no TLS): indexed into
/// its own repository, no blob is read. Returns the child's and the image's digests.
fn placed_child(registry: &RegistryServer, repository: &str) -> (String, String) {
    let image = digest_of(b"the amd64 manifest");
    let child = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": image, "size": 18,
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    })
    .to_string();
    let child_digest = digest_of(child.as_bytes());
    registry.forge_manifest(repository, &image, OCI_MANIFEST, b"the amd64 manifest");
    registry.forge_manifest(repository, &child_digest, OCI_INDEX, child.as_bytes());
    (child_digest, image)
}

/// A registry whose certificate chains to a private CA (the operator's
/// `buildkitd.registries[].ca`): trusted through `--ca-env HOST=VAR`, as the index Job is given
/// it, and refused without it (the system roots do not know that CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_a_private_ca_is_trusted_through_ca_env_only() {
    let registry = RegistryServer::start_with(token_auth(), true).await;
    let host = registry.addr.to_string();
    let ca = registry.ca_pem.clone().expect("a TLS registry's CA");
    let (child_digest, image) = placed_child(&registry, "shop/app");
    let config = tempfile::tempdir().unwrap();
    docker_config(config.path(), &host, PASSWORD);
    let args = |extra: &[String]| {
        let mut a = vec![
            "--source".to_string(),
            format!("{host}/shop/app@{child_digest}"),
            "--target".into(),
            format!("{host}/shop/app:v1"),
        ];
        a.extend_from_slice(extra);
        a
    };
    let run = |extra: &[String], ca: Option<&str>| {
        let env: Vec<(&str, &str)> = ca
            .map(|ca| ("HEARTH_REGISTRY_CA_0", ca))
            .into_iter()
            .collect();
        index_create_with(config.path(), &args(extra), &env)
    };

    let untrusted = run(&[], None);
    assert!(!untrusted.status.success());
    let stderr = text(&untrusted.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert_eq!(registry.tag("shop/app", "v1"), None);

    let ca_env = [
        "--ca-env".to_string(),
        format!("{host}=HEARTH_REGISTRY_CA_0"),
    ];
    let missing = run(&ca_env, None);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains(&format!(
            "--ca-env {host}=HEARTH_REGISTRY_CA_0: HEARTH_REGISTRY_CA_0 holds no PEM certificate"
        )),
        "{}",
        text(&missing.stderr)
    );

    let trusted = run(&ca_env, Some(&ca));
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    let index = registry.tag("shop/app", "v1").expect("the index pushed");
    let (_, body) = registry.manifest("shop/app", &index).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["manifests"][0]["digest"], image.as_str());
}

/// A registry that answers 503 for a while (restarting, or a proxy timing out before it):
/// each request is sent again, up to 4 times, honouring `Retry-After`, then the Job fails
/// naming the status and how many times it tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_registry_is_retried_then_given_up_with_the_status() {
    let (registry, host, amd) = registry_with_amd_image().await;
    let config = tempfile::tempdir().unwrap();
    docker_config(config.path(), &host, PASSWORD);
    let args: Vec<String> = [
        "--source",
        &format!("{host}/shop/app@{amd}"),
        "--target",
        &format!("{host}/shop/app:v1"),
        "--plain-http",
        &host,
    ]
    .map(String::from)
    .into();

    // Three in a row, at the first request (and so at the token realm too).
    registry.set_busy(3);
    let out = index_create(config.path(), &args);
    assert!(out.status.success(), "hearth failed: {}", text(&out.stderr));
    let busy = registry
        .log()
        .iter()
        .filter(|l| l.ends_with("-> 503"))
        .count();
    assert_eq!(busy, 3, "{:#?}", registry.log());
    assert!(registry.tag("shop/app", "v1").is_some());
    assert!(
        text(&out.stderr).contains("attempt 2 of 4"),
        "{}",
        text(&out.stderr)
    );
    assert_no_secret(&out);

    // Down for good: four attempts at the first request, then a clear failure.
    registry.set_busy(1000);
    let out = index_create(config.path(), &args);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("503"), "{stderr}");
    assert!(stderr.contains("attempt 4 of 4"), "{stderr}");
    assert!(!stderr.contains("attempt 5"), "{stderr}");
    assert_no_secret(&out);
}

/// The builders' proxy settings, as the index Job gets them: an https registry through a
/// CONNECT tunnel, a plain-HTTP one through the proxy in absolute form, each with the proxy's
/// credentials (never printed); NO_PROXY goes direct; a proxy scheme it cannot speak is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_are_reached_through_the_environments_proxy() {
    let proxy = HttpProxy::start().await;
    let proxy_url = format!("http://squid:pr0xy-secret@{}", proxy.addr);

    // https, private CA: CONNECT.
    let tls = RegistryServer::start_with(token_auth(), true).await;
    let host = tls.addr.to_string();
    let ca = tls.ca_pem.clone().unwrap();
    let (amd, _) = placed_child(&tls, "shop/app");
    let config = tempfile::tempdir().unwrap();
    docker_config(config.path(), &host, PASSWORD);
    let args: Vec<String> = [
        "--source",
        &format!("{host}/shop/app@{amd}"),
        "--target",
        &format!("{host}/shop/app:v1"),
        "--ca-env",
        &format!("{host}=HEARTH_REGISTRY_CA_0"),
    ]
    .map(String::from)
    .into();
    let env = |proxy_var: &'static str, no_proxy: &'static str| {
        vec![
            ("HEARTH_REGISTRY_CA_0", ca.clone()),
            (proxy_var, proxy_url.clone()),
            ("NO_PROXY", no_proxy.to_string()),
        ]
    };
    let run = |args: &[String], env: Vec<(&str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        index_create_with(config.path(), args, &env)
    };
    let out = run(&args, env("HTTPS_PROXY", ""));
    assert!(out.status.success(), "hearth failed: {}", text(&out.stderr));
    assert!(tls.tag("shop/app", "v1").is_some());
    assert!(
        proxy.log().contains(&format!("CONNECT {host} auth")),
        "{:?}",
        proxy.log()
    );
    assert!(!text(&out.stderr).contains("pr0xy-secret"));

    // NO_PROXY names the host: direct, the proxy sees nothing more.
    let before = proxy.log().len();
    let out = run(&args, env("HTTPS_PROXY", "example.org,127.0.0.1"));
    assert!(out.status.success(), "hearth failed: {}", text(&out.stderr));
    assert_eq!(proxy.log().len(), before, "{:?}", proxy.log());

    // Plain HTTP: requests in absolute form to the proxy, with its credentials.
    let plain = RegistryServer::start(token_auth()).await;
    let phost = plain.addr.to_string();
    let creds = Some((USER, PASSWORD));
    let arm = push_image(&plain.base, "shop/app", None, "linux/arm64", "arm", creds)
        .await
        .unwrap();
    docker_config(config.path(), &phost, PASSWORD);
    let pargs: Vec<String> = [
        "--source",
        &format!("{phost}/shop/app@{arm}"),
        "--target",
        &format!("{phost}/shop/app:v2"),
        "--plain-http",
        &phost,
    ]
    .map(String::from)
    .into();
    let out = run(&pargs, env("HTTP_PROXY", ""));
    assert!(out.status.success(), "hearth failed: {}", text(&out.stderr));
    assert!(plain.tag("shop/app", "v2").is_some());
    assert!(
        proxy
            .log()
            .iter()
            .any(|l| l.starts_with(&format!("GET http://{phost}/v2/")) && l.ends_with(" auth")),
        "{:?}",
        proxy.log()
    );

    // A proxy it cannot speak: refused, the variable named.
    let out = run(
        &pargs,
        vec![("HTTP_PROXY", "socks5://127.0.0.1:1080".to_string())],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("HTTP_PROXY: a socks5:// proxy is not supported"),
        "{}",
        text(&out.stderr)
    );
}
