//! Compaction of replicated tables (docs/query.md): `COMPACT t [REVISION r]`
//! is proposed through the table's raft group, so every replica compacts
//! at the same revision; reads below it answer OUT_OF_RANGE `compacted` on
//! every node (linearizable, serializable, forwarded), later revisions are
//! unchanged, every replica keeps the same history, and a watch from below
//! it is refused `compacted`. Automatic compaction (`tables.auto_compact_*`)
//! on one node and on a cluster. Real `weft serve` processes, ended by pid.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

mod common;
mod support;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{Proc, procs, start_cluster, until, stat};
use common::free_port;

fn q(p: &Proc, aql: &str) -> Result<Value, String> {
    p.call("query.execute", &json!({ "aql": aql }).to_string())
}

fn q_serializable(p: &Proc, aql: &str) -> Result<Value, String> {
    p.call("query.execute", &json!({ "aql": aql, "serializable": true }).to_string())
}

fn compacted(e: &str) -> bool {
    e.contains("OUT_OF_RANGE") && e.contains("compacted")
}

fn grpc_addr(p: &Proc) -> String {
    p.env.iter().find(|(k, _)| k == "WEFT_GRPC_ADDR").unwrap().1.clone()
}

#[test]
fn compaction_is_replicated() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in ps.iter_mut() {
        p.env.push(("WEFT_GRPC_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    }
    start_cluster(&mut ps);
    until("table cfg created", || q(&ps[0], "CREATE TABLE cfg").map_err(|e| eprintln!("create: {e}")).ok());
    let revs: Vec<u64> = (1..=5)
        .map(|i| until("a write", || q(&ps[(i % 3) as usize], &format!("SET cfg 'k' = {i}")).ok())["revision"].as_u64().unwrap())
        .collect();
    let r = revs[2];

    let c = q(&ps[1], &format!("COMPACT cfg REVISION {r}")).unwrap();
    assert_eq!((c["kind"].as_str(), c["revision"].as_u64()), (Some("compact"), Some(r)), "{c}");
    assert_eq!(c["count"], 2, "the two versions below {r} were dropped: {c}");

    for p in &ps {
        // Linearizable: the node's replica has applied the compaction.
        let e = q(p, &format!("GET cfg 'k' AT REVISION {}", revs[1])).unwrap_err();
        assert!(compacted(&e), "node {}: {e}", p.id);
        let g = q(p, &format!("GET cfg 'k' AT REVISION {r}")).unwrap();
        assert_eq!(g["kvs"][0]["value"], "3", "node {}: {g}", p.id);
        let g = q(p, &format!("GET cfg 'k' AT REVISION {}", revs[4])).unwrap();
        assert_eq!(g["kvs"][0]["value"], "5", "node {}: {g}", p.id);
        // Serializable: the node's own replica, without the leader.
        let e = q_serializable(p, &format!("GET cfg 'k' AT REVISION {}", revs[0])).unwrap_err();
        assert!(compacted(&e), "node {} (serializable): {e}", p.id);
        // The same history on every replica: the versions from r on.
        let h = q_serializable(p, "HISTORY cfg 'k'").unwrap();
        let mods: Vec<u64> = h["kvs"].as_array().unwrap().iter().map(|kv| kv["mod_revision"].as_u64().unwrap()).collect();
        assert_eq!(mods, vec![revs[4], revs[3], revs[2]], "node {}: {h}", p.id);
    }

    // Compacting again at or below r is refused, typed; a future revision too.
    let e = q(&ps[2], &format!("COMPACT cfg REVISION {r}")).unwrap_err();
    assert!(compacted(&e), "{e}");
    let e = q(&ps[2], "COMPACT cfg REVISION 1000").unwrap_err();
    assert!(e.contains("OUT_OF_RANGE"), "{e}");

    // A watch from below r is refused compacted; from r on it replays.
    let watch = |p: &Proc, from: u64| p.weft(&["kv", "watch", "cfg", "k", "--start-revision", &from.to_string(), "--count", "1", "--json", "--grpc-addr", &grpc_addr(p)]);
    for p in &ps {
        let o = watch(p, revs[1]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("compacted"), "node {}: {err}", p.id);
        let o = watch(p, r);
        assert!(o.status.success(), "node {}: {}", p.id, String::from_utf8_lossy(&o.stderr));
        let ev: Value = serde_json::from_slice(o.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(ev["revision"].as_u64(), Some(r), "node {}: {ev}", p.id);
    }

    // COMPACT without REVISION: the current revision, on every replica.
    let c = q(&ps[0], "COMPACT cfg").unwrap();
    assert_eq!(c["revision"].as_u64(), Some(revs[4]), "{c}");
    for p in &ps {
        let e = q(p, &format!("GET cfg 'k' AT REVISION {}", revs[3])).unwrap_err();
        assert!(compacted(&e), "node {}: {e}", p.id);
    }

    // A table on two of the three nodes: the third forwards, and passes the
    // replica's compacted refusal on.
    until("table two created", || q(&ps[0], "CREATE TABLE two REPLICAS 2").ok());
    let m = until("two placed", || ps[0].call("cluster.meta", "null").ok().filter(|m| m["tables"]["two"]["replicas"].as_array().is_some_and(|r| r.len() == 2)));
    let hosts: Vec<u64> = m["tables"]["two"]["replicas"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let outside = &ps[(1..=3u64).find(|id| !hosts.contains(id)).unwrap() as usize - 1];
    let a = until("a write to two", || q(outside, "SET two 'x' = 'a'").ok())["revision"].as_u64().unwrap();
    let b = q(outside, "SET two 'x' = 'b'").unwrap()["revision"].as_u64().unwrap();
    assert_eq!(q(outside, &format!("COMPACT two REVISION {b}")).unwrap()["revision"].as_u64(), Some(b));
    let e = q(outside, &format!("GET two 'x' AT REVISION {a}")).unwrap_err();
    assert!(compacted(&e), "forwarded: {e}");
    assert_eq!(q(outside, "GET two 'x'").unwrap()["kvs"][0]["value"], "b");
}

/// The table group's raft log on a node: (snapshot index, last index).
fn raft_log(p: &Proc, group: u64) -> Option<(u64, u64)> {
    let s = p.status()?;
    let g = s["groups"].as_array()?.iter().find(|g| g["group"] == group)?.clone();
    Some((g["snapshot_index"].as_u64()?, g["last_index"].as_u64()?))
}

/// Table groups snapshot every `cluster.snapshot_entries` applied entries
/// (the whole `TableState`, compact revision included); a replica down
/// while the others compacted their raft logs past it comes back from the
/// leader's snapshot with the same keys, revisions and compact revision.
#[test]
fn a_table_replica_catches_up_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in &mut ps {
        p.env.push(("WEFT_CLUSTER_SNAPSHOT_ENTRIES".into(), "20".into()));
    }
    let peers = start_cluster(&mut ps);
    until("table cfg created", || q(&ps[0], "CREATE TABLE cfg").map_err(|e| eprintln!("create: {e}")).ok());
    let group = until("cfg placed", || ps[0].call("cluster.meta", "null").ok()?["tables"]["cfg"]["group"].as_u64());
    let first = until("a write", || q(&ps[0], "SET cfg 'k' = 0").ok())["revision"].as_u64().unwrap();
    q(&ps[0], &format!("COMPACT cfg REVISION {first}")).unwrap();

    // Node 3 goes down; 100 writes later the others have snapshotted past its log.
    ps[2].kill();
    let mut last = 0;
    for i in 1..=100 {
        last = until("a write with node 3 down", || q(&ps[i % 2], &format!("SET cfg 'k{}' = {i}", i % 10)).ok())["revision"].as_u64().unwrap();
    }
    let c = q(&ps[0], &format!("COMPACT cfg REVISION {}", last - 5)).unwrap();
    assert_eq!(c["revision"].as_u64(), Some(last - 5));
    for p in &ps[..2] {
        let (snap, end) = until("snapshots on the live replicas", || raft_log(p, group).filter(|(s, _)| *s >= 80));
        assert!(end - snap < 60, "node {}: the table group's raft log holds {} entries after its snapshot", p.id, end - snap);
    }

    // It comes back and installs the leader's snapshot.
    ps[2].start(&peers);
    let (snap, _) = until("node 3's snapshot", || raft_log(&ps[2], group).filter(|(s, _)| *s >= 80));
    assert!(snap >= 80, "{snap}");
    let want = q(&ps[0], "RANGE cfg PREFIX ''").unwrap();
    let got = until("node 3 caught up", || q_serializable(&ps[2], "RANGE cfg PREFIX ''").ok().filter(|r| r["revision"] == want["revision"]));
    assert_eq!(got["kvs"], want["kvs"], "same keys, values and revisions");
    // The compact revision came with the snapshot.
    let e = q_serializable(&ps[2], &format!("GET cfg 'k1' AT REVISION {}", last - 6)).unwrap_err();
    assert!(compacted(&e), "{e}");
    assert!(q_serializable(&ps[2], &format!("GET cfg 'k1' AT REVISION {}", last - 5)).is_ok());
}

/// The mod revisions of `key`'s history, newest first.
fn history(v: &Value) -> Vec<u64> {
    v["kvs"].as_array().map(|a| a.iter().filter_map(|kv| kv["mod_revision"].as_u64()).collect()).unwrap_or_default()
}

/// Automatic compaction by count on a cluster: only the node that leads
/// the table's raft group proposes it, so every replica compacts at the
/// same revision (the current one minus three: reads at the three
/// revisions before the current one still work), and each version goes
/// once: the nodes' removed-version counts add up to what went.
#[test]
fn automatic_compaction_runs_on_the_leader_and_every_replica_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in &mut ps {
        p.env.push(("WEFT_TABLES_AUTO_COMPACT_REVISIONS".into(), "3".into()));
        p.env.push(("WEFT_TABLES_AUTO_COMPACT_INTERVAL_MS".into(), "200".into()));
    }
    start_cluster(&mut ps);
    until("table auto created", || q(&ps[0], "CREATE TABLE auto").map_err(|e| eprintln!("create: {e}")).ok());
    let mut last = 0;
    for i in 1..=12u64 {
        last = until("a write", || q(&ps[(i % 3) as usize], &format!("SET auto 'k' = {i}")).ok())["revision"].as_u64().unwrap();
    }
    let want = vec![last, last - 1, last - 2, last - 3];
    for p in &ps {
        // Serializable: this node's own replica, once it applied the compaction.
        let h = until("the replica compacted to last - 3", || {
            let h = q_serializable(p, "HISTORY auto 'k'").ok()?;
            (history(&h) == want).then_some(h)
        });
        assert_eq!(history(&h), want, "node {}", p.id);
        let e = q_serializable(p, &format!("GET auto 'k' AT REVISION {}", last - 4)).unwrap_err();
        assert!(compacted(&e), "node {}: {e}", p.id);
    }
    let counts: Vec<(u64, u64, u64)> = ps
        .iter()
        .map(|p| (stat(p, "query.auto_compactions").unwrap(), stat(p, "query.auto_compacted_versions").unwrap(), stat(p, "query.auto_compaction_errors").unwrap()))
        .collect();
    assert!(counts.iter().map(|c| c.0).sum::<u64>() >= 1, "{counts:?}");
    assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 8, "the 8 older versions of k, each removed once: {counts:?}");
    assert!(counts.iter().all(|c| c.2 == 0), "no node's proposal failed (none raced another's): {counts:?}");
}

/// Automatic compaction on one node with both rules: the age rule keeps
/// history younger than its age whatever the count allows; past it, the
/// count rule's bound is what is kept; `query.auto_compactions` and
/// `query.auto_compacted_versions` count what it did.
#[test]
fn a_single_node_compacts_its_tables_by_count_and_by_age() {
    const AGE_MS: u64 = 4000;
    let node = support::Node::start_with(
        &[],
        &[("WEFT_TABLES_AUTO_COMPACT_REVISIONS", "2"), ("WEFT_TABLES_AUTO_COMPACT_AGE_MS", "4000"), ("WEFT_TABLES_AUTO_COMPACT_INTERVAL_MS", "100")],
    );
    let query = |aql: &str| -> Value { serde_json::from_str(&node.ok(&["query", aql, "--json"])).unwrap() };
    let t0 = std::time::Instant::now();
    query("CREATE TABLE one");
    let first: Vec<u64> = (1..=5).map(|i| query(&format!("SET one 'k' = {i}"))["revision"].as_u64().unwrap()).collect();
    // No revision of these writes can be AGE_MS old yet (each was made after
    // t0), so none has been compacted away, whatever the count rule says.
    let h = history(&query("HISTORY one 'k'"));
    if t0.elapsed().as_millis() < u128::from(AGE_MS) {
        assert_eq!(h.len(), 5, "history younger than the age is kept: {h:?}");
    }
    // Later the age rule lets them go and the count rule keeps reads at the
    // two revisions before the current one.
    let want = vec![first[4], first[3], first[2]];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while history(&query("HISTORY one 'k'")) != want {
        assert!(std::time::Instant::now() < deadline, "not compacted to the newest three versions");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(node.stat_via(&node.addr(), "query.auto_compactions") >= 1);
    assert_eq!(node.stat_via(&node.addr(), "query.auto_compacted_versions"), 2, "the two older versions of k");
    assert_eq!(node.stat_via(&node.addr(), "query.auto_compaction_errors"), 0);
    let o = node.weft(&["query", &format!("GET one 'k' AT REVISION {}", first[1])]);
    assert!(!o.status.success() && support::text(&o.stderr).contains("compacted"), "{}", support::text(&o.stderr));
}
