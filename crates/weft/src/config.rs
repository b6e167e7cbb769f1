//! The node's configuration: every key, its default, and how flags map to
//! keys. Layering and provenance live in `weft_service::config`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its data, lock file and Unix socket.
    pub data_dir: String,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG wins when set.
    pub log: String,
    /// Log line format on stderr: `text` or `json` (one object per line).
    pub log_format: String,
    pub node: NodeSection,
    pub limits: Limits,
    /// How native TCP and Unix-socket connections are served.
    #[serde(default)]
    pub net: NetConf,
    pub tcp: Listener,
    pub udp: Listener,
    pub unix: UnixListenerConf,
    pub liveness: Liveness,
    /// The streaming log: every `weft_log::LogConfig` field.
    pub log_store: weft_log::LogConfig,
    pub http: HttpListenerConf,
    /// Native protocol over TLS (TCP); off by default.
    pub tls: TlsListenerConf,
    /// Native protocol over QUIC (UDP); same certificate, key and client CA
    /// as `tls`; off by default.
    pub quic: Listener,
    pub pva: Pva,
    /// Ecosystem (ekosis 0.17) wire-compatible listeners; each is off unless set.
    pub ekosis: weft_ekosis::EkosisListeners,
    pub stats: StatsKeeping,
    /// Defaults of the node's queued endpoints and senders (docs/queues.md).
    pub queues: QueuesConf,
    /// Cluster mode (docs/cluster.md); `node_id` 0 is today's single node.
    pub cluster: ClusterConf,
    /// OpenTelemetry traces over OTLP/HTTP (docs/observability.md); off
    /// while `endpoint` is empty.
    pub otel: OtelConf,
    /// The web dashboard at `/ui/` on the HTTP gateway (docs/dashboard.md).
    pub ui: UiConf,
    /// Users, roles, tokens and keys (docs/security.md); off by default.
    pub auth: AuthConf,
    /// The gRPC query API (docs/query.md).
    pub grpc: GrpcConf,
    /// Key-value tables under `<data_dir>/tables/`: limits (docs/query.md).
    pub tables: weft_table::TablesConfig,
    /// Limits of the query API: AQL size, results, scans, timeouts (docs/query.md).
    pub query: weft_api::QueryConfig,
    /// Live reload (docs/security.md, "Reload").
    pub reload: ReloadConf,
}

/// Live reload: besides SIGHUP and `weft config reload`, a watch of the
/// configuration file, the certificate, key and CA files and the auth
/// state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConf {
    /// How often the watched files' size, mtime and inode are polled; a
    /// change held for one more poll triggers a reload. 0: no watch.
    pub watch_interval_ms: u64,
}

/// The gRPC listener of the query API (weft.query.v1, health, reflection).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConf {
    pub enabled: bool,
    /// `--grpc-addr`. The default port is best-effort: when it is taken the
    /// node starts without gRPC (logged); an address set in the file, the
    /// environment or a flag must bind.
    pub addr: String,
    /// Serve gRPC over TLS with the `tls.*` certificate, key and client CA
    /// (mTLS when `tls.client_auth` is optional or require).
    pub tls: bool,
    /// Client addresses allowed (CIDRs or addresses); others are closed on
    /// accept, before TLS or HTTP/2. Deny by default: loopback only.
    pub allow: Vec<String>,
}

/// Authentication and authorisation (docs/security.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConf {
    /// Deny by default: every request needs a token, key or client
    /// certificate whose roles allow it (`--auth`).
    pub enabled: bool,
    /// Serve `/metrics` without credentials even with auth on (scrapers
    /// rarely carry tokens; the numbers name topics and queues).
    pub metrics_open: bool,
    /// The audit log `DATA_DIR/audit.log` is rotated past this size.
    pub audit_max_bytes: u64,
    /// Rotated audit logs kept (`audit.log.1` ...).
    pub audit_files: u64,
    /// Requests per second one identity may make (native and HTTP); 0: no limit.
    pub rate_per_s: u64,
    /// Request bytes per second one identity may send; 0: no limit.
    pub bytes_per_s: u64,
    /// pvAccess: a peer's `ca` user name (claimed, not proven) names the
    /// Weft user of that name (docs/security.md, "pvAccess").
    #[serde(default)]
    pub pva_trust_ca_user: bool,
    /// pvAccess: the role of peers without a (trusted, existing) user name;
    /// empty: they may do nothing.
    #[serde(default)]
    pub pva_anonymous_role: String,
}

