//! An LRU cache for handlers, bounded by entries and by bytes, with a TTL.
//! Thread-safe (one mutex); values are cloned out, so keep them cheap to clone
//! (`Arc`, `Bytes`).

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Entries older than this are misses (None: no expiry).
    pub ttl: Option<Duration>,
}

struct Entry<V> {
    value: V,
    bytes: usize,
    expires: Option<Instant>,
}

struct Inner<K: Hash + Eq, V> {
    map: lru::LruCache<K, Entry<V>>,
    bytes: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// Hit/miss counters and sizes, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

pub struct Cache<K: Hash + Eq, V> {
    limits: CacheLimits,
    inner: Mutex<Inner<K, V>>,
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    pub fn new(limits: CacheLimits) -> Self {
        let limits = CacheLimits { max_entries: limits.max_entries.max(1), ..limits };
        // The entry bound is enforced by `lru` itself; bytes by us.
        let cap = NonZeroUsize::new(limits.max_entries).unwrap_or(NonZeroUsize::MIN);
        Self { limits, inner: Mutex::new(Inner { map: lru::LruCache::new(cap), bytes: 0, hits: 0, misses: 0, evictions: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.get_at(key, Instant::now())
    }

    pub fn get_at(&self, key: &K, now: Instant) -> Option<V> {
        let mut g = self.lock();
        let expired = match g.map.get(key) {
            Some(e) if e.expires.is_none_or(|t| t > now) => {
                let v = e.value.clone();
                g.hits += 1;
                return Some(v);
            }
            Some(_) => true,
            None => false,
        };
        if expired && let Some(e) = g.map.pop(key) {
            g.bytes -= e.bytes;
        }
        g.misses += 1;
        None
    }

    /// Insert `value` weighing `bytes`. A value over the byte bound is not
    /// cached (it would evict everything and then itself).
    pub fn insert(&self, key: K, value: V, bytes: usize) {
        self.insert_at(key, value, bytes, Instant::now())
    }

    pub fn insert_at(&self, key: K, value: V, bytes: usize, now: Instant) {
        if bytes > self.limits.max_bytes {
            return;
        }
        let mut g = self.lock();
        let expires = self.limits.ttl.map(|t| now + t);
        if let Some(old) = g.map.pop(&key) {
            g.bytes -= old.bytes;
        }
        while g.bytes + bytes > self.limits.max_bytes {
            match g.map.pop_lru() {
                Some((_, e)) => {
                    g.bytes -= e.bytes;
                    g.evictions += 1;
                }
                None => break,
            }
        }
        if let Some((_, e)) = g.map.push(key, Entry { value, bytes, expires }) {
            // `push` returns the evicted LRU entry when at the entry bound.
            g.bytes -= e.bytes;
            g.evictions += 1;
        }
        g.bytes += bytes;
    }

    pub fn remove(&self, key: &K) -> Option<V> {
        let mut g = self.lock();
        let e = g.map.pop(key)?;
        g.bytes -= e.bytes;
        Some(e.value)
    }

    pub fn clear(&self) {
        let mut g = self.lock();
        g.map.clear();
        g.bytes = 0;
    }

    pub fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats { entries: g.map.len(), bytes: g.bytes, hits: g.hits, misses: g.misses, evictions: g.evictions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_entries_bytes_and_ttl() {
        let c = Cache::new(CacheLimits { max_entries: 3, max_bytes: 100, ttl: Some(Duration::from_secs(10)) });
        let t0 = Instant::now();
        c.insert_at(1, "a", 10, t0);
        c.insert_at(2, "b", 10, t0);
        c.insert_at(3, "c", 10, t0);
        assert_eq!(c.get_at(&1, t0), Some("a"));
        c.insert_at(4, "d", 10, t0); // entry bound: 2 is least recently used
        assert_eq!(c.get_at(&2, t0), None);
        c.insert_at(5, "e", 85, t0); // byte bound: evicts 3 then 1 until it fits
        assert_eq!(c.stats().bytes, 95);
        assert_eq!(c.stats().entries, 2);
        assert_eq!(c.get_at(&1, t0), None);
        c.insert_at(6, "f", 101, t0); // over the byte bound: not cached
        assert_eq!(c.get_at(&6, t0), None);
        assert_eq!(c.get_at(&5, t0 + Duration::from_secs(9)), Some("e"));
        assert_eq!(c.get_at(&5, t0 + Duration::from_secs(10)), None);
        assert_eq!(c.stats().bytes, 10);
        c.insert_at(7, "g", 1, t0);
        c.insert_at(7, "h", 2, t0);
        assert_eq!(c.stats().bytes, 12);
        assert_eq!(c.remove(&7), Some("h"));
    }
}
