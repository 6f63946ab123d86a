//! ECR: `GetAuthorizationToken` with the pod's AWS identity from `aws-config`'s default chain
//! (environment, IRSA's web identity token, EKS Pod Identity's container credentials), in the
//! registry host's region. The token (base64 of `AWS:<password>`) is good for 12 hours, for
//! every registry of the region the identity may use.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ecr::error::DisplayErrorContext;
use base64::Engine as _;

/// A token of one region.
pub struct Token {
    /// The password (the user is `AWS`).
    pub password: String,
    /// When it expires, as ECR says (RFC 3339).
    pub expires_at: Option<String>,
}

/// The user name of every ECR token.
pub const USERNAME: &str = "AWS";

/// Asks ECR in `region` (its FIPS endpoint with `fips`) for a token. An endpoint override
/// (`AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL`) is honoured, as by every AWS SDK.
pub async fn token(region: &str, fips: bool) -> Result<Token, String> {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .http_client(crate::crypto::aws_https_client())
        .load()
        .await;
    let config = aws_sdk_ecr::config::Builder::from(&shared)
        .use_fips(fips)
        .build();
    let client = aws_sdk_ecr::Client::from_conf(config);
    let out = client.get_authorization_token().send().await.map_err(|e| {
        format!(
            "ECR GetAuthorizationToken in {region}: {}",
            DisplayErrorContext(&e)
        )
    })?;
    let bad = |what: &str| format!("ECR GetAuthorizationToken in {region}: {what}");
    let data = out
        .authorization_data()
        .first()
        .ok_or_else(|| bad("the answer has no authorizationData"))?;
    let encoded = data
        .authorization_token()
        .ok_or_else(|| bad("the answer has no authorizationToken"))?;
    let password = decode(encoded)
        .ok_or_else(|| bad("the authorizationToken is not base64 of AWS:<password>"))?;
    Ok(Token {
        password,
        expires_at: data.expires_at().map(|t| t.to_string()),
    })
}

/// The password of a token, `base64("AWS:" + password)`; never quoted in an error.
fn decode(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let password = text.strip_prefix(&format!("{USERNAME}:"))?;
    (!password.is_empty() && !password.chars().any(char::is_control)).then(|| password.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_decode_to_the_password() {
        assert_eq!(super::decode("QVdTOnNlY3JldA==").as_deref(), Some("secret"));
        // "user:secret", "AWS:", not base64
        for bad in ["dXNlcjpzZWNyZXQ=", "QVdTOg==", "%%%"] {
            assert_eq!(super::decode(bad), None, "{bad}");
        }
    }
}
