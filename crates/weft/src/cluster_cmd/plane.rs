//! The cluster's record plane (docs/cluster.md, "One path for records"):
//! `log.*` endpoints, the HTTP gateway and the CLI reach replicated topics
//! through this implementation of [`weft_broker::plane::RecordPlane`].
//!
//! - A topic in the metadata group is replicated: a produce becomes one raft
//!   entry per partition (offsets assigned at apply), a fetch reads this
//!   node's copy (which holds only committed records). A node that hosts no
//!   replica of the partition forwards the request to a replica over the
//!   native protocol (`cluster.local.*`, which never forward again), keeping
//!   one client connection per peer.
//! - A topic only in this node's log (node-local features, or created before
//!   cluster mode) is served from the log as on a single node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weft_broker::dto;
use weft_broker::error::log_error_body;
use weft_broker::native;
use weft_broker::plane::{PlaneFuture, ProduceOpts, RecordPlane};
use weft_cluster::meta::{TopicMeta, topic_config};
use weft_cluster::partition::EntryRecord;
use weft_cluster::{ClusterError, ClusterNode, MetaCommand, MetaResponse, NodeId};
use weft_log::{Log, LogError, OffsetSpec, PartitionId, ProduceRecord, TopicAlter, TopicConfig, TopicDescription};
use weft_net::{Client, ClientConfig, ClientError};
use weft_wire::{ErrorBody, ErrorCode};

/// Internal routes a forwarding node calls on a replica; they serve only
/// partitions hosted on the node called (never forward), so a request makes
/// at most one hop even while two nodes disagree about placement.
pub const LOCAL_PRODUCE: &str = "cluster.local.produce";
/// Idempotent producers remembered per partition by default (least
/// recently used evicted first; `cluster.max_producers_per_partition`).
pub const DEFAULT_MAX_PRODUCERS_PER_PARTITION: u32 = 1000;
pub const LOCAL_FETCH: &str = "cluster.local.fetch";
/// A consumer-group membership request sent to the group's coordinator
/// (`{route, body}`); served from that node's group state, never forwarded again.
pub const LOCAL_GROUP: &str = "cluster.local.group";
pub const LOCAL_OFFSETS: &str = "cluster.local.offsets";

pub struct ClusterPlane {
    node: ClusterNode,
    log: Log,
    /// One connection per peer, opened on first use (reconnects in the background).
    peers: Mutex<HashMap<NodeId, Client>>,
    /// The replica that last answered for a group: tried first next time.
    routes: Mutex<HashMap<u64, NodeId>>,
    /// Keyless records without a partition: one partition per call, rotating.
    sticky: AtomicU32,
    /// How long a produce keeps retrying while its partition has no leader
    /// (`cluster.propose_timeout_ms`).
    propose_timeout: Duration,
    /// Longest long-poll of a forwarded fetch (`cluster.forward_max_wait_ms`).
    forward_max_wait_ms: u64,
    /// Requests forwarded to a replica, and those that failed (stats).
    forwarded: AtomicU64,
    forward_failures: AtomicU64,
    /// `cluster.max_producers_per_partition`, carried in each idempotent
    /// entry (apply reads no config).
    pub max_producers: u32,
    /// The consumer-group coordinator's side (this node while it leads the
    /// metadata group; docs/cluster.md, "Consumer groups"). Membership
    /// changes are serialized by this lock; heartbeats do not take it.
    coord: tokio::sync::Mutex<Coordinating>,
    /// The metadata term this node coordinates in (0: it does not), for the
    /// lock-free check of heartbeats.
    coord_term: AtomicU64,
    /// Group states written to the metadata, and take-overs (stats).
    groups_replicated: AtomicU64,
    coordinator_takeovers: AtomicU64,
}

/// What the coordinator knows beyond weft-log's group state.
#[derive(Default)]
struct Coordinating {
    /// The metadata term in which this node took over (loaded the
    /// replicated membership); None while it does not coordinate.
    term: Option<u64>,
    /// Each group's membership as last written to the metadata.
    synced: BTreeMap<String, weft_log::GroupSnapshot>,
    /// Expiry of replicated offsets by age; reset when it steps down.
    expiry: OffsetExpiry,
}

/// What the coordinator knows for the expiry of offsets by age
/// (`log_store.offsets_retention_ms`, Kafka's `offsets.retention.minutes`).
#[derive(Default)]
struct OffsetExpiry {
    /// When this node began looking (it knows nothing of membership before).
    since_ms: Option<i64>,
    /// When each group was last seen here with members.
    seen: BTreeMap<String, i64>,
    /// The next look (once per maintenance interval).
    next_ms: i64,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// A cluster error as a wire error (the one mapping; `cluster.*` routes use it too).
pub fn cluster_error_body(e: &ClusterError) -> ErrorBody {
    match e {
        ClusterError::NotLeader { group, leader, addr } => ErrorBody::new(ErrorCode::NotLeader, e.to_string())
            .with_details(serde_json::json!({"kind": "not_leader", "group": group, "leader": leader, "addr": addr, "not_leader": {"group": group, "leader": leader, "addr": addr}})),
        ClusterError::Timeout(_) => ErrorBody::new(ErrorCode::Timeout, e.to_string()).with_details(serde_json::json!({"outcome": "unknown"})),
        ClusterError::Busy => ErrorBody::new(ErrorCode::Busy, e.to_string()),
        ClusterError::ApplyBacklog { queued, limit } => {
            ErrorBody::new(ErrorCode::Busy, e.to_string()).with_details(serde_json::json!({"kind": "apply_backlog", "queued_bytes": queued, "limit": limit}))
        }
        ClusterError::Shutdown => ErrorBody::new(ErrorCode::ShuttingDown, e.to_string()),
        ClusterError::Config(_) => ErrorBody::new(ErrorCode::Validation, e.to_string()),
        ClusterError::OutOfOrderSequence { producer_id, expected, got } => ErrorBody::new(ErrorCode::Conflict, e.to_string())
            .with_details(serde_json::json!({"kind": "out_of_order_sequence", "producer_id": producer_id, "expected": expected, "got": got})),
        ClusterError::UnknownGroup(g) => ErrorBody::new(ErrorCode::Unavailable, format!("partition group {g} is not hosted on this node"))
            .with_details(serde_json::json!({"kind": "not_hosted", "group": g})),
        _ => ErrorBody::new(ErrorCode::Unavailable, e.to_string()),
    }
}

fn meta_error(r: MetaResponse) -> Result<MetaResponse, ErrorBody> {
    match r {
        MetaResponse::Error { code, message } => {
            let code = match code.as_str() {
                "not_found" => ErrorCode::NotFound,
                "conflict" => ErrorCode::Conflict,
                _ => ErrorCode::Validation,
            };
            Err(ErrorBody::new(code, message))
        }
        ok => Ok(ok),
    }
}

/// Whether a forwarded request certainly did not run on the peer, so another
/// replica may be tried even for a produce.
fn not_sent(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::Closed => true,
        ClientError::Remote(b) => b.code == ErrorCode::NotLeader || b.details.as_ref().and_then(|d| d["kind"].as_str()) == Some("not_hosted"),
        _ => false,
    }
}

