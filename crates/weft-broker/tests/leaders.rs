//! The CLI's leader cache: a node answering `not_leader` with the leader's
//! address gets one refusal per topic and partition; the call is retried at
//! the leader, and later calls go there directly.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use weft_broker::cli::{self, ProduceArgs};
use weft_log::{Log, LogConfig};
use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_service::{Service, ServiceError};
use weft_wire::{ErrorBody, ErrorCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_is_retried_once_at_the_named_leader_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), LogConfig { maintenance_interval: None, ..LogConfig::default() }).await.unwrap();
    let mut svc = Service::new("leader");
    weft_broker::native::register(&mut svc, log.clone()).unwrap();
    let leader = Server::new(ServerConfig::default(), svc.into_handler());
    let leader_addr = leader.bind_tcp("127.0.0.1:0").await.unwrap();
    log.create_topic("t", None).await.unwrap();

    let refused = Arc::new(AtomicU64::new(0));
    let mut follower = Service::new("follower");
    let (n, to) = (refused.clone(), format!("tcp://{leader_addr}"));
    follower
        .endpoint("log.produce", move |_: weft_broker::dto::Produce| {
            n.fetch_add(1, Ordering::Relaxed);
            let body = ErrorBody::new(ErrorCode::NotLeader, "not the leader").with_details(serde_json::json!({"group": 1, "leader": 1, "addr": to}));
            async move { Err::<serde_json::Value, _>(ServiceError::Wire(body)) }
        })
        .unwrap();
    let follower = Server::new(ServerConfig::default(), follower.into_handler());
    let follower_addr = follower.bind_tcp("127.0.0.1:0").await.unwrap();
    let client = Client::connect(Endpoint::Tcp(follower_addr.to_string()), ClientConfig::default()).await.unwrap();

    let input = dir.path().join("in.txt");
    std::fs::write(&input, (0..5).map(|i| format!("r{i}\n")).collect::<String>()).unwrap();
    let args = ProduceArgs { topic: "t".into(), file: Some(input), key_separator: None, headers: vec![], partition: Some(0), batch: 1, batch_bytes: 1 << 20, acks: "all".into(), idempotent: false };
    cli::produce(&client, args).await.unwrap();
    assert_eq!(refused.load(Ordering::Relaxed), 1, "one refusal, then the cached leader");
    let end = log.list_offset("t", weft_log::PartitionId(0), weft_log::OffsetSpec::Latest).unwrap();
    assert_eq!(end.0, 5, "every record landed on the leader");

    // Without an address the error is the caller's.
    let e = ErrorBody::new(ErrorCode::NotLeader, "x").with_details(serde_json::json!({"group": 1, "leader": 0, "addr": null}));
    assert_eq!(cli::leader_hint(&e), None);
    let e = ErrorBody::new(ErrorCode::Unavailable, "x").with_details(serde_json::json!({"addr": "tcp://a:1"}));
    assert_eq!(cli::leader_hint(&e), None, "only not_leader redirects");
}
