//! The web dashboard of `weft serve` (docs/dashboard.md): the React bundle
//! built from `web/` and committed in `web/dist/`, embedded here so a fresh
//! clone serves it from `cargo run` without Node.js; one WebSocket feed
//! (`/ui/ws`) pushing a JSON snapshot of the node every `ui.period_ms`; the
//! queue management operations as HTTP POSTs; and a WebSocket per watched
//! table (`/ui/api/tables/{table}/watch`). The AQL console posts to the
//! gateway's own `POST /v1/query` (weft-api). Merged into the HTTP
//! gateway's router, so its allow-list, body limit, statistics and any
//! middleware added there cover these routes too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weft_broker::http::ApiError;
use weft_log::Log;
use weft_metrics::l1;
use weft_queue::{Manager, PauseWhat, QueueInfo, WorkQueue};
use weft_service::SharedService;
use weft_wire::{ErrorBody, ErrorCode};

// The built bundle (web/dist, committed; `npm run build` in web/ writes it
// with fixed file names, see web/vite.config.ts).
const INDEX_HTML: &str = include_str!("../../../web/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../../web/dist/assets/app.js");
const APP_CSS: &[u8] = include_bytes!("../../../web/dist/assets/app.css");

/// PVs listed in a snapshot, at most (the rest are counted in `pvs_omitted`).
#[cfg_attr(not(feature = "pva"), allow(dead_code))] // built without pvAccess: no PVs
const MAX_PVS: usize = 200;
/// Error-queue items one `errors` request returns, at most.
const MAX_ERROR_ITEMS: usize = 100;
/// Tables listed in a snapshot, at most (the rest are counted in `tables_omitted`).
const MAX_TABLES: usize = 200;

/// What one PV looks like in a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct PvView {
    pub name: String,
    /// The normative type id (`epics:nt/NTScalar:1.0`), or the structure's.
    pub r#type: String,
    pub writable: bool,
    /// The value as text (arrays: their length and first elements).
    pub display: String,
    /// The value as a number when it is one (enums: the index): what the plot draws.
    pub number: Option<f64>,
}

/// Reads the PVs this node serves (set once the pvAccess server runs): at
/// most `MAX_PVS` of them, and how many PVs there are in all.
pub type PvSource = Box<dyn Fn() -> (Vec<PvView>, usize) + Send + Sync>;
/// A read of `cluster.status`.
pub type StatusFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send>>;
/// `cluster.status` of this node, when it is a cluster member.
pub type ClusterSource = Arc<dyn Fn() -> StatusFuture + Send + Sync>;

/// Settings (`ui.*` keys).
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// Dashboard WebSockets open at once; more are refused with 503 (`busy`).
    pub max_clients: usize,
    /// Time between two snapshots.
    pub period: Duration,
    /// Table watch WebSockets open at once; more are refused with 429 (`busy`).
    pub max_watches: usize,
}

/// Shared by the routes and the snapshot task.
pub struct Ui {
    log: Log,
    queues: Arc<Manager>,
    readiness: Arc<crate::observe::Readiness>,
    service: Arc<SharedService>,
    tables: weft_table::Tables,
    /// The node's query executor with weft-auth as its access hook.
    query: weft_api::Executor,
    cluster: Option<ClusterSource>,
    pvs: RwLock<Option<PvSource>>,
    opts: UiOptions,
    clients: AtomicUsize,
    refused: AtomicUsize,
    snapshots: AtomicUsize,
    watches: AtomicUsize,
    watches_refused: AtomicUsize,
    feed: watch::Receiver<Arc<str>>,
    feed_tx: std::sync::Mutex<Option<watch::Sender<Arc<str>>>>,
    /// `?v=` tag of the assets: changes whenever the bundle does, so they
    /// can be cached for good.
    version: String,
    index: String,
}

