//! Replicated tables beyond GET/SET (docs/query.md, "Tables: replicated"),
//! through 3 real `weft serve` processes and the native `query.execute`:
//! a table with 1 replica (`CREATE TABLE ... REPLICAS 1`) and one with 2
//! (`weft table create --replicas 2`), so some nodes have none and forward
//! (one hop, `cluster.local.query`); FILTER and UPDATE on every node;
//! `weft query --serializable`; `tables.max_tables` and
//! `tables.max_table_bytes` (RESOURCE_EXHAUSTED); DROP TABLE closes the
//! table's raft group on every replica and removes its raft log. Children
//! are ended by pid.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::{json, Value};

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{procs, start_cluster, until, Proc};
use common::free_port;

fn q(p: &Proc, aql: &str) -> Result<Value, String> {
    p.call("query.execute", &json!({ "aql": aql }).to_string())
}

/// The replicas of a table from the (linearizable) metadata, and its group.
fn placement(p: &Proc, table: &str) -> Option<(u64, BTreeSet<u64>)> {
    let m = p.call("cluster.meta", "null").map_err(|e| eprintln!("cluster.meta: {e}")).ok()?;
    let t = &m["tables"][table];
    Some((t["group"].as_u64()?, t["replicas"].as_array()?.iter().map(|r| r.as_u64().unwrap()).collect()))
}

/// Raft groups a node hosts (its `cluster status`).
fn groups(p: &Proc) -> Option<BTreeSet<u64>> {
    Some(p.status()?["groups"].as_array()?.iter().filter_map(|g| g["group"].as_u64()).collect())
}

fn grpc_of(p: &Proc) -> String {
    p.env.iter().find(|(k, _)| k == "WEFT_GRPC_ADDR").unwrap().1.clone()
}

fn holder_of<'a>(ps: &'a [Proc], replicas: &BTreeSet<u64>) -> &'a Proc {
    ps.iter().find(|p| replicas.contains(&p.id)).unwrap()
}

fn wal(p: &Proc, group: u64) -> std::path::PathBuf {
    p.dir.join("cluster").join("groups").join(format!("{group}.wal"))
}

