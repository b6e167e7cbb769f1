//! HTTPS for the gateway (`http.tls`): TLS from the same `tls.*`
//! certificate, key and client-certificate policy as the native protocol,
//! reloadable (weft-net's `ReloadableTls`: each accept takes the
//! configuration in force). Handshakes run in their own tasks, bounded by a
//! timeout, so a slow client never holds up accepting; finished streams are
//! handed to axum through a small channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use weft_net::tls_reload::ReloadableTls;

/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for axum to take them.
const QUEUE: usize = 64;

/// An `axum::serve` listener of TLS streams.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Start accepting on `listener`; handshakes use `tls` as it is at each
    /// accept.
    pub fn spawn(listener: TcpListener, tls: Arc<ReloadableTls>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::debug!(error = %e, "https accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = tls.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => tracing::warn!(peer = %peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::warn!(peer = %peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The peer of an HTTPS connection (axum's `ConnectInfo<SocketAddr>` is only
/// implemented for its own TCP listener; [`with_peer_addr`] turns this into
/// that, so the allow-list and handlers see the same type either way), and
/// the name of its client certificate, when it presented one the client CA
/// verified (`tls.client_auth` optional or require).
#[derive(Debug, Clone)]
pub struct TlsPeer(pub SocketAddr, pub Option<ClientCertName>);

/// The identity named by a verified client certificate (its common name,
/// else its first subject alternative name), in an HTTPS request's
/// extensions; the auth layer takes it for the user of that name when the
/// request carries no token (docs/security.md, "HTTP gateway").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertName(pub Arc<str>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        // rustls only hands out certificates its client verifier accepted.
        let name = stream.io().get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|leaf| match weft_net::cert_names(leaf) {
            Ok(n) => n.identity(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the names of a verified client certificate");
                None
            }
        });
        TlsPeer(*stream.remote_addr(), name.map(|n| ClientCertName(Arc::from(n))))
    }
}

/// Outermost layer of the HTTPS router: `ConnectInfo<TlsPeer>` as
/// `ConnectInfo<SocketAddr>`.
pub async fn with_peer_addr(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<TlsPeer>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    req.extensions_mut().insert(axum::extract::ConnectInfo(peer.0));
    if let Some(name) = peer.1 {
        req.extensions_mut().insert(name);
    }
    next.run(req).await
}
