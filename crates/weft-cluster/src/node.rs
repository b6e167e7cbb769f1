//! The tokio driver of one cluster node: one task owns the [`MultiRaft`],
//! one timer ticks every group, one transport carries every group's
//! messages. Callers talk to it through [`ClusterNode`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft::prelude::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use rand::SeedableRng;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::Frame;
use crate::error::{ClusterError, Result};
use crate::host::{GroupId, GroupStatus, MultiRaft, NodeId, RaftTuning, META_GROUP};
use crate::meta::{MetaCommand, MetaResponse, MetaSm, MetaState, NodeInfo, Role};
use crate::storage::FileDisk;
use crate::transport::{PeerStatus, Transport, TransportSecurity};

/// Everything a node needs to join the cluster (config keys `cluster.*`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Raft listen address (`cluster.addr`).
    pub addr: String,
    /// Founding members, this node included (`cluster.peers`).
    pub peers: BTreeMap<NodeId, String>,
    pub roles: Vec<Role>,
    /// Do not found the metadata group: wait to be added by `cluster.add_node`.
    pub join: bool,
    /// This node's native protocol address, for forwarding and status.
    pub native_addr: Option<String>,
    pub data_dir: PathBuf,
    pub tick_ms: u64,
    pub max_frame_bytes: u32,
    pub propose_timeout_ms: u64,
    /// Commands queued to the driver before callers get `busy`.
    pub max_pending: usize,
    pub tuning: RaftTuning,
    /// The node's log: committed records of hosted partitions are applied into it.
    /// None: partition groups run without records (tests of the raft layer).
    pub log: Option<weft_log::Log>,
}

/// Parse `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| ClusterError::Config(format!("peer {part:?}: expected ID=HOST:PORT")))?;
        let id: NodeId = id.trim().parse().map_err(|_| ClusterError::Config(format!("peer {part:?}: id is not a number")))?;
        if id == 0 {
            return Err(ClusterError::Config("node ids start at 1".into()));
        }
        if out.insert(id, addr.trim().to_owned()).is_some() {
            return Err(ClusterError::Config(format!("peer id {id} given twice")));
        }
    }
    Ok(out)
}

enum Cmd {
    /// `trace`: the proposer's `traceparent` (its current span), carried in
    /// the entry's context so every replica's append, fsync and apply join
    /// the caller's trace (docs/observability.md, "Traces").
    Propose { group: GroupId, data: Vec<u8>, trace: Option<String>, reply: oneshot::Sender<Result<Vec<u8>>> },
    /// A proposal answered once this node has the entry in its own synced
    /// raft log (acks=leader): an empty answer then, or the apply answer if
    /// it applied in the same round.
    ProposePersisted { group: GroupId, data: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>>> },
    ConfChange { group: GroupId, cc: ConfChangeV2, context: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>>> },
    ReadIndex { group: GroupId, reply: oneshot::Sender<Result<()>> },
    Status { reply: oneshot::Sender<Vec<GroupStatus>> },
}

/// A node's view of the cluster, for `cluster.status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub roles: Vec<Role>,
    pub meta_leader: Option<NodeId>,
    pub meta_leader_addr: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub groups: Vec<GroupStatus>,
    pub partitions: Vec<PartitionStatus>,
    pub topics: usize,
    pub meta_applied: u64,
    /// The rebalancer (docs/cluster.md, "Rebalancer"): moves in flight, and
    /// moves finished and cancelled since the cluster began (this node's metadata).
    pub moves: Vec<crate::meta::Move>,
    pub moves_done: u64,
    pub moves_cancelled: u64,
    /// Replicated tables (for `weft top` and the dashboard).
    pub tables: Vec<TableStatus>,
    /// This node's partition appliers since start: appends to the local
    /// copies, what they held, and which `cluster.apply_batch_*` bound cut them.
    pub apply: crate::partition::ApplyStatus,
}

/// A replicated table as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub name: String,
    pub group: GroupId,
    pub replicas: Vec<NodeId>,
    /// The table group's leader, as this node sees it (None: not hosted here, or no leader).
    pub leader: Option<NodeId>,
    /// This replica's applied revision, live keys and bytes, when hosted here.
    pub revision: Option<u64>,
    pub keys: Option<u64>,
    pub bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub cluster_addr: Option<String>,
    pub native_addr: Option<String>,
    pub roles: Vec<Role>,
    pub voter: bool,
    /// Connected, and heard from within the election timeout (self: always).
    pub live: bool,
    pub last_contact_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: u32,
    pub group: GroupId,
    pub replicas: Vec<NodeId>,
    /// The partition group's leader, as this node sees it (None: not hosted here, or no leader).
    pub leader: Option<NodeId>,
    /// Replicas whose raft log has everything committed (known on the leader only).
    pub in_sync: Vec<NodeId>,
    /// The group's raft commit index, when hosted here.
    pub raft_commit: Option<u64>,
    /// Next offset readable on this replica (committed and applied), when hosted here.
    pub high_watermark: Option<u64>,
    /// Records this replica fetched from another replica's copy after
    /// installing a snapshot (since start), when hosted here.
    pub caught_up_records: Option<u64>,
    /// Times this replica's copy restarted at another replica's log start
    /// because the records it lacked were removed everywhere (retention,
    /// compaction), since start, when hosted here.
    pub catch_up_resets: Option<u64>,
    /// A replica of the placement is on a node that is not live as this
    /// node sees it, or no longer in the metadata: fewer copies than asked
    /// for until it returns or the rebalancer replaces it (which needs a
    /// spare data node; the group is never shrunk).
    pub under_replicated: bool,
    /// Idempotent producers this replica remembers, and how many it evicted
    /// (`cluster.max_producers_per_partition`), when hosted here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer_evictions: Option<u64>,
}

/// Handle to a running cluster node.
#[derive(Clone)]
pub struct ClusterNode {
    cfg: Arc<ClusterConfig>,
    tx: mpsc::Sender<Cmd>,
    meta: Arc<RwLock<MetaState>>,
    transport: Arc<Transport>,
    stop: watch::Sender<bool>,
    partitions: Partitions,
    tables: TableReplicas,
    leaders: Leaders,
    catch_up: crate::partition::CatchUpSlot,
    rebalance: Arc<RebalanceCounters>,
    auth_observer: crate::meta::AuthObserverSlot,
    apply: Arc<crate::partition::ApplyStats>,
    driver_stats: Arc<DriverCounters>,
    /// Set once a linearizable read of the metadata succeeded after start:
    /// before that, this node's metadata may be older than the cluster's
    /// (it was down), and its local copies may be of topics since deleted.
    meta_current: Arc<std::sync::atomic::AtomicBool>,
}

/// What the driver's loop did since start (stats).
#[derive(Debug, Default)]
struct DriverCounters {
    /// Ready passes that took `cluster.max_commands_per_pass` commands and
    /// left more queued for the next pass.
    passes_cut: std::sync::atomic::AtomicU64,
}

/// What this node's rebalancer did since it started (stats).
#[derive(Debug, Default)]
struct RebalanceCounters {
    /// Moves this node recorded as metadata leader.
    planned: std::sync::atomic::AtomicU64,
    /// Membership changes of partition groups this node proposed.
    conf_changes: std::sync::atomic::AtomicU64,
    /// Leadership hand-overs this node asked for (moves and balance).
    leader_transfers: std::sync::atomic::AtomicU64,
    /// Groups (partitions, tables) this node leads with a replica on a node
    /// not live or no longer in the metadata, as of the last round.
    under_replicated: std::sync::atomic::AtomicU64,
}

type Partitions = Arc<RwLock<BTreeMap<GroupId, Arc<crate::partition::PartitionHandle>>>>;
/// Replicas of tables hosted here, by group.
type TableReplicas = Arc<RwLock<BTreeMap<GroupId, Arc<crate::table::TableReplica>>>>;
/// Leader of every group hosted here, refreshed by the driver every tick (for routing hints).
type Leaders = Arc<RwLock<BTreeMap<GroupId, NodeId>>>;

/// A record read back from a replicated partition.
#[derive(Debug, Clone, Serialize)]
pub struct FetchedRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub high_watermark: u64,
    pub records: Vec<FetchedRecord>,
}

struct Pending<T> {
    reply: oneshot::Sender<Result<T>>,
    deadline: Instant,
}

struct Driver {
    cfg: Arc<ClusterConfig>,
    raft: MultiRaft,
    transport: Arc<Transport>,
    seq: u64,
    proposals: BTreeMap<u64, Pending<Vec<u8>>>,
    /// Proposals (by seq) to answer when persisted here rather than applied.
    persist_acks: std::collections::BTreeSet<u64>,
    reads_waiting: BTreeMap<u64, (GroupId, Pending<()>)>,
    /// Confirmed read indexes waiting for the group to apply that far.
    reads_ready: Vec<(GroupId, u64, Pending<()>)>,
    meta: Arc<RwLock<MetaState>>,
    registered: bool,
    /// Election timeouts of groups opened later.
    rng: rand::rngs::StdRng,
    partitions: Partitions,
    tables: TableReplicas,
    leaders: Leaders,
    catch_up: crate::partition::CatchUpSlot,
    /// Partition groups this node is joining (a move's target): hosted, but
    /// not served to readers until the placement names this node.
    joining: BTreeMap<GroupId, Arc<crate::partition::PartitionHandle>>,
    /// The same for tables: a replica still joining serves no reads.
    joining_tables: BTreeMap<GroupId, Arc<crate::table::TableReplica>>,
    planner: Option<crate::rebalancer::Planner>,
    executor: crate::rebalancer::Executor,
    rebalance: Arc<RebalanceCounters>,
    apply: Arc<crate::partition::ApplyStats>,
    driver_stats: Arc<DriverCounters>,
    started: Instant,
    /// Topic names in the metadata as of the last pass: a name that leaves
    /// it was deleted, and its local copy goes too.
    /// Also their configs: a changed one is an alter, applied to the local copy.
    known_topics: BTreeMap<String, serde_json::Value>,
    /// Local copies of deleted topics being removed: a topic created again
    /// under the name opens its groups only after (its copy starts empty).
    deleting: Vec<(String, tokio::task::JoinHandle<()>)>,
    /// The raft logs of deleted groups were swept once since start.
    swept: bool,
    /// The incarnation of each replicated topic's local copy
    /// (`cluster/topic_incarnations.json`; shared with the tasks that remove
    /// stale copies, which record the new incarnation once the copy is gone).
    incarnations: Incarnations,
}

