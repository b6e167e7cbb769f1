//! Durable storage of one work queue: an append-only log of CRC'd records,
//! written by one thread with group commit (every batch is one `write` and one
//! `fdatasync`), replayed into memory at open, and compacted by rewriting the
//! live items to a new file and renaming it over the old one.
//!
//! Record: `len u32 LE | crc32c(payload) u32 LE | payload`, payload:
//! - `1` Put: `seq u64 | queue u8 (0 incoming, 1 error) | attempts u32 |
//!   enqueued_ms u64 | uid (u16 len, bytes) | group (u8 present, u16 len, bytes)
//!   | reason (u32 len, bytes) | body (u32 len, bytes)`. A Put of an existing
//!   seq replaces it (moves between queues, attempt counts).
//! - `2` Del: `seq u64`.
//!
//! At open the log is read up to the first record that is short or fails its
//! CRC (a write torn by a crash); the file is truncated there. Nothing after it
//! was ever acknowledged, because acknowledgements wait for the fsync.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{info, warn};

use crate::error::QueueError;

/// Records larger than this are refused (on write) or treated as corruption
/// (on read), so a damaged length field never drives a huge allocation.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
/// Compact when the log is at least this big and mostly dead records.
const COMPACT_MIN_BYTES: u64 = 4 << 20;
/// Batches taken at once by the writer: bounds one write's size.
const MAX_BATCHES_PER_WRITE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    Incoming,
    Error,
}

/// One queued request or message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub seq: u64,
    pub which: Which,
    pub uid: String,
    /// Sequenced senders keep items of one group in order.
    pub group: Option<String>,
    /// Failed attempts so far (reset when reprocessed).
    pub attempts: u32,
    /// Why the last attempt failed (empty when none did).
    pub reason: String,
    /// The request, as JSON.
    pub body: Bytes,
    pub enqueued_ms: u64,
}

impl Item {
    fn weight(&self) -> u64 {
        (self.body.len() + self.uid.len() + self.reason.len() + 64) as u64
    }
}

#[derive(Debug, Clone)]
pub enum Record {
    Put(Arc<Item>),
    Del(u64),
}

/// The replayed, applied state. Only the writer thread changes it (after the
/// fsync), so its order is the log's order.
#[derive(Debug, Default)]
pub struct State {
    pub incoming: BTreeMap<u64, Arc<Item>>,
    pub errors: BTreeMap<u64, Arc<Item>>,
    pub by_uid: HashMap<String, u64>,
    pub live_bytes: u64,
    next_seq: u64,
}

impl State {
    fn apply(&mut self, r: &Record) {
        match r {
            Record::Put(item) => {
                self.remove(item.seq);
                self.live_bytes += item.weight();
                self.by_uid.insert(item.uid.clone(), item.seq);
                self.next_seq = self.next_seq.max(item.seq + 1);
                match item.which {
                    Which::Incoming => self.incoming.insert(item.seq, item.clone()),
                    Which::Error => self.errors.insert(item.seq, item.clone()),
                };
            }
            Record::Del(seq) => self.remove(*seq),
        }
    }

    fn remove(&mut self, seq: u64) {
        let old = self.incoming.remove(&seq).or_else(|| self.errors.remove(&seq));
        if let Some(old) = old {
            self.live_bytes = self.live_bytes.saturating_sub(old.weight());
            if self.by_uid.get(&old.uid) == Some(&seq) {
                self.by_uid.remove(&old.uid);
            }
        }
    }

    pub fn get(&self, seq: u64) -> Option<&Arc<Item>> {
        self.incoming.get(&seq).or_else(|| self.errors.get(&seq))
    }

    pub fn find_uid(&self, uid: &str) -> Option<&Arc<Item>> {
        self.by_uid.get(uid).and_then(|s| self.get(*s))
    }

    pub fn len(&self) -> usize {
        self.incoming.len() + self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Batch = (Vec<Record>, oneshot::Sender<Result<(), String>>);

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    poisoned: Mutex<Option<String>>,
    /// Woken after every applied batch (the processing loop waits on it).
    changed: Notify,
}

/// Handle to one queue's log. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Batch>,
}

