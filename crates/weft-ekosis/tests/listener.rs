//! The listener with Weft's own ekosis client and the `weft eko` CLI module:
//! statuses, heartbeats, persisted connections, UDP, eco.* management, and a
//! queued sender delivering through the ekosis codec.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use weft_ekosis::cli::{run, EkoArgs, EkoOp};
use weft_ekosis::{demo, new_span_key, ClientOptions, EkosisClient, EkosisConfig, EkosisOutbound, EkosisServer};
use weft_net::Endpoint;
use weft_queue::{Backoff, QueueOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cli_and_sender_against_weft_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, manager) = demo::demo_service("demo", &dir.path().join("q"), Duration::from_millis(200)).unwrap();
    let handler = svc.into_handler();
    let server = EkosisServer::new(&handler, manager.clone(), EkosisConfig::default());
    let uds = dir.path().join("s.sock");
    let listeners = weft_ekosis::EkosisListeners { tcp: Some("127.0.0.1:0".into()), udp: Some("127.0.0.1:0".into()), unix: Some(uds.clone()), ..Default::default() };
    let urls = server.bind_all(&listeners).await.unwrap();
    assert_eq!(urls.len(), 3);
    let tcp = urls[0].trim_start_matches("ekosis+tcp://").to_owned();
    let udp = urls[1].trim_start_matches("ekosis+udp://").to_owned();

    let c = EkosisClient::new(Endpoint::Tcp(tcp.clone()), ClientOptions::default());
    assert_eq!(c.call("echo", &json!({"message": "x"})).await.unwrap(), json!({"message": "x"}));
    c.heartbeat().await.unwrap();
    assert_eq!(c.call("nope", &json!({})).await.unwrap_err().status(), Some(400));
    assert_eq!(c.call("echo", &json!({})).await.unwrap_err().status(), Some(300));
    assert_eq!(c.call("test.fail", &json!({"kind": "processing", "message": "m"})).await.unwrap_err().status(), Some(600));
    let u = EkosisClient::new(Endpoint::Udp(udp.clone()), ClientOptions::default());
    assert!(u.call("dice_roller.roll", &json!({"sides": 3})).await.unwrap()["result"].as_i64().unwrap() <= 3);
    u.heartbeat().await.unwrap();
    let p = EkosisClient::new(Endpoint::Unix(uds.clone()), ClientOptions { persisted: true, heartbeat_period: Some(Duration::from_millis(20)), ..ClientOptions::default() });
    for i in 0..3 {
        assert_eq!(p.call("echo", &json!({"message": i.to_string()})).await.unwrap()["message"], i.to_string());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // A timeout is retried, then reported.
    let slow = EkosisClient::new(Endpoint::Tcp(tcp.clone()), ClientOptions { timeout: Duration::from_millis(50), max_retries: 2, ..ClientOptions::default() });
    let e = slow.call("test.sleep", &json!({"seconds": 0.3})).await.unwrap_err();
    assert!(matches!(e, weft_ekosis::EkosisError::MaxRetries { attempts: 2, .. }), "{e}");

    // Queued endpoint through the codec, then its management.
    let sk = new_span_key();
    let r = c.call_with("jobs.submit", &sk, &json!({"n": -5})).await.unwrap();
    assert_eq!(r.data, json!({"span_key": sk.to_json()}));
    let q = manager.endpoint("jobs.submit").unwrap().queue().clone();
    assert!(q.wait_idle(Duration::from_secs(5)).await);
    let first = c.call("eco.buffered_handler.errors.get_first_10", &json!({"queue_route_key": "jobs.submit"})).await.unwrap();
    assert_eq!(first["queue_data"], json!([sk.to_string()]));
    let ins = c.call("eco.buffered_handler.errors.inspect_request", &json!({"queue_route_key": "jobs.submit", "span_key": sk.to_json()})).await.unwrap();
    assert_eq!(ins["request_data"], json!({"n": -5}));
    let states = c.call("eco.error_states.get", &json!({})).await.unwrap();
    assert_eq!(states["errors"][0]["error_id"], "JOB_FAILED");
    let cleared = c.call("eco.error_states.clear", &json!({"error_id": "job_failed", "count": 0})).await.unwrap();
    assert_eq!(cleared, json!({"errors": []}));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let full = c.call("eco.statistics.get", &json!({"type": "full"})).await.unwrap();
    assert!(full["statistics"].as_array().unwrap().len() >= 2);
    let cur = c.call("eco.statistics.get", &json!({"type": "current"})).await.unwrap();
    assert_eq!(cur["statistics"]["buffered_endpoint_sizes"]["jobs"]["submit"], json!({"pending": 0, "error": 1}));
    assert_eq!(cur["statistics"]["application"]["name"], "weft");

    // A queued sender over the ekosis codec, back into this listener.
    let out = EkosisOutbound::new(Endpoint::Tcp(tcp.clone()), ClientOptions::default());
    let opts = QueueOptions { max_retries: 0, backoff: Backoff { initial_ms: 5, max_ms: 50, multiplier: 2.0 }, ..QueueOptions::default() };
    let s = manager.queued_sender("to-jobs", "jobs.submit", out, opts).unwrap();
    // Receiving paused: ekosis' "busy" is retried, not an error.
    c.call("eco.buffered_handler.receiving.pause", &json!({"queue_route_key": "jobs.submit"})).await.unwrap();
    let uid = s.send(&json!({"n": 7})).await.unwrap();
    assert!(uid.parse::<weft_ekosis::proto::SpanKey>().is_ok(), "sender uids are span keys");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((s.info().incoming, s.info().errors), (1, 0));
    let d = c.call("eco.buffered_sender.data", &json!({"queue_route_key": "to-jobs"})).await.unwrap();
    assert_eq!(d["queue_data"]["database_sizes"], json!({"pending": 1, "error": 0}));
    c.call("eco.buffered_handler.receiving.unpause", &json!({"queue_route_key": "jobs.submit"})).await.unwrap();
    assert!(s.queue().wait_idle(Duration::from_secs(5)).await);
    assert!(q.wait_idle(Duration::from_secs(5)).await);
    let status = c.call("jobs.status", &json!({})).await.unwrap();
    assert_eq!(status["last_n"], json!([-5, 7]));

    // The CLI module.
    let args = |op| EkoArgs { addr: format!("tcp://{tcp}"), timeout_ms: 2000, retries: 1, op };
    run(args(EkoOp::Heartbeat)).await.unwrap();
    run(args(EkoOp::Call { route_key: "echo".into(), json: Some(r#"{"message":"cli"}"#.into()), span_key: None })).await.unwrap();
    run(args(EkoOp::Stats { r#type: "gathered".into() })).await.unwrap();
    run(args(EkoOp::Errors)).await.unwrap();
    let e = run(args(EkoOp::Call { route_key: "nope".into(), json: None, span_key: Some(sk.to_string()) })).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    server.shutdown(Duration::from_secs(1)).await;
    manager.shutdown(Duration::from_secs(1)).await;
}

/// A listener whose allow-list admits nobody: stream peers get one
/// CLIENT_DENIED line and a closed connection, datagrams no answer, and
/// every refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_refuses_before_reading() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (svc, manager) = demo::demo_service("demo", &dir.path().join("q"), Duration::from_millis(200)).unwrap();
    let handler = svc.into_handler();
    let config = EkosisConfig { allow: weft_net::AllowList::nobody(), ..EkosisConfig::default() };
    let server = EkosisServer::new(&handler, manager.clone(), config);
    let uds = dir.path().join("s.sock");
    let listeners = weft_ekosis::EkosisListeners {
        tcp: Some("127.0.0.1:0".into()),
        udp: Some("127.0.0.1:0".into()),
        unix: Some(uds.clone()),
        ..Default::default()
    };
    let urls = server.bind_all(&listeners).await.unwrap();
    let tcp = urls[0].trim_start_matches("ekosis+tcp://").to_owned();
    let udp = urls[1].trim_start_matches("ekosis+udp://").to_owned();

    let mut s = tokio::net::TcpStream::connect(&tcp).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.unwrap().unwrap();
    let line: serde_json::Value = serde_json::from_slice(got.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(line["status"], 200, "{line}");
    assert!(line["data"].as_str().unwrap().contains("allow-list"), "{line}");

    let mut u = tokio::net::UnixStream::connect(&uds).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), u.read_to_end(&mut got)).await.unwrap().unwrap();
    assert!(got.starts_with(br#"{"span_key":null,"status":200"#), "{}", String::from_utf8_lossy(&got));

    // Weft's own client reports the status.
    let c = EkosisClient::new(Endpoint::Tcp(tcp.clone()), ClientOptions { max_retries: 0, ..ClientOptions::default() });
    assert_eq!(c.call("echo", &json!({"message": "x"})).await.unwrap_err().status(), Some(200));

    // A datagram is dropped unanswered; a later heartbeat to an open
    // listener proves the socket itself works.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(b"\x06\n", &udp).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await.is_err(), "refused datagram answered");

    let mut s2 = tokio::net::TcpStream::connect(&tcp).await.unwrap();
    let _ = s2.write_all(b"\x05\n").await;
    let _ = tokio::time::timeout(Duration::from_secs(10), s2.read_to_end(&mut Vec::new())).await;
    for attempt in 0.. {
        let refused = manager.stats().registry().snapshot()["ekosis.refused"].as_u64().unwrap();
        if refused >= 5 {
            break;
        }
        assert!(attempt < 100, "refusals counted: {refused}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown(Duration::from_secs(1)).await;
}
