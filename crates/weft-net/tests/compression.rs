//! Issue #13 item 6: compressed bodies on the native protocol
//! (docs/protocol.md, "Compression") over real TCP: a client that asks for
//! zstd sends and reads compressed bodies over the threshold (the server's
//! counters move), small bodies stay plain, a client that does not ask sees
//! plain frames, and a compressed frame on a connection that did not
//! negotiate it, or a bomb, is a typed error that keeps the connection.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_net::{Client, ClientConfig, Endpoint, Handler, HandlerFuture, PeerInfo, Server, ServerConfig};
use weft_wire::{encode, BodyFormat, ErrorBody, ErrorCode, Frame, FrameDecoder, FrameKind, MessageId, CONTROL_HELLO};

/// Answers every request with its own body (as `weft.echo`).
struct Echo;

impl Handler for Echo {
    fn handle(&self, frame: Frame, _peer: Arc<PeerInfo>) -> HandlerFuture {
        Box::pin(async move {
            Some(Frame { kind: FrameKind::Response, flags: frame.flags, id: frame.id, route: frame.route, body: frame.body })
        })
    }
}

async fn server() -> (Server, std::net::SocketAddr) {
    let server = Server::new(ServerConfig::default(), Arc::new(Echo) as Arc<dyn Handler>);
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap();
    (server, tcp)
}

fn counts(s: &Server) -> (u64, u64) {
    let st = s.stats();
    (st.compressed_in.load(Ordering::Relaxed), st.compressed_out.load(Ordering::Relaxed))
}

#[tokio::test]
async fn negotiated_clients_compress_both_ways_over_the_threshold() {
    let (server, addr) = server().await;
    let config = ClientConfig { compression: true, ..ClientConfig::default() };
    let client = Client::connect(Endpoint::Tcp(addr.to_string()), config).await.unwrap();
    assert!(client.welcome().unwrap().features.iter().any(|f| f == weft_wire::COMPRESS_ZSTD_FEATURE));
    let big = "all work and no play ".repeat(500);
    let back: String = client.call("echo", &big).await.unwrap();
    assert_eq!(back, big);
    assert_eq!(counts(&server), (1, 1));
    let st = server.stats();
    assert!(st.compressed_in_saved_bytes.load(Ordering::Relaxed) > 5000);
    assert!(st.compressed_out_saved_bytes.load(Ordering::Relaxed) > 5000);
    // Small bodies stay plain.
    let small: String = client.call("echo", &"hi").await.unwrap();
    assert_eq!(small, "hi");
    assert_eq!(counts(&server), (1, 1));
    // A client that did not ask sees plain frames.
    let plain = Client::connect(Endpoint::Tcp(addr.to_string()), ClientConfig::default()).await.unwrap();
    let back: String = plain.call("echo", &big).await.unwrap();
    assert_eq!(back, big);
    assert_eq!(counts(&server), (1, 1));
    client.close();
    plain.close();
}

/// A raw connection: hello (with or without `compression`), then frames.
async fn raw(addr: std::net::SocketAddr, compression: bool) -> (TcpStream, FrameDecoder, BytesMut) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = serde_json::json!({"protocol_version": 1, "client_id": "raw", "client_name": "raw"});
    if compression {
        hello["compression"] = serde_json::json!(["zstd"]);
    }
    let h = Frame::with_body(FrameKind::Control, MessageId::new_v4(), CONTROL_HELLO, BodyFormat::MsgPack, &hello).unwrap();
    let mut dec = FrameDecoder::new(1 << 24);
    let mut buf = BytesMut::new();
    send(&mut s, &h).await;
    let w = recv(&mut s, &mut dec, &mut buf).await;
    assert_eq!(w.kind, FrameKind::Control);
    (s, dec, buf)
}

async fn send(s: &mut TcpStream, f: &Frame) {
    let mut out = BytesMut::new();
    encode(f, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
}

async fn recv(s: &mut TcpStream, dec: &mut FrameDecoder, buf: &mut BytesMut) -> Frame {
    loop {
        if let Some(f) = dec.decode(buf).unwrap() {
            return f;
        }
        assert!(s.read_buf(buf).await.unwrap() > 0, "server closed");
    }
}

fn compressed_request(text: &str) -> Frame {
    let mut f = Frame::request(MessageId::new_v4(), "echo", BodyFormat::MsgPack, &text).unwrap();
    assert!(f.compress_body(1) > 0);
    f
}

#[tokio::test]
async fn un_negotiated_compressed_frames_and_bombs_are_typed_errors() {
    let (server, addr) = server().await;
    let (mut s, mut dec, mut buf) = raw(addr, false).await;
    let req = compressed_request(&"x".repeat(4000));
    send(&mut s, &req).await;
    let e = recv(&mut s, &mut dec, &mut buf).await;
    assert_eq!((e.kind, e.id), (FrameKind::Error, req.id));
    assert_eq!(e.decode_body::<ErrorBody>().unwrap().code, ErrorCode::BadFrame);
    // The connection stays usable, and the plain answer is not compressed.
    let plain = Frame::request(MessageId::new_v4(), "echo", BodyFormat::MsgPack, &"y".repeat(4000)).unwrap();
    send(&mut s, &plain).await;
    let a = recv(&mut s, &mut dec, &mut buf).await;
    assert_eq!((a.kind, a.flags.is_compressed()), (FrameKind::Response, false));
    assert_eq!(a.body, plain.body);

    // Negotiated: a bomb (64 MiB of zeros in a few KiB, over the default
    // max_frame_bytes) is refused too_large before it is inflated.
    let (mut s, mut dec, mut buf) = raw(addr, true).await;
    let mut bomb = Frame::request(MessageId::new_v4(), "echo", BodyFormat::MsgPack, &()).unwrap();
    bomb.body = Bytes::from(zstd_bomb());
    bomb.flags = bomb.flags.with_compressed(true);
    send(&mut s, &bomb).await;
    let e = recv(&mut s, &mut dec, &mut buf).await;
    assert_eq!((e.kind, e.id), (FrameKind::Error, bomb.id));
    assert_eq!(e.decode_body::<ErrorBody>().unwrap().code, ErrorCode::TooLarge);
    // And a good compressed request is answered compressed.
    let req = compressed_request(&"z".repeat(4000));
    send(&mut s, &req).await;
    let mut a = recv(&mut s, &mut dec, &mut buf).await;
    assert!(a.flags.is_compressed());
    a.decompress_body(true, 1 << 24).unwrap();
    assert_eq!(a.decode_body::<String>().unwrap(), "z".repeat(4000));
    assert_eq!(counts(&server), (1, 1));
}

fn zstd_bomb() -> Vec<u8> {
    let mut f = Frame::request(MessageId::nil(), "r", BodyFormat::MsgPack, &()).unwrap();
    f.body = Bytes::from(vec![0u8; 64 << 20]);
    assert!(f.compress_body(1) > 0);
    f.body.to_vec()
}
