//! Issue #17 (pvAccess seed list): process actions, cancel, server
//! messages, flow control, echo, beacons and access control, each against
//! our own client and, where a peer exposes it, p4p (pvxs) or pvapy.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{json, peers_enabled, run_py};
use weft_pva::client::Client;
use weft_pva::config::{ClientConfig, ServerConfig};
use weft_pva::proto::Value;
use weft_pva::proto::nt::path_ref;
use weft_pva::server::demo::{PROCESSED, serve_demo};

fn value_i64(d: &weft_pva::client::PvData) -> i64 {
    path_ref(&d.desc, &d.value, "value").and_then(|(v, _)| v.as_i64()).unwrap()
}

#[tokio::test]
async fn process_runs_the_pv_action() {
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    let ch = c.channel(PROCESSED).await.unwrap();
    let t = Duration::from_secs(5);
    assert_eq!(value_i64(&ch.get("", t).await.unwrap()), 0);
    ch.process(t).await.unwrap();
    ch.process(t).await.unwrap();
    assert_eq!(value_i64(&ch.get("", t).await.unwrap()), 2);
    // A PV without an action: OK, and nothing changes.
    let sp = c.channel(weft_pva::server::demo::SETPOINT).await.unwrap();
    let before = sp.get("", t).await.unwrap();
    sp.process(t).await.unwrap();
    let after = sp.get("", t).await.unwrap();
    assert_eq!(path_ref(&before.desc, &before.value, "value"), path_ref(&after.desc, &after.value, "value"));
    assert_eq!(path_ref(&after.desc, &after.value, "value").map(|x| x.0.clone()), Some(Value::F64(0.0)));
    s.shutdown().await;
}

#[tokio::test]
async fn p4p_put_with_process_runs_the_action() {
    if !peers_enabled("p4p_put_with_process_runs_the_action") {
        return;
    }
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let code = format!(
        r#"
import json
from p4p.client.thread import Context
ctx = Context("pva")
ctx.put("{PROCESSED}", 10, timeout=5, process=True)
a = int(ctx.get("{PROCESSED}", timeout=5))
ctx.put("{PROCESSED}", 20, timeout=5)
b = int(ctx.get("{PROCESSED}", timeout=5))
print(json.dumps({{"with_process": a, "without": b}}))
"#
    );
    let j = json(&run_py(&code, s.udp_addr().port(), &[]).await);
    assert_eq!(j["with_process"], 11, "put 10 then the process action adds one");
    assert_eq!(j["without"], 20);
    s.shutdown().await;
}

fn whoami() -> String {
    let o = std::process::Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test]
async fn allow_list_refuses_other_addresses() {
    use std::sync::atomic::Ordering;
    // Only 10.0.0.0/8 admitted: this loopback client is neither answered nor served.
    let cfg = ServerConfig::isolated().with_allow(&["10.0.0.0/8"]).unwrap();
    let s = serve_demo(cfg).await.unwrap();
    let c = Client::new(ClientConfig { timeout: Duration::from_millis(500), ..ClientConfig::unicast(s.udp_addr()) }).await.unwrap();
    let e = c.get(weft_pva::server::demo::SETPOINT, "").await.unwrap_err();
    assert!(matches!(e, weft_pva::Error::NotFound(_)), "{e}");
    assert!(s.stats().searches_refused.load(Ordering::Relaxed) >= 1);
    let e = weft_pva::client::ClientConn::connect(s.tcp_addr(), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(e, weft_pva::Error::Closed(_) | weft_pva::Error::Io(_)), "{e}");
    assert_eq!(s.stats().connections_refused.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats().connections.load(Ordering::Relaxed), 0);
    s.shutdown().await;
    // The default admits loopback.
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    c.get(weft_pva::server::demo::SETPOINT, "").await.unwrap();
    s.shutdown().await;
}

fn access_rules(user: &str) -> String {
    format!(
        r#"
default = "read"
[[rule]]
pv = "weft:demo:table"
access = "none"
[[rule]]
pv = "weft:demo:set*"
users = ["{user}"]
hosts = ["127.0.0.0/8"]
access = "write"
[[rule]]
pv = "weft:demo:enum"
hosts = ["10.0.0.0/8"]
access = "write"
"#
    )
}

