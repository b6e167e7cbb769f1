//! A circuit breaker per node: a pure state machine ([`Breaker`], time
//! passed in) and a tower [`Layer`] around a node's service.
//!
//! Closed: calls pass; the breaker opens after `consecutive_failures` node
//! failures in a row, or when the failure rate over the last `window_ms`
//! (at least `min_calls` calls) exceeds `error_rate`. Open: calls are
//! refused without being sent, for `cool_down_ms`. Half-open: up to
//! `half_open_probes` calls at a time go through as probes; a failed probe
//! opens it again (a new cool-down), `probes_to_close` successful ones close
//! it. Only node failures count ([`Error::is_node_failure`]): an application
//! error is a healthy node answering.
//!
//! Why not a crate: failsafe 1.3 keeps its mock clock in a thread-local
//! (unsafe pointer) and tower-circuitbreaker 0.2 reads `Instant::now()`
//! inside; neither takes a clock per breaker, which our tests need.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use tower::{Layer, Service};

use crate::clock::Clock;
use crate::config::BreakerConfig;
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// How a call was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Normal,
    Probe,
}

/// Counters of one breaker (never reset).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BreakerStats {
    pub successes: u64,
    pub failures: u64,
    /// Calls refused while open (or half-open with every probe slot taken).
    pub rejected: u64,
    pub probes: u64,
    pub opened: u64,
    pub half_opened: u64,
    pub closed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    ok: u64,
    err: u64,
}

