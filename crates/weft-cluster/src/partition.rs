//! Replicated partitions: a partition raft group's state machine assigns
//! each committed record its offset (the count of records applied before
//! it), and an applier task writes it into the node's weft-log partition.
//!
//! Offsets and timestamps come from the raft entry, so every replica holds
//! the same record at the same offset. The applier appends only when the
//! log's end offset equals the assigned offset and skips records already
//! there, so replaying the raft log after a restart writes nothing twice.
//! The high watermark is the applier's end offset: committed and applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use weft_log::{Log, OffsetSpec, PartitionId, ProduceRecord, TopicConfig};

use crate::error::{ClusterError, Result};
use crate::host::StateMachine;

/// One record as carried in a raft entry: `ts i64 BE | key length u32 BE
/// (u32::MAX: none) | key | value`.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRecord {
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl EntryRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.key.as_ref().map_or(0, Vec::len) + self.value.len());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        match &self.key {
            Some(k) => {
                out.extend_from_slice(&(k.len() as u32).to_be_bytes());
                out.extend_from_slice(k);
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
        out.extend_from_slice(&self.value);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let bad = || ClusterError::StateMachine("bad record entry".into());
        let ts = i64::from_be_bytes(b.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let kl = u32::from_be_bytes(b.get(8..12).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let (key, rest) = if kl == u32::MAX {
            (None, b.get(12..).ok_or_else(bad)?)
        } else {
            let end = 12usize.checked_add(kl as usize).ok_or_else(bad)?;
            (Some(b.get(12..end).ok_or_else(bad)?.to_vec()), b.get(end..).ok_or_else(bad)?)
        };
        Ok(EntryRecord { timestamp_ms: ts, key, value: rest.to_vec() })
    }
}

/// Shared view of one hosted partition.
#[derive(Debug)]
pub struct PartitionHandle {
    pub topic: String,
    pub partition: u32,
    /// Next offset readable by consumers on this replica.
    pub high_watermark: AtomicU64,
    /// Set when the applier stopped (a gap or a storage error): reads and writes fail.
    pub failed: std::sync::Mutex<Option<String>>,
}

/// The partition group's state machine.
pub struct PartitionSm {
    next_offset: u64,
    tx: mpsc::UnboundedSender<(u64, Vec<u8>)>,
}

impl StateMachine for PartitionSm {
    fn apply(&mut self, _index: u64, data: &[u8]) -> Vec<u8> {
        let offset = self.next_offset;
        self.next_offset += 1;
        // Unbounded on purpose: the driver must not block; raft bounds what one
        // Ready commits, and the applier drains at disk speed.
        let _ = self.tx.send((offset, data.to_vec()));
        offset.to_be_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.next_offset.to_be_bytes().to_vec()
    }
    fn restore(&mut self, data: &[u8]) -> Result<()> {
        let b: [u8; 8] = data.try_into().map_err(|_| ClusterError::StateMachine("partition snapshot".into()))?;
        self.next_offset = u64::from_be_bytes(b);
        Ok(())
    }
}

/// Build the state machine and start its applier into `log`.
pub fn start(log: Log, topic: String, partition: u32, partitions: u32) -> (PartitionSm, Arc<PartitionHandle>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = Arc::new(PartitionHandle { topic, partition, high_watermark: AtomicU64::new(0), failed: Default::default() });
    let h = handle.clone();
    tokio::spawn(async move {
        if let Err(e) = applier(log, h.clone(), partitions, rx).await {
            tracing::error!(topic = %h.topic, partition = h.partition, error = %e, "cluster: partition applier stopped");
            *h.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
    });
    (PartitionSm { next_offset: 0, tx }, handle)
}

async fn applier(log: Log, h: Arc<PartitionHandle>, partitions: u32, mut rx: mpsc::UnboundedReceiver<(u64, Vec<u8>)>) -> Result<()> {
    let se = |e: weft_log::LogError| ClusterError::StateMachine(e.to_string());
    if log.describe_topic(&h.topic).is_err() {
        let cfg = TopicConfig { partitions, ..TopicConfig::default() };
        // Another partition's applier may create it first.
        if let Err(e) = log.create_topic(&h.topic, Some(cfg)).await {
            if log.describe_topic(&h.topic).is_err() {
                return Err(se(e));
            }
        }
    }
    let p = PartitionId(h.partition);
    let end = log.list_offset(&h.topic, p, OffsetSpec::Latest).map_err(se)?.0;
    h.high_watermark.store(end, Ordering::Release);
    while let Some((offset, data)) = rx.recv().await {
        let end = log.list_offset(&h.topic, p, OffsetSpec::Latest).map_err(se)?.0;
        if offset < end {
            continue; // written before a restart: replay must not append twice
        }
        if offset > end {
            return Err(ClusterError::StateMachine(format!("gap: record at offset {offset}, log ends at {end}")));
        }
        let r = EntryRecord::decode(&data)?;
        let rec = ProduceRecord {
            partition: Some(p),
            timestamp_ms: Some(r.timestamp_ms),
            key: r.key.map(Bytes::from),
            value: Some(Bytes::from(r.value)),
            headers: Vec::new(),
        };
        let acks = log.produce(&h.topic, vec![rec]).await.map_err(se)?;
        match acks.into_iter().next() {
            Some(Ok(a)) if a.offset.0 == offset => {}
            Some(Ok(a)) => return Err(ClusterError::StateMachine(format!("log gave offset {} for {offset}", a.offset.0))),
            Some(Err(e)) => return Err(se(e)),
            None => return Err(ClusterError::StateMachine("no ack".into())),
        }
        h.high_watermark.store(offset + 1, Ordering::Release);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_record_round_trip_and_garbage() {
        for r in [
            EntryRecord { timestamp_ms: -5, key: None, value: b"v".to_vec() },
            EntryRecord { timestamp_ms: 7, key: Some(b"k".to_vec()), value: Vec::new() },
        ] {
            assert_eq!(EntryRecord::decode(&r.encode()).unwrap(), r);
        }
        assert!(EntryRecord::decode(b"short").is_err());
        let mut b = 0i64.to_be_bytes().to_vec();
        b.extend_from_slice(&1000u32.to_be_bytes());
        assert!(EntryRecord::decode(&b).is_err());
    }
}
