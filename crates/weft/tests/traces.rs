//! Issue #15 item 3: OpenTelemetry traces over OTLP/HTTP, decoded by a
//! receiver built on the official protobuf definitions (the Python
//! `opentelemetry-proto` package; tests/otel/receiver.py), from a real
//! `weft serve`:
//! - a client traced with the OpenTelemetry Python SDK (tests/otel/client.py)
//!   produces over the HTTP gateway with its `traceparent`; Weft's
//!   `http.request` span continues that trace (parent = the client's span)
//!   and the `log.append` span under it shares the trace id;
//! - a request without a `traceparent` starts one trace across both hops,
//!   whose id the response's `traceparent` names;
//! - a native `weft produce`: the `request` server span and its `log.append`;
//! - the Python client (clients/python) inside an SDK span, over the native
//!   protocol (sync and asyncio): Weft's request span is its span's child.
//!
//! Needs WEFT_PEERS=1 (scripts/peers/otel.sh installs the Python packages).

#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::{free_port, WEFT};

use serde_json::Value;

fn python() -> PathBuf {
    std::env::var_os("WEFT_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/otel").join(name)
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (status, headers, body) of one HTTP/1.1 request to the gateway.
fn http(port: u16, method: &str, path: &str, body: &str, extra: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_ascii_lowercase(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[test]
fn spans_cross_hops_and_continue_the_callers_trace() {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        eprintln!("skipped: set WEFT_PEERS=1 (scripts/peers/otel.sh installs opentelemetry-proto and opentelemetry-sdk)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spans_file = dir.path().join("spans.jsonl");

    // The receiver: its first stdout line is its port.
    let mut rx = Command::new(python()).arg(script("receiver.py")).arg(&spans_file).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(rx.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let rx_port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("receiver said {line:?}"));
    let _rx = Kill(rx);

    let port = free_port();
    let http_port = free_port();
    // In a kill guard from here: a failing assertion ends the node too.
    let mut node = Kill(Command::new(WEFT)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--udp-addr", &format!("127.0.0.1:{port}")])
        .args(["--http-addr", &format!("127.0.0.1:{http_port}"), "--disable", "unix"])
        .args(["--log-format", "json", "--log", "weft_service=debug,info"])
        .env("WEFT_OTEL_ENDPOINT", format!("http://127.0.0.1:{rx_port}"))
        .env_remove("RUST_LOG")
        .env_remove("WEFT_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.jsonl")).unwrap())
        .spawn()
        .unwrap());
    let addr = format!("tcp://127.0.0.1:{port}");
    let weft = |args: &[&str]| {
        let o = Command::new(WEFT).args(args).args(["--addr", &addr]).env_remove("WEFT_ADDR").output().unwrap();
        assert!(o.status.success(), "weft {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let mut up = false;
    for _ in 0..600 {
        if Command::new(WEFT).args(["ping", "--timeout-ms", "500", "--addr", &addr]).output().unwrap().status.success() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "weft serve did not come up");
    weft(&["topic", "create", "traced", "--partitions", "1"]);

    // 1. The SDK-traced Python client over HTTP.
    let o = Command::new(python()).arg(script("client.py")).arg(format!("http://127.0.0.1:{http_port}")).arg("traced").output().unwrap();
    assert!(o.status.success(), "client.py: {}", String::from_utf8_lossy(&o.stderr));
    let client: Value = serde_json::from_slice(&o.stdout).unwrap();
    let client_trace = client["trace_id"].as_str().unwrap().to_owned();
    let client_span = client["span_id"].as_str().unwrap().to_owned();
    // Flags: sampled (01), and the SDK may add level 2's random-trace-id bit (02).
    let sent = client["sent"].as_str().unwrap();
    assert!(sent == format!("00-{client_trace}-{client_span}-01") || sent == format!("00-{client_trace}-{client_span}-03"), "{sent}");
    assert_eq!(client["answer"]["results"][0]["offset"], 0);
    let answered = client["weft_traceparent"].as_str().expect("no traceparent in Weft's answer");
    assert!(answered.starts_with(&format!("00-{client_trace}-")), "{answered}");

    // 2. No traceparent: Weft starts the trace and names it in the answer.
    let (status, head, body) = http(http_port, "POST", "/v1/topics/traced/records", r#"{"records":[{"value":"plain"}]}"#, "");
    assert_eq!(status, 200, "{body}");
    let own = header(&head, "traceparent").expect("no traceparent header").to_owned();
    let own_trace = own.split('-').nth(1).unwrap().to_owned();
    assert_ne!(own_trace, client_trace);

    // 3. Native protocol, without and with a caller's trace context (the
    // CLI takes it from TRACEPARENT and sends it in the frame extension,
    // since the node's welcome lists `trace-context`).
    let produce = |traceparent: Option<&str>| {
        let mut c = Command::new(WEFT);
        c.args(["produce", "traced", "--addr", &addr]).env_remove("TRACEPARENT").stdin(Stdio::piped()).stdout(Stdio::null());
        if let Some(tp) = traceparent {
            c.env("TRACEPARENT", tp);
        }
        let mut p = c.spawn().unwrap();
        p.stdin.take().unwrap().write_all(b"native\n").unwrap();
        assert!(p.wait().unwrap().success());
    };
    produce(None);
    let (caller_trace, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    produce(Some(&format!("00-{caller_trace}-{caller_span}-01")));

    // 4. The Python client (clients/python) in an SDK span, over the native
    // protocol: sync short path, sync coroutine path, asyncio.
    let o = Command::new(python())
        .arg(script("native_client.py"))
        .args([&addr, "traced"])
        .env("PYTHONPATH", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/python/src"))
        .output()
        .unwrap();
    assert!(o.status.success(), "native_client.py: {}", String::from_utf8_lossy(&o.stderr));
    let py: Value = serde_json::from_slice(&o.stdout).unwrap();

    // SIGTERM: the node drains, then flushes its spans before exiting 0.
    assert!(Command::new("kill").args(["-TERM", &node.0.id().to_string()]).status().unwrap().success());
    assert!(node.0.wait().unwrap().success());

    let spans: Vec<Value> = std::fs::read_to_string(&spans_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dump = || spans.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("\n");
    let find = |trace: &str, name: &str| -> Value {
        spans
            .iter()
            .find(|s| s["trace_id"] == trace && s["name"] == name)
            .unwrap_or_else(|| panic!("no span {name:?} in trace {trace}; spans:\n{}", dump()))
            .clone()
    };
    for s in &spans {
        assert_eq!(s["resource"]["service.name"], "weft", "{s}");
    }

    // 1: client span -> http.request -> log.append, one trace id.
    let http_span = find(&client_trace, "POST /v1/topics/{topic}/records");
    assert_eq!(http_span["parent_span_id"], client_span.as_str(), "http.request's parent is the client's span");
    assert_eq!(http_span["kind"], "SPAN_KIND_SERVER");
    assert_eq!(http_span["attributes"]["http.route"], "/v1/topics/{topic}/records");
    assert_eq!(answered, format!("00-{client_trace}-{}-01", http_span["span_id"].as_str().unwrap()));
    let append = find(&client_trace, "log.append");
    assert_eq!(append["parent_span_id"], http_span["span_id"]);
    assert_eq!(append["attributes"]["topic"], "traced");

    // 2: a trace of Weft's own, root at the gateway.
    let root = find(&own_trace, "POST /v1/topics/{topic}/records");
    assert_eq!(root["parent_span_id"], "", "a request without traceparent starts a trace");
    assert_eq!(find(&own_trace, "log.append")["parent_span_id"], root["span_id"]);

    // 3: native request span and its append, one trace.
    let native = spans
        .iter()
        .find(|s| s["name"] == "log.produce" && s["kind"] == "SPAN_KIND_SERVER" && s["parent_span_id"] == "")
        .unwrap_or_else(|| panic!("no native log.produce span:\n{}", dump()));
    let trace = native["trace_id"].as_str().unwrap();
    let native_append = find(trace, "log.append");
    assert_eq!(native_append["parent_span_id"], native["span_id"]);
    assert_eq!(native["attributes"]["route"], "log.produce");
    assert_eq!(native["parent_span_id"], "");

    // 3b: the caller's traceparent, carried in the native frame, is continued.
    let continued = find(caller_trace, "log.produce");
    assert_eq!(continued["kind"], "SPAN_KIND_SERVER");
    assert_eq!(continued["parent_span_id"], caller_span, "the native request span's parent is the caller's span");
    assert_eq!(find(caller_trace, "log.append")["parent_span_id"], continued["span_id"]);

    // 4: each Python call's span is the parent of Weft's request span.
    for (call, route) in [("sync", "log.produce"), ("sync_info", "weft.info"), ("async", "log.produce")] {
        let (t, parent) = (py[call]["trace_id"].as_str().unwrap(), py[call]["span_id"].as_str().unwrap());
        let server = find(t, route);
        assert_eq!(server["kind"], "SPAN_KIND_SERVER", "{call}");
        assert_eq!(server["parent_span_id"], parent, "{call}: Weft's span continues the Python client's");
        if route == "log.produce" {
            assert_eq!(find(t, "log.append")["parent_span_id"], server["span_id"], "{call}");
        }
    }

    // The log line of that request names its trace (JSON log, span fields).
    let log = std::fs::read_to_string(dir.path().join("stderr.jsonl")).unwrap();
    let line: Value = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["fields"]["message"] == "request" && l["fields"]["route"] == "log.produce")
        .unwrap_or_else(|| panic!("no request line for log.produce in:\n{log}"));
    assert_eq!(line["span"]["trace_id"], trace, "{line}");
}
