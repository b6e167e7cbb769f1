//! The partition applier's batch bounds come from config keys
//! (`cluster.apply_batch_*`, docs/operations.md) and show in stats: with
//! `cluster.apply_batch_records = 25` and entries of 10 records, no append
//! of any copy holds more than 25 records, while every record lands once
//! at its offset on every replica (a follower paused while 200 records
//! commit catches up through the same bound). A bound of 0 is refused at
//! start. Real `weft serve` processes, ended by pid.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{partition_leader, procs, start_cluster, until, Proc, stat};

/// Every record of this node's own copy: (offset, value).
fn copy(p: &Proc) -> Option<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let body = format!(r#"{{"topic":"ab","partition":0,"offset":{at},"max_records":10000}}"#);
        let f = p.call("cluster.local.fetch", &body).ok()?;
        let recs = f["records"].as_array()?;
        if recs.is_empty() {
            return Some(out);
        }
        // Values come as byte arrays (JSON bodies carry bytes so).
        out.extend(recs.iter().map(|r| (r["offset"].as_u64().unwrap(), String::from_utf8(serde_json::from_value(r["value"].clone()).unwrap()).unwrap())));
        at = f["next_offset"].as_u64()?;
    }
}

/// The `apply` counters of a node's `cluster.status`.
fn apply(p: &Proc) -> Option<Value> {
    p.status().map(|s| s["apply"].clone()).filter(Value::is_object)
}

fn produce(p: &Proc, from: u64, n: u64) {
    let lines: String = (from..from + n).map(|i| format!("v{i}\n")).collect();
    // --batch 10: one request, so one raft entry, per 10 records.
    let o = p.weft_in(&["produce", "ab", "--partition", "0", "--batch", "10"], &lines);
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn applier_bounds_from_config_hold_and_show_in_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in &mut ps {
        p.env.push(("WEFT_CLUSTER_APPLY_BATCH_RECORDS".into(), "25".into()));
    }
    start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "ab", "--partitions", "1", "--replicas", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let leader = until("a partition leader", || partition_leader(&ps, "ab", 0));
    let via = ps.iter().position(|p| p.id == leader).unwrap();
    produce(&ps[via], 0, 200);

    // A follower misses 200 more records, then takes them all at once.
    let f = ps.iter().position(|p| p.id != leader).unwrap();
    ps[f].pause();
    produce(&ps[via], 200, 200);
    ps[f].resume();

    let want: Vec<(u64, String)> = (0..400).map(|i| (i, format!("v{i}"))).collect();
    for p in &ps {
        let got = until("every record in this copy", || copy(p).filter(|c| c.len() >= 400));
        assert_eq!(got, want, "node {}: the copy holds every record once, at its offset", p.id);
        let a = until("the appliers' counters", || apply(p).filter(|a| a["records"] == 400));
        let n = |k: &str| a[k].as_u64().unwrap_or_else(|| panic!("node {}: no apply.{k} in {a}", p.id));
        // 40 entries of 10 records, each taken and written once on this node;
        // a leader elected again under load adds an empty entry of its term.
        assert_eq!(n("records"), 400, "node {}: {a}", p.id);
        assert!((40..=44).contains(&n("entries")), "node {}: {a}", p.id);
        assert!(n("max_batch_records") <= 25, "node {}: an append of more than cluster.apply_batch_records: {a}", p.id);
        // Two entries (20 records) at most per append: at least 20 appends.
        assert!((20..=44).contains(&n("batches")), "node {}: {a}", p.id);
        assert_eq!(n("bytes"), want.iter().map(|(_, v)| v.len() as u64).sum::<u64>(), "node {}: {a}", p.id);
        assert_eq!((n("queued_entries"), n("queued_bytes")), (0, 0), "node {}: nothing left queued: {a}", p.id);
        // The same counters in `weft stats` and on /metrics.
        assert_eq!(stat(p, "cluster.apply.records"), Some(400), "node {}", p.id);
        assert_eq!(stat(p, "cluster.apply.batches"), Some(n("batches")), "node {}", p.id);
        assert!(stat(p, "cluster.apply.cut_records").is_some() && stat(p, "cluster.passes_cut").is_some() && stat(p, "cluster.incoming_queued").is_some());
        let (code, body) = p.http("GET", "/metrics", "").unwrap();
        assert_eq!(code, 200);
        assert!(body.lines().any(|l| l == "weft_cluster_apply_records_total 400"), "node {}: /metrics", p.id);
        assert!(body.lines().any(|l| l.starts_with("weft_cluster_apply_cuts_total{bound=\"records\"}")), "node {}: /metrics", p.id);
        // Nothing turned away by the queue's bound in a healthy run.
        assert!(body.lines().any(|l| l == "weft_cluster_apply_refused_total 0"), "node {}: /metrics", p.id);
        assert!(body.lines().any(|l| l == "weft_cluster_apply_held_back_total 0"), "node {}: /metrics", p.id);
        assert_eq!(stat(p, "cluster.apply.held_back"), Some(0), "node {}", p.id);
        eprintln!("node {}: {a}", p.id);
    }
    let text = ps[0].weft(&["cluster", "status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("400 records"), "{}", String::from_utf8_lossy(&text.stdout));
}

#[test]
fn a_zero_bound_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=1);
    let p = &mut ps[0];
    p.env.push(("WEFT_CLUSTER_APPLY_BATCH_RECORDS".into(), "0".into()));
    let peers = format!("1={}", p.cluster_addr());
    p.start(&peers);
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = p.child.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "weft serve did not exit with cluster.apply_batch_records = 0");
        std::thread::sleep(Duration::from_millis(100));
    };
    p.child = None;
    assert!(!status.success());
    let log = std::fs::read_to_string(p.dir.with_extension("log")).unwrap();
    assert!(log.contains("cluster.apply_batch_records must be 1 to"), "{log}");
}
