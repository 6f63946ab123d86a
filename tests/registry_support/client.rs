//! The loopback registry's client side: pushes a small image (monolithic and chunked
//! uploads, answering Bearer challenges) and reads manifests and blobs back.

use std::sync::Mutex;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::{digest_of, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};

/// The platform of a small image: `linux/arm64/v8` -> (os, architecture, variant).
pub fn split_platform(platform: &str) -> (String, String, Option<String>) {
    let mut parts = platform.split('/');
    let os = parts.next().unwrap_or("linux").to_string();
    let arch = parts.next().unwrap_or("amd64").to_string();
    (os, arch, parts.next().map(str::to_string))
}

/// Pushes a one-layer image of `platform` to `base` (`http://127.0.0.1:PORT`) as a client
/// does: the config blob monolithically (POST then PUT), the layer in two chunks (POST,
/// PATCH, PUT), then the manifest under `reference` (a tag, or its own digest when `None`).
/// Answers Bearer challenges with `credentials`. Returns the manifest's digest.
pub async fn push_image(
    base: &str,
    repository: &str,
    reference: Option<&str>,
    platform: &str,
    seed: &str,
    credentials: Option<(&str, &str)>,
) -> Result<String, String> {
    let client = Pusher::new(base, credentials);
    let (os, architecture, variant) = split_platform(platform);
    let layer = format!("layer of {seed} for {platform}").into_bytes();
    let mut config = json!({
        "architecture": architecture, "os": os,
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
        "config": {"Labels": {"seed": seed}},
    });
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    let config = Bytes::from(config.to_string());
    let layer = Bytes::from(layer);
    let config_digest = digest_of(&config);
    let layer_digest = digest_of(&layer);
    // Config: POST for a session, PUT it whole.
    let location = client.start_upload(repository).await?;
    client
        .send(
            Method::PUT,
            &format!("{location}{}digest={config_digest}", sep(&location)),
            config.clone(),
            None,
        )
        .await
        .and_then(|r| expect(r, StatusCode::CREATED))?;
    // Layer: two PATCH chunks, then PUT with no body.
    let mut location = client.start_upload(repository).await?;
    let half = layer.len() / 2;
    for (start, chunk) in [(0, layer.slice(..half)), (half, layer.slice(half..))] {
        let range = format!("{start}-{}", start + chunk.len() - 1);
        let r = client
            .send(
                Method::PATCH,
                &location,
                chunk,
                Some(("content-range", range)),
            )
            .await
            .and_then(|r| expect(r, StatusCode::ACCEPTED))?;
        location = r.headers()[header::LOCATION].to_str().unwrap().to_string();
    }
    client
        .send(
            Method::PUT,
            &format!("{location}{}digest={layer_digest}", sep(&location)),
            Bytes::new(),
            None,
        )
        .await
        .and_then(|r| expect(r, StatusCode::CREATED))?;
    let manifest = Bytes::from(
        json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
        })
        .to_string(),
    );
    let digest = digest_of(&manifest);
    client
        .send(
            Method::PUT,
            &format!(
                "/v2/{repository}/manifests/{}",
                reference.unwrap_or(&digest)
            ),
            manifest,
            Some(("content-type", OCI_MANIFEST.into())),
        )
        .await
        .and_then(|r| expect(r, StatusCode::CREATED))?;
    Ok(digest)
}

/// Pushes raw manifest bytes (an index, say) under `reference`.
pub async fn push_manifest(
    base: &str,
    repository: &str,
    reference: &str,
    media_type: &str,
    body: Bytes,
    credentials: Option<(&str, &str)>,
) -> Result<(), String> {
    Pusher::new(base, credentials)
        .send(
            Method::PUT,
            &format!("/v2/{repository}/manifests/{reference}"),
            body,
            Some(("content-type", media_type.into())),
        )
        .await
        .and_then(|r| expect(r, StatusCode::CREATED))
        .map(drop)
}

fn sep(location: &str) -> char {
    if location.contains('?') {
        '&'
    } else {
        '?'
    }
}

fn expect(r: Response<Bytes>, status: StatusCode) -> Result<Response<Bytes>, String> {
    if r.status() == status {
        Ok(r)
    } else {
        Err(format!(
            "{} (wanted {status}): {}",
            r.status(),
            String::from_utf8_lossy(r.body())
        ))
    }
}

/// A plain-HTTP client that answers Bearer challenges.
struct Pusher {
    base: String,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl Pusher {
    fn new(base: &str, credentials: Option<(&str, &str)>) -> Pusher {
        Pusher {
            base: base.trim_end_matches('/').into(),
            credentials: credentials.map(|(u, p)| (u.into(), p.into())),
            token: Mutex::new(None),
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn start_upload(&self, repository: &str) -> Result<String, String> {
        let r = self
            .send(
                Method::POST,
                &format!("/v2/{repository}/blobs/uploads/"),
                Bytes::new(),
                None,
            )
            .await
            .and_then(|r| expect(r, StatusCode::ACCEPTED))?;
        Ok(r.headers()[header::LOCATION].to_str().unwrap().to_string())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        header: Option<(&str, String)>,
    ) -> Result<Response<Bytes>, String> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        for _ in 0..2 {
            let mut req = Request::builder().method(method.clone()).uri(&url);
            if let Some((k, v)) = &header {
                req = req.header(*k, v);
            }
            if let Some(t) = self.token.lock().unwrap().clone() {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let r = self
                .http
                .request(req.body(Full::new(body.clone())).unwrap())
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = r.status();
            let challenge = r
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let (parts, body) = r.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            if status == StatusCode::UNAUTHORIZED {
                if let Some(c) = challenge {
                    self.fetch_token(&c).await?;
                    continue;
                }
            }
            return Ok(Response::from_parts(parts, body));
        }
        Err(format!("{url}: still unauthorized after a token"))
    }

    async fn fetch_token(&self, challenge: &str) -> Result<(), String> {
        let param = |k: &str| {
            challenge
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("service", &param("service"))
            .append_pair("scope", &param("scope"))
            .finish();
        let mut req = Request::get(format!("{}?{query}", param("realm")));
        if let Some((u, p)) = &self.credentials {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        let r = self
            .http
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body = r
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!("token: {status}"));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        *self.token.lock().unwrap() = v["token"].as_str().map(str::to_string);
        Ok(())
    }
}

/// GETs a manifest through the protocol (answering challenges with `credentials`): its
/// Content-Type and bytes.
pub async fn get_manifest(
    base: &str,
    repository: &str,
    reference: &str,
    credentials: Option<(&str, &str)>,
) -> Result<(String, Bytes), String> {
    let r = Pusher::new(base, credentials)
        .send(
            Method::GET,
            &format!("/v2/{repository}/manifests/{reference}"),
            Bytes::new(),
            Some(("accept", format!("{OCI_INDEX}, {OCI_MANIFEST}"))),
        )
        .await
        .and_then(|r| expect(r, StatusCode::OK))?;
    let content_type = r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    Ok((content_type, r.into_body()))
}

/// GETs a blob through the protocol (answering challenges with `credentials`).
pub async fn get_blob(
    base: &str,
    repository: &str,
    digest: &str,
    credentials: Option<(&str, &str)>,
) -> Result<Bytes, String> {
    let r = Pusher::new(base, credentials)
        .send(
            Method::GET,
            &format!("/v2/{repository}/blobs/{digest}"),
            Bytes::new(),
            None,
        )
        .await
        .and_then(|r| expect(r, StatusCode::OK))?;
    Ok(r.into_body())
}
