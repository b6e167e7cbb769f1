//! `weft serve` with `net.connection_threads` (issue #18): TCP and Unix
//! connections served on their own threads. Real processes and sockets:
//! many clients over both transports get their own answers, a produce and
//! a fetch work, the connection limit still refuses, and SIGTERM drains a
//! request in flight (a long-poll fetch, handled in a task on its
//! connection's thread).
#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weft_net::{Client, ClientConfig, Endpoint};
use weft_wire::{ErrorBody, FrameKind};

mod common;
mod support;
use support::frames;
use support::Node;

fn pinned(env: &[(&str, &str)]) -> Node {
    let mut all = vec![("WEFT_NET_CONNECTION_THREADS", "2")];
    all.extend_from_slice(env);
    Node::start_with(&[], &all)
}

/// One stat over the Unix socket.
fn stat(node: &Node, key: &str) -> u64 {
    node.stat_via(&format!("unix://{}", node.sock().display()), key)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn quick() -> ClientConfig {
    ClientConfig { connect_timeout: Duration::from_secs(10), request_timeout: Duration::from_secs(20), ..ClientConfig::default() }
}

#[test]
fn many_clients_over_tcp_and_unix_get_their_answers_and_produce_and_fetch_work() {
    let node = pinned(&[]);
    assert_eq!(stat(&node, "net.connection_threads"), 2);
    node.ok(&["topic", "create", "pinned", "--partitions", "1"]);
    let (tcp, unix) = (Endpoint::Tcp(node.tcp_addr()), Endpoint::Unix(node.sock()));
    rt().block_on(async {
        let mut tasks = vec![];
        for i in 0..32u64 {
            let ep = if i % 2 == 0 { tcp.clone() } else { unix.clone() };
            tasks.push(tokio::spawn(async move {
                let c = Client::connect(ep.clone(), quick()).await.unwrap();
                for n in 0..100u64 {
                    let body = json!({"client": i, "n": n});
                    let back = c.call_json("weft.echo", &body).await.unwrap();
                    assert_eq!(back, body, "{ep}: someone else's answer");
                }
                c.close();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // A produce over TCP, another over Unix, both read back over each.
        let t = Client::connect(tcp.clone(), quick()).await.unwrap();
        let u = Client::connect(unix.clone(), quick()).await.unwrap();
        for (c, v) in [(&t, "from-tcp"), (&u, "from-unix")] {
            let r = c.call_json("log.produce", &json!({"topic": "pinned", "records": [{"value": v.as_bytes()}]})).await.unwrap();
            assert!(r.to_string().contains("offset"), "{r}");
        }
        for c in [&t, &u] {
            let r = c.call_json("log.fetch", &json!({"topic": "pinned", "partition": 0, "offset": 0})).await.unwrap();
            let values: Vec<String> = r["records"]
                .as_array()
                .unwrap_or_else(|| panic!("no records in {r}"))
                .iter()
                .map(|rec| String::from_utf8(serde_json::from_value::<Vec<u8>>(rec["value"].clone()).unwrap()).unwrap())
                .collect();
            assert_eq!(values, vec!["from-tcp", "from-unix"]);
        }
    });
    assert!(stat(&node, "net.frames_in") >= 32 * 100);
}

#[test]
fn past_max_connections_new_ones_get_busy() {
    let node = pinned(&[("WEFT_LIMITS_MAX_CONNECTIONS", "3")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat(&node, "net.connections_open") != 1 {
        assert!(Instant::now() < deadline, "readiness connections never closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(node.tcp_addr()).unwrap();
            s.write_all(&frames::hello("pinned-test")).unwrap();
            s
        })
        .collect();
    // Until the server has taken all three a fourth may still get in
    // (then closed by the handshake timeout): try again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut extra = TcpStream::connect(node.tcp_addr()).unwrap();
        extra.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let got = frames::frames_until_close(&mut extra);
        if let Some(f) = got.first().filter(|f| f.kind == FrameKind::Error) {
            let e: ErrorBody = f.decode_body().unwrap();
            if e.code == weft_wire::ErrorCode::Timeout {
                // It got in (the server had not counted all three yet) and
                // waited out the handshake timeout: try again.
                continue;
            }
            assert_eq!(e.code, weft_wire::ErrorCode::Busy, "{e:?}");
            assert_eq!(e.details.as_ref().unwrap()["kind"], "max_connections");
            break;
        }
        assert!(Instant::now() < deadline, "the fourth connection was never refused: {got:?}");
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.ping() {
        assert!(Instant::now() < deadline, "no client served after slots were freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stat(&node, "net.conn.refused_max") >= 1);
}

#[test]
fn sigterm_drains_a_request_in_flight_on_a_connection_thread() {
    let mut node = pinned(&[]);
    node.ok(&["topic", "create", "drain", "--partitions", "1"]);
    let unix = Endpoint::Unix(node.sock());
    let rt = rt();
    let client = rt.block_on(async {
        let c = Client::connect(unix, quick()).await.unwrap();
        c.call_json("log.produce", &json!({"topic": "drain", "records": [{"value": [1]}]})).await.unwrap();
        c
    });
    // How many frames one stats read adds by itself, then a long-poll fetch
    // past the end: pending, so handled in a task on its thread.
    let a = stat(&node, "net.frames_in");
    let per_read = stat(&node, "net.frames_in") - a;
    let before = stat(&node, "net.frames_in");
    let fetch = rt.spawn(async move { client.call_json("log.fetch", &json!({"topic": "drain", "partition": 0, "offset": 1, "wait_ms": 1500})).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = before;
    loop {
        let now = stat(&node, "net.frames_in");
        if now - last > per_read {
            break; // the fetch was read
        }
        last = now;
        assert!(Instant::now() < deadline, "the fetch never reached the server");
    }
    let kill = Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let r: Value = rt.block_on(fetch).unwrap().expect("the fetch in flight was answered before the node exited");
    assert_eq!(r["records"].as_array().map(|a| a.len()), Some(0), "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// The main runtime has a worker per core, unless `net.runtime_threads`
/// or tokio's own `TOKIO_WORKER_THREADS` says otherwise (the key first);
/// 0 or over 256 stops `weft serve` at start naming the key.
#[test]
fn the_runtime_has_a_worker_per_core_unless_told() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    // "" is no count: the default rule, whatever this test's environment says.
    let node = Node::start_with(&[], &[("TOKIO_WORKER_THREADS", "")]);
    assert_eq!(stat(&node, "net.connection_threads"), if cores >= 2 { cores / 2 } else { 0 });
    assert_eq!(stat(&node, "net.runtime_threads"), cores);
    assert!(node.ping());
    drop(node);
    let node = Node::start_with(&[], &[("WEFT_NET_CONNECTION_THREADS", "0"), ("TOKIO_WORKER_THREADS", "3")]);
    assert_eq!((stat(&node, "net.connection_threads"), stat(&node, "net.runtime_threads")), (0, 3));
    drop(node);
    let node = pinned(&[("WEFT_NET_RUNTIME_THREADS", "5"), ("TOKIO_WORKER_THREADS", "3")]);
    assert_eq!((stat(&node, "net.connection_threads"), stat(&node, "net.runtime_threads")), (2, 5));
    assert!(node.ping());
    drop(node);
    for (value, want) in [("0", "net.runtime_threads is 0, from 1 to 256"), ("257", "net.runtime_threads is 257")] {
        let dir = tempfile::tempdir().unwrap();
        let port = || format!("127.0.0.1:{}", common::free_port());
        let (tcp, http, grpc) = (port(), port(), port());
        let args = ["--data-dir", dir.path().to_str().unwrap(), "--tcp-addr", &tcp, "--disable", "udp", "--http-addr", &http, "--grpc-addr", &grpc];
        let err = common::serve_refusal(&args, &[("WEFT_NET_RUNTIME_THREADS", value)]);
        assert!(err.contains(want), "stderr lacks {want:?}: {err}");
    }
}
