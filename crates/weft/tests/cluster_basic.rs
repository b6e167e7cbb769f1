//! Three real `weft serve` processes on loopback form a cluster: the
//! metadata group elects a leader, any node accepts metadata writes, kill -9
//! of the leader loses nothing committed and the survivors keep serving, the
//! killed node comes back from its disk, and nodes are added and removed
//! through the CLI (raft membership changes). Children are ended by pid.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{free_port, WEFT};

struct Proc {
    id: u64,
    native: u16,
    http: u16,
    cluster: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn addr(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.native)
    }
    fn cluster_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cluster)
    }

    fn start(&mut self, peers: &str, join: bool) {
        let mut c = Command::new(WEFT);
        c.args(["serve", "--data-dir"])
            .arg(&self.dir)
            .args(["--tcp-addr", &format!("127.0.0.1:{}", self.native), "--disable", "udp"])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http)])
            .args(["--node-id", &self.id.to_string(), "--cluster-addr", &self.cluster_addr()])
            .env_remove("WEFT_CONFIG")
            .env_remove("WEFT_ADDR")
            // Fast ticks keep elections short on a loaded machine (bounds below are generous).
            .env("WEFT_CLUSTER_TICK_MS", "50")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(self.dir.with_extension("log")).unwrap()));
        if join {
            c.arg("--cluster-join");
        } else {
            c.args(["--cluster-peers", peers]);
        }
        self.child = Some(c.spawn().unwrap());
    }

    /// kill -9, by pid.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn weft(&self, args: &[&str]) -> Output {
        Command::new(WEFT).args(args).args(["--addr", &self.addr(), "--timeout-ms", "3000"]).env_remove("WEFT_ADDR").output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let o = self.weft(args);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    fn status(&self) -> Option<Value> {
        self.json(&["cluster", "status", "--json"])
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn procs(dir: &Path, ids: std::ops::RangeInclusive<u64>) -> Vec<Proc> {
    ids.map(|id| Proc { id, native: free_port(), http: free_port(), cluster: free_port(), dir: dir.join(format!("n{id}")), child: None }).collect()
}

fn voters(s: &Value) -> Vec<u64> {
    s["groups"].as_array().unwrap().iter().find(|g| g["group"] == 0).map(|g| g["voters"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()).unwrap_or_default()
}

#[test]
fn three_processes_failover_restart_add_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=4);
    let peers = ps[..3].iter().map(|p| format!("{}={}", p.id, p.cluster_addr())).collect::<Vec<_>>().join(",");
    for p in &mut ps[..3] {
        p.start(&peers, false);
    }
    // A leader, and every node registered with its roles and native address.
    let s = until("a metadata leader and three registered nodes", || {
        let s = ps[0].status()?;
        let registered = s["nodes"].as_array()?.iter().filter(|n| n["native_addr"].is_string() && n["live"] == true).count();
        (s["meta_leader"].is_u64() && registered == 3).then_some(s)
    });
    let leader = s["meta_leader"].as_u64().unwrap();
    assert_eq!(voters(&s), vec![1, 2, 3]);
    assert!(s["nodes"][0]["roles"].as_array().unwrap().contains(&"data".into()));

    // Create a topic through a follower (forwarded to the leader).
    let follower = ps[..3].iter().find(|p| p.id != leader).unwrap();
    let t = until("topic created", || follower.json(&["call", "cluster.create_topic", r#"{"name":"orders","partitions":3}"#]));
    let parts = t["topic"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[1]["replicas"], serde_json::json!([2, 3, 1]), "round-robin placement: {t}");
    // Each partition's raft group is opened on its replicas and elects a leader
    // (over the shared tick loop and connections); the leader knows the in-sync set.
    until("partition groups with leaders", || {
        let s = ps[0].status()?;
        let parts = s["partitions"].as_array()?;
        (parts.len() == 3 && parts.iter().all(|p| p["leader"].is_u64())).then_some(())
    });
    until("an in-sync set on a partition leader", || {
        ps[..3].iter().find_map(|p| {
            let s = p.status()?;
            s["partitions"].as_array()?.iter().any(|x| x["in_sync"].as_array().is_some_and(|a| a.len() == 3)).then_some(())
        })
    });
        // A duplicate is a typed conflict, decided by the state machine.
    let dup = follower.weft(&["call", "cluster.create_topic", r#"{"name":"orders","partitions":1}"#]);
    assert!(!dup.status.success() && String::from_utf8_lossy(&dup.stderr).contains("exists"));

    // kill -9 the metadata leader; the other two elect a new one and keep accepting writes.
    let li = ps.iter().position(|p| p.id == leader).unwrap();
    ps[li].kill();
    let survivor = ps[..3].iter().find(|p| p.id != leader).unwrap();
    until("a new leader", || {
        let s = survivor.status()?;
        let l = s["meta_leader"].as_u64()?;
        let down = s["nodes"].as_array()?.iter().any(|n| n["id"] == leader && n["live"] == false);
        (l != leader && down).then_some(())
    });
    until("a write after failover", || survivor.json(&["call", "cluster.create_topic", r#"{"name":"after","partitions":1,"replicas":2}"#]));

    // The killed node restarts from its disk and sees both topics (linearizable read).
    ps[li].start(&peers, false);
    let m = until("the restarted node's linearizable read", || {
        let m = ps[li].json(&["call", "cluster.meta"])?;
        (m["topics"]["orders"].is_object() && m["topics"]["after"].is_object()).then_some(m)
    });
    assert_eq!(m["topics"]["orders"]["partitions"][1]["replicas"], serde_json::json!([2, 3, 1]));

    // Human output names the leader and the partitions.
    let text = String::from_utf8(ps[0].weft(&["cluster", "status"]).stdout).unwrap();
    assert!(text.contains("metadata leader:") && text.contains("orders"), "{text}");

    // Add node 4 through the CLI, start it with --cluster-join, and see it catch up and vote.
    let add = ps[1].weft(&["cluster", "add-node", "4", &ps[3].cluster_addr(), "--roles", "control,data"]);
    assert!(add.status.success(), "add-node: {}", String::from_utf8_lossy(&add.stderr));
    ps[3].start("", true);
    until("node 4 caught up", || {
        let m = ps[3].json(&["call", "cluster.meta"])?;
        m["topics"]["after"].is_object().then_some(())
    });
    until("node 4 a voter", || voters(&ps[0].status()?).contains(&4).then_some(()));

    // Remove it again.
    let rm = ps[2].weft(&["cluster", "remove-node", "4"]);
    assert!(rm.status.success(), "remove-node: {}", String::from_utf8_lossy(&rm.stderr));
    until("node 4 gone", || {
        let s = ps[0].status()?;
        (!voters(&s).contains(&4) && !s["nodes"].as_array()?.iter().any(|n| n["id"] == 4 && n["voter"] == true)).then_some(())
    });
    for p in &mut ps {
        p.kill();
    }
}

#[test]
fn cluster_flags_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(WEFT)
        .args(["serve", "--data-dir"])
        .arg(tmp.path())
        .args(["--tcp-addr", &format!("127.0.0.1:{}", free_port()), "--disable", "udp", "--disable", "http"])
        .args(["--node-id", "1", "--cluster-addr", "127.0.0.1:1", "--cluster-peers", "1=127.0.0.1:1,x=2"])
        .env_remove("WEFT_CONFIG")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cluster.peers"), "{}", String::from_utf8_lossy(&o.stderr));
}

fn fetch_all(p: &Proc) -> Option<(u64, Vec<(u64, String)>)> {
    let f = p.json(&["call", "cluster.fetch", r#"{"topic":"events","partition":0,"offset":0,"max_records":10000}"#])?;
    let recs = f["records"].as_array()?.iter().map(|r| (r["offset"].as_u64().unwrap(), r["value"].as_str().unwrap().to_owned())).collect();
    Some((f["high_watermark"].as_u64()?, recs))
}

/// The replicated log end to end: produce through every node, kill -9 the
/// partition's leader mid-produce, keep producing through the others, restart
/// it, and check every acknowledged record is at the same offset on every
/// node, with no record twice and the same history everywhere.
#[test]
fn acknowledged_records_survive_kill_of_the_partition_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    let peers = ps.iter().map(|p| format!("{}={}", p.id, p.cluster_addr())).collect::<Vec<_>>().join(",");
    for p in &mut ps {
        p.start(&peers, false);
    }
    until("three registered nodes", || {
        let s = ps[0].status()?;
        (s["meta_leader"].is_u64() && s["nodes"].as_array()?.iter().filter(|n| n["native_addr"].is_string()).count() == 3).then_some(())
    });
    until("topic created", || ps[0].json(&["call", "cluster.create_topic", r#"{"name":"events","partitions":1,"replicas":3}"#]));
    let leader = until("a partition leader", || ps[1].status()?["partitions"][0]["leader"].as_u64());

    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut unknown = 0;
    let mut alive: Vec<usize> = vec![0, 1, 2];
    for i in 0..60 {
        if i == 20 {
            // kill -9 the partition leader in the middle of the stream.
            let li = ps.iter().position(|p| p.id == leader).unwrap();
            ps[li].kill();
            alive.retain(|&x| x != li);
        }
        let p = &ps[alive[i % alive.len()]];
        let value = format!("v{i}");
        let body = format!(r#"{{"topic":"events","partition":0,"value":"{value}"}}"#);
        match p.json(&["call", "cluster.produce", &body]) {
            Some(a) => acked.push((a["offset"].as_u64().unwrap(), value)),
            None => unknown += 1, // an error or a timeout: its fate is unknown, never retried
        }
    }
    assert!(acked.len() >= 30, "too few produces acknowledged: {} (unknown {unknown})", acked.len());
    eprintln!("produced 60: {} acknowledged, {unknown} unknown; leader {leader} killed after 20", acked.len());
    let li = ps.iter().position(|p| p.id == leader).unwrap();
    ps[li].start(&peers, false);

    let want_hw = acked.iter().map(|(o, _)| o + 1).max().unwrap();
    let mut logs = Vec::new();
    for p in &ps {
        let (hw, recs) = until("every node caught up", || fetch_all(p).filter(|(hw, _)| *hw >= want_hw));
        assert_eq!(recs.len() as u64, hw, "node {}: records below the high watermark are contiguous", p.id);
        for (i, (o, _)) in recs.iter().enumerate() {
            assert_eq!(*o, i as u64, "node {}: offsets from 0 without gaps", p.id);
        }
        for (o, v) in &acked {
            assert_eq!(recs.get(*o as usize).map(|r| &r.1), Some(v), "node {}: acknowledged {v} at offset {o}", p.id);
        }
        let mut values: Vec<&String> = recs.iter().map(|r| &r.1).collect();
        values.sort();
        values.dedup();
        assert_eq!(values.len(), recs.len(), "node {}: a record appears twice", p.id);
        logs.push(recs);
    }
    let common = logs.iter().map(Vec::len).min().unwrap();
    for l in &logs[1..] {
        assert_eq!(l[..common], logs[0][..common], "replicas disagree on the history");
    }
    for p in &mut ps {
        p.kill();
    }
}

/// Raft message and transport bounds out of range stop `weft serve` at start with an error
/// naming the key, before it opens a port (docs/operations.md).
#[test]
fn serve_refuses_raft_message_bounds_out_of_range() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("WEFT_CLUSTER_APPLY_QUEUE_MAX_BYTES", "0")], "cluster.apply_queue_max_bytes must be 1048576 to"),
        (&[("WEFT_CLUSTER_MAX_SIZE_PER_MSG", "0")], "cluster.max_size_per_msg must be 1 to"),
        (&[("WEFT_CLUSTER_MAX_PENDING_HANDSHAKES", "0")], "cluster.max_pending_handshakes must be 1 to"),
        (&[("WEFT_CLUSTER_MAX_INFLIGHT_MSGS", "0")], "cluster.max_inflight_msgs"),
        (&[("WEFT_CLUSTER_MAX_FRAME_BYTES", "1048576"), ("WEFT_CLUSTER_MAX_SIZE_PER_MSG", "1048576")], "must be at most half of cluster.max_frame_bytes"),
    ];
    for (env, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cluster = format!("127.0.0.1:{}", free_port());
        let (tcp, http, peers) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()), format!("1={cluster}"));
        let args = ["--data-dir", dir.path().to_str().unwrap(), "--tcp-addr", &tcp, "--disable", "udp", "--http-addr", &http];
        let node = ["--node-id", "1", "--cluster-addr", &cluster, "--cluster-peers", &peers];
        let err = common::serve_refusal(&[&args[..], &node[..]].concat(), env);
        assert!(err.contains(want), "{env:?}: stderr lacks {want:?}: {err}");
    }
}
