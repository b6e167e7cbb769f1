//! Replicated partitions: a partition raft group's state machine assigns
//! each committed record its offset (the count of records applied before
//! it), and an applier task writes it into the node's weft-log partition.
//!
//! Offsets and timestamps come from the raft entry, so every replica holds
//! the same record at the same offset. The applier appends only when the
//! log's end offset equals the assigned offset and skips records already
//! there, so replaying the raft log after a restart writes nothing twice.
//! The high watermark is the applier's end offset: committed and applied.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use weft_log::{Log, Offset, OffsetSpec, PartitionId, ProduceRecord, TopicConfig};

use crate::error::{ClusterError, Result};
use crate::host::StateMachine;

/// One record as carried in a raft entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EntryRecord {
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    /// None: a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// First byte of a batch entry. Stage 1's single-record entries start with
/// the top byte of a non-negative timestamp (0x00..0x7f), so the two never mix up.
const BATCH_MAGIC: u8 = 0xB1;
/// u32 length meaning "absent" (no key, tombstone).
const NONE_LEN: u32 = u32::MAX;

fn put_opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&NONE_LEN.to_be_bytes()),
    }
}

/// A bounds-checked reader: every length is checked against what is left
/// before anything is sliced or allocated.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(ClusterError::StateMachine("bad record entry: truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn i64(&mut self) -> Result<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn opt_slice(&mut self) -> Result<Option<&'a [u8]>> {
        match self.u32()? {
            NONE_LEN => Ok(None),
            n => Ok(Some(self.take(n as usize)?)),
        }
    }
}

impl EntryRecord {
    /// Stage 1's single-record entry: `ts i64 BE | key length u32 BE (u32::MAX: none) | key | value`.
    /// Raft logs written before batches may hold it ([`walk_entry`] reads it); only tests write it now.
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len));
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        put_opt(&mut out, self.key.as_deref());
        out.extend_from_slice(self.value.as_deref().unwrap_or_default());
        out
    }
}

/// A produce of N records is one raft entry: `0xB1 | count u32 | count ×
/// [ts i64 | key (len u32, u32::MAX = none) | value (same) | headers u32 |
/// headers × (name len u32, name, value len u32, value)]`, all big-endian.
pub fn encode_batch(records: &[EntryRecord]) -> Vec<u8> {
    let size: usize = records.iter().map(|r| 24 + r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + r.headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>()).sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(BATCH_MAGIC);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        out.extend_from_slice(&r.timestamp_ms.to_be_bytes());
        put_opt(&mut out, r.key.as_deref());
        put_opt(&mut out, r.value.as_deref());
        out.extend_from_slice(&(r.headers.len() as u32).to_be_bytes());
        for (k, v) in &r.headers {
            put_opt(&mut out, Some(k.as_bytes()));
            put_opt(&mut out, Some(v));
        }
    }
    out
}

/// One record of an entry as slices of it (no copy), from [`walk_entry`].
struct RecordView<'a> {
    timestamp_ms: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a [u8], &'a [u8])>,
}

/// Walks the records of an entry, batch or stage 1 single record, checking
/// its whole structure; `f` sees each record (with its headers when
/// `headers`), and the count is returned. Counts are checked against the
/// bytes left (each record takes at least 20 bytes, a header 8), so a bad
/// count cannot size an allocation. The one parser behind
/// [`decode_entry`], `entry_count` and the applier's shared decode, so
/// all three agree on which entries are valid.
fn walk_entry<'a>(b: &'a [u8], headers: bool, mut f: impl FnMut(RecordView<'a>)) -> Result<usize> {
    if b.first() != Some(&BATCH_MAGIC) {
        let mut r = Reader(b);
        let timestamp_ms = r.i64()?;
        let key = r.opt_slice()?;
        f(RecordView { timestamp_ms, key, value: Some(r.0), headers: Vec::new() });
        return Ok(1);
    }
    let mut r = Reader(&b[1..]);
    let count = r.u32()? as usize;
    if count > r.0.len() / 20 {
        return Err(ClusterError::StateMachine("bad record entry: count larger than the entry".into()));
    }
    for _ in 0..count {
        let timestamp_ms = r.i64()?;
        let key = r.opt_slice()?;
        let value = r.opt_slice()?;
        let n = r.u32()? as usize;
        if n > r.0.len() / 8 {
            return Err(ClusterError::StateMachine("bad record entry: header count larger than the entry".into()));
        }
        let mut hs = Vec::with_capacity(if headers { n } else { 0 });
        for _ in 0..n {
            let k = r.opt_slice()?.ok_or_else(|| ClusterError::StateMachine("bad record entry: header without a name".into()))?;
            let v = r.opt_slice()?.unwrap_or_default();
            if headers {
                hs.push((k, v));
            }
        }
        f(RecordView { timestamp_ms, key, value, headers: hs });
    }
    if !r.0.is_empty() {
        return Err(ClusterError::StateMachine("bad record entry: trailing bytes".into()));
    }
    Ok(count)
}

/// Records of an entry, batch or stage 1 single record, copied out.
pub fn decode_entry(b: &[u8]) -> Result<Vec<EntryRecord>> {
    let mut out = Vec::new();
    walk_entry(b, true, |r| {
        out.push(EntryRecord {
            timestamp_ms: r.timestamp_ms,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r.headers.into_iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec())).collect(),
        })
    })?;
    Ok(out)
}

/// The records of an entry as the copy's produce records, their keys and
/// values slices of the entry's buffer (no copy): what the applier writes.
fn decode_entry_shared(data: &Bytes, p: PartitionId) -> Result<Vec<ProduceRecord>> {
    let at = |s: &[u8]| data.slice_ref(s);
    let mut out = Vec::new();
    walk_entry(data, true, |r| {
        out.push(ProduceRecord {
            partition: Some(p),
            timestamp_ms: Some(r.timestamp_ms),
            key: r.key.map(at),
            value: r.value.map(at),
            headers: r.headers.into_iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), at(v))).collect(),
        })
    })?;
    Ok(out)
}

/// How many records an entry holds, without copying them. Deterministic on
/// every replica: an entry that does not decode holds none (it is refused
/// the same way everywhere and takes no offsets).
fn entry_count(b: &[u8]) -> u64 {
    walk_entry(b, false, |_| {}).map_or(0, |n| n as u64)
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
    /// Records fetched from other replicas after installing a snapshot.
    pub caught_up_records: AtomicU64,
    /// Times catch-up found the records it needed removed on every replica
    /// asked (retention, compaction) and restarted this copy at their log start.
    pub catch_up_resets: AtomicU64,
    /// Woken whenever the high watermark moves.
    pub moved: tokio::sync::Notify,
    /// Idempotent producers remembered, and evicted (least recently used) since start.
    pub producers: AtomicU64,
    pub producer_evictions: AtomicU64,
}

impl PartitionHandle {
    /// A copy with nothing applied yet.
    fn new(topic: String, partition: u32) -> Self {
        PartitionHandle {
            topic,
            partition,
            high_watermark: AtomicU64::new(0),
            failed: Default::default(),
            caught_up_records: AtomicU64::new(0),
            catch_up_resets: AtomicU64::new(0),
            moved: tokio::sync::Notify::new(),
            producers: AtomicU64::new(0),
            producer_evictions: AtomicU64::new(0),
        }
    }

