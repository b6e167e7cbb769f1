//! Monitor client: hunts for a monitor, authenticates with CephX (and keeps
//! the tickets), subscribes to the monmap and osdmap, runs mon commands and
//! MON_GET_VERSION, and reconnects (reclaiming its global_id) when the
//! session drops.

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::net::{self, ConnHandle};
use crate::proto::cephx::{CephxClient, Ticket};
use crate::proto::conn::{AuthMethod, ConnConfig, FEATURES_PACIFIC};
use crate::proto::monmap::MonMap;
use crate::proto::msg::{self, msg_type, Message, MonCommandAck};
use crate::proto::osdmap::OsdMap;
use crate::proto::types::{entity_type, EntityAddr, Fsid};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Services we hold tickets for.
const WANT_KEYS: u32 = entity_type::MON | entity_type::OSD | entity_type::MGR;
/// Longest pause between hunting rounds.
const HUNT_BACKOFF_MAX: Duration = Duration::from_secs(3);

struct State {
    cephx: CephxClient,
    monmap: Option<MonMap>,
    fsid: Fsid,
    session: Option<ConnHandle>,
    /// Commands in flight, kept for resending after a reconnect.
    commands: HashMap<u64, (Message, oneshot::Sender<MonCommandAck>)>,
    versions: HashMap<u64, (Message, oneshot::Sender<(u64, u64)>)>,
    global_seq: u64,
    shutdown: bool,
    /// Waiter for the reply to a ticket renewal.
    auth_waiter: Option<oneshot::Sender<Result<()>>>,
}

