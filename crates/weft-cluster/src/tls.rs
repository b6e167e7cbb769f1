//! mTLS between cluster nodes (docs/cluster.md, "TLS between nodes").
//!
//! Every node holds a certificate signed by the cluster CA that names it
//! with the DNS subject alternative name `node-<id>`. The raft transport
//! then runs over TLS 1.3 both ways: the dialer verifies the accepting
//! node's certificate against the CA *and* the name `node-<id>` of the node
//! it meant to reach (rustls' server-name check); the acceptor verifies the
//! dialer's certificate against the CA and, once the dialer's hello names
//! its node id, that the certificate names that id ([`check_claim`]). A
//! certificate of another CA fails the handshake; a certificate of the
//! cluster CA naming node 4 cannot claim to be node 2.
//!
//! The name checks are sans-IO (certificate bytes in, a verdict out); the
//! handshakes themselves are tokio-rustls in `transport`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::error::{ClusterError, Result};
use crate::host::NodeId;

/// ALPN of the raft transport. The cluster port also accepts the native
/// protocol's `weft/1` (`weft_net::tls::ALPN`): other nodes' forwarded
/// requests, handed to the node's native server. A client offering neither
/// fails the handshake instead of reading raft frames.
pub const ALPN: &[u8] = b"weft-raft/1";

/// The name a node's certificate must carry (as a DNS SAN).
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// The node ids a certificate's subject alternative names name
/// (`node-<id>` entries; anything else is ignored).
pub fn named_nodes(leaf: &[u8]) -> Result<Vec<NodeId>> {
    let names = weft_net::cert_names(leaf).map_err(|e| ClusterError::PeerIdentity(format!("unreadable certificate: {e}")))?;
    Ok(names.alt_names.iter().filter_map(|n| n.strip_prefix("node-")?.parse::<NodeId>().ok()).filter(|id| *id != 0).collect())
}

/// Whether a verified certificate may speak for `claimed` (the node id of
/// its hello): one of its SANs must be `node-<claimed>`. The refusal says
/// what the certificate names instead, for the log.
pub fn check_claim(leaf: &[u8], claimed: NodeId) -> Result<()> {
    let named = named_nodes(leaf)?;
    if named.contains(&claimed) {
        return Ok(());
    }
    let names = if named.is_empty() { "no node-<id> name".to_owned() } else { named.iter().map(|id| node_name(*id)).collect::<Vec<_>>().join(",") };
    Err(ClusterError::PeerIdentity(format!("hello claims node {claimed}, certificate names {names}")))
}

/// Files of `cluster.tls.*`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM: this node's certificate (then any intermediates).
    pub cert: PathBuf,
    /// PEM: its private key.
    pub key: PathBuf,
    /// PEM bundle: the cluster CA(s) peers' certificates must chain to.
    pub ca: PathBuf,
}

