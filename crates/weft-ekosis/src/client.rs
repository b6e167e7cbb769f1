//! A client for ekosis-protocol servers (real ekosis, or Weft's listener):
//! transient (one connection per call, as ekosis' `Transient*Client`) or
//! persisted (one kept connection, heartbeats when idle), over TCP, Unix
//! sockets or UDP, with ekosis' retry rules (same bytes and span key on every
//! attempt).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use weft_net::Endpoint;
use weft_queue::{BoxFuture, Outbound, Outcome};

use crate::error::EkosisError;
use crate::proto::{self, status, Line, LineDecoder, Response, SpanKey};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Per attempt.
    pub timeout: Duration,
    /// Total attempts (ekosis: `max_retries`, default 3).
    pub max_retries: u32,
    pub retry_delay: Duration,
    /// Keep one connection open (stream transports).
    pub persisted: bool,
    /// Persisted: send ENQ when idle this long, and check the ACK.
    pub heartbeat_period: Option<Duration>,
    pub max_line_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_delay: Duration::from_millis(100),
            persisted: false,
            heartbeat_period: None,
            max_line_bytes: 16 << 20,
        }
    }
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

struct Conn {
    reader: BoxRead,
    writer: BoxWrite,
    buf: BytesMut,
    decoder: LineDecoder,
    last_used: Instant,
}

pub struct EkosisClient {
    target: Endpoint,
    opts: ClientOptions,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

/// A fresh random span key.
pub fn new_span_key() -> SpanKey {
    SpanKey::new(uuid::Uuid::new_v4(), rand::thread_rng().r#gen::<u64>())
}

impl EkosisClient {
    pub fn new(target: Endpoint, opts: ClientOptions) -> Self {
        Self { target, opts, conn: tokio::sync::Mutex::new(None) }
    }

    pub fn target(&self) -> &Endpoint {
        &self.target
    }

    /// Call `route_key` with `data`; the answer's `data` on status 0, else
    /// `EkosisError::Status`.
    pub async fn call(&self, route_key: &str, data: &Value) -> Result<Value, EkosisError> {
        let r = self.call_with(route_key, &new_span_key(), data).await?;
        if r.status == status::SUCCESS {
            Ok(r.data)
        } else {
            let message = r.data.as_str().map(str::to_owned).unwrap_or_else(|| r.data.to_string());
            Err(EkosisError::Status { status: r.status, message, data: r.data })
        }
    }

    /// Call with a chosen span key; returns the whole response, any status.
    pub async fn call_with(&self, route_key: &str, span_key: &SpanKey, data: &Value) -> Result<Response, EkosisError> {
        let data_json = serde_json::to_vec(data).map_err(|e| EkosisError::Usage(e.to_string()))?;
        let mut line = Vec::with_capacity(data_json.len() + 128);
        proto::encode_request(route_key, span_key, &data_json, &mut line);
        self.exchange(Bytes::from(line)).await
    }

    /// Send ENQ and wait for ACK (stream transports; UDP sends ACK, which is
    /// what ekosis' UDP server answers).
    pub async fn heartbeat(&self) -> Result<(), EkosisError> {
        let target = self.target.to_string();
        match &self.target {
            Endpoint::Udp(addr) => {
                let got = self.udp_once(addr, b"\x06\n").await?;
                if got.first() == Some(&proto::ACK) { Ok(()) } else { Err(EkosisError::BadResponse { target, reason: "heartbeat not acknowledged".into() }) }
            }
            _ => {
                let mut slot = self.conn.lock().await;
                let mut conn = match slot.take() {
                    Some(c) => c,
                    None => self.connect().await?,
                };
                let fut = async {
                    conn.writer.write_all(proto::HEARTBEAT_REQUEST).await.map_err(|source| EkosisError::Io { target: target.clone(), source })?;
                    match read_line(&mut conn, &target).await? {
                        Line::Heartbeat(proto::ACK) => Ok(()),
                        _ => Err(EkosisError::BadResponse { target: target.clone(), reason: "heartbeat not acknowledged".into() }),
                    }
                };
                let r = tokio::time::timeout(self.opts.timeout, fut).await.unwrap_or_else(|_| Err(EkosisError::Timeout { target: target.clone(), timeout: self.opts.timeout }));
                if r.is_ok() && self.opts.persisted {
                    conn.last_used = Instant::now();
                    *slot = Some(conn);
                }
                r
            }
        }
    }

    async fn exchange(&self, line: Bytes) -> Result<Response, EkosisError> {
        let attempts = self.opts.max_retries.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(self.opts.retry_delay).await;
            }
            let got = match &self.target {
                Endpoint::Udp(addr) => self.udp_once(addr, &line).await,
                _ => self.stream_once(&line).await,
            };
            match got {
                Ok(bytes) => {
                    return proto::parse_response(&bytes).map_err(|e| EkosisError::BadResponse { target: self.target.to_string(), reason: e.to_string() });
                }
                Err(e) if e.is_retryable() => last = e.to_string(),
                Err(e) => return Err(e),
            }
        }
        Err(EkosisError::MaxRetries { attempts, last })
    }

