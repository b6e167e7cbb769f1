//! The one error type of weft-log.
//!
//! Every variant says who is at fault: [`LogError::fault`] tells a service
//! whether to answer "your request is wrong" (4xx-like) or "we failed"
//! (5xx-like).

use std::path::PathBuf;
use std::sync::Arc;

use crate::model::{Offset, PartitionId};

/// Who caused an error, so the service layer can map it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller sent something invalid or asked for something that does not exist.
    Client,
    /// A temporary condition: retry later (rebalance in progress, log shutting down).
    Retry,
    /// The server (disk, corrupt data, poisoned partition) failed.
    Server,
}

/// Errors returned by weft-log.
///
/// `Clone` so that one storage failure can be reported to every producer that
/// shared the failed group commit (I/O errors are kept behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    UnknownPartition { topic: String, partition: PartitionId, partitions: u32 },
    #[error(
        "offset {requested} out of range for {topic}/{partition}: valid offsets are {earliest}..={latest} (latest = next offset to be written)"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: PartitionId,
        requested: Offset,
        /// First offset still stored.
        earliest: Offset,
        /// Next offset to be written (a fetch at this offset waits for new data).
        latest: Offset,
    },
    #[error("record of {size} bytes exceeds the topic limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("topic {0:?} is internal and cannot be changed through this call")]
    InternalTopic(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unknown consumer group {0:?}")]
    UnknownGroup(String),
    #[error("unknown member {member:?} in group {group:?} (expired or never joined): join again")]
    UnknownMember { group: String, member: String },
    #[error("stale generation {got} for group {group:?} (current {current}): rejoin")]
    IllegalGeneration { group: String, got: u32, current: u32 },
    #[error("member {member:?} of group {group:?} does not own {topic}/{partition} in this generation: heartbeat for the current assignment")]
    NotAssigned { group: String, member: String, topic: String, partition: PartitionId },
    #[error("group {group:?} has {members} live member(s): stop them (or wait for their sessions to expire) first")]
    GroupActive { group: String, members: usize },
    #[error(
        "{what} for {topic}/{partition} and the reset policy is none: the log holds {earliest}..{latest}; \
         choose a reset policy (--reset earliest|latest, or reset: \"earliest\"|\"latest\") or move the group's offsets (weft group reset-offsets)"
    )]
    NoResetPolicy {
        /// "offset N is out of range" or "no committed offset".
        what: String,
        topic: String,
        partition: PartitionId,
        requested: Option<Offset>,
        earliest: Offset,
        latest: Offset,
    },
    #[error(
        "partition {topic}/{partition} refuses writes after a storage failure{}: {cause}; the next write after log_store.poison_retry_ms reopens it from its last durable state",
        if *disk_full { " (disk full)" } else { "" }
    )]
    Poisoned {
        topic: String,
        partition: PartitionId,
        cause: String,
        /// The failure was ENOSPC/EDQUOT: free space and write again.
        disk_full: bool,
    },
    #[error("storage error during {op} on {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("corrupt data in {path:?} at byte {pos}: {reason}")]
    Corrupt { path: PathBuf, pos: u64, reason: String },
    #[error("corrupt record batch: {0}")]
    CorruptBatch(&'static str),
    #[error("the log is shut down")]
    Closed,
}

impl LogError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        use LogError::*;
        match self {
            UnknownTopic(_)
            | UnknownPartition { .. }
            | OffsetOutOfRange { .. }
            | RecordTooLarge { .. }
            | InvalidTopicName { .. }
            | TopicExists(_)
            | InternalTopic(_)
            | InvalidConfig(_)
            | InvalidRequest(_)
            | UnknownGroup(_)
            | UnknownMember { .. }
            | IllegalGeneration { .. }
            | NotAssigned { .. }
            | GroupActive { .. }
            | NoResetPolicy { .. } => Fault::Client,
            Closed => Fault::Retry,
            Poisoned { .. } | Io { .. } | Corrupt { .. } | CorruptBatch(_) => Fault::Server,
        }
    }

    /// A stable machine-readable code for typed error DTOs (the same on the
    /// native protocol and the HTTP gateway).
    pub fn code(&self) -> &'static str {
        use LogError::*;
        match self {
            UnknownTopic(_) => "unknown_topic",
            UnknownPartition { .. } => "unknown_partition",
            OffsetOutOfRange { .. } => "offset_out_of_range",
            RecordTooLarge { .. } => "record_too_large",
            InvalidTopicName { .. } => "invalid_topic_name",
            TopicExists(_) => "topic_exists",
            InternalTopic(_) => "internal_topic",
            InvalidConfig(_) => "invalid_config",
            InvalidRequest(_) => "invalid_request",
            UnknownGroup(_) => "unknown_group",
            UnknownMember { .. } => "unknown_member",
            IllegalGeneration { .. } => "illegal_generation",
            NotAssigned { .. } => "not_assigned",
            GroupActive { .. } => "group_active",
            NoResetPolicy { .. } => "no_reset_policy",
            Poisoned { .. } => "partition_poisoned",
            Io { .. } => "storage_error",
            Corrupt { .. } => "corrupt_data",
            CorruptBatch(_) => "corrupt_batch",
            Closed => "closed",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io { op, path: path.into(), source: Arc::new(source) }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
