//! TLS over TCP and QUIC through real sockets, with the Service machinery:
//! round trips, mTLS (missing, foreign and good client certificates, the
//! identity reaching the handler), allow-list refusals before any
//! handshake, independent QUIC request streams, the in-flight limit,
//! oversized and malformed frames on a QUIC stream, and reconnection.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use weft_net::tls::dev;
use weft_net::{AllowList, ClientAuth, Client, ClientConfig, ClientError, Server, ServerConfig, Target, TlsClientConfig, TlsServerConfig};
use weft_service::{EndpointOptions, Service};
use weft_wire::{encode, BodyFormat, ErrorBody, ErrorCode, Frame, FrameDecoder, FrameKind, Hello, MessageId, PROTOCOL_VERSION};

#[derive(Serialize, Deserialize, Debug)]
struct WhoAmI {
    transport: String,
    client_id: Option<String>,
}

/// `gate` waits until the test opens it: a request that is slow for as
/// long as the test wants, without a clock.
fn service(gate: Arc<Notify>) -> Service {
    let mut s = Service::new("tls-test");
    s.endpoint_with("whoami", EndpointOptions::default(), |_: Option<()>, peer: Arc<weft_net::PeerInfo>| async move {
        Ok(WhoAmI { transport: peer.transport.as_str().to_owned(), client_id: peer.client_id.clone() })
    })
    .unwrap();
    s.endpoint("gate", move |tag: u64| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Ok(tag)
        }
    })
    .unwrap();
    s.endpoint("fast", |tag: u64| async move { Ok(tag) }).unwrap();
    s.endpoint("note", |tag: u64| async move {
        NOTES.fetch_add(tag, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    })
    .unwrap();
    s
}

/// Sum of the tags of `note` events received, across the tests of this file.
static NOTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Node {
    server: Server,
    tls: String,
    quic: String,
    gate: Arc<Notify>,
}

async fn node(certs: &Path, auth: ClientAuth, config: ServerConfig) -> Node {
    let files = dev::DevFiles::in_dir(certs);
    let tls = TlsServerConfig {
        cert: files.server_cert.clone(),
        key: files.server_key.clone(),
        client_ca: Some(files.ca_cert.clone()),
        client_auth: auth,
    };
    let gate = Arc::new(Notify::new());
    let server = Server::new(config, service(gate.clone()).into_handler());
    let t = server.bind_tls("127.0.0.1:0", &tls).await.unwrap();
    let q = server.bind_quic("127.0.0.1:0", &tls).await.unwrap();
    Node { server, tls: format!("tls://{t}"), quic: format!("quic://{q}"), gate }
}

fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    dev::init(dir.path(), &["localhost".into(), "127.0.0.1".into()], "weft-test-client").unwrap();
    dir
}

fn client_config(certs: &Path, with_cert: bool) -> ClientConfig {
    let f = dev::DevFiles::in_dir(certs);
    ClientConfig {
        client_id: "hello-id".into(),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
        tls: TlsClientConfig {
            ca: Some(f.ca_cert.clone()),
            cert: with_cert.then(|| f.client_cert.clone()),
            key: with_cert.then(|| f.client_key.clone()),
            server_name: None,
        },
        ..ClientConfig::default()
    }
}

async fn connect(target: &str, cfg: ClientConfig) -> Result<Client, ClientError> {
    Client::connect(target.parse::<Target>().unwrap(), cfg).await
}

/// After a refused handshake, a call must fail too (TLS 1.3 lets the client
/// finish its side of the handshake before the server checks its
/// certificate, so the refusal may surface at the first exchange).
async fn refused(target: &str, cfg: ClientConfig) -> bool {
    match connect(target, cfg).await {
        Err(_) => true,
        Ok(c) => c.call::<_, WhoAmI>("whoami", &()).await.is_err(),
    }
}

