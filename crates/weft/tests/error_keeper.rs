//! Issue #17 item 19: the error keeper example (crates/weft-queue/examples/
//! downstream_watch.rs) watches a real `weft serve` node. The node is killed:
//! the state DOWNSTREAM_DOWN is raised, seen through `weft errors` and
//! `weft stats`; the node is restarted on the same port: the state is cleared.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

#[path = "../../weft-queue/examples/common/watch.rs"]
mod watch;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, run, text, WEFT};

fn spawn_node(data: &Path, port: u16) -> Child {
    Command::new(WEFT)
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--udp-addr", &format!("127.0.0.1:{port}")])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .env_remove("WEFT_CONFIG")
        .env_remove("WEFT_ADDR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn errors_json(addr: &str) -> Vec<serde_json::Value> {
    let o = run(&["errors", "--json", "--addr", addr]);
    assert!(o.status.success(), "weft errors: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn stats_values(addr: &str) -> serde_json::Value {
    let o = run(&["stats", "--json", "--addr", addr]);
    assert!(o.status.success(), "weft stats: {}", text(&o.stderr));
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    snaps[0]["values"].clone()
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_down_raises_and_back_clears() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("node");
    let mut node = spawn_node(&data, port);
    let downstream: weft_net::Endpoint = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let w = watch::start("127.0.0.1:0", &dir.path().join("watch"), downstream, Duration::from_millis(100)).await.unwrap();
    let addr = format!("tcp://{}", w.addr);

    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        // Up: the watcher has reached the node, no error state.
        poll("the watcher to see the node up", || {
            let o = run(&["call", "watch.status", "--addr", &a]);
            (o.status.success() && text(&o.stdout).contains("\"up\": true")).then_some(())
        });
        let o = run(&["errors", "--addr", &a]);
        assert!(text(&o.stdout).contains("no error states"), "{}", text(&o.stdout));

        // Down: kill the node (our child, by pid).
        node.kill().unwrap();
        node.wait().unwrap();
        let state = poll("DOWNSTREAM_DOWN to be raised", || errors_json(&a).into_iter().find(|e| e["error_id"] == watch::ERROR_ID));
        assert!(state["count"].as_u64().unwrap() >= 1);
        assert!(state["description"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{state}");
        let o = run(&["errors", "--addr", &a]);
        assert!(text(&o.stdout).contains("DOWNSTREAM_DOWN"), "{}", text(&o.stdout));
        let v = stats_values(&a);
        assert!(v["error.DOWNSTREAM_DOWN"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(v["errors.active"], 1, "{v}");

        // Back: the same node on the same port; the next check clears it.
        let mut node = spawn_node(&data, port);
        poll("DOWNSTREAM_DOWN to be cleared", || errors_json(&a).is_empty().then_some(()));
        let o = run(&["errors", "--addr", &a]);
        assert!(text(&o.stdout).contains("no error states"), "{}", text(&o.stdout));
        let v = stats_values(&a);
        assert_eq!(v["error.DOWNSTREAM_DOWN"], 0, "{v}");
        assert_eq!(v["errors.active"], 0, "{v}");
        let o = run(&["call", "watch.status", "--addr", &a]);
        assert!(text(&o.stdout).contains("\"up\": true"), "{}", text(&o.stdout));
        node.kill().unwrap();
        node.wait().unwrap();
    })
    .await
    .unwrap();
    w.shutdown().await;
}
