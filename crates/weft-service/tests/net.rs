//! The foundation through real sockets: every transport, many clients,
//! multiplexing, bad input, handshake rules, timeouts, reconnection,
//! liveness and drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use weft_net::{Client, ClientConfig, ClientError, Endpoint, Server, ServerConfig};
use weft_service::{EndpointOptions, Service, ServiceError};
use weft_wire::{
    decode_datagram, encode, BodyFormat, ErrorBody, ErrorCode, Frame, FrameDecoder, FrameKind, Hello, MessageId,
    Welcome,
};

#[derive(Serialize, Deserialize)]
struct Sleep {
    ms: u64,
    tag: u64,
}

#[derive(Serialize, Deserialize)]
struct Roll {
    sides: u32,
}

fn service() -> Service {
    let mut s = Service::new("test");
    s.endpoint("sleep", |r: Sleep| async move {
        tokio::time::sleep(Duration::from_millis(r.ms)).await;
        Ok(r.tag)
    })
    .unwrap();
    // Answers how many of its calls were running when this one began.
    let running = Arc::new(std::sync::atomic::AtomicU64::new(0));
    s.endpoint("overlap", move |r: Sleep| {
        let running = running.clone();
        async move {
            let before = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(r.ms)).await;
            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            Ok(before)
        }
    })
    .unwrap();
    s.endpoint("roll", |r: Roll| async move {
        if r.sides == 0 {
            return Err(ServiceError::validation("sides must be at least 1"));
        }
        Ok(r.sides)
    })
    .unwrap();
    s.endpoint("boom", |_: ()| async move {
        if true {
            panic!("kaboom");
        }
        Ok(())
    })
    .unwrap();
    s.endpoint("fail", |_: ()| async move { Err::<(), _>(ServiceError::handler("disk on fire")) }).unwrap();
    s.endpoint_with("narrow", EndpointOptions { max_concurrent: Some(1) }, |r: Sleep, _peer| async move {
        tokio::time::sleep(Duration::from_millis(r.ms)).await;
        Ok(r.tag)
    })
    .unwrap();
    s
}

struct Node {
    server: Server,
    tcp: SocketAddr,
    udp: SocketAddr,
    unix: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start_with(max_frame_bytes: usize) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(
        ServerConfig { max_frame_bytes, max_in_flight_per_conn: 512, ..ServerConfig::default() },
        service().into_handler(),
    );
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let udp = server.bind_udp("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let unix = server.bind_unix(&dir.path().join("t.sock")).await.unwrap();
    Node { server, tcp, udp, unix, _dir: dir }
}

async fn start() -> Node {
    start_with(64 * 1024).await
}

fn endpoints(n: &Node) -> Vec<Endpoint> {
    vec![
        Endpoint::Tcp(n.tcp.to_string()),
        Endpoint::Udp(n.udp.to_string()),
        Endpoint::Unix(n.unix.clone()),
    ]
}

fn quick() -> ClientConfig {
    ClientConfig { request_timeout: Duration::from_secs(10), connect_timeout: Duration::from_secs(2), ..ClientConfig::default() }
}

#[tokio::test]
async fn many_clients_on_every_transport() {
    let node = start().await;
    let mut tasks = vec![];
    for ep in endpoints(&node) {
        for c in 0..12u64 {
            let ep = ep.clone();
            tasks.push(tokio::spawn(async move {
                let client = Client::connect(ep.clone(), quick()).await.unwrap();
                assert_eq!(client.welcome().unwrap().server_name, "weft");
                for i in 0..40u64 {
                    let text = format!("{ep} client {c} msg {i}");
                    let back: String = client.call("weft.echo", &text).await.unwrap();
                    assert_eq!(back, text);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats: std::collections::BTreeMap<String, serde_json::Value> =
        Client::connect(endpoints(&node)[0].clone(), quick()).await.unwrap().call("weft.stats", &()).await.unwrap();
    assert_eq!(stats["endpoint.weft.echo.calls"], 3 * 12 * 40);
    assert!(stats.contains_key("endpoint.weft.echo.latency_us.p99"));
}

#[tokio::test]
async fn one_connection_many_requests_in_flight() {
    let node = start().await;
    for ep in endpoints(&node) {
        let client = Client::connect(ep.clone(), quick()).await.unwrap();
        // 100 requests of different lengths on one connection: answers come
        // back out of order and must still match their requests.
        let calls = (0..100u64).map(|tag| {
            let client = client.clone();
            async move {
                let ms = 200 - (tag % 7) * 20;
                let got: u64 = client.call("sleep", &Sleep { ms, tag }).await.unwrap();
                assert_eq!(got, tag);
            }
        });
        futures::future::join_all(calls).await;
        // And they really run at the same time: a handler saw others running.
        let calls = (0..20u64).map(|tag| {
            let client = client.clone();
            async move { client.call::<_, u64>("overlap", &Sleep { ms: 100, tag }).await.unwrap() }
        });
        let seen = futures::future::join_all(calls).await;
        assert!(seen.iter().any(|n| *n > 0), "{ep}: no two requests of one connection overlapped: {seen:?}");
    }
}

#[tokio::test]
async fn typed_errors_reach_the_client() {
    let node = start().await;
    for ep in endpoints(&node) {
        let client = Client::connect(ep.clone(), quick()).await.unwrap();
        let e = client.call::<_, u32>("nope", &()).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownRoute), "{ep}: {e}");
        let e = client.call::<_, u32>("roll", &"not a struct").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadBody), "{ep}: {e}");
        let e = client.call::<_, u32>("roll", &Roll { sides: 0 }).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Validation), "{ep}: {e}");
        let e = client.call::<_, ()>("fail", &()).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Handler), "{ep}: {e}");
        let e = client.call::<_, ()>("boom", &()).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Handler), "{ep}: {e}");
        assert!(e.to_string().contains("kaboom"));
        // JSON bodies work the same way.
        let v = client.call_json("roll", &serde_json::json!({"sides": 6})).await.unwrap();
        assert_eq!(v, 6);
        // Still serving after all of that.
        let n: u32 = client.call("roll", &Roll { sides: 20 }).await.unwrap();
        assert_eq!(n, 20);
    }
}

