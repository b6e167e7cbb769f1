//! Consumer-group membership on a cluster (docs/cluster.md, "Consumer
//! groups"): every group is coordinated by the metadata leader, and any node
//! forwards membership requests there, so two members talking to two
//! different nodes share one group. Three real `weft serve` processes, ended
//! by pid.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::{Value, json};

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{Proc, procs, replicas, start_cluster, until};

fn assignment(m: &Value) -> BTreeSet<u64> {
    m["assignment"].as_array().unwrap().iter().map(|a| a[1].as_u64().unwrap()).collect()
}

fn heartbeat(p: &Proc, m: &Value) -> Value {
    let body = json!({"group": "g", "member_id": m["member_id"], "generation": m["generation"]});
    p.call("log.group.heartbeat", &body.to_string()).unwrap()
}

/// A heartbeat over the node's HTTP gateway.
fn http_heartbeat(p: &Proc, m: &Value) -> Value {
    let (code, body) = p.http("POST", "/v1/groups/g/heartbeat", &json!({"member_id": m["member_id"], "generation": m["generation"]}).to_string()).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn members_on_two_nodes_share_one_group() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "jobs", "--partitions", "4", "--replicas", "2"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("placement visible on node 2", || ps[1].status().map(|s| replicas(&s, "jobs", 3)).filter(|r| r.len() == 2));

    // Member a through node 1, member b through node 2.
    let join = |p: &Proc, client: &str| p.call("log.group.join", &json!({"group": "g", "client_id": client, "topics": ["jobs"], "session_timeout_ms": 30000}).to_string()).unwrap();
    let mut a = join(&ps[0], "a");
    assert_eq!(assignment(&a).len(), 4, "the only member takes every partition: {a}");
    // b joins over node 2's HTTP gateway: the same coordinator as the native routes.
    let (code, body) = ps[1].http("POST", "/v1/groups/g/join", &json!({"client_id": "b", "topics": ["jobs"], "session_timeout_ms": 30000}).to_string()).unwrap();
    assert_eq!(code, 200, "{body}");
    let mut b: Value = serde_json::from_str(&body).unwrap();
    // Heartbeats carry the hand-off until both hold their share of the same generation.
    let (a, b) = until("a stable split of the partitions", || {
        a = heartbeat(&ps[0], &a);
        b = http_heartbeat(&ps[1], &b);
        let (sa, sb) = (assignment(&a), assignment(&b));
        let stable = a["generation"] == b["generation"] && a["pending"] == 0 && b["pending"] == 0 && sa.len() + sb.len() == 4;
        stable.then(|| (a.clone(), b.clone()))
    });
    let (sa, sb) = (assignment(&a), assignment(&b));
    assert!(sa.is_disjoint(&sb), "overlap: {a} {b}");
    assert_eq!(sa.union(&sb).copied().collect::<BTreeSet<_>>(), (0..4).collect(), "{a} {b}");
    assert_eq!((sa.len(), sb.len()), (2, 2), "{a} {b}");
    assert_eq!(a["members"], 2);

    // A third node describes and lists the same group (the CLI).
    let d = ps[2].json(&["group", "describe", "g", "--json"]).unwrap();
    let members: BTreeSet<String> = d["members"].as_array().unwrap().iter().map(|m| m["member_id"].as_str().unwrap().to_owned()).collect();
    let want: BTreeSet<String> = [&a, &b].iter().map(|m| m["member_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(members, want, "{d}");
    let list = ps[2].call("log.group.list", "{}").unwrap();
    assert!(list.as_array().unwrap().iter().any(|g| g["group"] == "g" && g["members"] == 2), "{list}");
    // ... and so does its HTTP gateway.
    let (code, body) = ps[2].http("GET", "/v1/groups/g", "").unwrap();
    assert_eq!(code, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["members"].as_array().map(Vec::len), Some(2), "{d}");

    // The fence travels too: b fetches its own partition through node 2, not a's.
    let mine = *sb.iter().next().unwrap();
    let theirs = *sa.iter().next().unwrap();
    let fetch = |p: u64| {
        let body = json!({"group": "g", "member_id": b["member_id"], "generation": b["generation"], "fetch": {"topic": "jobs", "partition": p, "offset": 0}});
        ps[1].call("log.group.fetch", &body.to_string())
    };
    assert!(fetch(mine).is_ok(), "{:?}", fetch(mine));
    let e = fetch(theirs).unwrap_err();
    assert!(e.contains("not_assigned") || e.contains("not assigned") || e.contains("fenced") || e.contains("conflict"), "{e}");
    // A fenced commit by b through node 3 of its own partition is accepted and read back anywhere.
    let commit = json!({"group": "g", "member_id": b["member_id"], "generation": b["generation"], "offsets": [{"topic": "jobs", "partition": mine, "offset": 0}]});
    ps[2].call("log.group.commit", &commit.to_string()).unwrap();
    let c = ps[0].call("log.group.committed", &json!({"group": "g", "topic": "jobs", "partition": mine}).to_string()).unwrap();
    assert_eq!(c["offset"], 0, "{c}");

    // a leaves through node 1; b's next heartbeat (through node 2) takes every partition.
    ps[0].call("log.group.leave", &json!({"group": "g", "member_id": a["member_id"]}).to_string()).unwrap();
    let mut b = b;
    let b = until("b holds every partition", || {
        b = heartbeat(&ps[1], &b);
        (assignment(&b).len() == 4 && b["pending"] == 0).then(|| b.clone())
    });
    assert_eq!(b["members"], 1, "{b}");

    // reset_offsets: refused on node 3 while b is a member (asked at the coordinator) ...
    let reset = |to: Value, dry_run: bool| ps[2].call("log.group.reset_offsets", &json!({"group": "g", "topic": "jobs", "to": to, "dry_run": dry_run}).to_string());
    let e = reset(json!("earliest"), false).unwrap_err();
    assert!(e.contains("group_active") || e.contains("active"), "{e}");
    ps[1].call("log.group.leave", &json!({"group": "g", "member_id": b["member_id"]}).to_string()).unwrap();
    // ... then computed from the replicas' copies and committed through the metadata group.
    let o = ps[2].weft_in(&["produce", "jobs", "--partition", "1"], "x\ny\nz\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    until("a dry run sees the three records", || {
        let r = reset(json!("latest"), true).ok()?;
        (r["partitions"][1]["offset"] == 3 && r["partitions"].as_array()?.len() == 4).then_some(())
    });
    let r = reset(json!({"offset": 2}), false).unwrap();
    assert_eq!(r["partitions"][1]["offset"], 2, "{r}");
    for (p, want) in [(1u64, 2u64), (0, 0), (3, 0)] {
        let c = ps[0].call("log.group.committed", &json!({"group": "g", "topic": "jobs", "partition": p}).to_string()).unwrap();
        assert_eq!(c["offset"], want, "partition {p}: {c}");
    }

    // group delete through node 3: refused while c (joined through node 2)
    // is live, asked at the coordinator; then the offsets go from the
    // metadata (every node reads none) and the group from the coordinator.
    let c = ps[1].call("log.group.join", &json!({"group": "g", "client_id": "c", "topics": ["jobs"], "session_timeout_ms": 30000}).to_string()).unwrap();
    let o = ps[2].weft(&["group", "delete", "g"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("live member"), "{err}");
    assert_eq!(ps[0].call("log.group.committed", &json!({"group": "g", "topic": "jobs", "partition": 1}).to_string()).unwrap()["offset"], 2, "a refused delete changes nothing");
    ps[1].call("log.group.leave", &json!({"group": "g", "member_id": c["member_id"]}).to_string()).unwrap();
    let o = ps[2].weft(&["group", "delete", "g"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for p in &ps {
        for part in 0..4u64 {
            let c = p.call("log.group.committed", &json!({"group": "g", "topic": "jobs", "partition": part}).to_string()).unwrap();
            assert!(c["offset"].is_null(), "node {} partition {part}: {c}", p.id);
        }
        let e = p.call("log.group.describe", &json!({"group": "g"}).to_string()).unwrap_err();
        assert!(e.contains("unknown_group") || e.contains("unknown group"), "node {}: {e}", p.id);
    }
    let e = ps[0].call("log.group.delete", &json!({"group": "g"}).to_string()).unwrap_err();
    assert!(e.contains("unknown_group") || e.contains("unknown group"), "{e}");
    let (code, body) = ps[0].http("DELETE", "/v1/groups/g", "").unwrap();
    assert_eq!(code, 404, "{body}");
}

/// Offsets of a replicated topic expire by age (Kafka's
/// offsets.retention.minutes; `log_store.offsets_retention_ms`, here 3 s):
/// the coordinator deletes a group left alone through the metadata group,
/// so every node reads no offset for it afterwards, while a group with a
/// live member and one that keeps committing keep theirs.
#[test]
fn replicated_offsets_expire_after_the_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in ps.iter_mut() {
        p.env = vec![
            ("WEFT_LOG_STORE_OFFSETS_RETENTION_MS".into(), "3000".into()),
            ("WEFT_LOG_STORE_MAINTENANCE_INTERVAL_MS".into(), "200".into()),
        ];
    }
    start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "jobs", "--partitions", "1", "--replicas", "3"]);
    assert!(o.status.success(), "topic create: {}", String::from_utf8_lossy(&o.stderr));
    until("placement visible on node 3", || ps[2].status().map(|s| replicas(&s, "jobs", 0)).filter(|r| r.len() == 3));
    let o = ps[0].weft_in(&["produce", "jobs"], "a\nb\nc\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    let commit = |p: &Proc, g: &str, offset: u64| {
        let (code, body) = p.http("POST", &format!("/v1/groups/{g}/commit"), &json!({"offsets": [{"topic": "jobs", "partition": 0, "offset": offset}]}).to_string()).unwrap();
        assert!((200..300).contains(&code), "{code} {body}");
    };
    let committed = |p: &Proc, g: &str| p.call("log.group.committed", &json!({"group": g, "topic": "jobs", "partition": 0}).to_string()).unwrap()["offset"].clone();
    until("the topic's leader takes commits", || {
        let (code, _) = ps[1].http("POST", "/v1/groups/old/commit", &json!({"offsets": [{"topic": "jobs", "partition": 0, "offset": 2}]}).to_string())?;
        (code == 200 || code == 204).then_some(())
    });
    commit(&ps[2], "fresh", 1);
    // "live" has a member (joined through node 1) that commits once.
    let m = ps[0].call("log.group.join", &json!({"group": "live", "client_id": "m", "topics": ["jobs"], "session_timeout_ms": 30000}).to_string()).unwrap();
    let c = json!({"group": "live", "member_id": m["member_id"], "generation": m["generation"], "offsets": [{"topic": "jobs", "partition": 0, "offset": 3}]});
    ps[0].call("log.group.commit", &c.to_string()).unwrap();
    for p in &ps {
        assert_eq!(committed(p, "old"), 2, "node {}", p.id);
    }
    let start = std::time::Instant::now();
    let mut next = 1;
    until("old's offsets expired on every node", || {
        next = next % 3 + 1;
        commit(&ps[2], "fresh", next);
        ps[0].call("log.group.heartbeat", &json!({"group": "live", "member_id": m["member_id"], "generation": m["generation"]}).to_string()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        ps.iter().all(|p| committed(p, "old").is_null()).then_some(())
    });
    assert!(start.elapsed() >= std::time::Duration::from_millis(2500), "expired before its retention: {:?}", start.elapsed());
    for p in &ps {
        assert_eq!(committed(p, "fresh"), next, "node {}: a group that commits is kept", p.id);
        assert_eq!(committed(p, "live"), 3, "node {}: a group with a member is kept", p.id);
        let e = p.call("log.group.describe", &json!({"group": "old"}).to_string()).unwrap_err();
        assert!(e.contains("unknown_group") || e.contains("unknown group"), "node {}: {e}", p.id);
    }
    let expired: f64 = ps
        .iter()
        .map(|p| {
            let (_, m) = p.http("GET", "/metrics", "").unwrap();
            m.lines().find_map(|l| l.strip_prefix("weft_log_groups_expired_total ")?.trim().parse::<f64>().ok()).unwrap_or(0.0)
        })
        .sum();
    assert_eq!(expired, 1.0, "one expiry, counted by the coordinator");
}
