use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::task::AtomicWaker;
use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use weft_wire::{
    decode_datagram, encode, BodyFormat, ErrorBody, ErrorCode, Frame, FrameDecoder, FrameKind,
    MessageId, Welcome, CONTROL_GOAWAY, CONTROL_HELLO, CONTROL_WELCOME, PROTOCOL_VERSION,
};

use crate::backoff::Backoff;
use crate::endpoint::{Endpoint, Target};
use crate::error::ClientError;
use crate::tls::TlsClientConfig;
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
    /// Trust, client certificate and server name for `tls://` and
    /// `quic://` targets; by default from the `WEFT_TLS_*` variables.
    pub tls: TlsClientConfig,
    /// Events from the server kept for each [`Subscription`] that has not
    /// read them yet (at least 1); past this a slow subscriber loses the
    /// oldest ones, counted by [`Client::events_dropped`].
    pub event_buffer: usize,
    /// A bearer token or API key sent in the hello (docs/security.md); by
    /// default from `WEFT_TOKEN`. A server with auth on refuses the hello
    /// when it is wrong and each request when it is missing.
    pub token: Option<String>,
    /// Ask for zstd-compressed bodies in the hello (docs/protocol.md,
    /// "Compression"); default off. On TCP, Unix and TLS connections whose
    /// welcome lists `compress-zstd`, requests of at least
    /// `compress_min_bytes` are sent compressed and compressed answers are
    /// read; elsewhere nothing changes.
    pub compression: bool,
    pub compress_min_bytes: usize,
}

/// Default [`ClientConfig::event_buffer`].
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

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
            tls: TlsClientConfig::from_env(),
            event_buffer: DEFAULT_EVENT_BUFFER,
            token: std::env::var("WEFT_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
            compression: false,
            compress_min_bytes: weft_wire::DEFAULT_COMPRESS_MIN_BYTES,
        }
    }
}

/// Requests waiting for their answer, by message id. The caller's future
/// polls its own slot (no channel or allocation per request); the reader
/// fills it and wakes the caller. An absent slot is a lost request: the
/// connection dropped or the client was closed. The request timeout is a
/// deadline in the slot, expired by the connection's reader task on a
/// tick (an eighth of the timeout, 5 ms to 1 s) instead of a timer per
/// request: a call fails with `Timeout` between its timeout and one tick
/// later.
type Pending = Mutex<HashMap<MessageId, Slot, IdHash>>;
type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

enum Slot {
    Waiting { waker: Option<Waker>, deadline: Instant },
    Done(Frame),
    TimedOut,
}

