use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use weft_wire::{
    decode_datagram, encode, BodyFormat, ErrorBody, ErrorCode, Frame, FrameDecoder, FrameKind, Hello,
    MessageId, Welcome, CONTROL_GOAWAY, CONTROL_HELLO, CONTROL_WELCOME, PROTOCOL_VERSION,
};

use crate::backoff::Backoff;
use crate::endpoint::Endpoint;
use crate::error::ClientError;
use crate::MAX_DATAGRAM_BYTES;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent in the hello; see [`crate::default_client_id`].
    pub client_id: String,
    pub client_name: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_frame_bytes: usize,
    /// Delay between reconnection attempts after the connection drops.
    pub backoff: Backoff,
    /// Body encoding for `call` (msgpack unless set to JSON).
    pub body_format: BodyFormat,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            client_id: crate::default_client_id(),
            client_name: "weft-client".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_frame_bytes: weft_wire::DEFAULT_MAX_FRAME_BYTES,
            backoff: Backoff::default(),
            body_format: BodyFormat::MsgPack,
        }
    }
}

type Pending = Mutex<HashMap<MessageId, oneshot::Sender<Frame>>>;
type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

enum Link {
    /// TCP and Unix sockets: frames go through the driver task, which owns
    /// the current connection and replaces it when it drops.
    Stream(mpsc::Sender<Frame>),
    Datagram(Arc<UdpSocket>),
}

struct Inner {
    endpoint: Endpoint,
    config: ClientConfig,
    pending: Pending,
    welcome: Mutex<Option<Welcome>>,
    closed: CancellationToken,
    link: Link,
}

/// A persistent, multiplexed connection to one Weft server. Clone freely:
/// clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connect and complete the handshake, or fail within the connect
    /// timeout. Later drops are repaired in the background.
    pub async fn connect(endpoint: Endpoint, config: ClientConfig) -> Result<Client, ClientError> {
        match &endpoint {
            Endpoint::Udp(addr) => Self::connect_udp(endpoint.clone(), addr.clone(), config).await,
            _ => {
                let (reader, writer, welcome) = establish(&endpoint, &config).await?;
                let (tx, rx) = mpsc::channel(1024);
                let inner = Arc::new(Inner {
                    endpoint,
                    config,
                    pending: Mutex::new(HashMap::new()),
                    welcome: Mutex::new(Some(welcome)),
                    closed: CancellationToken::new(),
                    link: Link::Stream(tx),
                });
                tokio::spawn(drive(inner.clone(), rx, reader, writer));
                Ok(Client { inner })
            }
        }
    }

    async fn connect_udp(endpoint: Endpoint, addr: String, config: ClientConfig) -> Result<Client, ClientError> {
        let fail = |reason: String| ClientError::Connect { endpoint: endpoint.to_string(), reason };
        let bind = if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" };
        let sock = UdpSocket::bind(bind).await.map_err(|e| fail(e.to_string()))?;
        sock.connect(&addr).await.map_err(|e| fail(e.to_string()))?;
        let sock = Arc::new(sock);
        let inner = Arc::new(Inner {
            endpoint: endpoint.clone(),
            config,
            pending: Mutex::new(HashMap::new()),
            welcome: Mutex::new(None),
            closed: CancellationToken::new(),
            link: Link::Datagram(sock.clone()),
        });
        tokio::spawn(read_datagrams(inner.clone(), sock));
        let client = Client { inner };
        // The handshake is optional on UDP, but doing it checks the version
        // and that someone is listening.
        let hello = client.hello_frame()?;
        let answer = tokio::time::timeout(client.inner.config.connect_timeout, client.request_frame(hello))
            .await
            .map_err(|_| fail("no welcome within the connect timeout".into()))?;
        let welcome = check_welcome(answer)?;
        *lock(&client.inner.welcome) = Some(welcome);
        Ok(client)
    }

    fn hello_frame(&self) -> Result<Frame, ClientError> {
        hello_frame(&self.inner.config)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The server's welcome from the latest handshake.
    pub fn welcome(&self) -> Option<Welcome> {
        lock(&self.inner.welcome).clone()
    }

    /// Send a request frame and wait for its answer. An error frame from the
    /// server becomes `ClientError::Remote`.
    pub async fn request_frame(&self, frame: Frame) -> Result<Frame, ClientError> {
        if self.inner.closed.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let id = frame.id;
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(id, tx);
        let _guard = PendingGuard { inner: &self.inner, id };
        let timeout = self.inner.config.request_timeout;
        let wait = async {
            self.transmit(frame).await?;
            rx.await.map_err(|_| ClientError::ConnectionLost)
        };
        let answer = tokio::time::timeout(timeout, wait).await.map_err(|_| ClientError::Timeout(timeout))??;
        if answer.kind == FrameKind::Error {
            let body: ErrorBody = answer.decode_body()?;
            return Err(ClientError::Remote(body));
        }
        Ok(answer)
    }

    async fn transmit(&self, frame: Frame) -> Result<(), ClientError> {
        match &self.inner.link {
            Link::Stream(tx) => tx.send(frame).await.map_err(|_| ClientError::Closed),
            Link::Datagram(sock) => {
                let mut out = BytesMut::new();
                encode(&frame, &mut out)?;
                if out.len() > MAX_DATAGRAM_BYTES {
                    return Err(ClientError::DatagramTooLarge(out.len()));
                }
                // A refused send (no listener yet) is just a lost datagram:
                // the request timeout covers it.
                if let Err(e) = sock.send(&out).await {
                    debug!(error = %e, "udp send failed");
                }
                Ok(())
            }
        }
    }

    /// Call `route` with a typed request and decode the typed response.
    pub async fn call<Req, Resp>(&self, route: &str, req: &Req) -> Result<Resp, ClientError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let frame = Frame::request(MessageId::new_v4(), route, self.inner.config.body_format, req)?;
        Ok(self.request_frame(frame).await?.decode_body()?)
    }

    /// Call `route` with a JSON body and get JSON back (any schema).
    pub async fn call_json(&self, route: &str, body: &serde_json::Value) -> Result<serde_json::Value, ClientError> {
        let frame = Frame::request(MessageId::new_v4(), route, BodyFormat::Json, body)?;
        Ok(self.request_frame(frame).await?.decode_body()?)
    }

    /// Fire and forget: an event frame, no answer expected.
    pub async fn send_event<T: Serialize + ?Sized>(&self, route: &str, body: &T) -> Result<(), ClientError> {
        let mut frame = Frame::with_body(FrameKind::Event, MessageId::new_v4(), route, self.inner.config.body_format, body)?;
        frame.flags = frame.flags.with_one_way(true);
        self.transmit(frame).await
    }

    /// Stop the connection; calls in flight fail with `ConnectionLost`.
    pub fn close(&self) {
        self.inner.closed.cancel();
        lock(&self.inner.pending).clear();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

struct PendingGuard<'a> {
    inner: &'a Inner,
    id: MessageId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only follows a panic while locked; every critical section
    // here is a single map or option update, so the data stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hello_frame(config: &ClientConfig) -> Result<Frame, ClientError> {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: config.client_id.clone(),
        client_name: config.client_name.clone(),
    };
    Ok(Frame::with_body(FrameKind::Control, MessageId::new_v4(), CONTROL_HELLO, BodyFormat::MsgPack, &hello)?)
}

