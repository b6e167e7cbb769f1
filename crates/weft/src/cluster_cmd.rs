//! Cluster mode in the binary: starting the cluster node from `cluster.*`
//! keys, its native endpoints (`cluster.status`, `cluster.add_node`,
//! `cluster.remove_node`, `cluster.create_topic`, `cluster.meta`), and the
//! `weft cluster` commands (docs/cluster.md).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use weft_cluster::{ClusterConfig, ClusterError, ClusterNode, MetaCommand, MetaResponse, NodeInfo, RaftTuning, Role};
use weft_service::{Service, ServiceError};
use weft_wire::{ErrorBody, ErrorCode};

use crate::client_cmd::{self, ClientArgs, OutputArgs};
use crate::config::ClusterConf;

pub mod plane;
pub mod tables;
pub use plane::ClusterPlane;

/// Start the cluster node when `cluster.node_id` is set; `None` is today's single node.
/// `handshake_timeout` bounds a cluster connection's TLS handshake and hello (`limits.handshake_timeout_ms`).
pub async fn start(conf: &ClusterConf, data_dir: &Path, native_addr: Option<String>, log: weft_log::Log, handshake_timeout: Duration) -> Result<Option<ClusterNode>> {
    if conf.node_id == 0 {
        anyhow::ensure!(conf.peers.is_empty(), "cluster.peers is set but cluster.node_id is not");
        return Ok(None);
    }
    anyhow::ensure!(!conf.addr.is_empty(), "cluster.addr (--cluster-addr) is required with cluster.node_id");
    let peers = weft_cluster::parse_peers(&conf.peers).context("cluster.peers")?;
    let roles = Role::parse_list(&conf.roles).context("cluster.roles")?;
    anyhow::ensure!(conf.tick_ms >= 1 && conf.election_ticks > conf.heartbeat_ticks && conf.heartbeat_ticks >= 1, "cluster.election_ticks must exceed cluster.heartbeat_ticks (>= 1); cluster.tick_ms >= 1");
    // A raft append message must fit a cluster frame, with room for its header.
    anyhow::ensure!(
        conf.max_size_per_msg <= conf.max_frame_bytes / 2,
        "cluster.max_size_per_msg ({}) must be at most half of cluster.max_frame_bytes ({})",
        conf.max_size_per_msg,
        conf.max_frame_bytes
    );
    let cfg = ClusterConfig {
        node_id: conf.node_id,
        addr: conf.addr.clone(),
        peers,
        roles,
        join: conf.join,
        native_addr,
        data_dir: data_dir.to_path_buf(),
        tick_ms: conf.tick_ms,
        max_frame_bytes: u32::try_from(conf.max_frame_bytes).unwrap_or(u32::MAX),
        propose_timeout_ms: conf.propose_timeout_ms,
        max_pending: usize::try_from(conf.max_pending).unwrap_or(usize::MAX),
        tuning: RaftTuning {
            election_ticks: conf.election_ticks as usize,
            heartbeat_ticks: conf.heartbeat_ticks as usize,
            max_record_bytes: u32::try_from(conf.max_record_bytes).unwrap_or(u32::MAX),
            snapshot_entries: conf.snapshot_entries,
            quiesce_ticks: usize::try_from(conf.quiesce_ticks).unwrap_or(usize::MAX),
            sync_threads: usize::try_from(conf.sync_threads).unwrap_or(1).clamp(1, 256),
            rebalance: conf.rebalance.clone(),
            // Out of range (0, absurd) is refused by ClusterNode::start with the key's name.
            apply: weft_cluster::partition::ApplyBounds {
                entries: usize::try_from(conf.apply_batch_entries).unwrap_or(usize::MAX),
                records: usize::try_from(conf.apply_batch_records).unwrap_or(usize::MAX),
                bytes: usize::try_from(conf.apply_batch_bytes).unwrap_or(usize::MAX),
            },
            max_commands_per_pass: usize::try_from(conf.max_commands_per_pass).unwrap_or(usize::MAX),
            peer_queue_frames: usize::try_from(conf.peer_queue_frames).unwrap_or(usize::MAX),
            incoming_queue_frames: usize::try_from(conf.incoming_queue_frames).unwrap_or(usize::MAX),
            apply_queue_max_bytes: conf.apply_queue_max_bytes,
            max_size_per_msg: conf.max_size_per_msg,
            max_inflight_msgs: usize::try_from(conf.max_inflight_msgs).unwrap_or(usize::MAX),
            ..RaftTuning::default()
        },
        log: Some(log),
    };
    let tls = match conf.tls.files()? {
        Some(files) => {
            let tls = weft_cluster::tls::ClusterTls::load(conf.node_id, files).context("cluster.tls")?;
            tracing::info!(node = conf.node_id, cert = %tls.files.cert.display(), ca = %tls.files.ca.display(), "cluster: mTLS between nodes");
            Some(tls)
        }
        None => {
            tracing::warn!(
                addr = %conf.addr,
                "cluster traffic is unauthenticated and unencrypted: whoever reaches cluster.addr can speak raft as any node; \
                 set cluster.tls.cert, cluster.tls.key and cluster.tls.ca (docs/cluster.md, \"TLS between nodes\")"
            );
            None
        }
    };
    let security = weft_cluster::transport::TransportSecurity {
        tls,
        handshake_timeout,
        // Out of range (0, absurd) is refused by ClusterNode::start with the key's name.
        max_pending_handshakes: usize::try_from(conf.max_pending_handshakes).unwrap_or(usize::MAX),
    };
    Ok(Some(ClusterNode::start_secured(cfg, security).await?))
}

