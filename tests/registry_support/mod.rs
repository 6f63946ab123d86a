//! A loopback OCI distribution registry for tests, written from the distribution spec: blobs
//! (monolithic and chunked uploads, cross-repository mounts), manifests by tag and digest with
//! their content types (an image manifest's blobs and an index's manifests must be in the
//! repository first), HEAD, and optional auth: Bearer tokens from a realm endpoint that
//! checks basic credentials, each token scoped to repositories and actions; or plain Basic.
//! 127.0.0.1 only, plain HTTP or TLS; stopped when dropped. [`push_image`] is a small client
//! that pushes a one-layer image through the same protocol (`client.rs`).
#![allow(dead_code)]

// The fake API server's certificate maker. A test binary with the cluster loads the file a
// second time (as cluster::apiserver::tls); both copies are the same code.
#[allow(clippy::duplicate_mod)]
#[path = "../cluster/apiserver/tls.rs"]
mod tls;

mod client;
// Not every test binary uses each of them.
#[allow(unused_imports)]
pub use client::{get_blob, get_manifest, push_image, push_manifest, split_platform};

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const SERVICE: &str = "loopback-registry";
const MAX_MANIFEST: usize = 4 << 20;

/// How clients must authenticate.
#[derive(Clone, Debug, Default)]
pub enum AuthMode {
    /// Anyone may pull and push.
    #[default]
    Anonymous,
    /// `Authorization: Basic` with these credentials on every request.
    Basic { username: String, password: String },
    /// Bearer tokens from `<base>/token`, which takes these basic credentials; `realm`
    /// overrides the realm advertised in challenges (a hostile registry).
    Token {
        username: String,
        password: String,
        realm: Option<String>,
    },
}

/// What a test can see and change.
#[derive(Default)]
pub struct State {
    /// Blob bytes by digest, and the repositories each is linked into.
    blobs: BTreeMap<String, Bytes>,
    links: BTreeSet<(String, String)>,
    /// (repository, digest) -> (content type, bytes). Bytes need not hash to the digest
    /// when a test forged them.
    manifests: BTreeMap<(String, String), (String, Bytes)>,
    tags: BTreeMap<(String, String), String>,
    uploads: BTreeMap<String, (String, Vec<u8>)>,
    /// token -> granted (repository, action) pairs.
    tokens: BTreeMap<String, BTreeSet<(String, String)>>,
    next_id: u64,
    /// The next `.1` requests whose "METHOD PATH" starts with `.0` are answered `503` with
    /// `Retry-After: 0` (a registry restarting, or a proxy before it timing out).
    pub busy: (String, u32),
    /// "METHOD PATH?QUERY -> STATUS" of every request, and every Authorization header seen.
    pub log: Vec<String>,
    pub authorizations: Vec<String>,
}

/// A running registry.
pub struct RegistryServer {
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// `http://` or `https://` and the address.
    pub base: String,
    pub state: Arc<Mutex<State>>,
    /// With TLS, the PEM of the CA its throwaway certificate chains to.
    pub ca_pem: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    auth: AuthMode,
    base: String,
    state: Arc<Mutex<State>>,
}

impl RegistryServer {
    /// Starts a plain-HTTP registry on a free port of 127.0.0.1.
    pub async fn start(auth: AuthMode) -> RegistryServer {
        Self::start_with(auth, false).await
    }

