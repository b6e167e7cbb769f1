//! Durability is a promise: with fsync `always`, every produce acknowledged
//! before a kill -9 is there after the restart, in order, at its offset.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_broker::dto::{self, route};
use weft_net::{Client, ClientConfig, Endpoint};

mod common;
use common::{free_port, WEFT};

fn serve(dir: &std::path::Path, port: u16, fsync: &str) -> Child {
    Command::new(WEFT)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--disable", "http", "--fsync", fsync])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn connect(port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cfg = ClientConfig { request_timeout: Duration::from_secs(10), ..ClientConfig::default() };
        match Client::connect(Endpoint::Tcp(format!("127.0.0.1:{port}")), cfg).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("weft serve never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// (partition, offset) -> value, for every acknowledged record.
type Acked = Arc<Mutex<BTreeMap<(u32, u64), String>>>;

async fn crash_and_check(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(dir.path(), port, fsync);
    let admin = connect(port).await;
    let _: serde_json::Value = admin.call(route::TOPIC_CREATE, &serde_json::json!({"name": "crash", "config": {"partitions": 2}})).await.unwrap();

    let acked: Acked = Arc::default();
    let mut producers = vec![];
    for p in 0..4u32 {
        let acked = acked.clone();
        producers.push(tokio::spawn(async move {
            let client = connect(port).await;
            // Bounded: at most 100k batches, stops at the first error (the kill).
            for n in 0..100_000u32 {
                let records: Vec<dto::RecordIn> = (0..5)
                    .map(|i| dto::RecordIn {
                        partition: Some(p % 2),
                        key: Some(dto::SharedBytes::from(format!("producer-{p}").into_bytes())),
                        value: Some(dto::SharedBytes::from(format!("p{p}-{n}-{i}").into_bytes())),
                        ..Default::default()
                    })
                    .collect();
                let r: Result<dto::ProduceResponse, _> = client.call(route::PRODUCE, &dto::Produce { topic: "crash".into(), records, ..Default::default() }).await;
                let Ok(r) = r else { return };
                let mut a = acked.lock().unwrap();
                for (i, res) in r.results.iter().enumerate() {
                    let (Some(part), Some(off)) = (res.partition, res.offset) else { continue };
                    let prev = a.insert((part, off), format!("p{p}-{n}-{i}"));
                    assert!(prev.is_none(), "offset {part}/{off} acknowledged twice");
                }
            }
        }));
    }
    // Let them run, then kill -9 mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100, "too few acknowledged records to test anything: {}", acked.len());

    // Restart on the same directory and read everything back.
    let port2 = free_port();
    let mut child = serve(dir.path(), port2, fsync);
    let client = connect(port2).await;
    let mut stored: BTreeMap<(u32, u64), String> = BTreeMap::new();
    for part in 0..2u32 {
        let mut offset = 0;
        loop {
            let f: dto::FetchResponse = client
                .call(route::FETCH, &dto::Fetch { topic: "crash".into(), partition: part, offset, max_bytes: None, max_records: Some(5000), wait_ms: None, raw: false, reset: None })
                .await
                .unwrap();
            if f.records.is_empty() {
                break;
            }
            for r in &f.records {
                assert_eq!(r.offset, offset, "offsets are dense and unique");
                offset += 1;
                stored.insert((part, r.offset), String::from_utf8(r.value.clone().unwrap().into_vec()).unwrap());
            }
        }
    }
    for (k, v) in &acked {
        assert_eq!(stored.get(k), Some(v), "acknowledged record {k:?} lost or changed after kill -9");
    }
    // Per producer, the stored order is the order sent.
    let mut last: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for v in stored.values() {
        let mut it = v.split('-');
        let (p, n, i) = (it.next().unwrap().to_owned(), it.next().unwrap().parse::<u32>().unwrap(), it.next().unwrap().parse::<u32>().unwrap());
        if let Some(prev) = last.get(&p) {
            assert!((n, i) > *prev, "{p}: {n}-{i} stored after {prev:?}");
        }
        last.insert(p, (n, i));
    }
    // The restarted node keeps writing after the recovered tail.
    let r: dto::ProduceResponse = client
        .call(route::PRODUCE, &dto::Produce { topic: "crash".into(), records: vec![dto::RecordIn { partition: Some(0), value: Some(dto::SharedBytes::from(b"after".to_vec())), ..Default::default() }], ..Default::default() })
        .await
        .unwrap();
    let next0 = stored.keys().filter(|(p, _)| *p == 0).count() as u64;
    assert_eq!(r.results[0].offset, Some(next0));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9_fsync_always() {
    crash_and_check("always").await;
}

/// `never` only promises survival of a process crash (the page cache
/// outlives the process); kill -9 is exactly that, so nothing acked is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9_fsync_never() {
    crash_and_check("never").await;
}