fn check_welcome(answer: Result<Frame, ClientError>) -> Result<Welcome, ClientError> {
    match answer {
        Ok(f) if f.kind == FrameKind::Control && f.route == CONTROL_WELCOME => {
            let w: Welcome = f.decode_body()?;
            if w.protocol_version != PROTOCOL_VERSION {
                return Err(ClientError::VersionMismatch { client: PROTOCOL_VERSION, server: w.protocol_version.to_string() });
            }
            Ok(w)
        }
        Ok(f) => Err(ClientError::Handshake(ErrorBody::new(
            ErrorCode::BadFrame,
            format!("expected welcome, got {} {:?}", f.kind.as_str(), f.route),
        ))),
        Err(ClientError::Remote(e)) if e.code == ErrorCode::UnsupportedVersion => {
            let server = e.details.as_ref().and_then(|d| d.get("supported")).map(|s| s.to_string()).unwrap_or_else(|| "?".into());
            Err(ClientError::VersionMismatch { client: PROTOCOL_VERSION, server })
        }
        Err(ClientError::Remote(e)) => Err(ClientError::Handshake(e)),
        Err(e) => Err(e),
    }
}

/// Open a stream connection and complete the hello/welcome exchange.
async fn establish(endpoint: &Endpoint, config: &ClientConfig) -> Result<(BoxRead, BoxWrite, Welcome), ClientError> {
    let fail = |reason: String| ClientError::Connect { endpoint: endpoint.to_string(), reason };
    let work = async {
        let (mut reader, mut writer): (BoxRead, BoxWrite) = match endpoint {
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str()).await.map_err(|e| fail(e.to_string()))?;
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path).await.map_err(|e| fail(e.to_string()))?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Endpoint::Udp(_) => return Err(fail("udp is not a stream transport".into())),
        };
        let hello = hello_frame(config)?;
        let mut out = BytesMut::new();
        encode(&hello, &mut out)?;
        writer.write_all(&out).await.map_err(|e| fail(e.to_string()))?;
        let mut decoder = FrameDecoder::new(config.max_frame_bytes);
        let mut buf = BytesMut::with_capacity(4096);
        let answer = loop {
            if let Some(f) = decoder.decode(&mut buf)? {
                break f;
            }
            let n = reader.read_buf(&mut buf).await.map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                return Err(fail("server closed the connection during the handshake".into()));
            }
        };
        let answer = if answer.kind == FrameKind::Error {
            Err(ClientError::Remote(answer.decode_body()?))
        } else {
            Ok(answer)
        };
        let welcome = check_welcome(answer)?;
        // Anything the server sent after the welcome would be lost with
        // `buf`; the server sends nothing unasked, so it is empty.
        Ok((reader, writer, welcome))
    };
    tokio::time::timeout(config.connect_timeout, work)
        .await
        .map_err(|_| fail(format!("no welcome within {:?}", config.connect_timeout)))?
}