impl Default for AuthConf {
    fn default() -> Self {
        Self {
            enabled: false,
            metrics_open: true,
            audit_max_bytes: 16 << 20,
            audit_files: 3,
            rate_per_s: 0,
            bytes_per_s: 0,
            pva_trust_ca_user: false,
            pva_anonymous_role: String::new(),
        }
    }
}

/// The web dashboard (docs/dashboard.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConf {
    /// Serve `/ui/` (needs `http.enabled`).
    pub enabled: bool,
    /// Dashboard WebSocket feeds open at once; more get 429 `busy`.
    pub max_clients: u64,
    /// Time between two snapshots pushed to the dashboards.
    pub period_ms: u64,
    /// Table watch WebSockets of the dashboard open at once; more get 429 `busy`.
    #[serde(default = "default_ui_max_watches")]
    pub max_watches: u64,
}

fn default_ui_max_watches() -> u64 {
    16
}

/// OpenTelemetry trace export (docs/observability.md, "Traces").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelConf {
    /// OTLP/HTTP collector, `http://HOST:PORT` (`/v1/traces` is added) or
    /// a full URL; empty: no traces.
    pub endpoint: String,
    /// Share of new traces sampled, 0 to 1; a caller's `traceparent`
    /// sampling decision is kept.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Which spans are exported (tracing EnvFilter), apart from the log filter.
    pub filter: String,
}

/// Cluster mode (docs/cluster.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConf {
    /// This node's raft id (>= 1); 0: not clustered.
    pub node_id: u64,
    /// Raft transport listen address, HOST:PORT.
    pub addr: String,
    /// Founding members, this node included: `1=HOST:PORT,2=HOST:PORT,...`.
    pub peers: String,
    /// `control`, `data` or `control,data`.
    pub roles: String,
    /// Start without founding the metadata group: wait for `weft cluster add-node`.
    pub join: bool,
    /// Raft tick.
    pub tick_ms: u64,
    /// Election timeout in ticks (each node draws its own in [n, 2n)).
    pub election_ticks: u64,
    pub heartbeat_ticks: u64,
    /// Largest transport frame accepted from a peer.
    pub max_frame_bytes: u64,
    /// Largest raft log record read back from disk.
    pub max_record_bytes: u64,
    /// Compact a group's raft log after this many applied entries.
    pub snapshot_entries: u64,
    /// A led raft group with nothing in flight this many ticks stops ticking
    /// and heartbeating until woken (docs/cluster.md, "Many groups per node"); 0: never.
    pub quiesce_ticks: u64,
    /// Threads fsyncing the raft WAL files of one Ready pass in parallel.
    pub sync_threads: u64,
    /// One append of a partition's applier to its local copy holds at most
    /// this many committed entries, records (an entry is never split) and
    /// key and value bytes (at least one entry's); stats `cluster.apply.*`.
    pub apply_batch_entries: u64,
    pub apply_batch_records: u64,
    pub apply_batch_bytes: u64,
    /// Commands (proposals, reads) the raft driver takes before one Ready
    /// pass; stat `cluster.passes_cut`.
    pub max_commands_per_pass: u64,
    /// Frames queued to one peer before more are dropped (raft
    /// retransmits); stats `cluster.peer_queued`, `cluster.frames_dropped_full`.
    pub peer_queue_frames: u64,
    /// Frames from peers queued to the raft driver before connections stop
    /// reading; stat `cluster.incoming_queued`.
    pub incoming_queue_frames: u64,
    /// Inbound cluster connections in their TLS handshake or hello at
    /// once; one more is closed at accept; stat `cluster.handshakes_shed`.
    pub max_pending_handshakes: u64,
    /// Bytes queued to this node's partition appliers past which produces
    /// proposed here are refused (`busy`, details `kind: apply_backlog`)
    /// and appends from partition leaders are dropped (sent again later);
    /// stats `cluster.apply.queued_bytes`, `cluster.apply.refused`,
    /// `cluster.apply.held_back`.
    pub apply_queue_max_bytes: u64,
    /// raft-rs: bytes of entries in one append message to a follower (one
    /// larger entry goes alone; at most half of `max_frame_bytes`), and
    /// append messages in flight to one follower before the leader waits
    /// for its acks. Together they bound what a leader has on the wire and
    /// a follower may buffer per group.
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: u64,
    /// A cluster write not committed within this is answered `timeout` (fate unknown).
    pub propose_timeout_ms: u64,
    /// Requests queued to the cluster driver before callers get `busy`.
    pub max_pending: u64,
    /// Longest long-poll of a fetch forwarded to a replica (the client polls again after it).
    pub forward_max_wait_ms: u64,
    /// Idempotent producers remembered per replicated partition (least
    /// recently used evicted first; docs/log.md).
    pub max_producers_per_partition: u32,
    /// The rebalancer: re-replication, moves onto new nodes, leadership balance.
    pub rebalance: weft_cluster::rebalancer::RebalanceConfig,
    /// mTLS between nodes (docs/cluster.md, "TLS between nodes"); off
    /// while the three files are empty.
    #[serde(default)]
    pub tls: ClusterTlsConf,
}

