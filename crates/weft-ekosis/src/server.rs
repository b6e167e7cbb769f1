//! A listener that serves a [`weft_service::Service`] (with the queued
//! endpoints and keepers of a [`weft_queue::Manager`]) over the ekosis codec,
//! on TCP, Unix sockets and UDP, the way an ekosis 0.17 server answers.
//!
//! Per stream connection requests are handled one at a time, in order (as
//! ekosis does: pipelining works, answers never interleave); connections are
//! concurrent. UDP: one request per datagram ending in `\n`, answer without
//! the `\n`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use weft_net::listener::{accept_loop, StreamListener};
use weft_net::{AllowList, PeerInfo, Transport};
use weft_queue::{Manager, QueueError};
use weft_service::{Service, SharedService};
use weft_wire::{ErrorBody, ErrorCode, Flags, Frame, FrameKind};

use crate::eco::{self, EcoState};
use crate::error::EkosisError;
use crate::proto::{self, status, text, Line, LineDecoder, Request};

/// Who this application is, for `eco.statistics.get`.
#[derive(Debug, Clone)]
pub struct AppInfo {
    pub name: String,
    pub instance: String,
}

#[derive(Debug, Clone)]
pub struct EkosisConfig {
    pub app: AppInfo,
    /// Longer request lines drop the connection (ekosis: 64 KiB).
    pub max_line_bytes: usize,
    /// Answer an ENQ datagram on UDP with ACK (ekosis 0.17 answers ENQ with
    /// status 100 and only ACK with ACK: a bug, kept only if asked).
    pub udp_enq_is_heartbeat: bool,
    /// Who may connect (TCP/UDP by address, Unix sockets by uid); everyone
    /// else is refused before a byte is read. Default: loopback and our uid.
    pub allow: AllowList,
}

impl Default for EkosisConfig {
    fn default() -> Self {
        Self {
            app: AppInfo { name: "weft".into(), instance: "0".into() },
            max_line_bytes: proto::DEFAULT_MAX_LINE_BYTES,
            udp_enq_is_heartbeat: true,
            allow: AllowList::default(),
        }
    }
}

pub(crate) struct Shared {
    pub service: Arc<Service>,
    pub manager: Arc<Manager>,
    pub config: EkosisConfig,
    pub eco: EcoState,
    /// Connections and datagrams refused by the allow-list
    /// (`ekosis.refused` in the statistics).
    refused: Arc<AtomicU64>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// Where to listen, for configuration files (`[ekosis]` section): each
/// transport is off unless set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EkosisListeners {
    /// e.g. `127.0.0.1:8888`
    #[serde(default)]
    pub tcp: Option<String>,
    /// e.g. `127.0.0.1:8889`
    #[serde(default)]
    pub udp: Option<String>,
    /// Unix socket path.
    #[serde(default)]
    pub unix: Option<PathBuf>,
    /// Allow-list entries for all three (CIDRs, addresses, `uid:N`,
    /// `self`, `*`); see `weft_net::AllowList`.
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
}

fn default_allow() -> Vec<String> {
    ["127.0.0.0/8", "::1/128", "self"].map(String::from).to_vec()
}

impl Default for EkosisListeners {
    fn default() -> Self {
        Self { tcp: None, udp: None, unix: None, allow: default_allow() }
    }
}

/// An ekosis-protocol listener set. Cheap to clone.
#[derive(Clone)]
pub struct EkosisServer {
    shared: Arc<Shared>,
}

/// What a handler answers: a status and `data` as JSON text.
pub(crate) struct Answer {
    pub status: u16,
    pub data: Vec<u8>,
}

impl Answer {
    pub fn ok(data: Vec<u8>) -> Self {
        Self { status: status::SUCCESS, data }
    }
    pub fn error(status: u16, message: &str) -> Self {
        let mut data = vec![];
        proto::write_json_string(message, &mut data);
        Self { status, data }
    }
}

