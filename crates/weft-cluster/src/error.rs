//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the cluster layer. Variants say who is at
/// fault: the disk, a peer on the wire, the caller, or the raft engine.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A write-ahead record failed its checks somewhere other than the tail.
    #[error("raft log {path} corrupt at byte {at}: {why}")]
    Corrupt { path: PathBuf, at: u64, why: String },
    /// A peer sent bytes that are not a valid frame; the connection is dropped.
    #[error("bad frame from peer: {0}")]
    BadFrame(String),
    /// A peer's certificate does not prove the node id it claims (cluster
    /// mTLS, docs/cluster.md): the connection is refused.
    #[error("peer refused: {0}")]
    PeerIdentity(String),
    #[error("frame of {len} bytes exceeds the limit of {max} (cluster.max_frame_bytes)")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("protobuf: {0}")]
    Protobuf(#[from] protobuf::ProtobufError),
    #[error("unknown raft group {0}")]
    UnknownGroup(u64),
    /// This node is not the leader of the group; `leader` is the node it
    /// believes leads (0 when unknown) and `addr` its cluster address if known.
    #[error("not leader of group {group}; leader is node {leader}")]
    NotLeader { group: u64, leader: u64, addr: Option<String> },
    #[error("state machine: {0}")]
    StateMachine(String),
    /// An idempotent producer's batch is not the next in its sequence (a gap,
    /// or older than the batches remembered): nothing was appended.
    #[error("producer {producer_id}: out of order sequence {got}, expected {expected}")]
    OutOfOrderSequence { producer_id: u64, expected: u64, got: u64 },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// Too many requests queued to the cluster driver (`cluster.max_pending`).
    #[error("cluster node busy: too many pending requests")]
    Busy,
    /// This node's partition appliers are further behind than
    /// `cluster.apply_queue_max_bytes`: the produce was not proposed.
    #[error("this node's partition appliers have {queued} bytes queued, over cluster.apply_queue_max_bytes ({limit}): nothing was written, retry later")]
    ApplyBacklog { queued: u64, limit: u64 },
    #[error("cluster node is shutting down")]
    Shutdown,
}

impl ClusterError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ClusterError::Io { op, path: path.into(), source }
    }
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
