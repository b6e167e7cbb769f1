//! Queued endpoints, senders, broadcasters, keepers and the management
//! endpoints, through a real native server and client over TCP (and the CLI
//! module's `run`).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_queue::cli::{Command, Conn, ErrorsOp, QueueOp};
use weft_queue::{
    Ack, Backoff, Broadcaster, Count, ErrorState, ErrorsReq, ItemView, Manager, ManagerOptions, MeteredHandler, NameReq, NativeOutbound,
    PauseReq, PauseWhat, QueueInfo, QueueOptions, ReprocessReq, SequencedBroadcaster, Snapshot, Target, UidReq,
};
use weft_service::{Service, ServiceError};

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct Job {
    n: i64,
}

fn fast() -> QueueOptions {
    QueueOptions { max_retries: 1, backoff: Backoff { initial_ms: 1, max_ms: 5, multiplier: 2.0 }, ..QueueOptions::default() }
}

async fn client(addr: &str) -> Client {
    Client::connect(Endpoint::Tcp(addr.into()), ClientConfig::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_endpoint_management_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::new("mgmt");
    let manager = Manager::new(dir.path(), &svc, ManagerOptions { gather_period: Duration::from_millis(100), history_len: 3 }).unwrap();
    manager.register(&mut svc).unwrap();
    let seen = Arc::new(Mutex::new(vec![]));
    let s2 = seen.clone();
    let errors = manager.errors().clone();
    manager
        .queued_endpoint(&mut svc, "jobs", fast(), move |job: Job| {
            let s2 = s2.clone();
            let errors = errors.clone();
            async move {
                if job.n < 0 {
                    errors.raise("job_failed", "negative job");
                    return Err(ServiceError::handler("negative"));
                }
                if job.n == 99 {
                    panic!("handler panics on 99");
                }
                s2.lock().unwrap().push(job.n);
                Ok(())
            }
        })
        .unwrap();
    let stats = manager.stats().clone();
    let handler = MeteredHandler::new(svc.into_handler(), stats);
    let server = Server::new(ServerConfig::default(), handler);
    let addr = server.bind_tcp("127.0.0.1:0").await.unwrap().to_string();
    let c = client(&addr).await;

    // Ack after durable; a bad body is refused before queueing.
    let ack: Ack = c.call("jobs", &Job { n: 1 }).await.unwrap();
    assert!(uuid::Uuid::parse_str(&ack.uid).is_ok());
    let bad = c.call::<_, Ack>("jobs", &json!({"x": 1})).await.unwrap_err();
    assert_eq!(bad.code(), Some(weft_wire::ErrorCode::BadBody));
    let neg: Ack = c.call("jobs", &Job { n: -1 }).await.unwrap();
    let boom: Ack = c.call("jobs", &Job { n: 99 }).await.unwrap();
    c.call::<_, Ack>("jobs", &Job { n: 2 }).await.unwrap();
    let q = manager.endpoint("jobs").unwrap().queue().clone();
    assert!(q.wait_idle(Duration::from_secs(5)).await);
    assert_eq!(*seen.lock().unwrap(), vec![1, 2], "the panic did not stop the loop");

    let info: QueueInfo = c.call("weft.queue.show", &NameReq { name: "jobs".into() }).await.unwrap();
    assert_eq!((info.incoming, info.errors, info.processed), (0, 2, 2));
    let ls: Vec<QueueInfo> = c.call("weft.queue.ls", &()).await.unwrap();
    assert_eq!(ls.len(), 1);
    let errs: Vec<String> = c.call("weft.queue.errors", &ErrorsReq { name: "jobs".into(), n: Some(10) }).await.unwrap();
    assert_eq!(errs, vec![neg.uid.clone(), boom.uid.clone()]);
    let item: ItemView = c.call("weft.queue.inspect", &UidReq { name: "jobs".into(), uid: boom.uid.clone() }).await.unwrap();
    assert_eq!((item.attempts, item.request.clone()), (2, json!({"n": 99})));
    assert!(item.reason.contains("panicked"), "{}", item.reason);

    // Pause accepting: callers are told busy.
    let _: QueueInfo = c.call("weft.queue.pause", &PauseReq { name: "jobs".into(), what: Some(PauseWhat::Accepting) }).await.unwrap();
    let busy = c.call::<_, Ack>("jobs", &Job { n: 3 }).await.unwrap_err();
    assert_eq!(busy.code(), Some(weft_wire::ErrorCode::Busy));
    let _: QueueInfo = c.call("weft.queue.resume", &PauseReq { name: "jobs".into(), what: None }).await.unwrap();
    // Pause processing: requests queue up.
    let _: QueueInfo = c.call("weft.queue.pause", &PauseReq { name: "jobs".into(), what: Some(PauseWhat::Processing) }).await.unwrap();
    c.call::<_, Ack>("jobs", &Job { n: 4 }).await.unwrap();
    let n: Count = c.call("weft.queue.reprocess", &ReprocessReq { name: "jobs".into(), uid: Some(neg.uid.clone()) }).await.unwrap();
    assert_eq!(n.count, 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let info: QueueInfo = c.call("weft.queue.show", &NameReq { name: "jobs".into() }).await.unwrap();
    assert_eq!((info.incoming, info.errors, info.processing_paused), (2, 1, true));
    // The CLI drives the same endpoints.
    let conn = Conn { addr: format!("tcp://{addr}"), timeout_ms: 5_000, json: false, tls: Default::default() };
    weft_queue::cli::run(Command::Queue { conn: conn.clone(), op: QueueOp::Resume { name: "jobs".into(), what: PauseWhat::All } }).await.unwrap();
    assert!(q.wait_idle(Duration::from_secs(5)).await);
    weft_queue::cli::run(Command::Queue { conn: conn.clone(), op: QueueOp::Ls }).await.unwrap();
    weft_queue::cli::run(Command::Queue { conn: conn.clone(), op: QueueOp::Inspect { name: "jobs".into(), uid: boom.uid.clone() } }).await.unwrap();
    let popped: ItemView = c.call("weft.queue.pop", &UidReq { name: "jobs".into(), uid: boom.uid.clone() }).await.unwrap();
    assert_eq!(popped.uid, boom.uid);
    assert!(c.call::<_, ItemView>("weft.queue.pop", &UidReq { name: "jobs".into(), uid: boom.uid.clone() }).await.is_err());
    weft_queue::cli::run(Command::Queue { conn: conn.clone(), op: QueueOp::Reprocess { name: "jobs".into(), uid: None, all: true } }).await.unwrap();
    assert!(q.wait_idle(Duration::from_secs(5)).await);
    weft_queue::cli::run(Command::Queue { conn: conn.clone(), op: QueueOp::Clear { name: "jobs".into() } }).await.unwrap();
    assert_eq!(q.info().errors, 0);
    assert!(weft_queue::cli::run(Command::Queue { conn: conn.clone(), op: QueueOp::Show { name: "nope".into() } }).await.is_err());

    // Error keeper.
    let states: Vec<ErrorState> = c.call("weft.errors.get", &()).await.unwrap();
    assert_eq!(states[0].error_id, "JOB_FAILED");
    assert!(states[0].count >= 2);
    weft_queue::cli::run(Command::Errors { conn: conn.clone(), op: Some(ErrorsOp::Clear { error_id: Some("job_failed".into()), count: 0 }) }).await.unwrap();
    let states: Vec<ErrorState> = c.call("weft.errors.get", &()).await.unwrap();
    assert!(states.is_empty());

    // Statistics keeper: current, gathered, full history.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let cur: Snapshot = c.call("weft.stats.current", &()).await.unwrap();
    assert_eq!(cur.values["queue.jobs.errors"], 0);
    assert!(cur.values["endpoint.jobs.calls"].as_u64().unwrap() >= 6);
    let full: Vec<Snapshot> = c.call("weft.stats.full", &()).await.unwrap();
    assert_eq!(full.len(), 3);
    let gathered: Option<Snapshot> = c.call("weft.stats.gathered", &()).await.unwrap();
    assert!(gathered.is_some());
    let total: u64 = full.iter().chain(std::iter::once(&cur)).map(|s| s.endpoints.get("jobs").map_or(0, |e| e.call_count)).sum();
    assert!(total <= 8);
    weft_queue::cli::run(Command::Stats { conn: conn.clone(), gathered: false, full: true }).await.unwrap();
    weft_queue::cli::run(Command::Stats { conn, gathered: true, full: false }).await.unwrap();
    server.shutdown(Duration::from_secs(1)).await;
    manager.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_and_broadcasters() {
    let dir = tempfile::tempdir().unwrap();
    // Three receivers, each recording what it got, in order.
    let mut targets = vec![];
    let mut logs = vec![];
    let mut servers = vec![];
    for i in 0..3 {
        let log = Arc::new(Mutex::new(Vec::<i64>::new()));
        let l2 = log.clone();
        let mut svc = Service::new(format!("r{i}"));
        svc.endpoint(&format!("in{i}"), move |j: Job| {
            let l2 = l2.clone();
            async move {
                if j.n == -7 {
                    return Err(ServiceError::validation("refused"));
                }
                l2.lock().unwrap().push(j.n);
                Ok(())
            }
        })
        .unwrap();
        let server = Server::new(ServerConfig::default(), svc.into_handler());
        let addr = server.bind_tcp("127.0.0.1:0").await.unwrap().to_string();
        targets.push(Target { name: format!("r{i}"), route: format!("in{i}"), outbound: NativeOutbound::with_defaults(Endpoint::Tcp(addr)) });
        logs.push(log);
        servers.push(server);
    }
    let b = Broadcaster::new(targets.clone());
    let results = b.send(&Job { n: 5 }).await.unwrap();
    assert!(results.iter().all(|r| r.ok), "{results:?}");
    let results = b.send(&Job { n: -7 }).await.unwrap();
    assert!(results.iter().all(|r| !r.ok && r.reason.contains("refused")));

    let mut svc = Service::new("sender");
    let manager = Manager::new(dir.path(), &svc, ManagerOptions::default()).unwrap();
    manager.register(&mut svc).unwrap();
    let opts = QueueOptions { sequenced: true, concurrency: 4, rate_per_s: Some(500.0), burst: 10, ..fast() };
    let senders: Vec<_> = targets
        .iter()
        .map(|t| manager.queued_sender(&t.name, &t.route, t.outbound.clone(), opts.clone()).unwrap())
        .collect();
    let sb = SequencedBroadcaster::new(senders.clone()).unwrap();
    for n in 10..30 {
        sb.send(&Job { n }).await.unwrap();
    }
    sb.send(&Job { n: -7 }).await.unwrap();
    for s in &senders {
        assert!(s.queue().wait_idle(Duration::from_secs(10)).await);
        assert_eq!(s.info().errors, 1, "the refused message is in the error queue");
        let uid = s.queue().first_errors(1).remove(0);
        assert!(s.queue().inspect(&uid).unwrap().reason.contains("refused"));
    }
    for log in &logs {
        assert_eq!(log.lock().unwrap().clone(), std::iter::once(5).chain(10..30).collect::<Vec<_>>(), "per-client order kept");
    }
    // Sender management over the wire.
    let server = Server::new(ServerConfig::default(), svc.into_handler());
    let addr = server.bind_tcp("127.0.0.1:0").await.unwrap().to_string();
    let c = client(&addr).await;
    let ls: Vec<QueueInfo> = c.call("weft.sender.ls", &()).await.unwrap();
    assert_eq!(ls.len(), 3);
    let _: QueueInfo = c.call("weft.sender.pause", &PauseReq { name: "r0".into(), what: Some(PauseWhat::Processing) }).await.unwrap();
    senders[0].send(&Job { n: 100 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(senders[0].info().incoming, 1);
    let _: QueueInfo = c.call("weft.sender.resume", &PauseReq { name: "r0".into(), what: None }).await.unwrap();
    assert!(senders[0].queue().wait_idle(Duration::from_secs(5)).await);
    assert_eq!(*logs[0].lock().unwrap().last().unwrap(), 100);
    let n: Count = c.call("weft.sender.clear", &NameReq { name: "r1".into() }).await.unwrap();
    assert_eq!(n.count, 1);
    server.shutdown(Duration::from_secs(1)).await;
    manager.shutdown(Duration::from_secs(1)).await;
    for s in servers {
        s.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_handler_is_retried_without_using_up_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::new("busy");
    let manager = Manager::new(dir.path(), &svc, ManagerOptions::default()).unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c2 = calls.clone();
    let opts = QueueOptions { max_retries: 0, ..fast() };
    let ep = manager
        .queued_endpoint(&mut svc, "dep", opts, move |_: Job| {
            let c2 = c2.clone();
            async move {
                if c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3 {
                    return Err(ServiceError::busy("dependency saturated"));
                }
                Ok(())
            }
        })
        .unwrap();
    ep.submit(None, &json!({"n": 1})).await.unwrap();
    assert!(ep.queue().wait_idle(Duration::from_secs(5)).await);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!((ep.queue().info().errors, ep.queue().info().processed), (0, 1));
    manager.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_cli_on_a_node_without_the_keeper() {
    let server = Server::new(ServerConfig::default(), Service::new("plain").into_handler());
    let addr = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let conn = Conn { addr: format!("tcp://{addr}"), timeout_ms: 5_000, json: false, tls: Default::default() };
    weft_queue::cli::run(Command::Stats { conn: conn.clone(), gathered: false, full: false }).await.unwrap();
    assert!(weft_queue::cli::run(Command::Stats { conn, gathered: false, full: true }).await.is_err());
    server.shutdown(Duration::from_secs(1)).await;
}
