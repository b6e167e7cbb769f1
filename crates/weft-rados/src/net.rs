//! Tokio driver for one msgr2 connection: does the handshake, then owns the
//! socket in a task that feeds the sans-IO `Connection` and forwards
//! messages both ways.

use crate::error::{Error, Result};
use crate::proto::cephx::CephxClient;
use crate::proto::compress::{Algorithm, CompressionConfig, CompressionStats};
use crate::proto::conn::{AuthMethod, ConnConfig, Connection, Event, ReconnectAnswer, SessionIdentity, SessionResume};
use crate::proto::msg::Message;
use crate::proto::types::UTime;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Bound on messages queued toward the application per connection.
const INBOUND_QUEUE: usize = 4096;
const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);

/// How a connection notices that its peer is gone without the socket
/// saying so (a hung or stopped daemon keeps the TCP connection open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Interval between KEEPALIVE2 frames.
    pub keepalive: Duration,
    /// Close the connection when nothing (not even a KEEPALIVE2_ACK) has
    /// arrived for this long. None: rely on the socket and the caller.
    pub dead_after: Option<Duration>,
}

impl Liveness {
    /// Keepalives only: OSD sessions, whose liveness the monitors judge
    /// (a dead OSD is marked down in the next map and ops are resent).
    pub const KEEPALIVE_ONLY: Liveness = Liveness { keepalive: KEEPALIVE_EVERY, dead_after: None };

    /// A session that must be closed when the peer stops answering for
    /// `timeout`; keepalives go out often enough that a live peer always
    /// answers in time (librados: mon_client_ping_interval/_timeout).
    pub fn ping_timeout(timeout: Duration) -> Liveness {
        Liveness { keepalive: (timeout / 3).clamp(Duration::from_millis(100), KEEPALIVE_EVERY), dead_after: Some(timeout) }
    }
}

