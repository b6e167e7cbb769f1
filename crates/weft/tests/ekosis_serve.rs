//! `weft serve` with an ekosis listener: the node's endpoints answer in the
//! Ecosystem wire format, next to the native protocol, and the queue and
//! statistics commands reach the node's keepers.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, WEFT};

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).output().unwrap()
}

#[test]
fn ekosis_listener_and_keepers_in_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (port, eko) = (free_port(), free_port());
    let mut child = Command::new(WEFT)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--disable", "http"])
        .env("WEFT_EKOSIS_TCP", format!("127.0.0.1:{eko}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let native = format!("tcp://127.0.0.1:{port}");
    let eko_addr = format!("tcp://127.0.0.1:{eko}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !weft(&["ping", "--addr", &native, "--timeout-ms", "500"]).status.success() {
        assert!(Instant::now() < deadline, "serve never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // weft.echo over the ekosis codec.
    let o = weft(&["eko", "--addr", &eko_addr, "call", "weft.echo", r#"{"a":1}"#]);
    assert!(o.status.success(), "{o:?}");
    let line = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["status"], 0, "ekosis success is status 0: {line}");
    assert_eq!(v["data"], serde_json::json!({"a": 1}));
    // The heartbeat line.
    assert!(weft(&["eko", "--addr", &eko_addr, "heartbeat"]).status.success());
    // Keepers: statistics and error states through the native commands.
    let o = weft(&["stats", "--addr", &native]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("weft.ping"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = weft(&["errors", "--addr", &native]);
    assert!(o.status.success(), "{o:?}");
    let o = weft(&["queue", "--addr", &native, "ls"]);
    assert!(o.status.success(), "{o:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}
