//! One client-side TCP connection to a server: validation, a reader task
//! that decodes messages (with the server's type cache) and routes them to
//! waiting operations, and a writer queue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};

use crate::error::{Error, Result};
use crate::proto::header::{Frame, FrameDecoder, control, ctrl};
use crate::proto::msg::{Message, Status, decode_message, encode_message};
use crate::proto::nt::Builder;
use crate::proto::{ByteOrder, FieldDesc, Limits, ScalarType, SendCache, TypeCache, Value};

/// Echo settings of one connection (from `ClientConfig`).
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub echo_interval: Duration,
    pub dead_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        let c = crate::config::ClientConfig::default();
        Liveness { echo_interval: c.echo_interval, dead_after: c.dead_after }
    }
}

/// A routed message with the byte order it was sent in.
pub(crate) type Routed = (ByteOrder, Message);

#[derive(Default)]
struct Routes {
    /// ioid -> operation inbox.
    ops: HashMap<u32, mpsc::UnboundedSender<Routed>>,
    /// cid -> create-channel reply.
    chans: HashMap<u32, oneshot::Sender<Message>>,
    /// search id -> TCP search reply.
    searches: HashMap<u32, oneshot::Sender<Message>>,
    /// cid -> server-initiated channel destruction notice.
    chan_watch: HashMap<u32, mpsc::UnboundedSender<()>>,
}

/// A validated connection.
pub struct ClientConn {
    pub peer: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
    order: Mutex<ByteOrder>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU32,
    closed: Arc<AtomicBool>,
    closed_notify: Arc<tokio::sync::Notify>,
    /// The server's type cache. Shared because pvAccessCPP servers also use it
    /// for variant (any) values inside operation data, which op tasks decode.
    rx_cache: Arc<Mutex<TypeCache>>,
}

impl std::fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConn").field("peer", &self.peer).finish()
    }
}

/// This process's account name from /etc/passwd (the owner of /proc/self is our euid).
fn passwd_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut it = l.split(':');
        let name = it.next()?;
        (it.nth(1)? == uid).then(|| name.to_string())
    })
}

fn user_host() -> (String, String) {
    // Like pvxs, the account name when the environment does not say: the
    // server's access rules match on it.
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .or_else(passwd_name)
        .unwrap_or_else(|| "weft".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "localhost".into());
    (user, host)
}

impl ClientConn {
    /// Connect and complete the validation handshake (default echo settings).
    pub async fn connect(peer: SocketAddr, timeout: Duration) -> Result<Arc<ClientConn>> {
        Self::connect_with(peer, timeout, Liveness::default()).await
    }

