//! The objecter and the public API: `Rados` (a cluster handle) and
//! `IoCtx` (a pool + namespace), in the spirit of librados.
//!
//! An operation is computed against the newest osdmap (object -> PG ->
//! acting primary), sent as MOSDOp over a CephX-authorized msgr2 session to
//! that OSD, and resent (same tid, RETRY flag, so the OSD deduplicates) when
//! the map moves the PG, when the session drops, or when no reply arrives.
//!
//! A dropped OSD session is reconnected with msgr2 SESSION_RECONNECT under
//! the old session's identity when the OSD still has the same address;
//! Ceph OSDs keep client sessions lossy and answer SESSION_RESET, so the
//! connection continues as a new session and the in-flight ops are resent.
//!
//! Each OSD gets up to `conns_per_osd` sessions; an op goes to the one
//! picked by a hash of its object name (PG ops: of the PG), so ops on one
//! object keep their order (the OSD orders them per connection), and one
//! session dropping leaves the others as they are.

use crate::config::ClientConfig;
use crate::error::{libc_errno, Error, Result};
use crate::monc::MonClient;
use crate::net::{self, now_utime, ConnHandle, Liveness};
use crate::proto::cephx::Authorizer;
use crate::proto::compress::{CompressionCounts, CompressionStats};
use crate::proto::conn::{AuthMethod, ConnConfig, ConnError, ReconnectAnswer, SessionResume, FEATURES_PACIFIC};
use crate::proto::enc::{Put, Reader};
use crate::proto::msg::{
    self, msg_type, osd_flag, osd_op, HObject, CEPH_NOSNAP, OpResult, OsdOp, OsdOpReply, OsdOpTarget, WatchNotify,
};
use crate::proto::osdmap::{OsdMap, PgId};
use crate::proto::types::{entity_type, UTime};
use bytes::{BufMut, Bytes};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Resend an op that got no reply within this long (dedup makes it safe).
const RESEND_AFTER: Duration = Duration::from_secs(15);
/// OSDMap flags the objecter honours (`CEPH_OSDMAP_*`).
mod osdmap_flag {
    pub const FULL: u32 = 1 << 1;
    pub const PAUSERD: u32 = 1 << 2;
    pub const PAUSEWR: u32 = 1 << 3;
}

/// The snapshot id that means the head (`set_read(SNAP_HEAD)`).
pub const SNAP_HEAD: u64 = CEPH_NOSNAP;
/// The namespace value that makes PGNLS return every namespace.
pub const ALL_NSPACES: &str = "\u{1}";
/// Max entries asked per PGNLS round trip.
const LIST_CHUNK: u64 = 1024;
/// How long a reconnect waits for the dropped connection's driver to hand
/// over the session state (it ends within moments of the drop).
const SESSION_HANDOVER_WAIT: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<OsdOpReply>>>>;
type Slot = Arc<tokio::sync::Mutex<Option<Arc<OsdSession>>>>;
/// One OSD session: the OSD id and the index of the connection to it.
type ConnKey = (i32, usize);
/// Filled by the connection driver with the session state when the
/// connection is gone.
type ClosedSlot = Arc<Mutex<Option<SessionResume>>>;

struct OsdSession {
    handle: ConnHandle,
    addr: SocketAddr,
    shared: Arc<SessionShared>,
}

/// What the session's reply dispatcher shares with the objecter (not the
/// send handle: the connection closes once the objecter lets go of it).
struct SessionShared {
    pending: Pending,
    /// Set when the dispatcher stops: ops must not wait on this session.
    dead: std::sync::atomic::AtomicBool,
    /// Tells the dispatcher to stop (drop_osd_connections).
    kill: tokio::sync::Notify,
}

impl OsdSession {
    fn alive(&self) -> bool {
        !self.handle.is_closed() && !self.shared.dead.load(Ordering::Acquire)
    }
}

/// Counts of OSD session reconnects and the OSDs' answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconnectStats {
    /// SESSION_RECONNECTs sent (one per reconnecting connection).
    pub attempts: u64,
    /// SESSION_RECONNECT_OK: the OSD resumed the session.
    pub resumed: u64,
    /// SESSION_RESET answers (the OSD had no session to resume).
    pub resets: u64,
    /// ... of which full resets.
    pub full_resets: u64,
    /// SESSION_RETRY and SESSION_RETRY_GLOBAL answers.
    pub retries: u64,
    /// WAIT answers and failed reconnect connections.
    pub failed: u64,
    /// Ops that were in flight when their OSD session dropped (resent).
    pub ops_resent: u64,
    /// OSD sessions opened (new or reconnected), over all connections.
    pub sessions_opened: u64,
}

#[derive(Default)]
struct ReconnectCounters {
    attempts: AtomicU64,
    resumed: AtomicU64,
    resets: AtomicU64,
    full_resets: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    ops_resent: AtomicU64,
    sessions_opened: AtomicU64,
}

struct Inner {
    cfg: Arc<ClientConfig>,
    monc: Arc<MonClient>,
    /// One slot per OSD, each with its own lock, so connecting to a slow OSD
    /// does not hold up ops to the others.
    osds: Mutex<HashMap<ConnKey, Slot>>,
    tid: AtomicU64,
    watchers: Mutex<HashMap<u64, mpsc::UnboundedSender<WatchNotify>>>,
    cookie: AtomicU64,
    /// Bumped when an OSD lifts a backoff: in-flight ops resend at once.
    kick: tokio::sync::watch::Sender<u64>,
    /// msgr2 global_seq for OSD connections: rises with every connection
    /// attempt (and past any an OSD says it has seen).
    global_seq: AtomicU64,
    /// Per OSD: the address and closed-session slot of its last session,
    /// for a SESSION_RECONNECT after it drops.
    last_sessions: Mutex<HashMap<ConnKey, (SocketAddr, ClosedSlot)>>,
    reconnects: ReconnectCounters,
    /// Sessions opened per connection (for tests: one reconnect leaves the
    /// others' counts alone).
    opened: Mutex<HashMap<ConnKey, u64>>,
    /// Compressed frames in and out over all OSD sessions.
    compression: Arc<CompressionStats>,
}

/// A connected cluster handle.
#[derive(Clone)]
pub struct Rados {
    inner: Arc<Inner>,
}

/// Object metadata from `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    pub size: u64,
    pub mtime: UTime,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub nspace: String,
    pub oid: String,
    pub locator: String,
}

impl Rados {
    pub async fn connect(cfg: ClientConfig) -> Result<Rados> {
        let cfg = Arc::new(cfg);
        let monc = MonClient::connect(cfg.clone()).await?;
        monc.wait_for_osdmap(1, cfg.connect_timeout).await?;
        Ok(Rados {
            inner: Arc::new(Inner {
                cfg,
                monc,
                osds: Mutex::new(HashMap::new()),
                tid: AtomicU64::new(1),
                watchers: Mutex::new(HashMap::new()),
                cookie: AtomicU64::new(1),
                kick: tokio::sync::watch::channel(0).0,
                global_seq: AtomicU64::new(0),
                last_sessions: Mutex::new(HashMap::new()),
                reconnects: ReconnectCounters::default(),
                opened: Mutex::new(HashMap::new()),
                compression: Arc::new(CompressionStats::default()),
            }),
        })
    }

