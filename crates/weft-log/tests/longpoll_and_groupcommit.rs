//! Long-poll wake-up and group commit under fsync `always`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use weft_log::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_produce_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    log.create_topic("t", None).await.unwrap();
    // Times out empty.
    let t0 = Instant::now();
    let f = log.fetch("t", PartitionId(0), Offset(0), 1000, 10, Some(Duration::from_millis(100))).await.unwrap();
    assert!(f.batches.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(90));
    // Wakes up as soon as a record is produced.
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let f = log.fetch("t", PartitionId(0), Offset(0), 1000, 10, Some(Duration::from_secs(20))).await.unwrap();
            (f.decode().unwrap(), t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.produce("t", vec![ProduceRecord::value("hello")]).await.unwrap();
    let (recs, waited) = reader.await.unwrap();
    assert_eq!(value_str(&recs[0]), "hello");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Deleting the topic wakes waiters with an error.
    let reader = {
        let log = log.clone();
        tokio::spawn(async move { log.fetch("t", PartitionId(0), Offset(1), 1000, 10, Some(Duration::from_secs(20))).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.delete_topic("t").await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap();
    assert!(matches!(r, Err(LogError::UnknownTopic(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig { fsync: FsyncPolicy::Always, ..cfg() }).await.unwrap();
    log.create_topic("t", None).await.unwrap();
    let producers = 32;
    let per = 20;
    let mut tasks = Vec::new();
    for w in 0..producers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut offs = Vec::new();
            for i in 0..per {
                let a = log.produce("t", vec![ProduceRecord::value(format!("{w}-{i}"))]).await.unwrap();
                offs.push(a[0].as_ref().unwrap().offset);
            }
            offs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), producers * per, "offsets are unique");
    let st = log.partition_stats("t").unwrap()[0].clone();
    assert_eq!(st.appends, (producers * per) as u64);
    assert_eq!(st.synced_offset, Offset((producers * per) as u64));
    println!("appends {} fsyncs {}", st.appends, st.fsyncs);
    assert!(st.fsyncs < st.appends, "group commit should share fsyncs: {st:?}");
}

/// The same on a modelled disk whose fsync takes 2 ms: producers that arrive
/// during an fsync share the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_on_a_slow_disk() {
    let s = MemStorage::new();
    s.set_sync_delay(Duration::from_millis(2));
    let clock = std::sync::Arc::new(ManualClock::new(0));
    let log = mem_log(&s, &clock, LogConfig { fsync: FsyncPolicy::Always, ..cfg() }).await;
    log.create_topic("t", None).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                log.produce("t", vec![ProduceRecord::value(format!("{w}-{i}"))]).await.unwrap()[0].as_ref().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = log.partition_stats("t").unwrap()[0].clone();
    assert_eq!(st.appends, 160);
    assert!(st.fsyncs * 4 < st.appends, "expected at least 4 appends per fsync: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_and_never_policies_ack_and_flush() {
    for policy in [FsyncPolicy::Interval { ms: 1000 }, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig { fsync: policy, ..cfg() }).await.unwrap();
        log.create_topic("t", None).await.unwrap();
        for i in 0..50 {
            log.produce("t", vec![ProduceRecord::value(format!("{i}"))]).await.unwrap()[0].as_ref().unwrap();
        }
        // Visible at once (acknowledged at write).
        assert_eq!(log.list_offset("t", PartitionId(0), OffsetSpec::Latest).unwrap(), Offset(50));
        let st = log.partition_stats("t").unwrap()[0].clone();
        // No fsync in the produce path: with `never` none at all; with
        // `interval` only the flusher's (its tick may fall inside the loop on
        // a slow machine, so count rather than expect zero).
        match policy {
            FsyncPolicy::Never => assert_eq!(st.fsyncs, 0, "{policy:?}: no fsync in the produce path"),
            _ => assert!(st.fsyncs < st.appends, "{policy:?}: an fsync per produce: {st:?}"),
        }
        if let FsyncPolicy::Interval { .. } = policy {
            let t0 = Instant::now();
            while log.partition_stats("t").unwrap()[0].synced_offset < Offset(50) {
                assert!(t0.elapsed() < Duration::from_secs(10), "interval flusher never ran");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        log.close().await.unwrap();
        assert_eq!(log.partition_stats("t").unwrap()[0].synced_offset, Offset(50));
    }
}
