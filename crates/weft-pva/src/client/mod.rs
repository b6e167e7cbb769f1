//! tokio pvAccess client: search (UDP unicast/broadcast and TCP name
//! servers), connections shared per server, get/put/put-get/monitor/rpc/
//! get-field, and monitors that reconnect after a server restart.

mod conn;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

pub use conn::{ClientConn, Liveness};
use conn::{Routed, status_result};

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::proto::header::{cmd, split_datagram};
use crate::proto::msg::{
    Message, OpRequest, OpResponse, ReqBody, RespBody, SearchRequest, decode_data, decode_message, encode_data,
    encode_message, sub,
};
use crate::proto::request::PvRequest;
use crate::proto::value::decode_value;
use crate::proto::{BitSet, ByteOrder, FieldDesc, Limits, Reader, ScalarArray, ScalarType, SendCache, TypeCache, Value, Writer};

/// A structure received from a server.
#[derive(Debug, Clone, PartialEq)]
pub struct PvData {
    pub desc: FieldDesc,
    pub value: Value,
    /// Fields present in this update (bit 0 = all).
    pub changed: BitSet,
    /// Fields whose earlier changes were squashed (monitors only).
    pub overrun: BitSet,
}

/// Severity of a server message (CMD_MESSAGE type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
    Fatal,
}

impl Severity {
    fn from_wire(t: u8) -> Self {
        match t {
            0 => Severity::Info,
            1 => Severity::Warning,
            2 => Severity::Error,
            // 3, and anything newer we do not know: the strongest.
            _ => Severity::Fatal,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }
}

/// A message a server sent about one of our requests (e.g. a clamped put).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    pub pv: String,
    pub severity: Severity,
    pub text: String,
}

/// Server messages kept until the application takes them; the oldest are
/// dropped beyond this (a chatty server cannot grow our memory).
pub const SERVER_MESSAGES_MAX: usize = 1024;

#[derive(Debug, Clone, Default)]
pub(crate) struct Notes(Arc<Mutex<std::collections::VecDeque<ServerMessage>>>);

impl Notes {
    fn push(&self, pv: &str, mtype: u8, text: String) {
        let m = ServerMessage { pv: pv.to_string(), severity: Severity::from_wire(mtype), text };
        match m.severity {
            Severity::Info => tracing::info!(pv = %m.pv, text = %m.text, "server message"),
            _ => tracing::warn!(pv = %m.pv, severity = m.severity.as_str(), text = %m.text, "server message"),
        }
        if let Ok(mut q) = self.0.lock() {
            if q.len() >= SERVER_MESSAGES_MAX {
                q.pop_front();
            }
            q.push_back(m);
        }
    }

    fn take(&self) -> Vec<ServerMessage> {
        self.0.lock().map(|mut q| q.drain(..).collect()).unwrap_or_default()
    }
}

/// What a monitor delivers.
#[derive(Debug, Clone)]
pub enum MonitorEvent {
    /// Subscribed (again) to a server; carries the type.
    Connected(FieldDesc),
    Data(PvData),
    /// The connection was lost; the monitor searches and resubscribes.
    Disconnected,
}

/// A running monitor; drop or [`Monitor::stop`] to cancel.
pub struct Monitor {
    rx: mpsc::Receiver<MonitorEvent>,
    task: JoinHandle<()>,
}

impl Monitor {
    pub async fn next(&mut self) -> Option<MonitorEvent> {
        self.rx.recv().await
    }
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An open channel on a connection.
#[derive(Debug, Clone)]
pub struct Channel {
    pub conn: Arc<ClientConn>,
    pub sid: u32,
    pub cid: u32,
    pub name: String,
    /// Where server messages about this channel's requests go (shared with the Client).
    pub(crate) notes: Notes,
}

struct Inner {
    config: ClientConfig,
    udp: Arc<UdpSocket>,
    pending: Mutex<HashMap<u32, oneshot::Sender<SocketAddr>>>,
    conns: tokio::sync::Mutex<HashMap<SocketAddr, Arc<ClientConn>>>,
    next: AtomicU32,
    recv_task: JoinHandle<()>,
    notes: Notes,
    /// Bumped by the beacon listener when pending searches should go out now.
    poke: tokio::sync::watch::Receiver<u64>,
    beacon_task: Option<JoinHandle<()>>,
    beacon_addr: Option<SocketAddr>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.recv_task.abort();
        if let Some(t) = &self.beacon_task {
            t.abort();
        }
    }
}

/// Servers the beacon listener remembers (a limit against spoofed floods;
/// beyond it new servers still poke, they are just not remembered).
const BEACON_SERVERS_MAX: usize = 4096;

