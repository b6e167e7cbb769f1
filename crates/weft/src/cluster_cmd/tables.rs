//! Cluster mode: the query API's tables on the cluster's raft groups
//! (docs/query.md, "Tables: replicated"). weft-api's executor calls this
//! backend; it proposes `WriteCommand`s to the table's group and reads the
//! local replica after a ReadIndex. A node without a replica of the table
//! forwards the statement to a replica over the native protocol
//! (`cluster.local.query`, which never forwards again), keeping one client
//! connection per peer, as the record plane does for records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weft_api::Error;
use weft_api::replicated::{BoxFut, Forward, ReplicatedTables, StateView};
use weft_cluster::table::{TableAnswer, TableReplica};
use weft_cluster::{ClusterError, ClusterNode, MetaCommand, MetaResponse, NodeId};
use weft_net::{Client, ClientConfig, ClientError};
use weft_table::{Event, KeySet, Revision, TableState, WriteCommand, WriteResult};
use weft_wire::{ErrorBody, ErrorCode};

/// Replicas of a table created without REPLICAS: 3, or fewer data nodes.
const DEFAULT_REPLICAS: usize = 3;
/// How long a request waits for the table's group to have a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// The longest a forwarded query waits for its answer (a write on the
/// replica may wait LEADER_WAIT for a leader, then its proposal); the
/// query's own deadline, usually shorter, cancels it earlier.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(25);
/// The internal route a node without a replica calls on a replica.
pub const LOCAL_QUERY: &str = "cluster.local.query";
/// A watch's long poll on a replica, for a node without one.
pub const LOCAL_WATCH: &str = "cluster.local.table_watch";
/// How long one forwarded watch poll waits for an event before answering
/// none (the forwarder then polls again): well under FORWARD_TIMEOUT.
const WATCH_POLL: Duration = Duration::from_secs(5);

/// One poll of a forwarded watch: the events of `set` from revision `from`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WatchPoll {
    pub table: String,
    pub from: Revision,
    pub set: KeySet,
    pub prev_kv: bool,
    pub max_events: usize,
    pub wait_ms: u64,
}

/// Its answer: the events (none if none came within `wait_ms`) and the next revision to ask for.
#[derive(Debug, Serialize, Deserialize)]
pub struct WatchAnswer {
    pub events: Vec<Event>,
    pub next: Revision,
}

/// A forwarded query's answer: the `weft.query.v1.Result`, protobuf-encoded.
#[derive(Debug, Serialize, Deserialize)]
pub struct LocalAnswer {
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
}

pub struct ClusterTables {
    node: ClusterNode,
    /// One connection per peer, opened on first use.
    peers: Mutex<HashMap<NodeId, Client>>,
    /// The replica that last answered for a table's group: tried first next time.
    routes: Mutex<HashMap<u64, NodeId>>,
    forwarded: AtomicU64,
    forward_failures: AtomicU64,
}

impl ClusterTables {
    pub fn new(node: ClusterNode) -> Arc<ClusterTables> {
        Arc::new(ClusterTables { node, peers: Mutex::default(), routes: Mutex::default(), forwarded: AtomicU64::new(0), forward_failures: AtomicU64::new(0) })
    }

    /// `cluster.tables_forwarded`, `cluster.tables_forward_failures` (for `weft stats`).
    pub fn gauges(&self) -> Vec<(String, serde_json::Value)> {
        vec![
            ("cluster.tables_forwarded".into(), self.forwarded.load(Ordering::Relaxed).into()),
            ("cluster.tables_forward_failures".into(), self.forward_failures.load(Ordering::Relaxed).into()),
        ]
    }

    fn hosts(&self, name: &str) -> bool {
        self.node.table_placement(name).is_some_and(|t| t.replicas.contains(&self.node.node_id()))
    }