fn client_error_body(e: ClientError) -> ErrorBody {
    match e {
        ClientError::Remote(b) => b,
        ClientError::Timeout(_) | ClientError::ConnectionLost => {
            ErrorBody::new(ErrorCode::Timeout, format!("forwarded request: {e}")).with_details(serde_json::json!({"outcome": "unknown"}))
        }
        other => ErrorBody::new(ErrorCode::Unavailable, format!("forwarding to a replica: {other}")),
    }
}

fn to_entry(r: &ProduceRecord, now_ms: i64) -> EntryRecord {
    EntryRecord {
        timestamp_ms: r.timestamp_ms.unwrap_or(now_ms),
        key: r.key.as_ref().map(|k| k.to_vec()),
        value: r.value.as_ref().map(|v| v.to_vec()),
        headers: r.headers.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect(),
    }
}

fn to_record_in(r: ProduceRecord, partition: u32) -> dto::RecordIn {
    dto::RecordIn {
        partition: Some(partition),
        key: r.key.map(dto::SharedBytes::from),
        value: r.value.map(dto::SharedBytes::from),
        headers: r.headers.into_iter().map(|(k, v)| (k, dto::SharedBytes::from(v))).collect(),
        timestamp_ms: r.timestamp_ms,
    }
}

fn record_size(r: &ProduceRecord) -> usize {
    r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len) + r.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl ClusterPlane {
    pub fn new(node: ClusterNode, log: Log, propose_timeout: Duration, forward_max_wait_ms: u64) -> Self {
        ClusterPlane {
            node,
            log,
            peers: Mutex::default(),
            routes: Mutex::default(),
            sticky: AtomicU32::new(0),
            propose_timeout,
            forward_max_wait_ms: forward_max_wait_ms.max(1),
            forwarded: AtomicU64::new(0),
            forward_failures: AtomicU64::new(0),
            max_producers: DEFAULT_MAX_PRODUCERS_PER_PARTITION,
            coord: tokio::sync::Mutex::default(),
            coord_term: AtomicU64::new(0),
            groups_replicated: AtomicU64::new(0),
            coordinator_takeovers: AtomicU64::new(0),
        }
    }

    /// `cluster.forwarded`, `cluster.forward_failures` (for `weft stats`).
    pub fn gauges(&self) -> Vec<(String, serde_json::Value)> {
        vec![
            ("cluster.forwarded".into(), self.forwarded.load(Ordering::Relaxed).into()),
            ("cluster.forward_failures".into(), self.forward_failures.load(Ordering::Relaxed).into()),
            ("cluster.groups_replicated".into(), self.groups_replicated.load(Ordering::Relaxed).into()),
            ("cluster.coordinator_takeovers".into(), self.coordinator_takeovers.load(Ordering::Relaxed).into()),
            ("cluster.coordinating".into(), (self.coord_term.load(Ordering::Relaxed) != 0).into()),
        ]
    }

    /// The topic's metadata when it is replicated. This node's metadata may
    /// lag a create done elsewhere: a name it does not know is looked up
    /// again linearizably before it is called local.
    async fn replicated(&self, topic: &str) -> Option<TopicMeta> {
        if let Some(t) = self.node.local_meta().topics.get(topic) {
            return Some(t.clone());
        }
        if self.log.describe_topic(topic).is_ok() {
            return None;
        }
        self.node.read_meta().await.ok()?.topics.get(topic).cloned()
    }

    async fn peer(&self, id: NodeId) -> Result<Client, ClientError> {
        if let Some(c) = self.peers.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(c.clone());
        }
        let mut cfg = ClientConfig {
            client_name: format!("weft-cluster-{}", self.node.node_id()),
            connect_timeout: Duration::from_secs(2),
            // A forwarded produce waits for its commit (bounded by the propose
            // timeout there), a fetch for its long poll (clamped to FORWARD_MAX_WAIT_MS):
            // a stopped peer costs a caller this long, not the client default of 30 s.
            request_timeout: self.propose_timeout.max(Duration::from_millis(self.forward_max_wait_ms)) + Duration::from_secs(2),
            ..ClientConfig::default()
        };
        // With cluster TLS: the peer's cluster port, as a node (mTLS).
        let target = super::forward_target(&self.node, id, &mut cfg)?;
        let c = Client::connect(target, cfg).await?;
        // Two racing connects keep the first; the other is dropped (closed).
        Ok(self.peers.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_insert(c).clone())
    }

    /// The coordinator of every consumer group: the metadata leader
    /// (docs/cluster.md, "Consumer groups"), as this node sees it (a
    /// data-only node follows the metadata as a learner). Where this node
    /// knows no leader (an election, a learner cut off), a control node is
    /// asked in turn (`attempt`): it serves the request if it leads, else
    /// its `not_leader` answer names the leader it knows.
    fn group_coordinator(&self, attempt: usize) -> Option<NodeId> {
        if let Some(l) = self.node.leader_of(weft_cluster::META_GROUP) {
            return Some(l);
        }
        let me = self.node.node_id();
        let control: Vec<NodeId> = self.node.local_meta().nodes.values().filter(|n| n.id != me && n.roles.contains(&weft_cluster::Role::Control)).map(|n| n.id).collect();
        control.get(attempt % control.len().max(1)).copied()
    }

    /// `not_leader` naming the metadata leader: this node does not coordinate groups.
    fn not_coordinator(&self) -> ErrorBody {
        let leader = self.node.leader_of(weft_cluster::META_GROUP).unwrap_or(0);
        let addr = if leader == 0 { None } else { self.node.native_addr(leader) };
        let mut e = cluster_error_body(&ClusterError::NotLeader { group: weft_cluster::META_GROUP, leader, addr });
        e.message = "this node does not coordinate consumer groups (it does not lead the metadata group)".into();
        e
    }

    /// Take over as the coordinator in metadata term `term`: load every
    /// group's membership from the metadata (members keep their ids,
    /// generation and assignment; each session restarts now, since
    /// heartbeats are not replicated).
    async fn take_over(&self, c: &mut Coordinating, term: u64) -> Result<(), ErrorBody> {
        // ReadIndex: every group state committed under an earlier leader is applied here.
        let meta = self.node.read_meta().await.map_err(|e| cluster_error_body(&e))?;
        let mut groups = BTreeMap::new();
        for (name, g) in &meta.groups {
            match serde_json::from_value::<weft_log::GroupSnapshot>(g.state.clone()) {
                Ok(s) => {
                    groups.insert(name.clone(), s);
                }
                Err(e) => tracing::warn!(group = %name, error = %e, "cluster: replicated group state unreadable; the group starts empty"),
            }
        }
        // The assignment reads partition counts from this node's log: every
        // replicated topic a member subscribes to needs its copy here first.
        let topics: BTreeSet<String> = groups.values().flat_map(|g| g.members.values().flat_map(|m| m.topics.iter().map(|t| t.as_str().to_owned()))).collect();
        for t in topics {
            if let Some(tm) = meta.topics.get(&t) {
                weft_cluster::partition::ensure_local_topic(&self.log, &t, topic_config(tm)).await.map_err(|e| cluster_error_body(&e))?;
            }
        }
        let n = groups.len();
        self.log.import_groups(groups.clone());
        c.synced = groups;
        c.term = Some(term);
        self.coord_term.store(term, Ordering::Relaxed);
        self.coordinator_takeovers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(term, groups = n, "cluster: took over as consumer-group coordinator");
        Ok(())
    }

    fn step_down(&self, c: &mut Coordinating) {
        if c.term.take().is_some() {
            // A node that does not coordinate holds no group state (it would
            // only expire members here); a take-over loads it again.
            self.log.import_groups(BTreeMap::new());
            tracing::info!("cluster: no longer the consumer-group coordinator");
        }
        c.synced.clear();
        c.expiry = OffsetExpiry::default();
        self.coord_term.store(0, Ordering::Relaxed);
    }

    /// Write every group whose membership changed since it was last written
    /// (a join, leave, expiry or hand-off) to the metadata. Heartbeats change
    /// no membership and never go through raft.
    async fn replicate_groups(&self, c: &mut Coordinating) -> Result<(), ErrorBody> {
        let Some(term) = c.term else { return Err(self.not_coordinator()) };
        for (name, snap) in self.log.export_groups() {
            if c.synced.get(&name) == Some(&snap) {
                continue;
            }
            let state = serde_json::to_value(&snap).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
            let cmd = MetaCommand::SetGroup { group: name.clone(), epoch: term, generation: snap.generation, state };
            match self.node.propose_meta(&cmd).await.map_err(|e| cluster_error_body(&e))? {
                // A later coordinator wrote the group: this node no longer coordinates.
                MetaResponse::Error { code, .. } if code == "conflict" => {
                    self.step_down(c);
                    return Err(self.not_coordinator());
                }
                r => {
                    meta_error(r)?;
                }
            }
            c.synced.insert(name, snap);
            self.groups_replicated.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// One round of the coordinator's upkeep (every 200 ms): take over when
    /// this node became the metadata leader (or was again, in a later
    /// term), step down when it no longer is, and write membership changes
    /// no request waited for (expiries, hand-offs) to the metadata.
    async fn coordinate_once(&self) {
        let me = self.node.node_id();
        if self.node.leader_of(weft_cluster::META_GROUP) != Some(me) {
            self.step_down(&mut *self.coord.lock().await);
            return;
        }
        // None: the driver is busy; next round (stepping down would drop
        // state not yet written to the metadata).
        let Some((leader, term)) = self.node.meta_leader_term().await else { return };
        let mut c = self.coord.lock().await;
        if leader != me {
            self.step_down(&mut c);
            return;
        }
        if c.term != Some(term)
            && let Err(e) = self.take_over(&mut c, term).await
        {
            tracing::debug!(error = %e.message, "cluster: taking over as group coordinator failed; retried");
            return;
        }
        if let Err(e) = self.replicate_groups(&mut c).await {
            tracing::debug!(error = %e.message, "cluster: writing group membership to the metadata failed; retried");
        }
        let stale = self.stale_groups(&mut c).await;
        // Deleting goes through the coordinator's own request path, which takes the lock.
        drop(c);
        let decided = now_ms();
        for (g, had_offsets, keep) in stale {
            // Refused by the metadata if a commit raced this decision.
            match self.delete_group_unless(&g, Some(decided.saturating_sub(keep))).await {
                // Counted: groups whose offsets went (a bare record is housekeeping).
                Ok(()) if had_offsets => {
                    weft_metrics::get().log_groups_expired.inc();
                    tracing::info!(group = %g, "cluster: group offsets expired (log_store.offsets_retention_ms)");
                }
                Ok(()) => {}
                // A member joined meanwhile, or the leadership moved: next look.
                Err(e) => tracing::debug!(group = %g, error = %e.message, "cluster: expiry of group offsets not done"),
            }
        }
    }

    /// `weft group delete` through the metadata group; with
    /// `unless_committed_after_ms`, an expiry by age that the metadata
    /// refuses (`conflict`) if the group committed after that time.
    async fn delete_group_unless(&self, group: &str, unless_committed_after_ms: Option<i64>) -> Result<(), ErrorBody> {
        weft_log::validate_group_name(group).map_err(|e| log_error_body(&e))?;
        let forgot = self.at_coordinator(native::GROUP_FORGET, group, serde_json::json!({"group": group})).await?;
        let mut deleted = forgot["forgotten"].as_bool().unwrap_or(false);
        match self.node.propose_meta(&MetaCommand::DeleteGroup { group: group.to_owned(), unless_committed_after_ms }).await.map_err(|e| cluster_error_body(&e))? {
            MetaResponse::Ok => deleted = true,
            MetaResponse::Error { code, .. } if code == "not_found" => {}
            other => {
                meta_error(other)?;
            }
        }
        // This node's own offsets (topics not replicated) go with a delete;
        // an expiry leaves them to weft-log's, which knows their commit times.
        if unless_committed_after_ms.is_none() {
            match self.log.delete_group(group).await {
                Ok(()) => deleted = true,
                Err(LogError::UnknownGroup(_)) => {}
                Err(e) => return Err(log_error_body(&e)),
            }
        }
        if !deleted {
            return Err(log_error_body(&LogError::UnknownGroup(group.to_owned())));
        }
        tracing::info!(group, "group deleted through the metadata group");
        Ok(())
    }

    /// On the coordinator, once per maintenance interval: the groups whose
    /// offsets have expired by age (Kafka's `offsets.retention.minutes`,
    /// `log_store.offsets_retention_ms`): no members here and no commit
    /// (the metadata's newest commit time) for the retention. Membership is
    /// counted from this node's own sightings and at most from when it began
    /// looking (it knows nothing of the groups' members before), so offsets
    /// never go earlier than the setting says (commit times are the
    /// proposers' clocks). Each with whether it has offsets, and the retention.
    async fn stale_groups(&self, c: &mut Coordinating) -> Vec<(String, bool, i64)> {
        let cfg = self.log.config();
        let (Some(keep), Some(every)) = (cfg.offsets_retention, cfg.maintenance_interval) else { return Vec::new() };
        let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        if now < c.expiry.next_ms {
            return Vec::new();
        }
        c.expiry.next_ms = now.saturating_add(i64::try_from(every.as_millis()).unwrap_or(i64::MAX));
        let since = *c.expiry.since_ms.get_or_insert(now);
        let meta = match self.node.read_meta().await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "cluster: reading the metadata for offset expiry failed; next round");
                return Vec::new();
            }
        };
        let names: BTreeSet<&String> = meta.offsets.keys().chain(meta.groups.keys()).collect();
        let mut stale = Vec::new();
        for g in &names {
            if self.log.group_member_count(g) > 0 {
                c.expiry.seen.insert((*g).clone(), now);
                continue;
            }
            let last_commit = meta.group_commit_ms.get(*g).copied().unwrap_or(i64::MIN);
            let active = c.expiry.seen.get(*g).copied().unwrap_or(since).max(last_commit);
            if now.saturating_sub(active) >= keep {
                stale.push(((*g).clone(), meta.offsets.contains_key(*g), keep));
            }
        }
        c.expiry.seen.retain(|g, _| names.contains(g));
        stale
    }

    /// Run the coordinator's upkeep while the plane lives.
    pub fn spawn_coordinator(plane: &Arc<ClusterPlane>) {
        let weak = Arc::downgrade(plane);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(p) = weak.upgrade() else { break };
                p.coordinate_once().await;
            }
        });
    }

    /// On the coordinator, before a join: the group's assignment reads the
    /// partition counts of its topics from this node's log, so a replicated
    /// topic needs its (possibly empty) local copy here.
    async fn group_topics_here(&self, route: &str, body: &serde_json::Value) -> Result<(), ErrorBody> {
        if route != dto::route::GROUP_JOIN {
            return Ok(());
        }
        for t in body["topics"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
            if let Some(meta) = self.replicated(t).await {
                weft_cluster::partition::ensure_local_topic(&self.log, t, topic_config(&meta)).await.map_err(|e| cluster_error_body(&e))?;
            }
        }
        Ok(())
    }

    /// A membership request on the coordinator (forwarded, or called
    /// here). Refused with `not_leader` on a node that does not lead the
    /// metadata group: a stale forward never serves from a stale state.
    /// A join or leave is written to the metadata before it is answered.
    pub async fn group_here(&self, route: &str, body: serde_json::Value) -> Result<serde_json::Value, ErrorBody> {
        let me = self.node.node_id();
        if self.node.leader_of(weft_cluster::META_GROUP) != Some(me) {
            return Err(self.not_coordinator());
        }
        let changes = route == dto::route::GROUP_JOIN || route == dto::route::GROUP_LEAVE;
        if !changes && self.coord_term.load(Ordering::Relaxed) != 0 {
            // Heartbeats, describe, list, the fence: leader-local, never through raft.
            return native::group_local(&self.log, route, body).await;
        }
        let mut c = self.coord.lock().await;
        if c.term.is_none() {
            let Some((_, term)) = self.node.meta_leader_term().await.filter(|(l, _)| *l == me) else {
                return Err(self.not_coordinator());
            };
            self.take_over(&mut c, term).await?;
        }
        self.group_topics_here(route, &body).await?;
        let out = native::group_local(&self.log, route, body).await?;
        if changes && let Err(e) = self.replicate_groups(&mut c).await {
            // Answered anyway: the member is in this coordinator's state, and
            // the upkeep writes it once it can. If this node lost the
            // metadata leadership meanwhile, the member's next heartbeat at
            // the new coordinator says `unknown member` and it joins again.
            tracing::warn!(route, error = %e.message, "cluster: group membership change not yet in the metadata");
        }
        Ok(out)
    }

    /// A group request at the group's coordinator: forwarded when that is
    /// another node, else served from this node's state.
    async fn at_coordinator(&self, route: &str, group: &str, body: serde_json::Value) -> Result<serde_json::Value, ErrorBody> {
        match self.group_forward(route, group, body.clone()).await? {
            Some(v) => Ok(v),
            None => native::group_local(&self.log, route, body).await,
        }
    }

    /// A member's fetch fence, at the group's coordinator (commits of a named member).
    async fn check_member(&self, group: &str, member_id: &str, generation: u32, topic: &str, partition: u32) -> Result<(), ErrorBody> {
        let body = serde_json::json!({"group": group, "member_id": member_id, "generation": generation, "topic": topic, "partition": partition});
        self.at_coordinator(native::GROUP_CHECK_FETCH, group, body).await.map(|_| ())
    }

    fn forget_peer(&self, id: NodeId) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// The partition's replicas in the order to try: the one that last
    /// answered, the group's leader when known here, then placement order.
    fn candidates(&self, topic: &str, partition: u32) -> Result<(u64, Vec<NodeId>), ErrorBody> {
        let (group, mut replicas) = self.node.placement(topic, partition).map_err(|e| cluster_error_body(&e))?;
        let me = self.node.node_id();
        replicas.retain(|r| *r != me);
        let first = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get(&group).copied();
        if let Some(f) = first.filter(|f| replicas.contains(f)) {
            replicas.retain(|r| *r != f);
            replicas.insert(0, f);
        }
        Ok((group, replicas))
    }

    /// Call `route` on the partition's replicas until one answers. `idempotent`:
    /// any failure moves to the next replica; else only failures that prove
    /// the request did not run there (a produce is never sent twice).
    async fn forward<Req, Resp>(&self, topic: &str, partition: u32, route: &str, req: &Req, idempotent: bool) -> Result<Resp, ErrorBody>
    where
        Req: serde::Serialize + Sync,
        Resp: serde::de::DeserializeOwned,
    {
        let (group, replicas) = self.candidates(topic, partition)?;
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut last = err(ErrorCode::Unavailable, format!("no replica of {topic}/{partition} reachable"));
        for id in replicas {
            let c = match self.peer(id).await {
                Ok(c) => c,
                Err(e) => {
                    last = client_error_body(e);
                    continue;
                }
            };
            // The hop, as a client span of the request's trace; the native
            // client sends its context in the frame's trace-context extension,
            // so the replica's request span continues it.
            let hop = if weft_service::trace::request_spans() {
                tracing::info_span!("cluster.forward", otel.kind = "client", route, node = id, topic, partition)
            } else {
                tracing::Span::none()
            };
            match tracing::Instrument::instrument(c.call::<Req, Resp>(route, req), hop).await {
                Ok(r) => {
                    self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(group, id);
                    return Ok(r);
                }
                Err(e) => {
                    let retry = idempotent || not_sent(&e);
                    if matches!(e, ClientError::Connect { .. } | ClientError::Closed) {
                        self.forget_peer(id);
                    }
                    self.forward_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(topic, partition, node = id, error = %e, "cluster: forwarded request failed");
                    if !retry {
                        return Err(client_error_body(e));
                    }
                    last = client_error_body(e);
                }
            }
        }
        Err(last)
    }

    /// Produce records (already placed in `partition`) to a partition hosted
    /// here; retried while the group has no leader (nothing was proposed then).
    /// An idempotent producer's batch goes as one entry the state machine
    /// dedups (weft-cluster partition.rs).
    pub async fn produce_here(&self, topic: &str, partition: u32, records: &[ProduceRecord], opts: ProduceOpts) -> Result<Vec<u64>, ErrorBody> {
        let now = now_ms();
        let entries: Vec<EntryRecord> = records.iter().map(|r| to_entry(r, now)).collect();
        let deadline = Instant::now() + self.propose_timeout;
        loop {
            // An idempotent batch waits for its commit whatever `acks` says:
            // its answer (a duplicate's offsets, a gap) is known only at apply.
            let r = match (opts.idempotent, opts.acks) {
                (Some((id, seq)), _) => self.node.produce_idempotent(topic, partition, id, seq, self.max_producers, entries.clone()).await,
                // acks=leader: no offsets unless the entry applied already (empty: none).
                (None, dto::Acks::Leader) => self.node.produce_persisted(topic, partition, entries.clone()).await.map(Option::unwrap_or_default),
                (None, dto::Acks::All) => self.node.produce_records(topic, partition, entries.clone()).await,
            };
            match r {
                Ok(offsets) => return Ok(offsets),
                // A new group, or an election under way: no proposal was made.
                Err(ClusterError::NotLeader { leader: 0, .. }) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(cluster_error_body(&e)),
            }
        }
    }

    /// Fetch from this node's copy of a hosted partition: it holds only
    /// committed records (the applier writes nothing else).
    pub async fn fetch_here(&self, req: &dto::Fetch) -> Result<dto::FetchResponse, ErrorBody> {
        let h = self.node.hosted(&req.topic, req.partition).ok_or_else(|| self.not_hosted(&req.topic, req.partition))?;
        self.check_meta_current(&req.topic)?;
        if let Some(e) = h.failed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(err(ErrorCode::Unavailable, format!("this replica stopped applying: {e}")));
        }
        native::fetch(&self.log, req).await.map_err(|e| log_error_body(&e))
    }

    pub fn offset_here(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<u64, ErrorBody> {
        self.node.hosted(topic, partition).ok_or_else(|| self.not_hosted(topic, partition))?;
        self.check_meta_current(topic)?;
        self.log.list_offset(topic, PartitionId(partition), spec).map(|o| o.0).map_err(|e| log_error_body(&e))
    }

    /// A node back from being down may still see a topic that was deleted,
    /// and created again, meanwhile: its copy is served only once its
    /// metadata was read linearizably since start (`unavailable`, retriable;
    /// the record plane asks another replica meanwhile).
    fn check_meta_current(&self, topic: &str) -> Result<(), ErrorBody> {
        if self.node.meta_current() {
            return Ok(());
        }
        Err(err(
            ErrorCode::Unavailable,
            format!("this node has not caught up on the cluster's metadata since it started (no metadata leader reachable yet), so its copy of {topic} is not served; retry, or ask another replica"),
        ))
    }

    fn not_hosted(&self, topic: &str, partition: u32) -> ErrorBody {
        let group = self.node.placement(topic, partition).map(|(g, _)| g).unwrap_or(0);
        cluster_error_body(&ClusterError::UnknownGroup(group))
    }

    /// Produce to one partition of a replicated topic, here or through a replica.
    async fn produce_partition(&self, topic: &str, partition: u32, records: Vec<ProduceRecord>, opts: ProduceOpts) -> Result<Vec<u64>, ErrorBody> {
        if self.node.hosted(topic, partition).is_some() {
            return self.produce_here(topic, partition, &records, opts).await;
        }
        let req = dto::Produce {
            topic: topic.to_owned(),
            records: records.into_iter().map(|r| to_record_in(r, partition)).collect(),
            producer_id: opts.idempotent.map(|(id, _)| id),
            sequence: opts.idempotent.map(|(_, seq)| seq),
            acks: opts.acks,
        };
        // An idempotent batch may be sent to another replica after any
        // failure: if it ran, the state machine answers its first offsets.
        let resp: dto::ProduceResponse = self.forward(topic, partition, LOCAL_PRODUCE, &req, opts.idempotent.is_some()).await?;
        resp.results
            .into_iter()
            .map(|r| match (r.offset, r.error) {
                (Some(o), _) => Ok(o),
                (None, Some(e)) => Err(e),
                (None, None) => Err(err(ErrorCode::Internal, "replica answered without an offset")),
            })
            .collect()
    }

    async fn produce_replicated(&self, t: &TopicMeta, records: Vec<ProduceRecord>, opts: ProduceOpts) -> Result<dto::ProduceResponse, ErrorBody> {
        if let Some((i, ts)) = records.iter().enumerate().find_map(|(i, r)| r.timestamp_ms.filter(|t| *t < 0).map(|t| (i, t))) {
            return Err(log_error_body(&LogError::InvalidRequest(format!("record {i}: timestamp_ms must be >= 0 (milliseconds since the epoch), got {ts}"))));
        }
        let config = topic_config(t);
        let n = config.partitions.max(1);
        let sticky = self.sticky.fetch_add(1, Ordering::Relaxed) % n;
        let mut results: Vec<Option<dto::ProduceResult>> = vec![None; records.len()];
        let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<ProduceRecord>)> = BTreeMap::new();
        let now = now_ms();
        for (i, mut r) in records.into_iter().enumerate() {
            // Stamped once here, so the ack and every replica carry the same time.
            r.timestamp_ms.get_or_insert(now);
            let p = match (r.partition, &r.key) {
                (Some(p), _) => p.0,
                (None, Some(k)) => weft_log::key_partition(k, n),
                // Keyless records of one call stay together: one raft entry.
                (None, None) => sticky,
            };
            let size = record_size(&r);
            let refuse = if p >= n {
                Some(LogError::UnknownPartition { topic: t.name.clone(), partition: PartitionId(p), partitions: n })
            } else if size > config.max_record_bytes as usize {
                Some(LogError::RecordTooLarge { size, max: config.max_record_bytes as usize })
            } else {
                None
            };
            if let Some(e) = refuse {
                results[i] = Some(dto::ProduceResult { partition: None, offset: None, timestamp_ms: None, error: Some(log_error_body(&e)) });
                continue;
            }
            let e = by_partition.entry(p).or_default();
            e.0.push(i);
            e.1.push(r);
        }
        // A sequence numbers one partition's records: an idempotent batch is
        // one partition's, sent whole (a partial refusal would shift it).
        if opts.idempotent.is_some() && (by_partition.len() > 1 || results.iter().any(Option::is_some)) {
            return Err(err(ErrorCode::Validation, "an idempotent produce (producer_id) must put all its records in one partition, each valid"));
        }
        let calls = by_partition.into_iter().map(|(p, (idx, recs))| async move {
            let ts: Vec<i64> = recs.iter().map(|r| r.timestamp_ms.unwrap_or(now)).collect();
            (p, idx, ts, self.produce_partition(&t.name, p, recs, opts).await)
        });
        let mut failures = Vec::new();
        for (p, idx, ts, r) in futures::future::join_all(calls).await {
            match r {
                // acks=leader answered before apply: written, offsets not known yet.
                Ok(offsets) if offsets.is_empty() => {
                    for (i, ts) in idx.into_iter().zip(ts) {
                        results[i] = Some(dto::ProduceResult { partition: Some(p), offset: None, timestamp_ms: Some(ts), error: None });
                    }
                }
                Ok(offsets) => {
                    for ((i, o), ts) in idx.into_iter().zip(offsets).zip(ts) {
                        results[i] = Some(dto::ProduceResult { partition: Some(p), offset: Some(o), timestamp_ms: Some(ts), error: None });
                    }
                }
                Err(e) => {
                    for i in idx {
                        results[i] = Some(dto::ProduceResult { partition: None, offset: None, timestamp_ms: None, error: Some(e.clone()) });
                    }
                    failures.push(e);
                }
            }
        }
        let results: Vec<dto::ProduceResult> = results.into_iter().map(|r| r.unwrap_or(dto::ProduceResult { partition: None, offset: None, timestamp_ms: None, error: None })).collect();
        // Nothing written at all: answer the request with the error (a
        // not_leader or a timeout is then what the client sees, as for one record).
        if !failures.is_empty() && results.iter().all(|r| r.partition.is_none()) {
            if let Some(e) = failures.into_iter().next() {
                return Err(e);
            }
        }
        Ok(dto::ProduceResponse { results })
    }

    async fn describe_replicated(&self, t: &TopicMeta) -> Result<TopicDescription, ErrorBody> {
        let config = topic_config(t);
        // This node's copy (empty where no replica is hosted): the shape the CLI reads.
        weft_cluster::partition::ensure_local_topic(&self.log, &t.name, config.clone()).await.map_err(|e| cluster_error_body(&e))?;
        let mut d = self.log.describe_topic(&t.name).map_err(|e| log_error_body(&e))?;
        d.config = config;
        Ok(d)
    }
}

