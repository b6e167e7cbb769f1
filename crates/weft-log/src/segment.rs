//! A segment: one append-only file of whole batches (`<base>.log`, base =
//! offset of its first record, 20 digits), with a sparse offset index and a
//! time index kept in memory and written to `<base>.index` when the segment
//! is closed (rolled). See docs/storage.md for the byte layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::{LogError, Result};
use crate::files::OpenFiles;
use crate::model::Offset;
use crate::storage::{StorageFile, write_atomic};

/// An index entry is added once this many bytes were appended since the last.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;
const INDEX_MAGIC: u32 = 0x3149_5857; // "WXI1" little-endian
/// Capacity of a segment's pending buffer kept between passes.
const PENDING_KEEP_BYTES: usize = 1 << 20;
const INDEX_TRAILER_LEN: usize = 8 + 8 + 8 + 4 + 4 + 4 + 4;

pub fn log_file_name(base: Offset) -> String {
    format!("{:020}.log", base.0)
}
pub fn index_file_name(base: Offset) -> String {
    format!("{:020}.index", base.0)
}

/// Parses `<20 digits>.log`.
pub fn parse_log_file_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Offset)
}

#[derive(Debug)]
pub struct Segment {
    pub base: Offset,
    pub dir: PathBuf,
    /// `dir/<base>.log`.
    path: PathBuf,
    /// The file is opened through this bounded cache when used, not kept open.
    files: Arc<OpenFiles>,
    /// Bytes of whole batches in the file. Readers read below it only.
    pub size: u64,
    /// Batches appended after `size` but not yet written: a connection's
    /// pass defers the write to its end (weft_wire::pass), so the appends
    /// of many requests reach the file in one write. Nothing in it is
    /// readable or acknowledged.
    pending: Vec<u8>,
    /// Offset after the last record (== base when empty).
    pub next_offset: Offset,
    /// Largest record timestamp, `i64::MIN` when empty.
    pub max_ts: i64,
    /// Wall-clock time of the first append (roll by age), if any.
    pub first_append_ms: Option<i64>,
    /// (offset - base, file position) of some batch starts, increasing.
    offset_index: Vec<(u32, u32)>,
    /// (max timestamp up to and including the batch, offset - base of that batch).
    time_index: Vec<(i64, u32)>,
    bytes_since_index: u64,
}

/// How a recovery scan ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Bytes cut off the end (torn or corrupt tail).
    pub truncated_bytes: u64,
    pub reason: Option<String>,
}

