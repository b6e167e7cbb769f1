//! The tonic implementation of `weft.query.v1.Query`, plus the standard
//! health and reflection services.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use weft_table as table;

use crate::aql::{KeyRange, Query, Statement};
use crate::auth::{Caller, WeftAuth, scoped};
use crate::convert;
use crate::error::Error;
use crate::exec::{Executor, kv, next_key, range_spec};
use crate::pb;
use crate::pb::query_server::QueryServer;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Query service over an executor.
#[derive(Clone)]
pub struct QueryService {
    exec: Executor,
    /// Auth on: every call authenticates and every statement is checked.
    auth: Option<Arc<WeftAuth>>,
}

impl QueryService {
    pub fn new(exec: Executor) -> Self {
        QueryService { exec, auth: None }
    }

    /// With weft-auth: the executor's hook becomes weft-auth's (when it is
    /// enabled; off, the allow-all default stays).
    pub fn with_auth(exec: Executor, authz: Arc<weft_auth::Authorizer>) -> Self {
        if !authz.enabled() {
            return QueryService::new(exec);
        }
        let auth = Arc::new(WeftAuth(authz));
        QueryService { exec: exec.with_authorizer(auth.clone()), auth: Some(auth) }
    }

    /// The caller of a call (None: auth off).
    fn caller<T>(&self, req: &Request<T>) -> Result<Option<Caller>, Status> {
        match &self.auth {
            Some(a) => Ok(Some(crate::auth::authenticate(&a.0, req)?)),
            None => Ok(None),
        }
    }

    /// Checks a table read outside the executor (Stream pager, Watch).
    fn check(&self, caller: &Option<Caller>, access: crate::exec::Access, resource: &str) -> Result<(), Status> {
        match (&self.auth, caller) {
            (Some(a), Some(c)) => Ok(a.check(c, access, resource)?),
            _ => Ok(()),
        }
    }

    /// The tonic server wrapper, accepting and sending gzip and zstd.
    pub fn into_server(self) -> QueryServer<Self> {
        use tonic::codec::CompressionEncoding::{Gzip, Zstd};
        QueryServer::new(self).accept_compressed(Gzip).accept_compressed(Zstd).send_compressed(Gzip).send_compressed(Zstd)
    }
}

/// The caller's deadline from `grpc-timeout`, taken a little early (a tenth,
/// at most 50 ms) so our DEADLINE_EXCEEDED answers before tonic's own timer,
/// which answers CANCELLED.
pub fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    if num.is_empty() || num.len() > 8 {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(d.saturating_sub((d / 10).min(Duration::from_millis(50))))
}

impl QueryService {
    async fn run(&self, req: &pb::ExecuteRequest, caller: Option<Duration>) -> Result<pb::Result, Error> {
        let q = self.query(req)?;
        self.exec.execute_with(&q, caller, None, req.serializable).await
    }

