//! The single-node durable driver of one table: a `TableState` in memory, a
//! write-ahead log on disk, one writer thread doing group commit.
//!
//! A write is checked against the limits, sent to the writer thread, applied
//! to the state, appended to the WAL with the other writes of its batch,
//! fsynced, and only then answered and published to watchers. Readers read
//! at the *durable* revision (the last one fsynced), so nobody ever sees a
//! write that a crash could take back; MVCC history makes that free, since
//! a version not yet durable simply sits above the revision readers use.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::config::{TableConfig, TablesConfig};
use crate::error::{Error, Result};
use crate::state::{Applied, KeySet, TableState};
use crate::types::*;
use crate::wal::{self, WalRecord};
use crate::watch::{LiveWatcher, Watcher};

/// WAL records longer than this are refused on read before allocation;
/// writes are far below it (`max_command_bytes` is capped at a quarter of it).
pub(crate) const MAX_RECORD_BYTES: u64 = 256 * 1024 * 1024;

pub(crate) const WAL_FILE: &str = "wal";
pub(crate) const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_MAGIC: &[u8; 8] = b"WEFTTS01";

/// A handle to one open table; cheap to clone. Every method is safe to call
/// from many tasks at once.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    writes: mpsc::Sender<Request>,
}

/// What the writer thread, the handles and the watchers share.
pub(crate) struct Core {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) config: TableConfig,
    pub(crate) limits: Arc<TablesConfig>,
    pub(crate) shared: Mutex<Shared>,
    pub(crate) stats: Counters,
    pub(crate) dropped: AtomicBool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) writes: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) txns: AtomicU64,
    pub(crate) failed_compares: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) slow_cancelled: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) state: TableState,
    /// The last revision fsynced; reads and watchers see up to here.
    pub(crate) durable: Revision,
    pub(crate) watchers: HashMap<u64, LiveWatcher>,
    /// Watchers open (catching up or live).
    pub(crate) watcher_count: u64,
    pub(crate) next_watcher_id: u64,
    pub(crate) poisoned: Option<String>,
    pub(crate) wal_bytes: u64,
}

struct Request {
    cmd: WriteCommand,
    reply: oneshot::Sender<Result<WriteResult>>,
}

impl Core {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_open(&self) -> Result<()> {
        if self.dropped.load(Ordering::Acquire) {
            return Err(Error::Dropped(self.name.clone()));
        }
        Ok(())
    }
}

/// A read revision against the durable revision: `None`/`Some(0)` is `durable`.
fn resolve(sh: &Shared, at: Option<Revision>) -> Result<Revision> {
    match at {
        None | Some(0) => Ok(sh.durable),
        Some(r) if r > sh.durable => Err(Error::FutureRevision { requested: r, current: sh.durable }),
        Some(r) => sh.state.read_revision(Some(r)),
    }
}

impl Table {
    /// Open (or create empty) the table stored in `dir`.
    pub(crate) fn open(name: &str, dir: &Path, config: TableConfig, limits: Arc<TablesConfig>) -> Result<Table> {
        let (state, wal_file, wal_bytes) = recover(dir)?;
        let durable = state.revision();
        let core = Arc::new(Core {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            config,
            limits: limits.clone(),
            shared: Mutex::new(Shared {
                state,
                durable,
                watchers: HashMap::new(),
                watcher_count: 0,
                next_watcher_id: 1,
                poisoned: None,
                wal_bytes,
            }),
            stats: Counters::default(),
            dropped: AtomicBool::new(false),
        });
        let cap = limits.max_batch_commands.clamp(1, 1 << 16) as usize;
        let (tx, rx) = mpsc::channel(cap * 4);
        let writer = Writer { core: core.clone(), file: Box::new(wal_file), rx, max_batch: cap };
        std::thread::Builder::new()
            .name(format!("table-{name}"))
            .spawn(move || writer.run())
            .map_err(|e| Error::io("spawn writer thread for", dir, e))?;
        tracing::debug!(table = name, revision = durable, "table open");
        Ok(Table { inner: Arc::new(Inner { core, writes: tx }) })
    }

    pub fn name(&self) -> &str {
        &self.inner.core.name
    }

    pub fn config(&self) -> &TableConfig {
        &self.inner.core.config
    }

