//! Fault injection sweeps on the crash model: every mutating storage
//! operation in turn fails, then the machine "crashes" (unsynced bytes torn
//! at random); the log must reopen and keep every acknowledged record, and
//! compaction must never lose the newest value of a key.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use weft_log::*;

fn tear(seed: u64) -> impl FnMut(&std::path::Path, usize) -> (usize, Vec<u8>) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move |_, unsynced| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let keep = if unsynced == 0 { 0 } else { (rng as usize) % (unsynced + 1) };
        (keep, vec![0x5a; (rng >> 32) as usize % 5])
    }
}

#[tokio::test]
async fn failing_operations_during_produce_and_roll() {
    let mut n = 0;
    loop {
        let s = MemStorage::new();
        let clock = Arc::new(ManualClock::new(0));
        let log = mem_log(&s, &clock, cfg()).await;
        let tc = TopicConfig { segment_bytes: 4096, ..TopicConfig::default() };
        log.create_topic("t", Some(tc.clone())).await.unwrap();
        s.fail_ops_after(n);
        let mut acked = Vec::new();
        let mut failed = false;
        for i in 0..80 {
            let v = format!("{i}-{}", "y".repeat(150));
            match log.produce("t", vec![ProduceRecord::value(v.clone())]).await.unwrap().pop().unwrap() {
                Ok(a) => acked.push((a.offset, v)),
                Err(e) => {
                    assert_eq!(e.fault(), Fault::Server, "{e}");
                    failed = true;
                }
            }
        }
        let crashed = s.crash(tear(n));
        drop(log);
        let log = mem_log(&crashed, &clock, cfg()).await;
        let recs = read_all(&log, "t", 0).await;
        for (o, v) in &acked {
            let r = recs.iter().find(|r| r.offset == *o).unwrap_or_else(|| panic!("n={n}: acked offset {o} lost"));
            assert_eq!(&value_str(r), v, "n={n}");
        }
        // Writing works again after recovery.
        log.produce("t", vec![ProduceRecord::value("again")]).await.unwrap()[0].as_ref().unwrap();
        if !failed {
            break;
        }
        n += 1;
        assert!(n < 2000, "sweep did not terminate");
    }
    assert!(n > 20, "the sweep covered {n} failure points");
}

#[tokio::test]
async fn failing_operations_during_compaction_lose_nothing() {
    let mut n = 0;
    loop {
        let s = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let log = mem_log(&s, &clock, cfg()).await;
        let tc = TopicConfig { segment_bytes: 4096, cleanup: CleanupPolicy::Compact, ..TopicConfig::default() };
        log.create_topic("kv", Some(tc)).await.unwrap();
        let mut newest: BTreeMap<String, String> = BTreeMap::new();
        for round in 0..6 {
            for k in 0..12 {
                let (key, val) = (format!("k{k}"), format!("{k}@{round}-{}", "z".repeat(60)));
                log.produce("kv", vec![ProduceRecord::keyed(key.clone(), val.clone())]).await.unwrap()[0].as_ref().unwrap();
                newest.insert(key, val);
            }
        }
        s.fail_ops_after(n);
        let rep = log.run_maintenance(clock.now_ms()).unwrap();
        let crashed = s.crash(tear(n));
        drop(log);
        let log = mem_log(&crashed, &clock, cfg()).await;
        let recs = read_all(&log, "kv", 0).await;
        for w in recs.windows(2) {
            assert!(w[0].offset < w[1].offset, "n={n}");
        }
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        for r in &recs {
            last.insert(String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap(), value_str(r));
        }
        assert_eq!(last, newest, "n={n}: newest value per key");
        if rep.errors == 0 {
            assert!(rep.records_compacted > 0);
            // A clean run afterwards compacts what the failed one left.
            break;
        }
        n += 1;
        assert!(n < 2000, "sweep did not terminate");
    }
    assert!(n > 5, "the sweep covered {n} failure points");
}

/// `interval:<ms>`: a power loss keeps every record acknowledged more than
/// one interval (plus slack) before it; `never` promises nothing for the
/// active segment but keeps closed segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_policy_bounds_the_loss_window() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(0));
    let log = mem_log(&s, &clock, LogConfig { fsync: FsyncPolicy::Interval { ms: 20 }, ..cfg() }).await;
    log.create_topic("t", None).await.unwrap();
    for i in 0..50 {
        log.produce("t", vec![ProduceRecord::value(format!("old{i}"))]).await.unwrap()[0].as_ref().unwrap();
    }
    // The flusher runs every 20 ms; poll (a loaded CI machine may delay it).
    let t0 = std::time::Instant::now();
    while log.partition_stats("t").unwrap()[0].synced_offset < Offset(50) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "interval flusher never ran");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for i in 0..50 {
        log.produce("t", vec![ProduceRecord::value(format!("new{i}"))]).await.unwrap()[0].as_ref().unwrap();
    }
    // Crash right away, dropping every unsynced byte.
    let crashed = s.crash(|_, _| (0, Vec::new()));
    drop(log);
    let log = mem_log(&crashed, &clock, cfg()).await;
    let recs = read_all(&log, "t", 0).await;
    assert!(recs.len() >= 50);
    for (i, r) in recs.iter().take(50).enumerate() {
        assert_eq!(value_str(r), format!("old{i}"), "acknowledged > 1 interval before the crash");
    }
}

#[tokio::test]
async fn never_policy_keeps_closed_segments() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(0));
    let log = mem_log(&s, &clock, LogConfig { fsync: FsyncPolicy::Never, ..cfg() }).await;
    log.create_topic("t", Some(TopicConfig { segment_bytes: 4096, ..TopicConfig::default() })).await.unwrap();
    for i in 0..100 {
        log.produce("t", vec![ProduceRecord::value(format!("{i}-{}", "p".repeat(100)))]).await.unwrap()[0].as_ref().unwrap();
    }
    let st = log.partition_stats("t").unwrap()[0].clone();
    assert!(st.segments > 2);
    let crashed = s.crash(|_, _| (0, Vec::new()));
    drop(log);
    let log = mem_log(&crashed, &clock, cfg()).await;
    let recs = read_all(&log, "t", 0).await;
    // Everything up to the start of the last (active) segment survived.
    assert!(recs.len() as u64 >= st.synced_offset.0, "{} < {}", recs.len(), st.synced_offset);
    assert!(st.synced_offset.0 > 50);
}
