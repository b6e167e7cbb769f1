//! Replicated tables through real `weft serve` processes (docs/query.md,
//! "Tables: replicated"): 3 nodes, `CREATE TABLE` through the metadata
//! group (replicas 3), puts and CAS (`SET ... IF VERSION`) through
//! different nodes with `query.execute`, kill -9 of the table group's raft
//! leader; every acknowledged write is on the survivors and on the
//! restarted node, revisions are identical on every replica, a CAS with a
//! stale version fails everywhere. Children are ended by pid.
//! A `weft kv watch` (gRPC Watch) started on the leader before the kill and
//! resumed on a survivor from its last revision + 1 sees every later event
//! exactly once.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{procs, start_cluster, until, Proc};
use common::{free_port, WEFT};

fn grpc_addr(p: &Proc) -> String {
    p.env.iter().find(|(k, _)| k == "WEFT_GRPC_ADDR").unwrap().1.clone()
}

/// `weft kv watch cfg --prefix k --start-revision FROM --json` on `p`,
/// its output lines collected by a thread: (child, revisions seen).
fn watch(p: &Proc, from: u64, count: Option<u64>) -> (std::process::Child, Arc<Mutex<Vec<u64>>>) {
    let mut c = Command::new(WEFT);
    c.args(["kv", "watch", "cfg", "--prefix", "k", "--start-revision", &from.to_string(), "--json", "--timeout-ms", "30000"]);
    if let Some(n) = count {
        c.args(["--count", &n.to_string()]);
    }
    let mut child = c.env("WEFT_GRPC_ADDR", grpc_addr(p)).env_remove("WEFT_ADDR").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                s.lock().unwrap().push(v["revision"].as_u64().unwrap());
            }
        }
    });
    (child, seen)
}

fn q(p: &Proc, aql: &str) -> Result<Value, String> {
    p.call("query.execute", &serde_json::json!({ "aql": aql }).to_string())
}

/// The table group's leader (group 1: the first group allocated, no topics here).
fn table_leader(ps: &[Proc]) -> Option<u64> {
    ps.iter().filter(|p| p.child.is_some()).find_map(|p| {
        let s = p.status()?;
        let l = s["groups"].as_array()?.iter().find(|g| g["group"] == 1)?["leader"].as_u64()?;
        (l != 0).then_some(l)
    })
}

/// Revision and every key's (value, version) on one node, read linearizably.
/// A node's table: revision, and key -> (value, version).
type Contents = (u64, BTreeMap<String, (String, u64)>);

fn contents(p: &Proc) -> Option<Contents> {
    let r = q(p, "RANGE cfg PREFIX ''").ok()?;
    let kvs = r["kvs"].as_array()?.iter().map(|kv| (kv["key"].as_str().unwrap().to_owned(), (kv["value"].as_str().unwrap().to_owned(), kv["version"].as_u64().unwrap()))).collect();
    Some((r["revision"].as_u64()?, kvs))
}

