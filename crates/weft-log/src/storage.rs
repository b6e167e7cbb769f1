//! The storage backend: the few file operations the log needs, behind a
//! trait so that tests can run the log on [`MemStorage`], a crash model that
//! keeps, per file, the bytes written ("live") and the bytes known durable
//! (after `sync`), and can inject I/O failures.
//!
//! Media assumptions (the real backend, [`FsStorage`]): a write that returned
//! may be lost or torn at any byte until `sync_data` returns; after it returns,
//! the bytes survive power loss. `rename` and `create` are made durable by
//! `sync_dir` of the parent. See docs/storage.md.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An open file.
#[allow(clippy::len_without_is_empty)] // a file length, not a collection
pub trait StorageFile: Send + Sync + std::fmt::Debug {
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `pos` (error if the file is shorter).
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every byte written so far durable.
    fn sync_data(&self) -> io::Result<()>;
}

/// A file system.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (files and directories).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn is_dir(&self, path: &Path) -> bool;
    fn exists(&self, path: &Path) -> bool;
    /// Opens a file for reading and writing, creating it if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Writes `data` to `path` atomically: write `path.tmp`, fsync, rename, fsync
/// the directory. A reader sees either the old or the new content.
pub fn write_atomic(storage: &dyn Storage, path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let f = storage.open(&tmp, true)?;
    f.set_len(0)?;
    f.write_all_at(data, 0)?;
    f.sync_data()?;
    drop(f);
    storage.rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        storage.sync_dir(dir)?;
    }
    Ok(())
}

/// Reads a whole (small) file.
pub fn read_all(storage: &dyn Storage, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
    let f = storage.open(path, false)?;
    let len = f.len()?;
    if len > max_len {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("file larger than {max_len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

// ---------------------------------------------------------------------------
// Real file system.

/// The real file system (std::fs, positional I/O, fdatasync).
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile(std::fs::File);

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            if let Ok(n) = e.file_name().into_string() {
                out.push(n);
            }
        }
        out.sort();
        Ok(out)
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let f = std::fs::OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(Arc::new(FsFile(f)))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

// ---------------------------------------------------------------------------
// In-memory crash model.

#[derive(Debug, Default)]
struct MemFileData {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<PathBuf, Arc<Mutex<MemFileData>>>,
    dirs: BTreeSet<PathBuf>,
}

/// In-memory storage with a crash model and fault injection.
///
/// Model: each file has `live` bytes (what reads see) and `durable` bytes
/// (what survives a crash, updated by `sync_data`). [`MemStorage::crash`]
/// builds the post-crash image: every file becomes its durable bytes plus a
/// caller-chosen prefix of the bytes written after the last sync (a torn
/// write), optionally with garbage appended. Directory operations are
/// modelled as immediately durable (a simplification: the log syncs the
/// directory after each of them anyway).
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    state: Arc<Mutex<MemState>>,
    faults: Arc<Faults>,
}

/// Counters and failure points shared by a storage and its open files.
#[derive(Debug)]
struct Faults {
    syncs: AtomicU64,
    /// Fail every `sync_data` once this many syncs have happened.
    fail_sync_after: AtomicU64,
    /// Mutating operations so far (writes, truncations, syncs, renames, removals, creations).
    ops: AtomicU64,
    /// Fail every mutating operation from this count on.
    fail_ops_at: AtomicU64,
    /// Fail only the mutating operation of this count (a transient error).
    fail_once_at: AtomicU64,
    /// Each `sync_data` sleeps this long (a slow disk, for group-commit tests).
    sync_delay_us: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            syncs: AtomicU64::new(0),
            fail_sync_after: AtomicU64::new(u64::MAX),
            ops: AtomicU64::new(0),
            fail_ops_at: AtomicU64::new(u64::MAX),
            fail_once_at: AtomicU64::new(u64::MAX),
            sync_delay_us: AtomicU64::new(0),
        }
    }
}

impl Faults {
    fn op(&self) -> io::Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_ops_at.load(Ordering::SeqCst) || n == self.fail_once_at.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected I/O failure"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemFile {
    data: Arc<Mutex<MemFileData>>,
    faults: Arc<Faults>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a test-model lock leaves plain bytes behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemStorage {
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// Number of successful `sync_data` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.faults.syncs.load(Ordering::SeqCst)
    }

    /// Number of mutating operations so far.
    pub fn op_count(&self) -> u64 {
        self.faults.ops.load(Ordering::SeqCst)
    }

    /// Makes every `sync_data` take this long, like a real disk.
    pub fn set_sync_delay(&self, d: std::time::Duration) {
        self.faults.sync_delay_us.store(d.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::SeqCst);
    }

    /// Makes every mutating operation fail once `n` more have succeeded
    /// (as redb's fuzzer backend does); `u64::MAX` disables.
    pub fn fail_ops_after(&self, n: u64) {
        self.faults.fail_ops_at.store(self.op_count().saturating_add(n), Ordering::SeqCst);
    }

    /// Makes only the mutating operation after the next `n` fail (a
    /// transient error such as EMFILE); `u64::MAX` disables.
    pub fn fail_one_op_after(&self, n: u64) {
        self.faults.fail_once_at.store(self.op_count().saturating_add(n), Ordering::SeqCst);
    }

    /// Makes every `sync_data` fail once `n` more have succeeded.
    pub fn fail_syncs_after(&self, n: u64) {
        self.faults.fail_sync_after.store(self.sync_count().saturating_add(n), Ordering::SeqCst);
    }

