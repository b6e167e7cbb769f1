//! The engine shared by queued endpoints and queued senders: a durable
//! incoming queue and error queue ([`Store`]), and a processing loop that
//! hands items to a worker with retries, back-off with jitter, a rate limit,
//! pause/resume, and (optionally) per-group ordering.
//!
//! Guarantee: at-least-once. An item leaves the incoming queue only after its
//! worker finished and the removal is fsync'd; a crash in between runs it again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use weft_net::Backoff;

use crate::error::QueueError;
use crate::store::{Item, Record, Store, Which};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What one attempt at an item came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: the item leaves the queue.
    Done,
    /// Failed; counts against `max_retries`, then the error queue.
    Failed(String),
    /// Failed for a reason that says nothing about the item (peer down,
    /// timeout, busy): retried with back-off, counted against
    /// `max_transient_retries` only.
    Transient(String),
    /// Can never succeed (e.g. refused by the peer as malformed): straight to
    /// the error queue.
    Fatal(String),
}

/// Does the work for one item.
pub type Worker = Arc<dyn Fn(Arc<Item>) -> BoxFuture<Outcome> + Send + Sync>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueOptions {
    /// Failed attempts retried before the item goes to the error queue
    /// (0: the first failure moves it).
    pub max_retries: u32,
    /// Delay before retry n: exponential, capped, with jitter.
    pub backoff: Backoff,
    /// Workers running at once.
    pub concurrency: usize,
    /// Keep items of one group key in order (an item waits while an earlier
    /// item of its group is running or backing off).
    pub sequenced: bool,
    /// Limits on what is queued (incoming + error); over them callers get
    /// `busy`.
    pub max_items: usize,
    pub max_bytes: u64,
    /// Attempts started per second (token bucket); None = unlimited.
    pub rate_per_s: Option<f64>,
    pub burst: u32,
    /// Transient failures tolerated per item before the error queue; None =
    /// retry for ever (a server that is down is waited for).
    pub max_transient_retries: Option<u32>,
    /// Items taken from the queue but not yet committed (running, or handled
    /// with their removal not yet fsync'd), at most; None = the manager's
    /// default ([`DEFAULT_MAX_UNCOMMITTED`] unless the node sets
    /// `queues.max_uncommitted`). Changeable at run time
    /// (`weft.queue.set`, [`WorkQueue::set_max_uncommitted`]).
    #[serde(default)]
    pub max_uncommitted: Option<usize>,
}

/// Default bound on items taken but not yet committed: far above the default
/// concurrency (1), so by default it only bounds removals waiting for a
/// shared fsync; lower it to hold back how much work is at risk of running
/// twice after a crash.
pub const DEFAULT_MAX_UNCOMMITTED: usize = 1000;
/// Largest accepted `max_uncommitted` (the default `max_items`).
pub const MAX_UNCOMMITTED_LIMIT: usize = 1_000_000;

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff: Backoff { initial_ms: 100, max_ms: 30_000, multiplier: 2.0 },
            concurrency: 1,
            sequenced: false,
            max_items: 1_000_000,
            max_bytes: 1 << 30,
            rate_per_s: None,
            burst: 1,
            max_transient_retries: None,
            max_uncommitted: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    Endpoint,
    Sender,
}

/// What `pause`/`resume` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PauseWhat {
    /// New requests are refused with `busy` (senders: nothing to refuse).
    Accepting,
    /// Queued items stay queued.
    Processing,
    All,
}

/// A queue's state, for management and statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    pub kind: QueueKind,
    pub accepting_paused: bool,
    pub processing_paused: bool,
    pub incoming: usize,
    pub errors: usize,
    pub in_flight: usize,
    pub bytes: u64,
    pub enqueued: u64,
    pub processed: u64,
    pub failed_attempts: u64,
    pub moved_to_error: u64,
    pub oldest_incoming_age_ms: u64,
    /// Items taken but not yet committed, and the bound on them.
    #[serde(default)]
    pub uncommitted: usize,
    #[serde(default)]
    pub max_uncommitted: usize,
}

/// One item as management shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemView {
    pub uid: String,
    pub queue: Which,
    pub attempts: u32,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub enqueued_ms: u64,
    pub request: serde_json::Value,
}