    fn set_high_watermark(&self, hw: u64) {
        self.high_watermark.store(hw, Ordering::Release);
        self.moved.notify_waiters();
    }

    /// Wait until this copy holds every offset below `end` (or it failed, or
    /// `within` passed): an acknowledged produce is then readable on the node
    /// that acknowledged it (read-your-writes there). False on timeout.
    pub async fn wait_for(&self, end: u64, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.high_watermark.load(Ordering::Acquire) >= end || self.failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return false;
            }
        }
    }
}

/// What a catch-up fetch found on another replica's copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatchUpBatch {
    /// Records from the offset asked for on, in offset order: a compacted
    /// copy has gaps, and some may be at or past the snapshot's end.
    pub records: Vec<(u64, EntryRecord)>,
    /// The source copy's first offset (retention or compaction removed
    /// everything below). Past the offset asked for: the source no longer
    /// has it, and `records` is empty.
    pub log_start: u64,
    /// The source copy's high watermark (applied there).
    pub high_watermark: u64,
}

/// Where a replica that installed a snapshot gets the records the snapshot
/// stands for: another replica's copy (the binary fetches them over the
/// native protocol). Records come back at the offsets they have there.
pub trait CatchUp: Send + Sync {
    /// Records of the partition from `from` on (`to`: where the snapshot
    /// ends, a hint for how many). When no replica asked has `from` because
    /// their logs start later, an empty batch with `log_start` past `from`
    /// (the lowest such start); an error when none answered.
    fn fetch<'a>(&'a self, topic: &'a str, partition: u32, from: u64, to: u64) -> Pin<Box<dyn Future<Output = Result<CatchUpBatch>> + Send + 'a>>;
}

/// Set once the node's record plane exists (it needs the node to be built first).
pub type CatchUpSlot = Arc<std::sync::OnceLock<Arc<dyn CatchUp>>>;

enum ToApplier {
    /// Records of one entry, the first at this offset, and the span it was
    /// applied in (`raft.apply` of a traced proposal, else none): the copy's
    /// `log.append` joins that trace.
    Apply(u64, Bytes, tracing::Span),
    /// A snapshot was installed: the copy must hold every offset below this.
    Restore(u64),
    /// Fsync the copy now (a snapshot waits for it; with `log_store.fsync =
    /// never` nothing else would).
    Flush,
    /// The group was closed on this node for good (a moved-off replica):
    /// drop the copy's records once everything before is written, and stop.
    Retire,
}

/// The partition group's state machine.
///
/// Snapshots: the state is the next offset. A snapshot may stand in for the
/// log only where the local copy has the records on disk (`snapshot_point`:
/// the last applied entry whose records are below the copy's synced
/// offset), so a restart never needs entries the log no longer has. A
/// follower that installs a snapshot fetches the records below it from
/// another replica's copy before it applies anything after it.
pub struct PartitionSm {
    next_offset: u64,
    tx: mpsc::UnboundedSender<ToApplier>,
    /// (raft index, offset after the entry, undo of its producer-state
    /// changes) of applied entries not yet covered by a snapshot point: a
    /// snapshot point may be older than the last applied entry, and its
    /// producer state must be the one at that point.
    applied: std::collections::VecDeque<(u64, u64, Undo)>,
    log: Option<(Log, String, u32)>,
    /// Idempotent producers: per producer id, what dedups its retries.
    producers: BTreeMap<u64, ProducerState>,
    /// Where the producer counts are shown (stats only; apply does not read it).
    handle: Option<Arc<PartitionHandle>>,
    /// A `Flush` is queued to the applier and not done yet.
    flushing: Arc<std::sync::atomic::AtomicBool>,
    /// The node's applier stats (the queued counts are kept here).
    stats: Arc<ApplyStats>,
}

/// The producer states an entry changed, as they were before it (None: absent).
type Undo = Vec<(u64, Option<ProducerState>)>;

/// First byte of an idempotent batch entry: `0xB2 | producer id u64 |
/// first sequence u64 | max producers u32 | batch entry (0xB1 ...)`.
const IDEM_MAGIC: u8 = 0xB2;
/// First byte of the answer to an idempotent batch refused for its
/// sequence: `0xE1 | expected sequence u64 | got u64`.
const SEQ_ERROR: u8 = 0xE1;
/// Batches remembered per producer (Kafka keeps 5 in flight).
const PRODUCER_BATCHES: usize = 5;

/// One idempotent producer's state in one partition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProducerState {
    /// Raft index of its last applied batch: least recently used is evicted first.
    last_used: u64,
    /// Sequence the next new batch must start at.
    next_seq: u64,
    /// (first sequence, record count, first offset) of its last batches.
    batches: std::collections::VecDeque<(u64, u64, u64)>,
}

/// An idempotent batch entry for `records`.
pub fn encode_idempotent_batch(producer_id: u64, sequence: u64, max_producers: u32, records: &[EntryRecord]) -> Vec<u8> {
    let batch = encode_batch(records);
    let mut out = Vec::with_capacity(21 + batch.len());
    out.push(IDEM_MAGIC);
    out.extend_from_slice(&producer_id.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&max_producers.to_be_bytes());
    out.extend_from_slice(&batch);
    out
}

/// What a produce entry's apply answered.
#[derive(Debug, Clone, PartialEq)]
pub enum ProduceAnswer {
    /// Offset of the first record (of the original append for a duplicate).
    Offset(u64),
    /// An idempotent batch whose sequence is not the next one (a gap, or
    /// older than the batches remembered): nothing was appended.
    OutOfOrder { expected: u64, got: u64 },
}

/// Decode an apply answer; None when the entry was refused as undecodable.
pub fn decode_answer(b: &[u8]) -> Option<ProduceAnswer> {
    if let Ok(a) = <[u8; 8]>::try_from(b) {
        return Some(ProduceAnswer::Offset(u64::from_be_bytes(a)));
    }
    if b.len() == 17 && b[0] == SEQ_ERROR {
        let mut r = Reader(&b[1..]);
        return Some(ProduceAnswer::OutOfOrder { expected: r.u64().ok()?, got: r.u64().ok()? });
    }
    None
}