/// Where forwarded requests reach node `id`, and how (docs/cluster.md, "TLS
/// between nodes"). With cluster TLS: the peer's cluster port over mTLS
/// (ALPN `weft/1`), this node's cluster certificate as client certificate,
/// the peer's checked to name `node-<id>`, no token: the peer serves the
/// connection as the node identity, which may call `cluster.local.*` only.
/// Without: the peer's registered native address, with the `WEFT_TOKEN` of
/// this process's environment (weft-net's client default), as before.
pub fn forward_target(node: &ClusterNode, id: weft_cluster::NodeId, cfg: &mut weft_net::ClientConfig) -> Result<weft_net::Target, weft_net::ClientError> {
    use weft_net::ClientError;
    let addr = match node.tls_files() {
        Some(files) => {
            let addr = node.cluster_addr(id).ok_or_else(|| ClientError::Connect { endpoint: format!("node {id}"), reason: "no cluster address known".into() })?;
            cfg.tls = weft_net::TlsClientConfig {
                ca: Some(files.ca),
                cert: Some(files.cert),
                key: Some(files.key),
                server_name: Some(weft_cluster::tls::node_name(id)),
            };
            cfg.token = None;
            format!("tls://{addr}")
        }
        None => node.native_addr(id).ok_or_else(|| ClientError::Connect { endpoint: format!("node {id}"), reason: "no native address registered".into() })?,
    };
    addr.parse().map_err(|e| ClientError::Connect { endpoint: addr.clone(), reason: format!("{e}") })
}

/// A cluster error as a wire error: `not_leader` with `details = {group,
/// leader, addr}` (also under `details.not_leader`, stage 1's shape); a
/// timed-out write's fate is unknown (`timeout`, `details.outcome`).
fn wire(e: ClusterError) -> ServiceError {
    ServiceError::Wire(plane::cluster_error_body(&e))
}

/// The record plane of a cluster node, for `log.*`, HTTP and the `cluster.local.*` routes.
/// It is also where a replica that installed a partition snapshot fetches the records it stands for.
pub fn record_plane(node: &ClusterNode, log: weft_log::Log, conf: &ClusterConf) -> std::sync::Arc<ClusterPlane> {
    let mut plane = ClusterPlane::new(node.clone(), log, Duration::from_millis(conf.propose_timeout_ms.max(1)), conf.forward_max_wait_ms);
    plane.max_producers = conf.max_producers_per_partition;
    let plane = std::sync::Arc::new(plane);
    node.set_catch_up(plane.clone());
    // On the metadata leader: take over the consumer groups, write their membership changes to the metadata.
    ClusterPlane::spawn_coordinator(&plane);
    plane
}