impl EkosisServer {
    pub fn new(service: &SharedService, manager: Arc<Manager>, config: EkosisConfig) -> Self {
        let refused = Arc::new(AtomicU64::new(0));
        let gauge = refused.clone();
        manager
            .stats()
            .registry()
            .add_gauges(move || vec![("ekosis.refused".to_owned(), gauge.load(Ordering::Relaxed).into())]);
        Self {
            shared: Arc::new(Shared {
                service: service.0.clone(),
                manager,
                config,
                eco: EcoState::default(),
                refused,
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub async fn bind_tcp(&self, addr: &str) -> Result<SocketAddr, EkosisError> {
        let bind = |source| EkosisError::Bind { addr: addr.to_owned(), source };
        let listener = TcpListener::bind(addr).await.map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        self.shared.tasks.spawn(serve_listener(self.shared.clone(), listener));
        info!(addr = %local, "listening (ekosis tcp)");
        Ok(local)
    }

    pub async fn bind_unix(&self, path: &Path) -> Result<PathBuf, EkosisError> {
        let bind = |source| EkosisError::Bind { addr: path.display().to_string(), source };
        if path.exists() {
            std::fs::remove_file(path).map_err(bind)?;
        }
        let listener = UnixListener::bind(path).map_err(bind)?;
        let shared = self.shared.clone();
        let owned = path.to_owned();
        self.shared.tasks.spawn(async move {
            serve_listener(shared, listener).await;
            let _ = std::fs::remove_file(&owned);
        });
        info!(path = %path.display(), "listening (ekosis unix)");
        Ok(path.to_owned())
    }

    pub async fn bind_udp(&self, addr: &str) -> Result<SocketAddr, EkosisError> {
        let bind = |source| EkosisError::Bind { addr: addr.to_owned(), source };
        let sock = UdpSocket::bind(addr).await.map_err(bind)?;
        let local = sock.local_addr().map_err(bind)?;
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            let mut buf = vec![0u8; weft_net::MAX_DATAGRAM_BYTES + 1];
            loop {
                let got = tokio::select! {
                    _ = shared.stop.cancelled() => break,
                    r = sock.recv_from(&mut buf) => r,
                };
                let (n, from) = match got {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "ekosis udp recv error");
                        continue;
                    }
                };
                if !shared.config.allow.allows_ip(from.ip()) {
                    // no answer: a reply would let a spoofed source aim us at a third party
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    debug!(from = %from, "ekosis datagram refused by the allow-list");
                    continue;
                }
                let datagram = buf.get(..n).unwrap_or_default();
                // ekosis ignores a datagram that does not end with LF.
                let Some(body) = datagram.strip_suffix(b"\n") else { continue };
                let peer = Arc::new(PeerInfo::new(Transport::Udp, from.to_string()));
                let reply: Vec<u8> = match body.first() {
                    Some(&proto::ACK) => proto::HEARTBEAT_ANSWER.to_vec(),
                    Some(&proto::ENQ) if shared.config.udp_enq_is_heartbeat => proto::HEARTBEAT_ANSWER.to_vec(),
                    _ => {
                        let text = std::str::from_utf8(body).map(str::trim).unwrap_or("");
                        let mut out = answer_line(&shared, text.as_bytes(), peer).await;
                        out.pop(); // UDP answers carry no trailing LF
                        out
                    }
                };
                if reply.len() > weft_net::MAX_DATAGRAM_BYTES {
                    warn!(to = %from, len = reply.len(), "ekosis answer too large for a datagram; dropped");
                    continue;
                }
                if let Err(e) = sock.send_to(&reply, from).await {
                    debug!(to = %from, error = %e, "ekosis udp send failed");
                }
            }
        });
        info!(addr = %local, "listening (ekosis udp)");
        Ok(local)
    }

    /// Bind every configured transport; returns their URLs
    /// (`ekosis+tcp://...`) for `weft.info`.
    pub async fn bind_all(&self, l: &EkosisListeners) -> Result<Vec<String>, EkosisError> {
        let mut urls = vec![];
        if let Some(a) = &l.tcp {
            urls.push(format!("ekosis+tcp://{}", self.bind_tcp(a).await?));
        }
        if let Some(a) = &l.udp {
            urls.push(format!("ekosis+udp://{}", self.bind_udp(a).await?));
        }
        if let Some(p) = &l.unix {
            urls.push(format!("ekosis+unix://{}", self.bind_unix(p).await?.display()));
        }
        Ok(urls)
    }

    /// Stop accepting; wait up to `drain` for requests in flight.
    pub async fn shutdown(&self, drain: Duration) -> bool {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        tokio::time::timeout(drain, self.shared.tasks.wait()).await.is_ok()
    }

    /// Answer one request line (no sockets): the exact bytes a stream peer
    /// gets, `\n` included.
    pub async fn answer(&self, line: &[u8]) -> Vec<u8> {
        let peer = Arc::new(PeerInfo::new(Transport::Tcp, "local"));
        answer_line(&self.shared, line, peer).await
    }
}

/// Accepts until shutdown through weft-net's loop (the same allow-list
/// check as native listeners). A refused peer gets one CLIENT_DENIED line
/// (ekosis' status for it) and the connection is closed unread.
async fn serve_listener<L: StreamListener>(shared: Arc<Shared>, listener: L) {
    let admit_shared = shared.clone();
    accept_loop(
        listener,
        shared.config.allow.clone(),
        shared.stop.clone(),
        move |stream, info| {
            admit_shared.tasks.spawn(serve_stream(admit_shared.clone(), stream, Arc::new(info)));
        },
        move |mut stream, who| {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let mut line = Vec::new();
            proto::encode_error(None, status::CLIENT_DENIED, &format!("{who} is not on this listener's allow-list"), &mut line);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&line)).await;
                let _ = stream.shutdown().await;
            });
        },
    )
    .await;
}

