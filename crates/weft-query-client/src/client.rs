//! The client: one tower stack per node (breaker, concurrency limit,
//! pool), a balancer over the nodes that follows
//! `not_leader` once, tower's `Retry` over that for idempotent calls, and
//! the caller's deadline around it all.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use serde::Serialize;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, ServiceExt};
use weft_api::pb;

use crate::balance::{self, Candidate};
use crate::breaker::{BreakerLayer, BreakerService, BreakerStats, SharedBreaker, State};
use crate::call::{Call, Op};
use crate::clock::{Clock, SystemClock};
use crate::config::{Balance, ClientConfig};
use crate::error::{Error, Result};
use crate::pool::{NodePool, NodeService};
use crate::retry::RetryPolicy;

struct Outstanding(Arc<AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type NodeStack = BreakerService<ConcurrencyLimit<NodeService>>;

#[derive(Debug)]
struct Node {
    addr: String,
    weight: u32,
    pool: Arc<NodePool>,
    breaker: SharedBreaker,
    stack: NodeStack,
    /// Calls in flight through the balancer (waiting for a concurrency
    /// slot included), for `least_outstanding`.
    outstanding: Arc<AtomicUsize>,
}

impl Node {
    fn new(addr: &str, weight: u32, cfg: &ClientConfig, clock: Arc<dyn Clock>) -> Result<Node> {
        let pool = Arc::new(NodePool::new(addr, cfg.pool.clone(), cfg.compression)?);
        let breaker = SharedBreaker::new(cfg.breaker.clone(), clock);
        let limited = ConcurrencyLimit::new(NodeService { pool: pool.clone() }, cfg.pool.max_outstanding.max(1));
        let stack = BreakerLayer::new(breaker.clone(), addr).layer(limited);
        Ok(Node { addr: addr.to_owned(), weight, pool, breaker, stack, outstanding: Arc::default() })
    }

    /// Sends through this node's stack, counted in flight meanwhile.
    async fn send(&self, call: Call) -> Result<pb::Result> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let _done = Outstanding(self.outstanding.clone());
        self.stack.clone().oneshot(call).await
    }
}

#[derive(Debug)]
struct Inner {
    cfg: ClientConfig,
    nodes: Vec<Node>,
    /// Leaders named by `not_leader` that are not in `nodes`.
    extra: Mutex<HashMap<String, Arc<Node>>>,
    clock: Arc<dyn Clock>,
    turn: AtomicUsize,
    credits: Mutex<Vec<i64>>,
    retries: Arc<AtomicU64>,
    redirects: AtomicU64,
    no_node: AtomicU64,
}

impl Inner {
    fn pick(&self) -> Option<&Node> {
        let c: Vec<Candidate<_>> = self
            .nodes
            .iter()
            .map(|n| Candidate { eligible: n.breaker.would_admit(), load: n.outstanding.load(Ordering::Relaxed), weight: n.weight })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let i = match self.cfg.balance {
            Balance::RoundRobin => balance::round_robin(&c, turn),
            Balance::LeastOutstanding => balance::least_outstanding(&c, turn),
            Balance::Weighted => balance::weighted(&c, &mut self.credits.lock().unwrap_or_else(|p| p.into_inner()), turn),
        };
        i.and_then(|i| self.nodes.get(i))
    }

    /// The node at `addr`: a configured one, or one made for a leader the
    /// cluster named.
    fn node_at(&self, addr: &str) -> Result<Arc<Node>> {
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = extra.get(addr) {
            return Ok(n.clone());
        }
        let n = Arc::new(Node::new(addr, 0, &self.cfg, self.clock.clone())?);
        extra.insert(addr.to_owned(), n.clone());
        Ok(n)
    }
}

/// The balancer as a tower service (always ready: the node stacks wait for
/// their own concurrency slots).
#[derive(Debug, Clone)]
struct Balanced(Arc<Inner>);

