//! What an engine's TLS says and trusts: identities and trust anchors loaded from PEM files.
//!
//! Loading happens when the configuration is built, not when the first peer arrives, so a
//! missing file or a key that does not match its certificate is an error at start-up that
//! names the file. Only TLS 1.3 is offered, with ring's cipher suites, AES-128-GCM first.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// TLS for an engine's connections, each side on its own: accepted connections use
/// [`TlsConfig::accept`], outgoing ones [`TlsConfig::connect`]. A side left `None` speaks
/// plain TCP (the default: loopback and trusted networks need no encryption).
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// Accepted connections speak TLS with this identity (and, if it says so, require client
    /// certificates).
    pub accept: Option<TlsServer>,
    /// Outgoing connections speak TLS and verify the server with this.
    pub connect: Option<TlsClient>,
}

/// The accepting side of TLS: a certificate chain and its key, and optionally the CA that
/// client certificates must chain to (mutual TLS).
#[derive(Clone)]
pub struct TlsServer {
    pub(crate) config: Arc<ServerConfig>,
    mutual: bool,
}

/// The connecting side of TLS: the CAs a server's certificate must chain to, the name it
/// must carry, and optionally this node's own certificate for mutual TLS.
#[derive(Clone)]
pub struct TlsClient {
    pub(crate) config: Arc<ClientConfig>,
    has_identity: bool,
    /// `None`: the address connected to (the certificate must name that IP address).
    pub(crate) server_name: Option<ServerName<'static>>,
}

/// Why a TLS configuration could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A file is not valid PEM, or holds none of what it should.
    Pem {
        /// The file.
        path: PathBuf,
        /// What it should hold ("certificates", "a private key").
        expected: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused what the files hold (a key that does not match its certificate, a CA
    /// certificate it cannot use...).
    Rejected {
        /// The file (the key file, for a certificate and key that do not match).
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// A server name that is neither a DNS name nor an IP address.
    ServerName {
        /// The name given.
        name: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "could not read {}: {source}", path.display())
            }
            TlsError::Pem {
                path,
                expected,
                reason,
            } => write!(
                f,
                "{}: expected PEM {expected}, but {reason}",
                path.display()
            ),
            TlsError::Rejected { path, reason } => {
                write!(f, "{}: refused by TLS: {reason}", path.display())
            }
            TlsError::ServerName { name } => {
                write!(f, "{name:?} is neither a DNS name nor an IP address")
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl TlsServer {
    /// Presents the certificate chain in `cert_chain` (PEM, leaf first) with the private key
    /// in `key` (PEM: PKCS#8, PKCS#1 or SEC1). With `client_ca`, a client must present a
    /// certificate that chains to one of the CA certificates in that PEM file, or the
    /// handshake fails (mutual TLS).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<TlsServer, TlsError> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let chain = certificates(cert_path)?;
        let key = private_key(key_path)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| rejected(cert_path, e))?;
        let builder = match client_ca {
            Some(ca_path) => {
                let roots = roots(ca_path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::Rejected {
                            path: ca_path.to_owned(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| rejected(key_path, e))?;
        // After the handshake, records are sealed and opened by `tls_record` with its keys.
        config.enable_secret_extraction = true;
        Ok(TlsServer {
            config: Arc::new(config),
            mutual: client_ca.is_some(),
        })
    }
}

impl TlsClient {
    /// Trusts servers whose certificate chains to a CA certificate in `ca` (PEM). With
    /// `identity` (a certificate chain and its key, PEM), presents it to servers that ask
    /// (mutual TLS).
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<TlsClient, TlsError> {
        let ca = ca.as_ref();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| rejected(ca, e))?
            .with_root_certificates(roots(ca)?);
        let mut config = match identity {
            Some((cert_path, key_path)) => builder
                .with_client_auth_cert(certificates(cert_path)?, private_key(key_path)?)
                .map_err(|e| rejected(key_path, e))?,
            None => builder.with_no_client_auth(),
        };
        config.enable_secret_extraction = true;
        Ok(TlsClient {
            config: Arc::new(config),
            has_identity: identity.is_some(),
            server_name: None,
        })
    }

    /// The name the server's certificate must carry (a DNS name or an IP address). Without
    /// it, the certificate must name the IP address connected to.
    pub fn server_name(mut self, name: &str) -> Result<TlsClient, TlsError> {
        let parsed = ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName {
            name: name.to_owned(),
        })?;
        self.server_name = Some(parsed);
        Ok(self)
    }

    /// The name to verify a connection to `ip` against.
    pub(crate) fn name_for(&self, ip: IpAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("has_identity", &self.has_identity)
            .finish_non_exhaustive()
    }
}

/// ring, the one crypto library of the crate, with AES-128-GCM preferred: TLS 1.3's
/// mandatory suite, and on AES-NI hardware a fifth faster than AES-256-GCM, which rustls
/// would pick first (weight syncs are encrypted and decrypted byte for byte). AES-256-GCM and
/// ChaCha20-Poly1305 stay on offer for peers that want them.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn rejected(path: &Path, e: rustls::Error) -> TlsError {
    TlsError::Rejected {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    const EXPECTED: &str = "certificates";
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            expected: EXPECTED,
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            expected: EXPECTED,
            reason: "the file holds no CERTIFICATE section".to_owned(),
        });
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        expected: "a private key",
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "the file holds no PRIVATE KEY section".to_owned()
            }
            e => e.to_string(),
        },
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| rejected(path, e))?;
    }
    Ok(roots)
}