/// The node's cluster certificate: signed by the cluster CA, with the DNS
/// subject alternative name `node-<cluster.node_id>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConf {
    /// PEM certificate chain of this node.
    pub cert: String,
    /// PEM private key of `cert`.
    pub key: String,
    /// PEM bundle of the cluster CA(s) peers' certificates must chain to.
    pub ca: String,
}

impl ClusterTlsConf {
    /// The files, when cluster TLS is configured; all three or none.
    pub fn files(&self) -> anyhow::Result<Option<weft_cluster::tls::TlsFiles>> {
        let set = [&self.cert, &self.key, &self.ca].iter().filter(|v| !v.is_empty()).count();
        match set {
            0 => Ok(None),
            3 => Ok(Some(weft_cluster::tls::TlsFiles { cert: self.cert.clone().into(), key: self.key.clone().into(), ca: self.ca.clone().into() })),
            _ => anyhow::bail!("cluster.tls.cert, cluster.tls.key and cluster.tls.ca go together (set all three, or none for plain TCP)"),
        }
    }
}

impl Default for ClusterConf {
    fn default() -> Self {
        Self {
            node_id: 0,
            addr: String::new(),
            peers: String::new(),
            roles: "control,data".into(),
            join: false,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_frame_bytes: 16 << 20,
            max_record_bytes: 64 << 20,
            snapshot_entries: 10_000,
            quiesce_ticks: 10,
            sync_threads: 8,
            apply_batch_entries: 1024,
            apply_batch_records: 1000,
            apply_batch_bytes: 64 << 10,
            max_commands_per_pass: 1024,
            peer_queue_frames: 1024,
            incoming_queue_frames: 1024,
            max_pending_handshakes: 64,
            apply_queue_max_bytes: 256 << 20,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            propose_timeout_ms: 5_000,
            max_pending: 4096,
            forward_max_wait_ms: 5_000,
            max_producers_per_partition: 1000,
            rebalance: weft_cluster::rebalancer::RebalanceConfig::default(),
            tls: ClusterTlsConf::default(),
        }
    }
}

/// The statistics keeper's history (`weft stats --gathered|--full`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsKeeping {
    pub gather_period_ms: u64,
    pub history_len: u64,
}

