//! TLS settings for the TLS-over-TCP and QUIC listeners and clients:
//! loading PEM files into rustls configurations (ring provider only), the
//! client-certificate policy (mTLS), and development certificates made
//! with rcgen.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig as RustlsClientConfig, RootCertStore, ServerConfig as RustlsServerConfig};

use crate::error::TlsError;

/// The ALPN protocol id of Weft's native protocol, version 1, on TLS and QUIC.
pub const ALPN: &[u8] = b"weft/1";

/// Whether the server asks for client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates (server-authenticated TLS only).
    #[default]
    None,
    /// A certificate is verified when presented; clients without one are let in.
    Optional,
    /// Clients without a certificate signed by the client CA are refused.
    Require,
}

impl FromStr for ClientAuth {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        match s {
            "none" | "" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "require" => Ok(ClientAuth::Require),
            other => Err(TlsError::Config(format!("client_auth must be none, optional or require, not {other:?}"))),
        }
    }
}

/// Server side: certificate chain, key, and who may connect.
#[derive(Debug, Clone)]
pub struct TlsServerConfig {
    /// PEM: the server certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of CAs whose client certificates are accepted (mTLS).
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Client side: whom to trust, what to present, what name to check.
#[derive(Debug, Clone, Default)]
pub struct TlsClientConfig {
    /// PEM bundle of CAs to trust; `None`: the Mozilla roots (webpki-roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and key, for mTLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to verify the server certificate against; default: the host of
    /// the endpoint.
    pub server_name: Option<String>,
}

impl TlsClientConfig {
    /// From `WEFT_TLS_CA`, `WEFT_TLS_CLIENT_CERT`, `WEFT_TLS_CLIENT_KEY`,
    /// `WEFT_TLS_SERVER_NAME` (unset or empty: not set), so that every tool
    /// built on [`crate::ClientConfig::default`] can reach a TLS or QUIC node.
    /// (Not `WEFT_TLS_CERT`/`KEY`: those set the server's `tls.cert`/`tls.key`.)
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            ca: var("WEFT_TLS_CA").map(PathBuf::from),
            cert: var("WEFT_TLS_CLIENT_CERT").map(PathBuf::from),
            key: var("WEFT_TLS_CLIENT_KEY").map(PathBuf::from),
            server_name: var("WEFT_TLS_SERVER_NAME"),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::File { path: path.to_owned(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::File { path: path.to_owned(), reason: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File { path: path.to_owned(), reason: e.to_string() })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots.add(c).map_err(|e| TlsError::File { path: path.to_owned(), reason: format!("not a usable CA certificate: {e}") })?;
    }
    Ok(roots)
}

/// TLS versions for a listener: TLS 1.3 and 1.2 over TCP; QUIC is 1.3 only.
pub(crate) fn server_config(cfg: &TlsServerConfig, quic: bool) -> Result<Arc<RustlsServerConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] =
        if quic { &[&rustls::version::TLS13] } else { rustls::DEFAULT_VERSIONS };
    let builder = RustlsServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (cfg.client_auth, &cfg.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::Config("client_auth optional/require needs a client CA bundle (tls.client_ca)".into()));
        }
        (auth, Some(ca)) => {
            let roots = Arc::new(read_roots(ca)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let v = if auth == ClientAuth::Optional { v.allow_unauthenticated() } else { v };
            builder.with_client_cert_verifier(v.build().map_err(|e| TlsError::Config(e.to_string()))?)
        }
    };
    let mut config = builder
        .with_single_cert(read_certs(&cfg.cert)?, read_key(&cfg.key)?)
        .map_err(|e| TlsError::File { path: cfg.key.clone(), reason: format!("key does not fit the certificate: {e}") })?;
    // Over TCP a client may offer no ALPN at all (openssl s_client, Python
    // ssl without set_alpn_protocols); rustls accepts that. QUIC requires it.
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

pub(crate) fn client_config(cfg: &TlsClientConfig, quic: bool) -> Result<Arc<RustlsClientConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] =
        if quic { &[&rustls::version::TLS13] } else { rustls::DEFAULT_VERSIONS };
    let roots = match &cfg.ca {
        Some(ca) => read_roots(ca)?,
        None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let builder = RustlsClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| TlsError::File { path: key.clone(), reason: format!("key does not fit the certificate: {e}") })?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::Config("a client certificate needs both --cert and --key".into())),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The name to verify: the override, else the host part of `host:port`.
pub(crate) fn server_name(cfg: &TlsClientConfig, addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match &cfg.server_name {
        Some(n) => n.as_str(),
        None => host_of(addr),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::Config(format!("{host:?} is not a valid server name")))
}

fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr)
}

/// The identity of a verified client certificate chain (its first
/// certificate): common name, else the first subject alternative name.
pub(crate) fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = certs?.first()?;
    match crate::x509::cert_names(leaf) {
        Ok(n) => n.identity(),
        Err(e) => {
            // rustls accepted it, so this is our reader's limit, not an attack.
            tracing::warn!(error = %e, "cannot read the names of a verified client certificate");
            None
        }
    }
}

/// Development certificates: a CA, and leaf certificates it signs.
pub mod dev {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

    /// What [`init`] and [`ensure_server`] write.
    #[derive(Debug, Clone)]
    pub struct DevFiles {
        pub ca_cert: PathBuf,
        pub ca_key: PathBuf,
        pub server_cert: PathBuf,
        pub server_key: PathBuf,
        /// Only written by [`init`].
        pub client_cert: PathBuf,
        pub client_key: PathBuf,
    }