    /// The current (durable) revision.
    pub fn revision(&self) -> Revision {
        self.inner.core.lock().durable
    }

    pub fn compact_revision(&self) -> Revision {
        self.inner.core.lock().state.compact_revision()
    }

    /// Read one key, now or as of revision `at`.
    pub async fn get(&self, key: &[u8], at: Option<Revision>) -> Result<GetResult> {
        let core = &self.inner.core;
        core.check_open()?;
        core.stats.reads.fetch_add(1, Ordering::Relaxed);
        let sh = core.lock();
        let rev = resolve(&sh, at)?;
        if rev == 0 {
            return Ok(GetResult { kv: None, revision: sh.durable });
        }
        let mut r = sh.state.get(key, Some(rev))?;
        r.revision = sh.durable;
        Ok(r)
    }

    /// Read keys in key order (see `RangeSpec`).
    pub async fn range(&self, mut spec: RangeSpec) -> Result<RangeResult> {
        let core = &self.inner.core;
        core.check_open()?;
        core.stats.reads.fetch_add(1, Ordering::Relaxed);
        spec.limit = Some(range_limit(&core.limits, spec.limit)?);
        let sh = core.lock();
        let rev = resolve(&sh, spec.at)?;
        if rev == 0 {
            return Ok(RangeResult { revision: sh.durable, ..Default::default() });
        }
        spec.at = Some(rev);
        let mut r = sh.state.range(&spec)?;
        r.revision = sh.durable;
        Ok(r)
    }

    /// The key's stored versions, newest first, puts and deletes, at most
    /// `limit` (`None`: `max_history_limit`). Compaction drops old versions.
    pub async fn history(&self, key: &[u8], limit: Option<u64>) -> Result<Vec<Event>> {
        let core = &self.inner.core;
        core.check_open()?;
        core.stats.reads.fetch_add(1, Ordering::Relaxed);
        let max = core.limits.max_history_limit;
        let limit = match limit {
            None | Some(0) => max,
            Some(n) if n > max => return Err(Error::too_large("history limit", max)),
            Some(n) => n,
        };
        let sh = core.lock();
        // Versions above the durable revision are not acknowledged yet: skip them.
        let all = sh.state.history(key, usize::MAX);
        Ok(all.into_iter().filter(|e| e.revision <= sh.durable).take(limit as usize).collect())
    }

    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<PutResult> {
        match self.write(WriteCommand::Put { key: key.into(), value: value.into() }).await? {
            WriteResult::Put(r) => Ok(r),
            _ => Err(Error::invalid("internal: put answered with another result")),
        }
    }

    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<DeleteResult> {
        match self.write(WriteCommand::Delete { key: key.into() }).await? {
            WriteResult::Delete(r) => Ok(r),
            _ => Err(Error::invalid("internal: delete answered with another result")),
        }
    }

    pub async fn delete_range(&self, range: KeyRange) -> Result<DeleteResult> {
        match self.write(WriteCommand::DeleteRange(range)).await? {
            WriteResult::Delete(r) => Ok(r),
            _ => Err(Error::invalid("internal: delete answered with another result")),
        }
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        match self.write(WriteCommand::Txn(txn)).await? {
            WriteResult::Txn(r) => Ok(r),
            _ => Err(Error::invalid("internal: txn answered with another result")),
        }
    }

    /// Drop history below `revision` (reads at `revision` and after keep working).
    pub async fn compact(&self, revision: Revision) -> Result<CompactResult> {
        match self.write(WriteCommand::Compact { revision }).await? {
            WriteResult::Compact(r) => Ok(r),
            _ => Err(Error::invalid("internal: compact answered with another result")),
        }
    }

