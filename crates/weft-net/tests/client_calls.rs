//! The Rust client's request path on stream connections: callers write
//! their own frames into the connection's shared output (issue #18).
//! Many concurrent callers on one client, some dropped mid-flight (small
//! and large frames, so that some are left half written for the
//! connection task): every surviving call gets its own answer, the
//! server never sees a cut frame and the connection stays usable. A
//! caller dropped before its frame was written (while the client
//! reconnects) is never sent.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_net::{Backoff, Client, ClientConfig, Endpoint, Handler, HandlerFuture, PeerInfo, Server, ServerConfig};
use weft_wire::{encode, BodyFormat, ErrorBody, ErrorCode, Frame, FrameDecoder, FrameKind, MessageId, Welcome};

#[derive(Serialize, Deserialize)]
struct Echo {
    tag: u64,
    yields: u32,
    pad: Vec<u8>,
}

/// `echo {tag, yields, pad}`: yields `yields` times, then answers `tag`.
struct EchoHandler;

impl Handler for EchoHandler {
    fn handle(&self, frame: Frame, _peer: Arc<PeerInfo>) -> HandlerFuture {
        Box::pin(async move {
            let r: Echo = match frame.decode_body() {
                Ok(r) => r,
                Err(e) => return Some(frame.error_to(&ErrorBody::new(ErrorCode::BadBody, e.to_string()))),
            };
            for _ in 0..r.yields {
                tokio::task::yield_now().await;
            }
            frame.response_to(&r.tag).ok()
        })
    }
}

fn config() -> ClientConfig {
    ClientConfig { request_timeout: Duration::from_secs(30), connect_timeout: Duration::from_secs(10), ..ClientConfig::default() }
}

async fn concurrent_callers_some_dropped(endpoint: Endpoint) {
    let client = Client::connect(endpoint.clone(), config()).await.unwrap();
    let mut tasks = Vec::new();
    for tag in 0..400u64 {
        let c = client.clone();
        // Every 7th carries 300 KiB: more than a socket takes at once, so
        // its caller leaves the rest to the connection task.
        let pad = if tag % 7 == 0 { vec![b'p'; 300 * 1024] } else { vec![b'x'; (tag % 64) as usize] };
        let req = Echo { tag, yields: (tag % 5) as u32, pad };
        tasks.push((
            tag,
            tokio::spawn(async move {
                let frame = Frame::request(MessageId::new_v4(), "echo", BodyFormat::MsgPack, &req).unwrap();
                c.request_frame(frame).await.map(|f| f.decode_body::<u64>().unwrap())
            }),
        ));
    }
    // Let some start, then drop every third caller wherever it is (not
    // yet written, half written, waiting for its answer).
    tokio::task::yield_now().await;
    for (tag, t) in &tasks {
        if tag % 3 == 0 {
            t.abort();
        }
    }
    let mut answered = 0;
    for (tag, t) in tasks {
        match t.await {
            Ok(r) => {
                assert_eq!(r.unwrap(), tag, "{endpoint}: a call got another call's answer");
                answered += 1;
            }
            Err(e) => assert!(e.is_cancelled() && tag % 3 == 0, "{endpoint}: call {tag}: {e}"),
        }
    }
    assert!(answered >= 266, "{endpoint}: every call not dropped is answered ({answered})");
    // The connection is still whole: a cut frame would have desynchronised it.
    for tag in 1000..1100u64 {
        let frame = Frame::request(MessageId::new_v4(), "echo", BodyFormat::MsgPack, &Echo { tag, yields: 0, pad: vec![] }).unwrap();
        let got: u64 = client.request_frame(frame).await.unwrap().decode_body().unwrap();
        assert_eq!(got, tag, "{endpoint}");
    }
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_on_one_client_some_dropped_mid_flight() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(
        ServerConfig { max_frame_bytes: 1024 * 1024, ..ServerConfig::default() },
        Arc::new(EchoHandler) as Arc<dyn Handler>,
    );
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let sock = dir.path().join("c.sock");
    server.bind_unix(&sock).await.unwrap();
    concurrent_callers_some_dropped(Endpoint::Tcp(tcp.to_string())).await;
    concurrent_callers_some_dropped(Endpoint::Unix(sock)).await;
}

/// Reads the hello on `s` and answers a welcome.
async fn handshake(s: &mut TcpStream, decoder: &mut FrameDecoder, buf: &mut BytesMut) {
    let hello = next_frame(s, decoder, buf).await.unwrap();
    assert_eq!(hello.route, "hello");
    let w = Welcome {
        protocol_version: weft_wire::PROTOCOL_VERSION,
        server_id: "fake".into(),
        server_name: "fake".into(),
        version: "0".into(),
        features: vec![],
    };
    let f = Frame::with_body(FrameKind::Control, hello.id, "welcome", BodyFormat::MsgPack, &w).unwrap();
    let mut out = BytesMut::new();
    encode(&f, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
}

async fn next_frame(s: &mut TcpStream, decoder: &mut FrameDecoder, buf: &mut BytesMut) -> Option<Frame> {
    loop {
        if let Some(f) = decoder.decode(buf).unwrap() {
            return Some(f);
        }
        if s.read_buf(buf).await.unwrap() == 0 {
            return None;
        }
    }
}

#[tokio::test]
async fn a_call_dropped_while_reconnecting_is_never_sent() {
    // A hand-driven server: the client's second connection gets its
    // welcome only when the test says so, so a call made meanwhile has
    // no connection to be written to.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve_first = async {
        let (mut s, _) = listener.accept().await.unwrap();
        let (mut decoder, mut buf) = (FrameDecoder::new(1 << 20), BytesMut::new());
        handshake(&mut s, &mut decoder, &mut buf).await;
        s
    };
    let cfg = ClientConfig { backoff: Backoff { initial_ms: 10, max_ms: 10, multiplier: 1.0 }, ..config() };
    let (client, first) = tokio::join!(Client::connect(Endpoint::Tcp(addr.to_string()), cfg), serve_first);
    let client = client.unwrap();
    drop(first);
    // The client reconnects: its TCP connect completes in the listen
    // backlog, its hello waits for an answer.
    let dropped_id = MessageId::new_v4();
    let frame = Frame::request(dropped_id, "echo", BodyFormat::MsgPack, &0u64).unwrap();
    let c = client.clone();
    let call = tokio::spawn(async move { c.request_frame(frame).await });
    let (mut s, _) = listener.accept().await.unwrap();
    let (mut decoder, mut buf) = (FrameDecoder::new(1 << 20), BytesMut::new());
    // Past the first connection's loss either way: the call was made after
    // it, so it waited for the new connection (or failed with the old one,
    // unwritten).
    tokio::task::yield_now().await;
    call.abort();
    let _ = call.await;
    handshake(&mut s, &mut decoder, &mut buf).await;
    // A marker call after the drop: it is the first request the new
    // connection carries.
    let marker = MessageId::new_v4();
    let c = client.clone();
    let marked = tokio::spawn(async move {
        c.request_frame(Frame::request(marker, "echo", BodyFormat::MsgPack, &1u64).unwrap()).await
    });
    let f = next_frame(&mut s, &mut decoder, &mut buf).await.unwrap();
    assert_eq!(f.id, marker, "the dropped call was sent late");
    let answer = Frame::with_body(FrameKind::Response, marker, "echo", BodyFormat::MsgPack, &1u64).unwrap();
    let mut out = BytesMut::new();
    encode(&answer, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    let got: u64 = marked.await.unwrap().unwrap().decode_body().unwrap();
    assert_eq!(got, 1);
    assert_ne!(f.id, dropped_id);
    client.close();
}
