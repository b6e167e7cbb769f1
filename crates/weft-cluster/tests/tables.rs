//! Replicated tables on real cluster nodes in one process over loopback
//! TCP: the metadata group allocates a table's raft group, writes and CAS
//! go through different nodes, the table group's leader stops, and every
//! acknowledged write is on the survivors and on the restarted node with
//! identical revisions; a stale CAS fails everywhere; a watch resumed on
//! another replica from its last revision + 1 sees each event once.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weft_cluster::table::TableAnswer;
use weft_cluster::{ClusterConfig, ClusterNode, MetaCommand, MetaResponse, RaftTuning, Role};
use weft_table::{Compare, KeySet, Op, Txn, WatchTarget, WriteCommand, WriteResult};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn config(id: u64, peers: &BTreeMap<u64, String>, dir: &std::path::Path) -> ClusterConfig {
    ClusterConfig {
        node_id: id,
        addr: peers[&id].clone(),
        peers: peers.clone(),
        roles: vec![Role::Control, Role::Data],
        join: false,
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

fn put(k: &str, v: &str) -> WriteCommand {
    WriteCommand::Put { key: k.as_bytes().to_vec().into(), value: v.as_bytes().to_vec().into() }
}

fn cas(k: &str, version: u64, v: &str) -> WriteCommand {
    WriteCommand::Txn(Txn { compares: vec![Compare::version_eq(k.as_bytes().to_vec(), version)], success: vec![Op::Put { key: k.as_bytes().to_vec().into(), value: v.as_bytes().to_vec().into() }], failure: vec![] })
}

/// Write, retrying while there is no leader or the proposal timed out. A
/// retried put may apply twice (its first attempt committed after all): the
/// test only retries idempotent puts, and checks revisions, not counts.
async fn write(n: &ClusterNode, cmd: &WriteCommand) -> WriteResult {
    let a = until("a committed table write", async || n.table_write("cfg", cmd).await.map_err(|e| eprintln!("write: {e}")).ok()).await;
    match a {
        TableAnswer::Ok(r) => r,
        other => panic!("refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_replicated_on_three_nodes_survives_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut nodes: Vec<Option<ClusterNode>> = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(ClusterNode::start(config(id, &peers, dir.path())).await.unwrap()));
    }
    let n = |i: usize, nodes: &Vec<Option<ClusterNode>>| nodes[i].clone().unwrap();
    until("all nodes registered", async || (n(0, &nodes).local_meta().nodes.len() == 3).then_some(())).await;
    let r = until("table created", async || n(1, &nodes).propose_meta(&MetaCommand::CreateTable { name: "cfg".into(), replicas: 3, max_tables: None }).await.ok()).await;
    let MetaResponse::Table(t) = r else { panic!("expected a table, got {r:?}") };
    assert_eq!(t.replicas.len(), 3);
    for i in 0..3 {
        until("replica opened", async || n(i, &nodes).table_replica("cfg")).await;
    }

    // Puts through every node; a CAS through another.
    let mut acked = BTreeMap::new();
    for i in 0..9 {
        let k = format!("k{i}");
        write(&n(i % 3, &nodes), &put(&k, &format!("v{i}"))).await;
        acked.insert(k, format!("v{i}"));
    }
    let WriteResult::Txn(ok) = write(&n(1, &nodes), &cas("k0", 1, "cas")).await else { panic!("txn answer") };
    assert!(ok.succeeded);
    acked.insert("k0".into(), "cas".into());
    // The version read on node 3 (linearizable) is current: 2.
    let r = n(2, &nodes).table_read("cfg", true).await.unwrap();
    assert_eq!(r.read(|s| s.get(b"k0", None).unwrap().kv.unwrap().version), 2);

    // A watch on node 1's replica: take the first events, remember the last revision.
    let all = KeySet::from_target(&WatchTarget::Prefix(b"k".to_vec().into()));
    let (first, _) = n(0, &nodes).table_read("cfg", true).await.unwrap().wait_events(1, &all, false, 3).await.unwrap();
    let last_seen = first.last().unwrap().revision;

    // Stop the table group's leader.
    let leader = until("a table leader", async || n(0, &nodes).leader_of(t.group)).await;
    let li = (leader - 1) as usize;
    nodes[li].take().unwrap().shutdown();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    // Writes continue through the survivors after a new election.
    for (j, &i) in survivors.iter().enumerate() {
        let k = format!("k-after{j}");
        write(&n(i, &nodes), &put(&k, "x")).await;
        acked.insert(k, "x".into());
    }
    // A CAS with a stale version fails through every survivor.
    for &i in &survivors {
        let WriteResult::Txn(stale) = write(&n(i, &nodes), &cas("k0", 1, "stale")).await else { panic!("txn answer") };
        assert!(!stale.succeeded, "a stale CAS succeeded on node {}", i + 1);
    }

    // Restart the stopped node from its data dir.
    tokio::time::sleep(Duration::from_millis(200)).await;
    nodes[li] = Some(ClusterNode::start(config(leader, &peers, dir.path())).await.unwrap());
    let want_rev = n(survivors[0], &nodes).table_read("cfg", true).await.unwrap().revision();
    let mut snaps = Vec::new();
    for i in 0..3 {
        let node = n(i, &nodes);
        let r = until("replica caught up", async || {
            let r = node.table_read("cfg", true).await.ok()?;
            (r.revision() >= want_rev).then_some(r)
        })
        .await;
        for (k, v) in &acked {
            let kv = r.read(|s| s.get(k.as_bytes(), None).unwrap().kv);
            assert_eq!(kv.map(|kv| kv.value.to_vec()), Some(v.as_bytes().to_vec()), "node {} lost {k}", i + 1);
        }
        assert_eq!(r.revision(), want_rev, "node {} revision", i + 1);
        snaps.push(r.read(|s| (s.revision(), s.range(&Default::default()).unwrap().kvs)));
    }
    assert!(snaps.windows(2).all(|w| w[0] == w[1]), "replicas differ");

    // The watch resumed on another replica from last revision + 1: every later event once.
    let other = n(survivors[0], &nodes);
    let r = other.table_read("cfg", true).await.unwrap();
    let (rest, _) = r.wait_events(last_seen + 1, &all, false, 1000).await.unwrap();
    let mut revs: Vec<u64> = first.iter().chain(rest.iter()).map(|e| e.revision).collect();
    let n_events = revs.len();
    revs.dedup();
    assert_eq!(revs.len(), n_events, "an event repeated");
    assert_eq!(revs, (1..=want_rev).collect::<Vec<_>>(), "an event lost");

    for node in nodes.into_iter().flatten() {
        node.shutdown();
    }
}
