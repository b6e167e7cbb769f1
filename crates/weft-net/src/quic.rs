//! The native protocol over QUIC (quinn, rustls with ring). The mapping,
//! also in docs/protocol.md:
//!
//! - ALPN `weft/1`; TLS 1.3 as QUIC requires; client certificates as on
//!   the TLS listener (mTLS identity becomes `PeerInfo::client_id`).
//! - The client's first bidirectional stream carries the `hello`; the
//!   server answers `welcome` (or an error) on it and finishes it. No other
//!   stream is read before that.
//! - Every request then has its own bidirectional stream: the client writes
//!   one request frame and finishes; the server writes the answer frame and
//!   finishes. One slow request never holds up another.
//! - One-way frames (events, one-way requests) go on unidirectional
//!   streams, any number of frames per stream, in either direction (the
//!   server sends `goaway` this way before it closes).
//! - Limits as on TCP: each frame is checked against the maximum frame size
//!   before anything is buffered for it; requests over the per-connection
//!   in-flight limit are answered `busy` on their stream.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use weft_wire::{
    encode, BodyFormat, ErrorBody, ErrorCode, Frame, FrameDecoder, FrameError, FrameKind, Hello, MessageId,
    CONTROL_GOAWAY, CONTROL_HELLO,
};

use crate::endpoint::Transport;
use crate::error::{NetError, TlsError};
use crate::budget::{ConnBudget, Reservation};
use crate::server::{PeerInfo, Shared};
use crate::splitter::{Splitter, Step};
use crate::tls::TlsServerConfig;

/// Application close codes (CONNECTION_CLOSE frame type 0x1d).
pub mod close_code {
    /// Normal close; the reason is `goaway` when the server is shutting down.
    pub const NO_ERROR: u32 = 0;
    /// The first stream was not a valid `hello` (or spoke another version).
    pub const HANDSHAKE: u32 = 1;
    /// Not the server's fault: the client went quiet during the handshake.
    pub const HANDSHAKE_TIMEOUT: u32 = 2;
    /// A reloaded allow-list (`quic.allow`) no longer admits the client.
    pub const ALLOW_LIST: u32 = 3;
}

/// STOP_SENDING code on a request stream whose frame was refused (bad
/// frame, too large): the error frame on the send side says why.
pub const STREAM_REFUSED: u32 = 0x10;

/// Idle connections are closed after this (clients send keep-alives).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read granularity; frames are assembled by the bounded decoder.
const CHUNK: usize = 64 * 1024;

pub(crate) fn transport_config(max_in_flight: usize) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Some room above the in-flight limit, so that a client over it gets
    // `busy` answers instead of silently waiting for stream credit; not
    // more, because every open stream may buffer up to one frame (as a TCP
    // connection holds at most its in-flight frames plus one).
    let streams = u32::try_from(max_in_flight.saturating_add(16)).unwrap_or(u32::MAX);
    t.max_concurrent_bidi_streams(VarInt::from_u32(streams));
    t.max_concurrent_uni_streams(VarInt::from_u32(64));
    t.max_idle_timeout(VarInt::from_u64(IDLE_TIMEOUT.as_millis() as u64).ok().map(Into::into));
    t.keep_alive_interval(Some(IDLE_TIMEOUT / 3));
    t
}