#[tokio::test]
async fn tls_and_quic_round_trips_with_standard_endpoints() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig::default()).await;
    for target in [&n.tls, &n.quic] {
        let c = connect(target, client_config(dir.path(), false)).await.unwrap();
        assert_eq!(c.welcome().unwrap().server_name, "weft");
        let back: String = c.call("weft.echo", "hello over the secure channel").await.unwrap();
        assert_eq!(back, "hello over the secure channel");
        let pong: serde_json::Value = c.call_json("weft.ping", &serde_json::Value::Null).await.unwrap();
        assert_eq!(pong["pong"], true);
        let who: WhoAmI = c.call("whoami", &()).await.unwrap();
        // No client certificate: the id from the hello.
        assert_eq!(who.client_id.as_deref(), Some("hello-id"));
        assert_eq!(who.transport, if target.starts_with("tls") { "tls" } else { "quic" });
        // Unknown route: a typed error, connection fine.
        let e = c.call::<_, serde_json::Value>("nope", &()).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownRoute));
        let _: u64 = c.call("fast", &7u64).await.unwrap();
        c.close();
    }
    // Only the trusted CA: a client trusting another CA refuses the server.
    let other = certs();
    for target in [&n.tls, &n.quic] {
        let e = connect(target, client_config(other.path(), false)).await.err().expect("untrusted server accepted");
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    }
    assert!(n.server.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn mtls_required_refuses_missing_and_foreign_certificates_and_names_the_good_one() {
    let dir = certs();
    let other = certs();
    let n = node(dir.path(), ClientAuth::Require, ServerConfig::default()).await;
    let stats = n.server.stats();
    for target in [&n.tls, &n.quic] {
        // No certificate at all.
        assert!(refused(target, client_config(dir.path(), false)).await, "{target}: no certificate accepted");
        // A certificate from another CA (trusting our server's CA).
        let mut foreign = client_config(other.path(), true);
        foreign.tls.ca = Some(dev::DevFiles::in_dir(dir.path()).ca_cert);
        assert!(refused(target, foreign).await, "{target}: foreign certificate accepted");
        // The good one: its common name reaches the handler, not the hello's id.
        let c = connect(target, client_config(dir.path(), true)).await.unwrap();
        let who: WhoAmI = c.call("whoami", &()).await.unwrap();
        assert_eq!(who.client_id.as_deref(), Some("weft-test-client"), "{target}");
        c.close();
    }
    let failures = stats.tls_handshake_failures.load(std::sync::atomic::Ordering::Relaxed);
    assert!(failures >= 4, "handshake failures counted: {failures}");
    assert!(n.server.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn mtls_optional_lets_anonymous_clients_in_and_still_names_certified_ones() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::Optional, ServerConfig::default()).await;
    for target in [&n.tls, &n.quic] {
        let anon = connect(target, client_config(dir.path(), false)).await.unwrap();
        let who: WhoAmI = anon.call("whoami", &()).await.unwrap();
        assert_eq!(who.client_id.as_deref(), Some("hello-id"));
        let named = connect(target, client_config(dir.path(), true)).await.unwrap();
        let who: WhoAmI = named.call("whoami", &()).await.unwrap();
        assert_eq!(who.client_id.as_deref(), Some("weft-test-client"));
    }
}

#[tokio::test]
async fn allow_list_refuses_before_any_handshake() {
    let dir = certs();
    let config = ServerConfig { allow_tls: AllowList::nobody(), allow_quic: AllowList::nobody(), ..ServerConfig::default() };
    let n = node(dir.path(), ClientAuth::Require, config).await;
    let stats = n.server.stats();
    // A raw TCP client sending a (fake) ClientHello gets the connection
    // closed with nothing written back: no ServerHello, no alert.
    let addr = n.tls.trim_start_matches("tls://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]).await;
    let mut buf = [0u8; 64];
    let n_read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n_read, 0, "refused TLS client got bytes back");
    for target in [&n.tls, &n.quic] {
        let e = connect(target, client_config(dir.path(), true)).await.err().expect("refused client connected");
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    }
    assert_eq!(stats.refused.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(stats.tls_handshake_failures.load(std::sync::atomic::Ordering::Relaxed), 0, "a refused peer cost a handshake");
    assert_eq!(stats.connections_accepted.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn quic_slow_request_does_not_hold_up_the_others() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig::default()).await;
    let c = connect(&n.quic, client_config(dir.path(), false)).await.unwrap();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let slow = {
        let (c, done) = (c.clone(), done_tx.clone());
        tokio::spawn(async move {
            let tag: u64 = c.call("gate", &0u64).await.unwrap();
            done.send(tag).unwrap();
        })
    };
    let mut fast = vec![];
    for tag in 1..=64u64 {
        let (c, done) = (c.clone(), done_tx.clone());
        fast.push(tokio::spawn(async move {
            let back: u64 = c.call("fast", &tag).await.unwrap();
            assert_eq!(back, tag);
            done.send(tag).unwrap();
        }));
    }
    for f in fast {
        f.await.unwrap();
    }
    // Every fast request completed while the slow one is still waiting.
    let mut order = vec![];
    while let Ok(t) = done_rx.try_recv() {
        order.push(t);
    }
    assert_eq!(order.len(), 64);
    assert!(!order.contains(&0));
    assert!(!slow.is_finished());
    n.gate.notify_waiters();
    slow.await.unwrap();
    assert_eq!(done_rx.recv().await, Some(0));
}

#[tokio::test]
async fn quic_over_the_in_flight_limit_is_busy() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig { max_in_flight_per_conn: 2, ..ServerConfig::default() }).await;
    let c = connect(&n.quic, client_config(dir.path(), false)).await.unwrap();
    let mut held = vec![];
    for tag in 0..2u64 {
        let c = c.clone();
        held.push(tokio::spawn(async move { c.call::<_, u64>("gate", &tag).await }));
    }
    // Until two are in flight, a third may still get a slot; once both
    // hold theirs, the answer is `busy`.
    let mut busy = None;
    for _ in 0..3_000 {
        match c.call::<_, u64>("fast", &9u64).await {
            Err(e) if e.code() == Some(ErrorCode::Busy) => {
                busy = Some(e);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(busy.is_some(), "never busy with two requests held");
    // Released, everything works again on the same connection.
    while held.iter().any(|h| !h.is_finished()) {
        n.gate.notify_waiters();
        tokio::task::yield_now().await;
    }
    for h in held {
        h.await.unwrap().unwrap();
    }
    assert_eq!(c.call::<_, u64>("fast", &10u64).await.unwrap(), 10);
}

/// A hand-driven QUIC client (quinn), to send what our Client never would.
async fn raw_quic(target: &str, certs: &Path) -> quinn::Connection {
    let ca = std::fs::read(dev::DevFiles::in_dir(certs).ca_cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"weft/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let addr = target.trim_start_matches("quic://").parse().unwrap();
    ep.connect(addr, "localhost").unwrap().await.unwrap()
}

async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Frame {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let data = recv.read_to_end(1 << 20).await.unwrap();
    let mut buf = BytesMut::from(&data[..]);
    FrameDecoder::new(1 << 20).decode(&mut buf).unwrap().expect("a whole answer frame")
}

fn frame_bytes(f: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(f, &mut out).unwrap();
    out.to_vec()
}

fn hello() -> Frame {
    let h = Hello { protocol_version: PROTOCOL_VERSION, client_id: "raw".into(), client_name: "raw".into() };
    Frame::with_body(FrameKind::Control, MessageId::new_v4(), "hello", BodyFormat::MsgPack, &h).unwrap()
}

#[tokio::test]
async fn quic_oversized_and_malformed_frames_get_typed_errors_and_the_connection_survives() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig { max_frame_bytes: 64 * 1024, ..ServerConfig::default() }).await;
    let conn = raw_quic(&n.quic, dir.path()).await;

    // A request before the hello is not read until the hello is done; the
    // hello on the first stream gets the welcome.
    let w = exchange(&conn, &frame_bytes(&hello())).await;
    assert_eq!((w.kind, w.route.as_str()), (FrameKind::Control, "welcome"));

    // A header claiming 1 GiB: answered too_large from the header alone.
    let id = MessageId::new_v4();
    let mut big = BytesMut::new();
    big.put_slice(b"WF");
    big.put_u8(1);
    big.put_u8(1);
    big.put_u8(0);
    big.put_u8(4);
    big.put_u32(1 << 30);
    big.put_slice(id.as_bytes());
    big.put_slice(b"fast");
    big.put_slice(&[0u8; 1000]);
    let e = exchange(&conn, &big).await;
    assert_eq!(e.kind, FrameKind::Error);
    assert_eq!(e.id, id);
    let body: ErrorBody = e.decode_body().unwrap();
    assert_eq!(body.code, ErrorCode::TooLarge);

    // Garbage: bad_frame, no panic.
    let e = exchange(&conn, b"this is not a weft frame at all, not even close").await;
    let body: ErrorBody = e.decode_body().unwrap();
    assert_eq!(body.code, ErrorCode::BadFrame);

    // An unknown kind with an intact envelope.
    let mut odd = frame_bytes(&Frame::request(MessageId::new_v4(), "fast", BodyFormat::MsgPack, &1u64).unwrap());
    odd[3] = 0x7f;
    let body: ErrorBody = exchange(&conn, &odd).await.decode_body().unwrap();
    assert_eq!(body.code, ErrorCode::BadFrame);

    // And the connection still serves.
    let ok = exchange(&conn, &frame_bytes(&Frame::request(MessageId::new_v4(), "fast", BodyFormat::MsgPack, &5u64).unwrap())).await;
    assert_eq!(ok.kind, FrameKind::Response);
    assert_eq!(ok.decode_body::<u64>().unwrap(), 5);
    assert!(conn.close_reason().is_none());
    let stats = n.server.stats();
    assert!(stats.bad_frames.load(std::sync::atomic::Ordering::Relaxed) >= 3);
}

#[tokio::test]
async fn quic_first_stream_must_be_a_hello() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig::default()).await;
    let conn = raw_quic(&n.quic, dir.path()).await;
    let req = Frame::request(MessageId::new_v4(), "fast", BodyFormat::MsgPack, &1u64).unwrap();
    let e = exchange(&conn, &frame_bytes(&req)).await;
    let body: ErrorBody = e.decode_body().unwrap();
    assert_eq!(body.code, ErrorCode::HandshakeRequired);
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.unwrap();
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(c.error_code, quinn::VarInt::from_u32(weft_net::quic_close_code::HANDSHAKE)),
        other => panic!("closed with {other}"),
    }
}