fn bind_beacon_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Shared with servers and other clients on this host, as pvxs does.
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Listen for beacons; poke pending searches when a server is new, restarted
/// (new GUID) or changed its channel set (change count).
async fn beacon_loop(sock: UdpSocket, poke: tokio::sync::watch::Sender<u64>) {
    let mut servers: HashMap<SocketAddr, ([u8; 12], u16)> = HashMap::new();
    let mut buf = vec![0u8; 0x10000];
    loop {
        let Ok((n, src)) = sock.recv_from(&mut buf).await else { continue };
        let Ok(msgs) = split_datagram(buf.get(..n).unwrap_or(&[])) else { continue };
        for (h, p) in msgs {
            let Ok(Message::Beacon(b)) = decode_message(&h, p, &mut TypeCache::new(), Limits::default()) else { continue };
            let ip = crate::proto::msg::ip_from16(&b.addr).unwrap_or(src.ip());
            let server = SocketAddr::new(ip, b.port);
            let now = (b.guid, b.change_count);
            let before = servers.get(&server).copied();
            if before == Some(now) {
                continue;
            }
            if before.is_some() || servers.len() < BEACON_SERVERS_MAX {
                servers.insert(server, now);
            }
            debug!(%server, restarted = before.is_some_and(|(g, _)| g != now.0), "beacon from a new or changed server; searching again");
            poke.send_modify(|x| *x = x.wrapping_add(1));
        }
    }
}

/// A pvAccess client context. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Text value for a put: scalars parse from text; arrays from JSON (`[1,2]`) or comma/space lists.
pub fn text_to_value(desc: &FieldDesc, text: &str) -> Result<Value> {
    match desc {
        FieldDesc::Scalar(t) | FieldDesc::ScalarArray(t, _) if matches!(desc, FieldDesc::Scalar(_)) => {
            Value::String(text.to_string()).convert_to(*t)
        }
        FieldDesc::BoundedString(_) => Ok(Value::String(text.to_string())),
        FieldDesc::ScalarArray(t, _) => {
            let items: Vec<String> = match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Array(a)) => a
                    .into_iter()
                    .map(|x| match x {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect(),
                _ => text.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(String::from).collect(),
            };
            let vals: Vec<Value> = items.iter().map(|s| Value::String(s.clone()).convert_to(*t)).collect::<Result<_>>()?;
            Ok(Value::Array(collect_array(*t, vals)))
        }
        other => Err(Error::Usage(format!("cannot put text into a field of type {}", other.to_string().trim()))),
    }
}

fn collect_array(t: ScalarType, vals: Vec<Value>) -> ScalarArray {
    macro_rules! c {
        ($k:path, $v:path) => {
            $k(vals.into_iter().filter_map(|x| if let $v(y) = x { Some(y) } else { None }).collect())
        };
    }
    match t {
        ScalarType::Bool => c!(ScalarArray::Bool, Value::Bool),
        ScalarType::I8 => c!(ScalarArray::I8, Value::I8),
        ScalarType::I16 => c!(ScalarArray::I16, Value::I16),
        ScalarType::I32 => c!(ScalarArray::I32, Value::I32),
        ScalarType::I64 => c!(ScalarArray::I64, Value::I64),
        ScalarType::U8 => c!(ScalarArray::U8, Value::U8),
        ScalarType::U16 => c!(ScalarArray::U16, Value::U16),
        ScalarType::U32 => c!(ScalarArray::U32, Value::U32),
        ScalarType::U64 => c!(ScalarArray::U64, Value::U64),
        ScalarType::F32 => c!(ScalarArray::F32, Value::F32),
        ScalarType::F64 => c!(ScalarArray::F64, Value::F64),
        ScalarType::String => c!(ScalarArray::String, Value::String),
    }
}