fn access_server_config(user: &str) -> (tempfile::TempDir, ServerConfig) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("access.toml");
    std::fs::write(&f, access_rules(user)).unwrap();
    let cfg = ServerConfig::isolated().with_access_file(f.to_str().unwrap()).unwrap();
    (dir, cfg)
}

#[tokio::test]
async fn access_rules_enforced_for_our_client() {
    use std::sync::atomic::Ordering;
    // Our client sends `ca` credentials with $USER.
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| whoami());
    let (_dir, cfg) = access_server_config(&user);
    let s = serve_demo(cfg).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    let set = |v: &str| vec![(String::new(), v.to_string())];
    c.put(weft_pva::server::demo::SETPOINT, &set("3.5")).await.unwrap();
    let e = c.put(weft_pva::server::demo::ENUM, &set("2")).await.unwrap_err();
    assert!(e.to_string().contains("access denied: write access to weft:demo:enum"), "{e}");
    c.get(weft_pva::server::demo::ENUM, "").await.unwrap();
    let e = c.get(weft_pva::server::demo::TABLE, "").await.unwrap_err();
    assert!(e.to_string().contains("access denied"), "{e}");
    let e = c.channel(PROCESSED).await.unwrap().process(Duration::from_secs(5)).await.unwrap_err();
    assert!(e.to_string().contains("access denied"), "{e}");
    assert!(s.stats().access_denied.load(Ordering::Relaxed) >= 3);
    s.shutdown().await;
}

#[tokio::test]
async fn access_rules_enforced_for_p4p_and_pvapy() {
    if !peers_enabled("access_rules_enforced_for_p4p_and_pvapy") {
        return;
    }
    let (_dir, cfg) = access_server_config(&whoami());
    let s = serve_demo(cfg).await.unwrap();
    let code = r#"
import json
from p4p.client.thread import Context
ctx = Context("pva")
out = {}
ctx.put("weft:demo:setpoint", 6.5, timeout=5)
out["setpoint"] = float(ctx.get("weft:demo:setpoint", timeout=5))
try:
    ctx.put("weft:demo:enum", {"value.index": 3}, timeout=5)
    out["enum_put"] = "accepted"
except Exception as e:
    out["enum_put"] = type(e).__name__ + ": " + str(e)
out["enum_index"] = int(ctx.get("weft:demo:enum", timeout=5).raw.value.index)
try:
    ctx.get("weft:demo:table", timeout=2)
    out["table"] = "read"
except Exception as e:
    out["table"] = type(e).__name__
print(json.dumps(out))
"#;
    let j = json(&run_py(code, s.udp_addr().port(), &[]).await);
    assert_eq!(j["setpoint"], 6.5);
    let refused = j["enum_put"].as_str().unwrap();
    assert!(refused.starts_with("RemoteError") && refused.contains("access denied: write access to weft:demo:enum"), "{refused}");
    assert_eq!(j["enum_index"], 1, "the refused put changed nothing");
    assert_ne!(j["table"], "read");
    let code = r#"
import json, pvaccess
out = {}
try:
    pvaccess.Channel("weft:demo:enum").put(pvaccess.PvObject({"value": {"index": pvaccess.INT}}, {"value": {"index": 3}}), "field(value.index)")
    out["enum_put"] = "accepted"
except Exception as e:
    out["enum_put"] = str(e)
pvaccess.Channel("weft:demo:setpoint").put(7.25)
out["setpoint"] = pvaccess.Channel("weft:demo:setpoint").get().getDouble("value")
print(json.dumps(out))
"#;
    let j = json(&run_py(code, s.udp_addr().port(), &[]).await);
    assert!(j["enum_put"].as_str().unwrap().contains("access denied"), "{}", j["enum_put"]);
    assert_eq!(j["setpoint"], 7.25);
    s.shutdown().await;
}