impl Ui {
    pub fn new(
        log: Log,
        queues: Arc<Manager>,
        readiness: Arc<crate::observe::Readiness>,
        service: Arc<SharedService>,
        query: (weft_api::Executor, Arc<weft_auth::Authorizer>),
        cluster: Option<ClusterSource>,
        opts: UiOptions,
    ) -> Arc<Ui> {
        let (exec, authz) = query;
        let tables = exec.tables().clone();
        // Every statement of the console checked for the caller, as on gRPC
        // (weft-auth allows everything while auth is off).
        let query = exec.with_authorizer(Arc::new(weft_api::auth::WeftAuth(authz)));
        let (tx, rx) = watch::channel::<Arc<str>>(Arc::from("{}"));
        let version = format!("{:016x}", fnv1a(&[INDEX_HTML.as_bytes(), APP_JS, APP_CSS]));
        let index = INDEX_HTML
            .replace("/ui/assets/app.js", &format!("/ui/assets/app.js?v={version}"))
            .replace("/ui/assets/app.css", &format!("/ui/assets/app.css?v={version}"));
        Arc::new(Ui {
            log,
            queues,
            readiness,
            service,
            tables,
            query,
            cluster,
            pvs: RwLock::new(None),
            opts,
            clients: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            snapshots: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
            watches_refused: AtomicUsize::new(0),
            feed: rx,
            feed_tx: std::sync::Mutex::new(Some(tx)),
            version,
            index,
        })
    }

    /// The pvAccess server is up: list its PVs from now on.
    #[cfg_attr(not(feature = "pva"), allow(dead_code))] // built without pvAccess: no PVs
    pub fn set_pvs(&self, source: PvSource) {
        *self.pvs.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// `ui.*` statistics for `weft stats`.
    pub fn gauges(&self) -> Vec<(String, serde_json::Value)> {
        vec![
            ("ui.clients".into(), self.clients.load(Ordering::Relaxed).into()),
            ("ui.clients_max".into(), self.opts.max_clients.into()),
            ("ui.clients_refused".into(), self.refused.load(Ordering::Relaxed).into()),
            ("ui.snapshots".into(), self.snapshots.load(Ordering::Relaxed).into()),
            ("ui.watches".into(), self.watches.load(Ordering::Relaxed).into()),
            ("ui.watches_max".into(), self.opts.max_watches.into()),
            ("ui.watches_refused".into(), self.watches_refused.load(Ordering::Relaxed).into()),
        ]
    }

    /// Start the snapshot task; it ends (closing every dashboard feed) when
    /// `stop` resolves.
    pub fn start(self: &Arc<Self>, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        let Some(tx) = self.feed_tx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let ui = self.clone();
        tokio::spawn(async move {
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(ui.opts.period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rates = Rates::default();
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tick.tick() => {}
                }
                // Only our own receiver: nobody watches, so compute nothing
                // (and start the rates afresh when someone comes).
                if tx.receiver_count() <= 1 {
                    rates = Rates::default();
                    continue;
                }
                let snap = ui.snapshot(&mut rates).await;
                match serde_json::to_string(&snap) {
                    Ok(text) => {
                        ui.snapshots.fetch_add(1, Ordering::Relaxed);
                        tx.send_replace(Arc::from(text));
                    }
                    Err(e) => tracing::error!(error = %e, "dashboard snapshot does not serialize"),
                }
            }
        });
    }