impl Service<Call> for Balanced {
    type Response = pb::Result;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<pb::Result>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let Some(node) = inner.pick() else {
                inner.no_node.fetch_add(1, Ordering::Relaxed);
                return Err(Error::NoNode { nodes: inner.nodes.len() });
            };
            let first = if inner.cfg.follow_leader { Some(call.clone()) } else { None };
            let r = node.send(call).await;
            // A follower that did not run the call names the leader: go
            // there once, whether or not the call is idempotent (it was
            // not applied).
            match (r, first) {
                (Err(e), Some(call)) if e.is_not_leader() && e.leader().is_some() => {
                    let addr = e.leader().unwrap_or_default().to_owned();
                    inner.redirects.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(from = %e, leader = %addr, "following not_leader");
                    match inner.nodes.iter().find(|n| n.addr == addr) {
                        Some(n) => n.send(call).await,
                        None => inner.node_at(&addr)?.send(call).await,
                    }
                }
                (r, _) => r,
            }
        })
    }
}

/// What a caller may say about one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// The whole call's budget (default `request_timeout_ms`).
    pub timeout: Option<Duration>,
}

/// The query API client. Cheap to clone; must be created within a tokio
/// runtime (channels and the health checker are tasks).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    retry: tower::retry::Retry<RetryPolicy, Balanced>,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client> {
        Self::with_clock(cfg, Arc::new(SystemClock))
    }

    /// With the clock the breakers and retries read.
    pub fn with_clock(cfg: ClientConfig, clock: Arc<dyn Clock>) -> Result<Client> {
        if cfg.nodes.is_empty() {
            return Err(Error::Config("no nodes".into()));
        }
        let nodes = cfg.nodes.iter().map(|n| Node::new(&n.addr, n.weight, &cfg, clock.clone())).collect::<Result<Vec<_>>>()?;
        let retries = Arc::new(AtomicU64::new(0));
        let policy = RetryPolicy::new(cfg.retry.clone(), clock.clone(), retries.clone());
        let inner = Arc::new(Inner {
            cfg,
            nodes,
            extra: Mutex::default(),
            clock,
            turn: AtomicUsize::new(0),
            credits: Mutex::default(),
            retries,
            redirects: AtomicU64::new(0),
            no_node: AtomicU64::new(0),
        });
        if inner.cfg.pool.health_interval_ms > 0 {
            tokio::spawn(maintain(Arc::downgrade(&inner)));
        }
        let retry = tower::retry::Retry::new(policy, Balanced(inner.clone()));
        Ok(Client { inner, retry })
    }

    /// Sends one call: balanced, breaker-guarded, retried if idempotent,
    /// within its deadline.
    pub async fn call(&self, op: Op, opts: CallOptions) -> Result<pb::Result> {
        let timeout = opts.timeout.unwrap_or(Duration::from_millis(self.inner.cfg.request_timeout_ms));
        let timeout_ms = timeout.as_millis() as u64;
        let deadline = Instant::now() + timeout;
        let call = Call::new(op, deadline, timeout_ms);
        match tokio::time::timeout_at(deadline.into(), self.retry.clone().oneshot(call)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Deadline { timeout_ms }),
        }
    }

    pub async fn execute(&self, req: pb::ExecuteRequest) -> Result<pb::Result> {
        self.call(Op::Execute(req), CallOptions::default()).await
    }

    pub async fn batch(&self, req: pb::BatchRequest) -> Result<pb::Result> {
        self.call(Op::Batch(req), CallOptions::default()).await
    }

    /// One AQL query.
    pub async fn aql(&self, text: &str) -> Result<pb::Result> {
        self.execute(aql(text)).await
    }

    pub async fn get(&self, table: &str, key: &[u8]) -> Result<Option<pb::KeyValue>> {
        let r = self.execute(statement(pb::statement::Kind::Get(pb::Get { table: table.into(), key: key.to_vec(), revision: None }))).await?;
        Ok(r.kvs.into_iter().next())
    }

    /// An unconditional SET (never retried).
    pub async fn put(&self, table: &str, key: &[u8], value: &[u8]) -> Result<pb::Result> {
        self.execute(set(table, key, value, None)).await
    }

    /// SET ... IF VERSION = `version` (0: absent); retried when idempotent.
    pub async fn set_if_version(&self, table: &str, key: &[u8], value: &[u8], version: u64) -> Result<pb::Result> {
        self.execute(set(table, key, value, Some(pb::set::Cond::IfVersion(version)))).await
    }

    /// Keys with `prefix`, at most `limit` (None: the server's default).
    pub async fn range_prefix(&self, table: &str, prefix: &[u8], limit: Option<u64>) -> Result<pb::Result> {
        self.execute(statement(pb::statement::Kind::Range(pb::Range {
            table: table.into(),
            range: Some(pb::range::Range::Prefix(prefix.to_vec())),
            limit,
            revision: None,
        })))
        .await
    }

    /// Events of a Watch, resumed on another node after a failure from the
    /// last revision seen + 1 (so none is lost or repeated), with the retry
    /// back-off between attempts. Ends after `max_retries` failed attempts
    /// in a row, or when the server refuses the watch itself.
    pub fn watch(&self, req: pb::WatchRequest) -> impl Stream<Item = Result<pb::Event>> + Send + 'static {
        struct St {
            inner: Arc<Inner>,
            req: pb::WatchRequest,
            stream: Option<tonic::Streaming<pb::WatchResponse>>,
            buf: std::collections::VecDeque<pb::Event>,
            failures: u32,
            done: bool,
        }
        let st = St { inner: self.inner.clone(), req, stream: None, buf: Default::default(), failures: 0, done: false };
        futures::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(ev) = st.buf.pop_front() {
                    st.req.start_revision = ev.revision + 1;
                    return Some((Ok(ev), st));
                }
                if st.done {
                    return None;
                }
                let err = match &mut st.stream {
                    Some(s) => match s.message().await {
                        Ok(Some(m)) => {
                            st.failures = 0;
                            st.buf.extend(m.events);
                            continue;
                        }
                        Ok(None) => Error::Status { node: String::new(), code: tonic::Code::Unavailable, message: "watch ended".into(), reason: None, leader: None },
                        Err(s) => Error::from_status("", &s),
                    },
                    None => {
                        let node = st.inner.pick().map(|n| n.pool.clone());
                        match node {
                            None => Error::NoNode { nodes: st.inner.nodes.len() },
                            Some(p) => match p.watch(st.req.clone()).await {
                                Ok(s) => {
                                    st.stream = Some(s);
                                    continue;
                                }
                                Err(e) => e,
                            },
                        }
                    }
                };
                st.stream = None;
                if !err.is_retryable() || st.failures >= st.inner.cfg.retry.max_retries {
                    st.done = true;
                    return Some((Err(err), st));
                }
                let d = crate::retry::backoff(&st.inner.cfg.retry, st.failures, rand::random::<f64>());
                st.failures += 1;
                st.inner.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(d).await;
            }
        })
    }

    pub fn stats(&self) -> ClientStats {
        let now = self.inner.clock.now();
        let nodes = self
            .inner
            .nodes
            .iter()
            .map(|n| {
                let b = n.breaker.lock();
                let c = &n.pool.counters;
                NodeStats {
                    addr: n.addr.clone(),
                    weight: n.weight,
                    state: b.state(now),
                    calls: c.calls.load(Ordering::Relaxed),
                    ok: c.ok.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                    outstanding: n.outstanding.load(Ordering::Relaxed) as u64,
                    channels: n.pool.channels() as u64,
                    channels_opened: c.channels_opened.load(Ordering::Relaxed),
                    channels_closed: c.channels_closed.load(Ordering::Relaxed),
                    health_checks: c.health_checks.load(Ordering::Relaxed),
                    health_failures: c.health_failures.load(Ordering::Relaxed),
                    breaker: b.stats().clone(),
                    transitions: b.history(),
                }
            })
            .collect();
        ClientStats {
            nodes,
            retries: self.inner.retries.load(Ordering::Relaxed),
            leader_redirects: self.inner.redirects.load(Ordering::Relaxed),
            no_node: self.inner.no_node.load(Ordering::Relaxed),
        }
    }
}

