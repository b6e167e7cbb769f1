//! Weft's metrics registry: one set of Prometheus metric families that every
//! crate writes to ([`get`]), and its exposition ([`render`]) in the
//! Prometheus text format (0.0.4) or OpenMetrics 1.0, chosen by the scraper's
//! `Accept` header. Built on `prometheus-client` (the decision and the list of
//! every metric are in docs/observability.md).
//!
//! Two kinds of metric live here:
//! - counters and histograms written where things happen (a request
//!   answered, a connection accepted, an fsync done): cheap atomic updates;
//! - gauges computed at scrape time by hooks ([`on_scrape`]) from state the
//!   parts already keep (partition sizes, consumer lag, queue sizes), so hot
//!   paths pay nothing for them.
//!
//! Names follow Prometheus conventions: the `weft_` prefix, base units
//! (seconds, bytes), `_total` on counters (added by the encoder).

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client::metrics::counter::Counter as Counter;
pub use prometheus_client::metrics::histogram::Histogram;

/// One label.
pub type L1 = [(&'static str, String); 1];
/// Two labels.
pub type L2 = [(&'static str, String); 2];
/// Three labels.
pub type L3 = [(&'static str, String); 3];

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 50 µs to about 7.5 s, ×2.5 apart.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.5, 14))
}

/// Connection lifetimes: 10 ms to about 3 h, ×4 apart.
fn lifetime() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 11))
}

/// Every metric family of a Weft node.
#[derive(Debug)]
pub struct Metrics {
    // ---- native endpoints (weft-service)
    /// Requests answered, by endpoint (route key) and code (`ok` or the error code).
    pub requests: Family<L2, Counter>,
    /// Time to answer a request, by endpoint.
    pub request_duration: HistFamily<L1>,

    // ---- transports (weft-net)
    pub connections_accepted: Family<L1, Counter>,
    pub connections_open: Family<L1, Gauge>,
    /// Refused connections (and UDP datagrams), by transport and reason
    /// (`allow_list`, `max_connections`).
    pub connections_refused: Family<L2, Counter>,
    pub connection_duration: HistFamily<L1>,
    pub received_bytes: Family<L1, Counter>,
    pub sent_bytes: Family<L1, Counter>,

    // ---- the log (weft-log)
    pub produced_records: Family<L1, Counter>,
    pub produced_bytes: Family<L1, Counter>,
    pub fetched_records: Family<L1, Counter>,
    pub fetched_bytes: Family<L1, Counter>,
    pub fsyncs: Counter,
    pub fsync_duration: Histogram,
    /// Consumer groups whose committed offsets expired (log_store.offsets_retention_ms).
    pub log_groups_expired: Counter,
    /// Scrape time: per partition.
    pub partition_size: Family<L2, Gauge>,
    pub partition_high_watermark: Family<L2, Gauge>,
    pub partition_log_start: Family<L2, Gauge>,
    pub partition_log_end: Family<L2, Gauge>,
    /// Scrape time: per group, topic and partition.
    pub group_lag: Family<L3, Gauge>,
    pub log_disk_full: Gauge,
    pub log_partitions_poisoned: Gauge,

    // ---- queues (weft-queue), scrape time
    /// Items by kind (`endpoint`, `sender`), name and queue (`incoming`, `error`, `in_flight`).
    pub queue_items: Family<L3, Gauge>,
    pub queue_bytes: Family<L2, Gauge>,

    // ---- HTTP gateway (weft-broker)
    /// By route template, method and status.
    pub http_requests: Family<L3, Counter>,
    pub http_request_duration: HistFamily<L1>,

    // ---- pvAccess server (weft-pva), mirrored at scrape time from its counters
    pub pva_connections: Counter,
    /// By reason: `allow_list` (TCP connections), `closed_on_error`, `send_stalled`.
    pub pva_connections_closed: Family<L1, Counter>,
    /// By result: `answered`, `refused` (sender not on the allow-list).
    pub pva_searches: Family<L1, Counter>,
    pub pva_access_denied: Counter,
    pub pva_requests_cancelled: Counter,
    /// Channels and monitors open now, over every connection.
    pub pva_channels_open: Gauge,
    pub pva_monitors_open: Gauge,
    /// Monitor updates sent (rate() of it: updates per second).
    pub pva_monitor_updates: Counter,