/// Topic name -> incarnation of the local copy (docs/cluster.md, "Deleting
/// and altering a replicated topic"), and the file it is kept in.
#[derive(Clone)]
struct Incarnations {
    path: std::path::PathBuf,
    map: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

impl Incarnations {
    fn load(data_dir: &std::path::Path) -> Incarnations {
        let path = data_dir.join("cluster").join("topic_incarnations.json");
        let map = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                // Unreadable: every copy is taken as current (as before incarnations were kept).
                tracing::warn!(path = %path.display(), error = %e, "cluster: topic incarnations unreadable; local copies taken as current");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Incarnations { path, map: Arc::new(std::sync::Mutex::new(map)) }
    }

    fn get(&self, topic: &str) -> Option<u64> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(topic).copied()
    }

    /// Record `topic`'s incarnation (None: forget it) and write the file
    /// (tmp, fsync, rename, fsync dir) before the copy is used.
    fn set(&self, topic: &str, incarnation: Option<u64>) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match incarnation {
            Some(i) => m.insert(topic.to_owned(), i),
            None => m.remove(topic),
        };
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let tmp = self.path.with_extension("json.tmp");
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&*m).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            // Retried on the next pass: the copy's recorded incarnation still differs.
            tracing::warn!(path = %self.path.display(), topic, error = %e, "cluster: writing topic incarnations failed");
            m.remove(topic);
        }
    }
}

/// The state machine of a partition group until records are replicated (stage 2).
struct NoRecords;

impl crate::host::StateMachine for NoRecords {
    fn apply(&mut self, _index: u64, _data: &bytes::Bytes) -> Vec<u8> {
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _data: &[u8]) -> Result<()> {
        Ok(())
    }
}

