//! One partition: an ordered list of segments, appends with group commit,
//! reads, long-poll, retention and compaction.
//!
//! Locking: `inner` (a std mutex, never held across an await or an fsync of
//! the active segment) guards the segment list and offsets. One fsync per
//! partition runs at a time, in the partition's sync loop on a blocking
//! thread (`syncing`): each fsync covers every byte written before it
//! started, and the next starts as soon as it ends while more was written;
//! appenders wait in `sync_waiters` for the offset they need and are woken
//! by the fsync that covers them (group commit, pipelined with the writes).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::batch::{self, BatchBuilder, BatchesDecoder};
use crate::config::FsyncPolicy;
use crate::error::{LogError, Result};
use crate::model::{CleanupPolicy, Offset, PartitionId, ProduceRecord, Record, TopicConfig, TopicName};
use crate::files::OpenFiles;
use crate::segment::{self, Segment, for_each_batch, read_batches};
use crate::storage::Storage;

/// Writing a replica's copy (weft-cluster catch-up).
mod replica;

/// Records are grouped into batches of about this size on append.
pub const BATCH_TARGET_BYTES: usize = 1024 * 1024;

/// Fsyncs one run of a partition's sync loop does before it gives its
/// blocking thread back (its waiters start the next run): under writes
/// that never stop, a loop would otherwise keep the thread for good, and
/// with more busy partitions than blocking threads some would never get one.
const SYNC_LOOP_FSYNCS: u64 = 32;

/// What a fetch returns: whole batches exactly as stored, plus a decoder.
#[derive(Debug, Clone)]
pub struct FetchResult {
    pub topic: TopicName,
    pub partition: PartitionId,
    /// The offset asked for.
    pub fetch_offset: Offset,
    /// Next offset visible to consumers (offsets below it are readable).
    pub high_watermark: Offset,
    /// First offset still stored.
    pub log_start_offset: Offset,
    /// Concatenated whole batches, byte for byte as on disk; the first may
    /// start before `fetch_offset`. Empty when nothing new was there in time.
    pub batches: Bytes,
    /// Record limit asked for (applied by [`FetchResult::records`]).
    pub max_records: usize,
}

impl FetchResult {
    /// Decodes the records at or after `fetch_offset` (CRC checked, zero-copy
    /// keys and values), at most `max_records`.
    pub fn records(&self) -> BatchesDecoder {
        BatchesDecoder::new(self.batches.clone(), self.fetch_offset, self.max_records)
    }

    /// All records, or the first decoding error.
    pub fn decode(&self) -> Result<Vec<Record>> {
        self.records().collect()
    }

    /// The offset after the last batch returned, read from the batch
    /// headers alone (no record decoding, no CRC): where a reader of the
    /// raw batches goes on from. `None` when no batch was returned.
    pub fn batches_end(&self) -> Result<Option<Offset>> {
        let mut at = 0usize;
        let mut end = None;
        while let Some(rest) = self.batches.get(at..).filter(|r| !r.is_empty()) {
            let h = batch::peek_header(rest)?.ok_or(LogError::CorruptBatch("short header"))?;
            end = Some(h.next_offset());
            at += h.total_len();
        }
        Ok(end)
    }
}

/// Counters and offsets of a partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionStats {
    pub partition: PartitionId,
    pub log_start_offset: Offset,
    /// Next offset to be written (log end offset).
    pub log_end_offset: Offset,
    pub high_watermark: Offset,
    /// Offsets below this one are known durable.
    pub synced_offset: Offset,
    pub segments: usize,
    pub size_bytes: u64,
    /// Batches written since open (one per partition per produce call, more for large calls).
    pub appends: u64,
    /// fsyncs of segment files since open (group commits and segment rolls).
    pub fsyncs: u64,
    pub poisoned: Option<String>,
    /// The poisoning failure was a full disk (ENOSPC, EDQUOT).
    #[serde(default)]
    pub disk_full: bool,
}

/// What compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_rewritten: usize,
    pub segments_removed: usize,
    pub records_removed: u64,
}

#[derive(Debug, Default)]
struct CompactState {
    /// End of the closed segments at the last successful compaction.
    cleaned_upto: Offset,
    at_ms: Option<i64>,
}

#[derive(Debug)]
struct Inner {
    /// Sorted by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
    next_offset: Offset,
    hw: Offset,
    poisoned: Option<Poison>,
    /// When recovery from poisoning was last tried (rate limit).
    last_recovery: Option<std::time::Instant>,
    deleted: bool,
    /// The active segment's pending batches are queued for the end of a
    /// connection's pass (weft_wire::pass): later appends of the pass only
    /// join them.
    pass_queued: bool,
    /// The sync loop runs (one per partition at a time).
    syncing: bool,
    /// Appenders waiting for an fsync, by the end offset they wait for:
    /// woken when an fsync covers it, and all of them when the loop ends
    /// (a waiter waits only while a loop runs).
    sync_waiters: Vec<(u64, Waker)>,
    /// Counts the times every waiter was woken at once: a waiter woken so
    /// without being covered registers again.
    sync_wakeups: u64,
}

/// Pending at its first poll (waking its task), ready at the next: what
/// follows it in a request runs when the connection polls the request
/// again, after the pass ended.
struct AfterPass(bool);

