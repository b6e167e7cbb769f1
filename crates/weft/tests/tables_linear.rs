//! Linearizability of a replicated table under faults (issue #13's proof;
//! docs/query.md, "Linearizability checked"): 3 `weft serve` processes, a
//! table with 3 replicas, 4 concurrent clients doing random get / put / CAS
//! (`SET ... IF VERSION`, BATCHes comparing VALUE or MOD_REVISION) on 3
//! keys through `query.execute`, while the test kills -9 the table's raft
//! leader and restarts it, then (as root with nftables, in network
//! namespaces made by ../shared/scripts/netns/netns.sh) isolates the new
//! leader from the other nodes and heals. Every key is then read through
//! every node, and the whole history goes through weft-checker's
//! linearizability search (`register::check_kv`): it must be linearizable,
//! and the same history with one read made stale must not be.
//!
//! The recorder runs as a child: this test binary again, running the
//! ignored helper test `kv_recorder_child`, inside the client namespace
//! when there are namespaces (the nodes' addresses are only reachable from
//! there). Without root or nft the partition is skipped, with the reason
//! printed; the kill still runs on loopback. Every child is ended by pid;
//! the namespaces are removed on exit, also on failure. `WEFT_NO_NETNS=1`
//! forces loopback; `WEFT_KEEP_HISTORY=path` keeps the history.
#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_checker::kv_recorder::{KvRecorder, KvRecorderConfig};
use weft_checker::register::{Compare, KvHistory, KvOp, Outcome, Verdict, check_kv};

mod common;
use common::{WEFT, free_port};

/// Network namespaces, removed on drop (after the nodes: declare it first).
struct Netns {
    script: PathBuf,
    prefix: String,
}

