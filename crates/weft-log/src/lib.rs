//! # weft-log: the streaming log of one node
//!
//! Storage and the log model only: no sockets, no HTTP. Services (the native
//! protocol, the HTTP gateway, the CLI) are built on this API elsewhere.
//! On-disk format and durability promises: `docs/storage.md`.
//!
//! ## Public API (all async calls need a tokio runtime)
//!
//! ```text
//! Log::open(dir, LogConfig) -> Result<Log>            // recovers torn tails, starts background tasks
//! Log::open_with(dir, config, Arc<dyn Storage>, Arc<dyn Clock>)   // tests: MemStorage, ManualClock
//! log.close().await                                   // flush + refuse further calls
//!
//! // topics
//! log.create_topic(name, Option<TopicConfig>).await -> TopicDescription
//! log.list_topics() -> Vec<TopicName>
//! log.describe_topic(name) -> TopicDescription        // config + per-partition PartitionStats
//! log.delete_topic(name).await
//!
//! // data
//! log.produce(topic, Vec<ProduceRecord>).await -> Result<Vec<Result<RecordAck>>>
//!      // outer Err: request rejected, nothing written; inner: per record (partition, offset, timestamp)
//!      // returns once the FsyncPolicy is met (Always: after fsync, with group commit)
//! log.produce_batch(topic, partition, &encoded_batch).await -> BatchAck   // client-encoded batch, stored as-is
//! log.fetch(topic, partition, offset, max_bytes, max_records, wait: Option<Duration>).await -> FetchResult
//!      // FetchResult.batches = whole batches exactly as stored (send them as-is);
//!      // FetchResult.records() decodes them (CRC checked, skips offsets < fetch_offset)
//! log.list_offset(topic, partition, OffsetSpec::{Earliest, Latest, Timestamp(ms)}) -> Offset
//! log.partition_stats(topic) -> Vec<PartitionStats>
//! log.health() -> LogHealth                           // writable? disk full? poisoned partitions, last storage error
//! log.gauges() -> Vec<(key, value)>                   // log.open_files, log.disk_full, ... for a stats registry
//!
//! // consumer groups (membership in memory, committed offsets in __consumer_offsets)
//! log.join_group(group, member_id: Option<&str>, client_id, topics, AssignmentStrategy, session_timeout_ms) -> MemberState
//! log.heartbeat(group, member_id) -> MemberState      // generation + assignment; UnknownMember => rejoin
//! log.heartbeat_ack(group, member_id, Some(generation)) // adopts a generation: hands off what it lost
//! log.start_offset(topic, partition, committed, ResetPolicy) -> StartOffset   // auto.offset.reset
//! log.reset_group_offsets(group, topic, partition?, ResetTarget, dry_run).await -> Vec<OffsetReset>
//! log.leave_group(group, member_id)
//! log.commit_offsets(group, Some((member_id, generation)) | None, Vec<OffsetCommit>).await
//! log.committed_offset(group, topic, partition) -> Option<CommittedOffset>
//! log.list_groups() -> Vec<GroupSummary>; log.describe_group(group) -> GroupDescription (with lag)
//! log.delete_group(group).await
//!
//! // maintenance (runs in the background every LogConfig::maintenance_interval)
//! log.run_maintenance(now_ms) -> MaintenanceReport    // roll by age, retention, compaction, member expiry
//! ```
//!
//! Errors: [`LogError`], one enum; [`LogError::fault`] says whether the
//! caller ([`Fault::Client`]), a transient state ([`Fault::Retry`]) or the
//! server ([`Fault::Server`]) is at fault; [`LogError::code`] gives a stable
//! snake_case code for typed error DTOs (`offset_out_of_range`, ...).
//!
//! Offline tooling (`weft log ...` subcommands that work on a data
//! directory without a server): [`cli::LogCmd`] and [`cli::run`].

pub mod batch;
pub mod cli;
pub mod config;
pub mod error;
pub mod files;
pub mod group;
pub mod log;
pub mod model;
pub mod partition;
pub mod segment;
pub mod storage;

pub use batch::{Batch, BatchHeader, BatchesDecoder};
pub use config::{FsyncPolicy, LogConfig};
pub use error::{Fault, LogError, Result};
pub use files::{FileCacheStats, OpenFiles};
pub use group::{AssignmentStrategy, GroupSnapshot, MemberDescription, MemberSnapshot, MemberState, OffsetReset, ResetPolicy, ResetTarget, StartOffset, validate_group_name};
pub use log::{
    BatchAck, Clock, CommittedOffset, GroupDescription, GroupSummary, Log, LogHealth, MaintenanceReport, ManualClock, OFFSETS_TOPIC,
    OffsetCommit, OffsetSpec, PartitionLag, RecordAck, SystemClock, TopicDescription,
};
pub use model::{
    CleanupPolicy, Offset, PartitionId, Partitioner, ProduceRecord, Record, TopicAlter, TopicConfig, TopicName, key_partition, murmur2,
};
pub use partition::{FetchResult, PartitionStats};
pub use storage::{FsStorage, MemStorage, Storage, StorageFile};
