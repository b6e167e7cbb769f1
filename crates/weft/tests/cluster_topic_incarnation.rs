//! Topic incarnations (docs/cluster.md, "Deleting and altering a replicated
//! topic"): a node that was down while a topic was deleted and created
//! again under the same name drops its copy of the old topic before it
//! serves the new one. Three real `weft serve` processes, ended by pid.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{Proc, partition_leader, procs, replicas, start_cluster, until, stat};

/// The records of partition 0 of "t" on the node's own copy (`None` while it hosts none).
fn local_records(p: &Proc) -> Option<Vec<String>> {
    let f = p.call("cluster.local.fetch", r#"{"topic":"t","partition":0,"offset":0,"max_records":1000}"#).ok()?;
    // Native answers carry bytes (an array of numbers on the JSON the CLI prints).
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(b) => String::from_utf8(b.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect()).unwrap_or_default(),
        other => other.to_string(),
    };
    Some(f["records"].as_array()?.iter().map(|r| text(&r["value"])).collect())
}

/// The group of t/0 and this node's high watermark of it, from its status.
fn hosted(p: &Proc) -> Option<(u64, u64)> {
    let s = p.status()?;
    let part = s["partitions"].as_array()?.iter().find(|x| x["topic"] == "t" && x["partition"] == 0)?.clone();
    Some((part["group"].as_u64()?, part["high_watermark"].as_u64()?))
}

/// Makes "t" (one partition on all three nodes) with five old records,
/// then, with node 3 killed, deletes it and creates it again with two new
/// records. Returns node 3's old group and the new incarnation.
fn recreate_while_node3_down(ps: &mut [Proc]) -> (u64, u64) {
    let o = ps[0].weft(&["topic", "create", "t", "--partitions", "1", "--replicas", "3"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("placement visible on node 3", || ps[2].status().map(|s| replicas(&s, "t", 0)).filter(|r| r.len() == 3));
    let o = ps[0].weft_in(&["produce", "t", "--partition", "0"], "old0\nold1\nold2\nold3\nold4\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    until("node 3's copy has the old records", || local_records(&ps[2]).filter(|r| r.len() == 5));
    until("node 3's metadata current", || stat(&ps[2], "cluster.meta_current").filter(|v| *v == 1));
    let (old_group, _) = hosted(&ps[2]).unwrap();

    // Node 3 is down while t is deleted and created again, with other content.
    ps[2].kill();
    // Node 3 may have led the metadata group: wait for a leader among the survivors.
    until("a metadata leader on nodes 1 and 2", || ps[1].status()?["meta_leader"].as_u64().filter(|l| *l != 3));
    let o = ps[1].weft(&["topic", "delete", "t"]);
    assert!(o.status.success(), "topic delete: {}", String::from_utf8_lossy(&o.stderr));
    let o = ps[1].weft(&["topic", "create", "t", "--partitions", "1", "--replicas", "3"]);
    assert!(o.status.success(), "topic create again: {}", String::from_utf8_lossy(&o.stderr));
    // The new topic's group elects its leader among the survivors first (a
    // produce before that is refused `unavailable`, retriable).
    until("a leader of the new t/0 on nodes 1 and 2", || partition_leader(&ps[..2], "t", 0).filter(|l| *l != 3));
    let o = ps[0].weft_in(&["produce", "t", "--partition", "0"], "new0\nnew1\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    let meta = ps[0].call("cluster.meta", "null").unwrap();
    let incarnation = meta["topics"]["t"]["incarnation"].as_u64().unwrap();
    assert!(incarnation > old_group, "a new incarnation: {meta}");
    (old_group, incarnation)
}

#[test]
fn a_node_down_while_a_topic_was_deleted_and_created_again_drops_its_old_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    let peers = start_cluster(&mut ps);
    let (old_group, incarnation) = recreate_while_node3_down(&mut ps);

    // Back: once its metadata has the new topic, its copy is the new one only.
    ps[2].start(&peers);
    let (group, hw) = until("node 3 serves the new topic's partition", || hosted(&ps[2]).filter(|(g, hw)| *g != old_group && *hw == 2));
    assert_eq!((group, hw), (incarnation, 2));
    // Served once a read of the metadata since its start went through (just after).
    assert_eq!(until("node 3 serves its copy", || local_records(&ps[2])), vec!["new0", "new1"]);
    // Through the record plane on node 3 too, from offset 0.
    let f = ps[2].call("cluster.fetch", r#"{"topic":"t","partition":0,"offset":0}"#).unwrap();
    let values: Vec<&str> = f["records"].as_array().unwrap().iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values, vec!["new0", "new1"], "{f}");
    // It keeps serving the new topic: a record produced through it lands at offset 2 everywhere.
    let o = ps[2].weft_in(&["produce", "t", "--partition", "0"], "new2\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    for p in &ps {
        until("every copy has the three new records", || local_records(p).filter(|r| r == &["new0", "new1", "new2"]));
    }
    // The node's record of its copies' incarnations names the new one.
    let marks: Value = serde_json::from_slice(&std::fs::read(ps[2].dir.join("cluster").join("topic_incarnations.json")).unwrap()).unwrap();
    assert_eq!(marks["t"].as_u64(), Some(incarnation), "{marks}");
}

/// The same story, but node 3 comes back while nodes 1 and 2 are paused
/// (SIGSTOP), so its metadata cannot catch up: it opens the old topic's
/// group from its own metadata, and must not serve that copy (the old
/// records) until a linearizable read of the metadata succeeds; then it
/// serves the new topic only.
#[test]
fn a_returning_node_serves_no_copy_until_its_metadata_caught_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    let peers = start_cluster(&mut ps);
    let (old_group, _) = recreate_while_node3_down(&mut ps);

    // Nodes 1 and 2 stop answering; node 3 comes back to no metadata quorum.
    ps[0].pause();
    ps[1].pause();
    ps[2].start(&peers);
    until("node 3 hosts its old copy's group again (its own metadata)", || hosted(&ps[2]).filter(|(g, _)| *g == old_group));
    assert_eq!(stat(&ps[2], "cluster.meta_current"), Some(0));
    let e = ps[2].call("cluster.local.fetch", r#"{"topic":"t","partition":0,"offset":0,"max_records":1000}"#).unwrap_err();
    assert!(e.contains("caught up on the cluster's metadata") && !e.contains("old0"), "{e}");
    // Through the record plane: the other replicas are asked (paused: no
    // answer within the connect time-out), then the same refusal.
    let e = ps[2].call("cluster.fetch", r#"{"topic":"t","partition":0,"offset":0}"#).unwrap_err();
    assert!(e.contains("caught up on the cluster's metadata") && !e.contains("old0"), "{e}");
    let e = ps[2].call("log.offsets", r#"{"topic":"t","partition":0,"spec":"latest"}"#).unwrap_err();
    assert!(e.contains("caught up on the cluster's metadata"), "{e}");

    ps[0].resume();
    ps[1].resume();
    until("node 3's metadata current", || stat(&ps[2], "cluster.meta_current").filter(|v| *v == 1));
    let (group, _) = until("node 3 serves the new topic's partition", || hosted(&ps[2]).filter(|(g, hw)| *g != old_group && *hw == 2));
    assert_ne!(group, old_group);
    assert_eq!(until("node 3 serves its copy", || local_records(&ps[2])), vec!["new0", "new1"]);
    let f = ps[2].call("cluster.fetch", r#"{"topic":"t","partition":0,"offset":0}"#).unwrap();
    let values: Vec<&str> = f["records"].as_array().unwrap().iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values, vec!["new0", "new1"], "{f}");
}
