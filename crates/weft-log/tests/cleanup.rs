//! Retention (delete whole old segments by time and size) and compaction
//! (newest record per key, tombstones expire).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use weft_log::*;

const HOUR: i64 = 3600 * 1000;

#[tokio::test]
async fn retention_by_time_deletes_whole_old_segments() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(100 * HOUR));
    let log = mem_log(&s, &clock, cfg()).await;
    let tc = TopicConfig { segment_bytes: 4096, retention_ms: Some(HOUR as u64), ..TopicConfig::default() };
    log.create_topic("t", Some(tc)).await.unwrap();
    // Old data: timestamps two hours ago.
    for i in 0..100 {
        log.produce("t", vec![ProduceRecord::value(vec![b'o'; 100]).with_timestamp(98 * HOUR + i)]).await.unwrap();
    }
    // Fresh data.
    for _ in 0..100 {
        log.produce("t", vec![ProduceRecord::value(vec![b'n'; 100])]).await.unwrap();
    }
    let before = log.partition_stats("t").unwrap()[0].clone();
    let rep = log.run_maintenance(clock.now_ms()).unwrap();
    assert!(rep.segments_deleted > 0);
    let after = log.partition_stats("t").unwrap()[0].clone();
    assert!(after.segments < before.segments);
    assert!(after.log_start_offset > Offset(0) && after.log_start_offset <= Offset(100));
    // Nothing fresh is deleted; the earliest readable record is old-or-fresh, offsets intact.
    let recs = read_all(&log, "t", 0).await;
    assert_eq!(recs.last().unwrap().offset, Offset(199));
    assert!(recs.iter().filter(|r| r.value.as_ref().unwrap()[0] == b'n').count() == 100);
    // Reading below the new start is out of range, with the valid range.
    match log.fetch("t", PartitionId(0), Offset(0), 100, 10, None).await {
        Err(LogError::OffsetOutOfRange { earliest, .. }) => assert_eq!(earliest, after.log_start_offset),
        other => panic!("{other:?}"),
    }
    // Survives a reopen.
    drop(log);
    let log = mem_log(&s, &clock, cfg()).await;
    assert_eq!(log.list_offset("t", PartitionId(0), OffsetSpec::Earliest).unwrap(), after.log_start_offset);
}

#[tokio::test]
async fn retention_by_size() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(0));
    let log = mem_log(&s, &clock, cfg()).await;
    let tc = TopicConfig { segment_bytes: 4096, retention_ms: None, retention_bytes: Some(10_000), ..TopicConfig::default() };
    log.create_topic("t", Some(tc)).await.unwrap();
    for _ in 0..300 {
        log.produce("t", vec![ProduceRecord::value(vec![1u8; 100])]).await.unwrap();
    }
    log.run_maintenance(0).unwrap();
    let st = log.partition_stats("t").unwrap()[0].clone();
    assert!(st.size_bytes <= 10_000 + 4096, "{st:?}");
    assert!(st.size_bytes > 5_000, "{st:?}");
    assert_eq!(st.log_end_offset, Offset(300));
}

#[tokio::test]
async fn roll_by_age_then_retention() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(0));
    let log = mem_log(&s, &clock, cfg()).await;
    let tc = TopicConfig { segment_ms: 1000, retention_ms: Some(5000), ..TopicConfig::default() };
    log.create_topic("t", Some(tc)).await.unwrap();
    log.produce("t", vec![ProduceRecord::value("a")]).await.unwrap();
    clock.set(2000);
    log.produce("t", vec![ProduceRecord::value("b")]).await.unwrap(); // rolls first
    assert_eq!(log.partition_stats("t").unwrap()[0].segments, 2);
    clock.set(10_000);
    let rep = log.run_maintenance(10_000).unwrap(); // rolls the aged active segment, deletes both old
    assert_eq!(rep.segments_rolled, 1);
    assert_eq!(rep.segments_deleted, 2);
    let st = &log.partition_stats("t").unwrap()[0];
    assert_eq!((st.log_start_offset, st.log_end_offset, st.segments), (Offset(2), Offset(2), 1));
}

