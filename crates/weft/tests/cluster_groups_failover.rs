//! Consumer groups on a cluster (docs/cluster.md, "Consumer groups"):
//! - a data-only node (a learner of the metadata group) forwards membership
//!   requests to the metadata leader like any node, so a member talking to
//!   it and a member talking to a control node share one group;
//! - membership is replicated through the metadata group, so when the
//!   metadata leader (the coordinator) is killed -9 the new leader takes
//!   over with the same members, generation and assignment: heartbeats go
//!   on without a rejoin, and every committed offset is still there.
//!
//! Three control+data `weft serve` processes and one data-only process,
//! ended by pid.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{Proc, procs, replicas, start_cluster, until};

/// Start a node that joins the running cluster as a data-only node (`--cluster-join --roles data`).
fn start_joining(p: &mut Proc) {
    let mut c = Command::new(common::WEFT);
    c.args(["serve", "--data-dir"])
        .arg(&p.dir)
        .args(["--tcp-addr", &format!("127.0.0.1:{}", p.native), "--disable", "udp"])
        .args(["--http-addr", &format!("127.0.0.1:{}", p.http)])
        .args(["--node-id", &p.id.to_string(), "--cluster-addr", &p.cluster_addr(), "--cluster-join", "--roles", "data"])
        .env_remove("WEFT_CONFIG")
        .env_remove("WEFT_ADDR")
        .env("WEFT_CLUSTER_TICK_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(p.dir.with_extension("log")).unwrap()));
    p.child = Some(c.spawn().unwrap());
}

fn assignment(m: &Value) -> BTreeSet<u64> {
    m["assignment"].as_array().unwrap().iter().map(|a| a[1].as_u64().unwrap()).collect()
}

fn join(p: &Proc, client: &str) -> Value {
    let body = json!({"group": "g", "client_id": client, "topics": ["jobs"], "session_timeout_ms": 30000});
    p.call("log.group.join", &body.to_string()).unwrap()
}

/// A heartbeat acknowledging the member's generation. Errors are returned
/// (an election may be under way), but a member the coordinator does not
/// know fails the test: members must never have to join again.
fn heartbeat(p: &Proc, m: &Value) -> Option<Value> {
    let body = json!({"group": "g", "member_id": m["member_id"], "generation": m["generation"]});
    match p.call("log.group.heartbeat", &body.to_string()) {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(!e.contains("unknown_member") && !e.contains("unknown member"), "a member was forgotten: {e}");
            None
        }
    }
}

/// Commit `offset` for each of the member's partitions (fenced by its generation).
fn commit(p: &Proc, m: &Value, offset: u64) -> Result<Value, String> {
    let offsets: Vec<Value> = assignment(m).into_iter().map(|part| json!({"topic": "jobs", "partition": part, "offset": offset})).collect();
    p.call("log.group.commit", &json!({"group": "g", "member_id": m["member_id"], "generation": m["generation"], "offsets": offsets}).to_string())
}

fn committed(p: &Proc, partition: u64) -> Option<u64> {
    p.call("log.group.committed", &json!({"group": "g", "topic": "jobs", "partition": partition}).to_string()).ok()?["offset"].as_u64()
}