impl std::future::Future for AfterPass {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// What a write did: its offsets, the epoch it wrote in, and whether it
/// left the first pending batches (to be queued for the pass's end).
struct Written {
    first: Offset,
    end: Offset,
    epoch: u64,
    queue: bool,
}

/// The pass ends: the batches its produces left pending go to the file in
/// one write, waking their appenders (their answers follow).
impl weft_wire::pass::PassWork for Partition {
    fn end_of_pass(&self) {
        let mut g = lock(&self.inner);
        g.pass_queued = false;
        // A failure poisons the partition and fails the waiting appends.
        let _ = self.write_pending(&mut g);
    }
}

/// The partition's sync loop's turn (one loop per partition at a time):
/// released when the loop ends (or its closure is dropped unrun), waking
/// every appender still waiting: each then sees why (poisoned, deleted,
/// reopened) or starts the next loop.
struct SyncTurn(Arc<Partition>);

impl Drop for SyncTurn {
    fn drop(&mut self) {
        let waiters = {
            let mut g = lock(&self.0.inner);
            g.syncing = false;
            g.sync_wakeups += 1;
            // Drained, not taken: the list keeps its capacity for the next loop.
            g.sync_waiters.drain(..).map(|(_, w)| w).collect::<Vec<_>>()
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

/// Why a partition refuses writes.
#[derive(Debug, Clone)]
struct Poison {
    cause: String,
    disk_full: bool,
    /// An fsync failed: the page cache may hold bytes the disk lost, so
    /// recovery keeps only what an earlier fsync made durable.
    after_sync_failure: bool,
}

/// ENOSPC or EDQUOT.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

impl Inner {
    fn active(&self) -> &Segment {
        // Invariant: `segments` is never empty (open and retention keep the active one).
        self.segments.last().expect("partition has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        // Invariant: as in `active`.
        self.segments.last_mut().expect("partition has an active segment")
    }
    fn log_start(&self) -> Offset {
        self.segments.first().map_or(self.next_offset, |s| s.base)
    }
}

#[derive(Debug)]
pub struct Partition {
    pub topic: TopicName,
    pub id: PartitionId,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    /// Segment files are opened through this cache (shared by the log).
    files: Arc<OpenFiles>,
    /// Changed by [`Partition::set_config`] when the topic is altered.
    config: std::sync::RwLock<TopicConfig>,
    fsync: FsyncPolicy,
    /// Least time between two recoveries from poisoning.
    poison_retry: Duration,
    inner: Mutex<Inner>,
    /// Serialises compactions and remembers what the last one covered.
    compact_state: Mutex<CompactState>,
    /// Offsets below this are durable.
    synced: AtomicU64,
    /// Changes when the log is cut back by a recovery: an fsync that
    /// started before must not mark offsets durable after it. Changed under
    /// the partition lock, before `synced`, so it is also read without it.
    epoch: AtomicU64,
    hw_tx: watch::Sender<Offset>,
    appends: AtomicU64,
    fsyncs: AtomicU64,
    /// Runs of the sync loop started, and the most fsyncs one did (what
    /// the tests of its bound look at).
    #[cfg(test)]
    sync_runs: AtomicU64,
    #[cfg(test)]
    sync_run_max_fsyncs: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave offsets half-updated in a
    // way we could repair; the poisoned flag is what guards the data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Partition {
    /// Opens (or creates) the partition in `dir`, recovering a torn tail.
    pub fn open(
        files: Arc<OpenFiles>,
        dir: PathBuf,
        topic: TopicName,
        id: PartitionId,
        config: TopicConfig,
        fsync: FsyncPolicy,
        poison_retry: Duration,
    ) -> Result<Partition> {
        let storage = files.storage_arc();
        storage.create_dir_all(&dir).map_err(|e| LogError::io("create partition dir", &dir, e))?;
        let names = storage.list_dir(&dir).map_err(|e| LogError::io("list partition dir", &dir, e))?;
        let mut bases = Vec::new();
        for n in &names {
            if let Some(b) = segment::parse_log_file_name(n) {
                bases.push(b);
            } else if n.ends_with(".cleaned") || n.ends_with(".tmp") {
                // Leftovers of an interrupted compaction or atomic write.
                let p = dir.join(n);
                storage.remove_file(&p).map_err(|e| LogError::io("remove leftover", &p, e))?;
            }
        }
        bases.sort();
        // An index whose segment is gone (retention removed the log first).
        for n in &names {
            if let Some(b) = n.strip_suffix(".index").and_then(|d| segment::parse_log_file_name(&format!("{d}.log"))) {
                if !bases.contains(&b) {
                    let p = dir.join(n);
                    storage.remove_file(&p).map_err(|e| LogError::io("remove orphan index", &p, e))?;
                }
            }
        }
        let mut segments = Vec::with_capacity(bases.len().max(1));
        if bases.is_empty() {
            segments.push(Segment::create(&files, &dir, Offset::ZERO)?);
        } else {
            let last = bases.len() - 1;
            for (i, b) in bases.iter().enumerate() {
                let (seg, report) = if i == last {
                    Segment::open_active(&files, &dir, *b, None)?
                } else {
                    Segment::open_closed(&files, &dir, *b)?
                };
                if report.truncated_bytes > 0 {
                    tracing::warn!(%topic, partition = %id, segment = %b, bytes = report.truncated_bytes,
                        reason = report.reason.as_deref().unwrap_or(""), "recovered segment by truncating its tail");
                }
                if let Some(prev) = segments.last() {
                    let prev: &Segment = prev;
                    if seg.base < prev.next_offset {
                        return Err(LogError::Corrupt {
                            path: seg.log_path(),
                            pos: 0,
                            reason: format!("segment base {} overlaps previous segment ending at {}", seg.base, prev.next_offset),
                        });
                    }
                }
                segments.push(seg);
            }
        }
        let next_offset = segments.last().map_or(Offset::ZERO, |s| s.next_offset);
        let (hw_tx, _) = watch::channel(next_offset);
        Ok(Partition {
            topic,
            id,
            dir,
            storage,
            files,
            config: std::sync::RwLock::new(config),
            fsync,
            poison_retry,
            inner: Mutex::new(Inner {
                segments,
                next_offset,
                hw: next_offset,
                poisoned: None,
                last_recovery: None,
                deleted: false,
                pass_queued: false,
                syncing: false,
                sync_waiters: Vec::new(),
                sync_wakeups: 0,
            }),
            compact_state: Mutex::new(CompactState::default()),
            synced: AtomicU64::new(next_offset.0),
            hw_tx,
            appends: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            #[cfg(test)]
            sync_runs: AtomicU64::new(0),
            #[cfg(test)]
            sync_run_max_fsyncs: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> TopicConfig {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// New limits for this partition (the topic was altered): they apply
    /// from the next append, roll and maintenance pass.
    pub fn set_config(&self, config: TopicConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn poisoned_err(&self, p: &Poison) -> LogError {
        LogError::Poisoned { topic: self.topic.to_string(), partition: self.id, cause: p.cause.clone(), disk_full: p.disk_full }
    }

    /// Refuses writes from now on, until [`Partition::recover`] succeeds.
    fn poison(&self, g: &mut Inner, what: &str, e: &std::io::Error, after_sync_failure: bool) -> LogError {
        let p = Poison { cause: format!("{what}: {e}"), disk_full: is_disk_full(e), after_sync_failure };
        tracing::error!(topic = %self.topic, partition = %self.id, cause = %p.cause, disk_full = p.disk_full, "partition poisoned: refusing writes");
        self.files.note_poisoned(&format!("{}/{}: {}", self.topic, self.id, p.cause));
        let err = self.poisoned_err(&p);
        // Nothing pending was acknowledged; recovery reopens the segment
        // from the file. Appenders waiting for the write learn it now.
        g.active_mut().drop_pending();
        self.hw_tx.send_modify(|_| {});
        // Appenders waiting for an fsync learn it when the sync loop ends
        // (it stops at a poisoned partition; they wait only while it runs).
        match &mut g.poisoned {
            // Keep the first cause, but an fsync failure always wins: it decides what recovery keeps.
            Some(old) => old.after_sync_failure |= after_sync_failure,
            None => g.poisoned = Some(p),
        }
        err
    }

    /// Ok if writes are allowed; a poisoned partition is first reopened
    /// (at most once per `poison_retry`).
    fn check_writable(&self, g: &mut Inner) -> Result<()> {
        if g.deleted {
            return Err(LogError::UnknownTopic(self.topic.to_string()));
        }
        let Some(p) = g.poisoned.clone() else { return Ok(()) };
        if g.last_recovery.is_some_and(|t| t.elapsed() < self.poison_retry) {
            return Err(self.poisoned_err(&p));
        }
        g.last_recovery = Some(std::time::Instant::now());
        match self.recover(g, &p) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = %self.id, error = %e, "recovery of a poisoned partition failed; still refusing writes");
                if let LogError::Io { source, .. } = &e {
                    g.poisoned = Some(Poison { cause: e.to_string(), disk_full: is_disk_full(source), ..p });
                }
                Err(g.poisoned.as_ref().map_or(e, |p| self.poisoned_err(p)))
            }
        }
    }

    /// Reopens the active segment from disk the way start-up does (fresh
    /// descriptor, every batch CRC-checked, torn tail cut), keeping only
    /// what was durable when an fsync failed or under `always` (where
    /// nothing past the synced offset was acknowledged), then fsyncs it.
    /// On success the partition takes writes again.
    fn recover(&self, g: &mut Inner, p: &Poison) -> Result<()> {
        let synced = Offset(self.synced.load(Ordering::Acquire));
        let (base, old_end) = (g.active().base, g.next_offset);
        let keep_below = (p.after_sync_failure || self.fsync == FsyncPolicy::Always).then(|| synced.max(base));
        // A segment file past the active one can only be a roll that failed
        // halfway; left there, it would overlap what is appended next.
        let names = self.storage.list_dir(&self.dir).map_err(|e| LogError::io("list partition dir", &self.dir, e))?;
        for b in names.iter().filter_map(|n| segment::parse_log_file_name(n)).filter(|b| *b > base) {
            let path = self.dir.join(segment::log_file_name(b));
            self.files.forget(&path);
            self.storage.remove_file(&path).map_err(|e| LogError::io("remove failed segment", &path, e))?;
            self.storage.sync_dir(&self.dir).map_err(|e| LogError::io("sync dir", &self.dir, e))?;
        }
        let (seg, report) = Segment::open_active(&self.files, &self.dir, base, keep_below)?;
        seg.sync().map_err(|e| LogError::io("sync segment", seg.log_path(), e))?;
        let end = seg.next_offset;
        // Every segment but the active one was fsynced when it was closed.
        if let Some(last) = g.segments.last_mut() {
            *last = seg;
        }
        g.next_offset = end;
        // Before `synced`: whoever sees the new `synced` sees the new epoch.
        self.epoch.fetch_add(1, Ordering::Release);
        // What is left is durable; the high watermark never goes past it.
        self.synced.store(end.0, Ordering::Release);
        if g.hw != end {
            g.hw = end;
            self.hw_tx.send_replace(end);
        }
        g.poisoned = None;
        self.files.note_recovered();
        tracing::warn!(topic = %self.topic, partition = %self.id, cause = %p.cause, cut_bytes = report.truncated_bytes,
            dropped_offsets = old_end.0.saturating_sub(end.0), next_offset = %end, "poisoned partition reopened from its durable state: taking writes again");
        Ok(())
    }

    /// Appends records (already validated by the caller) and returns once the
    /// fsync policy is met: their (offset, timestamp) in order.
    ///
    /// Inside a connection's pass (weft_wire::pass) the write to the file
    /// waits for the pass's end, where the records of all its produces go
    /// out in one write; this returns once they are written (and synced,
    /// under `always`), so an answer never gets ahead of its records.
    pub async fn append<R: std::borrow::Borrow<ProduceRecord>>(self: &Arc<Self>, records: &[R], now_ms: i64) -> Result<Vec<(Offset, i64)>> {
        let defer = weft_wire::pass::is_open();
        let (out, written) = self.write(records, now_ms, defer)?;
        self.settle(written, defer).await?;
        Ok(out)
    }

    /// After a write: queues the pending batches for the pass's end when
    /// this write was the first to leave them, then waits until the
    /// fsync policy is met for everything up to the write's end.
    async fn settle(self: &Arc<Self>, w: Written, defer: bool) -> Result<()> {
        if w.queue && !weft_wire::pass::defer(self.clone()) {
            // Cannot happen on one thread without an await in between;
            // if it did, nothing would write them: write them now.
            let mut g = lock(&self.inner);
            g.pass_queued = false;
            self.write_pending(&mut g)?;
        }
        if self.fsync == FsyncPolicy::Always {
            if defer {
                // The fsync starts after the pass, when every record of it
                // is written: one fsync for the pass, not one for its first
                // record and another for the rest.
                AfterPass(false).await;
            }
            self.sync_to(w.end, w.epoch).await
        } else if defer {
            self.written_to(w.end, w.epoch).await
        } else {
            Ok(())
        }
    }

    /// Waits until everything below `end` is in the file (the high
    /// watermark reaches it), failing when the partition was poisoned or
    /// reopened meanwhile (what was pending is lost, never acknowledged).
    async fn written_to(&self, end: Offset, epoch: u64) -> Result<()> {
        // Subscribed before the check: a write that ends after it wakes us.
        let mut rx = self.hw_tx.subscribe();
        loop {
            {
                let g = lock(&self.inner);
                if self.epoch.load(Ordering::Acquire) != epoch {
                    return Err(self.reopened_err(&g));
                }
                if g.hw >= end {
                    return Ok(());
                }
                if let Some(p) = &g.poisoned {
                    return Err(self.poisoned_err(p));
                }
                if g.deleted {
                    return Err(LogError::UnknownTopic(self.topic.to_string()));
                }
            }
            if rx.changed().await.is_err() {
                return Err(LogError::UnknownTopic(self.topic.to_string()));
            }
        }
    }

    /// The error of a write or fsync that a recovery overtook (the log was
    /// cut back and reopened while it waited): what it covered may be gone.
    fn reopened_err(&self, g: &Inner) -> LogError {
        let p = g.poisoned.clone().unwrap_or(Poison { cause: "the partition was reopened after a storage failure".into(), disk_full: false, after_sync_failure: false });
        self.poisoned_err(&p)
    }

    /// Writes the active segment's pending batches; the high watermark
    /// moves past them (unless it waits for an fsync, under `always`).
    fn write_pending(&self, g: &mut Inner) -> Result<()> {
        if !g.active().has_pending() {
            return Ok(());
        }
        if let Some(p) = &g.poisoned {
            let p = p.clone();
            g.active_mut().drop_pending();
            return Err(self.poisoned_err(&p));
        }
        if let Err(e) = g.active_mut().write_pending() {
            return Err(self.poison(g, "segment write failed", &e, false));
        }
        if self.fsync != FsyncPolicy::Always && g.next_offset > g.hw {
            g.hw = g.next_offset;
            self.hw_tx.send_replace(g.next_offset);
        }
        Ok(())
    }

    /// Writes records and makes them readable without waiting for an fsync,
    /// whatever the policy (a replicated partition's copy, whose raft log
    /// holds the records durably); returns the new end. `synced_offset`
    /// still says what is durable.
    pub fn append_unsynced<R: std::borrow::Borrow<ProduceRecord>>(&self, records: &[R], now_ms: i64) -> Result<Offset> {
        let (_, Written { end, .. }) = self.write(records, now_ms, false)?;
        if self.fsync == FsyncPolicy::Always {
            // `write` leaves the readable end at the synced one under `always`.
            let mut g = lock(&self.inner);
            if end > g.hw {
                g.hw = end;
                self.hw_tx.send_replace(end);
            }
        }
        Ok(end)
    }

    /// Encodes and writes records; returns their (offset, timestamp) and the
    /// end offset. Two allocations for a one-batch append (the answer and the
    /// batch buffer): no per-call Vecs of size hints or batches.
    fn write<R: std::borrow::Borrow<ProduceRecord>>(&self, records: &[R], now_ms: i64, defer: bool) -> Result<(Vec<(Offset, i64)>, Written)> {
        // Encode outside the lock with offsets relative to 0; the base offset
        // is patched in under the lock (it is not covered by the CRC).
        let hint = |r: &ProduceRecord| batch::record_size_hint(r.key.as_deref(), r.value.as_deref(), &r.headers);
        // Relative offsets here; the base is added once it is known.
        let mut out: Vec<(Offset, i64)> = Vec::with_capacity(records.len());
        // The first batch, and any further ones (a request over BATCH_TARGET_BYTES).
        let mut first_batch = None;
        let mut more_batches = Vec::new();
        let mut start = 0;
        while start < records.len() {
            // One size hint per record: it sizes each batch buffer up front
            // and decides where batches split.
            let mut end = start + 1;
            let mut bytes = hint(records[start].borrow());
            while let Some(r) = records.get(end) {
                let h = hint(r.borrow());
                if bytes + h > BATCH_TARGET_BYTES {
                    break;
                }
                bytes += h;
                end += 1;
            }
            let mut b = BatchBuilder::with_capacity(Offset::ZERO, bytes);
            for (i, r) in records[start..end].iter().enumerate() {
                let r = r.borrow();
                let ts = r.timestamp_ms.unwrap_or(now_ms);
                b.push(Offset(i as u64), ts, r.key.as_deref(), r.value.as_deref(), &r.headers)?;
                out.push((Offset(out.len() as u64), ts));
            }
            start = end;
            if let Some(done) = b.finish_mut() {
                if first_batch.is_none() {
                    first_batch = Some(done);
                } else {
                    more_batches.push(done);
                }
            }
        }
        let w = self.write_encoded(first_batch.into_iter().chain(more_batches), now_ms, defer)?;
        for (o, _) in &mut out {
            o.0 += w.first.0;
        }
        Ok((out, w))
    }

    /// Appends a batch encoded by the caller (e.g. a client that sent it in
    /// this crate's format): it is stored byte for byte except for the base
    /// offset. The caller validated it with [`validate_encoded_batch`].
    /// Returns the base offset once the fsync policy is met.
    pub async fn append_encoded(self: &Arc<Self>, header: batch::BatchHeader, bytes: bytes::BytesMut, now_ms: i64) -> Result<Offset> {
        let defer = weft_wire::pass::is_open();
        let w = self.write_encoded(std::iter::once((header, bytes)), now_ms, defer)?;
        let first = w.first;
        self.settle(w, defer).await?;
        Ok(first)
    }

    /// Writes encoded batches (offsets relative to 0) at the end of the log,
    /// or with `defer` leaves them pending for the pass's end.
    fn write_encoded(&self, batches: impl IntoIterator<Item = (batch::BatchHeader, bytes::BytesMut)>, now_ms: i64, defer: bool) -> Result<Written> {
        let mut g = lock(&self.inner);
        self.check_writable(&mut g)?;
        let first = g.next_offset;
        for (mut h, mut bytes) in batches {
            let base = g.next_offset;
            batch::set_base_offset(&mut bytes, &mut h, base);
            let records = u64::from(h.record_count);
            self.append_batch(&mut g, &h, &bytes, records, now_ms, defer)?;
        }
        let end = g.next_offset;
        let pending = g.active().has_pending();
        if self.fsync != FsyncPolicy::Always && !pending && end > g.hw {
            g.hw = end;
            self.hw_tx.send_replace(end);
        }
        let queue = pending && !std::mem::replace(&mut g.pass_queued, true);
        Ok(Written { first, end, epoch: self.epoch.load(Ordering::Acquire), queue })
    }

    /// Rolls the active segment if the next batch would not fit, if it is too
    /// old, or if its offsets would overflow the 32-bit relative offsets.
    /// Append one encoded batch (its base offset set) to the active segment,
    /// rolling first when due (`span`: offsets from the end to the batch's
    /// end), and move the end past it.
    fn append_batch(&self, g: &mut Inner, h: &batch::BatchHeader, bytes: &[u8], span: u64, now_ms: i64, defer: bool) -> Result<()> {
        self.maybe_roll(g, bytes.len() as u64, span, now_ms)?;
        let res = match g.segments.last_mut() {
            Some(seg) => seg.append(h, bytes, now_ms, defer),
            None => Err(std::io::Error::other("no active segment")),
        };
        if let Err(e) = res {
            // The file may hold part of the batch: stop writing; recovery truncates it.
            return Err(self.poison(g, "segment write failed", &e, false));
        }
        g.next_offset = h.next_offset();
        self.appends.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn maybe_roll(&self, g: &mut Inner, batch_len: u64, batch_records: u64, now_ms: i64) -> Result<()> {
        let cfg = self.config();
        let a = g.active();
        let too_big = a.end_pos() + batch_len > cfg.segment_bytes;
        let too_old = a.first_append_ms.is_some_and(|t| now_ms.saturating_sub(t) >= cfg.segment_ms as i64);
        let too_far = g.next_offset.0 + batch_records - a.base.0 > u64::from(u32::MAX);
        if !a.is_empty() && (too_big || too_old || too_far) {
            self.roll(g)?;
        }
        Ok(())
    }

    fn roll(&self, g: &mut Inner) -> Result<()> {
        // A closed segment has nothing pending (readers and compaction
        // read closed segments to their size).
        self.write_pending(g)?;
        let path = g.active().log_path();
        // A closed segment is always durable: its index is trusted on open.
        let fsync_started = std::time::Instant::now();
        if let Err(e) = g.active().sync() {
            return Err(self.poison(g, &format!("fsync of {} failed", path.display()), &e, true));
        }
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        weft_metrics::get().fsync_duration.observe(fsync_started.elapsed().as_secs_f64());
        weft_metrics::get().fsyncs.inc();
        if let Err(e) = g.active().write_index() {
            tracing::warn!(error = %e, "could not write segment index; it will be rebuilt on open");
        }
        let seg = match Segment::create(&self.files, &self.dir, g.next_offset) {
            Ok(s) => s,
            Err(LogError::Io { op, path, source }) => return Err(self.poison(g, &format!("{op} {} failed", path.display()), &source, false)),
            Err(e) => return Err(self.poison(g, "creating a segment failed", &std::io::Error::other(e.to_string()), false)),
        };
        g.segments.push(seg);
        let durable = g.next_offset;
        self.mark_synced(g, durable);
        Ok(())
    }

    fn mark_synced(&self, g: &mut Inner, durable: Offset) {
        self.synced.fetch_max(durable.0, Ordering::AcqRel);
        if durable > g.hw {
            g.hw = durable;
            self.hw_tx.send_replace(durable);
        }
    }

    /// Returns once every offset below `end` (written in `epoch`) is
    /// durable (group commit).
    ///
    /// The fsyncs run in the partition's sync loop on a blocking thread,
    /// started by the first waiter that finds none running. Under `always`
    /// the loop starts the next fsync as soon as one ends, covering
    /// everything written meanwhile, and stops once it has caught up (or
    /// after [`SYNC_LOOP_FSYNCS`]); each waiter is woken by the fsync that
    /// covers it, or when the loop stops. A loop that goes on
    /// by itself saves the next fsync two thread hops (its end reaching a
    /// waiter, that waiter reaching a blocking thread): about 180 us of
    /// each fsync cycle under load (docs/BENCHMARKS.md, sixth round).
    async fn sync_to(self: &Arc<Self>, end: Offset, epoch: u64) -> Result<()> {
        // What this waiter registered: in which round of wake-ups, and with
        // which waker (a future moved to another task registers again).
        let mut registered: Option<(u64, Waker)> = None;
        std::future::poll_fn(|cx| {
            // Covered, and no recovery since the write: done without the
            // lock (the poll after the fsync that woke this waiter).
            // `synced` first: a recovery stores the epoch before it.
            if self.synced.load(Ordering::Acquire) >= end.0 && self.epoch.load(Ordering::Acquire) == epoch {
                return Poll::Ready(Ok(()));
            }
            let mut g = lock(&self.inner);
            if self.epoch.load(Ordering::Acquire) != epoch {
                // A recovery cut the log back since the write: the offsets
                // up to `end` may hold other records now.
                return Poll::Ready(Err(self.reopened_err(&g)));
            }
            if self.synced.load(Ordering::Acquire) >= end.0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(p) = &g.poisoned {
                return Poll::Ready(Err(self.poisoned_err(p)));
            }
            if g.deleted {
                return Poll::Ready(Err(LogError::UnknownTopic(self.topic.to_string())));
            }
            let start = !std::mem::replace(&mut g.syncing, true);
            if !registered.as_ref().is_some_and(|(n, w)| *n == g.sync_wakeups && w.will_wake(cx.waker())) {
                g.sync_waiters.push((end.0, cx.waker().clone()));
                registered = Some((g.sync_wakeups, cx.waker().clone()));
            }
            drop(g);
            if start {
                self.spawn_sync_loop();
            }
            Poll::Pending
        })
        .await
    }

    /// Runs the sync loop on a blocking thread; the caller took the turn
    /// (set `syncing`).
    fn spawn_sync_loop(self: &Arc<Self>) {
        #[cfg(test)]
        self.sync_runs.fetch_add(1, Ordering::Relaxed);
        let turn = SyncTurn(self.clone());
        let handle = tokio::runtime::Handle::current();
        // Inside a traced produce (its `log.append`), the loop's first
        // fsync is a span of that trace.
        let parent = tracing::Span::current();
        // Detached: the loop ends by itself once caught up; dropping the
        // handle does not stop it. At shutdown the closure may be dropped
        // unrun, and the turn's drop wakes the waiters.
        drop(tokio::task::spawn_blocking(move || turn.0.run_sync_loop(&handle, &parent)));
    }

    /// The sync loop (a blocking thread; the caller holds the turn): fsyncs
    /// the active segment, marking durable everything written before each
    /// fsync started, until nothing more is written or [`SYNC_LOOP_FSYNCS`]
    /// are done (under `always`), or after one fsync (other policies, whose
    /// flushes come from a timer).
    fn run_sync_loop(&self, handle: &tokio::runtime::Handle, parent: &tracing::Span) {
        let mut done = 0u64;
        self.sync_loop_fsyncs(handle, parent, &mut done);
        #[cfg(test)]
        self.sync_run_max_fsyncs.fetch_max(done, Ordering::Relaxed);
    }

    /// The loop's body; `done` counts its fsyncs (at most [`SYNC_LOOP_FSYNCS`]).
    fn sync_loop_fsyncs(&self, handle: &tokio::runtime::Handle, parent: &tracing::Span, done: &mut u64) {
        let mut first = true;
        // The wakers of the appenders an fsync covered (kept for the next).
        let mut covered: Vec<Waker> = Vec::new();
        loop {
            if *done >= SYNC_LOOP_FSYNCS {
                return; // the turn's drop wakes the waiters: one starts the next run
            }
            let (target, path, epoch) = {
                let mut g = lock(&self.inner);
                if g.poisoned.is_some() || g.deleted {
                    return;
                }
                // What a pass left pending is covered by this fsync; a
                // failure poisons the partition and its waiters learn it.
                if self.write_pending(&mut g).is_err() {
                    return;
                }
                if self.synced.load(Ordering::Acquire) >= g.next_offset.0 {
                    return; // caught up
                }
                (g.next_offset, g.active().log_path(), self.epoch.load(Ordering::Acquire))
            };
            // Bounds the descriptors held by fsyncs in flight (see `files`).
            // Taken per fsync, so busy partitions take turns for permits.
            let _permit = match self.files.sync_permits.try_acquire() {
                Ok(p) => Ok(p),
                Err(_) => handle.block_on(self.files.sync_permits.acquire()),
            };
            let span = if first && !parent.is_none() { tracing::info_span!(parent: parent, "log.fsync", path = %path.display()) } else { tracing::Span::none() };
            let fsync_started = std::time::Instant::now();
            let res = span.in_scope(|| self.files.sync(&path));
            weft_metrics::get().fsync_duration.observe(fsync_started.elapsed().as_secs_f64());
            drop(_permit);
            first = false;
            {
                let mut g = lock(&self.inner);
                if self.epoch.load(Ordering::Acquire) != epoch {
                    // A recovery cut the log back while this fsync ran: what
                    // it covered may be gone, so it marks nothing durable
                    // (the recovery set what is).
                    continue;
                }
                if let Err(e) = res {
                    self.poison(&mut g, &format!("fsync of {} failed", path.display()), &e, true);
                    return;
                }
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                weft_metrics::get().fsyncs.inc();
                *done += 1;
                self.mark_synced(&mut g, target);
                if self.fsync != FsyncPolicy::Always {
                    return; // the turn's drop wakes every waiter
                }
                let mut i = 0;
                while let Some((end, _)) = g.sync_waiters.get(i) {
                    if *end <= target.0 {
                        covered.push(g.sync_waiters.swap_remove(i).1);
                    } else {
                        i += 1;
                    }
                }
            }
            // Woken outside the lock: a wake may be a syscall (the waiter's
            // thread sleeps in epoll).
            covered.drain(..).for_each(Waker::wake);
        }
    }

    /// Fsyncs everything written so far (interval policy, shutdown).
    pub async fn flush(self: &Arc<Self>) -> Result<()> {
        let (end, epoch) = {
            let g = lock(&self.inner);
            (g.next_offset, self.epoch.load(Ordering::Acquire))
        };
        if self.synced.load(Ordering::Acquire) >= end.0 {
            return Ok(());
        }
        self.sync_to(end, epoch).await
    }

    /// Reads from `offset`; with `wait`, waits up to that long for data when
    /// `offset` is the high watermark.
    pub async fn fetch(
        &self,
        offset: Offset,
        max_bytes: usize,
        max_records: usize,
        wait: Option<Duration>,
    ) -> Result<FetchResult> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut rx = self.hw_tx.subscribe();
        loop {
            rx.borrow_and_update();
            let r = self.read(offset, max_bytes, max_records)?;
            let Some(deadline) = deadline else { return Ok(r) };
            if !r.batches.is_empty() {
                return Ok(r);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Ok(r), // timed out: empty result
                Ok(Err(_)) => return Err(LogError::UnknownTopic(self.topic.to_string())),
                Ok(Ok(())) => {}
            }
        }
    }

    fn read(&self, offset: Offset, max_bytes: usize, max_records: usize) -> Result<FetchResult> {
        let (file, path, pos, end, hw, log_start) = {
            let g = lock(&self.inner);
            if g.deleted {
                return Err(LogError::UnknownTopic(self.topic.to_string()));
            }
            let log_start = g.log_start();
            if offset < log_start || offset > g.hw {
                return Err(LogError::OffsetOutOfRange {
                    topic: self.topic.to_string(),
                    partition: self.id,
                    requested: offset,
                    earliest: log_start,
                    latest: g.hw,
                });
            }
            let mut i = g.segments.partition_point(|s| s.base <= offset).saturating_sub(1);
            // Skip segments that end at or before the offset (end of a closed
            // segment, or a gap left by compaction).
            while i + 1 < g.segments.len() && g.segments[i].next_offset <= offset {
                i += 1;
            }
            let s = &g.segments[i];
            // Opened under the lock: retention cannot remove the file in between.
            (s.file()?, s.log_path(), s.lookup_pos(offset), s.size, g.hw, log_start)
        };
        let empty = |hw| FetchResult {
            topic: self.topic.clone(),
            partition: self.id,
            fetch_offset: offset,
            high_watermark: hw,
            log_start_offset: log_start,
            batches: Bytes::new(),
            max_records,
        };
        if offset >= hw || max_records == 0 {
            return Ok(empty(hw));
        }
        let (batches, _) = read_batches(&*file, &path, pos, end, offset, hw, max_bytes.max(1), max_records)?;
        Ok(FetchResult { batches, ..empty(hw) })
    }

    /// First offset still stored.
    pub fn earliest(&self) -> Offset {
        lock(&self.inner).log_start()
    }

    /// High watermark: next offset a consumer will see.
    pub fn latest(&self) -> Offset {
        lock(&self.inner).hw
    }

    /// Earliest offset whose record has timestamp >= `ts`, `None` if none.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<Offset>> {
        let targets: Vec<_> = {
            let g = lock(&self.inner);
            g.segments
                .iter()
                .filter(|s| !s.is_empty() && s.max_ts >= ts)
                .map(|s| (s.log_path(), s.lookup_time_pos(ts), s.size))
                .collect()
        };
        let hw = self.latest();
        for (path, pos, end) in targets {
            let file = self.files.get(&path).map_err(|e| LogError::io("open segment", &path, e))?;
            let mut pos = pos;
            let mut hdr = [0u8; batch::HEADER_LEN];
            while pos < end {
                file.read_exact_at(&mut hdr, pos).map_err(|e| LogError::io("read segment", &path, e))?;
                let h = batch::peek_header(&hdr)
                    .map_err(|e| LogError::Corrupt { path: path.clone(), pos, reason: e.to_string() })?
                    .ok_or_else(|| LogError::Corrupt { path: path.clone(), pos, reason: "short header".into() })?;
                if h.base_offset >= hw {
                    return Ok(None);
                }
                if h.max_timestamp_ms >= ts {
                    let (bytes, _) = read_batches(&*file, &path, pos, end, h.base_offset, hw, 1, usize::MAX)?;
                    for r in BatchesDecoder::new(bytes, Offset::ZERO, usize::MAX) {
                        let r = r?;
                        if r.timestamp_ms >= ts {
                            return Ok(Some(r.offset));
                        }
                    }
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(None)
    }

    pub fn stats(&self) -> PartitionStats {
        let g = lock(&self.inner);
        PartitionStats {
            partition: self.id,
            log_start_offset: g.log_start(),
            log_end_offset: g.next_offset,
            high_watermark: g.hw,
            synced_offset: Offset(self.synced.load(Ordering::Acquire)),
            segments: g.segments.len(),
            size_bytes: g.segments.iter().map(|s| s.size).sum(),
            appends: self.appends.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            poisoned: g.poisoned.as_ref().map(|p| p.cause.clone()),
            disk_full: g.poisoned.as_ref().is_some_and(|p| p.disk_full),
        }
    }

    /// Marks the partition deleted: writers and readers get UnknownTopic,
    /// long-polls wake up.
    pub fn mark_deleted(&self) {
        lock(&self.inner).deleted = true;
        self.hw_tx.send_modify(|_| {});
    }

    /// Rolls the active segment if it is older than `segment_ms` (so that
    /// retention can reach data in a quiet partition).
    pub fn roll_if_aged(&self, now_ms: i64) -> Result<bool> {
        let mut g = lock(&self.inner);
        self.check_writable(&mut g)?;
        let a = g.active();
        if !a.is_empty() && a.first_append_ms.is_some_and(|t| now_ms.saturating_sub(t) >= self.config().segment_ms as i64) {
            self.roll(&mut g)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes closed segments past the retention limits (cleanup=delete).
    /// Returns how many segments were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let cfg = self.config();
        if cfg.cleanup != CleanupPolicy::Delete {
            return Ok(0);
        }
        let mut g = lock(&self.inner);
        if g.deleted {
            return Ok(0);
        }
        let mut deleted = 0;
        let mut total: u64 = g.segments.iter().map(|s| s.size).sum();
        while g.segments.len() > 1 {
            let s = &g.segments[0];
            // Only data the consumers could already see is deleted.
            if s.next_offset > g.hw {
                break;
            }
            let by_time = cfg.retention_ms.is_some_and(|r| s.max_ts < now_ms.saturating_sub(r as i64));
            let by_size = cfg.retention_bytes.is_some_and(|r| total > r);
            if !(by_time || by_size) {
                break;
            }
            let s = g.segments.remove(0);
            total -= s.size;
            deleted += 1;
            tracing::info!(topic = %self.topic, partition = %self.id, segment = %s.base, by_time, by_size, "retention deleted segment");
            // Closed now, so a deleted file's space is freed at once.
            self.files.forget(&s.log_path());
            for p in [s.log_path(), s.index_path()] {
                if self.storage.exists(&p) {
                    self.storage.remove_file(&p).map_err(|e| LogError::io("delete segment", &p, e))?;
                }
            }
        }
        if deleted > 0 {
            self.storage.sync_dir(&self.dir).map_err(|e| LogError::io("sync dir", &self.dir, e))?;
        }
        Ok(deleted)
    }

    /// Compacts closed segments (cleanup=compact): keeps the newest record
    /// per key among durable records, drops tombstones older than
    /// `delete_retention_ms`. Records without a key are kept.
    pub fn compact(&self, now_ms: i64) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        let cfg = self.config();
        if cfg.cleanup != CleanupPolicy::Compact {
            return Ok(report);
        }
        let mut state = lock(&self.compact_state);
        let (snapshot, durable, closed_end) = {
            let g = lock(&self.inner);
            if g.deleted || g.segments.len() < 2 {
                return Ok(report);
            }
            let snap: Vec<_> = g.segments.iter().map(|s| (s.base, s.log_path(), s.size)).collect();
            let closed_end = g.segments[g.segments.len() - 2].next_offset;
            (snap, Offset(self.synced.load(Ordering::Acquire)), closed_end)
        };
        // Skip the full scan when no segment was closed since the last
        // compaction, unless tombstones may have expired meanwhile.
        let recheck_ms = (cfg.delete_retention_ms as i64).clamp(1000, 3600 * 1000);
        if closed_end <= state.cleaned_upto && state.at_ms.is_some_and(|t| now_ms.saturating_sub(t) < recheck_ms) {
            return Ok(report);
        }
        // Pass 1: newest durable offset of every key.
        let mut latest: HashMap<Bytes, Offset> = HashMap::new();
        for (_, path, size) in &snapshot {
            let file = self.files.get(path).map_err(|e| LogError::io("open segment", path, e))?;
            for_each_batch(&*file, path, *size, |b| {
                for r in b.records() {
                    let r = r?;
                    if r.offset >= durable {
                        break;
                    }
                    if let Some(k) = r.key {
                        latest.insert(k, r.offset);
                    }
                }
                Ok(())
            })?;
        }
        let tombstone_cutoff = now_ms.saturating_sub(cfg.delete_retention_ms as i64);
        let keep = |r: &Record| match &r.key {
            None => true,
            Some(k) => {
                latest.get(k).is_none_or(|o| *o == r.offset) && (r.value.is_some() || r.timestamp_ms >= tombstone_cutoff)
            }
        };
        // Pass 2: rewrite closed segments that have something to drop.
        let closed = snapshot.len() - 1;
        for (base, path, size) in snapshot.into_iter().take(closed) {
            let file = self.files.get(&path).map_err(|e| LogError::io("open segment", &path, e))?;
            let mut batches = Vec::new();
            let mut dropped = 0u64;
            for_each_batch(&*file, &path, size, |b| {
                let mut nb = BatchBuilder::new(b.header.base_offset);
                let mut kept = 0;
                for r in b.records() {
                    let r = r?;
                    if keep(&r) {
                        nb.push(r.offset, r.timestamp_ms, r.key.as_deref(), r.value.as_deref(), &r.headers)?;
                        kept += 1;
                    } else {
                        dropped += 1;
                    }
                }
                if kept == b.header.record_count {
                    batches.push(b.bytes); // unchanged: keep the bytes as they are
                } else if let Some((_, bytes)) = nb.finish() {
                    batches.push(bytes);
                }
                Ok(())
            })?;
            if dropped == 0 {
                continue;
            }
            report.records_removed += dropped;
            self.replace_segment(base, &batches, &mut report)?;
        }
        if report.records_removed > 0 {
            tracing::info!(topic = %self.topic, partition = %self.id, ?report, "compacted");
        }
        *state = CompactState { cleaned_upto: closed_end, at_ms: Some(now_ms) };
        Ok(report)
    }

    /// Atomically replaces a closed segment's content with `batches` (or
    /// removes the segment if empty).
    fn replace_segment(&self, base: Offset, batches: &[Bytes], report: &mut CompactionReport) -> Result<()> {
        let log = self.dir.join(segment::log_file_name(base));
        let idx = self.dir.join(segment::index_file_name(base));
        let cleaned = self.dir.join(format!("{}.cleaned", segment::log_file_name(base)));
        fn io<'a>(op: &'static str, p: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> LogError + 'a {
            move |e| LogError::io(op, p, e)
        }
        if !batches.is_empty() {
            let f = self.storage.open(&cleaned, true).map_err(io("create cleaned segment", &cleaned))?;
            f.set_len(0).map_err(io("truncate cleaned segment", &cleaned))?;
            let mut pos = 0u64;
            for b in batches {
                f.write_all_at(b, pos).map_err(io("write cleaned segment", &cleaned))?;
                pos += b.len() as u64;
            }
            f.sync_data().map_err(io("sync cleaned segment", &cleaned))?;
        }
        let mut g = lock(&self.inner);
        let Some(i) = g.segments.iter().position(|s| s.base == base) else {
            let _ = self.storage.remove_file(&cleaned);
            return Ok(());
        };
        if i + 1 >= g.segments.len() {
            let _ = self.storage.remove_file(&cleaned);
            return Ok(()); // became active? never expected; leave it alone
        }
        // Remove the old index first: a crash after this point leaves a log
        // without index (rebuilt by scan), never a stale index.
        if self.storage.exists(&idx) {
            self.storage.remove_file(&idx).map_err(io("remove index", &idx))?;
        }
        if batches.is_empty() {
            self.storage.remove_file(&log).map_err(io("remove segment", &log))?;
            self.files.forget(&log);
            self.storage.sync_dir(&self.dir).map_err(io("sync dir", &self.dir))?;
            g.segments.remove(i);
            report.segments_removed += 1;
            return Ok(());
        }
        self.storage.rename(&cleaned, &log).map_err(io("rename cleaned segment", &log))?;
        // The cached handle is of the replaced file.
        self.files.forget(&log);
        self.storage.sync_dir(&self.dir).map_err(io("sync dir", &self.dir))?;
        let (seg, _) = Segment::open_closed(&self.files, &self.dir, base)?;
        g.segments[i] = seg;
        report.segments_rewritten += 1;
        Ok(())
    }
}

/// Checks a client-encoded batch before [`Partition::append_encoded`]:
/// exactly one whole batch, CRC right, attributes 0, offsets 0..count
/// without gaps (the log numbers records contiguously), every record
/// decodable and within `max_record_bytes`. Returns its header.
pub fn validate_encoded_batch(bytes: &[u8], max_record_bytes: usize) -> Result<batch::BatchHeader> {
    let bad = |why: &str| LogError::InvalidRequest(format!("bad record batch: {why}"));
    let h = batch::check_batch(bytes)
        .map_err(|e| bad(&e.to_string()))?
        .ok_or_else(|| bad("truncated"))?;
    if h.total_len() != bytes.len() {
        return Err(bad("bytes after the batch"));
    }
    if h.attributes != 0 {
        return Err(bad("unknown attributes"));
    }
    if u64::from(h.last_offset_delta) + 1 != u64::from(h.record_count) {
        return Err(bad("record offsets must be 0..count without gaps"));
    }
    let b = batch::Batch { header: h, bytes: Bytes::copy_from_slice(bytes) };
    for (i, r) in b.records().enumerate() {
        let r = r.map_err(|e| bad(&e.to_string()))?;
        if r.offset.0 != h.base_offset.0 + i as u64 {
            return Err(bad("record offsets must be 0..count without gaps"));
        }
        let size = r.key.as_ref().map_or(0, |k| k.len())
            + r.value.as_ref().map_or(0, |v| v.len())
            + r.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        if size > max_record_bytes {
            return Err(LogError::RecordTooLarge { size, max: max_record_bytes });
        }
    }
    Ok(h)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn part(s: &MemStorage, cfg: TopicConfig, fsync: FsyncPolicy) -> Arc<Partition> {
        let st: Arc<dyn Storage> = Arc::new(s.clone());
        Arc::new(
            Partition::open(Arc::new(OpenFiles::new(st, 8)), PathBuf::from("/t/0"), TopicName::new("t").unwrap(), PartitionId(0), cfg, fsync, Duration::ZERO)
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn append_fetch_roll_reopen() {
        let s = MemStorage::new();
        let cfg = TopicConfig { segment_bytes: 4096, ..Default::default() };
        let p = part(&s, cfg.clone(), FsyncPolicy::Always);
        for i in 0..100u32 {
            let r = ProduceRecord::keyed(format!("k{i}"), vec![b'x'; 200]);
            let out = p.append(&[&r], 1000 + i as i64).await.unwrap();
            assert_eq!(out[0].0, Offset(i as u64));
        }
        assert!(p.stats().segments > 3);
        let f = p.fetch(Offset(37), 1, 1000, None).await.unwrap();
        let recs = f.decode().unwrap();
        assert_eq!(recs[0].offset, Offset(37));
        drop(p);
        let p = part(&s, cfg, FsyncPolicy::Always);
        assert_eq!(p.latest(), Offset(100));
        let mut off = Offset(0);
        while off < Offset(100) {
            let f = p.fetch(off, 10_000, 1000, None).await.unwrap();
            for r in f.records() {
                let r = r.unwrap();
                assert_eq!(r.offset, off);
                off = off.next();
            }
        }
        assert_eq!(p.offset_for_timestamp(1050).unwrap(), Some(Offset(50)));
        assert_eq!(p.offset_for_timestamp(5000).unwrap(), None);
        assert!(matches!(p.fetch(Offset(101), 10, 10, None).await, Err(LogError::OffsetOutOfRange { .. })));
    }

    /// A replica's copy under `always`: readable at once, durable (the
    /// synced offset) only once flushed.
    #[tokio::test]
    async fn append_unsynced_is_readable_before_its_fsync() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        let recs = [ProduceRecord::value("a"), ProduceRecord::value("b")];
        assert_eq!(p.append_unsynced(&recs, 0).unwrap(), Offset(2));
        assert_eq!(p.append_unsynced(&recs[..1], 0).unwrap(), Offset(3));
        assert_eq!(p.stats().fsyncs, 0);
        assert_eq!(p.stats().synced_offset, Offset(0));
        let got = p.fetch(Offset(0), 1 << 20, 10, None).await.unwrap().decode().unwrap();
        assert_eq!(got.iter().map(|r| r.offset.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        p.flush().await.unwrap();
        assert_eq!(p.stats().synced_offset, Offset(3));
        assert_eq!(p.stats().fsyncs, 1);
    }

    /// Group commit under `always`: 64 appends in flight share a couple of
    /// fsyncs, each is acknowledged with its own offset, and only once
    /// durable.
    #[tokio::test]
    async fn concurrent_appends_share_fsyncs() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        // A disk's fsync time: the sync loop goes on by itself as long as
        // records come, so an instant fsync would cover one record each.
        s.set_sync_delay(Duration::from_millis(200));
        let recs: Vec<ProduceRecord> = (0..64).map(|i| ProduceRecord::value(format!("r{i}"))).collect();
        let outs = futures::future::join_all(recs.iter().map(|r| p.append(std::slice::from_ref(r), 0))).await;
        let mut offsets: Vec<u64> = outs.into_iter().map(|o| o.unwrap()[0].0.0).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..64).collect::<Vec<_>>());
        let st = p.stats();
        assert_eq!(st.synced_offset, Offset(64));
        assert_eq!(st.high_watermark, Offset(64));
        // The first fsync covers the first append; the second everything
        // written while it ran.
        assert!(st.fsyncs <= 2, "{} fsyncs for 64 appends", st.fsyncs);
    }

    /// Every append waiting on a failed group commit gets the error; none
    /// hangs, and nothing unacknowledged becomes readable.
    #[tokio::test]
    async fn a_failed_group_commit_fails_every_waiter() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        p.append(&[&ProduceRecord::value("a")], 0).await.unwrap();
        s.fail_syncs_after(0);
        let recs: Vec<ProduceRecord> = (0..16).map(|i| ProduceRecord::value(format!("r{i}"))).collect();
        let all = futures::future::join_all(recs.iter().map(|r| p.append(std::slice::from_ref(r), 0)));
        let outs = tokio::time::timeout(Duration::from_secs(10), all).await.expect("no waiter hangs");
        for o in outs {
            assert!(matches!(o, Err(LogError::Poisoned { .. })), "{o:?}");
        }
        assert_eq!(p.latest(), Offset(1));
    }

    /// Under `always` the sync loop starts the next fsync by itself when
    /// records were written during one: a waiter polled once, never again,
    /// still has its record made durable.
    #[tokio::test]
    async fn the_sync_loop_covers_later_writes_by_itself() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        s.set_sync_delay(Duration::from_millis(100));
        let a = [ProduceRecord::value("a")];
        let b = [ProduceRecord::value("b")];
        let first = p.append(&a, 0);
        let second = p.append(&b, 0);
        futures::pin_mut!(first, second);
        let ops = s.op_count();
        assert!(futures::poll!(first.as_mut()).is_pending());
        // The loop took its target (offset 1) before the fsync's first
        // storage operation (the write was the one before): wait for that,
        // so the second record is written while the first fsync runs.
        wait_for("the first fsync to start", || s.op_count() >= ops + 2).await;
        assert!(futures::poll!(second.as_mut()).is_pending());
        wait_for("the loop to sync the second record", || p.stats().synced_offset >= Offset(2)).await;
        assert_eq!(p.stats().fsyncs, 2);
        assert_eq!(second.await.unwrap()[0].0, Offset(1));
        assert_eq!(first.await.unwrap()[0].0, Offset(0));
    }

    /// The topic is deleted while appends wait for an fsync: they fail with
    /// UnknownTopic (the one the running fsync covers may be acknowledged
    /// if polled after it), none hangs, and the loop stops without
    /// another fsync.
    #[tokio::test]
    async fn appends_waiting_when_the_topic_is_deleted_end() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        s.set_sync_delay(Duration::from_millis(100));
        let a = [ProduceRecord::value("a")];
        let b = [ProduceRecord::value("b")];
        let first = p.append(&a, 0);
        let second = p.append(&b, 0);
        futures::pin_mut!(first, second);
        let ops = s.op_count();
        assert!(futures::poll!(first.as_mut()).is_pending());
        wait_for("the first fsync to start", || s.op_count() >= ops + 2).await;
        assert!(futures::poll!(second.as_mut()).is_pending());
        p.mark_deleted();
        let both = tokio::time::timeout(Duration::from_secs(10), futures::future::join(first, second)).await.expect("no append hangs");
        // The first may be polled before or after its fsync ends.
        assert!(matches!(&both.0, Ok(o) if o[0].0 == Offset(0)) || matches!(both.0, Err(LogError::UnknownTopic(_))), "{:?}", both.0);
        assert!(matches!(both.1, Err(LogError::UnknownTopic(_))), "{:?}", both.1);
        // The loop stops at the deleted partition once its fsync ended.
        wait_for("the sync loop to end", || !lock(&p.inner).syncing).await;
        assert_eq!(p.stats().fsyncs, 1);
    }

    /// Under writes that never let the loop catch up, one run of the sync
    /// loop still ends after SYNC_LOOP_FSYNCS fsyncs (its blocking thread
    /// goes back to the pool) and the next run carries on: every append is
    /// acknowledged, in order.
    #[tokio::test]
    async fn a_sync_loop_run_gives_its_thread_back() {
        use futures::StreamExt;
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        s.set_sync_delay(Duration::from_millis(1));
        let recs: Vec<[ProduceRecord; 1]> = (0..4000).map(|i| [ProduceRecord::value(format!("r{i}"))]).collect();
        // 32 appends in flight, refilled as each is acknowledged.
        let mut offsets: Vec<u64> = futures::stream::iter(recs.iter().map(|r| p.append(r, 0)))
            .buffer_unordered(32)
            .map(|o| o.unwrap()[0].0.0)
            .collect()
            .await;
        offsets.sort_unstable();
        assert_eq!(offsets, (0..4000).collect::<Vec<_>>());
        let fsyncs = p.stats().fsyncs;
        assert!(fsyncs > 2 * SYNC_LOOP_FSYNCS, "{fsyncs} fsyncs: too few to need a second run");
        assert!(p.sync_run_max_fsyncs.load(Ordering::Relaxed) <= SYNC_LOOP_FSYNCS);
        assert!(p.sync_runs.load(Ordering::Relaxed) * SYNC_LOOP_FSYNCS >= fsyncs);
    }

    /// A waiter polled again before its fsync ends (e.g. in a select with
    /// a timer) stays registered once: the waiter list does not grow with
    /// its polls.
    #[tokio::test]
    async fn a_waiter_polled_again_registers_once() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        s.set_sync_delay(Duration::from_millis(100));
        let a = [ProduceRecord::value("a")];
        let f = p.append(&a, 0);
        futures::pin_mut!(f);
        for _ in 0..100 {
            assert!(futures::poll!(f.as_mut()).is_pending());
        }
        assert_eq!(lock(&p.inner).sync_waiters.len(), 1);
        assert_eq!(f.await.unwrap()[0].0, Offset(0));
        assert!(lock(&p.inner).sync_waiters.is_empty());
    }

    /// An append whose caller is dropped while its fsync runs does not stop
    /// the sync loop; the loop ends once caught up and the next append
    /// still gets its fsync and its answer.
    #[tokio::test]
    async fn a_cancelled_appender_does_not_stall_the_sync_loop() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        let r = ProduceRecord::value("a");
        {
            let first = p.append(std::slice::from_ref(&r), 0);
            futures::pin_mut!(first);
            // One poll: the record is written and its fsync started (on a
            // blocking thread), then the caller goes away.
            assert!(futures::poll!(first.as_mut()).is_pending());
            assert!(lock(&p.inner).syncing);
        }
        wait_for("the sync loop to end", || !lock(&p.inner).syncing).await;
        assert_eq!(p.stats().synced_offset, Offset(1), "the loop synced the dropped caller's record");
        let b = [ProduceRecord::value("b")];
        let next = p.append(&b, 0);
        let out = tokio::time::timeout(Duration::from_secs(10), next).await.expect("the next append is not stalled").unwrap();
        assert_eq!(out[0].0, Offset(1));
        assert_eq!(p.stats().synced_offset, Offset(2));
    }

    #[tokio::test]
    async fn fsync_failure_poisons() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        p.append(&[&ProduceRecord::value("a")], 0).await.unwrap();
        s.fail_syncs_after(0);
        let e = p.append(&[&ProduceRecord::value("b")], 0).await.unwrap_err();
        assert!(matches!(e, LogError::Poisoned { .. }), "{e}");
        let e = p.append(&[&ProduceRecord::value("c")], 0).await.unwrap_err();
        assert!(matches!(e, LogError::Poisoned { .. }));
        // Unacknowledged data is not visible.
        assert_eq!(p.latest(), Offset(1));
    }

    /// Waits (polling every millisecond, 10 s at most: a bound against
    /// hangs, not a timing assertion) until `done`.
    async fn wait_for(what: &str, done: impl Fn() -> bool) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < until, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `n` one-value records r0, r1, ...
    fn values(n: usize) -> Vec<ProduceRecord> {
        (0..n).map(|i| ProduceRecord::value(format!("r{i}"))).collect()
    }

    /// Polls each future once (as a connection's first step does).
    fn poll_all<F: std::future::Future + Unpin>(fs: &mut [F]) -> Vec<Option<F::Output>> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        fs.iter_mut()
            .map(|f| match std::pin::Pin::new(f).poll(&mut cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
            .collect()
    }

    /// Inside a pass, appends wait for its end: nothing is written, readable
    /// or answered before it; then one write covers them all and every
    /// append is answered with its offset.
    #[tokio::test]
    async fn appends_in_a_pass_share_one_write_at_its_end() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Interval { ms: 60_000 });
        p.append(&[&ProduceRecord::value("before")], 0).await.unwrap();
        let recs = values(8);
        let ops = s.op_count();
        weft_wire::pass::begin();
        let mut fs: Vec<_> = recs.iter().map(|r| Box::pin(p.append(std::slice::from_ref(r), 0))).collect();
        assert!(poll_all(&mut fs).iter().all(Option::is_none), "no answer before the pass ends");
        assert_eq!(s.op_count(), ops, "nothing written yet");
        assert_eq!(p.latest(), Offset(1), "nothing readable yet");
        weft_wire::pass::end();
        assert_eq!(s.op_count(), ops + 1, "one write for the pass");
        let outs = poll_all(&mut fs);
        let offsets: Vec<u64> = outs.into_iter().map(|o| o.expect("answered after the pass").unwrap()[0].0.0).collect();
        assert_eq!(offsets, (1..9).collect::<Vec<_>>());
        let got = p.fetch(Offset(0), 1 << 20, 100, None).await.unwrap().decode().unwrap();
        assert_eq!(got.len(), 9);
        assert_eq!(got[8].value.as_deref(), Some(&b"r7"[..]));
        // Outside a pass an append writes at once.
        p.append(&[&ProduceRecord::value("after")], 0).await.unwrap();
        assert_eq!(s.op_count(), ops + 2);
        assert_eq!(p.latest(), Offset(10));
    }