pub(crate) fn bind(shared: Arc<Shared>, addr: &str, tls: &TlsServerConfig) -> Result<SocketAddr, NetError> {
    let bind_err = |source| NetError::Bind { addr: addr.to_owned(), source };
    // Reloadable like the TLS listener: a swap hands the new certificate to
    // the endpoint, which uses it for new connections only.
    let reloadable = crate::tls_reload::ReloadableTls::new(tls.clone(), crate::tls_reload::Alpn::Quic)?;
    let max_in_flight = shared.config.max_in_flight_per_conn;
    let quinn_config = move |rustls: Arc<rustls::ServerConfig>| -> Result<quinn::ServerConfig, TlsError> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls)
            .map_err(|e| TlsError::Config(format!("QUIC needs TLS 1.3: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport_config(max_in_flight)));
        Ok(server_config)
    };
    let server_config = quinn_config(reloadable.current())?;
    let sock_addr = addr
        .to_socket_addrs()
        .map_err(bind_err)?
        .next()
        .ok_or_else(|| bind_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address")))?;
    let endpoint = quinn::Endpoint::server(server_config, sock_addr).map_err(bind_err)?;
    // The reload hook lives as long as the server; it holds the endpoint
    // only until the endpoint shuts down, so a stopped server frees its UDP
    // port (a restarted one rebinds the same address).
    let for_reload = Arc::new(std::sync::Mutex::new(Some(endpoint.clone())));
    let hook = for_reload.clone();
    reloadable.set_on_swap(move |next| match quinn_config(next.clone()) {
        Ok(c) => {
            if let Some(ep) = hook.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                ep.set_server_config(Some(c));
            }
        }
        Err(e) => warn!(error = %e, "QUIC certificate not reloaded"),
    });
    shared.tls.lock().unwrap_or_else(|p| p.into_inner()).push(reloadable);
    let local = endpoint.local_addr().map_err(bind_err)?;
    let allow = shared.config.allow_quic.clone();
    let accept_shared = shared.clone();
    shared.tasks.spawn(async move {
        let shared = accept_shared;
        loop {
            let incoming = tokio::select! {
                _ = shared.stop.cancelled() => break,
                i = endpoint.accept() => i,
            };
            let Some(incoming) = incoming else { break };
            let remote = incoming.remote_address();
            if !allow.allows_ip(remote.ip()) {
                // Refused from the first Initial packet, before any TLS:
                // the client gets CONNECTION_REFUSED. (An application close
                // with a reason cannot be sent before the handshake: RFC
                // 9000 §10.2.3 strips it to a bare APPLICATION_ERROR.)
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                crate::server::count_refused(Transport::Quic, "allow_list");
                crate::gate::audit_allow_list_sampled(&shared.config.auth, "quic", &remote.to_string());
                warn!(transport = "quic", peer = %remote, "connection refused by the allow-list");
                incoming.refuse();
                continue;
            }
            // Past max_connections: refused like the allow-list does
            // (CONNECTION_REFUSED), before any TLS work; counted.
            let Some(slot) = shared.budgets.open_connection() else {
                warn!(transport = "quic", peer = %remote, "connection refused: too many open");
                incoming.refuse();
                continue;
            };
            let admission = allow.admission_ip(remote.ip());
            shared.tasks.spawn(serve_connection(shared.clone(), incoming, slot, admission));
        }
        // Connections finish their drain in their own tasks; the endpoint
        // goes idle once they have closed.
        for_reload.lock().unwrap_or_else(|p| p.into_inner()).take();
        let idle = endpoint.clone();
        drop(endpoint);
        shared.tasks.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), idle.wait_idle()).await;
        });
    });
    info!(addr = %local, client_auth = ?tls.client_auth, "listening (quic)");
    Ok(local)
}

/// Why reading one frame from a stream stopped.
#[derive(Debug)]
pub(crate) enum StreamRead {
    /// The frame was refused by the decoder (the stream cannot continue
    /// on QUIC: one frame per request stream).
    Frame(FrameError),
    /// The peer finished the stream in the middle of a frame.
    Truncated,
    /// The stream was reset or the connection is gone.
    Lost(String),
}

impl std::fmt::Display for StreamRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamRead::Frame(e) => write!(f, "{e}"),
            StreamRead::Truncated => f.write_str("stream finished in the middle of a frame"),
            StreamRead::Lost(e) => write!(f, "stream lost: {e}"),
        }
    }
}

/// Reads the next whole frame, `Ok(None)` at a clean end of stream. Bytes
/// are buffered only after the decoder has accepted the frame's header.
pub(crate) async fn read_frame(recv: &mut RecvStream, decoder: &mut FrameDecoder, buf: &mut BytesMut) -> Result<Option<Frame>, StreamRead> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(f)) => return Ok(Some(f)),
            Ok(None) => {}
            Err(e) => return Err(StreamRead::Frame(e)),
        }
        // Never more than the missing part of one frame (or a header).
        match recv.read_chunk(CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) if buf.is_empty() => return Ok(None),
            Ok(None) => return Err(StreamRead::Truncated),
            Err(e) => return Err(StreamRead::Lost(e.to_string())),
        }
    }
}

