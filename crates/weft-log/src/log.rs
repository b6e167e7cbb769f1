//! The `Log`: topics (persisted metadata), produce, fetch, list offsets,
//! background maintenance, and consumer groups with committed offsets kept
//! in the internal compacted topic `__consumer_offsets`.
//!
//! Directory layout:
//! ```text
//! <dir>/topics/<topic>/topic.json           metadata (atomic write)
//! <dir>/topics/<topic>/<partition>/<base>.log / .index
//! <dir>/staging/   topics being created (removed on open)
//! <dir>/trash/     topics being deleted (removed on open)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::{FsyncPolicy, LogConfig};
use crate::error::{LogError, Result};
use crate::files::{FileCacheStats, OpenFiles};
use crate::group::{AssignmentStrategy, GroupCoordinator, MemberDescription, MemberState, validate_group_name};
use crate::model::{
    TopicAlter,
    CleanupPolicy, Offset, PartitionId, Partitioner, ProduceRecord, TopicConfig, TopicName, key_partition,
};
use crate::partition::{CompactionReport, FetchResult, Partition, PartitionStats};
use crate::storage::{FsStorage, Storage, read_all, write_atomic};

/// Writing a replica's copy (weft-cluster catch-up).
mod replica;

/// Name of the internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Most records in one produce call.
pub const MAX_PRODUCE_RECORDS: usize = 100_000;
/// Most headers per record and longest header name.
pub const MAX_HEADERS_PER_RECORD: usize = 1024;

/// Source of time (milliseconds since the Unix epoch), replaceable in tests.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock moved by hand (tests).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where to start reading, for [`Log::list_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetSpec {
    /// First offset still stored.
    Earliest,
    /// High watermark: the offset the next record will get (visible to consumers).
    Latest,
    /// First offset whose record timestamp is >= this many ms since the
    /// epoch; the high watermark if there is none.
    Timestamp(i64),
}

/// Acknowledgement of one produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordAck {
    pub partition: PartitionId,
    pub offset: Offset,
    pub timestamp_ms: i64,
}

/// Acknowledgement of a client-encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    pub partition: PartitionId,
    pub base_offset: Offset,
    pub record_count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: TopicName,
    pub internal: bool,
    pub created_ms: i64,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionStats>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: Offset,
    #[serde(default)]
    pub metadata: String,
    pub commit_ms: i64,
}

/// One entry of a commit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: PartitionId,
    /// The next offset the group will consume.
    pub offset: Offset,
    pub metadata: String,
}

/// Committed offset and lag of one partition for a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub committed: Option<Offset>,
    /// First offset still stored.
    #[serde(default)]
    pub log_start: Offset,
    pub latest: Offset,
    /// latest - committed, with committed clamped to [log_start, latest]
    /// (from log_start when nothing is committed).
    pub lag: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupDescription {
    pub group: String,
    /// "stable" (members present) or "empty" (only committed offsets).
    pub state: String,
    pub generation: u32,
    pub strategy: AssignmentStrategy,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<PartitionLag>,
    pub total_lag: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    pub members: usize,
    pub generation: u32,
    pub total_lag: u64,
}

/// Storage health of a log ([`Log::health`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHealth {
    /// Every partition takes writes and the log is open.
    pub writable: bool,
    pub closed: bool,
    /// A partition refuses writes because the disk was full (ENOSPC/EDQUOT).
    pub disk_full: bool,
    pub partitions_poisoned: usize,
    /// `topic/partition: cause` of partitions refusing writes (the first 16).
    pub poisoned: Vec<String>,
    /// The last failure that poisoned a partition (kept after recovery).
    pub last_error: Option<String>,
    /// Partitions poisoned / reopened since the log was opened.
    pub poisonings_total: u64,
    pub recoveries_total: u64,
}

/// Contents of `topic.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicMeta {
    format: u32,
    name: TopicName,
    created_ms: i64,
    config: TopicConfig,
}

const TOPIC_META_FORMAT: u32 = 1;

#[derive(Debug)]
struct Topic {
    name: TopicName,
    created_ms: i64,
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
    partitioner: Partitioner,
    /// `weft_log_produced_records_total` and `_bytes_total` of this topic,
    /// looked up at the first produce instead of per request.
    series: std::sync::OnceLock<(weft_metrics::Counter, weft_metrics::Counter)>,
}

/// Key of a record in `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct OffsetKey {
    g: String,
    t: String,
    p: u32,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    /// Every segment file is opened through this bounded cache.
    files: Arc<OpenFiles>,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    topics: RwLock<BTreeMap<TopicName, Arc<Topic>>>,
    /// Serialises topic creation and deletion.
    admin: tokio::sync::Mutex<()>,
    groups: Mutex<GroupCoordinator>,
    committed: Mutex<BTreeMap<OffsetKey, CommittedOffset>>,
    /// Commits hold it shared from their write to their map update; a
    /// group's deletion holds it alone, so a commit is never half-undone by
    /// a deletion running beside it (its record written, then tombstoned).
    offsets_gate: tokio::sync::RwLock<()>,
    /// When each group was last seen with members (by
    /// [`Log::expire_offsets`]); groups not in it count from `opened_ms`.
    group_seen: Mutex<HashMap<String, i64>>,
    /// When this log was opened: membership is not kept across a restart,
    /// so a group's time without members is counted from here at most.
    opened_ms: i64,
    closed: AtomicBool,
}