    /// Starts a registry; `tls` serves HTTPS with a throwaway certificate (clients verify it
    /// against [`RegistryServer::ca_pem`], or not at all: `--insecure`).
    pub async fn start_with(auth: AuthMode, tls: bool) -> RegistryServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let base = format!("{}://{addr}", if tls { "https" } else { "http" });
        let (ca_pem, acceptor) = match tls.then(tls::make) {
            Some((ca, acceptor)) => (Some(ca), Some(acceptor)),
            None => (None, None),
        };
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::new(Shared {
            auth,
            base: base.clone(),
            state: state.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        Some(a) => match a.accept(socket).await {
                            Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                            Err(_) => return,
                        },
                        None => {
                            builder
                                .serve_connection(TokioIo::new(socket), service)
                                .await
                        }
                    };
                });
            }
        });
        RegistryServer {
            addr,
            base,
            state,
            ca_pem,
            task,
        }
    }

    /// The digest a tag points at.
    pub fn tag(&self, repository: &str, tag: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.tags.get(&(repository.into(), tag.into())).cloned()
    }

    /// A stored manifest's content type and bytes.
    pub fn manifest(&self, repository: &str, digest: &str) -> Option<(String, Bytes)> {
        let s = self.state.lock().unwrap();
        s.manifests
            .get(&(repository.into(), digest.into()))
            .cloned()
    }

    /// Replaces what the registry serves for a manifest digest (a forged manifest).
    pub fn forge_manifest(&self, repository: &str, digest: &str, content_type: &str, body: &[u8]) {
        let mut s = self.state.lock().unwrap();
        s.manifests.insert(
            (repository.into(), digest.into()),
            (content_type.into(), Bytes::copy_from_slice(body)),
        );
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Answers the next `n` requests `503`.
    pub fn set_busy(&self, n: u32) {
        self.set_busy_on("", n);
    }

    /// Answers the next `n` requests whose "METHOD PATH" starts with `prefix` `503`.
    pub fn set_busy_on(&self, prefix: &str, n: u32) {
        self.state.lock().unwrap().busy = (prefix.to_string(), n);
    }
}

/// A loopback HTTP proxy: `CONNECT host:port` tunnels, and absolute-form requests
/// (`GET http://host:port/path`) forwarded on that connection to their host, as squid does
/// for both. Logs "CONNECT host:port" or "GET http://..." with " auth" when the request
/// carried `Proxy-Authorization`.
pub struct HttpProxy {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpProxy {
    pub async fn start() -> HttpProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let line = text.lines().next().unwrap_or_default().to_string();
                    let mut parts = line.split(' ');
                    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let auth = text
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("proxy-authorization:"));
                    let host = if method == "CONNECT" {
                        target.to_string()
                    } else {
                        let rest = target.strip_prefix("http://").unwrap_or(target);
                        rest.split('/').next().unwrap_or_default().to_string()
                    };
                    seen.lock().unwrap().push(format!(
                        "{method} {target}{}",
                        if auth { " auth" } else { "" }
                    ));
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&host).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    if method == "CONNECT" {
                        let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
                        if client.write_all(ok).await.is_err() {
                            return;
                        }
                    } else if upstream.write_all(&head).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        HttpProxy { addr, log, task }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .expect("response")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"errors": [{"code": code, "message": message, "detail": null}]});
    reply(
        status,
        &[("content-type", "application/json".into())],
        Bytes::from(body.to_string()),
    )
}

async fn handle(shared: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let uri = req.uri().to_string();
    {
        let mut s = shared.state.lock().unwrap();
        if s.busy.1 > 0 && format!("{method} {path}").starts_with(&s.busy.0) {
            s.busy.1 -= 1;
            s.log.push(format!("{method} {uri} -> 503"));
            let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"restarting"}]}"#;
            return Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header(header::RETRY_AFTER, "0")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
        }
    }
    let query: BTreeMap<String, Vec<String>> = {
        let mut q = BTreeMap::<String, Vec<String>>::new();
        for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            q.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        q
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_range = req
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", "body"),
    };
    let response = route(
        shared,
        &method,
        &path,
        &query,
        authorization.as_deref(),
        content_type.as_deref(),
        content_range.as_deref(),
        body,
    );
    let mut s = shared.state.lock().unwrap();
    s.log
        .push(format!("{method} {uri} -> {}", response.status().as_u16()));
    if let Some(a) = authorization {
        s.authorizations.push(a);
    }
    response
}

/// What a request to `/v2/<name>/...` is.
enum Route<'a> {
    Base,
    Blob(&'a str, &'a str),
    StartUpload(&'a str),
    Upload(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    Tags(&'a str),
    Unknown,
}

fn parse_route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::Unknown;
    };
    if rest.is_empty() {
        return Route::Base;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags(name);
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Route::StartUpload(name);
    }
    if let Some(i) = rest.rfind("/blobs/uploads/") {
        return Route::Upload(&rest[..i], &rest[i + "/blobs/uploads/".len()..]);
    }
    if let Some(i) = rest.rfind("/manifests/") {
        return Route::Manifest(&rest[..i], &rest[i + "/manifests/".len()..]);
    }
    if let Some(i) = rest.rfind("/blobs/") {
        return Route::Blob(&rest[..i], &rest[i + "/blobs/".len()..]);
    }
    Route::Unknown
}