    async fn snapshot(&self, rates: &mut Rates) -> Snapshot {
        let now = Instant::now();
        let info = self.service.0.info();
        let checks = self.readiness.checks();
        let ready = checks.iter().all(|c| c.ok);
        let cluster = match &self.cluster {
            Some(f) => Some(match tokio::time::timeout(Duration::from_secs(2), f()).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => serde_json::json!({"error": e}),
                Err(_) => serde_json::json!({"error": "cluster.status did not answer within 2 s"}),
            }),
            None => None,
        };
        let m = weft_metrics::get();
        let mut topics = vec![];
        let mut seen = BTreeMap::new();
        for t in self.log.list_topics() {
            let name = t.as_str().to_owned();
            let Ok(parts) = self.log.partition_stats(&name) else { continue };
            let produced = m.produced_records.get(&l1("topic", name.clone())).map(|c| c.get()).unwrap_or(0);
            let fetched = m.fetched_records.get(&l1("topic", name.clone())).map(|c| c.get()).unwrap_or(0);
            let (produce_rate, consume_rate) = match rates.prev.get(&name) {
                Some(&(p0, f0, t0)) => {
                    let dt = now.duration_since(t0).as_secs_f64().max(1e-3);
                    (Some(produced.saturating_sub(p0) as f64 / dt), Some(fetched.saturating_sub(f0) as f64 / dt))
                }
                None => (None, None),
            };
            seen.insert(name.clone(), (produced, fetched, now));
            topics.push(TopicView {
                internal: name.starts_with("__"),
                name,
                produced_total: produced,
                fetched_total: fetched,
                produce_rate,
                consume_rate,
                partitions: parts
                    .iter()
                    .map(|p| PartitionView {
                        partition: p.partition.0,
                        start_offset: p.log_start_offset.0,
                        end_offset: p.log_end_offset.0,
                        high_watermark: p.high_watermark.0,
                        size_bytes: p.size_bytes,
                    })
                    .collect(),
            });
        }
        rates.prev = seen;
        let mut groups = vec![];
        for g in self.log.list_groups() {
            let Ok(d) = self.log.describe_group(&g.group) else { continue };
            groups.push(GroupView {
                group: g.group.clone(),
                state: g.state.clone(),
                members: g.members,
                lag: d.offsets.iter().map(|o| LagView { topic: o.topic.as_str().to_owned(), partition: o.partition.0, lag: o.lag }).collect(),
            });
        }
        let mut queues: Vec<QueueInfo> = self.queues.endpoint_infos();
        queues.extend(self.queues.sender_infos());
        let (pvs, pvs_total) = match self.pvs.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(f) => f(),
            None => (vec![], 0),
        };
        let pvs_omitted = pvs_total.saturating_sub(pvs.len());
        let mut all_tables = self.tables.list();
        all_tables.sort_by(|a, b| a.name.cmp(&b.name));
        let tables_omitted = all_tables.len().saturating_sub(MAX_TABLES);
        let tables = all_tables
            .into_iter()
            .take(MAX_TABLES)
            .map(|t| TableView { name: t.name, revision: t.revision, compact_revision: t.compact_revision, keys: t.keys, bytes: t.bytes })
            .collect();
        let h = self.log.health();
        Snapshot {
            r#type: "snapshot",
            time_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            node: NodeView {
                name: info.name,
                id: info.id,
                version: info.version,
                uptime_s: info.uptime_s,
                listeners: info.transports,
                ready,
                checks,
                disk_full: h.disk_full,
                partitions_poisoned: h.partitions_poisoned,
            },
            cluster,
            topics,
            groups,
            queues,
            pvs,
            pvs_omitted,
            tables,
            tables_omitted,
        }
    }
}

#[derive(Default)]
struct Rates {
    /// topic -> (records produced, records fetched, when).
    prev: BTreeMap<String, (u64, u64, Instant)>,
}

#[derive(Serialize)]
struct Snapshot {
    r#type: &'static str,
    time_ms: u64,
    node: NodeView,
    cluster: Option<serde_json::Value>,
    topics: Vec<TopicView>,
    groups: Vec<GroupView>,
    queues: Vec<QueueInfo>,
    pvs: Vec<PvView>,
    pvs_omitted: usize,
    tables: Vec<TableView>,
    tables_omitted: usize,
}

