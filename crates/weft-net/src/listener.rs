//! Accepting stream connections (TCP, Unix sockets) behind an allow-list.
//! Every stream protocol Weft serves (native frames, ekosis lines) uses the
//! one loop here, so none of them can forget the allow-list.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
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
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Movable + 'static;
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

/// A socket that can move to another runtime. tokio's sockets belong to the
/// reactor of the runtime that made them, so one goes over as a std socket
/// (still non-blocking) and is registered again where it arrives.
pub trait Movable: Sized {
    type Std: Send + 'static;
    fn into_std(self) -> std::io::Result<Self::Std>;
    /// Must run inside the runtime that is to serve the socket.
    fn from_std(s: Self::Std) -> std::io::Result<Self>;
}

impl Movable for TcpStream {
    type Std = std::net::TcpStream;
    fn into_std(self) -> std::io::Result<Self::Std> {
        TcpStream::into_std(self)
    }
    fn from_std(s: Self::Std) -> std::io::Result<Self> {
        TcpStream::from_std(s)
    }
}

impl Movable for UnixStream {
    type Std = std::os::unix::net::UnixStream;
    fn into_std(self) -> std::io::Result<Self::Std> {
        UnixStream::into_std(self)
    }
    fn from_std(s: Self::Std) -> std::io::Result<Self> {
        UnixStream::from_std(s)
    }
}

/// A connection's whole life, ready to be spawned on a connection thread.
pub(crate) type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Connection threads (`Server::set_connection_threads`): each runs a
/// current-thread runtime that serves the connections handed to it and
/// every task they spawn, so a connection's work never moves between
/// cores. One acceptor hands connections out (rather than one
/// SO_REUSEPORT listener per thread): it works for Unix sockets too, keeps
/// the allow-list, `max_connections` and refusals in one place, and costs
/// one channel send per connection, not per request.
pub(crate) struct ConnThreads {
    threads: Vec<ConnThread>,
    /// Where the search for the least-loaded thread starts (round-robin
    /// among equals).
    next: AtomicUsize,
}

struct ConnThread {
    tx: mpsc::UnboundedSender<ConnFuture>,
    /// Connections handed to this thread and not yet ended.
    open: Arc<AtomicUsize>,
}

/// Ends with the connection: one fewer open on its thread.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnThreads {
    /// Starts `n` threads (named `weft-conn-<i>`). They run until the
    /// `ConnThreads` is dropped (the server with it) and their connections
    /// have ended.
    pub(crate) fn start(n: usize) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<ConnFuture>();
            std::thread::Builder::new().name(format!("weft-conn-{i}")).spawn(move || {
                rt.block_on(async move {
                    while let Some(conn) = rx.recv().await {
                        tokio::spawn(conn);
                    }
                });
                // The server is gone. What is left here (tasks a drain
                // did not wait for) is dropped, as the main runtime drops
                // its own at exit; blocking work is not waited for.
                rt.shutdown_background();
            })?;
            threads.push(ConnThread { tx, open: Arc::new(AtomicUsize::new(0)) });
        }
        Ok(ConnThreads { threads, next: AtomicUsize::new(0) })
    }

    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Runs `conn` on the thread with the fewest open connections. Should
    /// that thread be gone (it can only end by panicking), the connection
    /// is served on the caller's runtime instead.
    pub(crate) fn hand_over(&self, conn: ConnFuture) {
        let n = self.threads.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        // The first of the least loaded from `start` on.
        let Some((best, t)) = (0..n)
            .map(|k| (start + k) % n)
            .filter_map(|i| self.threads.get(i).map(|t| (i, t)))
            .min_by_key(|(_, t)| t.open.load(Ordering::Relaxed))
        else {
            tokio::spawn(conn);
            return;
        };
        t.open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(t.open.clone());
        let conn: ConnFuture = Box::pin(async move {
            let _guard = guard;
            conn.await
        });
        if let Err(mpsc::error::SendError(conn)) = t.tx.send(conn) {
            warn!(thread = best, "connection thread gone; serving on the main runtime");
            tokio::spawn(conn);
        }
    }
}
