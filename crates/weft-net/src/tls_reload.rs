//! Certificates that can be replaced while serving (docs/security.md,
//! "Reload"): the listener asks for the current rustls configuration at
//! each accept, so open connections keep the one they were made with and
//! new ones get the new. A reload builds the new configuration completely
//! before swapping: a bad or missing file leaves the old one in force.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig as RustlsServerConfig;

use crate::error::TlsError;
use crate::tls::TlsServerConfig;

/// What the listener speaks inside TLS (its ALPN id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// The native protocol, `weft/1` (TLS listener).
    Weft,
    /// The HTTP gateway: `http/1.1` (clients offering no ALPN are accepted).
    Http1,
    /// QUIC: `weft/1`, TLS 1.3 only; a swap also hands the configuration
    /// to the QUIC endpoint (`on_swap`).
    Quic,
}

type OnSwap = Box<dyn Fn(&Arc<RustlsServerConfig>) + Send + Sync>;

/// A listener's TLS configuration, swappable.
pub struct ReloadableTls {
    files: TlsServerConfig,
    alpn: Alpn,
    current: ArcSwap<RustlsServerConfig>,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Told of each new configuration (the QUIC endpoint).
    on_swap: std::sync::Mutex<Option<OnSwap>>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls").field("files", &self.files).field("alpn", &self.alpn).finish_non_exhaustive()
    }
}

/// Refuse a server certificate outside its validity period: loading it
/// would make every new handshake fail, so a reload keeps the old one and
/// says why, and a start fails with the dates.
fn check_validity(files: &TlsServerConfig) -> Result<(), TlsError> {
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_file_iter(&files.cert)
        .ok()
        .and_then(|mut it| it.next())
        .and_then(Result::ok);
    // An unreadable file is reported by the full load below.
    let Some(leaf) = leaf else { return Ok(()) };
    let Ok((not_before, not_after)) = crate::x509::cert_validity(&leaf) else { return Ok(()) };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let path = files.cert.clone();
    if now > not_after {
        return Err(TlsError::File { path, reason: format!("certificate expired {} s ago (notAfter, Unix time {not_after})", now - not_after) });
    }
    if now < not_before {
        return Err(TlsError::File { path, reason: format!("certificate not valid for another {} s (notBefore, Unix time {not_before})", not_before - now) });
    }
    Ok(())
}

fn build(files: &TlsServerConfig, alpn: Alpn) -> Result<Arc<RustlsServerConfig>, TlsError> {
    check_validity(files)?;
    let base = crate::tls::server_config(files, alpn == Alpn::Quic)?;
    Ok(match alpn {
        Alpn::Weft | Alpn::Quic => base,
        Alpn::Http1 => {
            let mut c = RustlsServerConfig::clone(&base);
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        }
    })
}

impl ReloadableTls {
    /// Load the certificate, key and client CA named by `files`.
    pub fn new(files: TlsServerConfig, alpn: Alpn) -> Result<Arc<Self>, TlsError> {
        let current = ArcSwap::new(build(&files, alpn)?);
        Ok(Arc::new(Self { files, alpn, current, reloads: AtomicU64::new(0), on_swap: std::sync::Mutex::new(None) }))
    }

    /// The configuration new connections get.
    /// The files a reload reads (the file watch polls them).
    pub fn files(&self) -> &TlsServerConfig {
        &self.files
    }

    pub fn current(&self) -> Arc<RustlsServerConfig> {
        self.current.load_full()
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current())
    }

    /// Build a new configuration from the same files (not swapped yet).
    pub fn prepare(&self) -> Result<Arc<RustlsServerConfig>, TlsError> {
        build(&self.files, self.alpn)
    }

    /// Put a configuration from [`Self::prepare`] in force.
    pub fn swap(&self, next: Arc<RustlsServerConfig>) {
        if let Some(f) = self.on_swap.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            f(&next);
        }
        self.current.store(next);
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Call `f` with every configuration swapped in from now on.
    pub fn set_on_swap(&self, f: impl Fn(&Arc<RustlsServerConfig>) + Send + Sync + 'static) {
        *self.on_swap.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// Re-read the files; on error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let next = self.prepare()?;
        self.swap(next);
        Ok(())
    }
}

/// Reload several listeners all or nothing: every one is rebuilt before
/// any is swapped.
pub fn reload_all(set: &[Arc<ReloadableTls>]) -> Result<usize, TlsError> {
    let next = set.iter().map(|t| t.prepare()).collect::<Result<Vec<_>, _>>()?;
    for (t, n) in set.iter().zip(next) {
        t.swap(n);
    }
    Ok(set.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn validity_of_a_generated_certificate() {
        use rcgen::{date_time_ymd, CertificateParams, KeyPair};
        let mut p = CertificateParams::new(vec!["x".to_owned()]).unwrap();
        p.not_before = date_time_ymd(2019, 3, 1);
        p.not_after = date_time_ymd(2051, 1, 2);
        let cert = p.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let (nb, na) = crate::x509::cert_validity(cert.der()).unwrap();
        assert_eq!(nb, 1_551_398_400);
        assert_eq!(na, 2_556_230_400);
    }
}
