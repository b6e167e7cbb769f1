//! The `weft` binary as users run it: serve, client commands over every
//! transport, the single-instance lock, config layering, signals.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, WEFT};

struct Node {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = serve(dir.path(), port).spawn().unwrap();
        let node = Node { child, port, dir };
        node.wait_ready();
        node
    }
    fn tcp(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
    fn udp(&self) -> String {
        format!("udp://127.0.0.1:{}", self.port)
    }
    fn unix(&self) -> String {
        format!("unix://{}", self.dir.path().join("data/weft.sock").display())
    }
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if weft(&["ping", "--addr", &self.tcp(), "--timeout-ms", "500"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("weft serve did not come up");
    }
    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, port: u16) -> Command {
    let mut c = Command::new(WEFT);
    c.args(["serve", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--udp-addr", &format!("127.0.0.1:{port}")])
        .args(["--http-addr", "127.0.0.1:0"])
        .env_remove("WEFT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn client_commands_on_every_transport() {
    let node = Node::start();
    for addr in [node.tcp(), node.udp(), node.unix()] {
        let o = weft(&["ping", "--addr", &addr]);
        assert!(o.status.success(), "{addr}: {o:?}");
        assert!(stdout(&o).starts_with("pong from weft"), "{}", stdout(&o));

        let o = weft(&["echo", "hello there", "--addr", &addr]);
        assert_eq!(stdout(&o).trim(), "hello there");

        let o = weft(&["call", "weft.echo", r#"{"a":[1,2,{"b":null}]}"#, "--addr", &addr]);
        assert!(o.status.success(), "{o:?}");
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v, serde_json::json!({"a":[1,2,{"b":null}]}));

        let o = weft(&["info", "--json", "--addr", &addr]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["name"], "weft");
        let transports: Vec<&str> = v["transports"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        for scheme in ["tcp://", "udp://", "unix://", "http://"] {
            assert!(transports.iter().any(|t| t.starts_with(scheme)), "{transports:?}");
        }
        assert!(v["endpoints"].as_array().unwrap().iter().any(|e| e == "weft.stats"));
    }
    let o = weft(&["stats", "--addr", &node.tcp()]);
    let text = stdout(&o);
    assert!(text.lines().any(|l| l == "endpoint.weft.ping.calls 4"), "{text}");
    assert!(text.contains("endpoint.weft.echo.latency_us.p99"));

    // Unknown route: non-zero exit, typed message.
    let o = weft(&["call", "weft.nope", "{}", "--addr", &node.tcp()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown_route"));
    // Bad JSON from the user.
    let o = weft(&["call", "weft.echo", "{nope", "--addr", &node.tcp()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not valid JSON"));
}

#[test]
fn second_serve_on_the_same_dir_exits_at_once_naming_the_holder() {
    let node = Node::start();
    let o = serve(node.dir.path(), free_port()).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by another weft process"), "{err}");
    assert!(err.contains(&format!("pid={}", node.child.id())), "{err}");
}

#[test]
fn lock_is_released_when_the_holder_is_killed() {
    let mut node = Node::start();
    node.child.kill().unwrap(); // SIGKILL
    node.child.wait().unwrap();
    let port = free_port();
    let mut again = serve(node.dir.path(), port).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if weft(&["ping", "--addr", &format!("tcp://127.0.0.1:{port}"), "--timeout-ms", "500"]).status.success() {
            break;
        }
        assert!(again.try_wait().unwrap().is_none(), "second serve exited: lock not released");
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn sigterm_and_sigint_exit_zero() {
    for sig in ["-TERM", "-INT"] {
        let mut node = Node::start();
        node.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = node.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit after {sig}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{sig}: {status:?}");
        let mut log = String::new();
        for line in BufReader::new(node.child.stderr.take().unwrap()).lines() {
            log.push_str(&line.unwrap());
            log.push('\n');
        }
        assert!(log.contains("weft node ready") && log.contains("drained"), "{log}");
    }
}

#[test]
fn config_show_layers_and_names_sources() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("w.toml");
    std::fs::write(&toml, "log = \"warn\"\n[node]\nname = \"from-file\"\n[udp]\naddr = \"127.0.0.1:9999\"\n").unwrap();
    let o = Command::new(WEFT)
        .args(["config", "show", "--config"])
        .arg(&toml)
        .args(["--tcp-addr", "127.0.0.1:1111"])
        .env("WEFT_UDP_ADDR", "127.0.0.1:2222")
        .env("WEFT_LIVENESS_PEERS", "127.0.0.1:1,127.0.0.1:2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    let line = |k: &str| text.lines().find(|l| l.starts_with(&format!("{k} "))).unwrap_or_else(|| panic!("{k} missing in\n{text}")).to_owned();
    assert!(line("node.name").contains("\"from-file\"") && line("node.name").contains("file"), "{text}");
    assert!(line("udp.addr").contains("2222") && line("udp.addr").contains("env WEFT_UDP_ADDR"));
    assert!(line("tcp.addr").contains("1111") && line("tcp.addr").contains("flag --tcp-addr"));
    assert!(line("data_dir").contains("default"));
    assert!(line("liveness.peers").contains("127.0.0.1:2"));

    let json = dir.path().join("w.json");
    std::fs::write(&json, r#"{"tcp": {"addr": "127.0.0.1:3333"}}"#).unwrap();
    let o = Command::new(WEFT).args(["config", "show", "--config"]).arg(&json).output().unwrap();
    assert!(stdout(&o).contains("3333"));

    std::fs::write(&json, r#"{"tcp": {"adr": "x"}}"#).unwrap();
    let o = Command::new(WEFT).args(["config", "show", "--config"]).arg(&json).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown config key \"tcp.adr\""));
}

#[test]
fn liveness_between_two_nodes() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let spawn = |dir: &Path, port: u16, peer: u16, name: &str| {
        let mut c = serve(dir, port);
        c.args(["--peer", &format!("127.0.0.1:{peer}"), "--node-name", name]).env("WEFT_LIVENESS_INTERVAL_MS", "50").env("WEFT_NODE_ID", name);
        c.spawn().unwrap()
    };
    let mut a = spawn(a_dir.path(), pa, pb, "node-a");
    let mut b = spawn(b_dir.path(), pb, pa, "node-b");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = weft(&["liveness", "--addr", &format!("tcp://127.0.0.1:{pa}"), "--timeout-ms", "500"]);
        let text = stdout(&o);
        if text.contains("node-b") && text.contains("alive") {
            break;
        }
        assert!(Instant::now() < deadline, "node-a never saw node-b: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.kill().unwrap();
    b.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = stdout(&weft(&["liveness", "--addr", &format!("tcp://127.0.0.1:{pa}")]));
        if text.contains("node-b") && text.contains("DEAD") {
            break;
        }
        assert!(Instant::now() < deadline, "node-b never declared dead: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    a.kill().unwrap();
    a.wait().unwrap();
}

/// The log through the CLI: topic create/list/describe/alter/delete,
/// produce from stdin, consume from the beginning.
#[test]
fn topic_produce_consume_and_alter() {
    let node = Node::start();
    let run = |args: &[&str], stdin: Option<&str>| -> Output {
        let mut c = Command::new(WEFT);
        c.args(args).env("WEFT_ADDR", node.tcp()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut ch = c.spawn().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        ch.wait_with_output().unwrap()
    };
    let o = run(&["topic", "create", "clit", "--partitions", "1", "--max-record-bytes", "8"], None);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("created topic clit"), "{}", stdout(&o));
    assert!(stdout(&run(&["topic", "list"], None)).lines().any(|l| l == "clit"));

    let o = run(&["produce", "clit", "--key-separator", ":"], Some("a:1\nb:this value is too long\n"));
    assert!(!o.status.success(), "a record over the limit is reported: {o:?}");

    let o = run(&["topic", "alter", "clit", "--max-record-bytes", "1000", "--retention-ms", "-1", "--partitions", "2"], None);
    assert!(o.status.success(), "{o:?}");
    let o = run(&["topic", "describe", "clit", "--json"], None);
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((d["config"]["max_record_bytes"].as_u64(), d["partitions"].as_array().map(|p| p.len())), (Some(1000), Some(2)), "{d}");
    assert!(d["config"]["retention_ms"].is_null(), "{d}");
    let o = run(&["topic", "alter", "clit"], None);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nothing to change"), "{o:?}");

    let o = run(&["produce", "clit", "--partition", "1"], Some("x\nthis value is long now\n"));
    assert!(o.status.success(), "{o:?}");
    let o = run(&["consume", "clit", "--partition", "1", "--from-beginning", "--max-records", "2"], None);
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), vec!["x", "this value is long now"], "{o:?}");

    assert!(run(&["topic", "delete", "clit"], None).status.success());
    assert!(!stdout(&run(&["topic", "list"], None)).lines().any(|l| l == "clit"));
}

/// `weft top --once` (also what runs without a terminal) against a node.
#[test]
fn top_once_shows_endpoints_and_topics() {
    let node = Node::start();
    let o = weft(&["topic", "--addr", &node.tcp(), "create", "toptopic", "--partitions", "2"]);
    assert!(o.status.success(), "{o:?}");
    for _ in 0..3 {
        assert!(weft(&["ping", "--addr", &node.tcp()]).status.success());
    }
    let o = weft(&["top", "--once", "--interval-ms", "200", "--addr", &node.tcp()]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.starts_with("weft weft ("), "{text}");
    assert!(text.lines().any(|l| l.starts_with("toptopic") && l.split_whitespace().nth(1) == Some("2")), "{text}");
    // three pings here, one more from start()'s readiness check
    assert!(text.lines().any(|l| l.starts_with("weft.ping") && l.split_whitespace().nth(1) == Some("4")), "{text}");
    assert!(text.contains("never called"), "{text}");
    // a node that is not there: a clear error, not a hang or a panic
    let o = weft(&["top", "--once", "--addr", "tcp://127.0.0.1:1", "--timeout-ms", "2000"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("connecting to"), "{o:?}");
}