#[tokio::test]
async fn compaction_keeps_newest_per_key_and_expires_tombstones() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(10 * HOUR));
    let log = mem_log(&s, &clock, cfg()).await;
    let tc = TopicConfig {
        segment_bytes: 4096,
        cleanup: CleanupPolicy::Compact,
        delete_retention_ms: HOUR as u64,
        ..TopicConfig::default()
    };
    log.create_topic("kv", Some(tc)).await.unwrap();
    for round in 0..20 {
        for k in 0..10 {
            log.produce("kv", vec![ProduceRecord::keyed(format!("k{k}"), format!("{k}@{round}"))]).await.unwrap();
        }
    }
    // Delete k3 (tombstone), then push everything into closed segments.
    log.produce("kv", vec![ProduceRecord { key: Some("k3".into()), value: None, ..Default::default() }]).await.unwrap();
    for i in 0..60 {
        log.produce("kv", vec![ProduceRecord::keyed("filler", vec![b'f'; 100]).with_header("i", format!("{i}"))]).await.unwrap();
    }
    let before = read_all(&log, "kv", 0).await.len();
    let rep = log.run_maintenance(clock.now_ms()).unwrap();
    assert!(rep.records_compacted > 150, "{rep:?}");
    let recs = read_all(&log, "kv", 0).await;
    assert!(recs.len() < before);
    for w in recs.windows(2) {
        assert!(w[0].offset < w[1].offset, "offsets stay ordered");
    }
    let latest = |k: &str| recs.iter().rev().find(|r| r.key.as_deref() == Some(k.as_bytes())).cloned();
    for k in 0..10 {
        let key = format!("k{k}");
        let n = recs.iter().filter(|r| r.key.as_deref() == Some(key.as_bytes())).count();
        assert_eq!(n, 1, "{key}");
        if k != 3 {
            assert_eq!(value_str(&latest(&key).unwrap()), format!("{k}@19"));
        }
    }
    // The tombstone is still there (younger than delete_retention_ms) ...
    assert_eq!(latest("k3").unwrap().value, None);
    // ... and gone once it is older.
    clock.advance(2 * HOUR);
    log.run_maintenance(clock.now_ms()).unwrap();
    let recs = read_all(&log, "kv", 0).await;
    assert!(recs.iter().all(|r| r.key.as_deref() != Some(&b"k3"[..])));
    // Compacted data survives a reopen (indexes rebuilt or reloaded).
    let n = recs.len();
    drop(log);
    let log = mem_log(&s, &clock, cfg()).await;
    assert_eq!(read_all(&log, "kv", 0).await.len(), n);
    let acks = log.produce("kv", vec![ProduceRecord::keyed("k1", "new")]).await.unwrap();
    assert!(acks[0].as_ref().unwrap().offset.0 > 200);
}

/// A topic's limits can change after creation: a retention set later
/// applies at the next maintenance pass, a larger record limit at the next
/// append, extra partitions appear empty, and all of it survives a reopen.
#[tokio::test]
async fn alter_topic_changes_limits_and_adds_partitions() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(100 * HOUR));
    let log = mem_log(&s, &clock, cfg()).await;
    let tc = TopicConfig { segment_bytes: 4096, retention_ms: None, max_record_bytes: 150, ..TopicConfig::default() };
    log.create_topic("t", Some(tc)).await.unwrap();
    for i in 0..100 {
        log.produce("t", vec![ProduceRecord::value(vec![b'o'; 100]).with_timestamp(98 * HOUR + i)]).await.unwrap();
    }
    assert_eq!(log.run_maintenance(clock.now_ms()).unwrap().segments_deleted, 0, "keep forever");
    let big = || vec![ProduceRecord::value(vec![b'b'; 200])];
    assert!(matches!(log.produce("t", big()).await, Err(LogError::RecordTooLarge { .. })));

    let d = log
        .alter_topic("t", &TopicAlter { retention_ms: Some(Some(HOUR as u64)), max_record_bytes: Some(1000), partitions: Some(3), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((d.config.retention_ms, d.config.max_record_bytes, d.partitions.len()), (Some(HOUR as u64), 1000, 3));
    log.produce("t", big()).await.unwrap();
    let ack = log.produce("t", vec![ProduceRecord::value("new").with_partition(2)]).await.unwrap();
    assert_eq!(ack[0].as_ref().unwrap().offset, Offset(0), "new partitions start empty");
    assert!(log.run_maintenance(clock.now_ms()).unwrap().segments_deleted > 0, "the new retention applies");

    // Refused: fewer partitions, a bad limit, internal topics; nothing changes.
    let e = log.alter_topic("t", &TopicAlter { partitions: Some(2), ..Default::default() }).await.unwrap_err();
    assert!(matches!(e, LogError::InvalidConfig(_)), "{e}");
    let e = log.alter_topic("t", &TopicAlter { segment_bytes: Some(1), ..Default::default() }).await.unwrap_err();
    assert!(matches!(e, LogError::InvalidConfig(_)), "{e}");
    let internal = log.list_topics().into_iter().find(|t| t.is_internal());
    if let Some(t) = internal {
        let e = log.alter_topic(t.as_str(), &TopicAlter { retention_ms: Some(None), ..Default::default() }).await.unwrap_err();
        assert!(matches!(e, LogError::InternalTopic(_)), "{e}");
    }
    assert!(matches!(log.alter_topic("nope", &TopicAlter::default()).await, Err(LogError::UnknownTopic(_))));

    drop(log);
    let log = mem_log(&s, &clock, cfg()).await;
    let d = log.describe_topic("t").unwrap();
    assert_eq!((d.config.retention_ms, d.config.max_record_bytes, d.partitions.len()), (Some(HOUR as u64), 1000, 3));
    assert_eq!(read_all(&log, "t", 2).await.len(), 1);
    log.produce("t", big()).await.unwrap();
}