impl Segment {
    pub fn log_path(&self) -> PathBuf {
        self.path.clone()
    }
    /// The open log file (from the cache, opened again if it was evicted).
    pub fn file(&self) -> Result<Arc<dyn StorageFile>> {
        self.files.get(&self.path).map_err(|e| LogError::io("open segment", &self.path, e))
    }
    /// Fsyncs the log file.
    pub fn sync(&self) -> std::io::Result<()> {
        self.files.sync(&self.path)
    }
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(index_file_name(self.base))
    }
    /// No batch appended, written or pending.
    pub fn is_empty(&self) -> bool {
        self.end_pos() == 0
    }
    /// Where the next batch goes: after the written bytes and the pending ones.
    pub fn end_pos(&self) -> u64 {
        self.size + self.pending.len() as u64
    }
    /// True while appended batches wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Creates a new empty segment file.
    pub fn create(files: &Arc<OpenFiles>, dir: &Path, base: Offset) -> Result<Segment> {
        let path = dir.join(log_file_name(base));
        let file = files.create(&path).map_err(|e| LogError::io("create segment", &path, e))?;
        file.set_len(0).map_err(|e| LogError::io("create segment", &path, e))?;
        files.storage().sync_dir(dir).map_err(|e| LogError::io("sync dir", dir, e))?;
        Ok(Self::empty(files, dir, base))
    }

    fn empty(files: &Arc<OpenFiles>, dir: &Path, base: Offset) -> Segment {
        Segment {
            base,
            dir: dir.to_path_buf(),
            path: dir.join(log_file_name(base)),
            files: files.clone(),
            size: 0,
            pending: Vec::new(),
            next_offset: base,
            max_ts: i64::MIN,
            first_append_ms: None,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
        }
    }

    /// Opens a closed segment, trusting its index file when it matches the
    /// log file; otherwise rebuilds the indexes by scanning (and truncating a
    /// corrupt tail, which for a closed segment means media damage).
    pub fn open_closed(files: &Arc<OpenFiles>, dir: &Path, base: Offset) -> Result<(Segment, ScanReport)> {
        let path = dir.join(log_file_name(base));
        let file = files.get(&path).map_err(|e| LogError::io("open segment", &path, e))?;
        let len = file.len().map_err(|e| LogError::io("stat segment", &path, e))?;
        let storage = files.storage();
        let mut seg = Self::empty(files, dir, base);
        if seg.load_index(storage, len) {
            return Ok((seg, ScanReport::default()));
        }
        tracing::info!(segment = %path.display(), "index missing or stale, rebuilding by scan");
        let report = seg.scan_and_truncate(None)?;
        if report.truncated_bytes == 0 {
            // Best effort: a missing index only costs a scan on the next start.
            if let Err(e) = seg.write_index() {
                tracing::warn!(error = %e, "could not rewrite segment index");
            }
        }
        Ok((seg, report))
    }

    /// Opens the active (last) segment: always scans, truncating a torn tail.
    /// With `keep_below`, also cuts every batch at or after that offset (a
    /// poisoned partition reopened after an fsync failure keeps only what
    /// was durable).
    pub fn open_active(files: &Arc<OpenFiles>, dir: &Path, base: Offset, keep_below: Option<Offset>) -> Result<(Segment, ScanReport)> {
        // A fresh descriptor: nothing cached from before is reused.
        files.forget(&dir.join(log_file_name(base)));
        let mut seg = Self::empty(files, dir, base);
        let report = seg.scan_and_truncate(keep_below)?;
        // The index file of an active segment is never trusted; remove a stale one.
        let idx = seg.index_path();
        let storage = files.storage();
        if storage.exists(&idx) {
            let _ = storage.remove_file(&idx);
        }
        Ok((seg, report))
    }

    /// Reads every batch, checking CRCs and offset order, rebuilding the
    /// indexes; cuts the file after the last whole valid batch (or before
    /// the first batch at or after `keep_below`).
    fn scan_and_truncate(&mut self, keep_below: Option<Offset>) -> Result<ScanReport> {
        let path = self.log_path();
        let file = self.file()?;
        let len = file.len().map_err(|e| LogError::io("stat segment", &path, e))?;
        let mut pos = 0u64;
        let mut reason = None;
        let mut hdr = [0u8; HEADER_LEN];
        while pos < len {
            if len - pos < HEADER_LEN as u64 {
                reason = Some("partial batch header".to_string());
                break;
            }
            if let Err(e) = file.read_exact_at(&mut hdr, pos) {
                return Err(LogError::io("read segment", &path, e));
            }
            let h = match batch::peek_header(&hdr) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    reason = Some("partial batch header".to_string());
                    break;
                }
                Err(e) => {
                    reason = Some(e.to_string());
                    break;
                }
            };
            let total = h.total_len() as u64;
            if total > len - pos {
                reason = Some("partial batch".to_string());
                break;
            }
            if keep_below.is_some_and(|k| h.base_offset >= k) {
                reason = Some(format!("not durable before a storage failure (from offset {})", h.base_offset));
                break;
            }
            if h.base_offset < self.next_offset {
                reason = Some(format!("batch offset {} below expected {}", h.base_offset, self.next_offset));
                break;
            }
            if h.last_offset().0 - self.base.0 > u64::from(u32::MAX) {
                reason = Some("batch offset too far from segment base".to_string());
                break;
            }
            let mut buf = vec![0u8; total as usize];
            file.read_exact_at(&mut buf, pos).map_err(|e| LogError::io("read segment", &path, e))?;
            match batch::check_batch(&buf) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    reason = Some("partial batch".to_string());
                    break;
                }
                Err(e) => {
                    reason = Some(e.to_string());
                    break;
                }
            }
            self.note_append(&h, pos, None);
            pos += total;
            self.size = pos;
        }
        let truncated = len - pos;
        if truncated > 0 {
            tracing::warn!(segment = %path.display(), at = pos, bytes = truncated, reason = reason.as_deref().unwrap_or(""), "truncating torn or corrupt segment tail");
            file.set_len(pos).map_err(|e| LogError::io("truncate segment", &path, e))?;
            self.sync().map_err(|e| LogError::io("sync segment", &path, e))?;
        }
        if let Some(first) = self.time_index.first() {
            self.first_append_ms = Some(first.0);
        }
        Ok(ScanReport { truncated_bytes: truncated, reason: if truncated > 0 { reason } else { None } })
    }

    /// Updates offsets and indexes for a batch at `pos` (the caller moves
    /// `size` once the batch is in the file).
    fn note_append(&mut self, h: &BatchHeader, pos: u64, now_ms: Option<i64>) {
        let rel = (h.base_offset.0 - self.base.0) as u32;
        if pos == 0 {
            self.first_append_ms = now_ms.or(Some(h.max_timestamp_ms));
        }
        if pos == 0 || self.bytes_since_index >= INDEX_INTERVAL_BYTES {
            self.offset_index.push((rel, pos as u32));
            self.bytes_since_index = 0;
        }
        self.max_ts = self.max_ts.max(h.max_timestamp_ms);
        if self.time_index.last().is_none_or(|(t, _)| self.max_ts > *t) {
            self.time_index.push((self.max_ts, rel));
        }
        let total = h.total_len() as u64;
        self.bytes_since_index += total;
        self.next_offset = h.next_offset();
    }

    /// Appends one encoded batch: written now, or with `defer` kept in
    /// `pending` for [`Segment::write_pending`]. A batch appended while
    /// others are pending joins them and is written with them (the file
    /// never has a hole). The caller checked that offsets continue from
    /// `next_offset` and that the segment has room.
    pub fn append(&mut self, h: &BatchHeader, bytes: &[u8], now_ms: i64, defer: bool) -> std::io::Result<()> {
        let pos = self.end_pos();
        if defer || self.has_pending() {
            self.pending.extend_from_slice(bytes);
            self.note_append(h, pos, Some(now_ms));
            return if defer { Ok(()) } else { self.write_pending() };
        }
        self.files.get_for_write(&self.path)?.write_all_at(bytes, pos)?;
        self.note_append(h, pos, Some(now_ms));
        self.size = pos + bytes.len() as u64;
        Ok(())
    }

    /// Writes the pending batches to the file in one write. On an error
    /// they stay pending (the file may hold part of them): the caller
    /// stops writing to the segment, and recovery cuts the torn tail.
    pub fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.files.get_for_write(&self.path)?.write_all_at(&self.pending, self.size)?;
        self.size += self.pending.len() as u64;
        self.pending.clear();
        // A burst's buffer is not kept for ever: one that grew past a few
        // batches' worth is given back.
        if self.pending.capacity() > PENDING_KEEP_BYTES {
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// Forgets the pending batches (a poisoned partition: none of them was
    /// acknowledged, and recovery reopens the segment from the file).
    pub fn drop_pending(&mut self) {
        self.pending = Vec::new();
    }

    /// File position from which to scan for `offset` (start of the batch of
    /// the largest indexed offset <= `offset`).
    pub fn lookup_pos(&self, offset: Offset) -> u64 {
        let rel = offset.0.saturating_sub(self.base.0).min(u64::from(u32::MAX)) as u32;
        let i = self.offset_index.partition_point(|(o, _)| *o <= rel);
        if i == 0 { 0 } else { u64::from(self.offset_index[i - 1].1) }
    }

    /// File position from which to scan for the first record with
    /// timestamp >= `ts`.
    pub fn lookup_time_pos(&self, ts: i64) -> u64 {
        // Entries with max timestamp < ts: nothing at or before their batch qualifies.
        let i = self.time_index.partition_point(|(t, _)| *t < ts);
        if i == 0 { 0 } else { self.lookup_pos(Offset(self.base.0 + u64::from(self.time_index[i - 1].1))) }
    }

    /// Writes the index file (sparse offset index + time index + segment
    /// summary), atomically.
    pub fn write_index(&self) -> Result<()> {
        let storage = self.files.storage();
        let mut b = Vec::with_capacity(self.offset_index.len() * 8 + self.time_index.len() * 12 + INDEX_TRAILER_LEN);
        for (o, p) in &self.offset_index {
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&p.to_le_bytes());
        }
        for (t, o) in &self.time_index {
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&o.to_le_bytes());
        }
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.next_offset.0.to_le_bytes());
        b.extend_from_slice(&self.max_ts.to_le_bytes());
        b.extend_from_slice(&(self.offset_index.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.time_index.len() as u32).to_le_bytes());
        b.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let path = self.index_path();
        write_atomic(storage, &path, &b).map_err(|e| LogError::io("write index", &path, e))
    }

    /// Loads the index file if it is whole and describes a log of `log_len` bytes.
    fn load_index(&mut self, storage: &dyn crate::storage::Storage, log_len: u64) -> bool {
        let path = self.index_path();
        let Ok(b) = crate::storage::read_all(storage, &path, 1 << 30) else { return false };
        let Some(t0) = b.len().checked_sub(INDEX_TRAILER_LEN) else { return false };
        let (body, trailer) = b.split_at(t0);
        let u64_at = |i: usize| trailer.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
        let u32_at = |i: usize| trailer.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
        let (Some(size), Some(next), Some(max_ts), Some(n_off), Some(n_time), Some(magic), Some(crc)) =
            (u64_at(0), u64_at(8), u64_at(16), u32_at(24), u32_at(28), u32_at(32), u32_at(36))
        else {
            return false;
        };
        if magic != INDEX_MAGIC || crc32c::crc32c(&b[..b.len() - 4]) != crc || size != log_len {
            return false;
        }
        if body.len() != n_off as usize * 8 + n_time as usize * 12 || next < self.base.0 {
            return false;
        }
        let (offs, times) = body.split_at(n_off as usize * 8);
        self.offset_index = offs
            .chunks_exact(8)
            .map(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]), u32::from_le_bytes([c[4], c[5], c[6], c[7]])))
            .collect();
        self.time_index = times
            .chunks_exact(12)
            .map(|c| {
                let mut t = [0u8; 8];
                t.copy_from_slice(&c[..8]);
                (i64::from_le_bytes(t), u32::from_le_bytes([c[8], c[9], c[10], c[11]]))
            })
            .collect();
        if !self.offset_index.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            || self.offset_index.iter().any(|(_, p)| u64::from(*p) >= size.max(1))
        {
            self.offset_index.clear();
            self.time_index.clear();
            return false;
        }
        self.size = size;
        self.next_offset = Offset(next);
        self.max_ts = max_ts as i64;
        self.first_append_ms = self.time_index.first().map(|t| t.0);
        true
    }
}

