//! Topics, produce, fetch, list offsets and typed errors, on the real file system.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use weft_log::*;

#[tokio::test]
async fn topic_lifecycle_and_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    let d = log.create_topic("orders", Some(TopicConfig::default().with_partitions(3))).await.unwrap();
    assert_eq!(d.partitions.len(), 3);
    assert!(matches!(log.create_topic("orders", None).await, Err(LogError::TopicExists(_))));
    assert!(matches!(log.create_topic("bad name", None).await, Err(LogError::InvalidTopicName { .. })));
    assert!(matches!(log.create_topic("__x", None).await, Err(LogError::InvalidTopicName { .. })));
    assert!(matches!(
        log.create_topic("t0", Some(TopicConfig::default().with_partitions(0))).await,
        Err(LogError::InvalidConfig(_))
    ));
    let names: Vec<String> = log.list_topics().iter().map(|t| t.to_string()).collect();
    assert_eq!(names, vec!["__consumer_offsets", "orders"]);
    assert!(matches!(log.delete_topic(OFFSETS_TOPIC).await, Err(LogError::InternalTopic(_))));
    assert!(matches!(log.produce(OFFSETS_TOPIC, vec![ProduceRecord::value("x")]).await, Err(LogError::InternalTopic(_))));

    let acks = log
        .produce("orders", vec![ProduceRecord::value("a").with_partition(2), ProduceRecord::keyed("k", "b")])
        .await
        .unwrap();
    let a0 = acks[0].as_ref().unwrap();
    assert_eq!((a0.partition, a0.offset), (PartitionId(2), Offset(0)));
    let a1 = acks[1].as_ref().unwrap();
    assert_eq!(a1.partition.0, key_partition(b"k", 3));
    log.close().await.unwrap();
    assert!(matches!(log.produce("orders", vec![ProduceRecord::value("x")]).await, Err(LogError::Closed)));
    drop(log);

    let log = Log::open(dir.path(), cfg()).await.unwrap();
    let d = log.describe_topic("orders").unwrap();
    assert_eq!(d.partitions.len(), 3);
    let expect = 1 + u64::from(key_partition(b"k", 3) == 2);
    assert_eq!(d.partitions[2].log_end_offset, Offset(expect));
    let recs = read_all(&log, "orders", 2).await;
    assert_eq!(value_str(&recs[0]), "a");
    log.delete_topic("orders").await.unwrap();
    assert!(matches!(log.describe_topic("orders"), Err(LogError::UnknownTopic(_))));
    drop(log);
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    assert_eq!(log.list_topics().len(), 1);
    // A deleted topic can be created again, empty.
    log.create_topic("orders", None).await.unwrap();
    assert_eq!(log.list_offset("orders", PartitionId(0), OffsetSpec::Latest).unwrap(), Offset(0));
}

#[tokio::test]
async fn produce_fetch_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    let tc = TopicConfig { max_record_bytes: 100, ..TopicConfig::default() };
    log.create_topic("t", Some(tc)).await.unwrap();
    let recs: Vec<ProduceRecord> = (0..50)
        .map(|i| ProduceRecord::keyed(format!("k{i}"), format!("v{i}")).with_timestamp(1000 + i).with_header("h", "x"))
        .collect();
    let acks = log.produce("t", recs).await.unwrap();
    assert_eq!(acks.len(), 50);
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a.as_ref().unwrap().offset, Offset(i as u64));
    }
    // A record over the limit rejects the whole request and writes nothing.
    let e = log.produce("t", vec![ProduceRecord::value("ok"), ProduceRecord::value(vec![0u8; 101])]).await.unwrap_err();
    assert!(matches!(e, LogError::RecordTooLarge { size: 101, max: 100 }), "{e}");
    assert_eq!(e.fault(), Fault::Client);
    assert_eq!(log.list_offset("t", PartitionId(0), OffsetSpec::Latest).unwrap(), Offset(50));
    assert!(matches!(log.produce("nope", vec![]).await, Err(LogError::UnknownTopic(_))));
    assert!(matches!(
        log.produce("t", vec![ProduceRecord::value("x").with_partition(1)]).await,
        Err(LogError::UnknownPartition { partitions: 1, .. })
    ));
    assert!(matches!(
        log.fetch("t", PartitionId(7), Offset(0), 100, 10, None).await,
        Err(LogError::UnknownPartition { .. })
    ));
    match log.fetch("t", PartitionId(0), Offset(51), 100, 10, None).await {
        Err(LogError::OffsetOutOfRange { earliest, latest, requested, .. }) => {
            assert_eq!((earliest, latest, requested), (Offset(0), Offset(50), Offset(51)));
        }
        other => panic!("{other:?}"),
    }
    // Fetch from the middle, limited in records.
    let f = log.fetch("t", PartitionId(0), Offset(10), 1 << 20, 5, None).await.unwrap();
    let got = f.decode().unwrap();
    assert_eq!(got.iter().map(|r| r.offset.0).collect::<Vec<_>>(), vec![10, 11, 12, 13, 14]);
    assert_eq!(got[0].headers[0].0, "h");
    assert_eq!(got[0].key.as_deref(), Some(&b"k10"[..]));
    assert_eq!(got[0].timestamp_ms, 1010);
    // Fetch at the end without waiting: empty.
    let f = log.fetch("t", PartitionId(0), Offset(50), 100, 10, None).await.unwrap();
    assert!(f.batches.is_empty());
    assert_eq!(f.high_watermark, Offset(50));
    // List offsets.
    assert_eq!(log.list_offset("t", PartitionId(0), OffsetSpec::Earliest).unwrap(), Offset(0));
    assert_eq!(log.list_offset("t", PartitionId(0), OffsetSpec::Timestamp(1020)).unwrap(), Offset(20));
    assert_eq!(log.list_offset("t", PartitionId(0), OffsetSpec::Timestamp(0)).unwrap(), Offset(0));
    assert_eq!(log.list_offset("t", PartitionId(0), OffsetSpec::Timestamp(99_999)).unwrap(), Offset(50));
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn round_robin_spreads_keyless_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    log.create_topic("rr", Some(TopicConfig::default().with_partitions(4))).await.unwrap();
    let acks = log.produce("rr", (0..8).map(|i| ProduceRecord::value(format!("{i}"))).collect()).await.unwrap();
    let mut per = [0; 4];
    for a in acks {
        per[a.unwrap().partition.0 as usize] += 1;
    }
    assert_eq!(per, [2, 2, 2, 2]);
}

