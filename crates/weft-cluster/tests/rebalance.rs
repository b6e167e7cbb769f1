//! The rebalancer on real nodes in one process over loopback TCP (partition
//! groups without records, and a replicated table): a removed node's replicas are replaced, a node
//! down past `down_after_ms` is re-replicated, a new node gets its share,
//! and leadership goes to the preferred replicas. After each phase the
//! placement in the metadata and every group's raft configuration agree.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weft_cluster::rebalancer::RebalanceConfig;
use weft_cluster::{ClusterConfig, ClusterNode, MetaCommand, MetaResponse, NodeInfo, RaftTuning, Role};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn config(id: u64, peers: &BTreeMap<u64, String>, dir: &std::path::Path, join: bool) -> ClusterConfig {
    ClusterConfig {
        node_id: id,
        addr: peers[&id].clone(),
        peers: if join { BTreeMap::new() } else { peers.clone() },
        roles: vec![Role::Control, Role::Data],
        join,
        native_addr: Some(format!("tcp://native-{id}")),
        data_dir: dir.join(format!("n{id}")),
        tick_ms: 20,
        max_frame_bytes: 16 << 20,
        propose_timeout_ms: 5_000,
        max_pending: 1024,
        tuning: RaftTuning {
            election_ticks: 10,
            heartbeat_ticks: 2,
            rebalance: RebalanceConfig { down_after_ms: 1_500, leader_settle_ms: 1_000, retry_ms: 500, ..Default::default() },
            ..Default::default()
        },
        log: None,
    }
}

