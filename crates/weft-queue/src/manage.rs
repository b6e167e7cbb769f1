//! The [`Manager`]: owns a service's queued endpoints, queued senders and
//! keepers, registers queued endpoints on a [`Service`], and registers the
//! standard management endpoints (`weft.queue.*`, `weft.sender.*`,
//! `weft.stats.*`, `weft.errors.*`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use weft_net::{EventSink, Handler, HandlerFuture, PeerInfo};
use weft_service::{EndpointOptions, Service, ServiceError, SharedService};
use weft_wire::{BodyFormat, ErrorBody, ErrorCode, Frame};

use crate::error::QueueError;
use crate::keepers::{ErrorKeeper, ErrorState, StatsKeeper};
use crate::queue::{Outcome, PauseWhat, QueueInfo, QueueKind, QueueOptions, WorkQueue, Worker, DEFAULT_MAX_UNCOMMITTED, MAX_UNCOMMITTED_LIMIT};
use crate::sender::{Outbound, QueuedSender};

/// The acknowledgement of a queued request: it is on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub uid: String,
}

/// What a queued handler is told besides the request.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub uid: String,
    /// Failed attempts before this one.
    pub attempts: u32,
}

type Validate = dyn Fn(&serde_json::Value) -> Result<(), String> + Send + Sync;

/// A queued endpoint: requests are validated, made durable, acknowledged
/// with their uid, then handled by the queue's loop.
pub struct QueuedEndpoint {
    route: String,
    queue: Arc<WorkQueue>,
    validate: Arc<Validate>,
}

impl QueuedEndpoint {
    pub fn route(&self) -> &str {
        &self.route
    }
    pub fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    /// Validate, store durably, return the uid (a fresh UUID v7 unless given;
    /// a uid already queued is not queued twice).
    pub async fn submit(&self, uid: Option<String>, request: &serde_json::Value) -> Result<String, QueueError> {
        (self.validate)(request).map_err(|reason| QueueError::BadRequest { route: self.route.clone(), reason })?;
        let body = serde_json::to_vec(request).map_err(|e| QueueError::BadRequest { route: self.route.clone(), reason: e.to_string() })?;
        let uid = uid.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        self.queue.enqueue(uid, None, Bytes::from(body)).await
    }
}

/// Statistics defaults: gather every 5 minutes, keep 12 (Ecosystem's STAT_GP
/// and STAT_HL).
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    pub gather_period: Duration,
    pub history_len: usize,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self { gather_period: Duration::from_secs(300), history_len: 12 }
    }
}

pub struct Manager {
    dir: PathBuf,
    endpoints: RwLock<BTreeMap<String, Arc<QueuedEndpoint>>>,
    senders: RwLock<BTreeMap<String, Arc<QueuedSender>>>,
    errors: Arc<ErrorKeeper>,
    stats: Arc<StatsKeeper>,
    /// `max_uncommitted` of queues created without one (node key
    /// `queues.max_uncommitted`).
    default_max_uncommitted: AtomicUsize,
    watch: Mutex<Watch>,
    watch_sent: AtomicU64,
    watch_dropped: AtomicU64,
}

/// Clients watching queue changes (`weft.queue.watch`), and what they were
/// last told per queue.
#[derive(Default)]
struct Watch {
    watchers: Vec<Watcher>,
    last: BTreeMap<(bool, String), QueueInfo>,
}

struct Watcher {
    kind: QueueKind,
    /// One queue, or every queue of the kind.
    name: Option<String>,
    sink: EventSink,
}

/// Watching connections at most (past this, `busy`): each costs a diff
/// per change.
pub const MAX_QUEUE_WATCHERS: usize = 256;
/// How often queue states are compared for `weft.queue.changed` events.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The event route for a changed queue of `kind`.
pub fn changed_route(kind: QueueKind) -> &'static str {
    match kind {
        QueueKind::Endpoint => "weft.queue.changed",
        QueueKind::Sender => "weft.sender.changed",
    }
}