impl ItemView {
    pub fn of(item: &Item) -> Self {
        Self {
            uid: item.uid.clone(),
            queue: item.which,
            attempts: item.attempts,
            reason: item.reason.clone(),
            group: item.group.clone(),
            enqueued_ms: item.enqueued_ms,
            request: serde_json::from_slice(&item.body).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: rate.max(1e-6), burst, tokens: burst, last: now }
    }

    /// Take a token, or say how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[derive(Default)]
struct Runtime {
    in_flight: HashSet<u64>,
    /// Handled, removal not yet on disk: not picked again, but no longer
    /// holding a concurrency slot (so removals batch into shared fsyncs).
    done: HashSet<u64>,
    not_before: HashMap<u64, Instant>,
    transient: HashMap<u64, u32>,
    bucket: Option<TokenBucket>,
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    processed: AtomicU64,
    failed_attempts: AtomicU64,
    moved_to_error: AtomicU64,
}

/// A durable queue with its processing loop.
pub struct WorkQueue {
    name: String,
    kind: QueueKind,
    store: Store,
    opts: QueueOptions,
    accepting_paused: AtomicBool,
    processing_paused: AtomicBool,
    max_uncommitted: AtomicUsize,
    rt: Mutex<Runtime>,
    counters: Counters,
    wake: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WorkQueue {
    /// Open the queue's log at `path` and start processing with `worker`.
    /// Needs a tokio runtime.
    pub fn start(name: &str, kind: QueueKind, path: &std::path::Path, opts: QueueOptions, worker: Worker) -> Result<Arc<Self>, QueueError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| QueueError::NoRuntime)?;
        let (store, _recovery) = Store::open(path)?;
        let bucket = opts.rate_per_s.map(|r| TokenBucket::new(r, opts.burst, Instant::now()));
        let max_uncommitted = opts.max_uncommitted.unwrap_or(DEFAULT_MAX_UNCOMMITTED).clamp(1, MAX_UNCOMMITTED_LIMIT);
        let q = Arc::new(WorkQueue {
            name: name.to_owned(),
            kind,
            store,
            opts,
            accepting_paused: AtomicBool::new(false),
            processing_paused: AtomicBool::new(false),
            max_uncommitted: AtomicUsize::new(max_uncommitted),
            rt: Mutex::new(Runtime { bucket, ..Runtime::default() }),
            counters: Counters::default(),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let me = q.clone();
        q.tasks.spawn_on(me.run(worker), &handle);
        Ok(q)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn kind(&self) -> QueueKind {
        self.kind
    }
    pub fn options(&self) -> &QueueOptions {
        &self.opts
    }

    /// Make a request durable and return its uid. A uid already queued
    /// (incoming or error) is not queued twice.
    pub async fn enqueue(&self, uid: String, group: Option<String>, body: Bytes) -> Result<String, QueueError> {
        if self.accepting_paused.load(Ordering::SeqCst) {
            return Err(QueueError::Paused(self.name.clone()));
        }
        if self.stop.is_cancelled() {
            return Err(QueueError::Stopped(self.name.clone()));
        }
        if uid.len() > 1024 || group.as_ref().is_some_and(|g| g.len() > 1024) {
            return Err(QueueError::BadRequest { route: self.name.clone(), reason: "uid and group key are at most 1024 bytes".into() });
        }
        {
            let st = self.store.state();
            if st.find_uid(&uid).is_some() {
                return Ok(uid);
            }
            if st.len() >= self.opts.max_items || st.live_bytes + body.len() as u64 > self.opts.max_bytes {
                return Err(QueueError::Full { name: self.name.clone(), items: st.len(), bytes: st.live_bytes });
            }
        }
        let item = Item {
            seq: self.store.next_seq(),
            which: Which::Incoming,
            uid: uid.clone(),
            group,
            attempts: 0,
            reason: String::new(),
            body,
            enqueued_ms: now_ms(),
        };
        self.store.commit(vec![Record::Put(Arc::new(item))]).await?;
        self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
        Ok(uid)
    }

    pub fn pause(&self, what: PauseWhat) {
        if matches!(what, PauseWhat::Accepting | PauseWhat::All) {
            self.accepting_paused.store(true, Ordering::SeqCst);
        }
        if matches!(what, PauseWhat::Processing | PauseWhat::All) {
            self.processing_paused.store(true, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    pub fn resume(&self, what: PauseWhat) {
        if matches!(what, PauseWhat::Accepting | PauseWhat::All) {
            self.accepting_paused.store(false, Ordering::SeqCst);
        }
        if matches!(what, PauseWhat::Processing | PauseWhat::All) {
            self.processing_paused.store(false, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    /// Change how many items may be taken but not yet committed (1 to
    /// [`MAX_UNCOMMITTED_LIMIT`]); takes effect at the next pick (items
    /// already taken are not given back).
    pub fn set_max_uncommitted(&self, n: usize) -> Result<(), QueueError> {
        if !(1..=MAX_UNCOMMITTED_LIMIT).contains(&n) {
            return Err(QueueError::Invalid {
                name: self.name.clone(),
                reason: format!("max_uncommitted must be 1 to {MAX_UNCOMMITTED_LIMIT} (pause processing to take nothing)"),
            });
        }
        let old = self.max_uncommitted.swap(n, Ordering::SeqCst);
        tracing::info!(queue = %self.name, old, new = n, "max_uncommitted changed");
        self.wake.notify_one();
        Ok(())
    }

    pub fn max_uncommitted(&self) -> usize {
        self.max_uncommitted.load(Ordering::SeqCst)
    }

    pub fn info(&self) -> QueueInfo {
        let (incoming, errors, bytes, oldest) = {
            let st = self.store.state();
            let oldest = st.incoming.values().next().map(|i| now_ms().saturating_sub(i.enqueued_ms)).unwrap_or(0);
            (st.incoming.len(), st.errors.len(), st.live_bytes, oldest)
        };
        let (rt_in_flight, uncommitted) = {
            let rt = lock(&self.rt);
            (rt.in_flight.len(), rt.in_flight.len() + rt.done.len())
        };
        QueueInfo {
            name: self.name.clone(),
            kind: self.kind,
            accepting_paused: self.accepting_paused.load(Ordering::SeqCst),
            processing_paused: self.processing_paused.load(Ordering::SeqCst),
            incoming,
            errors,
            in_flight: rt_in_flight,
            bytes,
            enqueued: self.counters.enqueued.load(Ordering::Relaxed),
            processed: self.counters.processed.load(Ordering::Relaxed),
            failed_attempts: self.counters.failed_attempts.load(Ordering::Relaxed),
            moved_to_error: self.counters.moved_to_error.load(Ordering::Relaxed),
            oldest_incoming_age_ms: oldest,
            uncommitted,
            max_uncommitted: self.max_uncommitted(),
        }
    }

    /// Uids of the first `n` items of the error queue, oldest first.
    pub fn first_errors(&self, n: usize) -> Vec<String> {
        self.store.state().errors.values().take(n).map(|i| i.uid.clone()).collect()
    }

    /// The queued item with this uid (incoming or error).
    pub fn inspect(&self, uid: &str) -> Option<ItemView> {
        self.store.state().find_uid(uid).map(|i| ItemView::of(i))
    }

    fn error_item(&self, uid: &str) -> Option<Arc<Item>> {
        self.store.state().find_uid(uid).filter(|i| i.which == Which::Error).cloned()
    }

    /// Remove an item from the error queue and return it.
    pub async fn pop_error(&self, uid: &str) -> Result<Option<ItemView>, QueueError> {
        let Some(item) = self.error_item(uid) else { return Ok(None) };
        self.store.commit(vec![Record::Del(item.seq)]).await?;
        Ok(Some(ItemView::of(&item)))
    }

    /// Move one error item back to the incoming queue with its retries reset.
    pub async fn reprocess(&self, uid: &str) -> Result<Option<ItemView>, QueueError> {
        let Some(item) = self.error_item(uid) else { return Ok(None) };
        let view = ItemView::of(&item);
        self.store.commit(vec![Record::Put(Arc::new(Self::revived(&item)))]).await?;
        self.forget(item.seq);
        Ok(Some(view))
    }

    /// Move every error item back to the incoming queue; returns how many.
    pub async fn reprocess_all(&self) -> Result<usize, QueueError> {
        let items: Vec<Arc<Item>> = self.store.state().errors.values().cloned().collect();
        for chunk in items.chunks(1024) {
            let records = chunk.iter().map(|i| Record::Put(Arc::new(Self::revived(i)))).collect();
            self.store.commit(records).await?;
            for i in chunk {
                self.forget(i.seq);
            }
        }
        Ok(items.len())
    }

    /// Drop every error item; returns how many.
    pub async fn clear_errors(&self) -> Result<usize, QueueError> {
        let seqs: Vec<u64> = self.store.state().errors.keys().copied().collect();
        for chunk in seqs.chunks(4096) {
            self.store.commit(chunk.iter().map(|s| Record::Del(*s)).collect()).await?;
        }
        Ok(seqs.len())
    }

    fn revived(item: &Item) -> Item {
        Item { which: Which::Incoming, attempts: 0, reason: String::new(), ..item.clone() }
    }

    fn forget(&self, seq: u64) {
        let mut rt = lock(&self.rt);
        rt.not_before.remove(&seq);
        rt.transient.remove(&seq);
    }

    /// Stop the loop and wait (up to `drain`) for running workers.
    pub async fn shutdown(&self, drain: Duration) -> bool {
        self.stop.cancel();
        self.tasks.close();
        tokio::time::timeout(drain, self.tasks.wait()).await.is_ok()
    }

    /// Wait until the incoming queue is empty and nothing runs (tests,
    /// graceful drains). False on timeout.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let idle = self.store.state().incoming.is_empty() && {
                let rt = lock(&self.rt);
                rt.in_flight.is_empty() && rt.done.is_empty()
            };
            if idle {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Pick what may start now; returns the items and when to look again.
    fn pick(&self, now: Instant) -> (Vec<Arc<Item>>, Option<Instant>) {
        let st = self.store.state();
        let mut rt = lock(&self.rt);
        let mut picked = vec![];
        let mut wake: Option<Instant> = None;
        // Taken but not committed: running, or handled with the removal not
        // yet on disk; bounded by max_uncommitted as well as concurrency.
        let uncommitted = rt.in_flight.len() + rt.done.len();
        let slots = self
            .opts
            .concurrency
            .max(1)
            .saturating_sub(rt.in_flight.len())
            .min(self.max_uncommitted().saturating_sub(uncommitted));
        if slots == 0 {
            return (picked, None);
        }
        let mut blocked: HashSet<&str> = HashSet::new();
        for (seq, item) in &st.incoming {
            if picked.len() >= slots {
                break;
            }
            let group = item.group.as_deref().filter(|_| self.opts.sequenced);
            let waiting = rt.not_before.get(seq).copied().filter(|t| *t > now);
            if rt.done.contains(seq) {
                continue;
            }
            if rt.in_flight.contains(seq) || waiting.is_some() {
                if let Some(t) = waiting {
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                }
                if let Some(g) = group {
                    blocked.insert(g);
                }
                continue;
            }
            if let Some(g) = group
                && !blocked.insert(g)
            {
                continue;
            }
            if let Some(bucket) = rt.bucket.as_mut()
                && let Err(wait) = bucket.try_take(now)
            {
                let t = now + wait;
                wake = Some(wake.map_or(t, |w| w.min(t)));
                break;
            }
            rt.in_flight.insert(*seq);
            picked.push(item.clone());
        }
        (picked, wake)
    }

    async fn run(self: Arc<Self>, worker: Worker) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            // Register interest before looking, so a change between the look
            // and the wait is not missed.
            let changed = self.store.changed().notified();
            let woken = self.wake.notified();
            let (picked, wake_at) = if self.processing_paused.load(Ordering::SeqCst) {
                (vec![], None)
            } else {
                self.pick(Instant::now())
            };
            if !picked.is_empty() {
                for item in picked {
                    let me = self.clone();
                    let worker = worker.clone();
                    self.tasks.spawn(async move {
                        let uid = item.uid.clone();
                        // A panic in the worker is caught by its own task and
                        // becomes a failed attempt; the loop never sees it.
                        let outcome = match tokio::spawn(worker(item.clone())).await {
                            Ok(o) => o,
                            Err(e) if e.is_panic() => {
                                let p = e.into_panic();
                                let what = p
                                    .downcast_ref::<&str>()
                                    .map(|s| s.to_string())
                                    .or_else(|| p.downcast_ref::<String>().cloned())
                                    .unwrap_or_else(|| "panic".into());
                                warn!(queue = %me.name, uid = %uid, panic = %what, "handler panicked");
                                Outcome::Failed(format!("handler panicked: {what}"))
                            }
                            Err(_) => Outcome::Transient("handler task cancelled".into()),
                        };
                        me.finish(item, outcome).await;
                    });
                }
                continue;
            }
            let sleep_for = wake_at.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = changed => {}
                _ = woken => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    async fn finish(&self, item: Arc<Item>, outcome: Outcome) {
        let seq = item.seq;
        let moved = |reason: String, attempts: u32| Item { which: Which::Error, attempts, reason, ..(*item).clone() };
        let (record, retry_after, to_error) = match outcome {
            Outcome::Done => (Record::Del(seq), None, false),
            Outcome::Failed(reason) => {
                self.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let attempts = item.attempts.saturating_add(1);
                if attempts > self.opts.max_retries {
                    (Record::Put(Arc::new(moved(reason, attempts))), None, true)
                } else {
                    debug!(queue = %self.name, uid = %item.uid, attempts, reason = %reason, "attempt failed; will retry");
                    let delay = self.opts.backoff.delay(attempts - 1, rand::thread_rng().r#gen::<f64>());
                    let again = Item { attempts, reason, ..(*item).clone() };
                    (Record::Put(Arc::new(again)), Some(delay), false)
                }
            }
            Outcome::Transient(reason) => {
                self.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let n = {
                    let mut rt = lock(&self.rt);
                    let n = rt.transient.entry(seq).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                };
                if self.opts.max_transient_retries.is_some_and(|max| n > max) {
                    (Record::Put(Arc::new(moved(reason, item.attempts))), None, true)
                } else {
                    debug!(queue = %self.name, uid = %item.uid, n, reason = %reason, "transient failure; will retry");
                    let delay = self.opts.backoff.delay(n.saturating_sub(1).min(32), rand::thread_rng().r#gen::<f64>());
                    // Nothing about the item changed: no write needed.
                    let mut rt = lock(&self.rt);
                    rt.not_before.insert(seq, Instant::now() + delay);
                    rt.in_flight.remove(&seq);
                    drop(rt);
                    self.wake.notify_one();
                    return;
                }
            }
            Outcome::Fatal(reason) => {
                self.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                (Record::Put(Arc::new(moved(reason, item.attempts.saturating_add(1)))), None, true)
            }
        };
        let is_done = matches!(record, Record::Del(_));
        if is_done {
            // Free the slot now; the item stays invisible until its removal
            // is applied (or, if the write fails, runs again later).
            let mut rt = lock(&self.rt);
            rt.done.insert(seq);
            rt.in_flight.remove(&seq);
            drop(rt);
            self.wake.notify_one();
        }
        let committed = self.store.commit(vec![record]).await;
        let mut rt = lock(&self.rt);
        rt.done.remove(&seq);
        match committed {
            Ok(()) => {
                if is_done {
                    self.counters.processed.fetch_add(1, Ordering::Relaxed);
                }
                if to_error {
                    self.counters.moved_to_error.fetch_add(1, Ordering::Relaxed);
                    warn!(queue = %self.name, uid = %item.uid, "moved to the error queue");
                }
                match retry_after {
                    Some(d) => {
                        rt.not_before.insert(seq, Instant::now() + d);
                    }
                    None => {
                        rt.not_before.remove(&seq);
                        rt.transient.remove(&seq);
                    }
                }
            }
            Err(e) => {
                // The item stays queued as it was: it runs again later.
                warn!(queue = %self.name, uid = %item.uid, error = %e, "cannot record the outcome");
                rt.not_before.insert(seq, Instant::now() + Duration::from_secs(1));
            }
        }
        rt.in_flight.remove(&seq);
        drop(rt);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2, t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
    }

    fn worker_from(f: impl Fn(Arc<Item>) -> Outcome + Send + Sync + 'static) -> Worker {
        let f = Arc::new(f);
        Arc::new(move |item| {
            let f = f.clone();
            Box::pin(async move { f(item) })
        })
    }

    fn fast() -> QueueOptions {
        QueueOptions { backoff: Backoff { initial_ms: 1, max_ms: 5, multiplier: 2.0 }, ..QueueOptions::default() }
    }

    #[tokio::test]
    async fn retries_then_error_queue_and_panics_survive() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = seen.clone();
        let w = worker_from(move |item| {
            let body = String::from_utf8_lossy(&item.body).into_owned();
            s2.lock().unwrap().push(body.clone());
            match body.as_str() {
                "\"ok\"" => Outcome::Done,
                "\"panic\"" => panic!("boom"),
                _ => Outcome::Failed("nope".into()),
            }
        });
        let q = WorkQueue::start("t", QueueKind::Endpoint, &dir.path().join("t.wq"), QueueOptions { max_retries: 2, ..fast() }, w).unwrap();
        q.enqueue("a".into(), None, Bytes::from_static(b"\"bad\"")).await.unwrap();
        q.enqueue("b".into(), None, Bytes::from_static(b"\"panic\"")).await.unwrap();
        q.enqueue("c".into(), None, Bytes::from_static(b"\"ok\"")).await.unwrap();
        assert!(q.wait_idle(Duration::from_secs(5)).await);
        let info = q.info();
        assert_eq!((info.incoming, info.errors, info.processed, info.moved_to_error), (0, 2, 1, 2));
        // 3 attempts each for a and b, one for c.
        assert_eq!(seen.lock().unwrap().len(), 7);
        assert_eq!(q.first_errors(10), vec!["a", "b"]);
        let v = q.inspect("b").unwrap();
        assert_eq!((v.attempts, v.reason.as_str()), (3, "handler panicked: boom"));
        assert_eq!(q.pop_error("a").await.unwrap().unwrap().request, serde_json::json!("bad"));
        assert!(q.pop_error("a").await.unwrap().is_none());
        assert_eq!(q.reprocess_all().await.unwrap(), 1);
        assert!(q.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(q.clear_errors().await.unwrap(), 1);
        assert_eq!(q.info().errors, 0);
    }

    #[tokio::test]
    async fn pause_dedup_and_sequenced_order() {
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::new(Mutex::new(Vec::<String>::new()));
        let o2 = order.clone();
        let fails_once = Arc::new(Mutex::new(HashSet::<String>::new()));
        let w = worker_from(move |item| {
            // The first item of group g fails once: g's later items must wait.
            if item.uid == "g1" && fails_once.lock().unwrap().insert(item.uid.clone()) {
                return Outcome::Transient("peer down".into());
            }
            o2.lock().unwrap().push(item.uid.clone());
            Outcome::Done
        });
        let opts = QueueOptions { sequenced: true, concurrency: 4, ..fast() };
        let q = WorkQueue::start("s", QueueKind::Sender, &dir.path().join("s.wq"), opts, w).unwrap();
        q.pause(PauseWhat::Processing);
        for (uid, g) in [("g1", "g"), ("h1", "h"), ("g2", "g"), ("g3", "g"), ("h2", "h")] {
            q.enqueue(uid.into(), Some(g.into()), Bytes::from_static(b"1")).await.unwrap();
        }
        q.enqueue("g1".into(), Some("g".into()), Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(q.info().incoming, 5, "duplicate uid queued twice");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(q.info().incoming, 5, "processed while paused");
        q.pause(PauseWhat::Accepting);
        assert!(matches!(q.enqueue("x".into(), None, Bytes::new()).await, Err(QueueError::Paused(_))));
        q.resume(PauseWhat::All);
        assert!(q.wait_idle(Duration::from_secs(5)).await);
        let order = order.lock().unwrap().clone();
        let g: Vec<_> = order.iter().filter(|u| u.starts_with('g')).cloned().collect();
        let h: Vec<_> = order.iter().filter(|u| u.starts_with('h')).cloned().collect();
        assert_eq!(g, vec!["g1", "g2", "g3"]);
        assert_eq!(h, vec!["h1", "h2"]);
    }

    #[tokio::test]
    async fn rate_limit_spaces_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker_from(|_| Outcome::Done);
        let opts = QueueOptions { rate_per_s: Some(50.0), burst: 1, concurrency: 8, ..fast() };
        let q = WorkQueue::start("r", QueueKind::Sender, &dir.path().join("r.wq"), opts, w).unwrap();
        let t0 = Instant::now();
        for i in 0..6 {
            q.enqueue(format!("{i}"), None, Bytes::from_static(b"1")).await.unwrap();
        }
        assert!(q.wait_idle(Duration::from_secs(5)).await);
        // 6 items at 50/s with a burst of 1: at least 5 gaps of 20 ms.
        assert!(t0.elapsed() >= Duration::from_millis(95), "{:?}", t0.elapsed());
    }
}