#[tokio::test]
async fn clients_reconnect_after_the_server_restarts() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig::default()).await;
    let tls = connect(&n.tls, client_config(dir.path(), false)).await.unwrap();
    let quic = connect(&n.quic, client_config(dir.path(), false)).await.unwrap();
    assert_eq!(tls.call::<_, u64>("fast", &1u64).await.unwrap(), 1);
    assert_eq!(quic.call::<_, u64>("fast", &1u64).await.unwrap(), 1);
    assert!(n.server.shutdown(Duration::from_secs(5)).await);
    let first_id = quic.welcome().unwrap().server_id;

    // A new server on the same addresses.
    let files = dev::DevFiles::in_dir(dir.path());
    let tls_cfg = TlsServerConfig { cert: files.server_cert, key: files.server_key, client_ca: None, client_auth: ClientAuth::None };
    let server = Server::new(ServerConfig::default(), service(Arc::new(Notify::new())).into_handler());
    server.bind_tls(n.tls.trim_start_matches("tls://"), &tls_cfg).await.unwrap();
    server.bind_quic(n.quic.trim_start_matches("quic://"), &tls_cfg).await.unwrap();
    for c in [&tls, &quic] {
        let mut ok = false;
        for _ in 0..600 {
            if let Ok(2) = c.call::<_, u64>("fast", &2u64).await {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "{} did not reconnect", c.endpoint());
    }
    assert_ne!(quic.welcome().unwrap().server_id, first_id);
}