#[tokio::test]
async fn busy_when_endpoint_is_at_its_limit() {
    let node = start().await;
    let client = Client::connect(Endpoint::Tcp(node.tcp.to_string()), quick()).await.unwrap();
    let slow = {
        let c = client.clone();
        tokio::spawn(async move { c.call::<_, u64>("narrow", &Sleep { ms: 500, tag: 1 }).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = client.call::<_, u64>("narrow", &Sleep { ms: 0, tag: 2 }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Busy));
    assert_eq!(slow.await.unwrap().unwrap(), 1);
}

/// A raw TCP connection speaking frames by hand.
struct Raw {
    stream: TcpStream,
    dec: FrameDecoder,
    buf: BytesMut,
}

impl Raw {
    async fn open(addr: SocketAddr, hello: bool) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw { stream, dec: FrameDecoder::new(1 << 20), buf: BytesMut::new() };
        if hello {
            let h = Hello { protocol_version: 1, client_id: "raw".into(), client_name: "raw".into() };
            raw.send(&Frame::with_body(FrameKind::Control, MessageId::new_v4(), "hello", BodyFormat::MsgPack, &h).unwrap()).await;
            let w = raw.recv().await.unwrap();
            assert_eq!(w.route, "welcome");
            let _: Welcome = w.decode_body().unwrap();
        }
        raw
    }
    async fn send(&mut self, f: &Frame) {
        let mut out = BytesMut::new();
        encode(f, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }
    async fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }
    /// Next frame, or None when the server closed the connection.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                return Some(f);
            }
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf)).await.expect("server answered").unwrap();
            if n == 0 {
                return None;
            }
        }
    }
}

fn ping(id: MessageId) -> Frame {
    Frame::request(id, "weft.ping", BodyFormat::MsgPack, &()).unwrap()
}

#[tokio::test]
async fn garbage_gets_an_error_frame_and_a_closed_connection() {
    let node = start().await;
    let mut bystander = Client::connect(Endpoint::Tcp(node.tcp.to_string()), quick()).await.unwrap();
    let mut raw = Raw::open(node.tcp, false).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let e = raw.recv().await.unwrap();
    assert_eq!(e.kind, FrameKind::Error);
    assert_eq!(e.decode_body::<ErrorBody>().unwrap().code, ErrorCode::BadFrame);
    assert!(raw.recv().await.is_none(), "connection closed after bad magic");
    let _: serde_json::Value = bystander.call("weft.ping", &()).await.unwrap();
    bystander = Client::connect(Endpoint::Tcp(node.tcp.to_string()), quick()).await.unwrap();
    let _: serde_json::Value = bystander.call("weft.ping", &()).await.unwrap();
}

