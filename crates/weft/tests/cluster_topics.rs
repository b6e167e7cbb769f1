//! Delete and alter of a replicated topic on a cluster (docs/cluster.md,
//! "Deleting and altering a replicated topic"): both go through the
//! metadata group, so every node applies them. Three real `weft serve`
//! processes, ended by pid.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{Proc, procs, replicas, start_cluster, until};

/// The records of partition `p` on the node's own copy (`None` while it hosts none).
fn local_records(p: &Proc, topic: &str, partition: u32) -> Option<Vec<String>> {
    let f = p.call("cluster.local.fetch", &format!(r#"{{"topic":"{topic}","partition":{partition},"offset":0,"max_records":1000}}"#)).ok()?;
    // Native answers carry bytes (an array of numbers on the JSON the CLI prints).
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(b) => String::from_utf8(b.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect()).unwrap_or_default(),
        other => other.to_string(),
    };
    Some(f["records"].as_array()?.iter().map(|r| text(&r["value"])).collect())
}

/// The raft groups of a topic's partitions, from a node's status.
fn groups(s: &Value, topic: &str) -> Vec<u64> {
    s["partitions"].as_array().into_iter().flatten().filter(|p| p["topic"] == topic).map(|p| p["group"].as_u64().unwrap()).collect()
}

#[test]
fn delete_of_a_replicated_topic_reaches_every_node_and_the_name_starts_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    let peers = start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "gone", "--partitions", "2", "--replicas", "3"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("placement visible on node 3", || ps[2].status().map(|s| replicas(&s, "gone", 1)).filter(|r| r.len() == 3));
    let o = ps[1].weft_in(&["produce", "gone", "--partition", "0"], "a\nb\nc\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    for p in &ps {
        until("every replica has the records", || local_records(p, "gone", 0).filter(|r| r.len() == 3));
    }
    ps[0].call("log.group.commit", r#"{"group":"g","offsets":[{"topic":"gone","partition":0,"offset":2}]}"#).unwrap();
    let old_groups = groups(&ps[0].status().unwrap(), "gone");
    assert_eq!(old_groups.len(), 2);
    for p in &ps {
        for g in &old_groups {
            assert!(p.dir.join("cluster").join("groups").join(format!("{g}.wal")).exists(), "node {} has no raft log of group {g}", p.id);
        }
    }

    // Deleted through node 3 (the CLI, log.topic.delete).
    let o = ps[2].weft(&["topic", "delete", "gone"]);
    assert!(o.status.success(), "topic delete: {}", String::from_utf8_lossy(&o.stderr));
    for p in &ps {
        // Neither the metadata nor the node's own log knows the name any more.
        until("the topic gone from every node", || {
            let s = p.status()?;
            let described = p.weft(&["topic", "describe", "gone"]).status.success();
            let listed = String::from_utf8_lossy(&p.weft(&["topic", "list"]).stdout).lines().any(|l| l.trim() == "gone");
            (groups(&s, "gone").is_empty() && !described && !listed).then_some(())
        });
        // The partition groups are closed and their raft logs removed.
        until("the raft logs removed", || {
            old_groups.iter().all(|g| !p.dir.join("cluster").join("groups").join(format!("{g}.wal")).exists()).then_some(())
        });
        assert!(local_records(p, "gone", 0).is_none(), "node {} still serves a copy", p.id);
    }
    let e = ps[0].call("log.topic.delete", r#"{"name":"gone"}"#).unwrap_err();
    assert!(e.contains("not_found"), "{e}");

    // The name again, over HTTP this time: new groups, empty copies, no committed offsets.
    let (code, body) = ps[1].http("POST", "/v1/topics", r#"{"name":"gone","replicas":3,"config":{"partitions":1}}"#).unwrap();
    assert_eq!(code, 201, "{body}");
    let new_groups = until("the new placement on node 1", || ps[0].status().map(|s| groups(&s, "gone")).filter(|g| g.len() == 1));
    assert!(!old_groups.contains(&new_groups[0]), "group ids are never reused: {new_groups:?} vs {old_groups:?}");
    let c = ps[2].call("log.group.committed", r#"{"group":"g","topic":"gone","partition":0}"#).unwrap();
    assert!(c["offset"].is_null(), "the deleted topic's committed offset survived: {c}");
    let o = ps[2].weft_in(&["produce", "gone", "--partition", "0"], "fresh\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    for p in &ps {
        let r = until("every replica has the new record", || local_records(p, "gone", 0).filter(|r| !r.is_empty()));
        assert_eq!(r, vec!["fresh"], "node {}: the new topic must start empty", p.id);
    }

    // HTTP DELETE on another node.
    let (code, body) = ps[0].http("DELETE", "/v1/topics/gone", "").unwrap();
    assert_eq!(code, 200, "{body}");
    until("deleted again on node 2", || (!ps[1].weft(&["topic", "describe", "gone"]).status.success()).then_some(()));

    // A node down during the delete removes its copy and raft logs when it comes back.
    let o = ps[0].weft(&["topic", "create", "late", "--partitions", "1", "--replicas", "3"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    let o = ps[0].weft_in(&["produce", "late", "--partition", "0"], "p\nq\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    until("node 3 has the records", || local_records(&ps[2], "late", 0).filter(|r| r.len() == 2));
    let late = groups(&ps[2].status().unwrap(), "late");
    ps[2].kill();
    // Node 3 may have led the metadata group: retried through the election
    // (a timed-out delete that applied answers not_found next time).
    until("the delete applied", || {
        let o = ps[1].weft(&["topic", "delete", "late"]);
        (o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not_found")).then_some(())
    });
    ps[2].start(&peers);
    until("node 3 forgot the topic after its restart", || {
        let s = ps[2].status()?;
        let described = ps[2].weft(&["topic", "describe", "late"]).status.success();
        let logs = late.iter().any(|g| ps[2].dir.join("cluster").join("groups").join(format!("{g}.wal")).exists());
        (s["meta_applied"].as_u64()? > 0 && groups(&s, "late").is_empty() && !described && !logs).then_some(())
    });
    assert!(local_records(&ps[2], "late", 0).is_none());
}

/// The topic.json of the node's local copy (its config as weft-log applies it).
fn copy_config(p: &Proc, topic: &str) -> Option<Value> {
    let mut stack = vec![p.dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let path = e.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "trash") {
                    continue;
                }
                if path.file_name().is_some_and(|n| n == topic) && path.join("topic.json").exists() {
                    return serde_json::from_slice(&std::fs::read(path.join("topic.json")).ok()?).ok();
                }
                stack.push(path);
            }
        }
    }
    None
}

#[test]
fn alter_of_a_replicated_topic_reaches_every_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "cfg", "--partitions", "2", "--replicas", "3"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("placement visible on node 3", || ps[2].status().map(|s| replicas(&s, "cfg", 1)).filter(|r| r.len() == 3));

    let o = ps[0].weft(&["topic", "alter", "cfg", "--retention-ms", "3600000"]);
    assert!(o.status.success(), "topic alter: {}", String::from_utf8_lossy(&o.stderr));
    for p in &ps {
        let d = until("the altered config described", || p.json(&["topic", "describe", "cfg", "--json"]).filter(|d| d["config"]["retention_ms"] == 3_600_000));
        assert_eq!(d["config"]["partitions"], 2, "node {}: {d}", p.id);
        // Each replica's own copy applied it too (what its retention runs on).
        let c = until("the copy's config", || copy_config(p, "cfg").filter(|c| c.to_string().contains("3600000")));
        assert!(c.to_string().contains("3600000"), "node {}: {c}", p.id);
    }
    // HTTP PATCH on node 2; described on node 3.
    let (code, body) = ps[1].http("PATCH", "/v1/topics/cfg", r#"{"max_record_bytes":4096}"#).unwrap();
    assert_eq!(code, 200, "{body}");
    let d = until("the second alter on node 3", || ps[2].json(&["topic", "describe", "cfg", "--json"]).filter(|d| d["config"]["max_record_bytes"] == 4096));
    assert_eq!(d["config"]["retention_ms"], 3_600_000, "an alter changes only what it names: {d}");
    // A record over the new limit is refused on any node.
    let big = "x".repeat(5000);
    let o = ps[2].weft_in(&["produce", "cfg", "--partition", "0"], &format!("{big}\n"));
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("too_large") || out.contains("max_record_bytes"), "{out}");
    // The partition count of a replicated topic cannot change.
    let o = ps[2].weft(&["topic", "alter", "cfg", "--partitions", "4"]);
    assert!(!o.status.success(), "partitions of a replicated topic altered");
}