/// Defaults of queued endpoints and senders created on the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesConf {
    /// Items taken but not yet committed, per queue (1 to 1000000); change
    /// one queue at run time with `weft queue set NAME --max-uncommitted N`.
    pub max_uncommitted: u64,
    /// Serve the queued endpoint `log.produce_queued` (docs/dashboard.md):
    /// a produce made durable first and appended to the log by the queue.
    pub produce_endpoint: bool,
    /// Failed attempts of `log.produce_queued` retried before an item goes
    /// to its error queue (0: the first failure moves it).
    pub produce_max_retries: u64,
}

/// pvAccess server inside `weft serve`. Addresses and ports come from the
/// standard EPICS variables (EPICS_PVAS_INTF_ADDR_LIST,
/// EPICS_PVAS_SERVER_PORT (5075), EPICS_PVAS_BROADCAST_PORT (5076), ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pva {
    pub enabled: bool,
    /// Also serve the demo PVs (weft:demo:*).
    pub demo: bool,
    /// PVs backed by topics: `[{pv, topic, partition, kind: double|int|string}]`.
    #[cfg(feature = "pva")]
    pub bridges: Vec<weft_bridge::PvTopicSpec>,
    /// Kept (unchecked) without the `pva` feature so config files still load.
    #[cfg(not(feature = "pva"))]
    pub bridges: Vec<serde_json::Value>,
    /// A TOML file of `[[pv]]` tables (served PVs with types and initial
    /// values; format in docs/pva.md). Empty: none.
    pub pvs_file: String,
    /// Clients admitted to the pvAccess listeners (TCP, UDP search): CIDRs
    /// or addresses; others are refused unread (docs/pva.md "Access").
    pub allow: Vec<String>,
    /// Per-PV access rules (TOML; docs/pva.md "Access"). Empty: none, so
    /// every admitted client may read and write.
    pub access_file: String,
    /// Bytes one client connection's send queue may hold before senders
    /// wait (64 KiB..1 GiB; docs/pva.md "Flow control").
    pub send_queue_bytes: u64,
}


#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub name: String,
    /// Empty: the HOSTNAME when set, else a UUID kept in the data directory.
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_frame_bytes: u64,
    pub max_in_flight_per_conn: u64,
    /// How long SIGINT/SIGTERM waits for requests in flight.
    pub drain_timeout_ms: u64,
    /// A stream connection must send its hello within this (TLS and QUIC:
    /// their handshake included), else a `timeout` error frame and close.
    pub handshake_timeout_ms: u64,
    /// Close a connection with no frame and nothing in flight for this
    /// long (goaway first). 0: never.
    pub idle_timeout_ms: u64,
    /// Bytes of frames one connection may hold (being read or in flight).
    pub max_conn_buffer_bytes: u64,
    /// Bytes of frames all connections together may hold.
    pub max_buffer_bytes: u64,
    /// Native connections (tcp, unix, tls, quic) open at once.
    pub max_connections: u64,
    /// Answers to clients that negotiated compression are zstd-compressed
    /// from this many body bytes (docs/protocol.md, "Compression"). 0: off.
    #[serde(default = "default_compress_min_bytes")]
    pub compress_min_bytes: u64,
}

fn default_compress_min_bytes() -> u64 {
    weft_wire::DEFAULT_COMPRESS_MIN_BYTES as u64
}

