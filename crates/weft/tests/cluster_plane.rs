//! One path for records on a cluster (docs/cluster.md): `weft topic create
//! --replicas`, `weft produce`/`weft consume`, `log.*` and the HTTP gateway
//! go through the replicated partitions on any node, including a node that
//! hosts no replica of the partition (it forwards); a produce is one raft
//! entry; consumer-group offsets are committed through the metadata group
//! and survive kill -9 of its leader. Real `weft serve` processes, ended by pid.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{partition_leader, procs, replicas, start_cluster, until};

fn values(out: &[u8]) -> Vec<(u64, u64, String)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| (r["partition"].as_u64().unwrap(), r["offset"].as_u64().unwrap(), r["value"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn four_nodes_any_node_serves_any_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=4);
    start_cluster(&mut ps);

    // The CLI creates a replicated topic (through the metadata group).
    let o = ps[1].weft(&["topic", "create", "orders", "--partitions", "2", "--replicas", "3", "--json"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    let s = until("placement visible", || ps[3].status().filter(|s| replicas(s, "orders", 1).len() == 3));
    assert_eq!(replicas(&s, "orders", 0), vec![1, 2, 3]);
    assert_eq!(replicas(&s, "orders", 1), vec![2, 3, 4]);
    until("partition leaders", || Some((partition_leader(&ps, "orders", 0)?, partition_leader(&ps, "orders", 1)?)));

    // Node 4 hosts no replica of partition 0: it forwards. 100 records in one
    // produce request are one raft entry (the raft commit index stays small).
    let lines: String = (0..100).map(|i| format!("a{i}\n")).collect();
    let o = ps[3].weft_in(&["produce", "orders", "--partition", "0"], &lines);
    assert!(o.status.success(), "produce via node 4: {}", String::from_utf8_lossy(&o.stderr));
    let lines: String = (0..5).map(|i| format!("b{i}\n")).collect();
    let o = ps[0].weft_in(&["produce", "orders", "--partition", "1"], &lines);
    assert!(o.status.success(), "produce via node 1: {}", String::from_utf8_lossy(&o.stderr));

    // Consume everything through the node without a replica of partition 0,
    // and partition 1 through node 1 (no replica there either).
    let o = ps[3].weft(&["consume", "orders", "--from-beginning", "--json"]);
    assert!(o.status.success(), "consume via node 4: {}", String::from_utf8_lossy(&o.stderr));
    let got = values(&o.stdout);
    let p0: Vec<_> = got.iter().filter(|r| r.0 == 0).map(|r| (r.1, r.2.clone())).collect();
    assert_eq!(p0, (0..100).map(|i| (i, format!("a{i}"))).collect::<Vec<_>>());
    let o = ps[0].weft(&["consume", "orders", "--partition", "1", "--from-beginning", "--json"]);
    let p1: Vec<_> = values(&o.stdout).into_iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(p1, (0..5).map(|i| (i, format!("b{i}"))).collect::<Vec<_>>());
    let s = ps[0].status().unwrap();
    let commit = s["partitions"].as_array().unwrap().iter().find(|p| p["topic"] == "orders" && p["partition"] == 0).unwrap()["raft_commit"].as_u64().unwrap();
    assert!(commit < 50, "100 records in one request should be one raft entry, raft commit is {commit}");

    // Every replica holds the same records at the same offsets (its own copy).
    let local = |i: usize| ps[i].call("cluster.local.fetch", r#"{"topic":"orders","partition":0,"offset":0,"max_records":1000}"#).ok();
    let first = until("replica 1 caught up", || local(0).filter(|f| f["records"].as_array().unwrap().len() == 100));
    for i in [1, 2] {
        let f = until("replica caught up", || local(i).filter(|f| f["records"].as_array().unwrap().len() == 100));
        assert_eq!(f["records"], first["records"], "node {} differs", i + 1);
    }
    assert!(local(3).is_none(), "node 4 hosts no replica of partition 0 and must not serve it locally");

    // Forwarding is counted (weft stats).
    let stats = String::from_utf8_lossy(&ps[3].weft(&["stats"]).stdout).into_owned();
    assert!(stats.contains("cluster.forwarded") && stats.contains("cluster.forward_failures"), "{stats}");

    // Topic list and describe on any node.
    let list = ps[3].weft(&["topic", "list", "--json"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("orders"));
    let d = ps[3].json(&["topic", "describe", "orders", "--json"]).unwrap();
    assert_eq!(d["config"]["partitions"], 2);

    // The HTTP gateway: produce on a follower of partition 0 and on node 4, fetch on node 4.
    let leader0 = partition_leader(&ps, "orders", 0).unwrap();
    let follower = [1u64, 2, 3].into_iter().find(|n| *n != leader0).unwrap() as usize - 1;
    for (i, via) in [follower, 3].into_iter().enumerate() {
        let body = format!(r#"{{"records":[{{"partition":0,"value":"h{i}"}}]}}"#);
        let (code, text) = ps[via].http("POST", "/v1/topics/orders/records", &body).unwrap();
        assert_eq!(code, 200, "HTTP produce via node {}: {text}", via + 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["results"][0]["offset"], 100 + i as u64, "{text}");
    }
    // A follower's copy may trail by the apply lag: poll (bounded) until both are readable.
    let vals = until("both HTTP records readable through node 4", || {
        let (code, text) = ps[3].http("GET", "/v1/topics/orders/partitions/0/records?offset=100&max_records=10", "")?;
        assert_eq!(code, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let vals: Vec<String> = v["records"].as_array().unwrap().iter().map(|r| r["value"].as_str().unwrap().to_owned()).collect();
        (vals.len() >= 2).then_some(vals)
    });
    assert_eq!(vals, vec!["h0", "h1"]);

    // A consumer-group commit through node 4 goes through the metadata group:
    // it survives kill -9 of the metadata leader and reads back linearizably elsewhere.
    ps[3].call("log.group.commit", r#"{"group":"g1","offsets":[{"topic":"orders","partition":0,"offset":42}]}"#).unwrap();
    let meta_leader = ps[0].status().unwrap()["meta_leader"].as_u64().unwrap();
    let li = ps.iter().position(|p| p.id == meta_leader).unwrap();
    ps[li].kill();
    let other = ps.iter().find(|p| p.child.is_some()).unwrap();
    let c = until("the commit read after failover", || other.call("log.group.committed", r#"{"group":"g1","topic":"orders","partition":0}"#).ok());
    assert_eq!(c["offset"], 42, "{c}");
    for p in &mut ps {
        p.kill();
    }
}
