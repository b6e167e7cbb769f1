//! Issue #17 item 20: the client's timeouts on UDP and Unix sockets, tested
//! as TCP's are in net.rs (request timeout, then the link still works;
//! connect timeout against a peer that never answers the hello; refusal).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_net::{Client, ClientConfig, ClientError, Endpoint, Server, ServerConfig};
use weft_service::Service;

#[derive(Serialize, Deserialize)]
struct Sleep {
    ms: u64,
    tag: u64,
}

struct Node {
    _server: Server,
    udp: std::net::SocketAddr,
    unix: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Service::new("timeouts");
    s.endpoint("sleep", |r: Sleep| async move {
        tokio::time::sleep(Duration::from_millis(r.ms)).await;
        Ok(r.tag)
    })
    .unwrap();
    let server = Server::new(ServerConfig::default(), s.into_handler());
    let udp = server.bind_udp("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let unix = server.bind_unix(&dir.path().join("t.sock")).await.unwrap();
    Node { _server: server, udp, unix, _dir: dir }
}

fn quick() -> ClientConfig {
    ClientConfig { request_timeout: Duration::from_secs(10), connect_timeout: Duration::from_secs(2), ..ClientConfig::default() }
}

async fn request_timeout_then_still_works(endpoint: Endpoint) {
    let cfg = ClientConfig { request_timeout: Duration::from_millis(200), ..quick() };
    let client = Client::connect(endpoint.clone(), cfg).await.unwrap();
    let e = client.call::<_, u64>("sleep", &Sleep { ms: 1500, tag: 1 }).await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout(_)), "{endpoint}: {e}");
    // The late answer (tag 1) must not be taken for this one's.
    let got: u64 = client.call("sleep", &Sleep { ms: 1, tag: 2 }).await.unwrap();
    assert_eq!(got, 2, "{endpoint}");
}

#[tokio::test]
async fn udp_request_timeout_then_the_socket_still_works() {
    let node = start().await;
    request_timeout_then_still_works(Endpoint::Udp(node.udp.to_string())).await;
}

#[tokio::test]
async fn unix_request_timeout_then_the_connection_still_works() {
    let node = start().await;
    request_timeout_then_still_works(Endpoint::Unix(node.unix.clone())).await;
}

#[tokio::test]
async fn udp_connect_timeout_when_nobody_answers() {
    // A bound socket that reads nothing and answers nothing.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = ClientConfig { connect_timeout: Duration::from_millis(300), ..quick() };
    let e = Client::connect(Endpoint::Udp(silent.local_addr().unwrap().to_string()), cfg).await.err().unwrap();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("no welcome within"), "the connect timeout fired: {e}");
    drop(silent);
}

#[tokio::test]
async fn unix_connect_timeout_and_refusal_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // No socket at this path.
    let e = Client::connect(Endpoint::Unix(dir.path().join("none.sock")), quick()).await.err().unwrap();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    // A listener that accepts and never answers the hello.
    let path = dir.path().join("silent.sock");
    let silent = tokio::net::UnixListener::bind(&path).unwrap();
    let held = tokio::spawn(async move {
        let mut conns = vec![];
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let cfg = ClientConfig { connect_timeout: Duration::from_millis(300), ..quick() };
    let e = Client::connect(Endpoint::Unix(path), cfg).await.err().unwrap();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("no welcome within"), "the connect timeout fired: {e}");
    held.abort();
}
