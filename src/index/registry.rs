//! A small client of the OCI distribution API, just what the index Job needs: manifests and
//! blobs fetched with every body capped and every digest checked, blob existence, cross-repo
//! mounts and manifest pushes, with docker's token and basic auth.
//!
//! Not `oci-client` (checked at 0.18): its token request goes to whatever realm the registry
//! names, credentials included, with no refusal of an http realm for an https registry; it
//! reads manifests whole with no cap; and it would add reqwest 0.13 and oci-spec (a second
//! HTTP stack, its default TLS feature bringing aws-lc-rs). This is hyper, hyper-util and
//! hyper-rustls, already in the tree for kube, with ring and the system roots.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::assemble::sha256_digest;
use super::auth::{parse_challenge, Challenge, Credential};
use super::proxy::{Proxies, ProxyConnector};
use super::tls::tls_config;

/// A request body: bytes, or a blob streamed from another registry.
type Body = BoxBody<Bytes, hyper::Error>;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The most of an error body read (for its `errors[].code`).
const ERROR_BODY_BYTES: usize = 64 << 10;
/// How many times a request is sent while the registry is unreachable or busy.
pub const ATTEMPTS: u32 = 4;
/// The longest wait a registry's `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Statuses worth sending the same request again for: the registry (or a proxy before it)
/// is busy, restarting or timed out, not refusing the request itself.
pub fn transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The wait before attempt `attempt + 1`: the registry's `Retry-After` (seconds, at most
/// 30 s) when it sent one, else 1 s, 2 s, 4 s...
pub fn backoff(attempt: u32, headers: Option<&HeaderMap>) -> Duration {
    let asked = headers
        .and_then(|h| h.get(header::RETRY_AFTER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    asked.unwrap_or(Duration::from_secs(1 << attempt.saturating_sub(1).min(5)))
}

/// Whether a failed call may succeed when made again.
impl RegistryError {
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => transient(*status),
            _ => false,
        }
    }
}

/// Why a registry call failed. Never holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The connection failed.
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    /// The registry answered with an error status.
    #[error("{status}{}", code_text(.code, .message))]
    Status {
        status: StatusCode,
        code: Option<String>,
        message: Option<String>,
    },
    /// The bytes do not hash to the digest asked for.
    #[error(
        "the registry sent content whose digest is {actual}, not the {expected} asked for: refused"
    )]
    DigestMismatch { expected: String, actual: String },
    /// A body over its cap.
    #[error("the registry sent more than {limit} bytes: refused")]
    TooLarge { limit: usize },
    /// A Bearer realm that would take the credentials out of TLS.
    #[error("the registry is https but its token realm {realm} is not: refused (credentials would travel in clear)")]
    InsecureRealm { realm: String },
    /// The token endpoint refused or answered nonsense.
    #[error("token realm {realm}: {detail}")]
    Token { realm: String, detail: String },
    /// Anything else the registry did wrong.
    #[error("{0}")]
    Protocol(String),
}

fn code_text(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

/// How the registries of the operator's buildkitd config are reached.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// `host[:port]` reached over plain HTTP.
    pub plain_http: BTreeSet<String>,
    /// `host[:port]` reached over TLS without verifying the certificate.
    pub insecure: BTreeSet<String>,
    /// `host[:port]` -> a PEM bundle of CAs its certificate may chain to.
    pub cas: BTreeMap<String, String>,
    /// The HTTP proxies of the environment.
    pub proxies: Proxies,
}

/// One registry, authenticated for a fixed set of scopes.
pub struct Registry {
    base: String,
    https: bool,
    http: Client<hyper_rustls::HttpsConnector<ProxyConnector>, Body>,
    proxies: Proxies,
    credential: Option<Credential>,
    scopes: Vec<String>,
    authorization: tokio::sync::Mutex<Option<String>>,
}

