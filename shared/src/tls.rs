//! The process's TLS client setup: one crypto provider, and the system's CA certificates read once.
//!
//! Reading them means parsing every file of the system bundle (a directory of a few hundred
//! PEM files on Debian), which reqwest's default verifier paid again on every git fetch and
//! remote-head check, plain http included. The database connector and the git HTTP client share
//! the one copy read here; the git client reads it only when a handshake needs it.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The one crypto provider every TLS client of the process uses (the AWS SDKs link aws-lc-rs
/// already).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The system's CA certificates, or `None` when none were found (then nothing is cached, so a
/// bundle installed later is still picked up).
pub fn native_roots() -> Option<Arc<RootCertStore>> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    if let Some(roots) = ROOTS.get() {
        return Some(roots.clone());
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        return None;
    }
    Some(ROOTS.get_or_init(|| Arc::new(roots)).clone())
}

/// The TLS client setup of git over HTTP(S): the system's roots, the process's one crypto
/// provider, TLS 1.2 and 1.3. Built once; every client shares it. The roots are read at the
/// first handshake, not when a client is built: a fetch over plain http (which a redirect may
/// still take to https) never reads them. `None` only when the crypto provider offers neither
/// TLS version.
pub fn git_client_config() -> Option<rustls::ClientConfig> {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Some(config.clone());
    }
    let provider = crypto_provider();
    let verifier = Arc::new(RootsOnFirstUse {
        provider: provider.clone(),
        verifier: OnceLock::new(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Some(CONFIG.get_or_init(|| config).clone())
}

/// rustls's WebPKI verifier over [`native_roots`], built on its first use.
#[derive(Debug)]
struct RootsOnFirstUse {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Arc<WebPkiServerVerifier>>,
}

impl RootsOnFirstUse {
    fn verifier(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        if let Some(verifier) = self.verifier.get() {
            return Ok(verifier);
        }
        let roots = native_roots().ok_or_else(|| {
            rustls::Error::General(
                "no CA certificates found on this system (install ca-certificates)".into(),
            )
        })?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|err| rustls::Error::General(err.to_string()))?;
        Ok(self.verifier.get_or_init(|| verifier))
    }
}

impl ServerCertVerifier for RootsOnFirstUse {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_are_read_once_and_shared() {
        let first = native_roots().expect("this machine has a CA bundle");
        let second = native_roots().unwrap();

        assert!(Arc::ptr_eq(&first, &second));
        assert!(!first.is_empty());
    }
}