async fn serve_stream<S>(shared: Arc<Shared>, stream: S, peer: Arc<PeerInfo>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut decoder = LineDecoder::new(shared.config.max_line_bytes);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'conn: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Line::Heartbeat(proto::ENQ))) => {
                    if writer.write_all(proto::HEARTBEAT_ANSWER).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(Some(Line::Heartbeat(b))) => {
                    // Only ENQ is a heartbeat to an ekosis stream server; any
                    // other line is parsed as JSON (and fails, status 100).
                    let out = answer_line(&shared, &[b], peer.clone()).await;
                    if writer.write_all(&out).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(Some(Line::Message(line))) => {
                    let out = answer_line(&shared, &line, peer.clone()).await;
                    if writer.write_all(&out).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // ekosis drops the connection without an answer.
                    debug!(peer = %peer.addr, error = %e, "ekosis stream unusable; closing");
                    break 'conn;
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        let read = tokio::select! {
            _ = shared.stop.cancelled() => break,
            r = reader.read_buf(&mut buf) => r,
        };
        match read {
            // A last line without LF is dropped, as ekosis does.
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = writer.shutdown().await;
}

/// Parse, route and answer one request line.
async fn answer_line(shared: &Arc<Shared>, line: &[u8], peer: Arc<PeerInfo>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let req = match proto::parse_request(line) {
        Ok(r) => r,
        Err(rej) => {
            proto::encode_error(rej.span_key.as_ref(), rej.status, &rej.message, &mut out);
            return out;
        }
    };
    let started = Instant::now();
    let answer = route(shared, &req, peer).await;
    // Unknown route keys are the client's invention: not worth a statistic.
    if answer.status != status::ROUTE_KEY_UNKNOWN {
        shared.manager.stats().record(&req.route_key, started.elapsed());
    }
    proto::encode_response(Some(&req.span_key), answer.status, &answer.data, &mut out);
    out
}

async fn route(shared: &Arc<Shared>, req: &Request, peer: Arc<PeerInfo>) -> Answer {
    if let Some(a) = eco::handle(shared, req).await {
        return a;
    }
    if let Some(ep) = shared.manager.endpoint(&req.route_key) {
        return match ep.submit(Some(req.span_key.to_string()), &req.data).await {
            Ok(_) => {
                let mut data = b"{\"span_key\":".to_vec();
                req.span_key.write_json(&mut data);
                data.push(b'}');
                Answer::ok(data)
            }
            Err(QueueError::Paused(_)) => Answer::error(status::APPLICATION_BUSY, &text::receiving_paused(&req.route_key)),
            Err(e @ QueueError::Full { .. }) => Answer::error(status::APPLICATION_BUSY, &text::busy(&e.to_string())),
            Err(QueueError::BadRequest { reason, .. }) => Answer::error(status::PYDANTIC_VALIDATION_ERROR, &reason),
            Err(e) => Answer::error(status::UNHANDLED, &e.to_string()),
        };
    }
    dispatch(&shared.service, req, peer).await
}

/// Run a request through the service as a JSON request frame.
pub(crate) async fn dispatch(service: &Service, req: &Request, peer: Arc<PeerInfo>) -> Answer {
    let body = match serde_json::to_vec(&req.data) {
        Ok(b) => Bytes::from(b),
        Err(e) => return Answer::error(status::UNHANDLED, &e.to_string()),
    };
    let frame = Frame {
        kind: FrameKind::Request,
        flags: Flags::default().with_json(true),
        id: uuid::Uuid::new_v4(),
        route: req.route_key.clone(),
        body,
    };
    let answer = service.dispatch(frame, peer).await;
    match answer.kind {
        FrameKind::Response => {
            // The service answered in JSON, as asked; check before splicing
            // it into the line, since a bad value would corrupt the stream.
            if serde_json::from_slice::<serde::de::IgnoredAny>(&answer.body).is_ok() {
                Answer::ok(answer.body.to_vec())
            } else {
                Answer::error(status::UNHANDLED, "handler answer is not valid JSON")
            }
        }
        _ => {
            let e: ErrorBody = answer.decode_body().unwrap_or_else(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()));
            error_answer(&req.route_key, &e)
        }
    }
}

/// Weft error codes as ekosis statuses and texts.
pub fn error_status(route_key: &str, e: &ErrorBody) -> (u16, String) {
    match e.code {
        ErrorCode::UnknownRoute => (status::ROUTE_KEY_UNKNOWN, text::unknown_route(route_key)),
        ErrorCode::BadBody | ErrorCode::Validation => (status::PYDANTIC_VALIDATION_ERROR, e.message.clone()),
        ErrorCode::Handler => (status::PROCESSING_FAILURE, text::processing_failure(route_key, &e.message)),
        ErrorCode::Busy => (status::APPLICATION_BUSY, text::busy(&e.message)),
        ErrorCode::Unauthorized => (status::CLIENT_DENIED, e.message.clone()),
        _ => (status::UNHANDLED, e.message.clone()),
    }
}

fn error_answer(route_key: &str, e: &ErrorBody) -> Answer {
    let (s, m) = error_status(route_key, e);
    Answer::error(s, &m)
}
