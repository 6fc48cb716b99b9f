//! TLS for the API port: the certificate and key files, the optional client-certificate CA, and a
//! certificate holder that SIGHUP can refill without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Application protocols offered by ALPN, preferred first.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {setting} {path}: {source}")]
    Read {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// A certificate file does not parse as PEM.
    #[error("{setting} {path}: bad PEM: {source}")]
    BadPem {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{setting} {path}: no PEM certificate")]
    NoCertificate {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// TLS_KEY_FILE holds no private key.
    #[error("TLS_KEY_FILE {path}: no PEM private key (PKCS#8, SEC1 or PKCS#1): {source}")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: pem::Error,
    },
    /// A certificate of TLS_CLIENT_CA_FILE cannot be a trust anchor.
    #[error("TLS_CLIENT_CA_FILE {path}: {source}")]
    ClientCaCertificate {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The certificates of TLS_CLIENT_CA_FILE make no client verifier.
    #[error("TLS_CLIENT_CA_FILE {path}: {source}")]
    ClientVerifier {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::server::VerifierBuilderError,
    },
    /// The key does not belong to the certificate, or the provider cannot use it.
    #[error("TLS_KEY_FILE {key} does not fit TLS_CERT_FILE {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: rustls::Error,
    },
}

/// Where the TLS files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, SEC1 or PKCS#1.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to; `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// TLS ready for the listener: the rustls configuration and the holder of its certificate.
pub struct ServerTls {
    /// Configuration for every new connection.
    pub config: Arc<ServerConfig>,
    /// The served certificate, which [`ReloadableCert::reload`] replaces.
    pub cert: Arc<ReloadableCert>,
}

impl ServerTls {
    /// Loads the files: TLS 1.2 and 1.3 with aws-lc-rs's default suites (all AEAD with ECDHE),
    /// ALPN h2 and http/1.1, and client certificates required when a client CA is given.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert = Arc::new(ReloadableCert::load(
            files.cert.clone(),
            files.key.clone(),
            provider.clone(),
        )?);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("aws-lc-rs supports TLS 1.2 and 1.3");
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(client_roots(path)?),
                    provider,
                )
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: path.to_owned(),
                    source,
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            config: Arc::new(config),
            cert,
        })
    }
}

/// The certificate and key every handshake is answered with, replaceable while serving.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Reads and checks the pair.
    pub fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let current = read_pair(&cert_path, &key_path, &provider)?;
        Ok(Self {
            cert_path,
            key_path,
            provider,
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// Reads the files again and serves the new pair to new connections; on an error the old
    /// pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    fn served(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served())
    }
}

fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates("TLS_CERT_FILE", cert_path)?;
    let key_pem = read("TLS_KEY_FILE", key_path)?;
    // PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") and PKCS#1 ("RSA PRIVATE KEY") alike.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::NoPrivateKey {
        path: key_path.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|reason| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason,
    })
}

fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates("TLS_CLIENT_CA_FILE", path)? {
        roots
            .add(certificate)
            .map_err(|source| TlsError::ClientCaCertificate {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(roots)
}

/// Every PEM certificate in the file; at least one.
fn read_certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            setting,
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            setting,
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new self-signed certificate and its PKCS#8 key, as PEM.
    fn new_pair() -> (String, String) {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (pair.cert.pem(), pair.signing_key.serialize_pem())
    }

    fn served_der(cert: &ReloadableCert) -> Vec<u8> {
        cert.served().cert[0].to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn reload_serves_a_new_pair_and_keeps_the_old_one_when_the_new_one_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let write = |(cert, key): &(String, String)| {
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
        };
        let first = new_pair();
        write(&first);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert = ReloadableCert::load(cert_path.clone(), key_path.clone(), provider).unwrap();
        assert_eq!(served_der(&cert), der(&first.0));

        let renewed = new_pair();
        write(&renewed);
        cert.reload().unwrap();
        assert_eq!(served_der(&cert), der(&renewed.0));

        std::fs::write(&cert_path, new_pair().0).unwrap();
        let error = cert.reload().unwrap_err();
        assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
        std::fs::write(&key_path, "not a key").unwrap();
        let error = cert.reload().unwrap_err();
        assert!(error.to_string().contains("no PEM private key"), "{error}");
        std::fs::remove_file(&cert_path).unwrap();
        let error = cert.reload().unwrap_err();
        assert!(
            error.to_string().starts_with("cannot read TLS_CERT_FILE"),
            "{error}"
        );
        assert_eq!(served_der(&cert), der(&renewed.0));
    }

    #[test]
    fn a_client_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = new_pair();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: Some(dir.path().join("ca.pem")),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        // A key is PEM, but no certificate.
        std::fs::write(files.client_ca.as_ref().unwrap(), key).unwrap();
        let error = ServerTls::load(&files).err().unwrap().to_string();
        assert!(error.starts_with("TLS_CLIENT_CA_FILE"), "{error}");
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