    pub fn monc(&self) -> &Arc<MonClient> {
        &self.inner.monc
    }
    pub fn osdmap(&self) -> Result<Arc<OsdMap>> {
        self.inner.monc.osdmap().ok_or(Error::Closed)
    }
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// An I/O context on a pool by name.
    pub fn ioctx(&self, pool: &str) -> Result<IoCtx> {
        let id = self.osdmap()?.pool_by_name(pool).ok_or_else(|| Error::NoPool(pool.to_string()))?;
        Ok(IoCtx { rados: self.clone(), pool: id, nspace: String::new(), snap_seq: 0, snaps: Vec::new(), read_snap: CEPH_NOSNAP })
    }

    pub fn pool_list(&self) -> Result<Vec<(i64, String)>> {
        Ok(self.osdmap()?.pool_names.iter().map(|(i, n)| (*i, n.clone())).collect())
    }

    /// Runs a mon command given as JSON.
    pub async fn mon_command(&self, cmd: serde_json::Value, input: &[u8]) -> Result<(Vec<u8>, String)> {
        self.inner.monc.command(&cmd, input).await
    }

    /// Waits until our map has caught up with the monitors' newest.
    pub async fn wait_for_latest_osdmap(&self) -> Result<Arc<OsdMap>> {
        let (v, _) = self.inner.monc.get_version("osdmap").await?;
        self.inner.monc.wait_for_osdmap(v as u32, self.inner.cfg.op_timeout).await
    }

    pub async fn pool_create(&self, name: &str, pg_num: u32) -> Result<()> {
        self.mon_command(serde_json::json!({"prefix": "osd pool create", "pool": name, "pg_num": pg_num, "pgp_num": pg_num}), b"")
            .await?;
        // tag it like `rados mkpool` users expect; ignore if the mon refuses
        let _ = self
            .mon_command(serde_json::json!({"prefix": "osd pool application enable", "pool": name, "app": "rados"}), b"")
            .await;
        self.wait_for_latest_osdmap().await?;
        Ok(())
    }

    pub async fn pool_delete(&self, name: &str) -> Result<()> {
        self.mon_command(
            serde_json::json!({"prefix": "osd pool rm", "pool": name, "pool2": name, "yes_i_really_really_mean_it": true}),
            b"",
        )
        .await?;
        self.wait_for_latest_osdmap().await?;
        Ok(())
    }

    pub fn shutdown(&self) {
        self.inner.monc.shutdown();
    }

    /// The connection mode (CON_MODE_CRC / CON_MODE_SECURE) negotiated with
    /// an OSD we have a session with.
    pub async fn osd_session_mode(&self, osd: i32) -> Option<u32> {
        let slots: Vec<Slot> = lock(&self.inner.osds).iter().filter(|(k, _)| k.0 == osd).map(|(_, v)| v.clone()).collect();
        for slot in slots {
            if let Some(s) = slot.lock().await.as_ref() {
                return Some(s.handle.mode);
            }
        }
        None
    }

