//! Real `weft serve` cluster nodes for the cluster_* tests: each a child
//! process on loopback ports, ended by pid (kill -9, or SIGSTOP/SIGCONT
//! through kill(1) with the child's pid).
#![allow(dead_code)] // each test binary uses part of it

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{free_port, WEFT};

pub struct Proc {
    pub id: u64,
    pub native: u16,
    pub http: u16,
    pub cluster: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub stopped: bool,
    /// Extra environment for `weft serve` (config keys as WEFT_* variables).
    pub env: Vec<(String, String)>,
}

impl Proc {
    pub fn addr(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.native)
    }
    pub fn cluster_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cluster)
    }

    pub fn start(&mut self, peers: &str) {
        let mut c = Command::new(WEFT);
        c.args(["serve", "--data-dir"])
            .arg(&self.dir)
            .args(["--tcp-addr", &format!("127.0.0.1:{}", self.native), "--disable", "udp"])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http)])
            .args(["--node-id", &self.id.to_string(), "--cluster-addr", &self.cluster_addr(), "--cluster-peers", peers])
            .env_remove("WEFT_CONFIG")
            .env_remove("WEFT_ADDR")
            // Fast ticks keep elections short on a loaded machine.
            .env("WEFT_CLUSTER_TICK_MS", "50")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(self.dir.with_extension("log")).unwrap()));
        self.child = Some(c.spawn().unwrap());
        self.stopped = false;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9, by pid.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.stopped = false;
    }

    fn signal(&mut self, sig: &str) {
        if let Some(pid) = self.pid() {
            let ok = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
            assert!(ok, "kill {sig} {pid}");
        }
    }

    /// SIGSTOP: a long pause (GC-like); the process keeps its sockets.
    pub fn pause(&mut self) {
        self.signal("-STOP");
        self.stopped = true;
    }

    pub fn resume(&mut self) {
        self.signal("-CONT");
        self.stopped = false;
    }

    pub fn weft(&self, args: &[&str]) -> Output {
        Command::new(WEFT).args(args).args(["--addr", &self.addr(), "--timeout-ms", "8000"]).env_remove("WEFT_ADDR").output().unwrap()
    }

    /// A CLI command with stdin.
    pub fn weft_in(&self, args: &[&str], stdin: &str) -> Output {
        let mut c = Command::new(WEFT)
            .args(args)
            .args(["--addr", &self.addr(), "--timeout-ms", "8000"])
            .env_remove("WEFT_ADDR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Option<Value> {
        let o = self.weft(args);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    pub fn call(&self, route: &str, body: &str) -> Result<Value, String> {
        let o = self.weft(&["call", route, body]);
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())
    }

    pub fn status(&self) -> Option<Value> {
        self.json(&["cluster", "status", "--json"])
    }

    /// One HTTP/1.1 request to the node's gateway: (status, body).
    pub fn http(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let (head, body) = out.split_once("\r\n\r\n")?;
        Some((head.split_whitespace().nth(1)?.parse().ok()?, body.to_owned()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stopped {
            self.resume();
        }
        self.kill();
    }
}

/// Poll `f` every 100 ms until it gives a value; fail after 40 s (a bound
/// against hangs, not a timing assertion).
/// A number `weft stats` shows for this node (None: not shown).
pub fn stat(p: &Proc, name: &str) -> Option<u64> {
    let o = p.weft(&["stats"]);
    String::from_utf8_lossy(&o.stdout).lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn procs(dir: &Path, ids: std::ops::RangeInclusive<u64>) -> Vec<Proc> {
    ids.map(|id| Proc { id, native: free_port(), http: free_port(), cluster: free_port(), dir: dir.join(format!("n{id}")), child: None, stopped: false, env: Vec::new() })
        .collect()
}

/// Start every node as a founding member and wait until the metadata group
/// has a leader and every node registered its native address.
pub fn start_cluster(ps: &mut [Proc]) -> String {
    let peers = ps.iter().map(|p| format!("{}={}", p.id, p.cluster_addr())).collect::<Vec<_>>().join(",");
    for p in ps.iter_mut() {
        p.start(&peers);
    }
    let n = ps.len();
    until("a metadata leader and every node registered", || {
        let s = ps[0].status()?;
        (s["meta_leader"].is_u64() && s["nodes"].as_array()?.iter().filter(|x| x["native_addr"].is_string()).count() == n).then_some(())
    });
    peers
}

/// Replicas of `topic`/`partition` from a node's status.
pub fn replicas(s: &Value, topic: &str, partition: u64) -> Vec<u64> {
    s["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["topic"] == topic && p["partition"] == partition)
        .map(|p| p["replicas"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect())
        .unwrap_or_default()
}

/// The partition's leader as seen by a node hosting it.
pub fn partition_leader(ps: &[Proc], topic: &str, partition: u64) -> Option<u64> {
    ps.iter().filter(|p| p.child.is_some() && !p.stopped).find_map(|p| {
        let s = p.status()?;
        s["partitions"].as_array()?.iter().find(|x| x["topic"] == topic && x["partition"] == partition)?["leader"].as_u64()
    })
}
