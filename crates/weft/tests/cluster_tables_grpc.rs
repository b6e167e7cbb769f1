//! Replicated tables over gRPC with a client nobody here wrote (Python
//! grpcio, stubs from proto/ by grpcio-tools; tests/py/cluster_tables_grpc.py),
//! against 3 real `weft serve` processes (docs/query.md, "Tables: replicated"):
//! - forwarding: a table with 1 replica; every call goes through a node that
//!   has none (writes, reads, Stream of RANGE and FILTER, a failed compare
//!   with its details);
//! - serializable reads: the other two replicas of a 3-replica table are
//!   SIGSTOPped; `serializable = true` still answers from the survivor's
//!   replica (no leader round trip), a linearizable read fails at its deadline.
//!
//! Needs WEFT_PEERS=1 and scripts/peers/grpc.sh. Children are ended by pid.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

mod common;
mod support;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{procs, start_cluster, until, Proc};
use common::free_port;
use support::{python, text};

fn q(p: &Proc, aql: &str) -> Result<Value, String> {
    p.call("query.execute", &json!({ "aql": aql }).to_string())
}

fn grpc_addr(p: &Proc) -> String {
    p.env.iter().find(|(k, _)| k == "WEFT_GRPC_ADDR").unwrap().1.clone()
}

fn placement(p: &Proc, table: &str) -> Option<(u64, Vec<u64>)> {
    let m = p.call("cluster.meta", "null").map_err(|e| eprintln!("cluster.meta: {e}")).ok()?;
    let t = &m["tables"][table];
    Some((t["group"].as_u64()?, t["replicas"].as_array()?.iter().map(|r| r.as_u64().unwrap()).collect()))
}

fn py(phase: &str, stubs: &std::path::Path, env: (&str, String)) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = Command::new(python())
        .arg(root.join("crates/weft/tests/py/cluster_tables_grpc.py"))
        .env("PHASE", phase)
        .env("STUBS", stubs)
        .env(env.0, env.1)
        .output()
        .unwrap();
    let stdout = text(&run.stdout);
    eprintln!("{stdout}");
    assert!(run.status.success(), "cluster_tables_grpc.py ({phase}) failed:\n{stdout}\n{}", text(&run.stderr));
}

#[test]
fn grpcio_forwarding_and_serializable_reads_on_a_cluster() {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        eprintln!("skipped: set WEFT_PEERS=1 (scripts/peers/grpc.sh installs grpcio)");
        return;
    }
    let (_stubs, out) = support::query_stubs();
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in ps.iter_mut() {
        p.env.push(("WEFT_GRPC_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    }
    start_cluster(&mut ps);
    until("table cfg created", || q(&ps[0], "CREATE TABLE cfg").map_err(|e| eprintln!("create: {e}")).ok());
    until("table solo created", || q(&ps[1], "CREATE TABLE solo REPLICAS 1").map_err(|e| eprintln!("create: {e}")).ok());

    // Forwarding: everything through a node with no replica of solo.
    let (_, solo) = until("solo placed", || placement(&ps[0], "solo"));
    assert_eq!(solo.len(), 1);
    let outsider = ps.iter().find(|p| !solo.contains(&p.id)).unwrap();
    py("forward", &out, ("OUTSIDER", grpc_addr(outsider)));

    // Serializable: write, make sure a follower applied it, stop the other two.
    until("a put", || q(&ps[0], "SET cfg 'k' = 'v'").map_err(|e| eprintln!("put: {e}")).ok());
    let (group, _) = until("cfg placed", || placement(&ps[0], "cfg"));
    let leader = until("cfg's leader", || {
        ps.iter().find_map(|p| p.status()?["groups"].as_array()?.iter().find(|g| g["group"] == group)?["leader"].as_u64().filter(|l| *l != 0))
    });
    let si = ps.iter().position(|p| p.id != leader).unwrap();
    // A linearizable read on the survivor: its replica has applied the put.
    assert_eq!(q(&ps[si], "GET cfg 'k'").unwrap()["kvs"][0]["value"], "v");
    for i in (0..3).filter(|&i| i != si) {
        ps[i].pause();
    }
    py("stopped", &out, ("SURVIVOR", grpc_addr(&ps[si])));
    for i in (0..3).filter(|&i| i != si) {
        ps[i].resume();
    }
    // With the quorum back, a linearizable read on the survivor works again.
    let r = until("a linearizable read after SIGCONT", || q(&ps[si], "GET cfg 'k'").ok());
    assert_eq!(r["kvs"][0]["value"], "v");
}
