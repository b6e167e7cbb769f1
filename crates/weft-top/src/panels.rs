//! The cluster, tables and pvAccess panels: what the node answers
//! (`cluster.status`, `pva.pvs`, the `table.*` and `pva.*` stats) and the
//! rows computed from two samples of it. Pure, like [`crate::model`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{num, rate};

type Stats = BTreeMap<String, serde_json::Value>;

/// `cluster.status` (docs/cluster.md); only the fields `weft top` shows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClusterSample {
    #[serde(default)]
    pub node_id: u64,
    #[serde(default)]
    pub meta_leader: Option<u64>,
    #[serde(default)]
    pub nodes: Vec<ClusterNodeSample>,
    #[serde(default)]
    pub groups: Vec<RaftGroupSample>,
    #[serde(default)]
    pub partitions: Vec<ClusterPartitionSample>,
    #[serde(default)]
    pub moves: Vec<MoveSample>,
    #[serde(default)]
    pub moves_done: u64,
    #[serde(default)]
    pub moves_cancelled: u64,
    #[serde(default)]
    pub tables: Vec<ClusterTableSample>,
    /// None from a node that does not report its appliers (older than the field).
    #[serde(default)]
    pub apply: Option<ApplySample>,
}

/// `cluster.status` field `apply`: this node's partition appliers, all
/// partitions together (the `cluster.apply.*` stats, docs/cluster.md).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApplySample {
    /// Records and bytes (keys and values) written to the local copies since start.
    #[serde(default)]
    pub records: u64,
    #[serde(default)]
    pub bytes: u64,
    /// Entries applied by raft and not yet taken by an applier, and their bytes, now.
    #[serde(default)]
    pub queued_entries: u64,
    #[serde(default)]
    pub queued_bytes: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClusterNodeSample {
    pub id: u64,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub voter: bool,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
    #[serde(default)]
    pub native_addr: Option<String>,
}