/// Poll `f` until it returns Some, with a generous deadline (not a timing assertion).
async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Some(placement) once no move is in flight and every partition group's
/// configuration (as its leader among `nodes` sees it) has exactly the
/// placement's replicas as voters and no learner.
async fn settled(nodes: &[&ClusterNode]) -> Option<BTreeMap<u64, Vec<u64>>> {
    let meta = nodes[0].read_meta().await.ok()?;
    if !meta.moves.is_empty() {
        return None;
    }
    let placement: BTreeMap<u64, Vec<u64>> = meta.replica_groups().into_iter().collect();
    let mut seen = BTreeSet::new();
    for n in nodes {
        for g in n.status().await.ok()?.groups {
            if g.group == 0 || g.role != "Leader" {
                continue;
            }
            let want: BTreeSet<u64> = placement.get(&g.group)?.iter().copied().collect();
            let have: BTreeSet<u64> = g.voters.iter().copied().collect();
            if have != want || !g.learners.is_empty() || !g.voters_outgoing.is_empty() {
                return None;
            }
            seen.insert(g.group);
        }
    }
    (seen.len() == placement.len()).then_some(placement)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_removed_down_and_new_nodes_and_leadership_spreads() {
    let dir = tempfile::tempdir().unwrap();
    let mut peers: BTreeMap<u64, String> = (1..=5).map(|id| (id, free_addr())).collect();
    let mut nodes = Vec::new();
    for id in 1..=5 {
        nodes.push(ClusterNode::start(config(id, &peers, dir.path(), false)).await.unwrap());
    }
    until("all nodes registered", async || (nodes[0].local_meta().nodes.len() == 5).then_some(())).await;
    let create = MetaCommand::CreateTopic { name: "t".into(), partitions: 5, replicas: 3, config: Default::default() };
    let r = until("topic created", async || nodes[0].propose_meta(&create).await.ok()).await;
    assert!(matches!(r, MetaResponse::Topic(_)), "{r:?}");
    // A replicated table (group 6) is moved like a partition.
    let table = MetaCommand::CreateTable { name: "cfg".into(), replicas: 3, max_tables: None };
    let r = until("table created", async || nodes[0].propose_meta(&table).await.ok()).await;
    assert!(matches!(r, MetaResponse::Table(_)), "{r:?}");
    let all: Vec<&ClusterNode> = nodes.iter().collect();
    let before = until("groups formed", async || settled(&all).await).await;
    assert_eq!(before.len(), 6);
    let on5 = before.values().filter(|r| r.contains(&5)).count();
    assert!(on5 >= 3, "{before:?}");

    // Remove node 5: each of its replicas is replaced on nodes 1-4.
    until("node 5 removed", async || nodes[0].remove_node(5).await.ok()).await;
    nodes[4].shutdown();
    let live: Vec<&ClusterNode> = nodes[..4].iter().collect();
    let after_remove = until("node 5's replicas replaced", async || settled(&live).await.filter(|p| p.values().all(|r| !r.contains(&5)))).await;
    for (g, r) in &after_remove {
        assert_eq!(r.len(), 3, "group {g}: {r:?}");
        assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "group {g}: distinct replicas {r:?}");
    }
    let meta = nodes[0].read_meta().await.unwrap();
    assert!(meta.moves_done >= on5 as u64, "moves done: {}", meta.moves_done);
    // The table's replicas hold the same state everywhere it is placed (a write after the moves).
    let t = meta.tables["cfg"].clone();
    assert!(!t.replicas.contains(&5) && t.replicas.len() == 3, "{t:?}");
    let by_id = |id: u64| nodes.iter().find(|n| n.node_id() == id).unwrap();
    let put = weft_table::WriteCommand::Put { key: b"k".to_vec().into(), value: b"after the move".to_vec().into() };
    until("a table write after the moves", async || by_id(t.replicas[0]).table_write("cfg", &put).await.ok()).await;
    let snapshots: Vec<Vec<u8>> = {
        let mut out = Vec::new();
        for id in &t.replicas {
            let r = until("the table replica", async || by_id(*id).table_replica("cfg")).await;
            until("the write applied", async || r.read(|s| s.get(b"k", None).ok().and_then(|g| g.kv)).map(|_| ())).await;
            out.push(r.read(|s| s.snapshot()));
        }
        out
    };
    assert!(snapshots.windows(2).all(|w| w[0] == w[1]), "table replicas differ after the moves");

    // Node 4 stops and stays down past down_after: its replicas go to 1-3.
    nodes[3].shutdown();
    let live: Vec<&ClusterNode> = nodes[..3].iter().collect();
    let after_down = until("node 4's replicas re-replicated", async || settled(&live).await.filter(|p| p.values().all(|r| !r.contains(&4)))).await;
    assert!(after_down.values().all(|r| r.len() == 3));

    // A new data node 6 joins: it gets its share (18 replicas over 4 nodes: 4 or 5).
    peers.insert(6, free_addr());
    let mut c6 = config(6, &peers, dir.path(), true);
    c6.roles = vec![Role::Data];
    let n6 = ClusterNode::start(c6).await.unwrap();
    let info = NodeInfo { id: 6, cluster_addr: peers[&6].clone(), native_addr: None, roles: vec![Role::Data] };
    until("node 6 added", async || nodes[1].add_node(info.clone()).await.ok()).await;
    let with6: Vec<&ClusterNode> = vec![&nodes[0], &nodes[1], &nodes[2], &n6];
    let spread = until("node 6 has its share", async || settled(&with6).await.filter(|p| p.values().filter(|r| r.contains(&6)).count() >= 3)).await;
    let mut load: BTreeMap<u64, usize> = BTreeMap::new();
    for r in spread.values() {
        for n in r {
            *load.entry(*n).or_default() += 1;
        }
    }
    assert!(load.len() == 4 && load.values().all(|l| (4..=5).contains(l)), "{load:?}");

    // Leadership: every group ends up led by its preferred (first) replica,
    // and the preferred replicas are spread (6 groups over 4 nodes: 1 or 2 each).
    let leaders = until("leaders are the preferred replicas", async || {
        let meta = nodes[0].read_meta().await.ok()?;
        let placement: BTreeMap<u64, Vec<u64>> = meta.replica_groups().into_iter().collect();
        let mut leaders = BTreeMap::new();
        for n in &with6 {
            for g in n.status().await.ok()?.groups {
                if g.group != 0 && g.role == "Leader" {
                    leaders.insert(g.group, n.node_id());
                }
            }
        }
        (leaders.len() == placement.len() && placement.iter().all(|(g, r)| leaders.get(g) == r.first())).then_some(leaders)
    })
    .await;
    let mut led: BTreeMap<u64, usize> = BTreeMap::new();
    for l in leaders.values() {
        *led.entry(*l).or_default() += 1;
    }
    assert!(led.len() == 4 && led.values().all(|c| (1..=2).contains(c)), "leaders per node: {led:?}");
    for n in with6 {
        n.shutdown();
    }
}

