//! Real cluster nodes in one process over real loopback TCP: the metadata
//! group elects a leader, any node accepts writes (forwarded), reads are
//! linearizable, nodes join and leave through membership changes, and the
//! state survives a restart from disk.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
        tuning: RaftTuning { election_ticks: 10, heartbeat_ticks: 2, ..Default::default() },
        log: None,
    }
}

/// Poll `f` until it returns Some, with a generous deadline (not a timing assertion).
async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn propose_retrying(node: &ClusterNode, cmd: &MetaCommand) -> MetaResponse {
    until("a committed proposal", async || node.propose_meta(cmd).await.map_err(|e| eprintln!("propose: {e}")).ok()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_join_leave_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(ClusterNode::start(config(id, &peers, dir.path(), false)).await.unwrap());
    }
    let leader = until("a metadata leader", async || {
        let s = nodes[0].status().await.ok()?;
        s.meta_leader
    })
    .await;
    // Every node registers itself (addresses, roles) once there is a leader.
    until("all nodes registered", async || (nodes[0].local_meta().nodes.len() == 3).then_some(())).await;
    // Write through a follower: raft forwards it to the leader.
    let follower = nodes.iter().find(|n| n.node_id() != leader).unwrap();
    let r = propose_retrying(follower, &MetaCommand::CreateTopic { name: "orders".into(), partitions: 3, replicas: 3, config: Default::default() }).await;
    let MetaResponse::Topic(t) = r else { panic!("expected a topic, got {r:?}") };
    assert_eq!(t.partitions[1].replicas, vec![2, 3, 1]);
    // Linearizable reads on every node see it.
    for n in &nodes {
        let m = until("a read index", async || n.read_meta().await.ok()).await;
        assert!(m.topics.contains_key("orders"), "node {} misses the topic", n.node_id());
        // Every node registered itself with its native address and roles.
        let m = until("all nodes registered", async || {
            let m = n.read_meta().await.ok()?;
            (m.nodes.len() == 3).then_some(m)
        })
        .await;
        assert_eq!(m.nodes[&2].native_addr.as_deref(), Some("tcp://native-2"));
    }

    // Add node 4 (it starts empty with join = true), then see it replicate.
    peers.insert(4, free_addr());
    let n4 = ClusterNode::start(config(4, &peers, dir.path(), true)).await.unwrap();
    let info = NodeInfo { id: 4, cluster_addr: peers[&4].clone(), native_addr: None, roles: vec![Role::Control, Role::Data] };
    until("node 4 added", async || nodes[1].add_node(info.clone()).await.ok()).await;
    until("node 4 caught up", async || n4.local_meta().topics.contains_key("orders").then_some(())).await;
    let st = until("node 4 a voter", async || {
        let s = nodes[0].status().await.ok()?;
        s.groups.iter().any(|g| g.group == 0 && g.voters.contains(&4)).then_some(s)
    })
    .await;
    assert!(st.nodes.iter().any(|n| n.id == 4));
    // Node 4 can write too.
    propose_retrying(&n4, &MetaCommand::CommitOffset { group: "g".into(), topic: "orders".into(), partition: 0, offset: 42, at_ms: 0 }).await;

    // Remove the current leader (the hardest case: it must hand over first), then node 3.
    let l = until("a leader", async || nodes[0].status().await.ok()?.meta_leader).await;
    if l != 1 && l != 3 {
        let by = nodes.iter().find(|n| n.node_id() == 1).unwrap();
        until("the leader removed", async || by.remove_node(l).await.ok()).await;
        let st = until("a new leader without it", async || {
            let s = by.status().await.ok()?;
            let g = s.groups.iter().find(|g| g.group == 0)?;
            (s.meta_leader.is_some_and(|x| x != l) && !g.voters.contains(&l)).then_some(s)
        })
        .await;
        assert!(!st.nodes.iter().any(|n| n.id == l && n.voter));
    }
    // Remove node 3: it leaves the configuration and the metadata.
    until("node 3 removed", async || nodes[0].remove_node(3).await.ok()).await;
    let st = until("node 3 gone", async || {
        let s = nodes[0].status().await.ok()?;
        let g = s.groups.iter().find(|g| g.group == 0)?;
        (!g.voters.contains(&3) && g.voters.contains(&4)).then_some(s)
    })
    .await;
    assert!(!st.nodes.iter().any(|n| n.id == 3 && n.voter));

    // Restart node 1 from its data dir: the state comes back from its raft log.
    nodes[0].shutdown();
    nodes[2].shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n1 = ClusterNode::start(config(1, &peers, dir.path(), false)).await.unwrap();
    let m = until("node 1 replays", async || {
        let m = n1.read_meta().await.ok()?;
        m.offsets.contains_key("g").then_some(m)
    })
    .await;
    assert_eq!(m.offsets["g"]["orders"][&0], 42);
    assert!(!m.nodes.contains_key(&3));
    n1.shutdown();
    nodes[1].shutdown();
    n4.shutdown();
}

