//! Statistics keeper (current values and a bounded history of gathered
//! snapshots) and error keeper (named error states raised by application code).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use weft_service::StatsRegistry;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One endpoint's calls within one gather period (latencies in seconds, -1.0
/// when there was no call, as Ecosystem reports them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodEndpoint {
    pub call_count: u64,
    pub p95: f64,
    pub p99: f64,
}

/// A gathered snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Unix time, seconds.
    pub timestamp: f64,
    pub uptime: f64,
    pub gather_period: f64,
    /// Flat keys from the service's registry (cumulative counters, latency
    /// percentiles, queue and sender sizes, connection counts).
    pub values: BTreeMap<String, serde_json::Value>,
    /// Calls per route within the period.
    pub endpoints: BTreeMap<String, PeriodEndpoint>,
}

/// Latency samples kept per route per period; past this, every other sample
/// is dropped (the percentiles stay representative, memory stays bounded).
const MAX_SAMPLES_PER_ROUTE: usize = 8192;
/// Distinct routes recorded per period.
const MAX_ROUTES_PER_PERIOD: usize = 4096;

#[derive(Default)]
struct Period {
    calls: HashMap<String, (u64, Vec<f64>)>,
}

/// Keeps the statistics history. `gather` runs every `period`; the history
/// holds at most `history_len` snapshots, newest first.
pub struct StatsKeeper {
    registry: Arc<StatsRegistry>,
    started: Instant,
    period: Duration,
    history_len: usize,
    current: Mutex<Period>,
    history: Mutex<VecDeque<Snapshot>>,
    stop: CancellationToken,
}

impl StatsKeeper {
    pub fn new(registry: Arc<StatsRegistry>, period: Duration, history_len: usize) -> Arc<Self> {
        Arc::new(Self {
            registry,
            started: Instant::now(),
            period: period.max(Duration::from_millis(10)),
            history_len: history_len.max(1),
            current: Mutex::new(Period::default()),
            history: Mutex::new(VecDeque::new()),
            stop: CancellationToken::new(),
        })
    }

    /// Start gathering every period (needs a tokio runtime).
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.period);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = me.stop.cancelled() => return,
                    _ = tick.tick() => me.gather(),
                }
            }
        });
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    pub fn registry(&self) -> &Arc<StatsRegistry> {
        &self.registry
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Record one call (the ekosis listener and [`crate::MeteredHandler`] do).
    pub fn record(&self, route: &str, elapsed: Duration) {
        fn bump(entry: &mut (u64, Vec<f64>), elapsed: Duration) {
            entry.0 += 1;
            if entry.1.len() >= MAX_SAMPLES_PER_ROUTE {
                let mut i = 0;
                entry.1.retain(|_| {
                    i += 1;
                    i % 2 == 0
                });
            }
            entry.1.push(elapsed.as_secs_f64());
        }
        let mut p = lock(&self.current);
        // A route seen this period: one lookup, no key copied.
        if let Some(entry) = p.calls.get_mut(route) {
            bump(entry, elapsed);
            return;
        }
        // Route keys come from clients: cap the distinct ones per period.
        if p.calls.len() >= MAX_ROUTES_PER_PERIOD {
            return;
        }
        bump(p.calls.entry(route.to_owned()).or_default(), elapsed);
    }

    fn routes(values: &BTreeMap<String, serde_json::Value>) -> Vec<String> {
        values
            .keys()
            .filter_map(|k| k.strip_prefix("endpoint.").and_then(|r| r.strip_suffix(".calls")))
            .map(str::to_owned)
            .collect()
    }

    fn build(&self, period: &Period) -> Snapshot {
        let values = self.registry.snapshot();
        let mut endpoints = BTreeMap::new();
        for r in Self::routes(&values) {
            endpoints.insert(r, PeriodEndpoint { call_count: 0, p95: -1.0, p99: -1.0 });
        }
        for (route, (n, samples)) in &period.calls {
            let mut s = samples.clone();
            s.sort_by(|a, b| a.total_cmp(b));
            let q = |f: f64| -> f64 {
                if s.is_empty() {
                    return -1.0;
                }
                let idx = ((s.len() as f64 * f).ceil() as usize).saturating_sub(1).min(s.len() - 1);
                s.get(idx).copied().unwrap_or(-1.0)
            };
            endpoints.insert(route.clone(), PeriodEndpoint { call_count: *n, p95: q(0.95), p99: q(0.99) });
        }
        Snapshot {
            timestamp: unix_s(),
            uptime: self.started.elapsed().as_secs_f64(),
            gather_period: self.period.as_secs_f64(),
            values,
            endpoints,
        }
    }

    /// Current values: the registry now and the calls of the unfinished period.
    pub fn current(&self) -> Snapshot {
        let p = lock(&self.current);
        self.build(&p)
    }

    /// Close the period: push its snapshot to the history and start afresh.
    pub fn gather(&self) {
        let period = std::mem::take(&mut *lock(&self.current));
        let snap = self.build(&period);
        let mut h = lock(&self.history);
        h.push_front(snap);
        h.truncate(self.history_len);
    }

    /// The latest gathered snapshot.
    pub fn gathered(&self) -> Option<Snapshot> {
        lock(&self.history).front().cloned()
    }

    /// Every kept snapshot, newest first.
    pub fn full(&self) -> Vec<Snapshot> {
        lock(&self.history).iter().cloned().collect()
    }
}

