//! A real process crash: a child process (this test binary, re-executed)
//! produces from several tasks with fsync `always` and prints every
//! acknowledgement; it is killed with SIGKILL mid-stream; the log is
//! reopened and every acknowledged record must be there, in order, with
//! unique offsets.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use weft_log::*;

const CHILD_ENV: &str = "WEFT_LOG_KILL9_CHILD_DIR";

/// Runs only inside the child: produce until killed (bounded at 30 s).
#[test]
fn kill9_child_producer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let log = Log::open(&dir, LogConfig { fsync: FsyncPolicy::Always, ..cfg() }).await.unwrap();
        let tc = TopicConfig { segment_bytes: 64 * 1024, ..TopicConfig::default() }.with_partitions(2);
        log.create_topic("t", Some(tc)).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for w in 0..4 {
            let log = log.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let v = format!("w{w}-{i}-{}", "x".repeat((i % 50) as usize));
                    let batch = vec![ProduceRecord::keyed(format!("w{w}"), v.clone())];
                    let a = log.produce("t", batch).await.unwrap().pop().unwrap().unwrap();
                    if tx.send(format!("ACK {} {} {}", a.partition, a.offset, v)).is_err() {
                        break;
                    }
                    i += 1;
                }
            });
        }
        drop(tx);
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            // Printed only after the ack: the parent learns of no record that was not acknowledged.
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test]
async fn kill9_mid_stream_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "kill9_child_producer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ACK ") {
                let mut it = rest.splitn(3, ' ');
                let p: u32 = it.next().unwrap().parse().unwrap();
                let o: u64 = it.next().unwrap().parse().unwrap();
                acks.push((p, o, it.next().unwrap().to_string()));
                seen2.store(acks.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
        acks
    });
    // Let it run until a good number of acks went by (at most 20 s), then SIGKILL.
    let t0 = Instant::now();
    while seen.load(std::sync::atomic::Ordering::SeqCst) < 300 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let acks = reader.join().unwrap();
    assert!(acks.len() > 20, "child acknowledged only {} records", acks.len());

    let log = Log::open(dir.path(), cfg()).await.unwrap();
    for p in 0..2u32 {
        let recs = read_all(&log, "t", p).await;
        for w in recs.windows(2) {
            assert!(w[0].offset < w[1].offset, "offsets increase");
        }
        let by_offset: std::collections::HashMap<u64, String> = recs.iter().map(|r| (r.offset.0, value_str(r))).collect();
        for (_, o, v) in acks.iter().filter(|a| a.0 == p) {
            assert_eq!(by_offset.get(o), Some(v), "acknowledged record {p}/{o} missing or different");
        }
        // Per producer, records keep their production order.
        for w in 0..4 {
            let seq: Vec<u64> = recs
                .iter()
                .map(value_str)
                .filter(|v| v.starts_with(&format!("w{w}-")))
                .map(|v| v.split('-').nth(1).unwrap().parse().unwrap())
                .collect();
            assert!(seq.windows(2).all(|x| x[0] < x[1]), "order of w{w}");
        }
    }
    println!("{} acknowledged records checked after SIGKILL", acks.len());
}
