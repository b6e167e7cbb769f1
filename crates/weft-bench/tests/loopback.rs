//! The load generator against a real server on every transport, bounded by
//! request count. No timing thresholds: only that the runs complete, count
//! correctly and report consistent percentiles.

use std::sync::Arc;
use std::time::Duration;

use weft_bench::{run, BenchError, Limit, Load, Workload};
use weft_net::{Endpoint, Server, ServerConfig};
use weft_service::Service;

struct Node {
    server: Server,
    endpoints: Vec<Endpoint>,
    _dir: tempfile::TempDir,
}

async fn node() -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let handler = Service::new("bench-test").into_handler();
    let server = Server::new(ServerConfig::default(), handler as Arc<dyn weft_net::Handler>);
    let tcp = server.bind_tcp("127.0.0.1:0").await.expect("tcp");
    let udp = server.bind_udp("127.0.0.1:0").await.expect("udp").local_addr().expect("udp addr");
    let sock = server.bind_unix(&dir.path().join("weft.sock")).await.expect("unix");
    let endpoints = vec![
        format!("tcp://{tcp}").parse().expect("tcp url"),
        format!("unix://{}", sock.display()).parse().expect("unix url"),
        format!("udp://{udp}").parse().expect("udp url"),
    ];
    Node { server, endpoints, _dir: dir }
}

fn load(endpoint: &Endpoint, clients: usize, workload: Workload, per_client: u64) -> Load {
    Load {
        endpoint: endpoint.clone().into(),
        clients,
        workload,
        limit: Limit::Requests(per_client),
        warmup: Duration::from_millis(20),
        // Generous: a loaded CI machine must not turn into lost requests.
        request_timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_every_concurrency() {
    let node = node().await;
    for ep in &node.endpoints {
        for clients in [1, 4, 16] {
            for workload in [Workload::Ping, Workload::Echo { payload_bytes: 64 }] {
                let r = run(&load(ep, clients, workload.clone(), 30)).await.expect("run");
                assert_eq!(r.errors, 0, "{ep} {clients} {workload:?}: {:?}", r.first_error);
                assert_eq!(r.requests, clients as u64 * 30, "{ep} {clients}");
                assert_eq!(r.transport, ep.transport().as_str());
                assert!(r.requests_per_s > 0.0);
                assert!(0.0 < r.p50_us && r.p50_us <= r.p99_us && r.p99_us <= r.max_us, "{r:?}");
            }
        }
    }
    node.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn duration_limit_stops() {
    let node = node().await;
    let mut l = load(&node.endpoints[0], 2, Workload::Ping, 1);
    l.limit = Limit::Duration(Duration::from_millis(200));
    let r = run(&l).await.expect("run");
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    assert!(r.requests >= 1);
    // Bounded: far from the 10 s request timeout, whatever the machine.
    assert!(r.seconds < 10.0, "{}", r.seconds);
    node.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn no_server_is_a_connect_error() {
    // A server that does not exist: the run fails before measuring, naming
    // the endpoint.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let ep: Endpoint = format!("tcp://{free}").parse().expect("url");
    let e = run(&load(&ep, 1, Workload::Ping, 1)).await.expect_err("nobody listens");
    assert!(matches!(e, BenchError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&free.to_string()), "{e}");
}