#[test]
fn a_replicated_table_keeps_every_acknowledged_write_across_a_leader_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in ps.iter_mut() {
        p.env.push(("WEFT_GRPC_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    }
    let peers = start_cluster(&mut ps);

    until("table created", || q(&ps[1], "CREATE TABLE cfg").map_err(|e| eprintln!("create: {e}")).ok());
    assert!(q(&ps[0], "CREATE TABLE cfg").unwrap_err().contains("exists"), "a second create must be refused");
    let shown = until("table listed on node 3", || q(&ps[2], "SHOW TABLES").ok().filter(|r| r["tables"] == serde_json::json!(["cfg"])));
    assert_eq!(shown["count"], 1);

    // Puts through every node (each acknowledged only once committed and applied).
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..9 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        until("a put", || q(&ps[i % 3], &format!("SET cfg '{k}' = '{v}'")).map_err(|e| eprintln!("put: {e}")).ok());
        acked.insert(k, v);
    }
    // The node's table limits hold before anything is proposed (a key over tables.max_key_bytes).
    let e = q(&ps[0], &format!("SET cfg '{}' = 'x'", "k".repeat(5000))).unwrap_err();
    assert!(e.contains("key"), "{e}");
    // CAS through node 2 with the current version succeeds; the same CAS through node 3 then fails.
    q(&ps[1], "SET cfg 'k0' = 'cas' IF VERSION = 1").unwrap();
    acked.insert("k0".into(), "cas".into());
    let e = q(&ps[2], "SET cfg 'k0' = 'again' IF VERSION = 1").unwrap_err();
    assert!(e.contains("compare") || e.contains("FAILED_PRECONDITION") || e.contains("failed_precondition"), "{e}");
    // A BATCH whose compare fails changes nothing (no revision used).
    let e = q(&ps[0], "BATCH { IF VERSION(cfg, 'k1') = 7 THEN { SET cfg 'k1' = 'no' } }").unwrap_err();
    assert!(e.contains("compare"), "{e}");
    let g = q(&ps[2], "GET cfg 'k0'").unwrap();
    assert_eq!(g["kvs"][0]["value"], "cas");
    assert_eq!(g["kvs"][0]["version"], 2);

    // kill -9 of the table group's leader.
    let leader = until("a table leader", || table_leader(&ps));
    let li = (leader - 1) as usize;
    // A watch on the leader from revision 1: it sees the 10 revisions so far before the kill.
    let (mut w1, seen1) = watch(&ps[li], 1, None);
    until("the watch saw every write so far", || (seen1.lock().unwrap().len() >= 10).then_some(()));
    ps[li].kill();
    let _ = w1.wait();
    let first: Vec<u64> = seen1.lock().unwrap().clone();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    for (j, &i) in survivors.iter().enumerate() {
        let (k, v) = (format!("k-after{j}"), format!("x{j}"));
        // A put that timed out may have committed: retrying the same put is harmless here.
        until("a put on a survivor", || q(&ps[i], &format!("SET cfg '{k}' = '{v}'")).map_err(|e| eprintln!("put: {e}")).ok());
        acked.insert(k, v);
    }
    // A stale CAS fails through every survivor.
    for &i in &survivors {
        let e = until("a CAS answer", || match q(&ps[i], "SET cfg 'k0' = 'stale' IF VERSION = 1") {
            Err(e) if e.contains("UNAVAILABLE") || e.contains("unavailable") => None,
            r => Some(r),
        });
        assert!(e.is_err(), "a stale CAS succeeded on node {}", i + 1);
    }

    // Restart the killed node from its data dir: it replays the table group's raft log and catches up.
    ps[li].start(&peers);
    let want = until("survivor contents", || contents(&ps[survivors[0]]));
    let mut seen = Vec::new();
    for p in &ps {
        let c = until("replica caught up", || contents(p).filter(|c| c.0 >= want.0));
        for (k, v) in &acked {
            assert_eq!(c.1.get(k).map(|x| &x.0), Some(v), "node {} lost {k}", p.id);
        }
        seen.push(c);
    }
    assert!(seen.iter().all(|c| *c == seen[0]), "replicas differ: {seen:?}");
    // The stale CAS also fails on the restarted node.
    assert!(q(&ps[li], "SET cfg 'k0' = 'stale' IF VERSION = 1").is_err());
    assert_eq!(q(&ps[li], "GET cfg 'k0'").unwrap()["kvs"][0]["value"], "cas");
    // The watch resumed on a survivor from its last revision + 1: every later event once.
    let last = *first.last().unwrap();
    let want_rev = seen[0].0;
    let (mut w2, seen2) = watch(&ps[survivors[0]], last + 1, Some(want_rev - last));
    let _ = w2.wait();
    let all: Vec<u64> = first.iter().chain(seen2.lock().unwrap().iter()).copied().collect();
    assert_eq!(all, (1..=want_rev).collect::<Vec<_>>(), "events lost or repeated across the resume");
    // HISTORY of k0 on the restarted node: the CAS version, then the first put.
    let h = q(&ps[li], "HISTORY cfg 'k0'").unwrap();
    let vals: Vec<&str> = h["kvs"].as_array().unwrap().iter().map(|kv| kv["value"].as_str().unwrap()).collect();
    assert_eq!(vals, vec!["cas", "v0"]);
    // A serializable read (the local replica as applied, no ReadIndex) on every node, after it caught up.
    for p in &ps {
        let r = p.call("query.execute", &serde_json::json!({ "aql": "GET cfg 'k-after0'", "serializable": true }).to_string()).unwrap();
        assert_eq!(r["kvs"][0]["value"], "x0", "node {}", p.id);
    }
}
