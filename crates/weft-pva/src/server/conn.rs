//! One server-side TCP connection: validation, channels and operations.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::Shared;
use super::access::Access;
use super::pv::{Entry, SharedPv, Subscription};
use crate::error::{Error, Result};
use crate::proto::flow::SendFlow;
use crate::proto::header::{FLAG_BIG_ENDIAN, Frame, FrameDecoder, Header, cmd, control, ctrl};
use crate::proto::msg::{
    Message, OpRequest, OpResponse, ReqBody, RespBody, SearchResponse, Status, decode_data, decode_message, encode_data,
    encode_message, sub,
};
use crate::proto::request::PvRequest;
use crate::proto::value::{compress_bits, intersect};
use crate::proto::{BitSet, ByteOrder, FieldDesc, Limits, Reader, ScalarArray, SendCache, TypeCache, Value, Writer};

/// Operations one client may hold open (a limit against runaway clients).
const OPS_MAX: usize = 65536;
const CHANNELS_MAX: usize = 65536;
/// Largest array a client may make us allocate with ARRAY put / set-length.
const ARRAY_GROW_MAX: usize = 1 << 24;

enum OpKind {
    Get,
    Put,
    PutGet,
    Monitor { sub: Arc<Subscription>, task: Option<JoinHandle<()>>, window: Option<Arc<Semaphore>> },
    Rpc,
    Process,
    Array,
}

struct Op {
    sid: u32,
    kind: OpKind,
    pv: Option<SharedPv>,
    mask: BitSet,
    /// Put with `record[process=true]`: run the PV's process action after the put.
    process: bool,
    /// A put / put-get / process still executing (its handler may wait on
    /// storage); CANCEL_REQUEST aborts it and keeps the operation.
    in_flight: Option<JoinHandle<()>>,
    /// Monitors: counts it in `monitors_open` while it lives.
    _held: Option<Held>,
}

impl Drop for Op {
    // Runs even when the connection task is aborted: a monitor task holds a
    // sender to the writer, so it must go for the socket to close.
    fn drop(&mut self) {
        if let OpKind::Monitor { task: Some(t), .. } = &self.kind {
            t.abort();
        }
        if let Some(t) = &self.in_flight {
            t.abort();
        }
    }
}

/// Holds one of the server's open-now gauges (channels, monitors) up while
/// it lives: dropped with its channel or operation, also when the connection
/// goes.
struct Held(Arc<Shared>, fn(&super::Stats) -> &std::sync::atomic::AtomicU64);

