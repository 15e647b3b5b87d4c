//! The one TLS client builder: every binding that speaks TLS (HTTPS, SIP over TLS, SMPP over
//! TLS, OBEX over TLS) gets its rustls configuration here, so `ca_file` and client
//! certificates mean the same thing everywhere.
//!
//! * **`ca_file`**: a PEM file of CA certificates **added to** the bundled Mozilla roots
//!   (webpki-roots). It is for private CAs (an operator's SMSC, an internal DM relay); public
//!   peers keep working. A file that holds no certificate is an error: an operator who names
//!   a file meant something by it, and silently trusting only the public roots would hide the
//!   mistake until the first handshake.
//! * **client certificate**: `client_cert` (PEM chain, leaf first) and `client_key` (PEM
//!   private key) go together; with both, the client authenticates when the server asks.
//! * Verification is always on. The crypto provider is ring (crates-and-style §1.10).

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// The process-wide crypto provider: ring. Idempotent.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a TLS client configuration could not be built. Always a configuration error (permanent):
/// the message names the setting (`section`, e.g. `bindings.sip`) and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{section}.{key} {path}: {reason}")]
    File {
        section: String,
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("{section}.{key} {path}: no certificate in the file")]
    NoCertificate {
        section: String,
        key: &'static str,
        path: String,
    },
    #[error("{section}: client_cert and client_key go together")]
    HalfClientIdentity { section: String },
    #[error("{section}: {reason}")]
    Rustls { section: String, reason: String },
}

/// The TLS settings of one client (a binding, an SMSC account). Paths are as configured.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTls<'a> {
    /// Where the settings live, for error messages (`bindings.http`, `bindings.wap.smsc[0]`).
    pub section: &'a str,
    pub ca_file: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
    /// ALPN protocols offered, most preferred first (empty: none).
    pub alpn: &'a [&'a [u8]],
}

impl ClientTls<'_> {
    fn file_err(&self, key: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            section: self.section.to_owned(),
            key,
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// The bundled Mozilla roots plus `ca_file`.
    pub fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = self.ca_file {
            let mut added = 0usize;
            for c in CertificateDer::pem_file_iter(path)
                .map_err(|e| self.file_err("ca_file", path, e))?
            {
                let c = c.map_err(|e| self.file_err("ca_file", path, e))?;
                roots
                    .add(c)
                    .map_err(|e| self.file_err("ca_file", path, e))?;
                added += 1;
            }
            if added == 0 {
                return Err(TlsError::NoCertificate {
                    section: self.section.to_owned(),
                    key: "ca_file",
                    path: path.display().to_string(),
                });
            }
        }
        Ok(roots)
    }

    /// A client configuration with verification on.
    pub fn build(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let rustls_err = |e: rustls::Error| TlsError::Rustls {
            section: self.section.to_owned(),
            reason: e.to_string(),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(rustls_err)?
            .with_root_certificates(self.root_store()?);
        let mut cfg = match (self.client_cert, self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| self.file_err("client_cert", cert, e))?;
                if chain.is_empty() {
                    return Err(TlsError::NoCertificate {
                        section: self.section.to_owned(),
                        key: "client_cert",
                        path: cert.display().to_string(),
                    });
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| self.file_err("client_key", key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(rustls_err)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::HalfClientIdentity {
                    section: self.section.to_owned(),
                });
            }
        };
        cfg.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let k = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, k.cert.pem()).unwrap();
        std::fs::write(&key, k.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn ca_file_adds_to_the_mozilla_roots() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pem_files(dir.path());
        let base = ClientTls::default().root_store().unwrap().len();
        assert!(base > 100, "bundled roots present");
        let with = ClientTls {
            ca_file: Some(&cert),
            ..Default::default()
        };
        assert_eq!(with.root_store().unwrap().len(), base + 1);
    }

    #[test]
    fn an_empty_or_missing_ca_file_is_an_error_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = ClientTls {
            section: "bindings.sip",
            ca_file: Some(&empty),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().starts_with("bindings.sip.ca_file "), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = ClientTls {
            section: "bindings.obex",
            ca_file: Some(&missing),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(e.to_string().contains("bindings.obex.ca_file"), "{e}");
    }

    #[test]
    fn client_identity_needs_both_halves_and_builds_with_both() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path());
        let half = ClientTls {
            section: "bindings.http",
            client_cert: Some(&cert),
            ..Default::default()
        };
        assert!(matches!(
            half.build().unwrap_err(),
            TlsError::HalfClientIdentity { .. }
        ));
        let full = ClientTls {
            section: "bindings.http",
            client_cert: Some(&cert),
            client_key: Some(&key),
            alpn: &[b"h2"],
            ..Default::default()
        }
        .build()
        .unwrap();
        assert!(full.client_auth_cert_resolver.has_certs());
        assert_eq!(full.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
