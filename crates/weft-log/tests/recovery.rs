//! Crash recovery: torn and corrupt tails are cut at the last whole batch,
//! everything before is kept; acknowledged records survive a crash.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use weft_log::*;

fn segment_files(dir: &Path, topic: &str, p: u32) -> Vec<PathBuf> {
    let pdir = dir.join("topics").join(topic).join(p.to_string());
    let mut v: Vec<PathBuf> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

async fn produce_n(log: &Log, topic: &str, from: usize, n: usize) {
    for i in from..from + n {
        let acks = log.produce(topic, vec![ProduceRecord::keyed(format!("k{i}"), format!("value-{i}"))]).await.unwrap();
        acks[0].as_ref().unwrap();
    }
}

#[tokio::test]
async fn torn_tail_is_truncated_to_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), cfg()).await.unwrap();
        log.create_topic("t", None).await.unwrap();
        produce_n(&log, "t", 0, 10).await;
    }
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last batch in half (each batch holds one record here).
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    let recs = read_all(&log, "t", 0).await;
    assert_eq!(recs.len(), 9);
    assert_eq!(value_str(&recs[8]), "value-8");
    // Writing continues at the next offset, with no gap.
    let acks = log.produce("t", vec![ProduceRecord::value("after")]).await.unwrap();
    assert_eq!(acks[0].as_ref().unwrap().offset, Offset(9));
    let recs = read_all(&log, "t", 0).await;
    assert_eq!(recs.iter().map(|r| r.offset.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn corrupt_tail_is_detected_by_crc() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), cfg()).await.unwrap();
        log.create_topic("t", None).await.unwrap();
        produce_n(&log, "t", 0, 10).await;
    }
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff; // inside the value of the last record
    // Plus garbage after it, as a torn write of a next batch would leave.
    bytes.extend_from_slice(&[0xab; 30]);
    std::fs::write(&seg, &bytes).unwrap();
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    let recs = read_all(&log, "t", 0).await;
    assert_eq!(recs.len(), 9);
    let stats = log.partition_stats("t").unwrap();
    assert_eq!(stats[0].log_end_offset, Offset(9));
}

#[tokio::test]
async fn corrupt_closed_segment_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let tc = TopicConfig { segment_bytes: 4096, ..TopicConfig::default() };
    {
        let log = Log::open(dir.path(), cfg()).await.unwrap();
        log.create_topic("t", Some(tc)).await.unwrap();
        produce_n(&log, "t", 0, 300).await;
        assert!(log.partition_stats("t").unwrap()[0].segments > 3);
    }
    let pdir = dir.path().join("topics/t/0");
    let idx: Vec<PathBuf> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    assert!(!idx.is_empty());
    std::fs::write(&idx[0], b"garbage").unwrap();
    std::fs::remove_file(&idx[1]).unwrap();
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    let recs = read_all(&log, "t", 0).await;
    assert_eq!(recs.len(), 300);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(value_str(r), format!("value-{i}"));
    }
}

/// Crash model: concurrent producers with fsync `always`; the crash keeps
/// only durable bytes plus a torn prefix of the rest (with garbage); every
/// acknowledged record must be there after recovery, in order, with
/// unique offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_crashes() {
    for seed in 0..8u64 {
        let s = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let tc = TopicConfig { segment_bytes: 8192, ..TopicConfig::default() }.with_partitions(2);
        let log = mem_log(&s, &clock, cfg()).await;
        log.create_topic("t", Some(tc)).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..60 {
                    let v = format!("w{w}-{i}");
                    let r = ProduceRecord::keyed(format!("w{w}"), v.clone());
                    let a = log.produce("t", vec![r]).await.unwrap().pop().unwrap().unwrap();
                    acked.push((a.partition, a.offset, v));
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        // Unacknowledged tail: written without waiting (never policy is not
        // used; simply more appends in flight when the crash hits).
        let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let crashed = s.crash(|_, unsynced| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let keep = if unsynced == 0 { 0 } else { (rng >> 33) as usize % (unsynced + 1) };
            (keep, vec![(rng >> 40) as u8; (rng as usize) % 7])
        });
        drop(log);
        let log = mem_log(&crashed, &clock, cfg()).await;
        for p in 0..2 {
            let recs = read_all(&log, "t", p).await;
            for w in recs.windows(2) {
                assert!(w[0].offset < w[1].offset);
            }
            for (ap, off, v) in acked.iter().filter(|a| a.0 == PartitionId(p)) {
                let r = recs.iter().find(|r| r.offset == *off).unwrap_or_else(|| panic!("seed {seed}: acked {ap}/{off} lost"));
                assert_eq!(&value_str(r), v);
            }
        }
    }
}

#[tokio::test]
async fn fsync_failure_poisons_and_never_acks() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(0));
    let log = mem_log(&s, &clock, cfg()).await;
    log.create_topic("t", Some(TopicConfig::default().with_partitions(2))).await.unwrap();
    log.produce("t", vec![ProduceRecord::value("ok").with_partition(0)]).await.unwrap()[0].as_ref().unwrap();
    s.fail_syncs_after(0);
    let res = log
        .produce("t", vec![ProduceRecord::value("lost").with_partition(0), ProduceRecord::value("lost").with_partition(1)])
        .await
        .unwrap();
    for r in &res {
        let e = r.as_ref().unwrap_err();
        assert!(matches!(e, LogError::Poisoned { .. }), "{e}");
        assert_eq!(e.fault(), Fault::Server);
    }
    assert!(log.partition_stats("t").unwrap()[0].poisoned.is_some());
    assert_eq!(log.health().partitions_poisoned, 2);
    // Consumers never saw the unacknowledged record.
    assert_eq!(read_all(&log, "t", 0).await.len(), 1);
    // Once the disk works again, the next write reopens the partition from
    // its durable state (without a restart): the unacknowledged record is
    // cut, its offset is given to the new one.
    s.fail_syncs_after(u64::MAX / 2);
    let again = log.produce("t", vec![ProduceRecord::value("x").with_partition(0)]).await.unwrap();
    assert_eq!(again[0].as_ref().unwrap().offset, Offset(1));
    assert!(log.partition_stats("t").unwrap()[0].poisoned.is_none());
    let vals: Vec<String> = read_all(&log, "t", 0).await.iter().map(value_str).collect();
    assert_eq!(vals, ["ok", "x"]);
    // Partition 1 recovers on its own next write.
    assert_eq!(log.health().partitions_poisoned, 1);
    log.produce("t", vec![ProduceRecord::value("z").with_partition(1)]).await.unwrap()[0].as_ref().unwrap();
    let h = log.health();
    assert!(h.writable && h.partitions_poisoned == 0 && h.recoveries_total == 2, "{h:?}");
    // And it all survives a crash.
    drop(log);
    let log = mem_log(&s.crash(|_, _| (0, Vec::new())), &clock, cfg()).await;
    let vals: Vec<String> = read_all(&log, "t", 0).await.iter().map(value_str).collect();
    assert_eq!(vals, ["ok", "x"]);
}
