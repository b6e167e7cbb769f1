//! A full disk through the real binary: on a 2 MiB tmpfs, produce and
//! offset commits fail with typed "disk full" errors, a topic create fails
//! without leaving anything; once space is freed, produce and commits work
//! again without a restart, and every acknowledged record and commit is
//! intact, also after a restart. Needs root (mount); skips otherwise.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_broker::dto::{self, route};
use weft_net::{Client, ClientConfig, Endpoint};

mod common;
use common::{free_port, WEFT};

/// Kills the node and unmounts the tmpfs, also when the test fails.
struct Mounted {
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn serve(data: &Path, port: u16) -> Child {
    Command::new(WEFT)
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--disable", "http"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn connect(port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cfg = ClientConfig { request_timeout: Duration::from_secs(30), ..ClientConfig::default() };
        match Client::connect(Endpoint::Tcp(format!("127.0.0.1:{port}")), cfg).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("weft serve never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn stats(client: &Client) -> BTreeMap<String, serde_json::Value> {
    client.call("weft.stats", &serde_json::json!({})).await.unwrap()
}

async fn produce(client: &Client, value: &str) -> Result<u64, String> {
    let r: dto::ProduceResponse = client
        .call(route::PRODUCE, &serde_json::json!({"topic": "t", "records": [{"partition": 0, "value": value.as_bytes()}]}))
        .await
        .map_err(|e| e.to_string())?;
    match (&r.results[0].offset, &r.results[0].error) {
        (Some(o), None) => Ok(*o),
        (_, e) => Err(format!("{e:?}")),
    }
}

async fn commit(client: &Client, offset: u64) -> Result<(), String> {
    // Large metadata: every commit needs new pages of the offsets segment.
    let body = serde_json::json!({"group": "g", "offsets": [{"topic": "t", "partition": 0, "offset": offset, "metadata": "m".repeat(4000)}]});
    client.call::<_, serde_json::Value>(route::GROUP_COMMIT, &body).await.map(|_| ()).map_err(|e| e.to_string())
}

async fn committed(client: &Client) -> Option<u64> {
    let a: dto::CommittedAnswer =
        client.call(route::GROUP_COMMITTED, &serde_json::json!({"group": "g", "topic": "t", "partition": 0})).await.unwrap();
    a.offset
}

async fn read_all(client: &Client) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    loop {
        let f: dto::FetchResponse = client
            .call(route::FETCH, &serde_json::json!({"topic": "t", "partition": 0, "offset": out.len(), "max_records": 1000}))
            .await
            .unwrap();
        if f.records.is_empty() {
            return out;
        }
        for r in f.records {
            out.insert(r.offset, String::from_utf8(r.value.unwrap().into_vec()).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_then_space_freed_recovers_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&mnt).stderr(Stdio::null()).status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: cannot mount a tmpfs (needs root): the disk-full test did not run");
        return;
    }
    let mut guard = Mounted { dir: mnt.clone(), child: None };
    let data = mnt.join("data");
    let port = free_port();
    guard.child = Some(serve(&data, port));
    let client = connect(port).await;
    let _: serde_json::Value = client.call(route::TOPIC_CREATE, &serde_json::json!({"name": "t"})).await.unwrap();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..5 {
        let v = format!("before-{i}");
        acked.insert(produce(&client, &v).await.unwrap(), v);
    }
    commit(&client, acked.len() as u64).await.unwrap();
    let mut last_commit = acked.len() as u64;

    // Fill the file system, then give back 256 KiB to be filled by produce.
    let filler_path = mnt.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while filler.write_all(&chunk).is_ok() {}
    let len = filler.metadata().unwrap().len();
    filler.set_len(len.saturating_sub(256 * 1024)).unwrap();
    drop(filler);

    let value = "v".repeat(8 * 1024);
    let mut produce_err = None;
    for i in 0..200 {
        let v = format!("{i}-{value}");
        match produce(&client, &v).await {
            Ok(o) => {
                acked.insert(o, v);
            }
            Err(e) => {
                produce_err = Some(e);
                break;
            }
        }
    }
    let e = produce_err.expect("produce never failed on a full disk");
    assert!(e.contains("disk full") && e.contains("poisoned"), "typed disk-full error: {e}");
    let mut commit_err = None;
    for _ in 0..100 {
        match commit(&client, acked.len() as u64).await {
            Ok(()) => last_commit = acked.len() as u64,
            Err(e) => {
                commit_err = Some(e);
                break;
            }
        }
    }
    let e = commit_err.expect("commit never failed on a full disk");
    assert!(e.contains("disk full"), "typed disk-full error on commit: {e}");
    // A topic create on the full disk fails and leaves nothing.
    let r: Result<serde_json::Value, _> =
        client.call(route::TOPIC_CREATE, &serde_json::json!({"name": "wide", "config": {"partitions": 64}})).await;
    assert!(r.is_err(), "create on a full disk: {r:?}");
    assert!(!data.join("log/topics/wide").exists() && !data.join("log/staging/wide").exists(), "a failed create left files");
    let s = stats(&client).await;
    assert_eq!(s["log.disk_full"], 1, "{s:?}");
    assert!(s["log.partitions_poisoned"].as_u64().unwrap() >= 1);
    assert!(s["log.last_storage_error"].as_str().unwrap().contains("space"), "{:?}", s["log.last_storage_error"]);

    // Free the space: writes work again, no restart.
    std::fs::remove_file(&filler_path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = "after-free".to_string();
    let o = loop {
        match produce(&client, &v).await {
            Ok(o) => break o,
            Err(e) => assert!(Instant::now() < deadline, "produce never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    acked.insert(o, v);
    loop {
        match commit(&client, acked.len() as u64).await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "commit never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(acked.len() as u64 > last_commit);
    last_commit = acked.len() as u64;
    assert_eq!(read_all(&client).await, acked, "exactly the acknowledged records, at their offsets");
    assert_eq!(committed(&client).await, Some(last_commit));
    let s = stats(&client).await;
    assert_eq!(s["log.disk_full"], 0, "{s:?}");
    assert_eq!(s["log.partitions_poisoned"], 0, "{s:?}");
    assert!(s["log.recoveries"].as_u64().unwrap() >= 2, "{s:?}");

    // And after a restart.
    let mut c = guard.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let port = free_port();
    guard.child = Some(serve(&data, port));
    let client = connect(port).await;
    assert_eq!(read_all(&client).await, acked);
    assert_eq!(committed(&client).await, Some(last_commit));
    let _: serde_json::Value =
        client.call(route::TOPIC_CREATE, &serde_json::json!({"name": "wide", "config": {"partitions": 64}})).await.unwrap();
    drop(guard);
}