    // ---- cluster (weft-cluster), per raft group hosted here, labels `group`
    // and `kind` (meta, partition, table); read at scrape time from the
    // node's group status. Cluster mode only.
    pub raft_term: Family<L2, Gauge>,
    /// 1 when this node is the group's leader.
    pub raft_is_leader: Family<L2, Gauge>,
    /// The leader's node id as this node sees it (0: none known).
    pub raft_leader_id: Family<L2, Gauge>,
    pub raft_commit_index: Family<L2, Gauge>,
    pub raft_applied_index: Family<L2, Gauge>,
    /// Commit index minus applied index.
    pub raft_commit_lag: Family<L2, Gauge>,
    /// Elections this node started (mirrored from the group's count).
    pub raft_elections: Family<L2, Counter>,
    /// Leader changes this node saw (mirrored from the group's count).
    pub raft_leader_changes: Family<L2, Counter>,
    /// The rebalancer's replica moves (from the node's metadata): in flight, finished, cancelled.
    pub rebalance_moves_in_flight: Gauge,
    pub rebalance_moves_done: Counter,
    pub rebalance_moves_failed: Counter,
    /// This node's partition appliers: appends to the local copies and what
    /// they held, appends cut by each bound (`bound`: entries, records,
    /// bytes; `cluster.apply_batch_*`), and entries and bytes queued to them.
    pub cluster_apply_batches: Counter,
    pub cluster_apply_entries: Counter,
    pub cluster_apply_records: Counter,
    pub cluster_apply_bytes: Counter,
    pub cluster_apply_cuts: Family<L1, Counter>,
    pub cluster_apply_queued_entries: Gauge,
    pub cluster_apply_queued_bytes: Gauge,
    /// What that queue's bound (`cluster.apply_queue_max_bytes`) turned
    /// away: produces refused here, appends from leaders dropped here.
    pub cluster_apply_refused: Counter,
    pub cluster_apply_held_back: Counter,

    // ---- RADOS client (weft-rados), written where the objecter gets an answer
    /// By pool (id), op (`read`, `write`) and result (`ok`, `error`: the OSD
    /// answered a negative code, `failed`: no answer, e.g. timeout).
    pub rados_ops: Family<L3, Counter>,
    /// By pool and op.
    pub rados_op_duration: HistFamily<L2>,

    // ---- auth (weft-auth, docs/security.md)
    /// Audit events by surface (native, http, grpc, admin, ...) and outcome
    /// (unauthenticated, forbidden, denied, ok for changes).
    pub auth_events: Family<L2, Counter>,

    // ---- query API (weft-api, docs/query.md)
    /// Queries answered, by statement kind and code (`ok` or the gRPC code's name).
    pub queries: Family<L2, Counter>,
    /// Watch streams started.
    pub query_watches: Counter,
    /// Events sent to watch streams.
    pub query_watch_events: Counter,

    /// Always 1, labelled with the version.
    pub build_info: Family<L1, Gauge>,
}