/// Per node: idle channels closed, and a grpc.health.v1 check that counts
/// as a call for the breaker (so a dead node is found without traffic, and
/// an open breaker is probed by the check when its cool-down is over).
async fn maintain(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => Duration::from_millis(i.cfg.pool.health_interval_ms),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let checks = inner.nodes.iter().map(|n| {
            n.pool.reap_idle(Instant::now());
            let guard = n.breaker.admit();
            let pool = n.pool.clone();
            async move {
                if let Some(g) = guard {
                    let ok = pool.health_check().await;
                    g.record(ok);
                }
            }
        });
        futures::future::join_all(checks).await;
    }
}

/// One node's figures.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    pub addr: String,
    pub weight: u32,
    pub state: State,
    /// Calls sent to the node, answered ok, answered with any error.
    pub calls: u64,
    pub ok: u64,
    pub errors: u64,
    pub outstanding: u64,
    pub channels: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
    pub health_checks: u64,
    pub health_failures: u64,
    pub breaker: BreakerStats,
    /// Breaker states entered, oldest first.
    pub transitions: Vec<State>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientStats {
    pub nodes: Vec<NodeStats>,
    pub retries: u64,
    pub leader_redirects: u64,
    /// Calls that found every breaker refusing.
    pub no_node: u64,
}