fn ctx(node: NodeId, seq: u64) -> Vec<u8> {
    let mut v = node.to_be_bytes().to_vec();
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

fn parse_ctx(c: &[u8]) -> Option<(NodeId, u64)> {
    let a: [u8; 8] = c.get(..8)?.try_into().ok()?;
    let b: [u8; 8] = c.get(8..16)?.try_into().ok()?;
    Some((u64::from_be_bytes(a), u64::from_be_bytes(b)))
}

impl ClusterNode {
    /// Open the metadata group's storage, bind the transport and start the driver.
    pub async fn start(cfg: ClusterConfig) -> Result<ClusterNode> {
        Self::start_secured(cfg, TransportSecurity::default()).await
    }

    /// [`Self::start`] with the transport's mTLS (`cluster.tls.*`) and
    /// handshake bound (docs/cluster.md, "TLS between nodes").
    pub async fn start_secured(cfg: ClusterConfig, security: TransportSecurity) -> Result<ClusterNode> {
        if cfg.node_id == 0 {
            return Err(ClusterError::Config("cluster.node_id must be at least 1".into()));
        }
        if !cfg.join && !cfg.peers.contains_key(&cfg.node_id) {
            return Err(ClusterError::Config(format!("cluster.peers must include this node ({})", cfg.node_id)));
        }
        cfg.tuning.validate()?;
        security.validate()?;
        let cfg = Arc::new(cfg);
        let listener = TcpListener::bind(&cfg.addr).await.map_err(|e| ClusterError::io("bind", &cfg.addr, e))?;
        let (stop, stop_rx) = watch::channel(false);
        let (in_tx, in_rx) = mpsc::channel::<Frame>(cfg.tuning.incoming_queue_frames);
        let transport = Transport::start_with(cfg.node_id, listener, in_tx, cfg.max_frame_bytes, cfg.tuning.peer_queue_frames, stop_rx.clone(), security);
        for (id, addr) in &cfg.peers {
            transport.set_peer(*id, addr.clone());
        }
        let meta = Arc::new(RwLock::new(MetaState::default()));
        let mut raft = MultiRaft::new(cfg.node_id, cfg.tuning.clone());
        // Election timeouts only need to differ between nodes; time is a fine seed outside simulation.
        let seed = cfg.node_id ^ u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let disk = FileDisk::open(cfg.data_dir.join("cluster").join("groups").join(format!("{META_GROUP}.wal")))?;
        let voters: Vec<NodeId> = if cfg.join { Vec::new() } else { cfg.peers.keys().copied().collect() };
        let auth_observer = crate::meta::AuthObserverSlot::default();
        raft.open_group(META_GROUP, Box::new(disk), Box::new(MetaSm::new(meta.clone()).with_auth_observer(auth_observer.clone())), &voters, &mut rng)?;
        let (tx, rx) = mpsc::channel(cfg.max_pending.max(1));
        let partitions: Partitions = Arc::default();
        let tables: TableReplicas = Arc::default();
        let leaders: Leaders = Arc::default();
        let catch_up: crate::partition::CatchUpSlot = Arc::default();
        let rebalance: Arc<RebalanceCounters> = Arc::default();
        let apply: Arc<crate::partition::ApplyStats> = Arc::default();
        let driver_stats: Arc<DriverCounters> = Arc::default();
        let driver = Driver {
            cfg: cfg.clone(),
            raft,
            transport: transport.clone(),
            seq: 0,
            proposals: BTreeMap::new(),
            persist_acks: Default::default(),
            reads_waiting: BTreeMap::new(),
            reads_ready: Vec::new(),
            meta: meta.clone(),
            registered: false,
            rng,
            partitions: partitions.clone(),
            tables: tables.clone(),
            leaders: leaders.clone(),
            catch_up: catch_up.clone(),
            joining: BTreeMap::new(),
            joining_tables: BTreeMap::new(),
            planner: None,
            executor: crate::rebalancer::Executor::new(),
            rebalance: rebalance.clone(),
            apply: apply.clone(),
            driver_stats: driver_stats.clone(),
            started: Instant::now(),
            known_topics: meta.read().unwrap_or_else(|p| p.into_inner()).topics.iter().map(|(n, t)| (n.clone(), t.config.clone())).collect(),
            deleting: Vec::new(),
            swept: false,
            incarnations: Incarnations::load(&cfg.data_dir),
        };
        tokio::spawn(driver.run(rx, in_rx, stop_rx));
        tracing::info!(node = cfg.node_id, addr = %cfg.addr, peers = cfg.peers.len(), join = cfg.join, "cluster: node started");
        let meta_current = Arc::default();
        let node = ClusterNode { cfg, tx, meta, transport, stop, partitions, tables, leaders, catch_up, rebalance, auth_observer, apply, driver_stats, meta_current };
        tokio::spawn(node.clone().catch_up_meta());
        Ok(node)
    }

    /// Reads the metadata linearizably until one read succeeds (the group
    /// has a leader and this node applied what it had committed), then marks
    /// it current. Until then [`ClusterNode::meta_current`] is false and
    /// readers of local copies ask another replica (docs/cluster.md,
    /// "Topic incarnations").
    async fn catch_up_meta(self) {
        let mut stopped = self.stop.subscribe();
        loop {
            if *stopped.borrow() {
                return;
            }
            // Only with a leader known (a follower without one drops a
            // ReadIndex, which would then wait out the whole propose
            // time-out), and bounded (a read lost in a leader change).
            if self.leader_of(META_GROUP).is_some() && matches!(tokio::time::timeout(Duration::from_secs(1), self.read_meta()).await, Ok(Ok(_))) {
                self.meta_current.store(true, std::sync::atomic::Ordering::Release);
                tracing::info!(node = self.cfg.node_id, applied = self.local_meta().applied, "cluster: metadata caught up since start; local copies are served");
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stopped.changed() => return,
            }
        }
    }

    /// Whether this node's metadata was read linearizably since it started:
    /// only then does it serve reads from its local copies (a node that was
    /// down may still see a topic that was deleted, and created again, meanwhile).
    pub fn meta_current(&self) -> bool {
        self.meta_current.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// Flat stats for `weft stats`: transport counters (limits: frames dropped
    /// on a full peer queue, bad frames), peers connected, metadata applied index.
    pub fn gauges(&self) -> Vec<(String, serde_json::Value)> {
        use std::sync::atomic::Ordering::Relaxed;
        let t = &self.transport.stats;
        let peers = self.transport.status();
        let mut out: Vec<(String, serde_json::Value)> = vec![
            ("cluster.frames_sent".into(), t.frames_sent.load(Relaxed).into()),
            ("cluster.frames_received".into(), t.frames_received.load(Relaxed).into()),
            ("cluster.frames_dropped_full".into(), t.frames_dropped_full.load(Relaxed).into()),
            ("cluster.bad_frames".into(), t.bad_frames.load(Relaxed).into()),
            ("cluster.peers_refused".into(), t.peers_refused.load(Relaxed).into()),
            ("cluster.handshakes_shed".into(), t.handshakes_shed.load(Relaxed).into()),
            ("cluster.handshakes_pending".into(), self.transport.handshakes_pending().into()),
            ("cluster.peers".into(), (peers.len() as u64).into()),
            ("cluster.peers_connected".into(), (peers.iter().filter(|p| p.connected).count() as u64).into()),
            ("cluster.meta_applied".into(), self.meta.read().unwrap_or_else(|p| p.into_inner()).applied.into()),
            ("cluster.meta_current".into(), u64::from(self.meta_current()).into()),
            ("cluster.rebalance.moves_in_flight".into(), (self.meta.read().unwrap_or_else(|p| p.into_inner()).moves.len() as u64).into()),
            ("cluster.rebalance.moves_done".into(), self.meta.read().unwrap_or_else(|p| p.into_inner()).moves_done.into()),
            ("cluster.rebalance.moves_failed".into(), self.meta.read().unwrap_or_else(|p| p.into_inner()).moves_cancelled.into()),
            ("cluster.rebalance.moves_planned".into(), self.rebalance.planned.load(Relaxed).into()),
            ("cluster.rebalance.conf_changes".into(), self.rebalance.conf_changes.load(Relaxed).into()),
            ("cluster.rebalance.leader_transfers".into(), self.rebalance.leader_transfers.load(Relaxed).into()),
            ("cluster.under_replicated".into(), self.rebalance.under_replicated.load(Relaxed).into()),
            // Queues and batches bounded by `cluster.*` keys (docs/operations.md).
            ("cluster.pending".into(), (self.tx.max_capacity() - self.tx.capacity()).into()),
            ("cluster.passes_cut".into(), self.driver_stats.passes_cut.load(Relaxed).into()),
            ("cluster.incoming_queued".into(), (self.transport.incoming_queued() as u64).into()),
            ("cluster.peer_queued".into(), (self.transport.peer_queued() as u64).into()),
        ];
        let a = self.apply.status();
        out.extend([
            ("cluster.apply.batches", a.batches),
            ("cluster.apply.entries", a.entries),
            ("cluster.apply.records", a.records),
            ("cluster.apply.bytes", a.bytes),
            ("cluster.apply.cut_entries", a.cut_entries),
            ("cluster.apply.cut_records", a.cut_records),
            ("cluster.apply.cut_bytes", a.cut_bytes),
            ("cluster.apply.max_batch_records", a.max_batch_records),
            ("cluster.apply.max_batch_bytes", a.max_batch_bytes),
            ("cluster.apply.queued_entries", a.queued_entries),
            ("cluster.apply.queued_bytes", a.queued_bytes),
            ("cluster.apply.refused", a.refused),
            ("cluster.apply.held_back", a.held_back),
        ]
        .map(|(k, v)| (k.to_owned(), v.into())));
        out
    }

    /// This node's partition appliers since start (`cluster.apply.*`).
    pub fn apply_status(&self) -> crate::partition::ApplyStatus {
        self.apply.status()
    }

    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Where other nodes' native-protocol connections on the cluster port
    /// go (cluster TLS only; docs/cluster.md, "TLS between nodes").
    pub fn set_native_handoff(&self, h: impl Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, NodeId, std::net::SocketAddr) + Send + Sync + 'static) {
        self.transport.set_native_handoff(Arc::new(h));
    }

    /// The cluster certificate, key and CA, when the transport runs mTLS.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        self.transport.tls_files()
    }

    /// A node's cluster address: registered in the metadata, else known to the transport.
    pub fn cluster_addr(&self, node: NodeId) -> Option<String> {
        let registered = self.meta.read().unwrap_or_else(|p| p.into_inner()).nodes.get(&node).map(|n| n.cluster_addr.clone());
        registered.or_else(|| self.transport.status().into_iter().find(|p| p.id == node).and_then(|p| p.addr))
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ClusterError::Busy,
            mpsc::error::TrySendError::Closed(_) => ClusterError::Shutdown,
        })?;
        let timeout = Duration::from_millis(self.cfg.propose_timeout_ms.max(1));
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            // The driver drops a reply it gave up on (a proposal past its
            // deadline, e.g. across an election): that is a timeout with an
            // unknown outcome, not a shutdown, unless the node is stopping.
            Ok(Err(_)) if *self.stop.borrow() => Err(ClusterError::Shutdown),
            Ok(Err(_)) | Err(_) => Err(ClusterError::Timeout("not committed in time: its fate is unknown".into())),
        }
    }

    /// This node's partition appliers' counters (`cluster.apply.*`).
    pub fn apply_stats(&self) -> Arc<crate::partition::ApplyStats> {
        self.apply.clone()
    }

    /// Refuses a produce while this node's partition appliers have more
    /// than `cluster.apply_queue_max_bytes` queued: what raft commits waits
    /// there for the disk, and proposing more only grows it. Produces are
    /// proposed on their partition's leader (the router sends them there),
    /// so this holds the leader's queue; a follower holds back its leaders'
    /// appends meanwhile (`Driver::holds_back`).
    fn admit_produce(&self) -> Result<()> {
        let queued = self.apply.queued_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let limit = self.cfg.tuning.apply_queue_max_bytes;
        if queued > limit {
            self.apply.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ClusterError::ApplyBacklog { queued, limit });
        }
        Ok(())
    }

    /// Propose a metadata change; resolves once applied on this node (any node
    /// may propose: raft forwards proposals to the leader).
    pub async fn propose_meta(&self, cmd: &MetaCommand) -> Result<MetaResponse> {
        let data = serde_json::to_vec(cmd).map_err(|e| ClusterError::StateMachine(e.to_string()))?;
        let resp = self.call(|reply| Cmd::Propose { group: META_GROUP, data, trace: weft_service::trace::current_traceparent(), reply }).await?;
        serde_json::from_slice(&resp).map_err(|e| ClusterError::StateMachine(e.to_string()))
    }

    /// A linearizable read of the metadata (ReadIndex, then wait for apply).
    pub async fn read_meta(&self) -> Result<MetaState> {
        self.call(|reply| Cmd::ReadIndex { group: META_GROUP, reply }).await?;
        Ok(self.local_meta())
    }

    /// Produce one record to a replicated partition: answered with its offset
    /// once committed (a majority has it durable in the raft log) and applied
    /// here. Any replica accepts it (forwarded to the partition's leader).
    pub async fn produce(&self, topic: &str, partition: u32, key: Option<Vec<u8>>, value: Vec<u8>) -> Result<u64> {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let rec = crate::partition::EntryRecord { timestamp_ms: ts, key, value: Some(value), headers: Vec::new() };
        let offsets = self.produce_records(topic, partition, vec![rec]).await?;
        offsets.first().copied().ok_or_else(|| ClusterError::StateMachine("no offset".into()))
    }

    /// Produce records with acks=leader: answered once this node has them
    /// in its own synced raft log, before a majority does (they can be lost
    /// if it fails before replicating them). Offsets are assigned at apply,
    /// so the answer has them only where an entry applied in the same round:
    /// `None` otherwise. One entry; it must fit `max_frame_bytes / 2`.
    pub async fn produce_persisted(&self, topic: &str, partition: u32, records: Vec<crate::partition::EntryRecord>) -> Result<Option<Vec<u64>>> {
        self.admit_produce()?;
        let group = self.group_of(topic, partition)?;
        if !self.partitions.read().unwrap_or_else(|p| p.into_inner()).contains_key(&group) {
            return Err(ClusterError::UnknownGroup(group));
        }
        let n = records.len() as u64;
        let data = crate::partition::encode_batch(&records);
        if data.len() > (self.cfg.max_frame_bytes as usize / 2).max(1) {
            return Err(ClusterError::Config(format!("batch of {} bytes exceeds half of cluster.max_frame_bytes ({})", data.len(), self.cfg.max_frame_bytes)));
        }
        let resp = self.call(|reply| Cmd::ProposePersisted { group, data, reply }).await?;
        Ok(match crate::partition::decode_answer(&resp) {
            Some(crate::partition::ProduceAnswer::Offset(first)) => Some((first..first + n).collect()),
            _ => None,
        })
    }

    /// Produce an idempotent producer's batch (`sequence`: its first
    /// record's sequence in this partition) as one raft entry: a batch
    /// already applied answers its original offsets without appending again,
    /// a sequence gap answers [`ClusterError::OutOfOrderSequence`]. The batch
    /// must fit one entry (a retry must be the same entry).
    /// `max_producers` bounds the producers remembered per partition (LRU).
    pub async fn produce_idempotent(&self, topic: &str, partition: u32, producer_id: u64, sequence: u64, max_producers: u32, records: Vec<crate::partition::EntryRecord>) -> Result<Vec<u64>> {
        self.admit_produce()?;
        let group = self.group_of(topic, partition)?;
        let hosted = self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned();
        let Some(h) = hosted else { return Err(ClusterError::UnknownGroup(group)) };
        let n = records.len() as u64;
        let data = crate::partition::encode_idempotent_batch(producer_id, sequence, max_producers, &records);
        if data.len() > (self.cfg.max_frame_bytes as usize / 2).max(1) {
            return Err(ClusterError::Config(format!("idempotent batch of {} bytes exceeds half of cluster.max_frame_bytes ({})", data.len(), self.cfg.max_frame_bytes)));
        }
        let resp = self.call(|reply| Cmd::Propose { group, data, trace: weft_service::trace::current_traceparent(), reply }).await?;
        let first = match crate::partition::decode_answer(&resp) {
            Some(crate::partition::ProduceAnswer::Offset(o)) => o,
            Some(crate::partition::ProduceAnswer::OutOfOrder { expected, got }) => return Err(ClusterError::OutOfOrderSequence { producer_id, expected, got }),
            None => return Err(ClusterError::StateMachine("bad produce answer".into())),
        };
        if n > 0 && !h.wait_for(first + n, Duration::from_millis(self.cfg.propose_timeout_ms.max(1))).await {
            tracing::warn!(group, offset = first + n - 1, "cluster: acknowledged records not yet in this node's copy");
        }
        Ok((first..first + n).collect())
    }

    /// Produce records to a replicated partition hosted here; answered with
    /// each record's offset once committed and applied here. The records go
    /// in as few raft entries as fit `max_size_per_msg` each (one entry for an
    /// ordinary batch); offsets are assigned when an entry applies.
    pub async fn produce_records(&self, topic: &str, partition: u32, records: Vec<crate::partition::EntryRecord>) -> Result<Vec<u64>> {
        self.admit_produce()?;
        let group = self.group_of(topic, partition)?;
        if !self.partitions.read().unwrap_or_else(|p| p.into_inner()).contains_key(&group) {
            return Err(ClusterError::UnknownGroup(group));
        }
        let limit = self.cfg.tuning.max_size_per_msg.max(1) as usize;
        // One entry must fit one transport frame with room for its envelope.
        let hard = (self.cfg.max_frame_bytes as usize / 2).max(1);
        let mut chunks: Vec<Vec<crate::partition::EntryRecord>> = Vec::new();
        let mut size = 0usize;
        for r in records {
            let n = 24 + r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + r.headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>();
            if n > hard {
                return Err(ClusterError::Config(format!("record of {n} bytes exceeds half of cluster.max_frame_bytes ({})", self.cfg.max_frame_bytes)));
            }
            if chunks.is_empty() || size + n > limit {
                chunks.push(Vec::new());
                size = 0;
            }
            size += n;
            if let Some(c) = chunks.last_mut() {
                c.push(r);
            }
        }
        let mut offsets = Vec::new();
        for chunk in chunks {
            let n = chunk.len() as u64;
            let data = crate::partition::encode_batch(&chunk);
            let resp = self.call(|reply| Cmd::Propose { group, data, trace: weft_service::trace::current_traceparent(), reply }).await?;
            let b: [u8; 8] = resp.as_slice().try_into().map_err(|_| ClusterError::StateMachine("bad produce answer".into()))?;
            let first = u64::from_be_bytes(b);
            offsets.extend(first..first + n);
        }
        // Committed and applied by raft; the copy is written right after, by
        // the applier: answer once it is there, so the ack is readable here.
        let hosted = self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned();
        if let (Some(last), Some(h)) = (offsets.iter().max(), hosted) {
            if !h.wait_for(last + 1, Duration::from_millis(self.cfg.propose_timeout_ms.max(1))).await {
                tracing::warn!(group, offset = last, "cluster: acknowledged records not yet in this node's copy");
            }
        }
        Ok(offsets)
    }

    /// A replicated table's placement, from this node's metadata (None: no such table here yet).
    pub fn table_placement(&self, name: &str) -> Option<crate::meta::TableMeta> {
        self.meta.read().unwrap_or_else(|p| p.into_inner()).tables.get(name).cloned()
    }

    /// The local replica of a table, when this node hosts one (opened).
    pub fn table_replica(&self, name: &str) -> Option<Arc<crate::table::TableReplica>> {
        let group = self.table_placement(name)?.group;
        self.tables.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    /// Propose a write to a table hosted here: answered once committed (a
    /// majority has it durable in the raft log) and applied on this node, so
    /// the local replica has it (read-your-writes here). A timeout means the
    /// write's fate is unknown (it may still commit).
    pub async fn table_write(&self, name: &str, cmd: &weft_table::WriteCommand) -> Result<crate::table::TableAnswer> {
        let t = self.table_placement(name).ok_or_else(|| ClusterError::Config(format!("unknown table {name:?}")))?;
        if !self.tables.read().unwrap_or_else(|p| p.into_inner()).contains_key(&t.group) {
            return Err(ClusterError::UnknownGroup(t.group));
        }
        let data = cmd.encode();
        let group = t.group;
        let resp = self.call(|reply| Cmd::Propose { group, data, trace: weft_service::trace::current_traceparent(), reply }).await?;
        crate::table::TableAnswer::decode(&resp)
    }

    /// The local replica for a read. Linearizable: ReadIndex on the table's
    /// group (confirmed by a quorum of the current leader), then wait until
    /// this replica applied that far; the caller then reads the replica.
    /// Serializable (`linearizable = false`): the replica as applied now,
    /// possibly behind the latest committed write.
    pub async fn table_read(&self, name: &str, linearizable: bool) -> Result<Arc<crate::table::TableReplica>> {
        let t = self.table_placement(name).ok_or_else(|| ClusterError::Config(format!("unknown table {name:?}")))?;
        let r = self.tables.read().unwrap_or_else(|p| p.into_inner()).get(&t.group).cloned().ok_or(ClusterError::UnknownGroup(t.group))?;
        if linearizable {
            let group = t.group;
            self.call(|reply| Cmd::ReadIndex { group, reply }).await?;
        }
        Ok(r)
    }

    /// The partition's handle when this node hosts a replica of it.
    pub fn hosted(&self, topic: &str, partition: u32) -> Option<Arc<crate::partition::PartitionHandle>> {
        let group = self.group_of(topic, partition).ok()?;
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    /// Group id and replicas of a partition, from this node's metadata.
    pub fn placement(&self, topic: &str, partition: u32) -> Result<(GroupId, Vec<NodeId>)> {
        let meta = self.meta.read().unwrap_or_else(|p| p.into_inner());
        let t = meta.topics.get(topic).ok_or_else(|| ClusterError::Config(format!("unknown topic {topic:?}")))?;
        let p = t.partitions.iter().find(|p| p.partition == partition).ok_or_else(|| ClusterError::Config(format!("topic {topic:?} has no partition {partition}")))?;
        Ok((p.group, p.replicas.clone()))
    }

    /// The leader of a group hosted here, as last seen by the driver (None: unknown or not hosted).
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        self.leaders.read().unwrap_or_else(|p| p.into_inner()).get(&group).copied().filter(|l| *l != 0)
    }

    /// The metadata group's leader and term as this node sees them (None:
    /// no leader known). The term tells a leader that lost and regained
    /// leadership from one that kept it (the consumer-group coordinator
    /// takes over again then).
    pub async fn meta_leader_term(&self) -> Option<(NodeId, u64)> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Cmd::Status { reply }).ok()?;
        let g = rx.await.ok()?.into_iter().find(|g| g.group == META_GROUP)?;
        (g.leader != 0).then_some((g.leader, g.term))
    }

    /// A node's native protocol address, from the metadata.
    pub fn native_addr(&self, node: NodeId) -> Option<String> {
        self.meta.read().unwrap_or_else(|p| p.into_inner()).nodes.get(&node).and_then(|n| n.native_addr.clone())
    }

    /// Where a replica that installed a partition snapshot fetches the
    /// records it stands for (set once; the binary's record plane).
    pub fn set_catch_up(&self, c: Arc<dyn crate::partition::CatchUp>) {
        let _ = self.catch_up.set(c);
    }

    /// The node's log (where committed records of hosted partitions are applied).
    pub fn log(&self) -> Option<&weft_log::Log> {
        self.cfg.log.as_ref()
    }

    /// Read committed records of a partition hosted here, below its high watermark.
    pub async fn fetch(&self, topic: &str, partition: u32, offset: u64, max_records: usize) -> Result<Fetched> {
        let group = self.group_of(topic, partition)?;
        let h = self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned().ok_or(ClusterError::UnknownGroup(group))?;
        if let Some(e) = h.failed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(ClusterError::StateMachine(e));
        }
        let hw = h.high_watermark.load(std::sync::atomic::Ordering::Acquire);
        let Some(log) = &self.cfg.log else { return Err(ClusterError::UnknownGroup(group)) };
        let mut records = Vec::new();
        if offset < hw {
            let r = log
                .fetch(topic, weft_log::PartitionId(partition), weft_log::Offset(offset), 1 << 20, max_records.clamp(1, 10_000), None)
                .await
                .map_err(|e| ClusterError::StateMachine(e.to_string()))?;
            for rec in r.decode().map_err(|e| ClusterError::StateMachine(e.to_string()))? {
                if rec.offset.0 >= offset && rec.offset.0 < hw && records.len() < max_records {
                    records.push(FetchedRecord {
                        offset: rec.offset.0,
                        timestamp_ms: rec.timestamp_ms,
                        key: rec.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                        value: rec.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    });
                }
            }
        }
        Ok(Fetched { high_watermark: hw, records })
    }

    fn group_of(&self, topic: &str, partition: u32) -> Result<GroupId> {
        let meta = self.meta.read().unwrap_or_else(|p| p.into_inner());
        let t = meta.topics.get(topic).ok_or_else(|| ClusterError::Config(format!("unknown topic {topic:?}")))?;
        t.partitions.iter().find(|p| p.partition == partition).map(|p| p.group).ok_or_else(|| ClusterError::Config(format!("topic {topic:?} has no partition {partition}")))
    }

    /// Be told the replicated auth rules each time they change here (on the
    /// apply path: keep it short). Rules applied before the call are in
    /// [`Self::local_meta`].
    pub fn on_auth_change(&self, f: crate::meta::AuthObserver) {
        *self.auth_observer.write().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// This node's applied metadata, possibly stale.
    pub fn local_meta(&self) -> MetaState {
        self.meta.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Add a node: record it in the metadata, then change the metadata group's
    /// membership through joint consensus (control nodes vote; data-only nodes learn).
    pub async fn add_node(&self, node: NodeInfo) -> Result<MetaResponse> {
        let r = self.propose_meta(&MetaCommand::RegisterNode { node: node.clone() }).await?;
        let kind = if node.roles.contains(&Role::Control) { ConfChangeType::AddNode } else { ConfChangeType::AddLearnerNode };
        let context = serde_json::to_vec(&node).map_err(|e| ClusterError::StateMachine(e.to_string()))?;
        self.conf_change(kind, node.id, context).await?;
        Ok(r)
    }

    pub async fn remove_node(&self, id: NodeId) -> Result<MetaResponse> {
        self.conf_change(ConfChangeType::RemoveNode, id, Vec::new()).await?;
        self.propose_meta(&MetaCommand::RemoveNode { id }).await
    }

    async fn conf_change(&self, kind: ConfChangeType, id: NodeId, context: Vec<u8>) -> Result<()> {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(kind);
        single.node_id = id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        // Implicit: enter the joint configuration, and raft-rs leaves it by itself once committed.
        cc.set_transition(ConfChangeTransition::Implicit);
        self.call(|reply| Cmd::ConfChange { group: META_GROUP, cc, context, reply }).await?;
        Ok(())
    }

    pub async fn status(&self) -> Result<ClusterStatus> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Cmd::Status { reply }).map_err(|_| ClusterError::Busy)?;
        let groups = rx.await.map_err(|_| ClusterError::Shutdown)?;
        let meta = self.local_meta();
        let meta_group = groups.iter().find(|g| g.group == META_GROUP);
        let meta_leader = meta_group.map(|g| g.leader).filter(|l| *l != 0);
        let peers: BTreeMap<NodeId, PeerStatus> = self.transport.status().into_iter().map(|p| (p.id, p)).collect();
        let live_ms = self.cfg.tick_ms * self.cfg.tuning.election_ticks as u64 * 2;
        let mut ids: Vec<NodeId> = meta.nodes.keys().chain(peers.keys()).copied().collect();
        ids.push(self.cfg.node_id);
        if let Some(g) = meta_group {
            ids.extend(g.voters.iter().chain(g.learners.iter()).copied());
        }
        ids.sort_unstable();
        ids.dedup();
        let nodes = ids
            .into_iter()
            .map(|id| {
                let info = meta.nodes.get(&id);
                let peer = peers.get(&id);
                let me = id == self.cfg.node_id;
                NodeStatus {
                    id,
                    cluster_addr: info.map(|i| i.cluster_addr.clone()).or_else(|| peer.and_then(|p| p.addr.clone())).or_else(|| me.then(|| self.cfg.addr.clone())),
                    native_addr: info.and_then(|i| i.native_addr.clone()),
                    roles: info.map(|i| i.roles.clone()).unwrap_or_default(),
                    voter: meta_group.is_some_and(|g| g.voters.contains(&id)),
                    live: me || peer.is_some_and(|p| p.connected && p.last_contact_ms.is_some_and(|ms| ms <= live_ms)),
                    last_contact_ms: if me { Some(0) } else { peer.and_then(|p| p.last_contact_ms) },
                }
            })
            .collect::<Vec<NodeStatus>>();
        let live_ids: std::collections::BTreeSet<NodeId> = nodes.iter().filter(|n| n.live).map(|n| n.id).collect();
        let by_group: BTreeMap<GroupId, &GroupStatus> = groups.iter().map(|g| (g.group, g)).collect();
        let hosted = self.partitions.read().unwrap_or_else(|p| p.into_inner()).clone();
        let partitions = meta
            .topics
            .values()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    // Known here when this node hosts a replica; in-sync only on the leader.
                    let g = by_group.get(&p.group);
                    let in_sync = g
                        .filter(|g| !g.matched.is_empty())
                        .map(|g| g.matched.iter().filter(|(_, m)| **m >= g.commit).map(|(id, _)| *id).collect())
                        .unwrap_or_default();
                    PartitionStatus {
                        topic: t.name.clone(),
                        partition: p.partition,
                        group: p.group,
                        replicas: p.replicas.clone(),
                        leader: g.map(|g| g.leader).filter(|l| *l != 0),
                        in_sync,
                        raft_commit: g.map(|g| g.commit),
                        high_watermark: hosted.get(&p.group).map(|h| h.high_watermark.load(std::sync::atomic::Ordering::Acquire)),
                        caught_up_records: hosted.get(&p.group).map(|h| h.caught_up_records.load(std::sync::atomic::Ordering::Relaxed)),
                        catch_up_resets: hosted.get(&p.group).map(|h| h.catch_up_resets.load(std::sync::atomic::Ordering::Relaxed)),
                        under_replicated: p.replicas.iter().any(|r| !live_ids.contains(r) || !meta.nodes.contains_key(r)),
                        producers: hosted.get(&p.group).map(|h| h.producers.load(std::sync::atomic::Ordering::Relaxed)),
                        producer_evictions: hosted.get(&p.group).map(|h| h.producer_evictions.load(std::sync::atomic::Ordering::Relaxed)),
                    }
                })
            })
            .collect();
        let replicas = self.tables.read().unwrap_or_else(|p| p.into_inner()).clone();
        let tables = meta
            .tables
            .values()
            .map(|t| {
                let local = replicas.get(&t.group).map(|r| r.read(|s| (s.revision(), s.live_keys(), s.bytes())));
                TableStatus {
                    name: t.name.clone(),
                    group: t.group,
                    replicas: t.replicas.clone(),
                    leader: by_group.get(&t.group).map(|g| g.leader).filter(|l| *l != 0),
                    revision: local.map(|l| l.0),
                    keys: local.map(|l| l.1),
                    bytes: local.map(|l| l.2),
                }
            })
            .collect();
        Ok(ClusterStatus {
            node_id: self.cfg.node_id,
            roles: self.cfg.roles.clone(),
            meta_leader,
            meta_leader_addr: meta_leader.and_then(|l| meta.nodes.get(&l)).and_then(|n| n.native_addr.clone()),
            nodes,
            groups,
            partitions,
            topics: meta.topics.len(),
            meta_applied: meta.applied,
            moves: meta.moves.values().cloned().collect(),
            moves_done: meta.moves_done,
            moves_cancelled: meta.moves_cancelled,
            tables,
            apply: self.apply.status(),
        })
    }
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, mut incoming: mpsc::Receiver<Frame>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.tick_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        // The metadata restored from disk places groups on this node and
        // names peers: act on it now. An applied metadata entry is
        // otherwise what opens groups, and after a restart there may be
        // none (a snapshot covering all that was applied, nothing new).
        // A node starting empty (a joiner knows only its seeds) has no
        // peers to learn and keeps those it was given.
        if !self.meta.read().unwrap_or_else(|p| p.into_inner()).nodes.is_empty() {
            self.sync_peers();
        }
        if let Err(e) = self.open_partitions() {
            tracing::warn!(error = %e, "cluster: opening partition groups from the restored metadata failed");
        }
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    // Quiesced groups (docs/cluster.md, "Many groups per node") wake when a
                    // member's node is no longer, or again, heard from within an
                    // election timeout (the node-level keepalives below).
                    self.raft.set_live(self.live_within(self.cfg.tick_ms * self.cfg.tuning.election_ticks as u64));
                    self.raft.tick();
                    ticks += 1;
                    if ticks % self.cfg.tuning.heartbeat_ticks.max(1) as u64 == 0 {
                        self.transport.keepalive();
                    }
                    self.expire();
                    self.maybe_register();
                    self.publish_leaders();
                    // The rebalancer every half second or so: its steps are
                    // membership changes, which take a few round trips anyway.
                    if ticks % (500 / self.cfg.tick_ms.max(1)).max(1) == 0 {
                        self.rebalance();
                    }
                    if self.deleting.iter().any(|(_, h)| h.is_finished()) {
                        self.deleting.retain(|(_, h)| !h.is_finished());
                        if let Err(e) = self.open_partitions() {
                            tracing::warn!(error = %e, "cluster: opening partition groups after a topic delete failed");
                        }
                    }
                }
                Some(cmd) = rx.recv() => self.command(cmd),
                Some(frame) = incoming.recv() => self.receive(frame),
            }
            // Take whatever else is already queued before one Ready pass: batching.
            // Proposals too (bounded, so a flood cannot starve the tick): many
            // one-record produces then share one WAL append and one fsync.
            while let Ok(frame) = incoming.try_recv() {
                self.receive(frame);
            }
            let mut took = 0;
            while took < self.cfg.tuning.max_commands_per_pass {
                match rx.try_recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => break,
                }
                took += 1;
            }
            if took == self.cfg.tuning.max_commands_per_pass && !rx.is_empty() {
                self.driver_stats.passes_cut.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Err(e) = self.ready() {
                // A storage failure: raft's durability promise cannot be kept; stop this node.
                tracing::error!(error = %e, "cluster: persisting raft state failed; cluster node stops");
                break;
            }
        }
        tracing::info!("cluster: driver stopped");
    }

    fn receive(&mut self, frame: Frame) {
        let backlog = self.apply.queued_bytes.load(std::sync::atomic::Ordering::Relaxed) > self.cfg.tuning.apply_queue_max_bytes;
        for (group, msg) in frame.msgs {
            if backlog && self.holds_back(group, &msg) {
                continue;
            }
            if self.raft.removes_leader_self(group, &msg) {
                // The proposer times out and retries against the next leader.
                self.raft.step_down(group);
                continue;
            }
            if let Err(e) = self.raft.step(group, msg) {
                tracing::debug!(from = frame.from, group, error = %e, "cluster: message refused");
            }
        }
    }

    /// Whether to drop `msg` while this node's partition appliers have more
    /// than `cluster.apply_queue_max_bytes` queued: a leader's append that
    /// brings entries to one of its partition groups. Dropping a message is
    /// always safe in raft; the leader sends the entries again after the
    /// next heartbeat answer, and commits meanwhile with the other replicas.
    /// Heartbeats, votes and entry-less appends (commit updates) still pass,
    /// so the group keeps its leader; what is already in the raft log still
    /// applies. This bounds a follower's queue as admission bounds a leader's.
    fn holds_back(&self, group: GroupId, msg: &raft::prelude::Message) -> bool {
        if msg.get_msg_type() != raft::prelude::MessageType::MsgAppend || msg.get_entries().is_empty() {
            return false;
        }
        let partition = self.partitions.read().unwrap_or_else(|p| p.into_inner()).contains_key(&group) || self.joining.contains_key(&group);
        if partition {
            self.apply.held_back.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        partition
    }

    fn command(&mut self, cmd: Cmd) {
        let deadline = Instant::now() + Duration::from_millis(self.cfg.propose_timeout_ms.max(1));
        match cmd {
            Cmd::Propose { group, data, trace, reply } => {
                self.seq += 1;
                let mut c = ctx(self.cfg.node_id, self.seq);
                // After the 16-byte proposer tag (parse_ctx reads only that).
                if let Some(tp) = trace {
                    c.extend_from_slice(tp.as_bytes());
                }
                match self.propose(group, c, data) {
                    Ok(()) => {
                        self.proposals.insert(self.seq, Pending { reply, deadline });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::ProposePersisted { group, data, reply } => {
                self.seq += 1;
                match self.propose(group, ctx(self.cfg.node_id, self.seq), data) {
                    Ok(()) => {
                        self.proposals.insert(self.seq, Pending { reply, deadline });
                        self.persist_acks.insert(self.seq);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::ConfChange { group, cc, context, reply } => {
                self.seq += 1;
                // The conf change context carries the proposer tag then the caller's context.
                let mut c = ctx(self.cfg.node_id, self.seq);
                c.extend_from_slice(&context);
                if self.raft.is_leader(group) && crate::host::cc_removes(&cc, self.cfg.node_id) {
                    self.raft.step_down(group);
                    let _ = reply.send(Err(ClusterError::NotLeader { group, leader: 0, addr: None }));
                    return;
                }
                match self.raft.propose_conf_change(group, c, cc) {
                    Ok(()) => {
                        self.proposals.insert(self.seq, Pending { reply, deadline });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(self.with_addr(e)));
                    }
                }
            }
            Cmd::ReadIndex { group, reply } => {
                self.seq += 1;
                match self.raft.read_index(group, ctx(self.cfg.node_id, self.seq)) {
                    Ok(()) => {
                        self.reads_waiting.insert(self.seq, (group, Pending { reply, deadline }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::Status { reply } => {
                let groups = self.raft.group_ids().collect::<Vec<_>>().into_iter().filter_map(|g| self.raft.status(g)).collect();
                let _ = reply.send(groups);
            }
        }
    }

    /// Followers forward proposals to the leader (raft's MsgProp), so any node
    /// accepts writes; with no known leader the caller gets `not_leader`.
    fn propose(&mut self, group: GroupId, c: Vec<u8>, data: Vec<u8>) -> Result<()> {
        if self.raft.is_leader(group) || self.raft.leader(group).is_some() {
            self.raft.propose_forwarding(group, c, data)
        } else {
            Err(self.with_addr(ClusterError::NotLeader { group, leader: 0, addr: None }))
        }
    }

    fn with_addr(&self, e: ClusterError) -> ClusterError {
        match e {
            ClusterError::NotLeader { group, leader, addr: None } if leader != 0 => {
                let addr = self.meta.read().unwrap_or_else(|p| p.into_inner()).nodes.get(&leader).and_then(|n| n.native_addr.clone());
                ClusterError::NotLeader { group, leader, addr }
            }
            e => e,
        }
    }

    /// Once the metadata group has a leader, make sure this node's addresses
    /// and roles are in the metadata (a no-op when already current).
    fn maybe_register(&mut self) {
        if self.registered || self.raft.leader(META_GROUP).is_none() {
            return;
        }
        let me = NodeInfo { id: self.cfg.node_id, cluster_addr: self.cfg.addr.clone(), native_addr: self.cfg.native_addr.clone(), roles: self.cfg.roles.clone() };
        let current = self.meta.read().unwrap_or_else(|p| p.into_inner()).nodes.get(&me.id).cloned();
        if current.as_ref() == Some(&me) {
            self.registered = true;
            return;
        }
        if let Ok(data) = serde_json::to_vec(&MetaCommand::RegisterNode { node: me }) {
            // Retried on later ticks until it shows up in the applied state.
            self.seq += 1;
            let _ = self.raft.propose_forwarding(META_GROUP, ctx(self.cfg.node_id, self.seq), data);
        }
    }

    fn publish_leaders(&mut self) {
        let now: BTreeMap<GroupId, NodeId> = self.raft.group_ids().map(|g| (g, self.raft.leader(g).unwrap_or(0))).collect();
        let mut l = self.leaders.write().unwrap_or_else(|p| p.into_inner());
        if *l != now {
            *l = now;
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        self.proposals.retain(|_, p| p.deadline > now && !p.reply.is_closed());
        let proposals = &self.proposals;
        self.persist_acks.retain(|s| proposals.contains_key(s));
        self.reads_waiting.retain(|_, (_, p)| p.deadline > now && !p.reply.is_closed());
        self.reads_ready.retain(|(_, _, p)| p.deadline > now && !p.reply.is_closed());
    }

    /// The transport's peers: members of the metadata group's configuration
    /// and registered nodes; addresses from the metadata, else the founding list.
    fn sync_peers(&mut self) {
        let meta = self.meta.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut want: BTreeMap<NodeId, Option<String>> = BTreeMap::new();
        if let Some(st) = self.raft.status(META_GROUP) {
            for id in st.voters.iter().chain(st.learners.iter()) {
                want.insert(*id, None);
            }
        }
        for id in meta.nodes.keys() {
            want.insert(*id, None);
        }
        for (id, addr) in want.iter_mut() {
            *addr = meta.nodes.get(id).map(|n| n.cluster_addr.clone()).or_else(|| self.cfg.peers.get(id).cloned());
        }
        let known: BTreeMap<NodeId, Option<String>> = self.transport.status().into_iter().map(|p| (p.id, p.addr)).collect();
        for (id, addr) in &want {
            if let Some(addr) = addr {
                if known.get(id) != Some(&Some(addr.clone())) {
                    self.transport.set_peer(*id, addr.clone());
                }
            }
        }
        for id in known.keys() {
            if !want.contains_key(id) {
                self.transport.remove_peer(*id);
            }
        }
    }

    /// Open the raft group of every partition placed on this node (data role),
    /// with the partition's replicas as founding voters: all replicas read the
    /// same placement from the metadata, so they found the same configuration.
    /// Stage 1: the groups elect leaders and carry heartbeats over the shared
    /// tick loop and connections, but no records yet (docs/cluster.md).
    fn open_partitions(&mut self) -> Result<()> {
        self.close_deleted_topics();
        if !self.cfg.roles.contains(&Role::Data) {
            return Ok(());
        }
        self.close_moved_partitions();
        let me = self.cfg.node_id;
        let deleting: std::collections::BTreeSet<String> = self.deleting.iter().map(|(n, _)| n.clone()).collect();
        let wanted: Vec<(GroupId, Vec<NodeId>, bool, String, u32, weft_log::TopicConfig)> = {
            let meta = self.meta.read().unwrap_or_else(|p| p.into_inner());
            // A move's target joins empty: no founding voters, it starts from a
            // snapshot. So does any replica once the group has changed (the
            // placement is then not the founding configuration; a replica that
            // opens the group for the first time must not found another one).
            let joins = |g: GroupId| meta.moves.get(&g).is_some_and(|m| m.to == me);
            meta.topics
                .values()
                .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
                .filter(|(t, p)| (p.replicas.contains(&me) || joins(p.group)) && !self.raft.has_group(p.group) && !deleting.contains(&t.name))
                .map(|(t, p)| {
                    let founding = p.replicas.contains(&me) && p.moves == 0 && !meta.moves.contains_key(&p.group);
                    (p.group, if founding { p.replicas.clone() } else { Vec::new() }, p.replicas.contains(&me), t.name.clone(), p.partition, crate::meta::topic_config(t))
                })
                .collect()
        };
        for (group, replicas, placed, topic, partition, config) in wanted {
            let disk = FileDisk::open(self.cfg.data_dir.join("cluster").join("groups").join(format!("{group}.wal")))?;
            let sm: Box<dyn crate::host::StateMachine> = match &self.cfg.log {
                Some(log) => {
                    let (sm, handle) = crate::partition::start(log.clone(), topic, partition, config, self.catch_up.clone(), self.cfg.tuning.apply, self.apply.clone());
                    if !placed {
                        self.joining.insert(group, handle);
                    } else {
                        self.partitions.write().unwrap_or_else(|p| p.into_inner()).insert(group, handle);
                    }
                    Box::new(sm)
                }
                None => Box::new(NoRecords),
            };
            // Compacted like every group: a snapshot is the record count, taken
            // only where this copy has the records on disk, and a follower that
            // installs one fetches the records from another replica (partition.rs).
            self.raft.open_group(group, Box::new(disk), sm, &replicas, &mut self.rng)?;
            tracing::info!(group, ?replicas, "cluster: partition group opened");
        }
        self.open_tables()
    }

    /// After moves: a group this node joined is served once the placement
    /// names it; a group whose placement no longer names it (and that it is
    /// not joining) is closed. Only a finished move changes a placement,
    /// after the group removed this node. Its raft state stays on disk as a
    /// tombstone (`retire_group`: hard state, configuration, a snapshot of
    /// everything applied and the entries after it), its copy of the records
    /// is dropped: a node that came back under the same id with a wiped raft
    /// state could vote in an election of a stale configuration that still
    /// counts it (tests/sim_moves.rs found this); with its old state it
    /// refuses a candidate whose log is behind its own, as any member does,
    /// and a later move back starts from the snapshot (records fetched again).
    fn close_moved_partitions(&mut self) {
        let me = self.cfg.node_id;
        let (placed, joins): (BTreeMap<GroupId, bool>, std::collections::BTreeSet<GroupId>) = {
            let meta = self.meta.read().unwrap_or_else(|p| p.into_inner());
            (
                meta.topics.values().flat_map(|t| t.partitions.iter()).map(|p| (p.group, p.replicas.contains(&me))).collect(),
                meta.moves.values().filter(|m| m.to == me).map(|m| m.group).collect(),
            )
        };
        let joined: Vec<GroupId> = self.joining.keys().copied().filter(|g| placed.get(g) == Some(&true)).collect();
        for g in joined {
            if let Some(h) = self.joining.remove(&g) {
                self.partitions.write().unwrap_or_else(|p| p.into_inner()).insert(g, h);
                tracing::info!(group = g, "cluster: joined partition group now serves reads");
            }
        }
        let hosted: Vec<GroupId> = self.partitions.read().unwrap_or_else(|p| p.into_inner()).keys().chain(self.joining.keys()).copied().collect();
        // Groups of topics this metadata does not know are left alone.
        for group in hosted.into_iter().filter(|g| placed.get(g) == Some(&false) && !joins.contains(g)) {
            self.partitions.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
            self.joining.remove(&group);
            if let Err(e) = self.raft.retire_group(group) {
                tracing::warn!(group, error = %e, "cluster: compacting a moved-off group's raft log failed; closed with the log as it was");
            }
            let waiting: Vec<u64> = self.reads_waiting.iter().filter(|(_, (g, _))| *g == group).map(|(s, _)| *s).collect();
            for seq in waiting {
                if let Some((_, p)) = self.reads_waiting.remove(&seq) {
                    let _ = p.reply.send(Err(ClusterError::UnknownGroup(group)));
                }
            }
            tracing::info!(group, "cluster: moved off a partition group; closed (raft log compacted to a tombstone, copy dropped)");
        }
    }

    /// A deleted topic (docs/cluster.md, "Deleting and altering a replicated
    /// topic"; an altered one's new config is applied to the local copy): close every hosted group of a topic the metadata no longer
    /// has and remove its raft log (group ids are never reused, unlike a
    /// moved-off replica whose log stays), then remove the topic's local copy
    /// on every node (the plane creates an empty one on nodes without a
    /// replica). A deleted topic is told from a moved-off replica by its
    /// group being in no topic at all.
    fn close_deleted_topics(&mut self) {
        let groups: std::collections::BTreeSet<GroupId>;
        let names: BTreeMap<String, serde_json::Value>;
        let altered: Vec<(String, weft_log::TopicConfig)>;
        let deleted: std::collections::BTreeSet<String>;
        let current: BTreeMap<String, u64>;
        let (next_group, tables): (GroupId, std::collections::BTreeSet<GroupId>);
        {
            let meta = self.meta.read().unwrap_or_else(|p| p.into_inner());
            deleted = meta.deleted_topics.clone();
            current = meta.topics.values().map(|t| (t.name.clone(), t.incarnation())).collect();
            next_group = meta.next_group;
            tables = meta.tables.values().map(|t| t.group).collect();
            altered = meta
                .topics
                .values()
                .filter(|t| self.known_topics.get(&t.name).is_some_and(|c| *c != t.config))
                .map(|t| (t.name.clone(), crate::meta::topic_config(t)))
                .collect();
            groups = meta.topics.values().flat_map(|t| t.partitions.iter().map(|p| p.group)).collect();
            names = meta.topics.iter().map(|(n, t)| (n.clone(), t.config.clone())).collect();
        }
        let hosted: Vec<GroupId> = self.partitions.read().unwrap_or_else(|p| p.into_inner()).keys().chain(self.joining.keys()).copied().collect();
        for group in hosted.into_iter().filter(|g| !groups.contains(g)) {
            self.partitions.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
            self.joining.remove(&group);
            self.raft.close_group(group);
            let waiting: Vec<u64> = self.reads_waiting.iter().filter(|(_, (g, _))| *g == group).map(|(s, _)| *s).collect();
            for seq in waiting {
                if let Some((_, p)) = self.reads_waiting.remove(&seq) {
                    let _ = p.reply.send(Err(ClusterError::UnknownGroup(group)));
                }
            }
            let path = self.cfg.data_dir.join("cluster").join("groups").join(format!("{group}.wal"));
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(group, "cluster: deleted topic's partition group closed, raft log removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(group, path = %path.display(), error = %e, "cluster: removing a deleted topic's raft log failed"),
            }
        }
        let mut gone: Vec<String> = self.known_topics.keys().filter(|n| !names.contains_key(*n)).cloned().collect();
        if !gone.is_empty() || !self.swept {
            self.swept = true;
            self.sweep_group_logs(next_group, &groups, &tables);
        }
        self.known_topics = names;
        // A delete this node missed (down, or a replay that applied the
        // create and the delete in one pass) still removes its copy.
        if let Some(log) = &self.cfg.log {
            for t in log.list_topics() {
                let n = t.as_str();
                if deleted.contains(n) && !gone.iter().any(|g| g == n) && !self.deleting.iter().any(|(d, _)| d == n) {
                    gone.push(n.to_owned());
                }
            }
        }
        let Some(log) = self.cfg.log.clone() else { return };
        // A copy of another incarnation of the name (deleted and created
        // again while this node was down, or both in one replay pass) is
        // removed before the new topic's groups open (they stay closed while
        // the name is in `deleting`); the new incarnation is recorded once it
        // is gone. A name seen for the first time is recorded before its
        // groups open, so its copy is known to be this incarnation's.
        let mut stale: Vec<(String, u64)> = Vec::new();
        for (name, inc) in &current {
            if gone.contains(name) || self.deleting.iter().any(|(d, _)| d == name) {
                continue;
            }
            match self.incarnations.get(name) {
                Some(i) if i == *inc => {}
                Some(old) => {
                    tracing::info!(topic = %name, old, new = inc, "cluster: local copy is of an earlier incarnation of the topic; removing it");
                    stale.push((name.clone(), *inc));
                }
                None => self.incarnations.set(name, Some(*inc)),
            }
        }
        let altered: Vec<(String, weft_log::TopicConfig)> = altered.into_iter().filter(|(n, _)| !stale.iter().any(|(s, _)| s == n)).collect();
        for (name, c) in altered {
            let l = log.clone();
            // Every setting, so the copy ends equal to the metadata's config.
            let alter = weft_log::TopicAlter {
                partitions: None,
                retention_ms: Some(c.retention_ms),
                retention_bytes: Some(c.retention_bytes),
                max_record_bytes: Some(c.max_record_bytes),
                segment_bytes: Some(c.segment_bytes),
                segment_ms: Some(c.segment_ms),
                cleanup: Some(c.cleanup),
                delete_retention_ms: Some(c.delete_retention_ms),
            };
            tokio::spawn(async move {
                match l.alter_topic(&name, &alter).await {
                    Ok(_) => tracing::info!(topic = %name, "cluster: replicated topic's config applied to the local copy"),
                    // No copy here yet: one created later takes the config from the metadata.
                    Err(weft_log::LogError::UnknownTopic(_)) => {}
                    Err(e) => tracing::warn!(topic = %name, error = %e, "cluster: applying an altered config to the local copy failed"),
                }
            });
        }
        for name in gone {
            let (l, marks) = (log.clone(), self.incarnations.clone());
            let n = name.clone();
            // The applier of a closed group ends when its channel closes; the
            // copy is removed after, off the driver (a rename and a directory sync).
            // No copy, no incarnation: the name created again is recorded afresh.
            let h = tokio::spawn(async move {
                match l.delete_topic(&n).await {
                    Ok(()) => {
                        tracing::info!(topic = %n, "cluster: deleted topic's local copy removed");
                        marks.set(&n, None);
                    }
                    Err(weft_log::LogError::UnknownTopic(_)) => marks.set(&n, None),
                    Err(e) => tracing::warn!(topic = %n, error = %e, "cluster: removing a deleted topic's local copy failed"),
                }
            });
            self.deleting.push((name, h));
        }
        for (name, inc) in stale {
            let (l, n, marks) = (log.clone(), name.clone(), self.incarnations.clone());
            let h = tokio::spawn(async move {
                match l.delete_topic(&n).await {
                    Ok(()) | Err(weft_log::LogError::UnknownTopic(_)) => {
                        tracing::info!(topic = %n, incarnation = inc, "cluster: stale local copy removed");
                        marks.set(&n, Some(inc));
                    }
                    // Recorded incarnation unchanged: tried again on the next pass.
                    Err(e) => tracing::warn!(topic = %n, error = %e, "cluster: removing a stale local copy failed"),
                }
            });
            self.deleting.push((name, h));
        }
    }

    /// Remove the raft log of every group id the metadata allocated
    /// (below `next_group`) that is in no topic and no table: a deleted
    /// topic's or dropped table's (ids are never reused). Catches logs of
    /// groups this node never opened again, e.g. after a restart whose
    /// replay applied the create and the delete in one pass.
    fn sweep_group_logs(&mut self, next_group: GroupId, topics: &std::collections::BTreeSet<GroupId>, tables: &std::collections::BTreeSet<GroupId>) {
        let dir = self.cfg.data_dir.join("cluster").join("groups");
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".wal")).and_then(|n| n.parse::<GroupId>().ok()) else {
                continue;
            };
            if id == META_GROUP || id >= next_group || topics.contains(&id) || tables.contains(&id) || self.raft.has_group(id) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(group = id, "cluster: raft log of a deleted group removed"),
                Err(e) => tracing::warn!(group = id, path = %path.display(), error = %e, "cluster: removing a deleted group's raft log failed"),
            }
        }
    }

    /// Nodes heard from within two election timeouts (this one included).
    fn live_nodes(&self) -> std::collections::BTreeSet<NodeId> {
        self.live_within(self.cfg.tick_ms * self.cfg.tuning.election_ticks as u64 * 2)
    }

    /// Nodes connected and heard from within `live_ms` (this one included).
    fn live_within(&self, live_ms: u64) -> std::collections::BTreeSet<NodeId> {
        let mut live: std::collections::BTreeSet<NodeId> =
            self.transport.status().into_iter().filter(|p| p.connected && p.last_contact_ms.is_some_and(|ms| ms <= live_ms)).map(|p| p.id).collect();
        live.insert(self.cfg.node_id);
        live
    }

    /// One rebalancer round (docs/cluster.md, "Rebalancer"): on the metadata
    /// leader, plan moves and record them; on every node, take the next step
    /// of each hosted partition group it leads.
    fn rebalance(&mut self) {
        let cfg = self.cfg.tuning.rebalance.clone();
        let now_ms = self.started.elapsed().as_millis() as u64;
        let meta = self.meta.read().unwrap_or_else(|p| p.into_inner()).clone();
        let caught_up = self.raft.status(META_GROUP).is_some_and(|s| s.applied >= s.commit);
        if self.raft.is_leader(META_GROUP) && caught_up {
            let live = self.live_nodes();
            let cmds = self.planner.get_or_insert_with(crate::rebalancer::Planner::new).plan(now_ms, &cfg, &meta, &live);
            for cmd in cmds {
                if let MetaCommand::StartMove { group, from, to, reason, .. } = &cmd {
                    tracing::info!(group, from, to, reason = %reason, "cluster: rebalancer records a move");
                    self.rebalance.planned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.propose_meta_internal(&cmd);
            }
        } else if !self.raft.is_leader(META_GROUP) {
            self.planner = None;
        }
        let data_nodes: std::collections::BTreeSet<NodeId> = meta.data_nodes().into_iter().collect();
        let views: Vec<crate::rebalancer::GroupView> = meta
            .replica_groups()
            .into_iter()
            .filter_map(|(group, replicas)| {
                let st = self.raft.status(group)?;
                Some(crate::rebalancer::GroupView {
                    group,
                    me: self.cfg.node_id,
                    leader: st.leader,
                    voters: st.voters,
                    learners: st.learners,
                    voters_outgoing: st.voters_outgoing,
                    matched: st.matched,
                    commit: st.commit,
                    replicas,
                    pending: meta.moves.get(&group).cloned(),
                })
            })
            .collect();
        let live = self.live_nodes();
        let under = views.iter().filter(|v| v.leader == v.me && v.replicas.iter().any(|r| !live.contains(r) || !meta.nodes.contains_key(r))).count();
        self.rebalance.under_replicated.store(under as u64, std::sync::atomic::Ordering::Relaxed);
        for (group, action) in self.executor.step(now_ms, &cfg, &views, &data_nodes) {
            self.execute(group, action);
        }
    }

    /// A metadata command from the driver itself; nobody waits for the answer
    /// (the rebalancer reads the applied metadata on its next round).
    fn propose_meta_internal(&mut self, cmd: &MetaCommand) {
        let Ok(data) = serde_json::to_vec(cmd) else { return };
        self.seq += 1;
        if let Err(e) = self.raft.propose_forwarding(META_GROUP, ctx(self.cfg.node_id, self.seq), data) {
            tracing::debug!(error = %e, "cluster: rebalancer metadata proposal not accepted; retried next round");
        }
    }

    fn execute(&mut self, group: GroupId, action: crate::rebalancer::GroupAction) {
        use crate::rebalancer::GroupAction as A;
        let change = |changes: &[(ConfChangeType, NodeId)], joint: bool| {
            let mut cc = ConfChangeV2::default();
            cc.set_changes(
                changes
                    .iter()
                    .map(|(kind, id)| {
                        let mut single = ConfChangeSingle::default();
                        single.set_change_type(*kind);
                        single.node_id = *id;
                        single
                    })
                    .collect::<Vec<_>>()
                    .into(),
            );
            // Joint consensus when one change adds and removes a voter; raft-rs leaves it by itself.
            cc.set_transition(if joint { ConfChangeTransition::Implicit } else { ConfChangeTransition::Auto });
            cc
        };
        tracing::info!(group, action = ?action, "cluster: rebalancer step");
        let cc = match action {
            A::AddLearner(n) => change(&[(ConfChangeType::AddLearnerNode, n)], false),
            A::Replace { add, remove } => change(&[(ConfChangeType::AddNode, add), (ConfChangeType::RemoveNode, remove)], true),
            A::Promote(n) => change(&[(ConfChangeType::AddNode, n)], false),
            A::Remove(n) | A::NudgeLeader(n) => change(&[(ConfChangeType::RemoveNode, n)], false),
            A::TransferLeader(n) => {
                self.raft.transfer_leader(group, n);
                self.rebalance.leader_transfers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            A::Meta(cmd) => {
                self.propose_meta_internal(&cmd);
                return;
            }
        };
        self.seq += 1;
        match self.raft.propose_conf_change(group, ctx(self.cfg.node_id, self.seq), cc) {
            Ok(()) => {
                self.rebalance.conf_changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(group, error = %e, "cluster: rebalancer membership change not accepted; retried"),
        }
    }

    /// Open the raft group of every table with a replica placed here (data
    /// role), founding voters from the placement as for partitions. The
    /// state machine is weft-table's TableState (table.rs); it is rebuilt at
    /// start from the group's snapshot and log.
    fn open_tables(&mut self) -> Result<()> {
        if !self.cfg.roles.contains(&Role::Data) {
            return Ok(());
        }
        let me = self.cfg.node_id;
        // (table, founding voters, placed here): a move's target joins empty,
        // and so does any replica once the group changed (as for partitions).
        let wanted: Vec<(crate::meta::TableMeta, Vec<NodeId>, bool)> = {
            let meta = self.meta.read().unwrap_or_else(|p| p.into_inner());
            let joins = |g: GroupId| meta.moves.get(&g).is_some_and(|m| m.to == me);
            meta.tables
                .values()
                .filter(|t| (t.replicas.contains(&me) || joins(t.group)) && !self.raft.has_group(t.group))
                .map(|t| {
                    let placed = t.replicas.contains(&me);
                    let founding = placed && t.moves == 0 && !meta.moves.contains_key(&t.group);
                    (t.clone(), if founding { t.replicas.clone() } else { Vec::new() }, placed)
                })
                .collect()
        };
        self.close_dropped_tables();
        for (t, voters, placed) in wanted {
            let disk = FileDisk::open(self.cfg.data_dir.join("cluster").join("groups").join(format!("{}.wal", t.group)))?;
            let (sm, replica) = crate::table::start(t.name.clone());
            self.raft.open_group(t.group, Box::new(disk), Box::new(sm), &voters, &mut self.rng)?;
            if placed {
                self.tables.write().unwrap_or_else(|p| p.into_inner()).insert(t.group, replica);
            } else {
                self.joining_tables.insert(t.group, replica);
            }
            tracing::info!(group = t.group, table = %t.name, replicas = ?t.replicas, joining = !placed, "cluster: table group opened");
        }
        Ok(())
    }

    /// DROP TABLE: close the group of every table this node hosts that the
    /// metadata no longer has (or no longer places here), and remove its raft
    /// log. Group ids are never reused, so a late message for the group is
    /// refused as unknown. Readers holding the replica keep their view.
    ///
    /// After moves (docs/cluster.md, "Rebalancer"): a table group this node
    /// joined serves reads once the placement names it; one it was moved off
    /// is closed but its raft log kept (as for partitions).
    fn close_dropped_tables(&mut self) {
        let me = self.cfg.node_id;
        let (placed, joins, exists): (std::collections::BTreeSet<GroupId>, std::collections::BTreeSet<GroupId>, std::collections::BTreeSet<GroupId>) = {
            let meta = self.meta.read().unwrap_or_else(|p| p.into_inner());
            (
                meta.tables.values().filter(|t| t.replicas.contains(&me)).map(|t| t.group).collect(),
                meta.moves.values().filter(|m| m.to == me).map(|m| m.group).collect(),
                meta.tables.values().map(|t| t.group).collect(),
            )
        };
        let joined: Vec<GroupId> = self.joining_tables.keys().copied().filter(|g| placed.contains(g)).collect();
        for g in joined {
            if let Some(r) = self.joining_tables.remove(&g) {
                self.tables.write().unwrap_or_else(|p| p.into_inner()).insert(g, r);
                tracing::info!(group = g, "cluster: joined table group now serves reads");
            }
        }
        let open: Vec<GroupId> = self.tables.read().unwrap_or_else(|p| p.into_inner()).keys().chain(self.joining_tables.keys()).copied().collect();
        for group in open.into_iter().filter(|g| !placed.contains(g) && !joins.contains(g)) {
            self.tables.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
            self.joining_tables.remove(&group);
            self.raft.close_group(group);
            // Reads waiting on the group will not complete: fail them now.
            let waiting: Vec<u64> = self.reads_waiting.iter().filter(|(_, (g, _))| *g == group).map(|(s, _)| *s).collect();
            for seq in waiting {
                if let Some((_, p)) = self.reads_waiting.remove(&seq) {
                    let _ = p.reply.send(Err(ClusterError::UnknownGroup(group)));
                }
            }
            if exists.contains(&group) {
                // Moved off, not dropped: the raft log stays (see close_moved_partitions).
                tracing::info!(group, "cluster: moved off a table group; closed (its raft log stays)");
                continue;
            }
            let path = self.cfg.data_dir.join("cluster").join("groups").join(format!("{group}.wal"));
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(group, "cluster: table group closed, raft log removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(group, path = %path.display(), error = %e, "cluster: removing a dropped table's raft log failed"),
            }
        }
    }

    fn ready(&mut self) -> Result<()> {
        let out = self.raft.handle_ready()?;
        let mut batches: BTreeMap<NodeId, Vec<(GroupId, raft::prelude::Message)>> = BTreeMap::new();
        for (to, group, msg) in out.messages {
            batches.entry(to).or_default().push((group, msg));
        }
        for (to, msgs) in batches {
            if !self.transport.send(to, &Frame { from: self.cfg.node_id, msgs }) {
                self.raft.report_unreachable(to);
            }
        }
        let membership_changed = !out.conf_changes.is_empty() || out.applied.iter().any(|a| a.group == META_GROUP);
        for a in out.applied {
            if let Some((node, seq)) = parse_ctx(&a.context) {
                if node == self.cfg.node_id {
                    if let Some(p) = self.proposals.remove(&seq) {
                        let _ = p.reply.send(Ok(a.response));
                    }
                }
            }
        }
        // After the applied answers: an entry applied in this round answers with its offsets.
        for (_, tag) in out.persisted {
            if let Some((node, seq)) = parse_ctx(&tag) {
                if node == self.cfg.node_id && self.persist_acks.remove(&seq) {
                    if let Some(p) = self.proposals.remove(&seq) {
                        let _ = p.reply.send(Ok(Vec::new()));
                    }
                }
            }
        }
        for (group, _cs, context) in out.conf_changes {
            if group == META_GROUP {
                if let Some(info) = context.get(16..).and_then(|c| serde_json::from_slice::<NodeInfo>(c).ok()) {
                    self.transport.set_peer(info.id, info.cluster_addr);
                }
            }
            if let Some((node, seq)) = parse_ctx(&context) {
                if node == self.cfg.node_id {
                    if let Some(p) = self.proposals.remove(&seq) {
                        let _ = p.reply.send(Ok(Vec::new()));
                    }
                }
            }
        }
        if membership_changed {
            self.sync_peers();
            self.open_partitions()?;
        }
        for (group, index, context) in out.reads {
            if let Some((node, seq)) = parse_ctx(&context) {
                if node == self.cfg.node_id {
                    if let Some((_, p)) = self.reads_waiting.remove(&seq) {
                        self.reads_ready.push((group, index, p));
                    }
                }
            }
        }
        let raft = &self.raft;
        let (done, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready).into_iter().partition(|(g, i, _)| raft.applied(*g) >= *i);
        self.reads_ready = wait;
        for (_, _, p) in done {
            let _ = p.reply.send(Ok(()));
        }
        Ok(())
    }
}