/// How native TCP and Unix-socket connections are served (docs/operations.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConf {
    /// N >= 1: plain TCP and Unix-socket connections run on N dedicated
    /// threads (a current-thread runtime each; a connection and what it
    /// spawns stay on one), at most [`MAX_THREADS`]. 0: on the
    /// main runtime with everything else. Unset (or `"auto"`): half the
    /// cores when there are two or more, else 0 ([`NetConf::threads`];
    /// docs/BENCHMARKS.md, "Connection threads").
    #[serde(default, deserialize_with = "threads_or_auto")]
    pub connection_threads: Option<u64>,
    /// Worker threads of the main runtime (TLS, QUIC, UDP, HTTP, gRPC, the
    /// log's background work, the cluster, and connections when
    /// `connection_threads` is 0), 1 to [`MAX_THREADS`]. Unset (or
    /// `"auto"`): `TOKIO_WORKER_THREADS` when that is set, else one per
    /// core, tokio's own default ([`NetConf::runtime_threads`]; why not
    /// fewer beside connection threads: docs/BENCHMARKS.md, "Eighth round").
    #[serde(default, deserialize_with = "threads_or_auto")]
    pub runtime_threads: Option<u64>,
}

impl NetConf {
    /// The connection threads to start on a machine with `cores` cores.
    pub fn threads(&self, cores: usize) -> u64 {
        self.connection_threads.unwrap_or(if cores >= 2 { (cores / 2) as u64 } else { 0 })
    }

    /// The main runtime's worker threads on a machine with `cores` cores,
    /// given `TOKIO_WORKER_THREADS` (`tokio_env`, as set or not); refused
    /// when configured as 0 or over [`MAX_THREADS`].
    pub fn runtime_threads(&self, cores: usize, tokio_env: Option<&str>) -> Result<usize, String> {
        let n = match self.runtime_threads {
            Some(n) => n,
            None => tokio_env.and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n >= 1).unwrap_or((cores as u64).max(1)),
        };
        if !(1..=MAX_THREADS).contains(&n) {
            return Err(format!("net.runtime_threads is {n}, from 1 to {MAX_THREADS}"));
        }
        Ok(n as usize)
    }
}

/// A number of threads, or `"auto"` (also as a string of digits, the form
/// an environment variable gives).
fn threads_or_auto<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::N(n)) => Ok(Some(n)),
        Some(Raw::S(s)) if s.trim().eq_ignore_ascii_case("auto") => Ok(None),
        Some(Raw::S(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is neither a number of threads nor \"auto\""))),
    }
}

/// Upper bound of `net.connection_threads` and `net.runtime_threads`.
pub const MAX_THREADS: u64 = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub enabled: bool,
    pub addr: String,
    /// Client addresses allowed (CIDRs or addresses); everyone else is
    /// refused before anything is read. Deny by default: loopback only.
    pub allow: Vec<String>,
}

/// The HTTP gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListenerConf {
    pub enabled: bool,
    pub addr: String,
    /// Client addresses allowed; others get 403.
    pub allow: Vec<String>,
    /// Larger request bodies get 413 `too_large`, unread.
    pub max_body_bytes: u64,
    /// HTTPS: TLS with the `tls.*` certificate, key and client-certificate
    /// policy (docs/security.md); reloaded with them.
    pub tls: bool,
}

/// The TLS listener, and the certificate QUIC shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConf {
    pub enabled: bool,
    pub addr: String,
    /// PEM certificate chain and key. Both empty: a development CA and
    /// server certificate are generated once into `<data_dir>/tls/`.
    pub cert: String,
    pub key: String,
    /// PEM bundle of CAs for client certificates. Empty with generated
    /// certificates: the generated CA.
    pub client_ca: String,
    /// `none`, `optional` or `require` (mTLS).
    pub client_auth: weft_net::ClientAuth,
    /// Checked on the TCP connection, before any handshake.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixListenerConf {
    pub enabled: bool,
    /// Empty: `<data_dir>/weft.sock`.
    pub path: String,
    /// Peer uids allowed: `self` (this process's uid), `uid:N`, or `*`.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Liveness {
    /// `host:port` UDP addresses of peers to send heartbeats to.
    pub peers: Vec<String>,
    pub interval_ms: u64,
    /// A peer is alive while its last heartbeat is younger than this.
    pub timeout_ms: u64,
}