pub struct MonClient {
    cfg: Arc<ClientConfig>,
    state: Mutex<State>,
    osdmap: watch::Sender<Option<Arc<OsdMap>>>,
    tid: AtomicU64,
    /// The mode the current mon session negotiated (for tests and `status`).
    pub mode: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // a panic while holding the lock is a bug elsewhere; keep serving
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MonClient {
    /// Connects to a monitor (trying each in turn) and authenticates.
    pub async fn connect(cfg: Arc<ClientConfig>) -> Result<Arc<MonClient>> {
        let cephx = CephxClient::new(cfg.name.clone(), cfg.key.clone(), WANT_KEYS);
        let (tx, _) = watch::channel(None);
        let mc = Arc::new(MonClient {
            cfg,
            state: Mutex::new(State {
                cephx,
                monmap: None,
                fsid: Fsid::default(),
                session: None,
                commands: HashMap::new(),
                versions: HashMap::new(),
                global_seq: 0,
                shutdown: false,
                auth_waiter: None,
            }),
            osdmap: tx,
            tid: AtomicU64::new(1),
            mode: AtomicU64::new(0),
        });
        let inbound = mc.hunt(true).await?;
        mc.spawn_renewal();
        let weak = Arc::downgrade(&mc);
        tokio::spawn(async move {
            let mut inbound = inbound;
            loop {
                while let Some(m) = inbound.recv().await {
                    let Some(mc) = weak.upgrade() else { return };
                    mc.dispatch(m);
                }
                let Some(mc) = weak.upgrade() else { return };
                if lock(&mc.state).shutdown {
                    return;
                }
                tracing::info!("mon session lost, hunting");
                match mc.hunt(false).await {
                    Ok(i) => inbound = i,
                    Err(e) => {
                        tracing::warn!(error = %e, "mon hunt failed");
                        return;
                    }
                }
            }
        });
        Ok(mc)
    }

    fn mon_addrs(&self) -> Vec<SocketAddr> {
        let st = lock(&self.state);
        let mut v: Vec<SocketAddr> = st
            .monmap
            .as_ref()
            .map(|m| m.mons.iter().filter_map(|i| i.addrs.v2().and_then(|a| a.addr)).collect())
            .unwrap_or_default();
        if v.is_empty() {
            v = self.cfg.mon_addrs.clone();
        }
        v
    }

    /// Hunts for a monitor: tries `mon_hunt_parallel` monitors at once (in
    /// a random order, so clients spread over the quorum) and keeps the
    /// first session that finishes authenticating; the slower attempts are
    /// dropped. A stopped monitor that still accepts TCP connections thus
    /// costs nothing while another one answers. The first call fails after
    /// one round (so a wrong key is reported promptly); later calls keep
    /// hunting until shutdown.
    async fn hunt(&self, first: bool) -> Result<tokio::sync::mpsc::Receiver<Message>> {
        let mut backoff = Duration::from_millis(100);
        let parallel = self.cfg.mon_hunt_parallel.max(1);
        loop {
            let mut addrs = self.mon_addrs();
            if !addrs.is_empty() {
                let k = rand::random::<usize>() % addrs.len();
                addrs.rotate_left(k);
            }
            let mut last_err = None;
            for wave in addrs.chunks(parallel) {
                let mut tries = tokio::task::JoinSet::new();
                for &a in wave {
                    let (cephx, gseq) = {
                        let mut st = lock(&self.state);
                        st.global_seq += 1;
                        (st.cephx.clone(), st.global_seq)
                    };
                    let cfg = ConnConfig {
                        peer_type: entity_type::MON,
                        peer_addr: EntityAddr::msgr2(a),
                        features: FEATURES_PACIFIC,
                        modes: self.cfg.mon_modes.clone(),
                        global_id: cephx.global_id,
                        client_cookie: rand::random::<u64>() | 1,
                        nonce: rand::random::<u32>(),
                        global_seq: gseq,
                    };
                    let timeout = self.cfg.connect_timeout;
                    let live = net::Liveness::ping_timeout(self.cfg.mon_ping_timeout);
                    tries.spawn(async move {
                        (a, net::connect_with(a, cfg, AuthMethod::Mon(Box::new(cephx)), timeout, live).await)
                    });
                }
                while let Some(joined) = tries.join_next().await {
                    let Ok((a, r)) = joined else { continue };
                    match r {
                        Ok(est) => {
                            // dropping the set cancels the slower attempts
                            drop(tries);
                            tracing::info!(mon = %a, mode = est.handle.mode, global_id = est.handle.global_id, "mon session up");
                            self.mode.store(est.handle.mode as u64, Ordering::Relaxed);
                            self.on_session(est.handle, est.cephx);
                            return Ok(est.inbound);
                        }
                        Err(e @ Error::Auth(_)) if first => return Err(e),
                        Err(Error::Auth(e)) => {
                            // after a long outage our old ticket may have expired and the
                            // reclaim is refused: start over as a new session
                            tracing::warn!(mon = %a, error = %e, "re-authentication refused; retrying without reclaim");
                            let mut st = lock(&self.state);
                            st.cephx = CephxClient::new(self.cfg.name.clone(), self.cfg.key.clone(), WANT_KEYS);
                            last_err = Some(Error::Auth(e));
                        }
                        Err(e) => {
                            tracing::debug!(mon = %a, error = %e, "mon connect failed");
                            last_err = Some(e);
                        }
                    }
                }
            }
            if first {
                return Err(last_err.unwrap_or_else(|| Error::Config("no monitors".into())));
            }
            if lock(&self.state).shutdown {
                return Err(Error::Closed);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(HUNT_BACKOFF_MAX);
        }
    }

    fn on_session(&self, h: ConnHandle, cephx: Option<CephxClient>) {
        let epoch = self.osdmap.borrow().as_ref().map(|m| m.epoch).unwrap_or(0);
        let mut st = lock(&self.state);
        if let Some(c) = cephx {
            st.cephx = c;
        }
        // subscribe first, then replay what was in flight
        let start = if epoch > 0 { epoch as u64 + 1 } else { 0 };
        h.send(msg::mon_subscribe(&[("monmap", 0, 0), ("osdmap", start, 0)], "weft"));
        for (m, _) in st.commands.values() {
            h.send(m.clone());
        }
        for (m, _) in st.versions.values() {
            h.send(m.clone());
        }
        st.session = Some(h);
    }

    fn dispatch(&self, m: Message) {
        match m.ty {
            msg_type::MON_MAP => match msg::decode_mon_map(&m).and_then(|b| MonMap::decode(&b)) {
                Ok(mm) => {
                    let mut st = lock(&self.state);
                    st.fsid = mm.fsid;
                    st.monmap = Some(mm);
                }
                Err(e) => tracing::warn!(error = %e, "undecodable monmap from monitor"),
            },
            msg_type::OSD_MAP => self.handle_osd_map(&m),
            msg_type::MON_COMMAND_ACK => match msg::decode_mon_command_ack(&m) {
                Ok(ack) => {
                    if let Some((_, tx)) = lock(&self.state).commands.remove(&ack.tid) {
                        let _ = tx.send(ack);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "bad mon command ack"),
            },
            // pool op replies share the command table (tids are unique)
            msg_type::POOLOP_REPLY => match msg::decode_pool_op_reply(&m) {
                Ok(ack) => {
                    if let Some((_, tx)) = lock(&self.state).commands.remove(&ack.tid) {
                        let _ = tx.send(ack);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "bad pool op reply"),
            },
            msg_type::MON_GET_VERSION_REPLY => {
                if let Ok((h, v, o)) = msg::decode_mon_get_version_reply(&m) {
                    if let Some((_, tx)) = lock(&self.state).versions.remove(&h) {
                        let _ = tx.send((v, o));
                    }
                }
            }
            msg_type::AUTH_REPLY => {
                let mut st = lock(&self.state);
                let r = match msg::decode_auth_reply(&m) {
                    Ok((_, 0, _, bl, _)) => st.cephx.handle_principal_reply(&bl).map_err(Error::from),
                    Ok((_, res, _, _, txt)) => Err(Error::Auth(format!("ticket renewal refused ({res}): {txt}"))),
                    Err(e) => Err(Error::Decode(e)),
                };
                if let Err(e) = &r {
                    tracing::warn!(error = %e, "ticket renewal failed");
                }
                if let Some(w) = st.auth_waiter.take() {
                    let _ = w.send(r);
                }
            }
            _ => tracing::trace!(ty = m.ty, "ignoring mon message"),
        }
    }

    /// Applies an MOSDMap (from a mon or an OSD) to our map.
    pub fn handle_osd_map(&self, m: &Message) {
        let mm = match msg::decode_osd_map(m) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable MOSDMap");
                return;
            }
        };
        let cur = self.osdmap.borrow().clone();
        let mut map: Option<OsdMap> = cur.as_deref().cloned();
        let mut changed = false;
        loop {
            let epoch = map.as_ref().map(|m| m.epoch).unwrap_or(0);
            if let Some((_, inc)) = mm.incrementals.iter().find(|(e, _)| *e == epoch + 1).filter(|_| map.is_some()) {
                if let Some(m) = map.as_mut() {
                    match m.apply_incremental(inc) {
                        Ok(()) => {
                            changed = true;
                            continue;
                        }
                        Err(e) => tracing::warn!(error = %e, epoch = epoch + 1, "bad incremental osdmap"),
                    }
                }
            }
            // otherwise jump to the newest full map beyond what we have
            if let Some((_, full)) = mm.maps.iter().filter(|(e, _)| *e > epoch).max_by_key(|(e, _)| *e) {
                match OsdMap::decode(full) {
                    Ok(f) => {
                        map = Some(f);
                        changed = true;
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "bad full osdmap"),
                }
            }
            break;
        }
        let have = map.as_ref().map(|m| m.epoch).unwrap_or(0);
        if changed {
            if let Some(m) = map {
                tracing::debug!(epoch = m.epoch, "osdmap updated");
                self.osdmap.send_replace(Some(Arc::new(m)));
            }
        }
        if mm.newest > have {
            // a gap: ask for what we miss
            if let Some(s) = lock(&self.state).session.as_ref() {
                s.send(msg::mon_subscribe(&[("osdmap", have as u64 + 1, msg::SUBSCRIBE_ONETIME)], "weft"));
            }
        }
    }

    pub fn subscribe_osdmap(&self) -> watch::Receiver<Option<Arc<OsdMap>>> {
        self.osdmap.subscribe()
    }
    pub fn osdmap(&self) -> Option<Arc<OsdMap>> {
        self.osdmap.borrow().clone()
    }

    /// Waits until we hold an osdmap with at least `epoch`.
    pub async fn wait_for_osdmap(&self, epoch: u32, timeout: Duration) -> Result<Arc<OsdMap>> {
        let mut rx = self.osdmap.subscribe();
        let fut = async {
            loop {
                if let Some(m) = rx.borrow_and_update().clone() {
                    if m.epoch >= epoch {
                        return Ok(m);
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| Error::Timeout(format!("waiting for osdmap epoch {epoch}")))?
    }

    pub fn fsid(&self) -> Fsid {
        lock(&self.state).fsid
    }
    pub fn global_id(&self) -> u64 {
        lock(&self.state).cephx.global_id
    }
    pub fn ticket(&self, service: u32) -> Option<Ticket> {
        lock(&self.state).cephx.tickets.get(&service).cloned()
    }
    pub fn monmap(&self) -> Option<MonMap> {
        lock(&self.state).monmap.clone()
    }

    /// Runs a monitor command (JSON), returning (output, status string).
    pub async fn command(&self, cmd: &serde_json::Value, input: &[u8]) -> Result<(Vec<u8>, String)> {
        let tid = self.tid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            let m = msg::mon_command(tid, &st.fsid, &cmd.to_string(), input);
            if let Some(s) = st.session.as_ref() {
                s.send(m.clone());
            }
            st.commands.insert(tid, (m, tx));
        }
        let ack = tokio::time::timeout(self.cfg.op_timeout, rx)
            .await
            .map_err(|_| {
                lock(&self.state).commands.remove(&tid);
                Error::Timeout(format!("mon command {cmd}"))
            })?
            .map_err(|_| Error::Closed)?;
        if ack.r < 0 {
            return Err(Error::Mon { errno: -ack.r, rs: ack.rs });
        }
        Ok((ack.data.to_vec(), ack.rs))
    }

    /// Sends an MPoolOp (self-managed snapshots) and waits for its reply;
    /// resent on a new session like commands. Returns the reply's data and
    /// the osdmap epoch that holds the change.
    pub async fn pool_op(&self, pool: u32, op: u32, snapid: u64) -> Result<(Vec<u8>, u32)> {
        let tid = self.tid.fetch_add(1, Ordering::Relaxed);
        let epoch = self.osdmap().map(|m| m.epoch).unwrap_or(0);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            let m = msg::pool_op(tid, &st.fsid, epoch, pool, op, snapid, "");
            if let Some(s) = st.session.as_ref() {
                s.send(m.clone());
            }
            st.commands.insert(tid, (m, tx));
        }
        let ack = tokio::time::timeout(self.cfg.op_timeout, rx)
            .await
            .map_err(|_| {
                lock(&self.state).commands.remove(&tid);
                Error::Timeout(format!("pool op {op:#x} on pool {pool}"))
            })?
            .map_err(|_| Error::Closed)?;
        if ack.r < 0 {
            return Err(Error::Mon { errno: -ack.r, rs: format!("pool op {op:#x} on pool {pool}") });
        }
        Ok((ack.data.to_vec(), ack.epoch))
    }

    /// MON_GET_VERSION: (newest, oldest) version of `what` ("osdmap", ...).
    pub async fn get_version(&self, what: &str) -> Result<(u64, u64)> {
        let tid = self.tid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            let m = msg::mon_get_version(tid, what);
            if let Some(s) = st.session.as_ref() {
                s.send(m.clone());
            }
            st.versions.insert(tid, (m, tx));
        }
        tokio::time::timeout(self.cfg.op_timeout, rx)
            .await
            .map_err(|_| Error::Timeout(format!("get_version {what}")))?
            .map_err(|_| Error::Closed)
    }

    /// Renews the service tickets (MON/OSD/MGR) with GET_PRINCIPAL_SESSION_KEY
    /// over the current session; new OSD sessions then use the new tickets.
    pub async fn renew_tickets(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            let req = st
                .cephx
                .principal_request(WANT_KEYS, rand::random::<u64>())
                .ok_or_else(|| Error::Auth("no auth ticket to renew with".into()))?;
            let epoch = st.monmap.as_ref().map(|m| m.epoch).unwrap_or(0);
            let s = st.session.clone().ok_or(Error::Closed)?;
            st.auth_waiter = Some(tx);
            s.send(msg::mon_auth(&req, epoch));
        }
        tokio::time::timeout(self.cfg.op_timeout, rx)
            .await
            .map_err(|_| Error::Timeout("ticket renewal".into()))?
            .map_err(|_| Error::Closed)?
    }

    /// Renews tickets at three quarters of their validity, forever.
    fn spawn_renewal(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let wait = {
                    let Some(mc) = weak.upgrade() else { return };
                    let secs = mc.ticket(entity_type::OSD).map(|t| t.validity.sec as u64).unwrap_or(3600);
                    Duration::from_secs((secs * 3 / 4).max(30))
                };
                tokio::time::sleep(wait).await;
                let Some(mc) = weak.upgrade() else { return };
                if lock(&mc.state).shutdown {
                    return;
                }
                if let Err(e) = mc.renew_tickets().await {
                    tracing::warn!(error = %e, "ticket renewal failed; retrying in 30 s");
                    drop(mc);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        });
    }

    /// The monitor the current session is with, if any.
    pub fn session_peer(&self) -> Option<SocketAddr> {
        lock(&self.state).session.as_ref().filter(|s| !s.is_closed()).map(|s| s.peer)
    }

    /// Drops the current mon session (tests use it to exercise hunting).
    pub fn kick_session(&self) {
        lock(&self.state).session = None;
    }

    pub fn shutdown(&self) {
        let mut st = lock(&self.state);
        st.shutdown = true;
        st.session = None;
    }
}
