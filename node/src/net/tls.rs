//! Mutual TLS for the mesh: a private CA, and one certificate per node whose
//! DNS name is the node id. A peer proves who it is by its certificate (the
//! dialer checks the server's name; the listener checks the name the client
//! announces against the client's certificate), and nothing without a
//! certificate from the mesh CA gets past the handshake.
//!
//! One crypto provider (ring) is used everywhere, so rustls never has to
//! guess between two (rustls#2070), and both sides set the same ALPN.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use thiserror::Error;

use ride_types::ids::NodeId;

/// The mesh's application protocol; both sides must offer it.
pub const ALPN: &[u8] = b"ride-mesh/2";
/// Keep-alives well inside the idle timeout keep quiet links open; a short
/// idle timeout notices a dead peer (kill -9, a partition) within seconds.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: not a valid PEM file ({reason})")]
    Pem { what: String, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS configuration failed: {0}")]
    Config(String),
}

/// PEM text of a certificate and its private key.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

/// Makes a new mesh CA.
pub fn new_ca(name: &str) -> Result<PemPair, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Issues a node certificate from the CA: its DNS name is the node id; its
/// IP addresses let clients that dial by address verify it too.
pub fn issue(ca: &PemPair, node: &NodeId, ips: &[IpAddr]) -> Result<PemPair, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let mut params = CertificateParams::new(vec![node.0.clone()])?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params
        .distinguished_name
        .push(DnType::CommonName, node.0.as_str());
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Creates `ca.pem` and `ca.key` in `dir` unless they exist, then a
/// certificate and key for each node (`<node>.pem`, `<node>.key`). Returns
/// the files written.
pub fn write_certificates(
    dir: &Path,
    nodes: &[NodeId],
    ips: &[IpAddr],
) -> Result<Vec<PathBuf>, TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut written = Vec::new();
    let ca = if ca_cert.exists() && ca_key.exists() {
        PemPair {
            cert: std::fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?,
            key: std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?,
        }
    } else {
        let ca = new_ca("ride-sharing mesh CA")?;
        write_private(&ca_key, &ca.key)?;
        std::fs::write(&ca_cert, &ca.cert).map_err(io(&ca_cert))?;
        written.extend([ca_cert, ca_key]);
        ca
    };
    for node in nodes {
        let pair = issue(&ca, node, ips)?;
        let (cert, key) = (
            dir.join(format!("{node}.pem")),
            dir.join(format!("{node}.key")),
        );
        write_private(&key, &pair.key)?;
        std::fs::write(&cert, &pair.cert).map_err(io(&cert))?;
        written.extend([cert, key]);
    }
    Ok(written)
}

/// Writes a private key readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    options
        .open(path)
        .map_err(io)?
        .write_all(pem.as_bytes())
        .map_err(io)
}

/// What a node needs to join the mesh.
#[derive(Debug)]
pub struct Credentials {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Credentials {
    pub fn from_pem(ca_cert: &str, node: &PemPair) -> Result<Self, TlsError> {
        let pem = |what: &str, e: rustls::pki_types::pem::Error| TlsError::Pem {
            what: what.into(),
            reason: e.to_string(),
        };
        Ok(Self {
            ca: CertificateDer::from_pem_slice(ca_cert.as_bytes()).map_err(|e| pem("CA", e))?,
            chain: vec![
                CertificateDer::from_pem_slice(node.cert.as_bytes())
                    .map_err(|e| pem("certificate", e))?,
            ],
            key: PrivateKeyDer::from_pem_slice(node.key.as_bytes()).map_err(|e| pem("key", e))?,
        })
    }

    /// Reads `ca.pem`, `<node>.pem` and `<node>.key` from `dir`.
    pub fn load(dir: &Path, node: &NodeId) -> Result<Self, TlsError> {
        let read = |name: String| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Io { path, source })
        };
        let pair = PemPair {
            cert: read(format!("{node}.pem"))?,
            key: read(format!("{node}.key"))?,
        };
        Self::from_pem(&read("ca.pem".into())?, &pair)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    /// Accepts only clients with a certificate from the mesh CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots()?, Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }

    /// Trusts only servers with a certificate from the mesh CA, and shows
    /// this node's certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto =
            QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }
}

/// Whether the certificate the peer presented (already verified against the
/// mesh CA by the handshake) was issued to `node`.
pub fn peer_is(connection: &quinn::Connection, node: &NodeId) -> bool {
    let Some(identity) = connection.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    let (Some(leaf), Ok(name)) = (chain.first(), ServerName::try_from(node.0.as_str())) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    Arc::new(transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_certificates_that_load() {
        let ca = new_ca("test mesh").unwrap();
        let node = NodeId("dhaka-north-1".into());
        let pair = issue(&ca, &node, &["127.0.0.1".parse().unwrap()]).unwrap();
        let credentials = Credentials::from_pem(&ca.cert, &pair).unwrap();
        credentials.server_config().unwrap();
        credentials.client_config().unwrap();
    }

    #[test]
    fn writes_a_ca_once_and_certificates_that_load() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeId("a".into());
        let first = write_certificates(dir.path(), std::slice::from_ref(&a), &[]).unwrap();
        assert_eq!(first.len(), 4);
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        let again = write_certificates(dir.path(), &[NodeId("b".into())], &[]).unwrap();
        assert_eq!(again.len(), 2, "the CA was made again");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
            ca
        );
        Credentials::load(dir.path(), &a)
            .unwrap()
            .client_config()
            .unwrap();
        assert!(Credentials::load(dir.path(), &NodeId("c".into())).is_err());
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        let ca = new_ca("test mesh").unwrap();
        let err = Credentials::from_pem(
            "not pem",
            &PemPair {
                cert: ca.cert.clone(),
                key: ca.key.clone(),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("CA"), "{err}");
    }
}