/// A node restarted when its metadata snapshot covers everything it had
/// applied (no metadata entry replays at start, none new commits after)
/// still opens the partition groups placed on it. It used to open them only
/// when a metadata entry applied, so such a node refused every message for
/// its groups as "unknown raft group" until some unrelated metadata change
/// (seen in tests/cluster_catchup.rs when produces were fast).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_opens_its_groups_without_a_new_metadata_entry() {
    let dir = tempfile::tempdir().unwrap();
    let peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    // A snapshot after every applied entry: the restart replays none.
    let cfg = |id| {
        let mut c = config(id, &peers, dir.path(), false);
        c.tuning.snapshot_entries = 1;
        c
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(ClusterNode::start(cfg(id)).await.unwrap());
    }
    until("all nodes registered", async || (nodes[0].local_meta().nodes.len() == 3).then_some(())).await;
    let r = propose_retrying(&nodes[0], &MetaCommand::CreateTopic { name: "t".into(), partitions: 2, replicas: 3, config: Default::default() }).await;
    let MetaResponse::Topic(t) = r else { panic!("expected a topic, got {r:?}") };
    let groups: Vec<u64> = t.partitions.iter().map(|p| p.group).collect();
    let hosts_all = async |n: &ClusterNode| {
        let s = n.status().await.ok()?;
        groups.iter().all(|g| s.groups.iter().any(|x| x.group == *g)).then_some(s.meta_applied)
    };
    let applied = until("node 3 hosts both groups", async || hosts_all(&nodes[2]).await).await;
    until("node 1 applied as far", async || (nodes[0].status().await.ok()?.meta_applied == applied).then_some(())).await;
    let n3 = nodes.pop().unwrap();
    n3.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n3 = ClusterNode::start(cfg(3)).await.unwrap();
    let again = until("node 3 hosts both groups after its restart", async || hosts_all(&n3).await).await;
    assert_eq!(again, applied, "no metadata entry was needed");
    n3.shutdown();
    for n in nodes {
        n.shutdown();
    }
}

/// A produce proposed while this node's partition appliers have more than
/// `cluster.apply_queue_max_bytes` queued is refused before anything is
/// proposed (typed, counted); below the bound it goes on to the partition.
/// The backlog is set on the node's counter (a disk slow enough to build
/// one on demand is not available here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_are_refused_while_the_apply_queue_is_over_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let peers: BTreeMap<u64, String> = [(1, free_addr())].into();
    let mut c = config(1, &peers, dir.path(), false);
    c.tuning.apply_queue_max_bytes = 1 << 20;
    let node = ClusterNode::start(c).await.unwrap();
    until("a metadata leader", async || node.status().await.ok()?.meta_leader).await;
    let refused = |n: &ClusterNode| n.gauges().into_iter().find(|(k, _)| k == "cluster.apply.refused").and_then(|(_, v)| v.as_u64());
    assert_eq!(refused(&node), Some(0));
    let stats = node.apply_stats();
    stats.queued_bytes.store((1 << 20) + 1, std::sync::atomic::Ordering::Relaxed);
    let e = node.produce("t", 0, None, b"v".to_vec()).await.unwrap_err();
    assert!(matches!(e, weft_cluster::ClusterError::ApplyBacklog { queued, limit } if queued == (1 << 20) + 1 && limit == 1 << 20), "{e}");
    assert!(e.to_string().contains("cluster.apply_queue_max_bytes"), "{e}");
    assert_eq!(refused(&node), Some(1));
    // At the bound: admitted (then refused for what it is: no such topic).
    stats.queued_bytes.store(1 << 20, std::sync::atomic::Ordering::Relaxed);
    let e = node.produce("t", 0, None, b"v".to_vec()).await.unwrap_err();
    assert!(!matches!(e, weft_cluster::ClusterError::ApplyBacklog { .. }), "{e}");
    assert_eq!(refused(&node), Some(1));
    stats.queued_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
    node.shutdown();
}

