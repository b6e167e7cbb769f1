//! A replica's copy of a partition (weft-cluster): the [`Partition`] calls
//! of `partition/replica.rs` by topic name, and an fsync of one partition.

use crate::error::{LogError, Result};
use crate::model::{Offset, PartitionId, ProduceRecord};
use crate::partition::Partition;

use super::Log;

impl Log {
    fn replica_partition(&self, topic: &str, partition: PartitionId) -> Result<std::sync::Arc<Partition>> {
        self.check_open()?;
        let p = self.partition(topic, partition)?;
        if p.topic.is_internal() {
            return Err(LogError::InternalTopic(topic.to_string()));
        }
        Ok(p)
    }

    /// Appends records at offsets another log assigned (a replica catching
    /// up): increasing, the first at or after the end, gaps allowed (a
    /// compacted source). Records are not checked against the topic's
    /// limits: they were accepted where they were first written. Returns
    /// the new end once the fsync policy is met.
    pub async fn append_at(&self, topic: &str, partition: PartitionId, records: &[(Offset, ProduceRecord)]) -> Result<Offset> {
        let p = self.replica_partition(topic, partition)?;
        p.append_at(records, self.now_ms()).await
    }

    /// Moves the partition's end forward to `offset` over a gap (no
    /// records): the next record appended gets `offset`.
    pub fn skip_to(&self, topic: &str, partition: PartitionId, offset: Offset) -> Result<()> {
        self.replica_partition(topic, partition)?.skip_to(offset)
    }

    /// Drops every record of the partition; it starts empty at `offset`
    /// (log start and end).
    pub fn reset_to(&self, topic: &str, partition: PartitionId, offset: Offset) -> Result<()> {
        self.replica_partition(topic, partition)?.reset_to(offset)
    }

    /// Fsyncs one partition now, whatever the fsync policy (a replicated
    /// partition's copy must be durable before its raft log is compacted).
    pub async fn flush_partition(&self, topic: &str, partition: PartitionId) -> Result<()> {
        self.replica_partition(topic, partition)?.flush().await
    }
}
