use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use weft_wire::{
    decode_datagram, encode, BodyFormat, ErrorBody, ErrorCode, Frame, FrameError, FrameKind,
    Heartbeat, Hello, MessageId, Welcome, CONTROL_GOAWAY, CONTROL_HEARTBEAT, CONTROL_HELLO,
    CONTROL_WELCOME, PROTOCOL_VERSION,
};

use crate::allow::AllowList;
use crate::budget::{Budgets, ConnSlot, Reservation};
use crate::endpoint::Transport;
use crate::error::NetError;
use crate::listener::{ConnThreads, Movable, StreamListener};
use crate::splitter::{Splitter, Step};
use crate::liveness::LivenessTable;
use crate::MAX_DATAGRAM_BYTES;
use weft_metrics::Counter;

pub type HandlerFuture = Pin<Box<dyn Future<Output = Option<Frame>> + Send + 'static>>;

/// What a server serves: given a request or event frame, produce the answer
/// (`None` for events and one-way requests). Implemented by weft-service.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, frame: Frame, peer: Arc<PeerInfo>) -> HandlerFuture;
}

/// Who sent a frame.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub transport: Transport,
    /// Remote address (`ip:port`) or, for Unix sockets, `unix:` and the peer uid.
    pub addr: String,
    /// Who the client is. On TLS and QUIC connections with a verified
    /// client certificate (mTLS): the certificate's common name, else its
    /// first subject alternative name, set before any frame is read and
    /// never replaced by the hello (the hello's id is self-declared; it is
    /// logged). Otherwise the client id from the hello, once it arrived.
    pub client_id: Option<String>,
    /// Events to this client's connection (stream transports once the
    /// connection is served; `None` on UDP, QUIC and before serving).
    pub events: Option<crate::events::EventSink>,
    /// Who the caller is for authorisation (docs/security.md): set at the
    /// hello when the server has an authorizer; `None` otherwise.
    pub identity: Option<weft_auth::Identity>,
    /// The allow-list that admitted this connection (stream transports and
    /// QUIC), checked again at each request once a reload replaced it.
    pub admission: Option<crate::allow::Admission>,
}

impl PeerInfo {
    pub fn new(transport: Transport, addr: impl Into<String>) -> Self {
        Self { transport, addr: addr.into(), client_id: None, events: None, identity: None, admission: None }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub features: Vec<String>,
    pub max_frame_bytes: usize,
    /// Requests handled at once per stream connection; further frames wait
    /// (TCP back-pressure). On UDP, over the limit is answered `busy`.
    pub max_in_flight_per_conn: usize,
    /// Who may use each listener; the rest is refused unread.
    pub allow_tcp: AllowList,
    pub allow_udp: AllowList,
    pub allow_unix: AllowList,
    pub allow_tls: AllowList,
    pub allow_quic: AllowList,
    /// A stream connection must send its hello within this of being
    /// accepted (TLS: the TLS handshake included); else it gets a typed
    /// `timeout` error frame and is closed.
    pub handshake_timeout: Duration,
    /// A handshaken stream connection with no frame received and nothing in
    /// flight for this long is sent `goaway` and closed. None: never.
    pub idle_timeout: Option<Duration>,
    /// Bytes of frames one connection may hold: the frame being read plus
    /// the requests it has in flight.
    pub max_conn_buffer_bytes: usize,
    /// Bytes of frames all connections together may hold.
    pub max_buffer_bytes: usize,
    /// Stream connections (TCP, Unix, TLS) and QUIC connections open at
    /// once; past it new ones are refused (`busy`) and counted.
    pub max_connections: usize,
    /// Users, roles and credentials (weft-auth). With one that is enabled,
    /// every request is checked at dispatch (`gate::check`); None: no checks.
    pub auth: Option<std::sync::Arc<weft_auth::Authorizer>>,
}

/// Defaults of the connection limits (documented in docs/operations.md).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_CONN_BUFFER_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 256 * 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Before the hello only a hello is expected, and a hello is small: a
/// client that has not identified itself cannot make the server reserve
/// a large frame.
pub const MAX_PRE_HELLO_FRAME_BYTES: usize = crate::budget::SMALL_FRAME_BYTES;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            server_id: uuid::Uuid::new_v4().to_string(),
            server_name: "weft".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features: vec![],
            max_frame_bytes: weft_wire::DEFAULT_MAX_FRAME_BYTES,
            max_in_flight_per_conn: 256,
            allow_tcp: AllowList::default(),
            allow_udp: AllowList::default(),
            allow_unix: AllowList::default(),
            allow_tls: AllowList::default(),
            allow_quic: AllowList::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_conn_buffer_bytes: DEFAULT_MAX_CONN_BUFFER_BYTES,
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth: None,
        }
    }
}

/// Counters for `weft.info`/`weft.stats`.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bad_frames: AtomicU64,
    pub datagrams_in: AtomicU64,
    /// Connections and datagrams refused by the allow-lists.
    pub refused: AtomicU64,
    /// Open connections closed at a request because a reloaded allow-list
    /// no longer admits their peer (also counted in `refused`).
    pub allow_list_closed: AtomicU64,
    /// TLS and QUIC handshakes that failed (bad or missing client
    /// certificate, wrong CA, not TLS at all, timeout).
    pub tls_handshake_failures: AtomicU64,
    /// QUIC streams reset or ended early by the peer, or carrying bad frames.
    pub quic_stream_errors: AtomicU64,
    /// Connections counted against `max_connections` now (TLS and QUIC
    /// ones from accept, handshake included).
    pub conn_open: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub conn_refused_max: AtomicU64,
    /// Connections closed because no hello came within the handshake timeout.
    pub handshake_timeouts: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
    /// Bytes reserved for frames being read or handled, all connections.
    pub buffer_bytes: AtomicU64,
    /// Times a connection stopped reading to wait for buffer budget.
    pub buffer_waits: AtomicU64,
    /// Compressed requests received and answers sent compressed, and the
    /// bytes compression saved on the wire each way.
    pub compressed_in: AtomicU64,
    pub compressed_out: AtomicU64,
    pub compressed_in_saved_bytes: AtomicU64,
    pub compressed_out_saved_bytes: AtomicU64,
    /// Threads serving TCP and Unix connections (`Server::set_connection_threads`);
    /// 0: they run on the caller's runtime.
    pub connection_threads: AtomicU64,
    /// Worker threads of the runtime the server was started on, as its
    /// owner reports them (`weft serve`: `net.runtime_threads`); 0: not said.
    pub runtime_threads: AtomicU64,
}

