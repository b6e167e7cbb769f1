//! Partition raft logs are compacted (cluster.snapshot_entries = 20 here):
//! a follower that was down while the leader compacted past its log
//! installs a snapshot, fetches the records it stands for from another
//! replica, and ends with the same records at the same offsets; a full
//! restart of every node restores from the snapshots and replays the tail.
//! Real `weft serve` processes, ended by pid.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{partition_leader, procs, start_cluster, until, Proc};

fn local(p: &Proc) -> Option<Vec<Value>> {
    let f = p.call("cluster.local.fetch", r#"{"topic":"snap","partition":0,"offset":0,"max_records":10000}"#).ok()?;
    f["records"].as_array().cloned()
}

/// (snapshot index, last index) of the partition's raft group on this node.
fn raft_log(p: &Proc) -> Option<(u64, u64)> {
    let s = p.status()?;
    let group = s["partitions"].as_array()?.iter().find(|x| x["topic"] == "snap")?["group"].as_u64()?;
    let g = s["groups"].as_array()?.iter().find(|g| g["group"] == group)?.clone();
    Some((g["snapshot_index"].as_u64()?, g["last_index"].as_u64()?))
}

fn produce(p: &Proc, from: u64, n: u64) {
    let lines: String = (from..from + n).map(|i| format!("r{i}\n")).collect();
    // --batch 1: one request, so one raft entry, per record.
    let o = p.weft_in(&["produce", "snap", "--partition", "0", "--batch", "1"], &lines);
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_follower_behind_a_compacted_log_catches_up_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in &mut ps {
        p.env.push(("WEFT_CLUSTER_SNAPSHOT_ENTRIES".into(), "20".into()));
    }
    let peers = start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "snap", "--partitions", "1", "--replicas", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let leader = until("a partition leader", || partition_leader(&ps, "snap", 0));

    // A follower goes down; 150 entries later the others have compacted past its log.
    let f = ps.iter().position(|p| p.id != leader).unwrap();
    ps[f].kill();
    let via = ps.iter().position(|p| p.id == leader).unwrap();
    produce(&ps[via], 0, 150);
    for (i, p) in ps.iter().enumerate() {
        if i != f {
            let (snap, last) = until("compaction on the live replicas", || raft_log(p).filter(|(s, _)| *s >= 100));
            assert!(last - snap < 60, "node {}: raft log holds {} entries after compaction", p.id, last - snap);
        }
    }

    // It comes back: the leader sends a snapshot; the records come from a replica's copy.
    ps[f].start(&peers);
    let want = local(&ps[via]).unwrap();
    assert_eq!(want.len(), 150);
    let got = until("the follower's copy rebuilt", || local(&ps[f]).filter(|r| r.len() == 150));
    assert_eq!(got, want, "same records at the same offsets");
    let (snap, _) = until("the follower's snapshot", || raft_log(&ps[f]).filter(|(s, _)| *s > 0));
    assert!(snap >= 100, "it installed the leader's snapshot (index {snap})");
    let s = ps[f].status().unwrap();
    let caught = s["partitions"][0]["caught_up_records"].as_u64().unwrap();
    assert!(caught >= 100, "the records below the snapshot came from a replica's copy ({caught})");

    // And keeps replicating after it.
    produce(&ps[f], 150, 10);
    for p in &ps {
        until("160 records everywhere", || local(p).filter(|r| r.len() == 160));
    }

    // A full restart restores every node from its snapshot and the log tail.
    for p in &mut ps {
        p.kill();
    }
    for p in &mut ps {
        p.start(&peers);
    }
    until("a partition leader after the restart", || partition_leader(&ps, "snap", 0));
    produce(&ps[0], 160, 5);
    let all = until("165 records on node 1", || local(&ps[0]).filter(|r| r.len() == 165));
    for p in &ps[1..] {
        let r = until("165 records everywhere", || local(p).filter(|r| r.len() == 165));
        assert_eq!(r, all, "node {} differs after the restart", p.id);
    }
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["offset"], i as u64);
    }
    for p in &mut ps {
        p.kill();
    }
}