/// First read size of [`read_batches`]; later reads double it.
const READ_CHUNK: u64 = 64 * 1024;

/// Reads whole batches of one segment file from `pos`: skips batches that
/// end before `from`, stops before a batch at or above `limit` (the high
/// watermark), at `end` (bytes of whole batches in the file), after
/// `max_records` records, or before exceeding `max_bytes` (the first batch is
/// always returned whole, so a consumer can progress past a large batch).
/// Returns the bytes and the number of records at or after `from` (exact
/// except in compacted batches, where the decoder applies the exact limit).
#[allow(clippy::too_many_arguments)]
pub fn read_batches(
    file: &dyn StorageFile,
    path: &Path,
    mut pos: u64,
    end: u64,
    from: Offset,
    limit: Offset,
    max_bytes: usize,
    max_records: usize,
) -> Result<(Bytes, usize)> {
    let corrupt = |pos, reason: String| LogError::Corrupt { path: path.to_path_buf(), pos, reason };
    let header_at = |buf: &[u8], pos: u64| -> Result<BatchHeader> {
        batch::peek_header(buf).map_err(|e| corrupt(pos, e.to_string()))?.ok_or_else(|| corrupt(pos, "short header".into()))
    };
    // 1. Skip batches before `from`, reading headers only (the sparse index
    //    leaves at most about INDEX_INTERVAL_BYTES of them).
    let mut hdr = [0u8; HEADER_LEN];
    let first = loop {
        if pos >= end || max_records == 0 {
            return Ok((Bytes::new(), 0));
        }
        if end - pos < HEADER_LEN as u64 {
            return Err(corrupt(pos, "partial batch header inside the committed log".into()));
        }
        file.read_exact_at(&mut hdr, pos).map_err(|e| LogError::io("read segment", path, e))?;
        let h = header_at(&hdr, pos)?;
        if h.next_offset() > from {
            break h;
        }
        pos += h.total_len() as u64;
    };
    if first.base_offset >= limit {
        return Ok((Bytes::new(), 0));
    }
    // 2. Read whole batches until a limit is reached: at most `max_bytes`
    //    (but always the first batch). Reads start at READ_CHUNK and double,
    //    so a fetch that stops at `max_records` after a few small batches
    //    does not read (and zero) `max_bytes`.
    let avail = end - pos;
    if first.total_len() as u64 > avail {
        return Err(corrupt(pos, "batch past the end of the segment".into()));
    }
    let cap = (first.total_len() as u64).max((max_bytes as u64).min(avail));
    let mut want = (first.total_len() as u64).max(READ_CHUNK.min(cap));
    let mut buf = BytesMut::new();
    let (mut at, mut records) = (0usize, 0usize);
    loop {
        let have = buf.len();
        buf.resize(want as usize, 0);
        if let Some(fresh) = buf.get_mut(have..) {
            file.read_exact_at(fresh, pos + have as u64).map_err(|e| LogError::io("read segment", path, e))?;
        }
        let mut done = false;
        while records < max_records {
            let Some(rest) = buf.get(at..) else { break };
            if rest.len() < HEADER_LEN {
                break;
            }
            let h = header_at(rest, pos + at as u64)?;
            if h.base_offset >= limit {
                done = true;
                break;
            }
            if h.total_len() > rest.len() {
                break;
            }
            let below = from.0.saturating_sub(h.base_offset.0).min(u64::from(h.record_count)) as usize;
            records += (h.record_count as usize).saturating_sub(below).max(1);
            at += h.total_len();
        }
        if done || records >= max_records || want >= cap {
            break;
        }
        want = want.saturating_mul(2).min(cap);
    }
    buf.truncate(at);
    Ok((buf.freeze(), records))
}

