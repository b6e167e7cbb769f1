//! Connection threads (`Server::set_connection_threads`, issue #18): TCP
//! and Unix connections served on dedicated current-thread runtimes. A
//! real server and clients over both transports: every request is answered
//! on a connection thread, a connection's requests (including those handled
//! in a task) stay on one thread, the connection limit still refuses, and a
//! shutdown drains requests in flight.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use weft_net::{Client, ClientConfig, Endpoint, Handler, HandlerFuture, PeerInfo, Server, ServerConfig};
use weft_wire::{ErrorCode, Frame};

/// `where {tag, ms}`: answers `(tag, thread name)`. With `ms` > 0 it sleeps
/// first, so the request is pending at its first poll and handled in a
/// task; the name is read after the sleep, where the task ran.
struct Where;

#[derive(serde::Serialize, serde::Deserialize)]
struct Ask {
    tag: u64,
    ms: u64,
}

impl Handler for Where {
    fn handle(&self, frame: Frame, _peer: Arc<PeerInfo>) -> HandlerFuture {
        Box::pin(async move {
            let ask: Ask = frame.decode_body().ok()?;
            if ask.ms > 0 {
                tokio::time::sleep(Duration::from_millis(ask.ms)).await;
            }
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            frame.response_to(&(ask.tag, name)).ok()
        })
    }
}

async fn server(config: ServerConfig, threads: usize) -> (Server, Endpoint, Endpoint, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(config, Arc::new(Where) as Arc<dyn Handler>);
    server.set_connection_threads(threads).unwrap();
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let sock = dir.path().join("p.sock");
    server.bind_unix(&sock).await.unwrap();
    (server, Endpoint::Tcp(tcp.to_string()), Endpoint::Unix(sock), dir)
}

fn quick() -> ClientConfig {
    ClientConfig { connect_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(10), ..ClientConfig::default() }
}

#[tokio::test]
async fn many_clients_over_tcp_and_unix_are_answered_each_on_one_connection_thread() {
    let (server, tcp, unix, _dir) = server(ServerConfig::default(), 2).await;
    assert_eq!(server.stats().snapshot().iter().find(|(k, _)| *k == "net.connection_threads").unwrap().1, 2);
    let mut clients = vec![];
    for i in 0..24u64 {
        let ep = if i % 2 == 0 { tcp.clone() } else { unix.clone() };
        clients.push(tokio::spawn(async move {
            let c = Client::connect(ep, quick()).await.unwrap();
            let mut threads = BTreeSet::new();
            for n in 0..200u64 {
                let tag = i * 1000 + n;
                // Every tenth request waits, so it is handled in a task.
                let ms = if n % 10 == 0 { 2 } else { 0 };
                let (got, thread): (u64, String) = c.call("where", &Ask { tag, ms }).await.unwrap();
                assert_eq!(got, tag);
                threads.insert(thread);
            }
            c.close();
            threads
        }));
    }
    let mut all = BTreeSet::new();
    for c in clients {
        let threads = c.await.unwrap();
        // Direct answers and answers from request tasks: one thread.
        assert_eq!(threads.len(), 1, "one connection's requests ran on {threads:?}");
        all.extend(threads);
    }
    // 24 connections spread over both threads (fewest open first), and
    // nothing ran on the test's runtime.
    let expected: BTreeSet<String> = ["weft-conn-0", "weft-conn-1"].into_iter().map(String::from).collect();
    assert_eq!(all, expected);
    assert!(server.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn zero_threads_serves_on_the_callers_runtime() {
    let (server, tcp, _unix, _dir) = server(ServerConfig::default(), 0).await;
    let c = Client::connect(tcp, quick()).await.unwrap();
    let (_, thread): (u64, String) = c.call("where", &Ask { tag: 1, ms: 0 }).await.unwrap();
    assert!(!thread.starts_with("weft-conn-"), "{thread}");
    assert_eq!(server.stats().snapshot().iter().find(|(k, _)| *k == "net.connection_threads").unwrap().1, 0);
}

/// What the server sends a raw connection until it closes it (bounded).
async fn frames_until_close(ep: &Endpoint) -> Vec<Frame> {
    use tokio::io::AsyncReadExt;
    let mut bytes = vec![];
    let read = async {
        match ep {
            Endpoint::Tcp(a) => tokio::net::TcpStream::connect(a).await.unwrap().read_to_end(&mut bytes).await,
            Endpoint::Unix(p) => tokio::net::UnixStream::connect(p).await.unwrap().read_to_end(&mut bytes).await,
            Endpoint::Udp(_) => unreachable!(),
        }
    };
    // A refused connection is closed at once; an admitted one only at the
    // handshake timeout (10 s by default), which this outlasts.
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await.expect("the server closed the connection");
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let mut dec = weft_wire::FrameDecoder::new(1 << 20);
    let mut frames = vec![];
    while let Some(f) = dec.decode(&mut buf).unwrap() {
        frames.push(f);
    }
    frames
}

#[tokio::test]
async fn past_max_connections_a_new_connection_is_refused_busy() {
    let config = ServerConfig { max_connections: 2, handshake_timeout: Duration::from_secs(1), ..ServerConfig::default() };
    let (server, tcp, unix, _dir) = server(config, 2).await;
    let a = Client::connect(tcp.clone(), quick()).await.unwrap();
    let b = Client::connect(unix.clone(), quick()).await.unwrap();
    let _: (u64, String) = a.call("where", &Ask { tag: 1, ms: 0 }).await.unwrap();
    let _: (u64, String) = b.call("where", &Ask { tag: 2, ms: 0 }).await.unwrap();
    for ep in [tcp.clone(), unix] {
        let frames = frames_until_close(&ep).await;
        let first = frames.first().unwrap_or_else(|| panic!("{ep}: closed without a word"));
        let e: weft_wire::ErrorBody = first.decode_body().unwrap();
        assert_eq!(e.code, ErrorCode::Busy, "{ep}: {e:?}");
        assert_eq!(e.details.as_ref().unwrap()["kind"], "max_connections");
    }
    assert_eq!(server.stats().conn_refused_max.load(std::sync::atomic::Ordering::Relaxed), 2);
    // The two admitted connections are still served, and a freed slot is
    // taken again.
    let _: (u64, String) = b.call("where", &Ask { tag: 3, ms: 0 }).await.unwrap();
    a.close();
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = Client::connect(tcp.clone(), quick()).await
            && c.call::<_, (u64, String)>("where", &Ask { tag: 4, ms: 0 }).await.is_ok()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no connection let in after one closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight_on_connection_threads() {
    let (server, tcp, unix, _dir) = server(ServerConfig::default(), 2).await;
    let mut inflight = vec![];
    for (tag, ep) in [(7u64, tcp.clone()), (8, unix)] {
        let c = Client::connect(ep, quick()).await.unwrap();
        inflight.push(tokio::spawn(async move { c.call::<_, (u64, String)>("where", &Ask { tag, ms: 400 }).await }));
    }
    // Both requests read (two hellos, two requests): they are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.stats().frames_in.load(std::sync::atomic::Ordering::Relaxed) < 4 {
        assert!(std::time::Instant::now() < deadline, "the requests never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(server.shutdown(Duration::from_secs(5)).await, "drained");
    for (want, task) in [7u64, 8].into_iter().zip(inflight) {
        let (tag, thread) = task.await.unwrap().unwrap();
        assert_eq!(tag, want, "the request in flight was answered");
        assert!(thread.starts_with("weft-conn-"), "{thread}");
    }
    // No longer accepting.
    let Endpoint::Tcp(addr) = tcp else { unreachable!() };
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
