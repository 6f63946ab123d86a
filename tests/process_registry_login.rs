//! The real `hearth` binary's `registry-login`, run as the builder pod's init container runs
//! it, against loopback fakes of the two token endpoints: ECR's awsJson1.1
//! `GetAuthorizationToken` (reached through `AWS_ENDPOINT_URL_ECR`, static test credentials,
//! the request's SigV4 signature checked for service `ecr` and the host's region) and the GCE
//! metadata server (through `GCE_METADATA_HOST`; it refuses a request without
//! `Metadata-Flavor: Google`). Then the hostile cases: garbage, a 500, a missing header, a
//! host no provider serves.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

const ECR_HOST: &str = "123456789012.dkr.ecr.eu-central-1.amazonaws.com";
const ECR_PASSWORD: &str = "ecr-pa55word-never-printed";
const GCP_HOST: &str = "europe-west1-docker.pkg.dev";
const GCP_TOKEN: &str = "ya29.gcp-token-never-printed";
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "test-secret-key-never-printed";

/// What a fake answers: status, headers, body.
type Answer = (StatusCode, Vec<(&'static str, &'static str)>, String);
/// How a fake answers.
type Answerer = fn(&Seen) -> Answer;

/// One request a fake saw: method, path, headers (lower-case names), body.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// A loopback HTTP server answering every request with `answer(request)`.
struct Fake {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(answer: Answerer) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let request = Seen {
                                    method: parts.method.to_string(),
                                    path: parts.uri.to_string(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(k, v)| {
                                            (k.to_string(), v.to_str().unwrap_or("").to_string())
                                        })
                                        .collect(),
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                let (status, headers, text) = answer(&request);
                                log.lock().unwrap().push(request);
                                let mut response = Response::builder().status(status);
                                for (k, v) in headers {
                                    response = response.header(k, v);
                                }
                                Ok::<_, Infallible>(
                                    response.body(Full::new(Bytes::from(text))).unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Fake { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// An answer of ECR's (awsJson1.1).
fn ecr_answer(status: StatusCode, body: &str) -> Answer {
    let headers = vec![("content-type", "application/x-amz-json-1.1")];
    (status, headers, body.to_string())
}

/// An answer of the metadata server's, which marks each with `Metadata-Flavor: Google`.
fn gce_answer(status: StatusCode, body: &str) -> Answer {
    let headers = vec![
        ("metadata-flavor", "Google"),
        ("content-type", "application/json"),
    ];
    (status, headers, body.to_string())
}

/// ECR's answer, as the service sends it (`expiresAt` in epoch seconds).
fn ecr_ok(request: &Seen) -> Answer {
    let target = request.headers.get("x-amz-target").map(String::as_str);
    if request.method != "POST"
        || target != Some("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken")
    {
        return ecr_answer(StatusCode::BAD_REQUEST, "{}");
    }
    let body = json!({"authorizationData": [{
        "authorizationToken": b64(&format!("AWS:{ECR_PASSWORD}")),
        "expiresAt": 1_900_000_000.0,
        "proxyEndpoint": format!("https://{ECR_HOST}"),
    }]});
    ecr_answer(StatusCode::OK, &body.to_string())
}

fn ecr_garbage(_: &Seen) -> Answer {
    ecr_answer(StatusCode::OK, "<html>captive portal</html>")
}

fn ecr_500(_: &Seen) -> Answer {
    let body = r#"{"__type":"ServerException","message":"the fake broke"}"#;
    ecr_answer(StatusCode::INTERNAL_SERVER_ERROR, body)
}

/// The metadata server: 403 without `Metadata-Flavor: Google`, as the real one.
fn gce_ok(request: &Seen) -> Answer {
    if request.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
        return gce_answer(StatusCode::FORBIDDEN, "Missing Metadata-Flavor");
    }
    if request.path != "/computeMetadata/v1/instance/service-accounts/default/token" {
        return gce_answer(StatusCode::NOT_FOUND, "");
    }
    let body = json!({"access_token": GCP_TOKEN, "expires_in": 3599, "token_type": "Bearer"});
    gce_answer(StatusCode::OK, &body.to_string())
}

fn gce_500(_: &Seen) -> Answer {
    gce_answer(StatusCode::INTERNAL_SERVER_ERROR, "oops")
}

fn gce_garbage(_: &Seen) -> Answer {
    gce_answer(StatusCode::OK, "<html>not json</html>")
}

/// A server that is not the metadata server (no `Metadata-Flavor` in its answer).
fn gce_impostor(_: &Seen) -> Answer {
    let body = format!(r#"{{"access_token":"{GCP_TOKEN}","expires_in":3599}}"#);
    (
        StatusCode::OK,
        vec![("content-type", "application/json")],
        body,
    )
}

/// `hearth registry-login ARGS` with only the fakes' addresses and static AWS test
/// credentials in its environment (HOME empty: no ~/.aws files).
fn login(ecr: &Fake, gce: &Fake, home: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("registry-login")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_ECR", format!("http://{}", ecr.addr))
        .env("GCE_METADATA_HOST", gce.addr.to_string())
        .output()
        .expect("running hearth")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_no_secret(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let s = text(stream);
        for secret in [ECR_PASSWORD, GCP_TOKEN, SECRET_KEY, "Z2g6cA"] {
            assert!(!s.contains(secret), "a credential was printed: {s}");
        }
    }
}

struct Dirs {
    _root: tempfile::TempDir,
    home: std::path::PathBuf,
    base: std::path::PathBuf,
    out: std::path::PathBuf,
}

/// A base config (the push Secret's) with an entry for ghcr.io and a stale one for the ECR
/// registry, and an empty output directory.
fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let (home, base, out) = (
        root.path().join("home"),
        root.path().join("base"),
        root.path().join("out"),
    );
    for d in [&home, &base, &out] {
        std::fs::create_dir(d).unwrap();
    }
    let config = json!({"auths": {
        "ghcr.io": {"auth": "Z2g6cA=="},
        ECR_HOST: {"auth": b64("AWS:stale")},
    }});
    std::fs::write(base.join("config.json"), config.to_string()).unwrap();
    Dirs {
        _root: root,
        home,
        base,
        out,
    }
}

fn written(out: &Path) -> Value {
    let path = out.join("config.json");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "config.json mode");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// `--base` and `--out` of `d`, then `extra` (words split at spaces).
fn args(d: &Dirs, extra: &str) -> Vec<String> {
    let mut a = vec![
        "--base".to_string(),
        d.base.display().to_string(),
        "--out".to_string(),
        d.out.display().to_string(),
    ];
    a.extend(words(extra));
    a
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ecr_and_gcp_logins_merge_over_the_push_secret() {
    let (ecr, gce) = (Fake::start(ecr_ok).await, Fake::start(gce_ok).await);
    let d = dirs();
    let extra = format!("--provider ecr --provider gcp --registry {ECR_HOST} --registry {GCP_HOST} --registry ghcr.io");
    let out = login(&ecr, &gce, &d.home, &args(&d, &extra));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_secret(&out);
    assert_eq!(
        written(&d.out),
        json!({"auths": {
            "ghcr.io": {"auth": "Z2g6cA=="},
            ECR_HOST: {"auth": b64(&format!("AWS:{ECR_PASSWORD}"))},
            GCP_HOST: {"auth": b64(&format!("oauth2accesstoken:{GCP_TOKEN}"))},
        }})
    );
    assert!(
        text(&out.stderr).contains("ghcr.io: no provider of ecr, gcp serves it"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(&format!("{ECR_HOST}: ecr token, expires 2030-")));
    assert!(text(&out.stdout).contains(&format!("{GCP_HOST}: gcp token, expires in 3599s")));

    // ECR: one signed awsJson1.1 call, for service ecr in the host's region.
    let calls = ecr.seen();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.headers["content-type"], "application/x-amz-json-1.1");
    let authorization = &call.headers["authorization"];
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/"))
            && authorization.contains("/eu-central-1/ecr/aws4_request")
            && authorization.contains("Signature="),
        "{authorization}"
    );
    assert!(!authorization.contains(SECRET_KEY));
    assert_eq!(
        serde_json::from_str::<Value>(&call.body).unwrap(),
        json!({})
    );

    // The metadata server: asked once, with its header.
    let asked = gce.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].method, "GET");
    assert_eq!(asked[0].headers["metadata-flavor"], "Google");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_not_named_leaves_its_hosts_untouched_and_no_base_is_fine() {
    let (ecr, gce) = (Fake::start(ecr_ok).await, Fake::start(gce_ok).await);
    let d = dirs();
    let out_dir = d.out.to_str().unwrap();
    // Only gcp: the ECR host stays as the base has it (stale), and ECR is never asked.
    let extra = format!("--provider gcp --registry {ECR_HOST} --registry gcr.io");
    let out = login(&ecr, &gce, &d.home, &args(&d, &extra));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = written(&d.out);
    assert_eq!(config["auths"][ECR_HOST]["auth"], b64("AWS:stale"));
    assert_eq!(
        config["auths"]["gcr.io"]["auth"],
        b64(&format!("oauth2accesstoken:{GCP_TOKEN}"))
    );
    assert!(ecr.seen().is_empty());

    // No base: the logins alone.
    let out = login(
        &ecr,
        &gce,
        &d.home,
        &words(&format!(
            "--provider ecr --registry {ECR_HOST} --out {out_dir}"
        )),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        written(&d.out),
        json!({"auths": {ECR_HOST: {"auth": b64(&format!("AWS:{ECR_PASSWORD}"))}}})
    );
}

/// Each failure: exit 1, a one-line reason naming the endpoint, no config.json at all (even
/// when the other provider's token came).
#[tokio::test(flavor = "multi_thread")]
async fn hostile_endpoints_fail_clearly_and_write_nothing() {
    let both = format!("--provider ecr --provider gcp --registry {ECR_HOST} --registry {GCP_HOST}");
    let cases: [(Answerer, Answerer, &str); 5] = [
        (
            ecr_garbage,
            gce_ok,
            "ECR GetAuthorizationToken in eu-central-1",
        ),
        (ecr_500, gce_ok, "ECR GetAuthorizationToken in eu-central-1"),
        (ecr_ok, gce_500, "HTTP 500"),
        (ecr_ok, gce_impostor, "no Metadata-Flavor: Google header"),
        (ecr_ok, gce_garbage, "not a token answer"),
    ];
    for (ecr_answer, gce_answer, expected) in cases {
        let (ecr, gce) = (Fake::start(ecr_answer).await, Fake::start(gce_answer).await);
        let d = dirs();
        let out = login(&ecr, &gce, &d.home, &args(&d, &both));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{expected}: {stderr}");
        assert!(
            stderr.contains(expected),
            "wanted {expected:?} in: {stderr}"
        );
        assert_no_secret(&out);
        assert_eq!(
            std::fs::read_dir(&d.out).unwrap().count(),
            0,
            "{expected}: something was written"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_that_is_not_a_docker_config_is_refused_without_quoting_it() {
    let (ecr, gce) = (Fake::start(ecr_ok).await, Fake::start(gce_ok).await);
    let d = dirs();
    std::fs::write(
        d.base.join("config.json"),
        r#"{"auths": {"ghcr.io": "Z2g6cA"#,
    )
    .unwrap();
    let out = login(
        &ecr,
        &gce,
        &d.home,
        &args(&d, &format!("--provider ecr --registry {ECR_HOST}")),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a docker config.json"),
        "{}",
        text(&out.stderr)
    );
    assert_no_secret(&out);
    assert_eq!(std::fs::read_dir(&d.out).unwrap().count(), 0);
}