/// A raw pvAccess client on a plain socket, so a test can stop reading.
struct RawClient {
    sock: tokio::net::TcpStream,
    framer: weft_pva::proto::FrameDecoder,
    buf: bytes::BytesMut,
    cache: weft_pva::proto::TypeCache,
}

impl RawClient {
    async fn connect(addr: std::net::SocketAddr) -> RawClient {
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = RawClient { sock, framer: Default::default(), buf: Default::default(), cache: Default::default() };
        loop {
            if let weft_pva::proto::Frame::App(h, p) = c.frame().await {
                let m = weft_pva::proto::msg::decode_message(&h, &p, &mut c.cache, Default::default()).unwrap();
                if matches!(m, weft_pva::proto::Message::ValidationRequest { .. }) {
                    break;
                }
            }
        }
        c.send(&weft_pva::proto::Message::ValidationResponse {
            buffer_size: 0x10000,
            registry_size: 0x7fff,
            qos: 0,
            method: "anonymous".into(),
            auth: Some(None),
        })
        .await;
        c
    }

    async fn send(&mut self, m: &weft_pva::proto::Message) {
        use tokio::io::AsyncWriteExt;
        let b = weft_pva::proto::msg::encode_message(m, weft_pva::proto::ByteOrder::Little, false, &mut weft_pva::proto::SendCache::disabled()).unwrap();
        self.sock.write_all(&b).await.unwrap();
    }

    async fn frame(&mut self) -> weft_pva::proto::Frame {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(f) = self.framer.decode(&mut self.buf).unwrap() {
                return f;
            }
            let n = tokio::time::timeout(Duration::from_secs(30), self.sock.read_buf(&mut self.buf)).await.unwrap().unwrap();
            assert!(n > 0, "server closed");
        }
    }

    /// Next application message.
    async fn message(&mut self) -> weft_pva::proto::Message {
        loop {
            if let weft_pva::proto::Frame::App(h, p) = self.frame().await {
                return weft_pva::proto::msg::decode_message(&h, &p, &mut self.cache, Default::default()).unwrap();
            }
        }
    }
}

async fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn slow_client_cannot_make_the_server_buffer_without_bound() {
    use std::sync::atomic::Ordering;
    use weft_pva::proto::header::cmd;
    use weft_pva::proto::msg::sub;
    use weft_pva::proto::{Message, OpRequest, ReqBody, RespBody};
    const CAP: usize = 4 << 20;
    const N: usize = 100_000;
    const GETS: u32 = 100;
    let s = serve_demo(ServerConfig { send_queue_bytes: CAP, ..ServerConfig::isolated() }).await.unwrap();
    let stats = s.stats();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    let buffer = weft_pva::server::demo::BUFFER;
    let ch = c.channel(buffer).await.unwrap();
    let t = Duration::from_secs(10);
    ch.array_put(0, Value::Array(weft_pva::proto::ScalarArray::F64((0..N).map(|i| i as f64).collect())), t).await.unwrap();

    // A client asks for 100 x 800 kB (80 MB) and reads nothing.
    let mut raw = RawClient::connect(s.tcp_addr()).await;
    raw.send(&Message::CreateChannel { channels: vec![(1, buffer.to_string())] }).await;
    let sid = loop {
        if let Message::CreateChannelResponse { sid, status, .. } = raw.message().await {
            assert!(status.is_success());
            break sid;
        }
    };
    let pv_request = Some(weft_pva::proto::request::PvRequest::default().to_variant());
    raw.send(&Message::Request(OpRequest { command: cmd::GET, sid, ioid: 7, subcmd: sub::INIT, body: ReqBody::Init { pv_request, nfree: None } })).await;
    loop {
        if let Message::Response(r) = raw.message().await {
            assert!(matches!(r.body, RespBody::Init(_)));
            break;
        }
    }
    for _ in 0..GETS {
        raw.send(&Message::Request(OpRequest { command: cmd::GET, sid, ioid: 7, subcmd: 0, body: ReqBody::Data(Default::default()) })).await;
    }
    // The server fills its queue for this client and waits instead of buffering more.
    poll_until("the send queue to fill", || stats.send_queue_waits.load(Ordering::Relaxed) > 0).await;
    let peak = stats.send_queue_peak_bytes.load(Ordering::Relaxed);
    assert!(peak <= CAP as u64, "queue held {peak} bytes > {CAP}");
    assert!(peak > (CAP / 2) as u64, "queue never filled ({peak} bytes): the test did not exercise the bound");
    // Everyone else is still served, and our client acknowledges the marks.
    let a = ch.array_get(0, 0, t).await.unwrap();
    assert!(matches!(a, Value::Array(ref x) if x.len() == N));
    ch.array_get(0, 0, t).await.unwrap();
    assert!(stats.marks_sent.load(Ordering::Relaxed) >= 1);
    poll_until("an ack from our client", || stats.acks_received.load(Ordering::Relaxed) >= 1).await;
    // When the slow client reads again, every answer arrives, in full.
    let mut got = 0;
    while got < GETS {
        if let Message::Response(r) = raw.message().await {
            assert_eq!(r.ioid, 7);
            let RespBody::Data(d) = r.body else { panic!("get without data") };
            assert!(d.len() > N * 8, "short get reply: {} bytes", d.len());
            got += 1;
        }
    }
    assert!(stats.send_queue_peak_bytes.load(Ordering::Relaxed) <= CAP as u64);
    s.shutdown().await;
}