impl Client {
    /// Create a client with its own UDP search socket.
    pub async fn new(config: ClientConfig) -> Result<Client> {
        let (poke_tx, poke) = tokio::sync::watch::channel(0u64);
        let (beacon_task, beacon_addr) = match config.beacon_listen.map(bind_beacon_socket) {
            Some(Ok(s)) => {
                let a = s.local_addr().ok();
                (Some(tokio::spawn(beacon_loop(s, poke_tx))), a)
            }
            Some(Err(e)) => {
                debug!(error = %e, "cannot listen for beacons; searches rely on back-off alone");
                (None, None)
            }
            None => (None, None),
        };
        let udp = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).await?;
        udp.set_broadcast(true)?;
        let udp = Arc::new(udp);
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let w = weak.clone();
            let u = udp.clone();
            let recv_task = tokio::spawn(async move {
                let mut buf = vec![0u8; 0x10000];
                loop {
                    let Ok((n, src)) = u.recv_from(&mut buf).await else { continue };
                    let Some(inner) = w.upgrade() else { return };
                    let Ok(msgs) = split_datagram(buf.get(..n).unwrap_or(&[])) else { continue };
                    for (h, p) in msgs {
                        let Ok(Message::SearchResponse(r)) = decode_message(&h, p, &mut TypeCache::new(), Limits::default())
                        else {
                            continue;
                        };
                        if !r.found || r.protocol != "tcp" {
                            continue;
                        }
                        let ip = crate::proto::msg::ip_from16(&r.addr).unwrap_or(src.ip());
                        let addr = SocketAddr::new(ip, r.port);
                        if let Ok(mut p) = inner.pending.lock() {
                            for cid in &r.cids {
                                if let Some(s) = p.remove(cid) {
                                    let _ = s.send(addr);
                                }
                            }
                        }
                    }
                }
            });
            Inner {
                config,
                udp,
                pending: Mutex::new(HashMap::new()),
                conns: tokio::sync::Mutex::new(HashMap::new()),
                next: AtomicU32::new(1),
                recv_task,
                notes: Notes::default(),
                poke,
                beacon_task,
                beacon_addr,
            }
        });
        Ok(Client { inner })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Where this client listens for beacons (None: it does not).
    pub fn beacon_addr(&self) -> Option<SocketAddr> {
        self.inner.beacon_addr
    }

    /// Messages servers sent about our requests since the last call
    /// (warnings such as a clamped put), oldest first.
    pub fn take_messages(&self) -> Vec<ServerMessage> {
        self.inner.notes.take()
    }

    fn next_id(&self) -> u32 {
        self.inner.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Find the server hosting `name` (UDP search with back-off, and TCP name servers).
    pub async fn search(&self, name: &str) -> Result<SocketAddr> {
        let timeout = self.inner.config.timeout;
        let udp = self.udp_search(name);
        let tcp = self.ns_search(name);
        tokio::pin!(udp, tcp);
        let both = async {
            let mut udp_done = self.inner.config.search_addrs.is_empty();
            let mut tcp_done = self.inner.config.name_servers.is_empty();
            loop {
                if udp_done && tcp_done {
                    return None;
                }
                tokio::select! {
                    r = &mut udp, if !udp_done => match r { Some(a) => return Some(a), None => udp_done = true },
                    r = &mut tcp, if !tcp_done => match r { Some(a) => return Some(a), None => tcp_done = true },
                }
            }
        };
        tokio::time::timeout(timeout, both)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    async fn udp_search(&self, name: &str) -> Option<SocketAddr> {
        if self.inner.config.search_addrs.is_empty() {
            return None;
        }
        let id = self.next_id();
        let (tx, mut rx) = oneshot::channel();
        self.inner.pending.lock().ok()?.insert(id, tx);
        let port = self.inner.udp.local_addr().ok()?.port();
        let mut delay = self.inner.config.search_delay_initial;
        let mut poke = self.inner.poke.clone();
        let mut seq = 0u32;
        loop {
            for dest in &self.inner.config.search_addrs {
                let unicast = !is_broadcast(dest.ip());
                let s = SearchRequest {
                    sequence: seq,
                    flags: if unicast { 0x80 } else { 0x00 },
                    reserved: [0; 3],
                    reply_addr: [0; 16],
                    reply_port: port,
                    protocols: vec!["tcp".into()],
                    channels: vec![(id, name.to_string())],
                };
                if let Ok(b) = encode_message(&Message::Search(s), ByteOrder::Big, false, &mut SendCache::disabled()) {
                    if let Err(e) = self.inner.udp.send_to(&b, dest).await {
                        trace!(%dest, error = %e, "search send failed");
                    }
                }
            }
            seq = seq.wrapping_add(1);
            tokio::select! {
                r = &mut rx => return r.ok(),
                _ = tokio::time::sleep(delay) => {
                    delay = (delay * 2).min(self.inner.config.search_delay_max);
                }
                // A server appeared or came back: search again now, from the start of the back-off.
                Ok(()) = poke.changed() => {
                    delay = self.inner.config.search_delay_initial;
                }
            }
        }
    }

    async fn ns_search(&self, name: &str) -> Option<SocketAddr> {
        let mut delay = Duration::from_millis(200);
        loop {
            for ns in &self.inner.config.name_servers {
                let Ok(c) = self.connection(*ns).await else { continue };
                if let Ok(Some(r)) = c.tcp_search(name, Duration::from_secs(1)).await {
                    let ip = crate::proto::msg::ip_from16(&r.addr);
                    return Some(match ip {
                        // Zero address over TCP: the name server itself serves the channel.
                        None => *ns,
                        Some(ip) => SocketAddr::new(ip, r.port),
                    });
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// A validated connection to `addr`, shared between channels.
    pub async fn connection(&self, addr: SocketAddr) -> Result<Arc<ClientConn>> {
        let mut conns = self.inner.conns.lock().await;
        if let Some(c) = conns.get(&addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let live = conn::Liveness { echo_interval: self.inner.config.echo_interval, dead_after: self.inner.config.dead_after };
        let c = ClientConn::connect_with(addr, self.inner.config.timeout, live).await?;
        conns.insert(addr, c.clone());
        Ok(c)
    }

    /// Search, connect and create a channel.
    pub async fn channel(&self, name: &str) -> Result<Channel> {
        let addr = self.search(name).await?;
        let conn = self.connection(addr).await?;
        let (cid, sid, _watch) = conn.create_channel(name, self.inner.config.timeout).await?;
        Ok(Channel { conn, sid, cid, name: name.to_string(), notes: self.inner.notes.clone() })
    }

    /// Get the whole PV or the fields selected by `request` (e.g. `field(value)`).
    pub async fn get(&self, name: &str, request: &str) -> Result<PvData> {
        let ch = self.channel(name).await?;
        let r = ch.get(request, self.inner.config.timeout).await;
        ch.close().await;
        r
    }

    /// Put text values to fields (`("value", "1.5")`, `("value.index", "2")`, arrays as `[1,2]`).
    pub async fn put(&self, name: &str, values: &[(String, String)]) -> Result<()> {
        let ch = self.channel(name).await?;
        let r = ch.put(values, self.inner.config.timeout).await;
        ch.close().await;
        r
    }

    /// Put then get in one round trip (PUT_GET).
    pub async fn put_get(&self, name: &str, values: &[(String, String)], request: &str) -> Result<PvData> {
        let ch = self.channel(name).await?;
        let r = ch.put_get(values, request, self.inner.config.timeout).await;
        ch.close().await;
        r
    }

    /// Call an RPC service with an argument structure.
    pub async fn rpc(&self, name: &str, arg: (FieldDesc, Value)) -> Result<(FieldDesc, Value)> {
        let ch = self.channel(name).await?;
        let r = ch.rpc(arg, self.inner.config.timeout).await;
        ch.close().await;
        r
    }

    /// Type of a PV (or of one sub-field).
    pub async fn get_field(&self, name: &str, subfield: &str) -> Result<FieldDesc> {
        let ch = self.channel(name).await?;
        let r = ch.get_field(subfield, self.inner.config.timeout).await;
        ch.close().await;
        r
    }

    /// Subscribe; reconnects (search, connect, resubscribe) whenever the connection is lost.
    /// `queue_size` > 0 enables the pipeline (flow-controlled) protocol with that window.
    pub fn monitor(&self, name: &str, request: &str, queue_size: u32) -> Monitor {
        let (tx, rx) = mpsc::channel(256);
        let client = self.clone();
        let name = name.to_string();
        let request = request.to_string();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match client.monitor_once(&name, &request, queue_size, &tx).await {
                    Ok(()) => return,
                    Err(e) => {
                        debug!(%name, error = %e, "monitor interrupted; resubscribing");
                        if tx.send(MonitorEvent::Disconnected).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
        Monitor { rx, task }
    }

    async fn monitor_once(&self, name: &str, request: &str, queue_size: u32, tx: &mpsc::Sender<MonitorEvent>) -> Result<()> {
        let ch = loop {
            match self.channel(name).await {
                Ok(c) => break c,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        };
        let mut req = PvRequest::parse(request)?;
        let pipeline = queue_size > 0;
        if pipeline {
            req.options.insert("pipeline".into(), "true".into());
            req.options.insert("queueSize".into(), queue_size.to_string());
        }
        let conn = ch.conn.clone();
        let ioid = conn.next_id();
        let mut inbox = conn.register_op(ioid);
        let subcmd = if pipeline { sub::INIT | sub::PIPELINE } else { sub::INIT };
        conn.send(&Message::Request(OpRequest {
            command: cmd::MONITOR,
            sid: ch.sid,
            ioid,
            subcmd,
            body: ReqBody::Init { pv_request: Some(req.to_variant()), nfree: pipeline.then_some(queue_size) },
        }))
        .await?;
        let desc = match recv_resp(&mut inbox, self.inner.config.timeout, "monitor init", &ch).await? {
            (_, OpResponse { status, body: RespBody::Init(t), .. }) => {
                status_result(&status, "monitor init")?;
                t.into_iter().next().ok_or_else(|| Error::Unexpected("monitor init without type".into()))?
            }
            (_, other) => return Err(Error::Unexpected(format!("monitor init reply {other:?}"))),
        };
        if tx.send(MonitorEvent::Connected(desc.clone())).await.is_err() {
            return Ok(());
        }
        conn.send(&Message::Request(OpRequest {
            command: cmd::MONITOR,
            sid: ch.sid,
            ioid,
            subcmd: sub::MONITOR_START,
            body: ReqBody::Monitor { nack: None },
        }))
        .await?;
        let mut value = Value::default_for(&desc);
        let mut unacked = 0u32;
        loop {
            let Some((order, m)) = inbox.recv().await else {
                return Err(Error::Closed(format!("connection to {} lost", conn.peer)));
            };
            let r = match m {
                Message::Response(r) => r,
                Message::Message { mtype, text, .. } => {
                    ch.notes.push(name, mtype, text);
                    continue;
                }
                _ => continue,
            };
            status_result(&r.status, "monitor")?;
            let RespBody::Data(data) = r.body else { continue };
            if !data.is_empty() {
                let mut rd = Reader::new(&data, order);
                let changed = conn.with_type_cache(|c| decode_data(&mut rd, &desc, &mut value, c))?;
                let overrun = BitSet::decode(&mut rd).unwrap_or_default();
                let ev = MonitorEvent::Data(PvData { desc: desc.clone(), value: value.clone(), changed, overrun });
                if tx.send(ev).await.is_err() {
                    // Consumer gone: cancel politely.
                    let _ = conn.send(&Message::DestroyRequest { sid: ch.sid, ioid }).await;
                    conn.unregister_op(ioid);
                    return Ok(());
                }
                if pipeline {
                    unacked += 1;
                    if unacked * 2 >= queue_size {
                        conn.send(&Message::Request(OpRequest {
                            command: cmd::MONITOR,
                            sid: ch.sid,
                            ioid,
                            subcmd: sub::PIPELINE,
                            body: ReqBody::Monitor { nack: Some(unacked) },
                        }))
                        .await?;
                        unacked = 0;
                    }
                }
            }
            if r.subcmd & sub::DESTROY != 0 {
                return Err(Error::Closed("server ended the subscription".into()));
            }
        }
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.octets()[3] == 255,
        IpAddr::V6(_) => false,
    }
}

async fn recv_resp(inbox: &mut mpsc::UnboundedReceiver<Routed>, timeout: Duration, what: &str, ch: &Channel) -> Result<(ByteOrder, OpResponse)> {
    loop {
        let r = tokio::time::timeout(timeout, inbox.recv())
            .await
            .map_err(|_| Error::Timeout(what.to_string()))?
            .ok_or_else(|| Error::Closed(format!("connection lost during {what}")))?;
        match r {
            (o, Message::Response(resp)) => return Ok((o, resp)),
            (_, Message::Message { mtype, text, .. }) => ch.notes.push(&ch.name, mtype, text),
            _ => {}
        }
    }
}

impl Channel {
    /// A channel already created on `conn` (e.g. by `ClientConn::create_channel`);
    /// its server messages are logged only.
    pub fn new(conn: Arc<ClientConn>, sid: u32, cid: u32, name: &str) -> Channel {
        Channel { conn, sid, cid, name: name.to_string(), notes: Notes::default() }
    }

    /// Destroy the channel on the server (best effort).
    pub async fn close(&self) {
        let _ = self.conn.send(&Message::DestroyChannel { sid: self.sid, cid: self.cid }).await;
    }

    async fn init(&self, command: u8, request: &PvRequest, timeout: Duration) -> Result<(u32, mpsc::UnboundedReceiver<Routed>, Vec<FieldDesc>)> {
        let pv_request = if command == cmd::PUT_GET { request.to_put_get_variant() } else { request.to_variant() };
        self.init_with(command, pv_request, timeout).await
    }

    async fn init_with(&self, command: u8, pv_request: (FieldDesc, Value), timeout: Duration) -> Result<(u32, mpsc::UnboundedReceiver<Routed>, Vec<FieldDesc>)> {
        let ioid = self.conn.next_id();
        let mut inbox = self.conn.register_op(ioid);
        self.conn
            .send(&Message::Request(OpRequest {
                command,
                sid: self.sid,
                ioid,
                subcmd: sub::INIT,
                body: ReqBody::Init { pv_request: Some(pv_request), nfree: None },
            }))
            .await?;
        let (_, r) = recv_resp(&mut inbox, timeout, "init", self).await?;
        if let Err(e) = status_result(&r.status, &format!("{} init", self.name)) {
            self.conn.unregister_op(ioid);
            return Err(e);
        }
        let types = match r.body {
            RespBody::Init(t) => t,
            _ => vec![],
        };
        Ok((ioid, inbox, types))
    }

    async fn exec(&self, inbox: &mut mpsc::UnboundedReceiver<Routed>, command: u8, ioid: u32, subcmd: u8, body: ReqBody, timeout: Duration) -> Result<(ByteOrder, OpResponse)> {
        self.conn.send(&Message::Request(OpRequest { command, sid: self.sid, ioid, subcmd, body })).await?;
        let (o, r) = match recv_resp(inbox, timeout, "exec", self).await {
            Ok(x) => x,
            Err(e @ Error::Timeout(_)) => {
                // Tell the server to stop working on it; the operation stays open.
                let _ = self.conn.send(&Message::CancelRequest { sid: self.sid, ioid }).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        status_result(&r.status, &self.name)?;
        Ok((o, r))
    }

    /// Open an operation (GET, PUT, PUT_GET, RPC, PROCESS, ARRAY: `proto::header::cmd`)
    /// to execute several times, cancel or destroy explicitly.
    pub async fn operation(&self, command: u8, request: &str, timeout: Duration) -> Result<Operation<'_>> {
        let req = PvRequest::parse(request)?;
        let (ioid, inbox, types) = self.init(command, &req, timeout).await?;
        Ok(Operation { ch: self, ioid, inbox, command, types })
    }

    async fn finish(&self, ioid: u32) {
        self.conn.unregister_op(ioid);
        let _ = self.conn.send(&Message::DestroyRequest { sid: self.sid, ioid }).await;
    }

    pub async fn get(&self, request: &str, timeout: Duration) -> Result<PvData> {
        let req = PvRequest::parse(request)?;
        let (ioid, mut inbox, types) = self.init(cmd::GET, &req, timeout).await?;
        let desc = types.into_iter().next().ok_or_else(|| Error::Unexpected("get init without type".into()))?;
        let r = self.exec(&mut inbox, cmd::GET, ioid, 0x00, ReqBody::Data(Default::default()), timeout).await;
        self.finish(ioid).await;
        let (order, r) = r?;
        decode_typed(&self.conn, &desc, order, &r)
    }

    /// Build put data for text values against the put type; fetches the
    /// current value when an enum is set by choice name.
    fn build_put(desc: &FieldDesc, current: Option<&Value>, values: &[(String, String)]) -> Result<(Value, BitSet)> {
        let mut v = current.cloned().unwrap_or_else(|| Value::default_for(desc));
        let mut bits = BitSet::new();
        for (path, text) in values {
            let path = if path.is_empty() { "value" } else { path.as_str() };
            let (fd, bit) = desc.lookup(path).ok_or_else(|| Error::Usage(format!("no field {path}")))?;
            let (target_path, target_bit, nv) = if fd.id() == "enum_t" {
                // Enum: accept an index or a choice name.
                let (_, ibit) = desc.lookup(&format!("{path}.index")).ok_or_else(|| Error::Usage("bad enum".into()))?;
                let idx = match text.trim().parse::<i32>() {
                    Ok(i) => i,
                    Err(_) => {
                        let choices = current
                            .and_then(|c| crate::proto::nt::path_ref(desc, c, &format!("{path}.choices")))
                            .and_then(|(x, _)| match x {
                                Value::Array(ScalarArray::String(s)) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        choices.iter().position(|c| c == text.trim()).ok_or_else(|| Error::Usage(format!("{text:?} is not one of {choices:?}")))? as i32
                    }
                };
                (format!("{path}.index"), ibit, Value::I32(idx))
            } else {
                (path.to_string(), bit, text_to_value(fd, text)?)
            };
            let slot = crate::proto::nt::path_mut(desc, &mut v, &target_path).ok_or_else(|| Error::Usage(format!("no field {target_path}")))?;
            *slot = nv;
            bits.set(target_bit);
        }
        Ok((v, bits))
    }

    pub async fn put(&self, values: &[(String, String)], timeout: Duration) -> Result<()> {
        let req = PvRequest::default();
        let (ioid, mut inbox, types) = self.init(cmd::PUT, &req, timeout).await?;
        let res = async {
            let desc = types.into_iter().next().ok_or_else(|| Error::Unexpected("put init without type".into()))?;
            // Current value (get-put) so enums can be set by name and untouched fields keep their value.
            let cur = match self.exec(&mut inbox, cmd::PUT, ioid, sub::GET, ReqBody::Data(Default::default()), timeout).await {
                Ok((o, r)) => decode_typed(&self.conn, &desc, o, &r).ok().map(|d| d.value),
                Err(_) => None,
            };
            let (v, bits) = Self::build_put(&desc, cur.as_ref(), values)?;
            let mut w = Writer::new(self.conn.order());
            encode_data(&mut w, &desc, &v, &bits, &mut SendCache::disabled())?;
            self.exec(&mut inbox, cmd::PUT, ioid, 0x00, ReqBody::Data(w.buf.into()), timeout).await?;
            Ok(())
        }
        .await;
        self.finish(ioid).await;
        res
    }

    pub async fn put_get(&self, values: &[(String, String)], request: &str, timeout: Duration) -> Result<PvData> {
        let req = PvRequest::parse(request)?;
        let (ioid, mut inbox, types) = self.init(cmd::PUT_GET, &req, timeout).await?;
        let res = async {
            let mut it = types.into_iter();
            let put_t = it.next().ok_or_else(|| Error::Unexpected("put-get init without types".into()))?;
            let get_t = it.next().unwrap_or_else(|| put_t.clone());
            let (v, bits) = Self::build_put(&put_t, None, values)?;
            let mut w = Writer::new(self.conn.order());
            encode_data(&mut w, &put_t, &v, &bits, &mut SendCache::disabled())?;
            let (o, r) = self.exec(&mut inbox, cmd::PUT_GET, ioid, 0x00, ReqBody::Data(w.buf.into()), timeout).await?;
            decode_typed(&self.conn, &get_t, o, &r)
        }
        .await;
        self.finish(ioid).await;
        res
    }

    pub async fn rpc(&self, arg: (FieldDesc, Value), timeout: Duration) -> Result<(FieldDesc, Value)> {
        let (ioid, mut inbox, _) = self.init(cmd::RPC, &PvRequest::default(), timeout).await?;
        let r = self.exec(&mut inbox, cmd::RPC, ioid, 0x00, ReqBody::Rpc(Some(arg)), timeout).await;
        self.finish(ioid).await;
        match r?.1.body {
            RespBody::Rpc(Some(x)) => Ok(x),
            RespBody::Rpc(None) => Ok((FieldDesc::structure("", vec![]), Value::Struct(vec![]))),
            other => Err(Error::Unexpected(format!("rpc reply {other:?}"))),
        }
    }

    pub async fn get_field(&self, subfield: &str, timeout: Duration) -> Result<FieldDesc> {
        let ioid = self.conn.next_id();
        let mut inbox = self.conn.register_op(ioid);
        self.conn.send(&Message::GetField { sid: self.sid, ioid, subfield: subfield.to_string() }).await?;
        let r = tokio::time::timeout(timeout, inbox.recv()).await;
        self.conn.unregister_op(ioid);
        match r {
            Ok(Some((_, Message::GetFieldResponse { status, desc, .. }))) => {
                status.into_result()?;
                desc.ok_or_else(|| Error::Unexpected("get-field without type".into()))
            }
            Ok(Some((_, other))) => Err(Error::Unexpected(format!("get-field reply {other:?}"))),
            Ok(None) => Err(Error::Closed("connection lost during get-field".into())),
            Err(_) => Err(Error::Timeout("get-field".into())),
        }
    }

    /// Read part of an array (CMD_ARRAY get): offset and count (0 = to the end).
    pub async fn array_get(&self, offset: usize, count: usize, timeout: Duration) -> Result<Value> {
        // pvDatabase needs the array field named in the request.
        let (ioid, mut inbox, types) = self.init(cmd::ARRAY, &PvRequest::parse("field(value)")?, timeout).await?;
        let desc = types.into_iter().next().ok_or_else(|| Error::Unexpected("array init without type".into()))?;
        let mut w = Writer::new(self.conn.order());
        w.size(offset);
        w.size(count);
        w.size(1);
        let r = self.exec(&mut inbox, cmd::ARRAY, ioid, sub::GET, ReqBody::Data(w.buf.into()), timeout).await;
        self.finish(ioid).await;
        let (o, r) = r?;
        let RespBody::Data(d) = r.body else { return Err(Error::Unexpected("array reply".into())) };
        self.conn.with_type_cache(|c| decode_value(&mut Reader::new(&d, o), &desc, c))
    }

    /// Write `data` (an array of the channel's element type) at `offset` (CMD_ARRAY put).
    pub async fn array_put(&self, offset: usize, data: Value, timeout: Duration) -> Result<()> {
        let (ioid, mut inbox, types) = self.init(cmd::ARRAY, &PvRequest::parse("field(value)")?, timeout).await?;
        let res = async {
            let desc = types.into_iter().next().ok_or_else(|| Error::Unexpected("array init without type".into()))?;
            if !matches!(data, Value::Array(_)) {
                return Err(Error::Usage("array_put needs an array value".into()));
            }
            // offset, stride, then the sub-array with its size (pvAccessCPP's layout,
            // found by experiment against pvDatabase; the count is the array's own size).
            let mut w = Writer::new(self.conn.order());
            w.size(offset);
            w.size(1);
            crate::proto::value::encode_value(&mut w, &desc, &data, &mut SendCache::disabled())?;
            self.exec(&mut inbox, cmd::ARRAY, ioid, 0x00, ReqBody::Data(w.buf.into()), timeout).await?;
            Ok(())
        }
        .await;
        self.finish(ioid).await;
        res
    }

    /// Change the array length (CMD_ARRAY set-length).
    pub async fn array_set_length(&self, length: usize, timeout: Duration) -> Result<()> {
        let (ioid, mut inbox, _) = self.init(cmd::ARRAY, &PvRequest::parse("field(value)")?, timeout).await?;
        let mut w = Writer::new(self.conn.order());
        w.size(length);
        let r = self.exec(&mut inbox, cmd::ARRAY, ioid, sub::GET_PUT, ReqBody::Data(w.buf.into()), timeout).await;
        self.finish(ioid).await;
        r.map(|_| ())
    }

    /// Process the record (CMD_PROCESS).
    pub async fn process(&self, timeout: Duration) -> Result<()> {
        let (ioid, mut inbox, _) = self.init(cmd::PROCESS, &PvRequest::default(), timeout).await?;
        let r = self.exec(&mut inbox, cmd::PROCESS, ioid, 0x00, ReqBody::Data(Default::default()), timeout).await;
        self.finish(ioid).await;
        r.map(|_| ())
    }
}

/// An open operation on a channel. An execution that times out is
/// cancelled on the server (CANCEL_REQUEST) and the operation stays usable,
/// as the spec intends; [`Operation::destroy`] ends it.
pub struct Operation<'a> {
    ch: &'a Channel,
    ioid: u32,
    inbox: mpsc::UnboundedReceiver<Routed>,
    command: u8,
    /// Types from the server's INIT reply (put type first for PUT_GET).
    pub types: Vec<FieldDesc>,
}

impl Operation<'_> {
    pub fn ioid(&self) -> u32 {
        self.ioid
    }

    /// Execute once (`subcmd` from `proto::msg::sub`, 0 = plain) and wait up to `timeout` for the reply.
    pub async fn exec(&mut self, subcmd: u8, body: ReqBody, timeout: Duration) -> Result<(ByteOrder, OpResponse)> {
        self.ch.exec(&mut self.inbox, self.command, self.ioid, subcmd, body, timeout).await
    }

    /// Put body for text values (`[("value", "5")]`) against the put type.
    pub fn put_body(&self, values: &[(String, String)]) -> Result<ReqBody> {
        let desc = self.types.first().ok_or_else(|| Error::Usage("operation has no put type".into()))?;
        let (v, bits) = Channel::build_put(desc, None, values)?;
        let mut w = Writer::new(self.ch.conn.order());
        encode_data(&mut w, desc, &v, &bits, &mut SendCache::disabled())?;
        Ok(ReqBody::Data(w.buf.into()))
    }

    /// Decode a GET / put-get reply with the operation's (last) type.
    pub fn decode(&self, reply: &(ByteOrder, OpResponse)) -> Result<PvData> {
        let desc = self.types.last().ok_or_else(|| Error::Usage("operation has no type".into()))?;
        decode_typed(&self.ch.conn, desc, reply.0, &reply.1)
    }

    /// Stop an execution in progress without destroying the operation.
    pub async fn cancel(&self) -> Result<()> {
        self.ch.conn.send(&Message::CancelRequest { sid: self.ch.sid, ioid: self.ioid }).await
    }

    /// Destroy the operation on the server.
    pub async fn destroy(self) {
        self.ch.finish(self.ioid).await;
    }
}

fn decode_typed(conn: &ClientConn, desc: &FieldDesc, order: ByteOrder, r: &OpResponse) -> Result<PvData> {
    let RespBody::Data(d) = &r.body else { return Err(Error::Unexpected("reply without data".into())) };
    let mut value = Value::default_for(desc);
    let mut rd = Reader::new(d, order);
    let changed = conn.with_type_cache(|c| decode_data(&mut rd, desc, &mut value, c))?;
    Ok(PvData { desc: desc.clone(), value, changed, overrun: BitSet::new() })
}