pub const DEFAULT_PORT: u16 = 7400;
pub const DEFAULT_QUIC_PORT: u16 = 7401;
pub const DEFAULT_TLS_PORT: u16 = 7403;
pub const DEFAULT_GRPC_PORT: u16 = 7402;

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: "./weft-data".into(),
            log: "info".into(),
            log_format: "text".into(),
            node: NodeSection { name: "weft".into(), id: String::new() },
            limits: Limits {
                max_frame_bytes: weft_wire::DEFAULT_MAX_FRAME_BYTES as u64,
                max_in_flight_per_conn: 256,
                drain_timeout_ms: 5_000,
                handshake_timeout_ms: weft_net::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
                idle_timeout_ms: weft_net::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
                max_conn_buffer_bytes: weft_net::DEFAULT_MAX_CONN_BUFFER_BYTES as u64,
                max_buffer_bytes: weft_net::DEFAULT_MAX_BUFFER_BYTES as u64,
                max_connections: weft_net::DEFAULT_MAX_CONNECTIONS as u64,
                compress_min_bytes: default_compress_min_bytes(),
            },
            net: NetConf::default(),
            tcp: Listener { enabled: true, addr: format!("127.0.0.1:{DEFAULT_PORT}"), allow: loopback() },
            udp: Listener { enabled: true, addr: format!("127.0.0.1:{DEFAULT_PORT}"), allow: loopback() },
            unix: UnixListenerConf { enabled: true, path: String::new(), allow: vec!["self".into()] },
            liveness: Liveness { peers: vec![], interval_ms: 1_000, timeout_ms: 3_000 },
            log_store: weft_log::LogConfig::default(),
            http: HttpListenerConf {
                enabled: true,
                addr: "127.0.0.1:7480".into(),
                allow: loopback(),
                max_body_bytes: weft_broker::http::DEFAULT_MAX_BODY_BYTES as u64,
                tls: false,
            },
            tls: TlsListenerConf {
                enabled: false,
                addr: format!("127.0.0.1:{DEFAULT_TLS_PORT}"),
                cert: String::new(),
                key: String::new(),
                client_ca: String::new(),
                client_auth: weft_net::ClientAuth::None,
                allow: loopback(),
            },
            quic: Listener { enabled: false, addr: format!("127.0.0.1:{DEFAULT_QUIC_PORT}"), allow: loopback() },
            pva: Pva {
                enabled: false,
                demo: false,
                bridges: vec![],
                pvs_file: String::new(),
                allow: loopback(),
                access_file: String::new(),
                // weft_pva::config::DEFAULT_SEND_QUEUE_BYTES (not linked without the `pva` feature).
                send_queue_bytes: 16 << 20,
            },
            ekosis: weft_ekosis::EkosisListeners::default(),
            stats: StatsKeeping { gather_period_ms: 300_000, history_len: 12 },
            queues: QueuesConf { max_uncommitted: weft_queue::DEFAULT_MAX_UNCOMMITTED as u64, produce_endpoint: false, produce_max_retries: 3 },
            cluster: ClusterConf::default(),
            otel: OtelConf { endpoint: String::new(), sample_ratio: 1.0, service_name: "weft".into(), filter: "info".into() },
            ui: UiConf { enabled: true, max_clients: 16, period_ms: 1000, max_watches: default_ui_max_watches() },
            auth: AuthConf::default(),
            grpc: GrpcConf { enabled: true, addr: format!("127.0.0.1:{DEFAULT_GRPC_PORT}"), tls: false, allow: loopback() },
            reload: ReloadConf { watch_interval_ms: 2000 },
            tables: weft_table::TablesConfig::default(),
            query: weft_api::QueryConfig::default(),
        }
    }
}

fn loopback() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}