fn mlock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rlock<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn wlock<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// File name for a queue: route keys may hold any byte, file names may not.
fn file_name(kind: &str, name: &str) -> String {
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' }).collect();
    let hash = crc32c::crc32c(name.as_bytes());
    format!("{kind}-{safe}-{hash:08x}.wq")
}

impl Manager {
    /// A manager keeping its queues under `dir` (one log file per queue), for
    /// `service`. Starts the statistics gatherer (needs a tokio runtime).
    pub fn new(dir: &Path, service: &Service, options: ManagerOptions) -> Result<Arc<Self>, QueueError> {
        tokio::runtime::Handle::try_current().map_err(|_| QueueError::NoRuntime)?;
        std::fs::create_dir_all(dir).map_err(|source| QueueError::Io { path: dir.to_owned(), op: "create directory", source })?;
        let stats = StatsKeeper::new(service.stats(), options.gather_period, options.history_len);
        stats.spawn();
        let m = Arc::new(Manager {
            dir: dir.to_owned(),
            endpoints: RwLock::new(BTreeMap::new()),
            senders: RwLock::new(BTreeMap::new()),
            errors: Arc::new(ErrorKeeper::default()),
            stats,
            default_max_uncommitted: AtomicUsize::new(DEFAULT_MAX_UNCOMMITTED),
            watch: Mutex::new(Watch::default()),
            watch_sent: AtomicU64::new(0),
            watch_dropped: AtomicU64::new(0),
        });
        // Push queue changes to watchers; ends when the manager is dropped.
        let weak = Arc::downgrade(&m);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { return };
                if m.stats.is_stopped() {
                    return;
                }
                m.push_changes();
            }
        });
        // Queue and sender sizes as flat statistics keys.
        let weak = Arc::downgrade(&m);
        service.stats().add_gauges(move || {
            let Some(m) = weak.upgrade() else { return vec![] };
            let mut out = vec![];
            for (prefix, infos) in [("queue", m.endpoint_infos()), ("sender", m.sender_infos())] {
                for i in infos {
                    for (k, v) in [
                        ("incoming", i.incoming as u64),
                        ("errors", i.errors as u64),
                        ("in_flight", i.in_flight as u64),
                        ("processed", i.processed),
                        ("moved_to_error", i.moved_to_error),
                        ("uncommitted", i.uncommitted as u64),
                        ("max_uncommitted", i.max_uncommitted as u64),
                    ] {
                        out.push((format!("{prefix}.{}.{k}", i.name), v.into()));
                    }
                }
            }
            out.push(("queue.watchers".to_owned(), (mlock(&m.watch).watchers.len() as u64).into()));
            out.push(("queue.watch.events_sent".to_owned(), m.watch_sent.load(Ordering::Relaxed).into()));
            out.push(("queue.watch.events_dropped".to_owned(), m.watch_dropped.load(Ordering::Relaxed).into()));
            // Error states as statistics: `error.<ID>` is the raise count
            // (0 once cleared), `errors.active` the states now raised.
            let states = m.errors.all();
            out.push(("errors.active".to_owned(), (states.iter().filter(|e| e.count > 0).count() as u64).into()));
            for e in states {
                out.push((format!("error.{}", e.error_id), e.count.into()));
            }
            out
        });
        Ok(m)
    }

    /// `max_uncommitted` for queues created from now on whose options leave
    /// it unset (1 to [`MAX_UNCOMMITTED_LIMIT`], clamped).
    pub fn set_default_max_uncommitted(&self, n: usize) {
        self.default_max_uncommitted.store(n.clamp(1, MAX_UNCOMMITTED_LIMIT), Ordering::SeqCst);
    }

    fn with_default(&self, mut options: QueueOptions) -> QueueOptions {
        options.max_uncommitted = options.max_uncommitted.or(Some(self.default_max_uncommitted.load(Ordering::SeqCst)));
        options
    }

    /// Send `weft.queue.changed` / `weft.sender.changed` (body `QueueInfo`)
    /// to the watchers of every queue whose state changed since the last
    /// call, and forget watchers whose connection closed.
    fn push_changes(&self) {
        let mut w = mlock(&self.watch);
        w.watchers.retain(|x| !x.sink.is_closed());
        if w.watchers.is_empty() {
            w.last.clear();
            return;
        }
        for (kind, infos) in [(QueueKind::Endpoint, self.endpoint_infos()), (QueueKind::Sender, self.sender_infos())] {
            for info in infos {
                // The age of the oldest item changes every millisecond: not a change.
                let key_info = QueueInfo { oldest_incoming_age_ms: 0, ..info.clone() };
                let key = (kind == QueueKind::Sender, info.name.clone());
                if w.last.get(&key) == Some(&key_info) {
                    continue;
                }
                w.last.insert(key, key_info);
                for x in w.watchers.iter().filter(|x| x.kind == kind && x.name.as_ref().is_none_or(|n| *n == info.name)) {
                    match x.sink.send(changed_route(kind), &info) {
                        Ok(()) => {
                            self.watch_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            self.watch_dropped.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(queue = %info.name, error = %e, "queue change event not sent");
                        }
                    }
                }
            }
        }
    }

    pub fn errors(&self) -> &Arc<ErrorKeeper> {
        &self.errors
    }
    pub fn stats(&self) -> &Arc<StatsKeeper> {
        &self.stats
    }

    pub fn endpoint(&self, route: &str) -> Option<Arc<QueuedEndpoint>> {
        rlock(&self.endpoints).get(route).cloned()
    }
    pub fn sender(&self, name: &str) -> Option<Arc<QueuedSender>> {
        rlock(&self.senders).get(name).cloned()
    }
    pub fn senders(&self) -> Vec<Arc<QueuedSender>> {
        rlock(&self.senders).values().cloned().collect()
    }
    pub fn endpoints(&self) -> Vec<Arc<QueuedEndpoint>> {
        rlock(&self.endpoints).values().cloned().collect()
    }
    pub fn endpoint_infos(&self) -> Vec<QueueInfo> {
        rlock(&self.endpoints).values().map(|e| e.queue.info()).collect()
    }
    pub fn sender_infos(&self) -> Vec<QueueInfo> {
        rlock(&self.senders).values().map(|s| s.info()).collect()
    }
    fn queue_of(&self, kind: QueueKind, name: &str) -> Result<Arc<WorkQueue>, QueueError> {
        let q = match kind {
            QueueKind::Endpoint => self.endpoint(name).map(|e| e.queue.clone()),
            QueueKind::Sender => self.sender(name).map(|s| s.queue().clone()),
        };
        q.ok_or_else(|| QueueError::NoQueue(name.to_owned()))
    }

    /// Register a queued endpoint whose handler gets the request.
    pub fn queued_endpoint<Req, F, Fut>(&self, service: &mut Service, route: &str, options: QueueOptions, f: F) -> Result<Arc<QueuedEndpoint>, QueueError>
    where
        Req: DeserializeOwned + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        self.queued_endpoint_with(service, route, options, move |req: Req, _d: Delivery| f(req))
    }

    /// Register a queued endpoint whose handler also gets the uid and attempt
    /// count. A handler error or panic is a failed attempt (retried, then the
    /// error queue); `ServiceError::Busy` is transient (retried with back-off,
    /// not counted against `max_retries`); the loop goes on.
    pub fn queued_endpoint_with<Req, F, Fut>(&self, service: &mut Service, route: &str, options: QueueOptions, f: F) -> Result<Arc<QueuedEndpoint>, QueueError>
    where
        Req: DeserializeOwned + Send + 'static,
        F: Fn(Req, Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        if rlock(&self.endpoints).contains_key(route) {
            return Err(QueueError::Duplicate(route.to_owned()));
        }
        let f = Arc::new(f);
        let worker: Worker = Arc::new(move |item| {
            let f = f.clone();
            Box::pin(async move {
                let req: Req = match serde_json::from_slice(&item.body) {
                    Ok(r) => r,
                    Err(e) => return Outcome::Fatal(format!("stored request does not decode: {e}")),
                };
                match f(req, Delivery { uid: item.uid.clone(), attempts: item.attempts }).await {
                    Ok(()) => Outcome::Done,
                    // "Busy" says nothing about the request (a dependency is
                    // saturated): retry with back-off without using up retries.
                    Err(e @ ServiceError::Busy(_)) => Outcome::Transient(e.to_string()),
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            })
        });
        let path = self.dir.join(file_name("endpoint", route));
        let queue = WorkQueue::start(route, QueueKind::Endpoint, &path, self.with_default(options), worker)?;
        let validate: Arc<Validate> = Arc::new(|v: &serde_json::Value| serde_json::from_value::<Req>(v.clone()).map(|_| ()).map_err(|e| e.to_string()));
        let ep = Arc::new(QueuedEndpoint { route: route.to_owned(), queue, validate });
        let ep2 = ep.clone();
        service.raw_endpoint(route, move |body: Bytes, format: BodyFormat| {
            let ep = ep2.clone();
            async move {
                let value: serde_json::Value = if body.is_empty() {
                    serde_json::Value::Null
                } else {
                    format.decode(&body).map_err(|e| {
                        ServiceError::Wire(ErrorBody::new(ErrorCode::BadBody, format!("cannot decode request body: {e}")))
                    })?
                };
                let uid = ep.submit(None, &value).await?;
                format.encode(&Ack { uid }).map_err(|e| ServiceError::handler(e.to_string()))
            }
        })?;
        wlock(&self.endpoints).insert(route.to_owned(), ep.clone());
        Ok(ep)
    }

    /// Create a durable queued sender named `name` delivering to `route`
    /// through `outbound`.
    pub fn queued_sender(&self, name: &str, route: &str, outbound: Arc<dyn Outbound>, options: QueueOptions) -> Result<Arc<QueuedSender>, QueueError> {
        if rlock(&self.senders).contains_key(name) {
            return Err(QueueError::Duplicate(name.to_owned()));
        }
        let r = route.to_owned();
        let out = outbound.clone();
        let worker: Worker = Arc::new(move |item| out.clone().deliver(&r, &item.uid, item.body.clone()));
        let path = self.dir.join(file_name("sender", name));
        let queue = WorkQueue::start(name, QueueKind::Sender, &path, self.with_default(options), worker)?;
        let s = Arc::new(QueuedSender::new(name.to_owned(), route.to_owned(), queue, outbound));
        wlock(&self.senders).insert(name.to_owned(), s.clone());
        Ok(s)
    }

    /// Stop every queue loop, waiting up to `drain` for running handlers.
    pub async fn shutdown(&self, drain: Duration) {
        self.stats.stop();
        let qs: Vec<Arc<WorkQueue>> = rlock(&self.endpoints)
            .values()
            .map(|e| e.queue.clone())
            .chain(rlock(&self.senders).values().map(|s| s.queue().clone()))
            .collect();
        for q in qs {
            q.shutdown(drain).await;
        }
    }

    /// Register the management endpoints on `service`.
    pub fn register(self: &Arc<Self>, service: &mut Service) -> Result<(), QueueError> {
        for (kind, prefix) in [(QueueKind::Endpoint, "weft.queue"), (QueueKind::Sender, "weft.sender")] {
            self.register_queue_ops(service, kind, prefix)?;
        }
        let m = self.clone();
        service.endpoint("weft.stats.current", move |_: Option<Empty>| {
            let m = m.clone();
            async move { Ok(m.stats.current()) }
        })?;
        let m = self.clone();
        service.endpoint("weft.stats.gathered", move |_: Option<Empty>| {
            let m = m.clone();
            async move { Ok(m.stats.gathered()) }
        })?;
        let m = self.clone();
        service.endpoint("weft.stats.full", move |_: Option<Empty>| {
            let m = m.clone();
            async move { Ok(m.stats.full()) }
        })?;
        let m = self.clone();
        service.endpoint("weft.errors.get", move |_: Option<Empty>| {
            let m = m.clone();
            async move { Ok(m.errors.list()) }
        })?;
        let m = self.clone();
        service.endpoint("weft.errors.clear", move |r: Option<ClearErrors>| {
            let m = m.clone();
            async move {
                match r.and_then(|r| r.error_id.map(|id| (id, r.count))) {
                    Some((id, count)) => m.errors.clear(&id, count),
                    None => m.errors.clear_all(),
                }
                Ok::<Vec<ErrorState>, ServiceError>(m.errors.list())
            }
        })?;
        Ok(())
    }

    fn register_queue_ops(self: &Arc<Self>, service: &mut Service, kind: QueueKind, prefix: &str) -> Result<(), QueueError> {
        let m = self.clone();
        service.endpoint(&format!("{prefix}.ls"), move |_: Option<Empty>| {
            let m = m.clone();
            async move {
                Ok(match kind {
                    QueueKind::Endpoint => m.endpoint_infos(),
                    QueueKind::Sender => m.sender_infos(),
                })
            }
        })?;
        let m = self.clone();
        service.endpoint(&format!("{prefix}.show"), move |r: NameReq| {
            let m = m.clone();
            async move { Ok(m.queue_of(kind, &r.name)?.info()) }
        })?;
        for (op, pause) in [("pause", true), ("resume", false)] {
            let m = self.clone();
            service.endpoint(&format!("{prefix}.{op}"), move |r: PauseReq| {
                let m = m.clone();
                async move {
                    let q = m.queue_of(kind, &r.name)?;
                    let what = r.what.unwrap_or(PauseWhat::All);
                    if pause { q.pause(what) } else { q.resume(what) }
                    Ok(q.info())
                }
            })?;
        }
        let m = self.clone();
        service.endpoint_with(&format!("{prefix}.watch"), EndpointOptions::default(), move |r: Option<WatchReq>, peer: Arc<PeerInfo>| {
            let m = m.clone();
            async move {
                let name = r.and_then(|r| r.name);
                if let Some(n) = &name {
                    m.queue_of(kind, n)?;
                }
                let Some(sink) = peer.events.clone() else {
                    return Err(ServiceError::validation("watching needs a stream connection (tcp, unix or tls): events are not sent on udp or quic"));
                };
                let mut w = mlock(&m.watch);
                // A connection that watches again replaces its earlier watch
                // (clients renew it to survive reconnections).
                w.watchers.retain(|x| !(x.sink.is_closed() || (x.kind == kind && x.sink.same_connection(&sink))));
                if w.watchers.len() >= MAX_QUEUE_WATCHERS {
                    return Err(ServiceError::Busy(format!("{MAX_QUEUE_WATCHERS} connections already watch queues")));
                }
                w.watchers.push(Watcher { kind, name: name.clone(), sink });
                // Everyone is told the next change; this one starts from now.
                drop(w);
                let infos = match kind {
                    QueueKind::Endpoint => m.endpoint_infos(),
                    QueueKind::Sender => m.sender_infos(),
                };
                Ok(infos.into_iter().filter(|i| name.as_ref().is_none_or(|n| *n == i.name)).collect::<Vec<QueueInfo>>())
            }
        })?;
        let m = self.clone();
        service.endpoint(&format!("{prefix}.set"), move |r: SetReq| {
            let m = m.clone();
            async move {
                let q = m.queue_of(kind, &r.name)?;
                if let Some(n) = r.max_uncommitted {
                    q.set_max_uncommitted(n)?;
                }
                Ok(q.info())
            }
        })?;
        let m = self.clone();
        service.endpoint(&format!("{prefix}.errors"), move |r: ErrorsReq| {
            let m = m.clone();
            async move { Ok(m.queue_of(kind, &r.name)?.first_errors(r.n.unwrap_or(10).min(10_000))) }
        })?;
        let m = self.clone();
        service.endpoint(&format!("{prefix}.inspect"), move |r: UidReq| {
            let m = m.clone();
            async move { m.queue_of(kind, &r.name)?.inspect(&r.uid).ok_or_else(|| no_item(&r)) }
        })?;
        let m = self.clone();
        service.endpoint(&format!("{prefix}.pop"), move |r: UidReq| {
            let m = m.clone();
            async move { m.queue_of(kind, &r.name)?.pop_error(&r.uid).await?.ok_or_else(|| no_item(&r)) }
        })?;
        let m = self.clone();
        service.endpoint(&format!("{prefix}.reprocess"), move |r: ReprocessReq| {
            let m = m.clone();
            async move {
                let q = m.queue_of(kind, &r.name)?;
                let count = match &r.uid {
                    Some(uid) => match q.reprocess(uid).await? {
                        Some(_) => 1,
                        None => return Err(no_item(&UidReq { name: r.name.clone(), uid: uid.clone() })),
                    },
                    None => q.reprocess_all().await?,
                };
                Ok(Count { count })
            }
        })?;
        let m = self.clone();
        service.endpoint(&format!("{prefix}.clear"), move |r: NameReq| {
            let m = m.clone();
            async move { Ok(Count { count: m.queue_of(kind, &r.name)?.clear_errors().await? }) }
        })?;
        Ok(())
    }
}