    /// Any write command: limits checked, applied, logged and fsynced, then answered.
    pub async fn write(&self, cmd: WriteCommand) -> Result<WriteResult> {
        let core = &self.inner.core;
        let r = self.write_inner(cmd).await;
        if r.is_err() {
            core.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    async fn write_inner(&self, mut cmd: WriteCommand) -> Result<WriteResult> {
        let core = &self.inner.core;
        core.check_open()?;
        check_limits(&core.limits, &mut cmd)?;
        {
            let sh = core.lock();
            if let Some(p) = &sh.poisoned {
                return Err(Error::Poisoned { table: core.name.clone(), detail: p.clone() });
            }
            // The byte quota counts what is held now; deletes and compactions are always let through.
            let grows = matches!(cmd, WriteCommand::Put { .. } | WriteCommand::Txn(_));
            if grows && sh.state.bytes() >= core.limits.max_table_bytes {
                return Err(Error::too_large("table bytes", core.limits.max_table_bytes));
            }
        }
        let (reply, rx) = oneshot::channel();
        self.inner.writes.send(Request { cmd, reply }).await.map_err(|_| Error::Dropped(core.name.clone()))?;
        rx.await.map_err(|_| Error::Dropped(core.name.clone()))?
    }

    /// Follow changes (see `WatchSpec`). Refused with `Compacted` when the
    /// start revision is below the compact revision, `TooMany` past
    /// `max_watchers_per_table`.
    pub fn watch(&self, spec: WatchSpec) -> Result<Watcher> {
        let core = &self.inner.core;
        core.check_open()?;
        let mut sh = core.lock();
        if sh.watcher_count >= core.limits.max_watchers_per_table {
            return Err(Error::TooMany { what: "watchers on the table".into(), limit: core.limits.max_watchers_per_table });
        }
        let start = match spec.start_revision {
            None | Some(0) => sh.durable + 1,
            Some(r) => r,
        };
        sh.state.watch_check(start)?;
        sh.watcher_count += 1;
        let id = sh.next_watcher_id;
        sh.next_watcher_id += 1;
        drop(sh);
        Ok(Watcher::new(core.clone(), id, KeySet::from_target(&spec.target), spec.prev_kv, start))
    }

    pub fn stats(&self) -> TableStats {
        let core = &self.inner.core;
        let s = &core.stats;
        let sh = core.lock();
        TableStats {
            writes: s.writes.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            reads: s.reads.load(Ordering::Relaxed),
            txns: s.txns.load(Ordering::Relaxed),
            failed_compares: s.failed_compares.load(Ordering::Relaxed),
            watchers: sh.watcher_count,
            events_sent: s.events_sent.load(Ordering::Relaxed),
            slow_watchers_cancelled: s.slow_cancelled.load(Ordering::Relaxed),
            revision: sh.durable,
            compact_revision: sh.state.compact_revision(),
            keys: sh.state.live_keys(),
            bytes: sh.state.bytes(),
            versions: sh.state.versions(),
            wal_bytes: sh.wal_bytes,
        }
    }

    /// Mark dropped: calls fail with `Dropped`, watchers end with it.
    pub(crate) fn mark_dropped(&self) {
        let core = &self.inner.core;
        core.dropped.store(true, Ordering::Release);
        core.lock().watchers.clear();
    }
}

/// The effective limit of a range call: none or 0 gives the maximum, more is refused.
fn range_limit(limits: &TablesConfig, asked: Option<u64>) -> Result<u64> {
    match asked {
        None | Some(0) => Ok(limits.max_range_limit),
        Some(n) if n > limits.max_range_limit => Err(Error::too_large("range limit", limits.max_range_limit)),
        Some(n) => Ok(n),
    }
}

fn check_key(limits: &TablesConfig, key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("empty key"));
    }
    if key.len() as u64 > limits.max_key_bytes {
        return Err(Error::too_large("key", limits.max_key_bytes));
    }
    Ok(())
}

fn check_value(limits: &TablesConfig, value: &[u8]) -> Result<()> {
    if value.len() as u64 > limits.max_value_bytes {
        return Err(Error::too_large("value", limits.max_value_bytes));
    }
    Ok(())
}