    async fn peer(&self, id: NodeId) -> Result<Client, ClientError> {
        if let Some(c) = self.peers.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(c.clone());
        }
        let mut cfg = ClientConfig {
            client_name: format!("weft-tables-{}", self.node.node_id()),
            connect_timeout: Duration::from_secs(2),
            request_timeout: FORWARD_TIMEOUT,
            ..ClientConfig::default()
        };
        // With cluster TLS: the peer's cluster port, as a node (mTLS).
        let target = super::forward_target(&self.node, id, &mut cfg)?;
        let c = Client::connect(target, cfg).await?;
        Ok(self.peers.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_insert(c).clone())
    }

    fn forget_peer(&self, id: NodeId) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// A cluster error as the query API's: `not_leader` keeps the group and
    /// the leader, with its native and gRPC addresses when known (the
    /// metadata's); a timed-out proposal says its outcome is unknown.
    fn err(&self, e: ClusterError) -> Error {
        match e {
            ClusterError::NotLeader { group, leader, addr } => {
                let grpc_addr = (leader != 0).then(|| self.node.local_meta().grpc_addrs.get(&leader).cloned()).flatten();
                let addr = addr.or_else(|| (leader != 0).then(|| self.node.native_addr(leader)).flatten());
                Error::NotLeader { group, leader, addr, grpc_addr }
            }
            ClusterError::Timeout(m) => Error::Unavailable(format!("cluster: timed out: {m} (a write's outcome is unknown)")),
            e => Error::Unavailable(format!("cluster: {e}")),
        }
    }

    /// Advertise this node's gRPC query address in the metadata (so a
    /// `not_leader` answer can name it): retried in the background until
    /// applied (the node must be registered first), stopped with the node.
    pub fn advertise_grpc(self: &Arc<Self>, addr: String) {
        let t = self.clone();
        tokio::spawn(async move {
            let me = t.node.node_id();
            loop {
                if t.node.local_meta().grpc_addrs.get(&me) == Some(&addr) {
                    return;
                }
                match t.node.propose_meta(&MetaCommand::SetGrpcAddr { id: me, addr: addr.clone() }).await {
                    Err(ClusterError::Shutdown) => return,
                    Ok(MetaResponse::Ok) => return,
                    other => tracing::debug!(result = ?other, "cluster: advertising the gRPC address, will retry"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    /// The table's replicas other than this node, the one that last answered first.
    fn replicas_to_try(&self, name: &str) -> Result<(u64, Vec<NodeId>), Error> {
        let t = self.node.table_placement(name).ok_or_else(|| Error::Table(weft_table::Error::NotFound(format!("table {name:?}"))))?;
        let me = self.node.node_id();
        let mut replicas: Vec<NodeId> = t.replicas.iter().copied().filter(|r| *r != me).collect();
        if let Some(f) = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get(&t.group).copied().filter(|f| replicas.contains(f)) {
            replicas.retain(|r| *r != f);
            replicas.insert(0, f);
        }
        Ok((t.group, replicas))
    }

    /// A watch on a node without a replica: long polls of a replica's
    /// applied events (`cluster.local.table_watch`) until at least one
    /// event. A poll is a read: any failure moves to the next replica.
    /// Revisions are the same on every replica, so moving loses and repeats nothing.
    async fn watch_remote(&self, name: &str, from: Revision, set: KeySet, prev_kv: bool, max_events: usize) -> Result<(Vec<Event>, Revision), Error> {
        let mut poll = WatchPoll { table: name.to_owned(), from, set, prev_kv, max_events, wait_ms: WATCH_POLL.as_millis() as u64 };
        loop {
            let (group, replicas) = self.replicas_to_try(name)?;
            let mut last = Error::Unavailable(format!("no replica of table {name:?} reachable"));
            let mut answered = None;
            for id in replicas {
                let c = match self.peer(id).await {
                    Ok(c) => c,
                    Err(e) => {
                        last = client_err(e);
                        continue;
                    }
                };
                match c.call::<WatchPoll, WatchAnswer>(LOCAL_WATCH, &poll).await {
                    Ok(a) => {
                        self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(group, id);
                        answered = Some(a);
                        break;
                    }
                    Err(e) => {
                        if matches!(e, ClientError::Connect { .. } | ClientError::Closed) {
                            self.forget_peer(id);
                        }
                        self.forward_failures.fetch_add(1, Ordering::Relaxed);
                        // The replica's own refusal (compacted, not found) is the answer.
                        if let ClientError::Remote(b) = &e
                            && !not_sent(&e)
                            && !matches!(b.code, ErrorCode::Unavailable | ErrorCode::Timeout)
                        {
                            return Err(client_err(e));
                        }
                        last = client_err(e);
                    }
                }
            }
            let Some(a) = answered else { return Err(last) };
            if !a.events.is_empty() {
                return Ok((a.events, a.next));
            }
            poll.from = a.next.max(poll.from);
        }
    }
}

struct Replica(Arc<TableReplica>);

impl StateView for Replica {
    fn with_state(&self, f: &mut dyn FnMut(&TableState)) {
        self.0.read(|s| f(s));
    }
}

/// Errors after which nothing was proposed (safe to retry any write):
/// no leader known yet, the group not opened here yet.
fn before_proposal(e: &ClusterError) -> bool {
    matches!(e, ClusterError::NotLeader { leader: 0, .. } | ClusterError::UnknownGroup(_))
}


/// Whether a forwarded query certainly did not run on the peer (another
/// replica may then be tried even for a write).
fn not_sent(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::Closed => true,
        ClientError::Remote(b) => b.code == ErrorCode::NotLeader || b.details.as_ref().and_then(|d| d["kind"].as_str()) == Some("not_hosted"),
        _ => false,
    }
}

fn client_err(e: ClientError) -> Error {
    match e {
        ClientError::Remote(b) => weft_api::json::error_from_body(&b),
        ClientError::Timeout(_) | ClientError::ConnectionLost => Error::Unavailable(format!("forwarded query: {e} (a write's outcome is unknown)")),
        other => Error::Unavailable(format!("forwarding to a replica: {other}")),
    }
}

impl ReplicatedTables for ClusterTables {
    fn create<'a>(&'a self, name: &'a str, replicas: Option<u32>, max_tables: u64) -> BoxFut<'a, Result<(), Error>> {
        Box::pin(async move {
            let data = self.node.local_meta().data_nodes().len();
            let replicas = replicas.unwrap_or(DEFAULT_REPLICAS.min(data).max(1) as u32);
            let cmd = MetaCommand::CreateTable { name: name.to_owned(), replicas, max_tables: Some(max_tables) };
            let r = self.node.propose_meta(&cmd).await.map_err(|e| self.err(e))?;
            match r {
                MetaResponse::Table(_) => Ok(()),
                MetaResponse::Error { code, message } if code == "conflict" => Err(Error::Table(weft_table::Error::AlreadyExists(message))),
                MetaResponse::Error { code, .. } if code == "too_many" => Err(Error::Table(weft_table::Error::TooMany { what: "tables".into(), limit: max_tables })),
                MetaResponse::Error { message, .. } => Err(Error::Invalid(message)),
                other => Err(Error::Unavailable(format!("unexpected metadata answer {other:?}"))),
            }
        })
    }

    fn drop_table<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), Error>> {
        Box::pin(async move {
            match self.node.propose_meta(&MetaCommand::DropTable { name: name.to_owned() }).await.map_err(|e| self.err(e))? {
                MetaResponse::Ok => Ok(()),
                MetaResponse::Error { code, message } if code == "not_found" => Err(Error::Table(weft_table::Error::NotFound(message))),
                MetaResponse::Error { message, .. } => Err(Error::Invalid(message)),
                other => Err(Error::Unavailable(format!("unexpected metadata answer {other:?}"))),
            }
        })
    }

    fn hosted<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<bool, Error>> {
        Box::pin(async move {
            let t = match self.node.table_placement(name) {
                Some(t) => t,
                // This node's metadata may lag a create done through another node: look again, linearizably.
                None => self.node.read_meta().await.map_err(|e| self.err(e))?.tables.get(name).cloned().ok_or_else(|| Error::Table(weft_table::Error::NotFound(format!("table {name:?}"))))?,
            };
            Ok(t.replicas.contains(&self.node.node_id()))
        })
    }

    fn forward<'a>(&'a self, name: &'a str, req: Forward) -> BoxFut<'a, Result<weft_api::pb::Result, Error>> {
        Box::pin(async move {
            let (group, replicas) = self.replicas_to_try(name)?;
            self.forwarded.fetch_add(1, Ordering::Relaxed);
            let mut last = Error::Unavailable(format!("no replica of table {name:?} reachable"));
            for id in replicas {
                let c = match self.peer(id).await {
                    Ok(c) => c,
                    Err(e) => {
                        last = client_err(e);
                        continue;
                    }
                };
                match c.call::<Forward, LocalAnswer>(LOCAL_QUERY, &req).await {
                    Ok(a) => {
                        self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(group, id);
                        return weft_api::replicated::decode_result(&a.result);
                    }
                    Err(e) => {
                        // The replica's own answer (NOT_FOUND, FAILED_PRECONDITION, ...) is
                        // the answer; a read moves on after an unavailable replica, a write
                        // only when it certainly did not run (never sent twice).
                        let retry = match &e {
                            ClientError::Remote(b) => not_sent(&e) || (req.read_only && matches!(b.code, ErrorCode::Unavailable | ErrorCode::Timeout)),
                            _ => req.read_only || not_sent(&e),
                        };
                        if matches!(e, ClientError::Connect { .. } | ClientError::Closed) {
                            self.forget_peer(id);
                        }
                        self.forward_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(table = name, node = id, error = %e, "cluster: forwarded query failed");
                        if !retry {
                            return Err(client_err(e));
                        }
                        last = client_err(e);
                    }
                }
            }
            Err(last)
        })
    }

    fn write<'a>(&'a self, name: &'a str, cmd: WriteCommand) -> BoxFut<'a, Result<WriteResult, Error>> {
        Box::pin(async move {
            if self.node.table_placement(name).is_none() {
                return Err(Error::Table(weft_table::Error::NotFound(format!("table {name:?}"))));
            }
            if !self.hosts(name) {
                return Err(Error::Unavailable(format!("no replica of table {name:?} on this node")));
            }
            let deadline = Instant::now() + LEADER_WAIT;
            let answer = loop {
                match self.node.table_write(name, &cmd).await {
                    Ok(a) => break a,
                    Err(e) if before_proposal(&e) && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => return Err(self.err(e)),
                }
            };
            match answer {
                TableAnswer::Ok(r) => Ok(r),
                // The state machine's refusal, typed as the local table's would be.
                TableAnswer::Err { kind, message } => Err(weft_api::replicated::applied_error(&kind, message)),
            }
        })
    }

    fn read<'a>(&'a self, name: &'a str, linearizable: bool) -> BoxFut<'a, Result<Arc<dyn StateView>, Error>> {
        Box::pin(async move {
            if self.node.table_placement(name).is_none() {
                return Err(Error::Table(weft_table::Error::NotFound(format!("table {name:?}"))));
            }
            let deadline = Instant::now() + LEADER_WAIT;
            loop {
                match self.node.table_read(name, linearizable).await {
                    Ok(r) => return Ok(Arc::new(Replica(r)) as Arc<dyn StateView>),
                    Err(ClusterError::UnknownGroup(_)) if !self.hosts(name) => {
                        let on = self.node.table_placement(name).map(|t| t.replicas).unwrap_or_default();
                        return Err(Error::Unavailable(format!("no replica of table {name:?} on this node (replicas on nodes {on:?})")));
                    }
                    // Reads are idempotent: retry whatever failed (no leader yet, a ReadIndex lost in an election).
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(table = name, error = %e, "table read retried");
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => return Err(self.err(e)),
                }
            }
        })
    }

    fn list(&self) -> Vec<String> {
        self.node.local_meta().tables.into_keys().collect()
    }

    fn leads(&self, name: &str) -> bool {
        self.node.table_placement(name).is_some_and(|t| self.node.leader_of(t.group) == Some(self.node.node_id()))
    }

    fn watch<'a>(&'a self, name: &'a str, from: Revision, set: KeySet, prev_kv: bool, max_events: usize) -> BoxFut<'a, Result<(Vec<Event>, Revision), Error>> {
        Box::pin(async move {
            if !self.hosted(name).await? {
                self.forwarded.fetch_add(1, Ordering::Relaxed);
                return self.watch_remote(name, from, set, prev_kv, max_events).await;
            }
            // The local replica (after a linearizable read confirms the table is here and current).
            self.read(name, true).await?;
            let r = self.node.table_replica(name).ok_or_else(|| Error::Unavailable(format!("no replica of table {name:?} on this node")))?;
            Ok(r.wait_events(from, &set, prev_kv, max_events).await?)
        })
    }
}

/// Register `cluster.local.query` (statements forwarded by a node without a
/// replica; run here, never forwarded again), `cluster.local.table_watch`
/// (a forwarded watch's long poll) and the forwarding gauges.
pub fn register_local(service: &mut weft_service::Service, tables: Arc<ClusterTables>, exec: weft_api::Executor) -> anyhow::Result<()> {
    use weft_service::ServiceError;
    let t = tables.clone();
    service.stats().add_gauges(move || t.gauges());
    let t = tables.clone();
    service.endpoint(LOCAL_WATCH, move |req: WatchPoll| {
        let t = t.clone();
        async move {
            if !t.hosts(&req.table) {
                return Err(ServiceError::Wire(
                    ErrorBody::new(ErrorCode::Unavailable, format!("no replica of table {:?} on this node", req.table)).with_details(serde_json::json!({"kind": "not_hosted"})),
                ));
            }
            let wait = Duration::from_millis(req.wait_ms.min(WATCH_POLL.as_millis() as u64));
            let max = req.max_events.clamp(1, 4096);
            match tokio::time::timeout(wait, t.watch(&req.table, req.from, req.set, req.prev_kv, max)).await {
                Ok(Ok((events, next))) => Ok(WatchAnswer { events, next }),
                Ok(Err(e)) => Err(ServiceError::Wire(weft_api::json::error_body(&e))),
                // Nothing yet: the forwarder polls again from the same revision.
                Err(_) => Ok(WatchAnswer { events: Vec::new(), next: req.from }),
            }
        }
    })?;
    service.endpoint(LOCAL_QUERY, move |req: Forward| {
        let exec = exec.clone();
        let tables = tables.clone();
        async move {
            if !tables.hosts(&req.table) {
                // Proves the query did not run here, so the forwarder may try another replica.
                return Err(ServiceError::Wire(
                    ErrorBody::new(ErrorCode::Unavailable, format!("no replica of table {:?} on this node", req.table)).with_details(serde_json::json!({"kind": "not_hosted"})),
                ));
            }
            match exec.execute_forwarded(&req).await {
                Ok(r) => Ok(LocalAnswer { result: weft_api::replicated::encode_result(&r) }),
                Err(e) => Err(ServiceError::Wire(weft_api::json::error_body(&e))),
            }
        }
    })?;
    Ok(())
}