impl ServerStats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("net.connections_accepted", self.connections_accepted.load(Ordering::Relaxed)),
            ("net.connections_open", self.connections_open.load(Ordering::Relaxed)),
            ("net.frames_in", self.frames_in.load(Ordering::Relaxed)),
            ("net.frames_out", self.frames_out.load(Ordering::Relaxed)),
            ("net.bad_frames", self.bad_frames.load(Ordering::Relaxed)),
            ("net.datagrams_in", self.datagrams_in.load(Ordering::Relaxed)),
            ("net.refused", self.refused.load(Ordering::Relaxed)),
            ("net.allow_list_closed", self.allow_list_closed.load(Ordering::Relaxed)),
            ("net.refused_unaudited", crate::gate::REFUSED_UNAUDITED.load(Ordering::Relaxed)),
            ("net.tls_handshake_failures", self.tls_handshake_failures.load(Ordering::Relaxed)),
            ("net.quic_stream_errors", self.quic_stream_errors.load(Ordering::Relaxed)),
            ("net.conn.open", self.conn_open.load(Ordering::Relaxed)),
            ("net.conn.refused_max", self.conn_refused_max.load(Ordering::Relaxed)),
            ("net.handshake_timeouts", self.handshake_timeouts.load(Ordering::Relaxed)),
            ("net.idle_closed", self.idle_closed.load(Ordering::Relaxed)),
            ("net.buffer_bytes", self.buffer_bytes.load(Ordering::Relaxed)),
            ("net.buffer_waits", self.buffer_waits.load(Ordering::Relaxed)),
            ("net.compressed_in", self.compressed_in.load(Ordering::Relaxed)),
            ("net.compressed_out", self.compressed_out.load(Ordering::Relaxed)),
            ("net.compressed_in.saved_bytes", self.compressed_in_saved_bytes.load(Ordering::Relaxed)),
            ("net.compressed_out.saved_bytes", self.compressed_out_saved_bytes.load(Ordering::Relaxed)),
            ("net.connection_threads", self.connection_threads.load(Ordering::Relaxed)),
            ("net.runtime_threads", self.runtime_threads.load(Ordering::Relaxed)),
        ]
    }
}

pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) handler: Arc<dyn Handler>,
    /// Cancelled when the server stops accepting.
    pub(crate) stop: CancellationToken,
    /// Every connection and request task, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) stats: Arc<ServerStats>,
    liveness: Arc<LivenessTable>,
    /// Connection count and buffered-bytes budgets.
    pub(crate) budgets: Budgets,
    /// The TLS listeners' certificates, reloadable (`Server::reload_tls`).
    pub(crate) tls: std::sync::Mutex<Vec<Arc<crate::tls_reload::ReloadableTls>>>,
    /// See [`Server::set_compression`]; `usize::MAX`: off.
    compress_min_bytes: std::sync::atomic::AtomicUsize,
    /// `config.handshake_timeout` and `config.idle_timeout` (0: none) as
    /// in force now: [`Server::set_limits`] changes them for connections
    /// accepted after it.
    handshake_timeout_ms: AtomicU64,
    idle_timeout_ms: AtomicU64,
    /// Set by [`Server::set_connection_threads`]: TCP and Unix connections
    /// are served there.
    conn_threads: std::sync::OnceLock<ConnThreads>,
}

impl Shared {
    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.load(Ordering::Relaxed).max(1))
    }

    fn idle_timeout(&self) -> Option<Duration> {
        Some(self.idle_timeout_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0).map(Duration::from_millis)
    }

    /// The compression threshold, when compression is on.
    fn compress_min_bytes(&self) -> Option<usize> {
        Some(self.compress_min_bytes.load(Ordering::Relaxed)).filter(|&m| m != usize::MAX)
    }
}

