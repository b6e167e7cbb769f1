use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::Semaphore;
use weft_net::{Handler, HandlerFuture, PeerInfo};
use weft_wire::{BodyFormat, ErrorBody, ErrorCode, Frame, FrameKind};

use crate::error::ServiceError;
use crate::stats::{EndpointStats, StatsRegistry};

/// Route -> endpoint, hashed with FxHash (see `Service::endpoints`).
type RouteTable = std::collections::HashMap<String, Endpoint, std::hash::BuildHasherDefault<rustc_hash::FxHasher>>;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A type-erased endpoint: body bytes in the frame's format -> body bytes.
type ErasedFn = dyn Fn(Bytes, BodyFormat, Arc<PeerInfo>) -> BoxFut<Result<Bytes, ErrorBody>> + Send + Sync;

/// Told of every request served through the [`SharedService`] handler:
/// its route and how long the service took (see [`SharedService::observe`]).
pub type CallObserver = dyn Fn(&str, Duration) + Send + Sync;

/// Per-endpoint limits.
#[derive(Debug, Clone, Default)]
pub struct EndpointOptions {
    /// Calls running at once; more are answered `busy` (not queued), so a
    /// slow endpoint cannot hold every connection's slots.
    pub max_concurrent: Option<usize>,
}

struct Endpoint {
    call: Arc<ErasedFn>,
    limit: Option<Arc<Semaphore>>,
    stats: Arc<EndpointStats>,
    /// This route's `weft_requests_total{code="ok"}` and
    /// `weft_request_duration_seconds` series, looked up at the first call
    /// instead of building label strings and hashing them per request.
    series: OnceLock<(Counter, Histogram)>,
}

/// What `weft.info` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub version: String,
    pub id: String,
    pub uptime_s: f64,
    /// Listening addresses, e.g. `tcp://127.0.0.1:7400`.
    pub transports: Vec<String>,
    pub endpoints: Vec<String>,
}

/// A set of endpoints under route keys, served as one [`Handler`].
pub struct Service {
    name: String,
    id: String,
    started: Instant,
    /// Looked up once per request. A fast unkeyed hash is fine here: the
    /// table is fixed before any client connects, so a client's route can
    /// only be looked up, never inserted (no collision flooding).
    endpoints: RouteTable,
    stats: Arc<StatsRegistry>,
    transports: Arc<Mutex<Vec<String>>>,
    /// Set at most once, after the service is shared.
    observer: OnceLock<Box<CallObserver>>,
}

