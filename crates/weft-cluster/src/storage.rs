//! Durable raft storage for one group: entries, hard state, conf state and
//! the latest snapshot, kept in memory for raft's reads and written as a
//! CRC'd write-ahead file through a [`Disk`].
//!
//! Record: `[len u32 BE][crc32c u32 BE][kind u8][body]`, `len` counting kind
//! and body, the CRC covering kind and body. Replay stops at the first torn or
//! failing record and rewrites the file without it: nothing after an fsync
//! that did not complete was ever acknowledged (docs/cluster.md).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::error::{ClusterError, Result};

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const HEADER: usize = 8;

/// Where a group's write-ahead bytes live. `append` may buffer; only `sync`
/// makes appended bytes durable; `replace` is atomic and durable.
pub trait Disk: Send {
    fn read_all(&mut self) -> Result<Vec<u8>>;
    fn append(&mut self, bytes: &[u8]) -> Result<()>;
    fn sync(&mut self) -> Result<()>;
    fn replace(&mut self, bytes: &[u8]) -> Result<()>;
}

/// A file on the real disk.
pub struct FileDisk {
    path: PathBuf,
    file: Option<File>,
}

impl FileDisk {
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ClusterError::io("create dir", dir, e))?;
        }
        Ok(FileDisk { path, file: None })
    }

    fn file(&mut self) -> Result<&mut File> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| ClusterError::io("open", &self.path, e))?;
            self.file = Some(f);
        }
        // Invariant: set just above when it was None.
        #[allow(clippy::unwrap_used)]
        Ok(self.file.as_mut().unwrap())
    }
}

fn sync_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        let d = File::open(dir).map_err(|e| ClusterError::io("open dir", dir, e))?;
        d.sync_all().map_err(|e| ClusterError::io("fsync dir", dir, e))?;
    }
    Ok(())
}