/// A native-protocol server. Cheap to clone; all clones are the same server.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(config: ServerConfig, handler: Arc<dyn Handler>) -> Self {
        Self::with_liveness(config, handler, Arc::new(LivenessTable::default()))
    }

    /// A server that records heartbeats into a table the caller also holds
    /// (e.g. to expose it through an endpoint registered before the server
    /// existed).
    pub fn with_liveness(config: ServerConfig, handler: Arc<dyn Handler>, liveness: Arc<LivenessTable>) -> Self {
        let stats = Arc::new(ServerStats::default());
        let budgets = Budgets::new(config.max_buffer_bytes, config.max_conn_buffer_bytes, config.max_connections, stats.clone());
        let handshake_timeout_ms = AtomicU64::new(u64::try_from(config.handshake_timeout.as_millis()).unwrap_or(u64::MAX));
        let idle_timeout_ms = AtomicU64::new(config.idle_timeout.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        Self {
            shared: Arc::new(Shared {
                handshake_timeout_ms,
                idle_timeout_ms,
                config,
                handler,
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                stats,
                liveness,
                budgets,
                tls: std::sync::Mutex::new(Vec::new()),
                compress_min_bytes: std::sync::atomic::AtomicUsize::new(weft_wire::DEFAULT_COMPRESS_MIN_BYTES),
                conn_threads: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Compressed bodies (docs/protocol.md, "Compression"), on by default
    /// with a threshold of [`weft_wire::DEFAULT_COMPRESS_MIN_BYTES`]:
    /// `Some(min)` lists `compress-zstd` in the welcome, accepts compressed
    /// requests on stream connections whose hello asked for zstd, and
    /// compresses their answers of at least `min` bytes. `None`: off
    /// (compressed frames are refused as not negotiated). Applies to
    /// handshakes after the call.
    pub fn set_compression(&self, min_bytes: Option<usize>) {
        let v = min_bytes.map_or(usize::MAX, |m| m.min(usize::MAX - 1));
        self.shared.compress_min_bytes.store(v, Ordering::Relaxed);
    }

    /// Limits a reload may change (docs/security.md, "Reload"), for
    /// connections accepted from now on: `max_connections` (open ones over
    /// a lower limit stay), the handshake timeout and the idle timeout
    /// (`None`: never). [`ServerConfig`] keeps the values at start.
    pub fn set_limits(&self, max_connections: usize, handshake_timeout: Duration, idle_timeout: Option<Duration>) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.shared.budgets.set_max_connections(max_connections);
        self.shared.handshake_timeout_ms.store(ms(handshake_timeout).max(1), Ordering::Relaxed);
        self.shared.idle_timeout_ms.store(idle_timeout.map_or(0, ms), Ordering::Relaxed);
    }

    /// Serve plain TCP and Unix-socket connections on `threads` dedicated
    /// threads, each a current-thread runtime (docs/operations.md,
    /// `net.connection_threads`): a connection, and every task it spawns
    /// (requests still pending at their first poll, and what handlers spawn
    /// from them), stays on one thread, handed there by the listener
    /// (fewest open connections first). Listeners, UDP, TLS, QUIC and
    /// connections handed over by [`Server::serve_authenticated`] stay on
    /// the caller's runtime. 0: no threads (all on the caller's runtime).
    /// Call before binding; a second call is refused.
    pub fn set_connection_threads(&self, threads: usize) -> Result<(), NetError> {
        if threads == 0 {
            return Ok(());
        }
        let pool = ConnThreads::start(threads).map_err(NetError::Threads)?;
        let n = pool.len();
        self.shared.conn_threads.set(pool).map_err(|_| NetError::Threads(std::io::Error::other("connection threads already started")))?;
        self.shared.stats.connection_threads.store(n as u64, Ordering::Relaxed);
        info!(threads = n, "tcp and unix connections served on their own threads");
        Ok(())
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    pub fn liveness(&self) -> Arc<LivenessTable> {
        self.shared.liveness.clone()
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Listen on TCP; returns the bound address (useful with port 0).
    pub async fn bind_tcp(&self, addr: &str) -> Result<SocketAddr, NetError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NetError::Bind { addr: addr.to_owned(), source })?;
        let local = listener.local_addr().map_err(|source| NetError::Bind { addr: addr.to_owned(), source })?;
        let allow = self.shared.config.allow_tcp.clone();
        self.shared.tasks.spawn(serve_listener(self.shared.clone(), listener, allow));
        info!(addr = %local, "listening (tcp)");
        Ok(local)
    }

    /// Listen for TLS over TCP. The allow-list is checked on the bare TCP
    /// connection, so a refused client costs no handshake; it is closed
    /// unanswered (it expects TLS records, not a frame). With client
    /// authentication, the certificate's identity becomes
    /// [`PeerInfo::client_id`].
    pub async fn bind_tls(&self, addr: &str, tls: &crate::tls::TlsServerConfig) -> Result<SocketAddr, NetError> {
        // Asked for at each accept: a reload reaches new connections only.
        let reloadable = crate::tls_reload::ReloadableTls::new(tls.clone(), crate::tls_reload::Alpn::Weft)?;
        self.shared.tls.lock().unwrap_or_else(|p| p.into_inner()).push(reloadable.clone());
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NetError::Bind { addr: addr.to_owned(), source })?;
        let local = listener.local_addr().map_err(|source| NetError::Bind { addr: addr.to_owned(), source })?;
        let shared = self.shared.clone();
        let allow = shared.config.allow_tls.clone();
        self.shared.tasks.spawn(async move {
            let stop = shared.stop.clone();
            let admit_shared = shared.clone();
            crate::listener::accept_loop(
                listener,
                allow,
                stop,
                move |stream, info| {
                    // Past max_connections: closed unanswered (counted), as
                    // a refused TLS client is; a busy frame would first
                    // cost a TLS handshake, the load being shed.
                    match admit_shared.budgets.open_connection() {
                        Some(slot) => {
                            admit_shared.tasks.spawn(serve_tls(admit_shared.clone(), reloadable.acceptor(), stream, info, slot));
                        }
                        None => {
                            count_refused(Transport::Tls, "max_connections");
                            warn!(peer = %info.addr, "TLS connection refused: too many open")
                        }
                    }
                },
                move |stream, who| {
                    // Closing unanswered: the client speaks TLS, and a
                    // plaintext frame would only look like a bad record.
                    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    count_refused(Transport::Tls, "allow_list");
                    crate::gate::audit_allow_list(&shared.config.auth, "tls", &who);
                    drop(stream);
                },
            )
            .await;
        });
        info!(addr = %local, client_auth = ?tls.client_auth, "listening (tls)");
        Ok(local)
    }

    /// Serve a connection another listener accepted and authenticated: the
    /// cluster port hands over the native-protocol connections of other
    /// nodes (forwarded requests) after its mTLS handshake (docs/cluster.md,
    /// "TLS between nodes"). `identity` is the connection's for its life; a
    /// hello's token does not replace a node identity. False: over
    /// `max_connections` (the stream is dropped, counted).
    pub fn serve_authenticated<S>(&self, stream: S, addr: String, client_id: String, identity: weft_auth::Identity) -> bool
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Some(slot) = self.shared.budgets.open_connection() else {
            count_refused(Transport::Tls, "max_connections");
            warn!(peer = %addr, client_id = %client_id, "handed-over connection refused: too many open");
            return false;
        };
        let peer = PeerInfo { client_id: Some(client_id), identity: Some(identity), ..PeerInfo::new(Transport::Tls, addr) };
        let deadline = Instant::now() + self.shared.handshake_timeout();
        self.shared.tasks.spawn(serve_stream(self.shared.clone(), stream, peer, true, slot, deadline));
        true
    }

    /// Listen for QUIC on UDP (ALPN `weft/1`); see docs/protocol.md for the
    /// stream mapping. Returns the bound address.
    pub async fn bind_quic(&self, addr: &str, tls: &crate::tls::TlsServerConfig) -> Result<SocketAddr, NetError> {
        crate::quic::bind(self.shared.clone(), addr, tls)
    }

    /// Listen on a Unix socket. A stale socket file from a dead process is
    /// replaced; the caller holds the data-directory lock, so it is ours.
    pub async fn bind_unix(&self, path: &Path) -> Result<PathBuf, NetError> {
        let bind_err = |source| NetError::Bind { addr: path.display().to_string(), source };
        if path.exists() {
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        let shared = self.shared.clone();
        let owned = path.to_owned();
        self.shared.tasks.spawn(async move {
            let allow = shared.config.allow_unix.clone();
            serve_listener(shared, listener, allow).await;
            let _ = std::fs::remove_file(&owned);
        });
        info!(path = %path.display(), "listening (unix)");
        Ok(path.to_owned())
    }

    /// Listen on UDP: one datagram is one frame. Also receives liveness
    /// heartbeats, and returns the socket so heartbeats can be sent from it.
    pub async fn bind_udp(&self, addr: &str) -> Result<Arc<UdpSocket>, NetError> {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| NetError::Bind { addr: addr.to_owned(), source })?;
        let socket = Arc::new(socket);
        let shared = self.shared.clone();
        let sock = socket.clone();
        let limit = Arc::new(Semaphore::new(shared.config.max_in_flight_per_conn.max(1) * 4));
        self.shared.tasks.spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
            let udp_in = weft_metrics::get().received_bytes.get_or_create_owned(&weft_metrics::l1("transport", "udp"));
            loop {
                let got = tokio::select! {
                    _ = shared.stop.cancelled() => break,
                    r = sock.recv_from(&mut buf) => r,
                };
                let (n, from) = match got {
                    Ok(x) => x,
                    // ICMP errors from earlier sends surface here; not fatal.
                    Err(e) => {
                        debug!(error = %e, "udp recv error");
                        continue;
                    }
                };
                shared.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
                udp_in.inc_by(n as u64);
                if !shared.config.allow_udp.allows_ip(from.ip()) {
                    // Not even an error answer: that would make us a reflector.
                    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    count_refused(Transport::Udp, "allow_list");
                    crate::gate::audit_allow_list_sampled(&shared.config.auth, "udp", &from.to_string());
                    debug!(from = %from, "datagram refused by the allow-list");
                    continue;
                }
                let datagram = buf.get(..n).unwrap_or_default();
                handle_datagram(&shared, &sock, &limit, datagram, from).await;
            }
        });
        if let Ok(local) = socket.local_addr() {
            info!(addr = %local, "listening (udp)");
        }
        Ok(socket)
    }

    /// Stop accepting, tell connected clients to go away, let requests in
    /// flight finish for up to `drain`, then return. Returns false when the
    /// drain timed out with requests still running.
    pub async fn shutdown(&self, drain: Duration) -> bool {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        tokio::time::timeout(drain, self.shared.tasks.wait()).await.is_ok()
    }

    /// Re-read the certificate, key and client CA of every TLS listener, all
    /// or nothing: on an error none changes. Open connections keep theirs.
    pub fn reload_tls(&self) -> Result<usize, crate::error::TlsError> {
        let set = self.shared.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        crate::tls_reload::reload_all(&set)
    }

    /// The reloadable TLS configurations of this server's listeners.
    pub fn tls_configs(&self) -> Vec<Arc<crate::tls_reload::ReloadableTls>> {
        self.shared.tls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A token cancelled when the server begins shutting down.
    pub fn stopping(&self) -> CancellationToken {
        self.shared.stop.clone()
    }
}