#[tokio::test]
async fn p4p_and_pvapy_work_with_marks_and_a_small_send_queue() {
    use std::sync::atomic::Ordering;
    if !peers_enabled("p4p_and_pvapy_work_with_marks_and_a_small_send_queue") {
        return;
    }
    // 64 KiB queue: a mark every 16 KiB, and 8 kB waveforms fill the queue often.
    let s = serve_demo(ServerConfig { send_queue_bytes: 64 * 1024, ..ServerConfig::isolated() }).await.unwrap();
    let code = r#"
import json
from p4p.client.thread import Context
ctx = Context("pva")
n = sum(len(ctx.get("weft:demo:waveform", timeout=5)) for _ in range(50))
img = ctx.get("weft:demo:image", timeout=5)
print(json.dumps({"elements": n, "image": len(img.raw.value)}))
"#;
    let j = json(&run_py(code, s.udp_addr().port(), &[]).await);
    assert_eq!(j["elements"], 50 * 1000);
    assert_eq!(j["image"], 64 * 64);
    let code = r#"
import json, pvaccess
c = pvaccess.Channel("weft:demo:waveform")
n = sum(len(c.get().getScalarArray("value")) for _ in range(50))
print(json.dumps({"elements": n}))
"#;
    let j = json(&run_py(code, s.udp_addr().port(), &[]).await);
    assert_eq!(j["elements"], 50 * 1000);
    assert!(s.stats().marks_sent.load(Ordering::Relaxed) >= 20, "peers received marks");
    s.shutdown().await;
}

#[tokio::test]
async fn clamped_put_warns_p4p_and_pvapy() {
    if !peers_enabled("clamped_put_warns_p4p_and_pvapy") {
        return;
    }
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let code = r#"
import json
from p4p.client.thread import Context
ctx = Context("pva")
ctx.put("weft:demo:setpoint", 50.0, timeout=5)
print(json.dumps({"value": float(ctx.get("weft:demo:setpoint", timeout=5))}))
"#;
    let o = run_py(code, s.udp_addr().port(), &[("PVXS_LOG", "pvxs.remote.log=WARN")]).await;
    assert_eq!(json(&o)["value"], 10.0);
    // pvxs logs server messages under pvxs.remote.log.
    assert!(o.stderr.contains("weft:demo:setpoint : value 50 clamped to 10 (control limits -10 .. 10)"), "{}", o.stderr);
    let code = r#"
import json, pvaccess
c = pvaccess.Channel("weft:demo:setpoint")
c.put(-50.0)
print(json.dumps({"value": c.get().getDouble("value")}))
"#;
    let o = run_py(code, s.udp_addr().port(), &[]).await;
    assert_eq!(json(&o)["value"], -10.0);
    // pvAccessCPP's requester prints it.
    assert!(o.stdout.contains("warning weft:demo:setpoint value -50 clamped to -10"), "{}", o.stdout);
    s.shutdown().await;
}