fn meta_result(r: MetaResponse) -> Result<MetaResponse, ServiceError> {
    match r {
        MetaResponse::Error { code, message } => {
            let code = match code.as_str() {
                "not_found" => ErrorCode::NotFound,
                "conflict" => ErrorCode::Conflict,
                _ => ErrorCode::Validation,
            };
            Err(ServiceError::Wire(ErrorBody::new(code, message)))
        }
        ok => Ok(ok),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddNodeRequest {
    pub id: u64,
    pub addr: String,
    #[serde(default)]
    pub roles: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveNodeRequest {
    pub id: u64,
}

/// Stage 1's replicated produce: one record (UTF-8 key and value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProduceRequest {
    pub topic: String,
    #[serde(default)]
    pub partition: u32,
    #[serde(default)]
    pub key: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    pub topic: String,
    #[serde(default)]
    pub partition: u32,
    #[serde(default)]
    pub offset: u64,
    /// Default 100, at most 10000.
    #[serde(default)]
    pub max_records: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    /// Default: min(3, data nodes).
    #[serde(default)]
    pub replicas: Option<u32>,
}

/// As JSON values: maps keyed by node id or partition get string keys, which
/// every body format (msgpack too) and every client can decode.
fn json<T: Serialize>(v: T) -> Result<serde_json::Value, ServiceError> {
    serde_json::to_value(v).map_err(ServiceError::from_err)
}

/// `cluster.*` endpoints; `plane` serves `cluster.produce`/`cluster.fetch`
/// (so they forward like `log.*`) and the internal `cluster.local.*` routes.
pub fn register(service: &mut Service, node: ClusterNode, plane: std::sync::Arc<ClusterPlane>) -> Result<()> {
    plane::register_local(service, plane.clone())?;
    let p = plane.clone();
    service.stats().add_gauges(move || p.gauges());
    let n = node.clone();
    service.endpoint("cluster.status", move |_: Option<()>| {
        let n = n.clone();
        async move { json(n.status().await.map_err(wire)?) }
    })?;
    let n = node.clone();
    service.endpoint("cluster.meta", move |_: Option<()>| {
        let n = n.clone();
        // Linearizable: ReadIndex through the metadata leader.
        async move { json(n.read_meta().await.map_err(wire)?) }
    })?;
    let n = node.clone();
    service.endpoint("cluster.add_node", move |req: AddNodeRequest| {
        let n = n.clone();
        async move {
            if req.id == 0 || req.addr.is_empty() {
                return Err(ServiceError::validation("id must be >= 1 and addr HOST:PORT"));
            }
            let roles = Role::parse_list(req.roles.as_deref().unwrap_or("control,data")).map_err(|e| ServiceError::validation(e.to_string()))?;
            let r = n.add_node(NodeInfo { id: req.id, cluster_addr: req.addr, native_addr: None, roles }).await.map_err(wire)?;
            meta_result(r)
        }
    })?;
    let n = node.clone();
    service.endpoint("cluster.remove_node", move |req: RemoveNodeRequest| {
        let n = n.clone();
        async move { meta_result(n.remove_node(req.id).await.map_err(wire)?) }
    })?;
    let p = plane.clone();
    service.endpoint("cluster.produce", move |req: ProduceRequest| {
        let p = p.clone();
        async move {
            use weft_broker::plane::RecordPlane;
            let rec = weft_log::ProduceRecord {
                partition: Some(weft_log::PartitionId(req.partition)),
                timestamp_ms: None,
                key: req.key.map(|k| bytes::Bytes::from(k.into_bytes())),
                value: Some(bytes::Bytes::from(req.value.into_bytes())),
                headers: Vec::new(),
            };
            let r = p.produce(&req.topic, vec![rec]).await.map_err(ServiceError::Wire)?;
            match r.results.into_iter().next() {
                Some(weft_broker::dto::ProduceResult { offset: Some(o), .. }) => Ok(serde_json::json!({ "offset": o })),
                Some(weft_broker::dto::ProduceResult { error: Some(e), .. }) => Err(ServiceError::Wire(e)),
                _ => Err(ServiceError::Wire(ErrorBody::new(ErrorCode::Internal, "produce answered nothing"))),
            }
        }
    })?;
    let p = plane;
    service.endpoint("cluster.fetch", move |req: FetchRequest| {
        let p = p.clone();
        async move {
            use weft_broker::plane::RecordPlane;
            let f = weft_broker::dto::Fetch {
                topic: req.topic,
                partition: req.partition,
                offset: req.offset,
                max_bytes: None,
                max_records: Some(req.max_records.unwrap_or(100).clamp(1, 10_000)),
                wait_ms: None,
                raw: false,
                reset: None,
            };
            let r = p.fetch(&f).await.map_err(ServiceError::Wire)?;
            let text = |b: Option<serde_bytes::ByteBuf>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
            let records: Vec<weft_cluster::node::FetchedRecord> = r
                .records
                .into_iter()
                .map(|x| weft_cluster::node::FetchedRecord { offset: x.offset, timestamp_ms: x.timestamp_ms, key: text(x.key), value: text(x.value) })
                .collect();
            json(weft_cluster::node::Fetched { high_watermark: r.high_watermark, records })
        }
    })?;
    let n = node;
    service.endpoint("cluster.create_topic", move |req: CreateTopicRequest| {
        let n = n.clone();
        async move {
            let replicas = match req.replicas {
                Some(r) => r,
                None => (n.local_meta().data_nodes().len() as u32).clamp(1, 3),
            };
            let cmd = MetaCommand::CreateTopic { name: req.name, partitions: req.partitions, replicas, config: serde_json::Value::Null };
            meta_result(n.propose_meta(&cmd).await.map_err(wire)?)
        }
    })?;
    Ok(())
}

#[derive(Subcommand, Clone)]
pub enum ClusterCmd {
    /// Nodes (roles, liveness, last contact), the metadata leader, and partitions.
    Status,
    /// Add a node to the cluster (a membership change of the metadata group).
    AddNode {
        id: u64,
        /// The new node's cluster address (its --cluster-addr), HOST:PORT.
        #[arg(value_name = "ADDR")]
        cluster_addr: String,
        /// control, data, or control,data.
        #[arg(long, default_value = "control,data")]
        roles: String,
    },
    /// Remove a node (the leader hands over first if it is the one removed);
    /// its partition replicas are then replaced on other data nodes.
    RemoveNode { id: u64 },
}

pub async fn run(client: &ClientArgs, out: OutputArgs, cmd: ClusterCmd) -> Result<()> {
    let c = client.connect().await?;
    let result = run_on(&c, out, cmd).await.map_err(|e| match e.downcast_ref::<weft_net::ClientError>() {
        Some(weft_net::ClientError::Remote(b)) if b.code == ErrorCode::UnknownRoute => {
            anyhow::anyhow!("the node at {} is not in cluster mode (start it with --node-id, --cluster-addr and --cluster-peers)", client.addr)
        }
        _ => e,
    });
    c.shutdown().await;
    result
}

async fn run_on(c: &weft_net::Client, out: OutputArgs, cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Status => {
            let s: serde_json::Value = c.call("cluster.status", &()).await?;
            if out.json {
                client_cmd::print_json(&s)
            } else {
                print!("{}", render_status(&s));
                Ok(())
            }
        }
        ClusterCmd::AddNode { id, cluster_addr: addr, roles } => {
            let r: serde_json::Value = c.call("cluster.add_node", &AddNodeRequest { id, addr: addr.clone(), roles: Some(roles) }).await?;
            if out.json {
                client_cmd::print_json(&r)
            } else {
                println!("added node {id} ({addr}); start it with --node-id {id} --cluster-addr {addr} --cluster-join");
                Ok(())
            }
        }
        ClusterCmd::RemoveNode { id } => {
            let r = remove_node_retrying(&c, id).await?;
            if out.json {
                client_cmd::print_json(&r)
            } else {
                // The rebalancer replaces its partition replicas after this (docs/cluster.md, "Rebalancer").
                println!("removed node {id}; its partition replicas are replaced on other data nodes (see `weft cluster status`)");
                Ok(())
            }
        }
    }
}

/// `cluster.remove_node`, retried while its outcome is unknown: when the
/// node removed leads the metadata group it hands leadership over first, and
/// a change forwarded to it meanwhile is dropped and answered `timeout`
/// (docs/cluster.md, "Membership changes"). Removing a node twice is
/// harmless (the second finds it gone), so a retry cannot do harm; it stops
/// once the node is no longer in the metadata or after 60 s.
async fn remove_node_retrying(c: &weft_net::Client, id: u64) -> Result<serde_json::Value> {
    use weft_net::ClientError;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let err = match c.call::<_, serde_json::Value>("cluster.remove_node", &RemoveNodeRequest { id }).await {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        let unknown = match &err {
            ClientError::Timeout(_) | ClientError::ConnectionLost => true,
            ClientError::Remote(b) => matches!(b.code, ErrorCode::Timeout | ErrorCode::Unavailable | ErrorCode::Busy),
            _ => false,
        };
        if !unknown || std::time::Instant::now() >= deadline {
            return Err(err.into());
        }
        tracing::info!(node = id, error = %err, "remove-node outcome unknown; retrying");
        // Gone already: the earlier attempt applied after all.
        if let Ok(s) = c.call::<_, serde_json::Value>("cluster.status", &()).await {
            let listed = s["nodes"].as_array().is_some_and(|ns| ns.iter().any(|n| n["id"].as_u64() == Some(id)));
            if s["nodes"].is_array() && !listed {
                return Ok(serde_json::json!({"removed": id, "retried": true}));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn render_status(s: &serde_json::Value) -> String {
    let str_of = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(|x| x.to_string().trim_matches('"').to_owned()).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    };
    let mut out = format!(
        "node {}  metadata leader: {}  topics: {}  metadata applied: {}\n\n",
        str_of(&s["node_id"]),
        str_of(&s["meta_leader"]),
        str_of(&s["topics"]),
        str_of(&s["meta_applied"])
    );
    let empty = vec![];
    let rows: Vec<Vec<String>> = s["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|n| {
            vec![
                str_of(&n["id"]),
                str_of(&n["roles"]),
                if n["voter"].as_bool() == Some(true) { "voter".into() } else { "-".into() },
                if n["live"].as_bool() == Some(true) { "up".into() } else { "down".into() },
                n["last_contact_ms"].as_u64().map_or("-".into(), |ms| format!("{ms} ms ago")),
                str_of(&n["cluster_addr"]),
                str_of(&n["native_addr"]),
            ]
        })
        .collect();
    out.push_str(&client_cmd::table(&["ID", "ROLES", "VOTE", "LIVE", "LAST CONTACT", "CLUSTER ADDR", "NATIVE ADDR"], &rows));
    let parts: Vec<Vec<String>> = s["partitions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|p| {
            vec![
                str_of(&p["topic"]),
                str_of(&p["partition"]),
                str_of(&p["group"]),
                str_of(&p["leader"]),
                str_of(&p["replicas"]),
                str_of(&p["in_sync"]),
                str_of(&p["high_watermark"]),
                // a replica on a node that is down or gone (docs/cluster.md, "Rebalancer")
                if p["under_replicated"].as_bool() == Some(true) { "under-replicated".into() } else { "-".into() },
            ]
        })
        .collect();
    if !parts.is_empty() {
        out.push('\n');
        out.push_str(&client_cmd::table(&["TOPIC", "PARTITION", "GROUP", "LEADER", "REPLICAS", "IN SYNC", "HIGH WATERMARK", "STATE"], &parts));
    }
    let moves: Vec<Vec<String>> = s["moves"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|m| vec![str_of(&m["group"]), str_of(&m["from"]), str_of(&m["to"]), str_of(&m["reason"])])
        .collect();
    out.push_str(&format!("\nmoves in flight: {}  done: {}  cancelled: {}\n", moves.len(), str_of(&s["moves_done"]), str_of(&s["moves_cancelled"])));
    // The partition appliers' appends to this node's copies (cluster.apply_batch_*).
    let a = &s["apply"];
    if a.is_object() {
        out.push_str(&format!(
            "applied to copies: {} appends, {} entries, {} records, {} bytes  cut by entries/records/bytes: {}/{}/{}  queued: {} entries\n",
            str_of(&a["batches"]),
            str_of(&a["entries"]),
            str_of(&a["records"]),
            str_of(&a["bytes"]),
            str_of(&a["cut_entries"]),
            str_of(&a["cut_records"]),
            str_of(&a["cut_bytes"]),
            str_of(&a["queued_entries"]),
        ));
    }
    if !moves.is_empty() {
        out.push_str(&client_cmd::table(&["GROUP", "FROM", "TO", "REASON"], &moves));
    }
    out
}

/// Give the cluster node a moment to stop its listener on shutdown.
pub async fn stop(node: &ClusterNode) {
    node.shutdown();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
