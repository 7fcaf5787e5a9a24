//! The process's TLS client setup: one crypto provider, and the system's CA certificates read once.
//!
//! Reading them means parsing every file of the system bundle (a directory of a few hundred
//! PEM files on Debian): about 4 ms, which reqwest's default verifier paid again on every git
//! fetch and remote-head check. The database connector and the git HTTPS client share the one
//! copy read here.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;

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

/// The TLS client setup of git over HTTPS: the system's roots, the process's one crypto
/// provider, TLS 1.2 and 1.3. Built once; every client shares it. `None` when the system has no
/// CA certificates (the HTTP client then reports its own error on an https URL).
pub fn https_client_config() -> Option<rustls::ClientConfig> {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Some(config.clone());
    }
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(native_roots()?)
        .with_no_client_auth();
    Some(CONFIG.get_or_init(|| config).clone())
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
