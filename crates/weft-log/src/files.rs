//! A bounded cache of open segment files, shared by every partition of a
//! log: at most `max_open_files` file descriptors stay open (least recently
//! used closed first), so a node with thousands of segments does not run
//! out of descriptors (EMFILE). A segment file is opened again on demand.
//!
//! Handles handed out are `Arc`s: an evicted file stays open until the
//! read or write that holds it finishes, so the bound is `max_open_files`
//! plus the handles of calls in flight. Reads and writes hold a handle
//! only for one synchronous call; fsyncs, which run on blocking threads,
//! take a permit of [`OpenFiles::sync_permits`] first (a quarter of the
//! bound, at most 64), so the total stays near `max_open_files`.
//!
//! Durability across eviction: a handle that was written since its last
//! fsync ("dirty") is fsynced before it is closed, and a failure of that
//! fsync is remembered and returned by the next [`OpenFiles::sync`] of the
//! same path, so the owner still learns about it (a closed descriptor must
//! never swallow a write-back error: the fsync-failure lesson).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Storage, StorageFile};

/// Counters of the open-file cache (stats `log.open_files`, `log.open_files_max`,
/// `log.file_cache_hits`, `log.file_cache_misses`, `log.file_cache_evictions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileCacheStats {
    /// Files the cache holds open now.
    pub open: usize,
    /// The bound (`log_store.max_open_files`).
    pub max_open: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

#[derive(Debug)]
struct Entry {
    file: Arc<dyn StorageFile>,
    tick: u64,
    /// Written since the last fsync through the cache.
    dirty: bool,
}

#[derive(Debug, Default)]
struct State {
    tick: u64,
    /// Keyed by the path's bytes: `Path`'s own hash parses components and
    /// cost more than the rest of an append's trip through the cache. The
    /// paths come from this crate, always spelled the same way.
    by_path: HashMap<OsString, Entry>,
    /// tick -> path: the least recently used entry first.
    lru: BTreeMap<u64, PathBuf>,
    /// Fsync failures of evicted handles, reported by the next `sync` of the path.
    sync_errors: HashMap<PathBuf, String>,
}

/// The open-file cache. See the module docs.
#[derive(Debug)]
pub struct OpenFiles {
    storage: Arc<dyn Storage>,
    max_open: usize,
    state: Mutex<State>,
    /// Fsyncs in flight (each holds a descriptor on a blocking thread).
    pub sync_permits: tokio::sync::Semaphore,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// Storage failures of the partitions sharing this cache (for `Log::health`).
    last_error: Mutex<Option<String>>,
    poisonings: AtomicU64,
    recoveries: AtomicU64,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The maps stay consistent between statements; a panic elsewhere cannot tear them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OpenFiles {
    /// A cache keeping at most `max_open` files open (at least 1).
    pub fn new(storage: Arc<dyn Storage>, max_open: usize) -> Self {
        OpenFiles {
            storage,
            max_open: max_open.max(1),
            state: Mutex::new(State::default()),
            sync_permits: tokio::sync::Semaphore::new((max_open / 4).clamp(1, 64)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            last_error: Mutex::new(None),
            poisonings: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        }
    }

    /// A partition was poisoned by `cause`.
    pub fn note_poisoned(&self, cause: &str) {
        self.poisonings.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause.to_string());
    }

    /// A poisoned partition was reopened and takes writes again.
    pub fn note_recovered(&self) {
        self.recoveries.fetch_add(1, Ordering::Relaxed);
    }

    /// (last storage failure, partitions poisoned so far, recoveries so far).
    pub fn storage_errors(&self) -> (Option<String>, u64, u64) {
        let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (last, self.poisonings.load(Ordering::Relaxed), self.recoveries.load(Ordering::Relaxed))
    }

    pub fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    pub fn storage_arc(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }

    /// The open handle of an existing file (opened if not cached).
    pub fn get(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.handle(path, false, false)
    }

    /// Like [`OpenFiles::get`], for a write: the handle is fsynced before it is evicted.
    pub fn get_for_write(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.handle(path, false, true)
    }

    /// Opens (creating it if missing) a file for writing.
    pub fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.handle(path, true, true)
    }