impl Metrics {
    fn new() -> Self {
        Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            connections_accepted: Family::default(),
            connections_open: Family::default(),
            connections_refused: Family::default(),
            connection_duration: Family::new_with_constructor(lifetime),
            received_bytes: Family::default(),
            sent_bytes: Family::default(),
            produced_records: Family::default(),
            produced_bytes: Family::default(),
            fetched_records: Family::default(),
            fetched_bytes: Family::default(),
            fsyncs: Counter::default(),
            fsync_duration: latency(),
            log_groups_expired: Counter::default(),
            partition_size: Family::default(),
            partition_high_watermark: Family::default(),
            partition_log_start: Family::default(),
            partition_log_end: Family::default(),
            group_lag: Family::default(),
            log_disk_full: Gauge::default(),
            log_partitions_poisoned: Gauge::default(),
            queue_items: Family::default(),
            queue_bytes: Family::default(),
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(latency),
            pva_connections: Counter::default(),
            pva_connections_closed: Family::default(),
            pva_searches: Family::default(),
            pva_access_denied: Counter::default(),
            pva_requests_cancelled: Counter::default(),
            pva_channels_open: Gauge::default(),
            pva_monitors_open: Gauge::default(),
            pva_monitor_updates: Counter::default(),
            rados_ops: Family::default(),
            rados_op_duration: Family::new_with_constructor(latency),
            raft_term: Family::default(),
            raft_is_leader: Family::default(),
            raft_leader_id: Family::default(),
            raft_commit_index: Family::default(),
            raft_applied_index: Family::default(),
            raft_commit_lag: Family::default(),
            raft_elections: Family::default(),
            raft_leader_changes: Family::default(),
            rebalance_moves_in_flight: Gauge::default(),
            rebalance_moves_done: Counter::default(),
            rebalance_moves_failed: Counter::default(),
            cluster_apply_batches: Counter::default(),
            cluster_apply_entries: Counter::default(),
            cluster_apply_records: Counter::default(),
            cluster_apply_bytes: Counter::default(),
            cluster_apply_cuts: Family::default(),
            cluster_apply_queued_entries: Gauge::default(),
            cluster_apply_queued_bytes: Gauge::default(),
            cluster_apply_refused: Counter::default(),
            cluster_apply_held_back: Counter::default(),
            auth_events: Family::default(),
            queries: Family::default(),
            query_watches: Counter::default(),
            query_watch_events: Counter::default(),
            build_info: Family::default(),
        }
    }

    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("weft");
        r.register("requests", "Native-protocol requests answered, by endpoint and code (ok or the error code)", self.requests.clone());
        r.register_with_unit("request_duration", "Time to answer a native-protocol request, by endpoint", Unit::Seconds, self.request_duration.clone());
        r.register("net_connections_accepted", "Stream connections accepted, by transport", self.connections_accepted.clone());
        r.register("net_connections_open", "Stream connections open now, by transport", self.connections_open.clone());
        r.register("net_connections_refused", "Connections (and UDP datagrams) refused, by transport and reason", self.connections_refused.clone());
        r.register_with_unit("net_connection_duration", "Lifetime of closed stream connections, by transport", Unit::Seconds, self.connection_duration.clone());
        r.register_with_unit("net_received", "Bytes of frames received, by transport", Unit::Bytes, self.received_bytes.clone());
        r.register_with_unit("net_sent", "Bytes of frames sent, by transport", Unit::Bytes, self.sent_bytes.clone());
        r.register("log_produced_records", "Records appended to the log, by topic", self.produced_records.clone());
        r.register_with_unit("log_produced", "Bytes of record batches appended to the log, by topic", Unit::Bytes, self.produced_bytes.clone());
        r.register("log_fetched_records", "Records read from the log by fetches, by topic", self.fetched_records.clone());
        r.register_with_unit("log_fetched", "Bytes of record batches read by fetches, by topic", Unit::Bytes, self.fetched_bytes.clone());
        r.register("log_fsyncs", "fsyncs of segment files (group commits and segment rolls)", self.fsyncs.clone());
        r.register("log_groups_expired", "Consumer groups whose committed offsets expired after log_store.offsets_retention_ms without members or commits", self.log_groups_expired.clone());
        r.register_with_unit("log_fsync_duration", "Time an fsync of a segment file took", Unit::Seconds, self.fsync_duration.clone());
        r.register_with_unit("log_partition_size", "Bytes stored by a partition (all its segments)", Unit::Bytes, self.partition_size.clone());
        r.register("log_partition_high_watermark", "High watermark of a partition: the offset after the last record readers see", self.partition_high_watermark.clone());
        r.register("log_partition_start_offset", "First offset still stored in a partition", self.partition_log_start.clone());
        r.register("log_partition_end_offset", "Next offset to be written in a partition (log end offset)", self.partition_log_end.clone());
        r.register("log_group_lag", "Records of a partition not yet committed by a consumer group (latest - committed)", self.group_lag.clone());
        r.register("log_disk_full", "1 when a partition refuses writes because the disk was full", self.log_disk_full.clone());
        r.register("log_partitions_poisoned", "Partitions refusing writes after a storage failure", self.log_partitions_poisoned.clone());
        r.register("queue_items", "Items in a queued endpoint's or sender's queues, by kind, name and queue (incoming, error, in_flight)", self.queue_items.clone());
        r.register_with_unit("queue", "Bytes held by a queued endpoint's or sender's queues, by kind and name", Unit::Bytes, self.queue_bytes.clone());
        r.register("http_requests", "HTTP gateway requests, by route template, method and status", self.http_requests.clone());
        r.register_with_unit("http_request_duration", "Time to answer an HTTP gateway request, by route template", Unit::Seconds, self.http_request_duration.clone());
        r.register("pva_connections", "pvAccess TCP connections accepted", self.pva_connections.clone());
        r.register("pva_connections_closed", "pvAccess connections refused or closed by the server, by reason", self.pva_connections_closed.clone());
        r.register("pva_searches", "pvAccess UDP searches, by result (answered, refused)", self.pva_searches.clone());
        r.register("pva_access_denied", "pvAccess channel creations and operations refused by the access rules", self.pva_access_denied.clone());
        r.register("pva_requests_cancelled", "pvAccess executions and monitors stopped by CANCEL_REQUEST", self.pva_requests_cancelled.clone());
        r.register("rados_ops", "RADOS client operations, by pool id, op (read, write) and result (ok, error, failed)", self.rados_ops.clone());
        r.register_with_unit("rados_op_duration", "Time a RADOS client operation took until its answer (or failure), by pool id and op", Unit::Seconds, self.rados_op_duration.clone());
        r.register("raft_term", "Current raft term of a group hosted here, by group and kind (meta, partition, table)", self.raft_term.clone());
        r.register("raft_is_leader", "1 when this node leads the raft group, else 0", self.raft_is_leader.clone());
        r.register("raft_leader_id", "Node id of the raft group's leader as this node sees it (0: none known)", self.raft_leader_id.clone());
        r.register("raft_commit_index", "Raft commit index of the group on this node", self.raft_commit_index.clone());
        r.register("raft_applied_index", "Raft index applied to the group's state machine on this node", self.raft_applied_index.clone());
        r.register("raft_commit_lag", "Raft entries committed but not yet applied on this node (commit index minus applied index)", self.raft_commit_lag.clone());
        r.register("raft_elections", "Raft elections this node started for the group (terms it raised while voting for itself)", self.raft_elections.clone());
        r.register("raft_leader_changes", "Times this node saw the group's leader become a different node (the first leader known counts)", self.raft_leader_changes.clone());
        r.register("rebalance_moves_in_flight", "Replica moves in flight in the cluster (the rebalancer; this node's metadata)", self.rebalance_moves_in_flight.clone());
        r.register("rebalance_moves_done", "Replica moves finished since the cluster began (this node's metadata)", self.rebalance_moves_done.clone());
        r.register("rebalance_moves_failed", "Replica moves cancelled (target left before it became a voter) since the cluster began", self.rebalance_moves_failed.clone());
        r.register("cluster_apply_batches", "Appends of this node's partition appliers to their local copies", self.cluster_apply_batches.clone());
        r.register("cluster_apply_entries", "Committed raft entries this node's partition appliers took", self.cluster_apply_entries.clone());
        r.register("cluster_apply_records", "Records this node's partition appliers wrote to their local copies", self.cluster_apply_records.clone());
        r.register_with_unit("cluster_apply", "Key and value bytes this node's partition appliers wrote to their local copies", Unit::Bytes, self.cluster_apply_bytes.clone());
        r.register("cluster_apply_cuts", "Applier appends cut by a bound (cluster.apply_batch_entries, _records, _bytes), by bound", self.cluster_apply_cuts.clone());
        r.register("cluster_apply_queued_entries", "Committed entries queued to this node's partition appliers, not yet taken", self.cluster_apply_queued_entries.clone());
        r.register_with_unit("cluster_apply_queued", "Bytes of the committed entries queued to this node's partition appliers", Unit::Bytes, self.cluster_apply_queued_bytes.clone());
        r.register("cluster_apply_refused", "Produces refused because this node's applier queue was over cluster.apply_queue_max_bytes", self.cluster_apply_refused.clone());
        r.register("cluster_apply_held_back", "Appends with entries from partition leaders dropped because this node's applier queue was over cluster.apply_queue_max_bytes (sent again)", self.cluster_apply_held_back.clone());
        r.register("pva_channels_open", "pvAccess channels open now, over every connection", self.pva_channels_open.clone());
        r.register("pva_monitors_open", "pvAccess monitors open now (created, not yet destroyed), over every connection", self.pva_monitors_open.clone());
        r.register("pva_monitor_updates", "pvAccess monitor updates sent to clients (the first value of each monitor included)", self.pva_monitor_updates.clone());
        r.register("queries", "Query API queries answered, by statement kind and code (ok or the gRPC code, docs/query.md)", self.queries.clone());
        r.register("query_watches", "Watch streams of the query API started", self.query_watches.clone());
        r.register("query_watch_events", "Events sent to the query API's watch streams", self.query_watch_events.clone());
        r.register("auth_events", "Auth refusals and changes to users, roles, tokens and keys, by surface and outcome (docs/security.md)", self.auth_events.clone());
        r.register("build_info", "Always 1; the version is in the label", self.build_info.clone());
        r
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics::new();
    m.build_info.get_or_create(&[("version", env!("CARGO_PKG_VERSION").to_owned())]).set(1);
    m
});

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| METRICS.registry());