/// A response with its body read.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Registry {
    /// A client of `api_host` (`host[:port]`) asking tokens for `scopes`
    /// (`repository:shop/app:pull,push`).
    pub fn new(
        api_host: &str,
        transport: &Transport,
        credential: Option<Credential>,
        scopes: Vec<String>,
    ) -> Result<Registry, RegistryError> {
        let https = !transport.plain_http.contains(api_host);
        let tls = tls_config(
            transport.insecure.contains(api_host),
            transport.cas.get(api_host),
        )
        .map_err(RegistryError::Protocol)?;
        let mut direct = HttpConnector::new();
        direct.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(ProxyConnector::new(direct, transport.proxies.clone()));
        Ok(Registry {
            base: format!("{}://{api_host}", if https { "https" } else { "http" }),
            https,
            http: Client::builder(TokioExecutor::new()).build(connector),
            proxies: transport.proxies.clone(),
            credential,
            scopes,
            authorization: tokio::sync::Mutex::new(None),
        })
    }

    /// A manifest by digest, checked: at most `limit` bytes hashing to `digest`. Returns the
    /// bytes and the response's Content-Type.
    pub async fn manifest(
        &self,
        repository: &str,
        digest: &str,
        accept: &[&str],
        limit: usize,
    ) -> Result<(Bytes, Option<String>), RegistryError> {
        let url = format!("{}/v2/{repository}/manifests/{digest}", self.base);
        let r = self
            .send(
                Method::GET,
                &url,
                &[(header::ACCEPT, accept.join(", "))],
                Bytes::new(),
                limit,
            )
            .await?;
        let r = expect(r, &[StatusCode::OK])?;
        verify(&r.body, digest)?;
        let content_type = r
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((r.body, content_type))
    }

    /// A blob by digest, checked as [`Registry::manifest`] is (redirects to storage followed).
    pub async fn blob(
        &self,
        repository: &str,
        digest: &str,
        limit: usize,
    ) -> Result<Bytes, RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let r = self
            .send(Method::GET, &url, &[], Bytes::new(), limit)
            .await?;
        let r = expect(r, &[StatusCode::OK])?;
        verify(&r.body, digest)?;
        Ok(r.body)
    }

    /// Whether a blob (`kind` "blobs") or manifest (`kind` "manifests") is in a repository.
    pub async fn exists(
        &self,
        repository: &str,
        kind: &str,
        digest: &str,
        accept: &[&str],
    ) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repository}/{kind}/{digest}", self.base);
        let headers = [(header::ACCEPT, accept.join(", "))];
        let r = self
            .send(Method::HEAD, &url, &headers, Bytes::new(), 0)
            .await?;
        match r.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(expect(r, &[]).err().expect("not OK")),
        }
    }

    /// Mounts a blob of `from` into `repository` (same registry). A registry that answers
    /// 202 (an upload session instead of a mount) is an error: the session is cancelled.
    pub async fn mount(
        &self,
        repository: &str,
        digest: &str,
        from: &str,
    ) -> Result<(), RegistryError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("mount", digest)
            .append_pair("from", from)
            .finish();
        let url = format!("{}/v2/{repository}/blobs/uploads/?{query}", self.base);
        let r = self.send(Method::POST, &url, &[], Bytes::new(), 0).await?;
        if r.status == StatusCode::ACCEPTED {
            if let Some(location) = r
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
            {
                let session = self.resolve(&url, location);
                let _ = self
                    .send(Method::DELETE, &session, &[], Bytes::new(), 0)
                    .await;
            }
            return Err(RegistryError::Protocol(format!(
                "the registry did not mount blob {digest} from {from} (it opened an upload instead): refused"
            )));
        }
        expect(r, &[StatusCode::CREATED]).map(drop)
    }

    /// Pushes a manifest under `reference` (a tag or its digest). Returns the digest the
    /// registry reports, if any.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<Option<String>, RegistryError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let headers = [(header::CONTENT_TYPE, media_type.to_string())];
        let r = self.send(Method::PUT, &url, &headers, body, 0).await?;
        let r = expect(r, &[StatusCode::CREATED, StatusCode::OK])?;
        Ok(r.headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// Sends a request with the current authorization; on a 401, answers the challenge and
    /// sends it once more. A GET follows redirects (authorization kept only on the same
    /// origin). A success's body is read up to `limit` bytes, an error's up to 64 KiB.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<Response, RegistryError> {
        let (response, answered) = self.exchange(&method, url, headers, body).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let cap = if status.is_success() {
            limit
        } else {
            ERROR_BODY_BYTES
        };
        let too_large = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > cap);
        if too_large && status.is_success() && method != Method::HEAD {
            return Err(RegistryError::TooLarge { limit: cap });
        }
        let body = if method == Method::HEAD {
            Bytes::new()
        } else {
            match Limited::new(response.into_body(), cap).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) if status.is_success() => {
                    return Err(RegistryError::TooLarge { limit: cap })
                }
                Err(_) => Bytes::new(),
            }
        };
        if status == StatusCode::UNAUTHORIZED && answered && self.credential.is_some() {
            let (code, message) = error_code(&body);
            let refused =
                "the credentials of $DOCKER_CONFIG/config.json were refused, or do not allow this";
            return Err(RegistryError::Status {
                status,
                code,
                message: Some(match message {
                    Some(m) => format!("{m} ({refused})"),
                    None => refused.into(),
                }),
            });
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// The request/response exchange of [`Registry::send`], the body not read. Also says
    /// whether a challenge was answered.
    async fn exchange(
        &self,
        method: &Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
    ) -> Result<(hyper::Response<Incoming>, bool), RegistryError> {
        let mut url = url.to_string();
        let mut answered = false;
        let mut redirects = 0;
        // Authorization goes only where the request began: same scheme, host and port (a
        // redirect to storage elsewhere, or down to http, gets none).
        let origin = origin_of(&url);
        let mut attempt = 1;
        loop {
            let authorization = if origin_of(&url) == origin {
                self.authorization.lock().await.clone()
            } else {
                None
            };
            let body = full(body.clone());
            let response = match self
                .request(method, &url, headers, authorization, body)
                .await
            {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    retry_after(&mut attempt, &e.to_string(), None).await;
                    continue;
                }
                r => r?,
            };
            let status = response.status();
            if transient(status) && attempt < ATTEMPTS {
                retry_after(
                    &mut attempt,
                    &format!("{method} {url}: {status}"),
                    Some(response.headers()),
                )
                .await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !answered {
                answered = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                if let Some(challenge) = challenge {
                    self.answer(challenge).await?;
                    continue;
                }
            }
            if status.is_redirection() && method == Method::GET && redirects < 5 {
                if let Some(location) = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                {
                    url = self.resolve(&url, location);
                    redirects += 1;
                    continue;
                }
            }
            return Ok((response, answered));
        }
    }

    /// One HTTP request, within [`REQUEST_TIMEOUT`] for the response's head.
    async fn request(
        &self,
        method: &Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        authorization: Option<String>,
        body: Body,
    ) -> Result<hyper::Response<Incoming>, RegistryError> {
        let mut request = Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers.iter().filter(|(_, v)| !v.is_empty()) {
            request = request.header(name, value);
        }
        if let Some(a) = authorization {
            request = request.header(header::AUTHORIZATION, a);
        }
        if let Some(auth) = self.forward_proxy_auth(url) {
            request = request.header(header::PROXY_AUTHORIZATION, auth);
        }
        let request = request
            .body(body)
            .map_err(|e| RegistryError::Protocol(format!("{url}: {e}")))?;
        tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| RegistryError::Transport {
                url: url.to_string(),
                message: format!("no answer in {REQUEST_TIMEOUT:?}"),
            })?
            .map_err(|e| RegistryError::Transport {
                url: url.to_string(),
                message: error_chain(&e),
            })
    }

    /// `Proxy-Authorization` for a plain-HTTP request sent to a forwarding proxy (a tunnel
    /// for https carries it in its CONNECT instead).
    fn forward_proxy_auth(&self, url: &str) -> Option<http::HeaderValue> {
        let uri: Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        self.proxies.for_url(&uri).and_then(|(_, auth)| auth)
    }

    /// A blob's body as a stream, for a copy to another registry (the receiving registry
    /// checks its digest), with its length when the registry said it.
    pub async fn blob_stream(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<(Incoming, Option<u64>), RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let (response, _) = self.exchange(&Method::GET, &url, &[], Bytes::new()).await?;
        if response.status() != StatusCode::OK {
            return Err(status_error(response).await);
        }
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok((response.into_body(), length))
    }

    /// Uploads a blob from a stream: a session opened by POST (which settles auth), then one
    /// PUT of the whole stream with its digest, which the registry checks.
    pub async fn upload_stream(
        &self,
        repository: &str,
        digest: &str,
        body: Incoming,
        length: Option<u64>,
    ) -> Result<(), RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/uploads/", self.base);
        let r = self.send(Method::POST, &url, &[], Bytes::new(), 0).await?;
        let r = expect(r, &[StatusCode::ACCEPTED])?;
        let location = r
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                RegistryError::Protocol("an upload session without a Location".into())
            })?;
        let session = self.resolve(&url, location);
        let separator = if session.contains('?') { '&' } else { '?' };
        let put = format!("{session}{separator}digest={digest}");
        let mut headers = vec![(header::CONTENT_TYPE, "application/octet-stream".to_string())];
        if let Some(length) = length {
            headers.push((header::CONTENT_LENGTH, length.to_string()));
        }
        let authorization = if origin_of(&put) == origin_of(&url) {
            self.authorization.lock().await.clone()
        } else {
            None
        };
        let response = self
            .request(&Method::PUT, &put, &headers, authorization, body.boxed())
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(status_error(response).await);
        }
        Ok(())
    }

    /// Answers a challenge: a Basic one with the credentials, a Bearer one with a token
    /// fetched from its realm for this client's scopes.
    async fn answer(&self, challenge: Challenge) -> Result<(), RegistryError> {
        let value = match challenge {
            Challenge::Basic => self
                .credential
                .as_ref()
                .and_then(Credential::basic_header)
                .ok_or_else(|| {
                    RegistryError::Protocol(
                        "the registry asks for basic credentials and $DOCKER_CONFIG/config.json has none for it".into(),
                    )
                })?,
            Challenge::Bearer { realm, service, .. } => {
                format!("Bearer {}", self.token(&realm, service.as_deref()).await?)
            }
        };
        *self.authorization.lock().await = Some(value);
        Ok(())
    }

    async fn token(&self, realm: &str, service: Option<&str>) -> Result<String, RegistryError> {
        let realm_uri: Uri = realm.parse().map_err(|_| RegistryError::Token {
            realm: realm.into(),
            detail: "not a URL".into(),
        })?;
        match realm_uri.scheme_str() {
            Some("https") => {}
            Some("http") if !self.https => {}
            _ => {
                return Err(RegistryError::InsecureRealm {
                    realm: realm.into(),
                })
            }
        }
        let token_error = |detail: String| RegistryError::Token {
            realm: realm.into(),
            detail,
        };
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        // The request, sent through [`Registry::request`] as every other (its timeout, the
        // proxy's credentials, its errors), with the token request's own authorization.
        let (method, url, headers, authorization, body) = match &self.credential {
            Some(Credential::IdentityToken(refresh)) => {
                // docker's OAuth2 refresh-token grant, in a POST body (never the URL).
                query
                    .append_pair("scope", &self.scopes.join(" "))
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("client_id", "hearth")
                    .append_pair("refresh_token", refresh);
                let form = "application/x-www-form-urlencoded".to_string();
                let body = Bytes::from(query.finish());
                (
                    Method::POST,
                    realm.to_string(),
                    vec![(header::CONTENT_TYPE, form)],
                    None,
                    body,
                )
            }
            credential => {
                for scope in &self.scopes {
                    query.append_pair("scope", scope);
                }
                let separator = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{separator}{}", query.finish());
                let basic = credential.as_ref().and_then(|c| c.basic_header());
                (Method::GET, url, Vec::new(), basic, Bytes::new())
            }
        };
        let mut attempt = 1;
        let response = loop {
            let sent = self
                .request(
                    &method,
                    &url,
                    &headers,
                    authorization.clone(),
                    full(body.clone()),
                )
                .await;
            match sent {
                Err(RegistryError::Transport { message, .. }) if attempt < ATTEMPTS => {
                    let what = format!("token realm {realm}: {message}");
                    retry_after(&mut attempt, &what, None).await
                }
                Err(RegistryError::Transport { message, .. }) => return Err(token_error(message)),
                Err(e) => return Err(token_error(e.to_string())),
                Ok(r) if transient(r.status()) && attempt < ATTEMPTS => {
                    let what = format!("token realm {realm}: {}", r.status());
                    retry_after(&mut attempt, &what, Some(r.headers())).await
                }
                Ok(r) => break r,
            }
        };
        let status = response.status();
        let body = small_body(response.into_body()).await;
        if !status.is_success() {
            let (code, message) = error_code(&body);
            let refused = if status == StatusCode::UNAUTHORIZED {
                " (the credentials of $DOCKER_CONFIG/config.json were refused)"
            } else {
                ""
            };
            return Err(token_error(format!(
                "{status}{}{refused}",
                code_text(&code, &message)
            )));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| token_error("answered something other than a JSON token".into()))?;
        value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| token_error("answered without a token".into()))
    }

    /// An absolute URL for a Location header (absolute, or a path on this registry).
    fn resolve(&self, from: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", origin_of(from))
        } else {
            format!("{}/{location}", origin_of(from))
        }
    }
}