    /// Connect with explicit echo settings.
    pub async fn connect_with(peer: SocketAddr, timeout: Duration, live: Liveness) -> Result<Arc<ClientConn>> {
        let sock = tokio::time::timeout(timeout, TcpStream::connect(peer))
            .await
            .map_err(|_| Error::Timeout(format!("connect to {peer}")))??;
        let _ = sock.set_nodelay(true);
        let (mut rd, mut wr) = sock.into_split();
        let mut framer = FrameDecoder::with_limits(Limits::default());
        let mut buf = BytesMut::with_capacity(0x10000);
        let mut rx_cache = TypeCache::new();
        let mut order = ByteOrder::Little;
        let mut methods: Vec<String> = vec![];
        // Handshake: SET_BYTE_ORDER, then the server's validation request.
        let hs = async {
            loop {
                while let Some(f) = framer.decode(&mut buf)? {
                    match f {
                        Frame::Control(h) if h.command == ctrl::SET_BYTE_ORDER => order = h.order(),
                        Frame::Control(_) => {}
                        Frame::App(h, p) => match decode_message(&h, &p, &mut rx_cache, Limits::default())? {
                            Message::ValidationRequest { methods: m, .. } => {
                                methods = m;
                                return Ok::<(), Error>(());
                            }
                            other => trace!(?other, "message before validation"),
                        },
                    }
                }
                if rd.read_buf(&mut buf).await? == 0 {
                    return Err(Error::Closed(format!("{peer} closed during handshake")));
                }
            }
        };
        tokio::time::timeout(timeout, hs).await.map_err(|_| Error::Timeout(format!("handshake with {peer}")))??;
        let (method, auth) = if methods.iter().any(|m| m == "ca") {
            let (u, h) = user_host();
            let d = FieldDesc::structure(
                "",
                vec![("user", FieldDesc::Scalar(ScalarType::String)), ("host", FieldDesc::Scalar(ScalarType::String))],
            );
            let (d, v) = Builder::new(d).with("user", Value::String(u)).with("host", Value::String(h)).build();
            ("ca".to_string(), Some(Some((d, v))))
        } else {
            ("anonymous".to_string(), Some(None))
        };
        let resp = Message::ValidationResponse { buffer_size: 0x10000, registry_size: 0x7fff, qos: 0, method, auth };
        wr.write_all(&encode_message(&resp, order, false, &mut SendCache::disabled())?).await?;
        // Wait for CONNECTION_VALIDATED.
        let wait = async {
            loop {
                while let Some(f) = framer.decode(&mut buf)? {
                    if let Frame::App(h, p) = f {
                        if let Message::Validated(s) = decode_message(&h, &p, &mut rx_cache, Limits::default())? {
                            return s.into_result();
                        }
                    }
                }
                if rd.read_buf(&mut buf).await? == 0 {
                    return Err(Error::Closed(format!("{peer} closed during validation")));
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| Error::Timeout(format!("validation by {peer}")))??;

        let shared_cache = Arc::new(Mutex::new(rx_cache));
        let (tx, mut txq) = mpsc::channel::<Vec<u8>>(256);
        let routes = Arc::new(Mutex::new(Routes::default()));
        let closed = Arc::new(AtomicBool::new(false));
        let closed_notify = Arc::new(tokio::sync::Notify::new());
        let conn = Arc::new(ClientConn {
            peer,
            tx: tx.clone(),
            order: Mutex::new(order),
            routes: routes.clone(),
            next_id: AtomicU32::new(1),
            closed: closed.clone(),
            closed_notify: closed_notify.clone(),
            rx_cache: shared_cache.clone(),
        });
        tokio::spawn(async move {
            while let Some(b) = txq.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        let echo_tx = tx.clone();
        let echo_closed = closed.clone();
        // Milliseconds since `epoch` when the reader last got bytes.
        let epoch = tokio::time::Instant::now();
        let last_rx = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let dead = Arc::new(tokio::sync::Notify::new());
        let (echo_last, echo_dead) = (last_rx.clone(), dead.clone());
        let tick = live.echo_interval.clamp(Duration::from_millis(10), Duration::from_secs(3600));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                if echo_closed.load(Ordering::Relaxed) {
                    return;
                }
                let mut silent = Duration::ZERO;
                // After a pause of the whole process, let the reader take what
                // arrived meanwhile before judging the server.
                for _ in 0..4 {
                    let now = epoch.elapsed().as_millis() as u64;
                    silent = Duration::from_millis(now.saturating_sub(echo_last.load(Ordering::Relaxed)));
                    if silent < live.dead_after {
                        break;
                    }
                    // A short sleep, not a yield: the runtime polls sockets while it waits.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if silent >= live.dead_after {
                    // Nothing, not even our echoes' replies: the server (or the path) is dead.
                    debug!(%peer, ?silent, "no reply to echoes; closing the connection");
                    echo_dead.notify_one();
                    return;
                }
                let Ok(b) = encode_message(&Message::Echo(Default::default()), order, false, &mut SendCache::disabled()) else {
                    return;
                };
                if echo_tx.send(b).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let res: Result<()> = async {
                loop {
                    while let Some(f) = framer.decode(&mut buf)? {
                        match f {
                            Frame::Control(h) => match h.command {
                                ctrl::ECHO_REQUEST => {
                                    let _ = tx.send(control(ctrl::ECHO_RESPONSE, h.size, order, false)).await;
                                }
                                // Reaching the mark means everything before it arrived: acknowledge
                                // it (flow control; our server keeps monitors within its window).
                                ctrl::MARK_TOTAL_BYTES_SENT => {
                                    let _ = tx.send(control(ctrl::ACK_TOTAL_BYTES_RECEIVED, h.size, order, false)).await;
                                }
                                _ => {}
                            },
                            Frame::App(h, p) => {
                                let m = {
                                    let mut c = shared_cache.lock().map_err(|_| Error::Usage("type cache lock poisoned".into()))?;
                                    decode_message(&h, &p, &mut c, Limits::default())?
                                };
                                if let Some(reply) = route(&routes, h.order(), m, order) {
                                    let _ = tx.send(reply).await;
                                }
                            }
                        }
                    }
                    tokio::select! {
                        n = rd.read_buf(&mut buf) => {
                            if n? == 0 {
                                return Ok(());
                            }
                            last_rx.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        }
                        _ = dead.notified() => {
                            return Err(Error::Timeout(format!("{peer} answered no echo for {:?}", live.dead_after)));
                        }
                    }
                }
            }
            .await;
            if let Err(e) = res {
                debug!(%peer, error = %e, "client connection failed");
            }
            closed.store(true, Ordering::Relaxed);
            // Dropping every route wakes all waiters with "closed".
            if let Ok(mut r) = routes.lock() {
                *r = Routes::default();
            }
            closed_notify.notify_waiters();
        });
        Ok(conn)
    }

    /// Run `f` with the server's type cache (to decode operation data).
    pub fn with_type_cache<R>(&self, f: impl FnOnce(&mut TypeCache) -> R) -> R {
        match self.rx_cache.lock() {
            Ok(mut c) => f(&mut c),
            Err(_) => f(&mut TypeCache::new()),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Wait until the connection closes.
    pub async fn closed(&self) {
        loop {
            let n = self.closed_notify.notified();
            if self.is_closed() {
                return;
            }
            n.await;
        }
    }

    pub fn order(&self) -> ByteOrder {
        self.order.lock().map(|o| *o).unwrap_or_default()
    }

    pub fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn send(&self, m: &Message) -> Result<()> {
        let b = encode_message(m, self.order(), false, &mut SendCache::disabled())?;
        self.send_raw(b).await
    }

    pub async fn send_raw(&self, b: Vec<u8>) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed(format!("connection to {} closed", self.peer)));
        }
        self.tx.send(b).await.map_err(|_| Error::Closed(format!("connection to {} closed", self.peer)))
    }

    /// Register an inbox for operation `ioid`.
    pub(crate) fn register_op(&self, ioid: u32) -> mpsc::UnboundedReceiver<Routed> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut r) = self.routes.lock() {
            r.ops.insert(ioid, tx);
        }
        rx
    }

    pub(crate) fn unregister_op(&self, ioid: u32) {
        if let Ok(mut r) = self.routes.lock() {
            r.ops.remove(&ioid);
        }
    }

    /// Create a channel; returns the server's channel id.
    pub async fn create_channel(&self, name: &str, timeout: Duration) -> Result<(u32, u32, mpsc::UnboundedReceiver<()>)> {
        let cid = self.next_id();
        let (tx, rx) = oneshot::channel();
        let (wtx, wrx) = mpsc::unbounded_channel();
        if let Ok(mut r) = self.routes.lock() {
            r.chans.insert(cid, tx);
            r.chan_watch.insert(cid, wtx);
        }
        self.send(&Message::CreateChannel { channels: vec![(cid, name.to_string())] }).await?;
        let m = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| Error::Timeout(format!("create channel {name}")))?
            .map_err(|_| Error::Closed(format!("connection to {} closed", self.peer)))?;
        match m {
            Message::CreateChannelResponse { sid, status, .. } => {
                status.into_result().map_err(|e| Error::Remote(format!("create channel {name}: {e}")))?;
                Ok((cid, sid, wrx))
            }
            other => Err(Error::Unexpected(format!("create channel reply {other:?}"))),
        }
    }

    /// Search over this TCP connection (name server mode).
    pub async fn tcp_search(&self, name: &str, timeout: Duration) -> Result<Option<crate::proto::msg::SearchResponse>> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut r) = self.routes.lock() {
            r.searches.insert(id, tx);
        }
        let s = crate::proto::msg::SearchRequest {
            sequence: id,
            flags: 0x01,
            reserved: [0; 3],
            reply_addr: [0; 16],
            reply_port: 0,
            protocols: vec!["tcp".into()],
            channels: vec![(id, name.to_string())],
        };
        self.send(&Message::Search(s)).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Message::SearchResponse(r))) if r.found => Ok(Some(r)),
            Ok(Ok(_)) => Ok(None),
            Ok(Err(_)) => Err(Error::Closed("name server closed".into())),
            Err(_) => Ok(None),
        }
    }
}