/// What `open` found on disk.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub records: u64,
    pub items: usize,
    /// Bytes dropped from a torn tail.
    pub truncated_bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a map update that cannot panic halfway in a
    // way that breaks an invariant we rely on; keep going after a poison.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Open (or create) the log at `path`, replay it, and start its writer
    /// thread.
    pub fn open(path: &Path) -> Result<(Store, Recovery), QueueError> {
        let io = |op: &'static str| move |source| QueueError::Io { path: path.to_owned(), op, source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create directory"))?;
        }
        let existed = path.exists();
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io("open"))?;
        if !existed {
            // A new file's directory entry must be durable too, or a power
            // loss could take the whole (fsync'd) log with it.
            file.sync_all().map_err(io("fsync new log"))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory"))?;
            }
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io("read"))?;
        let mut state = State::default();
        let mut recovery = Recovery::default();
        let mut pos = 0usize;
        loop {
            match decode_record(data.get(pos..).unwrap_or_default()) {
                Decoded::Record(r, used) => {
                    state.apply(&r);
                    recovery.records += 1;
                    pos += used;
                }
                Decoded::End => break,
                Decoded::Torn(why) => {
                    recovery.truncated_bytes = (data.len() - pos) as u64;
                    warn!(path = %path.display(), offset = pos, bytes = recovery.truncated_bytes, reason = why, "dropping torn tail of queue log");
                    file.set_len(pos as u64).map_err(io("truncate torn tail"))?;
                    file.sync_all().map_err(io("fsync after truncate"))?;
                    break;
                }
            }
        }
        recovery.items = state.len();
        let log_len = pos as u64;
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            state: Mutex::new(state),
            poisoned: Mutex::new(None),
            changed: Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut writer = Writer { shared: shared.clone(), file, log_len };
        writer.maybe_compact(true);
        let name = format!("wq-{}", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || writer.run(rx))
            .map_err(io("spawn writer thread"))?;
        if recovery.items > 0 {
            info!(path = %path.display(), items = recovery.items, "queue recovered");
        }
        Ok((Store { shared, tx }, recovery))
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Lock the applied state (read it; never hold across an await).
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// A fresh sequence number (not yet durable: it becomes so with its Put).
    pub fn next_seq(&self) -> u64 {
        let mut s = lock(&self.shared.state);
        let seq = s.next_seq;
        s.next_seq += 1;
        seq
    }

    pub fn changed(&self) -> &Notify {
        &self.shared.changed
    }

    /// Append records and wait until they are on disk (fsync'd) and applied.
    pub async fn commit(&self, records: Vec<Record>) -> Result<(), QueueError> {
        if let Some(reason) = lock(&self.shared.poisoned).clone() {
            return Err(QueueError::Poisoned { path: self.shared.path.clone(), reason });
        }
        for r in &records {
            if let Record::Put(item) = r {
                let len = item.weight() as usize;
                if len > MAX_RECORD_BYTES {
                    return Err(QueueError::TooLarge { len, max: MAX_RECORD_BYTES });
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let stopped = || QueueError::Poisoned { path: self.shared.path.clone(), reason: "writer thread is gone".into() };
        self.tx.send((records, tx)).map_err(|_| stopped())?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(QueueError::Poisoned { path: self.shared.path.clone(), reason }),
            Err(_) => Err(stopped()),
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    log_len: u64,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Batch>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.blocking_recv() {
            let mut batches = vec![first];
            while batches.len() < MAX_BATCHES_PER_WRITE {
                match rx.try_recv() {
                    Ok(b) => batches.push(b),
                    Err(_) => break,
                }
            }
            if let Some(reason) = lock(&self.shared.poisoned).clone() {
                for (_, reply) in batches {
                    let _ = reply.send(Err(reason.clone()));
                }
                continue;
            }
            buf.clear();
            for (records, _) in &batches {
                for r in records {
                    encode_record(r, &mut buf);
                }
            }
            let written = self.file.write_all(&buf).and_then(|_| self.file.sync_data());
            if let Err(e) = written {
                // fsync failure: the page cache may have dropped our data and
                // a retry could "succeed" on nothing (fsyncgate). Stop here.
                let reason = format!("write/fsync failed: {e}");
                tracing::error!(path = %self.shared.path.display(), error = %e, "queue log poisoned");
                *lock(&self.shared.poisoned) = Some(reason.clone());
                for (_, reply) in batches {
                    let _ = reply.send(Err(reason.clone()));
                }
                continue;
            }
            self.log_len += buf.len() as u64;
            {
                let mut st = lock(&self.shared.state);
                for (records, _) in &batches {
                    for r in records {
                        st.apply(r);
                    }
                }
            }
            for (_, reply) in batches {
                let _ = reply.send(Ok(()));
            }
            self.shared.changed.notify_one();
            self.maybe_compact(false);
        }
    }

    /// Rewrite the live items when the log is mostly dead records.
    fn maybe_compact(&mut self, at_open: bool) {
        let live = lock(&self.shared.state).live_bytes;
        let min = if at_open { 64 * 1024 } else { COMPACT_MIN_BYTES };
        if self.log_len < min || self.log_len < live.saturating_mul(3) {
            return;
        }
        let path = self.shared.path.clone();
        let tmp = path.with_extension("compact");
        let items: Vec<Arc<Item>> = {
            let st = lock(&self.shared.state);
            st.incoming.values().chain(st.errors.values()).cloned().collect()
        };
        let mut buf = Vec::new();
        for it in items {
            encode_record(&Record::Put(it), &mut buf);
        }
        let written = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            // The old log is intact and still ours: keep using it.
            let _ = std::fs::remove_file(&tmp);
            warn!(path = %path.display(), error = %e, "compaction failed; keeping the old log");
            return;
        }
        // Renamed: our handle now points at the unlinked old file, so we must
        // switch to the new one or stop writing.
        let reopened = (|| -> std::io::Result<File> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            OpenOptions::new().read(true).append(true).open(&path)
        })();
        match reopened {
            Ok(f) => {
                info!(path = %path.display(), before = self.log_len, after = buf.len(), "queue log compacted");
                self.file = f;
                self.log_len = buf.len() as u64;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot reopen the compacted queue log");
                *lock(&self.shared.poisoned) = Some(format!("reopen after compaction failed: {e}"));
            }
        }
    }
}

