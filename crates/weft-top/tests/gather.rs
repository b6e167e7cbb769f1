//! `weft top`'s sampling against a real node (service + log endpoints over
//! TCP): what it shows matches what was done to the node.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use weft_log::{Log, LogConfig, ProduceRecord, TopicConfig};
use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_service::Service;
use weft_top::{gather, text, View};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_reflect_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), LogConfig { maintenance_interval: None, ..LogConfig::default() }).await.unwrap();
    let mut svc = Service::new("topnode");
    weft_broker::native::register(&mut svc, log.clone()).unwrap();
    let server = Server::new(ServerConfig::default(), svc.into_handler());
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let client = Client::connect(Endpoint::Tcp(tcp.to_string()), ClientConfig::default()).await.unwrap();

    log.create_topic("orders", Some(TopicConfig { partitions: 3, ..TopicConfig::default() })).await.unwrap();
    let first = gather(&client).await.unwrap();
    assert_eq!(first.node.name, "topnode");
    let v = View::between(None, &first);
    let orders = v.topics.iter().find(|t| t.name == "orders").unwrap();
    assert_eq!((orders.partitions, orders.records, orders.rate), (3, 0, None));
    assert!(v.topics.iter().all(|t| !t.name.starts_with("__")), "internal topics hidden");

    // 50 records through the node's own endpoint, then a second sample
    for i in 0..50 {
        let _: serde_json::Value = client
            .call("log.produce", &serde_json::json!({"topic": "orders", "records": [{"key": format!("k{i}"), "value": "v"}]}))
            .await
            .unwrap();
    }
    log.produce("orders", vec![ProduceRecord::value("direct")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = gather(&client).await.unwrap();
    let v = View::between(Some(&first), &second);
    let orders = v.topics.iter().find(|t| t.name == "orders").unwrap();
    assert_eq!(orders.records, 51);
    assert!(orders.rate.unwrap() > 0.0);
    let produce = v.endpoints.iter().find(|e| e.route == "log.produce").unwrap();
    assert_eq!(produce.calls, 50);
    assert!(produce.p99_us.is_some());
    assert_eq!(v.endpoints[0].route, "log.produce", "the busiest endpoint comes first");

    let out = text::render(&v);
    assert!(out.lines().any(|l| l.starts_with("orders") && l.contains(" 51 ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("log.produce") && l.contains(" 50 ")), "{out}");
}
