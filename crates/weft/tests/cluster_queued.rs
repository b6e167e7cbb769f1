//! A queued endpoint on a cluster node (issue #12 item 8): `log.produce_queued`
//! on node 2 takes records durably into node 2's own queue and appends them
//! through the record plane, so a replicated topic gets them through raft
//! (every replica's copy the same), across kill -9 of the partition leader,
//! or of node 2 itself when it leads (its queue is on its disk). Three real
//! `weft serve` processes, ended by pid.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{partition_leader, procs, replicas, start_cluster, until, Proc};

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(b) => String::from_utf8(b.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect()).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// A replica's own copy of q/0.
fn copy(p: &Proc) -> Option<Vec<String>> {
    let f = p.call("cluster.local.fetch", r#"{"topic":"q","partition":0,"offset":0,"max_records":1000}"#).ok()?;
    Some(f["records"].as_array()?.iter().map(|r| text(&r["value"])).collect())
}

fn enqueue(p: &Proc, i: u32) {
    let body = format!(r#"{{"topic":"q","partition":0,"value":"v{i}"}}"#);
    // The queue answers once the item is durable in node 2's queue.
    until("the item queued", || p.call("log.produce_queued", &body).ok());
}

#[test]
fn queued_produce_on_a_cluster_node_goes_through_raft_and_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    ps[1].env = vec![
        ("WEFT_QUEUES_PRODUCE_ENDPOINT".into(), "true".into()),
        // A failover takes a few attempts; the items must not land in the error queue.
        ("WEFT_QUEUES_PRODUCE_MAX_RETRIES".into(), "1000".into()),
    ];
    let peers = start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "q", "--partitions", "1", "--replicas", "3"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("q/0 on three replicas", || ps[1].status().map(|s| replicas(&s, "q", 0)).filter(|r| r.len() == 3));

    for i in 0..10 {
        enqueue(&ps[1], i);
    }
    let leader = until("the partition leader", || partition_leader(&ps, "q", 0));
    // kill -9 the leader; when node 2 leads, that is the queue's owner: it
    // comes back with its queue from disk.
    ps[leader as usize - 1].kill();
    if leader == 2 {
        ps[1].start(&peers);
    }
    for i in 10..20 {
        enqueue(&ps[1], i);
    }

    let want: BTreeSet<String> = (0..20).map(|i| format!("v{i}")).collect();
    let reader = if leader == 3 { 0 } else { 2 };
    let got = until("every queued record appended", || {
        let o = ps[reader].weft(&["consume", "q", "--from-beginning"]);
        let seen: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect();
        want.iter().all(|w| seen.contains(w)).then_some(seen)
    });
    // At least once: a retried attempt whose answer was lost may repeat a value.
    assert!(got.iter().all(|v| want.contains(v)), "only queued values: {got:?}");
    // The queue emptied on node 2.
    until("node 2's queue drained", || {
        let q = ps[1].json(&["queue", "show", "log.produce_queued", "--json"])?;
        (q["incoming"].as_u64()? == 0 && q["in_flight"].as_u64()? == 0 && q["errors"].as_u64()? == 0).then_some(())
    });

    // Every live replica holds the same copy (nothing written beside raft).
    if leader != 2 {
        ps[leader as usize - 1].start(&peers);
    }
    let reference = until("the first copy complete", || copy(&ps[0]).filter(|c| c.len() >= got.len()));
    for p in &ps[1..] {
        until("the replica's copy matches", || copy(p).filter(|c| *c == reference));
    }
}