/// [`read_frame`] on the server: the frame's declared size is reserved
/// from the connection's and the node's buffer budgets before its body is
/// read (waiting, which stops reading this stream: QUIC flow control is
/// the back-pressure); the reservation comes back with the frame, to be
/// held until it has been handled.
async fn read_frame_reserved(
    recv: &mut RecvStream,
    splitter: &mut Splitter,
    buf: &mut BytesMut,
    budget: &ConnBudget,
) -> Result<Option<(Frame, Option<Reservation>)>, StreamRead> {
    let mut held = None;
    loop {
        match splitter.step(buf) {
            Step::NeedMore => {}
            Step::Refused(e) => return Err(StreamRead::Frame(e)),
            Step::Partial(total) => {
                if held.is_none() {
                    held = Some(budget.reserve(total).await.ok_or_else(|| StreamRead::Lost("server stopping".into()))?);
                }
            }
            Step::Whole(total) => {
                if let (Some(total), None) = (total, &held) {
                    held = Some(budget.reserve(total).await.ok_or_else(|| StreamRead::Lost("server stopping".into()))?);
                }
                return match splitter.take(buf) {
                    Ok(Some(f)) => Ok(Some((f, held))),
                    Ok(None) => Err(StreamRead::Truncated),
                    Err(e) => Err(StreamRead::Frame(e)),
                };
            }
        }
        match recv.read_chunk(CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) if buf.is_empty() => return Ok(None),
            Ok(None) => return Err(StreamRead::Truncated),
            Err(e) => return Err(StreamRead::Lost(e.to_string())),
        }
    }
}

pub(crate) async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), String> {
    let mut out = BytesMut::new();
    encode(frame, &mut out).map_err(|e| e.to_string())?;
    send.write_all(&out).await.map_err(|e| e.to_string())
}

async fn serve_connection(shared: Arc<Shared>, incoming: quinn::Incoming, _slot: crate::budget::ConnSlot, admission: crate::allow::Admission) {
    // One deadline (limits.handshake_timeout_ms) for the QUIC handshake
    // and the hello together.
    let deadline = tokio::time::Instant::now() + shared.handshake_timeout();
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            debug!(peer = %remote, error = %e, "QUIC accept failed");
            return;
        }
    };
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            shared.stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            warn!(peer = %remote, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            shared.stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            warn!(peer = %remote, "QUIC handshake timed out");
            return;
        }
    };
    let identity = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .and_then(|certs| crate::tls::peer_identity(Some(&certs)));
    if let Some(id) = &identity {
        info!(peer = %remote, identity = %id, "QUIC client authenticated by certificate");
    }
    let mut peer = PeerInfo { client_id: identity.clone(), admission: Some(admission), ..PeerInfo::new(Transport::Quic, remote.to_string()) };
    shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
    shared.stats.connections_open.fetch_add(1, Ordering::Relaxed);
    let metered = crate::server::ConnMetrics::open(Transport::Quic);

    if hello(&shared, &conn, &mut peer, identity.is_some(), deadline).await {
        serve_streams(&shared, &conn, Arc::new(peer)).await;
    }
    shared.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    // QUIC bytes as the connection counted them (UDP payloads, all streams).
    let io = conn.stats();
    metered.received.inc_by(io.udp_rx.bytes);
    metered.sent.inc_by(io.udp_tx.bytes);
    metered.close();
    debug!(peer = %remote, "QUIC connection closed");
}

