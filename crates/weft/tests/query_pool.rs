//! Chaos for the query client's pool (issue #13, item 5): three `weft
//! serve` processes, one weft-query-client pool balancing reads over them.
//! kill -9 of one node while a bounded loop of reads runs: its breaker
//! opens, reads go to the other two and none fails; restarted on the same
//! ports and data dir, its breaker half-opens, a probe succeeds, it closes
//! and the node gets reads again. Asserts transitions and traffic counts,
//! never timings. Until tables are replicated the three nodes hold
//! independent tables, so the same keys are written to each first.
//! Children are ended by pid.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_query_client::{Balance, BreakerConfig, BreakerState, Client, ClientConfig, PoolConfig, RetryConfig};

mod common;
use common::{free_port, WEFT};

struct Proc {
    tcp: u16,
    http: u16,
    grpc: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(root: &std::path::Path, i: usize) -> Proc {
        Proc { tcp: free_port(), http: free_port(), grpc: free_port(), dir: root.join(format!("n{i}")), child: None }
    }

    fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.with_extension("log")).unwrap();
        let child = Command::new(WEFT)
            .args(["serve", "--data-dir"])
            .arg(&self.dir)
            .args(["--tcp-addr", &format!("127.0.0.1:{}", self.tcp), "--disable", "udp"])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http)])
            .args(["--grpc-addr", &self.grpc_addr()])
            .env_remove("WEFT_CONFIG")
            .env_remove("WEFT_ADDR")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// kill -9, by pid.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pool of one node (no retries), to set up and to wait for a node.
fn single(addr: &str) -> Client {
    let mut cfg = ClientConfig::with_nodes([addr]);
    cfg.pool.health_interval_ms = 0;
    cfg.retry.max_retries = 0;
    cfg.request_timeout_ms = 2_000;
    Client::new(cfg).unwrap()
}

async fn wait_up(addr: &str) {
    let c = single(addr);
    for _ in 0..300 {
        if c.aql("SHOW TABLES").await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gRPC on {addr} did not come up");
}

const KEYS: usize = 20;

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// One read of a random key, checked.
async fn read(c: &Client, i: usize) -> Result<(), String> {
    let k = i % KEYS;
    match c.get("kv", format!("k{k}").as_bytes()).await {
        Ok(Some(kv)) if kv.value == value(k) => Ok(()),
        Ok(other) => Err(format!("k{k}: wrong answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_kill_traffic_moves_and_returns_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut ps: Vec<Proc> = (0..3).map(|i| Proc::new(root.path(), i)).collect();
    for p in &mut ps {
        p.start();
    }
    for p in &ps {
        wait_up(&p.grpc_addr()).await;
        let c = single(&p.grpc_addr());
        c.aql("CREATE TABLE kv").await.unwrap();
        for k in 0..KEYS {
            c.put("kv", format!("k{k}").as_bytes(), &value(k)).await.unwrap();
        }
    }

    let cfg = ClientConfig {
        balance: Balance::RoundRobin,
        pool: PoolConfig { health_interval_ms: 100, health_timeout_ms: 500, connect_timeout_ms: 500, ..PoolConfig::default() },
        breaker: BreakerConfig { consecutive_failures: 3, cool_down_ms: 300, half_open_probes: 1, probes_to_close: 1, history: 4096, ..BreakerConfig::default() },
        retry: RetryConfig { max_retries: 5, initial_backoff_ms: 5, max_backoff_ms: 100, ..RetryConfig::default() },
        request_timeout_ms: 5_000,
        ..ClientConfig::with_nodes(ps.iter().map(|p| p.grpc_addr()))
    };
    let pool = Client::new(cfg).unwrap();
    let victim = 1;
    let node = |pool: &Client| pool.stats().nodes.swap_remove(victim);

    // Every node serves reads.
    for i in 0..60 {
        read(&pool, i).await.unwrap();
    }
    let s = pool.stats();
    assert!(s.nodes.iter().all(|n| n.ok >= 10), "round robin over three: {:?}", s.nodes.iter().map(|n| n.ok).collect::<Vec<_>>());

    // kill -9 the victim with reads running; its breaker opens.
    ps[victim].kill();
    let mut failed = Vec::new();
    let mut reads = 0;
    while node(&pool).state == BreakerState::Closed {
        assert!(reads < 2_000, "breaker never opened: {:?}", node(&pool));
        if let Err(e) = read(&pool, reads).await {
            failed.push(e);
        }
        reads += 1;
    }
    let at_open = node(&pool);
    assert!(at_open.breaker.opened >= 1);
    eprintln!("breaker opened after {reads} reads; {} failed (in flight at the kill)", failed.len());
    // Reads are idempotent: the ones that hit the dead node were retried on
    // the others, so none failed even before the breaker opened.
    assert!(failed.is_empty(), "{failed:?}");

    // While it is down: no failed reads, and the dead node answers none.
    for i in 0..200 {
        read(&pool, i).await.unwrap();
    }
    let down = node(&pool);
    assert_eq!(down.ok, at_open.ok, "the dead node answered reads");
    assert_ne!(down.state, BreakerState::Closed);
    let others: u64 = pool.stats().nodes.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, n)| n.ok).sum();
    // Every read succeeded once, so the others answered all the rest
    // (health checks are not reads).
    assert_eq!(others + down.ok, 60 + reads as u64 + 200);

    // Back on the same ports and data dir: half-open, probe, closed, traffic.
    ps[victim].start();
    wait_up(&ps[victim].grpc_addr()).await;
    let mut n = 0;
    loop {
        let v = node(&pool);
        if v.state == BreakerState::Closed && v.ok > down.ok {
            break;
        }
        assert!(n < 3_000, "the restarted node never came back: {v:?}");
        read(&pool, n).await.unwrap();
        // Bounded pacing so the cool-down can pass; not a timing assertion.
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n += 1;
    }
    let back = node(&pool);
    let t = &back.transitions;
    let open_at = t.iter().position(|s| *s == BreakerState::Open).unwrap();
    assert_eq!(t[..=open_at], [BreakerState::Closed, BreakerState::Open]);
    assert_eq!(t[t.len() - 2..], [BreakerState::HalfOpen, BreakerState::Closed], "{t:?}");
    assert!(back.breaker.half_opened >= 1 && back.breaker.closed >= 1 && back.breaker.probes >= 1);
    // And it takes its share again.
    let before = node(&pool).ok;
    for i in 0..60 {
        read(&pool, i).await.unwrap();
    }
    assert!(node(&pool).ok >= before + 10, "{:?}", node(&pool));
}