#[tokio::test]
async fn handshake_is_required_on_streams() {
    let node = start().await;
    let mut raw = Raw::open(node.tcp, false).await;
    let id = MessageId::new_v4();
    raw.send(&ping(id)).await;
    let e = raw.recv().await.unwrap();
    assert_eq!((e.kind, e.id), (FrameKind::Error, id));
    assert_eq!(e.decode_body::<ErrorBody>().unwrap().code, ErrorCode::HandshakeRequired);
    // A hello afterwards opens the session on the same connection.
    let h = Hello { protocol_version: 1, client_id: "late".into(), client_name: String::new() };
    raw.send(&Frame::with_body(FrameKind::Control, MessageId::new_v4(), "hello", BodyFormat::MsgPack, &h).unwrap()).await;
    assert_eq!(raw.recv().await.unwrap().route, "welcome");
    let id = MessageId::new_v4();
    raw.send(&ping(id)).await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.kind, r.id), (FrameKind::Response, id));
}

#[tokio::test]
async fn hello_with_another_version_is_refused_clearly() {
    let node = start().await;
    let mut raw = Raw::open(node.tcp, false).await;
    let h = Hello { protocol_version: 9, client_id: "future".into(), client_name: String::new() };
    raw.send(&Frame::with_body(FrameKind::Control, MessageId::new_v4(), "hello", BodyFormat::MsgPack, &h).unwrap()).await;
    let e = raw.recv().await.unwrap();
    let body: ErrorBody = e.decode_body().unwrap();
    assert_eq!(body.code, ErrorCode::UnsupportedVersion);
    assert!(body.message.contains('9') && body.message.contains('1'), "{}", body.message);
}

#[tokio::test]
async fn client_reports_a_server_of_another_version() {
    // A fake server that welcomes with protocol version 2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let mut dec = FrameDecoder::new(1 << 16);
        let hello = loop {
            if let Some(f) = dec.decode(&mut buf).unwrap() {
                break f;
            }
            s.read_buf(&mut buf).await.unwrap();
        };
        let w = Welcome { protocol_version: 2, server_id: "x".into(), server_name: "future".into(), version: "9".into(), features: vec![] };
        let f = Frame::with_body(FrameKind::Control, hello.id, "welcome", BodyFormat::MsgPack, &w).unwrap();
        let mut out = BytesMut::new();
        encode(&f, &mut out).unwrap();
        s.write_all(&out).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let e = Client::connect(Endpoint::Tcp(addr.to_string()), quick()).await.err().expect("must fail");
    assert!(matches!(e, ClientError::VersionMismatch { client: 1, .. }), "{e}");
}

#[tokio::test]
async fn bad_frames_are_answered_and_the_connection_continues() {
    let node = start_with(64 * 1024).await;
    let mut raw = Raw::open(node.tcp, true).await;

    // Unknown protocol version in the frame header.
    let id = MessageId::new_v4();
    let mut out = BytesMut::new();
    encode(&ping(id), &mut out).unwrap();
    out[2] = 7;
    raw.send_bytes(&out).await;
    let e = raw.recv().await.unwrap();
    assert_eq!((e.kind, e.id), (FrameKind::Error, id));
    assert_eq!(e.decode_body::<ErrorBody>().unwrap().code, ErrorCode::UnsupportedVersion);

    // Unknown kind.
    let id = MessageId::new_v4();
    let mut out = BytesMut::new();
    encode(&ping(id), &mut out).unwrap();
    out[3] = 42;
    raw.send_bytes(&out).await;
    let e = raw.recv().await.unwrap();
    assert_eq!((e.kind, e.id), (FrameKind::Error, id));
    assert_eq!(e.decode_body::<ErrorBody>().unwrap().code, ErrorCode::BadFrame);

    // Oversized: the header claims 200 KiB (over the 64 KiB limit); the
    // server answers at once, skips the claimed bytes, and goes on.
    let id = MessageId::new_v4();
    let mut big = BytesMut::new();
    encode(&Frame::request(id, "weft.echo", BodyFormat::MsgPack, &()).unwrap(), &mut big).unwrap();
    let claimed = 200 * 1024u32;
    big[6..10].copy_from_slice(&claimed.to_be_bytes());
    big.truncate(big.len() - 1); // drop the 1-byte body we had
    raw.send_bytes(&big).await;
    let e = raw.recv().await.unwrap();
    assert_eq!((e.kind, e.id), (FrameKind::Error, id));
    let body: ErrorBody = e.decode_body().unwrap();
    assert_eq!(body.code, ErrorCode::TooLarge);
    let mut junk = BytesMut::new();
    // The route key went out with the header; the claimed body follows.
    junk.put_bytes(0xAB, claimed as usize);
    raw.send_bytes(&junk).await;

    // Unknown route: an error, not a closed connection.
    let id = MessageId::new_v4();
    raw.send(&Frame::request(id, "no.such", BodyFormat::Json, &()).unwrap()).await;
    let e = raw.recv().await.unwrap();
    assert_eq!(e.decode_body::<ErrorBody>().unwrap().code, ErrorCode::UnknownRoute);

    // And the connection still serves.
    let id = MessageId::new_v4();
    raw.send(&ping(id)).await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.kind, r.id), (FrameKind::Response, id));
}