/// Deliver a server message to whoever waits for it; returns bytes to send back (echo).
fn route(routes: &Mutex<Routes>, order: ByteOrder, m: Message, _conn_order: ByteOrder) -> Option<Vec<u8>> {
    let Ok(mut r) = routes.lock() else { return None };
    match m {
        Message::CreateChannelResponse { cid, .. } => {
            if let Some(s) = r.chans.remove(&cid) {
                let _ = s.send(m);
            }
        }
        Message::DestroyChannel { cid, .. } => {
            if let Some(w) = r.chan_watch.remove(&cid) {
                let _ = w.send(());
            }
        }
        Message::SearchResponse(ref s) => {
            let ids: Vec<u32> = if s.cids.is_empty() { vec![s.sequence] } else { s.cids.clone() };
            for id in ids {
                if let Some(w) = r.searches.remove(&id) {
                    let _ = w.send(m.clone());
                    break;
                }
            }
        }
        Message::Response(ref op) => {
            if let Some(s) = r.ops.get(&op.ioid) {
                let _ = s.send((order, m));
            }
        }
        Message::GetFieldResponse { ioid, .. } | Message::Message { ioid, .. } => {
            if let Some(s) = r.ops.get(&ioid) {
                let _ = s.send((order, m));
            }
        }
        // Echo replies to our keep-alives need no answer (answering would ping-pong).
        Message::Echo(_) => {}
        other => trace!(?other, "unrouted server message"),
    }
    None
}

/// Helper: an error status into our error type.
pub(crate) fn status_result(s: &Option<Status>, what: &str) -> Result<()> {
    match s {
        Some(s) if !s.is_success() => Err(Error::Remote(format!("{what}: {}", s.message))),
        _ => Ok(()),
    }
}