impl Netns {
    /// Namespaces when this machine can make them: root, netns.sh, and nft
    /// already installed (the test never installs packages). Else the reason.
    fn try_up(n: usize) -> Result<Netns, String> {
        let shared = std::env::var_os("WEFT_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
        let script = shared.join("scripts/netns/netns.sh");
        if std::env::var_os("WEFT_NO_NETNS").is_some() {
            return Err("WEFT_NO_NETNS is set".into());
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if uid != "0" {
            return Err("not root (network namespaces need root)".into());
        }
        if !script.exists() {
            return Err(format!("no {}", script.display()));
        }
        let has_nft = Command::new("sh")
            .args(["-c", "command -v nft"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_nft {
            return Err("nft is not installed (apt-get install nftables)".into());
        }
        let prefix = format!("tl{}", std::process::id() % 10_000);
        let ns = Netns { script, prefix };
        let up = Command::new(&ns.script)
            .args(["up", &ns.prefix, &n.to_string()])
            .output()
            .unwrap();
        if !up.status.success() {
            return Err(format!(
                "netns.sh up failed: {}",
                String::from_utf8_lossy(&up.stderr)
            ));
        }
        Ok(ns)
    }

    fn addr(&self, who: &str) -> String {
        let o = Command::new(&self.script)
            .args(["addr", &self.prefix, who])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    fn cmd(&self, who: &str, program: &Path) -> Command {
        let mut c = Command::new(&self.script);
        c.args(["run", &self.prefix, who]).arg(program);
        c
    }

    fn run(&self, args: &[&str]) {
        let o = Command::new(&self.script)
            .arg(args[0])
            .arg(&self.prefix)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "netns.sh {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .args(["down", &self.prefix])
            .status();
    }
}

struct Node {
    id: u64,
    host: String,
    native: u16,
    cluster: u16,
    grpc: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn addr(&self) -> String {
        format!("tcp://{}:{}", self.host, self.native)
    }

    fn start(&mut self, ns: Option<&Netns>, peers: &str) {
        let weft = Path::new(WEFT);
        let mut c = match ns {
            Some(ns) => ns.cmd(&self.id.to_string(), weft),
            None => Command::new(weft),
        };
        c.args(["serve", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--tcp-addr",
                &format!("{}:{}", self.host, self.native),
                "--disable",
                "udp",
                "--disable",
                "http",
            ])
            .args(["--grpc-addr", &format!("{}:{}", self.host, self.grpc)])
            .args([
                "--node-id",
                &self.id.to_string(),
                "--cluster-addr",
                &format!("{}:{}", self.host, self.cluster),
                "--cluster-peers",
                peers,
            ])
            .env_remove("WEFT_CONFIG")
            .env_remove("WEFT_ADDR")
            .env("WEFT_CLUSTER_TICK_MS", "50")
            // The namespaces' addresses are 10.x: the native listener allows loopback only by default.
            .env("WEFT_TCP_ALLOW", "10.0.0.0/8,127.0.0.0/8")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.with_extension("log"))
                    .unwrap(),
            ));
        // netns.sh run execs `ip netns exec`, which execs weft: the child's pid is weft's.
        self.child = Some(c.spawn().unwrap());
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `weft ARGS --addr node` from where the clients are (the client namespace).
fn weft_json(ns: Option<&Netns>, node: &Node, args: &[&str]) -> Option<Value> {
    let weft = Path::new(WEFT);
    let mut c = match ns {
        Some(ns) => ns.cmd("c", weft),
        None => Command::new(weft),
    };
    let o = c
        .args(args)
        .args(["--addr", &node.addr(), "--timeout-ms", "3000"])
        .env_remove("WEFT_ADDR")
        .env_remove("WEFT_CONFIG")
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// The table group's raft leader as a live node sees it (group 1: the first
/// group allocated; this cluster has no topics).
fn table_leader(ns: Option<&Netns>, nodes: &[Node], skip: Option<u64>) -> Option<u64> {
    nodes
        .iter()
        .filter(|n| n.child.is_some() && Some(n.id) != skip)
        .find_map(|n| {
            let s = weft_json(ns, n, &["cluster", "status", "--json"])?;
            let l = s["groups"].as_array()?.iter().find(|g| g["group"] == 1)?["leader"].as_u64()?;
            (l != 0 && Some(l) != skip).then_some(l)
        })
}

/// Poll until `f` gives a value; fail after 60 s (a bound against hangs,
/// not a timing assertion).
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

/// The recorder child: this binary running `kv_recorder_child`.
struct Recorder {
    child: Child,
    dir: PathBuf,
}

impl Recorder {
    fn start(ns: Option<&Netns>, nodes: &[Node], dir: &Path) -> Recorder {
        let exe = std::env::current_exe().unwrap();
        let mut c = match ns {
            Some(ns) => ns.cmd("c", &exe),
            None => Command::new(&exe),
        };
        let spec = serde_json::json!({ "nodes": nodes.iter().map(Node::addr).collect::<Vec<_>>(), "dir": dir });
        c.args([
            "--exact",
            "kv_recorder_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("WEFT_KV_CHILD", spec.to_string())
        .stdout(Stdio::from(
            std::fs::File::create(dir.join("recorder.log")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("recorder.err")).unwrap(),
        ));
        Recorder {
            child: c.spawn().unwrap(),
            dir: dir.to_owned(),
        }
    }

    /// (operations invoked, writes acknowledged) so far.
    fn progress(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(self.dir.join("progress")).unwrap_or_default();
        let mut it = s.split_whitespace().filter_map(|x| x.parse().ok());
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    fn wait_acked(&mut self, what: &str, at_least: u64) {
        until(what, || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "the recorder exited early ({st}): {}",
                    std::fs::read_to_string(self.dir.join("recorder.err")).unwrap_or_default()
                );
            }
            (self.progress().1 >= at_least).then_some(())
        });
    }

    /// Stops the load; the child reads every key through every node and
    /// writes the history.
    fn finish(mut self) -> (KvHistory, Vec<String>) {
        std::fs::write(self.dir.join("stop"), b"").unwrap();
        let st = until("the recorder to finish", || self.child.try_wait().unwrap());
        let err = std::fs::read_to_string(self.dir.join("recorder.err")).unwrap_or_default();
        assert!(st.success(), "recorder failed: {err}");
        let missed = std::fs::read_to_string(self.dir.join("missed"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        (
            KvHistory::load(&self.dir.join("history.jsonl")).unwrap(),
            missed,
        )
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "a helper: tables_linear runs it as its recorder child (WEFT_KV_CHILD)"]
fn kv_recorder_child() {
    let Ok(spec) = std::env::var("WEFT_KV_CHILD") else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let dir = PathBuf::from(spec["dir"].as_str().unwrap());
    let nodes = spec["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let cfg = KvRecorderConfig {
        nodes,
        table: "lin".into(),
        keys: 3,
        clients: 4,
        // Bounds only: the test stops the load once its faults are done.
        duration: Duration::from_secs(150),
        max_ops: 20_000,
        request_timeout: Duration::from_secs(3),
        reach_timeout: Duration::from_secs(40),
        seed: u64::from(std::process::id()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let r = Arc::new(KvRecorder::new(cfg).unwrap());
        r.create_table().await.unwrap();
        let run = tokio::spawn({
            let r = r.clone();
            async move { r.run().await }
        });
        while !run.is_finished() {
            std::fs::write(
                dir.join("progress.tmp"),
                format!("{} {}", r.ops(), r.acked_writes()),
            )
            .unwrap();
            std::fs::rename(dir.join("progress.tmp"), dir.join("progress")).unwrap();
            if dir.join("stop").exists() {
                r.stop();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run.await.unwrap().unwrap();
        let missed = r.final_reads().await;
        std::fs::write(dir.join("missed"), missed.join("\n")).unwrap();
        r.history().save(&dir.join("history.jsonl")).unwrap();
    });
}

#[test]
fn a_replicated_table_is_linearizable_across_a_leader_kill_and_a_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let ns = match Netns::try_up(3) {
        Ok(ns) => Some(ns),
        Err(why) => {
            eprintln!("partition part skipped: {why}; the leader kill runs on loopback");
            None
        }
    };
    let ns = ns.as_ref();
    let mut nodes: Vec<Node> = (1..=3u64)
        .map(|id| {
            let (host, native, cluster, grpc) = match ns {
                Some(ns) => (ns.addr(&id.to_string()), 7400, 7410, 7402),
                None => (
                    "127.0.0.1".to_owned(),
                    free_port(),
                    free_port(),
                    free_port(),
                ),
            };
            Node {
                id,
                host,
                native,
                cluster,
                grpc,
                dir: tmp.path().join(format!("n{id}")),
                child: None,
            }
        })
        .collect();
    let peers = nodes
        .iter()
        .map(|n| format!("{}={}:{}", n.id, n.host, n.cluster))
        .collect::<Vec<_>>()
        .join(",");
    for n in nodes.iter_mut() {
        n.start(ns, &peers);
    }
    until("a metadata leader and every node registered", || {
        let s = weft_json(ns, &nodes[0], &["cluster", "status", "--json"])?;
        (s["meta_leader"].is_u64()
            && s["nodes"]
                .as_array()?
                .iter()
                .filter(|x| x["native_addr"].is_string())
                .count()
                == 3)
            .then_some(())
    });

    let rdir = tmp.path().join("rec");
    std::fs::create_dir_all(&rdir).unwrap();
    let mut rec = Recorder::start(ns, &nodes, &rdir);
    rec.wait_acked("100 acknowledged writes before any fault", 100);

    // kill -9 of the table group's leader, writes through the survivors, restart.
    let leader = until("the table's leader", || table_leader(ns, &nodes, None));
    let li = (leader - 1) as usize;
    let before = rec.progress().1;
    eprintln!("kill -9 node {leader} (table leader) after {before} acknowledged writes");
    nodes[li].kill();
    rec.wait_acked("writes acknowledged by the survivors", before + 60);
    nodes[li].start(ns, &peers);
    let before = rec.progress().1;
    rec.wait_acked("writes after the restart", before + 60);

    if let Some(n) = ns {
        // Isolate the (new) leader from the other nodes; the clients still reach it.
        let leader = until("the table's leader", || table_leader(ns, &nodes, None));
        let before = rec.progress().1;
        eprintln!("isolate node {leader} (table leader) after {before} acknowledged writes");
        n.run(&["isolate", &leader.to_string()]);
        let other = until("a leader on the majority side", || {
            table_leader(ns, &nodes, Some(leader))
        });
        eprintln!("node {other} leads on the majority side");
        rec.wait_acked("writes acknowledged on the majority side", before + 60);
        n.run(&["heal"]);
        eprintln!("healed");
        let before = rec.progress().1;
        rec.wait_acked("writes after healing", before + 60);
    }

    let (h, missed) = rec.finish();
    assert!(missed.is_empty(), "final reads incomplete: {missed:?}");
    let r = check_kv(&h);
    let s = &r.stats;
    eprintln!(
        "{} operations on {} keys: {} ok ({} reads, {} writes), {} compares failed, {} refused, {} unknown",
        s.ops, s.keys, s.ok, s.gets, s.writes_ok, s.failed, s.refused, s.unknown
    );
    if !r.ok() {
        let keep = std::env::temp_dir().join(format!("tables_linear-{}.jsonl", std::process::id()));
        h.save(&keep).unwrap();
        for k in &r.keys {
            if let Verdict::NotLinearizable {
                linearized,
                state,
                stuck,
            } = &k.verdict
            {
                eprintln!(
                    "key {}: not linearizable; {} operations linearized, then state {state}; stuck:",
                    k.key,
                    linearized.len()
                );
                for l in stuck {
                    eprintln!(
                        "  line {l}: {}",
                        serde_json::to_string(&h.events[l - 1]).unwrap()
                    );
                }
            }
        }
        panic!(
            "not linearizable (history kept in {}): {:?} {:?} {:?}",
            keep.display(),
            r.malformed,
            r.revisions,
            r.keys
        );
    }
    if let Some(keep) = std::env::var_os("WEFT_KEEP_HISTORY") {
        h.save(Path::new(&keep)).unwrap();
    }
    // Every key got written and read, every kind of compare held at least
    // once and some failed: the check was not vacuous.
    assert_eq!(s.keys, 3);
    // The waits above saw at least 220 acknowledged writes.
    assert!(s.writes_ok >= 220 && s.gets >= 50, "{s:?}");
    for kind in ["version", "value", "mod_revision"] {
        let of = |o: Outcome| {
            h.events
                .iter()
                .filter(|e| {
                    e.outcome == o
                        && matches!(&e.op, KvOp::Cas { cmp, .. } if cmp_kind(cmp) == kind)
                })
                .count()
        };
        eprintln!(
            "CAS on {kind}: {} held, {} failed",
            of(Outcome::Ok),
            of(Outcome::Failed)
        );
        assert!(of(Outcome::Ok) > 0, "CAS on {kind}: never held");
    }
    // Failed compares of the rarer kinds depend on the interleaving: only
    // the total is asserted (version compares fail often).
    assert!(s.failed > 0, "no compare ever failed");
    // The check can fail on this very history: the last read of a key
    // made to return a value that a later acknowledged write replaced
    // before the read began (a stale read) must be rejected.
    let stale = stale_read(&h).expect("no acknowledged write overwritten before a final read");
    let r = check_kv(&stale);
    assert!(
        r.violations().next().is_some(),
        "a stale read went unnoticed: {:?}",
        r.keys
    );
}

/// The history with its last read of some key changed to return the value
/// of a write W such that another acknowledged write W2 began after W
/// completed and completed before the read began.
fn stale_read(h: &KvHistory) -> Option<KvHistory> {
    let ev = &h.events;
    let ok_write = |e: &weft_checker::register::KvEvent| {
        e.outcome == Outcome::Ok && matches!(e.op, KvOp::Put { .. } | KvOp::Cas { .. })
    };
    for (g, read) in ev.iter().enumerate().rev() {
        if read.op != KvOp::Get || read.outcome != Outcome::Ok {
            continue;
        }
        let same = |e: &&weft_checker::register::KvEvent| e.key == read.key && ok_write(e);
        let done = |e: &weft_checker::register::KvEvent| e.complete_us.unwrap_or(u64::MAX);
        for w in ev.iter().filter(same) {
            let replaced = ev
                .iter()
                .filter(same)
                .any(|w2| done(w) < w2.invoke_us && done(w2) < read.invoke_us);
            if let (true, KvOp::Put { value } | KvOp::Cas { value, .. }) = (replaced, &w.op) {
                let mut out = h.clone();
                out.events[g].read = Some(Some(weft_checker::register::Observed {
                    value: value.clone(),
                    version: 1,
                    mod_revision: None,
                }));
                return Some(out);
            }
        }
    }
    None
}

fn cmp_kind(c: &Compare) -> &'static str {
    match c {
        Compare::Version(_) => "version",
        Compare::Value(_) => "value",
        Compare::ModRevision(_) => "mod_revision",
    }
}