#[tokio::test]
async fn client_encoded_batches_are_stored_as_is() {
    use weft_log::batch::BatchBuilder;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    log.create_topic("t", Some(TopicConfig { max_record_bytes: 50, ..TopicConfig::default() }.with_partitions(2)))
        .await
        .unwrap();
    log.produce("t", vec![ProduceRecord::value("first").with_partition(1)]).await.unwrap();
    let mut b = BatchBuilder::new(Offset(0));
    for i in 0..3u64 {
        b.push(Offset(i), 500 + i as i64, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]).unwrap();
    }
    let (_, bytes) = b.finish().unwrap();
    let ack = log.produce_batch("t", PartitionId(1), &bytes).await.unwrap();
    assert_eq!((ack.base_offset, ack.record_count), (Offset(1), 3));
    let f = log.fetch("t", PartitionId(1), Offset(1), 1 << 20, 100, None).await.unwrap();
    // The stored batch is the client's bytes except for the 8-byte base offset.
    assert_eq!(&f.batches[8..], &bytes[8..]);
    let recs = f.decode().unwrap();
    assert_eq!(recs.iter().map(|r| r.offset.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(recs[2].timestamp_ms, 502);
    // Bad batches are refused and nothing is written.
    let mut bad = bytes.to_vec();
    bad[50] ^= 1;
    assert!(matches!(log.produce_batch("t", PartitionId(1), &bad).await, Err(LogError::InvalidRequest(_))));
    let mut gap = BatchBuilder::new(Offset(0));
    gap.push(Offset(0), 0, None, Some(b"a"), &[]).unwrap();
    gap.push(Offset(2), 0, None, Some(b"b"), &[]).unwrap();
    let (_, gap) = gap.finish().unwrap();
    assert!(matches!(log.produce_batch("t", PartitionId(1), &gap).await, Err(LogError::InvalidRequest(_))));
    let mut big = BatchBuilder::new(Offset(0));
    big.push(Offset(0), 0, None, Some(&[0u8; 51]), &[]).unwrap();
    let (_, big) = big.finish().unwrap();
    assert!(matches!(log.produce_batch("t", PartitionId(1), &big).await, Err(LogError::RecordTooLarge { .. })));
    assert!(matches!(log.produce_batch("t", PartitionId(5), &bytes).await, Err(LogError::UnknownPartition { .. })));
    assert_eq!(log.list_offset("t", PartitionId(1), OffsetSpec::Latest).unwrap(), Offset(4));
}

/// Reads grow in chunks (64 KiB, doubling) until a limit is reached: the
/// result must be the same as one read of `max_bytes` would give, whole
/// batches only, for limits on either side of the chunk boundaries.
#[tokio::test]
async fn fetch_limits_across_read_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).await.unwrap();
    log.create_topic("c", None).await.unwrap();
    // one batch per produce call: 3000 batches of one 100-byte record
    for i in 0..3000u32 {
        let v = format!("{i:0>100}");
        log.produce("c", vec![ProduceRecord::value(v).with_partition(0)]).await.unwrap();
    }
    let f = log.fetch("c", PartitionId(0), Offset(0), 1 << 20, 1, None).await.unwrap();
    let batch_len = f.batches.len();
    assert!(batch_len > 100, "one record per batch");
    assert_eq!(f.batches_end().unwrap(), Some(Offset(1)));

    // limited by records, far past the first chunk
    let f = log.fetch("c", PartitionId(0), Offset(7), 8 << 20, 2500, None).await.unwrap();
    let got = f.decode().unwrap();
    assert_eq!(got.len(), 2500);
    assert!(got.iter().enumerate().all(|(i, r)| r.offset == Offset(7 + i as u64)));
    assert_eq!(value_str(&got[2499]), format!("{:0>100}", 2506));
    assert_eq!(f.batches_end().unwrap(), Some(Offset(2507)));

    // limited by bytes: as many whole batches as fit, whatever the chunking
    for max_bytes in [1, batch_len - 1, 65_536, 65_537, 3 * 65_536 + 11, 200_000] {
        let f = log.fetch("c", PartitionId(0), Offset(0), max_bytes, 100_000, None).await.unwrap();
        let want = (max_bytes / batch_len).max(1);
        assert_eq!(f.batches.len(), want * batch_len, "max_bytes {max_bytes}");
        assert_eq!(f.decode().unwrap().len(), want, "max_bytes {max_bytes}");
        assert_eq!(f.batches_end().unwrap(), Some(Offset(want as u64)));
    }

    // to the end of the log
    let f = log.fetch("c", PartitionId(0), Offset(2990), 8 << 20, 100_000, None).await.unwrap();
    assert_eq!(f.decode().unwrap().len(), 10);
    assert_eq!(f.batches_end().unwrap(), Some(Offset(3000)));
    let f = log.fetch("c", PartitionId(0), Offset(3000), 8 << 20, 100_000, None).await.unwrap();
    assert_eq!(f.batches_end().unwrap(), None);
}
