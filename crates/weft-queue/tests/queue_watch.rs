//! Issue #17 item 17: queue changes reach watching clients as server events
//! (`weft.queue.watch`, then `weft.queue.changed` events), no polling, over
//! a real TCP server and client.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig, Subscription};
use weft_queue::{Ack, Manager, ManagerOptions, QueueInfo, QueueOptions, Snapshot, WatchReq};
use weft_service::Service;
use weft_wire::ErrorCode;

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct Job {
    n: i64,
}

/// The next `weft.queue.changed` event whose state satisfies `want`.
async fn next_change(sub: &mut Subscription, want: impl Fn(&QueueInfo) -> bool) -> QueueInfo {
    loop {
        let f = tokio::time::timeout(Duration::from_secs(30), sub.recv()).await.expect("a change event within 30 s").expect("open");
        assert_eq!(f.route, "weft.queue.changed");
        let i: QueueInfo = f.decode_body().unwrap();
        if want(&i) {
            return i;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_changes_are_pushed_to_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::new("watch");
    let manager = Manager::new(dir.path(), &svc, ManagerOptions::default()).unwrap();
    manager.register(&mut svc).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g2 = gate.clone();
    manager
        .queued_endpoint(&mut svc, "jobs", QueueOptions::default(), move |_j: Job| {
            let g2 = g2.clone();
            async move {
                g2.acquire().await.unwrap().forget();
                Ok(())
            }
        })
        .unwrap();
    let server = Server::new(ServerConfig::default(), svc.into_handler());
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap().to_string();
    let udp = server.bind_udp("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
    let watcher = Client::connect(Endpoint::Tcp(tcp.clone()), ClientConfig::default()).await.unwrap();
    let producer = Client::connect(Endpoint::Tcp(tcp.clone()), ClientConfig::default()).await.unwrap();

    let mut sub = watcher.subscribe();
    let now: Vec<QueueInfo> = watcher.call("weft.queue.watch", &WatchReq { name: Some("jobs".into()) }).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!((now[0].name.as_str(), now[0].incoming), ("jobs", 0));
    // Watching again on the same connection replaces the watch (no doubles).
    let _: Vec<QueueInfo> = watcher.call("weft.queue.watch", &WatchReq { name: Some("jobs".into()) }).await.unwrap();

    let _: Ack = producer.call("jobs", &Job { n: 1 }).await.unwrap();
    let i = next_change(&mut sub, |i| i.incoming == 1 && i.in_flight == 1).await;
    assert_eq!(i.processed, 0);
    gate.add_permits(1);
    let i = next_change(&mut sub, |i| i.processed == 1).await;
    assert_eq!((i.incoming, i.in_flight), (0, 0));

    let snap: Snapshot = producer.call("weft.stats.current", &()).await.unwrap();
    assert_eq!(snap.values["queue.watchers"], 1, "one connection, one watch");
    assert!(snap.values["queue.watch.events_sent"].as_u64().unwrap() >= 2);

    // A queue that does not exist, and a transport without events: refused.
    let e = watcher.call::<_, Vec<QueueInfo>>("weft.queue.watch", &WatchReq { name: Some("nope".into()) }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Validation));
    let u = Client::connect(Endpoint::Udp(udp), ClientConfig::default()).await.unwrap();
    let e = u.call::<_, Vec<QueueInfo>>("weft.queue.watch", &WatchReq::default()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Validation), "{e}");

    // A closed watcher is forgotten.
    watcher.close();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let _: Ack = producer.call("jobs", &Job { n: 2 }).await.unwrap();
        gate.add_permits(1);
        let snap: Snapshot = producer.call("weft.stats.current", &()).await.unwrap();
        if snap.values["queue.watchers"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "closed watcher never forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown(Duration::from_secs(2)).await;
    manager.shutdown(Duration::from_secs(2)).await;
}
