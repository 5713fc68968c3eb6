//! The HTTPS client every Salesforce and fulfilment call goes through: OAuth, REST, the worker's
//! fulfilment system and its notifiers.
//!
//! Trust is the webpki roots plus the optional `SFCDC_CA_CERT`, with the one TLS provider sfcdc
//! builds with (rustls on ring); the Pub/Sub gRPC channel trusts the same roots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Reads the extra trust root named by `SFCDC_CA_CERT`, if any.
pub fn read_ca(ca: Option<&Path>) -> Result<Option<String>, String> {
    ca.map(|p| {
        std::fs::read_to_string(p).map_err(|e| format!("SFCDC_CA_CERT {}: {e}", p.display()))
    })
    .transpose()
}

/// The HTTPS client for OAuth and REST, trusting the webpki roots plus `ca`.
pub fn http_client(ca: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = read_ca(ca)? {
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("SFCDC_CA_CERT: not a PEM certificate: {e}"))?;
            roots.add(cert).map_err(|e| format!("SFCDC_CA_CERT: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("sfcdc/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}
