//! The load generator against real servers, for tiny bounded counts: every
//! acknowledged record is read back (no timing is asserted).
//!
//! Weft runs in-process on a TCP socket; the peers (NATS JetStream, Redis)
//! are started as children only with WEFT_PEERS=1, and then must be there.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_broker::dto::route;
use weft_log::{Log, LogConfig};
use weft_logbench::engine::{run_probed, run_scenario, Probes, Target};
use weft_logbench::jetstream::JetStreamTarget;
use weft_logbench::redis_streams::RedisTarget;
use weft_logbench::weft::WeftTarget;
use weft_logbench::{RunResult, Scenario};
use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_service::Service;

fn tiny(producers: usize, window: usize, batch: usize, max_records: u64) -> Scenario {
    // The count bounds the run; the duration is only a backstop.
    Scenario { size: 100, producers, window, batch, duration_ms: 600_000, max_records }
}

async fn check<T: Target>(t: &T, label: &str, sc: Scenario, name: &str) -> RunResult {
    let r = run_scenario(t, label, &sc, Some(std::process::id()), name).await.unwrap();
    assert_eq!(r.produced, sc.max_records.div_ceil(sc.batch as u64 * sc.producers as u64) * sc.batch as u64 * sc.producers as u64);
    assert_eq!(r.consumed, r.produced);
    assert!(r.rss_peak_kb.unwrap() > 0);
    r
}

#[tokio::test]
async fn weft_reads_back_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), LogConfig { maintenance_interval: None, ..LogConfig::default() }).await.unwrap();
    let mut svc = Service::new("logbench");
    weft_broker::native::register(&mut svc, log.clone()).unwrap();
    let server = Server::new(ServerConfig::default(), svc.into_handler());
    let addr = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::Tcp(addr.to_string());
    let t = WeftTarget::connect(endpoint.clone()).await.unwrap();

    let r = check(&t, "weft", tiny(1, 1, 1, 50), "lb-sync").await;
    // Read-your-writes where acked: nothing acknowledged is missing there.
    assert_eq!(r.home_behind, Some(0));
    assert_eq!(r.replicas_caught_up_ms, None, "one node: no replicas to check");
    check(&t, "weft", tiny(2, 8, 1, 300), "lb-pipelined").await;
    // 2 producers x 16 requests of 10 records.
    check(&t, "weft", tiny(2, 4, 10, 310), "lb-batched").await;
    // The raw read path decodes the same records.
    let r = run_scenario(&t, "weft", &tiny(1, 16, 50, 2500), None, "lb-raw").await.unwrap();
    assert_eq!(r.consumed, 2500);
    assert!(r.consume_raw_rec_s.is_some());

    // Disk writes of this process (the broker runs in it) over the produce
    // phase: 200 records of 100 bytes went to a segment.
    let probes = Probes { pid: None, io_pids: vec![("me".into(), std::process::id())], fsync_logs: Vec::new() };
    let r = run_probed(&t, "weft", &tiny(1, 4, 10, 200), &probes, "lb-disk").await.unwrap();
    assert_eq!(r.disk.len(), 1);
    assert_eq!(r.disk[0].node, "me");
    // (tmpfs pages are never written back, so they count nothing.)
    assert!(r.disk[0].write_bytes >= 200 * 100 || on_tmpfs(dir.path()), "{:?}", r.disk);
    assert_eq!(r.disk[0].fsyncs, None);

    // Every run deleted its topic.
    let c = Client::connect(endpoint, ClientConfig::default()).await.unwrap();
    let topics: Vec<String> = c.call(route::TOPIC_LIST, &()).await.unwrap();
    assert!(topics.iter().all(|t| !t.starts_with("lb-")), "{topics:?}");
}

/// Whether `path` lies on a tmpfs (the mount with the longest matching point).
fn on_tmpfs(path: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point).then(|| (point.len(), fs == "tmpfs"))
        })
        .max()
        .is_some_and(|(_, tmpfs)| tmpfs)
}

fn peers_wanted() -> bool {
    if std::env::var("WEFT_PEERS").as_deref() == Ok("1") {
        return true;
    }
    println!("skipped: set WEFT_PEERS=1 to run against nats-server and redis-server");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the child (by its own pid) when the test ends, pass or fail.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Peer {
    let what = format!("{cmd:?}");
    Peer(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("{what}: {e} (apt-get install -y nats-server redis-server)")))
}

async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

#[tokio::test]
async fn peers_read_back_what_they_acknowledged() {
    if !peers_wanted() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (np, rp) = (free_port(), free_port());
    let _nats = spawn(Command::new("nats-server").args(["-js", "-a", "127.0.0.1", "-p", &np.to_string(), "-sd"]).arg(dir.path().join("js")));
    let _redis = spawn(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &rp.to_string(), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir"])
            .arg(dir.path()),
    );
    wait_listening(np).await;
    wait_listening(rp).await;

    let js = JetStreamTarget::connect(&format!("nats://127.0.0.1:{np}"), 1).await.unwrap();
    check(&js, "jetstream", tiny(1, 1, 1, 50), "lb-sync").await;
    check(&js, "jetstream", tiny(2, 16, 1, 2100), "lb-pipelined").await;

    let redis = RedisTarget::connect(&format!("redis://127.0.0.1:{rp}/")).await.unwrap();
    check(&redis, "redis", tiny(1, 1, 1, 50), "lb-sync").await;
    check(&redis, "redis", tiny(2, 16, 1, 2100), "lb-pipelined").await;
}