#[derive(Debug)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Inner,
    consecutive: u32,
    window: VecDeque<Bucket>,
    stats: BreakerStats,
    history: VecDeque<State>,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Breaker { cfg, inner: Inner::Closed, consecutive: 0, window: VecDeque::new(), stats: BreakerStats::default(), history: VecDeque::new() }
    }

    /// The state at `now` (an open breaker whose cool-down is over reads as
    /// half-open: the next call will be a probe).
    pub fn state(&self, now: Instant) -> State {
        match self.inner {
            Inner::Closed => State::Closed,
            Inner::Open { until } if now >= until => State::HalfOpen,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Whether [`Breaker::admit`] would let a call through now (the
    /// balancer skips nodes that would refuse).
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.inner {
            Inner::Closed => true,
            Inner::Open { until } => now >= until,
            Inner::HalfOpen { in_flight, .. } => in_flight < self.cfg.half_open_probes.max(1),
        }
    }

    pub fn stats(&self) -> &BreakerStats {
        &self.stats
    }

    /// The states entered, oldest first (at most `history`), starting with
    /// `closed`.
    pub fn history(&self) -> Vec<State> {
        std::iter::once(State::Closed).chain(self.history.iter().copied()).collect()
    }

    fn enter(&mut self, s: State, now: Instant) {
        match s {
            State::Closed => {
                self.inner = Inner::Closed;
                self.stats.closed += 1;
                self.consecutive = 0;
                // A fresh window: the failures that opened it are history.
                self.window.clear();
            }
            State::Open => {
                self.inner = Inner::Open { until: now + Duration::from_millis(self.cfg.cool_down_ms) };
                self.stats.opened += 1;
            }
            State::HalfOpen => {
                self.inner = Inner::HalfOpen { in_flight: 0, successes: 0 };
                self.stats.half_opened += 1;
            }
        }
        tracing::debug!(state = s.as_str(), "circuit breaker transition");
        if self.cfg.history > 0 {
            if self.history.len() >= self.cfg.history {
                self.history.pop_front();
            }
            self.history.push_back(s);
        }
    }

    /// Lets a call through (and says whether as a probe), or refuses it.
    pub fn admit(&mut self, now: Instant) -> Option<Admit> {
        if let Inner::Open { until } = self.inner {
            if now < until {
                self.stats.rejected += 1;
                return None;
            }
            self.enter(State::HalfOpen, now);
        }
        match &mut self.inner {
            Inner::Closed => Some(Admit::Normal),
            Inner::HalfOpen { in_flight, .. } if *in_flight < self.cfg.half_open_probes.max(1) => {
                *in_flight += 1;
                self.stats.probes += 1;
                Some(Admit::Probe)
            }
            _ => {
                self.stats.rejected += 1;
                None
            }
        }
    }

    /// The outcome of an admitted call: `ok` false for a node failure.
    pub fn record(&mut self, now: Instant, admit: Admit, ok: bool) {
        if ok {
            self.stats.successes += 1;
        } else {
            self.stats.failures += 1;
        }
        match (&mut self.inner, admit) {
            (Inner::HalfOpen { in_flight, successes }, Admit::Probe) => {
                *in_flight = in_flight.saturating_sub(1);
                if !ok {
                    self.enter(State::Open, now);
                } else {
                    *successes += 1;
                    if *successes >= self.cfg.probes_to_close.max(1) {
                        self.enter(State::Closed, now);
                    }
                }
            }
            (Inner::Closed, _) => {
                self.count(now, ok);
                if ok {
                    self.consecutive = 0;
                } else {
                    self.consecutive += 1;
                    if self.consecutive >= self.cfg.consecutive_failures.max(1) || self.rate_exceeded() {
                        self.enter(State::Open, now);
                    }
                }
            }
            // A call admitted before the breaker opened (or a normal call
            // finishing while half-open) does not move the state: only
            // probes decide once it has left closed.
            _ => {}
        }
    }

    /// An admitted call that ended without an outcome (cancelled): frees
    /// its probe slot.
    pub fn cancel(&mut self, admit: Admit) {
        if let (Inner::HalfOpen { in_flight, .. }, Admit::Probe) = (&mut self.inner, admit) {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn bucket_ms(&self) -> u64 {
        (self.cfg.window_ms / u64::from(self.cfg.window_buckets.max(1))).max(1)
    }

    fn count(&mut self, now: Instant, ok: bool) {
        let window = Duration::from_millis(self.cfg.window_ms);
        while self.window.front().is_some_and(|b| now.saturating_duration_since(b.start) >= window) {
            self.window.pop_front();
        }
        let width = Duration::from_millis(self.bucket_ms());
        let fresh = match self.window.back() {
            Some(b) => now.saturating_duration_since(b.start) >= width,
            None => true,
        };
        if fresh {
            self.window.push_back(Bucket { start: now, ok: 0, err: 0 });
        }
        if let Some(b) = self.window.back_mut() {
            if ok {
                b.ok += 1;
            } else {
                b.err += 1;
            }
        }
    }

    fn rate_exceeded(&self) -> bool {
        let (ok, err) = self.window.iter().fold((0u64, 0u64), |(o, e), b| (o + b.ok, e + b.err));
        let calls = ok + err;
        calls >= u64::from(self.cfg.min_calls.max(1)) && (err as f64) / (calls as f64) > self.cfg.error_rate
    }
}

/// A breaker shared by the layer, the balancer (which reads it) and the
/// health checker (whose checks are calls too).
#[derive(Debug, Clone)]
pub struct SharedBreaker {
    breaker: Arc<Mutex<Breaker>>,
    clock: Arc<dyn Clock>,
}

impl SharedBreaker {
    pub fn new(cfg: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        SharedBreaker { breaker: Arc::new(Mutex::new(Breaker::new(cfg))), clock }
    }

    pub fn lock(&self) -> MutexGuard<'_, Breaker> {
        // A panic while holding this lock cannot leave the breaker
        // half-updated in a way worse than a lost count.
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn state(&self) -> State {
        let now = self.now();
        self.lock().state(now)
    }

    pub fn would_admit(&self) -> bool {
        let now = self.now();
        self.lock().would_admit(now)
    }

    pub fn admit(&self) -> Option<AdmitGuard> {
        let now = self.now();
        self.lock().admit(now).map(|admit| AdmitGuard { breaker: self.clone(), admit, done: false })
    }
}

/// An admitted call; reports its outcome once, or frees its probe slot if
/// dropped without one.
#[derive(Debug)]
pub struct AdmitGuard {
    breaker: SharedBreaker,
    admit: Admit,
    done: bool,
}

impl AdmitGuard {
    pub fn admit(&self) -> Admit {
        self.admit
    }

    pub fn record(mut self, ok: bool) {
        self.done = true;
        let now = self.breaker.now();
        self.breaker.lock().record(now, self.admit, ok);
    }
}

impl Drop for AdmitGuard {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.lock().cancel(self.admit);
        }
    }
}

/// The tower layer: one breaker per wrapped service.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breaker: SharedBreaker,
    node: Arc<str>,
}

