//! What `weft top` shows: raw samples from the node and the view computed
//! from two of them (rates are differences over the time between them).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;

use crate::panels::{self, ClusterSample, ClusterView, PvList, PvaView, TableRow};

/// One look at the node.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub node: NodeInfo,
    /// `weft.stats`: flat keys.
    pub stats: BTreeMap<String, serde_json::Value>,
    pub topics: Vec<TopicSample>,
    pub groups: Vec<GroupSample>,
    pub queues: Vec<QueueSample>,
    /// `cluster.status`; None outside cluster mode.
    pub cluster: Option<ClusterSample>,
    /// Why a cluster member did not answer `cluster.status` (busy, forbidden).
    pub cluster_error: Option<String>,
    /// `pva.pvs`; None when the node serves no pvAccess.
    pub pvs: Option<PvList>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct NodeInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub uptime_s: f64,
    #[serde(default)]
    pub transports: Vec<String>,
    /// Routes the node serves: optional parts are asked for only when listed.
    #[serde(default, skip_serializing)]
    pub endpoints: Vec<String>,
}

impl NodeInfo {
    /// Whether the node serves `route` (an older node that lists no
    /// routes is asked anyway; it answers `unknown_route` if not).
    pub fn serves(&self, route: &str) -> bool {
        self.endpoints.is_empty() || self.endpoints.iter().any(|e| e == route)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TopicSample {
    pub name: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub partitions: Vec<PartitionSample>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartitionSample {
    #[serde(default)]
    pub log_start_offset: u64,
    #[serde(default)]
    pub log_end_offset: u64,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub poisoned: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct GroupSample {
    pub group: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub members: u64,
    #[serde(default)]
    pub total_lag: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct QueueSample {
    pub name: String,
    /// "endpoint" or "sender".
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub accepting_paused: bool,
    #[serde(default)]
    pub processing_paused: bool,
    #[serde(default)]
    pub incoming: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub in_flight: u64,
    #[serde(default)]
    pub processed: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EndpointRow {
    pub route: String,
    pub calls: u64,
    /// Calls per second since the previous sample (None on the first).
    pub rate: Option<f64>,
    pub errors: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopicRow {
    pub name: String,
    pub partitions: usize,
    /// Records stored (end - start over all partitions).
    pub records: u64,
    /// Records appended per second since the previous sample.
    pub rate: Option<f64>,
    pub size_bytes: u64,
    /// Partitions that stopped taking writes after an I/O error.
    pub poisoned: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueRow {
    pub kind: String,
    pub name: String,
    pub pending: u64,
    pub errors: u64,
    pub in_flight: u64,
    /// Items processed per second since the previous sample.
    pub rate: Option<f64>,
    pub state: &'static str,
}

/// The HTTP gateway's traffic (`http.*` stats), when the node runs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HttpRow {
    pub requests: u64,
    /// Requests per second since the previous sample.
    pub rate: Option<f64>,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub p99_us: Option<u64>,
}

/// Everything on screen, computed from the newest sample and the one
/// before it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct View {
    pub node: NodeInfo,
    pub connections_open: u64,
    pub frames_in_rate: Option<f64>,
    pub refused: u64,
    pub http: Option<HttpRow>,
    pub endpoints: Vec<EndpointRow>,
    pub topics: Vec<TopicRow>,
    pub groups: Vec<GroupSample>,
    pub queues: Vec<QueueRow>,
    /// Cluster mode only.
    pub cluster: Option<ClusterView>,
    pub cluster_error: Option<String>,
    pub tables: Vec<TableRow>,
    /// When the node serves pvAccess.
    pub pva: Option<PvaView>,
}

pub(crate) fn num(stats: &BTreeMap<String, serde_json::Value>, key: &str) -> Option<u64> {
    stats.get(key).and_then(|v| v.as_u64())
}

/// (now - before) / seconds, when both exist and time passed; counters
/// that went down (the node restarted) give no rate.
pub(crate) fn rate(now: u64, before: Option<u64>, secs: f64) -> Option<f64> {
    let before = before?;
    (secs > 0.0 && now >= before).then(|| (now - before) as f64 / secs)
}

impl View {
    pub fn between(prev: Option<&Sample>, now: &Sample) -> View {
        let secs = prev.map_or(0.0, |p| now.at.saturating_duration_since(p.at).as_secs_f64());
        let prev_stats = prev.map(|p| &p.stats);
        let mut endpoints: Vec<EndpointRow> = now
            .stats
            .keys()
            .filter_map(|k| k.strip_prefix("endpoint.").and_then(|r| r.strip_suffix(".calls")))
            .map(|route| {
                let key = |s: &str| format!("endpoint.{route}.{s}");
                let calls = num(&now.stats, &key("calls")).unwrap_or(0);
                EndpointRow {
                    route: route.to_owned(),
                    calls,
                    rate: rate(calls, prev_stats.and_then(|p| num(p, &key("calls"))), secs),
                    errors: num(&now.stats, &key("errors")).unwrap_or(0),
                    p50_us: num(&now.stats, &key("latency_us.p50")),
                    p99_us: num(&now.stats, &key("latency_us.p99")),
                }
            })
            .collect();
        // busiest first; then by total calls; idle endpoints last by name
        endpoints.sort_by(|a, b| b.rate.unwrap_or(0.0).total_cmp(&a.rate.unwrap_or(0.0)).then(b.calls.cmp(&a.calls)).then(a.route.cmp(&b.route)));

        let appended = |t: &TopicSample| t.partitions.iter().map(|p| p.log_end_offset).sum::<u64>();
        let topics = now
            .topics
            .iter()
            .filter(|t| !t.internal)
            .map(|t| {
                let before = prev.and_then(|p| p.topics.iter().find(|o| o.name == t.name)).map(appended);
                TopicRow {
                    name: t.name.clone(),
                    partitions: t.partitions.len(),
                    records: t.partitions.iter().map(|p| p.log_end_offset.saturating_sub(p.log_start_offset)).sum(),
                    rate: rate(appended(t), before, secs),
                    size_bytes: t.partitions.iter().map(|p| p.size_bytes).sum(),
                    poisoned: t.partitions.iter().filter(|p| p.poisoned.is_some()).count(),
                }
            })
            .collect();

        let queues = now
            .queues
            .iter()
            .map(|q| {
                let before = prev.and_then(|p| p.queues.iter().find(|o| o.name == q.name && o.kind == q.kind)).map(|o| o.processed);
                QueueRow {
                    kind: q.kind.clone(),
                    name: q.name.clone(),
                    pending: q.incoming,
                    errors: q.errors,
                    in_flight: q.in_flight,
                    rate: rate(q.processed, before, secs),
                    state: match (q.accepting_paused, q.processing_paused) {
                        (false, false) => "running",
                        (true, false) => "not accepting",
                        (false, true) => "not processing",
                        (true, true) => "paused",
                    },
                }
            })
            .collect();

        View {
            node: now.node.clone(),
            connections_open: num(&now.stats, "net.connections_open").unwrap_or(0),
            frames_in_rate: rate(num(&now.stats, "net.frames_in").unwrap_or(0), prev_stats.and_then(|p| num(p, "net.frames_in")), secs),
            refused: num(&now.stats, "net.refused").unwrap_or(0),
            http: num(&now.stats, "http.requests").map(|requests| HttpRow {
                requests,
                rate: rate(requests, prev_stats.and_then(|p| num(p, "http.requests")), secs),
                errors_4xx: num(&now.stats, "http.errors.4xx").unwrap_or(0),
                errors_5xx: num(&now.stats, "http.errors.5xx").unwrap_or(0),
                p99_us: num(&now.stats, "http.latency_us.p99").filter(|_| requests > 0),
            }),
            endpoints,
            topics,
            groups: now.groups.clone(),
            queues,
            cluster: panels::cluster_view(prev.and_then(|p| p.cluster.as_ref()), now.cluster.as_ref(), secs),
            cluster_error: now.cluster_error.clone(),
            tables: panels::table_rows(prev_stats, &now.stats, prev.and_then(|p| p.cluster.as_ref()), now.cluster.as_ref(), secs),
            pva: panels::pva_view(prev_stats, &now.stats, now.pvs.as_ref(), secs),
        }
    }
}

/// Human sizes: 999 B, 1.5 KiB, 12.0 MiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A rate for a table cell: "-" before there are two samples.
pub fn per_sec(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r >= 10_000.0 => format!("{:.1}k", r / 1000.0),
        Some(r) if r >= 100.0 => format!("{r:.0}"),
        Some(r) => format!("{r:.1}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(at: Instant, calls: u64, end: u64) -> Sample {
        let mut stats = BTreeMap::new();
        stats.insert("endpoint.log.produce.calls".into(), calls.into());
        stats.insert("endpoint.log.produce.errors".into(), 1.into());
        stats.insert("endpoint.log.produce.latency_us.p99".into(), 900.into());
        stats.insert("endpoint.weft.ping.calls".into(), 5.into());
        stats.insert("net.frames_in".into(), (calls * 2).into());
        stats.insert("http.requests".into(), (calls / 10).into());
        stats.insert("http.errors.4xx".into(), 3.into());
        stats.insert("http.latency_us.p99".into(), 512.into());
        Sample {
            at,
            node: NodeInfo { name: "n".into(), ..NodeInfo::default() },
            stats,
            topics: vec![
                TopicSample {
                    name: "t".into(),
                    internal: false,
                    partitions: vec![
                        PartitionSample { log_start_offset: 10, log_end_offset: end, size_bytes: 100, poisoned: None },
                        PartitionSample { log_start_offset: 0, log_end_offset: 5, size_bytes: 50, poisoned: Some("EIO".into()) },
                    ],
                },
                TopicSample { name: "__consumer_offsets".into(), internal: true, partitions: vec![] },
            ],
            groups: vec![],
            queues: vec![QueueSample { name: "jobs".into(), kind: "endpoint".into(), processing_paused: true, processed: calls, ..QueueSample::default() }],
            cluster: None,
            cluster_error: None,
            pvs: None,
        }
    }

    #[test]
    fn rates_come_from_two_samples() {
        let t0 = Instant::now();
        let a = sample(t0, 100, 110);
        let b = sample(t0 + Duration::from_secs(2), 300, 510);
        let first = View::between(None, &a);
        assert_eq!(first.endpoints[0].rate, None);
        assert_eq!(first.http.as_ref().map(|h| (h.requests, h.rate)), Some((10, None)));
        let v = View::between(Some(&a), &b);
        let produce = &v.endpoints[0];
        assert_eq!((produce.route.as_str(), produce.rate, produce.p99_us, produce.p50_us), ("log.produce", Some(100.0), Some(900), None));
        assert_eq!(v.endpoints[1].rate, Some(0.0), "idle endpoints sort after busy ones");
        assert_eq!(v.frames_in_rate, Some(200.0));
        let h = v.http.as_ref().unwrap();
        assert_eq!((h.requests, h.rate, h.errors_4xx, h.errors_5xx, h.p99_us), (30, Some(10.0), 3, 0, Some(512)));
        assert_eq!(v.topics.len(), 1, "internal topics are hidden");
        let t = &v.topics[0];
        assert_eq!((t.records, t.rate, t.size_bytes, t.poisoned), (505, Some(200.0), 150, 1));
        assert_eq!((v.queues[0].state, v.queues[0].rate), ("not processing", Some(100.0)));
        // a restarted node (counters went down) gives no rate, not a negative one
        let v = View::between(Some(&b), &a);
        assert_eq!(v.endpoints.iter().find(|e| e.route == "log.produce").unwrap().rate, None);
    }

    #[test]
    fn optional_parts_are_asked_for_when_listed() {
        let info: NodeInfo = serde_json::from_value(serde_json::json!({"name": "n", "endpoints": ["weft.info", "pva.pvs"]})).unwrap();
        assert!(info.serves("pva.pvs") && !info.serves("cluster.status"));
        assert!(NodeInfo::default().serves("cluster.status"), "a node that lists nothing is asked");
        assert!(!serde_json::to_string(&info).unwrap().contains("endpoints"), "not in the JSON view");
    }

    #[test]
    fn units() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(per_sec(None), "-");
        assert_eq!(per_sec(Some(12_345.0)), "12.3k");
        assert_eq!(per_sec(Some(150.4)), "150");
        assert_eq!(per_sec(Some(1.25)), "1.2");
    }
}