/// The streaming log of one node. Cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected maps hold no invariant a panic could break halfway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real file system,
    /// with the system clock. Starts the background tasks (maintenance,
    /// interval fsync) on the current tokio runtime.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        Self::open_with(dir, config, Arc::new(FsStorage), Arc::new(SystemClock)).await
    }

    /// Opens with a chosen storage backend and clock.
    pub async fn open_with(
        dir: impl AsRef<Path>,
        config: LogConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
    ) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        config.default_topic.validate()?;
        let st = storage.clone();
        let d = dir.clone();
        let fsync = write_policy(&config);
        let files = Arc::new(OpenFiles::new(storage.clone(), config.max_open_files));
        let f = files.clone();
        // Recovery reads every active segment: keep it off the async threads.
        let topics = tokio::task::spawn_blocking(move || load_topics(&st, &f, &d, fsync))
            .await
            .map_err(|e| LogError::InvalidRequest(format!("open task failed: {e}")))??;
        let log = Log {
            inner: Arc::new(Inner {
                groups: Mutex::new(GroupCoordinator::new(
                    config.max_groups,
                    config.max_group_members,
                    config.max_session_timeout_ms,
                )),
                dir,
                storage,
                files,
                config,
                opened_ms: clock.now_ms(),
                clock,
                topics: RwLock::new(topics),
                admin: tokio::sync::Mutex::new(()),
                committed: Mutex::new(BTreeMap::new()),
                offsets_gate: tokio::sync::RwLock::new(()),
                group_seen: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
            }),
        };
        log.ensure_offsets_topic().await?;
        log.load_committed_offsets().await?;
        log.spawn_background();
        Ok(log)
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Counters of the open segment-file cache (`log_store.max_open_files`).
    pub fn file_cache_stats(&self) -> FileCacheStats {
        self.inner.files.stats()
    }

    /// Whether the log takes writes: partitions refusing writes after a
    /// storage failure (each reopens itself on a later write, see
    /// `LogConfig::poison_retry_ms`), whether the disk was full, and the
    /// last failure. For readiness checks.
    pub fn health(&self) -> LogHealth {
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let (last_error, poisonings_total, recoveries_total) = self.inner.files.storage_errors();
        let mut h = LogHealth { last_error, poisonings_total, recoveries_total, ..LogHealth::default() };
        for t in &topics {
            for p in &t.partitions {
                let s = p.stats();
                if let Some(cause) = s.poisoned {
                    h.partitions_poisoned += 1;
                    h.disk_full |= s.disk_full;
                    if h.poisoned.len() < 16 {
                        h.poisoned.push(format!("{}/{}: {cause}", t.name, p.id));
                    }
                }
            }
        }
        h.closed = self.inner.closed.load(Ordering::Acquire);
        h.writable = h.partitions_poisoned == 0 && !h.closed;
        h
    }

    /// Storage statistics as flat `log.*` keys, for a stats registry.
    pub fn gauges(&self) -> Vec<(String, serde_json::Value)> {
        let f = self.file_cache_stats();
        let h = self.health();
        vec![
            ("log.disk_full".into(), u64::from(h.disk_full).into()),
            ("log.partitions_poisoned".into(), h.partitions_poisoned.into()),
            ("log.poisonings".into(), h.poisonings_total.into()),
            ("log.recoveries".into(), h.recoveries_total.into()),
            ("log.last_storage_error".into(), h.last_error.unwrap_or_default().into()),
            ("log.open_files".into(), f.open.into()),
            ("log.open_files_max".into(), f.max_open.into()),
            ("log.file_cache_hits".into(), f.hits.into()),
            ("log.file_cache_misses".into(), f.misses.into()),
            ("log.file_cache_evictions".into(), f.evictions.into()),
        ]
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) { Err(LogError::Closed) } else { Ok(()) }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let topics = self.inner.topics.read().unwrap_or_else(|p| p.into_inner());
        topics
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    fn partition(&self, topic: &str, partition: PartitionId) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        t.partitions.get(partition.0 as usize).cloned().ok_or(LogError::UnknownPartition {
            topic: topic.to_string(),
            partition,
            partitions: t.partitions.len() as u32,
        })
    }

    fn partition_counts(&self) -> impl Fn(&TopicName) -> Option<u32> + use<> {
        let topics = self.inner.topics.read().unwrap_or_else(|p| p.into_inner());
        let counts: BTreeMap<TopicName, u32> = topics.iter().map(|(k, t)| (k.clone(), t.partitions.len() as u32)).collect();
        move |t| counts.get(t).copied()
    }

    // ------------------------------------------------------------------ topics

    /// Creates a topic. `config = None` uses the log's default topic config.
    pub async fn create_topic(&self, name: &str, config: Option<TopicConfig>) -> Result<TopicDescription> {
        let name = TopicName::new(name)?;
        self.create_topic_inner(name, config.unwrap_or_else(|| self.inner.config.default_topic.clone())).await
    }

    async fn create_topic_inner(&self, name: TopicName, config: TopicConfig) -> Result<TopicDescription> {
        self.check_open()?;
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        if self.topic(name.as_str()).is_ok() {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let meta = TopicMeta { format: TOPIC_META_FORMAT, name: name.clone(), created_ms: self.now_ms(), config };
        let inner = self.inner.clone();
        let topic = tokio::task::spawn_blocking(move || create_topic_files(&inner, meta))
            .await
            .map_err(|e| LogError::InvalidRequest(format!("create task failed: {e}")))??;
        let topic = Arc::new(topic);
        self.inner.topics.write().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), topic.clone());
        tracing::info!(topic = %name, partitions = topic.partitions.len(), "topic created");
        lock(&self.inner.groups).refresh(self.now_ms(), &self.partition_counts());
        Ok(describe(&topic))
    }

    /// Names of all topics (internal ones included; see [`TopicName::is_internal`]).
    pub fn list_topics(&self) -> Vec<TopicName> {
        self.inner.topics.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        Ok(describe(&*self.topic(name)?))
    }

    /// Changes a topic's configuration: limits apply from the next append
    /// and maintenance pass, new partitions are created empty. The new
    /// configuration is durable (topic.json rewritten atomically) before
    /// this returns. Internal topics cannot be altered.
    pub async fn alter_topic(&self, name: &str, alter: &TopicAlter) -> Result<TopicDescription> {
        self.check_open()?;
        let _admin = self.inner.admin.lock().await;
        let old = self.topic(name)?;
        if old.name.is_internal() {
            return Err(LogError::InternalTopic(name.to_string()));
        }
        let config = alter.apply(&old.config)?;
        let inner = self.inner.clone();
        let prev = old.clone();
        let topic = tokio::task::spawn_blocking(move || alter_topic_files(&inner, &prev, config))
            .await
            .map_err(|e| LogError::InvalidRequest(format!("alter task failed: {e}")))??;
        let topic = Arc::new(topic);
        self.inner.topics.write().unwrap_or_else(|p| p.into_inner()).insert(topic.name.clone(), topic.clone());
        tracing::info!(topic = %topic.name, partitions = topic.partitions.len(), config = ?topic.config, "topic altered");
        if topic.partitions.len() != old.partitions.len() {
            lock(&self.inner.groups).refresh(self.now_ms(), &self.partition_counts());
        }
        Ok(describe(&topic))
    }

    /// Deletes a topic and all its data. Internal topics cannot be deleted.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let _admin = self.inner.admin.lock().await;
        let t = self.topic(name)?;
        if t.name.is_internal() {
            return Err(LogError::InternalTopic(name.to_string()));
        }
        self.inner.topics.write().unwrap_or_else(|p| p.into_inner()).remove(&t.name);
        for p in &t.partitions {
            p.mark_deleted();
        }
        // Close its files now: the data's space is freed when it is removed.
        self.inner.files.forget_under(&self.inner.dir.join("topics").join(t.name.as_str()));
        let inner = self.inner.clone();
        let tname = t.name.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let st = &*inner.storage;
            let from = inner.dir.join("topics").join(tname.as_str());
            let trash = inner.dir.join("trash");
            st.create_dir_all(&trash).map_err(|e| LogError::io("create trash dir", &trash, e))?;
            let to = trash.join(format!("{}-{}", tname, inner.clock.now_ms()));
            st.rename(&from, &to).map_err(|e| LogError::io("move topic to trash", &from, e))?;
            let topics_dir = inner.dir.join("topics");
            st.sync_dir(&topics_dir).map_err(|e| LogError::io("sync dir", &topics_dir, e))?;
            if let Err(e) = st.remove_dir_all(&to) {
                tracing::warn!(error = %e, path = %to.display(), "could not remove deleted topic data; removed on next open");
            }
            Ok(())
        })
        .await
        .map_err(|e| LogError::InvalidRequest(format!("delete task failed: {e}")))??;
        tracing::info!(topic = %name, "topic deleted");
        lock(&self.inner.groups).refresh(self.now_ms(), &self.partition_counts());
        Ok(())
    }

    // ----------------------------------------------------------------- produce

    /// Appends records to a user topic. The whole request is validated first
    /// (unknown topic or partition, record too large): an invalid request
    /// writes nothing. Records are then appended per partition, in request
    /// order within a partition; the call returns once the fsync policy is
    /// met for all of them, with one result per record in request order (a
    /// partition that fails, e.g. poisoned, fails only its own records).
    // A span per produce: the log append hop of a request's trace
    // (docs/observability.md, "Traces"). Made only inside a span (a traced
    // request) or with debug output on: alone, with nothing to read it, it
    // cost a fifth of a one-record produce (docs/BENCHMARKS.md).
    pub async fn produce(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<Vec<Result<RecordAck>>> {
        if tracing::Span::current().is_none() && tracing::level_filters::LevelFilter::current() < tracing::Level::DEBUG {
            return self.produce_untraced(topic, records).await;
        }
        let span = tracing::info_span!("log.append", topic = %topic, records = records.len());
        tracing::Instrument::instrument(self.produce_untraced(topic, records), span).await
    }

    async fn produce_untraced(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<Vec<Result<RecordAck>>> {
        let t = self.topic(topic)?;
        if t.name.is_internal() {
            return Err(LogError::InternalTopic(topic.to_string()));
        }
        self.produce_to(&t, records).await
    }

    async fn produce_to(&self, t: &Topic, records: Vec<ProduceRecord>) -> Result<Vec<Result<RecordAck>>> {
        self.check_open()?;
        if records.len() > MAX_PRODUCE_RECORDS {
            return Err(LogError::InvalidRequest(format!("more than {MAX_PRODUCE_RECORDS} records in one produce")));
        }
        let n = t.partitions.len() as u32;
        let max = t.config.max_record_bytes as usize;
        // Each record's partition; `single` while they all go to one (the
        // common case: one record, or a one-partition topic), which is
        // appended without the per-partition grouping below.
        let mut chosen: Vec<u32> = Vec::new();
        let mut single: Option<u32> = None;
        for (i, r) in records.iter().enumerate() {
            let size = r.payload_len();
            if size > max {
                return Err(LogError::RecordTooLarge { size, max });
            }
            if r.headers.len() > MAX_HEADERS_PER_RECORD {
                return Err(LogError::InvalidRequest(format!("more than {MAX_HEADERS_PER_RECORD} headers in a record")));
            }
            let p = t.partitioner.choose(r.partition, r.key.as_deref(), n);
            if p.0 >= n {
                return Err(LogError::UnknownPartition { topic: t.name.to_string(), partition: p, partitions: n });
            }
            match single {
                _ if !chosen.is_empty() => chosen.push(p.0),
                None if i == 0 => single = Some(p.0),
                Some(s) if s == p.0 => {}
                _ => {
                    chosen = Vec::with_capacity(records.len());
                    chosen.extend(std::iter::repeat_n(single.unwrap_or(p.0), i));
                    chosen.push(p.0);
                    single = None;
                }
            }
        }
        let now = self.now_ms();
        if let Some(p) = single {
            return Ok(self.produce_one_partition(t, p, records, now).await);
        }
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, p) in chosen.iter().enumerate() {
            by_partition.entry(*p).or_default().push(i);
        }
        let appends = by_partition.iter().map(|(p, idx)| {
            let part = t.partitions[*p as usize].clone();
            let recs: Vec<&ProduceRecord> = idx.iter().map(|i| &records[*i]).collect();
            async move { (*p, part.append(&recs, now).await) }
        });
        let results = futures::future::join_all(appends).await;
        let mut out: Vec<Option<Result<RecordAck>>> = vec![None; records.len()];
        let (mut produced, mut produced_bytes) = (0u64, 0u64);
        for (p, res) in results {
            let idx = &by_partition[&p];
            match res {
                Ok(acks) => {
                    produced += idx.len() as u64;
                    produced_bytes += idx.iter().map(|i| records[*i].payload_len() as u64).sum::<u64>();
                    for (i, (offset, ts)) in idx.iter().zip(acks) {
                        out[*i] = Some(Ok(RecordAck { partition: PartitionId(p), offset, timestamp_ms: ts }));
                    }
                }
                Err(e) => {
                    for i in idx {
                        out[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        count_produced(t, produced, produced_bytes);
        Ok(out.into_iter().map(|r| r.unwrap_or_else(|| Err(LogError::InvalidRequest("record not processed".into())))).collect())
    }

    /// [`Log::produce_to`] when every (validated) record goes to partition
    /// `p`: one append, no grouping, no join.
    async fn produce_one_partition(&self, t: &Topic, p: u32, records: Vec<ProduceRecord>, now: i64) -> Vec<Result<RecordAck>> {
        let Some(part) = t.partitions.get(p as usize) else {
            // Not reached: the caller checked `p` against the partition count.
            let e = LogError::UnknownPartition { topic: t.name.to_string(), partition: PartitionId(p), partitions: t.partitions.len() as u32 };
            return records.iter().map(|_| Err(e.clone())).collect();
        };
        match part.append(&records, now).await {
            Ok(acks) => {
                let bytes = records.iter().map(|r| r.payload_len() as u64).sum::<u64>();
                count_produced(t, records.len() as u64, bytes);
                acks.into_iter().map(|(offset, ts)| Ok(RecordAck { partition: PartitionId(p), offset, timestamp_ms: ts })).collect()
            }
            Err(e) => records.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Appends records to one partition of a replicated topic's copy
    /// (weft-cluster's applier) and returns its new end without waiting for
    /// an fsync, whatever `fsync` says: the records are readable at once.
    /// The raft log already holds them durably; the copy is fsynced by the
    /// interval task, at segment rolls, and by [`Log::flush_partition`]
    /// before the raft log is compacted. Validated like a produce.
    pub fn append_unsynced(&self, topic: &str, partition: PartitionId, records: &[ProduceRecord]) -> Result<Offset> {
        self.check_open()?;
        let t = self.topic(topic)?;
        if t.name.is_internal() {
            return Err(LogError::InternalTopic(topic.to_string()));
        }
        if records.len() > MAX_PRODUCE_RECORDS {
            return Err(LogError::InvalidRequest(format!("more than {MAX_PRODUCE_RECORDS} records in one produce")));
        }
        let max = t.config.max_record_bytes as usize;
        for r in records {
            if r.payload_len() > max {
                return Err(LogError::RecordTooLarge { size: r.payload_len(), max });
            }
        }
        let p = self.partition(topic, partition)?;
        let end = p.append_unsynced(records, self.now_ms())?;
        count_produced(&t, records.len() as u64, records.iter().map(|r| r.payload_len() as u64).sum());
        Ok(end)
    }

    /// Appends one batch encoded by the client in this crate's batch format
    /// (see docs/storage.md; e.g. built with [`crate::batch::BatchBuilder`]
    /// from offset 0): validated, then stored byte for byte except for the
    /// base offset, which the log assigns. Record timestamps are the
    /// client's. Returns the partition and the offset of its first record
    /// once the fsync policy is met; record `i` has offset `base + i`.
    pub async fn produce_batch(&self, topic: &str, partition: PartitionId, batch: &[u8]) -> Result<BatchAck> {
        self.check_open()?;
        let t = self.topic(topic)?;
        if t.name.is_internal() {
            return Err(LogError::InternalTopic(topic.to_string()));
        }
        let p = self.partition(topic, partition)?;
        let h = crate::partition::validate_encoded_batch(batch, t.config.max_record_bytes as usize)?;
        let base = p.append_encoded(h, bytes::BytesMut::from(batch), self.now_ms()).await?;
        let m = weft_metrics::get();
        m.produced_records.get_or_create(&weft_metrics::l1("topic", topic)).inc_by(u64::from(h.record_count));
        m.produced_bytes.get_or_create(&weft_metrics::l1("topic", topic)).inc_by(batch.len() as u64);
        Ok(BatchAck { partition, base_offset: base, record_count: h.record_count })
    }

    // ------------------------------------------------------------------- fetch

    /// Reads whole batches from `offset`. `max_bytes` is a soft limit (at
    /// least one batch is returned if there is one); `max_records` limits
    /// what [`FetchResult::records`] yields. With `wait`, an empty read waits
    /// (long-poll) until data arrives or the wait is over (capped at
    /// `LogConfig::max_wait_ms`). An offset outside earliest..=latest is
    /// [`LogError::OffsetOutOfRange`] carrying the valid range.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        max_bytes: usize,
        max_records: usize,
        wait: Option<Duration>,
    ) -> Result<FetchResult> {
        self.check_open()?;
        let p = self.partition(topic, partition)?;
        let max_bytes = max_bytes.clamp(1, self.inner.config.max_fetch_bytes);
        let wait = wait.map(|w| w.min(self.inner.config.max_wait));
        let r = p.fetch(offset, max_bytes, max_records, wait).await?;
        if !r.batches.is_empty() {
            // Offsets handed out, from the batch headers alone (no decoding).
            let records = r.batches_end().ok().flatten().map_or(0, |end| end.0.saturating_sub(offset.0).min(max_records as u64));
            let m = weft_metrics::get();
            m.fetched_records.get_or_create(&weft_metrics::l1("topic", topic)).inc_by(records);
            m.fetched_bytes.get_or_create(&weft_metrics::l1("topic", topic)).inc_by(r.batches.len() as u64);
        }
        Ok(r)
    }

    /// Earliest, latest or by-timestamp offset of a partition.
    pub fn list_offset(&self, topic: &str, partition: PartitionId, spec: OffsetSpec) -> Result<Offset> {
        let p = self.partition(topic, partition)?;
        Ok(match spec {
            OffsetSpec::Earliest => p.earliest(),
            OffsetSpec::Latest => p.latest(),
            OffsetSpec::Timestamp(ts) => p.offset_for_timestamp(ts)?.unwrap_or_else(|| p.latest()),
        })
    }

    /// Stats of every partition of a topic.
    pub fn partition_stats(&self, topic: &str) -> Result<Vec<PartitionStats>> {
        Ok(self.topic(topic)?.partitions.iter().map(|p| p.stats()).collect())
    }

    // ------------------------------------------------------------- maintenance

    /// One round of maintenance at time `now_ms`: roll aged segments,
    /// retention, compaction, expiry of group members. Runs in the background
    /// every `maintenance_interval_ms`; tests call it directly.
    pub fn run_maintenance(&self, now_ms: i64) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for t in topics {
            for p in &t.partitions {
                let one = (|| -> Result<()> {
                    if p.roll_if_aged(now_ms)? {
                        report.segments_rolled += 1;
                    }
                    match t.config.cleanup {
                        CleanupPolicy::Delete => report.segments_deleted += p.enforce_retention(now_ms)?,
                        CleanupPolicy::Compact => {
                            let c: CompactionReport = p.compact(now_ms)?;
                            report.records_compacted += c.records_removed;
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = one {
                    // One bad partition must not stop maintenance of the others.
                    tracing::warn!(topic = %t.name, partition = %p.id, error = %e, "maintenance failed");
                    report.errors += 1;
                }
            }
        }
        report.members_expired = lock(&self.inner.groups).expire(now_ms, &self.partition_counts()).len();
        Ok(report)
    }

    /// Fsyncs every partition (used by the interval policy and at close).
    pub async fn flush_all(&self) -> Result<()> {
        let parts: Vec<Arc<Partition>> = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect();
        let mut first_err = None;
        for p in parts {
            if let Err(e) = p.flush().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Flushes everything and refuses further calls. Background tasks stop.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.flush_all().await
    }

    fn spawn_background(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        if let Some(every) = self.inner.config.maintenance_interval.map(|d| d.max(Duration::from_millis(1))) {
            let w = weak.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(inner) = w.upgrade() else { break };
                    if inner.closed.load(Ordering::Acquire) {
                        break;
                    }
                    let log = Log { inner };
                    let now = log.now_ms();
                    // Compaction and retention do blocking file I/O.
                    let l = log.clone();
                    let res = tokio::task::spawn_blocking(move || l.run_maintenance(now)).await;
                    if let Ok(Err(e)) = res {
                        tracing::warn!(error = %e, "maintenance failed");
                    }
                    if let Err(e) = log.expire_offsets(now).await {
                        tracing::warn!(error = %e, "expiry of group offsets failed");
                    }
                }
            });
        }
        if let FsyncPolicy::Interval { ms } = self.inner.config.fsync {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(ms.max(1)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // A poisoned partition fails every tick until it is reopened:
                // say so once per distinct error, not ten times a second.
                let mut last_err = None;
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    if inner.closed.load(Ordering::Acquire) {
                        break;
                    }
                    match (Log { inner }).flush_all().await {
                        Err(e) if last_err.as_ref() != Some(&e.to_string()) => {
                            tracing::error!(error = %e, "interval fsync failed");
                            last_err = Some(e.to_string());
                        }
                        Err(_) => {}
                        Ok(()) => last_err = None,
                    }
                }
            });
        }
    }

    // ---------------------------------------------------------- consumer groups

    async fn ensure_offsets_topic(&self) -> Result<()> {
        if self.topic(OFFSETS_TOPIC).is_ok() {
            return Ok(());
        }
        let cfg = TopicConfig {
            partitions: self.inner.config.offsets_partitions.max(1),
            retention_ms: None,
            retention_bytes: None,
            cleanup: CleanupPolicy::Compact,
            segment_bytes: 64 * 1024 * 1024,
            ..TopicConfig::default()
        };
        self.create_topic_inner(TopicName::new_internal(OFFSETS_TOPIC)?, cfg).await.map(|_| ())
    }

    async fn load_committed_offsets(&self) -> Result<()> {
        let t = self.topic(OFFSETS_TOPIC)?;
        let mut map = BTreeMap::new();
        for p in &t.partitions {
            let mut off = p.earliest();
            let end = p.latest();
            while off < end {
                let f = p.fetch(off, 4 * 1024 * 1024, usize::MAX, None).await?;
                if f.batches.is_empty() {
                    break;
                }
                for r in f.records() {
                    let r = r?;
                    off = r.offset.next();
                    let Some(k) = r.key.as_ref().and_then(|k| serde_json::from_slice::<OffsetKey>(k).ok()) else {
                        continue;
                    };
                    match r.value.as_ref().map(|v| serde_json::from_slice::<CommittedOffset>(v)) {
                        Some(Ok(v)) => {
                            map.insert(k, v);
                        }
                        Some(Err(_)) => {}
                        None => {
                            map.remove(&k);
                        }
                    }
                }
            }
        }
        *lock(&self.inner.committed) = map;
        Ok(())
    }

    /// Joins a group (member_id `None` = new member). Returns the member id,
    /// the generation and the member's assignment.
    pub fn join_group(
        &self,
        group: &str,
        member_id: Option<&str>,
        client_id: &str,
        topics: &[&str],
        strategy: AssignmentStrategy,
        session_timeout_ms: u64,
    ) -> Result<MemberState> {
        self.check_open()?;
        let mut names = Vec::with_capacity(topics.len());
        for t in topics {
            names.push(self.topic(t)?.name.clone());
        }
        let counts = self.partition_counts();
        lock(&self.inner.groups).join(group, member_id, client_id, &names, strategy, session_timeout_ms, self.now_ms(), &counts)
    }

    /// Keeps a member alive; returns its generation and assignment.
    pub fn heartbeat(&self, group: &str, member_id: &str) -> Result<MemberState> {
        self.heartbeat_ack(group, member_id, None)
    }

    /// Heartbeat acknowledging generation `ack` (partitions the member gave
    /// up are handed to their new owners; see `group`).
    pub fn heartbeat_ack(&self, group: &str, member_id: &str, ack: Option<u32>) -> Result<MemberState> {
        lock(&self.inner.groups).heartbeat(group, member_id, ack, self.now_ms())
    }

    /// Fencing of a member's fetch (as of a commit): the member is live, in
    /// the current generation, and holds the partition.
    pub fn check_member_fetch(&self, group: &str, member_id: &str, generation: u32, topic: &str, partition: PartitionId) -> Result<()> {
        lock(&self.inner.groups).check_commit(group, Some((member_id, generation)), &[(topic, partition)])
    }

    /// Every group's membership without heartbeat times (a cluster
    /// coordinator replicates it; see [`crate::GroupSnapshot`]).
    pub fn export_groups(&self) -> BTreeMap<String, crate::GroupSnapshot> {
        lock(&self.inner.groups).export()
    }

    /// Replace every group's membership (a node taking over as a cluster's
    /// coordinator); each member's session restarts now.
    pub fn import_groups(&self, groups: BTreeMap<String, crate::GroupSnapshot>) {
        lock(&self.inner.groups).import(groups, self.now_ms());
    }

    /// Live members of a group (0 when unknown).
    pub fn group_member_count(&self, group: &str) -> usize {
        lock(&self.inner.groups).member_count(group)
    }

    pub fn leave_group(&self, group: &str, member_id: &str) -> Result<()> {
        let counts = self.partition_counts();
        lock(&self.inner.groups).leave(group, member_id, self.now_ms(), &counts)
    }

    /// Commits offsets (durably, per the fsync policy) in `__consumer_offsets`.
    /// `member = Some((id, generation))` for group members (fenced by
    /// generation), `None` for standalone consumers of a group with no members.
    pub async fn commit_offsets(&self, group: &str, member: Option<(&str, u32)>, offsets: Vec<OffsetCommit>) -> Result<()> {
        self.check_open()?;
        let parts: Vec<(&str, PartitionId)> = offsets.iter().map(|c| (c.topic.as_str(), c.partition)).collect();
        lock(&self.inner.groups).check_commit(group, member, &parts)?;
        if offsets.len() > MAX_PRODUCE_RECORDS {
            return Err(LogError::InvalidRequest("too many offsets in one commit".into()));
        }
        let now = self.now_ms();
        let t = self.topic(OFFSETS_TOPIC)?;
        let part = key_partition(group.as_bytes(), t.partitions.len() as u32);
        let mut entries = Vec::with_capacity(offsets.len());
        let mut records = Vec::with_capacity(offsets.len());
        for c in offsets {
            let p = self.partition(&c.topic, c.partition)?;
            if c.metadata.len() > 4096 {
                return Err(LogError::InvalidRequest("commit metadata longer than 4096 bytes".into()));
            }
            // Past the end would wedge the group (every fetch out of range);
            // below the log start is allowed (Kafka allows it) and is reset
            // by the consumer's policy when used.
            if c.offset > p.latest() {
                return Err(LogError::OffsetOutOfRange {
                    topic: p.topic.to_string(),
                    partition: c.partition,
                    requested: c.offset,
                    earliest: p.earliest(),
                    latest: p.latest(),
                });
            }
            let key = OffsetKey { g: group.to_string(), t: p.topic.to_string(), p: c.partition.0 };
            let value = CommittedOffset { offset: c.offset, metadata: c.metadata, commit_ms: now };
            records.push(
                ProduceRecord::keyed(json_bytes(&key)?, json_bytes(&value)?).with_partition(part).with_timestamp(now),
            );
            entries.push((key, value));
        }
        let _gate = self.inner.offsets_gate.read().await;
        for r in self.produce_to(&t, records).await? {
            r?;
        }
        let mut committed = lock(&self.inner.committed);
        for (k, v) in entries {
            committed.insert(k, v);
        }
        Ok(())
    }

    /// Committed offset of a group for one partition.
    pub fn committed_offset(&self, group: &str, topic: &str, partition: PartitionId) -> Option<CommittedOffset> {
        let key = OffsetKey { g: group.to_string(), t: topic.to_string(), p: partition.0 };
        lock(&self.inner.committed).get(&key).cloned()
    }

    /// Deletes a group (kafka-consumer-groups `--delete`): its committed
    /// offsets (tombstones in `__consumer_offsets`) and its empty
    /// membership record. Refused while the group has members
    /// ([`LogError::GroupActive`]); [`LogError::UnknownGroup`] when there
    /// is neither.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.delete_group_if(group, |_| true).await.map(|_| ())
    }

    /// [`Log::delete_group`] if `still(self)` holds once no commit is in
    /// flight (checked under the gate commits take); `Ok(false)`: it did not.
    async fn delete_group_if(&self, group: &str, still: impl FnOnce(&Log) -> bool) -> Result<bool> {
        validate_group_name(group)?;
        let _gate = self.inner.offsets_gate.write().await;
        if !still(self) {
            return Ok(false);
        }
        let known = lock(&self.inner.groups).forget(group)?;
        let keys: Vec<OffsetKey> = lock(&self.inner.committed).keys().filter(|k| k.g == group).cloned().collect();
        if keys.is_empty() {
            return if known { Ok(true) } else { Err(LogError::UnknownGroup(group.to_string())) };
        }
        let t = self.topic(OFFSETS_TOPIC)?;
        let part = key_partition(group.as_bytes(), t.partitions.len() as u32);
        let mut records = Vec::new();
        for k in &keys {
            records.push(ProduceRecord { key: Some(json_bytes(k)?), value: None, ..Default::default() }.with_partition(part));
        }
        for r in self.produce_to(&t, records).await? {
            r?;
        }
        let mut committed = lock(&self.inner.committed);
        for k in keys {
            committed.remove(&k);
        }
        tracing::info!(group, "group deleted");
        Ok(true)
    }

    /// Kafka's `offsets.retention.minutes`: deletes (as [`Log::delete_group`])
    /// every group that has had no members and no commit for
    /// `offsets_retention` at `now_ms` (and empty membership records with
    /// no offsets, once as old). A group's time without members is
    /// counted from the last call that saw it with some, or from when this
    /// log was opened (membership does not survive a restart), so offsets
    /// never go earlier than the setting says. Returns how many groups'
    /// offsets went.
    /// Run after each maintenance round; tests call it directly.
    pub async fn expire_offsets(&self, now_ms: i64) -> Result<usize> {
        let Some(keep) = self.inner.config.offsets_retention else { return Ok(0) };
        let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let mut newest: BTreeMap<String, i64> = BTreeMap::new();
        for (k, v) in lock(&self.inner.committed).iter() {
            let t = newest.entry(k.g.clone()).or_insert(i64::MIN);
            *t = (*t).max(v.commit_ms);
        }
        let mut stale = Vec::new();
        {
            let groups = lock(&self.inner.groups);
            let mut seen = lock(&self.inner.group_seen);
            let names: BTreeSet<String> = groups.group_names().into_iter().collect();
            // Every group with a membership record or offsets, once. One
            // without offsets (members that left before committing) goes
            // the same way: it counts against `max_groups`.
            for g in names.iter().chain(newest.keys().filter(|g| !names.contains(*g))) {
                if groups.member_count(g) > 0 {
                    seen.insert(g.clone(), now_ms);
                    continue;
                }
                let last_commit = newest.get(g).copied();
                let active = seen.get(g).copied().unwrap_or(self.inner.opened_ms).max(last_commit.unwrap_or(i64::MIN));
                if now_ms.saturating_sub(active) >= keep {
                    stale.push((g.clone(), last_commit.is_some()));
                }
            }
            seen.retain(|g, _| newest.contains_key(g) || names.contains(g));
        }
        let mut expired = 0;
        for (g, had_offsets) in stale {
            // Again under the gate: a commit that came meanwhile keeps the group.
            let still = |log: &Log| {
                let newest = lock(&log.inner.committed).iter().filter(|(k, _)| k.g == g).map(|(_, v)| v.commit_ms).max();
                newest.is_none_or(|t| now_ms.saturating_sub(t) >= keep)
            };
            match self.delete_group_if(&g, still).await {
                Ok(false) => {}
                Ok(true) => {
                    lock(&self.inner.group_seen).remove(&g);
                    // Counted: groups whose offsets went (a bare record is housekeeping).
                    if had_offsets {
                        expired += 1;
                        weft_metrics::get().log_groups_expired.inc();
                        tracing::info!(group = %g, retention_ms = keep, "group offsets expired");
                    }
                }
                // A member joined meanwhile: kept, seen again next round.
                Err(LogError::GroupActive { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// Forgets a group's empty membership record, keeping its offsets (a
    /// cluster node's coordinator: the offsets of replicated topics live in
    /// the metadata); whether there was one. Refused while it has members.
    pub fn forget_group(&self, group: &str) -> Result<bool> {
        validate_group_name(group)?;
        lock(&self.inner.groups).forget(group)
    }

    /// Groups with members or committed offsets.
    pub fn list_groups(&self) -> Vec<GroupSummary> {
        let mut names: Vec<String> = lock(&self.inner.groups).group_names();
        names.extend(lock(&self.inner.committed).keys().map(|k| k.g.clone()));
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|g| self.describe_group(&g).ok())
            .filter(|d| !d.members.is_empty() || !d.offsets.is_empty())
            .map(|d| GroupSummary {
                group: d.group,
                state: d.state,
                members: d.members.len(),
                generation: d.generation,
                total_lag: d.total_lag,
            })
            .collect()
    }

    /// Members, assignment, committed offsets and lag of a group. Lag is
    /// reported for every partition that is assigned or has a commit.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        validate_group_name(group)?;
        let (generation, strategy, members) = lock(&self.inner.groups).describe(group).unwrap_or_default();
        let committed: Vec<(OffsetKey, CommittedOffset)> = lock(&self.inner.committed)
            .iter()
            .filter(|(k, _)| k.g == group)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if members.is_empty() && committed.is_empty() {
            return Err(LogError::UnknownGroup(group.to_string()));
        }
        let mut parts: BTreeMap<(String, u32), Option<Offset>> = BTreeMap::new();
        for m in &members {
            for (t, p) in &m.assignment {
                parts.entry((t.to_string(), p.0)).or_insert(None);
            }
        }
        for (k, v) in &committed {
            parts.insert((k.t.clone(), k.p), Some(v.offset));
        }
        let mut offsets = Vec::new();
        for ((t, p), c) in parts {
            let Ok(part) = self.partition(&t, PartitionId(p)) else { continue };
            let (log_start, latest) = (part.earliest(), part.latest());
            // Clamped to what exists: a commit below the log start (retention)
            // is reset to it when used, so it lags no more than the log holds.
            let from = c.unwrap_or(log_start).clamp(log_start, latest);
            offsets.push(PartitionLag {
                topic: part.topic.clone(),
                partition: PartitionId(p),
                committed: c,
                log_start,
                latest,
                lag: latest.0.saturating_sub(from.0),
            });
        }
        let total_lag = offsets.iter().map(|o| o.lag).sum();
        Ok(GroupDescription {
            group: group.to_string(),
            state: if members.is_empty() { "empty" } else { "stable" }.to_string(),
            generation,
            strategy,
            members,
            offsets,
            total_lag,
        })
    }
}

/// What one maintenance round did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceReport {
    pub segments_rolled: usize,
    pub segments_deleted: usize,
    pub records_compacted: u64,
    pub members_expired: usize,
    pub errors: usize,
}


/// The topic's produced-records/bytes counters (looked up once per topic).
fn count_produced(t: &Topic, records: u64, bytes: u64) {
    if records > 0 {
        let (r, b) = t.series.get_or_init(|| {
            let m = weft_metrics::get();
            let topic = weft_metrics::l1("topic", t.name.as_str());
            (m.produced_records.get_or_create_owned(&topic), m.produced_bytes.get_or_create_owned(&topic))
        });
        r.inc_by(records);
        b.inc_by(bytes);
    }
}
fn json_bytes<T: Serialize>(v: &T) -> Result<Bytes> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|e| LogError::InvalidRequest(format!("encoding failed: {e}")))
}

fn describe(t: &Topic) -> TopicDescription {
    TopicDescription {
        name: t.name.clone(),
        internal: t.name.is_internal(),
        created_ms: t.created_ms,
        config: t.config.clone(),
        partitions: t.partitions.iter().map(|p| p.stats()).collect(),
    }
}

/// The fsync policy and the least time between recoveries of a poisoned partition.
fn write_policy(c: &LogConfig) -> (FsyncPolicy, Duration) {
    (c.fsync, Duration::from_millis(c.poison_retry_ms))
}

fn open_partitions(
    files: &Arc<OpenFiles>,
    tdir: &Path,
    meta: &TopicMeta,
    (fsync, poison_retry): (FsyncPolicy, Duration),
) -> Result<Vec<Arc<Partition>>> {
    (0..meta.config.partitions)
        .map(|i| {
            Partition::open(
                files.clone(),
                tdir.join(i.to_string()),
                meta.name.clone(),
                PartitionId(i),
                meta.config.clone(),
                fsync,
                poison_retry,
            )
            .map(Arc::new)
        })
        .collect()
}

/// Creates a topic atomically: the whole topic (metadata, every partition
/// directory with its first, empty segment) is built under `staging/` and
/// made durable, then published by one rename into `topics/`. A failure
/// before the rename removes the staging copy (and `open` removes one left
/// by a crash); a failure after it (opening the partitions) moves the topic
/// out again, so a failed create leaves nothing behind.
fn create_topic_files(inner: &Inner, meta: TopicMeta) -> Result<Topic> {
    let st = &*inner.storage;
    let staging = inner.dir.join("staging").join(meta.name.as_str());
    let topics_dir = inner.dir.join("topics");
    let final_dir = topics_dir.join(meta.name.as_str());
    let build = || -> Result<()> {
        if st.exists(&staging) {
            st.remove_dir_all(&staging).map_err(|e| LogError::io("clear staging", &staging, e))?;
        }
        st.create_dir_all(&staging).map_err(|e| LogError::io("create staging dir", &staging, e))?;
        st.create_dir_all(&topics_dir).map_err(|e| LogError::io("create topics dir", &topics_dir, e))?;
        for i in 0..meta.config.partitions {
            let pdir = staging.join(i.to_string());
            st.create_dir_all(&pdir).map_err(|e| LogError::io("create partition dir", &pdir, e))?;
            let seg = pdir.join(crate::segment::log_file_name(Offset::ZERO));
            // Opened and closed at once: creating N partitions holds no N descriptors.
            drop(st.open(&seg, true).map_err(|e| LogError::io("create segment", &seg, e))?);
            st.sync_dir(&pdir).map_err(|e| LogError::io("sync dir", &pdir, e))?;
        }
        let json =
            serde_json::to_vec_pretty(&meta).map_err(|e| LogError::InvalidRequest(format!("encoding metadata: {e}")))?;
        let meta_path = staging.join("topic.json");
        // Syncs the staging directory too (the partition directories' entries).
        write_atomic(st, &meta_path, &json).map_err(|e| LogError::io("write topic metadata", &meta_path, e))?;
        // The rename publishes the topic: before it, open() ignores (and removes) staging.
        st.rename(&staging, &final_dir).map_err(|e| LogError::io("publish topic", &final_dir, e))
    };
    if let Err(e) = build() {
        if st.exists(&staging) && st.remove_dir_all(&staging).is_err() {
            tracing::warn!(path = %staging.display(), "could not remove a failed topic creation; removed on next open");
        }
        return Err(e);
    }
    let opened = st
        .sync_dir(&topics_dir)
        .map_err(|e| LogError::io("sync dir", &topics_dir, e))
        .and_then(|()| open_partitions(&inner.files, &final_dir, &meta, write_policy(&inner.config)));
    match opened {
        Ok(partitions) => {
            Ok(Topic { name: meta.name, created_ms: meta.created_ms, config: meta.config, partitions, partitioner: Partitioner::new(), series: Default::default() })
        }
        Err(e) => {
            tracing::error!(topic = %meta.name, error = %e, "opening a new topic failed: removing it");
            inner.files.forget_under(&final_dir);
            let trash = inner.dir.join("trash");
            let to = trash.join(format!("{}-{}", meta.name, inner.clock.now_ms()));
            let undo = st
                .create_dir_all(&trash)
                .and_then(|()| st.rename(&final_dir, &to))
                .and_then(|()| st.sync_dir(&topics_dir))
                .and_then(|()| st.remove_dir_all(&to));
            if let Err(u) = undo {
                tracing::error!(topic = %meta.name, error = %u, "could not remove the failed topic");
            }
            Err(e)
        }
    }
}

/// New partitions first, then the metadata that names them: a crash in
/// between leaves empty partition directories that the old metadata does
/// not count (a later alter reuses them); once the metadata is durable the
/// running partitions take the new limits.
fn alter_topic_files(inner: &Inner, old: &Topic, config: TopicConfig) -> Result<Topic> {
    let st = &*inner.storage;
    let tdir = inner.dir.join("topics").join(old.name.as_str());
    let mut partitions = old.partitions.clone();
    for i in old.partitions.len() as u32..config.partitions {
        let dir = tdir.join(i.to_string());
        let p = Partition::open(inner.files.clone(), dir, old.name.clone(), PartitionId(i), config.clone(), inner.config.fsync, write_policy(&inner.config).1)?;
        partitions.push(Arc::new(p));
    }
    let meta = TopicMeta { format: TOPIC_META_FORMAT, name: old.name.clone(), created_ms: old.created_ms, config: config.clone() };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| LogError::InvalidRequest(format!("encoding metadata: {e}")))?;
    let meta_path = tdir.join("topic.json");
    write_atomic(st, &meta_path, &json).map_err(|e| LogError::io("write topic metadata", &meta_path, e))?;
    for p in &old.partitions {
        p.set_config(config.clone());
    }
    Ok(Topic { name: old.name.clone(), created_ms: old.created_ms, config, partitions, partitioner: Partitioner::new(), series: Default::default() })
}

fn load_topics(
    storage: &Arc<dyn Storage>,
    files: &Arc<OpenFiles>,
    dir: &Path,
    fsync: (FsyncPolicy, Duration),
) -> Result<BTreeMap<TopicName, Arc<Topic>>> {
    let st = &**storage;
    st.create_dir_all(dir).map_err(|e| LogError::io("create log dir", dir, e))?;
    for leftover in ["staging", "trash"] {
        let p = dir.join(leftover);
        if st.exists(&p) {
            let names = st.list_dir(&p).unwrap_or_default();
            if !names.is_empty() {
                // staging: topics whose creation did not finish; trash: deleted topics.
                tracing::warn!(dir = %p.display(), topics = ?names, "removing unfinished topic creations or deletions");
            }
            st.remove_dir_all(&p).map_err(|e| LogError::io("remove leftovers", &p, e))?;
        }
    }
    let topics_dir = dir.join("topics");
    st.create_dir_all(&topics_dir).map_err(|e| LogError::io("create topics dir", &topics_dir, e))?;
    let mut out = BTreeMap::new();
    for name in st.list_dir(&topics_dir).map_err(|e| LogError::io("list topics", &topics_dir, e))? {
        let tdir = topics_dir.join(&name);
        if !st.is_dir(&tdir) {
            continue;
        }
        let meta_path = tdir.join("topic.json");
        let bytes = read_all(st, &meta_path, 1 << 20).map_err(|e| LogError::io("read topic metadata", &meta_path, e))?;
        let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
            path: meta_path.clone(),
            pos: 0,
            reason: format!("bad topic metadata: {e}"),
        })?;
        if meta.name.as_str() != name || meta.format != TOPIC_META_FORMAT || meta.config.validate().is_err() {
            return Err(LogError::Corrupt { path: meta_path, pos: 0, reason: "topic metadata does not match its directory".into() });
        }
        let partitions = open_partitions(files, &tdir, &meta, fsync)?;
        out.insert(
            meta.name.clone(),
            Arc::new(Topic { name: meta.name, created_ms: meta.created_ms, config: meta.config, partitions, partitioner: Partitioner::new(), series: Default::default() }),
        );
    }
    Ok(out)
}
