//! Consumer groups through the real binary: `weft consume --group` members
//! coming and going under load, offsets outside the log, reset policies,
//! `weft group reset-offsets`, and what `weft consume` says when it prints
//! nothing.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, WEFT};

struct Node {
    child: Child,
    port: u16,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        Self::start_with(&[])
    }

    /// With these extra environment settings (WEFT_* configuration keys).
    fn start_with(env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (port, http) = (free_port(), free_port());
        let child = Command::new(WEFT)
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--udp-addr", &format!("127.0.0.1:{port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .env_remove("WEFT_CONFIG")
            // member expiry and retention run in maintenance: often, so the
            // test does not wait the 10 s default
            .env("WEFT_LOG_STORE_MAINTENANCE_INTERVAL_MS", "200")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let node = Node { child, port, http, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node.weft(&["ping", "--timeout-ms", "500"]).status.success() {
            assert!(Instant::now() < deadline, "weft serve did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn addr(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WEFT);
        c.args(args).env("WEFT_ADDR", self.addr()).env_remove("WEFT_CONFIG");
        c
    }

    fn weft(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.weft(args);
        assert!(o.status.success(), "weft {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn produce(&self, topic: &str, lines: &[String]) {
        let mut c = self.cmd(&["produce", topic]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdin = c.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
        drop(stdin);
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// JSON output of a describe command (`--json` where the CLI has it,
    /// else its default output, which was JSON).
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut with = args.to_vec();
        with.push("--json");
        let o = self.weft(&with);
        if o.status.success()
            && let Ok(v) = serde_json::from_slice(&o.stdout)
        {
            return v;
        }
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn describe_group(&self, group: &str) -> serde_json::Value {
        self.json(&["group", "describe", group])
    }

    fn describe_topic(&self, topic: &str) -> serde_json::Value {
        self.json(&["topic", "describe", topic])
    }

    /// One HTTP/1.1 request; (status, body).
    fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out.split(' ').nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `weft consume --group --follow --json` child and the records it printed.
struct Member {
    name: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<(u64, u64, String)>>>,
}

impl Member {
    fn start(node: &Node, name: &'static str, topic: &str, group: &str) -> Member {
        let mut child = node
            // a short session: the killed member's partitions move on soon
            .cmd(&["consume", topic, "--group", group, "--follow", "--json", "--session-timeout-ms", "3000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let value = v["value"].as_str().unwrap().to_string();
                l.lock().unwrap().push((v["partition"].as_u64().unwrap(), v["offset"].as_u64().unwrap(), value));
            }
        });
        Member { name, child, lines }
    }

    fn assert_running(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "member {} exited on its own", self.name);
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "member {} did not stop", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finding 1: members joining and leaving while a producer writes must
/// rejoin and continue (not exit on a fenced commit), every record is
/// printed, and a record is printed twice only when its first reader died
/// (SIGKILL) before committing it.
#[test]
fn members_come_and_go_under_load() {
    let node = Node::start();
    node.ok(&["topic", "create", "load", "--partitions", "6"]);
    const ROUNDS: usize = 30;
    const PER_ROUND: usize = 100;
    let producer = {
        let port = node.port;
        std::thread::spawn(move || {
            for r in 0..ROUNDS {
                let lines: String = (0..PER_ROUND).map(|i| format!("r{}\n", r * PER_ROUND + i)).collect();
                let mut c = Command::new(WEFT)
                    .args(["produce", "load", "--addr", &format!("tcp://127.0.0.1:{port}")])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                c.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
                assert!(c.wait().unwrap().success());
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let mut a = Member::start(&node, "a", "load", "g");
    std::thread::sleep(Duration::from_secs(1));
    let mut b = Member::start(&node, "b", "load", "g");
    std::thread::sleep(Duration::from_secs(1));
    let mut c = Member::start(&node, "c", "load", "g");
    std::thread::sleep(Duration::from_secs(2));
    a.assert_running();
    b.assert_running();
    c.assert_running();
    // a leaves gracefully (commits, leaves); d arrives; b dies without
    // committing (its session expires).
    a.signal("-TERM");
    assert!(a.wait().success(), "a's exit status after SIGTERM");
    let mut d = Member::start(&node, "d", "load", "g");
    std::thread::sleep(Duration::from_secs(1));
    b.signal("-KILL");
    b.wait();
    producer.join().unwrap();
    let total = ROUNDS * PER_ROUND;

    // Wait until c and d together with what a and b printed cover everything.
    let outputs = [(a.name, a.lines.clone()), (b.name, b.lines.clone()), (c.name, c.lines.clone()), (d.name, d.lines.clone())];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: BTreeSet<String> = outputs.iter().flat_map(|(_, l)| l.lock().unwrap().iter().map(|x| x.2.clone()).collect::<Vec<_>>()).collect();
        if seen.len() >= total {
            break;
        }
        c.assert_running();
        d.assert_running();
        assert!(Instant::now() < deadline, "only {} of {total} records printed", seen.len());
        std::thread::sleep(Duration::from_millis(200));
    }
    c.assert_running();
    d.assert_running();
    c.signal("-INT");
    d.signal("-TERM");
    assert!(c.wait().success() && d.wait().success());

    // Every record exactly where it was written, and each printed at least once.
    let mut by_pos: BTreeMap<(u64, u64), Vec<&'static str>> = BTreeMap::new();
    let mut values: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for (name, lines) in &outputs {
        for (p, o, v) in lines.lock().unwrap().iter() {
            by_pos.entry((*p, *o)).or_default().push(name);
            let prev = values.insert((*p, *o), v.clone());
            assert!(prev.is_none_or(|x| x == *v), "{p}/{o} printed with two values");
        }
    }
    let printed: BTreeSet<&String> = values.values().collect();
    for i in 0..total {
        assert!(printed.contains(&format!("r{i}")), "record r{i} never printed");
    }
    // Duplicates only across a rebalance where the previous owner had not
    // committed: here only b (killed) can leave records uncommitted.
    let dups: Vec<_> = by_pos.iter().filter(|(_, who)| who.len() > 1).collect();
    for (pos, who) in &dups {
        assert!(who.contains(&"b") && who.len() == 2, "{pos:?} printed by {who:?}: a duplicate not caused by the killed member");
    }
    // The group ends empty (b once its session expires) with everything
    // committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = node.describe_group("g");
        if d["state"] == "empty" {
            assert_eq!(d["total_lag"], 0, "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "group never emptied: {d}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Finding 2: a commit past the end is refused; a committed offset below
/// the log start (retention) follows the reset policy, with `none` a typed
/// error naming the policies; lag never exceeds what exists; reset-offsets.
#[test]
fn offsets_outside_the_log_and_reset_offsets() {
    let node = Node::start();
    node.ok(&["topic", "create", "r", "--partitions", "1", "--segment-bytes", "4096"]);
    // 20 produce calls (20 batches of about 2 KiB): about two per segment
    let pad = "x".repeat(200);
    for b in 0..20 {
        let lines: Vec<String> = (b * 10..b * 10 + 10).map(|i| format!("value-{i:04}-{pad}")).collect();
        node.produce("r", &lines);
    }

    // HTTP and native (CLI) commits past the end.
    let (status, body) = node.http("POST", "/v1/groups/h/commit", r#"{"offsets":[{"topic":"r","partition":0,"offset":999999999}]}"#);
    assert_eq!(status, 416, "{body}");
    assert!(body.contains("out_of_range"), "{body}");
    let (status, _) = node.http("GET", "/v1/groups/h", "");
    assert_eq!(status, 404, "the refused commit created no group");

    // A group reads 10 and commits 10.
    let out = node.ok(&["consume", "r", "--group", "g", "--max-records", "10"]);
    assert_eq!(out.lines().count(), 10);
    // Retention removes the head of the log (past offset 10).
    node.ok(&["topic", "alter", "r", "--retention-bytes", "8192"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = node.describe_topic("r");
        if t["partitions"][0]["log_start_offset"].as_u64().unwrap() > 10 {
            break;
        }
        assert!(Instant::now() < deadline, "retention did not run: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // no more deletion from here on: the log start stays put
    node.ok(&["topic", "alter", "r", "--retention-bytes", "-1"]);
    let start = node.describe_topic("r")["partitions"][0]["log_start_offset"].as_u64().unwrap();
    let d = node.describe_group("g");
    let o = &d["offsets"][0];
    assert_eq!(o["committed"], 10, "{d}");
    assert_eq!(o["log_start"], start, "{d}");
    assert_eq!(o["lag"].as_u64().unwrap(), 200 - start, "lag counts only what exists: {d}");

    // none: a typed out_of_range error that names the policies.
    let o = node.weft(&["consume", "r", "--group", "g", "--max-records", "5", "--reset", "none"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("reset policy is none") && err.contains("--reset earliest|latest"), "{err}");
    // earliest (the default): from the log start, and says so.
    let o = node.weft(&["consume", "r", "--group", "g", "--max-records", "5"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().next().is_some_and(|l| l.starts_with(&format!("value-{start:04}-"))), "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("reset to"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(node.describe_group("g")["offsets"][0]["committed"], start + 5);

    // reset-offsets: dry run changes nothing; to-offset is clamped; to-time
    // uses the time index; refused while a member is live.
    let out = node.ok(&["group", "reset-offsets", "g", "--topic", "r", "--to-latest", "--dry-run"]);
    assert!(out.contains("200") && out.contains("dry run"), "{out}");
    assert_eq!(node.describe_group("g")["offsets"][0]["committed"], start + 5);
    node.ok(&["group", "reset-offsets", "g", "--topic", "r", "--to-offset", "0"]);
    assert_eq!(node.describe_group("g")["offsets"][0]["committed"], start);
    node.ok(&["group", "reset-offsets", "g", "--topic", "r", "--partition", "0", "--to-time", "2100-01-01T00:00:00Z"]);
    assert_eq!(node.describe_group("g")["offsets"][0]["committed"], 200);
    node.ok(&["group", "reset-offsets", "g", "--topic", "r", "--to-time", "0"]);
    assert_eq!(node.describe_group("g")["offsets"][0]["committed"], start);
    let mut live = Member::start(&node, "live", "r", "g");
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.describe_group("g")["members"].as_array().is_none_or(|m| m.is_empty()) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = node.weft(&["group", "reset-offsets", "g", "--topic", "r", "--to-earliest"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("live member"), "{}", String::from_utf8_lossy(&o.stderr));
    let (status, body) = node.http("POST", "/v1/groups/g/reset-offsets", r#"{"topic":"r","to":"earliest"}"#);
    assert_eq!(status, 409, "{body}");
    live.signal("-TERM");
    live.wait();
    let (status, body) = node.http("POST", "/v1/groups/g/reset-offsets", r#"{"topic":"r","to":{"offset":195}}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.describe_group("g")["offsets"][0]["committed"], 195);

    // group delete (kafka-consumer-groups --delete): refused while a member
    // is live, over the CLI and HTTP; then the group and its offsets go,
    // and a new consumer of the group starts by its reset policy.
    let mut live = Member::start(&node, "live2", "r", "g");
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.describe_group("g")["members"].as_array().is_none_or(|m| m.is_empty()) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = node.weft(&["group", "delete", "g"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("live member"), "{}", String::from_utf8_lossy(&o.stderr));
    let (status, body) = node.http("DELETE", "/v1/groups/g", "");
    assert_eq!(status, 409, "{body}");
    live.signal("-TERM");
    live.wait();
    assert_eq!(node.ok(&["group", "delete", "g"]).trim(), "deleted group g");
    let (status, _) = node.http("GET", "/v1/groups/g", "");
    assert_eq!(status, 404, "deleted");
    assert!(!node.ok(&["group", "list"]).contains(" g "), "deleted: not listed");
    let o = node.weft(&["group", "delete", "g", "--json"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("unknown"), "{}", String::from_utf8_lossy(&o.stderr));
    // HTTP delete of a group with offsets only.
    node.ok(&["group", "reset-offsets", "h2", "--topic", "r", "--to-offset", "199"]);
    let (status, body) = node.http("DELETE", "/v1/groups/h2", "");
    assert_eq!((status, body.contains("true")), (200, true), "{body}");
    let (status, body) = node.http("DELETE", "/v1/groups/h2", "");
    assert_eq!(status, 404, "{body}");
    let out = node.ok(&["consume", "r", "--group", "g", "--max-records", "1"]);
    assert!(out.starts_with(&format!("value-{start:04}-")), "a new g starts at the log start: {out}");
}

/// Finding 3: a consume that prints nothing says why; a new group starts
/// where its reset policy says and exists afterwards with its offsets.
#[test]
fn consume_says_why_and_new_groups_persist() {
    let node = Node::start();
    node.ok(&["topic", "create", "t", "--partitions", "2"]);
    node.produce("t", &(0..6).map(|i| format!("v{i}")).collect::<Vec<_>>());

    let o = node.weft(&["consume", "t"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no records") && err.contains("--from-beginning"), "{err}");

    let out = node.ok(&["consume", "t", "--group", "billing", "--max-records", "1000"]);
    assert_eq!(out.lines().count(), 6, "a new group starts at the earliest offset by default: {out}");
    let d = node.describe_group("billing");
    let committed: u64 = d["offsets"].as_array().unwrap().iter().map(|o| o["committed"].as_u64().unwrap()).sum();
    assert_eq!(committed, 6, "{d}");

    // --reset none on a new group: a typed error naming the policies, no group.
    let o = node.weft(&["consume", "t", "--group", "strict", "--reset", "none"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no committed offset") && err.contains("out_of_range") && err.contains("--reset earliest|latest"), "{err}");

    // --reset latest: reads nothing now, but the group exists at the end.
    let o = node.weft(&["consume", "t", "--group", "audit", "--reset", "latest"]);
    assert!(o.status.success() && o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no records"));
    let d = node.describe_group("audit");
    assert_eq!(d["total_lag"], 0, "{d}");
    assert_eq!(d["offsets"].as_array().unwrap().len(), 2, "{d}");
    node.produce("t", &["later".to_string()]);
    assert_eq!(node.ok(&["consume", "t", "--group", "audit"]).trim(), "later");
}

/// Kafka's offsets.retention.minutes through the binary
/// (`log_store.offsets_retention_ms`, here 2 s): a group committed over
/// HTTP and then left alone is gone a little later (not listed, 404, the
/// expiry counted in /metrics), while a group that keeps committing keeps
/// its offsets.
#[test]
fn group_offsets_expire_after_the_retention() {
    let node = Node::start_with(&[("WEFT_LOG_STORE_OFFSETS_RETENTION_MS", "2000")]);
    node.ok(&["topic", "create", "r", "--partitions", "1"]);
    node.produce("r", &(0..5).map(|i| format!("v{i}")).collect::<Vec<_>>());
    let commit = |g: &str, o: u64| {
        let (status, body) = node.http("POST", &format!("/v1/groups/{g}/commit"), &format!(r#"{{"offsets":[{{"topic":"r","partition":0,"offset":{o}}}]}}"#));
        assert!((200..300).contains(&status), "{status} {body}");
    };
    commit("old", 3);
    commit("fresh", 1);
    let listed = |g: &str| node.ok(&["group", "list"]).lines().any(|l| l.split_whitespace().next() == Some(g));
    assert!(listed("old") && listed("fresh"));
    let start = Instant::now();
    let mut o = 1;
    while listed("old") {
        assert!(start.elapsed() < Duration::from_secs(30), "old was not expired");
        o = o % 5 + 1;
        commit("fresh", o);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(start.elapsed() >= Duration::from_millis(1500), "expired before its retention: {:?}", start.elapsed());
    let (status, _) = node.http("GET", "/v1/groups/old", "");
    assert_eq!(status, 404);
    assert!(listed("fresh"), "a group that commits is kept");
    assert_eq!(node.describe_group("fresh")["offsets"][0]["committed"], o);
    let (_, metrics) = node.http("GET", "/metrics", "");
    assert!(metrics.lines().any(|l| l == "weft_log_groups_expired_total 1"), "{metrics}");
}
