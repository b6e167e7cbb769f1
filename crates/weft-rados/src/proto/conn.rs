//! The client side of one msgr2 connection, sans-IO: feed it received
//! bytes, take the bytes it wants sent, and poll events. Random values and
//! the current time are passed in by the driver.
//!
//! Order: banner exchange -> HELLO -> AUTH_REQUEST [-> AUTH_REPLY_MORE ->
//! AUTH_REQUEST_MORE]* -> AUTH_DONE -> (mode switch) AUTH_SIGNATURE both ways
//! [-> COMPRESSION_REQUEST/COMPRESSION_DONE] -> CLIENT_IDENT/SERVER_IDENT
//! -> MESSAGE/KEEPALIVE2/ACK.
//!
//! Compression (msgr2 feature COMPRESSION, Ceph 17+) is offered only by a
//! connection given a `CompressionConfig` with `set_compression`: its banner
//! then advertises the feature and, when the peer's does too, it sends
//! COMPRESSION_REQUEST after AUTH_SIGNATURE, as Ceph's client does (with
//! `is_compress = false` in secure mode unless `secure` is set).
//!
//! A connection made with `Connection::resume` asks the peer to continue an
//! earlier session instead: SESSION_RECONNECT, answered by RECONNECT_OK
//! (resume, resend what the peer did not get), SESSION_RESET (start a new
//! session with CLIENT_IDENT), SESSION_RETRY / SESSION_RETRY_GLOBAL (send
//! again with a higher connect_seq / global_seq) or WAIT (close, back off),
//! handled like Ceph's ProtocolV2 client. Ceph servers keep client sessions
//! lossy, so a real monitor or OSD answers SESSION_RESET.

use super::cephx::{AuthDone, Authorizer, CephxClient, CephxError, CEPH_AUTH_CEPHX};
use super::compress::{Algorithm, CompressionConfig, CompressionStats, Negotiated};
use super::enc::{DecodeError, Put, Reader};
use super::frame::{self, decode_banner, encode_banner, Frame, FrameCodec, FrameError, Tag};
use super::msg::Message;
use super::types::{entity_type, AddrVec, EntityAddr, UTime};
use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::Arc;

pub const CON_MODE_CRC: u32 = 1;
pub const CON_MODE_SECURE: u32 = 2;

/// Feature bits a Pacific daemon advertises; we claim the same set so that
/// peers send the newest encodings, all of which we decode.
pub const FEATURES_PACIFIC: u64 = 0x3f01_cfbd_fffd_ffff;

/// SERVER_IDENT / CLIENT_IDENT flag: the session is lossy (no resend).
pub const MSG_CONNECT_LOSSY: u64 = 1;
/// SESSION_RETRY / SESSION_RETRY_GLOBAL answers we follow on one connection
/// before giving up: a peer that keeps asking is broken or hostile.
pub const MAX_SESSION_RETRIES: u32 = 16;
/// Sent messages kept for a resend after SESSION_RECONNECT_OK (non-lossy
/// sessions only). Beyond this the oldest are forgotten; callers that
/// resend on their own (the objecter) do not depend on them.
pub const MAX_UNACKED: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    #[error("malformed {0}")]
    Decode(#[from] DecodeError),
    #[error("authentication: {0}")]
    Auth(#[from] CephxError),
    #[error("peer rejected authentication method: result {result}, allowed methods {methods:?}, modes {modes:?}")]
    BadMethod { result: i32, methods: Vec<u32>, modes: Vec<u32> },
    #[error("peer's AUTH_SIGNATURE does not match what we sent")]
    BadSignature,
    #[error("peer requires features {0:#x} we lack")]
    MissingFeatures(u64),
    #[error("protocol violation: unexpected {tag:?} in state {state}")]
    Unexpected { tag: Tag, state: &'static str },
    #[error("peer chose connection mode {0} we did not offer")]
    BadMode(u32),
    /// WAIT: the peer is racing a connection of its own to us (or replacing
    /// one); a client closes and tries again after a back-off.
    #[error("peer asked us to wait (connection race); retry after a back-off")]
    Wait,
    /// SESSION_RETRY_GLOBAL in answer to CLIENT_IDENT: Ceph's client faults
    /// here too. The next attempt must use a global_seq above this one.
    #[error("peer says our global_seq is stale (its is {peer_global_seq}) in answer to CLIENT_IDENT")]
    StaleGlobalSeq { peer_global_seq: u64 },
    #[error("peer asked for more than {0} session retries")]
    TooManyRetries(u32),
    #[error("peer chose compression method {0}, which we did not offer")]
    BadCompression(u32),
}

/// How this connection authenticates.
pub enum AuthMethod {
    /// To a monitor: the full CephX handshake.
    Mon(Box<CephxClient>),
    /// To an OSD/MGR: an authorizer built from a service ticket.
    Service(Box<Authorizer>),
}

pub struct ConnConfig {
    pub peer_type: u32,
    pub peer_addr: EntityAddr,
    pub features: u64,
    /// Offered modes in preference order (CON_MODE_*).
    pub modes: Vec<u32>,
    pub global_id: u64,
    pub client_cookie: u64,
    pub nonce: u32,
    pub global_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Session established: peer features, chosen mode, our global id.
    Ready { features: u64, mode: u32, global_id: u64 },
    Message(Message),
    KeepaliveAck(UTime),
    /// The peer answered our SESSION_RECONNECT (before any Ready).
    Reconnect(ReconnectAnswer),
}

/// How the peer answered SESSION_RECONNECT, and what we did about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectAnswer {
    /// SESSION_RECONNECT_OK: the session goes on; the peer had our messages
    /// up to `msg_seq` and the `resent` later ones were sent again.
    Resumed { msg_seq: u64, resent: usize },
    /// SESSION_RESET: the peer has no such session (always, from Ceph
    /// servers: client sessions are lossy). We sent CLIENT_IDENT for a new
    /// one; with `full`, our unacked messages were dropped and the caller
    /// must resend what it still needs.
    Reset { full: bool },
    /// SESSION_RETRY: our connect_seq was stale; sent again with this one.
    Retry { connect_seq: u64 },
    /// SESSION_RETRY_GLOBAL: our global_seq was stale; sent again with this one.
    RetryGlobal { global_seq: u64 },
}

/// What identifies a msgr2 session across TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionIdentity {
    pub client_cookie: u64,
    /// From SERVER_IDENT; 0 when the server keeps the session lossy.
    pub server_cookie: u64,
    pub global_seq: u64,
    pub connect_seq: u64,
    /// Highest message seq received (what the peer need not resend).
    pub in_seq: u64,
    /// Highest message seq sent.
    pub out_seq: u64,
    pub peer_features: u64,
    /// The server flagged the session lossy (it keeps nothing for a resume).
    pub lossy: bool,
}

/// An earlier session to continue on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionResume {
    pub identity: SessionIdentity,
    /// Messages sent earlier that the peer had not acknowledged, each with
    /// the seq it was sent with (`Message::seq`), oldest first.
    pub unacked: Vec<Message>,
}

