//! Idempotent producers on a replicated partition (docs/log.md, issue 12
//! item 4): the same batch (producer id + sequence) sent twice, through
//! different nodes and across kill -9 of the partition leader, is in the log
//! once and both answers carry the same offsets; a sequence gap is refused
//! with `conflict` / `out_of_order_sequence`. Real `weft serve` processes,
//! ended by pid.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{partition_leader, procs, start_cluster, until};

fn offsets(v: &Value) -> Vec<u64> {
    v["results"].as_array().unwrap().iter().map(|r| r["offset"].as_u64().unwrap_or(u64::MAX)).collect()
}

/// A record value as `weft call` prints it (bytes as an array of numbers, or a string).
fn text(v: &Value) -> String {
    match v.as_array() {
        Some(b) => String::from_utf8(b.iter().map(|x| x.as_u64().unwrap() as u8).collect()).unwrap(),
        None => v.as_str().unwrap_or_default().to_owned(),
    }
}

fn batch(seq: u64, values: &[&str]) -> String {
    let records: Vec<Value> = values.iter().map(|v| serde_json::json!({"partition": 0, "value": v})).collect();
    serde_json::json!({"topic": "idem", "records": records, "producer_id": 77, "sequence": seq}).to_string()
}

#[test]
fn a_retried_batch_is_in_the_log_once_through_any_node_and_across_a_leader_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in &mut ps {
        p.env.push(("WEFT_CLUSTER_MAX_PRODUCERS_PER_PARTITION".into(), "2".into()));
    }
    start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "idem", "--partitions", "1", "--replicas", "3", "--json"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("a partition leader", || partition_leader(&ps, "idem", 0));

    // The same batch through every node: one copy, the same offsets each time.
    let first = ps[0].call("log.produce", &batch(0, &["a", "b"])).unwrap();
    assert_eq!(offsets(&first), vec![0, 1], "{first}");
    for p in &ps[1..] {
        let again = p.call("log.produce", &batch(0, &["a", "b"])).unwrap();
        assert_eq!(offsets(&again), vec![0, 1], "a duplicate answers the original offsets: {again}");
    }
    // A gap is refused, typed, and appends nothing.
    let gap = ps[1].call("log.produce", &batch(5, &["x"])).unwrap_err();
    assert!(gap.contains("out_of_order_sequence") || gap.contains("out of order sequence"), "{gap}");
    // sequence without producer_id is invalid.
    let bad = ps[0].call("log.produce", r#"{"topic":"idem","records":[{"partition":0,"value":"y"}],"sequence":1}"#).unwrap_err();
    assert!(bad.contains("producer_id"), "{bad}");
    let next = ps[2].call("log.produce", &batch(2, &["c"])).unwrap();
    assert_eq!(offsets(&next), vec![2], "{next}");

    // kill -9 of the partition leader; the last batch retried through a
    // survivor (its fate unknown to a client that lost the answer) is not
    // appended again: the producer state is replicated with the records.
    let leader = partition_leader(&ps, "idem", 0).unwrap();
    let li = ps.iter().position(|p| p.id == leader).unwrap();
    ps[li].kill();
    let survivor = ps.iter().position(|p| p.child.is_some()).unwrap();
    let retried = until("the retried batch answered after failover", || ps[survivor].call("log.produce", &batch(2, &["c"])).ok());
    assert_eq!(offsets(&retried), vec![2], "{retried}");
    let more = until("a new batch after failover", || ps[survivor].call("log.produce", &batch(3, &["d"])).ok());
    assert_eq!(offsets(&more), vec![3], "{more}");

    // Exactly a, b, c, d in the log on a survivor.
    let vals = until("every record readable", || {
        let f = ps[survivor].call("log.fetch", r#"{"topic":"idem","partition":0,"offset":0,"max_records":100}"#).ok()?;
        let vals: Vec<String> = f["records"].as_array()?.iter().map(|r| text(&r["value"])).collect();
        (vals.len() >= 4).then_some(vals)
    });
    assert_eq!(vals, vec!["a", "b", "c", "d"]);
    // The HTTP gateway takes the same fields: batch 3 once more is a duplicate.
    let (code, text) = ps[survivor].http("POST", "/v1/topics/idem/records", r#"{"records":[{"partition":0,"value":"d"}],"producer_id":77,"sequence":3}"#).unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(offsets(&serde_json::from_str(&text).unwrap()), vec![3], "{text}");

    // cluster.max_producers_per_partition = 2: two more producers evict 77
    // (least recently used), shown in cluster.status; an evicted producer's
    // old batch is then new to the partition (appended again: documented).
    for id in [100, 101] {
        let body = serde_json::json!({"topic": "idem", "records": [{"partition": 0, "value": "n"}], "producer_id": id, "sequence": 0}).to_string();
        until("a new producer's batch", || ps[survivor].call("log.produce", &body).ok());
    }
    let s = ps[survivor].status().unwrap();
    let p = s["partitions"].as_array().unwrap().iter().find(|p| p["topic"] == "idem").unwrap().clone();
    assert_eq!((p["producers"].as_u64(), p["producer_evictions"].as_u64()), (Some(2), Some(1)), "{p}");
    let evicted = ps[survivor].call("log.produce", &batch(3, &["d"])).unwrap();
    assert_eq!(offsets(&evicted), vec![6], "{evicted}");
    for p in &mut ps {
        p.kill();
    }
}

/// acks=leader (docs/cluster.md, "Guarantees"): answered once the node has the
/// entry in its own raft log; the records are then committed and readable
/// like any other. Sent through every node (the leader and the followers).
#[test]
fn acks_leader_produces_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "fast", "--partitions", "1", "--replicas", "3", "--json"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("a partition leader", || partition_leader(&ps, "fast", 0));
    for (i, p) in ps.iter().enumerate() {
        let body = serde_json::json!({"topic": "fast", "acks": "leader", "records": [{"partition": 0, "value": format!("l{i}")}]}).to_string();
        let v = p.call("log.produce", &body).unwrap();
        let r = &v["results"][0];
        assert!(r["error"].is_null() && r["partition"] == 0, "acks=leader via node {}: {v}", p.id);
    }
    let vals = until("every acks=leader record readable", || {
        let f = ps[2].call("log.fetch", r#"{"topic":"fast","partition":0,"offset":0,"max_records":100}"#).ok()?;
        let vals: Vec<String> = f["records"].as_array()?.iter().map(|r| text(&r["value"])).collect();
        (vals.len() >= 3).then_some(vals)
    });
    assert_eq!(vals, vec!["l0", "l1", "l2"]);
    // The CLI: --acks leader, then --idempotent (a batch per request, numbered).
    let o = ps[1].weft_in(&["produce", "fast", "--partition", "0", "--acks", "leader"], "c1\nc2\n");
    assert!(o.status.success(), "weft produce --acks leader: {}", String::from_utf8_lossy(&o.stderr));
    let o = ps[0].weft_in(&["produce", "fast", "--partition", "0", "--idempotent", "--batch", "1"], "i1\ni2\n");
    assert!(o.status.success(), "weft produce --idempotent: {}", String::from_utf8_lossy(&o.stderr));
    let vals = until("the CLI's records readable", || {
        let f = ps[2].call("log.fetch", r#"{"topic":"fast","partition":0,"offset":3,"max_records":100}"#).ok()?;
        let vals: Vec<String> = f["records"].as_array()?.iter().map(|r| text(&r["value"])).collect();
        (vals.len() >= 4).then_some(vals)
    });
    assert_eq!(vals, vec!["c1", "c2", "i1", "i2"]);
    for p in &mut ps {
        p.kill();
    }
}

/// The producer state is in the partition snapshot: a follower that was down
/// while the others compacted past a producer's batches installs a snapshot,
/// and after the leader is killed that follower still answers a retried old
/// batch with its original offsets (and refuses a gap).
#[test]
fn producer_state_travels_in_the_partition_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in &mut ps {
        p.env.push(("WEFT_CLUSTER_SNAPSHOT_ENTRIES".into(), "20".into()));
    }
    let peers = start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "idem", "--partitions", "1", "--replicas", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let leader = until("a partition leader", || partition_leader(&ps, "idem", 0));
    let f = ps.iter().position(|p| p.id != leader).unwrap();
    ps[f].kill();
    let via = ps.iter().position(|p| p.id == leader).unwrap();
    // Producer 77: ten batches; then producer 78's sixty push compaction past them.
    for seq in 0..10 {
        let v = ps[via].call("log.produce", &batch(seq, &[&format!("a{seq}")])).unwrap();
        assert_eq!(offsets(&v), vec![seq], "{v}");
    }
    for seq in 0..60u64 {
        let body = serde_json::json!({"topic": "idem", "records": [{"partition": 0, "value": format!("b{seq}")}], "producer_id": 78, "sequence": seq}).to_string();
        ps[via].call("log.produce", &body).unwrap();
    }
    let group_log = |p: &cluster::Proc| -> Option<u64> {
        let s = p.status()?;
        let group = s["partitions"].as_array()?.iter().find(|x| x["topic"] == "idem")?["group"].as_u64()?;
        s["groups"].as_array()?.iter().find(|g| g["group"] == group)?["snapshot_index"].as_u64()
    };
    until("compaction past producer 77's batches", || group_log(&ps[via]).filter(|s| *s >= 30));

    ps[f].start(&peers);
    until("the follower installed a snapshot", || group_log(&ps[f]).filter(|s| *s >= 30));
    until("the follower's copy complete", || {
        let r = ps[f].call("cluster.local.fetch", r#"{"topic":"idem","partition":0,"offset":0,"max_records":1000}"#).ok()?;
        (r["records"].as_array()?.len() == 70).then_some(())
    });
    ps[via].kill();
    // Through the follower (it answers from its own apply): the old batch is a duplicate.
    let again = until("the retried batch answered after failover", || ps[f].call("log.produce", &batch(9, &["a9"])).ok());
    assert_eq!(offsets(&again), vec![9], "{again}");
    let gap = ps[f].call("log.produce", &batch(12, &["x"])).unwrap_err();
    assert!(gap.contains("out_of_order_sequence"), "{gap}");
    let next = ps[f].call("log.produce", &batch(10, &["a10"])).unwrap();
    assert_eq!(offsets(&next), vec![70], "{next}");
    for p in &mut ps {
        p.kill();
    }
}