    impl DevFiles {
        pub fn in_dir(dir: &Path) -> Self {
            Self {
                ca_cert: dir.join("ca.pem"),
                ca_key: dir.join("ca.key"),
                server_cert: dir.join("server.pem"),
                server_key: dir.join("server.key"),
                client_cert: dir.join("client.pem"),
                client_key: dir.join("client.key"),
            }
        }
    }

    fn gen_err(e: rcgen::Error) -> TlsError {
        TlsError::Config(format!("generating a certificate: {e}"))
    }

    fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
        let io = |e: std::io::Error| TlsError::File { path: path.to_owned(), reason: e.to_string() };
        if secret {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // Keys are readable by their owner only, from the first byte.
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)
        } else {
            std::fs::write(path, text).map_err(io)
        }
    }

    /// Server names every development certificate carries.
    pub fn default_server_names() -> Vec<String> {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        if let Ok(h) = std::env::var("HOSTNAME")
            && !h.trim().is_empty()
            && !names.iter().any(|n| n == h.trim())
        {
            names.push(h.trim().to_owned());
        }
        names
    }

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn new_ca(name: &str) -> Result<Ca, TlsError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = p.self_signed(&key).map_err(gen_err)?;
        Ok(Ca { cert, key })
    }

    fn leaf(ca: &Ca, cn: &str, sans: &[String], client: bool) -> Result<(String, String), TlsError> {
        let mut p = CertificateParams::new(sans.to_vec()).map_err(gen_err)?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = p.signed_by(&key, &ca.cert, &ca.key).map_err(gen_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes a fresh CA, a server certificate for `server_names` and a
    /// client certificate with common name `client_cn` into `dir`
    /// (overwriting), for mTLS testing.
    pub fn init(dir: &Path, server_names: &[String], client_cn: &str) -> Result<DevFiles, TlsError> {
        std::fs::create_dir_all(dir).map_err(|e| TlsError::File { path: dir.to_owned(), reason: e.to_string() })?;
        let files = DevFiles::in_dir(dir);
        let ca = new_ca("weft development CA")?;
        let (server_pem, server_key) = leaf(&ca, server_names.first().map(String::as_str).unwrap_or("localhost"), server_names, false)?;
        let (client_pem, client_key) = leaf(&ca, client_cn, &[], true)?;
        write(&files.ca_cert, &ca.cert.pem(), false)?;
        write(&files.ca_key, &ca.key.serialize_pem(), true)?;
        write(&files.server_cert, &server_pem, false)?;
        write(&files.server_key, &server_key, true)?;
        write(&files.client_cert, &client_pem, false)?;
        write(&files.client_key, &client_key, true)?;
        Ok(files)
    }

    /// The server certificate and key in `dir`, generated (with a CA) on
    /// the first call and reused afterwards. Returns the files and whether
    /// they were generated now.
    pub fn ensure_server(dir: &Path) -> Result<(DevFiles, bool), TlsError> {
        let files = DevFiles::in_dir(dir);
        if files.server_cert.exists() && files.server_key.exists() {
            return Ok((files, false));
        }
        let files = init(dir, &default_server_names(), "weft-dev-client")?;
        Ok((files, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_names() {
        assert_eq!(host_of("127.0.0.1:7403"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7403"), "::1");
        assert_eq!(host_of("node.example:7403"), "node.example");
        let c = TlsClientConfig::default();
        assert!(matches!(server_name(&c, "127.0.0.1:1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name(&c, "localhost:1").unwrap(), ServerName::DnsName(_)));
        let c = TlsClientConfig { server_name: Some("weft.example".into()), ..c };
        assert_eq!(server_name(&c, "127.0.0.1:1").unwrap().to_str(), "weft.example");
        assert!("maybe".parse::<ClientAuth>().is_err());
        assert_eq!("require".parse::<ClientAuth>().unwrap(), ClientAuth::Require);
    }

    #[test]
    fn dev_certificates_load_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (files, fresh) = dev::ensure_server(dir.path()).unwrap();
        assert!(fresh);
        let (_, again) = dev::ensure_server(dir.path()).unwrap();
        assert!(!again);
        let server = TlsServerConfig {
            cert: files.server_cert.clone(),
            key: files.server_key.clone(),
            client_ca: Some(files.ca_cert.clone()),
            client_auth: ClientAuth::Require,
        };
        server_config(&server, false).unwrap();
        server_config(&server, true).unwrap();
        let client = TlsClientConfig {
            ca: Some(files.ca_cert.clone()),
            cert: Some(files.client_cert.clone()),
            key: Some(files.client_key.clone()),
            server_name: None,
        };
        client_config(&client, true).unwrap();
        let pem = std::fs::read(&files.client_cert).unwrap();
        let der = CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
        assert_eq!(peer_identity(Some(&[der])).as_deref(), Some("weft-dev-client"));
        let bad = TlsServerConfig { client_ca: None, ..server };
        assert!(matches!(server_config(&bad, false), Err(TlsError::Config(_))));
        let missing = TlsClientConfig { ca: Some(dir.path().join("nope.pem")), ..Default::default() };
        assert!(matches!(client_config(&missing, false), Err(TlsError::File { .. })));
    }
}