fn basic(authorization: Option<&str>) -> Option<(String, String)> {
    let encoded = authorization?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.into(), p.into()))
}

/// The token endpoint: basic credentials (or the password as a refresh token) in, a token
/// for the asked scopes out.
fn token(
    shared: &Shared,
    method: &Method,
    query: &BTreeMap<String, Vec<String>>,
    authorization: Option<&str>,
    form: &[u8],
) -> Response<Full<Bytes>> {
    let AuthMode::Token {
        username, password, ..
    } = &shared.auth
    else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no token endpoint");
    };
    // The password also works as an OAuth2 refresh token (docker's `identitytoken`), sent
    // as a POST form.
    let refreshed = method == Method::POST
        && form_urlencoded::parse(form)
            .any(|(k, v)| k == "refresh_token" && v == password.as_str())
        && form_urlencoded::parse(form).any(|(k, v)| k == "grant_type" && v == "refresh_token");
    let mut query = query.clone();
    if method == Method::POST {
        for (k, v) in form_urlencoded::parse(form) {
            if k == "service" || k == "scope" {
                query
                    .entry(k.into_owned())
                    .or_default()
                    .push(v.into_owned());
            }
        }
    }
    if !refreshed && basic(authorization) != Some((username.clone(), password.clone())) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
    }
    if query
        .get("service")
        .and_then(|s| s.first())
        .map(String::as_str)
        != Some(SERVICE)
    {
        return error(StatusCode::BAD_REQUEST, "DENIED", "unknown service");
    }
    let mut grants = BTreeSet::new();
    for scope in query.get("scope").into_iter().flatten() {
        for scope in scope.split(' ') {
            let mut parts = scope.splitn(3, ':');
            if let (Some("repository"), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            {
                for action in actions.split(',') {
                    grants.insert((name.to_string(), action.to_string()));
                }
            }
        }
    }
    let mut s = shared.state.lock().unwrap();
    s.next_id += 1;
    let token = format!(
        "tok-{}-{}",
        s.next_id,
        digest_of(s.next_id.to_string().as_bytes())
    );
    s.tokens.insert(token.clone(), grants);
    reply(
        StatusCode::OK,
        &[("content-type", "application/json".into())],
        Bytes::from(json!({"token": token, "expires_in": 300}).to_string()),
    )
}