/// How often the reader task expires requests past their deadline.
fn expiry_tick(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// Requests past their deadline fail with `Timeout`: their callers are
/// woken. Their slots stay (a late answer is dropped) until the caller
/// takes the error or is dropped.
fn expire_pending(inner: &Inner, now: Instant) {
    let mut wakers = Vec::new();
    for slot in lock(&inner.pending).values_mut() {
        if let Slot::Waiting { waker, deadline } = slot
            && *deadline <= now
        {
            wakers.extend(waker.take());
            *slot = Slot::TimedOut;
        }
    }
    for w in wakers {
        w.wake();
    }
}

/// Hash for the pending table: message ids are chosen by this process's
/// callers (random UUIDs or counters), never by the server, so a keyed
/// SipHash buys nothing; a multiply-fold of the id's bytes spreads both.
#[derive(Clone, Copy, Default)]
struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            // Big-endian so that a counter's low bits land in the word's
            // low bits, which the multiply keeps distinct.
            self.0 = (self.0.rotate_left(5) ^ u64::from_be_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    // The array's length prefix is the same for every id.
    fn write_usize(&mut self, _: usize) {}
    fn finish(&self) -> u64 {
        // The multiply mixes upwards; the table indexes by the low bits.
        self.0.rotate_left(26)
    }
}

/// Bytes the callers may leave in a stream connection's output buffer for
/// its task to write (a socket that does not take them); past it, callers
/// wait. It replaces the old channel's 1024 queued frames as the bound on
/// what a client holds for a server that does not read.
const MAX_BACKLOG: usize = 256 * 1024;

/// TCP, Unix and TLS: callers encode their frame into the connection's
/// output buffer and write it themselves when no write is in progress (a
/// non-blocking attempt under the lock); what the socket does not take
/// stays in the buffer for the connection task, which reads answers and
/// writes leftovers. A frame is whole in the buffer before any of it is
/// written, so a caller dropped mid-call never cuts one, and one dropped
/// before it got the lock was never encoded, so it is not sent late.
struct StreamLink {
    out: Mutex<Out>,
    /// The connection task owns the writing (`out.buf` has leftovers, a
    /// TLS flush is pending, or a write failed); callers only append.
    /// Changed under `out`'s lock; the task reads it without.
    task_writes: AtomicBool,
    /// The connection task, woken when callers hand it leftovers.
    task: AtomicWaker,
    /// Callers waiting for a connection (reconnecting) or for room in the
    /// buffer.
    changed: Notify,
}

struct Out {
    /// `None` while reconnecting.
    writer: Option<BoxWrite>,
    buf: BytesMut,
    failed: bool,
}

impl StreamLink {
    fn new(writer: BoxWrite) -> Self {
        StreamLink {
            out: Mutex::new(Out { writer: Some(writer), buf: BytesMut::with_capacity(16 * 1024), failed: false }),
            task_writes: AtomicBool::new(false),
            task: AtomicWaker::new(),
            changed: Notify::new(),
        }
    }

    /// Put `frame` on the connection (registering it in `pending` when an
    /// answer is expected), waiting while reconnecting or while the buffer
    /// is over [`MAX_BACKLOG`].
    /// `deadline`: the request's, for its slot and for this wait; `None`
    /// for an event (no answer, no slot).
    /// The slot is made with the waker of the task polling this, so the
    /// caller's `Waiter` needs no lookup at its first poll.
    async fn submit(&self, inner: &Inner, frame: &Frame, deadline: Option<Instant>) -> Result<(), ClientError> {
        let attempt = || std::future::poll_fn(|cx| Poll::Ready(self.try_submit(inner, frame, deadline, cx.waker())));
        if attempt().await? {
            return Ok(());
        }
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if attempt().await? {
                return Ok(());
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Err(ClientError::Timeout(inner.config.request_timeout));
                    }
                }
                None => notified.await,
            }
        }
    }

    /// False: no connection now, or the buffer is full.
    fn try_submit(&self, inner: &Inner, frame: &Frame, deadline: Option<Instant>, waker: &Waker) -> Result<bool, ClientError> {
        let mut out = lock(&self.out);
        if inner.closed.is_cancelled() {
            return Err(ClientError::Closed);
        }
        if out.writer.is_none() || out.buf.len() >= MAX_BACKLOG {
            return Ok(false);
        }
        // `encode` checks before it writes: an error leaves `buf` as it was.
        if let Err(e) = encode(frame, &mut out.buf) {
            // As the server would answer it (and as this client did when
            // its writer task found the frame unencodable).
            return Err(ClientError::Remote(ErrorBody::new(ErrorCode::BadFrame, e.to_string())));
        }
        // Other calls awaiting answers: this caller pipelines.
        let pipelined = {
            let mut pending = lock(&inner.pending);
            let busy = !pending.is_empty();
            if let Some(deadline) = deadline {
                // Under `out`'s lock: a connection lost before this point fails
                // nothing of this call, one lost after it finds the slot.
                pending.insert(frame.id, Slot::Waiting { waker: Some(waker.clone()), deadline });
            }
            busy
        };
        if !self.task_writes.load(Ordering::Relaxed) {
            if pipelined {
                // Callers that pipeline (many calls in flight) leave the
                // write to the connection task, woken now and run once the
                // caller's task yields: the frames queued meanwhile go out
                // in one write, so the server reads them in one pass rather
                // than one segment per request. A lone call (request and
                // answer, one at a time) still writes at once.
                self.task_writes.store(true, Ordering::Release);
                self.task.wake();
            } else {
                self.write_now(&mut out);
            }
        }
        Ok(true)
    }

    /// A caller's write: as much of the buffer as the socket takes now.
    /// Its no-op waker is never what anyone waits on: when the socket
    /// does not take everything, the connection task takes over and polls
    /// with its own waker.
    fn write_now(&self, out: &mut Out) {
        let Out { writer, buf, failed } = out;
        let Some(w) = writer.as_mut() else { return };
        let mut cx = Context::from_waker(Waker::noop());
        while !buf.is_empty() {
            match Pin::new(&mut *w).poll_write(&mut cx, buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    *failed = true;
                    break;
                }
                Poll::Ready(Ok(n)) => buf.advance(n),
                Poll::Pending => break,
            }
        }
        if buf.is_empty() && !*failed {
            match Pin::new(&mut *w).poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => {
                    buf.clear();
                    return;
                }
                Poll::Ready(Err(_)) => *failed = true,
                Poll::Pending => {}
            }
        }
        self.task_writes.store(true, Ordering::Release);
        self.task.wake();
    }

    /// The connection task's write of leftovers; Err when the connection
    /// is broken.
    fn write_leftovers(&self, cx: &mut Context<'_>) -> Result<(), ()> {
        let mut out = lock(&self.out);
        let Out { writer, buf, failed } = &mut *out;
        if *failed {
            return Err(());
        }
        let Some(w) = writer.as_mut() else { return Ok(()) };
        while !buf.is_empty() {
            match Pin::new(&mut *w).poll_write(cx, buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(()),
                Poll::Ready(Ok(n)) => buf.advance(n),
                Poll::Pending => return Ok(()),
            }
        }
        match Pin::new(&mut *w).poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => return Ok(()),
        }
        buf.clear();
        self.task_writes.store(false, Ordering::Release);
        drop(out);
        // Room again for callers waiting on a full buffer.
        self.changed.notify_waiters();
        Ok(())
    }

    /// After a connection ends: drop its unwritten bytes and fail the
    /// calls in flight on it (in one critical section with callers'
    /// submits), then close it.
    async fn disconnect(&self, inner: &Inner) {
        let writer = {
            let mut out = lock(&self.out);
            out.buf.clear();
            out.failed = false;
            self.task_writes.store(false, Ordering::Release);
            fail_pending(inner);
            out.writer.take()
        };
        self.changed.notify_waiters();
        if let Some(mut w) = writer {
            let _ = w.shutdown().await;
        }
    }

    fn connected(&self, writer: BoxWrite) {
        lock(&self.out).writer = Some(writer);
        self.changed.notify_waiters();
    }
}