/// One raft group hosted on the answering node.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RaftGroupSample {
    pub group: u64,
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub commit: u64,
    /// Leader only: per voter (id as text), the highest index replicated there.
    #[serde(default)]
    pub matched: BTreeMap<String, u64>,
    #[serde(default)]
    pub elections: u64,
    #[serde(default)]
    pub leader_changes: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClusterPartitionSample {
    pub topic: String,
    pub partition: u32,
    #[serde(default)]
    pub group: u64,
    #[serde(default)]
    pub replicas: Vec<u64>,
    #[serde(default)]
    pub leader: Option<u64>,
    /// Known on the leader only (empty elsewhere).
    #[serde(default)]
    pub in_sync: Vec<u64>,
    #[serde(default)]
    pub high_watermark: Option<u64>,
    /// A replica is not live or no longer a node (from the metadata, known
    /// on every node; false from a node older than the field).
    #[serde(default)]
    pub under_replicated: bool,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct MoveSample {
    pub group: u64,
    pub from: u64,
    pub to: u64,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClusterTableSample {
    pub name: String,
    #[serde(default)]
    pub group: u64,
    #[serde(default)]
    pub replicas: Vec<u64>,
    #[serde(default)]
    pub leader: Option<u64>,
    #[serde(default)]
    pub revision: Option<u64>,
    #[serde(default)]
    pub keys: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
}

/// `pva.pvs`: the PVs a node serves (the first ones; `total` counts all).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PvList {
    #[serde(default)]
    pub pvs: Vec<PvSample>,
    #[serde(default)]
    pub total: usize,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct PvSample {
    pub name: String,
    #[serde(default)]
    pub r#type: String,
    #[serde(default)]
    pub writable: bool,
    /// The value as text.
    #[serde(default)]
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterNodeRow {
    pub id: u64,
    /// `control,data`.
    pub roles: String,
    pub voter: bool,
    pub live: bool,
    pub last_contact_ms: Option<u64>,
    /// Leads the metadata group.
    pub meta_leader: bool,
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterPartitionRow {
    pub topic: String,
    pub partition: u32,
    pub leader: Option<u64>,
    pub replicas: Vec<u64>,
    /// None when this node does not lead the partition (only the leader knows).
    pub in_sync: Option<Vec<u64>>,
    pub high_watermark: Option<u64>,
    /// High watermark growth per second (records committed per second).
    pub rate: Option<f64>,
    /// Raft entries the slowest replica is behind the commit index (leader only).
    pub lag: Option<u64>,
    /// A replica is down (`cluster.status`), or, on the leader, the in-sync
    /// set is smaller than the replicas.
    pub under_replicated: bool,
}

/// The cluster panel: a summary and the tables under it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterView {
    pub node_id: u64,
    pub meta_leader: Option<u64>,
    pub nodes_live: usize,
    /// The highest term of the raft groups hosted here (the metadata group's included).
    pub max_term: u64,
    /// Elections this node started, over every group it hosts, and per second.
    pub elections: u64,
    pub elections_rate: Option<f64>,
    /// Leader changes this node saw, over every group it hosts, per second.
    pub leader_changes_rate: Option<f64>,
    /// Partitions without a known leader here, and those under-replicated
    /// (a replica down, or an in-sync set smaller than the replicas).
    pub leaderless: usize,
    pub under_replicated: usize,
    pub moves: Vec<MoveSample>,
    pub moves_done: u64,
    pub moves_cancelled: u64,
    pub nodes: Vec<ClusterNodeRow>,
    /// Most lagging first, then busiest, then by name.
    pub partitions: Vec<ClusterPartitionRow>,
    /// Records and bytes the partition appliers wrote to this node's copies,
    /// per second.
    pub applied_records_rate: Option<f64>,
    pub applied_bytes_rate: Option<f64>,
    /// The appliers' queue now: entries applied by raft, not yet written
    /// here, and their bytes. All four None from a node without `apply`.
    pub apply_queued_entries: Option<u64>,
    pub apply_queued_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableRow {
    pub name: String,
    /// On a raft group (cluster mode); leader and replicas then.
    pub replicated: bool,
    pub leader: Option<u64>,
    pub replicas: Vec<u64>,
    pub revision: Option<u64>,
    pub keys: Option<u64>,
    pub bytes: Option<u64>,
    /// Writes per second (each write takes one revision).
    pub rate: Option<f64>,
    /// Watchers open now (local tables: the `table.<name>.watchers` stat).
    pub watchers: Option<u64>,
}

/// The pvAccess panel (`pva.*` stats and `pva.pvs`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PvaView {
    pub channels: u64,
    pub monitors: u64,
    pub connections: u64,
    pub updates: u64,
    pub updates_rate: Option<f64>,
    pub pvs: Vec<PvSample>,
    /// PVs served in all (more than `pvs` when the node lists only the first).
    pub pvs_total: usize,
}

fn ids(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// `1,2,3` (for cells).
pub fn id_list(v: &[u64]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        ids(v)
    }
}

/// The cluster panel from two samples of `cluster.status`; None outside cluster mode.
pub fn cluster_view(prev: Option<&ClusterSample>, now: Option<&ClusterSample>, secs: f64) -> Option<ClusterView> {
    let now = now?;
    let nodes: Vec<ClusterNodeRow> = now
        .nodes
        .iter()
        .map(|n| ClusterNodeRow {
            id: n.id,
            roles: n.roles.join(","),
            voter: n.voter,
            live: n.live,
            last_contact_ms: n.last_contact_ms,
            meta_leader: now.meta_leader == Some(n.id),
            addr: n.native_addr.clone().unwrap_or_default(),
        })
        .collect();
    let groups: BTreeMap<u64, &RaftGroupSample> = now.groups.iter().map(|g| (g.group, g)).collect();
    let mut partitions: Vec<ClusterPartitionRow> = now
        .partitions
        .iter()
        .map(|p| {
            let before = prev.and_then(|s| s.partitions.iter().find(|o| o.topic == p.topic && o.partition == p.partition)).and_then(|o| o.high_watermark);
            let g = groups.get(&p.group).filter(|g| !g.matched.is_empty());
            let short = g.is_some() && p.in_sync.len() < p.replicas.len();
            ClusterPartitionRow {
                topic: p.topic.clone(),
                partition: p.partition,
                leader: p.leader,
                replicas: p.replicas.clone(),
                in_sync: g.map(|_| p.in_sync.clone()),
                high_watermark: p.high_watermark,
                rate: p.high_watermark.and_then(|hw| rate(hw, before, secs)),
                lag: g.and_then(|g| g.matched.values().map(|m| g.commit.saturating_sub(*m)).max()),
                under_replicated: p.under_replicated || short,
            }
        })
        .collect();
    partitions.sort_by(|a, b| {
        b.lag
            .unwrap_or(0)
            .cmp(&a.lag.unwrap_or(0))
            .then(b.rate.unwrap_or(0.0).total_cmp(&a.rate.unwrap_or(0.0)))
            .then(a.topic.cmp(&b.topic))
            .then(a.partition.cmp(&b.partition))
    });
    let sum = |s: &ClusterSample, f: fn(&RaftGroupSample) -> u64| s.groups.iter().map(f).sum::<u64>();
    let elections = sum(now, |g| g.elections);
    let apply = now.apply.as_ref();
    let apply_before = prev.and_then(|p| p.apply.as_ref());
    Some(ClusterView {
        node_id: now.node_id,
        meta_leader: now.meta_leader,
        nodes_live: nodes.iter().filter(|n| n.live).count(),
        max_term: now.groups.iter().map(|g| g.term).max().unwrap_or(0),
        elections,
        elections_rate: rate(elections, prev.map(|p| sum(p, |g| g.elections)), secs),
        leader_changes_rate: rate(sum(now, |g| g.leader_changes), prev.map(|p| sum(p, |g| g.leader_changes)), secs),
        leaderless: partitions.iter().filter(|p| p.leader.is_none()).count(),
        under_replicated: partitions.iter().filter(|p| p.under_replicated).count(),
        moves: now.moves.clone(),
        moves_done: now.moves_done,
        moves_cancelled: now.moves_cancelled,
        nodes,
        partitions,
        applied_records_rate: apply.and_then(|a| rate(a.records, apply_before.map(|b| b.records), secs)),
        applied_bytes_rate: apply.and_then(|a| rate(a.bytes, apply_before.map(|b| b.bytes), secs)),
        apply_queued_entries: apply.map(|a| a.queued_entries),
        apply_queued_bytes: apply.map(|a| a.queued_bytes),
    })
}

/// Local tables from the `table.<name>.*` stats, and replicated tables from
/// `cluster.status`; busiest first, then by name.
pub fn table_rows(
    prev_stats: Option<&Stats>,
    stats: &Stats,
    prev_cluster: Option<&ClusterSample>,
    cluster: Option<&ClusterSample>,
    secs: f64,
) -> Vec<TableRow> {
    let mut rows: Vec<TableRow> = stats
        .keys()
        .filter_map(|k| k.strip_prefix("table.").and_then(|r| r.strip_suffix(".revision")))
        .map(|name| {
            let key = |s: &str| format!("table.{name}.{s}");
            let writes = num(stats, &key("writes"));
            TableRow {
                name: name.to_owned(),
                replicated: false,
                leader: None,
                replicas: vec![],
                revision: num(stats, &key("revision")),
                keys: num(stats, &key("keys")),
                bytes: num(stats, &key("bytes")),
                rate: writes.and_then(|w| rate(w, prev_stats.and_then(|p| num(p, &key("writes"))), secs)),
                watchers: num(stats, &key("watchers")),
            }
        })
        .collect();
    for t in cluster.map(|c| c.tables.as_slice()).unwrap_or_default() {
        let before = prev_cluster.and_then(|p| p.tables.iter().find(|o| o.name == t.name)).and_then(|o| o.revision);
        rows.push(TableRow {
            name: t.name.clone(),
            replicated: true,
            leader: t.leader,
            replicas: t.replicas.clone(),
            revision: t.revision,
            keys: t.keys,
            bytes: t.bytes,
            rate: t.revision.and_then(|r| rate(r, before, secs)),
            watchers: None,
        });
    }
    rows.sort_by(|a, b| b.rate.unwrap_or(0.0).total_cmp(&a.rate.unwrap_or(0.0)).then(a.name.cmp(&b.name)));
    rows
}

/// The pvAccess panel; None when the node serves no pvAccess (no `pva.*`
/// stats and no `pva.pvs`).
pub fn pva_view(prev_stats: Option<&Stats>, stats: &Stats, pvs: Option<&PvList>, secs: f64) -> Option<PvaView> {
    if pvs.is_none() && !stats.contains_key("pva.channels_open") {
        return None;
    }
    let updates = num(stats, "pva.monitor_updates").unwrap_or(0);
    Some(PvaView {
        channels: num(stats, "pva.channels_open").unwrap_or(0),
        monitors: num(stats, "pva.monitors_open").unwrap_or(0),
        connections: num(stats, "pva.connections").unwrap_or(0),
        updates,
        updates_rate: rate(updates, prev_stats.and_then(|p| num(p, "pva.monitor_updates")), secs),
        pvs: pvs.map(|p| p.pvs.clone()).unwrap_or_default(),
        pvs_total: pvs.map_or(0, |p| p.total),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `cluster.status` as a node answers it (the shape of weft-cluster's
    /// `ClusterStatus`, maps keyed by node id as text).
    fn status(hw: u64, elections: u64, revision: u64) -> ClusterSample {
        let mut s = status_without_apply(hw, elections, revision);
        // the appliers wrote as many records as the high watermark, 10 bytes each
        s["apply"] = serde_json::json!({
            "batches": hw / 10, "entries": hw / 5, "records": hw, "bytes": hw * 10, "cut_entries": 0, "cut_records": 0, "cut_bytes": 0,
            "max_batch_records": 10, "max_batch_bytes": 100, "queued_entries": elections, "queued_bytes": elections * 64
        });
        serde_json::from_value(s).unwrap()
    }

    /// `cluster.status` from a node older than its `apply` field.
    fn status_without_apply(hw: u64, elections: u64, revision: u64) -> serde_json::Value {
        serde_json::json!({
            "node_id": 2, "roles": ["control", "data"], "meta_leader": 1, "meta_leader_addr": "tcp://127.0.0.1:1",
            "nodes": [
                {"id": 1, "cluster_addr": "127.0.0.1:9001", "native_addr": "tcp://127.0.0.1:7001", "roles": ["control", "data"], "voter": true, "live": true, "last_contact_ms": 20},
                {"id": 2, "cluster_addr": "127.0.0.1:9002", "native_addr": "tcp://127.0.0.1:7002", "roles": ["control", "data"], "voter": true, "live": true, "last_contact_ms": 0},
                {"id": 3, "cluster_addr": "127.0.0.1:9003", "native_addr": null, "roles": ["data"], "voter": false, "live": false, "last_contact_ms": null}
            ],
            "groups": [
                {"group": 0, "leader": 1, "term": 3, "role": "Follower", "commit": 50, "applied": 50, "last_index": 50, "voters": [1, 2], "learners": [], "voters_outgoing": [], "matched": {}, "snapshot_index": 0, "elections": elections, "leader_changes": 1},
                {"group": 1, "leader": 2, "term": 7, "role": "Leader", "commit": 100, "applied": 100, "last_index": 100, "voters": [1, 2, 3], "learners": [], "voters_outgoing": [], "matched": {"1": 100, "2": 100, "3": 60}, "snapshot_index": 0, "elections": 1, "leader_changes": 2},
                {"group": 2, "leader": 1, "term": 2, "role": "Follower", "commit": 10, "applied": 10, "last_index": 10, "voters": [1, 2], "learners": [], "voters_outgoing": [], "matched": {}, "snapshot_index": 0, "elections": 0, "leader_changes": 1}
            ],
            "partitions": [
                {"topic": "calm", "partition": 0, "group": 2, "replicas": [1, 2], "leader": 1, "in_sync": [], "raft_commit": 10, "high_watermark": 10, "caught_up_records": 0, "under_replicated": false},
                {"topic": "busy", "partition": 0, "group": 1, "replicas": [1, 2, 3], "leader": 2, "in_sync": [1, 2], "raft_commit": 100, "high_watermark": hw, "caught_up_records": 0, "under_replicated": true},
                {"topic": "orphan", "partition": 3, "group": 9, "replicas": [1, 3], "leader": null, "in_sync": [], "raft_commit": null, "high_watermark": null, "caught_up_records": null, "under_replicated": true}
            ],
            "topics": 3, "meta_applied": 50,
            "moves": [{"group": 9, "from": 3, "to": 2, "reason": "down"}], "moves_done": 4, "moves_cancelled": 1,
            "tables": [{"name": "cfg", "group": 5, "replicas": [1, 2], "leader": 1, "revision": revision, "keys": 3, "bytes": 90}]
        })
    }

    #[test]
    fn cluster_rows_rates_and_order() {
        assert_eq!(cluster_view(None, None, 1.0), None, "no cluster: no panel");
        let (a, b) = (status(40, 2, 7), status(90, 5, 17));
        let first = cluster_view(None, Some(&a), 0.0).unwrap();
        assert_eq!((first.elections, first.elections_rate), (3, None));
        let v = cluster_view(Some(&a), Some(&b), 2.0).unwrap();
        assert_eq!((v.node_id, v.meta_leader, v.nodes_live, v.max_term), (2, Some(1), 2, 7));
        let leaders: Vec<u64> = v.nodes.iter().filter(|n| n.meta_leader).map(|n| n.id).collect();
        assert_eq!(leaders, vec![1], "node 1 leads the metadata group");
        assert_eq!(v.nodes[2].roles, "data");
        assert_eq!((v.elections, v.elections_rate, v.leader_changes_rate), (6, Some(1.5), Some(0.0)));
        // busy lags (replica 3 is 40 entries behind commit) and grows: first;
        // calm next (busier than the leaderless orphan? both idle: by name)
        let order: Vec<&str> = v.partitions.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(order, vec!["busy", "calm", "orphan"]);
        let busy = &v.partitions[0];
        assert_eq!((busy.lag, busy.rate, busy.high_watermark), (Some(40), Some(25.0), Some(90)));
        assert_eq!(busy.in_sync.as_deref(), Some(&[1, 2][..]));
        assert_eq!(v.partitions[1].in_sync, None, "only the leader knows the in-sync set");
        // busy (node 3 down, and short of it in sync) and the orphan (node 3
        // down; no leader here to know its in-sync set)
        assert_eq!((v.leaderless, v.under_replicated), (1, 2));
        let flagged: Vec<&str> = v.partitions.iter().filter(|p| p.under_replicated).map(|p| p.topic.as_str()).collect();
        assert_eq!(flagged, vec!["busy", "orphan"]);
        // a node older than the field: the in-sync set alone (leader only)
        let mut older = status(90, 5, 17);
        for p in &mut older.partitions {
            p.under_replicated = false;
        }
        assert_eq!(cluster_view(Some(&a), Some(&older), 2.0).unwrap().under_replicated, 1);
        assert_eq!((v.moves.len(), v.moves_done, v.moves_cancelled), (1, 4, 1));
        // the appliers: 50 records, 500 bytes in 2 s; the queue as of the second sample
        assert_eq!((v.applied_records_rate, v.applied_bytes_rate), (Some(25.0), Some(250.0)));
        assert_eq!((v.apply_queued_entries, v.apply_queued_bytes), (Some(5), Some(320)));
        assert_eq!((first.applied_records_rate, first.apply_queued_entries), (None, Some(2)), "one sample: a queue, no rate");
        let restarted = cluster_view(Some(&b), Some(&a), 2.0).unwrap();
        assert_eq!((restarted.applied_records_rate, restarted.apply_queued_bytes), (None, Some(128)), "counters went down: no rate");
        // an older node without `apply` still parses; nothing to show then
        let old: ClusterSample = serde_json::from_value(status_without_apply(90, 5, 17)).unwrap();
        let v = cluster_view(Some(&a), Some(&old), 2.0).unwrap();
        assert_eq!((v.partitions.len(), v.applied_records_rate, v.applied_bytes_rate, v.apply_queued_entries, v.apply_queued_bytes), (3, None, None, None, None));
    }

    #[test]
    fn tables_local_and_replicated_busiest_first() {
        let stats = |writes: u64| -> Stats {
            [
                ("tables.count", 2),
                ("table.idle.revision", 4),
                ("table.idle.writes", 4),
                ("table.idle.keys", 2),
                ("table.idle.bytes", 10),
                ("table.idle.watchers", 0),
                ("table.a.b.revision", writes),
                ("table.a.b.writes", writes),
                ("table.a.b.keys", 9),
                ("table.a.b.bytes", 2048),
                ("table.a.b.watchers", 2),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
            .collect()
        };
        assert!(table_rows(None, &BTreeMap::new(), None, None, 1.0).is_empty(), "no tables: empty panel");
        let (s0, s1) = (stats(10), stats(30));
        let (c0, c1) = (status(0, 0, 7), status(0, 0, 17));
        let rows = table_rows(Some(&s0), &s1, Some(&c0), Some(&c1), 2.0);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["a.b", "cfg", "idle"], "busiest first; dotted names kept whole");
        assert_eq!((rows[0].rate, rows[0].keys, rows[0].watchers, rows[0].replicated), (Some(10.0), Some(9), Some(2), false));
        let cfg = &rows[1];
        assert_eq!((cfg.replicated, cfg.leader, cfg.revision, cfg.rate, cfg.replicas.clone()), (true, Some(1), Some(17), Some(5.0), vec![1, 2]));
        assert_eq!(rows[2].rate, Some(0.0));
    }

    #[test]
    fn pva_only_when_served() {
        assert_eq!(pva_view(None, &BTreeMap::new(), None, 1.0), None);
        let stats = |u: u64| -> Stats {
            [("pva.channels_open", 3), ("pva.monitors_open", 2), ("pva.monitor_updates", u), ("pva.connections", 5)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                .collect()
        };
        let list: PvList = serde_json::from_value(serde_json::json!({
            "pvs": [{"name": "t:temp", "type": "epics:nt/NTScalar:1.0", "writable": true, "display": "21.5", "number": 21.5}],
            "total": 4
        }))
        .unwrap();
        let v = pva_view(Some(&stats(100)), &stats(160), Some(&list), 3.0).unwrap();
        assert_eq!((v.channels, v.monitors, v.updates, v.updates_rate, v.connections, v.pvs_total), (3, 2, 160, Some(20.0), 5, 4));
        assert_eq!(v.pvs[0].display, "21.5");
        // the stats alone are enough (an older node without pva.pvs)
        assert!(pva_view(None, &stats(1), None, 1.0).unwrap().pvs.is_empty());
    }
}
