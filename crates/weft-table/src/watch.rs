//! Watchers: replay stored history from the start revision, then follow live
//! writes, with nothing lost or repeated at the hand-off.
//!
//! A watcher pulls history in batches of at most `watch_buffer_events`
//! (under the table lock, up to the durable revision). When a batch reaches
//! the durable revision it registers for live events *under the same lock*:
//! the writer publishes a revision's events and advances the durable
//! revision under that lock too, so every revision is either in the last
//! history batch or in the live channel, never both, never neither.
//!
//! Live events go through a bounded tokio channel. The writer never waits
//! for a watcher: when the channel is full the watcher is cancelled and,
//! after the events already buffered, gets `SlowWatcher`, so memory per
//! watcher stays bounded (etcd cancels slow watchers similarly).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::state::KeySet;
use crate::table::Core;
use crate::types::{Event, Revision};

/// The writer's side of a live watcher.
pub(crate) struct LiveWatcher {
    pub(crate) tx: mpsc::Sender<Event>,
    pub(crate) set: KeySet,
    pub(crate) prev_kv: bool,
    /// Events before this revision are not sent (a start revision in the future).
    pub(crate) from_rev: Revision,
    /// Set before the sender is dropped for a full buffer.
    pub(crate) slow: Arc<AtomicBool>,
}

/// A stream of events for one `WatchSpec`. Dropping it stops the watch.
pub struct Watcher {
    core: Arc<Core>,
    id: u64,
    set: KeySet,
    prev_kv: bool,
    /// Next revision to read from history (while catching up).
    next_rev: Revision,
    buffered: VecDeque<Event>,
    live: Option<mpsc::Receiver<Event>>,
    slow: Arc<AtomicBool>,
    ended: bool,
}

impl Watcher {
    pub(crate) fn new(core: Arc<Core>, id: u64, set: KeySet, prev_kv: bool, start: Revision) -> Self {
        Watcher {
            core,
            id,
            set,
            prev_kv,
            next_rev: start,
            buffered: VecDeque::new(),
            live: None,
            slow: Arc::new(AtomicBool::new(false)),
            ended: false,
        }
    }

    /// This watcher's id (unique per table while the table is open).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event, in revision order. Errors end the watch: `Compacted`
    /// (history needed for catching up was compacted away), `SlowWatcher`,
    /// `Dropped` (the table was dropped). Cancel-safe: dropping the future
    /// loses no event.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(e) = self.buffered.pop_front() {
                self.core.stats.events_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(e);
            }
            if self.ended {
                return Err(self.end_reason());
            }
            if let Some(rx) = &mut self.live {
                match rx.recv().await {
                    Some(e) => {
                        self.core.stats.events_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok(e);
                    }
                    None => {
                        self.ended = true;
                        return Err(self.end_reason());
                    }
                }
            }
            self.catch_up()?;
        }
    }

    fn end_reason(&self) -> Error {
        if self.slow.load(Ordering::Acquire) {
            Error::SlowWatcher { buffer: self.buffer() }
        } else {
            Error::Dropped(self.core.name.clone())
        }
    }

    fn buffer(&self) -> usize {
        self.core.limits.watch_buffer_events.clamp(1, 1 << 20) as usize
    }

    /// One batch of history; registers live once history reaches the durable revision.
    fn catch_up(&mut self) -> Result<()> {
        let buffer = self.buffer();
        let mut sh = self.core.lock();
        // Checked under the lock: a drop sets the flag, then clears the live
        // watchers under the lock, so a watcher registering after that sees it.
        if self.core.dropped.load(Ordering::Acquire) {
            self.ended = true;
            return Err(Error::Dropped(self.core.name.clone()));
        }
        if let Err(e) = sh.state.watch_check(self.next_rev) {
            self.ended = true;
            return Err(e);
        }
        let durable = sh.durable;
        let (events, next) = sh.state.events_between(self.next_rev, durable, &self.set, self.prev_kv, buffer);
        self.next_rev = next;
        self.buffered.extend(events);
        if next > durable {
            let (tx, rx) = mpsc::channel(buffer);
            sh.watchers.insert(
                self.id,
                LiveWatcher {
                    tx,
                    set: self.set.clone(),
                    prev_kv: self.prev_kv,
                    from_rev: self.next_rev,
                    slow: self.slow.clone(),
                },
            );
            self.live = Some(rx);
        }
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut sh = self.core.lock();
        sh.watchers.remove(&self.id);
        sh.watcher_count = sh.watcher_count.saturating_sub(1);
    }
}
