//! Storage limits: a bounded number of open segment files whatever the
//! number of partitions, and topic creation that is all or nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use weft_log::*;

#[tokio::test]
async fn open_files_stay_bounded_across_many_partitions() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(0));
    let config = LogConfig { max_open_files: 8, ..cfg() };
    let log = mem_log(&s, &clock, config.clone()).await;
    let tc = TopicConfig { partitions: 64, segment_bytes: 4096, ..TopicConfig::default() };
    log.create_topic("wide", Some(tc)).await.unwrap();
    for round in 0..3 {
        for p in 0..64u32 {
            let v = format!("{p}-{round}-{}", "x".repeat(1500));
            log.produce("wide", vec![ProduceRecord::value(v).with_partition(p)]).await.unwrap()[0].as_ref().unwrap();
        }
    }
    let st = log.file_cache_stats();
    assert!(st.open <= 8, "{st:?}");
    assert!(st.evictions > 64, "{st:?}");
    drop(log);
    let log = mem_log(&s, &clock, config).await;
    for p in 0..64u32 {
        let recs = read_all(&log, "wide", p).await;
        let vals: Vec<String> = recs.iter().map(|r| value_str(r).split('-').take(2).collect::<Vec<_>>().join("-")).collect();
        assert_eq!(vals, (0..3).map(|r| format!("{p}-{r}")).collect::<Vec<_>>());
    }
    assert!(log.file_cache_stats().open <= 8);
}

/// A create that fails at any single storage operation (a transient
/// EMFILE or ENOSPC) leaves no trace: no topic, no directory, and the log
/// opens and creates it fine afterwards.
#[tokio::test]
async fn failed_create_leaves_nothing() {
    let mut n = 0;
    loop {
        let s = MemStorage::new();
        let clock = Arc::new(ManualClock::new(0));
        let log = mem_log(&s, &clock, cfg()).await;
        s.fail_one_op_after(n);
        let tc = TopicConfig { partitions: 8, ..TopicConfig::default() };
        let res = log.create_topic("wide", Some(tc.clone())).await;
        let ok = res.is_ok();
        if let Err(e) = res {
            assert_eq!(e.fault(), Fault::Server, "n={n}: {e}");
            assert!(!log.list_topics().iter().any(|t| t.as_str() == "wide"), "n={n}");
            let left: Vec<_> = s.files().into_iter().filter(|p| p.to_string_lossy().contains("wide")).collect();
            assert!(left.is_empty(), "n={n}: a failed create left {left:?}");
            drop(log);
            let log = mem_log(&s, &clock, cfg()).await;
            assert!(!log.list_topics().iter().any(|t| t.as_str() == "wide"), "n={n}: reappeared after restart");
            log.create_topic("wide", Some(tc)).await.unwrap();
            log.produce("wide", vec![ProduceRecord::value("x").with_partition(7)]).await.unwrap()[0].as_ref().unwrap();
        }
        if ok {
            break;
        }
        n += 1;
        assert!(n < 500, "sweep did not terminate");
    }
    assert!(n > 20, "the sweep covered {n} failure points");
}
