//! Issue #17 item 18: a queued endpoint takes at most `max_uncommitted`
//! items that are not yet committed, and the bound changes at run time
//! through `weft.queue.set`, over a real TCP server and client.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_queue::{Ack, Manager, ManagerOptions, NameReq, QueueInfo, QueueOptions, SetReq, Snapshot};
use weft_service::Service;
use weft_wire::ErrorCode;

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct Job {
    n: i64,
}

async fn show(c: &Client) -> QueueInfo {
    c.call("weft.queue.show", &NameReq { name: "jobs".into() }).await.unwrap()
}

async fn wait_in_flight(c: &Client, n: usize) -> QueueInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = show(c).await;
        if i.in_flight == n {
            return i;
        }
        assert!(Instant::now() < deadline, "in_flight never reached {n}: {i:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_uncommitted_bounds_taken_items_and_changes_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::new("mu");
    let manager = Manager::new(dir.path(), &svc, ManagerOptions::default()).unwrap();
    manager.register(&mut svc).unwrap();
    // The node's `queues.max_uncommitted` path: a manager-wide default for
    // queues whose options leave it unset.
    manager.set_default_max_uncommitted(2);
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (s2, g2) = (started.clone(), gate.clone());
    // Concurrency 8 would run 8 at once: max_uncommitted is what holds it to 2.
    let opts = QueueOptions { concurrency: 8, ..QueueOptions::default() };
    manager
        .queued_endpoint(&mut svc, "jobs", opts, move |_job: Job| {
            let (s2, g2) = (s2.clone(), g2.clone());
            async move {
                s2.fetch_add(1, Ordering::SeqCst);
                g2.acquire().await.unwrap().forget();
                Ok(())
            }
        })
        .unwrap();
    let server = Server::new(ServerConfig::default(), svc.into_handler());
    let addr = server.bind_tcp("127.0.0.1:0").await.unwrap().to_string();
    let c = Client::connect(Endpoint::Tcp(addr), ClientConfig::default()).await.unwrap();

    for n in 0..10 {
        let _: Ack = c.call("jobs", &Job { n }).await.unwrap();
    }
    let i = wait_in_flight(&c, 2).await;
    assert_eq!((i.uncommitted, i.max_uncommitted, i.incoming), (2, 2, 10), "{i:?}");
    assert_eq!(started.load(Ordering::SeqCst), 2);

    // Raised at run time: more are taken, up to the new bound (not concurrency).
    let i: QueueInfo = c.call("weft.queue.set", &SetReq { name: "jobs".into(), max_uncommitted: Some(5) }).await.unwrap();
    assert_eq!(i.max_uncommitted, 5);
    let i = wait_in_flight(&c, 5).await;
    assert_eq!(i.uncommitted, 5, "{i:?}");
    assert_eq!(started.load(Ordering::SeqCst), 5);
    let snap: Snapshot = c.call("weft.stats.current", &()).await.unwrap();
    assert_eq!(snap.values["queue.jobs.max_uncommitted"], 5);
    assert_eq!(snap.values["queue.jobs.uncommitted"], 5);

    // Out of range, or no such queue: validation, nothing changed.
    for (name, n) in [("jobs", 0usize), ("jobs", 2_000_000), ("nope", 3)] {
        let e = c.call::<_, QueueInfo>("weft.queue.set", &SetReq { name: name.into(), max_uncommitted: Some(n) }).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Validation), "{e}");
    }
    assert_eq!(show(&c).await.max_uncommitted, 5);

    // Lowered below what is taken: nothing is given back, nothing new is
    // taken until the count falls under the bound; then everything drains.
    let _: QueueInfo = c.call("weft.queue.set", &SetReq { name: "jobs".into(), max_uncommitted: Some(1) }).await.unwrap();
    gate.add_permits(100);
    let q = manager.endpoint("jobs").unwrap().queue().clone();
    assert!(q.wait_idle(Duration::from_secs(30)).await);
    let i = show(&c).await;
    assert_eq!((i.processed, i.incoming, i.uncommitted, i.max_uncommitted), (10, 0, 0, 1), "{i:?}");
    assert_eq!(started.load(Ordering::SeqCst), 10);
    c.close();
    server.shutdown(Duration::from_secs(2)).await;
    manager.shutdown(Duration::from_secs(2)).await;
}
