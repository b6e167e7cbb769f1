//! FROM TOPIC on a cluster (docs/query.md): the query reads a replicated
//! partition through the node's record plane, so a node that hosts no
//! replica of it, and a follower, answer with the leader's records; an
//! offset past the end is OUT_OF_RANGE from the replica that served it.
//! Three real `weft serve` processes, ended by pid.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{Proc, partition_leader, procs, replicas, start_cluster, until};

fn query(p: &Proc, aql: &str) -> Result<Value, String> {
    p.call("query.execute", &json!({ "aql": aql }).to_string())
}

/// (offset, value) of a FROM TOPIC answer.
fn records(r: &Value) -> Vec<(u64, String)> {
    r["records"].as_array().unwrap().iter().map(|x| (x["offset"].as_u64().unwrap(), x["value"].as_str().unwrap().to_owned())).collect()
}

#[test]
fn from_topic_on_any_node_of_a_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "orders", "--partitions", "1", "--replicas", "2"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    let hosts = until("placement visible", || ps[2].status().map(|s| replicas(&s, "orders", 0)).filter(|r| r.len() == 2));
    let leader = until("a partition leader", || partition_leader(&ps, "orders", 0));
    let outside = (1..=3u64).find(|id| !hosts.contains(id)).unwrap();
    let follower = hosts.iter().copied().find(|id| *id != leader).unwrap();
    let node = |id: u64| &ps[(id - 1) as usize];

    let lines = "{\"total\": 50}\n{\"total\": 150}\n{\"total\": 250}\n{\"total\": 99}\n";
    let o = node(outside).weft_in(&["produce", "orders", "--partition", "0"], lines);
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));

    let want = vec![(1, "{\"total\": 150}".to_owned()), (2, "{\"total\": 250}".to_owned())];
    let aql = "FROM TOPIC orders PARTITION 0 OFFSET 0 LIMIT 10 WHERE total > 100";
    // The node without a replica: through the plane (a forward to a replica).
    let r = query(node(outside), aql).unwrap();
    assert_eq!((records(&r), r["next_offset"].as_u64()), (want.clone(), Some(4)), "node {outside} (no replica): {r}");
    // A follower: its own replica once it has applied the records.
    let r = until("the follower caught up", || query(node(follower), aql).ok().filter(|r| r["next_offset"] == 4));
    assert_eq!(records(&r), want, "node {follower} (follower): {r}");
    // LIMIT counts matches; OFFSET starts the scan.
    let r = query(node(outside), "FROM TOPIC orders PARTITION 0 OFFSET 2 LIMIT 1").unwrap();
    assert_eq!(records(&r), vec![(2, "{\"total\": 250}".to_owned())], "{r}");
    // HTTP on the node without a replica too.
    let (status, body) = node(outside).http("POST", "/v1/query", &json!({ "aql": aql }).to_string()).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(records(&serde_json::from_str(&body).unwrap()), want);
    // Past the end: the replica's out_of_range, passed on.
    let e = query(node(outside), "FROM TOPIC orders PARTITION 0 OFFSET 100").unwrap_err();
    assert!(e.contains("out_of_range"), "{e}");
    // A partition that does not exist: refused, typed.
    let e = query(node(outside), "FROM TOPIC orders PARTITION 7 OFFSET 0").unwrap_err();
    assert!(e.contains("INVALID_ARGUMENT") && e.contains("no partition 7"), "{e}");
}