/// Accept until the server stops: admitted connections are served, refused
/// ones are told why (unread) and counted.
async fn serve_listener<L: StreamListener>(shared: Arc<Shared>, listener: L, allow: AllowList) {
    let stop = shared.stop.clone();
    let admit_shared = shared.clone();
    crate::listener::accept_loop(
        listener,
        allow,
        stop,
        move |stream, info| {
            let s = &admit_shared;
            match s.budgets.open_connection() {
                Some(slot) => {
                    let deadline = Instant::now() + s.handshake_timeout();
                    match s.conn_threads.get() {
                        Some(threads) => hand_over(s, threads, stream, info, slot, deadline),
                        None => {
                            s.tasks.spawn(serve_stream(s.clone(), stream, info, false, slot, deadline));
                        }
                    }
                }
                None => {
                    let max = s.budgets.max_connections();
                    warn!(peer = %info.addr, max_connections = max, "connection refused: too many open");
                    let e = ErrorBody::new(ErrorCode::Busy, format!("this server has its maximum of {max} connections open; try again later"))
                        .with_details(serde_json::json!({"kind": "max_connections", "max": max}));
                    count_refused(L::TRANSPORT, "max_connections");
                    refuse(stream, e);
                }
            }
        },
        move |stream, who| {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            count_refused(L::TRANSPORT, "allow_list");
            crate::gate::audit_allow_list(&shared.config.auth, L::TRANSPORT.as_str(), &who);
            refuse(stream, ErrorBody::new(ErrorCode::Unauthorized, format!("{who} is not on this listener's allow-list")));
        },
    )
    .await;
}

/// Serves an admitted connection on a connection thread: the socket leaves
/// this runtime's reactor here and joins the thread's at the task's first
/// poll. Tracked from now on, so a shutdown waits for it as for any other.
fn hand_over<S: Movable + AsyncRead + AsyncWrite + Send + 'static>(
    shared: &Arc<Shared>,
    threads: &ConnThreads,
    stream: S,
    info: PeerInfo,
    slot: ConnSlot,
    deadline: Instant,
) {
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            // The slot goes with it; the peer sees the connection close.
            warn!(peer = %info.addr, error = %e, "cannot hand the connection to a connection thread; closed");
            return;
        }
    };
    let s = shared.clone();
    let conn = shared.tasks.track_future(async move {
        match S::from_std(std_stream) {
            Ok(stream) => serve_stream(s, stream, info, false, slot, deadline).await,
            Err(e) => warn!(peer = %info.addr, error = %e, "cannot register the connection on its thread; closed"),
        }
    });
    threads.hand_over(Box::pin(conn));
}

/// Completes the TLS handshake of an admitted connection (bounded by the
/// handshake timeout, abandoned on shutdown), then serves it; a verified
/// client certificate's identity becomes the peer's `client_id`.
async fn serve_tls(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    info: PeerInfo,
    slot: ConnSlot,
) {
    // One deadline for the TLS handshake and the hello together.
    let deadline = Instant::now() + shared.handshake_timeout();
    let handshake = tokio::select! {
        r = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => r,
        _ = shared.stop.cancelled() => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        failed => {
            shared.stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            match failed {
                Ok(Err(e)) => warn!(peer = %info.addr, error = %e, "TLS handshake failed"),
                _ => warn!(peer = %info.addr, "TLS handshake timed out"),
            }
            return;
        }
    };
    let identity = crate::tls::peer_identity(tls.get_ref().1.peer_certificates());
    let peer = PeerInfo { transport: Transport::Tls, client_id: identity.clone(), ..info };
    if let Some(id) = &identity {
        info!(peer = %peer.addr, identity = %id, "TLS client authenticated by certificate");
    }
    serve_stream(shared, tls, peer, identity.is_some(), slot, deadline).await;
}

/// Counts, audits and logs an open connection closed because a reloaded
/// allow-list no longer admits its peer; the error tells the client why.
pub(crate) fn closed_by_allow_list(shared: &Shared, peer: &PeerInfo) -> ErrorBody {
    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    shared.stats.allow_list_closed.fetch_add(1, Ordering::Relaxed);
    count_refused(peer.transport, "allow_list");
    crate::gate::audit_allow_list_closed(&shared.config.auth, peer);
    warn!(transport = peer.transport.as_str(), peer = %peer.addr, "connection closed: a reloaded allow-list no longer admits it");
    ErrorBody::new(ErrorCode::Unauthorized, format!("{} is no longer on this listener's allow-list (reloaded); closing the connection", peer.addr))
}

/// Tell a refused client why, without reading anything it sent, and close.
fn refuse<S: AsyncWrite + Unpin + Send + 'static>(mut stream: S, e: ErrorBody) {
    let frame = weft_wire::error_frame_for(MessageId::nil(), BodyFormat::MsgPack, &e);
    tokio::spawn(async move {
        let mut out = BytesMut::new();
        if encode(&frame, &mut out).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
        }
        let _ = stream.shutdown().await;
    });
}

pub(crate) fn welcome(shared: &Shared, hello_frame: &Frame) -> Frame {
    let hello: Hello = match hello_frame.decode_body() {
        Ok(h) => h,
        Err(e) => return hello_frame.error_to(&ErrorBody::new(ErrorCode::BadBody, format!("bad hello: {e}"))),
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return hello_frame.error_to(
            &ErrorBody::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "client speaks protocol version {}, this server speaks {}",
                    hello.protocol_version, PROTOCOL_VERSION
                ),
            )
            .with_details(serde_json::json!({"supported": [PROTOCOL_VERSION], "found": hello.protocol_version})),
        );
    }
    let w = Welcome {
        protocol_version: PROTOCOL_VERSION,
        server_id: shared.config.server_id.clone(),
        server_name: shared.config.server_name.clone(),
        version: shared.config.version.clone(),
        features: {
            let mut f = shared.config.features.clone();
            if shared.compress_min_bytes().is_some() {
                f.push(weft_wire::COMPRESS_ZSTD_FEATURE.into());
            }
            f
        },
    };
    Frame::with_body(FrameKind::Control, hello_frame.id, CONTROL_WELCOME, hello_frame.format(), &w)
        .unwrap_or_else(|e| hello_frame.error_to(&ErrorBody::new(ErrorCode::Internal, e.to_string())))
}

/// Why a connection's wait ended.
enum Wake<T> {
    Done(T),
    Stop,
    Deadline,
}

