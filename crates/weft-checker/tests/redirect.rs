//! The recorder follows a `not_leader` redirect: a stand-in follower
//! refuses every produce with weft-cluster's error shape, naming the real
//! node, which the recorder was not given; the refused produces are recorded
//! as failed (definitely not written), the rest land on the real node, the
//! final reads go through the follower (forwarded), and the history passes.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_checker::recorder::{Recorder, RecorderConfig};
use weft_checker::{check, Event};
use weft_log::{Log, LogConfig};
use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_service::{Service, ServiceError};
use weft_wire::{ErrorBody, ErrorCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_is_a_failed_produce_and_its_leader_is_followed() {
    // The real node, with the topic.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), LogConfig { maintenance_interval: None, ..LogConfig::default() }).await.unwrap();
    let mut svc = Service::new("leader");
    weft_broker::native::register(&mut svc, log.clone()).unwrap();
    let leader = Server::new(ServerConfig::default(), svc.into_handler());
    let leader_addr = leader.bind_tcp("127.0.0.1:0").await.unwrap();
    let admin = Client::connect(Endpoint::Tcp(leader_addr.to_string()), ClientConfig::default()).await.unwrap();
    let _: serde_json::Value = admin.call("log.topic.create", &serde_json::json!({"name": "redir", "config": {"partitions": 2}})).await.unwrap();

    // The follower: refuses produces, names the leader; knows no topic.
    // (Typed requests: msgpack `bin` values do not decode into JSON values.)
    let refused = Arc::new(AtomicU64::new(0));
    let mut follower = Service::new("follower");
    let (n, to) = (refused.clone(), format!("tcp://{leader_addr}"));
    follower
        .endpoint("log.produce", move |_: weft_broker::dto::Produce| {
            n.fetch_add(1, Ordering::Relaxed);
            let body = ErrorBody::new(ErrorCode::Unavailable, "not the leader")
                .with_details(serde_json::json!({"not_leader": {"group": 1, "leader": 1, "addr": to}}));
            async move { Err::<serde_json::Value, _>(ServiceError::Wire(body)) }
        })
        .unwrap();
    // Reads are forwarded to the leader, as a router would.
    let proxy = admin.clone();
    follower
        .endpoint("log.fetch", move |req: weft_broker::dto::Fetch| {
            let c = proxy.clone();
            async move { c.call::<_, weft_broker::dto::FetchResponse>("log.fetch", &req).await.map_err(|e| ServiceError::handler(e.to_string())) }
        })
        .unwrap();
    let follower = Server::new(ServerConfig::default(), follower.into_handler());
    let follower_addr = follower.bind_tcp("127.0.0.1:0").await.unwrap();

    let cfg = RecorderConfig {
        // Only the follower: the leader can be reached through the redirect alone.
        nodes: vec![format!("tcp://{follower_addr}")],
        topic: "redir".into(),
        partitions: 2,
        producers: 2,
        duration: Duration::from_secs(60),
        reach_timeout: Duration::from_secs(5),
        ..RecorderConfig::default()
    };
    let r = Arc::new(Recorder::new(cfg).unwrap());
    let producing = tokio::spawn({
        let r = r.clone();
        async move { r.produce().await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while r.acked() < 200 {
        assert!(std::time::Instant::now() < deadline, "only {} acks", r.acked());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.stop();
    producing.await.unwrap().unwrap();
    let missed = r.final_reads().await;
    assert!(missed.is_empty(), "{missed:?}");

    let h = r.history();
    let report = check(&h);
    assert!(report.ok(), "{:#?}", report.violations);
    // Every producer started on the follower: refused (fail, with the reason), then redirected.
    let fails: Vec<&Event> = h.events.iter().filter(|e| matches!(e, Event::Fail { .. })).collect();
    assert!(!fails.is_empty());
    assert_eq!(fails.len() as u64, refused.load(Ordering::Relaxed));
    assert!(matches!(fails[0], Event::Fail { error, .. } if error.starts_with("not_leader")));
    // Redirects are cached per partition: at most one refusal per producer and partition.
    assert!(fails.len() <= 4, "{} refusals: the redirect was not cached", fails.len());
    assert_eq!(report.stats.complete_final_reads, 2);
    assert!(report.stats.acked >= 200);
}