pub fn now_utime() -> UTime {
    UTime::from_duration(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// Sending side of an established connection. Dropping it (or the task
/// failing) closes the connection; the inbound receiver then yields None.
#[derive(Clone)]
pub struct ConnHandle {
    pub peer: SocketAddr,
    pub features: u64,
    pub mode: u32,
    pub global_id: u64,
    /// The on-wire compression negotiated, if any.
    pub compression: Option<Algorithm>,
    tx: mpsc::UnboundedSender<Message>,
}

impl ConnHandle {
    /// Queues a message; false if the connection is gone.
    pub fn send(&self, m: Message) -> bool {
        self.tx.send(m).is_ok()
    }
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What the handshake produced besides the handle.
pub struct Established {
    pub handle: ConnHandle,
    pub inbound: mpsc::Receiver<Message>,
    /// For mon connections: the cephx state with fresh tickets.
    pub cephx: Option<CephxClient>,
    /// The session as established (cookies, seqs, peer features).
    pub session: SessionIdentity,
    /// The peer's answers to our SESSION_RECONNECT, in order (empty for a
    /// new session).
    pub reconnect: Vec<ReconnectAnswer>,
    /// Filled with the session's last state once the connection is gone,
    /// for a later `connect_resume`.
    pub closed: std::sync::Arc<std::sync::Mutex<Option<SessionResume>>>,
}

fn io_err(peer: SocketAddr, e: std::io::Error) -> Error {
    Error::Io { peer: peer.to_string(), source: e }
}

pub async fn connect(peer: SocketAddr, cfg: ConnConfig, auth: AuthMethod, timeout: Duration) -> Result<Established> {
    connect_with(peer, cfg, auth, timeout, Liveness::KEEPALIVE_ONLY).await
}

/// Like `connect`, with an explicit liveness policy for the established
/// connection.
pub async fn connect_with(
    peer: SocketAddr,
    cfg: ConnConfig,
    auth: AuthMethod,
    timeout: Duration,
    liveness: Liveness,
) -> Result<Established> {
    connect_resume(peer, cfg, auth, timeout, liveness, None).await
}

/// Like `connect_with`; with `resume`, asks the peer to continue that
/// earlier session (SESSION_RECONNECT) and falls back to a new session if
/// the peer resets it, which Ceph servers do for clients.
pub async fn connect_resume(
    peer: SocketAddr,
    cfg: ConnConfig,
    auth: AuthMethod,
    timeout: Duration,
    liveness: Liveness,
    resume: Option<SessionResume>,
) -> Result<Established> {
    connect_full(peer, cfg, auth, timeout, liveness, resume, ConnOptions::default()).await
}

/// Options of `connect_full` beyond `connect_resume`'s.
#[derive(Default)]
pub struct ConnOptions {
    /// Offer on-wire compression; counts go to the stats.
    pub compression: Option<(CompressionConfig, std::sync::Arc<CompressionStats>)>,
    /// Our entity type in HELLO when it is not the default (see
    /// `Connection::set_entity_type`).
    pub entity_type: Option<u32>,
}

/// Like `connect_resume`, with `ConnOptions`.
pub async fn connect_full(
    peer: SocketAddr,
    cfg: ConnConfig,
    auth: AuthMethod,
    timeout: Duration,
    liveness: Liveness,
    resume: Option<SessionResume>,
    opts: ConnOptions,
) -> Result<Established> {
    let closed = std::sync::Arc::new(std::sync::Mutex::new(None));
    let fut = async {
        let mut sock = TcpStream::connect(peer).await.map_err(|e| io_err(peer, e))?;
        sock.set_nodelay(true).map_err(|e| io_err(peer, e))?;
        let mut conn = match resume {
            Some(prev) => Connection::resume(cfg, auth, prev),
            None => Connection::new(cfg, auth),
        };
        if let Some((c, stats)) = opts.compression {
            conn.set_compression(c, stats);
        }
        if let Some(t) = opts.entity_type {
            conn.set_entity_type(t);
        }
        let slot = closed.clone();
        conn.on_close(Box::new(move |s| *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(s)));
        let mut answers = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut rng = || rand::random::<u64>();
        let mut early = Vec::new();
        let ready = loop {
            if conn.has_output() {
                let out = conn.take_output();
                sock.write_all(&out).await.map_err(|e| io_err(peer, e))?;
            }
            let n = sock.read(&mut buf).await.map_err(|e| io_err(peer, e))?;
            if n == 0 {
                return Err(io_err(peer, std::io::ErrorKind::UnexpectedEof.into()));
            }
            conn.feed(&buf[..n], &mut rng).map_err(|e| classify(peer, e))?;
            let mut got = None;
            while let Some(ev) = conn.poll_event() {
                match ev {
                    Event::Ready { features, mode, global_id } => got = Some((features, mode, global_id)),
                    Event::Message(m) => early.push(m),
                    Event::KeepaliveAck(_) => {}
                    Event::Reconnect(a) => {
                        tracing::debug!(%peer, answer = ?a, "session reconnect answered");
                        answers.push(a);
                    }
                }
            }
            if let Some(r) = got {
                break r;
            }
        };
        Ok::<_, Error>((sock, conn, ready, early, answers))
    };
    let (sock, conn, (features, mode, global_id), early, reconnect) = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::Timeout(format!("connecting to {peer}")))??;
    let cephx = conn.cephx().cloned();
    let session = conn.session();
    let compression = conn.compression();
    let (tx, rx) = mpsc::unbounded_channel();
    let (itx, irx) = mpsc::channel(INBOUND_QUEUE);
    for m in early {
        let _ = itx.try_send(m);
    }
    tokio::spawn(run(peer, sock, conn, rx, itx, liveness));
    Ok(Established { handle: ConnHandle { peer, features, mode, global_id, compression, tx }, inbound: irx, cephx, session, reconnect, closed })
}

/// Auth failures are the cluster refusing us; other errors are the peer's.
fn classify(peer: SocketAddr, e: crate::proto::conn::ConnError) -> Error {
    use crate::proto::conn::ConnError;
    match e {
        ConnError::Auth(a) => Error::Auth(format!("{peer}: {a}")),
        ConnError::BadMethod { result, .. } => Error::Auth(format!("{peer}: auth method rejected (result {result})")),
        other => Error::Conn { peer: peer.to_string(), source: other },
    }
}

/// Writes buffers in order: small ones are gathered into one write, large
/// ones go out as they are (no copy).
async fn write_parts(wr: &mut tokio::net::tcp::OwnedWriteHalf, parts: Vec<bytes::Bytes>) -> std::io::Result<()> {
    const GATHER_MAX: usize = 64 * 1024;
    let mut stage: Vec<u8> = Vec::new();
    for p in parts {
        if p.len() < GATHER_MAX {
            stage.extend_from_slice(&p);
            if stage.len() >= GATHER_MAX {
                wr.write_all(&stage).await?;
                stage.clear();
            }
        } else {
            if !stage.is_empty() {
                wr.write_all(&stage).await?;
                stage.clear();
            }
            wr.write_all(&p).await?;
        }
    }
    if !stage.is_empty() {
        wr.write_all(&stage).await?;
    }
    Ok(())
}

async fn run(
    peer: SocketAddr,
    sock: TcpStream,
    mut conn: Connection,
    mut out: mpsc::UnboundedReceiver<Message>,
    inbound: mpsc::Sender<Message>,
    liveness: Liveness,
) {
    let (mut rd, mut wr) = sock.into_split();
    let mut ka = tokio::time::interval(liveness.keepalive);
    ka.tick().await;
    let mut last_rx = tokio::time::Instant::now();
    let mut rng = || rand::random::<u64>();
    loop {
        tokio::select! {
            r = rd.read_buf(conn.read_buffer()) => {
                match r {
                    Ok(0) => { tracing::debug!(%peer, "peer closed"); break; }
                    Ok(_) => last_rx = tokio::time::Instant::now(),
                    Err(e) => { tracing::debug!(%peer, error = %e, "read failed"); break; }
                };
                if let Err(e) = conn.process(&mut rng) {
                    tracing::warn!(%peer, error = %e, "closing connection");
                    break;
                }
                let mut any = false;
                while let Some(ev) = conn.poll_event() {
                    if let Event::Message(m) = ev {
                        any = true;
                        if inbound.send(m).await.is_err() {
                            return;
                        }
                    }
                }
                if any {
                    conn.send_ack();
                }
            }
            m = out.recv() => {
                let Some(m) = m else { break };
                conn.send_message(&m);
                // batch whatever else is queued into the same write
                while let Ok(m) = out.try_recv() {
                    conn.send_message(&m);
                }
            }
            _ = ka.tick() => {
                if let Some(dead) = liveness.dead_after {
                    let silent = last_rx.elapsed();
                    if silent >= dead {
                        tracing::warn!(%peer, silent_ms = silent.as_millis() as u64, "peer stopped answering; closing");
                        break;
                    }
                }
                conn.send_keepalive(now_utime());
            }
        }
        if conn.has_output() {
            if let Err(e) = write_parts(&mut wr, conn.take_output_parts()).await {
                tracing::debug!(%peer, error = %e, "write failed");
                break;
            }
        }
    }
    conn.close();
}