/// A catch-up source for in-process nodes: other nodes' logs read directly
/// (the binary's is `cluster.local.fetch` through the record plane).
struct Logs(Vec<weft_log::Log>);

impl weft_cluster::partition::CatchUp for Logs {
    fn fetch<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = weft_cluster::Result<weft_cluster::partition::CatchUpBatch>> + Send + 'a>> {
        Box::pin(async move {
            let p = weft_log::PartitionId(partition);
            // The first copy that has records from `from` (a moved-off one is empty).
            let mut best = None;
            for log in &self.0 {
                let n = to.saturating_sub(from).clamp(1, 1000) as usize;
                let Ok(f) = log.fetch(topic, p, weft_log::Offset(from), 1 << 20, n, None).await else { continue };
                let records = f
                    .decode()
                    .unwrap()
                    .into_iter()
                    .map(|r| {
                        let e = weft_cluster::partition::EntryRecord {
                            timestamp_ms: r.timestamp_ms,
                            key: r.key.map(|k| k.to_vec()),
                            value: r.value.map(|v| v.to_vec()),
                            headers: r.headers.into_iter().map(|(k, v)| (k, v.to_vec())).collect(),
                        };
                        (r.offset.0, e)
                    })
                    .collect();
                let b = weft_cluster::partition::CatchUpBatch { records, log_start: f.log_start_offset.0, high_watermark: f.high_watermark.0 };
                if !b.records.is_empty() {
                    return Ok(b);
                }
                best.get_or_insert(b);
            }
            best.ok_or_else(|| weft_cluster::ClusterError::StateMachine("no source has it".into()))
        })
    }
}

/// Every record of a node's copy of `t`/`partition`: (offset, value).
async fn copy_of(log: &weft_log::Log, partition: u32) -> Vec<(u64, Vec<u8>)> {
    let p = weft_log::PartitionId(partition);
    let mut at = log.list_offset("t", p, weft_log::OffsetSpec::Earliest).unwrap();
    let mut out = Vec::new();
    loop {
        let f = log.fetch("t", p, at, 1 << 20, 1000, None).await.unwrap();
        let recs = f.decode().unwrap();
        let Some(last) = recs.last() else { return out };
        at = last.offset.next();
        out.extend(recs.into_iter().map(|r| (r.offset.0, r.value.map(|v| v.to_vec()).unwrap_or_default())));
    }
}