/// Waits before the next attempt, saying why on stderr (the Job's log), and counts it.
pub(crate) async fn retry_after(attempt: &mut u32, why: &str, headers: Option<&HeaderMap>) {
    let wait = backoff(*attempt, headers);
    eprintln!(
        "{why}; attempt {} of {ATTEMPTS} in {:.1}s",
        *attempt + 1,
        wait.as_secs_f64()
    );
    tokio::time::sleep(wait).await;
    *attempt += 1;
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// At most 64 KiB of a body (an error's, a token's); empty when it cannot be read.
async fn small_body(body: Incoming) -> Bytes {
    Limited::new(body, ERROR_BODY_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

/// The error of a response with an unexpected status: the status and the registry's code.
async fn status_error(response: hyper::Response<Incoming>) -> RegistryError {
    let status = response.status();
    let (code, message) = error_code(&small_body(response.into_body()).await);
    RegistryError::Status {
        status,
        code,
        message,
    }
}

/// The response when its status is one of `ok`, else its status and the registry's error
/// code as an error.
fn expect(r: Response, ok: &[StatusCode]) -> Result<Response, RegistryError> {
    if ok.contains(&r.status) {
        return Ok(r);
    }
    let (code, message) = error_code(&r.body);
    Err(RegistryError::Status {
        status: r.status,
        code,
        message,
    })
}

/// The first `errors[].code` and `.message` of a distribution error body.
fn error_code(body: &[u8]) -> (Option<String>, Option<String>) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let first = value.get("errors").and_then(|e| e.get(0));
    let field = |name: &str| {
        first
            .and_then(|e| e.get(name))
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(200).collect::<String>())
    };
    (field("code"), field("message"))
}

fn verify(body: &[u8], digest: &str) -> Result<(), RegistryError> {
    let actual = sha256_digest(body);
    if actual != digest {
        return Err(RegistryError::DigestMismatch {
            expected: digest.into(),
            actual,
        });
    }
    Ok(())
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find('/').map_or(url.len(), |j| i + 3 + j);
            url[..end].to_string()
        }
        None => url.to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_stays_with_its_origin() {
        let from = "https://r.io:5000/v2/a/blobs/sha256:x";
        assert_eq!(origin_of(from), "https://r.io:5000");
        // A redirect down to http on the same host is another origin.
        assert_ne!(origin_of("http://r.io:5000/v2/a"), origin_of(from));
        assert_ne!(origin_of("https://storage.r.io/blob"), origin_of(from));
    }

    #[test]
    fn busy_or_unreachable_registries_are_retried_refusals_are_not() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 405, 413] {
            assert!(!transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        let waits: Vec<u64> = (1..ATTEMPTS).map(|a| backoff(a, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4]);
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(backoff(1, Some(&headers)), Duration::from_secs(7));
        headers.insert(header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(backoff(1, Some(&headers)), MAX_RETRY_AFTER);
        // An HTTP date is not parsed: the schedule's own wait.
        headers.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(backoff(2, Some(&headers)), Duration::from_secs(2));
        let refused = RegistryError::Status {
            status: StatusCode::FORBIDDEN,
            code: None,
            message: None,
        };
        assert!(!refused.is_transient());
        assert!(RegistryError::Transport {
            url: "https://r.io/v2/".into(),
            message: "connection refused".into()
        }
        .is_transient());
    }

    #[test]
    fn registry_errors_show_status_and_code() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        let r = Response {
            status: StatusCode::NOT_FOUND,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
        };
        let err = expect(r, &[StatusCode::OK]).err().unwrap();
        assert_eq!(
            err.to_string(),
            "404 Not Found MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(error_code(b"<html>"), (None, None));
    }
}