impl RecordPlane for ClusterPlane {
    fn create_topic<'a>(&'a self, name: &'a str, config: Option<TopicConfig>, replicas: Option<u32>) -> PlaneFuture<'a, TopicDescription> {
        Box::pin(async move {
            let config = config.unwrap_or_default();
            weft_log::TopicName::new(name).map_err(|e| log_error_body(&e))?;
            let replicas = replicas.unwrap_or_else(|| (self.node.local_meta().data_nodes().len() as u32).clamp(1, 3));
            let cmd = MetaCommand::CreateTopic {
                name: name.to_owned(),
                partitions: config.partitions,
                replicas,
                config: serde_json::to_value(&config).map_err(|e| err(ErrorCode::Internal, e.to_string()))?,
            };
            let r = self.node.propose_meta(&cmd).await.map_err(|e| cluster_error_body(&e))?;
            match meta_error(r)? {
                MetaResponse::Topic(t) => self.describe_replicated(&t).await,
                _ => Err(err(ErrorCode::Internal, "create answered without a topic")),
            }
        })
    }

    fn list_topics(&self) -> PlaneFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut names: Vec<String> = self.node.local_meta().topics.keys().cloned().collect();
            for t in self.log.list_topics() {
                if !names.iter().any(|n| n == t.as_str()) {
                    names.push(t.as_str().to_owned());
                }
            }
            names.sort();
            Ok(names)
        })
    }

    fn describe_topic<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, TopicDescription> {
        Box::pin(async move {
            match self.replicated(name).await {
                Some(t) => self.describe_replicated(&t).await,
                None => self.log.describe_topic(name).map_err(|e| log_error_body(&e)),
            }
        })
    }

    fn delete_topic<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, ()> {
        Box::pin(async move {
            if self.replicated(name).await.is_some() {
                // Through the metadata group: every node closes the topic's
                // groups, removes their raft logs and its local copy
                // (weft-cluster node.rs, close_deleted_topics); its committed
                // group offsets go with the metadata entry.
                let r = self.node.propose_meta(&MetaCommand::DeleteTopic { name: name.to_owned() }).await.map_err(|e| cluster_error_body(&e))?;
                meta_error(r)?;
                return Ok(());
            }
            self.log.delete_topic(name).await.map_err(|e| log_error_body(&e))
        })
    }

    fn alter_topic<'a>(&'a self, name: &'a str, alter: &'a TopicAlter) -> PlaneFuture<'a, TopicDescription> {
        Box::pin(async move {
            let Some(t) = self.replicated(name).await else {
                return self.log.alter_topic(name, alter).await.map_err(|e| log_error_body(&e));
            };
            if alter.partitions.is_some_and(|p| p as usize != t.partitions.len()) {
                return Err(err(ErrorCode::Validation, format!("the partition count of a replicated topic cannot change ({} partitions)", t.partitions.len())));
            }
            // Validated here against the config this node last saw; the
            // metadata group applies the whole new config, so every replica
            // ends with the same one. Two racing alters: the last one wins whole.
            let config = alter.apply(&topic_config(&t)).map_err(|e| log_error_body(&e))?;
            let cmd = MetaCommand::AlterTopic { name: name.to_owned(), config: serde_json::to_value(&config).map_err(|e| err(ErrorCode::Internal, e.to_string()))? };
            let r = self.node.propose_meta(&cmd).await.map_err(|e| cluster_error_body(&e))?;
            match meta_error(r)? {
                MetaResponse::Topic(t) => self.describe_replicated(&t).await,
                _ => Err(err(ErrorCode::Internal, "alter answered without a topic")),
            }
        })
    }

    fn produce<'a>(&'a self, topic: &'a str, records: Vec<ProduceRecord>) -> PlaneFuture<'a, dto::ProduceResponse> {
        Box::pin(async move {
            match self.replicated(topic).await {
                Some(t) => self.produce_replicated(&t, records, ProduceOpts::default()).await,
                None => native::produce(&self.log, topic, records).await.map_err(|e| log_error_body(&e)),
            }
        })
    }

    fn produce_with<'a>(&'a self, topic: &'a str, records: Vec<ProduceRecord>, opts: ProduceOpts) -> PlaneFuture<'a, dto::ProduceResponse> {
        Box::pin(async move {
            match self.replicated(topic).await {
                Some(t) => self.produce_replicated(&t, records, opts).await,
                None if opts.idempotent.is_some() => Err(err(ErrorCode::Validation, format!("idempotent producers (producer_id) need a replicated topic; {topic} is local"))),
                None => native::produce(&self.log, topic, records).await.map_err(|e| log_error_body(&e)),
            }
        })
    }

    fn fetch<'a>(&'a self, req: &'a dto::Fetch) -> PlaneFuture<'a, dto::FetchResponse> {
        Box::pin(async move {
            if self.replicated(&req.topic).await.is_none() {
                return native::fetch(&self.log, req).await.map_err(|e| log_error_body(&e));
            }
            let here = self.node.hosted(&req.topic, req.partition).is_some();
            if here && self.node.meta_current() {
                return self.fetch_here(req).await;
            }
            let mut f = req.clone();
            f.wait_ms = f.wait_ms.map(|w| w.min(self.forward_max_wait_ms));
            let r = self.forward(&req.topic, req.partition, LOCAL_FETCH, &f, true).await;
            // Hosted here but not served yet: another replica's answer, else why not.
            if here && r.is_err() {
                return self.fetch_here(req).await;
            }
            r
        })
    }

    fn offset<'a>(&'a self, topic: &'a str, partition: u32, spec: OffsetSpec) -> PlaneFuture<'a, u64> {
        Box::pin(async move {
            if self.replicated(topic).await.is_none() {
                return self.log.list_offset(topic, PartitionId(partition), spec).map(|o| o.0).map_err(|e| log_error_body(&e));
            }
            let here = self.node.hosted(topic, partition).is_some();
            if here && self.node.meta_current() {
                return self.offset_here(topic, partition, spec);
            }
            let q = match spec {
                OffsetSpec::Earliest => dto::OffsetQuery::Earliest,
                OffsetSpec::Latest => dto::OffsetQuery::Latest,
                OffsetSpec::Timestamp(ms) => dto::OffsetQuery::Timestamp(ms),
            };
            match self.forward::<_, dto::OffsetAnswer>(topic, partition, LOCAL_OFFSETS, &dto::Offsets { topic: topic.to_owned(), partition, spec: q }, true).await {
                Ok(a) => Ok(a.offset),
                // Hosted here but not served yet: say why.
                Err(_) if here => self.offset_here(topic, partition, spec),
                Err(e) => Err(e),
            }
        })
    }

    fn commit(&self, req: dto::Commit) -> PlaneFuture<'_, ()> {
        Box::pin(async move {
            let mut local = Vec::new();
            let mut replicated = Vec::new();
            for o in req.offsets {
                if self.replicated(&o.topic).await.is_some() { replicated.push(o) } else { local.push(o) }
            }
            // Membership is the group coordinator's: a named member is
            // fenced there before anything is committed.
            if let (Some(m), Some(g)) = (&req.member_id, req.generation) {
                for o in &replicated {
                    self.check_member(&req.group, m, g, &o.topic, o.partition).await?;
                }
            } else if req.member_id.is_some() != req.generation.is_some() {
                return Err(log_error_body(&LogError::InvalidRequest("member_id and generation go together".into())));
            }
            for o in replicated {
                let cmd = MetaCommand::CommitOffset { group: req.group.clone(), topic: o.topic, partition: o.partition, offset: o.offset, at_ms: now_ms() };
                meta_error(self.node.propose_meta(&cmd).await.map_err(|e| cluster_error_body(&e))?)?;
            }
            if !local.is_empty() {
                let r = dto::Commit { group: req.group, member_id: req.member_id, generation: req.generation, offsets: local };
                native::commit(&self.log, r).await.map_err(|e| log_error_body(&e))?;
            }
            Ok(())
        })
    }

    fn reset_offsets(&self, req: dto::ResetOffsets) -> PlaneFuture<'_, dto::ResetOffsetsAnswer> {
        Box::pin(async move {
            let Some(t) = self.replicated(&req.topic).await else {
                return native::reset_offsets(&self.log, req).await.map_err(|e| log_error_body(&e));
            };
            // Members would overwrite the reset with their next commit: refused
            // while the group has any, as on one node (asked at the coordinator).
            let members = self.at_coordinator(native::GROUP_MEMBERS, &req.group, serde_json::json!({"group": req.group})).await?;
            let members = members["members"].as_u64().unwrap_or(0) as usize;
            if members > 0 {
                return Err(log_error_body(&LogError::GroupActive { group: req.group.clone(), members }));
            }
            let count = t.partitions.len() as u32;
            let parts: Vec<u32> = match req.partition {
                Some(p) if p >= count => {
                    return Err(log_error_body(&LogError::UnknownPartition { topic: req.topic.clone(), partition: PartitionId(p), partitions: count }));
                }
                Some(p) => vec![p],
                None => (0..count).collect(),
            };
            let meta = self.node.read_meta().await.map_err(|e| cluster_error_body(&e))?;
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                let start = self.offset(&req.topic, p, OffsetSpec::Earliest).await?;
                let latest = self.offset(&req.topic, p, OffsetSpec::Latest).await?;
                let offset = match req.to {
                    weft_log::ResetTarget::Earliest => start,
                    weft_log::ResetTarget::Latest => latest,
                    weft_log::ResetTarget::Offset(o) => o.clamp(start, latest),
                    weft_log::ResetTarget::Timestamp(ts) => self.offset(&req.topic, p, OffsetSpec::Timestamp(ts)).await?.clamp(start, latest),
                };
                let previous = meta.offsets.get(&req.group).and_then(|t| t.get(&req.topic)).and_then(|o| o.get(&p)).copied();
                out.push(weft_log::OffsetReset {
                    topic: req.topic.clone(),
                    partition: PartitionId(p),
                    previous: previous.map(weft_log::Offset),
                    offset: weft_log::Offset(offset),
                    log_start: weft_log::Offset(start),
                    latest: weft_log::Offset(latest),
                });
            }
            if !req.dry_run {
                // Through the metadata group, as every commit of a replicated topic.
                for r in &out {
                    let cmd = MetaCommand::CommitOffset { group: req.group.clone(), topic: r.topic.clone(), partition: r.partition.0, offset: r.offset.0, at_ms: now_ms() };
                    meta_error(self.node.propose_meta(&cmd).await.map_err(|e| cluster_error_body(&e))?)?;
                }
                tracing::info!(group = %req.group, topic = %req.topic, partitions = out.len(), "group offsets reset through the metadata group");
            }
            Ok(dto::ResetOffsetsAnswer { group: req.group, topic: req.topic, dry_run: req.dry_run, partitions: out })
        })
    }

    /// A group's offsets of replicated topics and its membership record
    /// live in the metadata, its live membership at the coordinator, and
    /// offsets of topics local to this node in this node's log: the
    /// coordinator forgets the group first (refused while it has members),
    /// then the metadata group deletes it, then this node's log.
    fn delete_group<'a>(&'a self, group: &'a str) -> PlaneFuture<'a, ()> {
        Box::pin(self.delete_group_unless(group, None))
    }

    /// Every membership request goes to the coordinator (the metadata
    /// leader), from any node, data-only ones included; while it moves
    /// (an election, a leader killed) the request is tried again until
    /// `cluster.propose_timeout_ms`. A join that creates a member is sent
    /// again only when it certainly did not run; the other routes are
    /// harmless to repeat.
    fn group_forward<'a>(&'a self, route: &'a str, group: &'a str, body: serde_json::Value) -> PlaneFuture<'a, Option<serde_json::Value>> {
        Box::pin(async move {
            let me = self.node.node_id();
            let repeatable = route != dto::route::GROUP_JOIN || body.get("member_id").is_some_and(|m| !m.is_null());
            let deadline = Instant::now() + self.propose_timeout;
            // The leader a refusing node named: tried next.
            let mut hint: Option<NodeId> = None;
            for attempt in 0.. {
                let hinted = hint.is_some();
                let last = match hint.take().or_else(|| self.group_coordinator(attempt)) {
                    Some(c) if c == me => match self.group_here(route, body.clone()).await {
                        Err(e) if e.code == ErrorCode::NotLeader => e,
                        r => return r.map(Some),
                    },
                    Some(c) => {
                        self.forwarded.fetch_add(1, Ordering::Relaxed);
                        let req = serde_json::json!({"route": route, "body": body});
                        let r = match self.peer(c).await {
                            Ok(client) => client.call::<serde_json::Value, serde_json::Value>(LOCAL_GROUP, &req).await,
                            Err(e) => Err(e),
                        };
                        match r {
                            Ok(v) => return Ok(Some(v)),
                            Err(e) => {
                                if matches!(e, ClientError::Connect { .. } | ClientError::Closed | ClientError::ConnectionLost) {
                                    self.forget_peer(c);
                                }
                                if let ClientError::Remote(b) = &e
                                    && b.code == ErrorCode::NotLeader
                                {
                                    hint = b.details.as_ref().and_then(|d| d["leader"].as_u64()).filter(|l| *l != 0 && *l != c);
                                }
                                self.forward_failures.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(group, route, node = c, error = %e, "cluster: forwarded group request failed");
                                let retry = not_sent(&e) || (repeatable && !matches!(e, ClientError::Remote(_)));
                                let e2 = client_error_body(e);
                                if !retry {
                                    return Err(e2);
                                }
                                e2
                            }
                        }
                    }
                    None => self.not_coordinator(),
                };
                if Instant::now() >= deadline {
                    return Err(last);
                }
                // Straight to a named leader once; otherwise (and never twice in a row) after a pause.
                if hint.is_none() || hinted {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(self.not_coordinator())
        })
    }

    fn committed<'a>(&'a self, req: &'a dto::Committed) -> PlaneFuture<'a, dto::CommittedAnswer> {
        Box::pin(async move {
            if self.replicated(&req.topic).await.is_none() {
                return native::committed(&self.log, req).map_err(|e| log_error_body(&e));
            }
            // Linearizable: a commit acknowledged anywhere is seen here.
            let meta = self.node.read_meta().await.map_err(|e| cluster_error_body(&e))?;
            let c = meta.offsets.get(&req.group).and_then(|t| t.get(&req.topic)).and_then(|p| p.get(&req.partition)).copied();
            let mut out = dto::CommittedAnswer { offset: c, metadata: String::new(), start: None, reset: None };
            if let Some(policy) = req.reset {
                let earliest = self.offset(&req.topic, req.partition, OffsetSpec::Earliest).await?;
                let latest = self.offset(&req.topic, req.partition, OffsetSpec::Latest).await?;
                let (start, reset) = match c {
                    Some(c) if (earliest..=latest).contains(&c) => (c, false),
                    _ => match policy {
                        weft_log::ResetPolicy::Earliest => (earliest, true),
                        weft_log::ResetPolicy::Latest => (latest, true),
                        weft_log::ResetPolicy::None => {
                            return Err(log_error_body(&LogError::NoResetPolicy {
                                what: match c {
                                    Some(w) => format!("offset {w} is out of range"),
                                    None => "no committed offset".into(),
                                },
                                topic: req.topic.clone(),
                                partition: PartitionId(req.partition),
                                requested: c.map(weft_log::Offset),
                                earliest: weft_log::Offset(earliest),
                                latest: weft_log::Offset(latest),
                            }));
                        }
                    },
                };
                out.start = Some(start);
                out.reset = Some(reset);
            }
            Ok(out)
        })
    }
}