/// Owns the stream connection: runs it, and when it drops, fails the calls
/// in flight and reconnects with back-off until the client is closed.
async fn drive(inner: Arc<Inner>, mut rx: mpsc::Receiver<Frame>, reader: BoxRead, writer: BoxWrite) {
    let mut conn = Some((reader, writer));
    let mut attempt: u32 = 0;
    loop {
        if let Some((reader, writer)) = conn.take() {
            attempt = 0;
            run_connection(&inner, &mut rx, reader, writer).await;
            // Whatever was in flight on that connection will never be answered.
            lock(&inner.pending).clear();
            if inner.closed.is_cancelled() {
                return;
            }
            info!(endpoint = %inner.endpoint, "connection lost; reconnecting");
        }
        let delay = inner.config.backoff.delay(attempt, rand::thread_rng().r#gen::<f64>());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = inner.closed.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        match establish(&inner.endpoint, &inner.config).await {
            Ok((r, w, welcome)) => {
                info!(endpoint = %inner.endpoint, server_id = %welcome.server_id, "reconnected");
                *lock(&inner.welcome) = Some(welcome);
                conn = Some((r, w));
            }
            Err(e) => debug!(endpoint = %inner.endpoint, error = %e, attempt, "reconnect failed"),
        }
    }
}

async fn run_connection(inner: &Arc<Inner>, rx: &mut mpsc::Receiver<Frame>, mut reader: BoxRead, mut writer: BoxWrite) {
    let read_side = async {
        let mut decoder = FrameDecoder::new(inner.config.max_frame_bytes);
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        if frame.kind == FrameKind::Control && frame.route == CONTROL_GOAWAY {
                            // The server is draining: answers in flight are
                            // already written before the goaway.
                            return;
                        }
                        deliver(inner, frame);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "bad frame from server");
                        if !e.is_recoverable() {
                            return;
                        }
                    }
                }
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let write_side = async {
        let mut out = BytesMut::with_capacity(16 * 1024);
        while let Some(frame) = rx.recv().await {
            push_live(inner, &frame, &mut out);
            while out.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(f) => push_live(inner, &f, &mut out),
                    Err(_) => break,
                }
            }
            if out.is_empty() {
                continue;
            }
            if writer.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    };
    tokio::select! {
        _ = read_side => {}
        _ = write_side => {}
        _ = inner.closed.cancelled() => {}
    }
    let _ = writer.shutdown().await;
}

/// Skip requests whose caller already gave up (timed out, or failed with
/// the previous connection): the server must not run them late.
fn push_live(inner: &Inner, frame: &Frame, out: &mut BytesMut) {
    let live = frame.kind != FrameKind::Request || lock(&inner.pending).contains_key(&frame.id);
    if live
        && let Err(e) = encode(frame, out)
        && let Some(tx) = lock(&inner.pending).remove(&frame.id)
    {
        let err = weft_wire::error_frame_for(frame.id, BodyFormat::MsgPack, &ErrorBody::new(ErrorCode::BadFrame, e.to_string()));
        let _ = tx.send(err);
    }
}

fn deliver(inner: &Inner, frame: Frame) {
    match frame.kind {
        FrameKind::Response | FrameKind::Error | FrameKind::Control => {
            if let Some(tx) = lock(&inner.pending).remove(&frame.id) {
                let _ = tx.send(frame);
            } else {
                debug!(id = %frame.id, "answer for an unknown or expired request");
            }
        }
        _ => debug!(kind = frame.kind.as_str(), route = %frame.route, "ignoring frame from server"),
    }
}

async fn read_datagrams(inner: Arc<Inner>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    loop {
        let got = tokio::select! {
            _ = inner.closed.cancelled() => return,
            r = sock.recv(&mut buf) => r,
        };
        match got {
            Ok(n) => match decode_datagram(buf.get(..n).unwrap_or_default(), MAX_DATAGRAM_BYTES) {
                Ok(frame) => deliver(&inner, frame),
                Err(e) => debug!(error = %e, "bad datagram from server"),
            },
            // ECONNREFUSED from an earlier send: nobody listening yet.
            Err(e) => {
                debug!(error = %e, "udp recv error");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