impl Disk for FileDisk {
    fn read_all(&mut self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        match File::open(&self.path) {
            Ok(mut f) => {
                f.read_to_end(&mut buf).map_err(|e| ClusterError::io("read", &self.path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClusterError::io("open", &self.path, e)),
        }
        Ok(buf)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.path.clone();
        self.file()?.write_all(bytes).map_err(|e| ClusterError::io("write", path, e))
    }

    fn sync(&mut self) -> Result<()> {
        let path = self.path.clone();
        // fdatasync: the file's length is data for this purpose on Linux.
        self.file()?.sync_data().map_err(|e| ClusterError::io("fsync", path, e))
    }

    fn replace(&mut self, bytes: &[u8]) -> Result<()> {
        let tmp = self.path.with_extension("wal.tmp");
        let mut f = File::create(&tmp).map_err(|e| ClusterError::io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| ClusterError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| ClusterError::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| ClusterError::io("rename", &tmp, e))?;
        sync_dir(&self.path)?;
        self.file = None;
        Ok(())
    }
}

/// An in-memory disk for the simulation: bytes appended since the last sync
/// are lost (or torn) by [`MemDisk::crash`].
#[derive(Clone, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<MemDiskState>>,
}

#[derive(Default)]
struct MemDiskState {
    durable: Vec<u8>,
    pending: Vec<u8>,
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemDiskState> {
        // A poisoned lock only means a test thread panicked; the bytes are still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulate a power loss: keep only `keep` bytes of what was not synced
    /// (a torn write), drop the rest.
    pub fn crash(&self, keep: usize) {
        let mut s = self.lock();
        let keep = keep.min(s.pending.len());
        let torn: Vec<u8> = s.pending[..keep].to_vec();
        s.durable.extend_from_slice(&torn);
        s.pending.clear();
    }

    pub fn pending_len(&self) -> usize {
        self.lock().pending.len()
    }

    /// A separate disk holding only what was synced here: what a crash
    /// now would leave (for checks of the persist-before-send contract).
    pub fn durable_image(&self) -> MemDisk {
        let durable = self.lock().durable.clone();
        MemDisk { inner: Arc::new(Mutex::new(MemDiskState { durable, pending: Vec::new() })) }
    }
}

impl Disk for MemDisk {
    fn read_all(&mut self) -> Result<Vec<u8>> {
        let s = self.lock();
        let mut v = s.durable.clone();
        v.extend_from_slice(&s.pending);
        Ok(v)
    }
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.lock().pending.extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        let mut s = self.lock();
        let p = std::mem::take(&mut s.pending);
        s.durable.extend_from_slice(&p);
        Ok(())
    }
    fn replace(&mut self, bytes: &[u8]) -> Result<()> {
        let mut s = self.lock();
        s.durable = bytes.to_vec();
        s.pending.clear();
        Ok(())
    }
}

/// One group's raft storage: the in-memory image raft reads, and the disk.
pub struct GroupStorage {
    hard: HardState,
    conf: ConfState,
    /// The latest snapshot (index 0 = none); entries start right after it.
    snapshot: Snapshot,
    entries: Vec<Entry>,
    disk: Box<dyn Disk>,
    max_record_bytes: u32,
    /// Written since the last fsync.
    dirty: bool,
    /// Written since the last fsync, and a peer may be told about it
    /// (entries, term, vote, configuration): fsync before any message. A
    /// commit index alone needs none (raft learns it again after a crash).
    must_sync: bool,
}

fn encode_record(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    let len = (body.len() + 1) as u32;
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

fn encode_entries(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        let b = e.write_to_bytes()?;
        body.extend_from_slice(&(b.len() as u32).to_be_bytes());
        body.extend_from_slice(&b);
    }
    Ok(body)
}

fn decode_entries(body: &bytes::Bytes) -> std::result::Result<Vec<Entry>, String> {
    let mut rest = &body[..];
    let count = take_u32(&mut rest)?;
    // The count is bounded by the bytes present (each entry needs 4 bytes at least),
    // so it cannot make us allocate more than the record holds.
    if count as usize > rest.len() / 4 {
        return Err(format!("entry count {count} exceeds record"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = take_u32(&mut rest)? as usize;
        if n > rest.len() {
            return Err("entry length exceeds record".into());
        }
        let (b, r) = rest.split_at(n);
        rest = r;
        out.push(crate::codec::parse_bounded::<Entry>(&body.slice_ref(b)).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn take_u32(rest: &mut &[u8]) -> std::result::Result<u32, String> {
    if rest.len() < 4 {
        return Err("truncated".into());
    }
    let (a, r) = rest.split_at(4);
    *rest = r;
    Ok(u32::from_be_bytes([a[0], a[1], a[2], a[3]]))
}

impl GroupStorage {
    /// Open a group's storage, replaying what the disk holds.
    pub fn open(mut disk: Box<dyn Disk>, max_record_bytes: u32) -> Result<Self> {
        let bytes = disk.read_all()?;
        let mut s = GroupStorage {
            hard: HardState::default(),
            conf: ConfState::default(),
            snapshot: Snapshot::default(),
            entries: Vec::new(),
            disk,
            max_record_bytes,
            dirty: false,
            must_sync: false,
        };
        let mut at = 0usize;
        let valid_end = loop {
            let Some(rec) = bytes.get(at..) else { break at };
            if rec.len() < HEADER {
                break at;
            }
            let len = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let crc = u32::from_be_bytes([rec[4], rec[5], rec[6], rec[7]]);
            if len == 0 || len > max_record_bytes || rec.len() - HEADER < len as usize {
                break at;
            }
            let payload = &rec[HEADER..HEADER + len as usize];
            if crc32c::crc32c(payload) != crc {
                break at;
            }
            // Parsed as the transport does (`codec::parse_bounded`): a claimed
            // length is checked against the record before anything is allocated.
            let (kind, body) = (payload[0], bytes::Bytes::copy_from_slice(&payload[1..]));
            let bad = |why: String| ClusterError::Corrupt { path: PathBuf::from("<group wal>"), at: at as u64, why };
            match kind {
                KIND_ENTRIES => {
                    let es = decode_entries(&body).map_err(bad)?;
                    s.append_mem(&es);
                }
                KIND_HARD_STATE => s.hard = crate::codec::parse_bounded::<HardState>(&body).map_err(|e| bad(e.to_string()))?,
                KIND_CONF_STATE => s.conf = crate::codec::parse_bounded::<ConfState>(&body).map_err(|e| bad(e.to_string()))?,
                KIND_SNAPSHOT => {
                    let snap = crate::codec::parse_bounded::<Snapshot>(&body).map_err(|e| bad(e.to_string()))?;
                    s.install_snapshot_mem(snap, true);
                }
                k => return Err(bad(format!("unknown record kind {k}"))),
            }
            at += HEADER + len as usize;
        };
        if valid_end < bytes.len() {
            // A torn tail from a crash mid-write: cut it so later appends follow valid records.
            tracing::warn!(valid = valid_end, total = bytes.len(), "raft log: dropping torn tail");
            let prefix = bytes.get(..valid_end).unwrap_or_default().to_vec();
            s.disk.replace(&prefix)?;
        }
        Ok(s)
    }

    /// Set the first configuration of a new group (all bootstrap members must
    /// pass the same voters). No effect when the group already has state.
    /// Written, not yet fsynced: the host's next Ready pass fsyncs it with
    /// every other group's writes, before the group sends anything. Lost in
    /// a crash before that, the group had said nothing and is founded again.
    pub fn bootstrap(&mut self, voters: &[u64]) -> Result<()> {
        if self.is_blank() && !voters.is_empty() {
            let cs = ConfState { voters: voters.to_vec(), ..Default::default() };
            self.set_conf_state(cs)?;
        }
        Ok(())
    }

    pub fn is_blank(&self) -> bool {
        self.conf.voters.is_empty() && self.conf.learners.is_empty() && self.snapshot.get_metadata().index == 0 && self.entries.is_empty()
    }

    fn append_mem(&mut self, es: &[Entry]) {
        let Some(first) = es.first() else { return };
        let snap_index = self.snapshot.get_metadata().index;
        // Entries at or below the snapshot are already covered by it.
        let es: Vec<Entry> = es.iter().filter(|e| e.index > snap_index).cloned().collect();
        let Some(first_new) = es.first().map(|e| e.index) else { return };
        let _ = first;
        let keep = (first_new - snap_index - 1) as usize;
        self.entries.truncate(keep.min(self.entries.len()));
        self.entries.extend(es);
    }

    /// `keep_tail`: keep the entries after the snapshot (a local compaction);
    /// otherwise drop every entry (a snapshot received from the leader replaces the log).
    fn install_snapshot_mem(&mut self, snap: Snapshot, keep_tail: bool) {
        let idx = snap.get_metadata().index;
        let term = snap.get_metadata().term;
        if keep_tail {
            self.entries.retain(|e| e.index > idx);
        } else {
            self.entries.clear();
        }
        if self.hard.commit < idx {
            self.hard.commit = idx;
        }
        if self.hard.term < term {
            self.hard.term = term;
        }
        self.conf = snap.get_metadata().get_conf_state().clone();
        self.snapshot = snap;
    }

    fn write(&mut self, kind: u8, body: &[u8]) -> Result<()> {
        if body.len() + 1 > self.max_record_bytes as usize {
            return Err(ClusterError::Config(format!(
                "raft record of {} bytes exceeds cluster.max_record_bytes ({})",
                body.len() + 1,
                self.max_record_bytes
            )));
        }
        let mut out = Vec::with_capacity(HEADER + 1 + body.len());
        encode_record(kind, body, &mut out);
        self.disk.append(&out)?;
        self.dirty = true;
        Ok(())
    }

    pub fn append(&mut self, es: &[Entry]) -> Result<()> {
        if es.is_empty() {
            return Ok(());
        }
        let body = encode_entries(es)?;
        self.write(KIND_ENTRIES, &body)?;
        self.must_sync = true;
        self.append_mem(es);
        Ok(())
    }

    /// A new term or vote must be durable before any message; a commit
    /// index alone need not (see `must_sync`).
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.write(KIND_HARD_STATE, &hs.write_to_bytes()?)?;
        if hs.term != self.hard.term || hs.vote != self.hard.vote {
            self.must_sync = true;
        }
        self.hard = hs;
        Ok(())
    }

    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hs = self.hard.clone();
        hs.commit = commit;
        self.set_hard_state(hs)
    }

    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<()> {
        self.write(KIND_CONF_STATE, &cs.write_to_bytes()?)?;
        self.must_sync = true;
        self.conf = cs;
        Ok(())
    }

    /// Whether writes a peer may be told about wait for an fsync.
    pub fn needs_sync(&self) -> bool {
        self.must_sync
    }

    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.disk.sync()?;
            self.dirty = false;
        }
        self.must_sync = false;
        Ok(())
    }

    /// Install a snapshot received from the leader: it replaces the log.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<()> {
        self.install_snapshot_mem(snap, false);
        self.rewrite()
    }

    /// A local compaction: `snap` covers the log up to its index; later entries stay.
    pub fn compact(&mut self, snap: Snapshot) -> Result<()> {
        if snap.get_metadata().index <= self.snapshot.get_metadata().index {
            return Ok(());
        }
        self.install_snapshot_mem(snap, true);
        self.rewrite()
    }

    /// Write the whole state as a fresh file, atomically; the old records go.
    fn rewrite(&mut self) -> Result<()> {
        let mut out = Vec::new();
        encode_record(KIND_SNAPSHOT, &self.snapshot.write_to_bytes()?, &mut out);
        encode_record(KIND_HARD_STATE, &self.hard.write_to_bytes()?, &mut out);
        encode_record(KIND_CONF_STATE, &self.conf.write_to_bytes()?, &mut out);
        if !self.entries.is_empty() {
            encode_record(KIND_ENTRIES, &encode_entries(&self.entries)?, &mut out);
        }
        self.disk.replace(&out)?;
        self.dirty = false;
        self.must_sync = false;
        Ok(())
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }
    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
    fn last(&self) -> u64 {
        self.snap_index() + self.entries.len() as u64
    }
}

impl raft::Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard.clone(), conf_state: self.conf.clone() })
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _ctx: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        if low <= self.snap_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let base = self.snap_index() + 1;
        let slice = self.entries.get((low - base) as usize..(high - base) as usize).unwrap_or_default();
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in slice {
            size += u64::from(e.compute_size());
            // Always at least one entry, so a big entry still makes progress.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let si = self.snap_index();
        if idx == si {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < si {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - si - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snap_index() >= request_index && self.snap_index() > 0 {
            Ok(self.snapshot.clone())
        } else {
            Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn ent(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: data.to_vec().into(), ..Default::default() }
    }

    #[test]
    fn replay_restores_entries_state_and_overwrites() {
        let disk = MemDisk::new();
        let mut s = GroupStorage::open(Box::new(disk.clone()), 1 << 20).unwrap();
        s.bootstrap(&[1, 2, 3]).unwrap();
        s.append(&[ent(1, 1, b"a"), ent(2, 1, b"b"), ent(3, 1, b"c")]).unwrap();
        // A new leader overwrites the uncommitted tail from index 2.
        s.append(&[ent(2, 2, b"B")]).unwrap();
        s.set_hard_state(HardState { term: 2, vote: 3, commit: 2, ..Default::default() }).unwrap();
        s.sync().unwrap();
        let r = GroupStorage::open(Box::new(disk.clone()), 1 << 20).unwrap();
        assert_eq!(r.last_index().unwrap(), 2);
        assert_eq!(r.term(2).unwrap(), 2);
        assert_eq!(r.hard_state().vote, 3);
        assert_eq!(r.conf_state().voters, vec![1, 2, 3]);
        let es = r.entries(1, 3, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(es.iter().map(|e| e.data.to_vec()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"B".to_vec()]);
    }

    #[test]
    fn crash_loses_unsynced_and_a_torn_tail_is_cut() {
        let disk = MemDisk::new();
        let mut s = GroupStorage::open(Box::new(disk.clone()), 1 << 20).unwrap();
        s.append(&[ent(1, 1, b"a")]).unwrap();
        s.sync().unwrap();
        s.append(&[ent(2, 1, b"bbbbbbbbbb")]).unwrap();
        // Torn: five bytes of the unsynced record reach the disk.
        disk.crash(5);
        let mut r = GroupStorage::open(Box::new(disk.clone()), 1 << 20).unwrap();
        assert_eq!(r.last_index().unwrap(), 1);
        // Appending after the cut must survive the next replay.
        r.append(&[ent(2, 1, b"x")]).unwrap();
        r.sync().unwrap();
        let r2 = GroupStorage::open(Box::new(disk), 1 << 20).unwrap();
        assert_eq!(r2.last_index().unwrap(), 2);
        assert_eq!(r2.term(2).unwrap(), 1);
    }

    #[test]
    fn compaction_keeps_tail_and_snapshot() {
        let disk = MemDisk::new();
        let mut s = GroupStorage::open(Box::new(disk.clone()), 1 << 20).unwrap();
        s.bootstrap(&[1]).unwrap();
        s.append(&[ent(1, 1, b"a"), ent(2, 1, b"b"), ent(3, 1, b"c")]).unwrap();
        s.sync().unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 2;
        snap.mut_metadata().term = 1;
        snap.mut_metadata().set_conf_state(s.conf_state().clone());
        snap.data = b"state".to_vec().into();
        s.compact(snap).unwrap();
        let r = GroupStorage::open(Box::new(disk), 1 << 20).unwrap();
        assert_eq!(r.first_index().unwrap(), 3);
        assert_eq!(r.last_index().unwrap(), 3);
        assert!(matches!(r.term(1), Err(raft::Error::Store(StorageError::Compacted))));
        assert_eq!(r.snapshot(2, 0).unwrap().data.to_vec(), b"state".to_vec());
    }

    #[test]
    fn only_what_a_peer_may_hear_of_waits_for_fsync() {
        let disk = MemDisk::new();
        let mut s = GroupStorage::open(Box::new(disk.clone()), 1 << 20).unwrap();
        // The founding configuration is written, and fsynced by the host's next pass.
        s.bootstrap(&[1, 2, 3]).unwrap();
        assert!(s.needs_sync());
        s.sync().unwrap();
        assert!(!s.needs_sync());
        assert_eq!(disk.pending_len(), 0);
        s.append(&[ent(1, 1, b"a")]).unwrap();
        assert!(s.needs_sync());
        s.sync().unwrap();
        s.set_hard_state(HardState { term: 1, vote: 2, commit: 0, ..Default::default() }).unwrap();
        assert!(s.needs_sync(), "a vote must be durable before it is sent");
        s.sync().unwrap();
        // A commit index alone: written, left for the next fsync.
        s.set_commit(1).unwrap();
        assert!(!s.needs_sync());
        assert!(disk.pending_len() > 0);
        // Lost in a crash, the vote and the entry stay; the commit is learned again.
        let r = GroupStorage::open(Box::new(disk.durable_image()), 1 << 20).unwrap();
        assert_eq!((r.hard_state().term, r.hard_state().vote, r.hard_state().commit), (1, 2, 0));
        assert_eq!(r.last_index().unwrap(), 1);
    }

    #[test]
    fn oversized_length_on_disk_is_not_allocated() {
        let mut disk = MemDisk::new();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.extend_from_slice(&[0; 12]);
        disk.append(&bytes).unwrap();
        disk.sync().unwrap();
        let r = GroupStorage::open(Box::new(disk), 1 << 20).unwrap();
        assert_eq!(r.last_index().unwrap(), 0);
    }

    #[test]
    fn file_disk_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g/1.wal");
        let mut s = GroupStorage::open(Box::new(FileDisk::open(&p).unwrap()), 1 << 20).unwrap();
        s.append(&[ent(1, 1, b"a")]).unwrap();
        s.sync().unwrap();
        let r = GroupStorage::open(Box::new(FileDisk::open(&p).unwrap()), 1 << 20).unwrap();
        assert_eq!(r.last_index().unwrap(), 1);
    }
}