#[tokio::test]
async fn clamped_put_warning_reaches_our_client() {
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    let sp = weft_pva::server::demo::SETPOINT;
    c.put(sp, &[(String::new(), "3".into())]).await.unwrap();
    assert!(c.take_messages().is_empty(), "an in-range put draws no message");
    c.put(sp, &[(String::new(), "50".into())]).await.unwrap();
    let m = c.take_messages();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].pv, sp);
    assert_eq!(m[0].severity, weft_pva::client::Severity::Warning);
    assert_eq!(m[0].text, "value 50 clamped to 10 (control limits -10 .. 10)");
    let d = c.get(sp, "").await.unwrap();
    assert_eq!(path_ref(&d.desc, &d.value, "value").map(|x| x.0.clone()), Some(Value::F64(10.0)));
    s.shutdown().await;
}

/// A TCP relay to `upstream` that can be frozen: it stops moving bytes in
/// both directions but keeps the sockets open (a hung server or a dead path).
async fn freezable_relay(upstream: std::net::SocketAddr) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (frozen_tx, frozen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let up = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::spawn(pump(dr, uw, frozen.clone()));
            tokio::spawn(pump(ur, dw, frozen.clone()));
        }
    });
    (addr, frozen_tx)
}

async fn pump(mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf, mut frozen: tokio::sync::watch::Receiver<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 65536];
    loop {
        if *frozen.borrow() {
            // Frozen for good: hold both sockets open and move nothing.
            let _keep = (r, w);
            std::future::pending::<()>().await;
            return;
        }
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if w.write_all(&buf[..n]).await.is_err() { return },
            },
            _ = frozen.changed() => {}
        }
    }
}

#[tokio::test]
async fn echo_detects_a_hung_server() {
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let (relay, freeze) = freezable_relay(s.tcp_addr()).await;
    // Margins of seconds: a loaded machine may pause this process for a while.
    let live = weft_pva::client::Liveness { echo_interval: Duration::from_millis(200), dead_after: Duration::from_secs(3) };
    let conn = weft_pva::client::ClientConn::connect_with(relay, Duration::from_secs(5), live).await.unwrap();
    let (cid, sid, _w) = conn.create_channel(weft_pva::server::demo::SETPOINT, Duration::from_secs(5)).await.unwrap();
    let ch = weft_pva::client::Channel::new(conn.clone(), sid, cid, weft_pva::server::demo::SETPOINT);
    // Idle for several dead_after periods: echo replies keep it alive.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!conn.is_closed(), "a live but idle server must not be declared dead");
    ch.get("", Duration::from_secs(5)).await.unwrap();
    freeze.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(60), conn.closed()).await.expect("hung server never detected");
    s.shutdown().await;
}