/// Called once when a connection that reached Ready is dropped, with what
/// a later `Connection::resume` needs.
pub type OnClose = Box<dyn FnOnce(SessionResume) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Banner,
    Hello,
    Auth,
    AuthSignature,
    Compression,
    Ident,
    Reconnecting,
    Ready,
    Closed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Banner => "banner",
            State::Hello => "hello",
            State::Auth => "auth",
            State::AuthSignature => "auth-signature",
            State::Compression => "compression",
            State::Ident => "ident",
            State::Reconnecting => "reconnecting",
            State::Ready => "ready",
            State::Closed => "closed",
        }
    }
}

pub struct Connection {
    cfg: ConnConfig,
    state: State,
    codec: FrameCodec,
    rx: BytesMut,
    tx: Vec<Bytes>,
    sign_rx: Vec<u8>,
    sign_tx: Vec<u8>,
    auth: AuthMethod,
    session_key: Option<[u8; 16]>,
    mode: u32,
    out_seq: u64,
    in_seq: u64,
    events: VecDeque<Event>,
    my_addr: EntityAddr,
    pub peer_features: u64,
    pub global_id: u64,
    pub monmap_epoch: u32,
    client_cookie: u64,
    server_cookie: u64,
    global_seq: u64,
    connect_seq: u64,
    lossy: bool,
    /// Send SESSION_RECONNECT after authentication instead of CLIENT_IDENT.
    reconnecting: bool,
    /// Sent, not yet acknowledged (kept only on non-lossy sessions).
    sent: VecDeque<Message>,
    retries: u32,
    established: bool,
    on_close: Option<OnClose>,
    /// What we offer (empty methods: no compression).
    comp_cfg: CompressionConfig,
    comp_stats: Arc<CompressionStats>,
    /// msgr2 features of the peer's banner.
    peer_msgr2: u64,
    /// Our entity type as HELLO states it (the peer picks policies by it:
    /// a Ceph OSD compresses only with OSD peers).
    my_type: u32,
}

impl Connection {
    pub fn new(cfg: ConnConfig, auth: AuthMethod) -> Self {
        let banner = encode_banner(frame::MSGR2_FEATURE_REVISION_1, frame::MSGR2_FEATURE_REVISION_1);
        let my_addr = EntityAddr::blank_any(cfg.nonce);
        let global_id = cfg.global_id;
        let my_type = match &auth {
            AuthMethod::Mon(c) => c.name.ty,
            AuthMethod::Service(_) => entity_type::CLIENT,
        };
        let mut c = Connection {
            cfg,
            state: State::Banner,
            codec: FrameCodec::new(),
            rx: BytesMut::with_capacity(64 * 1024),
            tx: Vec::new(),
            sign_rx: Vec::new(),
            sign_tx: Vec::new(),
            auth,
            session_key: None,
            mode: CON_MODE_CRC,
            out_seq: 0,
            in_seq: 0,
            events: VecDeque::new(),
            my_addr,
            peer_features: 0,
            global_id,
            monmap_epoch: 0,
            client_cookie: 0,
            server_cookie: 0,
            global_seq: 0,
            connect_seq: 0,
            lossy: true,
            reconnecting: false,
            sent: VecDeque::new(),
            retries: 0,
            established: false,
            on_close: None,
            comp_cfg: CompressionConfig::off(),
            comp_stats: Arc::new(CompressionStats::default()),
            peer_msgr2: 0,
            my_type,
        };
        c.client_cookie = c.cfg.client_cookie;
        c.global_seq = c.cfg.global_seq;
        c.sign_tx.extend_from_slice(&banner);
        c.tx.push(Bytes::from(banner));
        c
    }

    /// A new TCP connection that asks the peer to continue `prev` (sent
    /// after authentication, which every connection does afresh). Like
    /// Ceph's client: the connect_seq is the earlier one plus one, and the
    /// global_seq is the configured one or above the earlier one.
    pub fn resume(cfg: ConnConfig, auth: AuthMethod, prev: SessionResume) -> Self {
        let mut c = Connection::new(cfg, auth);
        c.apply_resume(prev);
        c
    }

    fn apply_resume(&mut self, prev: SessionResume) {
        let id = prev.identity;
        self.reconnecting = true;
        self.client_cookie = id.client_cookie;
        self.server_cookie = id.server_cookie;
        self.global_seq = self.cfg.global_seq.max(id.global_seq.saturating_add(1));
        self.connect_seq = id.connect_seq.saturating_add(1);
        self.in_seq = id.in_seq;
        self.out_seq = id.out_seq;
        self.peer_features = id.peer_features;
        self.lossy = id.lossy;
        let mut unacked = prev.unacked;
        unacked.sort_by_key(|m| m.seq);
        let skip = unacked.len().saturating_sub(MAX_UNACKED);
        self.sent = unacked.into_iter().skip(skip).collect();
    }

    /// For tests and fuzzing of the session phase: a connection whose
    /// authentication is done (crc mode), which has just sent CLIENT_IDENT,
    /// or SESSION_RECONNECT when `prev` is given.
    #[doc(hidden)]
    pub fn after_auth(cfg: ConnConfig, auth: AuthMethod, prev: Option<SessionResume>) -> Self {
        let mut c = Connection::new(cfg, auth);
        if let Some(p) = prev {
            c.apply_resume(p);
        }
        c.tx.clear();
        c.sign_tx.clear();
        c.start_session();
        c
    }

    /// Like `after_auth`, for a connection offering `comp` to a peer whose
    /// banner had `peer_msgr2`: it has just sent COMPRESSION_REQUEST (or
    /// CLIENT_IDENT when there is nothing to negotiate).
    #[doc(hidden)]
    pub fn after_auth_compression(
        cfg: ConnConfig,
        auth: AuthMethod,
        comp: CompressionConfig,
        stats: Arc<CompressionStats>,
        peer_msgr2: u64,
    ) -> Self {
        let mut c = Connection::new(cfg, auth);
        c.set_compression(comp, stats);
        c.peer_msgr2 = peer_msgr2;
        c.tx.clear();
        c.sign_tx.clear();
        c.after_signature();
        c
    }

    /// After the signatures: negotiate compression when both sides can,
    /// then the session.
    fn after_signature(&mut self) {
        if self.comp_cfg.enabled() && self.peer_msgr2 & frame::MSGR2_FEATURE_COMPRESSION != 0 {
            self.send_compression_request();
        } else {
            self.start_session();
        }
    }

    /// Offers on-wire compression (call before the banner is answered,
    /// i.e. right after `new`/`resume`): our banner then advertises the
    /// COMPRESSION feature. Counts go to `stats`.
    pub fn set_compression(&mut self, cfg: CompressionConfig, stats: Arc<CompressionStats>) {
        if cfg.enabled() && self.state == State::Banner {
            let features = frame::MSGR2_FEATURE_REVISION_1 | frame::MSGR2_FEATURE_COMPRESSION;
            let banner = encode_banner(features, frame::MSGR2_FEATURE_REVISION_1);
            // our banner is the first thing queued and signed
            if let Some(first) = self.tx.first_mut() {
                *first = Bytes::from(banner.clone());
            }
            self.sign_tx = banner;
        }
        self.comp_cfg = cfg;
        self.comp_stats = stats;
    }

    /// The entity type we announce in HELLO (default: the monitor auth's
    /// name type, else client). Must match the name we authenticate as.
    pub fn set_entity_type(&mut self, ty: u32) {
        self.my_type = ty;
    }