/// None when the request may go on; else the 401 to send.
fn authorize(
    shared: &Shared,
    authorization: Option<&str>,
    needs: &[(&str, &str)],
) -> Option<Response<Full<Bytes>>> {
    match &shared.auth {
        AuthMode::Anonymous => None,
        AuthMode::Basic { username, password } => {
            if basic(authorization) == Some((username.clone(), password.clone())) {
                return None;
            }
            Some(reply(
                StatusCode::UNAUTHORIZED,
                &[("www-authenticate", r#"Basic realm="loopback""#.into())],
                Bytes::from(
                    json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
                        .to_string(),
                ),
            ))
        }
        AuthMode::Token { realm, .. } => {
            let granted = authorization
                .and_then(|a| a.strip_prefix("Bearer "))
                .and_then(|t| shared.state.lock().unwrap().tokens.get(t).cloned());
            let ok = granted.as_ref().is_some_and(|g| {
                needs
                    .iter()
                    .all(|(name, action)| g.contains(&(name.to_string(), action.to_string())))
            });
            if ok {
                return None;
            }
            let realm = realm
                .clone()
                .unwrap_or_else(|| format!("{}/token", shared.base));
            let scope: Vec<String> = needs
                .iter()
                .map(|(n, a)| format!("repository:{n}:{a}"))
                .collect();
            let challenge = format!(
                r#"Bearer realm="{realm}",service="{SERVICE}",scope="{}""#,
                scope.join(" ")
            );
            Some(reply(
                StatusCode::UNAUTHORIZED,
                &[("www-authenticate", challenge), ("content-type", "application/json".into())],
                Bytes::from(
                    json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
                        .to_string(),
                ),
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, Vec<String>>,
    authorization: Option<&str>,
    content_type: Option<&str>,
    content_range: Option<&str>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    if path == "/token" {
        return token(shared, method, query, authorization, &body);
    }
    let first = |k: &str| query.get(k).and_then(|v| v.first()).map(String::as_str);
    let action = if matches!(*method, Method::GET | Method::HEAD) {
        "pull"
    } else {
        "push"
    };
    let route = parse_route(path);
    let name = match &route {
        Route::Base => "",
        Route::Blob(n, _)
        | Route::StartUpload(n)
        | Route::Upload(n, _)
        | Route::Manifest(n, _)
        | Route::Tags(n) => n,
        Route::Unknown => return error(StatusCode::NOT_FOUND, "NOT_FOUND", path),
    };
    let mut needs = vec![];
    if !name.is_empty() {
        needs.push((name, action));
        if let (Route::StartUpload(_), Some(from)) = (&route, first("from")) {
            needs.push((from, "pull"));
        }
    }
    // The base endpoint answers 401 to the anonymous too (needs nothing but a valid token
    // or the credentials), as registries do to start auth.
    if let Some(r) = authorize(shared, authorization, &needs) {
        return r;
    }
    let mut s = shared.state.lock().unwrap();
    match (route, method) {
        (Route::Base, _) => reply(StatusCode::OK, &[], Bytes::from_static(b"{}")),
        (Route::Blob(name, digest), &Method::GET | &Method::HEAD) => match s.blobs.get(digest) {
            Some(b) if s.links.contains(&(name.into(), digest.into())) => {
                let headers = [
                    ("docker-content-digest", digest.to_string()),
                    ("content-type", "application/octet-stream".to_string()),
                ];
                if method == Method::HEAD {
                    let mut r = reply(StatusCode::OK, &headers, Bytes::new());
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, b.len().into());
                    r
                } else {
                    reply(StatusCode::OK, &headers, b.clone())
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            ),
        },
        (Route::StartUpload(name), &Method::POST) => {
            if let (Some(digest), Some(from)) = (first("mount"), first("from")) {
                if s.links.contains(&(from.into(), digest.into())) {
                    s.links.insert((name.into(), digest.into()));
                    return reply(
                        StatusCode::CREATED,
                        &[
                            ("location", format!("/v2/{name}/blobs/{digest}")),
                            ("docker-content-digest", digest.into()),
                        ],
                        Bytes::new(),
                    );
                }
            }
            if let Some(digest) = first("digest") {
                return finish_upload(&mut s, name, digest, body.to_vec());
            }
            s.next_id += 1;
            let id = format!("upload-{}", s.next_id);
            s.uploads.insert(id.clone(), (name.into(), body.to_vec()));
            reply(
                StatusCode::ACCEPTED,
                &[
                    ("location", format!("/v2/{name}/blobs/uploads/{id}")),
                    ("range", "0-0".into()),
                    ("docker-upload-uuid", id),
                ],
                Bytes::new(),
            )
        }
        (Route::Upload(name, id), m) => {
            let Some((repo, data)) = s.uploads.get_mut(id) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UPLOAD_UNKNOWN",
                    "upload unknown",
                );
            };
            if repo != name {
                return error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UPLOAD_UNKNOWN",
                    "upload unknown",
                );
            }
            match *m {
                Method::PATCH => {
                    if let Some(range) = content_range {
                        let start = range
                            .split('-')
                            .next()
                            .and_then(|n| n.parse::<usize>().ok());
                        if start != Some(data.len()) {
                            return error(
                                StatusCode::RANGE_NOT_SATISFIABLE,
                                "BLOB_UPLOAD_INVALID",
                                "chunk out of order",
                            );
                        }
                    }
                    data.extend_from_slice(&body);
                    let end = data.len().saturating_sub(1);
                    reply(
                        StatusCode::ACCEPTED,
                        &[
                            ("location", format!("/v2/{name}/blobs/uploads/{id}")),
                            ("range", format!("0-{end}")),
                            ("docker-upload-uuid", id.into()),
                        ],
                        Bytes::new(),
                    )
                }
                Method::PUT => {
                    let Some(digest) = first("digest") else {
                        return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "no digest");
                    };
                    let mut data = s.uploads.remove(id).map(|(_, d)| d).unwrap_or_default();
                    data.extend_from_slice(&body);
                    finish_upload(&mut s, name, digest, data)
                }
                Method::DELETE => {
                    s.uploads.remove(id);
                    reply(StatusCode::NO_CONTENT, &[], Bytes::new())
                }
                Method::GET => {
                    let end = data.len().saturating_sub(1);
                    reply(
                        StatusCode::NO_CONTENT,
                        &[("range", format!("0-{end}"))],
                        Bytes::new(),
                    )
                }
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "method"),
            }
        }
        (Route::Manifest(name, reference), &Method::GET | &Method::HEAD) => {
            let digest = if reference.starts_with("sha256:") {
                Some(reference.to_string())
            } else {
                s.tags.get(&(name.into(), reference.into())).cloned()
            };
            match digest.and_then(|d| s.manifests.get(&(name.into(), d.clone())).map(|m| (d, m))) {
                Some((digest, (content_type, bytes))) => {
                    let headers = [
                        ("content-type", content_type.clone()),
                        ("docker-content-digest", digest),
                    ];
                    if method == Method::HEAD {
                        let mut r = reply(StatusCode::OK, &headers, Bytes::new());
                        r.headers_mut()
                            .insert(header::CONTENT_LENGTH, bytes.len().into());
                        r
                    } else {
                        reply(StatusCode::OK, &headers, bytes.clone())
                    }
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    "manifest unknown",
                ),
            }
        }
        (Route::Manifest(name, reference), &Method::PUT) => {
            put_manifest(&mut s, name, reference, content_type, body)
        }
        (Route::Tags(name), &Method::GET) => {
            let tags: Vec<&String> = s
                .tags
                .keys()
                .filter(|(n, _)| n == name)
                .map(|(_, t)| t)
                .collect();
            reply(
                StatusCode::OK,
                &[("content-type", "application/json".into())],
                Bytes::from(json!({"name": name, "tags": tags}).to_string()),
            )
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "method"),
    }
}

fn finish_upload(s: &mut State, name: &str, digest: &str, data: Vec<u8>) -> Response<Full<Bytes>> {
    if digest_of(&data) != digest {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "digest did not match content",
        );
    }
    s.blobs.insert(digest.into(), Bytes::from(data));
    s.links.insert((name.into(), digest.into()));
    reply(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{digest}")),
            ("docker-content-digest", digest.into()),
        ],
        Bytes::new(),
    )
}