impl Service {
    /// A service with the standard endpoints `weft.ping`, `weft.echo`,
    /// `weft.info` and `weft.stats` already registered.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_id(name, uuid::Uuid::new_v4().to_string())
    }

    pub fn with_id(name: impl Into<String>, id: impl Into<String>) -> Self {
        let mut s = Service {
            name: name.into(),
            id: id.into(),
            started: Instant::now(),
            endpoints: RouteTable::default(),
            stats: Arc::new(StatsRegistry::default()),
            transports: Arc::new(Mutex::new(vec![])),
            observer: OnceLock::new(),
        };
        s.register_standard();
        s
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn stats(&self) -> Arc<StatsRegistry> {
        self.stats.clone()
    }
    /// The routes, sorted.
    pub fn routes(&self) -> impl Iterator<Item = &str> {
        let mut r: Vec<&str> = self.endpoints.keys().map(|s| s.as_str()).collect();
        r.sort_unstable();
        r.into_iter()
    }

    /// Record where the service is reachable, for `weft.info`.
    pub fn add_transport(&self, url: impl Into<String>) {
        self.transports.lock().unwrap_or_else(|p| p.into_inner()).push(url.into());
    }

    /// Register a typed endpoint. Registering a route twice is an error.
    pub fn endpoint<Req, Resp, F, Fut>(&mut self, route: &str, f: F) -> Result<&mut Self, ServiceError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        self.endpoint_with(route, EndpointOptions::default(), move |req: Req, _peer| f(req))
    }

    /// Register a typed endpoint that also sees who called, with limits.
    pub fn endpoint_with<Req, Resp, F, Fut>(&mut self, route: &str, options: EndpointOptions, f: F) -> Result<&mut Self, ServiceError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req, Arc<PeerInfo>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let call: Arc<ErasedFn> = Arc::new(move |body: Bytes, format: BodyFormat, peer: Arc<PeerInfo>| {
            let f = f.clone();
            Box::pin(async move {
                let req: Req = decode_request(&body, format)?;
                let resp = f(req, peer).await.map_err(|e| e.to_error_body())?;
                format.encode(&resp).map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("cannot encode response: {e}")))
            })
        });
        self.insert(route, call, options)
    }

    /// [`endpoint`](Self::endpoint) for a hot route whose bodies have their
    /// own msgpack codec ([`weft_wire::FastBody`]; serde for the rest).
    pub fn endpoint_fast<Req, Resp, F, Fut>(&mut self, route: &str, f: F) -> Result<&mut Self, ServiceError>
    where
        Req: DeserializeOwned + weft_wire::FastBody + Send + 'static,
        Resp: Serialize + weft_wire::FastBody + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let call: Arc<ErasedFn> = Arc::new(move |body: Bytes, format: BodyFormat, _peer: Arc<PeerInfo>| {
            let f = f.clone();
            Box::pin(async move {
                let req: Req = decode_request_with(&body, format, |b| format.decode_fast(b))?;
                let resp = f(req).await.map_err(|e| e.to_error_body())?;
                format.encode_fast(&resp).map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("cannot encode response: {e}")))
            })
        });
        self.insert(route, call, EndpointOptions::default())
    }

    /// Register an endpoint that takes and returns raw body bytes (e.g. echo).
    pub fn raw_endpoint<F, Fut>(&mut self, route: &str, f: F) -> Result<&mut Self, ServiceError>
    where
        F: Fn(Bytes, BodyFormat) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, ServiceError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let call: Arc<ErasedFn> = Arc::new(move |body, format, _peer| {
            let f = f.clone();
            Box::pin(async move { f(body, format).await.map_err(|e| e.to_error_body()) })
        });
        self.insert(route, call, EndpointOptions::default())
    }

    fn insert(&mut self, route: &str, call: Arc<ErasedFn>, options: EndpointOptions) -> Result<&mut Self, ServiceError> {
        if route.is_empty() || route.len() > 255 {
            return Err(ServiceError::BadRoute(route.to_owned()));
        }
        if self.endpoints.contains_key(route) {
            return Err(ServiceError::DuplicateRoute(route.to_owned()));
        }
        let endpoint = Endpoint {
            call,
            limit: options.max_concurrent.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            stats: self.stats.endpoint(route),
            series: OnceLock::new(),
        };
        self.endpoints.insert(route.to_owned(), endpoint);
        Ok(self)
    }

    fn register_standard(&mut self) {
        #[derive(Deserialize)]
        struct Empty {}
        impl weft_wire::FastBody for Empty {}
        #[derive(Serialize)]
        struct Pong {
            pong: bool,
            server_time_ms: u64,
        }
        // The answer of every ping by hand (weft_wire::fastbody): a fixmap
        // of two, "pong" true, "server_time_ms" the clock.
        impl weft_wire::FastBody for Pong {
            fn encode_msgpack(&self, w: &mut weft_wire::fastbody::Writer) -> bool {
                w.raw(b"\x82\xa4pong");
                w.raw(if self.pong { b"\xc3" } else { b"\xc2" });
                w.raw(b"\xaeserver_time_ms");
                w.uint(self.server_time_ms);
                true
            }
        }
        // Fresh service: these routes cannot collide.
        let _ = self.endpoint_fast("weft.ping", |_: Option<Empty>| async {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            Ok(Pong { pong: true, server_time_ms: now })
        });
        let _ = self.raw_endpoint("weft.echo", |body, _format| async move { Ok(body) });
        let stats = self.stats.clone();
        let _ = self.endpoint("weft.stats", move |_: Option<Empty>| {
            let stats = stats.clone();
            async move { Ok(stats.snapshot()) }
        });
        // weft.info needs the final route list: it is answered in handle().
        let _ = self.raw_endpoint("weft.info", |_b, _f| async { Ok(Bytes::new()) });
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            id: self.id.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            transports: self.transports.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            endpoints: self.routes().map(str::to_owned).collect(),
        }
    }

    /// Run one request through the service, without a network: what the
    /// transports call, and handy in tests.
    pub async fn dispatch(&self, frame: Frame, peer: Arc<PeerInfo>) -> Frame {
        self.dispatch_observed(frame, peer, false).await
    }

    /// [`dispatch`](Self::dispatch), telling the observer (if any and
    /// `observed`) the route and the time taken, whatever the answer.
    async fn dispatch_observed(&self, mut frame: Frame, peer: Arc<PeerInfo>, observed: bool) -> Frame {
        let started = Instant::now();
        let observe = |out: Frame, elapsed: Duration| {
            if let Some(f) = self.observer.get().filter(|_| observed) {
                f(&out.route, elapsed);
            }
            out
        };
        // The caller's trace context (docs/protocol.md, "Trace context").
        let traceparent = match frame.take_trace_context() {
            Ok(t) => t,
            Err(e) => return observe(frame.error_to(&e), started.elapsed()),
        };
        // Stream connections that negotiated compression decompress before
        // this; a compressed body here was not negotiated (UDP, QUIC, or a
        // hello without it): a typed error, never a body the endpoint
        // cannot read (docs/protocol.md, "Compression").
        if frame.flags.is_compressed() {
            let e = weft_wire::FrameError::CompressionNotNegotiated { id: frame.id };
            return observe(frame.error_to(&e.to_error_body()), started.elapsed());
        }
        let Some(ep) = self.endpoints.get(&frame.route) else {
            let out = frame.error_to(
                &ErrorBody::new(ErrorCode::UnknownRoute, format!("no endpoint {:?}", frame.route))
                    .with_details(serde_json::json!({ "route": frame.route })),
            );
            return observe(out, started.elapsed());
        };
        // The request's span: exported as an OpenTelemetry server span when
        // tracing is on, continuing the caller's trace (frame trace context).
        // Skipped when nothing would read it (no export, no debug output).
        let span = if crate::trace::request_spans() {
            let span = tracing::info_span!(
                "request",
                otel.name = %frame.route,
                otel.kind = "server",
                route = %frame.route,
                trace_id = tracing::field::Empty,
            );
            crate::trace::start(&span, traceparent.as_deref());
            span
        } else {
            tracing::Span::none()
        };
        // Kept for the debug line only when debug lines can be written. Not
        // `tracing::enabled!`: with per-layer filters it leaves filter state
        // behind that disables the next span (the handler's `log.append`).
        let who = (tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG).then(|| peer.clone());
        let result = if span.is_none() {
            self.run(ep, &frame, peer).await
        } else {
            tracing::Instrument::instrument(self.run(ep, &frame, peer), span.clone()).await
        };
        let code = result.as_ref().err().map(|e| e.code.as_str());
        let elapsed = started.elapsed();
        ep.stats.record(elapsed, code);
        let (ok, duration) = ep.series.get_or_init(|| {
            let m = weft_metrics::get();
            (
                m.requests.get_or_create_owned(&weft_metrics::l2("endpoint", frame.route.as_str(), "code", "ok")),
                m.request_duration.get_or_create_owned(&weft_metrics::l1("endpoint", frame.route.as_str())),
            )
        });
        match code {
            None => {
                ok.inc();
            }
            Some(code) => {
                weft_metrics::get().requests.get_or_create(&weft_metrics::l2("endpoint", frame.route.as_str(), "code", code)).inc();
            }
        }
        duration.observe(elapsed.as_secs_f64());
        // One line per request at debug (docs/observability.md, "Logs").
        if let Some(who) = who {
            let _in_span = span.enter();
            tracing::debug!(
                route = %frame.route,
                client = %who.client_id.as_deref().unwrap_or(&who.addr),
                transport = ?who.transport,
                duration_us = elapsed.as_micros() as u64,
                code = %code.unwrap_or("ok"),
                "request"
            );
        }
        let out = match result {
            Ok(body) => Frame { kind: FrameKind::Response, flags: frame.flags.with_one_way(false), id: frame.id, route: frame.route, body },
            Err(e) => frame.error_to(&e),
        };
        observe(out, elapsed)
    }

    async fn run(&self, ep: &Endpoint, frame: &Frame, peer: Arc<PeerInfo>) -> Result<Bytes, ErrorBody> {
        if frame.route == "weft.info" {
            return frame.format().encode(&self.info()).map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()));
        }
        let _permit = match &ep.limit {
            Some(sem) => Some(sem.clone().try_acquire_owned().map_err(|_| {
                ErrorBody::new(ErrorCode::Busy, format!("endpoint {:?} is at its concurrency limit", frame.route))
            })?),
            None => None,
        };
        // A panicking handler fails its own call, never the connection.
        let fut = (ep.call)(frame.body.clone(), frame.format(), peer);
        match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                tracing::error!(route = %frame.route, panic = %what, "handler panicked");
                Err(ErrorBody::new(ErrorCode::Handler, format!("handler panicked: {what}")))
            }
        }
    }
}