pub fn encode_record(r: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    match r {
        Record::Put(it) => {
            out.push(1);
            out.extend_from_slice(&it.seq.to_le_bytes());
            out.push(match it.which {
                Which::Incoming => 0,
                Which::Error => 1,
            });
            out.extend_from_slice(&it.attempts.to_le_bytes());
            out.extend_from_slice(&it.enqueued_ms.to_le_bytes());
            put_str16(out, &it.uid);
            match &it.group {
                Some(g) => {
                    out.push(1);
                    put_str16(out, g);
                }
                None => out.push(0),
            }
            put_bytes32(out, it.reason.as_bytes());
            put_bytes32(out, &it.body);
        }
        Record::Del(seq) => {
            out.push(2);
            out.extend_from_slice(&seq.to_le_bytes());
        }
    }
    let payload_len = (out.len() - start - 8) as u32;
    let crc = crc32c::crc32c(out.get(start + 8..).unwrap_or_default());
    if let Some(h) = out.get_mut(start..start + 8) {
        h[..4].copy_from_slice(&payload_len.to_le_bytes());
        h[4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Strings longer than a u16 are cut at a char boundary: uids and group keys
/// are short by construction (the endpoint checks them).
fn put_str16(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes().get(..end).unwrap_or_default());
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

pub enum Decoded {
    Record(Record, usize),
    /// Clean end of the log.
    End,
    /// A short or damaged record: the rest of the log is dropped.
    Torn(&'static str),
}

/// Checked reads over a record payload.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.b.get(..n)?, self.b.get(n..)?);
        self.b = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Decode the record at the start of `b`.
pub fn decode_record(b: &[u8]) -> Decoded {
    if b.is_empty() {
        return Decoded::End;
    }
    let mut r = Reader { b };
    let (Some(len), Some(crc)) = (r.u32(), r.u32()) else { return Decoded::Torn("short header") };
    let len = len as usize;
    if len > MAX_RECORD_BYTES {
        return Decoded::Torn("length over the maximum");
    }
    let Some(payload) = r.take(len) else { return Decoded::Torn("short record") };
    if crc32c::crc32c(payload) != crc {
        return Decoded::Torn("crc mismatch");
    }
    let mut p = Reader { b: payload };
    let parsed = (|| -> Option<Record> {
        match p.u8()? {
            1 => {
                let seq = p.u64()?;
                let which = match p.u8()? {
                    0 => Which::Incoming,
                    1 => Which::Error,
                    _ => return None,
                };
                let attempts = p.u32()?;
                let enqueued_ms = p.u64()?;
                let uid = p.str16()?;
                let group = match p.u8()? {
                    0 => None,
                    1 => Some(p.str16()?),
                    _ => return None,
                };
                let reason = String::from_utf8(p.bytes32()?.to_vec()).ok()?;
                let body = Bytes::copy_from_slice(p.bytes32()?);
                Some(Record::Put(Arc::new(Item { seq, which, uid, group, attempts, reason, body, enqueued_ms })))
            }
            2 => Some(Record::Del(p.u64()?)),
            _ => None,
        }
    })();
    match parsed {
        Some(rec) if p.b.is_empty() => Decoded::Record(rec, 8 + len),
        // The CRC matched, so this is a bug or a newer format, not a torn
        // write; dropping the rest is still the only safe reading.
        _ => Decoded::Torn("undecodable record"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, uid: &str) -> Arc<Item> {
        Arc::new(Item {
            seq,
            which: Which::Incoming,
            uid: uid.into(),
            group: Some("g".into()),
            attempts: 2,
            reason: "why".into(),
            body: Bytes::from_static(b"{\"n\":1}"),
            enqueued_ms: 7,
        })
    }

    #[test]
    fn record_roundtrip_and_torn_tails() {
        let mut buf = vec![];
        let it = item(5, "u5");
        encode_record(&Record::Put(it.clone()), &mut buf);
        encode_record(&Record::Del(5), &mut buf);
        let Decoded::Record(Record::Put(back), n) = decode_record(&buf) else { panic!() };
        assert_eq!(*back, *it);
        assert!(matches!(decode_record(&buf[n..]), Decoded::Record(Record::Del(5), 17)));
        // Every prefix of a record is torn, never a panic or a bogus record.
        for cut in 1..n {
            assert!(matches!(decode_record(&buf[..cut]), Decoded::Torn(_)), "cut {cut}");
        }
        let mut bad = buf.clone();
        bad[12] ^= 1;
        assert!(matches!(decode_record(&bad), Decoded::Torn("crc mismatch")));
    }

    #[tokio::test]
    async fn durable_across_reopen_with_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.wq");
        {
            let (s, rec) = Store::open(&path).unwrap();
            assert_eq!(rec.items, 0);
            for i in 0..10 {
                let seq = s.next_seq();
                s.commit(vec![Record::Put(item(seq, &format!("u{i}")))]).await.unwrap();
            }
            s.commit(vec![Record::Del(0), Record::Del(1)]).await.unwrap();
            let moved = Item { which: Which::Error, ..(*s.state().get(2).unwrap().clone()).clone() };
            s.commit(vec![Record::Put(Arc::new(moved))]).await.unwrap();
            assert_eq!(s.state().incoming.len(), 7);
            assert_eq!(s.state().errors.len(), 1);
        }
        // A crash mid-write leaves half a record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (s, rec) = Store::open(&path).unwrap();
        assert_eq!(rec.items, 8);
        assert_eq!(rec.truncated_bytes, 7);
        assert_eq!(s.state().errors.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.state().find_uid("u9").unwrap().seq, 9);
        assert_eq!(s.next_seq(), 10);
    }

    /// Crash model: the log cut at every byte (what a crash mid-append can
    /// leave) always opens, to exactly the records wholly before the cut.
    #[tokio::test]
    async fn every_cut_of_the_log_opens_to_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.wq");
        let mut ends = vec![0u64];
        {
            let (s, _) = Store::open(&path).unwrap();
            for i in 0..6u64 {
                let seq = s.next_seq();
                s.commit(vec![Record::Put(item(seq, &format!("u{i}")))]).await.unwrap();
                ends.push(std::fs::metadata(&path).unwrap().len());
                if i % 2 == 1 {
                    s.commit(vec![Record::Del(seq - 1)]).await.unwrap();
                    ends.push(std::fs::metadata(&path).unwrap().len());
                }
            }
        }
        let full = std::fs::read(&path).unwrap();
        // Items alive after the first k records, by replaying whole records.
        let alive_after = |k: usize| -> usize {
            let mut st = State::default();
            let mut pos = 0;
            for _ in 0..k {
                let Decoded::Record(r, n) = decode_record(&full[pos..]) else { panic!() };
                st.apply(&r);
                pos += n;
            }
            st.len()
        };
        for cut in 0..=full.len() {
            let p = dir.path().join(format!("cut{cut}.wq"));
            std::fs::write(&p, &full[..cut]).unwrap();
            let whole = ends.iter().filter(|e| **e as usize <= cut).count() - 1;
            let (s, rec) = Store::open(&p).unwrap();
            assert_eq!(rec.records as usize, whole, "cut {cut}");
            assert_eq!(s.state().len(), alive_after(whole), "cut {cut}");
            assert_eq!(std::fs::metadata(&p).unwrap().len(), ends[whole], "torn tail truncated at cut {cut}");
        }
    }

    #[tokio::test]
    async fn compaction_keeps_live_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wq");
        let (s, _) = Store::open(&path).unwrap();
        let big = Bytes::from(vec![b'x'; 64 * 1024]);
        for _ in 0..80 {
            let seq = s.next_seq();
            let it = Item { body: big.clone(), ..(*item(seq, &format!("u{seq}"))).clone() };
            s.commit(vec![Record::Put(Arc::new(it))]).await.unwrap();
            if seq % 10 != 0 {
                s.commit(vec![Record::Del(seq)]).await.unwrap();
            }
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 2 << 20, "log not compacted: {len}");
        drop(s);
        let (s, rec) = Store::open(&path).unwrap();
        assert_eq!(rec.items, 8);
        assert!(s.state().incoming.contains_key(&70));
    }
}