fn put_manifest(
    s: &mut State,
    name: &str,
    reference: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    if body.len() > MAX_MANIFEST {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            "manifest too large",
        );
    }
    let digest = digest_of(&body);
    if reference.starts_with("sha256:") && reference != digest {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "digest did not match content",
        );
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", "not JSON");
    };
    let media_type = value["mediaType"]
        .as_str()
        .or(content_type)
        .unwrap_or_default()
        .to_string();
    if content_type.is_some_and(|c| c != media_type) {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "mediaType does not match Content-Type",
        );
    }
    let digests = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["digest"].as_str().map(str::to_string))
            .collect()
    };
    if value.get("manifests").is_some() {
        for d in digests(&value["manifests"]) {
            if !s.manifests.contains_key(&(name.into(), d.clone())) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_UNKNOWN",
                    &format!("{d} unknown to {name}"),
                );
            }
        }
    } else {
        let mut blobs = digests(&value["layers"]);
        blobs.extend(value["config"]["digest"].as_str().map(str::to_string));
        for d in blobs {
            if !s.links.contains(&(name.into(), d.clone())) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_BLOB_UNKNOWN",
                    &format!("blob {d} unknown to {name}"),
                );
            }
        }
    }
    s.manifests
        .insert((name.into(), digest.clone()), (media_type, body));
    if !reference.starts_with("sha256:") {
        s.tags
            .insert((name.into(), reference.into()), digest.clone());
    }
    reply(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/manifests/{digest}")),
            ("docker-content-digest", digest),
        ],
        Bytes::new(),
    )
}