/// Check a command against the node's limits, and fill in range limits inside
/// transactions (so `apply` itself never consults configuration). Public for
/// the replicated path, which checks a command before proposing it.
pub fn check_limits(limits: &TablesConfig, cmd: &mut WriteCommand) -> Result<()> {
    match cmd {
        WriteCommand::Put { key, value } => {
            check_key(limits, key)?;
            check_value(limits, value)?;
        }
        WriteCommand::Delete { key } => check_key(limits, key)?,
        WriteCommand::DeleteRange(_) | WriteCommand::Compact { .. } => {}
        WriteCommand::Txn(t) => {
            let n = t.compares.len() + t.success.len().max(t.failure.len());
            if n as u64 > limits.max_txn_ops {
                return Err(Error::too_large("transaction (compares + ops)", limits.max_txn_ops));
            }
            for c in &t.compares {
                check_key(limits, &c.key)?;
                if let CompareTarget::Value(v) = &c.target {
                    check_value(limits, v)?;
                }
            }
            for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
                match op {
                    Op::Put { key, value } => {
                        check_key(limits, key)?;
                        check_value(limits, value)?;
                    }
                    Op::Delete { key } | Op::Get { key } => check_key(limits, key)?,
                    Op::DeleteRange(_) => {}
                    Op::Range(spec) => spec.limit = Some(range_limit(limits, spec.limit)?),
                }
            }
        }
    }
    let mut size = Vec::new();
    wal::encode_record(&WalRecord { index: 0, cmd: cmd.clone() }, &mut size);
    if size.len() as u64 > limits.max_command_bytes.min(MAX_RECORD_BYTES / 4) {
        return Err(Error::too_large("write command", limits.max_command_bytes.min(MAX_RECORD_BYTES / 4)));
    }
    Ok(())
}

/// Read the snapshot (if any) and replay the WAL; cut a torn tail. Returns
/// the state, the WAL opened for appending, and its length.
fn recover(dir: &Path) -> Result<(TableState, File, u64)> {
    let snap_path = dir.join(SNAPSHOT_FILE);
    let mut state = match std::fs::read(&snap_path) {
        Ok(bytes) => decode_snapshot(&snap_path, &bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TableState::new(),
        Err(e) => return Err(Error::io("read", &snap_path, e)),
    };
    let wal_path = dir.join(WAL_FILE);
    let image = match std::fs::read(&wal_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("read", &wal_path, e)),
    };
    let scan = wal::scan(&image, MAX_RECORD_BYTES)
        .map_err(|e| Error::Corrupt { path: wal_path.clone(), offset: e.offset, detail: e.detail })?;
    for rec in &scan.records {
        // Records up to the snapshot's index are already in it (a crash between
        // writing the snapshot and emptying the WAL leaves them behind).
        if rec.index <= state.applied_index() {
            continue;
        }
        let Applied { result, .. } = state.apply(rec.index, &rec.cmd);
        if let Err(e) = result {
            // Only commands that changed the state were logged; one that fails on
            // replay means the log and the snapshot disagree.
            return Err(Error::Corrupt { path: wal_path, offset: 0, detail: format!("record {} fails on replay: {e}", rec.index) });
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&wal_path)
        .map_err(|e| Error::io("open", &wal_path, e))?;
    let mut len = scan.good_len;
    if let Some(why) = &scan.torn {
        tracing::warn!(path = %wal_path.display(), cut_at = len, file_len = image.len(), reason = %why, "table WAL: torn tail cut off");
    }
    if len == 0 {
        file.set_len(0).map_err(|e| Error::io("truncate", &wal_path, e))?;
        file.write_all(wal::MAGIC).map_err(|e| Error::io("write", &wal_path, e))?;
        len = wal::HEADER_BYTES as u64;
        file.sync_all().map_err(|e| Error::io("fsync", &wal_path, e))?;
        sync_dir(dir)?;
    } else if len < image.len() as u64 {
        file.set_len(len).map_err(|e| Error::io("truncate", &wal_path, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", &wal_path, e))?;
    }
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(len)).map_err(|e| Error::io("seek", &wal_path, e))?;
    Ok((state, file, len))
}

fn decode_snapshot(path: &Path, bytes: &[u8]) -> Result<TableState> {
    let corrupt = |offset: u64, detail: String| Error::Corrupt { path: path.to_path_buf(), offset, detail };
    if bytes.len() < 16 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "bad snapshot header".into()));
    }
    let mut crc4 = [0u8; 4];
    crc4.copy_from_slice(&bytes[8..12]);
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(&bytes[12..16]);
    let body = &bytes[16..];
    if body.len() as u64 != u64::from(u32::from_le_bytes(len4)) || crc32c::crc32c(body) != u32::from_le_bytes(crc4) {
        return Err(corrupt(16, "snapshot length or CRC mismatch".into()));
    }
    TableState::restore(body).map_err(|e| corrupt(16, e.to_string()))
}

fn encode_snapshot(state: &TableState) -> Vec<u8> {
    let body = state.snapshot();
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync dir", dir, e))
}

