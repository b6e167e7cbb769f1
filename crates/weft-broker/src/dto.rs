//! Request and response bodies of the native `log.*` endpoints. Byte fields
//! are msgpack `bin` (in JSON bodies they accept a string, taken as UTF-8).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use weft_log::{AssignmentStrategy, CleanupPolicy, OffsetReset, ResetPolicy, ResetTarget, TopicAlter, TopicConfig};
use weft_wire::ErrorBody;

/// The bytes type of records sent ([`RecordIn`]): built from a `Vec<u8>` or `Bytes`.
pub use weft_wire::SharedBytes;

/// Route keys.
pub mod route {
    pub const TOPIC_CREATE: &str = "log.topic.create";
    pub const TOPIC_LIST: &str = "log.topic.list";
    pub const TOPIC_DESCRIBE: &str = "log.topic.describe";
    pub const TOPIC_DELETE: &str = "log.topic.delete";
    pub const TOPIC_ALTER: &str = "log.topic.alter";
    pub const PRODUCE: &str = "log.produce";
    pub const FETCH: &str = "log.fetch";
    pub const OFFSETS: &str = "log.offsets";
    pub const GROUP_JOIN: &str = "log.group.join";
    pub const GROUP_HEARTBEAT: &str = "log.group.heartbeat";
    pub const GROUP_LEAVE: &str = "log.group.leave";
    pub const GROUP_COMMIT: &str = "log.group.commit";
    pub const GROUP_COMMITTED: &str = "log.group.committed";
    pub const GROUP_LIST: &str = "log.group.list";
    pub const GROUP_DESCRIBE: &str = "log.group.describe";
    pub const GROUP_RESET_OFFSETS: &str = "log.group.reset_offsets";
    pub const GROUP_DELETE: &str = "log.group.delete";
    pub const GROUP_FETCH: &str = "log.group.fetch";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    pub name: String,
    /// Any subset of the topic config; the rest takes the node's defaults.
    #[serde(default)]
    pub config: Option<TopicConfig>,
    /// Copies of each partition (cluster mode: default min(3, data nodes);
    /// a single node ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// Changes to a topic's configuration; absent fields stay as they are.
/// For the two retention limits a negative number (-1, as in Kafka) means
/// no limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlterTopic {
    pub name: String,
    /// More partitions (never fewer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_retention_ms: Option<u64>,
}

