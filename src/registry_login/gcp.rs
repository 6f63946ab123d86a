//! Google: the access token of the pod's Google service account from the metadata server (GKE
//! Workload Identity's, or a VM's), as `oauth2accesstoken`'s password. About an hour long.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The user name Google registries take with an access token.
pub const USERNAME: &str = "oauth2accesstoken";
/// The metadata server, unless `GCE_METADATA_HOST` names another (`host[:port]`), as Google's
/// client libraries read it.
const DEFAULT_HOST: &str = "metadata.google.internal";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const MAX_BODY: usize = 64 * 1024;

/// An access token.
pub struct Token {
    /// The token.
    pub password: String,
    /// Its lifetime from now, in seconds, as the server says.
    pub expires_in: Option<u64>,
}

#[derive(serde::Deserialize)]
struct Answer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// An error and its causes, each once (hyper's own message leaves the cause out).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

/// The metadata server's address: `GCE_METADATA_HOST`, else the standard name.
pub fn metadata_host() -> String {
    std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// Fetches the default service account's access token from the metadata server at `host`.
pub async fn token(host: &str) -> Result<Token, String> {
    let url = format!("http://{host}{TOKEN_PATH}");
    let fail = |what: String| format!("GCE metadata server {url}: {what}");
    let request = http::Request::get(&url)
        .header("Metadata-Flavor", "Google")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.map_err(|e| {
        fail(format!(
            "{} (is this a GKE pod with Workload Identity?)",
            chain(&e)
        ))
    })?;
    let status = response.status();
    // Google's libraries check this too: an answer without it is not the metadata server.
    let flavor_ok = response
        .headers()
        .get("Metadata-Flavor")
        .is_some_and(|v| v == "Google");
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| fail(format!("reading the answer: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    if !flavor_ok {
        return Err(fail(
            "the answer has no Metadata-Flavor: Google header".into(),
        ));
    }
    // serde_json's message holds a line and column, never the text.
    let answer: Answer =
        serde_json::from_slice(&body).map_err(|e| fail(format!("not a token answer: {e}")))?;
    let token = answer.access_token;
    if token.is_empty() || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(fail(
            "the answer's access_token is empty or malformed".into(),
        ));
    }
    Ok(Token {
        password: token,
        expires_in: answer.expires_in,
    })
}