/// A named error state: `count` raises since it was last cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorState {
    pub error_id: String,
    pub description: String,
    pub count: u64,
}

/// Error states raised by application code ("dependency X is down") and
/// cleared when resolved. Ids are case-insensitive (kept upper-case).
#[derive(Default)]
pub struct ErrorKeeper {
    states: Mutex<Vec<ErrorState>>,
}

/// Distinct error ids kept; raising a new id past this is ignored (a bug
/// raising ids from data must not grow memory without bound).
const MAX_ERROR_IDS: usize = 1024;

impl ErrorKeeper {
    pub fn raise(&self, error_id: &str, description: &str) {
        let id = error_id.to_uppercase();
        let mut s = lock(&self.states);
        if let Some(e) = s.iter_mut().find(|e| e.error_id == id) {
            e.count = e.count.saturating_add(1);
            e.description = description.to_owned();
        } else if s.len() < MAX_ERROR_IDS {
            s.push(ErrorState { error_id: id, description: description.to_owned(), count: 1 });
        }
    }

    /// Clear `count` raises of `error_id` (0 = all of them).
    pub fn clear(&self, error_id: &str, count: u64) {
        let id = error_id.to_uppercase();
        let mut s = lock(&self.states);
        if let Some(e) = s.iter_mut().find(|e| e.error_id == id) {
            e.count = if count == 0 { 0 } else { e.count.saturating_sub(count) };
        }
    }

    pub fn clear_all(&self) {
        for e in lock(&self.states).iter_mut() {
            e.count = 0;
        }
    }

    /// Every id ever raised (cleared ones with count 0), in the order first
    /// raised: the statistics show a cleared state as `error.<ID> = 0`.
    pub fn all(&self) -> Vec<ErrorState> {
        lock(&self.states).clone()
    }

    /// States with a count above zero, in the order first raised.
    pub fn list(&self) -> Vec<ErrorState> {
        lock(&self.states).iter().filter(|e| e.count > 0).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_keeper() {
        let k = ErrorKeeper::default();
        k.raise("job_failed", "a");
        k.raise("JOB_FAILED", "b");
        k.raise("dep_down", "x is down");
        assert_eq!(k.list()[0], ErrorState { error_id: "JOB_FAILED".into(), description: "b".into(), count: 2 });
        k.clear("Job_Failed", 1);
        assert_eq!(k.list()[0].count, 1);
        k.clear("job_failed", 0);
        assert_eq!(k.list().len(), 1);
        k.clear_all();
        assert!(k.list().is_empty());
    }

    #[test]
    fn stats_history() {
        let reg = Arc::new(StatsRegistry::default());
        reg.endpoint("echo");
        reg.endpoint("a.b");
        let k = StatsKeeper::new(reg, Duration::from_secs(60), 2);
        for ms in 1..=100 {
            k.record("echo", Duration::from_millis(ms));
        }
        let cur = k.current();
        assert_eq!(cur.endpoints["echo"].call_count, 100);
        assert!((cur.endpoints["echo"].p95 - 0.095).abs() < 1e-9);
        assert_eq!(cur.endpoints["a.b"].p99, -1.0);
        assert!(k.gathered().is_none());
        k.gather();
        k.gather();
        k.gather();
        assert_eq!(k.full().len(), 2);
        assert_eq!(k.gathered().unwrap().endpoints["echo"].call_count, 0);
        assert_eq!(k.full()[1].endpoints["echo"].call_count, 0);
    }
}