/// A table of this node's store (`weft_table::TableInfo` without its config).
#[derive(Serialize)]
struct TableView {
    name: String,
    revision: u64,
    compact_revision: u64,
    keys: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct NodeView {
    name: String,
    id: String,
    version: String,
    uptime_s: f64,
    listeners: Vec<String>,
    ready: bool,
    checks: Vec<crate::observe::Check>,
    disk_full: bool,
    partitions_poisoned: usize,
}

#[derive(Serialize)]
struct TopicView {
    name: String,
    internal: bool,
    produced_total: u64,
    fetched_total: u64,
    /// Records per second since the previous snapshot (absent in the first).
    produce_rate: Option<f64>,
    consume_rate: Option<f64>,
    partitions: Vec<PartitionView>,
}

#[derive(Serialize)]
struct PartitionView {
    partition: u32,
    start_offset: u64,
    end_offset: u64,
    high_watermark: u64,
    size_bytes: u64,
}

#[derive(Serialize)]
struct GroupView {
    group: String,
    state: String,
    members: usize,
    lag: Vec<LagView>,
}

#[derive(Serialize)]
struct LagView {
    topic: String,
    partition: u32,
    lag: u64,
}

/// FNV-1a over the parts: a stable tag of the embedded bundle.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// `/ui/...` routes, to merge into the gateway.
pub fn routes(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/ws", get(feed))
        .route("/ui/api/queues/{kind}/{name}/errors", get(queue_errors))
        .route("/ui/api/queues/{kind}/{name}/{op}", post(queue_op))
        .route("/ui/api/tables/{table}/watch", get(table_watch))
        .route("/ui/api/query", post(console_query))
        .route("/ui/api/{*rest}", get(api_404).post(api_404))
        // Client-side routes (/ui/topics, ...) load the app too.
        .route("/ui/{*rest}", get(index))
        .with_state(ui)
}

async fn index(State(ui): State<Arc<Ui>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            // The page names the assets by version: always ask for it again.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        ui.index.clone(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct AssetQuery {
    v: Option<String>,
}

async fn asset(State(ui): State<Arc<Ui>>, Path(file): Path<String>, Query(q): Query<AssetQuery>, headers: HeaderMap) -> Response {
    let (body, ctype) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return not_found(&format!("/ui/assets/{file}")),
    };
    let etag = format!("\"{}\"", ui.version);
    // Asked for by this bundle's version: it never changes under that URL.
    let cache = if q.v.as_deref() == Some(ui.version.as_str()) { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut resp = if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, ctype)], body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

fn not_found(path: &str) -> Response {
    ApiError(ErrorBody::new(ErrorCode::UnknownRoute, format!("no such path: {path}")).with_details(serde_json::json!({"kind": "no_route", "status": 404})))
        .into_response()
}

async fn api_404(uri: axum::http::Uri) -> Response {
    not_found(uri.path())
}

/// The live feed: the latest snapshot at once, then each new one.
async fn feed(State(ui): State<Arc<Ui>>, ws: WebSocketUpgrade) -> Response {
    // Count before upgrading so a burst cannot overshoot the bound.
    let n = ui.clients.fetch_add(1, Ordering::AcqRel);
    if n >= ui.opts.max_clients {
        ui.clients.fetch_sub(1, Ordering::AcqRel);
        ui.refused.fetch_add(1, Ordering::Relaxed);
        return ApiError(
            ErrorBody::new(ErrorCode::Busy, format!("{} dashboard feeds are open already (ui.max_clients)", ui.opts.max_clients))
                .with_details(serde_json::json!({"kind": "busy", "status": weft_broker::error::http_status(ErrorCode::Busy)})),
        )
        .into_response();
    }
    let guard = ClientGuard(ui.clone());
    ws.on_upgrade(move |socket| async move {
        let _guard = guard;
        pump(socket, ui.feed.clone()).await;
    })
}