/// Every call still waiting for an answer fails (`ConnectionLost`): its
/// slot is gone and it is woken. Answers already in (read before a
/// goaway or the close) stay for their callers.
fn fail_pending(inner: &Inner) {
    let mut wakers = Vec::new();
    lock(&inner.pending).retain(|_, slot| match slot {
        Slot::Waiting { waker, .. } => {
            wakers.extend(waker.take());
            false
        }
        Slot::Done(_) | Slot::TimedOut => true,
    });
    for w in wakers {
        w.wake();
    }
}

/// A request's wait for its answer; removes the slot if dropped first
/// (timed out or cancelled), so a late answer is discarded.
struct Waiter<'a> {
    inner: &'a Inner,
    id: MessageId,
    finished: bool,
    /// The slot was made with the waker of the task that polls this first,
    /// in the same poll (`StreamLink::submit`): that first poll can
    /// return `Pending` without looking, since an answer delivered
    /// meanwhile has woken (re-scheduled) that task already.
    fresh: bool,
}

impl Future for Waiter<'_> {
    type Output = Result<Frame, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if std::mem::take(&mut self.fresh) {
            return Poll::Pending;
        }
        let mut pending = lock(&self.inner.pending);
        let result = match pending.entry(self.id) {
            Entry::Vacant(_) => Err(ClientError::ConnectionLost),
            Entry::Occupied(mut e) => match e.get_mut() {
                Slot::Waiting { waker, .. } => {
                    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Slot::Done(_) | Slot::TimedOut => match e.remove() {
                    Slot::Done(f) => Ok(f),
                    _ => Err(ClientError::Timeout(self.inner.config.request_timeout)),
                },
            },
        };
        drop(pending);
        self.finished = true;
        Poll::Ready(result)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            lock(&self.inner.pending).remove(&self.id);
        }
    }
}

enum Link {
    Stream(Arc<StreamLink>),
    Datagram(Arc<UdpSocket>),
    /// QUIC: a stream per request on the current connection, which a
    /// driver task replaces when it drops.
    Quic(Arc<QuicLink>),
}