impl PartitionSm {
    /// Apply an idempotent batch: a duplicate answers its original offsets, a
    /// gap answers an error, either way appending nothing.
    fn apply_idempotent(&mut self, index: u64, data: &Bytes) -> Vec<u8> {
        let mut r = Reader(&data[1..]);
        let (Ok(id), Ok(seq), Ok(max)) = (r.u64(), r.u64(), r.u32()) else {
            return Vec::new();
        };
        let batch = data.slice(data.len() - r.0.len()..);
        let count = entry_count(&batch);
        if count == 0 {
            return Vec::new();
        }
        let known = self.producers.get(&id);
        if let Some(st) = known {
            if let Some((_, _, off)) = st.batches.iter().find(|(s, n, _)| *s == seq && *n == count) {
                return off.to_be_bytes().to_vec();
            }
            if seq != st.next_seq {
                let mut out = vec![SEQ_ERROR];
                out.extend_from_slice(&st.next_seq.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                return out;
            }
        }
        // A producer not known here (new, or evicted) starts at any sequence.
        let mut undo = vec![(id, known.cloned())];
        if known.is_none() && max > 0 && self.producers.len() >= max as usize {
            if let Some((&old, _)) = self.producers.iter().min_by_key(|(_, s)| s.last_used) {
                undo.push((old, self.producers.remove(&old)));
                if let Some(h) = &self.handle {
                    h.producer_evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let offset = self.next_offset;
        self.next_offset += count;
        let st = self.producers.entry(id).or_default();
        st.last_used = index;
        st.next_seq = seq + count;
        st.batches.push_back((seq, count, offset));
        while st.batches.len() > PRODUCER_BATCHES {
            st.batches.pop_front();
        }
        self.applied.push_back((index, self.next_offset, undo));
        if let Some(h) = &self.handle {
            h.producers.store(self.producers.len() as u64, Ordering::Relaxed);
        }
        self.send_apply(offset, batch);
        offset.to_be_bytes().to_vec()
    }

    /// Queue an entry's records to the applier, counted while queued.
    fn send_apply(&self, offset: u64, data: Bytes) {
        let n = data.len();
        self.stats.queued(n);
        if self.tx.send(ToApplier::Apply(offset, data, tracing::Span::current())).is_err() {
            // The applier stopped (it failed; the handle says so): never taken.
            self.stats.taken(n);
        }
    }

    /// The producer state as it was right after entry `index` applied.
    fn producers_at(&self, index: u64) -> BTreeMap<u64, ProducerState> {
        let mut p = self.producers.clone();
        for (_, _, undo) in self.applied.iter().rev().take_while(|(i, _, _)| *i > index) {
            for (id, prev) in undo.iter().rev() {
                match prev {
                    Some(s) => p.insert(*id, s.clone()),
                    None => p.remove(id),
                };
            }
        }
        p
    }

    /// Count of idempotent producers remembered.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }
}

/// `next offset u64`, then (only when there are producers, so old snapshots
/// and producer-less ones are the same 8 bytes) `count u32 | count × [id u64 |
/// last used u64 | next seq u64 | batches u32 | batches × (seq, count, offset u64)]`.
fn encode_snapshot(next_offset: u64, producers: &BTreeMap<u64, ProducerState>) -> Vec<u8> {
    let mut out = next_offset.to_be_bytes().to_vec();
    if producers.is_empty() {
        return out;
    }
    out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
    for (id, s) in producers {
        for v in [*id, s.last_used, s.next_seq] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(s.batches.len() as u32).to_be_bytes());
        for (a, b, c) in &s.batches {
            for v in [*a, *b, *c] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    out
}

/// Checks a partition snapshot as a replica installing it would (it comes
/// from the leader): the next offset and how many producers it remembers.
/// For the fuzz target; [`StateMachine::restore`] uses the same decoder.
pub fn check_snapshot(data: &[u8]) -> Result<(u64, usize)> {
    decode_snapshot(data).map(|(next, p)| (next, p.len()))
}

fn decode_snapshot(data: &[u8]) -> Result<(u64, BTreeMap<u64, ProducerState>)> {
    let mut r = Reader(data);
    let next = r.u64()?;
    let mut producers = BTreeMap::new();
    if r.0.is_empty() {
        return Ok((next, producers));
    }
    let n = r.u32()? as usize;
    if n > r.0.len() / 28 {
        return Err(ClusterError::StateMachine("partition snapshot: producer count larger than the snapshot".into()));
    }
    for _ in 0..n {
        let (id, last_used, next_seq) = (r.u64()?, r.u64()?, r.u64()?);
        let nb = r.u32()? as usize;
        if nb > r.0.len() / 24 {
            return Err(ClusterError::StateMachine("partition snapshot: batch count larger than the snapshot".into()));
        }
        let mut batches = std::collections::VecDeque::with_capacity(nb);
        for _ in 0..nb {
            batches.push_back((r.u64()?, r.u64()?, r.u64()?));
        }
        producers.insert(id, ProducerState { last_used, next_seq, batches });
    }
    if !r.0.is_empty() {
        return Err(ClusterError::StateMachine("partition snapshot: trailing bytes".into()));
    }
    Ok((next, producers))
}

impl StateMachine for PartitionSm {
    fn apply(&mut self, index: u64, data: &Bytes) -> Vec<u8> {
        // Offsets are assigned here, at apply: the same on every replica, and
        // a batch of N records takes N consecutive offsets.
        if data.first() == Some(&IDEM_MAGIC) {
            return self.apply_idempotent(index, data);
        }
        let count = entry_count(data);
        if count == 0 {
            return Vec::new();
        }
        let offset = self.next_offset;
        self.next_offset += count;
        self.applied.push_back((index, self.next_offset, Vec::new()));
        // Not a blocking send: the driver must not wait for a disk. The queue
        // is bounded where entries enter it: over `cluster.apply_queue_max_bytes`
        // a leader refuses produces and a follower drops its leaders' appends
        // (node.rs `admit_produce`, `Driver::holds_back`).
        // The entry's own buffer, shared with the raft log (no copy).
        self.send_apply(offset, data.clone());
        offset.to_be_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        encode_snapshot(self.next_offset, &self.producers)
    }
    fn restore(&mut self, data: &[u8]) -> Result<()> {
        let (next, producers) = decode_snapshot(data)?;
        self.next_offset = next;
        self.producers = producers;
        if let Some(h) = &self.handle {
            h.producers.store(self.producers.len() as u64, Ordering::Relaxed);
        }
        self.applied.clear();
        let _ = self.tx.send(ToApplier::Restore(self.next_offset));
        Ok(())
    }
    fn retire(&mut self) {
        let _ = self.tx.send(ToApplier::Retire);
    }
    fn snapshot_point(&mut self, applied: u64) -> Option<(u64, Vec<u8>)> {
        let Some((log, topic, partition)) = &self.log else {
            // No copy (raft-layer tests): the count is the whole state.
            return Some((applied, self.snapshot()));
        };
        let synced = log.partition_stats(topic).ok()?.into_iter().find(|p| p.partition.0 == *partition)?.synced_offset.0;
        if synced < self.next_offset && !self.flushing.swap(true, Ordering::AcqRel) {
            // A snapshot is due and the copy is not durable that far: fsync
            // it (once at a time), so the next try gets further. Without
            // this, `log_store.fsync = never` would never let the log be
            // compacted, nor a joining replica get its snapshot.
            let _ = self.tx.send(ToApplier::Flush);
        }
        if self.applied.is_empty() {
            // Nothing applied since the last point: only empty or membership
            // entries, whose snapshot is the current count once the copy has it.
            return (synced >= self.next_offset).then(|| (applied, self.snapshot()));
        }
        let (index, end) = self.applied.iter().rev().find(|(_, end, _)| *end <= synced).map(|(i, e, _)| (*i, *e))?;
        let snap = encode_snapshot(end, &self.producers_at(index));
        // Later points are at or past this one (the synced offset only grows).
        while self.applied.front().is_some_and(|(i, _, _)| *i <= index) {
            self.applied.pop_front();
        }
        Some((index, snap))
    }
}

/// Build the state machine and start its applier into `log`; `config` is
/// the topic's configuration (its partition count included) for the local copy.
/// `bounds` and `stats`: the node's (`cluster.apply_batch_*`, `cluster.apply.*`).
pub fn start(log: Log, topic: String, partition: u32, config: TopicConfig, catch_up: CatchUpSlot, bounds: ApplyBounds, stats: Arc<ApplyStats>) -> (PartitionSm, Arc<PartitionHandle>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = Arc::new(PartitionHandle::new(topic.clone(), partition));
    let h = handle.clone();
    let l = log.clone();
    let flushing: Arc<std::sync::atomic::AtomicBool> = Default::default();
    let f = flushing.clone();
    let st = stats.clone();
    tokio::spawn(async move {
        let mut rx = rx;
        if let Err(e) = applier(l, h.clone(), config, &mut rx, catch_up, f, bounds, &st).await {
            tracing::error!(topic = %h.topic, partition = h.partition, error = %e, "cluster: partition applier stopped");
            *h.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            h.moved.notify_waiters();
        }
        // What is still queued is never taken: out of the queued counts (and
        // later sends fail, and are taken back by the sender).
        rx.close();
        while let Ok(m) = rx.try_recv() {
            if let ToApplier::Apply(_, d, _) = m {
                st.taken(d.len());
            }
        }
    });
    (PartitionSm { next_offset: 0, tx, applied: Default::default(), log: Some((log, topic, partition)), producers: BTreeMap::new(), handle: Some(handle.clone()), flushing, stats }, handle)
}

/// Create the topic in the node's local log if it is not there (several
/// partitions' appliers, or the plane, may race to create it).
pub async fn ensure_local_topic(log: &Log, topic: &str, config: TopicConfig) -> Result<()> {
    if log.describe_topic(topic).is_ok() {
        return Ok(());
    }
    if let Err(e) = log.create_topic(topic, Some(config)).await {
        if log.describe_topic(topic).is_err() {
            return Err(ClusterError::StateMachine(e.to_string()));
        }
    }
    Ok(())
}

fn produce_record(p: PartitionId, r: EntryRecord) -> ProduceRecord {
    ProduceRecord {
        partition: Some(p),
        timestamp_ms: Some(r.timestamp_ms),
        key: r.key.map(Bytes::from),
        value: r.value.map(Bytes::from),
        headers: r.headers.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect(),
    }
}

/// What the applier writes to the copy as one append (config keys
/// `cluster.apply_batch_*`, checked by `RaftTuning::validate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyBounds {
    /// Most committed entries taken off the queue for one gathering (it
    /// takes them while they are there), as the driver takes at most
    /// `cluster.max_commands_per_pass` commands per Ready pass.
    pub entries: usize,
    /// Records per append of the copy, at most (a fetch that stops at
    /// `max_records` inside a batch is not served well; clients pull 1000):
    /// a larger gathering is written in several appends. One entry's
    /// records are never split.
    pub records: usize,
    /// Bytes (keys and values) per append of the copy, at least one
    /// entry's: weft-log makes batches of up to 1 MiB from one append, and
    /// a reader with a smaller frame or fetch limit takes whole batches.
    pub bytes: usize,
}

impl Default for ApplyBounds {
    fn default() -> Self {
        ApplyBounds { entries: 1024, records: 1000, bytes: 64 * 1024 }
    }
}

/// What the appliers of one node did since start (stats `cluster.apply.*`),
/// shared by every hosted partition. Counted once per append, not per record.
#[derive(Debug, Default)]
pub struct ApplyStats {
    /// Appends written to local copies.
    pub batches: AtomicU64,
    /// Committed entries the appliers took off their queues.
    pub entries: AtomicU64,
    /// Records and their bytes (keys and values) written.
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    /// Gatherings that stopped at `cluster.apply_batch_entries` with more queued.
    pub cut_entries: AtomicU64,
    /// Appends written before the next entry because it would pass
    /// `cluster.apply_batch_records`, or because `cluster.apply_batch_bytes` was reached.
    pub cut_records: AtomicU64,
    pub cut_bytes: AtomicU64,
    /// The largest append written since start, in records and in bytes.
    pub max_batch_records: AtomicU64,
    pub max_batch_bytes: AtomicU64,
    /// Entries applied by raft and queued to the appliers, not yet taken,
    /// and their bytes: where a slow copy shows. The driver never waits
    /// for it; past `cluster.apply_queue_max_bytes` no more entries are let
    /// in (produces refused on a leader, appends dropped on a follower).
    pub queued_entries: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// Produces refused because `queued_bytes` was over
    /// `cluster.apply_queue_max_bytes`.
    pub refused: AtomicU64,
    /// Appends with entries from partition leaders dropped for the same
    /// reason (the leader sends them again).
    pub held_back: AtomicU64,
}

/// [`ApplyStats`] read at one moment (`cluster.status` field `apply`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyStatus {
    pub batches: u64,
    pub entries: u64,
    pub records: u64,
    pub bytes: u64,
    pub cut_entries: u64,
    pub cut_records: u64,
    pub cut_bytes: u64,
    pub max_batch_records: u64,
    pub max_batch_bytes: u64,
    pub queued_entries: u64,
    pub queued_bytes: u64,
    pub refused: u64,
    pub held_back: u64,
}

impl ApplyStats {
    pub fn status(&self) -> ApplyStatus {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ApplyStatus {
            batches: r(&self.batches),
            entries: r(&self.entries),
            records: r(&self.records),
            bytes: r(&self.bytes),
            cut_entries: r(&self.cut_entries),
            cut_records: r(&self.cut_records),
            cut_bytes: r(&self.cut_bytes),
            max_batch_records: r(&self.max_batch_records),
            max_batch_bytes: r(&self.max_batch_bytes),
            queued_entries: r(&self.queued_entries),
            queued_bytes: r(&self.queued_bytes),
            refused: r(&self.refused),
            held_back: r(&self.held_back),
        }
    }

    fn queued(&self, bytes: usize) {
        self.queued_entries.fetch_add(1, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn taken(&self, bytes: usize) {
        self.queued_entries.fetch_sub(1, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    fn written(&self, records: usize, bytes: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.max_batch_records.fetch_max(records as u64, Ordering::Relaxed);
        self.max_batch_bytes.fetch_max(bytes as u64, Ordering::Relaxed);
    }
}

/// Append records (one partition's, in order) that must end the copy at
/// `end`: the copy's offsets must equal the ones raft assigned. Written
/// without an fsync (see the applier), readable at once: the high
/// watermark moves to `end`.
fn write_copy(log: &Log, h: &PartitionHandle, recs: &[ProduceRecord], end: u64) -> Result<()> {
    let Some(first) = recs.first() else { return Ok(()) };
    let p = first.partition.unwrap_or(PartitionId(h.partition));
    // The log hop of a traced produce (docs/observability.md, "Traces"), as
    // `Log::produce` makes it: only inside a span, so untraced applies pay nothing.
    let _append = (!tracing::Span::current().is_none()).then(|| tracing::info_span!("log.append", topic = %h.topic, records = recs.len()).entered());
    let got = log.append_unsynced(&h.topic, p, recs).map_err(|e| ClusterError::StateMachine(e.to_string()))?.0;
    if got != end {
        return Err(ClusterError::StateMachine(format!("log ended at {got} after an append, raft says {end}")));
    }
    h.set_high_watermark(end);
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one task's whole context, passed once at its start
async fn applier(
    log: Log,
    h: Arc<PartitionHandle>,
    config: TopicConfig,
    rx: &mut mpsc::UnboundedReceiver<ToApplier>,
    catch_up: CatchUpSlot,
    flushing: Arc<std::sync::atomic::AtomicBool>,
    bounds: ApplyBounds,
    stats: &ApplyStats,
) -> Result<()> {
    let se = |e: weft_log::LogError| ClusterError::StateMachine(e.to_string());
    ensure_local_topic(&log, &h.topic, config).await?;
    let p = PartitionId(h.partition);
    let end = log.list_offset(&h.topic, p, OffsetSpec::Latest).map_err(se)?.0;
    h.set_high_watermark(end);
    // A message taken while gathering entries to write together: next.
    let mut held: Option<ToApplier> = None;
    loop {
        let msg = match held.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => break,
            },
        };
        let end = log.list_offset(&h.topic, p, OffsetSpec::Latest).map_err(se)?.0;
        match msg {
            ToApplier::Restore(next) => restore_copy(&log, &h, &catch_up, end, next).await?,
            ToApplier::Flush => {
                if let Err(e) = log.flush_partition(&h.topic, p).await {
                    tracing::warn!(topic = %h.topic, partition = h.partition, error = %e, "cluster: fsync of the copy for a snapshot failed");
                }
                flushing.store(false, Ordering::Release);
            }
            ToApplier::Retire => {
                // Everything queued before was written (one applier, in
                // order), so nothing lands in the copy after this. Its raft
                // log keeps a snapshot: if the group comes back here, the
                // records are fetched again from a replica (`restore_copy`).
                match log.reset_to(&h.topic, p, Offset(0)) {
                    Ok(()) => tracing::info!(topic = %h.topic, partition = h.partition, dropped_to = end, "cluster: moved-off replica's copy dropped"),
                    Err(e) => tracing::warn!(topic = %h.topic, partition = h.partition, error = %e, "cluster: dropping a moved-off replica's copy failed; it stays"),
                }
                h.set_high_watermark(0);
                return Ok(());
            }
            ToApplier::Apply(first, data, span) => {
                // This entry and every Apply queued behind it (up to
                // `bounds.entries`) are written as one append, with no
                // fsync: the raft WAL already holds them durably, and the
                // copy is fsynced by the interval task, at segment rolls and
                // before a snapshot (`Flush`; snapshot points stop at the
                // copy's synced offset). A crash that loses the unsynced
                // tail is repaired by raft replaying from the snapshot.
                // Traced under the first entry's span.
                let _span = span.entered();
                stats.taken(data.len());
                let mut at = end;
                let mut recs: Vec<ProduceRecord> = Vec::new();
                let mut bytes = 0usize;
                let mut entries = 0usize;
                let mut next = Some((first, data));
                while let Some((first, data)) = next.take() {
                    entries += 1;
                    // Keys and values stay slices of the entry's buffer.
                    let records = decode_entry_shared(&data, p)?;
                    let last = first + records.len() as u64;
                    // At or below `at`: written before a restart; replay must not append twice.
                    if last > at {
                        if first > at {
                            return Err(ClusterError::StateMachine(format!("gap: records from offset {first}, log ends at {at}")));
                        }
                        // Bounded so that what a fetch returns stays near what
                        // one produce makes (a reader takes whole batches).
                        if !recs.is_empty() {
                            let cut = if recs.len() + records.len() > bounds.records {
                                Some(&stats.cut_records)
                            } else if bytes >= bounds.bytes {
                                Some(&stats.cut_bytes)
                            } else {
                                None
                            };
                            if let Some(c) = cut {
                                c.fetch_add(1, Ordering::Relaxed);
                                write_copy(&log, &h, &recs, at)?;
                                stats.written(recs.len(), bytes);
                                recs.clear();
                                bytes = 0;
                            }
                        }
                        // A batch half written before a crash: append only its missing tail.
                        let skip = (at - first) as usize;
                        let start = recs.len();
                        recs.extend(records.into_iter().skip(skip));
                        bytes += recs[start..].iter().map(ProduceRecord::payload_len).sum::<usize>();
                        at = last;
                    }
                    if entries < bounds.entries {
                        match rx.try_recv() {
                            Ok(ToApplier::Apply(f, d, _)) => {
                                stats.taken(d.len());
                                next = Some((f, d));
                            }
                            Ok(other) => held = Some(other),
                            Err(_) => {}
                        }
                    } else if !rx.is_empty() {
                        stats.cut_entries.fetch_add(1, Ordering::Relaxed);
                    }
                }
                stats.entries.fetch_add(entries as u64, Ordering::Relaxed);
                if !recs.is_empty() {
                    write_copy(&log, &h, &recs, at)?;
                    stats.written(recs.len(), bytes);
                }
            }
        }
    }
    Ok(())
}

/// A snapshot up to `next` was installed and this copy ends at `end`: fetch
/// the records in between from another replica's copy, in offset order and
/// at their offsets there, before anything after the snapshot is applied.
///
/// - A source whose copy was compacted has gaps: the records keep their
///   offsets and the gaps stay gaps here (the end moves over a gap at the
///   snapshot's end too, so the next entry applies at `next`).
/// - When every replica asked already removed the records from `end` on
///   (retention, compaction of whole segments), this copy drops what it has
///   and starts at their log start, as a Kafka follower truncates to the
///   leader's log start; if even `next` is below it, at `next` (records from
///   there on come through raft).
/// - With no source (none reachable, none has applied that far) it waits
///   and asks again every 100 ms.
async fn restore_copy(log: &Log, h: &PartitionHandle, source: &CatchUpSlot, end: u64, next: u64) -> Result<()> {
    let se = |e: weft_log::LogError| ClusterError::StateMachine(e.to_string());
    let p = PartitionId(h.partition);
    let mut at = end;
    let mut waits = 0u32;
    while at < next {
        let got = match source.get().cloned() {
            Some(c) => c.fetch(&h.topic, h.partition, at, next).await,
            None => Err(ClusterError::StateMachine("no catch-up source yet".into())),
        };
        let b = match got {
            Ok(b) => b,
            Err(e) => {
                waits = waits.saturating_add(1);
                tracing::debug!(topic = %h.topic, partition = h.partition, error = %e, "cluster: catch-up fetch failed; retrying");
                if waits % 100 == 0 {
                    tracing::warn!(topic = %h.topic, partition = h.partition, at, next, error = %e, "cluster: still catching up after a snapshot");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if b.log_start > at {
            let start = b.log_start.min(next);
            log.reset_to(&h.topic, p, Offset(start)).map_err(se)?;
            h.catch_up_resets.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic = %h.topic, partition = h.partition, from = at, start, source_log_start = b.log_start,
                "cluster: records below the source's log start are gone on every replica asked; this copy starts there");
            at = start;
            h.set_high_watermark(at);
            continue;
        }
        let mut recs = Vec::new();
        // The source has a record at or past `next`: nothing between the
        // last record below it and `next` (a gap to the snapshot's end).
        let mut past = false;
        for (o, r) in b.records {
            if o < at {
                continue;
            }
            if o >= next {
                past = true;
                break;
            }
            recs.push((Offset(o), produce_record(p, r)));
        }
        let got_records = !recs.is_empty();
        if let Some((last, _)) = recs.last() {
            let last = last.0;
            let n = recs.len() as u64;
            log.append_at(&h.topic, p, &recs).await.map_err(se)?;
            at = last + 1;
            h.caught_up_records.fetch_add(n, Ordering::Relaxed);
            h.set_high_watermark(at);
            waits = 0;
        }
        // An empty answer below the source's high watermark: it holds no
        // record from `at` up to there (compacted away).
        let gap_to = if past {
            Some(next)
        } else if !got_records && b.high_watermark > at {
            Some(b.high_watermark.min(next))
        } else {
            None
        };
        if let Some(to) = gap_to.filter(|to| *to > at) {
            log.skip_to(&h.topic, p, Offset(to)).map_err(se)?;
            at = to;
            h.set_high_watermark(at);
            continue;
        }
        if !got_records {
            // The source has not applied that far yet: ask again.
            waits = waits.saturating_add(1);
            if waits % 100 == 0 {
                tracing::warn!(topic = %h.topic, partition = h.partition, at, next, "cluster: still catching up after a snapshot");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    if end < next {
        tracing::info!(topic = %h.topic, partition = h.partition, from = end, to = next, "cluster: copy caught up to an installed snapshot");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_record_round_trip_and_garbage() {
        for r in [
            EntryRecord { timestamp_ms: 5, key: None, value: Some(b"v".to_vec()), headers: vec![] },
            EntryRecord { timestamp_ms: 7, key: Some(b"k".to_vec()), value: Some(Vec::new()), headers: vec![] },
        ] {
            assert_eq!(decode_entry(&r.encode()).unwrap(), vec![r]);
        }
        assert!(decode_entry(b"short").is_err());
        let mut b = 0i64.to_be_bytes().to_vec();
        b.extend_from_slice(&1000u32.to_be_bytes());
        assert!(decode_entry(&b).is_err());
    }

    #[test]
    fn batches_round_trip_and_lying_counts_are_refused() {
        let batch = vec![
            EntryRecord { timestamp_ms: 1, key: Some(b"k".to_vec()), value: None, headers: vec![("h".into(), b"x".to_vec())] },
            EntryRecord { timestamp_ms: 2, key: None, value: Some(b"v2".to_vec()), headers: vec![] },
        ];
        let b = encode_batch(&batch);
        assert_eq!(decode_entry(&b).unwrap(), batch);
        assert_eq!(entry_count(&b), 2);
        // The applier's decode: the same records, as slices of the entry.
        let shared = Bytes::from(b.clone());
        let recs = decode_entry_shared(&shared, PartitionId(3)).unwrap();
        assert_eq!(recs.iter().map(|r| produce_record(PartitionId(3), EntryRecord { timestamp_ms: r.timestamp_ms.unwrap(), key: r.key.as_ref().map(|k| k.to_vec()), value: r.value.as_ref().map(|v| v.to_vec()), headers: r.headers.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect() })).collect::<Vec<_>>(), recs);
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].key.as_deref(), recs[0].value.as_deref(), recs[0].headers[0].0.as_str(), &recs[0].headers[0].1[..]), (Some(&b"k"[..]), None, "h", &b"x"[..]));
        assert_eq!((recs[1].timestamp_ms, recs[1].key.as_deref(), recs[1].value.as_deref()), (Some(2), None, Some(&b"v2"[..])));
        let v = recs[1].value.as_ref().unwrap();
        assert!(shared.as_ptr_range().contains(&v.as_ptr()), "a slice of the entry, not a copy");
        // Every truncation fails cleanly, the same way for all three.
        for cut in 1..b.len() {
            assert!(decode_entry(&b[..cut]).is_err(), "cut at {cut}");
            assert!(decode_entry_shared(&shared.slice(..cut), PartitionId(3)).is_err(), "cut at {cut}");
            assert_eq!(entry_count(&b[..cut]), 0, "cut at {cut}");
        }
        // A count of 4 billion records in a 9-byte entry allocates nothing.
        let mut lie = vec![BATCH_MAGIC];
        lie.extend_from_slice(&u32::MAX.to_be_bytes());
        lie.extend_from_slice(&[0; 4]);
        assert!(decode_entry(&lie).is_err());
        assert_eq!(entry_count(&lie), 0);
    }

    #[tokio::test]
    async fn the_state_machine_gives_a_batch_consecutive_offsets() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut sm = PartitionSm { next_offset: 0, tx, applied: Default::default(), log: None, producers: BTreeMap::new(), handle: None, flushing: Default::default(), stats: Default::default() };
        let one = EntryRecord { timestamp_ms: 1, value: Some(b"a".to_vec()), ..Default::default() };
        assert_eq!(sm.apply(1, &bytes::Bytes::from(encode_batch(&[one.clone(), one.clone(), one.clone()]))), 0u64.to_be_bytes().to_vec());
        assert_eq!(sm.apply(2, &bytes::Bytes::from(one.encode())), 3u64.to_be_bytes().to_vec());
        assert!(sm.apply(3, &bytes::Bytes::from_static(b"\xB1garbage")).is_empty(), "a bad entry takes no offsets");
        assert_eq!(sm.apply(4, &bytes::Bytes::from(encode_batch(&[one]))), 4u64.to_be_bytes().to_vec());
        for want in [0, 3, 4] {
            assert!(matches!(rx.try_recv().unwrap(), ToApplier::Apply(o, _, _) if o == want));
        }
        // The snapshot point of a state machine without a copy is what it applied.
        assert_eq!(sm.snapshot_point(9), Some((9, 5u64.to_be_bytes().to_vec())));
    }

    #[tokio::test]
    async fn idempotent_batches_dedup_refuse_gaps_evict_and_snapshot() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut sm = PartitionSm { next_offset: 0, tx, applied: Default::default(), log: None, producers: BTreeMap::new(), handle: None, flushing: Default::default(), stats: Default::default() };
        let one = EntryRecord { timestamp_ms: 1, value: Some(b"a".to_vec()), ..Default::default() };
        let two = [one.clone(), one.clone()];
        let off = |o: u64| o.to_be_bytes().to_vec();
        assert_eq!(sm.apply(1, &bytes::Bytes::from(encode_idempotent_batch(7, 10, 2, &two))), off(0));
        // The same batch again: its original offset, nothing appended.
        assert_eq!(sm.apply(2, &bytes::Bytes::from(encode_idempotent_batch(7, 10, 2, &two))), off(0));
        assert_eq!(sm.apply(3, &bytes::Bytes::from(encode_idempotent_batch(7, 12, 2, std::slice::from_ref(&one)))), off(2));
        assert_eq!(decode_answer(&sm.apply(4, &bytes::Bytes::from(encode_idempotent_batch(7, 20, 2, std::slice::from_ref(&one))))), Some(ProduceAnswer::OutOfOrder { expected: 13, got: 20 }));
        assert_eq!(sm.next_offset, 3);
        let mut applied = Vec::new();
        while let Ok(ToApplier::Apply(o, _, _)) = rx.try_recv() {
            applied.push(o);
        }
        assert_eq!(applied, vec![0, 2]);
        // Two producers at most: an eighth evicts the least recently used (7).
        assert_eq!(sm.apply(5, &bytes::Bytes::from(encode_idempotent_batch(8, 0, 2, std::slice::from_ref(&one)))), off(3));
        assert_eq!(sm.apply(6, &bytes::Bytes::from(encode_idempotent_batch(9, 0, 2, std::slice::from_ref(&one)))), off(4));
        assert_eq!(sm.producer_count(), 2);
        assert!(!sm.producers.contains_key(&7));
        // The producer state at an earlier point undoes what came after it.
        let at3 = sm.producers_at(3);
        assert_eq!(at3.keys().copied().collect::<Vec<_>>(), vec![7]);
        // A snapshot restores the same state; an old 8-byte one has no producers.
        let snap = sm.snapshot();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        let mut other = PartitionSm { next_offset: 0, tx: tx2, applied: Default::default(), log: None, producers: BTreeMap::new(), handle: None, flushing: Default::default(), stats: Default::default() };
        other.restore(&snap).unwrap();
        assert_eq!((other.next_offset, &other.producers), (sm.next_offset, &sm.producers));
        other.restore(&9u64.to_be_bytes()).unwrap();
        assert_eq!((other.next_offset, other.producers.len()), (9, 0));
        for cut in 9..snap.len() {
            assert!(decode_snapshot(&snap[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// A catch-up source reading another log directly.
    struct FromLog(Log);

    impl CatchUp for FromLog {
        fn fetch<'a>(&'a self, topic: &'a str, partition: u32, from: u64, to: u64) -> Pin<Box<dyn Future<Output = Result<CatchUpBatch>> + Send + 'a>> {
            Box::pin(async move {
                let n = to.saturating_sub(from).clamp(1, 1000) as usize;
                match self.0.fetch(topic, PartitionId(partition), Offset(from), 1 << 20, n, None).await {
                    Ok(f) => Ok(CatchUpBatch {
                        records: f
                            .decode()
                            .unwrap()
                            .into_iter()
                            .map(|r| (r.offset.0, EntryRecord { timestamp_ms: r.timestamp_ms, key: r.key.map(|k| k.to_vec()), value: r.value.map(|v| v.to_vec()), headers: vec![] }))
                            .collect(),
                        log_start: f.log_start_offset.0,
                        high_watermark: f.high_watermark.0,
                    }),
                    Err(weft_log::LogError::OffsetOutOfRange { earliest, latest, .. }) if earliest.0 > from => {
                        Ok(CatchUpBatch { records: vec![], log_start: earliest.0, high_watermark: latest.0 })
                    }
                    Err(e) => Err(ClusterError::StateMachine(e.to_string())),
                }
            })
        }
    }

    fn value(v: &str) -> ProduceRecord {
        ProduceRecord { partition: Some(PartitionId(0)), timestamp_ms: Some(5), ..ProduceRecord::value(v.to_owned()) }
    }

    async fn records_of(log: &Log) -> Vec<(u64, Vec<u8>)> {
        let p = PartitionId(0);
        let mut at = log.list_offset("t", p, OffsetSpec::Earliest).unwrap();
        let mut out = Vec::new();
        loop {
            // One segment per fetch: go on after the last record.
            let recs = log.fetch("t", p, at, 1 << 20, 1000, None).await.unwrap().decode().unwrap();
            let Some(last) = recs.last() else { return out };
            at = last.offset.next();
            out.extend(recs.into_iter().map(|r| (r.offset.0, r.value.map(|v| v.to_vec()).unwrap_or_default())));
        }
    }

    /// The source lost 0..10 (retention) and has gaps (compaction), one of
    /// them up to the snapshot's end: the copy restarts at 10, keeps the
    /// offsets, and the entry after the snapshot applies at its offset.
    #[tokio::test]
    async fn restore_restarts_at_the_source_log_start_and_keeps_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = weft_log::LogConfig { maintenance_interval: None, ..Default::default() };
        let topic = TopicConfig { partitions: 1, ..Default::default() };
        let src = Log::open(dir.path().join("src"), cfg.clone()).await.unwrap();
        src.create_topic("t", Some(topic.clone())).await.unwrap();
        let p = PartitionId(0);
        src.reset_to("t", p, Offset(10)).unwrap();
        let have = [(10, "a"), (11, "b"), (14, "c"), (22, "after the snapshot")];
        src.append_at("t", p, &have.iter().map(|(o, v)| (Offset(*o), value(v))).collect::<Vec<_>>()).await.unwrap();
        // This copy had 0..3 before it went down.
        let dst = Log::open(dir.path().join("dst"), cfg).await.unwrap();
        ensure_local_topic(&dst, "t", topic.clone()).await.unwrap();
        dst.produce("t", vec![value("x"), value("y"), value("z")]).await.unwrap();
        let slot: CatchUpSlot = Default::default();
        let _ = slot.set(Arc::new(FromLog(src.clone())));
        let (mut sm, h) = start(dst.clone(), "t".into(), 0, topic, slot, ApplyBounds::default(), Default::default());
        sm.restore(&20u64.to_be_bytes()).unwrap();
        assert!(h.wait_for(20, std::time::Duration::from_secs(10)).await);
        assert_eq!(h.high_watermark.load(Ordering::Acquire), 20);
        let one = EntryRecord { timestamp_ms: 6, value: Some(b"next".to_vec()), ..Default::default() };
        assert_eq!(sm.apply(1, &bytes::Bytes::from(encode_batch(&[one]))), 20u64.to_be_bytes().to_vec());
        assert!(h.wait_for(21, std::time::Duration::from_secs(10)).await);
        assert!(h.failed.lock().unwrap().is_none(), "{:?}", h.failed.lock().unwrap());
        let got = records_of(&dst).await;
        let want: Vec<(u64, Vec<u8>)> = vec![(10, b"a".to_vec()), (11, b"b".to_vec()), (14, b"c".to_vec()), (20, b"next".to_vec())];
        assert_eq!(got, want);
        assert_eq!(dst.list_offset("t", p, OffsetSpec::Earliest).unwrap(), Offset(10));
        assert_eq!((h.catch_up_resets.load(Ordering::Relaxed), h.caught_up_records.load(Ordering::Relaxed)), (1, 3));
    }

    /// Entries of `sizes[i]` records each (values "e{i}r{j}", 4 bytes or
    /// more), applied by a state machine and all queued before the applier
    /// runs, which then writes them with `bounds` and stops (the queue ends):
    /// the stats, where each append of the copy ends, and the copy's records.
    async fn apply_queued(sizes: &[usize], bounds: ApplyBounds) -> (ApplyStatus, ApplyStatus, Vec<u64>, Vec<(u64, Vec<u8>)>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), weft_log::LogConfig { maintenance_interval: None, ..Default::default() }).await.unwrap();
        let topic = TopicConfig { partitions: 1, ..Default::default() };
        let stats: Arc<ApplyStats> = Default::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut sm = PartitionSm { next_offset: 0, tx, applied: Default::default(), log: None, producers: BTreeMap::new(), handle: None, flushing: Default::default(), stats: stats.clone() };
        for (i, n) in sizes.iter().enumerate() {
            let recs: Vec<EntryRecord> = (0..*n).map(|j| EntryRecord { timestamp_ms: 1, value: Some(format!("e{i}r{j}").into_bytes()), ..Default::default() }).collect();
            sm.apply(i as u64 + 1, &bytes::Bytes::from(encode_batch(&recs)));
        }
        let queued = stats.status();
        drop(sm);
        let h = Arc::new(PartitionHandle::new("t".into(), 0));
        applier(log.clone(), h, topic, &mut rx, Default::default(), Default::default(), bounds, &stats).await.unwrap();
        // Where each stored batch ends: a fetch of one record returns its whole batch.
        let mut ends = Vec::new();
        let mut at = 0;
        while let Ok(f) = log.fetch("t", PartitionId(0), Offset(at), 1 << 20, 1, None).await {
            let Some(end) = f.batches_end().unwrap() else { break };
            ends.push(end.0);
            at = end.0;
        }
        let appends = log.partition_stats("t").unwrap()[0].appends;
        (queued, stats.status(), ends, records_of(&log).await, appends)
    }

    fn values(sizes: &[usize]) -> Vec<(u64, Vec<u8>)> {
        sizes.iter().enumerate().flat_map(|(i, n)| (0..*n).map(move |j| format!("e{i}r{j}").into_bytes())).enumerate().map(|(o, v)| (o as u64, v)).collect()
    }

    #[tokio::test]
    async fn the_record_bound_cuts_between_entries_and_never_splits_one() {
        let sizes = [2, 2, 2, 2, 2, 2, 7, 1];
        let (queued, st, ends, recs, appends) = apply_queued(&sizes, ApplyBounds { entries: 1024, records: 5, bytes: 1 << 20 }).await;
        assert_eq!((queued.queued_entries, queued.batches), (8, 0), "all queued before the applier ran");
        assert!(queued.queued_bytes > 0);
        // 2+2 | 2+2 | 2+2 | 7 (one entry, whole) | 1
        assert_eq!(ends, vec![4, 8, 12, 19, 20]);
        assert_eq!(appends, 5);
        assert_eq!(recs, values(&sizes), "every record at its offset");
        assert_eq!((st.batches, st.entries, st.records), (5, 8, 20));
        assert_eq!((st.cut_records, st.cut_bytes, st.cut_entries), (4, 0, 0));
        assert_eq!(st.max_batch_records, 7);
        assert_eq!((st.queued_entries, st.queued_bytes), (0, 0), "everything taken");
        assert_eq!(st.bytes, recs.iter().map(|(_, v)| v.len() as u64).sum::<u64>());
    }

    #[tokio::test]
    async fn the_byte_bound_writes_once_reached() {
        // One 4-byte record per entry ("eNr0"); an append is written once it holds 10 bytes or more.
        let sizes = [1; 7];
        let (_, st, ends, recs, _) = apply_queued(&sizes, ApplyBounds { entries: 1024, records: 1000, bytes: 10 }).await;
        assert_eq!(ends, vec![3, 6, 7]);
        assert_eq!(recs, values(&sizes));
        assert_eq!((st.batches, st.cut_bytes, st.cut_records, st.cut_entries), (3, 2, 0, 0));
        assert_eq!((st.max_batch_records, st.max_batch_bytes), (3, 12));
    }

    #[tokio::test]
    async fn the_entry_bound_stops_a_gathering_with_more_queued() {
        let sizes = [1; 5];
        let (_, st, ends, recs, _) = apply_queued(&sizes, ApplyBounds { entries: 2, records: 1000, bytes: 1 << 20 }).await;
        assert_eq!(ends, vec![2, 4, 5]);
        assert_eq!(recs, values(&sizes));
        // The third gathering stopped at the bound with nothing left: not a cut.
        assert_eq!((st.batches, st.entries, st.cut_entries, st.cut_records, st.cut_bytes), (3, 5, 2, 0, 0));
    }

    #[tokio::test]
    async fn default_bounds_write_a_queue_as_one_append() {
        let sizes = [3; 10];
        let (_, st, ends, recs, _) = apply_queued(&sizes, ApplyBounds::default()).await;
        assert_eq!(ends, vec![30]);
        assert_eq!(recs, values(&sizes));
        assert_eq!((st.batches, st.entries, st.records, st.cut_entries + st.cut_records + st.cut_bytes), (1, 10, 30, 0));
    }

    #[test]
    fn zero_and_absurd_bounds_are_refused_by_name() {
        assert!(crate::host::RaftTuning::default().validate().is_ok());
        let bad = |f: &dyn Fn(&mut crate::host::RaftTuning)| {
            let mut t = crate::host::RaftTuning::default();
            f(&mut t);
            t.validate().unwrap_err().to_string()
        };
        assert!(bad(&|t| t.apply.entries = 0).contains("cluster.apply_batch_entries must be 1 to"));
        assert!(bad(&|t| t.apply.records = 0).contains("cluster.apply_batch_records"));
        assert!(bad(&|t| t.apply.records = usize::MAX).contains("cluster.apply_batch_records"));
        assert!(bad(&|t| t.apply.bytes = 0).contains("cluster.apply_batch_bytes"));
        assert!(bad(&|t| t.apply.bytes = 1 << 40).contains("cluster.apply_batch_bytes"));
        assert!(bad(&|t| t.max_commands_per_pass = 0).contains("cluster.max_commands_per_pass"));
        assert!(bad(&|t| t.peer_queue_frames = 0).contains("cluster.peer_queue_frames"));
        assert!(bad(&|t| t.incoming_queue_frames = 1 << 30).contains("cluster.incoming_queue_frames"));
        assert!(bad(&|t| t.max_inflight_msgs = 0).contains("cluster.max_inflight_msgs"));
        assert!(bad(&|t| t.max_size_per_msg = 0).contains("cluster.max_size_per_msg"));
        assert!(bad(&|t| t.max_size_per_msg = 1 << 40).contains("cluster.max_size_per_msg"));
        assert!(bad(&|t| t.apply_queue_max_bytes = 0).contains("cluster.apply_queue_max_bytes must be 1048576 to"));
        assert!(bad(&|t| t.apply_queue_max_bytes = u64::MAX).contains("cluster.apply_queue_max_bytes"));
    }

    /// With `log_store.fsync = never` a snapshot due asks for an fsync of the
    /// copy, and the next try finds the point.
    #[tokio::test]
    async fn a_due_snapshot_fsyncs_a_copy_that_never_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = weft_log::LogConfig { fsync: weft_log::FsyncPolicy::Never, maintenance_interval: None, ..Default::default() };
        let log = Log::open(dir.path(), cfg).await.unwrap();
        let topic = TopicConfig { partitions: 1, ..Default::default() };
        let (mut sm, h) = start(log.clone(), "t".into(), 0, topic, Default::default(), ApplyBounds::default(), Default::default());
        let one = EntryRecord { timestamp_ms: 1, value: Some(b"a".to_vec()), ..Default::default() };
        sm.apply(3, &bytes::Bytes::from(encode_batch(&[one.clone(), one])));
        assert!(h.wait_for(2, std::time::Duration::from_secs(10)).await);
        assert_eq!(sm.snapshot_point(3), None, "the copy is not durable yet");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(p) = sm.snapshot_point(3) {
                assert_eq!(p, (3, 2u64.to_be_bytes().to_vec()));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no snapshot point after the fsync");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