#[tokio::test]
async fn dropping_the_last_client_closes_its_connection() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig::default()).await;
    let stats = n.server.stats();
    let open = || stats.connections_open.load(std::sync::atomic::Ordering::Relaxed);
    for target in [&n.tls, &n.quic] {
        let c = connect(target, client_config(dir.path(), false)).await.unwrap();
        let clone = c.clone();
        assert_eq!(c.call::<_, u64>("fast", &1u64).await.unwrap(), 1);
        assert_eq!(open(), 1);
        drop(c);
        // A clone keeps it open.
        assert_eq!(clone.call::<_, u64>("fast", &2u64).await.unwrap(), 2);
        drop(clone);
        let mut closed = false;
        for _ in 0..3_000 {
            if open() == 0 {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed, "{target}: the server still holds the connection of a dropped client");
    }
}

#[tokio::test]
async fn events_travel_one_way_over_tls_and_quic() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig::default()).await;
    // Distinct tags per transport, so the sum says which arrived.
    for (target, tag) in [(&n.tls, 1_000u64), (&n.quic, 1_000_000u64)] {
        let c = connect(target, client_config(dir.path(), false)).await.unwrap();
        let before = NOTES.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            c.send_event("note", &tag).await.unwrap();
        }
        let mut arrived = false;
        for _ in 0..3_000 {
            if NOTES.load(std::sync::atomic::Ordering::SeqCst) >= before + 3 * tag {
                arrived = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(arrived, "{target}: events not delivered");
        // And requests still work after them.
        assert_eq!(c.call::<_, u64>("fast", &3u64).await.unwrap(), 3);
    }
}

#[tokio::test]
async fn quic_hello_with_another_version_gets_unsupported_version_and_a_close() {
    let dir = certs();
    let n = node(dir.path(), ClientAuth::None, ServerConfig::default()).await;
    let conn = raw_quic(&n.quic, dir.path()).await;
    let h = Hello { protocol_version: 9, client_id: "future".into(), client_name: "future".into() };
    let hello = Frame::with_body(FrameKind::Control, MessageId::new_v4(), "hello", BodyFormat::MsgPack, &h).unwrap();
    let e = exchange(&conn, &frame_bytes(&hello)).await;
    assert_eq!(e.id, hello.id);
    let body: ErrorBody = e.decode_body().unwrap();
    assert_eq!(body.code, ErrorCode::UnsupportedVersion);
    assert_eq!(body.details.unwrap()["supported"], serde_json::json!([1]));
    match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(c.error_code, quinn::VarInt::from_u32(weft_net::quic_close_code::HANDSHAKE)),
        other => panic!("closed with {other}"),
    }
}
