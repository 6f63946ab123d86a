//! The process's one TLS crypto provider. rustls 0.23 picks a default provider only when
//! exactly one is compiled in, and panics at the first TLS connection otherwise; Hearth builds
//! with ring alone (kube's `ring` feature, the AWS SDK's client with `rustls-ring`) and also
//! installs it as the process default before anything connects, so a dependency that brings
//! a second provider cannot stop the binary again.

/// Installs ring as the process-wide rustls provider. Idempotent: a provider installed
/// earlier (by a test harness, say) is kept.
pub fn install() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The AWS SDK's HTTPS client on rustls with ring (the SDK's default client would bring
/// aws-lc-rs as a second provider). The smithy runtime's type, which every SDK crate
/// re-exports.
pub fn aws_https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}
