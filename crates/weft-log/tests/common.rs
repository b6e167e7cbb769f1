//! Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use weft_log::*;

pub fn cfg() -> LogConfig {
    LogConfig { maintenance_interval: None, ..LogConfig::default() }
}

pub async fn mem_log(s: &MemStorage, clock: &Arc<ManualClock>, config: LogConfig) -> Log {
    Log::open_with("/data", config, Arc::new(s.clone()), clock.clone()).await.unwrap()
}

/// Every record of a partition, from the earliest offset to the latest.
pub async fn read_all(log: &Log, topic: &str, p: u32) -> Vec<Record> {
    let mut out = Vec::new();
    let mut off = log.list_offset(topic, PartitionId(p), OffsetSpec::Earliest).unwrap();
    let end = log.list_offset(topic, PartitionId(p), OffsetSpec::Latest).unwrap();
    while off < end {
        let f = log.fetch(topic, PartitionId(p), off, 1 << 20, usize::MAX, None).await.unwrap();
        let recs = f.decode().unwrap();
        if recs.is_empty() {
            break;
        }
        off = recs.last().unwrap().offset.next();
        out.extend(recs);
    }
    out
}

pub fn value_str(r: &Record) -> String {
    String::from_utf8(r.value.clone().unwrap_or_default().to_vec()).unwrap()
}