/// Sleeps the back-off before reconnect attempt `attempt` (and counts it);
/// false when the client was closed meanwhile.
async fn back_off(inner: &Inner, attempt: &mut u32) -> bool {
    let delay = inner.config.backoff.delay(*attempt, rand::thread_rng().r#gen::<f64>());
    *attempt = attempt.saturating_add(1);
    tokio::select! {
        _ = inner.closed.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

struct Inner {
    endpoint: Target,
    config: ClientConfig,
    pending: Pending,
    welcome: Mutex<Option<Welcome>>,
    closed: CancellationToken,
    link: Link,
    /// Server events to subscribers (a bounded ring per subscriber).
    events: broadcast::Sender<Frame>,
    events_received: AtomicU64,
    events_dropped: Arc<AtomicU64>,
}

impl Inner {
    fn new(endpoint: Target, config: ClientConfig, welcome: Option<Welcome>, link: Link) -> Arc<Inner> {
        let (events, _) = broadcast::channel(config.event_buffer.max(1));
        Arc::new(Inner {
            events,
            events_received: AtomicU64::new(0),
            events_dropped: Arc::new(AtomicU64::new(0)),
            endpoint,
            config,
            pending: Mutex::new(HashMap::with_hasher(IdHash)),
            welcome: Mutex::new(welcome),
            closed: CancellationToken::new(),
            link,
        })
    }
}

/// A persistent, multiplexed connection to one Weft server. Clone freely:
/// clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Shared by the user's clones only (the driver tasks hold `inner`):
    /// when the last clone is dropped, the connection is closed instead of
    /// living on in its driver task.
    _handle: Arc<CloseOnDrop>,
}

struct CloseOnDrop(CancellationToken);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Client {
    fn from_inner(inner: Arc<Inner>) -> Self {
        let handle = Arc::new(CloseOnDrop(inner.closed.clone()));
        Client { inner, _handle: handle }
    }
}

impl Client {
    /// Connect and complete the handshake, or fail within the connect
    /// timeout. Later drops are repaired in the background.
    pub async fn connect(endpoint: impl Into<Target>, config: ClientConfig) -> Result<Client, ClientError> {
        let endpoint: Target = endpoint.into();
        match &endpoint {
            Target::Plain(Endpoint::Udp(addr)) => Self::connect_udp(endpoint.clone(), addr.clone(), config).await,
            Target::Quic(addr) => {
                let link = QuicLink::new(addr, &config)?;
                let (conn, welcome) = link.establish(&config).await?;
                link.current.send_replace(Some(conn));
                let link = Arc::new(link);
                let inner = Inner::new(endpoint, config, Some(welcome), Link::Quic(link.clone()));
                tokio::spawn(drive_quic(inner.clone(), link));
                Ok(Client::from_inner(inner))
            }
            _ => {
                let (reader, writer, welcome) = establish(&endpoint, &config).await?;
                let link = Arc::new(StreamLink::new(writer));
                let inner = Inner::new(endpoint, config, Some(welcome), Link::Stream(link.clone()));
                tokio::spawn(drive(inner.clone(), link, reader));
                Ok(Client::from_inner(inner))
            }
        }
    }

    async fn connect_udp(endpoint: Target, addr: String, config: ClientConfig) -> Result<Client, ClientError> {
        let fail = |reason: String| ClientError::Connect { endpoint: endpoint.to_string(), reason };
        let bind = if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" };
        let sock = UdpSocket::bind(bind).await.map_err(|e| fail(e.to_string()))?;
        sock.connect(&addr).await.map_err(|e| fail(e.to_string()))?;
        let sock = Arc::new(sock);
        let inner = Inner::new(endpoint.clone(), config, None, Link::Datagram(sock.clone()));
        tokio::spawn(read_datagrams(inner.clone(), sock));
        let client = Client::from_inner(inner);
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

    pub fn endpoint(&self) -> &Target {
        &self.inner.endpoint
    }

    /// The settings this client connected with (to open another connection
    /// the same way, e.g. to a cluster leader named by a `not_leader` error).
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// `frame` with the caller's trace context (from the source set by
    /// [`set_trace_context_source`]) when the server's welcome accepts it
    /// (docs/protocol.md, "Trace context"); else `frame` unchanged.
    fn with_trace_context(&self, frame: Frame) -> Frame {
        let Some(source) = TRACE_CONTEXT_SOURCE.get() else { return frame };
        if !matches!(frame.kind, FrameKind::Request | FrameKind::Event) {
            return frame;
        }
        let accepted = lock(&self.inner.welcome).as_ref().is_some_and(|w| w.features.iter().any(|f| f == weft_wire::TRACE_CONTEXT_FEATURE));
        match (accepted, source()) {
            (true, Some(traceparent)) => frame.with_trace_context(&traceparent),
            _ => frame,
        }
    }

    /// Whether this connection sends and reads compressed bodies: asked for
    /// in the config, a stream link, and the server's welcome accepted it.
    fn compresses(&self) -> bool {
        self.inner.config.compression
            && matches!(self.inner.link, Link::Stream(_))
            && lock(&self.inner.welcome).as_ref().is_some_and(|w| w.features.iter().any(|f| f == weft_wire::COMPRESS_ZSTD_FEATURE))
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
        let compress = self.compresses();
        let mut frame = frame;
        if compress && frame.body.len() >= self.inner.config.compress_min_bytes {
            frame.compress_body(self.inner.config.compress_min_bytes);
        }
        let frame = self.with_trace_context(frame);
        if let Link::Quic(link) = &self.inner.link {
            // No id matching: the answer comes back on the request's stream.
            let timeout = self.inner.config.request_timeout;
            let answer = tokio::time::timeout(timeout, link.request(&frame, self.inner.config.max_frame_bytes))
                .await
                .map_err(|_| ClientError::Timeout(timeout))??;
            if answer.kind == FrameKind::Error {
                return Err(ClientError::Remote(answer.decode_body()?));
            }
            return Ok(answer);
        }
        let mut waiter = Waiter { inner: &self.inner, id: frame.id, finished: false, fresh: false };
        // The slot's deadline: no timer per request (see `Pending`).
        let deadline = Instant::now() + self.inner.config.request_timeout;
        match &self.inner.link {
            Link::Stream(link) => {
                link.submit(&self.inner, &frame, Some(deadline)).await?;
                // Nothing awaits between the submit's last poll and the
                // waiter's first: both run in the same poll of this task.
                waiter.fresh = true;
            }
            _ => {
                lock(&self.inner.pending).insert(frame.id, Slot::Waiting { waker: None, deadline });
                self.transmit(frame).await?;
            }
        }
        let mut answer = waiter.await?;
        // A compressed answer only comes when this client asked for it.
        answer.decompress_body(compress, self.inner.config.max_frame_bytes)?;
        if answer.kind == FrameKind::Error {
            let body: ErrorBody = answer.decode_body()?;
            return Err(ClientError::Remote(body));
        }
        Ok(answer)
    }

    async fn transmit(&self, frame: Frame) -> Result<(), ClientError> {
        match &self.inner.link {
            Link::Stream(link) => link.submit(&self.inner, &frame, None).await,
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
            Link::Quic(link) => link.send_one_way(&frame).await,
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

    /// Receive the events the server sends on this client's connection
    /// (stream transports and UDP; not QUIC), from now on, across
    /// reconnections. Each subscription has its own bounded buffer of
    /// [`ClientConfig::event_buffer`] events: a subscriber that falls
    /// further behind loses the oldest (counted in [`Client::events_dropped`]);
    /// the connection and other subscribers never wait for it. With no
    /// subscriber, events are counted and discarded.
    pub fn subscribe(&self) -> Subscription {
        Subscription { rx: self.inner.events.subscribe(), dropped: self.inner.events_dropped.clone(), closed: self.inner.closed.clone() }
    }

    /// Events received from the server since connecting.
    pub fn events_received(&self) -> u64 {
        self.inner.events_received.load(Ordering::Relaxed)
    }

    /// Events lost by subscribers that fell behind.
    pub fn events_dropped(&self) -> u64 {
        self.inner.events_dropped.load(Ordering::Relaxed)
    }

    /// Fire and forget: an event frame, no answer expected.
    pub async fn send_event<T: Serialize + ?Sized>(&self, route: &str, body: &T) -> Result<(), ClientError> {
        let mut frame = Frame::with_body(FrameKind::Event, MessageId::new_v4(), route, self.inner.config.body_format, body)?;
        frame.flags = frame.flags.with_one_way(true);
        self.transmit(frame).await
    }

    /// Close, and on QUIC wait (up to a second) until the server has been
    /// told: a process about to exit calls this, because unlike TCP no
    /// kernel closes a QUIC connection for it, and the server would keep it
    /// until its idle timeout.
    pub async fn shutdown(&self) {
        self.close();
        if let Link::Quic(link) = &self.inner.link {
            let _ = tokio::time::timeout(Duration::from_secs(1), link.endpoint.wait_idle()).await;
        }
    }

    /// Stop the connection; calls in flight fail with `ConnectionLost`.
    pub fn close(&self) {
        self.inner.closed.cancel();
        if let Link::Quic(link) = &self.inner.link {
            link.close();
        }
        fail_pending(&self.inner);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only follows a panic while locked; every critical section
    // here is a single map or option update, so the data stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hello_frame(config: &ClientConfig) -> Result<Frame, ClientError> {
    /// The hello with its optional `token` (docs/protocol.md,
    /// "Authentication"); servers without auth ignore the field.
    #[derive(serde::Serialize)]
    struct HelloWithToken<'a> {
        protocol_version: u8,
        client_id: &'a str,
        client_name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
        /// Compressions this client reads (docs/protocol.md, "Compression").
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        compression: &'a [&'a str],
    }
    let h = HelloWithToken {
        protocol_version: PROTOCOL_VERSION,
        client_id: &config.client_id,
        client_name: &config.client_name,
        token: config.token.as_deref(),
        compression: if config.compression { &[weft_wire::COMPRESS_ZSTD] } else { &[] },
    };
    Ok(Frame::with_body(FrameKind::Control, MessageId::new_v4(), CONTROL_HELLO, BodyFormat::MsgPack, &h)?)
}

static TRACE_CONTEXT_SOURCE: std::sync::OnceLock<fn() -> Option<String>> = std::sync::OnceLock::new();

/// Where clients of this process find the `traceparent` to send with a
/// request (the binary: the current span's, else `TRACEPARENT`). Set once;
/// later calls are ignored. Unset: no trace context is sent.
pub fn set_trace_context_source(source: fn() -> Option<String>) {
    let _ = TRACE_CONTEXT_SOURCE.set(source);
}

/// The source set by [`set_trace_context_source`], if any (gRPC clients of
/// the process send what it gives too).
pub fn trace_context_source() -> Option<fn() -> Option<String>> {
    TRACE_CONTEXT_SOURCE.get().copied()
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
async fn establish(endpoint: &Target, config: &ClientConfig) -> Result<(BoxRead, BoxWrite, Welcome), ClientError> {
    let fail = |reason: String| ClientError::Connect { endpoint: endpoint.to_string(), reason };
    let work = async {
        let (mut reader, mut writer): (BoxRead, BoxWrite) = match endpoint {
            Target::Plain(Endpoint::Tcp(addr)) => {
                let s = TcpStream::connect(addr.as_str()).await.map_err(|e| fail(e.to_string()))?;
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Target::Plain(Endpoint::Unix(path)) => {
                let s = UnixStream::connect(path).await.map_err(|e| fail(e.to_string()))?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Target::Tls(addr) => {
                let tls = crate::tls::client_config(&config.tls, false)?;
                let name = crate::tls::server_name(&config.tls, addr)?;
                let s = TcpStream::connect(addr.as_str()).await.map_err(|e| fail(e.to_string()))?;
                let _ = s.set_nodelay(true);
                let s = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, s)
                    .await
                    .map_err(|e| fail(format!("TLS handshake: {e}")))?;
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
            Target::Plain(Endpoint::Udp(_)) | Target::Quic(_) => return Err(fail("not a stream transport".into())),
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

/// Owns the stream connection: reads it, and when it drops, fails the
/// calls in flight and reconnects with back-off until the client is closed.
async fn drive(inner: Arc<Inner>, link: Arc<StreamLink>, reader: BoxRead) {
    let mut reader = Some(reader);
    let mut attempt: u32 = 0;
    loop {
        if let Some(r) = reader.take() {
            attempt = 0;
            run_connection(&inner, &link, r).await;
            // Whatever was in flight on that connection will never be answered.
            link.disconnect(&inner).await;
            if inner.closed.is_cancelled() {
                return;
            }
            info!(endpoint = %inner.endpoint, "connection lost; reconnecting");
        }
        if !back_off(&inner, &mut attempt).await {
            return;
        }
        match establish(&inner.endpoint, &inner.config).await {
            Ok((r, w, welcome)) => {
                info!(endpoint = %inner.endpoint, server_id = %welcome.server_id, "reconnected");
                *lock(&inner.welcome) = Some(welcome);
                link.connected(w);
                reader = Some(r);
            }
            Err(e) => debug!(endpoint = %inner.endpoint, error = %e, attempt, "reconnect failed"),
        }
    }
}

/// Reads answers and events until the connection ends (closed, goaway,
/// EOF, a read or write error); writes what callers left over.
async fn run_connection(inner: &Inner, link: &StreamLink, mut reader: BoxRead) {
    let mut decoder = FrameDecoder::new(inner.config.max_frame_bytes);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let closed = inner.closed.cancelled();
    let mut closed = std::pin::pin!(closed);
    let mut close_registered = false;
    let tick = expiry_tick(inner.config.request_timeout);
    let expiry = tokio::time::sleep(tick);
    let mut expiry = std::pin::pin!(expiry);
    std::future::poll_fn(|cx| {
        // Polled once, `closed` keeps this task's waker registered; after
        // that the flag is cheaper to read than the future is to poll.
        if !close_registered {
            if closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            close_registered = true;
        } else if inner.closed.is_cancelled() {
            return Poll::Ready(());
        }
        while expiry.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            expire_pending(inner, now);
            expiry.as_mut().reset(now + tick);
        }
        link.task.register(cx.waker());
        if link.task_writes.load(Ordering::Acquire) && link.write_leftovers(cx).is_err() {
            return Poll::Ready(());
        }
        loop {
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        if frame.kind == FrameKind::Control && frame.route == CONTROL_GOAWAY {
                            // The server is draining: answers in flight are
                            // already written before the goaway.
                            return Poll::Ready(());
                        }
                        deliver(inner, frame);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "bad frame from server");
                        if !e.is_recoverable() {
                            return Poll::Ready(());
                        }
                    }
                }
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut reader), cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
            }
        }
    })
    .await;
}

fn deliver(inner: &Inner, frame: Frame) {
    match frame.kind {
        FrameKind::Response | FrameKind::Error | FrameKind::Control => {
            let id = frame.id;
            let mut pending = lock(&inner.pending);
            match pending.get_mut(&id) {
                Some(slot @ Slot::Waiting { .. }) => {
                    let waker = match std::mem::replace(slot, Slot::Done(frame)) {
                        Slot::Waiting { waker, .. } => waker,
                        Slot::Done(_) | Slot::TimedOut => None,
                    };
                    drop(pending);
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
                Some(Slot::Done(_)) => debug!(%id, "a second answer for a request"),
                Some(Slot::TimedOut) | None => debug!(%id, "answer for an unknown or expired request"),
            }
        }
        FrameKind::Event => {
            inner.events_received.fetch_add(1, Ordering::Relaxed);
            // Err: no subscriber now; the event is discarded.
            let _ = inner.events.send(frame);
        }
        FrameKind::Request => debug!(route = %frame.route, "ignoring request from server"),
    }
}

/// Events from the server; see [`Client::subscribe`].
pub struct Subscription {
    rx: broadcast::Receiver<Frame>,
    dropped: Arc<AtomicU64>,
    closed: CancellationToken,
}

impl Subscription {
    /// The next event, or `None` once the client is closed. Events lost
    /// because this subscriber fell behind are skipped and counted.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            let got = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.closed.cancelled() => return None,
            };
            match got {
                Ok(f) => return Some(f),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    debug!(dropped = n, "event subscriber fell behind; oldest events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

async fn read_datagrams(inner: Arc<Inner>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    // Requests past their deadline (see `Pending`).
    let mut expiry = tokio::time::interval(expiry_tick(inner.config.request_timeout));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let got = tokio::select! {
            _ = inner.closed.cancelled() => return,
            _ = expiry.tick() => {
                expire_pending(&inner, Instant::now());
                continue;
            }
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

/// The QUIC side of a client: the quinn endpoint and the current
/// connection (`None` while reconnecting).
struct QuicLink {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: String,
    server_name: String,
    current: tokio::sync::watch::Sender<Option<quinn::Connection>>,
}

impl QuicLink {
    fn new(addr: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect { endpoint: format!("quic://{addr}"), reason };
        let tls = crate::tls::client_config(&config.tls, true)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| fail(format!("QUIC needs TLS 1.3: {e}")))?;
        let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
        quic.transport_config(Arc::new(crate::quic::transport_config(256)));
        // Checked here so that a bad name fails the connect, not each retry.
        let name = crate::tls::server_name(&config.tls, addr)?;
        let bind = if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" };
        let bind = bind.parse().map_err(|_| fail("bad bind address".into()))?;
        let endpoint = quinn::Endpoint::client(bind).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            endpoint,
            config: quic,
            addr: addr.to_owned(),
            server_name: name.to_str().into_owned(),
            current: tokio::sync::watch::Sender::new(None),
        })
    }

    /// Connect and do the hello/welcome exchange on the first stream.
    async fn establish(&self, config: &ClientConfig) -> Result<(quinn::Connection, Welcome), ClientError> {
        let fail = |reason: String| ClientError::Connect { endpoint: format!("quic://{}", self.addr), reason };
        let work = async {
            let to = tokio::net::lookup_host(self.addr.as_str())
                .await
                .map_err(|e| fail(e.to_string()))?
                .next()
                .ok_or_else(|| fail("the name resolves to no address".into()))?;
            let conn = self
                .endpoint
                .connect_with(self.config.clone(), to, &self.server_name)
                .map_err(|e| fail(e.to_string()))?
                .await
                .map_err(|e| fail(format!("QUIC handshake: {e}")))?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(e.to_string()))?;
            crate::quic::write_frame(&mut send, &hello_frame(config)?).await.map_err(fail)?;
            let _ = send.finish();
            let mut decoder = FrameDecoder::new(config.max_frame_bytes);
            let mut buf = BytesMut::new();
            let answer = match crate::quic::read_frame(&mut recv, &mut decoder, &mut buf).await {
                Ok(Some(f)) => f,
                Ok(None) => return Err(fail("server finished the hello stream without an answer".into())),
                Err(crate::quic::StreamRead::Frame(e)) => return Err(ClientError::Frame(e)),
                Err(e) => return Err(fail(format!("hello stream: {e}"))),
            };
            let answer = if answer.kind == FrameKind::Error { Err(ClientError::Remote(answer.decode_body()?)) } else { Ok(answer) };
            Ok((conn, check_welcome(answer)?))
        };
        tokio::time::timeout(config.connect_timeout, work)
            .await
            .map_err(|_| fail(format!("no welcome within {:?}", config.connect_timeout)))?
    }

    async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        let mut rx = self.current.subscribe();
        let c = rx.wait_for(|c| c.is_some()).await.map_err(|_| ClientError::Closed)?;
        c.clone().ok_or(ClientError::ConnectionLost)
    }

    /// One request on its own stream: write, finish, read the answer.
    async fn request(&self, frame: &Frame, max_frame_bytes: usize) -> Result<Frame, ClientError> {
        let conn = self.connection().await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|_| ClientError::ConnectionLost)?;
        crate::quic::write_frame(&mut send, frame).await.map_err(|_| ClientError::ConnectionLost)?;
        let _ = send.finish();
        let mut decoder = FrameDecoder::new(max_frame_bytes);
        let mut buf = BytesMut::new();
        match crate::quic::read_frame(&mut recv, &mut decoder, &mut buf).await {
            Ok(Some(f)) => Ok(f),
            Ok(None) if frame.flags.is_one_way() => Ok(Frame::with_body(FrameKind::Response, frame.id, &frame.route, BodyFormat::MsgPack, &())?),
            Err(crate::quic::StreamRead::Frame(e)) => Err(ClientError::Frame(e)),
            Ok(None) | Err(_) => Err(ClientError::ConnectionLost),
        }
    }

    async fn send_one_way(&self, frame: &Frame) -> Result<(), ClientError> {
        let conn = self.connection().await?;
        let mut send = conn.open_uni().await.map_err(|_| ClientError::ConnectionLost)?;
        crate::quic::write_frame(&mut send, frame).await.map_err(|_| ClientError::ConnectionLost)?;
        let _ = send.finish();
        Ok(())
    }

    fn close(&self) {
        if let Some(c) = self.current.send_replace(None) {
            c.close(quinn::VarInt::from_u32(crate::quic::close_code::NO_ERROR), b"client closed");
        }
    }
}

/// Resolves when the server sends `goaway` on a unidirectional stream;
/// other server frames are ignored (a Weft server sends no events on QUIC).
async fn quic_goaway(conn: &quinn::Connection, max_frame_bytes: usize) {
    loop {
        let Ok(mut recv) = conn.accept_uni().await else {
            // Closed: `closed()` reports it.
            return std::future::pending().await;
        };
        let mut decoder = FrameDecoder::new(max_frame_bytes);
        let mut buf = BytesMut::new();
        while let Ok(Some(f)) = crate::quic::read_frame(&mut recv, &mut decoder, &mut buf).await {
            if f.kind == FrameKind::Control && f.route == CONTROL_GOAWAY {
                return;
            }
            debug!(kind = f.kind.as_str(), route = %f.route, "ignoring frame from server");
        }
    }
}

/// Keeps a QUIC connection up: on loss or `goaway`, new requests wait
/// while it reconnects with back-off (streams already open finish on the
/// old connection).
async fn drive_quic(inner: Arc<Inner>, link: Arc<QuicLink>) {
    let mut attempt: u32 = 0;
    loop {
        let current = link.current.borrow().clone();
        if let Some(conn) = current {
            attempt = 0;
            tokio::select! {
                _ = inner.closed.cancelled() => {
                    link.close();
                    return;
                }
                e = conn.closed() => debug!(endpoint = %inner.endpoint, error = %e, "QUIC connection closed"),
                _ = quic_goaway(&conn, inner.config.max_frame_bytes) => debug!(endpoint = %inner.endpoint, "goaway"),
            }
            link.current.send_replace(None);
            if inner.closed.is_cancelled() {
                return;
            }
            info!(endpoint = %inner.endpoint, "connection lost; reconnecting");
        }
        if !back_off(&inner, &mut attempt).await {
            return;
        }
        match link.establish(&inner.config).await {
            Ok((conn, welcome)) => {
                info!(endpoint = %inner.endpoint, server_id = %welcome.server_id, "reconnected");
                *lock(&inner.welcome) = Some(welcome);
                link.current.send_replace(Some(conn));
            }
            Err(e) => debug!(endpoint = %inner.endpoint, error = %e, attempt, "reconnect failed"),
        }
    }
}
