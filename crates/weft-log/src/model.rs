//! The log model: offsets, partitions, topic names, records, topic
//! configuration and the partitioner. Pure data, no I/O.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};

/// Position of a record in a partition. Offsets start at 0, grow by one per
/// record and are never reused (compaction leaves gaps, it never renumbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    pub const ZERO: Offset = Offset(0);
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn next(self) -> Offset {
        Offset(self.0.saturating_add(1))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Index of a partition inside its topic, `0..partitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionId(pub u32);

impl PartitionId {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A validated topic name.
///
/// Rules (checked by [`TopicName::new`]):
/// - 1 to 200 bytes (the name becomes a directory name; 200 leaves room for
///   suffixes under the usual 255-byte file name limit);
/// - only ASCII letters, digits, `.`, `_` and `-`;
/// - not `.` or `..`;
/// - names starting with `__` are internal (`__consumer_offsets`): only the log
///   itself creates them ([`TopicName::new_internal`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

/// Maximum length of a topic name in bytes.
pub const TOPIC_NAME_MAX_LEN: usize = 200;

impl TopicName {
    /// Validates a user-supplied topic name (internal `__` names are refused).
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        Self::check_syntax(&name)?;
        if name.starts_with("__") {
            return Err(LogError::InvalidTopicName { name, reason: "names starting with \"__\" are reserved for internal topics" });
        }
        Ok(TopicName(name))
    }

    /// Validates a name that may be internal (used by the log for its own topics
    /// and when reading back persisted metadata).
    pub fn new_internal(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        Self::check_syntax(&name)?;
        Ok(TopicName(name))
    }

    fn check_syntax(name: &str) -> Result<()> {
        let bad = |reason| Err(LogError::InvalidTopicName { name: name.to_owned(), reason });
        if name.is_empty() {
            return bad("empty");
        }
        if name.len() > TOPIC_NAME_MAX_LEN {
            return bad("longer than 200 bytes");
        }
        if name == "." || name == ".." {
            return bad("\".\" and \"..\" are not allowed");
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
            return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
        }
        Ok(())
    }

    pub fn is_internal(&self) -> bool {
        self.0.starts_with("__")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = LogError;
    fn try_from(s: String) -> Result<Self> {
        TopicName::new_internal(s)
    }
}

impl From<TopicName> for String {
    fn from(t: TopicName) -> String {
        t.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A stored record, as returned by fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: Offset,
    /// Milliseconds since the Unix epoch (producer-supplied or append time).
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    /// `None` is a tombstone: in a compacted topic it deletes the key.
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
}

/// A record to append. The log assigns the offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceRecord {
    /// Explicit partition; `None` lets the partitioner choose (key hash, or
    /// round-robin for records without a key).
    pub partition: Option<PartitionId>,
    /// `None` = the log's clock at append time.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
}

impl ProduceRecord {
    /// A record with just a value.
    pub fn value(v: impl Into<Bytes>) -> Self {
        ProduceRecord { value: Some(v.into()), ..Default::default() }
    }
    /// A record with a key and a value.
    pub fn keyed(k: impl Into<Bytes>, v: impl Into<Bytes>) -> Self {
        ProduceRecord { key: Some(k.into()), value: Some(v.into()), ..Default::default() }
    }
    pub fn with_partition(mut self, p: u32) -> Self {
        self.partition = Some(PartitionId(p));
        self
    }
    pub fn with_timestamp(mut self, ts: i64) -> Self {
        self.timestamp_ms = Some(ts);
        self
    }
    pub fn with_header(mut self, name: impl Into<String>, v: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), v.into()));
        self
    }

    /// Size counted against `max_record_bytes`: key + value + header names and values.
    pub fn payload_len(&self) -> usize {
        self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + self.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()
    }
}

/// What happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Whole old segments are deleted by age and size (retention_ms / retention_bytes).
    #[default]
    Delete,
    /// Closed segments are rewritten keeping only the newest record per key;
    /// tombstones are dropped once older than `delete_retention_ms`.
    Compact,
}

/// Per-topic configuration. Every field has a default; `None` retention = unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    pub partitions: u32,
    /// Delete segments whose newest record is older than this. `None` = keep forever.
    pub retention_ms: Option<u64>,
    /// Delete oldest segments while a partition is larger than this. `None` = no limit.
    pub retention_bytes: Option<u64>,
    /// Largest record (key + value + headers) accepted.
    pub max_record_bytes: u32,
    /// Roll the active segment when it would exceed this size.
    pub segment_bytes: u64,
    /// Roll the active segment when its first record was written this long ago.
    pub segment_ms: u64,
    pub cleanup: CleanupPolicy,
    /// Compacted topics: how long a tombstone is kept after it was written,
    /// so that consumers get a chance to see the delete.
    pub delete_retention_ms: u64,
}

/// Limits on topic configuration ("put a limit on everything").
pub const MAX_PARTITIONS: u32 = 1024;
pub const MAX_RECORD_BYTES_LIMIT: u32 = 64 * 1024 * 1024;
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Segment files use 32-bit positions in their indexes.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_record_bytes: 1024 * 1024,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 24 * 3600 * 1000,
            cleanup: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

impl TopicConfig {
    pub fn with_partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(LogError::InvalidConfig(s));
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return bad(format!("partitions must be 1..={MAX_PARTITIONS}, got {}", self.partitions));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
            return bad(format!("max_record_bytes must be 1..={MAX_RECORD_BYTES_LIMIT}, got {}", self.max_record_bytes));
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!("segment_bytes must be {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}, got {}", self.segment_bytes));
        }
        if self.segment_ms == 0 {
            return bad("segment_ms must be > 0".into());
        }
        Ok(())
    }
}

/// Changes to a topic's configuration ([`crate::Log::alter_topic`]);
/// `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicAlter {
    /// More partitions; never fewer (their records would be lost). Keyed
    /// records map to partitions by `hash % partitions`, so new records of
    /// a key may land on another partition than its older ones (as in Kafka).
    pub partitions: Option<u32>,
    /// `Some(None)`: keep forever.
    pub retention_ms: Option<Option<u64>>,
    /// `Some(None)`: no size limit.
    pub retention_bytes: Option<Option<u64>>,
    pub max_record_bytes: Option<u32>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<u64>,
    pub cleanup: Option<CleanupPolicy>,
    pub delete_retention_ms: Option<u64>,
}

impl TopicAlter {
    pub fn is_empty(&self) -> bool {
        *self == TopicAlter::default()
    }

    /// The configuration after the change, validated.
    pub fn apply(&self, old: &TopicConfig) -> Result<TopicConfig> {
        let mut c = old.clone();
        if let Some(p) = self.partitions {
            if p < old.partitions {
                return Err(LogError::InvalidConfig(format!(
                    "partitions can only grow ({} -> {p}): the records of the dropped partitions would be lost",
                    old.partitions
                )));
            }
            c.partitions = p;
        }
        if let Some(v) = self.retention_ms {
            c.retention_ms = v;
        }
        if let Some(v) = self.retention_bytes {
            c.retention_bytes = v;
        }
        if let Some(v) = self.max_record_bytes {
            c.max_record_bytes = v;
        }
        if let Some(v) = self.segment_bytes {
            c.segment_bytes = v;
        }
        if let Some(v) = self.segment_ms {
            c.segment_ms = v;
        }
        if let Some(v) = self.cleanup {
            c.cleanup = v;
        }
        if let Some(v) = self.delete_retention_ms {
            c.delete_retention_ms = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// How a record's partition is chosen.
///
/// - explicit: `ProduceRecord::partition` (must be `< partitions`);
/// - keyed: `(murmur2(key) & 0x7fffffff) % partitions`, the same function and
///   seed as Apache Kafka's default partitioner, so keyed records land on the
///   same partition as with Kafka clients; stable across restarts and
///   versions as long as the partition count does not change;
/// - neither: round-robin over the partitions (a per-topic counter, not persisted).
#[derive(Debug, Default)]
pub struct Partitioner {
    next: AtomicU32,
}

impl Partitioner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses a partition for a record; `partitions` must be > 0.
    pub fn choose(&self, explicit: Option<PartitionId>, key: Option<&[u8]>, partitions: u32) -> PartitionId {
        let n = partitions.max(1);
        if let Some(p) = explicit {
            return p;
        }
        match key {
            Some(k) => PartitionId(key_partition(k, n)),
            None => PartitionId(self.next.fetch_add(1, Ordering::Relaxed) % n),
        }
    }
}

/// The keyed partition of `key` among `partitions` partitions.
pub fn key_partition(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// MurmurHash2 (32-bit) with Kafka's seed `0x9747b28c`, written from the
/// algorithm description: 4-byte little-endian blocks, tail bytes folded in,
/// final avalanche with shifts 13 and 15.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka casts the length to a Java int; keys are far below 2^31 bytes.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_vectors() {
        // Apache Kafka UtilsTest.testMurmur2 expected values (Java signed ints).
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input) as i32, *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn partitioner_explicit_key_roundrobin() {
        let p = Partitioner::new();
        assert_eq!(p.choose(Some(PartitionId(2)), Some(b"k"), 4), PartitionId(2));
        let a = p.choose(None, Some(b"user-1"), 4);
        assert_eq!(a, p.choose(None, Some(b"user-1"), 4));
        let rr: Vec<u32> = (0..8).map(|_| p.choose(None, None, 4).0).collect();
        assert_eq!(rr, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn topic_names() {
        assert!(TopicName::new("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é", "__consumer_offsets"] {
            assert!(TopicName::new(bad).is_err(), "{bad:?}");
        }
        assert!(TopicName::new("x".repeat(201)).is_err());
        assert!(TopicName::new_internal("__consumer_offsets").unwrap().is_internal());
    }

    #[test]
    fn config_validation() {
        assert!(TopicConfig::default().validate().is_ok());
        assert!(TopicConfig::default().with_partitions(0).validate().is_err());
        let c = TopicConfig { segment_bytes: 10, ..Default::default() };
        assert!(c.validate().is_err());
        let j: TopicConfig = serde_json::from_str(r#"{"partitions":3,"cleanup":"compact"}"#).unwrap();
        assert_eq!(j.partitions, 3);
        assert_eq!(j.cleanup, CleanupPolicy::Compact);
    }
}