/// With `log_store.fsync = never` a move still finishes: the joining replica
/// needs a snapshot, and a snapshot needs the copy durable, so the copy is
/// fsynced when a snapshot is due (it was never, and the move waited
/// forever). The replica moved off keeps a raft tombstone and drops its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_finishes_with_fsync_never_and_the_source_drops_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    peers.insert(4, free_addr());
    let log_cfg = weft_log::LogConfig { fsync: weft_log::FsyncPolicy::Never, maintenance_interval: None, ..Default::default() };
    let mut logs = BTreeMap::new();
    for id in 1..=4u64 {
        logs.insert(id, weft_log::Log::open(dir.path().join(format!("log{id}")), log_cfg.clone()).await.unwrap());
    }
    let founding: BTreeMap<u64, String> = peers.iter().filter(|(id, _)| **id <= 3).map(|(k, v)| (*k, v.clone())).collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut c = config(id, &founding, dir.path(), false);
        c.log = Some(logs[&id].clone());
        let n = ClusterNode::start(c).await.unwrap();
        let others: Vec<weft_log::Log> = logs.iter().filter(|(i, _)| **i != id).map(|(_, l)| l.clone()).collect();
        n.set_catch_up(std::sync::Arc::new(Logs(others)));
        nodes.push(n);
    }
    until("all nodes registered", async || (nodes[0].local_meta().nodes.len() == 3).then_some(())).await;
    let create = MetaCommand::CreateTopic { name: "t".into(), partitions: 2, replicas: 3, config: Default::default() };
    until("topic created", async || nodes[0].propose_meta(&create).await.ok()).await;
    let all: Vec<&ClusterNode> = nodes.iter().collect();
    let before = until("groups formed", async || settled(&all).await).await;
    // 30 entries of 3 records in each partition, none of them fsynced by the copies.
    for partition in 0..2u32 {
        for i in 0..30 {
            let recs: Vec<weft_cluster::partition::EntryRecord> = (0..3)
                .map(|j| weft_cluster::partition::EntryRecord { timestamp_ms: 1, key: None, value: Some(format!("p{partition}-{i}-{j}").into_bytes()), headers: vec![] })
                .collect();
            until("a produce", async || {
                for n in &nodes {
                    if let Ok(o) = n.produce_records("t", partition, recs.clone()).await {
                        return Some(o);
                    }
                }
                None
            })
            .await;
        }
    }

    // Data node 4 joins: spread moves a replica of one partition onto it.
    let mut c4 = config(4, &peers, dir.path(), true);
    c4.roles = vec![Role::Data];
    c4.log = Some(logs[&4].clone());
    let n4 = ClusterNode::start(c4).await.unwrap();
    n4.set_catch_up(std::sync::Arc::new(Logs(logs.iter().filter(|(i, _)| **i != 4).map(|(_, l)| l.clone()).collect())));
    let info = NodeInfo { id: 4, cluster_addr: peers[&4].clone(), native_addr: None, roles: vec![Role::Data] };
    until("node 4 added", async || nodes[0].add_node(info.clone()).await.ok()).await;
    // A data-only node (a learner of the metadata group) also reads the
    // metadata linearizably, and then serves its copies.
    until("node 4's metadata current", async || n4.meta_current().then_some(())).await;
    let with4: Vec<&ClusterNode> = vec![&nodes[0], &nodes[1], &nodes[2], &n4];
    let after = until("a replica moved onto node 4", async || settled(&with4).await.filter(|p| p.values().any(|r| r.contains(&4)))).await;
    let (group, replicas) = after.iter().find(|(_, r)| r.contains(&4)).map(|(g, r)| (*g, r.clone())).unwrap();
    let from = before[&group].iter().copied().find(|n| !replicas.contains(n)).unwrap();
    let meta = nodes[0].read_meta().await.unwrap();
    let partition = meta.topics["t"].partitions.iter().find(|p| p.group == group).unwrap().partition;

    // Node 4's copy is every other replica's: 90 records at offsets 0..90.
    let src = replicas.iter().copied().find(|n| *n != 4).unwrap();
    let want = copy_of(&logs[&src], partition).await;
    assert_eq!(want.len(), 90);
    assert!(want.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
    let got = until("node 4's copy caught up", async || {
        let c = copy_of(&logs[&4], partition).await;
        (c.len() == 90).then_some(c)
    })
    .await;
    assert_eq!(got, want, "same records at the same offsets on the new replica");

    // The node moved off dropped its copy, and kept a raft tombstone: its
    // term and vote, a snapshot of everything it applied, few entries after.
    until("the moved-off copy dropped", async || {
        let p = weft_log::PartitionId(partition);
        (logs[&from].list_offset("t", p, weft_log::OffsetSpec::Latest).unwrap().0 == 0).then_some(())
    })
    .await;
    let wal = dir.path().join(format!("n{from}")).join("cluster").join("groups").join(format!("{group}.wal"));
    let st = weft_cluster::storage::GroupStorage::open(Box::new(weft_cluster::storage::FileDisk::open(&wal).unwrap()), 64 << 20).unwrap();
    let hs = weft_cluster::raft::Storage::initial_state(&st).unwrap().hard_state;
    assert!(hs.term > 0, "term kept: {hs:?}");
    let snap = st.snapshot_ref().get_metadata().index;
    let last = weft_cluster::raft::Storage::last_index(&st).unwrap();
    assert!(snap > 0 && last - snap <= 3, "tombstone: snapshot at {snap}, last index {last}");
    for n in with4 {
        n.shutdown();
    }
}