#[test]
fn members_through_a_data_only_node_keep_their_generation_when_the_metadata_leader_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=4);
    let mut data = ps.pop().unwrap();
    start_cluster(&mut ps);
    let add = ps[0].weft(&["cluster", "add-node", "4", &data.cluster_addr(), "--roles", "data"]);
    assert!(add.status.success(), "add-node: {}", String::from_utf8_lossy(&add.stderr));
    start_joining(&mut data);
    until("node 4 registered as a data-only node", || {
        let s = ps[0].status()?;
        let n = s["nodes"].as_array()?.iter().find(|n| n["id"] == 4)?.clone();
        (n["native_addr"].is_string() && n["roles"] == json!(["data"]) && n["voter"] == false).then_some(())
    });
    let o = ps[0].weft(&["topic", "create", "jobs", "--partitions", "4", "--replicas", "3"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("placement visible on node 4", || data.status().map(|s| replicas(&s, "jobs", 3)).filter(|r| r.len() == 3));
    for part in 0..4 {
        let o = data.weft_in(&["produce", "jobs", "--partition", &part.to_string()], "r0\nr1\nr2\nr3\n");
        assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    }

    // The coordinator is the metadata leader; member b talks to a control node that is not it.
    let leader = until("a metadata leader", || ps[0].status()?["meta_leader"].as_u64());
    let li = ps.iter().position(|p| p.id == leader).unwrap();
    let bi = ps.iter().position(|p| p.id != leader).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != li).collect();

    // Member a through the data-only node 4, member b through a control node.
    let mut a = join(&data, "a");
    assert_eq!(assignment(&a).len(), 4, "the only member takes every partition: {a}");
    let mut b = join(&ps[bi], "b");
    let (a, b) = until("a stable split of the partitions", || {
        a = heartbeat(&data, &a)?;
        b = heartbeat(&ps[bi], &b)?;
        let stable = a["generation"] == b["generation"] && a["pending"] == 0 && b["pending"] == 0 && assignment(&a).len() + assignment(&b).len() == 4;
        stable.then(|| (a.clone(), b.clone()))
    });
    let (sa, sb) = (assignment(&a), assignment(&b));
    assert!(sa.is_disjoint(&sb), "overlap: {a} {b}");
    assert_eq!((sa.len(), sb.len(), a["members"].as_u64()), (2, 2, Some(2)), "{a} {b}");
    let generation = a["generation"].as_u64().unwrap();
    // Node 4 describes the coordinator's group, not a state of its own.
    let d = data.json(&["group", "describe", "g", "--json"]).unwrap();
    assert_eq!(d["members"].as_array().unwrap().len(), 2, "{d}");

    // Fenced commits through the node each member talks to.
    commit(&data, &a, 2).unwrap();
    commit(&ps[bi], &b, 2).unwrap();
    for part in 0..4 {
        assert_eq!(committed(&ps[others[0]], part), Some(2), "partition {part}");
    }
    // The membership as of the hand-off is in the metadata (linearizable read).
    until("the group's membership in the metadata", || {
        let m = ps[bi].call("cluster.meta", "null").ok()?;
        let g = &m["groups"]["g"];
        let owners = g["state"]["owners"].as_array()?;
        let held_by = |id: &Value| owners.iter().filter(|o| o[2] == *id).count();
        (g["generation"] == generation && held_by(&a["member_id"]) == 2 && held_by(&b["member_id"]) == 2).then_some(())
    });

    // kill -9 of the metadata leader, the coordinator.
    ps[li].kill();
    until("a new metadata leader", || ps[bi].status()?["meta_leader"].as_u64().filter(|l| *l != leader));
    // Both members go on heartbeating through their nodes: the new
    // coordinator knows them, with the same generation and partitions.
    let (a2, b2) = until("heartbeats answered by the new coordinator", || Some((heartbeat(&data, &a)?, heartbeat(&ps[bi], &b)?)));
    for (before, after) in [(&a, &a2), (&b, &b2)] {
        assert_eq!(after["member_id"], before["member_id"], "{after}");
        assert_eq!(after["generation"].as_u64(), Some(generation), "the generation changed: {before} -> {after}");
        assert_eq!(assignment(after), assignment(before), "{before} -> {after}");
        assert_eq!((after["members"].as_u64(), after["pending"].as_u64()), (Some(2), Some(0)), "{after}");
    }
    // No committed offset was lost, and the members commit on with the same generation.
    for part in 0..4 {
        assert_eq!(committed(&data, part), Some(2), "partition {part} after the kill");
    }
    until("a's commit through node 4", || commit(&data, &a2, 3).ok());
    until("b's commit through its control node", || commit(&ps[bi], &b2, 3).ok());
    for part in 0..4 {
        assert_eq!(committed(&ps[others[1]], part), Some(3), "partition {part}");
    }
    // a's fenced fetch through node 4 reads its own partition from the commit on.
    let mine = *sa.iter().next().unwrap();
    let f = data
        .call("log.group.fetch", &json!({"group": "g", "member_id": a["member_id"], "generation": generation, "fetch": {"topic": "jobs", "partition": mine, "offset": 3}}).to_string())
        .unwrap();
    let values: Vec<&Value> = f["records"].as_array().unwrap().iter().map(|r| &r["value"]).collect();
    assert_eq!(values.len(), 1, "{f}");

    // The killed node comes back as a follower: the group is still the one coordinator's.
    let peers = ps.iter().map(|p| format!("{}={}", p.id, p.cluster_addr())).collect::<Vec<_>>().join(",");
    ps[li].start(&peers);
    until("the restarted node describes both members at the same generation", || {
        let d = ps[li].json(&["group", "describe", "g", "--json"])?;
        (d["members"].as_array()?.len() == 2 && d["generation"].as_u64() == Some(generation)).then_some(())
    });
    // A leave is a membership change like a join: b takes all four at the next generation.
    data.call("log.group.leave", &json!({"group": "g", "member_id": a["member_id"]}).to_string()).unwrap();
    let mut b = b2;
    let b = until("b holds every partition", || {
        b = heartbeat(&ps[bi], &b)?;
        (assignment(&b).len() == 4 && b["pending"] == 0).then(|| b.clone())
    });
    assert!(b["generation"].as_u64().unwrap() > generation, "{b}");
}