/// Every value of a node's copy of `t`/0, in offset order.
async fn copy_values(log: &weft_log::Log) -> Vec<Vec<u8>> {
    let p = weft_log::PartitionId(0);
    let mut at = weft_log::Offset(0);
    let mut out = Vec::new();
    loop {
        let Ok(f) = log.fetch("t", p, at, 1 << 20, 1000, None).await else { return out };
        let recs = f.decode().unwrap();
        let Some(last) = recs.last() else { return out };
        at = last.offset.next();
        out.extend(recs.into_iter().map(|r| r.value.map(|v| v.to_vec()).unwrap_or_default()));
    }
}

/// A follower whose partition appliers are over `cluster.apply_queue_max_bytes`
/// drops its leaders' appends (counted in `cluster.apply.held_back`): the
/// leader commits with the other follower, the group keeps its leader and
/// term, and once the backlog is gone the follower catches up by itself
/// to the same records. (The backlog is set on the node's counter: no disk
/// here is slow on demand.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_over_its_apply_bound_holds_back_appends_then_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut nodes = Vec::new();
    let mut logs = Vec::new();
    for id in 1..=3 {
        let log_cfg = weft_log::LogConfig { maintenance_interval: None, ..Default::default() };
        let log = weft_log::Log::open(dir.path().join(format!("log{id}")), log_cfg).await.unwrap();
        let mut c = config(id, &peers, dir.path(), false);
        c.tuning.apply_queue_max_bytes = 1 << 20;
        c.log = Some(log.clone());
        logs.push(log);
        nodes.push(ClusterNode::start(c).await.unwrap());
    }
    until("all nodes registered", async || (nodes[0].local_meta().nodes.len() == 3).then_some(())).await;
    let create = MetaCommand::CreateTopic { name: "t".into(), partitions: 1, replicas: 3, config: Default::default() };
    propose_retrying(&nodes[0], &create).await;
    let produce = async |v: String| {
        let recs = vec![weft_cluster::partition::EntryRecord { timestamp_ms: 1, key: None, value: Some(v.into_bytes()), headers: vec![] }];
        until("a produce", async || {
            for n in &nodes {
                if let Ok(o) = n.produce_records("t", 0, recs.clone()).await {
                    return Some(o);
                }
            }
            None
        })
        .await
    };
    produce("v0".into()).await;
    // The partition group's leader, and a follower of it (index into `nodes`).
    let (leader, term) = until("the partition's leader", async || {
        let g = nodes[0].status().await.ok()?.groups.into_iter().find(|g| g.group != 0 && g.leader != 0)?;
        Some((g.leader, g.term))
    })
    .await;
    let f = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    until("the follower's copy has the first record", async || (copy_values(&logs[f]).await.len() == 1).then_some(())).await;
    let held = |n: &ClusterNode| n.gauges().into_iter().find(|(k, _)| k == "cluster.apply.held_back").and_then(|(_, v)| v.as_u64()).unwrap();
    assert_eq!(held(&nodes[f]), 0);

    let backlog = nodes[f].apply_stats();
    backlog.queued_bytes.store((1 << 20) + 1, std::sync::atomic::Ordering::Relaxed);
    for i in 1..=20 {
        produce(format!("v{i}")).await;
    }
    // Acknowledged without the follower; the leader keeps sending, the
    // follower keeps dropping (heartbeat answers prompt each retry).
    until("appends held back again and again", async || (held(&nodes[f]) >= 3).then_some(())).await;
    assert_eq!(copy_values(&logs[f]).await, vec![b"v0".to_vec()], "nothing entered the follower past its bound");
    let g = nodes[f].status().await.unwrap().groups.into_iter().find(|g| g.group != 0).unwrap();
    assert_eq!((g.leader, g.term, g.role.as_str()), (leader, term, "Follower"), "the group kept its leader");

    backlog.queued_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
    let want: Vec<Vec<u8>> = (0..=20).map(|i| format!("v{i}").into_bytes()).collect();
    let leader_copy = until("the leader's copy", async || {
        let c = copy_values(&logs[leader as usize - 1]).await;
        (c.len() == 21).then_some(c)
    })
    .await;
    assert_eq!(leader_copy, want);
    let got = until("the follower caught up", async || {
        let c = copy_values(&logs[f]).await;
        (c.len() == 21).then_some(c)
    })
    .await;
    assert_eq!(got, want, "the same records in the same order");
    for n in nodes {
        n.shutdown();
    }
}