#[tokio::test]
async fn truncated_frame_then_hangup_harms_no_one() {
    let node = start().await;
    let client = Client::connect(Endpoint::Tcp(node.tcp.to_string()), quick()).await.unwrap();
    for cut in [1usize, 5, 20, 30] {
        let mut raw = Raw::open(node.tcp, true).await;
        let mut out = BytesMut::new();
        encode(&ping(MessageId::new_v4()), &mut out).unwrap();
        raw.send_bytes(&out[..cut.min(out.len() - 1)]).await;
        drop(raw);
    }
    let _: serde_json::Value = client.call("weft.ping", &()).await.unwrap();
}

#[tokio::test]
async fn udp_bad_datagrams_get_error_datagrams() {
    let node = start().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(node.udp).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    for bad in [&b"garbage"[..], &b"WF"[..], &[0x57, 0x46, 1, 1, 0, 0, 0, 0, 0, 9][..]] {
        sock.send(bad).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await.unwrap().unwrap();
        let f = decode_datagram(&buf[..n], 1 << 20).unwrap();
        assert_eq!(f.kind, FrameKind::Error);
    }
    // A truncated datagram (header promises more than arrived).
    let mut out = BytesMut::new();
    encode(&ping(MessageId::new_v4()), &mut out).unwrap();
    sock.send(&out[..out.len() - 1]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(decode_datagram(&buf[..n], 1 << 20).unwrap().kind, FrameKind::Error);
    // Still serving, no handshake needed on UDP.
    let id = MessageId::new_v4();
    let mut out = BytesMut::new();
    encode(&ping(id), &mut out).unwrap();
    sock.send(&out).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await.unwrap().unwrap();
    let f = decode_datagram(&buf[..n], 1 << 20).unwrap();
    assert_eq!((f.kind, f.id), (FrameKind::Response, id));
}

#[tokio::test]
async fn udp_answer_too_big_for_a_datagram_is_an_error() {
    let node = start_with(1 << 20).await;
    let client = Client::connect(Endpoint::Udp(node.udp.to_string()), quick()).await.unwrap();
    let e = client.call::<_, serde_json::Value>("weft.echo", &"x".repeat(70_000)).await.unwrap_err();
    assert!(matches!(e, ClientError::DatagramTooLarge(_)), "{e}");
    // The server refuses to send an answer that cannot fit.
    let s: String = client.call("weft.echo", &"y".repeat(30_000)).await.unwrap();
    assert_eq!(s.len(), 30_000);
}

#[tokio::test]
async fn request_timeout_then_the_connection_still_works() {
    let node = start().await;
    let cfg = ClientConfig { request_timeout: Duration::from_millis(200), ..quick() };
    let client = Client::connect(Endpoint::Tcp(node.tcp.to_string()), cfg).await.unwrap();
    let e = client.call::<_, u64>("sleep", &Sleep { ms: 1500, tag: 1 }).await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout(_)), "{e}");
    let got: u64 = client.call("sleep", &Sleep { ms: 1, tag: 2 }).await.unwrap();
    assert_eq!(got, 2);
}