/// A replica moved off and then moved back: the node reopens the group from
/// its tombstone (the snapshot of what it had applied), and its copy, dropped
/// when it left, is fetched again from a replica. Moves recorded by hand
/// (the planner off), so nothing else moves meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moved_back_onto_its_tombstone_fetches_its_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let peers: BTreeMap<u64, String> = (1..=4).map(|id| (id, free_addr())).collect();
    let log_cfg = weft_log::LogConfig { maintenance_interval: None, ..Default::default() };
    let mut logs = BTreeMap::new();
    for id in 1..=4u64 {
        logs.insert(id, weft_log::Log::open(dir.path().join(format!("log{id}")), log_cfg.clone()).await.unwrap());
    }
    let mut nodes = Vec::new();
    for id in 1..=4 {
        let mut c = config(id, &peers, dir.path(), false);
        c.log = Some(logs[&id].clone());
        c.tuning.rebalance.enabled = false;
        let n = ClusterNode::start(c).await.unwrap();
        n.set_catch_up(std::sync::Arc::new(Logs(logs.iter().filter(|(i, _)| **i != id).map(|(_, l)| l.clone()).collect())));
        nodes.push(n);
    }
    until("all nodes registered", async || (nodes[0].local_meta().nodes.len() == 4).then_some(())).await;
    let create = MetaCommand::CreateTopic { name: "t".into(), partitions: 1, replicas: 3, config: Default::default() };
    until("topic created", async || nodes[0].propose_meta(&create).await.ok()).await;
    let all: Vec<&ClusterNode> = nodes.iter().collect();
    let before = until("groups formed", async || settled(&all).await).await;
    let (&group, replicas) = before.iter().next().unwrap();
    let (from, to) = (*replicas.last().unwrap(), (1..=4).find(|n| !replicas.contains(n)).unwrap());
    for i in 0..30 {
        let recs: Vec<weft_cluster::partition::EntryRecord> =
            (0..3).map(|j| weft_cluster::partition::EntryRecord { timestamp_ms: 1, key: None, value: Some(format!("{i}-{j}").into_bytes()), headers: vec![] }).collect();
        until("a produce", async || {
            for n in &nodes {
                if let Ok(o) = n.produce_records("t", 0, recs.clone()).await {
                    return Some(o);
                }
            }
            None
        })
        .await;
    }
    let src = *replicas.iter().find(|n| **n != from).unwrap();
    let want = until("90 records on a replica", async || {
        let c = copy_of(&logs[&src], 0).await;
        (c.len() == 90).then_some(c)
    })
    .await;

    for (a, b) in [(from, to), (to, from)] {
        let mv = MetaCommand::StartMove { group, from: a, to: b, reason: "test".into(), max_moves: None };
        until("move recorded", async || nodes[0].propose_meta(&mv).await.ok()).await;
        until("the move done", async || settled(&all).await.filter(|p| p[&group].contains(&b) && !p[&group].contains(&a))).await;
        let got = until("the new replica's copy", async || {
            let c = copy_of(&logs[&b], 0).await;
            (c.len() == 90).then_some(c)
        })
        .await;
        assert_eq!(got, want, "node {b}: same records at the same offsets");
        until("the old replica's copy dropped", async || {
            (logs[&a].list_offset("t", weft_log::PartitionId(0), weft_log::OffsetSpec::Latest).unwrap().0 == 0).then_some(())
        })
        .await;
    }
    // Back on `from`, the group takes writes with it again.
    let more = vec![weft_cluster::partition::EntryRecord { timestamp_ms: 2, key: None, value: Some(b"after".to_vec()), headers: vec![] }];
    let o = until("a produce after the moves", async || {
        for n in &nodes {
            if let Ok(o) = n.produce_records("t", 0, more.clone()).await {
                return Some(o);
            }
        }
        None
    })
    .await;
    assert_eq!(o, vec![90]);
    until("the record on node {from}", async || (copy_of(&logs[&from], 0).await.len() == 91).then_some(())).await;
    for n in all {
        n.shutdown();
    }
}