/// The first bidirectional stream: hello in, welcome out. False when the
/// connection was closed instead.
async fn hello(shared: &Shared, conn: &quinn::Connection, peer: &mut PeerInfo, authenticated: bool, deadline: tokio::time::Instant) -> bool {
    let first = tokio::select! {
        s = tokio::time::timeout_at(deadline, conn.accept_bi()) => s,
        _ = shared.stop.cancelled() => {
            conn.close(VarInt::from_u32(close_code::NO_ERROR), b"goaway");
            return false;
        }
    };
    let (mut send, mut recv) = match first {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(peer = %peer.addr, error = %e, "QUIC connection ended before the hello");
            return false;
        }
        Err(_) => {
            shared.stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            conn.close(VarInt::from_u32(close_code::HANDSHAKE_TIMEOUT), b"no hello in time");
            return false;
        }
    };
    let mut decoder = FrameDecoder::new(shared.config.max_frame_bytes.min(crate::server::MAX_PRE_HELLO_FRAME_BYTES));
    let mut buf = BytesMut::new();
    let answer = match tokio::time::timeout_at(deadline, read_frame(&mut recv, &mut decoder, &mut buf)).await {
        Ok(Ok(Some(f))) if f.kind == FrameKind::Control && f.route == CONTROL_HELLO => {
            shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
            let mut answer = crate::server::welcome(shared, &f);
            if answer.kind == FrameKind::Control
                && let Ok(h) = f.decode_body::<Hello>()
            {
                if authenticated {
                    debug!(peer = %peer.addr, identity = ?peer.client_id, hello_client_id = %h.client_id, "hello");
                } else {
                    peer.client_id = Some(h.client_id);
                }
            }
            if answer.kind == FrameKind::Control
                && let Some(authz) = &shared.config.auth
            {
                match crate::gate::hello_identity(authz, &f, peer, authenticated) {
                    Ok(who) => peer.identity = Some(who),
                    Err(e) => answer = f.error_to(&e),
                }
            }
            answer
        }
        Ok(Ok(Some(f))) => f.error_to(&ErrorBody::new(
            ErrorCode::HandshakeRequired,
            "the first bidirectional stream must carry a control 'hello' frame",
        )),
        Ok(Err(StreamRead::Frame(e))) => {
            shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            weft_wire::error_frame_for(e.message_id().unwrap_or_else(MessageId::nil), BodyFormat::MsgPack, &e.to_error_body())
        }
        Ok(Ok(None) | Err(_)) | Err(_) => {
            conn.close(VarInt::from_u32(close_code::HANDSHAKE), b"no hello on the first stream");
            return false;
        }
    };
    let ok = answer.kind == FrameKind::Control;
    let written = write_frame(&mut send, &answer).await.is_ok();
    shared.stats.frames_out.fetch_add(1, Ordering::Relaxed);
    let _ = send.finish();
    if !(ok && written) {
        // Let the error frame reach the client before the close does.
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        conn.close(VarInt::from_u32(close_code::HANDSHAKE), b"handshake failed");
        return false;
    }
    true
}

async fn serve_streams(shared: &Arc<Shared>, conn: &quinn::Connection, peer: Arc<PeerInfo>) {
    let mut admission = peer.admission.clone();
    let in_flight = Arc::new(Semaphore::new(shared.config.max_in_flight_per_conn.max(1)));
    let budget = Arc::new(shared.budgets.connection());
    let requests = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            bi = conn.accept_bi() => match bi {
                Ok((mut send, recv)) => {
                    if let Some(a) = admission.as_mut()
                        && !a.still_allowed()
                    {
                        // Told on this request's stream, then closed.
                        let e = crate::server::closed_by_allow_list(shared, &peer);
                        let _ = write_frame(&mut send, &weft_wire::error_frame_for(MessageId::nil(), BodyFormat::MsgPack, &e)).await;
                        let _ = send.finish();
                        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                        conn.close(VarInt::from_u32(close_code::ALLOW_LIST), b"no longer on the allow-list");
                        break;
                    }
                    let permit = in_flight.clone().try_acquire_owned().ok();
                    requests.spawn(serve_request(shared.clone(), peer.clone(), send, recv, permit, budget.clone()));
                }
                Err(e) => {
                    debug!(peer = %peer.addr, error = %e, "QUIC connection ended");
                    break;
                }
            },
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    if let Some(a) = admission.as_mut()
                        && !a.still_allowed()
                    {
                        crate::server::closed_by_allow_list(shared, &peer);
                        conn.close(VarInt::from_u32(close_code::ALLOW_LIST), b"no longer on the allow-list");
                        break;
                    }
                    requests.spawn(serve_one_way(shared.clone(), peer.clone(), recv, in_flight.clone(), budget.clone()));
                }
                Err(e) => {
                    debug!(peer = %peer.addr, error = %e, "QUIC connection ended");
                    break;
                }
            },
        }
    }
    requests.close();
    requests.wait().await;
    if shared.stop.is_cancelled() && conn.close_reason().is_none() {
        // Say goodbye on a stream of its own, wait until it is delivered,
        // then close: the close would discard data not yet acknowledged.
        if let Ok(mut uni) = conn.open_uni().await
            && let Ok(goaway) = Frame::with_body(FrameKind::Control, MessageId::nil(), CONTROL_GOAWAY, BodyFormat::MsgPack, &())
        {
            let _ = write_frame(&mut uni, &goaway).await;
            let _ = uni.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), uni.stopped()).await;
        }
        conn.close(VarInt::from_u32(close_code::NO_ERROR), b"goaway");
    }
}