struct ClientGuard(Arc<Ui>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn pump(mut socket: WebSocket, mut rx: watch::Receiver<Arc<str>>) {
    // Mark the current value unseen unless it is the placeholder, so a new
    // client gets the latest snapshot at once.
    let first = rx.borrow_and_update().clone();
    if &*first != "{}" && socket.send(Message::Text(first.to_string().into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The snapshot task stopped: the node is shutting down.
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                let text = rx.borrow_and_update().clone();
                if socket.send(Message::Text(text.to_string().into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleRequest {
    aql: String,
    /// Deadline in milliseconds (0 or absent: the query's own or `query.default_timeout_ms`).
    #[serde(default)]
    timeout_ms: u64,
}

/// The AQL console: runs one query as `POST /v1/query` does (same executor,
/// same JSON result and error body), with each statement checked for the
/// caller by weft-auth as on gRPC. A query that fails is an answer the
/// console shows, not a failed request: it comes back 200 with `ok: false`,
/// the error body and the status `/v1/query` would have answered, so the
/// browser does not log every typo as a failed resource load.
async fn console_query(State(ui): State<Arc<Ui>>, ext: axum::http::Extensions, body: axum::body::Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let req: ConsoleRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError(ErrorBody::new(ErrorCode::BadBody, format!("invalid JSON body: {e}"))))?;
    // The gateway's auth layer put the caller there (anonymous while auth is off).
    let who = ext.get::<weft_auth::Identity>().cloned().unwrap_or_else(weft_auth::Identity::nobody);
    let peer = ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default();
    let started = Instant::now();
    let q = weft_api::native::QueryRequest { aql: req.aql, timeout_ms: req.timeout_ms, serializable: false };
    let r = weft_api::auth::scoped(Some(weft_api::auth::Caller { who, peer, surface: "http" }), weft_api::native::run(&ui.query, &q, false, None)).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Json(match r {
        Ok(result) => serde_json::json!({"ok": true, "result": result, "elapsed_ms": elapsed_ms}),
        Err(e) => {
            let body = weft_api::json::error_body(&e);
            let status = weft_broker::error::http_status(body.code);
            tracing::debug!(error = %e, status, "console query failed");
            serde_json::json!({"ok": false, "status": status, "error": body, "elapsed_ms": elapsed_ms})
        }
    }))
}

#[derive(Deserialize)]
struct WatchQuery {
    /// First revision to send (stored history from there is replayed);
    /// absent or 0: only changes made from now on.
    from: Option<u64>,
}

/// A table's changes, live: one text message per event, in the JSON shape
/// of `weft kv watch --json` (`weft_api::json::event`), and a last
/// `{"type": "error", ...}` message when the watch ends (slow reader,
/// compaction, table dropped).
async fn table_watch(State(ui): State<Arc<Ui>>, Path(name): Path<String>, Query(q): Query<WatchQuery>, ws: WebSocketUpgrade) -> Result<Response, ApiError> {
    // Start the watch before upgrading, so a missing table or a refused
    // watch is a plain HTTP error.
    let table = ui.tables.get(&name).map_err(table_error)?;
    let n = ui.watches.fetch_add(1, Ordering::AcqRel);
    let guard = WatchGuard(ui.clone());
    if n >= ui.opts.max_watches {
        ui.watches_refused.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError(
            ErrorBody::new(ErrorCode::Busy, format!("{} table watches are open already (ui.max_watches)", ui.opts.max_watches))
                .with_details(serde_json::json!({"kind": "busy", "status": weft_broker::error::http_status(ErrorCode::Busy)})),
        ));
    }
    let spec = weft_table::WatchSpec { target: weft_table::WatchTarget::Prefix(Default::default()), start_revision: q.from.filter(|r| *r > 0), prev_kv: false };
    let watcher = table.watch(spec).map_err(table_error)?;
    tracing::debug!(table = %name, from = q.from, "dashboard table watch");
    Ok(ws.on_upgrade(move |socket| async move {
        let _guard = guard;
        follow_table(socket, watcher).await;
    }))
}

struct WatchGuard(Arc<Ui>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn follow_table(mut socket: WebSocket, mut watcher: weft_table::Watcher) {
    loop {
        tokio::select! {
            // Cancel-safe (weft-table): losing this branch loses no event.
            ev = watcher.next() => {
                let text = match ev {
                    Ok(e) => weft_api::json::event(&event_pb(e)).to_string(),
                    Err(e) => {
                        let body = table_error(e).0;
                        let end = serde_json::json!({"type": "error", "code": body.code, "message": body.message, "details": body.details});
                        let _ = socket.send(Message::Text(end.to_string().into())).await;
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

fn event_pb(e: weft_table::Event) -> weft_api::pb::Event {
    let kv = |k: weft_table::KeyValue| weft_api::pb::KeyValue {
        key: k.key.to_vec(),
        value: k.value.to_vec(),
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        deleted: false,
    };
    weft_api::pb::Event {
        r#type: match e.kind {
            weft_table::EventKind::Put => weft_api::pb::EventType::Put as i32,
            weft_table::EventKind::Delete => weft_api::pb::EventType::Delete as i32,
        },
        kv: Some(kv(e.kv)),
        prev_kv: e.prev_kv.map(kv),
        revision: e.revision,
    }
}

/// A table error as the gateway's error body, with its stable kind.
fn table_error(e: weft_table::Error) -> ApiError {
    use weft_table::Error as E;
    let code = match &e {
        E::NotFound(_) | E::Dropped(_) => ErrorCode::NotFound,
        E::InvalidArgument { .. } | E::NotJson { .. } | E::TooLarge { .. } => ErrorCode::Validation,
        E::Compacted { .. } | E::FutureRevision { .. } => ErrorCode::OutOfRange,
        E::TooMany { .. } | E::SlowWatcher { .. } => ErrorCode::Busy,
        _ => ErrorCode::Internal,
    };
    ApiError(ErrorBody::new(code, e.to_string()).with_details(serde_json::json!({"kind": e.kind(), "status": weft_broker::error::http_status(code)})))
}

fn queue_of(ui: &Ui, kind: &str, name: &str) -> Result<Arc<WorkQueue>, ApiError> {
    let q = match kind {
        "endpoint" => ui.queues.endpoint(name).map(|e| e.queue().clone()),
        "sender" => ui.queues.sender(name).map(|s| s.queue().clone()),
        other => return Err(validation(format!("queue kind must be endpoint or sender, not {other:?}"))),
    };
    q.ok_or_else(|| ApiError(ErrorBody::new(ErrorCode::NotFound, format!("no queued {kind} {name:?}")).with_details(serde_json::json!({"kind": "no_queue"}))))
}

fn validation(msg: String) -> ApiError {
    ApiError(ErrorBody::new(ErrorCode::Validation, msg))
}

fn queue_error(e: weft_queue::QueueError) -> ApiError {
    ApiError(ErrorBody::new(ErrorCode::Internal, e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsQuery {
    n: Option<usize>,
}

/// The oldest items of an error queue, whole (uid, attempts, reason, request).
async fn queue_errors(State(ui): State<Arc<Ui>>, Path((kind, name)): Path<(String, String)>, Query(q): Query<ErrorsQuery>) -> Result<Json<Vec<weft_queue::ItemView>>, ApiError> {
    let queue = queue_of(&ui, &kind, &name)?;
    let n = q.n.unwrap_or(20).min(MAX_ERROR_ITEMS);
    Ok(Json(queue.first_errors(n).iter().filter_map(|uid| queue.inspect(uid)).collect()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OpBody {
    /// reprocess: one item (none: all of them).
    #[serde(default)]
    uid: Option<String>,
    /// pause/resume: what (default all).
    #[serde(default)]
    what: Option<PauseWhat>,
}

#[derive(Serialize)]
struct OpAnswer {
    /// Items moved (reprocess) or dropped (clear).
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    queue: QueueInfo,
}

/// `reprocess`, `clear`, `pause`, `resume`: the operations of
/// `weft.queue.*` / `weft.sender.*`, for the dashboard's buttons.
async fn queue_op(State(ui): State<Arc<Ui>>, Path((kind, name, op)): Path<(String, String, String)>, body: axum::body::Bytes) -> Result<Json<OpAnswer>, ApiError> {
    let queue = queue_of(&ui, &kind, &name)?;
    let req: OpBody = if body.iter().all(u8::is_ascii_whitespace) {
        OpBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError(ErrorBody::new(ErrorCode::BadBody, format!("invalid JSON body: {e}"))))?
    };
    let count = match op.as_str() {
        "reprocess" => Some(match &req.uid {
            Some(uid) => match queue.reprocess(uid).await.map_err(queue_error)? {
                Some(_) => 1,
                None => return Err(validation(format!("no item {uid:?} in the error queue of {name:?}"))),
            },
            None => queue.reprocess_all().await.map_err(queue_error)?,
        }),
        "clear" => Some(queue.clear_errors().await.map_err(queue_error)?),
        "pause" => {
            queue.pause(req.what.unwrap_or(PauseWhat::All));
            None
        }
        "resume" => {
            queue.resume(req.what.unwrap_or(PauseWhat::All));
            None
        }
        other => return Err(not_found_op(other)),
    };
    tracing::info!(kind = %kind, queue = %name, op = %op, count, "queue operation from the dashboard");
    Ok(Json(OpAnswer { count, queue: queue.info() }))
}

fn not_found_op(op: &str) -> ApiError {
    ApiError(
        ErrorBody::new(ErrorCode::UnknownRoute, format!("no queue operation {op:?}: reprocess, clear, pause or resume"))
            .with_details(serde_json::json!({"kind": "no_route", "status": 404})),
    )
}

/// The PVs of a pvAccess provider, for the snapshot.
#[cfg(feature = "pva")]
pub fn pv_source(provider: weft_pva::server::Provider) -> PvSource {
    use weft_pva::server::Entry;
    Box::new(move || {
        let mut out = vec![];
        // PVs only (RPC names have no value), by name.
        let all: Vec<(String, weft_pva::server::SharedPv)> = provider
            .names()
            .into_iter()
            .filter_map(|n| match provider.get(&n) {
                Some(Entry::Pv(pv)) => Some((n, pv)),
                _ => None,
            })
            .collect();
        // Only the first MAX_PVS are read: each read converts the whole value.
        for (name, pv) in all.iter().take(MAX_PVS) {
            let writable = pv.is_writable();
            let Some(view) = pv.with_current(|desc, value| {
                let j = weft_pva::format::to_json(desc, value);
                pv_view(name.clone(), desc_id(desc), writable, &j)
            }) else {
                continue;
            };
            out.push(view);
        }
        (out, all.len())
    })
}

#[cfg(feature = "pva")]
fn desc_id(desc: &weft_pva::proto::FieldDesc) -> String {
    match desc {
        weft_pva::proto::FieldDesc::Structure(m) => m.id.clone(),
        _ => String::new(),
    }
}

/// Display text and plotted number of a PV's JSON form (`value` of a
/// normative type; enums' `value.index` and the choice's name).
#[cfg_attr(not(feature = "pva"), allow(dead_code))] // built without pvAccess: no PVs
fn pv_view(name: String, ty: String, writable: bool, j: &serde_json::Value) -> PvView {
    use serde_json::Value as J;
    let v = j.get("value").unwrap_or(j);
    let (display, number) = match v {
        J::Number(n) => (n.to_string(), n.as_f64()),
        J::Bool(b) => (b.to_string(), Some(f64::from(u8::from(*b)))),
        J::String(s) => (s.chars().take(200).collect(), None),
        J::Array(a) => {
            let head: Vec<String> = a.iter().take(4).map(|x| x.to_string()).collect();
            (format!("[{}{}] ({} elements)", head.join(", "), if a.len() > 4 { ", …" } else { "" }, a.len()), None)
        }
        J::Object(o) if o.contains_key("index") && o.contains_key("choices") => {
            let idx = o.get("index").and_then(J::as_i64).unwrap_or(-1);
            let choice = o.get("choices").and_then(J::as_array).and_then(|c| usize::try_from(idx).ok().and_then(|i| c.get(i))).and_then(J::as_str);
            (choice.map_or_else(|| idx.to_string(), str::to_owned), Some(idx as f64))
        }
        J::Null => ("—".into(), None),
        other => {
            let s = other.to_string();
            (s.chars().take(200).collect(), None)
        }
    };
    PvView { name, r#type: ty, writable, display, number }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is the test failing
mod tests {
    use super::*;

    #[test]
    fn pv_values_become_text_and_numbers() {
        let v = pv_view("a".into(), "t".into(), true, &serde_json::json!({"value": 2.5}));
        assert_eq!((v.display.as_str(), v.number), ("2.5", Some(2.5)));
        let v = pv_view("a".into(), "t".into(), true, &serde_json::json!({"value": {"index": 1, "choices": ["Off", "On"]}}));
        assert_eq!((v.display.as_str(), v.number), ("On", Some(1.0)));
        let v = pv_view("a".into(), "t".into(), false, &serde_json::json!({"value": [1, 2, 3, 4, 5]}));
        assert_eq!((v.display.as_str(), v.number), ("[1, 2, 3, 4, …] (5 elements)", None));
        let v = pv_view("a".into(), "t".into(), false, &serde_json::json!({"value": "hi"}));
        assert_eq!((v.display.as_str(), v.number), ("hi", None));
    }

    #[test]
    fn the_bundle_is_embedded_and_named_by_version() {
        assert!(INDEX_HTML.contains("/ui/assets/app.js"), "index.html must load /ui/assets/app.js (web/vite.config.ts)");
        assert!(INDEX_HTML.contains("/ui/assets/app.css"));
        assert!(!APP_JS.is_empty() && !APP_CSS.is_empty());
        assert_ne!(fnv1a(&[b"a"]), fnv1a(&[b"b"]));
    }
}