    /// Under `always`, what a pass left pending goes out with the fsync
    /// (or the pass's end): each append is answered once durable.
    #[tokio::test]
    async fn appends_in_a_pass_are_synced_under_always() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Always);
        let recs = values(8);
        weft_wire::pass::begin();
        let mut fs: Vec<_> = recs.iter().map(|r| Box::pin(p.append(std::slice::from_ref(r), 0))).collect();
        let _ = poll_all(&mut fs);
        weft_wire::pass::end();
        let outs = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(fs)).await.expect("no append hangs");
        let mut offsets: Vec<u64> = outs.into_iter().map(|o| o.unwrap()[0].0.0).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..8).collect::<Vec<_>>());
        assert_eq!(p.stats().synced_offset, Offset(8));
        assert_eq!(p.latest(), Offset(8));
        assert_eq!(p.stats().fsyncs, 1, "one fsync covers the pass");
    }

    /// A pass whose write fails answers every append of it with the
    /// error; none of its records becomes readable.
    #[tokio::test]
    async fn a_failed_pass_write_fails_its_appends() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default(), FsyncPolicy::Interval { ms: 60_000 });
        p.append(&[&ProduceRecord::value("a")], 0).await.unwrap();
        let recs = values(4);
        weft_wire::pass::begin();
        let mut fs: Vec<_> = recs.iter().map(|r| Box::pin(p.append(std::slice::from_ref(r), 0))).collect();
        assert!(poll_all(&mut fs).iter().all(Option::is_none));
        s.fail_ops_after(0);
        weft_wire::pass::end();
        for o in poll_all(&mut fs) {
            assert!(matches!(o, Some(Err(LogError::Poisoned { .. }))), "{o:?}");
        }
        assert_eq!(p.latest(), Offset(1));
    }
}