type Hook = Box<dyn Fn(&Metrics) + Send + Sync>;

/// Scrape-time hooks, and the lock that keeps two scrapes from interleaving
/// their clear-and-refill of the scrape-time gauges.
static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// The metric families of this process.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Run `f` before every scrape, to set gauges from state kept elsewhere.
/// A hook that owns a family should `clear()` it first so that gone label
/// sets (a deleted topic) disappear.
pub fn on_scrape(f: impl Fn(&Metrics) + Send + Sync + 'static) {
    HOOKS.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(f));
}

/// The exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names `application/openmetrics-text`
    /// (with a non-zero quality), else the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let Some(accept) = accept else { return Format::Prometheus };
        for part in accept.split(',') {
            let mut params = part.split(';').map(str::trim);
            if params.next().is_some_and(|m| m.eq_ignore_ascii_case("application/openmetrics-text")) {
                let refused = params.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f64>().is_ok_and(|q| q <= 0.0)));
                if !refused {
                    return Format::OpenMetrics;
                }
            }
        }
        Format::Prometheus
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Run the scrape hooks, then encode every family in `format`.
pub fn render(format: Format) -> String {
    let hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    for h in hooks.iter() {
        h(&METRICS);
    }
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; an encoder error would be a bug in
    // a metric's encoding, and a partial exposition is still the best answer.
    let _ = match format {
        Format::Prometheus => prometheus_text::encode(&mut out, &REGISTRY),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &REGISTRY),
    };
    out
}

