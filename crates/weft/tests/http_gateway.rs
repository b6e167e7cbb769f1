//! The HTTP gateway of a real `weft serve`: `http.max_body_bytes` from the
//! environment, and its traffic in `weft stats` and `weft top --once`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, WEFT};

struct Node {
    child: Child,
    port: u16,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).env_remove("WEFT_ADDR").output().unwrap()
}

fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let child = Command::new(WEFT)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--udp-addr", &format!("127.0.0.1:{port}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .env_remove("WEFT_CONFIG")
        .env("WEFT_HTTP_MAX_BODY_BYTES", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node { child, port, http, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !weft(&["ping", "--addr", &format!("tcp://127.0.0.1:{port}"), "--timeout-ms", "500"]).status.success() {
        assert!(Instant::now() < deadline, "weft serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

/// Status and body of one request.
fn http(node: &Node, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", node.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_owned())
}

fn stat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn body_limit_from_config_and_traffic_in_stats_and_top() {
    let node = start();
    let (s, _) = http(&node, "POST", "/v1/topics", r#"{"name":"h"}"#);
    assert_eq!(s, 201);
    let big = format!(r#"{{"records":[{{"value":"{}"}}]}}"#, "x".repeat(2000));
    let (s, body) = http(&node, "POST", "/v1/topics/h/records", &big);
    assert_eq!(s, 413, "{body}");
    assert!(body.contains(r#""max_bytes":1000"#), "{body}");
    let (s, _) = http(&node, "GET", "/v1/topics/h", "");
    assert_eq!(s, 200);

    let o = weft(&["stats", "--addr", &format!("tcp://127.0.0.1:{}", node.port)]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(stat(&text, "http.requests"), Some(3), "{text}");
    assert_eq!(stat(&text, "http.errors.4xx"), Some(1), "{text}");
    assert_eq!(stat(&text, "http.route.POST:/v1/topics/{topic}/records.errors"), Some(1), "{text}");

    let o = weft(&["top", "--once", "--interval-ms", "100", "--addr", &format!("tcp://127.0.0.1:{}", node.port)]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("http requests 3") && text.contains("4xx 1"), "{text}");
}