impl BreakerLayer {
    pub fn new(breaker: SharedBreaker, node: impl Into<Arc<str>>) -> Self {
        BreakerLayer { breaker, node: node.into() }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService { inner, breaker: self.breaker.clone(), node: self.node.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    inner: S,
    breaker: SharedBreaker,
    node: Arc<str>,
}

impl<S, R> Service<R> for BreakerService<S>
where
    S: Service<R, Error = Error>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let Some(guard) = self.breaker.admit() else {
            let node = self.node.to_string();
            return Box::pin(std::future::ready(Err(Error::BreakerOpen { node })));
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            guard.record(!matches!(&r, Err(e) if e.is_node_failure()));
            r
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use tonic::Code;
    use tower::ServiceExt;

    fn cfg() -> BreakerConfig {
        BreakerConfig { consecutive_failures: 3, error_rate: 0.5, min_calls: 10, window_ms: 1_000, window_buckets: 10, cool_down_ms: 500, half_open_probes: 1, probes_to_close: 2, history: 16 }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let c = FakeClock::new();
        let mut b = Breaker::new(cfg());
        for _ in 0..2 {
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, false);
        }
        let a = b.admit(c.now()).unwrap();
        b.record(c.now(), a, true);
        for _ in 0..2 {
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, false);
        }
        assert_eq!(b.state(c.now()), State::Closed);
        let a = b.admit(c.now()).unwrap();
        b.record(c.now(), a, false);
        assert_eq!(b.state(c.now()), State::Open);
        assert_eq!(b.admit(c.now()), None);
        assert_eq!(b.stats().rejected, 1);
        assert_eq!(b.stats().opened, 1);
    }