fn no_item(r: &UidReq) -> ServiceError {
    ServiceError::validation(format!("no item {:?} in the error queue of {:?}", r.uid, r.name))
}

#[derive(Debug, Deserialize)]
struct Empty {}

/// Management request bodies (also used by the CLI).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameReq {
    pub name: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseReq {
    pub name: String,
    #[serde(default)]
    pub what: Option<PauseWhat>,
}
/// `weft.queue.watch` / `weft.sender.watch`: one queue, or all (no name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchReq {
    #[serde(default)]
    pub name: Option<String>,
}
/// `weft.queue.set` / `weft.sender.set`: run-time settings (absent = unchanged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetReq {
    pub name: String,
    #[serde(default)]
    pub max_uncommitted: Option<usize>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorsReq {
    pub name: String,
    #[serde(default)]
    pub n: Option<usize>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UidReq {
    pub name: String,
    pub uid: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReprocessReq {
    pub name: String,
    #[serde(default)]
    pub uid: Option<String>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    pub count: usize,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClearErrors {
    #[serde(default)]
    pub error_id: Option<String>,
    #[serde(default)]
    pub count: u64,
}

/// Wraps a transport handler to time every request into the statistics
/// keeper (per-period call counts and p95/p99 latencies). Serve this instead
/// of the service's own handler to get per-period numbers for native calls.
pub struct MeteredHandler {
    inner: Arc<dyn Handler>,
    /// `None` when the inner handler reports the calls itself (a
    /// [`SharedService`] observed at construction).
    stats: Option<Arc<StatsKeeper>>,
}

impl MeteredHandler {
    /// Wraps any handler: each call is timed around its future.
    pub fn new(inner: Arc<dyn Handler>, stats: Arc<StatsKeeper>) -> Arc<Self> {
        Arc::new(Self { inner, stats: Some(stats) })
    }

    /// A service's handler (what `Service::into_handler` gives) is metered
    /// through its observer, without a second boxed future per request:
    /// `stats` then sees every call served through that handler, also
    /// through another wrapper. A service already observed is wrapped.
    pub fn for_service(service: Arc<SharedService>, stats: Arc<StatsKeeper>) -> Arc<Self> {
        let keeper = stats.clone();
        if service.observe(Box::new(move |route: &str, elapsed| keeper.record(route, elapsed))) {
            return Arc::new(Self { inner: service, stats: None });
        }
        Self::new(service, stats)
    }
}

impl Handler for MeteredHandler {
    fn handle(&self, frame: Frame, peer: Arc<PeerInfo>) -> HandlerFuture {
        let Some(stats) = &self.stats else {
            return self.inner.handle(frame, peer);
        };
        let route = RouteKey::new(&frame.route);
        let fut = self.inner.handle(frame, peer);
        let stats = stats.clone();
        Box::pin(async move {
            let started = Instant::now();
            let out = fut.await;
            stats.record(route.as_str(), started.elapsed());
            out
        })
    }
}

/// A request's route, kept until its call is recorded: in place when short
/// (every registered route is), so a request costs no heap copy of it.
enum RouteKey {
    Inline(u8, [u8; ROUTE_INLINE]),
    Heap(String),
}

const ROUTE_INLINE: usize = 46;

impl RouteKey {
    fn new(route: &str) -> Self {
        let mut buf = [0u8; ROUTE_INLINE];
        match buf.get_mut(..route.len()) {
            Some(b) => {
                b.copy_from_slice(route.as_bytes());
                // Fits: len <= ROUTE_INLINE < 256.
                RouteKey::Inline(route.len() as u8, buf)
            }
            None => RouteKey::Heap(route.to_owned()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // The bytes of a whole &str: always UTF-8.
            RouteKey::Inline(len, buf) => buf.get(..usize::from(*len)).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or_default(),
            RouteKey::Heap(s) => s,
        }
    }
}

#[cfg(test)]
mod metered_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use weft_net::{Handler, PeerInfo, Transport};
    use weft_service::Service;
    use weft_wire::{BodyFormat, Frame, FrameKind, MessageId};

    use super::MeteredHandler;
    use crate::keepers::StatsKeeper;

    fn calls(stats: &StatsKeeper, route: &str) -> u64 {
        stats.current().endpoints.get(route).map_or(0, |e| e.call_count)
    }

    #[tokio::test]
    async fn a_shared_service_is_metered_through_its_observer_and_a_second_wrapper_still_counts() {
        let svc = Service::new("t");
        let stats = StatsKeeper::new(svc.stats(), Duration::from_secs(60), 2);
        let shared = svc.into_handler();
        let metered = MeteredHandler::for_service(shared.clone(), stats.clone());
        assert!(metered.stats.is_none(), "observed, not wrapped");
        let peer = Arc::new(PeerInfo::new(Transport::Tcp, "127.0.0.1:1"));
        let ping = Frame::request(MessageId::nil(), "weft.ping", BodyFormat::MsgPack, &()).unwrap();
        let nope = Frame::request(MessageId::nil(), "no.such", BodyFormat::MsgPack, &()).unwrap();
        for _ in 0..3 {
            assert_eq!(metered.handle(ping.clone(), peer.clone()).await.unwrap().kind, FrameKind::Response);
        }
        assert_eq!(metered.handle(nope.clone(), peer.clone()).await.unwrap().kind, FrameKind::Error);
        assert_eq!((calls(&stats, "weft.ping"), calls(&stats, "no.such")), (3, 1));
        // The service has its observer: another keeper wraps instead; both
        // count (the first sees every call served through the service).
        let other = StatsKeeper::new(shared.0.stats(), Duration::from_secs(60), 2);
        let wrapped = MeteredHandler::for_service(shared.clone(), other.clone());
        assert!(wrapped.stats.is_some());
        wrapped.handle(ping.clone(), peer.clone()).await.unwrap();
        assert_eq!((calls(&stats, "weft.ping"), calls(&other, "weft.ping")), (4, 1));
        // A plain dyn Handler is wrapped as before.
        let dynamic: Arc<dyn Handler> = shared.clone();
        let third = StatsKeeper::new(shared.0.stats(), Duration::from_secs(60), 2);
        let wrapped = MeteredHandler::new(dynamic, third.clone());
        wrapped.handle(ping, peer).await.unwrap();
        assert_eq!((calls(&stats, "weft.ping"), calls(&third, "weft.ping")), (5, 1));
        // Service::dispatch itself (the ekosis listener's path, which
        // records on its own) is not observed.
        let f = Frame::request(MessageId::nil(), "weft.ping", BodyFormat::MsgPack, &()).unwrap();
        shared.0.dispatch(f, Arc::new(PeerInfo::new(Transport::Tcp, "x"))).await;
        assert_eq!(calls(&stats, "weft.ping"), 5);
    }
}

#[cfg(test)]
mod route_key_tests {
    use super::RouteKey;

    #[test]
    fn short_routes_in_place_long_ones_on_the_heap() {
        for r in ["", "weft.ping", "log.produce", &"r".repeat(super::ROUTE_INLINE), &"é".repeat(40), &"x".repeat(255)] {
            let k = RouteKey::new(r);
            assert_eq!(k.as_str(), r);
            assert_eq!(matches!(k, RouteKey::Inline(..)), r.len() <= super::ROUTE_INLINE, "{r}");
        }
    }
}
