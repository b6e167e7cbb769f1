//! The OTLP/HTTP receiver of the trace tests (tests/otel/receiver.py: the
//! official `opentelemetry-proto` definitions decode every export, one JSON
//! object per span in a file), as a child process ended by pid on drop.
//! Included with `#[path = "support/otel.rs"] mod otel;`.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repo's venv python (`WEFT_PYTHON`), where scripts/peers/otel.sh and
/// grpc.sh install the Python peers.
pub fn python() -> PathBuf {
    std::env::var_os("WEFT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/otel")
        .join(name)
}

/// Environment for a `weft serve` exporting to `rx`: the endpoint, and a
/// short batch delay so spans arrive while the node runs (the SDK's
/// `OTEL_BSP_SCHEDULE_DELAY`; the default is 5 s).
pub fn node_env(rx: &Receiver) -> Vec<(String, String)> {
    vec![
        ("WEFT_OTEL_ENDPOINT".into(), rx.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ]
}

pub struct Receiver {
    pub port: u16,
    pub file: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Receiver {
    pub fn start() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spans.jsonl");
        let mut child = Command::new(python())
            .arg(script("receiver.py"))
            .arg(&file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "receiver.py said {line:?} (scripts/peers/otel.sh installs opentelemetry-proto)"
                );
            }
        };
        Receiver {
            port,
            file,
            child,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls the spans until `done` holds (40 s bound against a hang, not a
    /// timing assertion); the spans then.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; spans:\n{}",
                dump(&spans)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn dump(spans: &[Value]) -> String {
    spans
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The spans of `trace` named `name`.
pub fn named<'a>(spans: &'a [Value], trace: &str, name: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["trace_id"] == trace && s["name"] == name)
        .collect()
}

/// The one span of `trace` named `name` (panics with every span otherwise).
pub fn one<'a>(spans: &'a [Value], trace: &str, name: &str) -> &'a Value {
    let found = named(spans, trace, name);
    assert_eq!(
        found.len(),
        1,
        "{} spans {name:?} in trace {trace}; spans:\n{}",
        found.len(),
        dump(spans)
    );
    found[0]
}

/// The node a span comes from (the resource's `weft.node.name`).
pub fn node(span: &Value) -> &str {
    span["resource"]["weft.node.name"].as_str().unwrap_or("")
}