/// One request stream: read one frame, answer it, finish.
async fn serve_request(
    shared: Arc<Shared>,
    peer: Arc<PeerInfo>,
    mut send: SendStream,
    mut recv: RecvStream,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    budget: Arc<ConnBudget>,
) {
    let mut splitter = Splitter::new(shared.budgets.max_frame(shared.config.max_frame_bytes));
    let mut buf = BytesMut::new();
    let (frame, _held) = match read_frame_reserved(&mut recv, &mut splitter, &mut buf, &budget).await {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(StreamRead::Frame(e)) => {
            shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            shared.stats.quic_stream_errors.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %peer.addr, error = %e, "bad frame on a QUIC stream");
            let _ = recv.stop(VarInt::from_u32(STREAM_REFUSED));
            let id = e.message_id().unwrap_or_else(MessageId::nil);
            answer(&shared, &mut send, &weft_wire::error_frame_for(id, BodyFormat::MsgPack, &e.to_error_body())).await;
            return;
        }
        Err(e) => {
            shared.stats.quic_stream_errors.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %peer.addr, error = %e, "QUIC request stream ended early");
            let _ = send.reset(VarInt::from_u32(STREAM_REFUSED));
            return;
        }
    };
    shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
    // The request is whole; the client must not send more on this stream.
    let _ = recv.stop(VarInt::from_u32(0));
    match frame.kind {
        FrameKind::Request | FrameKind::Event => {
            if let Some(e) = crate::gate::check(&shared.config.auth, &peer, &frame) {
                if frame.kind == FrameKind::Request && !frame.flags.is_one_way() {
                    answer(&shared, &mut send, &frame.error_to(&e)).await;
                } else {
                    let _ = send.finish();
                }
                return;
            }
            let Some(permit) = permit else {
                let e = ErrorBody::new(ErrorCode::Busy, "too many requests in flight on this QUIC connection");
                answer(&shared, &mut send, &frame.error_to(&e)).await;
                return;
            };
            let wants_reply = frame.kind == FrameKind::Request && !frame.flags.is_one_way();
            let reply = shared.handler.handle(frame, peer).await;
            drop(permit);
            match (wants_reply, reply) {
                (true, Some(a)) => answer(&shared, &mut send, &a).await,
                _ => {
                    let _ = send.finish();
                }
            }
        }
        FrameKind::Control if frame.route == CONTROL_HELLO => {
            // A repeated hello is answered like the first.
            answer(&shared, &mut send, &crate::server::welcome(&shared, &frame)).await;
        }
        _ => {
            let e = ErrorBody::new(ErrorCode::BadFrame, format!("a {} frame cannot open a request stream", frame.kind.as_str()));
            answer(&shared, &mut send, &frame.error_to(&e)).await;
        }
    }
}

async fn answer(shared: &Shared, send: &mut SendStream, frame: &Frame) {
    if write_frame(send, frame).await.is_ok() {
        shared.stats.frames_out.fetch_add(1, Ordering::Relaxed);
    }
    let _ = send.finish();
}

/// A unidirectional stream of one-way frames (events, one-way requests).
/// Each waits for an in-flight slot: QUIC flow control is the back-pressure.
async fn serve_one_way(shared: Arc<Shared>, peer: Arc<PeerInfo>, mut recv: RecvStream, in_flight: Arc<Semaphore>, budget: Arc<ConnBudget>) {
    let mut splitter = Splitter::new(shared.budgets.max_frame(shared.config.max_frame_bytes));
    let mut buf = BytesMut::new();
    loop {
        match read_frame_reserved(&mut recv, &mut splitter, &mut buf, &budget).await {
            Ok(Some((frame, held))) => {
                shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                if !matches!(frame.kind, FrameKind::Request | FrameKind::Event) {
                    debug!(kind = frame.kind.as_str(), "ignoring frame on a one-way stream");
                    continue;
                }
                if crate::gate::check(&shared.config.auth, &peer, &frame).is_some() {
                    continue;
                }
                let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
                let handler = shared.handler.clone();
                let peer = peer.clone();
                let _ = handler.handle(frame, peer).await;
                drop(permit);
                drop(held);
            }
            Ok(None) => return,
            Err(StreamRead::Frame(e)) if e.is_recoverable() => {
                // Nobody to answer on a one-way stream; the decoder has
                // skipped the frame.
                shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %peer.addr, error = %e, "bad frame on a QUIC one-way stream");
            }
            Err(e) => {
                shared.stats.quic_stream_errors.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %peer.addr, error = %e, "QUIC one-way stream ended");
                let _ = recv.stop(VarInt::from_u32(STREAM_REFUSED));
                return;
            }
        }
    }
}
