//! TLS for registries: rustls on the ring provider with the system roots and
//! `SSL_CERT_FILE`, or, for a registry marked insecure, no certificate verification.

use std::sync::Arc;

/// rustls with ring: the system roots plus `SSL_CERT_FILE` and the registry's own CA bundle
/// (`ca`, PEM), or no verification at all for a registry marked insecure.
pub fn tls_config(insecure: bool, ca: Option<&String>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    if insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        let certs = CertificateDer::pem_file_iter(&file)
            .map_err(|e| format!("SSL_CERT_FILE {}: {e}", file.to_string_lossy()))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| format!("SSL_CERT_FILE {}: {e}", file.to_string_lossy()))?;
            roots
                .add(cert)
                .map_err(|e| format!("SSL_CERT_FILE {}: {e}", file.to_string_lossy()))?;
        }
    }
    if let Some(pem) = ca {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the registry's CA bundle: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the registry's CA bundle: {e}"))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// The verifier of a registry marked `insecure`: any certificate, signatures still checked.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