impl ClientStats {
    /// Flat `key value` pairs (`client.node.<addr>.calls`), as Weft's stats.
    pub fn flat(&self) -> Vec<(String, u64)> {
        let mut v = vec![
            ("client.retries".to_owned(), self.retries),
            ("client.leader_redirects".to_owned(), self.leader_redirects),
            ("client.no_node".to_owned(), self.no_node),
        ];
        for n in &self.nodes {
            let p = format!("client.node.{}", n.addr);
            let state = match n.state {
                State::Closed => 0,
                State::Open => 1,
                State::HalfOpen => 2,
            };
            for (k, x) in [
                ("calls", n.calls),
                ("ok", n.ok),
                ("errors", n.errors),
                ("outstanding", n.outstanding),
                ("channels", n.channels),
                ("channels_opened", n.channels_opened),
                ("channels_closed", n.channels_closed),
                ("health_checks", n.health_checks),
                ("health_failures", n.health_failures),
                ("breaker_state", state),
                ("breaker_opened", n.breaker.opened),
                ("breaker_half_opened", n.breaker.half_opened),
                ("breaker_closed", n.breaker.closed),
                ("breaker_rejected", n.breaker.rejected),
                ("breaker_probes", n.breaker.probes),
            ] {
                v.push((format!("{p}.{k}"), x));
            }
        }
        v
    }
}

/// An ExecuteRequest of AQL text.
pub fn aql(text: &str) -> pb::ExecuteRequest {
    pb::ExecuteRequest { query: Some(pb::execute_request::Query::Aql(text.into())), timeout_ms: 0, serializable: false }
}

/// An ExecuteRequest of one pre-parsed statement.
pub fn statement(kind: pb::statement::Kind) -> pb::ExecuteRequest {
    pb::ExecuteRequest { query: Some(pb::execute_request::Query::Statement(pb::Statement { kind: Some(kind) })), timeout_ms: 0, serializable: false }
}

/// A SET of raw bytes.
pub fn set(table: &str, key: &[u8], value: &[u8], cond: Option<pb::set::Cond>) -> pb::ExecuteRequest {
    statement(pb::statement::Kind::Set(pb::Set {
        table: table.into(),
        key: key.to_vec(),
        value: Some(pb::Value { kind: Some(pb::value::Kind::Bytes(value.to_vec())) }),
        cond,
    }))
}