/// The rustls configurations of one node (both directions are mutually
/// authenticated).
pub struct ClusterTls {
    pub files: TlsFiles,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").field("files", &self.files).finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Built per configuration (not the process default): docs/tls.md, "rustls with ring only".
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> ClusterError {
    ClusterError::Config(format!("cluster.tls: {}: {why}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path).and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>()).map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots.add(c).map_err(|e| file_err(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

impl ClusterTls {
    /// Load the files of node `id`. Refused when the certificate does not
    /// name `node-<id>`: such a node could reach no peer (they check the
    /// name), so it is a configuration error at start, not a silent split.
    pub fn load(id: NodeId, files: TlsFiles) -> Result<Arc<ClusterTls>> {
        let certs = read_certs(&files.cert)?;
        let leaf = certs.first().ok_or_else(|| file_err(&files.cert, "no certificate"))?;
        if !named_nodes(leaf)?.contains(&id) {
            return Err(file_err(&files.cert, format!("the certificate does not name this node: it needs the DNS subject alternative name {}", node_name(id))));
        }
        Self::build(files, certs)
    }

    /// Like [`Self::load`] without the own-name check: tests build
    /// impostors with it.
    pub fn load_unchecked(files: TlsFiles) -> Result<Arc<ClusterTls>> {
        let certs = read_certs(&files.cert)?;
        Self::build(files, certs)
    }

    fn build(files: TlsFiles, certs: Vec<CertificateDer<'static>>) -> Result<Arc<ClusterTls>> {
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key, e))?;
        let roots = read_roots(&files.ca)?;
        let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build().map_err(|e| file_err(&files.ca, e))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(tls13)
            .map_err(|e| ClusterError::Config(format!("cluster.tls: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| file_err(&files.key, format!("key does not fit the certificate: {e}")))?;
        server.alpn_protocols = vec![ALPN.to_vec(), weft_net::tls::ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(tls13)
            .map_err(|e| ClusterError::Config(format!("cluster.tls: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| file_err(&files.key, format!("key does not fit the certificate: {e}")))?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(ClusterTls {
            files,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        }))
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    pub(crate) fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.connector
    }

    /// The server name a dialer checks: the peer it means to reach.
    pub(crate) fn server_name(peer: NodeId) -> Result<ServerName<'static>> {
        ServerName::try_from(node_name(peer)).map_err(|e| ClusterError::Config(format!("node name: {e}")))
    }
}

/// A CA and node certificates for unit tests.
#[cfg(test)]
pub(crate) mod test_certs {
    use super::TlsFiles;
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

    pub struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    impl Ca {
        pub fn new(name: &str) -> Ca {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, name);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            Ca { cert: p.self_signed(&key).unwrap(), key }
        }

        fn leaf(&self, cn: &str, sans: &[&str]) -> (rcgen::Certificate, KeyPair) {
            let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, cn);
            let k = KeyPair::generate().unwrap();
            (p.signed_by(&k, &self.cert, &self.key).unwrap(), k)
        }

        pub fn leaf_der(&self, cn: &str, sans: &[&str]) -> Vec<u8> {
            self.leaf(cn, sans).0.der().to_vec()
        }

        /// `<name>.pem`, `<name>.key` and `<name>-ca.pem` in `dir`.
        pub fn node_files(&self, dir: &std::path::Path, name: &str, sans: &[&str]) -> TlsFiles {
            let (c, k) = self.leaf(name, sans);
            let files = TlsFiles { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")), ca: dir.join(format!("{name}-ca.pem")) };
            std::fs::write(&files.cert, c.pem()).unwrap();
            std::fs::write(&files.key, k.serialize_pem()).unwrap();
            std::fs::write(&files.ca, self.cert.pem()).unwrap();
            files
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_certs::Ca;
    use super::*;

    #[test]
    fn a_certificate_speaks_for_the_nodes_its_sans_name() {
        let ca = Ca::new("test cluster CA");
        let leaf = |ca: &Ca, cn: &str, sans: &[&str]| ca.leaf_der(cn, sans);
        let n2 = leaf(&ca, "node-2", &["node-2"]);
        assert!(check_claim(&n2, 2).is_ok());
        // Another id than the certificate's: refused, and the refusal says what it names.
        let e = check_claim(&n2, 3).unwrap_err();
        assert!(matches!(&e, ClusterError::PeerIdentity(m) if m.contains("claims node 3") && m.contains("node-2")), "{e}");
        // The common name alone does not count (the dialer's server-name check reads SANs only).
        assert!(check_claim(&leaf(&ca, "node-2", &["example.org"]), 2).is_err());
        // Look-alikes are not names of nodes.
        assert!(named_nodes(&leaf(&ca, "x", &["node-02x", "node-", "node-0", "xnode-2"])).unwrap().is_empty());
        assert_eq!(named_nodes(&leaf(&ca, "x", &["node-7", "127.0.0.1", "node-9"])).unwrap(), vec![7, 9]);
        // Bytes that are no certificate: a typed refusal, never a panic.
        assert!(matches!(check_claim(b"\x30\x03\x02\x01", 1), Err(ClusterError::PeerIdentity(_))));
        for cut in 0..n2.len() {
            let _ = check_claim(&n2[..cut], 2);
        }
    }
}
