//! Storage limits through the real binary: a topic with the maximum number
//! of partitions (1024) on a node whose open-file limit is 256, every
//! partition written, descriptors bounded, everything read back after a
//! restart.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_broker::dto::{self, route};
use weft_net::{Client, ClientConfig, Endpoint};

mod common;
use common::{free_port, WEFT};

const PARTITIONS: u32 = 1024;
const FD_LIMIT: u32 = 256;

fn have_prlimit() -> bool {
    Command::new("prlimit").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `weft serve` with RLIMIT_NOFILE soft = hard = FD_LIMIT (prlimit execs it:
/// the child's pid is weft's).
fn serve_limited(dir: &Path, port: u16) -> Child {
    Command::new("prlimit")
        .arg(format!("--nofile={FD_LIMIT}:{FD_LIMIT}"))
        .arg(WEFT)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--disable", "http"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn connect(port: u16, child: &mut Child) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("weft serve exited during start-up: {st}");
        }
        let cfg = ClientConfig { request_timeout: Duration::from_secs(120), ..ClientConfig::default() };
        match Client::connect(Endpoint::Tcp(format!("127.0.0.1:{port}")), cfg).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("weft serve never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

async fn stat(client: &Client, key: &str) -> u64 {
    let s: BTreeMap<String, serde_json::Value> = client.call("weft.stats", &serde_json::json!({})).await.unwrap();
    s.get(key).and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("no stat {key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_partitions_under_a_low_fd_limit() {
    if !have_prlimit() {
        eprintln!("SKIP: prlimit (util-linux) not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve_limited(dir.path(), port);
    let client = connect(port, &mut child).await;
    let _: serde_json::Value = client
        .call(route::TOPIC_CREATE, &serde_json::json!({"name": "wide", "config": {"partitions": PARTITIONS, "segment_bytes": 4096}}))
        .await
        .unwrap();
    // Three rounds of ~1.5 KiB records: 4 KiB segments roll, so each
    // partition ends with sealed segments and an active one (3000+ files).
    for round in 0..3u32 {
        let records: Vec<dto::RecordIn> = (0..PARTITIONS)
            .map(|p| dto::RecordIn {
                partition: Some(p),
                value: Some(dto::SharedBytes::from(format!("{p}-{round}-{}", "v".repeat(1500)).into_bytes())),
                ..Default::default()
            })
            .collect();
        let r: dto::ProduceResponse = client.call(route::PRODUCE, &dto::Produce { topic: "wide".into(), records, ..Default::default() }).await.unwrap();
        for res in &r.results {
            assert!(res.error.is_none(), "round {round}: {:?}", res.error);
        }
    }
    let fds = fd_count(child.id());
    let open = stat(&client, "log.open_files").await;
    let max_open = stat(&client, "log.open_files_max").await;
    assert!(max_open <= u64::from(FD_LIMIT / 2), "log_store.max_open_files capped at half the limit: {max_open}");
    assert!(open <= max_open, "{open} > {max_open}");
    assert!(stat(&client, "log.file_cache_evictions").await > 0);
    // Bounded: the cache plus sockets, the lock and the runtime's own.
    assert!(fds < FD_LIMIT as usize - 32, "{fds} descriptors open under a limit of {FD_LIMIT}");
    child.kill().unwrap();
    child.wait().unwrap();

    let port = free_port();
    let mut child = serve_limited(dir.path(), port);
    let client = connect(port, &mut child).await;
    for p in 0..PARTITIONS {
        // A fetch stops at a segment's end: read on until the high watermark.
        let mut got: Vec<String> = vec![];
        loop {
            let f: dto::FetchResponse = client
                .call(route::FETCH, &serde_json::json!({"topic": "wide", "partition": p, "offset": got.len(), "max_records": 10}))
                .await
                .unwrap();
            if f.records.is_empty() {
                break;
            }
            for r in &f.records {
                assert_eq!(r.offset, got.len() as u64);
                let v = String::from_utf8(r.value.clone().unwrap().into_vec()).unwrap();
                got.push(v.split('-').take(2).collect::<Vec<_>>().join("-"));
            }
        }
        assert_eq!(got, (0..3).map(|r| format!("{p}-{r}")).collect::<Vec<_>>(), "partition {p}");
    }
    assert!(fd_count(child.id()) < FD_LIMIT as usize - 32);
    child.kill().unwrap();
    child.wait().unwrap();
}