/// Write `bytes` to `dir/name` atomically: tmp file, fsync, rename, fsync dir.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io("rename", &dst, e))?;
    sync_dir(dir)
}

/// Where the writer appends: the WAL file; a failing one in tests.
trait LogFile: Send {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()>;
    /// Make everything appended durable (fdatasync).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write_all(buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// The writer thread: owns the WAL file; batches requests (group commit).
struct Writer {
    core: Arc<Core>,
    file: Box<dyn LogFile>,
    rx: mpsc::Receiver<Request>,
    max_batch: usize,
}

type Answer = (oneshot::Sender<Result<WriteResult>>, Result<WriteResult>);

struct Pending {
    reply: oneshot::Sender<Result<WriteResult>>,
    applied: Applied,
}

impl Writer {
    fn run(mut self) {
        // Ends when every `Table` handle is gone (the channel closes).
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
        tracing::debug!(table = %self.core.name, "table writer stopped");
    }

    fn process(&mut self, batch: Vec<Request>) {
        if self.core.dropped.load(Ordering::Acquire) {
            // The directory is gone (or, after a re-create, another table's): touch nothing.
            for req in batch {
                let _ = req.reply.send(Err(Error::Dropped(self.core.name.clone())));
            }
            return;
        }
        let mut pending: Vec<Pending> = Vec::new();
        let mut answers: Vec<Answer> = Vec::new();
        let mut buf = Vec::new();
        for req in batch {
            // A compaction drops history readers of the durable revision may
            // still need if writes above it are unsynced: flush those first.
            if matches!(req.cmd, WriteCommand::Compact { .. }) && !pending.is_empty() {
                self.flush(&mut pending, &mut buf, &mut answers);
            }
            let mut sh = self.core.lock();
            if let Some(p) = &sh.poisoned {
                let _ = req.reply.send(Err(Error::Poisoned { table: self.core.name.clone(), detail: p.clone() }));
                continue;
            }
            let index = sh.state.applied_index() + 1;
            let applied = sh.state.apply(index, &req.cmd);
            drop(sh);
            if applied.changed {
                wal::encode_record(&WalRecord { index, cmd: req.cmd.clone() }, &mut buf);
            }
            pending.push(Pending { reply: req.reply, applied });
        }
        self.flush(&mut pending, &mut buf, &mut answers);
        // Checkpoint before answering: once the last write is answered, this
        // thread touches no file again (a reopen may follow at once).
        self.maybe_checkpoint();
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
    }