    fn query(&self, req: &pb::ExecuteRequest) -> Result<Query, Error> {
        if let Some(pb::execute_request::Query::Aql(text)) = &req.query {
            let mut q = self.exec.parse(text)?;
            if req.timeout_ms > 0 {
                q.timeout_ms = Some(q.timeout_ms.map_or(req.timeout_ms, |t| t.min(req.timeout_ms)));
            }
            return Ok(q);
        }
        convert::request_query(req)
    }
}

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    async fn execute(&self, request: Request<pb::ExecuteRequest>) -> Result<Response<pb::ExecuteResponse>, Status> {
        let caller = grpc_timeout(&request);
        let who = self.caller(&request)?;
        let result = scoped(who, self.run(request.get_ref(), caller)).await?;
        Ok(Response::new(pb::ExecuteResponse { result: Some(result) }))
    }

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::ExecuteResponse>, Status> {
        let caller = grpc_timeout(&request);
        let who = self.caller(&request)?;
        let req = request.get_ref();
        let mut q = match &req.batch {
            Some(pb::batch_request::Batch::Aql(text)) => self.exec.parse(text)?,
            Some(pb::batch_request::Batch::Statement(b)) => {
                Query { stmt: Statement::Batch(convert::batch(b, "statement").map_err(Error::from)?), timeout_ms: None }
            }
            None => return Err(Error::Invalid("set aql or statement".into()).into()),
        };
        if !matches!(q.stmt, Statement::Batch(_)) {
            return Err(Error::Invalid(format!("Batch takes a BATCH statement, not {}", q.stmt.kind())).into());
        }
        if req.timeout_ms > 0 {
            q.timeout_ms = Some(q.timeout_ms.map_or(req.timeout_ms, |t| t.min(req.timeout_ms)));
        }
        let result = scoped(who, self.exec.execute(&q, caller, None)).await?;
        Ok(Response::new(pb::ExecuteResponse { result: Some(result) }))
    }

    type StreamStream = BoxStream<pb::StreamChunk>;

    async fn stream(&self, request: Request<pb::StreamRequest>) -> Result<Response<Self::StreamStream>, Status> {
        let who = self.caller(&request)?;
        let req = request.into_inner();
        let cfg = self.exec.config();
        let chunk = match req.chunk_size {
            0 => cfg.stream_chunk_default,
            n => n.min(cfg.stream_chunk_max),
        }
        .max(1) as u64;
        let query = req.query.ok_or_else(|| Status::from(Error::Invalid("StreamRequest.query is required".into())))?;
        let q = self.query(&query)?;
        self.exec.stats().streams.fetch_add(1, Ordering::Relaxed);
        match q.stmt {
            // RANGE pages through the table at the first page's revision:
            // each page is read only when the stream is polled, which hyper
            // does when the HTTP/2 window has room; a cancelled call drops
            // the stream and no further page is read.
            Statement::Range { table, range, limit, revision } if self.exec.replicated.is_some() => {
                // Cluster mode: each page is a RANGE statement through the
                // executor (forwarded when this node has no replica), the
                // later ones AT the first page's revision.
                let state = StatementPager {
                    exec: self.exec.clone(),
                    who,
                    table,
                    range,
                    remaining: limit.unwrap_or(u64::MAX),
                    at: revision,
                    from: None,
                    chunk,
                    serializable: query.serializable,
                    done: false,
                };
                let s = futures::stream::unfold(state, |mut st| async move {
                    if st.done {
                        return None;
                    }
                    let r = st.next_page().await;
                    if r.is_err() {
                        st.done = true;
                    }
                    Some((r.map_err(Status::from), st))
                });
                Ok(Response::new(Box::pin(s)))
            }
            Statement::Range { table, range, limit, revision } => {
                self.check(&who, crate::exec::Access::Read, &format!("table:{table}"))?;
                let t = self.exec.tables().get(&table).map_err(Error::from)?;
                let state = RangePager { t, range, remaining: limit.unwrap_or(u64::MAX), at: revision, from: None, chunk, done: false };
                let s = futures::stream::unfold(state, |mut st| async move {
                    if st.done {
                        return None;
                    }
                    let r = st.next_page().await;
                    if r.is_err() {
                        st.done = true;
                    }
                    Some((r.map_err(Status::from), st))
                });
                Ok(Response::new(Box::pin(s)))
            }
            // The others are bounded by query.max_results: run once, send in chunks.
            Statement::Filter { .. } | Statement::History { .. } | Statement::TopicRead { .. } => {
                let r = scoped(who, self.exec.execute_with(&q, None, None, query.serializable)).await?;
                let rev = r.revision;
                let mut chunks: Vec<pb::StreamChunk> = Vec::new();
                for c in r.kvs.chunks(chunk as usize) {
                    chunks.push(pb::StreamChunk { kvs: c.to_vec(), revision: rev, ..Default::default() });
                }
                for c in r.records.chunks(chunk as usize) {
                    chunks.push(pb::StreamChunk { records: c.to_vec(), revision: rev, ..Default::default() });
                }
                if chunks.is_empty() {
                    chunks.push(pb::StreamChunk { revision: rev, ..Default::default() });
                }
                if let Some(last) = chunks.last_mut() {
                    last.last = true;
                }
                Ok(Response::new(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))))
            }
            other => Err(Error::Invalid(format!("Stream takes RANGE, FILTER, HISTORY or FROM TOPIC, not {}", other.kind())).into()),
        }
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        // Checked at the start: an open watch keeps its events.
        let who = self.caller(&request)?;
        let req = request.into_inner();
        self.check(&who, crate::exec::Access::Read, &format!("table:{}", req.table))?;
        let stats = self.exec.stats().clone();
        let open = stats.watches_open.load(Ordering::Relaxed);
        let max = self.exec.config().max_watches;
        if open >= max {
            return Err(Error::Limit { what: "open watches".into(), limit: max, key: "query.max_watches" }.into());
        }
        let target = match req.target {
            Some(pb::watch_request::Target::Key(k)) => table::WatchTarget::Key(Bytes::from(k)),
            Some(pb::watch_request::Target::Prefix(p)) => table::WatchTarget::Prefix(Bytes::from(p)),
            Some(pb::watch_request::Target::Range(r)) => table::WatchTarget::Range(table::KeyRange::between(Bytes::from(r.start), r.end.map(Bytes::from))),
            None => return Err(Error::Invalid("WatchRequest: set key, range or prefix".into()).into()),
        };
        if let Some(rep) = self.exec.replicated.clone() {
            return self.watch_replicated(rep, who, req.table, target, req.start_revision, req.prev_kv).await;
        }
        let t = self.exec.tables().get(&req.table).map_err(Error::from)?;
        let start_revision = (req.start_revision > 0).then_some(req.start_revision);
        let watcher = t.watch(table::WatchSpec { target, start_revision, prev_kv: req.prev_kv }).map_err(Error::from)?;
        stats.watches_started.fetch_add(1, Ordering::Relaxed);
        weft_metrics::get().query_watches.inc();
        stats.watches_open.fetch_add(1, Ordering::Relaxed);
        let guard = WatchGuard(stats.clone());
        let created = futures::stream::once(async { Ok(pb::WatchResponse { created: true, events: vec![] }) });
        let events = futures::stream::unfold((watcher, guard, false), |(mut w, g, ended)| async move {
            if ended {
                return None;
            }
            match w.next().await {
                Ok(e) => {
                    g.0.watch_events.fetch_add(1, Ordering::Relaxed);
                    weft_metrics::get().query_watch_events.inc();
                    let ev = event(e);
                    Some((Ok(pb::WatchResponse { created: false, events: vec![ev] }), (w, g, false)))
                }
                Err(e) => Some((Err(Status::from(Error::from(e))), (w, g, true))),
            }
        });
        Ok(Response::new(Box::pin(created.chain(events))))
    }

    type SessionStream = BoxStream<pb::SessionResponse>;

    async fn session(&self, request: Request<Streaming<pb::SessionRequest>>) -> Result<Response<Self::SessionStream>, Status> {
        let svc = self.clone();
        let who = self.caller(&request)?;
        let inbound = request.into_inner();
        // One query at a time, in order: a session's later query sees its
        // earlier writes. The inbound stream is read only after the previous
        // answer was handed to the transport, so a client cannot queue
        // unboundedly (HTTP/2 flow control holds it back).
        let out = inbound.take_while(|r| futures::future::ready(r.is_ok())).filter_map(|r| futures::future::ready(r.ok())).then(move |req| {
            let svc = svc.clone();
            let who = who.clone();
            async move {
                let id = req.id;
                // Each statement is checked (a revoked credential fails here).
                let answer = match req.query {
                    None => Err(Error::Invalid("SessionRequest.query is required".into())),
                    Some(q) => scoped(who, svc.run(&q, None)).await,
                };
                Ok(pb::SessionResponse {
                    id,
                    answer: Some(match answer {
                        Ok(r) => pb::session_response::Answer::Result(r),
                        Err(e) => pb::session_response::Answer::Error(error_message(&e)),
                    }),
                })
            }
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// An error as a message (Session answers carry errors in-band).
pub fn error_message(e: &Error) -> pb::Error {
    let (offset, line, column) = match e {
        Error::Parse(p) => (p.offset as u64, p.line as u32, p.column as u32),
        Error::Convert(c) => c.parse.as_ref().map_or((0, 0, 0), |p| (p.offset as u64, p.line as u32, p.column as u32)),
        _ => (0, 0, 0),
    };
    pb::Error { code: e.code() as i32, message: e.to_string(), reason: e.reason().into(), offset, line, column }
}

struct WatchGuard(std::sync::Arc<crate::exec::QueryStats>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cluster mode's Stream of RANGE: pages as RANGE statements run by the
/// executor (so a node without a replica forwards each page), every page
/// at the first page's revision, so the whole stream is one snapshot.
struct StatementPager {
    exec: Executor,
    who: Option<Caller>,
    table: String,
    range: KeyRange,
    remaining: u64,
    at: Option<u64>,
    /// The first key of the next page.
    from: Option<Vec<u8>>,
    chunk: u64,
    serializable: bool,
    done: bool,
}

impl StatementPager {
    async fn next_page(&mut self) -> Result<pb::StreamChunk, Error> {
        let range = match (&self.range, &self.from) {
            (r, None) => r.clone(),
            (KeyRange::From { end, .. }, Some(f)) => KeyRange::From { start: f.clone(), end: end.clone() },
            // A prefix continues from the next key up to the end of the prefix.
            (KeyRange::Prefix(p), Some(f)) => KeyRange::From { start: f.clone(), end: prefix_end(p) },
        };
        let stmt = Statement::Range { table: self.table.clone(), range, limit: Some(self.chunk.min(self.remaining)), revision: self.at };
        let q = Query { stmt, timeout_ms: None };
        let r = scoped(self.who.clone(), self.exec.execute_with(&q, None, None, self.serializable)).await?;
        // A RANGE answers the table's current revision; the first page's fixes the snapshot.
        let rev = *self.at.get_or_insert(r.revision);
        self.remaining -= (r.kvs.len() as u64).min(self.remaining);
        if let Some(last) = r.kvs.last() {
            self.from = Some(next_key(&last.key).to_vec());
        }
        let last = !r.more || self.remaining == 0 || r.kvs.is_empty();
        self.done = last;
        Ok(pb::StreamChunk { kvs: r.kvs, records: vec![], revision: rev, last })
    }
}

/// The first key after every key with prefix `p` (None: no such key, open end).
fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut e = p.to_vec();
    while let Some(b) = e.pop() {
        if b < 0xff {
            e.push(b + 1);
            return Some(e);
        }
    }
    None
}

struct RangePager {
    t: table::Table,
    range: KeyRange,
    remaining: u64,
    at: Option<u64>,
    from: Option<Bytes>,
    chunk: u64,
    done: bool,
}

impl RangePager {
    async fn next_page(&mut self) -> Result<pb::StreamChunk, Error> {
        let mut spec = range_spec(&self.range);
        if let Some(f) = &self.from {
            // Past the last key sent; a later start than the range's own.
            if f > &spec.from {
                spec.from = f.clone();
            }
        }
        spec.limit = Some(self.chunk.min(self.remaining));
        spec.at = self.at;
        let res = self.t.range(spec).await?;
        let rev = *self.at.get_or_insert(res.revision);
        self.remaining -= res.kvs.len() as u64;
        if let Some(last) = res.kvs.last() {
            self.from = Some(next_key(&last.key));
        }
        let last = !res.more || self.remaining == 0;
        self.done = last;
        Ok(pb::StreamChunk { kvs: res.kvs.into_iter().map(kv).collect(), records: vec![], revision: rev, last })
    }
}

/// The standard `grpc.health.v1.Health` service, reporting the Query
/// service and the server ("") as serving.
pub async fn health_service() -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<QueryServer<QueryService>>().await;
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    service
}

/// Server reflection (v1 and v1alpha) listing weft.query.v1.Query and the
/// health service.
pub fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

impl QueryService {
    /// Cluster mode: a watch over the local replica's applied state
    /// (docs/query.md, "Tables: replicated"). Revisions are the same on
    /// every replica, so a client that resumes on another node from its
    /// last revision + 1 gets every later event exactly once.
    async fn watch_replicated(
        &self,
        rep: std::sync::Arc<dyn crate::replicated::ReplicatedTables>,
        who: Option<Caller>,
        name: String,
        target: table::WatchTarget,
        start_revision: u64,
        prev_kv: bool,
    ) -> Result<Response<BoxStream<pb::WatchResponse>>, Status> {
        let stats = self.exec.stats().clone();
        let set = table::KeySet::from_target(&target);
        let from = if start_revision > 0 {
            start_revision
        } else {
            // Absent start: from now on (the current revision + 1), as the
            // local path. The revision comes from a linearizable GET through
            // the executor, so a node without a replica asks one (forwarded);
            // any key will do, every answer carries the table's revision.
            let q = Query { stmt: Statement::Get { table: name.clone(), key: vec![0], revision: None }, timeout_ms: None };
            scoped(who, self.exec.execute(&q, None, None)).await?.revision + 1
        };
        stats.watches_started.fetch_add(1, Ordering::Relaxed);
        weft_metrics::get().query_watches.inc();
        stats.watches_open.fetch_add(1, Ordering::Relaxed);
        let guard = WatchGuard(stats.clone());
        let created = futures::stream::once(async { Ok(pb::WatchResponse { created: true, events: vec![] }) });
        let state = (rep, name, set, from, guard, std::collections::VecDeque::<table::Event>::new(), false);
        let events = futures::stream::unfold(state, move |(rep, name, set, mut from, g, mut buf, ended)| async move {
            if ended {
                return None;
            }
            loop {
                if let Some(e) = buf.pop_front() {
                    g.0.watch_events.fetch_add(1, Ordering::Relaxed);
                    weft_metrics::get().query_watch_events.inc();
                    let ev = event(e);
                    return Some((Ok(pb::WatchResponse { created: false, events: vec![ev] }), (rep, name, set, from, g, buf, false)));
                }
                match rep.watch(&name, from, set.clone(), prev_kv, 256).await {
                    Ok((evs, next)) => {
                        buf.extend(evs);
                        from = next;
                    }
                    Err(e) => return Some((Err(Status::from(e)), (rep, name, set, from, g, buf, true))),
                }
            }
        });
        Ok(Response::new(Box::pin(created.chain(events))))
    }
}

/// One table event as the wire's `Event` (local and replicated watches).
fn event(e: table::Event) -> pb::Event {
    pb::Event {
        r#type: match e.kind {
            table::EventKind::Put => pb::EventType::Put as i32,
            table::EventKind::Delete => pb::EventType::Delete as i32,
        },
        kv: Some(kv(e.kv)),
        prev_kv: e.prev_kv.map(kv),
        revision: e.revision,
    }
}