    /// The image a crash would leave. `torn(path, unsynced_len)` returns how
    /// many of the unsynced bytes of that file survive, and garbage to append.
    pub fn crash(&self, mut torn: impl FnMut(&Path, usize) -> (usize, Vec<u8>)) -> MemStorage {
        let st = lock(&self.state);
        let mut files = BTreeMap::new();
        for (p, f) in &st.files {
            let f = lock(f);
            let mut bytes = f.durable.clone();
            let common = f.durable.len().min(f.live.len());
            // Bytes beyond the durable length that were written since the last sync.
            if f.live.len() > f.durable.len() || f.live[..common] != f.durable[..common] {
                let extra = f.live.len().saturating_sub(common);
                let (keep, garbage) = torn(p, extra);
                bytes.truncate(common);
                bytes.extend_from_slice(&f.live[common..common + keep.min(extra)]);
                bytes.extend_from_slice(&garbage);
            }
            files.insert(p.clone(), Arc::new(Mutex::new(MemFileData { live: bytes.clone(), durable: bytes })));
        }
        MemStorage { state: Arc::new(Mutex::new(MemState { files, dirs: st.dirs.clone() })), faults: Arc::default() }
    }

    /// Overwrites bytes of a file (live and durable), to simulate media corruption.
    pub fn corrupt(&self, path: &Path, pos: usize, bytes: &[u8]) {
        if let Some(f) = lock(&self.state).files.get(path) {
            let mut f = lock(f);
            let f = &mut *f;
            for d in [&mut f.live, &mut f.durable] {
                if d.len() < pos + bytes.len() {
                    d.resize(pos + bytes.len(), 0);
                }
                d[pos..pos + bytes.len()].copy_from_slice(bytes);
            }
        }
    }

    /// Paths of all files.
    pub fn files(&self) -> Vec<PathBuf> {
        lock(&self.state).files.keys().cloned().collect()
    }
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", p.display()))
}

impl StorageFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).live.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let d = lock(&self.data);
        let start = usize::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = d.live.get(start..start + buf.len()).ok_or(io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.faults.op()?;
        let mut d = lock(&self.data);
        let start = pos as usize;
        if d.live.len() < start + buf.len() {
            d.live.resize(start + buf.len(), 0);
        }
        d.live[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.op()?;
        lock(&self.data).live.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.faults.syncs.load(Ordering::SeqCst) >= self.faults.fail_sync_after.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.faults.op()?;
        let delay = self.faults.sync_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
        let mut d = lock(&self.data);
        d.durable = d.live.clone();
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.faults.op()?;
        let mut st = lock(&self.state);
        for a in path.ancestors() {
            st.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = lock(&self.state);
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        let mut out = BTreeSet::new();
        for p in st.files.keys().chain(st.dirs.iter()) {
            if p.parent() == Some(path) {
                if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                    out.insert(n.to_string());
                }
            }
        }
        Ok(out.into_iter().collect())
    }
    fn is_dir(&self, path: &Path) -> bool {
        lock(&self.state).dirs.contains(path)
    }
    fn exists(&self, path: &Path) -> bool {
        let st = lock(&self.state);
        st.dirs.contains(path) || st.files.contains_key(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = lock(&self.state);
        let data = match st.files.get(path) {
            Some(d) => d.clone(),
            None if create => {
                self.faults.op()?;
                let d = Arc::new(Mutex::new(MemFileData::default()));
                st.files.insert(path.to_path_buf(), d.clone());
                d
            }
            None => return Err(not_found(path)),
        };
        Ok(Arc::new(MemFile { data, faults: self.faults.clone() }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.faults.op()?;
        lock(&self.state).files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.faults.op()?;
        let mut st = lock(&self.state);
        st.files.retain(|p, _| !p.starts_with(path));
        st.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.faults.op()?;
        let mut st = lock(&self.state);
        if let Some(f) = st.files.remove(from) {
            st.files.insert(to.to_path_buf(), f);
            return Ok(());
        }
        if st.dirs.contains(from) {
            let moved_files: Vec<_> = st.files.keys().filter(|p| p.starts_with(from)).cloned().collect();
            for p in moved_files {
                if let (Some(f), Ok(rest)) = (st.files.remove(&p), p.strip_prefix(from)) {
                    st.files.insert(to.join(rest), f);
                }
            }
            let moved_dirs: Vec<_> = st.dirs.iter().filter(|p| p.starts_with(from)).cloned().collect();
            for p in moved_dirs {
                st.dirs.remove(&p);
                if let Ok(rest) = p.strip_prefix(from) {
                    st.dirs.insert(to.join(rest));
                }
            }
            return Ok(());
        }
        Err(not_found(from))
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.faults.op()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mem_crash_keeps_durable_and_tears_rest() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("/d")).unwrap();
        let f = s.open(Path::new("/d/a"), true).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b" world", 5).unwrap();
        let c = s.crash(|_, n| (n / 2, vec![0xff]));
        let g = c.open(Path::new("/d/a"), false).unwrap();
        let mut buf = vec![0; g.len().unwrap() as usize];
        g.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, b"hello wo\xff");
        assert_eq!(c.list_dir(Path::new("/d")).unwrap(), vec!["a"]);
    }

    #[test]
    fn injected_sync_failure() {
        let s = MemStorage::new();
        let f = s.open(Path::new("/x"), true).unwrap();
        s.fail_syncs_after(1);
        f.sync_data().unwrap();
        assert!(f.sync_data().is_err());
    }
}