fn decode_request<Req: DeserializeOwned>(body: &Bytes, format: BodyFormat) -> Result<Req, ErrorBody> {
    // Shared: a request's `SharedBytes` fields (a produced record's value)
    // are slices of the frame, not copies.
    decode_request_with(body, format, |b| format.decode_shared(b))
}

fn decode_request_with<Req: DeserializeOwned>(
    body: &Bytes,
    format: BodyFormat,
    decode: impl FnOnce(&Bytes) -> Result<Req, weft_wire::BodyError>,
) -> Result<Req, ErrorBody> {
    // An empty body means "no arguments": try it as unit/none first.
    if body.is_empty() {
        let empty: &[u8] = match format {
            BodyFormat::MsgPack => &[0xc0],
            BodyFormat::Json => b"null",
        };
        if let Ok(r) = format.decode(empty) {
            return Ok(r);
        }
    }
    decode(body).map_err(|e| {
        ErrorBody::new(ErrorCode::BadBody, format!("cannot decode request body: {e}"))
            .with_details(serde_json::json!({ "format": format }))
    })
}

/// A `Service` shared with the transports.
#[derive(Clone)]
pub struct SharedService(pub Arc<Service>);

impl SharedService {
    /// Have `f` told of every request served through this handler (its
    /// route and time), as a handler wrapped around this one would be,
    /// without the wrapper's boxed future per request. Requests run by
    /// [`Service::dispatch`] directly are not observed. One observer per
    /// service: `false` (and `f` unused) when one is set already.
    pub fn observe(&self, f: Box<CallObserver>) -> bool {
        self.0.observer.set(f).is_ok()
    }
}