impl NodeConfig {
    /// The TLS settings of the TLS and QUIC listeners: the configured
    /// files, or development certificates generated once under
    /// `<data_dir>/tls/` (logged) when no certificate is configured.
    pub fn tls_server(&self) -> anyhow::Result<weft_net::TlsServerConfig> {
        let t = &self.tls;
        let client_ca = (!t.client_ca.is_empty()).then(|| PathBuf::from(&t.client_ca));
        if !t.cert.is_empty() || !t.key.is_empty() {
            anyhow::ensure!(!t.cert.is_empty() && !t.key.is_empty(), "tls.cert and tls.key must be set together");
            return Ok(weft_net::TlsServerConfig { cert: t.cert.clone().into(), key: t.key.clone().into(), client_ca, client_auth: t.client_auth });
        }
        let dir = PathBuf::from(&self.data_dir).join("tls");
        let (files, fresh) = weft_net::tls::dev::ensure_server(&dir)?;
        if fresh {
            tracing::warn!(dir = %dir.display(), ca = %files.ca_cert.display(), "no tls.cert/tls.key configured: generated a development CA and server certificate (and a client certificate for mTLS tests); clients must trust the CA");
        } else {
            tracing::info!(dir = %dir.display(), "no tls.cert/tls.key configured: using the development certificates generated earlier");
        }
        Ok(weft_net::TlsServerConfig {
            cert: files.server_cert,
            key: files.server_key,
            client_ca: client_ca.or(Some(files.ca_cert)),
            client_auth: t.client_auth,
        })
    }

    pub fn unix_path(&self) -> PathBuf {
        if self.unix.path.is_empty() {
            PathBuf::from(&self.data_dir).join("weft.sock")
        } else {
            PathBuf::from(&self.unix.path)
        }
    }
}

/// One key of the effective configuration as `weft.config` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub key: String,
    pub value: serde_json::Value,
    /// `default`, `file PATH`, `env WEFT_...` or `flag --...`.
    pub source: String,
}

/// Key names whose values are secrets: shown as `"<redacted>"` by
/// `weft.config` (a file *path* such as `tls.key` is not a secret).
fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    ["secret", "password", "passphrase", "token", "credential"].iter().any(|s| last.contains(s))
}

/// The effective configuration with sources, secrets redacted: the body of
/// the node's `weft.config` endpoint (`weft config running`).
pub fn entries<T>(layered: &weft_service::config::Layered<T>) -> Vec<ConfigEntry> {
    layered
        .entries
        .iter()
        .map(|(k, (v, src))| ConfigEntry {
            key: k.clone(),
            value: if is_secret(k) && !v.is_null() { "<redacted>".into() } else { v.clone() },
            source: src.to_string(),
        })
        .collect()
}

/// `WEFT_*` variables that are not configuration keys but are read by the
/// CLI, the tests or the peer scripts; never warned about.
const NON_KEY_ENV: &[&str] = &[
    "WEFT_ADDR",
    "WEFT_CONFIG",
    "WEFT_TOKEN",
    "WEFT_PEERS",
    "WEFT_SHARED",
    "WEFT_PYTHON",
    "WEFT_EKO_ADDR",
    "WEFT_PVA_REDIS",
    "WEFT_CEPH_KEY",
    "WEFT_TLS_CA",
    "WEFT_TLS_CLIENT_CERT",
    "WEFT_TLS_CLIENT_KEY",
    "WEFT_TLS_SERVER_NAME",
    "WEFT_VENV",
    "WEFT_THREADS",
    "WEFT_PROCESS_ID",
    // read by test harnesses and peer scripts
    "WEFT_ENV",
    "WEFT_PORT",
    "WEFT_TRANSPORT",
    "WEFT_SAVE_ORACLE",
    "WEFT_EKO_CHILD",
    "WEFT_EKOSIS_SCRIPTS",
    "WEFT_QUEUE_CHILD",
    "WEFT_QUEUE_SINK",
    "WEFT_PVA_SCRIPTS",
    "WEFT_PVA_CAPTURES",
    "WEFT_LOG_KILL9_CHILD_DIR",
];