/// A replica that installed a partition snapshot fetches the records below
/// it from another replica's copy (one hop, `cluster.local.fetch`). Every
/// other replica is asked in turn until one has records from `from`; when
/// the ones that answer no longer have `from` (retention, compaction moved
/// their log start past it), the lowest log start among them is the answer,
/// so the caller starts its copy there (docs/cluster.md, "Partition
/// snapshots and catch-up").
impl weft_cluster::partition::CatchUp for ClusterPlane {
    fn fetch<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = weft_cluster::Result<weft_cluster::partition::CatchUpBatch>> + Send + 'a>> {
        Box::pin(async move {
            let req = dto::Fetch {
                topic: topic.to_owned(),
                partition,
                offset: from,
                max_bytes: Some(native::DEFAULT_MAX_BYTES * 4),
                max_records: Some(to.saturating_sub(from).clamp(1, 10_000) as usize),
                wait_ms: None,
                raw: false,
                reset: None,
            };
            let (group, replicas) = self.candidates(topic, partition).map_err(|e| ClusterError::StateMachine(format!("{}: {}", e.code, e.message)))?;
            // (log start, high watermark) of the lowest-starting replica that no longer has `from`.
            let mut gone: Option<(u64, u64)> = None;
            let mut last = format!("no replica of {topic}/{partition} reachable");
            for id in replicas {
                let c = match self.peer(id).await {
                    Ok(c) => c,
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                };
                match c.call::<dto::Fetch, dto::FetchResponse>(LOCAL_FETCH, &req).await {
                    Ok(r) => {
                        self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(group, id);
                        let records = r
                            .records
                            .into_iter()
                            .map(|x| {
                                let rec = EntryRecord {
                                    timestamp_ms: x.timestamp_ms,
                                    key: x.key.map(|k| k.into_vec()),
                                    value: x.value.map(|v| v.into_vec()),
                                    headers: x.headers.into_iter().map(|(k, v)| (k, v.into_vec())).collect(),
                                };
                                (x.offset, rec)
                            })
                            .collect();
                        return Ok(weft_cluster::partition::CatchUpBatch { records, log_start: r.log_start_offset, high_watermark: r.high_watermark });
                    }
                    Err(ClientError::Remote(b)) if b.details.as_ref().is_some_and(|d| d["kind"] == "offset_out_of_range" && d["earliest"].as_u64().is_some_and(|s| s > from)) => {
                        let d = b.details.as_ref().map(|d| (d["earliest"].as_u64().unwrap_or(0), d["latest"].as_u64().unwrap_or(0))).unwrap_or_default();
                        if gone.is_none_or(|g| d.0 < g.0) {
                            gone = Some(d);
                        }
                    }
                    Err(e) => {
                        if matches!(e, ClientError::Connect { .. } | ClientError::Closed) {
                            self.forget_peer(id);
                        }
                        tracing::debug!(topic, partition, node = id, error = %e, "cluster: catch-up fetch from a replica failed");
                        last = e.to_string();
                    }
                }
            }
            match gone {
                Some((log_start, high_watermark)) => Ok(weft_cluster::partition::CatchUpBatch { records: Vec::new(), log_start, high_watermark }),
                None => Err(ClusterError::StateMachine(last)),
            }
        })
    }
}