#[test]
fn forwarding_filter_update_limits_and_drop_on_replicated_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in ps.iter_mut() {
        p.env.push(("WEFT_GRPC_ADDR".into(), format!("127.0.0.1:{}", free_port())));
        p.env.push(("WEFT_TABLES_MAX_TABLES".into(), "3".into()));
        p.env.push(("WEFT_TABLES_MAX_TABLE_BYTES".into(), "4000".into()));
    }
    start_cluster(&mut ps);

    // One replica through AQL; two through the CLI's --replicas (gRPC).
    until("table solo created", || q(&ps[0], "CREATE TABLE solo REPLICAS 1").map_err(|e| eprintln!("create: {e}")).ok());
    let grpc = ps[1].env.iter().find(|(k, _)| k == "WEFT_GRPC_ADDR").unwrap().1.clone();
    let o = std::process::Command::new(common::WEFT)
        .args(["table", "create", "pair", "--replicas", "2", "--grpc-addr", &grpc])
        .env_remove("WEFT_GRPC_ADDR")
        .output()
        .unwrap();
    assert!(o.status.success(), "weft table create --replicas 2: {}", String::from_utf8_lossy(&o.stderr));
    let e = q(&ps[2], "CREATE TABLE wide REPLICAS 4").unwrap_err();
    assert!(e.contains("replicas must be 1 to"), "{e}");
    let (solo_group, solo) = until("solo placed", || placement(&ps[0], "solo"));
    // Every node advertised its gRPC address (what a not_leader answer names as grpc_addr).
    until("gRPC addresses in the metadata", || {
        let m = ps[0].call("cluster.meta", "null").ok()?;
        ps.iter().all(|p| m["grpc_addrs"][p.id.to_string()] == grpc_of(p).as_str()).then_some(())
    });
    let (_, pair) = until("pair placed", || placement(&ps[0], "pair"));
    assert_eq!((solo.len(), pair.len()), (1, 2), "REPLICAS honoured: {solo:?} {pair:?}");

    // Writes and reads through every node, replica or not (a node without one forwards).
    for (i, p) in ps.iter().enumerate() {
        for t in ["solo", "pair"] {
            let doc = json!({"n": i, "site": if i == 0 { "north" } else { "south" }}).to_string();
            until("a put", || q(p, &format!("SET {t} 'k{i}' = {doc}")).map_err(|e| eprintln!("put via {}: {e}", p.id)).ok());
        }
    }
    for p in &ps {
        for t in ["solo", "pair"] {
            let r = q(p, &format!("RANGE {t} PREFIX 'k'")).unwrap();
            assert_eq!(r["count"], 3, "node {} {t}: {r}", p.id);
            // FILTER and its LIMIT/OFFSET on a replicated table, on any node.
            let f = q(p, &format!("FILTER {t} WHERE site = 'south' AND n >= 1")).unwrap();
            let keys: Vec<&str> = f["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
            assert_eq!(keys, vec!["k1", "k2"], "node {} {t}", p.id);
            let f = q(p, &format!("FILTER {t} WHERE site = 'south' LIMIT 1 OFFSET 1")).unwrap();
            assert_eq!(f["kvs"][0]["key"], "k2");
            assert_eq!(f["more"], Value::Null);
        }
    }
    // Errors cross the hop with their code: a failed compare, a missing key's history.
    let outsider = ps.iter().find(|p| !solo.contains(&p.id)).unwrap();
    // A watch through a node without a replica (long polls of a replica):
    // history from revision 1, then live events; without a start revision,
    // from the current revision + 1.
    let watch = |args: &[&str]| {
        std::process::Command::new(common::WEFT)
            .args(["kv", "watch", "solo", "--prefix", "k", "--json", "--timeout-ms", "30000", "--grpc-addr", &grpc_of(outsider)])
            .args(args)
            .env_remove("WEFT_GRPC_ADDR")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let revisions = |c: std::process::Child| -> Vec<u64> {
        let o = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["revision"].as_u64().unwrap()).collect()
    };
    assert_eq!(revisions(watch(&["--start-revision", "1", "--count", "3"])), vec![1, 2, 3]);
    let live = watch(&["--start-revision", "4", "--count", "1"]);
    q(holder_of(&ps, &solo), "SET solo 'k3' = 3").unwrap();
    assert_eq!(revisions(live), vec![4]);
    q(&ps[0], "DELETE solo 'k3'").unwrap();
    let mut now = watch(&["--count", "1"]);
    // It starts after the revision it reads first: keep writing until it has seen one.
    let mut n = 0;
    until("a watch from now saw a write", || {
        n += 1;
        q(outsider, &format!("SET solo 'kw{n}' = 1")).unwrap();
        now.try_wait().unwrap().map(|_| ())
    });
    let o = now.wait_with_output().unwrap();
    let rev = serde_json::from_str::<Value>(String::from_utf8_lossy(&o.stdout).trim()).unwrap()["revision"].as_u64().unwrap();
    assert!(rev > 5, "a watch without a start revision begins after the current one, got {rev}");
    for i in 1..=n {
        q(outsider, &format!("DELETE solo 'kw{i}'")).unwrap();
    }
    let e = q(outsider, "SET solo 'k0' = 'x' IF VERSION = 9").unwrap_err();
    assert!(e.contains("compare"), "forwarded FAILED_PRECONDITION: {e}");
    let e = q(outsider, "GET nosuch 'k'").unwrap_err();
    assert!(e.contains("not_found") || e.contains("NOT_FOUND") || e.contains("not found"), "{e}");
    // BATCH through a node without a replica.
    let b = q(outsider, "BATCH { IF VERSION(solo, 'k0') = 1 THEN { SET solo 'b' = 1; GET solo 'k0' } }").unwrap();
    assert_eq!(b["succeeded"], true);

    // UPDATE through a node without a replica, then through a replica: the
    // computed values are on every node.
    let u = q(outsider, "UPDATE solo SET state.seen = true WHERE site = 'south'").unwrap();
    assert_eq!(u["count"], 2, "{u}");
    let holder = ps.iter().find(|p| solo.contains(&p.id)).unwrap();
    let u = q(holder, "UPDATE solo SET n = 100 WHERE site = 'north'").unwrap();
    assert_eq!(u["count"], 1);
    for p in &ps {
        let g = q(p, "GET solo 'k1'").unwrap();
        let v: Value = serde_json::from_str(g["kvs"][0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(v["state"]["seen"], true, "node {}", p.id);
        assert_eq!(v["n"], 1);
        let g = q(p, "GET solo 'k0'").unwrap();
        let v: Value = serde_json::from_str(g["kvs"][0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(v["n"], 100);
        assert!(v.get("state").is_none(), "north was not matched by the first UPDATE");
    }
    let pair_up = q(&ps[0], "UPDATE pair SET n = 7 WHERE n = 2").unwrap();
    assert_eq!(pair_up["count"], 1);
    // weft query --serializable: the answering node's replica, no leader round trip.
    for p in &ps {
        let grpc = p.env.iter().find(|(k, _)| k == "WEFT_GRPC_ADDR").unwrap().1.clone();
        let o = std::process::Command::new(common::WEFT).args(["query", "--serializable", "--json", "GET pair 'k2'", "--grpc-addr", &grpc]).env_remove("WEFT_GRPC_ADDR").output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        // A forwarded serializable read may trail; it converges to the UPDATE.
        if r["kvs"][0]["value"].as_str().unwrap().contains("\"n\":7") {
            continue;
        }
        until("serializable read caught up", || {
            let o = std::process::Command::new(common::WEFT).args(["query", "--serializable", "--json", "GET pair 'k2'", "--grpc-addr", &grpc]).env_remove("WEFT_GRPC_ADDR").output().ok()?;
            String::from_utf8_lossy(&o.stdout).contains("\\\"n\\\":7").then_some(())
        });
    }

    // tables.max_tables = 3: the third table is the last one.
    until("table t3 created", || q(&ps[2], "CREATE TABLE t3 REPLICAS 1").map_err(|e| eprintln!("create: {e}")).ok());
    let e = q(&ps[1], "CREATE TABLE t4").unwrap_err();
    assert!(e.contains("RESOURCE_EXHAUSTED") && e.contains("tables"), "max_tables: {e}");
    // tables.max_table_bytes = 4000: 1000-byte values fill it; then refused
    // (RESOURCE_EXHAUSTED), through a replica and through a forwarding node;
    // a delete still passes.
    let big = "x".repeat(1000);
    let mut refused = None;
    for i in 0..10 {
        match q(&ps[i % 3], &format!("SET t3 'big{i}' = '{big}'")) {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (n, e) = refused.expect("tables.max_table_bytes never refused a put");
    assert!(n >= 3, "refused too early, after {n} puts: {e}");
    assert!(e.contains("RESOURCE_EXHAUSTED") && e.contains("table bytes"), "{e}");
    for p in &ps {
        let e = q(p, "SET t3 'more' = 'y'").unwrap_err();
        assert!(e.contains("RESOURCE_EXHAUSTED"), "node {}: {e}", p.id);
    }
    q(&ps[0], "DELETE t3 'big0'").unwrap();

    // DROP TABLE through a node without a replica: every node forgets it,
    // the replica closes the group and removes its raft log.
    let holder_idx = ps.iter().position(|p| solo.contains(&p.id)).unwrap();
    assert!(wal(&ps[holder_idx], solo_group).exists());
    assert!(until("the solo group open", || groups(&ps[holder_idx])).contains(&solo_group));
    q(outsider, "DROP TABLE solo").unwrap();
    for p in &ps {
        until("solo gone from SHOW TABLES", || q(p, "SHOW TABLES").ok().filter(|r| !r["tables"].as_array().unwrap().iter().any(|t| t == "solo")));
        until("solo's group closed", || groups(p).filter(|g| !g.contains(&solo_group)));
        until("solo's raft log removed", || (!wal(p, solo_group).exists()).then_some(()));
        let e = q(p, "GET solo 'k0'").unwrap_err();
        assert!(e.contains("not_found") || e.contains("NOT_FOUND") || e.contains("not found"), "node {}: {e}", p.id);
    }
    assert!(q(&ps[0], "DROP TABLE solo").unwrap_err().contains("not"), "a second drop is NOT_FOUND");
    // The name can be used again (a new group, empty), and the slot freed by the drop counts.
    until("solo re-created", || q(&ps[1], "CREATE TABLE solo REPLICAS 1").map_err(|e| eprintln!("create: {e}")).ok());
    let (g2, _) = until("solo placed again", || placement(&ps[0], "solo"));
    assert!(g2 > solo_group, "group ids are never reused");
    assert_eq!(q(&ps[2], "RANGE solo PREFIX ''").unwrap()["count"], 0);
}
