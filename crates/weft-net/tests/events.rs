//! Issue #17 item 17: events from the server reach the client. A real
//! server whose handler pushes events on the caller's connection
//! (`PeerInfo::events`), and a client that subscribes, over TCP and a Unix
//! socket; a slow subscriber loses the oldest events (counted), the
//! connection does not stall; a subscription ends when the client closes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_net::{Client, ClientConfig, Endpoint, Handler, HandlerFuture, PeerInfo, Server, ServerConfig};
use weft_wire::{ErrorBody, ErrorCode, Frame, FrameKind};

/// `emit {n}`: push events `tick` 0..n on the caller's connection, then
/// answer `n`.
struct Emitter;

impl Handler for Emitter {
    fn handle(&self, frame: Frame, peer: Arc<PeerInfo>) -> HandlerFuture {
        Box::pin(async move {
            let n: u64 = match frame.decode_body() {
                Ok(n) => n,
                Err(e) => return Some(frame.error_to(&ErrorBody::new(ErrorCode::BadBody, e.to_string()))),
            };
            let Some(sink) = peer.events.clone() else {
                return Some(frame.error_to(&ErrorBody::new(ErrorCode::Validation, "no events on this transport")));
            };
            for i in 0..n {
                sink.send("tick", &i).unwrap();
            }
            frame.response_to(&n).ok()
        })
    }
}

async fn server() -> (Server, std::net::SocketAddr, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(ServerConfig::default(), Arc::new(Emitter) as Arc<dyn Handler>);
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let sock = dir.path().join("e.sock");
    server.bind_unix(&sock).await.unwrap();
    (server, tcp, sock, dir)
}

async fn events_arrive_in_order(endpoint: Endpoint) {
    let client = Client::connect(endpoint.clone(), ClientConfig::default()).await.unwrap();
    let mut a = client.subscribe();
    let mut b = client.subscribe();
    let n: u64 = client.call("emit", &50u64).await.unwrap();
    assert_eq!(n, 50);
    for sub in [&mut a, &mut b] {
        for i in 0..50u64 {
            let f = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.expect("event within 10 s").expect("open");
            assert_eq!((f.kind, f.route.as_str()), (FrameKind::Event, "tick"), "{endpoint}");
            assert_eq!(f.decode_body::<u64>().unwrap(), i, "{endpoint}: every subscriber gets every event, in order");
        }
    }
    assert_eq!(client.events_received(), 50);
    assert_eq!(client.events_dropped(), 0);
    client.close();
    assert!(a.recv().await.is_none(), "a subscription ends when its client closes");
}

#[tokio::test]
async fn server_events_reach_subscribers_over_tcp_and_unix() {
    let (_server, tcp, sock, _dir) = server().await;
    events_arrive_in_order(Endpoint::Tcp(tcp.to_string())).await;
    events_arrive_in_order(Endpoint::Unix(sock)).await;
}

#[tokio::test]
async fn a_slow_subscriber_loses_the_oldest_events_and_they_are_counted() {
    let (_server, tcp, _sock, _dir) = server().await;
    let cfg = ClientConfig { event_buffer: 4, ..ClientConfig::default() };
    let client = Client::connect(Endpoint::Tcp(tcp.to_string()), cfg).await.unwrap();
    let mut slow = client.subscribe();
    // Requests go on while nobody reads the subscription.
    let n: u64 = client.call("emit", &20u64).await.unwrap();
    assert_eq!(n, 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.events_received() < 20 {
        assert!(Instant::now() < deadline, "only {} events arrived", client.events_received());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The buffer keeps the newest 4; the 16 before them are dropped, counted.
    let mut got = vec![];
    for _ in 0..4 {
        got.push(slow.recv().await.unwrap().decode_body::<u64>().unwrap());
    }
    assert_eq!(got, vec![16, 17, 18, 19]);
    assert_eq!(client.events_dropped(), 16);
    // A subscriber that joins later sees only later events.
    let mut late = client.subscribe();
    let _: u64 = client.call("emit", &1u64).await.unwrap();
    assert_eq!(late.recv().await.unwrap().decode_body::<u64>().unwrap(), 0);
}