    /// The method negotiated for this connection, if any.
    pub fn compression(&self) -> Option<Algorithm> {
        self.codec.compression().map(|n| n.alg)
    }

    /// The session as it stands (what a later `resume` needs, minus the
    /// unacked messages).
    pub fn session(&self) -> SessionIdentity {
        SessionIdentity {
            client_cookie: self.client_cookie,
            server_cookie: self.server_cookie,
            global_seq: self.global_seq,
            connect_seq: self.connect_seq,
            in_seq: self.in_seq,
            out_seq: self.out_seq,
            peer_features: self.peer_features,
            lossy: self.lossy,
        }
    }

    /// Everything a later `resume` needs; drains the unacked messages.
    pub fn take_resume(&mut self) -> SessionResume {
        SessionResume { identity: self.session(), unacked: std::mem::take(&mut self.sent).into() }
    }

    /// Registers `f` to receive the session state when this connection is
    /// dropped after having been established (the driver owns the
    /// connection until then).
    pub fn on_close(&mut self, f: OnClose) {
        self.on_close = Some(f);
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }
    pub fn mode(&self) -> u32 {
        self.mode
    }
    /// The cephx client state (mon connections), e.g. to read tickets.
    pub fn cephx(&self) -> Option<&CephxClient> {
        match &self.auth {
            AuthMethod::Mon(c) => Some(c),
            AuthMethod::Service(_) => None,
        }
    }
    pub fn cephx_mut(&mut self) -> Option<&mut CephxClient> {
        match &mut self.auth {
            AuthMethod::Mon(c) => Some(c),
            AuthMethod::Service(_) => None,
        }
    }

