//! Limits on what connections may cost the server: a bounded number of
//! open connections, and budgets of buffered bytes per connection and
//! across all connections.
//!
//! A frame's bytes are reserved, at the size its header declares, before
//! they are read, and released when its request has been handled. A frame
//! that fits no budget even when empty is refused `too_large` (see
//! [`Budgets::max_frame`]); one that fits but not now waits, and the
//! connection stops reading meanwhile (TCP back-pressure). Reserving the
//! whole frame at once (not chunk by chunk) means a connection holding a
//! reservation can always finish its frame: budgets never deadlock on
//! half-read frames.
//!
//! Frames over [`SMALL_FRAME_BYTES`] may take at most three quarters of the
//! global budget: the last quarter is kept for small frames, so while
//! large uploads fill the budget, hellos, pings and ordinary requests
//! still get through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::ServerStats;

/// Frames up to this size may use the whole global budget; larger ones
/// three quarters of it.
pub const SMALL_FRAME_BYTES: usize = 64 * 1024;

/// Semaphore permits are counted in `u32`; budgets above 4 GiB are treated
/// as 4 GiB.
fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The global budget and the connection-count limit of one server.
pub(crate) struct Budgets {
    global: Arc<Semaphore>,
    /// The share of `global` that large frames may hold.
    large: Arc<Semaphore>,
    global_max: usize,
    large_max: usize,
    per_conn_max: usize,
    open: Arc<AtomicUsize>,
    /// Reloadable (`Server::set_limits`): checked at each accept.
    max_connections: AtomicUsize,
    stats: Arc<ServerStats>,
}

impl Budgets {
    pub(crate) fn new(global_max: usize, per_conn_max: usize, max_connections: usize, stats: Arc<ServerStats>) -> Self {
        let global_max = global_max.clamp(1, u32::MAX as usize);
        let large_max = (global_max / 4 * 3).max(1);
        Self {
            global: Arc::new(Semaphore::new(global_max)),
            large: Arc::new(Semaphore::new(large_max)),
            global_max,
            large_max,
            per_conn_max: per_conn_max.clamp(1, u32::MAX as usize),
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: AtomicUsize::new(max_connections.max(1)),
            stats,
        }
    }

    /// The largest frame a connection can ever buffer.
    pub(crate) fn max_frame(&self, max_frame_bytes: usize) -> usize {
        let cap = if max_frame_bytes > SMALL_FRAME_BYTES { self.large_max.max(SMALL_FRAME_BYTES) } else { self.global_max };
        max_frame_bytes.min(self.per_conn_max).min(cap).min(self.global_max)
    }

    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    /// A lower limit refuses new connections only: open ones stay.
    pub(crate) fn set_max_connections(&self, max: usize) {
        self.max_connections.store(max.max(1), Ordering::Relaxed);
    }

    /// A connection slot, or None when `max_connections` are open (the
    /// refusal is counted here).
    pub(crate) fn open_connection(&self) -> Option<ConnSlot> {
        let mut n = self.open.load(Ordering::Relaxed);
        loop {
            if n >= self.max_connections() {
                self.stats.conn_refused_max.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.open.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.stats.conn_open.fetch_add(1, Ordering::Relaxed);
                    return Some(ConnSlot { open: self.open.clone(), stats: self.stats.clone() });
                }
                Err(now) => n = now,
            }
        }
    }

    /// A per-connection budget.
    pub(crate) fn connection(&self) -> ConnBudget {
        ConnBudget {
            own: Arc::new(Semaphore::new(self.per_conn_max)),
            global: self.global.clone(),
            large: self.large.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// Held while a connection is open; frees its slot when dropped.
pub(crate) struct ConnSlot {
    open: Arc<AtomicUsize>,
    stats: Arc<ServerStats>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.stats.conn_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection's budget, drawing on the global one.
pub(crate) struct ConnBudget {
    own: Arc<Semaphore>,
    global: Arc<Semaphore>,
    large: Arc<Semaphore>,
    stats: Arc<ServerStats>,
}

impl ConnBudget {
    /// Reserves `bytes` if both budgets have room now; `None` (nothing
    /// taken) when the caller would have to wait ([`ConnBudget::reserve`]).
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let n = permits(bytes);
        let own = self.own.clone().try_acquire_many_owned(n).ok()?;
        let large = if bytes > SMALL_FRAME_BYTES { Some(self.large.clone().try_acquire_many_owned(n).ok()?) } else { None };
        let global = self.global.clone().try_acquire_many_owned(n).ok()?;
        self.stats.buffer_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
        Some(Reservation { _own: own, _large: large, _global: global, bytes: u64::from(n), stats: self.stats.clone() })
    }

    /// Reserves `bytes` (at most [`Budgets::max_frame`], checked by the
    /// caller), waiting until both budgets have room. Cancel-safe: dropping
    /// the future releases whatever it had taken.
    pub(crate) async fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let n = permits(bytes);
        let is_large = bytes > SMALL_FRAME_BYTES;
        let immediate = self.own.available_permits() >= n as usize
            && self.global.available_permits() >= n as usize
            && (!is_large || self.large.available_permits() >= n as usize);
        if !immediate {
            self.stats.buffer_waits.fetch_add(1, Ordering::Relaxed);
        }
        // The connection's own budget first, so one connection waits on
        // itself before it queues for (and holds up) the shared one.
        let own = self.own.clone().acquire_many_owned(n).await.ok()?;
        let large = if is_large { Some(self.large.clone().acquire_many_owned(n).await.ok()?) } else { None };
        let global = self.global.clone().acquire_many_owned(n).await.ok()?;
        self.stats.buffer_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
        Some(Reservation { _own: own, _large: large, _global: global, bytes: u64::from(n), stats: self.stats.clone() })
    }
}

/// Bytes of one frame counted against the budgets until dropped.
pub(crate) struct Reservation {
    _own: OwnedSemaphorePermit,
    _large: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
    bytes: u64,
    stats: Arc<ServerStats>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.stats.buffer_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_release_on_drop() {
        let stats = Arc::new(ServerStats::default());
        let b = Budgets::new(100, 60, 2, stats.clone());
        assert_eq!(b.max_frame(1000), 60);
        let huge = Budgets::new(4 << 20, 64 << 20, 2, stats.clone());
        assert_eq!(huge.max_frame(16 << 20), 3 << 20, "large frames get three quarters");
        let c1 = b.connection();
        let c2 = b.connection();
        let r1 = c1.reserve(60).await.unwrap();
        assert_eq!(stats.buffer_bytes.load(Ordering::Relaxed), 60);
        // 60 + 50 > 100: the second connection waits until the first frees.
        let mut waiting = Box::pin(c2.reserve(50));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(r1);
        let r2 = waiting.await.unwrap();
        assert_eq!(stats.buffer_bytes.load(Ordering::Relaxed), 50);
        drop(r2);
        assert_eq!(stats.buffer_bytes.load(Ordering::Relaxed), 0);
        assert!(stats.buffer_waits.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn connection_slots_are_bounded_and_freed() {
        let stats = Arc::new(ServerStats::default());
        let b = Budgets::new(100, 100, 2, stats.clone());
        let a = b.open_connection().unwrap();
        let _b2 = b.open_connection().unwrap();
        assert!(b.open_connection().is_none());
        assert_eq!(stats.conn_refused_max.load(Ordering::Relaxed), 1);
        assert_eq!(stats.conn_open.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(stats.conn_open.load(Ordering::Relaxed), 1);
        assert!(b.open_connection().is_some());
    }
}
