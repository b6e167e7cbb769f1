//! The HTTP gateway: REST for every log operation, `/openapi.json`, and
//! WebSocket streams. Values travel as UTF-8 text or base64, flagged per
//! record by `encoding`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Bytes as BodyBytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::mpsc;
use weft_log::{Log, LogError, Offset, OffsetSpec, PartitionId, ProduceRecord, Record};
use weft_wire::{ErrorBody, ErrorCode};

use crate::dto;
use crate::error::{http_status, log_error_body};
use crate::native;
use crate::plane::{LocalPlane, Plane};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An error answered as `{code, message, details}` with a matching status.
pub struct ApiError(pub ErrorBody);

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        ApiError(log_error_body(&e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(http_status(self.0.code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(ErrorBody::new(ErrorCode::Validation, msg))
}

/// Parse a JSON body ourselves so that bad JSON is a typed `bad_body` error
/// with the parser's message, like everywhere else in Weft.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError(ErrorBody::new(ErrorCode::BadBody, format!("invalid JSON body: {e}"))))
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

fn decode_field(s: &str, enc: Encoding, what: &str) -> Result<Bytes, ApiError> {
    match enc {
        Encoding::Utf8 => Ok(Bytes::copy_from_slice(s.as_bytes())),
        Encoding::Base64 => B64.decode(s).map(Bytes::from).map_err(|e| bad_request(format!("{what} is not valid base64: {e}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecordIn {
    #[serde(default)]
    partition: Option<u32>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timestamp_ms: Option<i64>,
    /// Overrides the request's encoding for this record.
    #[serde(default)]
    encoding: Option<Encoding>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonProduce {
    records: Vec<JsonRecordIn>,
    #[serde(default)]
    encoding: Encoding,
    /// Idempotent producer and acks, as `log.produce` (docs/log.md).
    #[serde(default)]
    producer_id: Option<u64>,
    #[serde(default)]
    sequence: Option<u64>,
    #[serde(default)]
    acks: dto::Acks,
}

/// A record as JSON. `encoding` says how key, value and header values are
/// written: `utf8` when they all are valid UTF-8 (and UTF-8 was asked for),
/// `base64` otherwise.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct JsonRecordOut {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub encoding: Encoding,
}

pub fn record_json(partition: u32, r: &Record, want: Encoding) -> JsonRecordOut {
    let all_utf8 = || {
        r.key.iter().chain(r.value.iter()).chain(r.headers.iter().map(|(_, v)| v)).all(|b| std::str::from_utf8(b).is_ok())
    };
    let enc = if want == Encoding::Utf8 && all_utf8() { Encoding::Utf8 } else { Encoding::Base64 };
    let show = |b: &Bytes| match enc {
        Encoding::Utf8 => String::from_utf8_lossy(b).into_owned(),
        Encoding::Base64 => B64.encode(b),
    };
    JsonRecordOut {
        partition,
        offset: r.offset.0,
        timestamp_ms: r.timestamp_ms,
        key: r.key.as_ref().map(show),
        value: r.value.as_ref().map(show),
        headers: r.headers.iter().map(|(k, v)| (k.clone(), show(v))).collect(),
        encoding: enc,
    }
}

pub fn router(log: Log) -> Router {
    router_with(log.clone(), LocalPlane::shared(log))
}

/// The gateway's routes with records, topics and committed offsets going
/// through `plane` (a cluster node's replicated plane; see [`crate::plane`]).
pub fn router_with(log: Log, plane: Plane) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/topics", get(list_topics).post(create_topic))
        .route("/v1/topics/{topic}", get(describe_topic).delete(delete_topic).patch(alter_topic))
        .route("/v1/topics/{topic}/records", post(produce))
        .route("/v1/topics/{topic}/stream", get(stream_topic))
        .route("/v1/topics/{topic}/partitions/{partition}/records", get(fetch))
        .route("/v1/topics/{topic}/partitions/{partition}/offsets", get(offsets))
        .route("/v1/topics/{topic}/partitions/{partition}/stream", get(stream_partition))
        .route("/v1/groups", get(list_groups))
        .route("/v1/groups/{group}", get(describe_group).delete(delete_group))
        .route("/v1/groups/{group}/join", post(join_group))
        .route("/v1/groups/{group}/heartbeat", post(heartbeat))
        .route("/v1/groups/{group}/leave", post(leave_group))
        .route("/v1/groups/{group}/commit", post(commit))
        .route("/v1/groups/{group}/committed", get(committed))
        .route("/v1/groups/{group}/reset-offsets", post(reset_offsets))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError(
                ErrorBody::new(ErrorCode::UnknownRoute, format!("no such path: {}; see /openapi.json", uri.path()))
                    .with_details(serde_json::json!({"kind": "no_route", "status": 404})),
            )
        })
        .layer(Extension(plane))
        .with_state(log)
}

/// The largest request body accepted unless configured (`http.max_body_bytes`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Settings of [`serve_with`].
pub struct HttpOptions {
    /// Clients outside it get 403 before their request is looked at.
    pub allow: weft_net::AllowList,
    /// Larger bodies get 413 (`too_large`) unread.
    pub max_body_bytes: usize,
    /// Where the gateway counts its traffic (`http.*` stats).
    pub stats: std::sync::Arc<crate::http_mw::HttpStats>,
    /// More routes served beside the log's, under the same allow-list and
    /// middleware (`weft serve`: `/metrics`, `/healthz`, `/readyz`).
    pub extra: Option<Router>,
    /// Where records and topics live (None: the log itself, a single node).
    pub plane: Option<Plane>,
    /// Authentication and authorisation of every route, `extra` ones
    /// included (docs/security.md); None: none.
    pub auth: Option<std::sync::Arc<crate::http_auth::HttpAuth>>,
    /// HTTPS (`http.tls`): certificates shared with the native TLS
    /// listener's settings, reloadable; None: plain HTTP.
    pub tls: Option<std::sync::Arc<weft_net::tls_reload::ReloadableTls>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self { allow: weft_net::AllowList::default(), max_body_bytes: DEFAULT_MAX_BODY_BYTES, stats: Default::default(), extra: None, plane: None, auth: None, tls: None }
    }
}

/// Serve the gateway until `stop` resolves. Clients outside `allow` get 403
/// before their request is looked at.
pub async fn serve(
    log: Log,
    addr: &str,
    allow: weft_net::AllowList,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(log, addr, HttpOptions { allow, ..HttpOptions::default() }, stop).await
}

/// [`serve`] with every setting.
pub async fn serve_with(
    log: Log,
    addr: &str,
    opts: HttpOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let allow = std::sync::Arc::new(opts.allow);
    // Allow-list refusals go to the audit log too.
    let audit = opts.auth.as_ref().map(|a| a.authz.clone());
    // Route-level layers (they see the matched route template); the
    // outermost of them turns any plain-text error into the JSON shape.
    let plane = opts.plane.unwrap_or_else(|| LocalPlane::shared(log.clone()));
    let routes = match opts.extra {
        Some(extra) => router_with(log, plane).merge(extra),
        None => router_with(log, plane),
    };
    // Innermost, so refusals are counted and traced like any answer.
    let routes = match opts.auth {
        Some(auth) => routes.layer(axum::middleware::from_fn_with_state(auth, crate::http_auth::auth)),
        None => routes,
    };
    let routed = routes
        .layer(axum::extract::DefaultBodyLimit::max(opts.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(opts.max_body_bytes, crate::http_mw::json_errors))
        .layer(axum::middleware::from_fn_with_state(opts.stats, crate::http_mw::count))
        .layer(axum::middleware::from_fn(crate::http_trace::trace));
    let app = routed.layer(axum::middleware::from_fn(move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: axum::extract::Request, next: axum::middleware::Next| {
        let allow = allow.clone();
        let audit = audit.clone();
        async move {
            if !allow.allows_ip(peer.ip()) {
                tracing::warn!(peer = %peer, "http client refused by the allow-list");
                if let Some(a) = &audit {
                    a.record_event(weft_auth::AuditEvent {
                        time_ms: weft_auth::now_ms(),
                        surface: "http".into(),
                        identity: String::new(),
                        peer: peer.to_string(),
                        resource: "http".into(),
                        action: "connect".into(),
                        outcome: "denied".into(),
                        message: "not on the listener's allow-list".into(),
                        ..Default::default()
                    });
                }
                return ApiError(ErrorBody::new(ErrorCode::Unauthorized, format!("{peer} is not on this listener's allow-list"))).into_response();
            }
            next.run(req).await
        }
    }));
    let tls = opts.tls;
    let task = tokio::spawn(async move {
        let served = match tls {
            Some(tls) => match crate::http_tls::TlsListener::spawn(listener, tls) {
                Ok(l) => {
                    let app = app.layer(axum::middleware::from_fn(crate::http_tls::with_peer_addr));
                    let app = app.into_make_service_with_connect_info::<crate::http_tls::TlsPeer>();
                    axum::serve(l, app).with_graceful_shutdown(stop).await
                }
                Err(e) => Err(e),
            },
            None => {
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, app).with_graceful_shutdown(stop).await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "http gateway stopped");
        }
    });
    tracing::info!(addr = %local, "listening (http gateway)");
    Ok((local, task))
}

async fn create_topic(Extension(plane): Extension<Plane>, body: BodyBytes) -> Result<(StatusCode, Json<weft_log::TopicDescription>), ApiError> {
    let req: dto::CreateTopic = parse(&body)?;
    Ok((StatusCode::CREATED, Json(plane.create_topic(&req.name, req.config, req.replicas).await.map_err(ApiError)?)))
}

async fn list_topics(Extension(plane): Extension<Plane>) -> ApiResult<Vec<String>> {
    Ok(Json(plane.list_topics().await.map_err(ApiError)?))
}

async fn describe_topic(Extension(plane): Extension<Plane>, Path(topic): Path<String>) -> ApiResult<weft_log::TopicDescription> {
    Ok(Json(plane.describe_topic(&topic).await.map_err(ApiError)?))
}

/// PATCH: the body is `dto::AlterTopic` without `name` (the path names it).
async fn alter_topic(Extension(plane): Extension<Plane>, Path(topic): Path<String>, body: BodyBytes) -> ApiResult<weft_log::TopicDescription> {
    let mut body: serde_json::Value = parse(&body)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("name".into(), serde_json::Value::String(topic));
    }
    let req: dto::AlterTopic =
        serde_json::from_value(body).map_err(|e| ApiError(ErrorBody::new(ErrorCode::BadBody, format!("invalid JSON body: {e}"))))?;
    Ok(Json(plane.alter_topic(&req.name, &req.to_alter()).await.map_err(ApiError)?))
}

async fn delete_topic(Extension(plane): Extension<Plane>, Path(topic): Path<String>) -> ApiResult<dto::Done> {
    plane.delete_topic(&topic).await.map_err(ApiError)?;
    Ok(Json(dto::Done { ok: true }))
}

/// 200 with per-record results when at least one record was written (check
/// each result's `error`); when every record failed, the first error in the
/// error shape, with its status (e.g. 404, 413, 400), and all per-record
/// results in `details.results`.
async fn produce(Extension(plane): Extension<Plane>, Path(topic): Path<String>, body: BodyBytes) -> Result<Response, ApiError> {
    let req: JsonProduce = parse(&body)?;
    let opts = crate::native::produce_options(req.producer_id, req.sequence, req.acks).map_err(ApiError)?;
    let mut records = Vec::with_capacity(req.records.len());
    for (i, r) in req.records.into_iter().enumerate() {
        let enc = r.encoding.unwrap_or(req.encoding);
        let mut headers = Vec::with_capacity(r.headers.len());
        for (k, v) in r.headers {
            let v = decode_field(&v, enc, &format!("records[{i}].headers.{k}"))?;
            headers.push((k, v));
        }
        records.push(ProduceRecord {
            partition: r.partition.map(PartitionId),
            timestamp_ms: r.timestamp_ms,
            key: r.key.map(|k| decode_field(&k, enc, &format!("records[{i}].key"))).transpose()?,
            value: r.value.map(|v| decode_field(&v, enc, &format!("records[{i}].value"))).transpose()?,
            headers,
        });
    }
    let answer = plane.produce_with(&topic, records, opts).await.map_err(ApiError)?;
    Ok(match crate::http_mw::all_failed(&answer.results) {
        Some(e) => ApiError(e).into_response(),
        None => Json(answer).into_response(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchQuery {
    /// RFC 6750's credential parameter (docs/security.md): the auth layer
    /// reads it; accepted here so a URL carrying it is not refused.
    #[serde(default, rename = "access_token")]
    _access_token: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    max_records: Option<usize>,
    #[serde(default)]
    max_bytes: Option<usize>,
    #[serde(default)]
    wait_ms: Option<u64>,
    #[serde(default)]
    encoding: Encoding,
    /// earliest | latest | none: what an offset outside the log does (as log.fetch's `reset`).
    #[serde(default)]
    reset: Option<weft_log::ResetPolicy>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JsonFetch {
    pub topic: String,
    pub partition: u32,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub next_offset: u64,
    pub records: Vec<JsonRecordOut>,
    /// The requested offset, when it was outside the log and `reset` moved the fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_from: Option<u64>,
}

async fn fetch(Extension(plane): Extension<Plane>, Path((topic, partition)): Path<(String, u32)>, Query(q): Query<FetchQuery>) -> ApiResult<JsonFetch> {
    let offset = match q.offset {
        Some(o) => o,
        None => plane.offset(&topic, partition, OffsetSpec::Earliest).await.map_err(ApiError)?,
    };
    native::fetch_max_records(q.max_records)?;
    let req = dto::Fetch {
        topic: topic.clone(),
        partition,
        offset,
        max_bytes: Some(q.max_bytes.unwrap_or(native::DEFAULT_MAX_BYTES).max(1)),
        max_records: q.max_records,
        wait_ms: q.wait_ms,
        raw: false,
        reset: q.reset,
    };
    let r = plane.fetch(&req).await.map_err(ApiError)?;
    Ok(Json(JsonFetch {
        topic,
        partition,
        high_watermark: r.high_watermark,
        log_start_offset: r.log_start_offset,
        next_offset: r.next_offset,
        records: r.records.into_iter().map(|x| record_json(partition, &record_of(x), q.encoding)).collect(),
        reset_from: r.reset_from,
    }))
}

/// A fetched record back in weft-log's shape, for [`record_json`].
fn record_of(r: dto::RecordOut) -> Record {
    Record {
        offset: Offset(r.offset),
        timestamp_ms: r.timestamp_ms,
        key: r.key.map(|k| Bytes::from(k.into_vec())),
        value: r.value.map(|v| Bytes::from(v.into_vec())),
        headers: r.headers.into_iter().map(|(k, v)| (k, Bytes::from(v.into_vec()))).collect(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetsQuery {
    /// RFC 6750's credential parameter (docs/security.md): the auth layer
    /// reads it; accepted here so a URL carrying it is not refused.
    #[serde(default, rename = "access_token")]
    _access_token: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    spec: Option<String>,
    #[serde(default)]
    timestamp: Option<i64>,
}

async fn offsets(Extension(plane): Extension<Plane>, Path((topic, partition)): Path<(String, u32)>, Query(q): Query<OffsetsQuery>) -> ApiResult<dto::OffsetAnswer> {
    let spec = match (q.spec.as_deref().unwrap_or("latest"), q.timestamp) {
        ("earliest", _) => OffsetSpec::Earliest,
        ("latest", _) => OffsetSpec::Latest,
        ("timestamp", Some(ts)) => OffsetSpec::Timestamp(ts),
        ("timestamp", None) => return Err(bad_request("spec=timestamp needs timestamp=<ms>")),
        (other, _) => return Err(bad_request(format!("spec must be earliest, latest or timestamp, not {other:?}"))),
    };
    Ok(Json(dto::OffsetAnswer { offset: plane.offset(&topic, partition, spec).await.map_err(ApiError)? }))
}

/// Group membership at the group's coordinator (on a cluster, the metadata
/// leader: docs/cluster.md), as the native `log.group.*` routes do.
async fn group_request<T: serde::de::DeserializeOwned>(log: &Log, plane: &Plane, route: &str, group: &str, body: serde_json::Value) -> Result<T, ApiError> {
    let v = native::group_at_coordinator(log, plane, route, group, body).await.map_err(ApiError)?;
    serde_json::from_value(v).map_err(|e| ApiError(ErrorBody::new(ErrorCode::Internal, format!("group answer: {e}"))))
}

async fn list_groups(State(log): State<Log>, Extension(plane): Extension<Plane>) -> ApiResult<Vec<weft_log::GroupSummary>> {
    Ok(Json(group_request(&log, &plane, dto::route::GROUP_LIST, "", serde_json::json!({})).await?))
}

async fn describe_group(State(log): State<Log>, Extension(plane): Extension<Plane>, Path(group): Path<String>) -> ApiResult<weft_log::GroupDescription> {
    let body = serde_json::json!({ "group": group });
    Ok(Json(group_request(&log, &plane, dto::route::GROUP_DESCRIBE, &group, body).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    #[serde(default)]
    member_id: Option<String>,
    #[serde(default)]
    client_id: String,
    topics: Vec<String>,
    #[serde(default)]
    strategy: Option<weft_log::AssignmentStrategy>,
    #[serde(default)]
    session_timeout_ms: Option<u64>,
}

async fn join_group(State(log): State<Log>, Extension(plane): Extension<Plane>, Path(group): Path<String>, body: BodyBytes) -> ApiResult<dto::Member> {
    let b: JoinBody = parse(&body)?;
    let req = dto::JoinGroup { group, member_id: b.member_id, client_id: b.client_id, topics: b.topics, strategy: b.strategy, session_timeout_ms: b.session_timeout_ms };
    Ok(Json(group_request(&log, &plane, dto::route::GROUP_JOIN, &req.group, to_value(&req)?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    member_id: String,
    /// Heartbeat: the generation the member has adopted (see log.group.heartbeat).
    #[serde(default)]
    generation: Option<u32>,
}

async fn heartbeat(State(log): State<Log>, Extension(plane): Extension<Plane>, Path(group): Path<String>, body: BodyBytes) -> ApiResult<dto::Member> {
    let b: MemberBody = parse(&body)?;
    let req = dto::MemberRef { group, member_id: b.member_id, generation: b.generation };
    Ok(Json(group_request(&log, &plane, dto::route::GROUP_HEARTBEAT, &req.group, to_value(&req)?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetOffsetsBody {
    topic: String,
    #[serde(default)]
    partition: Option<u32>,
    to: weft_log::ResetTarget,
    #[serde(default)]
    dry_run: bool,
}

// Through the plane, as `log.group.reset_offsets`: on a cluster node a
// replicated topic's offsets move through the metadata group.
async fn reset_offsets(Extension(plane): Extension<Plane>, Path(group): Path<String>, body: BodyBytes) -> ApiResult<dto::ResetOffsetsAnswer> {
    let b: ResetOffsetsBody = parse(&body)?;
    let req = dto::ResetOffsets { group, topic: b.topic, partition: b.partition, to: b.to, dry_run: b.dry_run };
    Ok(Json(plane.reset_offsets(req).await.map_err(ApiError)?))
}

async fn delete_group(Extension(plane): Extension<Plane>, Path(group): Path<String>) -> ApiResult<dto::Done> {
    plane.delete_group(&group).await.map_err(ApiError)?;
    Ok(Json(dto::Done { ok: true }))
}

async fn leave_group(State(log): State<Log>, Extension(plane): Extension<Plane>, Path(group): Path<String>, body: BodyBytes) -> ApiResult<dto::Done> {
    let b: MemberBody = parse(&body)?;
    let req = dto::MemberRef { group, member_id: b.member_id, generation: None };
    Ok(Json(group_request(&log, &plane, dto::route::GROUP_LEAVE, &req.group, to_value(&req)?).await?))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError(ErrorBody::new(ErrorCode::Internal, e.to_string())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    #[serde(default)]
    member_id: Option<String>,
    #[serde(default)]
    generation: Option<u32>,
    offsets: Vec<dto::CommitOffset>,
}

async fn commit(Extension(plane): Extension<Plane>, Path(group): Path<String>, body: BodyBytes) -> ApiResult<dto::Done> {
    let b: CommitBody = parse(&body)?;
    plane.commit(dto::Commit { group, member_id: b.member_id, generation: b.generation, offsets: b.offsets }).await.map_err(ApiError)?;
    Ok(Json(dto::Done { ok: true }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommittedQuery {
    /// RFC 6750's credential parameter (docs/security.md): the auth layer
    /// reads it; accepted here so a URL carrying it is not refused.
    #[serde(default, rename = "access_token")]
    _access_token: Option<serde::de::IgnoredAny>,
    topic: String,
    partition: u32,
    /// earliest | latest | none: also answer the starting offset (`start`).
    #[serde(default)]
    reset: Option<weft_log::ResetPolicy>,
}

async fn committed(Extension(plane): Extension<Plane>, Path(group): Path<String>, Query(q): Query<CommittedQuery>) -> ApiResult<dto::CommittedAnswer> {
    Ok(Json(plane.committed(&dto::Committed { group, topic: q.topic, partition: q.partition, reset: q.reset }).await.map_err(ApiError)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// RFC 6750's credential parameter (docs/security.md): the auth layer
    /// reads it; accepted here so a URL carrying it is not refused.
    #[serde(default, rename = "access_token")]
    _access_token: Option<serde::de::IgnoredAny>,
    /// A number, `earliest` or `latest` (default).
    #[serde(default)]
    offset: Option<String>,
    #[serde(default)]
    encoding: Encoding,
}

async fn start_offset(plane: &Plane, topic: &str, partition: u32, q: &Option<String>) -> Result<u64, ApiError> {
    Ok(match q.as_deref() {
        None | Some("latest") => plane.offset(topic, partition, OffsetSpec::Latest).await.map_err(ApiError)?,
        Some("earliest") => plane.offset(topic, partition, OffsetSpec::Earliest).await.map_err(ApiError)?,
        Some(n) => n.parse().map_err(|_| bad_request(format!("offset must be a number, earliest or latest, not {n:?}")))?,
    })
}

async fn stream_partition(
    Extension(plane): Extension<Plane>,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Validate before upgrading, so errors are plain HTTP errors.
    let offset = start_offset(&plane, &topic, partition, &q.offset).await?;
    plane.offset(&topic, partition, OffsetSpec::Latest).await.map_err(ApiError)?;
    let enc = q.encoding;
    Ok(ws.on_upgrade(move |socket| async move {
        let (tx, rx) = mpsc::channel(1024);
        let follower = tokio::spawn(follow(plane, topic, partition, offset, enc, tx));
        pump(socket, rx).await;
        follower.abort();
    }))
}

async fn stream_topic(Extension(plane): Extension<Plane>, Path(topic): Path<String>, Query(q): Query<StreamQuery>, ws: WebSocketUpgrade) -> Result<Response, ApiError> {
    let desc = plane.describe_topic(&topic).await.map_err(ApiError)?;
    let mut starts = vec![];
    for p in &desc.partitions {
        starts.push((p.partition.0, start_offset(&plane, &topic, p.partition.0, &q.offset).await?));
    }
    let enc = q.encoding;
    Ok(ws.on_upgrade(move |socket| async move {
        let (tx, rx) = mpsc::channel(1024);
        let followers: Vec<_> = starts.into_iter().map(|(p, o)| tokio::spawn(follow(plane.clone(), topic.clone(), p, o, enc, tx.clone()))).collect();
        drop(tx);
        pump(socket, rx).await;
        for f in followers {
            f.abort();
        }
    }))
}

/// Long-poll one partition and push every record, as JSON text, into `tx`.
async fn follow(plane: Plane, topic: String, partition: u32, mut offset: u64, enc: Encoding, tx: mpsc::Sender<String>) {
    loop {
        let req = dto::Fetch {
            topic: topic.clone(),
            partition,
            offset,
            max_bytes: Some(native::DEFAULT_MAX_BYTES),
            max_records: Some(1000),
            wait_ms: Some(1000),
            raw: false,
            reset: None,
        };
        let r = match plane.fetch(&req).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(serde_json::to_string(&e).unwrap_or_default()).await;
                return;
            }
        };
        for rec in r.records.into_iter().map(record_of) {
            offset = rec.offset.0 + 1;
            let Ok(text) = serde_json::to_string(&record_json(partition, &rec, enc)) else { continue };
            if tx.send(text).await.is_err() {
                return;
            }
        }
    }
}

async fn pump(mut socket: WebSocket, mut rx: mpsc::Receiver<String>) {
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(text) => if socket.send(Message::Text(text.into())).await.is_err() { return },
                None => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
