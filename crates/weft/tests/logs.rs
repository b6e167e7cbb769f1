//! Issue #15 item 4: `weft serve --log-format json` writes one JSON object
//! per stderr line; per-request lines at debug; `weft log-level` changes the
//! running node's filter (debug: request lines appear; warn: they stop).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

mod common;
use common::{free_port, WEFT};

struct Node {
    child: Child,
    port: u16,
    lines: Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let http = free_port();
        let mut child = Command::new(WEFT)
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--udp-addr", &format!("127.0.0.1:{port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}"), "--disable", "unix"])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("WEFT_CONFIG")
            .env_remove("WEFT_ADDR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let node = Node { child, port, lines, _dir: dir };
        for _ in 0..600 {
            if node.weft(&["ping", "--timeout-ms", "500"]).status.success() {
                return node;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("weft serve did not come up");
    }

    fn weft(&self, args: &[&str]) -> std::process::Output {
        Command::new(WEFT).args(args).args(["--addr", &format!("tcp://127.0.0.1:{}", self.port)]).env_remove("WEFT_ADDR").output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.weft(args);
        assert!(o.status.success(), "weft {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Stderr lines up to and including the first that `stop` accepts
    /// (a generous bound against a hung node, not a timing assertion).
    fn lines_until(&self, stop: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = vec![];
        loop {
            let l = self.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no such line; saw:\n{}", seen.join("\n")));
            let done = stop(&l);
            seen.push(l);
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(l: &str) -> serde_json::Value {
    serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
}

/// A per-request line of the JSON log for `route`.
fn is_request(l: &str, route: &str) -> bool {
    let v = json(l);
    v["fields"]["message"] == "request" && v["fields"]["route"] == route
}

#[test]
fn json_lines_and_runtime_log_level() {
    let node = Node::start(&["--log-format", "json"]);
    // The start-up lines so far are all JSON objects with a level.
    assert_eq!(node.ok(&["log-level"]).trim(), "log filter info");

    // info: no request lines. Set debug; the next echo is logged.
    assert!(node.ok(&["log-level", "debug"]).starts_with("log filter debug (was info)"));
    node.ok(&["echo", "first"]);
    let seen = node.lines_until(|l| is_request(l, "weft.echo"));
    let line = json(seen.last().unwrap());
    assert_eq!(line["level"], "DEBUG");
    assert_eq!(line["target"], "weft_service::service");
    let f = &line["fields"];
    assert_eq!(f["code"], "ok");
    assert_eq!(f["transport"], "Tcp");
    assert!(f["client"].as_str().is_some_and(|c| !c.is_empty()), "{line}");
    assert!(f["duration_us"].is_u64(), "{line}");
    for l in &seen {
        assert!(json(l)["level"].is_string(), "{l}");
    }

    // warn: the echo is not logged. Then debug again and one info call,
    // whose line comes after anything the echo could have written.
    node.ok(&["log-level", "warn"]);
    node.ok(&["echo", "second"]);
    node.ok(&["log-level", "debug"]);
    node.ok(&["info"]);
    let seen = node.lines_until(|l| is_request(l, "weft.info"));
    let echoes: Vec<&String> = seen.iter().filter(|l| is_request(l, "weft.echo")).collect();
    assert!(echoes.is_empty(), "an echo was logged at warn: {echoes:?}");
    // The filter change itself was logged, at info, before the switch back.
    assert!(seen.iter().any(|l| json(l)["fields"]["message"] == "log filter changed"), "{seen:?}");

    // A bad filter is refused and the running one stays.
    let o = node.weft(&["log-level", "not a filter=="]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad log filter"));
    assert_eq!(node.ok(&["log-level"]).trim(), "log filter debug");
}

#[test]
fn text_format_request_lines() {
    let node = Node::start(&["--log", "weft_service=debug,info"]);
    node.ok(&["ping"]);
    let seen = node.lines_until(|l| l.contains("request") && l.contains("route=weft.ping"));
    let l = seen.last().unwrap();
    assert!(l.contains("DEBUG") && l.contains("code=ok") && l.contains("duration_us="), "{l}");
    assert!(serde_json::from_str::<serde_json::Value>(l).is_err());
}