    /// Bytes to write to the socket (drains the buffer).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tx).concat()
    }
    /// Output as buffers to write in order (large payloads are not copied).
    pub fn take_output_parts(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.tx)
    }
    pub fn has_output(&self) -> bool {
        !self.tx.is_empty()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn send_frame(&mut self, tag: Tag, segs: &[&[u8]]) {
        let wire = self.codec.encode(tag, segs);
        if matches!(self.state, State::Banner | State::Hello | State::Auth) {
            self.sign_tx.extend_from_slice(&wire);
        }
        self.tx.push(Bytes::from(wire));
    }

    /// Queues a message (valid once ready; earlier ones are the caller's bug
    /// and are dropped with `false`).
    pub fn send_message(&mut self, m: &Message) -> bool {
        if self.state != State::Ready {
            return false;
        }
        // wrapping: a u64 count of messages does not wrap in practice, and
        // no peer input can make it jump
        self.out_seq = self.out_seq.wrapping_add(1);
        let seq = self.out_seq;
        self.write_message(m, seq);
        if !self.lossy {
            // kept for a resend after SESSION_RECONNECT_OK (payloads are
            // shared, not copied)
            if self.sent.len() >= MAX_UNACKED {
                self.sent.pop_front();
            }
            self.sent.push_back(Message { seq, ..m.clone() });
        }
        true
    }

    fn write_message(&mut self, m: &Message, seq: u64) {
        let hdr = m.encode_header(seq, self.in_seq);
        let segs = [Bytes::copy_from_slice(&hdr), m.front.clone(), m.middle.clone(), m.data.clone()];
        let parts = self.codec.encode_parts(Tag::Message, &segs);
        self.tx.extend(parts);
    }

    /// The peer has everything up to `seq`: forget those.
    fn trim_sent(&mut self, seq: u64) {
        while self.sent.front().is_some_and(|m| m.seq <= seq) {
            self.sent.pop_front();
        }
    }

    /// Sends again, with their original seqs, the kept messages the peer
    /// did not get (it acknowledged up to `after`). Returns how many.
    fn resend_after(&mut self, after: u64) -> usize {
        self.trim_sent(after);
        let again: Vec<Message> = self.sent.iter().cloned().collect();
        for m in &again {
            self.write_message(m, m.seq);
        }
        // like Ceph, the peer's msg_seq only discards; our count goes on from
        // what we really sent (a peer claiming more cannot push it)
        self.out_seq = self.out_seq.max(again.last().map_or(0, |m| m.seq));
        again.len()
    }

    pub fn send_keepalive(&mut self, now: UTime) {
        if self.state == State::Ready {
            let mut p = Vec::with_capacity(8);
            now.encode(&mut p);
            self.send_frame(Tag::Keepalive2, &[&p]);
        }
    }

    /// Feeds received bytes; `rand` supplies random u64s (challenges).
    pub fn feed(&mut self, data: &[u8], rand: &mut dyn FnMut() -> u64) -> Result<(), ConnError> {
        self.rx.extend_from_slice(data);
        self.process(rand)
    }

    /// The receive buffer, for drivers that read from the socket straight
    /// into it (then call `process`); it already has room reserved for a
    /// frame whose preamble has arrived.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        if self.rx.capacity() - self.rx.len() < 16 * 1024 {
            self.rx.reserve(64 * 1024);
        }
        &mut self.rx
    }

    /// Processes whatever is in the receive buffer.
    pub fn process(&mut self, rand: &mut dyn FnMut() -> u64) -> Result<(), ConnError> {
        loop {
            if self.state == State::Closed {
                return Ok(());
            }
            if self.state == State::Banner {
                match decode_banner(&mut self.rx)? {
                    None => return Ok(()),
                    Some(((sup, req), raw)) => {
                        self.sign_rx.extend_from_slice(&raw);
                        self.peer_msgr2 = sup;
                        let ours = if self.comp_cfg.enabled() {
                            frame::MSGR2_FEATURE_REVISION_1 | frame::MSGR2_FEATURE_COMPRESSION
                        } else {
                            frame::MSGR2_FEATURE_REVISION_1
                        };
                        let missing = req & !ours;
                        if missing != 0 {
                            return Err(FrameError::MissingFeatures(missing).into());
                        }
                        if sup & frame::MSGR2_FEATURE_REVISION_1 == 0 {
                            return Err(FrameError::BadBanner("peer lacks msgr2.1 framing".into()).into());
                        }
                        self.state = State::Hello;
                        let mut p = Vec::new();
                        p.put_u8(self.my_type as u8);
                        self.cfg.peer_addr.encode(&mut p);
                        self.send_frame(Tag::Hello, &[&p]);
                        continue;
                    }
                }
            }
            let pre_auth = matches!(self.state, State::Hello | State::Auth);
            let Some((f, raw)) = self.codec.decode(&mut self.rx)? else { return Ok(()) };
            if pre_auth {
                self.sign_rx.extend_from_slice(&raw);
            }
            self.handle(f, rand)?;
        }
    }

    fn unexpected(&self, tag: Tag) -> ConnError {
        ConnError::Unexpected { tag, state: self.state.name() }
    }

    fn handle(&mut self, f: Frame, rand: &mut dyn FnMut() -> u64) -> Result<(), ConnError> {
        let mut r = Reader::new(f.payload());
        match (self.state, f.tag) {
            (State::Hello, Tag::Hello) => {
                let ty = r.u8("hello.entity_type")? as u32;
                let seen = EntityAddr::decode(&mut r)?;
                if ty != self.cfg.peer_type {
                    return Err(DecodeError::invalid("hello", format!("peer is entity type {ty}, wanted {}", self.cfg.peer_type)).into());
                }
                // learn our address as the peer sees it (port 0, our nonce)
                if let Some(mut a) = seen.addr {
                    a.set_port(0);
                    self.my_addr.addr = Some(a);
                }
                self.state = State::Auth;
                let payload = match &mut self.auth {
                    AuthMethod::Mon(c) => c.mon_initial_request(),
                    AuthMethod::Service(a) => a.bytes.clone(),
                };
                self.send_auth_request(&payload);
            }
            (State::Auth, Tag::AuthBadMethod) => {
                let _method = r.u32("bad_method.method")?;
                let result = r.i32("bad_method.result")?;
                let n = r.count(4, "bad_method.methods")?;
                let methods = (0..n).map(|_| r.u32("m")).collect::<Result<Vec<_>, _>>()?;
                let n = r.count(4, "bad_method.modes")?;
                let modes = (0..n).map(|_| r.u32("m")).collect::<Result<Vec<_>, _>>()?;
                return Err(ConnError::BadMethod { result, methods, modes });
            }
            (State::Auth, Tag::AuthReplyMore) => {
                let payload = r.blob("auth_reply_more.payload")?;
                let reply = match &mut self.auth {
                    AuthMethod::Mon(c) => c.handle_challenge(payload, rand())?,
                    AuthMethod::Service(a) => {
                        a.add_challenge(payload)?;
                        a.bytes.clone()
                    }
                };
                let mut p = Vec::new();
                p.put_blob(&reply);
                self.send_frame(Tag::AuthRequestMore, &[&p]);
            }
            (State::Auth, Tag::AuthDone) => {
                let global_id = r.u64("auth_done.global_id")?;
                let mode = r.u32("auth_done.con_mode")?;
                let payload = r.blob("auth_done.payload")?;
                if !self.cfg.modes.contains(&mode) {
                    return Err(ConnError::BadMode(mode));
                }
                let (session_key, secret) = match &mut self.auth {
                    AuthMethod::Mon(c) => {
                        let AuthDone { session_key, connection_secret } = c.handle_done(global_id, payload)?;
                        (session_key.secret, connection_secret)
                    }
                    AuthMethod::Service(a) => (a.session_key.secret, a.verify_reply(payload)?),
                };
                if self.cfg.peer_type == entity_type::MON {
                    self.global_id = global_id;
                }
                self.session_key = Some(session_key);
                self.mode = mode;
                // our signature covers everything received so far, in the old mode
                let sig = hmac(&session_key, &self.sign_rx);
                if mode == CON_MODE_SECURE {
                    let (rx, tx) = frame::secure_streams(&secret)
                        .ok_or_else(|| DecodeError::invalid("auth_done", "connection secret too short for AES-GCM"))?;
                    self.codec.set_secure(rx, tx);
                }
                self.state = State::AuthSignature;
                self.sign_rx.clear();
                self.send_frame(Tag::AuthSignature, &[&sig]);
            }
            (State::AuthSignature, Tag::AuthSignature) => {
                let got = r.take(32, "auth_signature")?;
                let key = self.session_key.unwrap_or([0; 16]);
                let want = hmac(&key, &self.sign_tx);
                if got != want {
                    return Err(ConnError::BadSignature);
                }
                self.sign_tx.clear();
                self.after_signature();
            }
            (State::Compression, Tag::CompressionDone) => {
                let is_compress = r.bool("compression_done.is_compress")?;
                let method = r.u32("compression_done.method")?;
                let offered = self.compression_offered();
                if is_compress && offered {
                    let alg = Algorithm::from_wire(method)
                        .filter(|a| self.comp_cfg.methods.contains(a))
                        .ok_or(ConnError::BadCompression(method))?;
                    self.comp_stats.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.codec.set_compression(Negotiated { alg, min_size: self.comp_cfg.min_size }, self.comp_stats.clone());
                }
                // the peer declined (Ceph OSDs compress only with OSD peers),
                // or said yes to a request that said no: no compression, as
                // Ceph's client does when the answers disagree
                self.start_session();
            }
            (State::Ident, Tag::ServerIdent) => {
                let _addrs = AddrVec::decode(&mut r)?;
                let _gid = r.i64("server_ident.gid")?;
                let _gseq = r.u64("server_ident.global_seq")?;
                let features = r.u64("server_ident.features")?;
                let required = r.u64("server_ident.required")?;
                let flags = r.u64("server_ident.flags")?;
                let cookie = r.u64("server_ident.cookie")?;
                let missing = required & !self.cfg.features;
                if missing != 0 {
                    return Err(ConnError::MissingFeatures(missing));
                }
                self.peer_features = features;
                self.server_cookie = cookie;
                self.lossy = flags & MSG_CONNECT_LOSSY != 0;
                if self.lossy {
                    self.sent.clear();
                }
                self.state = State::Ready;
                self.established = true;
                self.events.push_back(Event::Ready { features, mode: self.mode, global_id: self.global_id });
                // after a SESSION_RESET that kept our queue: the new session
                // gets the messages the old one may have lost
                self.resend_after(0);
            }
            (State::Ident, Tag::IdentMissingFeatures) => {
                return Err(ConnError::MissingFeatures(r.u64("missing_features")?));
            }
            (State::Ident | State::Reconnecting, Tag::Wait) => return Err(ConnError::Wait),
            (State::Ident, Tag::SessionRetryGlobal) => {
                return Err(ConnError::StaleGlobalSeq { peer_global_seq: r.u64("retry_global.global_seq")? });
            }
            (State::Reconnecting, Tag::SessionReconnectOk) => {
                let msg_seq = r.u64("reconnect_ok.msg_seq")?;
                let resent = self.resend_after(msg_seq);
                self.state = State::Ready;
                self.established = true;
                self.events.push_back(Event::Reconnect(ReconnectAnswer::Resumed { msg_seq, resent }));
                self.events.push_back(Event::Ready { features: self.peer_features, mode: self.mode, global_id: self.global_id });
            }
            (State::Reconnecting, Tag::SessionReset) => {
                let full = r.bool("session_reset.full")?;
                if full {
                    // the peer forgot us entirely: a new session from scratch,
                    // with a new cookie; what we had queued is dropped
                    self.client_cookie = rand() | 1;
                    self.out_seq = 0;
                    self.sent.clear();
                }
                self.server_cookie = 0;
                self.connect_seq = 0;
                self.in_seq = 0;
                self.events.push_back(Event::Reconnect(ReconnectAnswer::Reset { full }));
                self.send_client_ident();
            }
            (State::Reconnecting, Tag::SessionRetry) => {
                let cs = r.u64("session_retry.connect_seq")?;
                self.count_retry()?;
                self.connect_seq = cs.saturating_add(1);
                self.events.push_back(Event::Reconnect(ReconnectAnswer::Retry { connect_seq: self.connect_seq }));
                self.send_reconnect();
            }
            (State::Reconnecting, Tag::SessionRetryGlobal) => {
                let gs = r.u64("retry_global.global_seq")?;
                self.count_retry()?;
                self.global_seq = self.global_seq.max(gs).saturating_add(1);
                self.events.push_back(Event::Reconnect(ReconnectAnswer::RetryGlobal { global_seq: self.global_seq }));
                self.send_reconnect();
            }
            (State::Ready, Tag::Message) => {
                let (m, ack) = Message::from_segments(f.payload(), f.segment(1), f.segment(2), f.segment(3))?;
                self.trim_sent(ack);
                if m.seq <= self.in_seq {
                    return Ok(()); // duplicate after a replay: drop
                }
                self.in_seq = m.seq;
                self.events.push_back(Event::Message(m));
            }
            (State::Ready, Tag::Keepalive2) => {
                let t = UTime::decode(&mut r)?;
                let mut p = Vec::new();
                t.encode(&mut p);
                self.send_frame(Tag::Keepalive2Ack, &[&p]);
            }
            (State::Ready, Tag::Keepalive2Ack) => {
                self.events.push_back(Event::KeepaliveAck(UTime::decode(&mut r)?));
            }
            (State::Ready, Tag::Ack) => {
                let seq = r.u64("ack.seq")?;
                self.trim_sent(seq);
            }
            (_, tag) => return Err(self.unexpected(tag)),
        }
        Ok(())
    }

    /// After AUTH_SIGNATURE: identify as a new session, or ask to resume.
    fn start_session(&mut self) {
        if self.reconnecting {
            self.state = State::Reconnecting;
            self.send_reconnect();
        } else {
            self.send_client_ident();
        }
    }

    /// Whether we ask for compression on this connection (Ceph's client
    /// asks for none in secure mode unless `ms_compress_secure`).
    fn compression_offered(&self) -> bool {
        self.comp_cfg.enabled() && (self.mode != CON_MODE_SECURE || self.comp_cfg.secure)
    }

    /// COMPRESSION_REQUEST: `bool is_compress, vector<u32> methods`.
    fn send_compression_request(&mut self) {
        self.state = State::Compression;
        let mut p = Vec::new();
        p.put_u8(u8::from(self.compression_offered()));
        p.put_u32_le(self.comp_cfg.methods.len() as u32);
        for m in &self.comp_cfg.methods {
            p.put_u32_le(m.wire());
        }
        self.send_frame(Tag::CompressionRequest, &[&p]);
    }

    fn send_client_ident(&mut self) {
        self.state = State::Ident;
        let mut p = Vec::new();
        AddrVec(vec![self.my_addr.clone()]).encode(&mut p);
        self.cfg.peer_addr.encode(&mut p);
        p.put_i64_le(self.global_id as i64);
        p.put_u64_le(self.global_seq);
        p.put_u64_le(self.cfg.features);
        p.put_u64_le(0); // required features
        p.put_u64_le(0); // flags
        p.put_u64_le(self.client_cookie);
        self.send_frame(Tag::ClientIdent, &[&p]);
    }

    /// SESSION_RECONNECT: our addresses, both cookies, global_seq,
    /// connect_seq and the last message seq we received.
    fn send_reconnect(&mut self) {
        let mut p = Vec::new();
        AddrVec(vec![self.my_addr.clone()]).encode(&mut p);
        p.put_u64_le(self.client_cookie);
        p.put_u64_le(self.server_cookie);
        p.put_u64_le(self.global_seq);
        p.put_u64_le(self.connect_seq);
        p.put_u64_le(self.in_seq);
        self.send_frame(Tag::SessionReconnect, &[&p]);
    }

    fn count_retry(&mut self) -> Result<(), ConnError> {
        self.retries += 1;
        if self.retries > MAX_SESSION_RETRIES {
            return Err(ConnError::TooManyRetries(MAX_SESSION_RETRIES));
        }
        Ok(())
    }

    fn send_auth_request(&mut self, payload: &[u8]) {
        let mut p = Vec::new();
        p.put_u32_le(CEPH_AUTH_CEPHX);
        p.put_u32_le(self.cfg.modes.len() as u32);
        for m in &self.cfg.modes {
            p.put_u32_le(*m);
        }
        p.put_blob(payload);
        self.send_frame(Tag::AuthRequest, &[&p]);
    }

    /// Sends an ACK for everything received (keeps the peer's queue short).
    pub fn send_ack(&mut self) {
        if self.state == State::Ready && self.in_seq > 0 {
            let seq = self.in_seq;
            self.send_frame(Tag::Ack, &[&seq.to_le_bytes()]);
        }
    }

    pub fn close(&mut self) {
        self.state = State::Closed;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(f) = self.on_close.take() {
            if self.established {
                f(self.take_resume());
            }
        }
    }
}