/// `WEFT_*` variables of `env` that set no key and are not one of the
/// known non-key variables: likely typos, which would otherwise be ignored
/// silently (an unknown file key is an error).
pub fn unknown_env<T>(layered: &weft_service::config::Layered<T>, env: &[(String, String)]) -> Vec<String> {
    let known: std::collections::BTreeSet<String> = layered.entries.keys().map(|k| weft_service::config::env_name(k)).collect();
    let mut out: Vec<String> = env
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("WEFT_") && !known.contains(*n) && !NON_KEY_ENV.contains(&n.as_str()))
        .cloned()
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `net` section loaded from defaults and these environment variables.
    fn load(env: &[(&str, &str)]) -> Result<NetConf, weft_service::config::ConfigError> {
        let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        weft_service::config::load(&NodeConfig::default(), None, &env, &[]).map(|l| l.value.net)
    }

    #[test]
    fn connection_threads_auto_by_default_a_number_or_auto_from_env() {
        let auto = load(&[]).unwrap();
        assert_eq!(auto.connection_threads, None);
        assert_eq!((auto.threads(1), auto.threads(2), auto.threads(3), auto.threads(16)), (0, 1, 1, 8));
        let n = load(&[("WEFT_NET_CONNECTION_THREADS", "3")]).unwrap();
        assert_eq!((n.connection_threads, n.threads(2)), (Some(3), 3));
        assert_eq!(load(&[("WEFT_NET_CONNECTION_THREADS", "0")]).unwrap().threads(8), 0);
        assert_eq!(load(&[("WEFT_NET_CONNECTION_THREADS", "auto")]).unwrap().connection_threads, None);
        assert!(load(&[("WEFT_NET_CONNECTION_THREADS", "many")]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.toml");
        std::fs::write(&f, "[net]\nconnection_threads = 2\n").unwrap();
        let file = weft_service::config::load(&NodeConfig::default(), Some(&f), &[], &[]).unwrap();
        assert_eq!(file.value.net.connection_threads, Some(2));
    }

    #[test]
    fn runtime_threads_one_per_core_unless_told() {
        let auto = load(&[]).unwrap();
        assert_eq!([0, 1, 2, 16].map(|c| auto.runtime_threads(c, None)), [Ok(1), Ok(1), Ok(2), Ok(16)]);
        // tokio's own variable still chooses when the key is not set; a bad one is ignored.
        assert_eq!(auto.runtime_threads(2, Some("3")), Ok(3));
        assert_eq!(auto.runtime_threads(2, Some("0")), Ok(2));
        assert_eq!(auto.runtime_threads(2, Some("x")), Ok(2));
        let set = load(&[("WEFT_NET_RUNTIME_THREADS", "4")]).unwrap();
        assert_eq!(set.runtime_threads(2, Some("3")), Ok(4));
        assert_eq!(load(&[("WEFT_NET_RUNTIME_THREADS", "0")]).unwrap().runtime_threads(2, None), Err("net.runtime_threads is 0, from 1 to 256".into()));
        assert!(load(&[("WEFT_NET_RUNTIME_THREADS", "all")]).is_err());
    }

    #[test]
    fn unknown_env_names_typos_only() {
        let env: Vec<(String, String)> = [("WEFT_TCP_ADR", "x"), ("WEFT_TCP_ADDR", "127.0.0.1:1"), ("WEFT_ADDR", "tcp://x:1"), ("PATH", "/bin")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let l = weft_service::config::load(&NodeConfig::default(), None, &env, &[]).unwrap();
        assert_eq!(unknown_env(&l, &env), vec!["WEFT_TCP_ADR".to_string()]);
    }

    #[test]
    fn secrets_are_redacted_paths_are_not() {
        assert!(is_secret("ceph.secret"));
        assert!(!is_secret("tls.key"));
        let l = weft_service::config::load(&NodeConfig::default(), None, &[], &[]).unwrap();
        let e = entries(&l);
        assert!(e.iter().any(|e| e.key == "tcp.addr" && e.source == "default"));
    }
}