#[tokio::test]
async fn connect_timeout_and_refusal_are_errors() {
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = Client::connect(Endpoint::Tcp(format!("127.0.0.1:{port}")), quick()).await.err().unwrap();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    // A listener that never answers the hello: connect times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let cfg = ClientConfig { connect_timeout: Duration::from_millis(300), ..quick() };
    let e = Client::connect(Endpoint::Tcp(addr.to_string()), cfg).await.err().unwrap();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("no welcome within"), "the connect timeout fired: {e}");
    drop(silent);
}

#[tokio::test]
async fn client_reconnects_after_the_server_comes_back() {
    let node = start().await;
    let addr = node.tcp;
    let cfg = ClientConfig {
        request_timeout: Duration::from_millis(500),
        backoff: weft_net::Backoff { initial_ms: 20, max_ms: 200, multiplier: 2.0 },
        ..quick()
    };
    let client = Client::connect(Endpoint::Tcp(addr.to_string()), cfg).await.unwrap();
    let first = client.welcome().unwrap().server_id;
    let _: serde_json::Value = client.call("weft.ping", &()).await.unwrap();
    assert!(node.server.shutdown(Duration::from_secs(2)).await);
    drop(node);
    // While down, calls fail (lost or timed out), they do not hang.
    let e = client.call::<_, serde_json::Value>("weft.ping", &()).await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout(_) | ClientError::ConnectionLost), "{e}");
    // A new server on the same address.
    let server = Server::new(ServerConfig::default(), service().into_handler());
    let mut bound = None;
    for _ in 0..50 {
        match server.bind_tcp(&addr.to_string()).await {
            Ok(a) => {
                bound = Some(a);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(bound.is_some(), "could not rebind {addr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.call::<_, serde_json::Value>("weft.ping", &()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("never reconnected: {e}"),
        }
    }
    assert_ne!(client.welcome().unwrap().server_id, first, "handshake ran again");
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let node = start().await;
    let client = Client::connect(Endpoint::Tcp(node.tcp.to_string()), quick()).await.unwrap();
    let inflight = {
        let c = client.clone();
        tokio::spawn(async move { c.call::<_, u64>("sleep", &Sleep { ms: 400, tag: 7 }).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = node.server.shutdown(Duration::from_secs(5)).await;
    assert!(drained);
    assert_eq!(inflight.await.unwrap().unwrap(), 7, "the request in flight was answered");
    // No longer accepting.
    assert!(TcpStream::connect(node.tcp).await.is_err() || {
        let e = Client::connect(Endpoint::Tcp(node.tcp.to_string()), quick()).await;
        e.is_err()
    });
}

#[tokio::test]
async fn liveness_sees_peers_come_and_go() {
    let a = start().await;
    let b = start().await;
    let a_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a_sock = Arc::new(a_sock);
    // Each node beats to the other's UDP listener.
    let stop_a = tokio_util_stop();
    let stop_b = tokio_util_stop();
    let sa = weft_net::liveness::spawn_heartbeats(a_sock, "node-a".into(), vec![b.udp.to_string()], Duration::from_millis(30), stop_a.clone());
    let b_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sb = weft_net::liveness::spawn_heartbeats(b_sock, "node-b".into(), vec![a.udp.to_string()], Duration::from_millis(30), stop_b.clone());
    let timeout = Duration::from_millis(200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let at_b = b.server.liveness().snapshot(Instant::now(), timeout);
        let at_a = a.server.liveness().snapshot(Instant::now(), timeout);
        if at_b.iter().any(|p| p.node_id == "node-a" && p.alive && p.heartbeats >= 3)
            && at_a.iter().any(|p| p.node_id == "node-b" && p.alive && p.heartbeats >= 3)
        {
            break;
        }
        assert!(Instant::now() < deadline, "heartbeats never arrived: {at_a:?} {at_b:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_a.cancel();
    sa.await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let at_b = b.server.liveness().snapshot(Instant::now(), timeout);
    let row = at_b.iter().find(|p| p.node_id == "node-a").unwrap();
    assert!(!row.alive, "node-a stopped beating and must be dead: {row:?}");
    assert!(a.server.liveness().snapshot(Instant::now(), timeout).iter().any(|p| p.node_id == "node-b" && p.alive));
    stop_b.cancel();
    sb.await.unwrap();
}

fn tokio_util_stop() -> tokio_util::sync::CancellationToken {
    tokio_util::sync::CancellationToken::new()
}

#[tokio::test]
async fn allow_lists_refuse_before_reading_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let only_one = weft_net::AllowList::parse(&["127.0.0.1/32"]).unwrap();
    let server = Server::new(
        ServerConfig {
            allow_tcp: only_one.clone(),
            allow_udp: only_one,
            allow_unix: weft_net::AllowList::parse(&["uid:4242424"]).unwrap(),
            ..ServerConfig::default()
        },
        service().into_handler(),
    );
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let udp = server.bind_udp("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let unix = server.bind_unix(&dir.path().join("a.sock")).await.unwrap();

    // From 127.0.0.1: served.
    let ok = Client::connect(Endpoint::Tcp(tcp.to_string()), quick()).await.unwrap();
    let _: serde_json::Value = ok.call("weft.ping", &()).await.unwrap();

    // From 127.0.0.2 (another loopback address): refused with a typed error
    // before the hello is read.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(tcp).await.unwrap();
    let mut buf = BytesMut::new();
    let mut dec = FrameDecoder::new(1 << 16);
    let frame = loop {
        if let Some(f) = dec.decode(&mut buf).unwrap() {
            break f;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_buf(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed without a word");
    };
    assert_eq!(frame.decode_body::<ErrorBody>().unwrap().code, ErrorCode::Unauthorized);

    // UDP from 127.0.0.2: silently dropped (no reflection), counted.
    let u = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut out = BytesMut::new();
    encode(&ping(MessageId::new_v4()), &mut out).unwrap();
    u.send_to(&out, udp).await.unwrap();
    let mut rb = [0u8; 1024];
    assert!(tokio::time::timeout(Duration::from_millis(300), u.recv(&mut rb)).await.is_err(), "no answer to a refused datagram");

    // Unix socket: our uid is not on the list.
    let e = Client::connect(Endpoint::Unix(unix), quick()).await.err().unwrap();
    assert!(matches!(&e, ClientError::Handshake(b) if b.code == ErrorCode::Unauthorized), "{e}");

    let refused = server.stats().refused.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 3);
    // And the allowed client is still fine.
    let _: serde_json::Value = ok.call("weft.ping", &()).await.unwrap();
}

/// The connection task writes answers itself and stops reading while more
/// than its high mark is waiting to be written: a client that reads late
/// still gets every answer (direct ones and those of requests handled in a
/// task), and the buffered bytes are all given back.
#[tokio::test]
async fn a_client_that_reads_late_gets_every_answer() {
    let node = start().await;
    let raw = Raw::open(node.tcp, true).await;
    let (mut rd, mut wr) = raw.stream.into_split();
    const N: u64 = 4000;
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        for i in 0..N {
            let id = MessageId::from_u128(u128::from(i) + 1);
            // Every 50th waits a little (answered from a task), the rest echo 1 KiB at once.
            let f = if i % 50 == 0 {
                Frame::request(id, "sleep", BodyFormat::MsgPack, &Sleep { ms: 1, tag: i }).unwrap()
            } else {
                Frame::request(id, "weft.echo", BodyFormat::MsgPack, &serde_bytes::ByteBuf::from(vec![7u8; 1024])).unwrap()
            };
            encode(&f, &mut out).unwrap();
            if out.len() > 64 * 1024 {
                wr.write_all(&out).await.unwrap();
                out.clear();
            }
        }
        wr.write_all(&out).await.unwrap();
        wr
    });
    // Far more than the 256 KiB high mark is answered before anyone reads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = std::collections::HashSet::new();
    let (mut dec, mut buf) = (FrameDecoder::new(1 << 20), BytesMut::new());
    while (seen.len() as u64) < N {
        if let Some(f) = dec.decode(&mut buf).unwrap() {
            assert_eq!(f.kind, FrameKind::Response, "{:?}", f.decode_body::<ErrorBody>());
            assert!(seen.insert(f.id), "answered twice");
            continue;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), rd.read_buf(&mut buf)).await.expect("answers keep coming").unwrap();
        assert!(n > 0, "closed after {} answers", seen.len());
    }
    let _wr = writer.await.unwrap();
    let stats = node.server.stats();
    for _ in 0..100 {
        if stats.buffer_bytes.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.buffer_bytes.load(std::sync::atomic::Ordering::Relaxed), 0);
}
