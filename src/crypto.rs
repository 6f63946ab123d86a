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