    async fn connect(&self) -> Result<Conn, EkosisError> {
        let target = self.target.to_string();
        let fail = |source| EkosisError::Connect { target: target.clone(), source };
        let fut = async {
            let (reader, writer): (BoxRead, BoxWrite) = match &self.target {
                Endpoint::Tcp(addr) => {
                    let s = TcpStream::connect(addr.as_str()).await.map_err(fail)?;
                    let _ = s.set_nodelay(true);
                    let (r, w) = s.into_split();
                    (Box::new(r), Box::new(w))
                }
                Endpoint::Unix(path) => {
                    let s = UnixStream::connect(path).await.map_err(fail)?;
                    let (r, w) = s.into_split();
                    (Box::new(r), Box::new(w))
                }
                Endpoint::Udp(_) => return Err(EkosisError::Usage("udp is not a stream transport".into())),
            };
            Ok(Conn { reader, writer, buf: BytesMut::with_capacity(8192), decoder: LineDecoder::new(self.opts.max_line_bytes), last_used: Instant::now() })
        };
        tokio::time::timeout(self.opts.timeout, fut).await.unwrap_or_else(|_| Err(EkosisError::Timeout { target: target.clone(), timeout: self.opts.timeout }))
    }

    async fn stream_once(&self, line: &[u8]) -> Result<Bytes, EkosisError> {
        let target = self.target.to_string();
        let mut slot = self.conn.lock().await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        // A kept connection idle for a heartbeat period is checked first.
        if let Some(p) = self.opts.heartbeat_period.filter(|_| self.opts.persisted)
            && conn.last_used.elapsed() >= p
        {
            let ok = async {
                conn.writer.write_all(proto::HEARTBEAT_REQUEST).await.ok()?;
                matches!(read_line(&mut conn, &target).await, Ok(Line::Heartbeat(proto::ACK))).then_some(())
            };
            if tokio::time::timeout(self.opts.timeout, ok).await.ok().flatten().is_none() {
                conn = self.connect().await?;
            }
        }
        let fut = async {
            conn.writer.write_all(line).await.map_err(|source| EkosisError::Io { target: target.clone(), source })?;
            loop {
                match read_line(&mut conn, &target).await? {
                    Line::Message(m) => return Ok(m),
                    Line::Heartbeat(_) => continue,
                }
            }
        };
        let r = tokio::time::timeout(self.opts.timeout, fut).await.unwrap_or_else(|_| Err(EkosisError::Timeout { target: target.clone(), timeout: self.opts.timeout }));
        if r.is_ok() && self.opts.persisted {
            conn.last_used = Instant::now();
            *slot = Some(conn);
        }
        r
    }

    async fn udp_once(&self, addr: &str, payload: &[u8]) -> Result<Bytes, EkosisError> {
        let target = self.target.to_string();
        let io = |source| EkosisError::Io { target: target.clone(), source };
        let bind = if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" };
        let sock = UdpSocket::bind(bind).await.map_err(io)?;
        sock.connect(addr).await.map_err(|source| EkosisError::Connect { target: target.clone(), source })?;
        sock.send(payload).await.map_err(io)?;
        let mut buf = vec![0u8; weft_net::MAX_DATAGRAM_BYTES + 1];
        let n = tokio::time::timeout(self.opts.timeout, sock.recv(&mut buf))
            .await
            .map_err(|_| EkosisError::Timeout { target: target.clone(), timeout: self.opts.timeout })?
            .map_err(io)?;
        Ok(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()))
    }
}

async fn read_line(conn: &mut Conn, target: &str) -> Result<Line, EkosisError> {
    loop {
        match conn.decoder.decode(&mut conn.buf) {
            Ok(Some(l)) => return Ok(l),
            Ok(None) => {}
            Err(e) => return Err(EkosisError::BadResponse { target: target.to_owned(), reason: e.to_string() }),
        }
        let n = conn.reader.read_buf(&mut conn.buf).await.map_err(|source| EkosisError::Io { target: target.to_owned(), source })?;
        if n == 0 {
            return Err(EkosisError::Closed { target: target.to_owned() });
        }
    }
}

/// Delivers a queued sender's messages to an ekosis server. The message uid
/// is its span key, so every retry carries the same one (ekosis buffered
/// endpoints de-duplicate by span key while queued).
pub struct EkosisOutbound {
    client: EkosisClient,
}

impl EkosisOutbound {
    pub fn new(target: Endpoint, opts: ClientOptions) -> Arc<Self> {
        // The queue does the retrying, with back-off: one attempt per try.
        Arc::new(Self { client: EkosisClient::new(target, ClientOptions { max_retries: 1, ..opts }) })
    }
}

impl Outbound for EkosisOutbound {
    fn deliver(self: Arc<Self>, route: &str, uid: &str, body: Bytes) -> BoxFuture<Outcome> {
        let route = route.to_owned();
        let sk = uid.parse::<SpanKey>().unwrap_or_else(|_| {
            // Not a span key (queued natively): a stable trace id from the uid.
            let trace = uuid::Uuid::parse_str(uid).unwrap_or_else(|_| {
                let h = u128::from(crc32c::crc32c(uid.as_bytes())) << 96 | uid.len() as u128;
                uuid::Uuid::from_u128(h)
            });
            SpanKey::new(trace, 0)
        });
        Box::pin(async move {
            let data: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return Outcome::Fatal(format!("stored message is not JSON: {e}")),
            };
            match self.client.call_with(&route, &sk, &data).await {
                Ok(r) if r.status == status::SUCCESS => Outcome::Done,
                Ok(r) => {
                    let text = r.data.as_str().map(str::to_owned).unwrap_or_else(|| r.data.to_string());
                    // ekosis answers a paused buffered endpoint with 999 and a
                    // "status: [500]" text: that is "busy", not a failure.
                    if r.status == status::APPLICATION_BUSY || text.starts_with("status: [500]") {
                        Outcome::Transient(format!("status {}: {text}", r.status))
                    } else {
                        Outcome::Failed(format!("status {}: {text}", r.status))
                    }
                }
                Err(e) => Outcome::Transient(e.to_string()),
            }
        })
    }

    fn describe(&self) -> String {
        format!("ekosis+{}", self.client.target())
    }

    fn new_uid(&self) -> String {
        new_span_key().to_string()
    }
}