    fn handle(&self, path: &Path, create: bool, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut victims = Vec::new();
        let file = {
            let mut st = lock(&self.state);
            st.tick += 1;
            let tick = st.tick;
            let st = &mut *st;
            if let Some(e) = st.by_path.get_mut(path.as_os_str()) {
                // Every append comes here: move the LRU entry's path to the
                // new tick instead of allocating a copy of it.
                let p = st.lru.remove(&e.tick).unwrap_or_else(|| path.to_path_buf());
                e.tick = tick;
                e.dirty |= write;
                st.lru.insert(tick, p);
                self.hits.fetch_add(1, Ordering::Relaxed);
                e.file.clone()
            } else {
                self.misses.fetch_add(1, Ordering::Relaxed);
                // Make room first, so the open below never exceeds the bound.
                while st.by_path.len() >= self.max_open {
                    let Some((_, victim)) = st.lru.pop_first() else { break };
                    if let Some(e) = st.by_path.remove(victim.as_os_str()) {
                        self.evictions.fetch_add(1, Ordering::Relaxed);
                        if e.dirty {
                            victims.push((victim, e.file));
                        }
                    }
                }
                // Opened under the lock: two callers must not open the same path twice.
                let file = self.storage.open(path, create)?;
                st.by_path.insert(path.as_os_str().to_owned(), Entry { file: file.clone(), tick, dirty: write });
                st.lru.insert(tick, path.to_path_buf());
                file
            }
        };
        // Dirty victims are fsynced outside the lock (it may take a while);
        // a failure is kept for the owner's next sync of that path.
        for (path, f) in victims {
            if let Err(e) = f.sync_data() {
                tracing::error!(path = %path.display(), error = %e, "fsync of an evicted segment file failed");
                lock(&self.state).sync_errors.insert(path, e.to_string());
            }
        }
        Ok(file)
    }

    /// Fsyncs a file's data (reopening it if it was evicted). Fails with an
    /// earlier fsync failure of an evicted handle of the same path, if any.
    pub fn sync(&self, path: &Path) -> io::Result<()> {
        if let Some(e) = lock(&self.state).sync_errors.remove(path) {
            return Err(io::Error::other(format!("an earlier fsync of this file failed: {e}")));
        }
        let file = self.get(path)?;
        if let Some(e) = lock(&self.state).by_path.get_mut(path.as_os_str()) {
            // Cleared before the fsync: a write racing with it sets it again.
            e.dirty = false;
        }
        file.sync_data()
    }

    /// Closes the cached handle of a file that was removed or replaced (a
    /// rename over it): the next access opens the new file.
    pub fn forget(&self, path: &Path) {
        let mut st = lock(&self.state);
        if let Some(e) = st.by_path.remove(path.as_os_str()) {
            st.lru.remove(&e.tick);
        }
        st.sync_errors.remove(path);
    }

    /// [`OpenFiles::forget`] for every file under a directory.
    pub fn forget_under(&self, dir: &Path) {
        let mut st = lock(&self.state);
        let gone: Vec<OsString> = st.by_path.keys().filter(|p| Path::new(p.as_os_str()).starts_with(dir)).cloned().collect();
        for p in gone {
            if let Some(e) = st.by_path.remove(&p) {
                st.lru.remove(&e.tick);
            }
        }
        st.sync_errors.retain(|p, _| !p.starts_with(dir));
    }

    pub fn stats(&self) -> FileCacheStats {
        FileCacheStats {
            open: lock(&self.state).by_path.len(),
            max_open: self.max_open,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn bounded_lru_with_dirty_sync_on_evict() {
        let s = MemStorage::new();
        let c = OpenFiles::new(Arc::new(s.clone()), 2);
        let (a, b, d) = (Path::new("/a"), Path::new("/b"), Path::new("/d"));
        c.create(a).unwrap().write_all_at(b"aa", 0).unwrap();
        c.create(b).unwrap();
        c.sync(b).unwrap(); // b is clean now
        c.get(a).unwrap(); // a is now the most recent
        let syncs = s.sync_count();
        c.create(d).unwrap(); // evicts b (clean): no fsync
        assert_eq!(s.sync_count(), syncs);
        assert_eq!(c.stats(), FileCacheStats { open: 2, max_open: 2, hits: 2, misses: 3, evictions: 1 });
        c.get(b).unwrap(); // evicts a (dirty): fsynced first
        assert_eq!(s.sync_count(), syncs + 1);
        // A failed fsync on eviction is reported by the next sync of that path.
        c.get_for_write(d).unwrap();
        c.get(a).unwrap(); // evicts b (clean)
        s.fail_syncs_after(0);
        c.get(b).unwrap(); // evicts d (dirty): the fsync fails
        s.fail_syncs_after(u64::MAX - s.sync_count());
        assert!(c.sync(d).is_err());
        c.sync(d).unwrap();
        c.forget(d); // {b, d} -> {b}
        assert_eq!(c.stats().open, 1);
    }
}