impl Held {
    fn new(shared: &Arc<Shared>, which: fn(&super::Stats) -> &std::sync::atomic::AtomicU64) -> Self {
        which(&shared.stats).fetch_add(1, Ordering::Relaxed);
        Held(shared.clone(), which)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.1)(&self.0.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

struct Chan {
    /// Client's id for the channel (kept for server-initiated DESTROY_CHANNEL).
    #[allow(dead_code)]
    cid: u32,
    name: String,
    entry: Entry,
    /// From the access rules when the channel was created.
    access: Access,
    /// Counts it in `channels_open` while it lives.
    _held: Held,
}

/// One queued outgoing message and the queue budget it holds.
struct Out {
    bytes: Vec<u8>,
    permits: u32,
}

/// The connection's send queue, bounded in bytes (`pva.send_queue_bytes`):
/// a sender waits for room, so a client that reads slowly or not at all
/// holds at most that much of our memory (plus what the kernel buffers).
#[derive(Clone)]
struct Tx {
    q: mpsc::UnboundedSender<Out>,
    budget: Arc<Semaphore>,
    cap: u32,
    queued: Arc<std::sync::atomic::AtomicU64>,
    shared: Arc<Shared>,
}

impl Tx {
    /// Queue `b`; waits while the queue is full. Err: the writer is gone.
    async fn send(&self, b: Vec<u8>) -> std::result::Result<(), ()> {
        // A message larger than the whole budget takes all of it (alone in the queue).
        let permits = u32::try_from(b.len()).unwrap_or(u32::MAX).clamp(1, self.cap);
        let permit = match self.budget.try_acquire_many(permits) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.shared.stats.send_queue_waits.fetch_add(1, Ordering::Relaxed);
                self.budget.acquire_many(permits).await.map_err(|_| ())?
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(()),
        };
        permit.forget();
        let now = self.queued.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
        self.shared.stats.send_queue_peak_bytes.fetch_max(now, Ordering::Relaxed);
        self.q.send(Out { bytes: b, permits }).map_err(|_| ())
    }
}

/// Flow-control state shared by the reader (acks arrive there) and the writer.
struct Flow {
    state: std::sync::Mutex<SendFlow>,
    acked: tokio::sync::Notify,
}

struct Conn {
    shared: Arc<Shared>,
    tx: Tx,
    flow: Arc<Flow>,
    rx_cache: TypeCache,
    limits: Limits,
    channels: HashMap<u32, Chan>,
    next_sid: u32,
    ops: HashMap<u32, Op>,
    peer: SocketAddr,
    /// Byte order of the message being handled.
    rx_order: ByteOrder,
    /// User named by the client's `ca` credentials (None: anonymous).
    user: Option<String>,
}

pub(crate) async fn serve(sock: TcpStream, peer: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let (mut rd, wr) = sock.into_split();
    let (q, rx) = mpsc::unbounded_channel::<Out>();
    let cap = u32::try_from(shared.send_queue_bytes).unwrap_or(u32::MAX);
    let budget = Arc::new(Semaphore::new(cap as usize));
    let queued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tx = Tx { q, budget: budget.clone(), cap, queued: queued.clone(), shared: shared.clone() };
    let window = shared.send_queue_bytes as u64;
    let flow = Arc::new(Flow { state: std::sync::Mutex::new(SendFlow::new(window / 4, window)), acked: tokio::sync::Notify::new() });
    let writer = tokio::spawn(write_loop(wr, rx, budget, queued, flow.clone(), shared.clone(), peer));
    let mut c = Conn {
        shared: shared.clone(),
        tx,
        flow,
        rx_cache: TypeCache::new(),
        limits: Limits::default(),
        channels: HashMap::new(),
        next_sid: 1,
        ops: HashMap::new(),
        peer,
        rx_order: ByteOrder::Little,
        user: None,
    };
    let res = async {
        // Byte order (little endian, per-message flag honoured) then our validation request.
        let _ = c.tx.send(control(ctrl::SET_BYTE_ORDER, 0, ByteOrder::Little, true)).await;
        c.send(&Message::ValidationRequest {
            buffer_size: 0x10000,
            registry_size: 0x7fff,
            methods: vec!["anonymous".into(), "ca".into()],
        })
        .await?;
        let mut framer = FrameDecoder::with_limits(c.limits);
        let mut buf = BytesMut::with_capacity(0x10000);
        loop {
            while let Some(f) = framer.decode(&mut buf)? {
                c.handle(f).await?;
            }
            // Clients echo every ~15 s when idle; silence beyond the timeout
            // means a dead peer or a half-open socket.
            tokio::select! {
                n = rd.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok::<(), Error>(());
                    }
                }
                _ = tokio::time::sleep(shared.idle_timeout) => {
                    // Some clients echo only when they receive nothing; a client that
                    // is being fed monitor updates may legitimately stay silent.
                    let feeding = c.ops.values().any(|o| matches!(o.kind, OpKind::Monitor { task: Some(_), .. }));
                    if !feeding {
                        return Err(Error::Timeout(format!("no traffic from {peer} for {:?}", shared.idle_timeout)));
                    }
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    .await;
    if let Err(e) = res {
        shared.stats.connections_closed_on_error.fetch_add(1, Ordering::Relaxed);
        warn!(%peer, error = %e, "closing client connection");
    } else {
        debug!(%peer, "client disconnected");
    }
    for (_, op) in c.ops.drain() {
        drop_op(op);
    }
    for (_, ch) in c.channels.drain() {
        shared.provider.channel_event(&ch.name, -1);
    }
    drop(c);
    let _ = writer.await;
}

/// Write queued messages in order and mark byte totals for flow control. A
/// write stuck longer than the idle timeout ends the connection: the client
/// has stopped reading. The writer itself never waits for acks: the
/// connection task that reads them may be waiting for queue room, so that
/// would deadlock; the monitors (the only unsolicited traffic) wait instead.
async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    budget: Arc<Semaphore>,
    queued: Arc<std::sync::atomic::AtomicU64>,
    flow: Arc<Flow>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) {
    let stall = shared.idle_timeout;
    while let Some(o) = rx.recv().await {
        match tokio::time::timeout(stall, wr.write_all(&o.bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                warn!(%peer, "client read nothing for {stall:?}; closing");
                shared.stats.send_stalled_closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        queued.fetch_sub(o.bytes.len() as u64, Ordering::Relaxed);
        budget.add_permits(o.permits as usize);
        let mark = flow.state.lock().ok().and_then(|mut f| f.on_sent(o.bytes.len()));
        if let Some(m) = mark {
            shared.stats.marks_sent.fetch_add(1, Ordering::Relaxed);
            if wr.write_all(&control(ctrl::MARK_TOTAL_BYTES_SENT, m, ByteOrder::Little, true)).await.is_err() {
                break;
            }
        }
    }
    // Senders waiting for room get an error instead of waiting forever.
    budget.close();
    rx.close();
    let _ = wr.shutdown().await;
}

fn drop_op(op: Op) {
    if let (OpKind::Monitor { sub, .. }, Some(pv)) = (&op.kind, &op.pv) {
        pv.unsubscribe(sub);
    }
}

fn encode(m: &Message) -> Result<Vec<u8>> {
    encode_message(m, ByteOrder::Little, true, &mut SendCache::disabled())
}

fn data_bytes(desc: &FieldDesc, value: &Value, bits: &BitSet) -> Result<bytes::Bytes> {
    let mut w = Writer::new(ByteOrder::Little);
    encode_data(&mut w, desc, value, &compress_bits(desc, bits), &mut SendCache::disabled())?;
    Ok(w.buf.into())
}

/// Encode an operation response whose typed data is written straight into
/// the message buffer (no intermediate copy of big values).
fn typed_response(
    command: u8,
    ioid: u32,
    subcmd: u8,
    status: Option<&Status>,
    data: impl FnOnce(&mut Writer) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut w = Writer::new(ByteOrder::Little);
    w.bytes(&[0u8; crate::proto::header::HEADER_LEN]);
    w.u32(ioid);
    w.u8(subcmd);
    if let Some(s) = status {
        s.encode(&mut w);
    }
    data(&mut w)?;
    let size = u32::try_from(w.buf.len() - crate::proto::header::HEADER_LEN)
        .map_err(|_| Error::Usage("response larger than 4 GiB".into()))?;
    let mut hdr = Vec::with_capacity(crate::proto::header::HEADER_LEN);
    Header::new(command, crate::proto::header::flags_for(ByteOrder::Little, true), size).write(&mut hdr);
    if let Some(h) = w.buf.get_mut(..crate::proto::header::HEADER_LEN) {
        h.copy_from_slice(&hdr);
    }
    Ok(w.buf)
}

fn resp(command: u8, ioid: u32, subcmd: u8, status: Status, body: RespBody) -> Message {
    Message::Response(OpResponse { command, ioid, subcmd, status: Some(status), body })
}

impl Conn {
    async fn send(&self, m: &Message) -> Result<()> {
        let b = encode(m)?;
        self.tx.send(b).await.map_err(|_| Error::Closed("writer gone".into()))
    }

    async fn handle(&mut self, f: Frame) -> Result<()> {
        match f {
            Frame::Control(h) => {
                match h.command {
                    ctrl::ECHO_REQUEST => {
                        let _ = self.tx.send(control(ctrl::ECHO_RESPONSE, h.size, ByteOrder::Little, true)).await;
                    }
                    ctrl::ACK_TOTAL_BYTES_RECEIVED => {
                        self.shared.stats.acks_received.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = self.flow.state.lock() {
                            f.on_ack(h.size);
                        }
                        self.flow.acked.notify_waiters();
                    }
                    // Reaching a client's mark means everything before it arrived.
                    ctrl::MARK_TOTAL_BYTES_SENT => {
                        let _ = self.tx.send(control(ctrl::ACK_TOTAL_BYTES_RECEIVED, h.size, ByteOrder::Little, true)).await;
                    }
                    _ => {}
                }
                Ok(())
            }
            Frame::App(h, p) => {
                if h.from_server() {
                    return Err(Error::Unexpected("client sent a message flagged as from a server".into()));
                }
                let m = decode_message(&h, &p, &mut self.rx_cache, self.limits)?;
                self.rx_order = h.order();
                self.handle_msg(&h, m).await
            }
        }
    }

    async fn handle_msg(&mut self, h: &Header, m: Message) -> Result<()> {
        match m {
            Message::ValidationResponse { method, auth, .. } => {
                if method == "ca" {
                    self.user = auth
                        .flatten()
                        .and_then(|(d, v)| crate::proto::nt::path_ref(&d, &v, "user").and_then(|(x, _)| x.as_str().map(String::from)));
                }
                debug!(peer = %self.peer, %method, user = ?self.user, "client validated");
                self.send(&Message::Validated(Status::ok())).await
            }
            Message::Echo(b) => self.send(&Message::Echo(b)).await,
            Message::Search(s) => {
                let found: Vec<u32> =
                    s.channels.iter().filter(|(_, n)| self.shared.provider.has(n)).map(|(id, _)| *id).collect();
                if found.is_empty() && s.flags & 0x01 == 0 {
                    return Ok(());
                }
                self.shared.stats.searches_answered.fetch_add(1, Ordering::Relaxed);
                let r = Message::SearchResponse(SearchResponse {
                    guid: self.shared.guid,
                    sequence: s.sequence,
                    addr: [0; 16],
                    port: self.shared.tcp_addr.port(),
                    protocol: "tcp".into(),
                    found: !found.is_empty(),
                    cids: found,
                });
                // Answer in the byte order the search was sent in (pvxs sends TCP searches big-endian).
                let order = if h.flags & FLAG_BIG_ENDIAN != 0 { ByteOrder::Big } else { ByteOrder::Little };
                let b = encode_message(&r, order, true, &mut SendCache::disabled())?;
                self.tx.send(b).await.map_err(|_| Error::Closed("writer gone".into()))
            }
            Message::CreateChannel { channels } => {
                for (cid, name) in channels {
                    let entry = self.shared.provider.get(&name).or_else(|| (name == "server").then(|| self.server_info()));
                    let access = self.shared.access.access(&name, self.user.as_deref(), self.peer.ip());
                    let (sid, status) = match entry {
                        Some(_) if self.channels.len() >= CHANNELS_MAX => (0, Status::error("too many channels")),
                        Some(_) if access == Access::None => {
                            self.shared.stats.access_denied.fetch_add(1, Ordering::Relaxed);
                            debug!(peer = %self.peer, user = ?self.user, pv = %name, "channel refused by the access rules");
                            (0, Status::error(self.denied("no", &name)))
                        }
                        Some(entry) => {
                            let sid = self.next_sid;
                            self.next_sid = self.next_sid.wrapping_add(1).max(1);
                            self.shared.provider.channel_event(&name, 1);
                            self.channels.insert(sid, Chan { cid, name: name.clone(), entry, access, _held: Held::new(&self.shared, |s| &s.channels_open) });
                            (sid, Status::ok())
                        }
                        None => (0, Status::error(format!("no such channel: {name}"))),
                    };
                    self.send(&Message::CreateChannelResponse { cid, sid, status }).await?;
                }
                Ok(())
            }
            Message::DestroyChannel { sid, cid } => {
                if let Some(ch) = self.channels.remove(&sid) {
                    self.shared.provider.channel_event(&ch.name, -1);
                    let ioids: Vec<u32> = self.ops.iter().filter(|(_, o)| o.sid == sid).map(|(k, _)| *k).collect();
                    for io in ioids {
                        if let Some(op) = self.ops.remove(&io) {
                            drop_op(op);
                        }
                    }
                }
                self.send(&Message::DestroyChannel { sid, cid }).await
            }
            Message::DestroyRequest { ioid, .. } => {
                if let Some(op) = self.ops.remove(&ioid) {
                    drop_op(op);
                }
                Ok(())
            }
            // Cancel stops what is in progress and keeps the operation (spec):
            // an executing put/process is abandoned without a reply, a monitor
            // stops sending until started again.
            Message::CancelRequest { ioid, .. } => {
                if let Some(op) = self.ops.get_mut(&ioid) {
                    let mut stopped = false;
                    if let Some(t) = op.in_flight.take() {
                        stopped |= !t.is_finished();
                        t.abort();
                    }
                    if let OpKind::Monitor { task, .. } = &mut op.kind {
                        if let Some(t) = task.take() {
                            t.abort();
                            stopped = true;
                        }
                    }
                    if stopped {
                        self.shared.stats.requests_cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    debug!(peer = %self.peer, ioid, stopped, "request cancelled");
                }
                Ok(())
            }
            Message::GetField { sid, ioid, subfield } => {
                let (status, desc) = match self.channels.get(&sid).map(|c| &c.entry) {
                    Some(Entry::Pv(pv)) => {
                        let d = pv.desc();
                        match d.lookup(&subfield) {
                            Some((sd, _)) => (Status::ok(), Some(sd.clone())),
                            None => (Status::error(format!("no field {subfield}")), None),
                        }
                    }
                    Some(Entry::Rpc(_)) => (Status::error("RPC channel has no type"), None),
                    None => (Status::error("no such channel"), None),
                };
                self.send(&Message::GetFieldResponse { ioid, status, desc }).await
            }
            Message::Request(r) => self.handle_op(r).await,
            Message::AuthNZ(_) | Message::OriginTag(_) | Message::Unknown { .. } => Ok(()),
            other => {
                debug!(peer = %self.peer, msg = ?other, "ignoring unexpected client message");
                Ok(())
            }
        }
    }

    /// The refusal text a client shows (p4p raises it as the put's error).
    fn denied(&self, what: &str, pv: &str) -> String {
        let user = self.user.as_deref().unwrap_or("anonymous");
        format!("access denied: {what} access to {pv} for user {user} from {}", self.peer.ip())
    }

    /// Refuse a write on a read-only-access channel; true if refused (and answered).
    async fn refuse_write(&self, r: &OpRequest) -> Result<bool> {
        let Some(ch) = self.channels.get(&r.sid) else { return Ok(false) };
        if ch.access >= Access::Write {
            return Ok(false);
        }
        self.shared.stats.access_denied.fetch_add(1, Ordering::Relaxed);
        debug!(peer = %self.peer, user = ?self.user, pv = %ch.name, command = r.command, "write refused by the access rules");
        let msg = self.denied("write", &ch.name);
        self.op_error(r, msg).await?;
        Ok(true)
    }

    /// The access hook (a node's roles), beside the access rules: true if
    /// it refused (answered with the operation's error status, counted).
    async fn refuse_by_hook(&self, r: &OpRequest, pv: &str, need: Access) -> Result<bool> {
        let Some(hook) = &self.shared.access_hook else { return Ok(false) };
        let Err(why) = hook.0.check(pv, self.user.as_deref(), self.peer, need) else { return Ok(false) };
        self.shared.stats.access_denied.fetch_add(1, Ordering::Relaxed);
        debug!(peer = %self.peer, user = ?self.user, pv, command = r.command, %why, "operation refused by the access hook");
        let msg = format!("{} ({why})", self.denied(need.as_str(), pv));
        self.op_error(r, msg).await?;
        Ok(true)
    }

    /// The level an execution of an existing operation needs (None: not
    /// checked again, e.g. a monitor's start, stop and acks), and its PV.
    fn exec_need(&self, r: &OpRequest) -> Option<(String, Access)> {
        let op = self.ops.get(&r.ioid)?;
        let name = &self.channels.get(&op.sid)?.name;
        let need = match (&op.kind, r.command) {
            (OpKind::Get, _) => Access::Read,
            (OpKind::Put, _) if r.subcmd & sub::GET != 0 => Access::Read,
            (OpKind::PutGet, _) if r.subcmd & (sub::GET | sub::GET_PUT) != 0 => Access::Read,
            (OpKind::Array, _) if r.subcmd & sub::GET != 0 => Access::Read,
            (OpKind::Monitor { .. }, _) => return None,
            (OpKind::Rpc, _) if name == "server" => Access::Read,
            _ => Access::Write,
        };
        Some((name.clone(), need))
    }

    async fn op_error(&self, r: &OpRequest, msg: String) -> Result<()> {
        let body = if r.subcmd & sub::INIT != 0 { RespBody::Init(vec![]) } else { RespBody::Data(Default::default()) };
        self.send(&resp(r.command, r.ioid, r.subcmd, Status::error(msg), body)).await
    }

    async fn handle_op(&mut self, r: OpRequest) -> Result<()> {
        if r.subcmd & sub::INIT != 0 {
            return self.init_op(r).await;
        }
        // Checked at every execution too, so a revoked permission stops the next one.
        if let Some((pv, need)) = self.exec_need(&r) {
            if self.refuse_by_hook(&r, &pv, need).await? {
                return Ok(());
            }
        }
        let Some(op) = self.ops.get_mut(&r.ioid) else {
            return self.op_error(&r, format!("no such request {}", r.ioid)).await;
        };
        let destroy = r.subcmd & sub::DESTROY != 0;
        if op.in_flight.as_ref().is_some_and(|t| !t.is_finished()) {
            return self.op_error(&r, "request busy: the previous execution has not finished (cancel it first)".into()).await;
        }
        match (&mut op.kind, r.command) {
            (OpKind::Monitor { sub: s, task, window }, cmd::MONITOR) => {
                if let (ReqBody::Monitor { nack: Some(n) }, Some(w)) = (&r.body, window.as_ref()) {
                    w.add_permits((*n as usize).min(super::pv::QUEUE_SIZE_MAX));
                }
                if r.subcmd & sub::MONITOR_START == sub::MONITOR_START {
                    if task.is_none() {
                        // Asked again before each update, so a revoked role
                        // ends the monitor instead of feeding it.
                        let still_allowed: Option<ReadCheck> = match (&self.shared.access_hook, self.channels.get(&op.sid)) {
                            (Some(hook), Some(ch)) => {
                                let (hook, name, user, peer) = (hook.clone(), ch.name.clone(), self.user.clone(), self.peer);
                                Some(Box::new(move || {
                                    hook.0.check(&name, user.as_deref(), peer, Access::Read).map_err(|why| {
                                        let who = user.as_deref().unwrap_or("anonymous");
                                        format!("access denied: read access to {name} for user {who} from {} ({why}); monitor ended", peer.ip())
                                    })
                                }))
                            }
                            _ => None,
                        };
                        let pv = op.pv.clone();
                        *task = Some(tokio::spawn(monitor_task(
                            s.clone(),
                            pv.map(|p| p.desc()).unwrap_or(FieldDesc::Any),
                            op.mask.clone(),
                            r.ioid,
                            self.tx.clone(),
                            window.clone(),
                            self.flow.clone(),
                            still_allowed,
                        )));
                    }
                } else if r.subcmd & sub::MONITOR_START == sub::MONITOR_STOP {
                    if let Some(t) = task.take() {
                        t.abort();
                    }
                }
                if destroy {
                    if let Some(op) = self.ops.remove(&r.ioid) {
                        drop_op(op);
                    }
                }
                Ok(())
            }
            (OpKind::Get, cmd::GET) => {
                let pv = op.pv.clone();
                let mask = op.mask.clone();
                if destroy {
                    self.ops.remove(&r.ioid);
                }
                // Encode under the read lock, straight into the message: no copy of a big value.
                let ok = Status::ok();
                let msg = pv.and_then(|p| {
                    p.with_current(|d, v| {
                        typed_response(cmd::GET, r.ioid, r.subcmd, Some(&ok), |w| {
                            encode_data(w, d, v, &compress_bits(d, &mask), &mut SendCache::disabled())
                        })
                    })
                });
                match msg {
                    Some(b) => self.tx.send(b?).await.map_err(|_| Error::Closed("writer gone".into())),
                    None => self.op_error(&r, "no PV".into()).await,
                }
            }
            (OpKind::Put, cmd::PUT) | (OpKind::PutGet, cmd::PUT_GET) => {
                let pv = op.pv.clone();
                let mask = op.mask.clone();
                let process = op.process;
                let is_pg = r.command == cmd::PUT_GET;
                if destroy {
                    self.ops.remove(&r.ioid);
                }
                let Some(pv) = pv else { return self.op_error(&r, "no PV".into()).await };
                let (d, cur) = pv.current();
                let get_only = if is_pg { r.subcmd & (sub::GET | sub::GET_PUT) != 0 } else { r.subcmd & sub::GET != 0 };
                if get_only {
                    let bits = if is_pg && r.subcmd & sub::GET_PUT != 0 { BitSet::with(&[0]) } else { mask };
                    let body = RespBody::Data(data_bytes(&d, &cur, &bits)?);
                    return self.send(&resp(r.command, r.ioid, r.subcmd, Status::ok(), body)).await;
                }
                let ReqBody::Data(data) = &r.body else { return self.op_error(&r, "missing put data".into()).await };
                let mut merged = cur;
                // Put data is in the byte order of the message that carried it.
                let mut rd = Reader::new(data, self.rx_order).with_limits(self.limits);
                let bits = match decode_data(&mut rd, &d, &mut merged, &mut self.rx_cache) {
                    Ok(b) => b,
                    Err(e) => return self.op_error(&r, format!("bad put data: {e}")).await,
                };
                if let Some(note) = clamp_to_control_limits(&d, &mut merged, &bits) {
                    // A warning about this request (CMD_MESSAGE), then its normal reply.
                    debug!(peer = %self.peer, ioid = r.ioid, %note, "put clamped");
                    self.send(&Message::Message { ioid: r.ioid, mtype: MSG_WARNING, text: note }).await?;
                }
                // The put handler may wait (a bridge waits for a durable record):
                // run it beside the connection so CANCEL_REQUEST can reach it.
                let tx = self.tx.clone();
                let (command, ioid, subcmd) = (r.command, r.ioid, r.subcmd);
                let task = tokio::spawn(async move {
                    let mut status = match pv.put(&bits, merged).await {
                        Ok(()) => Status::ok(),
                        Err(e) => Status::error(e),
                    };
                    if process && status.is_success() {
                        if let Err(e) = pv.process().await {
                            status = Status::error(e);
                        }
                    }
                    let body = if is_pg && status.is_success() {
                        let (d, v) = pv.current();
                        match data_bytes(&d, &v, &mask) {
                            Ok(b) => RespBody::Data(b),
                            Err(e) => {
                                status = Status::error(format!("encoding the reply: {e}"));
                                RespBody::Data(Default::default())
                            }
                        }
                    } else {
                        RespBody::Data(Default::default())
                    };
                    if let Ok(b) = encode(&resp(command, ioid, subcmd, status, body)) {
                        let _ = tx.send(b).await;
                    }
                });
                self.attach_in_flight(ioid, destroy, task);
                Ok(())
            }
            (OpKind::Rpc, cmd::RPC) => {
                if destroy {
                    self.ops.remove(&r.ioid);
                }
                let ReqBody::Rpc(arg) = &r.body else { return self.op_error(&r, "missing RPC argument".into()).await };
                let h = match self.rpc_handler_for(r.sid) {
                    Some(h) => h,
                    None => return self.op_error(&r, "not an RPC channel".into()).await,
                };
                let (ad, av) = match arg {
                    Some((d, v)) => (d.clone(), v.clone()),
                    None => (FieldDesc::structure("", vec![]), Value::Struct(vec![])),
                };
                let (status, out) = match h(&ad, &av) {
                    Ok((d, v)) => (Status::ok(), Some((d, v))),
                    Err(e) => (Status::error(e), None),
                };
                self.send(&resp(cmd::RPC, r.ioid, r.subcmd, status, RespBody::Rpc(out))).await
            }
            (OpKind::Process, cmd::PROCESS) => {
                let pv = op.pv.clone();
                if destroy {
                    self.ops.remove(&r.ioid);
                }
                // No action: OK and nothing happens (pvxs and pvAccessCPP answer the same).
                let tx = self.tx.clone();
                let (ioid, subcmd) = (r.ioid, r.subcmd);
                let task = tokio::spawn(async move {
                    let status = match pv {
                        Some(pv) => match pv.process().await {
                            Ok(()) => Status::ok(),
                            Err(e) => Status::error(e),
                        },
                        None => Status::ok(),
                    };
                    if let Ok(b) = encode(&resp(cmd::PROCESS, ioid, subcmd, status, RespBody::Data(Default::default()))) {
                        let _ = tx.send(b).await;
                    }
                });
                self.attach_in_flight(ioid, destroy, task);
                Ok(())
            }
            (OpKind::Array, cmd::ARRAY) => {
                let pv = op.pv.clone();
                if destroy {
                    self.ops.remove(&r.ioid);
                }
                let Some(pv) = pv else { return self.op_error(&r, "no PV".into()).await };
                // ARRAY get is a read; put and set-length write.
                if r.subcmd & sub::GET == 0 && self.refuse_write(&r).await? {
                    return Ok(());
                }
                self.array_exec(&r, &pv).await
            }
            _ => self.op_error(&r, "request kind does not match its init".into()).await,
        }
    }

    /// Remember an executing put/process so CANCEL can abort it. An
    /// execution that also destroyed its operation runs to the end.
    fn attach_in_flight(&mut self, ioid: u32, destroyed: bool, task: JoinHandle<()>) {
        if destroyed {
            return;
        }
        match self.ops.get_mut(&ioid) {
            Some(op) => op.in_flight = Some(task),
            None => drop(task),
        }
    }

    /// Built-in "server" RPC channel (as pvxs has): `op=channels` lists our names.
    fn server_info(&self) -> Entry {
        let provider = self.shared.provider.clone();
        Entry::Rpc(Arc::new(move |d: &FieldDesc, v: &Value| {
            let op = crate::proto::nt::path_ref(d, v, "query.op")
                .and_then(|(x, _)| x.as_str().map(String::from))
                .unwrap_or_else(|| "channels".into());
            if op != "channels" {
                return Err(format!("unsupported server op {op:?}"));
            }
            let t = crate::proto::nt::nt_scalar_array(crate::proto::ScalarType::String, crate::proto::nt::Meta::default());
            Ok(crate::proto::nt::Builder::new(t)
                .with("value", Value::Array(ScalarArray::String(provider.names())))
                .build())
        }))
    }

    fn rpc_handler_for(&self, sid: u32) -> Option<super::pv::RpcHandler> {
        match self.channels.get(&sid).map(|c| &c.entry) {
            Some(Entry::Rpc(h)) => Some(h.clone()),
            _ => None,
        }
    }

    async fn init_op(&mut self, r: OpRequest) -> Result<()> {
        let Some(ch) = self.channels.get(&r.sid) else {
            return self.op_error(&r, format!("no such channel id {}", r.sid)).await;
        };
        if self.ops.len() >= OPS_MAX {
            return self.op_error(&r, "too many requests on this connection".into()).await;
        }
        if self.ops.contains_key(&r.ioid) {
            return self.op_error(&r, format!("request id {} already in use", r.ioid)).await;
        }
        let (pv_request, nfree) = match &r.body {
            ReqBody::Init { pv_request, nfree } => (pv_request.clone(), *nfree),
            _ => (None, None),
        };
        let req = PvRequest::from_variant(pv_request.as_ref());
        let entry = ch.entry.clone();
        if matches!(r.command, cmd::PUT | cmd::PUT_GET | cmd::PROCESS | cmd::RPC) && self.refuse_write(&r).await? {
            return Ok(());
        }
        // The built-in `server` channel's RPC lists names: a read.
        let writes = matches!(r.command, cmd::PUT | cmd::PUT_GET | cmd::PROCESS) || (r.command == cmd::RPC && ch.name != "server");
        let name = ch.name.clone();
        if self.refuse_by_hook(&r, &name, if writes { Access::Write } else { Access::Read }).await? {
            return Ok(());
        }
        match (entry, r.command) {
            (Entry::Rpc(_), cmd::RPC) => {
                self.ops.insert(r.ioid, Op { sid: r.sid, kind: OpKind::Rpc, pv: None, mask: BitSet::new(), process: false, in_flight: None, _held: None });
                self.send(&resp(cmd::RPC, r.ioid, r.subcmd, Status::ok(), RespBody::Init(vec![]))).await
            }
            (Entry::Rpc(_), _) => self.op_error(&r, "RPC channel supports only RPC".into()).await,
            (Entry::Pv(_), cmd::RPC) => self.op_error(&r, "channel does not support RPC".into()).await,
            (Entry::Pv(pv), c) => {
                let desc = pv.desc();
                let mask = req.mask(&desc);
                let (kind, types) = match c {
                    cmd::GET => (OpKind::Get, vec![desc.clone()]),
                    cmd::PUT if !pv.is_writable() => return self.op_error(&r, "PV is read-only".into()).await,
                    cmd::PUT_GET if !pv.is_writable() => return self.op_error(&r, "PV is read-only".into()).await,
                    cmd::PUT => (OpKind::Put, vec![desc.clone()]),
                    cmd::PUT_GET => (OpKind::PutGet, vec![desc.clone(), desc.clone()]),
                    cmd::PROCESS => (OpKind::Process, vec![]),
                    cmd::ARRAY => match desc.lookup("value") {
                        Some((FieldDesc::ScalarArray(t, k), _)) => (OpKind::Array, vec![FieldDesc::ScalarArray(*t, *k)]),
                        _ => return self.op_error(&r, "PV has no array value field".into()).await,
                    },
                    cmd::MONITOR => {
                        let qs = req.option_u32("queueSize").map(|q| q as usize).unwrap_or(4).max(1);
                        let pipeline = r.subcmd & sub::PIPELINE != 0;
                        let window = if pipeline {
                            Some(Arc::new(Semaphore::new(nfree.unwrap_or(qs as u32).min(super::pv::QUEUE_SIZE_MAX as u32) as usize)))
                        } else {
                            None
                        };
                        let s = pv.subscribe(qs);
                        (OpKind::Monitor { sub: s, task: None, window }, vec![desc.clone()])
                    }
                    _ => return self.op_error(&r, "unsupported operation".into()).await,
                };
                let process = matches!(c, cmd::PUT | cmd::PUT_GET) && req.option_bool("process");
                let _held = matches!(kind, OpKind::Monitor { .. }).then(|| Held::new(&self.shared, |s| &s.monitors_open));
                self.ops.insert(r.ioid, Op { sid: r.sid, kind, pv: Some(pv), mask, process, in_flight: None, _held });
                self.send(&resp(c, r.ioid, sub::INIT, Status::ok(), RespBody::Init(types))).await
            }
        }
    }

    async fn array_exec(&self, r: &OpRequest, pv: &SharedPv) -> Result<()> {
        let (d, v) = pv.current();
        let Some((ad @ FieldDesc::ScalarArray(t, _), _)) = d.lookup("value").map(|(x, b)| (x.clone(), b)) else {
            return self.op_error(r, "PV has no array value field".into()).await;
        };
        let cur = match crate::proto::nt::path_ref(&d, &v, "value") {
            Some((Value::Array(a), _)) => a.clone(),
            _ => ScalarArray::empty(t),
        };
        let data = match &r.body {
            ReqBody::Data(b) => b.clone(),
            _ => Default::default(),
        };
        let mut rd = Reader::new(&data, self.rx_order).with_limits(self.limits);
        if r.subcmd & sub::GET != 0 {
            let offset = rd.size("array offset", usize::MAX >> 1).unwrap_or(0);
            let count = rd.size("array count", usize::MAX >> 1).unwrap_or(0);
            let part = cur.slice(offset, count);
            let mut w = Writer::new(ByteOrder::Little);
            crate::proto::msg::encode_full(&mut w, &ad, &Value::Array(part), &mut SendCache::disabled())?;
            return self.send(&resp(cmd::ARRAY, r.ioid, r.subcmd, Status::ok(), RespBody::Data(w.buf.into()))).await;
        }
        if r.subcmd & sub::GET_PUT != 0 {
            // set length
            let len = match rd.size("array length", ARRAY_GROW_MAX) {
                Ok(l) => l,
                Err(e) => return self.op_error(r, format!("bad set-length: {e}")).await,
            };
            let mut nv = v.clone();
            let mut a = cur.slice(0, len);
            pad_array(&mut a, len);
            if let Some(slot) = crate::proto::nt::path_mut(&d, &mut nv, "value") {
                *slot = Value::Array(a);
            }
            let status = match pv.put(&BitSet::with(&[1]), nv).await {
                Ok(()) => Status::ok(),
                Err(e) => Status::error(e),
            };
            return self.send(&resp(cmd::ARRAY, r.ioid, r.subcmd, status, RespBody::Data(Default::default()))).await;
        }
        // put: offset, stride, then the sub-array with its size (pvAccessCPP's layout)
        let offset = rd.size("array offset", self.limits.array_len_max)?;
        let stride = rd.size("array stride", self.limits.array_len_max)?.max(1);
        let part = crate::proto::value::decode_value(&mut rd, &ad, &mut TypeCache::new())?;
        let Value::Array(part) = part else { return self.op_error(r, "bad array data".into()).await };
        let end = if part.is_empty() { 0 } else { offset.saturating_add((part.len() - 1).saturating_mul(stride)).saturating_add(1) };
        if end > ARRAY_GROW_MAX.max(cur.len()) {
            return self.op_error(r, format!("array put would grow the array to {end} elements")).await;
        }
        let merged = splice(&cur, offset, stride, &part);
        let mut nv = v.clone();
        if let Some(slot) = crate::proto::nt::path_mut(&d, &mut nv, "value") {
            *slot = Value::Array(merged);
        }
        let bit = d.lookup("value").map(|(_, b)| b).unwrap_or(0);
        let status = match pv.put(&BitSet::with(&[bit]), nv).await {
            Ok(()) => Status::ok(),
            Err(e) => Status::error(e),
        };
        self.send(&resp(cmd::ARRAY, r.ioid, r.subcmd, status, RespBody::Data(Default::default()))).await
    }
}

/// CMD_MESSAGE types (pvAccess spec: info, warning, error, fatal error).
const MSG_WARNING: u8 = 1;

/// If the put set `value` of a PV with control limits (NTScalar `control`,
/// low < high), clamp it into them, as an EPICS output record does with
/// DRVL/DRVH; returns the warning to send the client.
fn clamp_to_control_limits(d: &FieldDesc, v: &mut Value, bits: &BitSet) -> Option<String> {
    use crate::proto::nt::{path_mut, path_ref};
    let (_, vbit) = d.lookup("value")?;
    // Set directly, or through bit 0 (the whole structure).
    if !bits.get(vbit) && !bits.get(0) {
        return None;
    }
    let lo = path_ref(d, v, "control.limitLow").and_then(|(x, _)| x.as_f64())?;
    let hi = path_ref(d, v, "control.limitHigh").and_then(|(x, _)| x.as_f64())?;
    if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
        return None;
    }
    let (FieldDesc::Scalar(t), _) = d.lookup("value")? else { return None };
    let slot = path_mut(d, v, "value")?;
    let x = slot.as_f64()?;
    let clamped = x.clamp(lo, hi);
    if clamped == x {
        return None;
    }
    let nv = Value::F64(clamped).convert_to(*t).ok()?;
    let note = format!("value {x} clamped to {clamped} (control limits {lo} .. {hi})");
    *slot = nv;
    Some(note)
}

fn pad_array(a: &mut ScalarArray, len: usize) {
    macro_rules! pad {
        ($v:expr, $z:expr) => {
            if $v.len() < len {
                $v.resize(len, $z)
            }
        };
    }
    match a {
        ScalarArray::Bool(v) => pad!(v, false),
        ScalarArray::I8(v) => pad!(v, 0),
        ScalarArray::I16(v) => pad!(v, 0),
        ScalarArray::I32(v) => pad!(v, 0),
        ScalarArray::I64(v) => pad!(v, 0),
        ScalarArray::U8(v) => pad!(v, 0),
        ScalarArray::U16(v) => pad!(v, 0),
        ScalarArray::U32(v) => pad!(v, 0),
        ScalarArray::U64(v) => pad!(v, 0),
        ScalarArray::F32(v) => pad!(v, 0.0),
        ScalarArray::F64(v) => pad!(v, 0.0),
        ScalarArray::String(v) => pad!(v, String::new()),
    }
}

/// Write `part` into `cur` at offset, offset+stride, ... (growing it as needed).
fn splice(cur: &ScalarArray, offset: usize, stride: usize, part: &ScalarArray) -> ScalarArray {
    macro_rules! sp {
        ($c:expr, $p:expr, $k:path, $z:expr) => {{
            let mut out = $c.clone();
            let end = if $p.is_empty() { 0 } else { offset.saturating_add(($p.len() - 1).saturating_mul(stride)) + 1 };
            if out.len() < end {
                out.resize(end, $z);
            }
            for (i, x) in $p.iter().enumerate() {
                if let Some(s) = out.get_mut(offset.saturating_add(i.saturating_mul(stride))) {
                    *s = x.clone();
                }
            }
            $k(out)
        }};
    }
    match (cur, part) {
        (ScalarArray::F64(c), ScalarArray::F64(p)) => sp!(c, p, ScalarArray::F64, 0.0),
        (ScalarArray::F32(c), ScalarArray::F32(p)) => sp!(c, p, ScalarArray::F32, 0.0),
        (ScalarArray::I32(c), ScalarArray::I32(p)) => sp!(c, p, ScalarArray::I32, 0),
        (ScalarArray::I64(c), ScalarArray::I64(p)) => sp!(c, p, ScalarArray::I64, 0),
        (ScalarArray::String(c), ScalarArray::String(p)) => sp!(c, p, ScalarArray::String, String::new()),
        _ => part.clone(),
    }
}

/// A monitor's read permission, asked before each update: Err(the text
/// the client is sent) once it is gone.
type ReadCheck = Box<dyn Fn() -> std::result::Result<(), String> + Send + Sync>;

#[allow(clippy::too_many_arguments)] // one monitor's whole state, passed once at its start
async fn monitor_task(
    s: Arc<Subscription>,
    desc: FieldDesc,
    mask: BitSet,
    ioid: u32,
    tx: Tx,
    window: Option<Arc<Semaphore>>,
    flow: Arc<Flow>,
    still_allowed: Option<ReadCheck>,
) {
    loop {
        while let Some(u) = s.pop() {
            let changed = intersect(&u.changed, &mask);
            if changed.is_empty() {
                continue;
            }
            if let Some(Err(msg)) = still_allowed.as_ref().map(|check| check()) {
                // The final update (subcommand 0x10) with an error status:
                // clients end the subscription with this error.
                tx.shared.stats.access_denied.fetch_add(1, Ordering::Relaxed);
                tx.shared.stats.monitors_revoked.fetch_add(1, Ordering::Relaxed);
                debug!(ioid, %msg, "monitor ended: read access revoked");
                if let Ok(b) = typed_response(cmd::MONITOR, ioid, sub::DESTROY, Some(&Status::error(msg)), |_| Ok(())) {
                    let _ = tx.send(b).await;
                }
                return;
            }
            if let Some(w) = &window {
                match w.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
            }
            let overrun = compress_bits(&desc, &intersect(&u.overrun, &mask));
            let b = typed_response(cmd::MONITOR, ioid, 0, None, |w| {
                encode_data(w, &desc, &u.value, &compress_bits(&desc, &changed), &mut SendCache::disabled())?;
                overrun.encode(w);
                Ok(())
            });
            let b = match b {
                Ok(b) => b,
                Err(e) => {
                    warn!(ioid, error = %e, "monitor value does not match its type; dropping update");
                    continue;
                }
            };
            // A client that acknowledges marks gets at most the window unacknowledged.
            loop {
                let acked = flow.acked.notified();
                if flow.state.lock().map(|f| f.may_send()).unwrap_or(true) {
                    break;
                }
                tx.shared.stats.flow_control_waits.fetch_add(1, Ordering::Relaxed);
                acked.await;
            }
            if tx.send(b).await.is_err() {
                return;
            }
            tx.shared.stats.monitor_updates.fetch_add(1, Ordering::Relaxed);
        }
        if s.is_closed() {
            return;
        }
        s.notify.notified().await;
    }
}