/// Register the internal one-hop routes on a replica.
pub fn register_local(service: &mut weft_service::Service, plane: Arc<ClusterPlane>) -> anyhow::Result<()> {
    use weft_service::ServiceError;
    let p = plane.clone();
    service.endpoint(LOCAL_PRODUCE, move |req: dto::Produce| {
        let p = p.clone();
        async move {
            let opts = native::produce_opts(&req).map_err(ServiceError::Wire)?;
            let mut results = Vec::with_capacity(req.records.len());
            let mut by_partition: BTreeMap<u32, Vec<ProduceRecord>> = BTreeMap::new();
            for r in req.records {
                let partition = r.partition.ok_or_else(|| ServiceError::validation("forwarded records carry their partition"))?;
                by_partition.entry(partition).or_default().push(native::record_in(r));
            }
            for (partition, recs) in by_partition {
                let ts: Vec<Option<i64>> = recs.iter().map(|r| r.timestamp_ms).collect();
                let offsets = p.produce_here(&req.topic, partition, &recs, opts).await.map_err(ServiceError::Wire)?;
                for (o, ts) in offsets.into_iter().zip(ts) {
                    results.push(dto::ProduceResult { partition: Some(partition), offset: Some(o), timestamp_ms: ts, error: None });
                }
            }
            Ok(dto::ProduceResponse { results })
        }
    })?;
    let p = plane.clone();
    service.endpoint(LOCAL_GROUP, move |req: serde_json::Value| {
        let p = p.clone();
        async move {
            let route = req["route"].as_str().ok_or_else(|| ServiceError::validation("a group request names its route"))?.to_owned();
            p.group_here(&route, req["body"].clone()).await.map_err(ServiceError::Wire)
        }
    })?;
    let p = plane.clone();
    service.endpoint(LOCAL_FETCH, move |req: dto::Fetch| {
        let p = p.clone();
        async move { p.fetch_here(&req).await.map_err(ServiceError::Wire) }
    })?;
    let p = plane;
    service.endpoint(LOCAL_OFFSETS, move |req: dto::Offsets| {
        let p = p.clone();
        async move { p.offset_here(&req.topic, req.partition, native::offset_spec(req.spec)).map(|o| dto::OffsetAnswer { offset: o }).map_err(ServiceError::Wire) }
    })?;
    Ok(())
}