    /// Write and fsync `buf`, then publish the events; the answers go to `answers`.
    fn flush(&mut self, pending: &mut Vec<Pending>, buf: &mut Vec<u8>, answers: &mut Vec<Answer>) {
        let path = self.core.dir.join(WAL_FILE);
        let written = if buf.is_empty() {
            Ok(())
        } else {
            self.file
                .append(buf)
                .map_err(|e| Error::io("write", &path, e))
                .and_then(|()| self.file.sync().map_err(|e| Error::io("fsync", &path, e)))
        };
        let mut sh = self.core.lock();
        if let Err(e) = written {
            // The state is ahead of the disk now: refuse writes until reopened (fjall's lesson).
            let detail = e.to_string();
            tracing::error!(table = %self.core.name, error = %detail, "table WAL write failed; table poisoned");
            sh.poisoned = Some(detail.clone());
            for p in pending.drain(..) {
                answers.push((p.reply, Err(Error::Poisoned { table: self.core.name.clone(), detail: detail.clone() })));
            }
            buf.clear();
            return;
        }
        sh.wal_bytes += buf.len() as u64;
        buf.clear();
        sh.durable = sh.state.revision();
        let stats = &self.core.stats;
        for p in pending.drain(..) {
            if p.applied.changed {
                stats.writes.fetch_add(1, Ordering::Relaxed);
            }
            match &p.applied.result {
                Ok(WriteResult::Txn(t)) => {
                    stats.txns.fetch_add(1, Ordering::Relaxed);
                    if !t.succeeded {
                        stats.failed_compares.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                // Refused commands are counted as write errors by `Table::write`.
                Err(_) => {}
            }
            if !p.applied.events.is_empty() {
                publish(&self.core, &mut sh, &p.applied.events);
            }
            answers.push((p.reply, p.applied.result));
        }
    }

    fn maybe_checkpoint(&mut self) {
        if self.core.dropped.load(Ordering::Acquire) {
            return;
        }
        let limit = self.core.limits.wal_checkpoint_bytes;
        let (snap, wal_bytes) = {
            let sh = self.core.lock();
            if sh.wal_bytes < limit || sh.poisoned.is_some() {
                return;
            }
            (encode_snapshot(&sh.state), sh.wal_bytes)
        };
        let dir = self.core.dir.clone();
        let res = (|| -> Result<File> {
            write_atomic(&dir, SNAPSHOT_FILE, &snap)?;
            // The snapshot is durable; now the WAL may start empty.
            write_atomic(&dir, WAL_FILE, wal::MAGIC)?;
            let path = dir.join(WAL_FILE);
            OpenOptions::new().append(true).open(&path).map_err(|e| Error::io("open", &path, e))
        })();
        match res {
            Ok(f) => {
                self.file = Box::new(f);
                self.core.lock().wal_bytes = wal::HEADER_BYTES as u64;
                tracing::info!(table = %self.core.name, wal_bytes, snapshot_bytes = snap.len(), "table checkpoint");
            }
            Err(e) => {
                // The old WAL file may have been replaced while our handle points
                // at the unlinked one: poison rather than log into the void.
                tracing::error!(table = %self.core.name, error = %e, "table checkpoint failed; table poisoned");
                self.core.lock().poisoned = Some(e.to_string());
            }
        }
    }
}

/// Hand a revision's events to the live watchers; cancel those whose buffer is full.
fn publish(core: &Core, sh: &mut Shared, events: &[Event]) {
    let mut cancel = Vec::new();
    for (id, w) in sh.watchers.iter() {
        for e in events.iter().filter(|e| e.revision >= w.from_rev && w.set.contains(&e.kv.key)) {
            let mut e = e.clone();
            if !w.prev_kv {
                e.prev_kv = None;
            }
            match w.tx.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.slow.store(true, Ordering::Release);
                    core.stats.slow_cancelled.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(table = %core.name, watcher = id, "slow watcher cancelled");
                    cancel.push(*id);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    cancel.push(*id);
                    break;
                }
            }
        }
    }
    for id in cancel {
        sh.watchers.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Appends vanish and fsync fails, as on a dying disk.
    struct FailingDisk;

    impl LogFile for FailingDisk {
        fn append(&mut self, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn sync(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::other("injected fsync failure"))
        }
    }

    #[tokio::test]
    async fn a_failed_fsync_poisons_the_table_and_nothing_unsynced_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Arc::new(TablesConfig::default());
        let t = Table::open("t", dir.path(), TableConfig::default(), limits.clone()).unwrap();
        assert_eq!(t.put("a", "1").await.unwrap().revision, 1);
        let mut w = t.watch(WatchSpec { target: WatchTarget::Prefix(Bytes::new()), start_revision: None, prev_kv: false }).unwrap();

        // A second writer over the same table, on the failing disk.
        let (_tx, rx) = mpsc::channel(1);
        let mut writer = Writer { core: t.inner.core.clone(), file: Box::new(FailingDisk), rx, max_batch: 4 };
        let (reply, answer) = oneshot::channel();
        writer.process(vec![Request { cmd: WriteCommand::Put { key: Bytes::from_static(b"b"), value: Bytes::from_static(b"2") }, reply }]);
        assert!(matches!(answer.await.unwrap(), Err(Error::Poisoned { .. })), "no ack after a failed fsync");

        // Readers and watchers stay at the last durable revision.
        assert_eq!(t.revision(), 1);
        assert_eq!(t.get(b"b", None).await.unwrap().kv, None);
        assert!(matches!(t.get(b"b", Some(2)).await, Err(Error::FutureRevision { requested: 2, current: 1 })));
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), w.next()).await.is_err(), "no event for an unsynced write");
        // Writes are refused until the table is reopened.
        assert!(matches!(t.put("c", "3").await, Err(Error::Poisoned { .. })));
        assert_eq!(t.stats().write_errors, 1);
        drop((t, w, writer));
        let t = Table::open("t", dir.path(), TableConfig::default(), limits).unwrap();
        assert_eq!(t.revision(), 1);
        assert_eq!(t.put("c", "3").await.unwrap().revision, 2);
    }
}
