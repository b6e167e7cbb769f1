//! Accepting stream connections (TCP, Unix sockets) behind an allow-list.
//! Every stream protocol Weft serves (native frames, ekosis lines) uses the
//! one loop here, so none of them can forget the allow-list.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::allow::AllowList;
use crate::endpoint::Transport;
use crate::server::PeerInfo;

/// A connection just accepted: let in, or refused by the allow-list (with
/// a description of who, for the log and the refusal message).
pub enum Accepted<S> {
    Admit(S, PeerInfo),
    Refuse(S, String),
}

/// A listener of stream connections.
pub trait StreamListener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    const TRANSPORT: Transport;
    /// Accepts one connection and checks it against `allow` before a byte
    /// of it is read.
    fn accept_checked(&self, allow: &AllowList) -> impl Future<Output = std::io::Result<Accepted<Self::Stream>>> + Send;
}

impl StreamListener for TcpListener {
    type Stream = tokio::net::TcpStream;
    const TRANSPORT: Transport = Transport::Tcp;
    async fn accept_checked(&self, allow: &AllowList) -> std::io::Result<Accepted<Self::Stream>> {
        let (stream, peer) = self.accept().await?;
        if !allow.allows_ip(peer.ip()) {
            return Ok(Accepted::Refuse(stream, peer.to_string()));
        }
        let _ = stream.set_nodelay(true);
        let info = PeerInfo { admission: Some(allow.admission_ip(peer.ip())), ..PeerInfo::new(Transport::Tcp, peer.to_string()) };
        Ok(Accepted::Admit(stream, info))
    }
}

impl StreamListener for UnixListener {
    type Stream = tokio::net::UnixStream;
    const TRANSPORT: Transport = Transport::Unix;
    async fn accept_checked(&self, allow: &AllowList) -> std::io::Result<Accepted<Self::Stream>> {
        let (stream, _) = self.accept().await?;
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        if !allow.allows_uid(uid) {
            return Ok(Accepted::Refuse(stream, format!("uid {uid:?}")));
        }
        let admission = allow.admission_uid(uid);
        let uid = uid.map(|u| u.to_string()).unwrap_or_else(|| "?".into());
        Ok(Accepted::Admit(stream, PeerInfo { admission: Some(admission), ..PeerInfo::new(Transport::Unix, format!("unix:uid={uid}")) }))
    }
}

/// Accepts until `stop` is cancelled: admitted connections go to `admit`,
/// refused ones (logged here) to `refuse`, which may tell the peer why in
/// its own protocol and counts them.
pub async fn accept_loop<L: StreamListener>(
    listener: L,
    allow: AllowList,
    stop: CancellationToken,
    mut admit: impl FnMut(L::Stream, PeerInfo) + Send,
    mut refuse: impl FnMut(L::Stream, String) + Send,
) {
    let transport = L::TRANSPORT.as_str();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept_checked(&allow) => a,
        };
        match accepted {
            Ok(Accepted::Admit(stream, info)) => admit(stream, info),
            Ok(Accepted::Refuse(stream, who)) => {
                warn!(transport, peer = %who, "connection refused by the allow-list");
                refuse(stream, who);
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(transport, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