    #[test]
    fn opens_on_error_rate_over_the_window_only() {
        let c = FakeClock::new();
        let mut b = Breaker::new(BreakerConfig { consecutive_failures: 100, ..cfg() });
        // Alternate ok/fail: 50% is not over 0.5.
        for i in 0..20 {
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, i % 2 == 0);
            c.advance(ms(10));
        }
        assert_eq!(b.state(c.now()), State::Closed);
        // A second later the window is empty; 9 of 18 is not over 0.5.
        c.advance(ms(1_000));
        for _ in 0..9 {
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, true);
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, false);
        }
        assert_eq!(b.state(c.now()), State::Closed);
        let a = b.admit(c.now()).unwrap();
        b.record(c.now(), a, false);
        // 10 of 19 > 0.5.
        assert_eq!(b.state(c.now()), State::Open);
    }

    #[test]
    fn half_open_after_cool_down_probes_then_closes() {
        let c = FakeClock::new();
        let mut b = Breaker::new(cfg());
        for _ in 0..3 {
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, false);
        }
        c.advance(ms(499));
        assert_eq!(b.admit(c.now()), None);
        assert!(!b.would_admit(c.now()));
        c.advance(ms(1));
        assert!(b.would_admit(c.now()));
        assert_eq!(b.state(c.now()), State::HalfOpen);
        let p = b.admit(c.now()).unwrap();
        assert_eq!(p, Admit::Probe);
        // One probe at a time.
        assert_eq!(b.admit(c.now()), None);
        b.record(c.now(), p, true);
        assert_eq!(b.state(c.now()), State::HalfOpen);
        let p = b.admit(c.now()).unwrap();
        b.record(c.now(), p, true);
        assert_eq!(b.state(c.now()), State::Closed);
        assert_eq!(b.history(), vec![State::Closed, State::Open, State::HalfOpen, State::Closed]);
        let s = b.stats();
        assert_eq!((s.opened, s.half_opened, s.closed, s.probes), (1, 1, 1, 2));
    }

    #[test]
    fn failed_probe_opens_again_for_a_new_cool_down() {
        let c = FakeClock::new();
        let mut b = Breaker::new(cfg());
        for _ in 0..3 {
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, false);
        }
        c.advance(ms(500));
        let p = b.admit(c.now()).unwrap();
        b.record(c.now(), p, false);
        assert_eq!(b.state(c.now()), State::Open);
        c.advance(ms(499));
        assert_eq!(b.admit(c.now()), None);
        c.advance(ms(1));
        assert_eq!(b.admit(c.now()), Some(Admit::Probe));
        assert_eq!(b.history(), vec![State::Closed, State::Open, State::HalfOpen, State::Open, State::HalfOpen]);
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot() {
        let c = FakeClock::new();
        let mut b = Breaker::new(cfg());
        for _ in 0..3 {
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, false);
        }
        c.advance(ms(500));
        let p = b.admit(c.now()).unwrap();
        b.cancel(p);
        assert_eq!(b.admit(c.now()), Some(Admit::Probe));
    }

    #[test]
    fn late_outcomes_of_calls_admitted_before_opening_do_not_move_it() {
        let c = FakeClock::new();
        let mut b = Breaker::new(cfg());
        let late = b.admit(c.now()).unwrap();
        for _ in 0..3 {
            let a = b.admit(c.now()).unwrap();
            b.record(c.now(), a, false);
        }
        b.record(c.now(), late, true);
        assert_eq!(b.state(c.now()), State::Open);
    }

    /// A fake node: answers with the next scripted result.
    #[derive(Clone)]
    struct Scripted(Arc<Mutex<VecDeque<Result<u32, Error>>>>);

    impl Service<()> for Scripted {
        type Response = u32;
        type Error = Error;
        type Future = std::future::Ready<Result<u32, Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            std::future::ready(self.0.lock().unwrap().pop_front().unwrap())
        }
    }

    fn status(code: Code) -> Error {
        Error::Status { node: "n".into(), code, message: String::new(), reason: None, leader: None }
    }

    #[tokio::test]
    async fn the_layer_counts_node_failures_only_and_refuses_when_open() {
        let clock = Arc::new(FakeClock::new());
        let shared = SharedBreaker::new(cfg(), clock.clone());
        let script = Arc::new(Mutex::new(VecDeque::from(vec![
            Err(status(Code::NotFound)),
            Err(status(Code::FailedPrecondition)),
            // A follower's not_leader is a healthy node (and resets the run).
            Err(Error::Status { node: "n".into(), code: Code::Unavailable, message: String::new(), reason: Some("not_leader".into()), leader: Some("x:1".into()) }),
            Err(status(Code::Unavailable)),
            Err(status(Code::Unavailable)),
            Err(status(Code::DeadlineExceeded)),
            Ok(7),
        ])));
        let svc = BreakerLayer::new(shared.clone(), "n").layer(Scripted(script.clone()));
        for _ in 0..6 {
            let _ = svc.clone().oneshot(()).await;
        }
        assert_eq!(shared.state(), State::Open);
        assert_eq!(shared.lock().stats().failures, 3);
        assert!(matches!(svc.clone().oneshot(()).await, Err(Error::BreakerOpen { .. })));
        // The refused call never reached the node.
        assert_eq!(script.lock().unwrap().len(), 1);
        clock.advance(ms(500));
        assert_eq!(svc.clone().oneshot(()).await.unwrap(), 7);
        assert_eq!(shared.lock().stats().probes, 1);
    }
}