impl AlterTopic {
    pub fn to_alter(&self) -> TopicAlter {
        let limit = |v: Option<i64>| v.map(|v| u64::try_from(v).ok());
        TopicAlter {
            partitions: self.partitions,
            retention_ms: limit(self.retention_ms),
            retention_bytes: limit(self.retention_bytes),
            max_record_bytes: self.max_record_bytes,
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            cleanup: self.cleanup,
            delete_retention_ms: self.delete_retention_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRef {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordIn {
    /// Explicit partition; else by key hash, else round-robin.
    #[serde(default)]
    pub partition: Option<u32>,
    /// Bytes (msgpack `bin`; JSON as for `serde_bytes`): decoded by the
    /// server, they share the request frame's buffer (`SharedBytes`).
    #[serde(default)]
    pub key: Option<SharedBytes>,
    /// None = tombstone (compacted topics).
    #[serde(default)]
    pub value: Option<SharedBytes>,
    #[serde(default)]
    pub headers: Vec<(String, SharedBytes)>,
    #[serde(default)]
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Produce {
    pub topic: String,
    pub records: Vec<RecordIn>,
    /// Idempotent producer (cluster mode, replicated topics): the client's
    /// producer id; with it `sequence` is required and the records must all
    /// go to one partition (docs/log.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<u64>,
    /// The first record's sequence in that partition for this producer; a
    /// retry sends the same batch with the same sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// When a replicated produce is acknowledged (default `all`).
    #[serde(default, skip_serializing_if = "Acks::is_all")]
    pub acks: Acks,
}

/// A `log.produce` request as the server takes it: [`Produce`] with its
/// records already in the log's form (the hand decoder, produce_body.rs,
/// reads them straight into it; serde's result is converted).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Produce")]
pub struct ProduceIn {
    pub topic: String,
    pub records: Vec<weft_log::ProduceRecord>,
    pub producer_id: Option<u64>,
    pub sequence: Option<u64>,
    pub acks: Acks,
}

impl From<Produce> for ProduceIn {
    fn from(p: Produce) -> Self {
        ProduceIn {
            topic: p.topic,
            records: p.records.into_iter().map(crate::native::record_in).collect(),
            producer_id: p.producer_id,
            sequence: p.sequence,
            acks: p.acks,
        }
    }
}

/// When a produce to a replicated partition is acknowledged (docs/cluster.md, "Guarantees").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// Once a majority of the replicas has the records durable and they are applied.
    #[default]
    All,
    /// Once the leader has the entry in its own raft log: weaker, the records
    /// can be lost if the leader dies before replicating them.
    Leader,
}

impl Acks {
    pub fn is_all(&self) -> bool {
        *self == Acks::All
    }
}

/// Per-record result: where it went, or why not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProduceResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProduceResponse {
    pub results: Vec<ProduceResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    #[serde(default)]
    pub max_bytes: Option<usize>,
    #[serde(default)]
    pub max_records: Option<usize>,
    /// Long-poll: wait up to this long for data when there is none.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// Return the stored batches as they are on disk (no decoding on the
    /// server); decode with `weft_log::BatchesDecoder`.
    #[serde(default)]
    pub raw: bool,
    /// What to do when `offset` is outside the log (Kafka's
    /// `auto.offset.reset`): `earliest`/`latest` fetch from there instead
    /// (the answer's `reset_from` says so), `none` (or absent) is an
    /// `out_of_range` error.
    #[serde(default)]
    pub reset: Option<ResetPolicy>,
}

/// `log.group.fetch`: a fetch by a group member, fenced like a commit (the
/// member is live, `generation` is current, it holds the partition), so a
/// member expired or rebalanced away cannot read on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberFetch {
    pub group: String,
    pub member_id: String,
    pub generation: u32,
    pub fetch: Fetch,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordOut {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<ByteBuf>,
    pub value: Option<ByteBuf>,
    pub headers: Vec<(String, ByteBuf)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchResponse {
    pub topic: String,
    pub partition: u32,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Where the next fetch should start.
    pub next_offset: u64,
    #[serde(default)]
    pub records: Vec<RecordOut>,
    /// Set when `raw` was asked for.
    #[serde(default)]
    pub batches: Option<ByteBuf>,
    /// Set when the requested offset was outside the log and the `reset`
    /// policy moved the fetch: the offset that was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_from: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OffsetQuery {
    Earliest,
    Latest,
    Timestamp(i64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offsets {
    pub topic: String,
    pub partition: u32,
    pub spec: OffsetQuery,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffsetAnswer {
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinGroup {
    pub group: String,
    #[serde(default)]
    pub member_id: Option<String>,
    #[serde(default)]
    pub client_id: String,
    pub topics: Vec<String>,
    #[serde(default)]
    pub strategy: Option<AssignmentStrategy>,
    #[serde(default)]
    pub session_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRef {
    pub group: String,
    pub member_id: String,
    /// On a heartbeat: the generation this member has adopted (it stopped
    /// fetching and committed the partitions it lost). Partitions it gave
    /// up go to their new owners only then; absent = acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
}

/// Mirrors `weft_log::MemberState`, deserializable on the client side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub group: String,
    pub member_id: String,
    pub generation: u32,
    /// (topic, partition) pairs assigned to this member.
    pub assignment: Vec<(String, u32)>,
    pub members: usize,
    /// Partitions of this member's share still held by their previous owner
    /// (they arrive in a later heartbeat, after the hand-off).
    #[serde(default)]
    pub pending: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    #[serde(default)]
    pub metadata: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    pub group: String,
    /// Members pass their id and generation (fenced); standalone consumers none.
    #[serde(default)]
    pub member_id: Option<String>,
    #[serde(default)]
    pub generation: Option<u32>,
    pub offsets: Vec<CommitOffset>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Committed {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// Also answer where a consumer of the group starts on this partition
    /// under this reset policy (`start`); `none` without a usable committed
    /// offset is an `out_of_range` error (`kind: no_reset_policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommittedAnswer {
    pub offset: Option<u64>,
    #[serde(default)]
    pub metadata: String,
    /// With `reset`: the starting offset (the committed one when inside the
    /// log, else the policy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// With `reset`: true when the policy chose `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    pub group: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
}

/// `log.group.reset_offsets`: move a group's committed offsets (refused
/// while the group has live members).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetOffsets {
    pub group: String,
    pub topic: String,
    /// One partition (default: all of the topic).
    #[serde(default)]
    pub partition: Option<u32>,
    /// `"earliest"`, `"latest"`, `{"offset": N}` or `{"timestamp": MS}`.
    pub to: ResetTarget,
    /// Compute and answer, write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResetOffsetsAnswer {
    pub group: String,
    pub topic: String,
    pub dry_run: bool,
    pub partitions: Vec<OffsetReset>,
}