/// Calls `f` with every whole batch of `file[..end]`, one at a time (CRC checked).
pub fn for_each_batch(
    file: &dyn StorageFile,
    path: &Path,
    end: u64,
    mut f: impl FnMut(batch::Batch) -> Result<()>,
) -> Result<()> {
    let mut pos = 0u64;
    let mut hdr = [0u8; HEADER_LEN];
    let corrupt = |pos, reason: String| LogError::Corrupt { path: path.to_path_buf(), pos, reason };
    while pos < end {
        if end - pos < HEADER_LEN as u64 {
            return Err(corrupt(pos, "partial batch header".into()));
        }
        file.read_exact_at(&mut hdr, pos).map_err(|e| LogError::io("read segment", path, e))?;
        let h = batch::peek_header(&hdr)
            .map_err(|e| corrupt(pos, e.to_string()))?
            .ok_or_else(|| corrupt(pos, "short header".into()))?;
        let total = h.total_len() as u64;
        if pos + total > end {
            return Err(corrupt(pos, "batch past the end".into()));
        }
        let mut buf = BytesMut::zeroed(total as usize);
        file.read_exact_at(&mut buf, pos).map_err(|e| LogError::io("read segment", path, e))?;
        let b = batch::Batch::decode(&mut buf)
            .map_err(|e| corrupt(pos, e.to_string()))?
            .ok_or_else(|| corrupt(pos, "short batch".into()))?;
        f(b)?;
        pos += total;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use crate::storage::{MemStorage, Storage};

    fn batch(base: u64, n: u64, ts: i64) -> (BatchHeader, Bytes) {
        let mut b = BatchBuilder::new(Offset(base));
        for i in 0..n {
            b.push(Offset(base + i), ts + i as i64, None, Some(&[7u8; 500]), &[]).unwrap();
        }
        b.finish().unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(log_file_name(Offset(42)), "00000000000000000042.log");
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(Offset(42)));
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
    }

    #[test]
    fn index_roundtrip_and_lookup() {
        let s = MemStorage::new();
        let dir = Path::new("/p");
        s.create_dir_all(dir).unwrap();
        let files = Arc::new(OpenFiles::new(Arc::new(s.clone()), 4));
        let mut seg = Segment::create(&files, dir, Offset(100)).unwrap();
        let mut base = 100;
        for i in 0..40 {
            let (h, b) = batch(base, 3, 1000 + i * 10);
            seg.append(&h, &b, 0, false).unwrap();
            base += 3;
        }
        assert!(seg.offset_index.len() > 3);
        seg.write_index().unwrap();
        let (re, rep) = Segment::open_closed(&files, dir, Offset(100)).unwrap();
        assert_eq!(rep, ScanReport::default());
        assert_eq!(re.offset_index, seg.offset_index);
        assert_eq!(re.time_index, seg.time_index);
        assert_eq!(re.next_offset, Offset(220));
        let pos = re.lookup_pos(Offset(150));
        let (bytes, _) = read_batches(&*re.file().unwrap(), dir, pos, re.size, Offset(150), Offset(220), 1, 10).unwrap();
        let first = batch::peek_header(&bytes).unwrap().unwrap();
        assert!(first.base_offset <= Offset(150) && first.next_offset() > Offset(150));
        // Stale index (log length changed) is rebuilt by scan.
        seg.file().unwrap().set_len(seg.size - 10).unwrap();
        let (re2, rep2) = Segment::open_closed(&files, dir, Offset(100)).unwrap();
        assert!(rep2.truncated_bytes > 0);
        assert_eq!(re2.next_offset, Offset(217));
    }
}