/// Bring a counter up to `total`, the current value of a monotonic counter
/// kept elsewhere (scrape-time mirroring keeps the Prometheus type a counter).
pub fn mirror(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// `[(name, value)]` with an owned value.
pub fn l1(k: &'static str, v: impl Into<String>) -> L1 {
    [(k, v.into())]
}
pub fn l2(k1: &'static str, v1: impl Into<String>, k2: &'static str, v2: impl Into<String>) -> L2 {
    [(k1, v1.into()), (k2, v2.into())]
}
pub fn l3(k1: &'static str, v1: impl Into<String>, k2: &'static str, v2: impl Into<String>, k3: &'static str, v3: impl Into<String>) -> L3 {
    [(k1, v1.into()), (k2, v2.into()), (k3, v3.into())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_follows_the_source() {
        let c = Counter::default();
        mirror(&c, 5);
        mirror(&c, 5);
        mirror(&c, 7);
        assert_eq!(c.get(), 7);
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("application/openmetrics-text; q=0")), Format::Prometheus);
    }

    #[test]
    fn both_formats_name_counters_with_total() {
        get().requests.get_or_create(&l2("endpoint", "weft.ping", "code", "ok")).inc();
        get().request_duration.get_or_create(&l1("endpoint", "weft.ping")).observe(0.001);
        get().received_bytes.get_or_create(&l1("transport", "tcp")).inc_by(26);
        let text = render(Format::Prometheus);
        assert!(text.contains("# TYPE weft_requests_total counter"), "{text}");
        assert!(text.contains("weft_requests_total{endpoint=\"weft.ping\",code=\"ok\"} 1"), "{text}");
        assert!(text.contains("# TYPE weft_request_duration_seconds histogram"), "{text}");
        assert!(text.contains("weft_net_received_bytes_total{transport=\"tcp\"} 26"), "{text}");
        assert!(!text.contains("# EOF"));
        let om = render(Format::OpenMetrics);
        assert!(om.contains("# TYPE weft_requests counter"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }
}