impl Handler for SharedService {
    fn handle(&self, frame: Frame, peer: Arc<PeerInfo>) -> HandlerFuture {
        let svc = self.0.clone();
        Box::pin(async move { Some(svc.dispatch_observed(frame, peer, true).await) })
    }
}

impl Service {
    /// Freeze the endpoint set and share it with transports.
    pub fn into_handler(self) -> Arc<SharedService> {
        Arc::new(SharedService(Arc::new(self)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use weft_net::Transport;
    use weft_wire::{FrameKind, MessageId};

    #[tokio::test]
    async fn the_hand_written_pong_is_what_serde_writes() {
        let s = Service::new("t");
        let peer = Arc::new(PeerInfo::new(Transport::Tcp, "x"));
        for (body, format) in [(Bytes::new(), BodyFormat::MsgPack), (Bytes::from_static(&[0xc0]), BodyFormat::MsgPack), (Bytes::from_static(b"{}"), BodyFormat::Json)] {
            let mut req = Frame::request(MessageId::from_u128(1), "weft.ping", format, &()).unwrap();
            req.body = body;
            let answer = s.dispatch(req, peer.clone()).await;
            assert_eq!(answer.kind, FrameKind::Response, "{answer:?}");
            let v: serde_json::Value = answer.decode_body().unwrap();
            assert_eq!(v["pong"], true);
            let t = v["server_time_ms"].as_u64().unwrap();
            assert!(t > 1_700_000_000_000);
            assert_eq!(answer.body, format.encode(&serde_json::json!({"pong": true, "server_time_ms": t})).unwrap());
        }
    }
}
