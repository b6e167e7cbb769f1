//! A replica that was down while the others' retention and compaction
//! removed the records it lacks still catches up (docs/cluster.md,
//! "Partition snapshots and catch-up"): it installs a snapshot, starts its
//! copy at the log start of the others when they no longer have its end
//! (retention), keeps the offsets and gaps of a compacted source, and then
//! serves the same records at the same offsets as the others for what they
//! still have. Real `weft serve` processes, ended by pid.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{partition_leader, procs, start_cluster, until, Proc, stat};

/// Every record of this node's own copy, from its log start: (offset, record).
fn copy(p: &Proc, topic: &str) -> Option<BTreeMap<u64, Value>> {
    let mut out = BTreeMap::new();
    let mut at = 0;
    loop {
        // A fetch reads one segment: go on from its `next_offset`.
        let body = format!(r#"{{"topic":"{topic}","partition":0,"offset":{at},"max_records":10000,"reset":"earliest"}}"#);
        let f = p.call("cluster.local.fetch", &body).ok()?;
        let recs = f["records"].as_array()?;
        if recs.is_empty() {
            return Some(out);
        }
        out.extend(recs.iter().map(|r| (r["offset"].as_u64().unwrap(), r.clone())));
        at = f["next_offset"].as_u64()?;
    }
}

/// The copy's end (high watermark) on this node.
fn end(p: &Proc, topic: &str) -> Option<u64> {
    let body = format!(r#"{{"topic":"{topic}","partition":0,"offset":0,"max_records":1,"reset":"earliest"}}"#);
    p.call("cluster.local.fetch", &body).ok()?["high_watermark"].as_u64()
}

fn produce(p: &Proc, topic: &str, lines: &str, keyed: bool) {
    let mut args = vec!["produce", topic, "--partition", "0", "--batch", "10"];
    if keyed {
        args.extend(["--key-separator", "="]);
    }
    let o = p.weft_in(&args, lines);
    assert!(o.status.success(), "produce to {topic} through node {}: {}", p.id, String::from_utf8_lossy(&o.stderr));
}

fn partition_stat(p: &Proc, topic: &str, field: &str) -> Option<u64> {
    let s = p.status()?;
    s["partitions"].as_array()?.iter().find(|x| x["topic"] == topic)?[field].as_u64()
}

fn under_replicated(p: &Proc, topic: &str) -> Option<bool> {
    let s = p.status()?;
    s["partitions"].as_array()?.iter().find(|x| x["topic"] == topic)?["under_replicated"].as_bool()
}

/// Records at the same offset are the same everywhere both copies have one.
fn agree(a: &BTreeMap<u64, Value>, b: &BTreeMap<u64, Value>, what: &str) -> usize {
    let mut both = 0;
    for (o, r) in a {
        if let Some(x) = b.get(o) {
            assert_eq!(r, x, "{what}: offset {o} differs");
            both += 1;
        }
    }
    both
}

#[test]
fn a_replica_catches_up_past_retention_and_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    for p in &mut ps {
        p.env.push(("WEFT_CLUSTER_SNAPSHOT_ENTRIES".into(), "5".into()));
        p.env.push(("WEFT_LOG_STORE_MAINTENANCE_INTERVAL_MS".into(), "200".into()));
    }
    let peers = start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "ret", "--replicas", "3", "--segment-bytes", "4096", "--retention-bytes", "8192"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ps[0].weft(&["topic", "create", "cmp", "--replicas", "3", "--segment-bytes", "4096", "--cleanup", "compact"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for t in ["ret", "cmp"] {
        until("a partition leader", || partition_leader(&ps, t, 0));
    }
    let pad = "x".repeat(100);
    let ret_lines = |from: u64, n: u64| (from..from + n).map(|i| format!("r{i}-{pad}\n")).collect::<String>();
    // Seven keys written over and over, and every tenth record a key of its
    // own: compaction keeps those, so a compacted copy has gaps between them.
    let cmp_lines = |from: u64, n: u64| {
        (from..from + n).map(|i| if i % 10 == 0 { format!("u{i}=v{i}-{pad}\n") } else { format!("k{}=v{i}-{pad}\n", i % 7) }).collect::<String>()
    };

    // Node 3 has the first 20 records of each, then dies (kill -9).
    produce(&ps[0], "ret", &ret_lines(0, 20), false);
    produce(&ps[0], "cmp", &cmp_lines(0, 20), true);
    for t in ["ret", "cmp"] {
        until("node 3's copy has 20 records", || (end(&ps[2], t)? == 20).then_some(()));
    }
    ps[2].kill();
    // Both partitions led by a live node before producing (a produce sent
    // to a dead leader times out with an unknown fate).
    for t in ["ret", "cmp"] {
        until("a live partition leader", || partition_leader(&ps, t, 0).filter(|l| *l != 3));
        // Two replicas of three: shown, not repaired (no spare data node).
        until("under-replicated while node 3 is down", || under_replicated(&ps[0], t).filter(|u| *u));
    }
    until("the leaders count both groups under-replicated", || (stat(&ps[0], "cluster.under_replicated")? + stat(&ps[1], "cluster.under_replicated")? == 2).then_some(()));
    // ... and the text status says so per partition.
    let text = String::from_utf8_lossy(&ps[0].weft(&["cluster", "status"]).stdout).into_owned();
    assert_eq!(text.lines().filter(|l| l.contains("under-replicated")).count(), 2, "{text}");

    // 400 more while it is down: retention removes old segments and
    // compaction old values of each key on nodes 1 and 2.
    produce(&ps[0], "ret", &ret_lines(20, 400), false);
    produce(&ps[0], "cmp", &cmp_lines(20, 400), true);
    for p in &ps[..2] {
        until("retention past node 3's end on the live replicas", || {
            let c = copy(p, "ret")?;
            (end(p, "ret")? == 420 && *c.keys().next()? > 20).then_some(())
        });
        until("compaction on the live replicas", || {
            let c = copy(p, "cmp")?;
            (end(p, "cmp")? == 420 && (c.len() as u64) < 420 - c.keys().next()?).then_some(())
        });
    }

    // Node 3 comes back: it installs a snapshot and rebuilds both copies from a replica's.
    ps[2].start(&peers);
    for t in ["ret", "cmp"] {
        until("node 3's copy caught up", || (end(&ps[2], t)? == 420).then_some(()));
        let caught = until("catch-up counted", || partition_stat(&ps[2], t, "caught_up_records").filter(|c| *c > 0));
        assert!(caught > 0, "{t}: records came from a replica's copy");
    }
    for t in ["ret", "cmp"] {
        until("fully replicated again", || under_replicated(&ps[0], t).filter(|u| !*u));
    }
    until("no under-replicated group", || (ps.iter().map(|p| stat(p, "cluster.under_replicated")).sum::<Option<u64>>()? == 0).then_some(()));
    let resets = partition_stat(&ps[2], "ret", "catch_up_resets").unwrap();
    assert!(resets >= 1, "node 3's end (20) was below every replica's log start: its copy restarted there");

    // Retention: node 3 holds a contiguous tail, the same records at the same offsets.
    let r3 = copy(&ps[2], "ret").unwrap();
    let first = *r3.keys().next().unwrap();
    assert!(first > 20, "node 3's copy starts past what it had (at {first})");
    assert_eq!(r3.keys().copied().collect::<Vec<_>>(), (first..420).collect::<Vec<_>>(), "no gap in a retained copy");
    for p in &ps[..2] {
        let both = agree(&r3, &copy(p, "ret").unwrap(), "ret");
        assert!(both > 0, "node {} and node 3 share records", p.id);
    }
    for (o, r) in &r3 {
        let v: Vec<u8> = serde_json::from_value(r["value"].clone()).unwrap();
        assert!(String::from_utf8(v).unwrap().starts_with(&format!("r{o}-")), "record r{o} at offset {o}");
    }

    // Compaction: offsets kept (gaps stay gaps), every record the same as
    // on the others at that offset, the newest value of every key the same.
    let c3 = copy(&ps[2], "cmp").unwrap();
    let span = 420 - c3.keys().next().unwrap();
    assert!((c3.len() as u64) < span, "node 3's copy came from a compacted source: it has gaps ({} records over {span} offsets)", c3.len());
    let newest = |c: &BTreeMap<u64, Value>| -> BTreeMap<String, Value> { c.values().map(|r| (r["key"].to_string(), r["value"].clone())).collect() };
    for p in &ps[..2] {
        let c = copy(p, "cmp").unwrap();
        agree(&c3, &c, "cmp");
        assert_eq!(newest(&c3), newest(&c), "node {} and node 3: newest value per key", p.id);
    }

    // And it keeps replicating: 10 more through node 3 land everywhere.
    produce(&ps[2], "ret", &ret_lines(420, 10), false);
    produce(&ps[2], "cmp", &cmp_lines(420, 10), true);
    for t in ["ret", "cmp"] {
        for p in &ps {
            until("430 everywhere", || (end(p, t)? == 430).then_some(()));
        }
        let c3 = copy(&ps[2], t).unwrap();
        for p in &ps[..2] {
            agree(&c3, &copy(p, t).unwrap(), t);
        }
        for o in 420..430 {
            assert!(c3.contains_key(&o), "{t}: offset {o} on node 3");
        }
    }
    for p in &mut ps {
        p.kill();
    }
}