    /// The compression negotiated on each open OSD session (None: plain).
    pub async fn osd_session_compression(&self) -> Vec<(ConnKey, Option<crate::proto::compress::Algorithm>)> {
        let slots: Vec<(ConnKey, Slot)> = lock(&self.inner.osds).iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut out = Vec::new();
        for (k, slot) in slots {
            if let Some(s) = slot.lock().await.as_ref() {
                out.push((k, s.handle.compression));
            }
        }
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// Compressed frames and bytes over all OSD sessions so far.
    pub fn compression_stats(&self) -> CompressionCounts {
        self.inner.compression.snapshot()
    }

    /// Sessions opened so far per (OSD, connection index).
    pub fn osd_sessions_opened(&self) -> BTreeMap<ConnKey, u64> {
        lock(&self.inner.opened).iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// The connection index ops on `oid` use (of `conns_per_osd`).
    pub fn conn_index(&self, oid: &str) -> usize {
        conn_index(oid.as_bytes(), self.inner.cfg.conns_per_osd)
    }

    /// Drops the TCP connection of one OSD session (for tests): the ops on
    /// it are resent on a new one; the OSD's other sessions stay.
    pub async fn drop_osd_connection(&self, osd: i32, index: usize) -> bool {
        let slot = lock(&self.inner.osds).get(&(osd, index)).cloned();
        let Some(slot) = slot else { return false };
        let taken = slot.lock().await.take();
        match taken {
            Some(s) => {
                s.shared.dead.store(true, Ordering::Release);
                s.shared.kill.notify_one();
                true
            }
            None => false,
        }
    }

    /// Drops all OSD sessions; the next op on each opens a new session
    /// (with the current tickets). Pending ops are resent.
    pub async fn reset_osd_sessions(&self) {
        lock(&self.inner.osds).clear();
        lock(&self.inner.last_sessions).clear();
    }

    /// Drops the TCP connection of every OSD session now, under whatever
    /// is in flight (for tests of the reconnect path): the ops are resent
    /// on a connection that first asks the OSD to resume the session.
    pub async fn drop_osd_connections(&self) {
        let slots: Vec<Slot> = lock(&self.inner.osds).values().cloned().collect();
        for slot in slots {
            if let Some(s) = slot.lock().await.take() {
                s.shared.dead.store(true, Ordering::Release);
                s.shared.kill.notify_one();
            }
        }
    }

    /// Reconnect attempts and how the OSDs answered them.
    pub fn reconnect_stats(&self) -> ReconnectStats {
        let c = &self.inner.reconnects;
        ReconnectStats {
            attempts: c.attempts.load(Ordering::Relaxed),
            resumed: c.resumed.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            full_resets: c.full_resets.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            ops_resent: c.ops_resent.load(Ordering::Relaxed),
            sessions_opened: c.sessions_opened.load(Ordering::Relaxed),
        }
    }

    /// The state of this OSD's last session, if it had the same address
    /// and its connection is gone (waits briefly for the handover). Used
    /// once: if this reconnect fails, the next attempt opens a new session
    /// without waiting (an OSD that went away answers nothing anyway).
    async fn session_to_resume(&self, key: ConnKey, addr: SocketAddr) -> Option<SessionResume> {
        let osd = key.0;
        let last = lock(&self.inner.last_sessions).remove(&key);
        let (last_addr, closed) = last?;
        if last_addr != addr {
            return None; // a restarted OSD (new nonce) or a moved one: nothing to resume
        }
        let until = Instant::now() + SESSION_HANDOVER_WAIT;
        loop {
            if let Some(s) = lock(&closed).take() {
                return Some(s);
            }
            if Instant::now() >= until {
                tracing::debug!(osd, "no session state handed over; opening a new session");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn session(&self, osd: i32, index: usize, map: &OsdMap) -> Result<Arc<OsdSession>> {
        let key: ConnKey = (osd, index);
        let addr = usize::try_from(osd)
            .ok()
            .and_then(|i| map.osd_addrs.get(i))
            .and_then(|a| a.v2())
            .and_then(|a| a.addr)
            .ok_or_else(|| Error::Config(format!("osd.{osd} has no msgr2 address in epoch {}", map.epoch)))?;
        let slot = lock(&self.inner.osds).entry(key).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(s) = guard.as_ref() {
            if s.addr == addr && s.alive() {
                return Ok(s.clone());
            }
        }
        // let go of a dead session's send handle so its connection closes
        // and hands over its state
        guard.take();
        let resume = self.session_to_resume(key, addr).await;
        let ticket = self
            .inner
            .monc
            .ticket(entity_type::OSD)
            .ok_or_else(|| Error::Auth("no OSD service ticket from the monitors".into()))?;
        let authz = Authorizer::build(self.inner.monc.global_id(), &ticket, rand::random::<u64>());
        let cfg = ConnConfig {
            peer_type: entity_type::OSD,
            peer_addr: usize::try_from(osd)
                .ok()
                .and_then(|i| map.osd_addrs.get(i))
                .and_then(|a| a.v2())
                .cloned()
                .unwrap_or_else(|| crate::proto::types::EntityAddr::msgr2(addr)),
            features: FEATURES_PACIFIC,
            modes: self.inner.cfg.osd_modes.clone(),
            global_id: self.inner.monc.global_id(),
            client_cookie: rand::random::<u64>() | 1,
            nonce: rand::random::<u32>(),
            global_seq: self.inner.global_seq.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let reconnecting = resume.is_some();
        let counters = &self.inner.reconnects;
        if reconnecting {
            counters.attempts.fetch_add(1, Ordering::Relaxed);
        }
        let auth = AuthMethod::Service(Box::new(authz));
        let compression = self
            .inner
            .cfg
            .compression
            .enabled()
            .then(|| (self.inner.cfg.compression.clone(), self.inner.compression.clone()));
        let timeout = self.inner.cfg.connect_timeout;
        // HELLO names what we authenticate as (a client, or for tests of
        // OSD-to-OSD policies such as compression, an OSD)
        let opts = net::ConnOptions { compression, entity_type: Some(self.inner.cfg.name.ty) };
        let est = match net::connect_full(addr, cfg, auth, timeout, Liveness::KEEPALIVE_ONLY, resume, opts).await {
            Ok(est) => est,
            Err(e) => {
                if reconnecting {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                if let Error::Conn { source: ConnError::StaleGlobalSeq { peer_global_seq }, .. } = &e {
                    self.inner.global_seq.fetch_max(*peer_global_seq, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        for a in &est.reconnect {
            match a {
                ReconnectAnswer::Resumed { .. } => counters.resumed.fetch_add(1, Ordering::Relaxed),
                ReconnectAnswer::Reset { full } => {
                    if *full {
                        counters.full_resets.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.resets.fetch_add(1, Ordering::Relaxed)
                }
                ReconnectAnswer::Retry { .. } => counters.retries.fetch_add(1, Ordering::Relaxed),
                ReconnectAnswer::RetryGlobal { global_seq } => {
                    self.inner.global_seq.fetch_max(*global_seq, Ordering::Relaxed);
                    counters.retries.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        tracing::debug!(
            osd,
            index,
            %addr,
            mode = est.handle.mode,
            compression = ?est.handle.compression.map(|a| a.name()),
            answers = ?est.reconnect,
            "osd session up"
        );
        counters.sessions_opened.fetch_add(1, Ordering::Relaxed);
        *lock(&self.inner.opened).entry(key).or_default() += 1;
        lock(&self.inner.last_sessions).insert(key, (addr, est.closed.clone()));
        let shared = Arc::new(SessionShared {
            pending: Arc::new(Mutex::new(HashMap::new())),
            dead: std::sync::atomic::AtomicBool::new(false),
            kill: tokio::sync::Notify::new(),
        });
        let s = Arc::new(OsdSession { handle: est.handle, addr, shared: shared.clone() });
        *guard = Some(s.clone());
        drop(guard);
        let weak = Arc::downgrade(&self.inner);
        let mut inbound = est.inbound;
        let pending = shared.pending.clone();
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = inbound.recv() => m,
                    _ = shared.kill.notified() => None,
                };
                let Some(m) = m else { break };
                let Some(inner) = weak.upgrade() else { return };
                match m.ty {
                    msg_type::OSD_OPREPLY => match msg::decode_osd_op_reply(&m) {
                        Ok(r) => {
                            if let Some(tx) = lock(&pending).remove(&r.tid) {
                                let _ = tx.send(r);
                            }
                        }
                        Err(e) => tracing::warn!(osd, error = %e, "undecodable op reply"),
                    },
                    msg_type::WATCH_NOTIFY => {
                        if let Ok(w) = msg::decode_watch_notify(&m) {
                            let tx = lock(&inner.watchers).get(&w.cookie).cloned();
                            if let Some(tx) = tx {
                                let _ = tx.send(w);
                            }
                        }
                    }
                    msg_type::OSD_MAP => inner.monc.handle_osd_map(&m),
                    msg_type::OSD_BACKOFF => match msg::decode_backoff(&m) {
                        // While blocked the OSD drops our ops for that range; ack the
                        // block, and resend everything in flight when it is lifted.
                        Ok(b) if b.op == msg::backoff_op::BLOCK => {
                            tracing::debug!(osd, pg = %b.pgid, "osd backoff: block");
                            let slot = lock(&inner.osds).get(&key).cloned();
                            let sess = match slot {
                                Some(sl) => sl.lock().await.clone(),
                                None => None,
                            };
                            if let Some(s) = sess {
                                s.handle.send(msg::backoff_ack(&b));
                            }
                        }
                        Ok(b) if b.op == msg::backoff_op::UNBLOCK => {
                            tracing::debug!(osd, pg = %b.pgid, "osd backoff: unblock");
                            inner.kick.send_modify(|k| *k += 1);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(osd, error = %e, "bad backoff message"),
                    },
                    other => tracing::trace!(osd, ty = other, "ignoring osd message"),
                }
            }
            // session gone: fail pending ops so they are resent elsewhere
            // (dead first, so an op registered after the clear sees it)
            shared.dead.store(true, Ordering::Release);
            drop(inbound);
            lock(&pending).clear();
        });
        Ok(s)
    }

    /// Submits ops on one object and waits for the reply. Returns the reply
    /// even when the overall result is negative (callers map errors).
    pub async fn submit(&self, t: &ObjectTarget, ops: &[OsdOp], flags: u32) -> Result<OsdOpReply> {
        let start = Instant::now();
        let r = self.submit_timed(t, ops, flags).await;
        let result = match &r {
            Ok(reply) if reply.result >= 0 => crate::metrics::OpResult::Ok,
            Ok(_) => crate::metrics::OpResult::Error,
            Err(_) => crate::metrics::OpResult::Failed,
        };
        crate::metrics::record(t.pool, flags & osd_flag::WRITE != 0, result, start.elapsed());
        r
    }

    async fn submit_timed(&self, t: &ObjectTarget, ops: &[OsdOp], flags: u32) -> Result<OsdOpReply> {
        let tid = self.inner.tid.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.inner.cfg.op_timeout;
        let mut attempt: i32 = 0;
        let mut maps = self.inner.monc.subscribe_osdmap();
        let mut kicks = self.inner.kick.subscribe();
        let mut renewed = false;
        loop {
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!("op on {}", t.oid)));
            }
            let map = self.inner.monc.osdmap().ok_or(Error::Closed)?;
            let pool = map.pools.get(&t.pool).ok_or_else(|| Error::NoPool(t.pool.to_string()))?;
            let (pgid, hash) = match t.pg {
                Some(pg) => (pg, pg.seed),
                None => {
                    let h = OsdMap::object_hash(pool, &t.oid, &t.nspace, t.key.as_deref());
                    (PgId { pool: t.pool as u64, seed: pool.raw_pg_to_pg(h) }, h)
                }
            };
            // As librados: hold writes while the pool or cluster is full or
            // writes are paused, reads while reads are paused, until a map
            // lifts it (the OSD silently drops a write to a full pool, so
            // sending it would only wait for our resend timer).
            let is_write = flags & osd_flag::WRITE != 0;
            let paused = if is_write {
                pool.flags & crate::proto::osdmap::pool_flag::FULL != 0
                    || map.flags & (osdmap_flag::FULL | osdmap_flag::PAUSEWR) != 0
            } else {
                map.flags & osdmap_flag::PAUSERD != 0
            };
            if paused {
                tracing::info!(pool = t.pool, epoch = map.epoch, "op paused (full or paused in the osdmap)");
                let _ = tokio::time::timeout_at(deadline.into(), maps.changed()).await;
                continue;
            }
            let pl = map.try_pg_to_up_acting(pgid)?.ok_or_else(|| Error::NoPool(t.pool.to_string()))?;
            let osd = pl.acting_primary;
            if osd < 0 {
                // no primary: wait for a better map
                let _ = tokio::time::timeout_at(deadline.into(), maps.changed()).await;
                continue;
            }
            let index = match t.pg {
                Some(pg) => conn_index(&pg.seed.to_le_bytes(), self.inner.cfg.conns_per_osd),
                None => conn_index(t.oid.as_bytes(), self.inner.cfg.conns_per_osd),
            };
            let session = match self.session(osd, index, &map).await {
                Ok(s) => s,
                Err(Error::Auth(e)) if !renewed => {
                    // the OSD refused our ticket (expired?): renew once and retry
                    tracing::info!(osd, error = %e, "osd refused our ticket; renewing");
                    renewed = true;
                    self.inner.monc.renew_tickets().await?;
                    continue;
                }
                Err(e @ Error::Auth(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(osd, error = %e, "osd connect failed, retrying");
                    let _ = tokio::time::timeout(Duration::from_millis(500), maps.changed()).await;
                    continue;
                }
            };
            let (tx, rx) = oneshot::channel();
            lock(&session.shared.pending).insert(tid, tx);
            if session.shared.dead.load(Ordering::Acquire) {
                // the dispatcher stopped between our lookup and now
                lock(&session.shared.pending).remove(&tid);
                continue;
            }
            let target = OsdOpTarget {
                pgid,
                hash,
                pool: t.pool,
                oid: t.oid.clone(),
                nspace: t.nspace.clone(),
                key: t.key.clone().unwrap_or_default(),
            };
            let f = flags | osd_flag::KNOWN_REDIR | if attempt > 0 { osd_flag::RETRY } else { 0 };
            // the encoding version follows the OSD's features (v8 for Pacific
            // through Reef, and for Squid too since we do not claim SERVER_SQUID)
            let m = msg::OsdOpRequest {
                tid,
                target: &target,
                epoch: map.epoch,
                flags: f,
                mtime: now_utime(),
                ops,
                // writes go to the head (the OSD refuses a write at a snapshot)
                snapid: if flags & osd_flag::WRITE != 0 { CEPH_NOSNAP } else { t.snapid },
                snap_seq: t.snap_seq,
                snaps: &t.snaps,
                retry_attempt: attempt,
                features: FEATURES_PACIFIC,
            }
            .encode(session.handle.features);
            if !session.handle.send(m) {
                lock(&session.shared.pending).remove(&tid);
                attempt += 1;
                continue;
            }
            let sent_epoch = map.epoch;
            let acting = pl.acting.clone();
            let moved = async {
                loop {
                    if maps.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    let Some(nm) = maps.borrow_and_update().clone() else { continue };
                    let Some(npl) = nm.pg_to_up_acting(pgid) else { return };
                    let forced = nm.pools.get(&t.pool).is_some_and(|p| p.last_force_op_resend > sent_epoch);
                    if npl.acting_primary != osd || npl.acting != acting || forced {
                        return;
                    }
                }
            };
            let resend_at = (Instant::now() + RESEND_AFTER).min(deadline);
            tokio::select! {
                r = rx => match r {
                    Ok(reply) => {
                        if reply.redirect || reply.result == -libc_errno::EAGAIN {
                            attempt += 1;
                            continue;
                        }
                        return Ok(reply);
                    }
                    Err(_) => {
                        // session dropped
                        self.inner.reconnects.ops_resent.fetch_add(1, Ordering::Relaxed);
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = moved => {
                    lock(&session.shared.pending).remove(&tid);
                    attempt += 1;
                }
                _ = tokio::time::sleep_until(resend_at.into()) => {
                    lock(&session.shared.pending).remove(&tid);
                    attempt += 1;
                }
                _ = kicks.changed() => {
                    lock(&session.shared.pending).remove(&tid);
                    attempt += 1;
                }
            }
        }
    }

    fn next_cookie(&self) -> u64 {
        self.inner.cookie.fetch_add(1, Ordering::Relaxed)
    }
}

/// Which of `n` connections to an OSD carries ops on this object: a
/// stable hash of the name, so every op on one object takes the same
/// connection and stays in order.
fn conn_index(name: &[u8], n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    (crate::proto::types::ceph_crc32c(0, name) as usize) % n
}

/// Where an op goes: pool/namespace/object (or an explicit PG for PG ops).
#[derive(Debug, Clone)]
pub struct ObjectTarget {
    pub pool: i64,
    pub nspace: String,
    pub oid: String,
    pub key: Option<String>,
    pub pg: Option<PgId>,
    /// The snapshot reads read (`CEPH_NOSNAP`: the head); writes always go
    /// to the head.
    pub snapid: u64,
    pub snap_seq: u64,
    pub snaps: Vec<u64>,
}

/// A compound operation: several ops applied atomically to one object.
#[derive(Debug, Clone, Default)]
pub struct Op {
    pub ops: Vec<OsdOp>,
}

impl Op {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(mut self, o: OsdOp) -> Self {
        self.ops.push(o);
        self
    }
    pub fn create(self, exclusive: bool) -> Self {
        self.push(OsdOp::new(osd_op::CREATE).with_flags(if exclusive { msg::OP_FLAG_EXCL } else { 0 }))
    }
    pub fn write(self, off: u64, data: &[u8]) -> Self {
        self.push(OsdOp::extent(osd_op::WRITE, off, data.len() as u64).with_indata(data.to_vec()))
    }
    pub fn write_full(self, data: &[u8]) -> Self {
        self.push(OsdOp::extent(osd_op::WRITEFULL, 0, data.len() as u64).with_indata(data.to_vec()))
    }
    pub fn append(self, data: &[u8]) -> Self {
        self.push(OsdOp::extent(osd_op::APPEND, 0, data.len() as u64).with_indata(data.to_vec()))
    }
    pub fn truncate(self, size: u64) -> Self {
        self.push(OsdOp::extent(osd_op::TRUNCATE, size, 0))
    }
    pub fn zero(self, off: u64, len: u64) -> Self {
        self.push(OsdOp::extent(osd_op::ZERO, off, len))
    }
    pub fn remove(self) -> Self {
        self.push(OsdOp::new(osd_op::DELETE))
    }
    pub fn read(self, off: u64, len: u64) -> Self {
        self.push(OsdOp::extent(osd_op::READ, off, len))
    }
    pub fn stat(self) -> Self {
        self.push(OsdOp::new(osd_op::STAT))
    }
    pub fn setxattr(self, name: &str, value: &[u8]) -> Self {
        self.push(OsdOp::xattr(osd_op::SETXATTR, name, value, 0, 0))
    }
    pub fn rmxattr(self, name: &str) -> Self {
        self.push(OsdOp::xattr(osd_op::RMXATTR, name, b"", 0, 0))
    }
    pub fn getxattr(self, name: &str) -> Self {
        self.push(OsdOp::xattr(osd_op::GETXATTR, name, b"", 0, 0))
    }
    pub fn getxattrs(self) -> Self {
        self.push(OsdOp::new(osd_op::GETXATTRS))
    }
    /// Fails the whole op with ECANCELED unless xattr `name` == `value`.
    pub fn cmpxattr_eq(self, name: &str, value: &[u8]) -> Self {
        // cmp_op 1 = EQ, mode 1 = string
        self.push(OsdOp::xattr(osd_op::CMPXATTR, name, value, 1, 1))
    }
    pub fn omap_set(self, kv: &[(&str, &[u8])]) -> Self {
        let mut d = Vec::new();
        d.put_u32_le(kv.len() as u32);
        let mut sorted: Vec<_> = kv.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in sorted {
            d.put_str(k);
            d.put_blob(v);
        }
        self.push(OsdOp::new(osd_op::OMAPSETVALS).with_indata(d))
    }
    pub fn omap_rm_keys(self, keys: &[&str]) -> Self {
        let mut d = Vec::new();
        let mut sorted = keys.to_vec();
        sorted.sort();
        d.put_u32_le(sorted.len() as u32);
        for k in sorted {
            d.put_str(k);
        }
        self.push(OsdOp::new(osd_op::OMAPRMKEYS).with_indata(d))
    }
    pub fn omap_clear(self) -> Self {
        self.push(OsdOp::new(osd_op::OMAPCLEAR))
    }
    pub fn omap_get_vals(self, start_after: &str, prefix: &str, max: u64) -> Self {
        let mut d = Vec::new();
        d.put_str(start_after);
        d.put_u64_le(max);
        d.put_str(prefix);
        self.push(OsdOp::new(osd_op::OMAPGETVALS).with_indata(d))
    }
    pub fn omap_get_keys(self, start_after: &str, max: u64) -> Self {
        let mut d = Vec::new();
        d.put_str(start_after);
        d.put_u64_le(max);
        self.push(OsdOp::new(osd_op::OMAPGETKEYS).with_indata(d))
    }
    /// Compare-and-...: fails with -(MAX_ERRNO + mismatch offset) unless the
    /// object's bytes at `off` equal `data`.
    pub fn cmpext(self, off: u64, data: &[u8]) -> Self {
        self.push(OsdOp::extent(osd_op::CMPEXT, off, data.len() as u64).with_indata(data.to_vec()))
    }
    pub fn exec(self, class: &str, method: &str, input: &[u8]) -> Self {
        self.push(OsdOp::call(class, method, input))
    }
    /// Rolls the object back to snapshot `snapid`.
    pub fn rollback(self, snapid: u64) -> Self {
        let mut o = OsdOp::new(osd_op::ROLLBACK);
        let mut a = &mut o.args[..];
        a.put_u64_le(snapid); // snap.snapid, the union's first field
        self.push(o)
    }
    fn is_write(&self) -> bool {
        self.ops.iter().any(|o| osd_op::is_write(o.op))
    }
}

/// How a compare step compares (Ceph's `CEPH_OSD_CMPXATTR_OP_*`). The
/// operand order is Ceph's and differs per step (checked on Pacific):
/// `cmpxattr` holds when `given OP stored` (`Gt` with "2" holds for a
/// stored "1"), `omap_cmp` when `stored OP given` (`Gt` with "v1" holds for
/// a stored "v2"). `omap_cmp` takes only `Eq`, `Lt` and `Gt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 1,
    Ne = 2,
    Gt = 3,
    Gte = 4,
    Lt = 5,
    Lte = 6,
}

/// A write transaction on one object, as librados's `ObjectWriteOperation`:
/// compare steps (`cmpxattr`, `cmpext`, `omap_cmp`) and mutations of data,
/// xattrs and omap, sent as one MOSDOp. The OSD runs the steps in order
/// and applies the mutations in one transaction only if every step
/// succeeds: a failed compare (ECANCELED, or `-(MAX_ERRNO + offset)` for
/// cmpext) leaves the object exactly as it was. Run it with
/// `IoCtx::operate(oid, op)`.
#[derive(Debug, Clone, Default)]
pub struct WriteOp {
    op: Op,
}

impl From<WriteOp> for Op {
    fn from(w: WriteOp) -> Op {
        w.op
    }
}

impl WriteOp {
    pub fn new() -> Self {
        Self::default()
    }
    fn with(mut self, f: impl FnOnce(Op) -> Op) -> Self {
        self.op = f(self.op);
        self
    }
    /// The steps so far.
    pub fn len(&self) -> usize {
        self.op.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.op.ops.is_empty()
    }
    /// Fails the transaction with ECANCELED unless xattr `name` compares
    /// to `value` as asked (byte-wise string comparison; a missing xattr
    /// compares as empty).
    pub fn cmpxattr(self, name: &str, cmp: CmpOp, value: &[u8]) -> Self {
        // mode 1 = CEPH_OSD_CMPXATTR_MODE_STRING
        self.with(|o| o.push(OsdOp::xattr(osd_op::CMPXATTR, name, value, cmp as u8, 1)))
    }
    /// As `cmpxattr`, comparing the xattr (a decimal number) with `value`.
    pub fn cmpxattr_u64(self, name: &str, cmp: CmpOp, value: u64) -> Self {
        // mode 2 = CEPH_OSD_CMPXATTR_MODE_U64: the operand is an le64
        self.with(|o| o.push(OsdOp::xattr(osd_op::CMPXATTR, name, &value.to_le_bytes(), cmp as u8, 2)))
    }
    /// Fails the transaction with `-(MAX_ERRNO + offset of the first
    /// mismatch)` unless the object's bytes at `off` equal `data`.
    pub fn cmpext(self, off: u64, data: &[u8]) -> Self {
        self.with(|o| o.cmpext(off, data))
    }
    /// Fails the transaction with ECANCELED unless each given value
    /// compares to the stored value of its omap key as asked (a missing
    /// key compares as empty; ENOENT when the object does not exist).
    pub fn omap_cmp(self, assertions: &[(&str, CmpOp, &[u8])]) -> Self {
        // map<string, pair<bufferlist, int>>, keys sorted as a std::map's
        let mut sorted = assertions.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted.dedup_by(|a, b| a.0 == b.0);
        let mut d = Vec::new();
        d.put_u32_le(sorted.len() as u32);
        for (k, cmp, v) in sorted {
            d.put_str(k);
            d.put_blob(v);
            d.put_i32_le(cmp as i32);
        }
        let len = d.len() as u64;
        self.with(|o| o.push(OsdOp::extent(osd_op::OMAP_CMP, 0, len).with_indata(d)))
    }
    pub fn create(self, exclusive: bool) -> Self {
        self.with(|o| o.create(exclusive))
    }
    pub fn write(self, off: u64, data: &[u8]) -> Self {
        self.with(|o| o.write(off, data))
    }
    pub fn write_full(self, data: &[u8]) -> Self {
        self.with(|o| o.write_full(data))
    }
    pub fn append(self, data: &[u8]) -> Self {
        self.with(|o| o.append(data))
    }
    pub fn truncate(self, size: u64) -> Self {
        self.with(|o| o.truncate(size))
    }
    pub fn zero(self, off: u64, len: u64) -> Self {
        self.with(|o| o.zero(off, len))
    }
    pub fn remove(self) -> Self {
        self.with(|o| o.remove())
    }
    pub fn setxattr(self, name: &str, value: &[u8]) -> Self {
        self.with(|o| o.setxattr(name, value))
    }
    pub fn rmxattr(self, name: &str) -> Self {
        self.with(|o| o.rmxattr(name))
    }
    pub fn omap_set(self, kv: &[(&str, &[u8])]) -> Self {
        self.with(|o| o.omap_set(kv))
    }
    pub fn omap_rm_keys(self, keys: &[&str]) -> Self {
        self.with(|o| o.omap_rm_keys(keys))
    }
    pub fn omap_clear(self) -> Self {
        self.with(|o| o.omap_clear())
    }
    /// Rolls the object back to snapshot `snapid` (a pool or self-managed
    /// snapshot).
    pub fn rollback(self, snapid: u64) -> Self {
        self.with(|o| o.rollback(snapid))
    }
}

/// Decoders for op outputs.
pub mod out {
    use super::*;

    pub fn stat(d: &[u8]) -> Result<ObjectStat> {
        let mut r = Reader::new(d);
        let size = r.u64("stat.size")?;
        let mtime = UTime::decode(&mut r)?;
        Ok(ObjectStat { size, mtime })
    }
    pub fn xattrs(d: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut r = Reader::new(d);
        let n = r.count(8, "xattrs")?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = r.string("xattr.name")?;
            m.insert(k, r.blob("xattr.value")?.to_vec());
        }
        Ok(m)
    }
    /// OMAPGETVALS output: (key -> value, more?).
    pub fn omap_vals(d: &[u8]) -> Result<(BTreeMap<String, Vec<u8>>, bool)> {
        let mut r = Reader::new(d);
        let n = r.count(8, "omap_vals")?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = r.string("omap.key")?;
            m.insert(k, r.blob("omap.value")?.to_vec());
        }
        let more = if r.is_empty() { false } else { r.bool("omap.more")? };
        Ok((m, more))
    }
    pub fn omap_keys(d: &[u8]) -> Result<(Vec<String>, bool)> {
        let mut r = Reader::new(d);
        let n = r.count(4, "omap_keys")?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(r.string("omap.key")?);
        }
        let more = if r.is_empty() { false } else { r.bool("omap.more")? };
        Ok((v, more))
    }
}

/// An I/O context: a pool, a namespace and a snapshot context.
#[derive(Clone)]
pub struct IoCtx {
    rados: Rados,
    pool: i64,
    nspace: String,
    snap_seq: u64,
    snaps: Vec<u64>,
    /// The snapshot reads read (`set_read`).
    read_snap: u64,
}

/// Reads an object chunk by chunk (`next` yields None at the end).
pub struct ReadStream {
    io: IoCtx,
    oid: String,
    off: u64,
    chunk: u64,
    done: bool,
}

impl ReadStream {
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let b = self.io.read(&self.oid, self.off, self.chunk).await?;
        if (b.len() as u64) < self.chunk {
            self.done = true;
        }
        if b.is_empty() {
            return Ok(None);
        }
        self.off += b.len() as u64;
        Ok(Some(b))
    }
}

/// Writes an object in chunks as data arrives; `finish` flushes the tail.
/// The first flushed chunk replaces the object (write_full), later ones
/// extend it, so a reader never sees a mix of old and new beyond `finish`.
pub struct WriteStream {
    io: IoCtx,
    oid: String,
    buf: Vec<u8>,
    off: u64,
    chunk: usize,
    started: bool,
}

impl WriteStream {
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let take = (self.chunk - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.chunk {
                self.flush().await?;
            }
        }
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        if !self.started {
            self.io.write_full(&self.oid, &self.buf).await?;
            self.started = true;
        } else if !self.buf.is_empty() {
            self.io.write(&self.oid, self.off, &self.buf).await?;
        }
        self.off += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
    /// Flushes what is buffered; returns the object size written.
    pub async fn finish(mut self) -> Result<u64> {
        self.flush().await?;
        Ok(self.off)
    }
}

/// An established watch on an object.
pub struct Watch {
    pub cookie: u64,
    pub oid: String,
    events: mpsc::UnboundedReceiver<WatchNotify>,
    ioctx: IoCtx,
}

impl Watch {
    /// Next notify (or disconnect) event.
    pub async fn next(&mut self) -> Option<WatchNotify> {
        self.events.recv().await
    }
    /// Acknowledges a notify with a reply payload.
    pub async fn ack(&self, notify_id: u64, reply: &[u8]) -> Result<()> {
        let mut d = Vec::new();
        d.put_u64_le(notify_id);
        d.put_u64_le(self.cookie);
        d.put_blob(reply);
        self.ioctx.operate_read(&self.oid, Op::new().push(OsdOp::new(osd_op::NOTIFY_ACK).with_indata(d))).await?;
        Ok(())
    }
    pub async fn unwatch(self) -> Result<()> {
        self.ioctx
            .operate(&self.oid, Op::new().push(OsdOp::watch(self.cookie, 0, 0)))
            .await?;
        lock(&self.ioctx.rados.inner.watchers).remove(&self.cookie);
        Ok(())
    }
}

impl IoCtx {
    pub fn pool_id(&self) -> i64 {
        self.pool
    }
    pub fn set_namespace(&mut self, ns: &str) {
        self.nspace = ns.to_string();
    }
    pub fn namespace(&self) -> &str {
        &self.nspace
    }
    /// Sets the snapshot context used by writes (self-managed snapshots):
    /// `seq` the newest snapshot id, `snaps` every live snapshot, newest
    /// first (librados's `selfmanaged_snap_set_write_ctx`).
    pub fn set_snap_context(&mut self, seq: u64, mut snaps: Vec<u64>) {
        snaps.sort_unstable_by(|a, b| b.cmp(a));
        self.snap_seq = seq;
        self.snaps = snaps;
    }
    /// Reads from now on read snapshot `snapid` (a pool or self-managed
    /// snapshot); `SNAP_HEAD` reads the head again (librados's
    /// `snap_set_read`). Writes always go to the head.
    pub fn set_read(&mut self, snapid: u64) {
        self.read_snap = snapid;
    }
    /// The snapshot reads read.
    pub fn read_snap(&self) -> u64 {
        self.read_snap
    }

    fn target(&self, oid: &str) -> ObjectTarget {
        ObjectTarget {
            pool: self.pool,
            nspace: self.nspace.clone(),
            oid: oid.to_string(),
            key: None,
            pg: None,
            snapid: self.read_snap,
            snap_seq: self.snap_seq,
            snaps: self.snaps.clone(),
        }
    }

    fn check(oid: &str, name: &'static str, r: OsdOpReply) -> Result<Vec<OpResult>> {
        if r.result < 0 {
            return Err(Error::Osd { op: name, object: oid.to_string(), errno: -r.result });
        }
        Ok(r.ops)
    }

    /// Runs a compound op (writes are applied atomically) and returns the
    /// per-op results.
    pub async fn operate(&self, oid: &str, op: impl Into<Op>) -> Result<Vec<OpResult>> {
        let op: Op = op.into();
        let flags = if op.is_write() { osd_flag::WRITE | osd_flag::ONDISK } else { osd_flag::READ };
        let r = self.rados.submit(&self.target(oid), &op.ops, flags).await?;
        Self::check(oid, if op.is_write() { "write op" } else { "read op" }, r)
    }

    async fn operate_read(&self, oid: &str, op: Op) -> Result<Vec<OpResult>> {
        let r = self.rados.submit(&self.target(oid), &op.ops, osd_flag::READ).await?;
        Self::check(oid, "read op", r)
    }

    async fn one(&self, oid: &str, name: &'static str, op: Op) -> Result<OpResult> {
        let flags = if op.is_write() { osd_flag::WRITE | osd_flag::ONDISK } else { osd_flag::READ };
        let r = self.rados.submit(&self.target(oid), &op.ops, flags).await?;
        let ops = Self::check(oid, name, r)?;
        ops.into_iter().next().ok_or_else(|| Error::Decode(crate::proto::enc::DecodeError::invalid("op reply", "no op results")))
    }

    pub async fn write(&self, oid: &str, off: u64, data: &[u8]) -> Result<()> {
        self.one(oid, "write", Op::new().write(off, data)).await.map(|_| ())
    }
    pub async fn write_full(&self, oid: &str, data: &[u8]) -> Result<()> {
        self.one(oid, "write_full", Op::new().write_full(data)).await.map(|_| ())
    }
    pub async fn append(&self, oid: &str, data: &[u8]) -> Result<()> {
        self.one(oid, "append", Op::new().append(data)).await.map(|_| ())
    }
    pub async fn create(&self, oid: &str, exclusive: bool) -> Result<()> {
        self.one(oid, "create", Op::new().create(exclusive)).await.map(|_| ())
    }
    pub async fn truncate(&self, oid: &str, size: u64) -> Result<()> {
        self.one(oid, "truncate", Op::new().truncate(size)).await.map(|_| ())
    }
    pub async fn remove(&self, oid: &str) -> Result<()> {
        self.one(oid, "remove", Op::new().remove()).await.map(|_| ())
    }
    pub async fn read(&self, oid: &str, off: u64, len: u64) -> Result<Bytes> {
        Ok(self.one(oid, "read", Op::new().read(off, len)).await?.outdata)
    }
    /// Reads a whole object (stat, then chunked reads).
    pub async fn read_full(&self, oid: &str) -> Result<Vec<u8>> {
        let st = self.stat(oid).await?;
        let mut out = Vec::with_capacity(st.size.min(1 << 30) as usize);
        let chunk = 4u64 << 20;
        let mut off = 0;
        while off < st.size {
            let b = self.read(oid, off, chunk.min(st.size - off)).await?;
            if b.is_empty() {
                break;
            }
            off += b.len() as u64;
            out.extend_from_slice(&b);
        }
        Ok(out)
    }
    /// A chunked reader over an object.
    pub fn read_stream(&self, oid: &str, chunk: u64) -> ReadStream {
        ReadStream { io: self.clone(), oid: oid.to_string(), off: 0, chunk: chunk.max(1), done: false }
    }
    /// A chunked writer into an object.
    pub fn write_stream(&self, oid: &str, chunk: usize) -> WriteStream {
        WriteStream { io: self.clone(), oid: oid.to_string(), buf: Vec::new(), off: 0, chunk: chunk.max(1), started: false }
    }

    /// Streams `data` into an object in chunks (first chunk replaces it).
    pub async fn write_chunked(&self, oid: &str, data: &[u8], chunk: usize) -> Result<()> {
        let chunk = chunk.max(1);
        if data.is_empty() {
            return self.write_full(oid, data).await;
        }
        for (i, c) in data.chunks(chunk).enumerate() {
            if i == 0 {
                self.write_full(oid, c).await?;
            } else {
                self.write(oid, (i * chunk) as u64, c).await?;
            }
        }
        Ok(())
    }
    pub async fn stat(&self, oid: &str) -> Result<ObjectStat> {
        out::stat(&self.one(oid, "stat", Op::new().stat()).await?.outdata)
    }
    pub async fn setxattr(&self, oid: &str, name: &str, value: &[u8]) -> Result<()> {
        self.one(oid, "setxattr", Op::new().setxattr(name, value)).await.map(|_| ())
    }
    pub async fn getxattr(&self, oid: &str, name: &str) -> Result<Vec<u8>> {
        Ok(self.one(oid, "getxattr", Op::new().getxattr(name)).await?.outdata.to_vec())
    }
    pub async fn rmxattr(&self, oid: &str, name: &str) -> Result<()> {
        self.one(oid, "rmxattr", Op::new().rmxattr(name)).await.map(|_| ())
    }
    pub async fn getxattrs(&self, oid: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        out::xattrs(&self.one(oid, "getxattrs", Op::new().getxattrs()).await?.outdata)
    }
    pub async fn omap_set(&self, oid: &str, kv: &[(&str, &[u8])]) -> Result<()> {
        self.one(oid, "omap_set", Op::new().omap_set(kv)).await.map(|_| ())
    }
    pub async fn omap_rm_keys(&self, oid: &str, keys: &[&str]) -> Result<()> {
        self.one(oid, "omap_rm_keys", Op::new().omap_rm_keys(keys)).await.map(|_| ())
    }
    pub async fn omap_clear(&self, oid: &str) -> Result<()> {
        self.one(oid, "omap_clear", Op::new().omap_clear()).await.map(|_| ())
    }
    /// All omap key/values (paged).
    pub async fn omap_get_vals(&self, oid: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut all = BTreeMap::new();
        let mut after = String::new();
        loop {
            let r = self.one(oid, "omap_get_vals", Op::new().omap_get_vals(&after, "", 512)).await?;
            let (m, more) = out::omap_vals(&r.outdata)?;
            let last = m.keys().next_back().cloned();
            all.extend(m);
            match (more, last) {
                (true, Some(l)) => after = l,
                _ => return Ok(all),
            }
        }
    }
    pub async fn omap_get_keys(&self, oid: &str) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let r = self.one(oid, "omap_get_keys", Op::new().omap_get_keys(&after, 512)).await?;
            let (v, more) = out::omap_keys(&r.outdata)?;
            let last = v.last().cloned();
            all.extend(v);
            match (more, last) {
                (true, Some(l)) => after = l,
                _ => return Ok(all),
            }
        }
    }
    /// Compare the object's bytes at `off` with `expect`; Ok(None) when
    /// equal, Ok(Some(offset)) of the first mismatch otherwise.
    pub async fn cmpext(&self, oid: &str, off: u64, expect: &[u8]) -> Result<Option<u64>> {
        match self.one(oid, "cmpext", Op::new().cmpext(off, expect)).await {
            Ok(_) => Ok(None),
            Err(Error::Osd { errno, .. }) if errno >= libc_errno::MAX_ERRNO => Ok(Some((errno - libc_errno::MAX_ERRNO) as u64)),
            Err(e) => Err(e),
        }
    }
    /// Calls an object class method.
    pub async fn exec(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> Result<Vec<u8>> {
        let op = Op::new().exec(class, method, input);
        let r = self.rados.submit(&self.target(oid), &op.ops, osd_flag::READ | osd_flag::WRITE | osd_flag::EXEC).await?;
        let ops = Self::check(oid, "exec", r)?;
        Ok(ops.into_iter().next().map(|o| o.outdata.to_vec()).unwrap_or_default())
    }

    /// Takes an advisory lock (cls_lock). `exclusive` or shared.
    pub async fn lock(&self, oid: &str, name: &str, cookie: &str, exclusive: bool, duration: Option<Duration>) -> Result<()> {
        let mut d = Vec::new();
        crate::proto::enc::encode_versioned(&mut d, 1, 1, |b| {
            b.put_str(name);
            b.put_u8(if exclusive { 1 } else { 2 });
            b.put_str(cookie);
            b.put_str(""); // tag
            b.put_str("weft"); // description
            UTime::from_duration(duration.unwrap_or_default()).encode(b);
            b.put_u8(0); // flags
        });
        self.exec(oid, "lock", "lock", &d).await.map(|_| ())
    }
    pub async fn unlock(&self, oid: &str, name: &str, cookie: &str) -> Result<()> {
        let mut d = Vec::new();
        crate::proto::enc::encode_versioned(&mut d, 1, 1, |b| {
            b.put_str(name);
            b.put_str(cookie);
        });
        self.exec(oid, "lock", "unlock", &d).await.map(|_| ())
    }

    /// Lists objects in every namespace of the pool.
    pub async fn list_all_namespaces(&self) -> Result<Vec<ListEntry>> {
        let mut all = self.clone();
        all.nspace = ALL_NSPACES.to_string();
        all.list().await
    }

    /// Lists objects in this namespace (PGNLS over every PG, with cursors).
    pub async fn list(&self) -> Result<Vec<ListEntry>> {
        let map = self.rados.osdmap()?;
        let pool = map.pools.get(&self.pool).ok_or_else(|| Error::NoPool(self.pool.to_string()))?;
        let pg_num = pool.pg_num;
        let mut out = Vec::new();
        for seed in 0..pg_num {
            // start at the PG's first hobject (what get_hobj_start() gives)
            let mut cursor = HObject { hash: seed, pool: self.pool, ..HObject::default() };
            let mut rounds = 0u32;
            loop {
                rounds += 1;
                if rounds > 1_000_000 {
                    break; // a PG that never ends its listing: give up rather than spin
                }
                let epoch = self.rados.osdmap()?.epoch;
                let t = ObjectTarget { pg: Some(PgId { pool: self.pool as u64, seed }), oid: String::new(), ..self.target("") };
                let ops = [OsdOp::pgls(osd_op::PGNLS, LIST_CHUNK, epoch, &cursor)];
                let r = self.rados.submit(&t, &ops, osd_flag::READ | osd_flag::PGOP).await?;
                if r.result < 0 && r.result != -1 {
                    return Err(Error::Osd { op: "list", object: format!("pg {}.{seed:x}", self.pool), errno: -r.result });
                }
                let Some(o) = r.ops.first() else { break };
                let (next, entries) = msg::decode_pgnls_response(&o.outdata)?;
                let n = entries.len();
                for (nspace, oid, locator) in entries {
                    out.push(ListEntry { nspace, oid, locator });
                }
                // result 1 = this PG is exhausted (the handle then points at its end)
                if r.result == 1 || next.max || (n == 0 && next == cursor) {
                    break;
                }
                cursor = next;
            }
        }
        Ok(out)
    }

    /// Registers a watch; notifies arrive on the returned `Watch`.
    pub async fn watch(&self, oid: &str) -> Result<Watch> {
        let cookie = self.rados.next_cookie();
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.rados.inner.watchers).insert(cookie, tx);
        // CEPH_OSD_WATCH_OP_WATCH = 3 (watch op ids are odd)
        if let Err(e) = self.operate(oid, Op::new().push(OsdOp::watch(cookie, 3, 0))).await {
            lock(&self.rados.inner.watchers).remove(&cookie);
            return Err(e);
        }
        Ok(Watch { cookie, oid: oid.to_string(), events: rx, ioctx: self.clone() })
    }

    /// Sends a notify and waits for all watchers' acks (or the timeout).
    /// Returns the completion payload (acks and timeouts, Ceph-encoded).
    pub async fn notify(&self, oid: &str, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let cookie = self.rados.next_cookie();
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.rados.inner.watchers).insert(cookie, tx);
        let mut d = Vec::new();
        d.put_u32_le(1); // prot_ver
        d.put_u32_le(timeout.as_secs().max(1) as u32);
        d.put_blob(payload);
        let res = self.operate_read(oid, Op::new().push(OsdOp::notify(cookie).with_indata(d))).await;
        let out = match res {
            Ok(_) => {
                let wait = tokio::time::timeout(timeout + Duration::from_secs(5), async {
                    while let Some(ev) = rx.recv().await {
                        if ev.opcode == msg::watch_event::NOTIFY_COMPLETE {
                            return Some(ev);
                        }
                    }
                    None
                })
                .await;
                match wait {
                    Ok(Some(ev)) if ev.return_code < 0 => {
                        Err(Error::Osd { op: "notify", object: oid.to_string(), errno: -ev.return_code })
                    }
                    Ok(Some(ev)) => Ok(ev.payload),
                    _ => Err(Error::Timeout(format!("notify on {oid}"))),
                }
            }
            Err(e) => Err(e),
        };
        lock(&self.rados.inner.watchers).remove(&cookie);
        out
    }

    /// Creates a pool snapshot (mon command) and returns nothing; pool
    /// snapshots then appear in the pool's `snaps`.
    pub async fn snap_create(&self, name: &str) -> Result<()> {
        let pool = self.pool_name()?;
        self.rados.mon_command(serde_json::json!({"prefix": "osd pool mksnap", "pool": pool, "snap": name}), b"").await?;
        self.rados.wait_for_latest_osdmap().await?;
        Ok(())
    }
    pub async fn snap_remove(&self, name: &str) -> Result<()> {
        let pool = self.pool_name()?;
        self.rados.mon_command(serde_json::json!({"prefix": "osd pool rmsnap", "pool": pool, "snap": name}), b"").await?;
        self.rados.wait_for_latest_osdmap().await?;
        Ok(())
    }
    pub fn snap_list(&self) -> Result<Vec<(u64, String)>> {
        Ok(self.pool_snaps()?.into_iter().map(|s| (s.snapid, s.name)).collect())
    }
    /// The pool's snapshots (id, time taken, name), by id.
    pub fn pool_snaps(&self) -> Result<Vec<crate::proto::osdmap::PoolSnap>> {
        let m = self.rados.osdmap()?;
        let mut v = m.pools.get(&self.pool).map(|p| p.snaps.clone()).unwrap_or_default();
        v.sort_by_key(|s| s.snapid);
        Ok(v)
    }
    /// The id of the pool snapshot `name` (ENOENT as `Error::Osd` if none).
    pub fn snap_lookup(&self, name: &str) -> Result<u64> {
        self.pool_snaps()?
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.snapid)
            .ok_or_else(|| Error::Osd { op: "snap_lookup", object: name.to_string(), errno: libc_errno::ENOENT })
    }
    /// Rolls `oid` back to the pool snapshot `name` (librados's
    /// `snap_rollback`).
    pub async fn snap_rollback(&self, oid: &str, name: &str) -> Result<()> {
        let id = self.snap_lookup(name)?;
        self.one(oid, "rollback", Op::new().rollback(id)).await.map(|_| ())
    }
    /// Creates a self-managed snapshot (MPoolOp to the monitor) and
    /// returns its id; writes then need a snap context that includes it
    /// (`set_snap_context`). Waits for the osdmap that holds it.
    pub async fn selfmanaged_snap_create(&self) -> Result<u64> {
        let pool = u32::try_from(self.pool).map_err(|_| Error::NoPool(self.pool.to_string()))?;
        let (data, epoch) = self.rados.inner.monc.pool_op(pool, msg::pool_op::CREATE_UNMANAGED_SNAP, 0).await?;
        let id = Reader::new(&data).u64("selfmanaged snap id")?;
        self.rados.inner.monc.wait_for_osdmap(epoch, self.rados.inner.cfg.op_timeout).await?;
        Ok(id)
    }
    /// Removes a self-managed snapshot (its clones are trimmed by the OSDs).
    pub async fn selfmanaged_snap_remove(&self, snapid: u64) -> Result<()> {
        let pool = u32::try_from(self.pool).map_err(|_| Error::NoPool(self.pool.to_string()))?;
        let (_, epoch) = self.rados.inner.monc.pool_op(pool, msg::pool_op::DELETE_UNMANAGED_SNAP, snapid).await?;
        self.rados.inner.monc.wait_for_osdmap(epoch, self.rados.inner.cfg.op_timeout).await?;
        Ok(())
    }
    /// Rolls `oid` back to self-managed snapshot `snapid`, written with
    /// this context's snap context.
    pub async fn selfmanaged_snap_rollback(&self, oid: &str, snapid: u64) -> Result<()> {
        self.one(oid, "rollback", Op::new().rollback(snapid)).await.map(|_| ())
    }
    fn pool_name(&self) -> Result<String> {
        self.rados.osdmap()?.pool_names.get(&self.pool).cloned().ok_or_else(|| Error::NoPool(self.pool.to_string()))
    }
}
