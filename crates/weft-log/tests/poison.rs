//! A partition poisoned by a failed write or fsync takes writes again once
//! the storage works, without a restart, and never acknowledges or keeps
//! what was not durable; the consumer-offsets store recovers the same way.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use weft_log::*;

fn retry_now() -> LogConfig {
    LogConfig { poison_retry_ms: 0, ..cfg() }
}

/// One storage operation fails (a transient error) at each point in turn
/// while producing and committing: the failing call gets an error, every
/// later call succeeds without a restart, and every acknowledged record
/// and commit is there, in the running log and after a crash.
#[tokio::test]
async fn one_failed_operation_then_writes_recover() {
    let mut n = 0;
    loop {
        let s = MemStorage::new();
        let clock = Arc::new(ManualClock::new(0));
        let log = mem_log(&s, &clock, retry_now()).await;
        log.create_topic("t", Some(TopicConfig { segment_bytes: 4096, ..TopicConfig::default() })).await.unwrap();
        s.fail_one_op_after(n);
        let mut acked = Vec::new();
        let mut failures = 0;
        let mut commit = None;
        for i in 0..40 {
            let v = format!("{i}-{}", "y".repeat(150));
            match log.produce("t", vec![ProduceRecord::value(v.clone())]).await.unwrap().pop().unwrap() {
                Ok(a) => acked.push((a.offset, v)),
                Err(e) => {
                    assert!(matches!(e, LogError::Poisoned { .. }), "n={n}: {e}");
                    failures += 1;
                }
            }
            let c = OffsetCommit { topic: "t".into(), partition: PartitionId(0), offset: Offset(acked.len() as u64), metadata: String::new() };
            match log.commit_offsets("g", None, vec![c]).await {
                Ok(()) => commit = Some(Offset(acked.len() as u64)),
                Err(e) => {
                    assert_eq!(e.fault(), Fault::Server, "n={n}: {e}");
                    failures += 1;
                }
            }
        }
        assert!(failures <= 1, "n={n}: {failures} calls failed after one failed storage operation");
        assert!(log.health().writable, "n={n}: {:?}", log.health());
        for l in [log.clone(), mem_log(&s.crash(|_, _| (0, Vec::new())), &clock, retry_now()).await] {
            let recs = read_all(&l, "t", 0).await;
            let got: Vec<(Offset, String)> = recs.iter().map(|r| (r.offset, value_str(r))).collect();
            assert_eq!(got, acked, "n={n}: exactly the acknowledged records, at their offsets");
            assert_eq!(l.committed_offset("g", "t", PartitionId(0)).map(|c| c.offset), commit, "n={n}");
        }
        if failures == 0 {
            break;
        }
        n += 1;
        assert!(n < 2000, "sweep did not terminate");
    }
    assert!(n > 20, "the sweep covered {n} failure points");
}

/// Recovery is tried at most once per `poison_retry_ms`.
#[tokio::test]
async fn recovery_is_rate_limited() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(0));
    let log = mem_log(&s, &clock, LogConfig { poison_retry_ms: 3_600_000, ..cfg() }).await;
    log.create_topic("t", None).await.unwrap();
    log.produce("t", vec![ProduceRecord::value("a")]).await.unwrap()[0].as_ref().unwrap();
    s.fail_ops_after(0);
    // Poisons; then the first retry runs at once (and fails: still broken).
    for _ in 0..2 {
        let e = log.produce("t", vec![ProduceRecord::value("b")]).await.unwrap().pop().unwrap().unwrap_err();
        assert!(matches!(e, LogError::Poisoned { .. }), "{e}");
    }
    s.fail_ops_after(u64::MAX);
    // Fixed, but the next try is an hour away.
    let e = log.produce("t", vec![ProduceRecord::value("c")]).await.unwrap().pop().unwrap().unwrap_err();
    assert!(matches!(e, LogError::Poisoned { .. }), "{e}");
    assert_eq!(log.health().recoveries_total, 0);
}

/// A roll that fails after creating the new segment file (its truncation
/// or the directory fsync fails) leaves that file behind; the recovery
/// removes it, so records appended to the old active segment afterwards
/// do not overlap it and the log reopens fine.
#[tokio::test]
async fn failed_roll_leaves_no_overlapping_segment() {
    for n in 0..12 {
        let s = MemStorage::new();
        let clock = Arc::new(ManualClock::new(0));
        let log = mem_log(&s, &clock, retry_now()).await;
        log.create_topic("t", Some(TopicConfig { segment_bytes: 4096, ..TopicConfig::default() })).await.unwrap();
        let mut acked = Vec::new();
        let big = "b".repeat(3000);
        acked.push(log.produce("t", vec![ProduceRecord::value(big.clone())]).await.unwrap()[0].as_ref().unwrap().offset);
        s.fail_one_op_after(n);
        // Does not fit: rolls (and the roll may fail at op n).
        if let Ok(a) = &log.produce("t", vec![ProduceRecord::value(big.clone())]).await.unwrap()[0] {
            acked.push(a.offset);
        }
        // Small ones fit in the old active segment if the roll failed.
        for _ in 0..3 {
            acked.push(log.produce("t", vec![ProduceRecord::value("small")]).await.unwrap()[0].as_ref().unwrap().offset);
        }
        drop(log);
        let log = Log::open_with("/data", retry_now(), Arc::new(s.crash(|_, _| (0, Vec::new()))), clock.clone())
            .await
            .unwrap_or_else(|e| panic!("n={n}: reopen failed: {e}"));
        let got: Vec<Offset> = read_all(&log, "t", 0).await.iter().map(|r| r.offset).collect();
        assert_eq!(got, acked, "n={n}");
    }
}