#[tokio::test]
async fn echo_detects_a_stopped_p4p_server() {
    if !peers_enabled("echo_detects_a_stopped_p4p_server") {
        return;
    }
    use tokio::io::AsyncBufReadExt;
    let scripts = std::env::var("WEFT_PVA_SCRIPTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| common::repo().join("../shared/scripts/pva"));
    let mut child = tokio::process::Command::new(common::python())
        .arg(scripts.join("peer.py"))
        .args(["--tcp-port", "0", "--udp-port", "0", "--prefix", "echo:"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(j) = l.strip_prefix("READY ") {
                return Some(serde_json::from_str::<serde_json::Value>(j).unwrap());
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("peer.py did not become ready");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let udp: u16 = ready["EPICS_PVAS_BROADCAST_PORT"].as_str().map(|p| p.parse().unwrap()).or_else(|| ready["EPICS_PVAS_BROADCAST_PORT"].as_u64().map(|p| p as u16)).unwrap();
    let cfg = ClientConfig {
        echo_interval: Duration::from_millis(200),
        dead_after: Duration::from_millis(1000),
        ..ClientConfig::unicast(std::net::SocketAddr::from(([127, 0, 0, 1], udp)))
    };
    let c = Client::new(cfg).await.unwrap();
    let mut m = c.monitor("echo:int", "", 0);
    let first = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(weft_pva::client::MonitorEvent::Data(_)) = m.next().await {
                return;
            }
        }
    })
    .await;
    assert!(first.is_ok(), "no monitor update from p4p");
    let pid = child.id().unwrap().to_string();
    // Freeze the server process we started (by pid): its sockets stay open.
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let detected = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match m.next().await {
                Some(weft_pva::client::MonitorEvent::Disconnected) | None => return,
                _ => {}
            }
        }
    })
    .await;
    let _ = std::process::Command::new("kill").args(["-CONT", &pid]).status();
    assert!(detected.is_ok(), "stopped server not detected by echo");
    drop(m);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_an_execution_and_keeps_the_operation() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use weft_pva::proto::header::cmd;
    use weft_pva::proto::msg::sub;
    use weft_pva::proto::nt::{Builder, Meta, nt_scalar};
    use weft_pva::server::{Provider, Server, SharedPv};
    // A PV whose put waits until released (like a bridge waiting for a durable record).
    let release = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicBool::new(false));
    let (d, v) = Builder::new(nt_scalar(weft_pva::proto::ScalarType::F64, Meta::default())).build();
    let (r2, f2) = (release.clone(), finished.clone());
    let pv = SharedPv::with_put_handler(
        d,
        v,
        Arc::new(move |_pv: &SharedPv, _bits: &weft_pva::proto::BitSet, v: Value| {
            let (r, f) = (r2.clone(), f2.clone());
            Box::pin(async move {
                r.notified().await;
                f.store(true, Ordering::SeqCst);
                Ok(v)
            })
        }),
    );
    let p = Provider::new();
    p.add_pv("slow:put", pv.clone());
    let s = Server::start(ServerConfig::isolated(), p).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    let ch = c.channel("slow:put").await.unwrap();
    let t = Duration::from_secs(5);
    let mut op = ch.operation(cmd::PUT, "", t).await.unwrap();
    let body = op.put_body(&[("value".into(), "5".into())]).unwrap();
    // The execution times out; the client cancels it on the server.
    let e = op.exec(0, body, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(e, weft_pva::Error::Timeout(_)), "{e}");
    poll_until("the server to cancel the put", || s.stats().requests_cancelled.load(Ordering::Relaxed) == 1).await;
    release.notify_waiters();
    // The operation is still there and idle: a get-put on it works and shows the put never happened.
    let r = op.exec(sub::GET, weft_pva::proto::ReqBody::Data(Default::default()), t).await.unwrap();
    let d = op.decode(&r).unwrap();
    assert_eq!(path_ref(&d.desc, &d.value, "value").map(|x| x.0.clone()), Some(Value::F64(0.0)));
    assert!(!finished.load(Ordering::SeqCst), "the cancelled put handler ran to completion");
    // A put that completes works on the same operation.
    let body = op.put_body(&[("value".into(), "7".into())]).unwrap();
    let waiter = tokio::spawn({
        let release = release.clone();
        async move {
            for _ in 0..200 {
                release.notify_waiters();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    op.exec(0, body, t).await.unwrap();
    waiter.abort();
    assert!(finished.load(Ordering::SeqCst));
    op.destroy().await;
    let d = c.get("slow:put", "").await.unwrap();
    assert_eq!(path_ref(&d.desc, &d.value, "value").map(|x| x.0.clone()), Some(Value::F64(7.0)));
    s.shutdown().await;
}

#[tokio::test]
async fn weft_client_cancels_on_a_p4p_server() {
    if !peers_enabled("weft_client_cancels_on_a_p4p_server") {
        return;
    }
    use tokio::io::AsyncBufReadExt;
    use weft_pva::proto::header::cmd;
    use weft_pva::proto::msg::sub;
    // A pvxs server whose put never completes until cancelled.
    let code = r#"
import json, time
from p4p.server import Server
from p4p.server.thread import SharedPV
from p4p.nt import NTScalar
pv = SharedPV(nt=NTScalar('d'), initial=1.5)
@pv.put
def put(pv, op):
    pass  # never op.done(): the put stays in progress
s = Server(providers=[{'slow:put': pv}], isolate=True)
print('READY ' + json.dumps(s.conf()), flush=True)
time.sleep(600)
"#;
    let mut child = tokio::process::Command::new(common::python())
        .arg("-c")
        .arg(code)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let conf = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(j) = l.strip_prefix("READY ") {
                return serde_json::from_str::<serde_json::Value>(j).unwrap();
            }
        }
        panic!("p4p server exited");
    })
    .await
    .unwrap();
    let port = |k: &str| conf[k].as_str().map(|p| p.parse::<u16>().unwrap()).or_else(|| conf[k].as_u64().map(|p| p as u16)).unwrap();
    let c = Client::new(ClientConfig::unicast(std::net::SocketAddr::from(([127, 0, 0, 1], port("EPICS_PVAS_BROADCAST_PORT"))))).await.unwrap();
    let ch = c.channel("slow:put").await.unwrap();
    let t = Duration::from_secs(5);
    let mut op = ch.operation(cmd::PUT, "", t).await.unwrap();
    let body = op.put_body(&[("value".into(), "9".into())]).unwrap();
    let e = op.exec(0, body, Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(e, weft_pva::Error::Timeout(_)), "{e}");
    // pvxs honoured the cancel: the same operation executes again.
    let r = op.exec(sub::GET, weft_pva::proto::ReqBody::Data(Default::default()), t).await.unwrap();
    let d = op.decode(&r).unwrap();
    assert_eq!(path_ref(&d.desc, &d.value, "value").map(|x| x.0.clone()), Some(Value::F64(1.5)));
    op.destroy().await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn beacons_bring_a_monitor_back_to_a_restarted_server() {
    use weft_pva::client::MonitorEvent;
    let free = || {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        (t, u)
    };
    let (tcp, udp) = free();
    let udp_addr = std::net::SocketAddr::from(([127, 0, 0, 1], udp));
    // Searches are retried only after an hour: only a beacon can bring the monitor back in time.
    let hour = Duration::from_secs(3600);
    let c = Client::new(ClientConfig {
        timeout: hour,
        search_delay_initial: hour,
        search_delay_max: hour,
        beacon_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ClientConfig::unicast(udp_addr)
    })
    .await
    .unwrap();
    let beacon = c.beacon_addr().expect("client listens for beacons");
    let cfg = ServerConfig {
        tcp_port: tcp,
        udp_port: udp,
        tcp_port_fallback: false,
        beacon_addrs: vec![beacon],
        ..ServerConfig::isolated()
    };
    async fn next(m: &mut weft_pva::client::Monitor) -> MonitorEvent {
        tokio::time::timeout(Duration::from_secs(60), m.next()).await.expect("monitor silent").expect("monitor ended")
    }
    let s = serve_demo(cfg.clone()).await.unwrap();
    let mut m = c.monitor(weft_pva::server::demo::COUNTER, "", 0);
    while !matches!(next(&mut m).await, MonitorEvent::Data(_)) {}
    s.shutdown().await;
    while !matches!(next(&mut m).await, MonitorEvent::Disconnected) {}
    // Catch the client's first search while no server is there; its next one is an hour away.
    let watcher = tokio::net::UdpSocket::bind(udp_addr).await.unwrap();
    let mut buf = [0u8; 2048];
    tokio::time::timeout(Duration::from_secs(60), watcher.recv_from(&mut buf)).await.expect("client never searched").unwrap();
    drop(watcher);
    // The restarted server's first beacon (new GUID) makes the client search again now.
    let s = serve_demo(cfg).await.unwrap();
    loop {
        match next(&mut m).await {
            MonitorEvent::Data(_) => break,
            MonitorEvent::Connected(_) | MonitorEvent::Disconnected => {}
        }
    }
    s.shutdown().await;
}