fn hmac(key: &[u8; 16], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; 16 bytes cannot fail
    let mut out = [0u8; 32];
    if let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(key) {
        m.update(data);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}


#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::cephx::CryptoKey;
    use crate::proto::types::EntityName;

    fn cfg() -> ConnConfig {
        ConnConfig {
            peer_type: entity_type::MON,
            peer_addr: EntityAddr::msgr2("127.0.0.1:3300".parse().unwrap()),
            features: FEATURES_PACIFIC,
            modes: vec![CON_MODE_SECURE, CON_MODE_CRC],
            global_id: 0,
            client_cookie: 1,
            nonce: 2,
            global_seq: 1,
        }
    }

    #[test]
    fn starts_with_banner_and_rejects_msgr1() {
        let key = CryptoKey::from_base64("AQBUQJ9lAAAAABAAsrqjTv2ZSdXcMpmYQhaJzA==").unwrap();
        let mut c = Connection::new(cfg(), AuthMethod::Mon(Box::new(CephxClient::new(EntityName::client("admin"), key, 0x15))));
        let out = c.take_output();
        assert_eq!(&out[..8], b"ceph v2\n");
        let mut rng = || 4u64;
        assert!(c.feed(b"ceph v027:\x00\x00\x00\x00\x00\x00\x00", &mut rng).is_err());
    }

    #[test]
    fn hello_then_auth_request() {
        let key = CryptoKey::from_base64("AQBUQJ9lAAAAABAAsrqjTv2ZSdXcMpmYQhaJzA==").unwrap();
        let mut c = Connection::new(cfg(), AuthMethod::Mon(Box::new(CephxClient::new(EntityName::client("admin"), key, 0x15))));
        c.take_output();
        let mut rng = || 4u64;
        c.feed(&encode_banner(1, 0), &mut rng).unwrap();
        let hello_out = c.take_output();
        let mut dec = FrameCodec::new();
        let (f, _) = dec.decode(&mut BytesMut::from(&hello_out[..])).unwrap().unwrap();
        assert_eq!(f.tag, Tag::Hello);
        // server hello
        let mut p = vec![entity_type::MON as u8];
        EntityAddr::msgr2("127.0.0.1:40000".parse().unwrap()).encode(&mut p);
        let mut enc = FrameCodec::new();
        let wire = enc.encode(Tag::Hello, &[&p]);
        c.feed(&wire, &mut rng).unwrap();
        let out = c.take_output();
        let (f, _) = dec.decode(&mut BytesMut::from(&out[..])).unwrap().unwrap();
        assert_eq!(f.tag, Tag::AuthRequest);
        // an unexpected frame is a typed protocol error, not a panic
        let wire = enc.encode(Tag::ServerIdent, &[b"junk"]);
        assert!(matches!(c.feed(&wire, &mut rng), Err(ConnError::Unexpected { .. })));
    }

    // ---- session frames, scripted server side (crc mode, after auth) ----

    fn mon_auth() -> AuthMethod {
        let key = CryptoKey::from_base64("AQBUQJ9lAAAAABAAsrqjTv2ZSdXcMpmYQhaJzA==").unwrap();
        AuthMethod::Mon(Box::new(CephxClient::new(EntityName::client("admin"), key, 0x15)))
    }

    fn msg(tid: u64, seq: u64) -> Message {
        let mut m = Message::new(crate::proto::msg::msg_type::OSD_OP, 8, 3, vec![tid as u8; 3]);
        m.tid = tid;
        m.seq = seq;
        m
    }

    /// An earlier non-lossy session: we sent 5 messages, 3..=5 unacked.
    fn earlier() -> SessionResume {
        SessionResume {
            identity: SessionIdentity {
                client_cookie: 0xc1,
                server_cookie: 0x5e,
                global_seq: 40,
                connect_seq: 2,
                in_seq: 17,
                out_seq: 5,
                peer_features: FEATURES_PACIFIC,
                lossy: false,
            },
            unacked: vec![msg(5, 5), msg(3, 3), msg(4, 4)],
        }
    }

    /// Frames the client wrote, decoded.
    fn sent_frames(c: &mut Connection) -> Vec<Frame> {
        let out = c.take_output();
        let mut dec = FrameCodec::new();
        let mut buf = BytesMut::from(&out[..]);
        let mut v = Vec::new();
        while let Some((f, _)) = dec.decode(&mut buf).unwrap() {
            v.push(f);
        }
        assert!(buf.is_empty());
        v
    }

    fn server(c: &mut Connection, tag: Tag, payload: &[u8]) -> Result<(), ConnError> {
        let wire = FrameCodec::new().encode(tag, &[payload]);
        let mut rng = || 0x76u64;
        c.feed(&wire, &mut rng)
    }

    fn events(c: &mut Connection) -> Vec<Event> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    /// SESSION_RECONNECT as ReconnectFrame decodes it.
    fn parse_reconnect(f: &Frame) -> (u64, u64, u64, u64, u64) {
        assert_eq!(f.tag, Tag::SessionReconnect);
        let mut r = Reader::new(f.payload());
        let addrs = AddrVec::decode(&mut r).unwrap();
        assert_eq!(addrs.0.len(), 1);
        let v = (r.u64("cc").unwrap(), r.u64("sc").unwrap(), r.u64("gs").unwrap(), r.u64("cs").unwrap(), r.u64("ms").unwrap());
        assert!(r.is_empty());
        v
    }

    /// CLIENT_IDENT: (global_seq, features, flags, cookie).
    fn parse_client_ident(f: &Frame) -> (u64, u64, u64, u64) {
        assert_eq!(f.tag, Tag::ClientIdent);
        let mut r = Reader::new(f.payload());
        AddrVec::decode(&mut r).unwrap();
        EntityAddr::decode(&mut r).unwrap(); // target
        r.i64("gid").unwrap();
        let gs = r.u64("gs").unwrap();
        let feat = r.u64("features").unwrap();
        assert_eq!(r.u64("required").unwrap(), 0);
        let flags = r.u64("flags").unwrap();
        let cookie = r.u64("cookie").unwrap();
        assert!(r.is_empty());
        (gs, feat, flags, cookie)
    }

    fn server_ident(flags: u64, cookie: u64) -> Vec<u8> {
        let mut p = Vec::new();
        AddrVec(vec![EntityAddr::msgr2("127.0.0.1:6800".parse().unwrap())]).encode(&mut p);
        p.put_i64_le(0); // gid
        p.put_u64_le(9); // global_seq
        p.put_u64_le(FEATURES_PACIFIC);
        p.put_u64_le(0); // required
        p.put_u64_le(flags);
        p.put_u64_le(cookie);
        p
    }

    /// MESSAGE frames as (seq, tid, ack_seq).
    fn messages(frames: &[Frame]) -> Vec<(u64, u64, u64)> {
        frames
            .iter()
            .filter(|f| f.tag == Tag::Message)
            .map(|f| {
                let (m, ack) = Message::from_segments(f.payload(), f.segment(1), f.segment(2), f.segment(3)).unwrap();
                (m.seq, m.tid, ack)
            })
            .collect()
    }

    #[test]
    fn session_reconnect_frame_fields() {
        let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
        let f = sent_frames(&mut c);
        assert_eq!(f.len(), 1);
        // cookies kept, global_seq above the earlier one, connect_seq + 1,
        // msg_seq = what we had received
        assert_eq!(parse_reconnect(&f[0]), (0xc1, 0x5e, 41, 3, 17));
        // a configured global_seq above the earlier one wins
        let mut hi = cfg();
        hi.global_seq = 1000;
        let mut c = Connection::after_auth(hi, mon_auth(), Some(earlier()));
        assert_eq!(parse_reconnect(&sent_frames(&mut c)[0]).2, 1000);
    }

    #[test]
    fn reconnect_ok_resends_what_the_peer_lacks() {
        let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
        sent_frames(&mut c);
        server(&mut c, Tag::SessionReconnectOk, &3u64.to_le_bytes()).unwrap();
        assert_eq!(
            events(&mut c),
            vec![
                Event::Reconnect(ReconnectAnswer::Resumed { msg_seq: 3, resent: 2 }),
                Event::Ready { features: FEATURES_PACIFIC, mode: CON_MODE_CRC, global_id: 0 },
            ]
        );
        assert!(c.is_ready());
        // 4 and 5 again, with their seqs, acking what we had received
        assert_eq!(messages(&sent_frames(&mut c)), vec![(4, 4, 17), (5, 5, 17)]);
        // the session goes on after them
        assert!(c.send_message(&msg(6, 0)));
        assert_eq!(messages(&sent_frames(&mut c)), vec![(6, 6, 17)]);
        let id = c.session();
        assert_eq!((id.connect_seq, id.out_seq, id.server_cookie, id.lossy), (3, 6, 0x5e, false));
        // the peer acks up to 5: only 6 is left for a later resume
        server(&mut c, Tag::Ack, &5u64.to_le_bytes()).unwrap();
        let r = c.take_resume();
        assert_eq!(r.unacked.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![6]);
    }

    #[test]
    fn reconnect_ok_with_an_absurd_msg_seq() {
        // found by the rados_frame fuzzer: a peer acking far more than we
        // sent must neither move our out_seq nor make the next send overflow
        let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
        sent_frames(&mut c);
        server(&mut c, Tag::SessionReconnectOk, &u64::MAX.to_le_bytes()).unwrap();
        assert_eq!(events(&mut c)[0], Event::Reconnect(ReconnectAnswer::Resumed { msg_seq: u64::MAX, resent: 0 }));
        assert!(c.send_message(&msg(6, 0)));
        assert_eq!(messages(&sent_frames(&mut c)), vec![(6, 6, 17)]);
    }

    #[test]
    fn full_reset_starts_a_new_session() {
        let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
        sent_frames(&mut c);
        server(&mut c, Tag::SessionReset, &[1]).unwrap();
        assert_eq!(events(&mut c), vec![Event::Reconnect(ReconnectAnswer::Reset { full: true })]);
        let f = sent_frames(&mut c);
        assert_eq!(f.len(), 1);
        // a new cookie (from the randomness passed in), the same global_seq
        assert_eq!(parse_client_ident(&f[0]), (41, FEATURES_PACIFIC, 0, 0x77));
        // what a Ceph server says for a client: lossy, no cookie
        server(&mut c, Tag::ServerIdent, &server_ident(MSG_CONNECT_LOSSY, 0)).unwrap();
        assert_eq!(events(&mut c), vec![Event::Ready { features: FEATURES_PACIFIC, mode: CON_MODE_CRC, global_id: 0 }]);
        // the old queue is gone; the new session counts from 1
        assert!(sent_frames(&mut c).is_empty());
        assert!(c.send_message(&msg(9, 0)));
        assert_eq!(messages(&sent_frames(&mut c)), vec![(1, 9, 0)]);
        let id = c.session();
        assert_eq!((id.client_cookie, id.server_cookie, id.connect_seq, id.in_seq, id.lossy), (0x77, 0, 0, 0, true));
        // lossy: nothing is kept for a resume
        assert!(c.take_resume().unacked.is_empty());
    }

    #[test]
    fn partial_reset_keeps_the_queue_for_the_new_session() {
        let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
        sent_frames(&mut c);
        server(&mut c, Tag::SessionReset, &[0]).unwrap();
        assert_eq!(events(&mut c), vec![Event::Reconnect(ReconnectAnswer::Reset { full: false })]);
        assert_eq!(parse_client_ident(&sent_frames(&mut c)[0]).3, 0xc1);
        server(&mut c, Tag::ServerIdent, &server_ident(0, 0x99)).unwrap();
        assert_eq!(events(&mut c).len(), 1);
        // the new session (in_seq 0 on both sides) gets all unacked messages
        assert_eq!(messages(&sent_frames(&mut c)), vec![(3, 3, 0), (4, 4, 0), (5, 5, 0)]);
        assert_eq!(c.session().server_cookie, 0x99);
    }

    #[test]
    fn retry_and_retry_global_send_again_with_higher_seqs() {
        let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
        sent_frames(&mut c);
        server(&mut c, Tag::SessionRetry, &7u64.to_le_bytes()).unwrap();
        assert_eq!(events(&mut c), vec![Event::Reconnect(ReconnectAnswer::Retry { connect_seq: 8 })]);
        assert_eq!(parse_reconnect(&sent_frames(&mut c)[0]), (0xc1, 0x5e, 41, 8, 17));
        server(&mut c, Tag::SessionRetryGlobal, &1000u64.to_le_bytes()).unwrap();
        assert_eq!(events(&mut c), vec![Event::Reconnect(ReconnectAnswer::RetryGlobal { global_seq: 1001 })]);
        assert_eq!(parse_reconnect(&sent_frames(&mut c)[0]), (0xc1, 0x5e, 1001, 8, 17));
        // a server global_seq below ours still moves ours up by one
        server(&mut c, Tag::SessionRetryGlobal, &3u64.to_le_bytes()).unwrap();
        assert_eq!(parse_reconnect(&sent_frames(&mut c)[0]).2, 1002);
        // a peer that never stops asking is cut off
        let mut err = None;
        for _ in 0..MAX_SESSION_RETRIES {
            if let Err(e) = server(&mut c, Tag::SessionRetry, &1u64.to_le_bytes()) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(ConnError::TooManyRetries(_))), "{err:?}");
    }

    #[test]
    fn wait_and_misplaced_session_frames() {
        // WAIT while reconnecting or identifying: close and back off
        let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
        assert!(matches!(server(&mut c, Tag::Wait, &[]), Err(ConnError::Wait)));
        let mut c = Connection::after_auth(cfg(), mon_auth(), None);
        assert!(matches!(server(&mut c, Tag::Wait, &[]), Err(ConnError::Wait)));
        // RETRY_GLOBAL in answer to CLIENT_IDENT: an error that says which
        // global_seq to beat next time
        let mut c = Connection::after_auth(cfg(), mon_auth(), None);
        assert_eq!(parse_client_ident(&sent_frames(&mut c)[0]).0, 1);
        assert!(matches!(
            server(&mut c, Tag::SessionRetryGlobal, &55u64.to_le_bytes()),
            Err(ConnError::StaleGlobalSeq { peer_global_seq: 55 })
        ));
        // answers to a reconnect we did not send are protocol violations
        for tag in [Tag::SessionReset, Tag::SessionRetry, Tag::SessionReconnectOk] {
            let mut c = Connection::after_auth(cfg(), mon_auth(), None);
            assert!(matches!(server(&mut c, tag, &[0; 8]), Err(ConnError::Unexpected { .. })), "{tag:?}");
        }
        // and SERVER_IDENT to a reconnect, or WAIT once ready
        let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
        assert!(matches!(server(&mut c, Tag::ServerIdent, &server_ident(0, 1)), Err(ConnError::Unexpected { .. })));
        let mut c = Connection::after_auth(cfg(), mon_auth(), None);
        server(&mut c, Tag::ServerIdent, &server_ident(MSG_CONNECT_LOSSY, 0)).unwrap();
        assert!(matches!(server(&mut c, Tag::Wait, &[]), Err(ConnError::Unexpected { .. })));
    }

    #[test]
    fn session_frames_short_or_odd_payloads_fail_cleanly() {
        for tag in [Tag::SessionReconnectOk, Tag::SessionRetry, Tag::SessionRetryGlobal, Tag::SessionReset] {
            let mut c = Connection::after_auth(cfg(), mon_auth(), Some(earlier()));
            assert!(matches!(server(&mut c, tag, &[]), Err(ConnError::Decode(_))), "{tag:?}");
        }
        let mut c = Connection::after_auth(cfg(), mon_auth(), None);
        let full = server_ident(0, 1);
        for cut in 0..full.len() {
            let mut c2 = Connection::after_auth(cfg(), mon_auth(), None);
            assert!(server(&mut c2, Tag::ServerIdent, &full[..cut]).is_err(), "cut {cut}");
        }
        assert!(server(&mut c, Tag::ServerIdent, &full).is_ok());
        // every tag with every short payload, in both session states: no panic
        for tag in 1..=20u8 {
            let Some(tag) = Tag::from_u8(tag) else { continue };
            for len in 0..20usize {
                let payload: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
                for prev in [None, Some(earlier())] {
                    let mut c = Connection::after_auth(cfg(), mon_auth(), prev);
                    let _ = server(&mut c, tag, &payload);
                    let _ = events(&mut c);
                }
            }
        }
    }

    // ---- compression negotiation (scripted server, crc mode) ----

    fn osd_cfg() -> ConnConfig {
        ConnConfig { peer_type: entity_type::OSD, ..cfg() }
    }

    fn comp_conn(c: CompressionConfig, peer: u64) -> (Connection, Arc<CompressionStats>) {
        let st = Arc::new(CompressionStats::default());
        (Connection::after_auth_compression(osd_cfg(), mon_auth(), c, st.clone(), peer), st)
    }

    const PEER_COMP: u64 = frame::MSGR2_FEATURE_REVISION_1 | frame::MSGR2_FEATURE_COMPRESSION;

    fn compression_done(is: bool, method: u32) -> Vec<u8> {
        let mut p = vec![u8::from(is)];
        p.put_u32_le(method);
        p
    }

    #[test]
    fn banner_advertises_compression_only_when_configured() {
        let mut c = Connection::new(cfg(), mon_auth());
        assert_eq!(&c.take_output()[10..26], &encode_banner(1, 1)[10..]);
        let mut c = Connection::new(cfg(), mon_auth());
        c.set_compression(CompressionConfig::with(Algorithm::Lz4), Arc::default());
        let out = c.take_output();
        assert_eq!(out, encode_banner(PEER_COMP, 1));
        // and it is what gets signed
        assert_eq!(c.sign_tx, out);
    }

    #[test]
    fn compression_request_then_done_then_compressed_session() {
        let mut want = CompressionConfig::with(Algorithm::Snappy);
        want.methods.push(Algorithm::Lz4);
        let (mut c, st) = comp_conn(want, PEER_COMP);
        let f = sent_frames(&mut c);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].tag, Tag::CompressionRequest);
        // bool is_compress, vector<u32> methods (snappy = 1, lz4 = 4)
        assert_eq!(f[0].payload(), &[1, 2, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0]);
        server(&mut c, Tag::CompressionDone, &compression_done(true, 4)).unwrap();
        assert_eq!(c.compression(), Some(Algorithm::Lz4));
        assert_eq!(st.snapshot().sessions, 1);
        let f = sent_frames(&mut c);
        assert_eq!(f[0].tag, Tag::ClientIdent);
        server(&mut c, Tag::ServerIdent, &server_ident(MSG_CONNECT_LOSSY, 0)).unwrap();
        assert!(c.is_ready());
        assert_eq!(events(&mut c).len(), 1);
        // a message above the threshold goes out compressed, one below as is
        let mut m = msg(1, 0);
        m.data = Bytes::from(vec![7u8; 8192]);
        assert!(c.send_message(&m));
        assert!(c.send_message(&msg(2, 0)));
        let out = c.take_output();
        let mut peer = FrameCodec::new();
        peer.set_compression(Negotiated { alg: Algorithm::Lz4, min_size: 1024 }, Arc::default());
        let mut buf = BytesMut::from(&out[..]);
        let (f1, raw1) = peer.decode(&mut buf).unwrap().unwrap();
        let (f2, raw2) = peer.decode(&mut buf).unwrap().unwrap();
        assert_eq!(raw1[26], frame::FRAME_EARLY_DATA_COMPRESSED);
        assert!(raw1.len() < 1024, "{}", raw1.len());
        assert_eq!(raw2[26], 0);
        assert_eq!(&f1.segment(3)[..], &[7u8; 8192][..]);
        assert_eq!(messages(&[f1, f2]), vec![(1, 1, 0), (2, 2, 0)]);
        assert_eq!(st.snapshot().tx_frames, 1);
        // and a compressed reply from the peer decodes
        let mut r = msg(9, 1);
        r.data = Bytes::from(vec![3u8; 4000]);
        let hdr = r.encode_header(1, 2);
        let wire = peer.encode(Tag::Message, &[&hdr, &r.front, &r.middle, &r.data]);
        let mut rng = || 1u64;
        c.feed(&wire, &mut rng).unwrap();
        let Some(Event::Message(got)) = c.poll_event() else { panic!("no message") };
        assert_eq!(&got.data[..], &[3u8; 4000][..]);
        assert_eq!(st.snapshot().rx_frames, 1);
    }

    #[test]
    fn compression_declined_or_impossible() {
        // what a Ceph OSD answers a client (it compresses only for OSD peers)
        let (mut c, st) = comp_conn(CompressionConfig::with(Algorithm::Snappy), PEER_COMP);
        sent_frames(&mut c);
        server(&mut c, Tag::CompressionDone, &compression_done(false, 0)).unwrap();
        assert_eq!(c.compression(), None);
        assert_eq!(st.snapshot().sessions, 0);
        assert_eq!(sent_frames(&mut c)[0].tag, Tag::ClientIdent);
        // a peer without the feature (Pacific) gets no request at all
        let (mut c, _) = comp_conn(CompressionConfig::with(Algorithm::Snappy), frame::MSGR2_FEATURE_REVISION_1);
        assert_eq!(sent_frames(&mut c)[0].tag, Tag::ClientIdent);
        // a method we did not offer is a protocol error
        let (mut c, _) = comp_conn(CompressionConfig::with(Algorithm::Snappy), PEER_COMP);
        sent_frames(&mut c);
        assert!(matches!(server(&mut c, Tag::CompressionDone, &compression_done(true, 4)), Err(ConnError::BadCompression(4))));
        let (mut c, _) = comp_conn(CompressionConfig::with(Algorithm::Snappy), PEER_COMP);
        sent_frames(&mut c);
        assert!(matches!(server(&mut c, Tag::CompressionDone, &compression_done(true, 2)), Err(ConnError::BadCompression(2))));
        // short payloads fail cleanly; DONE out of place is unexpected
        let (mut c, _) = comp_conn(CompressionConfig::with(Algorithm::Snappy), PEER_COMP);
        sent_frames(&mut c);
        assert!(matches!(server(&mut c, Tag::CompressionDone, &[1, 1]), Err(ConnError::Decode(_))));
        let mut c = Connection::after_auth(cfg(), mon_auth(), None);
        assert!(matches!(server(&mut c, Tag::CompressionDone, &compression_done(true, 1)), Err(ConnError::Unexpected { .. })));
    }

    #[test]
    fn compressed_frames_refused_without_negotiation() {
        let mut c = Connection::after_auth(cfg(), mon_auth(), None);
        server(&mut c, Tag::ServerIdent, &server_ident(MSG_CONNECT_LOSSY, 0)).unwrap();
        let mut peer = FrameCodec::new();
        peer.set_compression(Negotiated { alg: Algorithm::Snappy, min_size: 0 }, Arc::default());
        let wire = peer.encode(Tag::Keepalive2, &[&[0u8; 8]]);
        let mut rng = || 1u64;
        assert!(matches!(c.feed(&wire, &mut rng), Err(ConnError::Frame(FrameError::UnexpectedCompression))));
    }

    #[test]
    fn on_close_hands_over_the_session() {
        use std::sync::{Arc, Mutex};
        let slot: Arc<Mutex<Option<SessionResume>>> = Arc::default();
        let mut c = Connection::after_auth(cfg(), mon_auth(), None);
        let s2 = slot.clone();
        c.on_close(Box::new(move |s| *s2.lock().unwrap() = Some(s)));
        server(&mut c, Tag::ServerIdent, &server_ident(0, 0x42)).unwrap();
        assert!(c.send_message(&msg(1, 0)) && c.send_message(&msg(2, 0)));
        drop(c);
        let got = slot.lock().unwrap().take().unwrap();
        assert_eq!((got.identity.server_cookie, got.identity.out_seq, got.identity.client_cookie), (0x42, 2, 1));
        assert_eq!(got.unacked.iter().map(|m| (m.seq, m.tid)).collect::<Vec<_>>(), vec![(1, 1), (2, 2)]);
        // a connection that never got a session hands over nothing
        let mut c = Connection::after_auth(cfg(), mon_auth(), None);
        let s3 = slot.clone();
        c.on_close(Box::new(move |s| *s3.lock().unwrap() = Some(s)));
        drop(c);
        assert!(slot.lock().unwrap().is_none());
    }
}