/// A connection's two other things to wait for: the server stopping and
/// its deadline. Made once per connection and reused by every wait: a
/// timer and a cancellation waiter made per read (each registered, then
/// removed, under a lock) cost more than the read.
struct Waits {
    /// Checked before each wait: `fut` is polled first, so a connection
    /// whose reads are always ready would otherwise never see the stop.
    token: CancellationToken,
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// Armed at or before the deadline: the idle deadline moves with every
    /// frame, and the timer is moved only when it fires early.
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Waits {
    fn new(stop: &CancellationToken, deadline: Instant) -> Self {
        Waits { token: stop.clone(), stop: Box::pin(stop.clone().cancelled_owned()), timer: Box::pin(tokio::time::sleep_until(deadline)) }
    }
}

/// Waits for `fut`, the server stopping, or the connection's deadline
/// (`fut` first: when it is ready, nothing else is polled).
async fn until<T>(fut: impl Future<Output = T>, waits: &mut Waits, deadline: Option<Instant>) -> Wake<T> {
    if waits.token.is_cancelled() {
        return Wake::Stop;
    }
    let mut fut = std::pin::pin!(fut);
    let Waits { stop, timer, .. } = waits;
    loop {
        if let Some(d) = deadline
            && timer.deadline() > d
        {
            timer.as_mut().reset(d);
        }
        let fired = async {
            match deadline {
                Some(_) => timer.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            v = fut.as_mut() => return Wake::Done(v),
            _ = stop.as_mut() => return Wake::Stop,
            _ = fired => {}
        }
        match deadline {
            Some(d) if Instant::now() < d => timer.as_mut().reset(d), // armed for an older deadline
            _ => return Wake::Deadline,
        }
    }
}

fn goaway() -> Option<Frame> {
    Frame::with_body(FrameKind::Control, MessageId::nil(), CONTROL_GOAWAY, BodyFormat::MsgPack, &()).ok()
}

/// Serves one stream connection. `authenticated`: `peer.client_id` holds a
/// certificate identity that the hello must not replace. The hello must
/// arrive before `hello_deadline`. `_slot` holds this connection's place
/// under `max_connections` until it closes.
async fn serve_stream<S>(shared: Arc<Shared>, stream: S, mut peer: PeerInfo, authenticated: bool, _slot: ConnSlot, hello_deadline: Instant)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
    shared.stats.connections_open.fetch_add(1, Ordering::Relaxed);
    let metered = ConnMetrics::open(peer.transport);
    debug!(peer = %peer.addr, transport = peer.transport.as_str(), "connection opened");
    // This task reads and writes: answers done at their first poll are
    // encoded into `io.out` and written once nothing more is buffered to
    // read (or `out` is full). A hop to a writer task per answer (channel
    // send, wake, another task's poll) cost more than the write itself.
    let mut io = ConnIo {
        stream: Box::pin(stream),
        out: BytesMut::with_capacity(16 * 1024),
        unflushed: false,
        failed: false,
        sent: metered.sent.clone(),
        pending: FuturesUnordered::new(),
        compress: None,
    };
    // Events pushed by handlers come through this channel. Bounded: a
    // client that stops reading stalls its own events, never the server's
    // memory.
    let (tx, mut rx) = mpsc::channel::<Frame>(1024);
    // Handlers may push events on this connection (held weakly).
    peer.events = Some(crate::events::EventSink::new(&tx));

    let budget = shared.budgets.connection();
    let mut splitter = Splitter::new(shared.budgets.max_frame(shared.config.max_frame_bytes.min(MAX_PRE_HELLO_FRAME_BYTES)));
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Budget held for the frame at the head of `buf`.
    let mut reserved: Option<Reservation> = None;
    let in_flight = Arc::new(Semaphore::new(shared.config.max_in_flight_per_conn.max(1)));
    let mut handshaken = false;
    let mut last_frame = Instant::now();
    let mut admission = peer.admission.take();
    let mut peer_arc = Arc::new(peer.clone());
    let idle_timeout = shared.idle_timeout();
    let mut waits = Waits::new(&shared.stop, hello_deadline);
    // Requests of the open pass still pending at their first poll. The
    // pass ends (`io.end_pass`) before every wait: it never spans an await.
    let mut deferred: Vec<Deferred> = Vec::new();

    'conn: loop {
        let deadline = if handshaken { idle_timeout.map(|d| last_frame + d) } else { Some(hello_deadline) };
        // The frames of one read are one pass: work their requests share
        // (the log's write of their records) is done once, at its end.
        weft_wire::pass::begin();
        // Hand out every whole frame already buffered before reading more.
        loop {
            // Answers waiting past the high mark: write them before taking
            // another request (reading stops meanwhile: back-pressure).
            if io.out.len() >= OUT_HIGH_BYTES {
                io.end_pass(&shared, &peer, &mut deferred);
                match until(io.flush_pumping(&shared.stats), &mut waits, None).await {
                    Wake::Done(Ok(())) => {}
                    _ => break 'conn,
                }
                weft_wire::pass::begin();
            }
            let total = match splitter.step(&mut buf) {
                Step::NeedMore => break,
                Step::Refused(e) => {
                    if !bad_frame(&shared, &peer, &mut io, e) {
                        break 'conn;
                    }
                    continue;
                }
                Step::Partial(total) => Some((total, false)),
                Step::Whole(total) => total.map(|t| (t, true)),
            };
            if let Some((total, whole)) = total {
                if reserved.is_none() {
                    reserved = budget.try_reserve(total);
                }
                if reserved.is_none() {
                    io.end_pass(&shared, &peer, &mut deferred);
                    match until(io.wait_pumping(budget.reserve(total), &mut rx, &shared.stats), &mut waits, deadline).await {
                        Wake::Done(Some(Some(r))) => reserved = Some(r),
                        Wake::Done(Some(None) | None) | Wake::Stop => break 'conn,
                        Wake::Deadline => {
                            if expire(&shared, &peer, &mut io, handshaken) {
                                break 'conn;
                            }
                            last_frame = Instant::now();
                            continue 'conn;
                        }
                    }
                    weft_wire::pass::begin();
                }
                if !whole {
                    // The budget covers this; read the rest in place.
                    buf.reserve(total - buf.len());
                    break;
                }
            }
            let held = reserved.take();
            match splitter.take(&mut buf) {
                Ok(Some(frame)) => {
                    shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    last_frame = Instant::now();
                    if let Some(a) = admission.as_mut()
                        && !a.still_allowed()
                    {
                        let e = closed_by_allow_list(&shared, &peer);
                        if frame.kind == FrameKind::Request && !frame.flags.is_one_way() {
                            io.push(&frame.error_to(&e), &shared.stats);
                        }
                        break 'conn;
                    }
                    match frame.kind {
                        FrameKind::Control if frame.route == CONTROL_HELLO => {
                            let mut answer = welcome(&shared, &frame);
                            // A hello (the first or a later one) sets who the
                            // connection is; a wrong token refuses it.
                            if answer.kind == FrameKind::Control
                                && let Some(authz) = &shared.config.auth
                            {
                                match crate::gate::hello_identity(authz, &frame, &peer, authenticated) {
                                    Ok(who) => {
                                        peer.identity = Some(who);
                                        peer_arc = Arc::new(peer.clone());
                                    }
                                    Err(e) => answer = frame.error_to(&e),
                                }
                            }
                            let ok = answer.kind == FrameKind::Control;
                            if ok {
                                if !handshaken {
                                    splitter.set_max_frame(shared.budgets.max_frame(shared.config.max_frame_bytes));
                                }
                                handshaken = true;
                                io.compress = shared.compress_min_bytes().filter(|_| weft_wire::hello_accepts_zstd(&frame));
                                if let Ok(h) = frame.decode_body::<Hello>() {
                                    if authenticated {
                                        debug!(peer = %peer.addr, identity = ?peer.client_id, hello_client_id = %h.client_id, "hello");
                                    } else {
                                        peer.client_id = Some(h.client_id);
                                        peer_arc = Arc::new(peer.clone());
                                    }
                                }
                            }
                            io.push(&answer, &shared.stats);
                            continue 'conn;
                        }
                        FrameKind::Control if frame.route == CONTROL_GOAWAY => break 'conn,
                        FrameKind::Control => {
                            debug!(route = %frame.route, "ignoring control frame");
                        }
                        FrameKind::Request | FrameKind::Event if !handshaken => {
                            let e = ErrorBody::new(
                                ErrorCode::HandshakeRequired,
                                "send a control 'hello' frame before any request",
                            );
                            if frame.kind == FrameKind::Request {
                                io.push(&frame.error_to(&e), &shared.stats);
                            }
                        }
                        FrameKind::Request | FrameKind::Event => {
                            let mut frame = frame;
                            if frame.flags.is_compressed() {
                                match frame.decompress_body(io.compress.is_some(), shared.config.max_frame_bytes) {
                                    Ok(saved) => {
                                        shared.stats.compressed_in.fetch_add(1, Ordering::Relaxed);
                                        shared.stats.compressed_in_saved_bytes.fetch_add(saved as u64, Ordering::Relaxed);
                                    }
                                    Err(e) => {
                                        if !bad_frame(&shared, &peer, &mut io, e) {
                                            break 'conn;
                                        }
                                        continue;
                                    }
                                }
                            }
                            if let Some(e) = crate::gate::check(&shared.config.auth, &peer_arc, &frame) {
                                if frame.kind == FrameKind::Request && !frame.flags.is_one_way() {
                                    io.push(&frame.error_to(&e), &shared.stats);
                                }
                                continue;
                            }
                            // Back-pressure: stop reading until a slot frees.
                            let permit = match in_flight.clone().try_acquire_owned() {
                                Ok(p) => p,
                                Err(_) => {
                                    // The pass's own pending requests may hold the slots.
                                    io.end_pass(&shared, &peer, &mut deferred);
                                    let p = match until(io.wait_pumping(in_flight.clone().acquire_owned(), &mut rx, &shared.stats), &mut waits, None).await {
                                        Wake::Done(Some(Ok(p))) => p,
                                        _ => break 'conn,
                                    };
                                    weft_wire::pass::begin();
                                    p
                                }
                            };
                            let wants_reply = frame.kind == FrameKind::Request && !frame.flags.is_one_way();
                            if buf.is_empty() {
                                // The read's last frame, and nothing deferred
                                // before it: no one to share its work with.
                                weft_wire::pass::end_if_idle();
                            }
                            let mut answer = shared.handler.handle(frame, peer_arc.clone());
                            // Most requests (ping, produce without fsync
                            // `always`, reads of cached data) are done at
                            // their first poll: answer them here, without a
                            // task per request; the rest go on in a task.
                            match first_poll(&mut answer, &peer) {
                                FirstPoll::Done(answer) => {
                                    if let (true, Some(a)) = (wants_reply, answer) {
                                        io.push_answer(a, &shared.stats);
                                    }
                                    drop(held);
                                    drop(permit);
                                }
                                FirstPoll::Panicked => {
                                    drop(held);
                                    drop(permit);
                                }
                                // Polled again when the pass ends (it may
                                // wait on the pass's deferred work).
                                FirstPoll::Pending => deferred.push(Deferred { answer, wants_reply, _held: held, _permit: permit }),
                            }
                        }
                        FrameKind::Response | FrameKind::Error => {
                            debug!(kind = frame.kind.as_str(), "ignoring unexpected frame from client");
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if !bad_frame(&shared, &peer, &mut io, e) {
                        break 'conn;
                    }
                }
            }
        }
        io.end_pass(&shared, &peer, &mut deferred);
        // Nothing whole left to hand out: write what is waiting, take
        // answers from the channel, and read, whichever is ready.
        let step = std::future::poll_fn(|cx| io.poll_step(cx, &mut rx, &mut buf, &shared.stats));
        let read = match until(step, &mut waits, deadline).await {
            Wake::Done(Some(r)) => r,
            Wake::Done(None) => break 'conn, // the write failed: the peer is gone
            Wake::Stop => break 'conn,
            Wake::Deadline => {
                if expire(&shared, &peer, &mut io, handshaken) {
                    break 'conn;
                }
                last_frame = Instant::now();
                continue 'conn;
            }
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                metered.received.inc_by(n as u64);
            }
            Err(e) => {
                debug!(peer = %peer.addr, error = %e, "read failed");
                break;
            }
        }
    }

    // A pass left by `break 'conn`: its work done, its requests pending.
    io.end_pass(&shared, &peer, &mut deferred);
    // Let this connection's requests finish (writing their answers as they
    // come, or dropping them once the peer is gone), then say goodbye if
    // we are the ones stopping, then close.
    std::future::poll_fn(|cx| {
        // False (a failed write) only drops answers: the requests go on.
        let _ = io.pump(cx, &mut rx, &shared.stats);
        if io.pending.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    while let Ok(f) = rx.try_recv() {
        io.push(&f, &shared.stats);
    }
    if shared.stop.is_cancelled()
        && let Some(g) = goaway()
    {
        io.push(&g, &shared.stats);
    }
    drop(tx);
    // Events queued before the sinks lost their sender.
    while let Ok(f) = rx.try_recv() {
        io.push(&f, &shared.stats);
    }
    drop(reserved);
    if io.flush().await.is_ok() {
        let _ = io.stream.as_mut().shutdown().await;
    }
    shared.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    metered.close();
    debug!(peer = %peer.addr, "connection closed");
}

/// A request still pending at its first poll: held until its pass ends,
/// then (still pending) in the connection's [`ConnIo::pending`], polled by
/// the connection's own task. Its answer, when it wants one, is its output;
/// the frame's budget and its in-flight slot are released with it.
struct Deferred {
    answer: HandlerFuture,
    wants_reply: bool,
    /// The frame's bytes count until it is handled (dropped with it).
    _held: Option<Reservation>,
    /// Its in-flight slot (dropped with it).
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Future for Deferred {
    type Output = Option<Frame>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Frame>> {
        // As a task of its own did: a panic (weft-service catches handler
        // panics; this guards the rest) ends the request without an
        // answer, not the connection.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.answer.as_mut().poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(a)) => std::task::Poll::Ready(a.filter(|_| self.wants_reply)),
            Err(_) => {
                warn!("request panicked outside its handler; no answer");
                std::task::Poll::Ready(None)
            }
        }
    }
}

/// What a handler's first poll gave.
enum FirstPoll {
    Done(Option<Frame>),
    Pending,
    /// Answered nothing, as a panicking request task did before.
    Panicked,
}

/// Polls a request's future once, in the connection task, with a no-op
/// waker: a future still pending is then spawned, and the task's first
/// poll registers the real waker (a future must wake the waker of its
/// latest poll), so nothing is lost. A panic here fails the request only:
/// weft-service catches handler panics itself; this guards the rest.
fn first_poll(fut: &mut HandlerFuture, peer: &PeerInfo) -> FirstPoll {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
        Ok(std::task::Poll::Ready(answer)) => FirstPoll::Done(answer),
        Ok(std::task::Poll::Pending) => FirstPoll::Pending,
        Err(_) => {
            warn!(peer = %peer.addr, "request panicked outside its handler; no answer");
            FirstPoll::Panicked
        }
    }
}

/// Report a bad frame to the client; false when the connection cannot go on.
/// `answer`, compressed when the connection negotiated compression and it
/// is at least the threshold (no work, no allocation otherwise).
fn compress_answer(stats: &ServerStats, compress: Option<usize>, mut answer: Frame) -> Frame {
    if let Some(min) = compress
        && answer.body.len() >= min
    {
        let saved = answer.compress_body(min);
        if saved > 0 {
            stats.compressed_out.fetch_add(1, Ordering::Relaxed);
            stats.compressed_out_saved_bytes.fetch_add(saved as u64, Ordering::Relaxed);
        }
    }
    answer
}

fn bad_frame<S>(shared: &Shared, peer: &PeerInfo, io: &mut ConnIo<S>, e: FrameError) -> bool {
    shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
    warn!(peer = %peer.addr, error = %e, "bad frame");
    let id = e.message_id().unwrap_or_else(MessageId::nil);
    let answer = weft_wire::error_frame_for(id, BodyFormat::MsgPack, &e.to_error_body());
    io.push(&answer, &shared.stats);
    e.is_recoverable()
}

/// The connection's deadline passed. Before the hello: a typed `timeout`
/// error, then close. After: close with `goaway` if nothing is in flight;
/// with requests in flight it is not idle (false: keep going).
fn expire<S>(shared: &Shared, peer: &PeerInfo, io: &mut ConnIo<S>, handshaken: bool) -> bool {
    if !handshaken {
        shared.stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
        let ms = shared.handshake_timeout().as_millis() as u64;
        warn!(peer = %peer.addr, timeout_ms = ms, "no hello in time; closing");
        let e = ErrorBody::new(ErrorCode::Timeout, format!("no hello within {ms} ms of connecting; closing"))
            .with_details(serde_json::json!({"kind": "handshake_timeout", "timeout_ms": ms}));
        io.push(&weft_wire::error_frame_for(MessageId::nil(), BodyFormat::MsgPack, &e), &shared.stats);
        return true;
    }
    if !io.pending.is_empty() {
        return false;
    }
    shared.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
    debug!(peer = %peer.addr, "idle; closing with goaway");
    if let Some(g) = goaway() {
        io.push(&g, &shared.stats);
    }
    true
}

/// Answers waiting to be written past this many bytes stop the connection
/// from taking further requests until they are written: a client that does
/// not read its answers holds at most this much (plus one answer) of the
/// server's memory, and loses nothing.
const OUT_HIGH_BYTES: usize = 256 * 1024;

/// A stream connection's socket and the answers not yet written to it.
struct ConnIo<S> {
    stream: Pin<Box<S>>,
    /// Encoded frames, written in one call when the connection has nothing
    /// more to read: under load many answers go out in one syscall.
    out: BytesMut,
    /// Bytes handed to the stream since its last flush (TLS keeps records
    /// until flushed).
    unflushed: bool,
    /// A write failed: the peer is gone; answers are dropped.
    failed: bool,
    sent: Counter,
    /// Requests still pending after their pass, polled by the connection's
    /// task (no task, channel send and wake-up per request): every wait of
    /// the connection polls them ([`ConnIo::pump`]).
    pending: FuturesUnordered<Deferred>,
    /// Set by the hello: compress answers of at least this many bytes and
    /// accept compressed requests (docs/protocol.md, "Compression").
    compress: Option<usize>,
}

impl<S> ConnIo<S> {
    fn push(&mut self, frame: &Frame, stats: &ServerStats) {
        if self.failed {
            return;
        }
        push_frame(frame, &mut self.out, stats);
    }

    /// An answer to a request, compressed when the connection negotiated
    /// it and it is at least the threshold.
    fn push_answer(&mut self, answer: Frame, stats: &ServerStats) {
        let answer = compress_answer(stats, self.compress, answer);
        self.push(&answer, stats);
    }

    /// Ends the connection's pass: does the work its requests deferred (one
    /// write of their records per partition), then polls each pending
    /// request again: answered now, or kept in `pending`.
    fn end_pass(&mut self, shared: &Shared, peer: &PeerInfo, deferred: &mut Vec<Deferred>) {
        weft_wire::pass::end();
        for mut d in deferred.drain(..) {
            match first_poll(&mut d.answer, peer) {
                FirstPoll::Done(a) => {
                    if let (true, Some(a)) = (d.wants_reply, a) {
                        self.push_answer(a, &shared.stats);
                    }
                }
                FirstPoll::Panicked => {}
                // Polled next by `pending` with this task's waker.
                FirstPoll::Pending => self.pending.push(d),
            }
        }
    }

    /// Polls the pending requests, pushing their answers. Whatever `out`
    /// holds: a handler's request may hold what requests of other
    /// connections wait for (a lock, a permit, a batch's turn), so it never
    /// waits on this client's reading; the answers it adds are bounded by
    /// the in-flight slots.
    fn poll_pending(&mut self, cx: &mut std::task::Context<'_>, stats: &ServerStats) {
        if self.pending.is_empty() {
            // Most connections, most of the time: nothing to poll, and a
            // request pushed later is polled at the next wait.
            return;
        }
        // FuturesUnordered yields (and wakes this task) after a round, so
        // this loop does not starve the connection's reads.
        while let std::task::Poll::Ready(Some(answer)) = self.pending.poll_next_unpin(cx) {
            if let Some(a) = answer {
                self.push_answer(a, stats);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite> ConnIo<S> {
    /// Writes (and flushes) `out` as far as the socket takes it.
    fn poll_write_out(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if self.failed {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        while !self.out.is_empty() {
            match self.stream.as_mut().poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.fail(std::io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => {
                    bytes::Buf::advance(&mut self.out, n);
                    self.sent.inc_by(n as u64);
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            match self.stream.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn fail(&mut self, e: std::io::Error) -> std::io::Error {
        self.failed = true;
        self.out.clear();
        e
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_out(cx)).await
    }

    /// [`ConnIo::flush`], polling the pending requests meanwhile.
    async fn flush_pumping(&mut self, stats: &ServerStats) -> std::io::Result<()> {
        std::future::poll_fn(|cx| {
            self.poll_pending(cx, stats);
            self.poll_write_out(cx)
        })
        .await
    }

    /// Keeps the connection moving while it waits: polls its pending
    /// requests (their answers go to `out`, see [`ConnIo::poll_pending`]),
    /// writes `out` as far as the socket takes it, and moves events from
    /// `rx` to `out` while it is under [`OUT_HIGH_BYTES`] (over it, the
    /// handlers pushing events wait: back-pressure). False once a write
    /// failed (the pending requests were still polled).
    fn pump(&mut self, cx: &mut std::task::Context<'_>, rx: &mut mpsc::Receiver<Frame>, stats: &ServerStats) -> bool {
        use std::task::Poll;
        self.poll_pending(cx, stats);
        loop {
            if (!self.out.is_empty() || self.unflushed) && let Poll::Ready(Err(_)) = self.poll_write_out(cx) {
                return false;
            }
            if self.out.len() >= OUT_HIGH_BYTES {
                return true; // woken when the socket takes more
            }
            match rx.poll_recv(cx) {
                Poll::Ready(Some(f)) => {
                    push_frame(&f, &mut self.out, stats);
                    while self.out.len() < OUT_HIGH_BYTES
                        && let Ok(f) = rx.try_recv()
                    {
                        push_frame(&f, &mut self.out, stats);
                    }
                }
                // Not while this task holds a sender; nothing to take.
                Poll::Ready(None) | Poll::Pending => return true,
            }
        }
    }

    /// Waits for `fut` (a buffer reservation, an in-flight slot) while
    /// keeping the connection moving: what frees them is one of its
    /// pending requests finishing. `None` once a write failed.
    async fn wait_pumping<T>(&mut self, fut: impl Future<Output = T>, rx: &mut mpsc::Receiver<Frame>, stats: &ServerStats) -> Option<T> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(v));
            }
            if !self.pump(cx, rx, stats) {
                return std::task::Poll::Ready(None);
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// One wait of a connection with nothing whole left to handle: keeps
    /// the output moving ([`ConnIo::pump`]) and reads into `buf`. Ready
    /// with the read's result, or `None` once a write failed. While `out`
    /// is over [`OUT_HIGH_BYTES`] it does not read.
    fn poll_step(
        &mut self,
        cx: &mut std::task::Context<'_>,
        rx: &mut mpsc::Receiver<Frame>,
        buf: &mut BytesMut,
        stats: &ServerStats,
    ) -> std::task::Poll<Option<std::io::Result<usize>>> {
        if !self.pump(cx, rx, stats) {
            return std::task::Poll::Ready(None);
        }
        if self.out.len() >= OUT_HIGH_BYTES {
            return std::task::Poll::Pending;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        tokio_util::io::poll_read_buf(self.stream.as_mut(), cx, buf).map(Some)
    }
}

pub(crate) fn push_frame(frame: &Frame, out: &mut BytesMut, stats: &ServerStats) {
    if let Err(e) = encode(frame, out) {
        // Only a route key over 255 bytes gets here, which handlers cannot
        // produce (answers reuse the request's route); report instead of drop.
        warn!(error = %e, "cannot encode answer");
        let err = weft_wire::error_frame_for(frame.id, BodyFormat::MsgPack, &ErrorBody::new(ErrorCode::Internal, e.to_string()));
        let _ = encode(&err, out);
    }
    stats.frames_out.fetch_add(1, Ordering::Relaxed);
}

async fn handle_datagram(shared: &Arc<Shared>, sock: &Arc<UdpSocket>, limit: &Arc<Semaphore>, datagram: &[u8], from: SocketAddr) {
    let frame = match decode_datagram(datagram, shared.config.max_frame_bytes.min(MAX_DATAGRAM_BYTES)) {
        Ok(f) => f,
        Err(e) => {
            shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            debug!(from = %from, error = %e, "bad datagram");
            let id = e.message_id().unwrap_or_else(MessageId::nil);
            send_datagram(sock, &weft_wire::error_frame_for(id, BodyFormat::MsgPack, &e.to_error_body()), from).await;
            return;
        }
    };
    shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
    match frame.kind {
        FrameKind::Control if frame.route == CONTROL_HEARTBEAT => {
            if let Ok(hb) = frame.decode_body::<Heartbeat>() {
                shared.liveness.observe(&hb, from, std::time::Instant::now());
            }
        }
        FrameKind::Control if frame.route == CONTROL_HELLO => {
            send_datagram(sock, &welcome(shared, &frame), from).await;
        }
        FrameKind::Request | FrameKind::Event => {
            // UDP has no hello to carry a token: with auth on, requests are
            // checked as nobody's (docs/security.md).
            let peer = PeerInfo::new(Transport::Udp, from.to_string());
            if let Some(e) = crate::gate::check(&shared.config.auth, &peer, &frame) {
                if frame.kind == FrameKind::Request && !frame.flags.is_one_way() {
                    send_datagram(sock, &frame.error_to(&e), from).await;
                }
                return;
            }
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                // No back-pressure on UDP: say so instead of queueing.
                let e = ErrorBody::new(ErrorCode::Busy, "too many requests in flight on this UDP listener");
                send_datagram(sock, &frame.error_to(&e), from).await;
                return;
            };
            let handler = shared.handler.clone();
            let sock = sock.clone();
            let peer = Arc::new(PeerInfo::new(Transport::Udp, from.to_string()));
            let wants_reply = frame.kind == FrameKind::Request && !frame.flags.is_one_way();
            shared.tasks.spawn(async move {
                if let (true, Some(answer)) = (wants_reply, handler.handle(frame, peer).await) {
                    send_datagram(&sock, &answer, from).await;
                }
                drop(permit);
            });
        }
        _ => debug!(kind = frame.kind.as_str(), route = %frame.route, "ignoring datagram"),
    }
}

/// The Prometheus side of a refused connection or datagram
/// (`weft_net_connections_refused_total`).
pub(crate) fn count_refused(transport: Transport, reason: &'static str) {
    weft_metrics::get().connections_refused.get_or_create(&weft_metrics::l2("transport", transport.as_str(), "reason", reason)).inc();
}

/// One connection's Prometheus metrics (`weft_net_*`): the counters are
/// looked up once per connection, not per read.
pub(crate) struct ConnMetrics {
    transport: Transport,
    opened: Instant,
    pub(crate) received: Counter,
    pub(crate) sent: Counter,
}

impl ConnMetrics {
    pub(crate) fn open(transport: Transport) -> Self {
        let m = weft_metrics::get();
        let t = weft_metrics::l1("transport", transport.as_str());
        m.connections_accepted.get_or_create(&t).inc();
        m.connections_open.get_or_create(&t).inc();
        ConnMetrics { transport, opened: Instant::now(), received: m.received_bytes.get_or_create_owned(&t), sent: m.sent_bytes.get_or_create_owned(&t) }
    }

    pub(crate) fn close(self) {
        let m = weft_metrics::get();
        let t = weft_metrics::l1("transport", self.transport.as_str());
        m.connections_open.get_or_create(&t).dec();
        m.connection_duration.get_or_create(&t).observe(self.opened.elapsed().as_secs_f64());
    }
}

async fn send_datagram(sock: &UdpSocket, frame: &Frame, to: SocketAddr) {
    let mut out = BytesMut::new();
    let fits = encode(frame, &mut out).is_ok() && out.len() <= MAX_DATAGRAM_BYTES;
    if !fits {
        out.clear();
        let e = ErrorBody::new(
            ErrorCode::TooLarge,
            format!("answer of {} bytes does not fit in a datagram; use tcp or unix", frame.wire_len()),
        );
        let _ = encode(&weft_wire::error_frame_for(frame.id, frame.format(), &e), &mut out);
    }
    match sock.send_to(&out, to).await {
        Ok(n) => {
            weft_metrics::get().sent_bytes.get_or_create(&weft_metrics::l1("transport", "udp")).inc_by(n as u64);
        }
        Err(e) => debug!(to = %to, error = %e, "udp send failed"),
    }
}
