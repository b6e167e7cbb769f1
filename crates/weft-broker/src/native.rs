//! The `log.*` endpoints on the native protocol.

use std::time::Duration;

use serde_bytes::ByteBuf;
use weft_log::{Log, LogError, Offset, OffsetCommit, OffsetSpec, PartitionId, ProduceRecord, Record};
use weft_service::{Service, ServiceError};

use crate::dto::{self, route};
use crate::error::log_error_body;
use crate::plane::{LocalPlane, Plane};

/// Default and largest number of records one fetch returns.
pub const DEFAULT_MAX_RECORDS: usize = 1000;
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Group sessions when the client does not say.
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;

/// Register every `log.*` endpoint of `log` on `service` (a single node:
/// records and topics in `log` itself).
pub fn register(service: &mut Service, log: Log) -> Result<(), ServiceError> {
    register_with(service, log.clone(), LocalPlane::shared(log))
}

/// Register every `log.*` endpoint; records, topics and committed offsets go
/// through `plane` (a cluster node passes its replicated plane), group
/// membership and topic changes other than create/delete stay on `log`.
pub fn register_with(service: &mut Service, log: Log, plane: Plane) -> Result<(), ServiceError> {
    let p = plane.clone();
    service.endpoint(route::TOPIC_CREATE, move |req: dto::CreateTopic| {
        let p = p.clone();
        async move { p.create_topic(&req.name, req.config, req.replicas).await.map_err(ServiceError::Wire) }
    })?;
    let p = plane.clone();
    service.endpoint(route::TOPIC_LIST, move |_: Option<dto::Empty>| {
        let p = p.clone();
        async move { p.list_topics().await.map_err(ServiceError::Wire) }
    })?;
    let p = plane.clone();
    service.endpoint(route::TOPIC_DESCRIBE, move |req: dto::TopicRef| {
        let p = p.clone();
        async move { p.describe_topic(&req.name).await.map_err(ServiceError::Wire) }
    })?;
    let p = plane.clone();
    service.endpoint(route::TOPIC_ALTER, move |req: dto::AlterTopic| {
        let p = p.clone();
        async move { p.alter_topic(&req.name, &req.to_alter()).await.map_err(ServiceError::Wire) }
    })?;
    let p = plane.clone();
    service.endpoint(route::TOPIC_DELETE, move |req: dto::TopicRef| {
        let p = p.clone();
        async move { p.delete_topic(&req.name).await.map(|_| dto::Done { ok: true }).map_err(ServiceError::Wire) }
    })?;
    let p = plane.clone();
    // Its bodies by hand when they have the usual shape (produce_body.rs).
    service.endpoint_fast(route::PRODUCE, move |req: dto::ProduceIn| {
        let p = p.clone();
        async move {
            let opts = produce_options(req.producer_id, req.sequence, req.acks).map_err(ServiceError::Wire)?;
            p.produce_with(&req.topic, req.records, opts).await.map_err(ServiceError::Wire)
        }
    })?;
    let p = plane.clone();
    service.endpoint(route::FETCH, move |req: dto::Fetch| {
        let p = p.clone();
        async move { p.fetch(&req).await.map_err(ServiceError::Wire) }
    })?;
    let (l, p) = (log.clone(), plane.clone());
    service.endpoint(route::GROUP_FETCH, move |req: dto::MemberFetch| {
        let (l, p) = (l.clone(), p.clone());
        async move {
            // The fence is the coordinator's; the records come through the plane.
            let check = serde_json::json!({"group": req.group, "member_id": req.member_id, "generation": req.generation, "topic": req.fetch.topic, "partition": req.fetch.partition});
            group_call::<dto::Done>(&l, &p, GROUP_CHECK_FETCH, &req.group, check).await?;
            p.fetch(&req.fetch).await.map_err(ServiceError::Wire)
        }
    })?;
    let p = plane.clone();
    service.endpoint(route::OFFSETS, move |req: dto::Offsets| {
        let p = p.clone();
        async move { p.offset(&req.topic, req.partition, offset_spec(req.spec)).await.map(|o| dto::OffsetAnswer { offset: o }).map_err(ServiceError::Wire) }
    })?;
    let (l, p) = (log.clone(), plane.clone());
    service.endpoint(route::GROUP_JOIN, move |req: dto::JoinGroup| {
        let (l, p) = (l.clone(), p.clone());
        async move { group_call::<dto::Member>(&l, &p, route::GROUP_JOIN, &req.group, to_json(&req)?).await }
    })?;
    let (l, p) = (log.clone(), plane.clone());
    service.endpoint(route::GROUP_HEARTBEAT, move |req: dto::MemberRef| {
        let (l, p) = (l.clone(), p.clone());
        async move { group_call::<dto::Member>(&l, &p, route::GROUP_HEARTBEAT, &req.group, to_json(&req)?).await }
    })?;
    let (l, p) = (log.clone(), plane.clone());
    service.endpoint(route::GROUP_LEAVE, move |req: dto::MemberRef| {
        let (l, p) = (l.clone(), p.clone());
        async move { group_call::<dto::Done>(&l, &p, route::GROUP_LEAVE, &req.group, to_json(&req)?).await }
    })?;
    let p = plane.clone();
    service.endpoint(route::GROUP_COMMIT, move |req: dto::Commit| {
        let p = p.clone();
        async move { p.commit(req).await.map(|_| dto::Done { ok: true }).map_err(ServiceError::Wire) }
    })?;
    let p = plane.clone();
    service.endpoint(route::GROUP_COMMITTED, move |req: dto::Committed| {
        let p = p.clone();
        async move { p.committed(&req).await.map_err(ServiceError::Wire) }
    })?;
    let (l, p) = (log.clone(), plane.clone());
    service.endpoint(route::GROUP_LIST, move |_: Option<dto::Empty>| {
        let (l, p) = (l.clone(), p.clone());
        async move { group_call::<Vec<weft_log::GroupSummary>>(&l, &p, route::GROUP_LIST, "", serde_json::json!({})).await }
    })?;
    let (l, p) = (log, plane.clone());
    service.endpoint(route::GROUP_DESCRIBE, move |req: dto::GroupRef| {
        let (l, p) = (l.clone(), p.clone());
        async move { group_call::<weft_log::GroupDescription>(&l, &p, route::GROUP_DESCRIBE, &req.group, to_json(&req)?).await }
    })?;
    let p = plane.clone();
    service.endpoint(route::GROUP_RESET_OFFSETS, move |req: dto::ResetOffsets| {
        let p = p.clone();
        async move { p.reset_offsets(req).await.map_err(ServiceError::Wire) }
    })?;
    let p = plane;
    service.endpoint(route::GROUP_DELETE, move |req: dto::GroupRef| {
        let p = p.clone();
        async move { p.delete_group(&req.group).await.map(|_| dto::Done { ok: true }).map_err(ServiceError::Wire) }
    })?;
    Ok(())
}

pub fn offset_spec(q: dto::OffsetQuery) -> OffsetSpec {
    match q {
        dto::OffsetQuery::Earliest => OffsetSpec::Earliest,
        dto::OffsetQuery::Latest => OffsetSpec::Latest,
        dto::OffsetQuery::Timestamp(ms) => OffsetSpec::Timestamp(ms),
    }
}

/// A decoded record (its bytes share the request frame's buffer when the
/// service decoded it).
pub fn record_in(r: dto::RecordIn) -> ProduceRecord {
    ProduceRecord {
        partition: r.partition.map(PartitionId),
        timestamp_ms: r.timestamp_ms,
        key: r.key.map(|k| k.into_bytes()),
        value: r.value.map(|v| v.into_bytes()),
        headers: r.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
    }
}

pub fn record_out(r: Record) -> dto::RecordOut {
    dto::RecordOut {
        offset: r.offset.0,
        timestamp_ms: r.timestamp_ms,
        key: r.key.map(|k| ByteBuf::from(k.to_vec())),
        value: r.value.map(|v| ByteBuf::from(v.to_vec())),
        headers: r.headers.into_iter().map(|(k, v)| (k, ByteBuf::from(v.to_vec()))).collect(),
    }
}

/// The options of a produce request: `sequence` only with `producer_id`.
pub fn produce_opts(req: &dto::Produce) -> Result<crate::plane::ProduceOpts, weft_wire::ErrorBody> {
    produce_options(req.producer_id, req.sequence, req.acks)
}

/// [`produce_opts`] from the fields themselves (the HTTP gateway's).
pub fn produce_options(producer_id: Option<u64>, sequence: Option<u64>, acks: dto::Acks) -> Result<crate::plane::ProduceOpts, weft_wire::ErrorBody> {
    let idempotent = match (producer_id, sequence) {
        (Some(id), Some(seq)) => Some((id, seq)),
        (None, None) => None,
        _ => return Err(weft_wire::ErrorBody::new(weft_wire::ErrorCode::Validation, "producer_id and sequence go together")),
    };
    Ok(crate::plane::ProduceOpts { idempotent, acks })
}

/// Produce; a request-level error (unknown topic, bad request) fails the
/// whole call, a record-level one (too large) only that record's result.
pub async fn produce(log: &Log, topic: &str, records: Vec<ProduceRecord>) -> Result<dto::ProduceResponse, LogError> {
    // Timestamps are milliseconds since the epoch; a negative one is a
    // client bug, refused before anything is written.
    if let Some((i, ts)) = records.iter().enumerate().find_map(|(i, r)| r.timestamp_ms.filter(|t| *t < 0).map(|t| (i, t))) {
        return Err(LogError::InvalidRequest(format!("record {i}: timestamp_ms must be >= 0 (milliseconds since the epoch), got {ts}")));
    }
    let acks = log.produce(topic, records).await?;
    let results = acks
        .into_iter()
        .map(|a| match a {
            Ok(a) => dto::ProduceResult { partition: Some(a.partition.0), offset: Some(a.offset.0), timestamp_ms: Some(a.timestamp_ms), error: None },
            Err(e) => dto::ProduceResult { partition: None, offset: None, timestamp_ms: None, error: Some(log_error_body(&e)) },
        })
        .collect();
    Ok(dto::ProduceResponse { results })
}

/// A fetch's `max_records`: absent = the default, above 100 000 = 100 000,
/// 0 = refused (it used to return one record; "zero records" is no fetch).
pub fn fetch_max_records(asked: Option<usize>) -> Result<usize, LogError> {
    match asked {
        Some(0) => Err(LogError::InvalidRequest("max_records must be at least 1".into())),
        other => Ok(other.unwrap_or(DEFAULT_MAX_RECORDS).min(100_000)),
    }
}

pub async fn fetch(log: &Log, req: &dto::Fetch) -> Result<dto::FetchResponse, LogError> {
    let max_records = fetch_max_records(req.max_records)?;
    let max_bytes = req.max_bytes.unwrap_or(DEFAULT_MAX_BYTES).max(1);
    let wait = req.wait_ms.filter(|w| *w > 0).map(Duration::from_millis);
    let partition = PartitionId(req.partition);
    // The reset policy moves an offset outside the log before fetching.
    let (offset, reset_from) = match req.reset {
        Some(policy) => {
            let s = log.start_offset(&req.topic, partition, Some(Offset(req.offset)), policy)?;
            (s.offset.0, s.reset.then_some(req.offset))
        }
        None => (req.offset, None),
    };
    if let Some(from) = reset_from {
        tracing::debug!(topic = %req.topic, partition = req.partition, from, to = offset, "fetch offset reset");
    }
    let r = log.fetch(&req.topic, partition, Offset(offset), max_bytes, max_records, wait).await?;
    let mut out = dto::FetchResponse {
        topic: req.topic.clone(),
        partition: req.partition,
        high_watermark: r.high_watermark.0,
        log_start_offset: r.log_start_offset.0,
        next_offset: offset,
        records: vec![],
        batches: None,
        reset_from,
    };
    if req.raw {
        // whole batches as stored: the reader decodes them (and checks the
        // CRCs) and goes on after the last one
        out.next_offset = r.batches_end()?.map_or(offset, |o| o.0.max(offset));
        out.batches = Some(ByteBuf::from(r.batches.to_vec()));
    } else {
        let records = r.decode()?;
        out.next_offset = records.last().map(|x| x.offset.0 + 1).unwrap_or(offset);
        out.records = records.into_iter().map(record_out).collect();
    }
    Ok(out)
}

/// Not a public route: the fetch fence of a member, as a group request
/// (`{group, member_id, generation, topic, partition}`) a cluster node asks
/// the group's coordinator.
pub const GROUP_CHECK_FETCH: &str = "group.check_fetch";
/// Not a public route either: `{group}` → `{members}`, the live members of a
/// group at its coordinator (a reset is refused while there are any).
pub const GROUP_MEMBERS: &str = "group.members";
/// Not a public route: `{group}` → `{forgotten}`, the coordinator drops a
/// group's empty membership record (a cluster's group delete; refused
/// `group_active` while it has members).
pub const GROUP_FORGET: &str = "group.forget";

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ServiceError> {
    serde_json::to_value(v).map_err(|e| ServiceError::Wire(weft_wire::ErrorBody::new(weft_wire::ErrorCode::Internal, e.to_string())))
}

/// A membership request: at the group's coordinator (the plane forwards it
/// when that is another node), else served here.
async fn group_call<T: serde::de::DeserializeOwned>(log: &Log, plane: &Plane, route: &str, group: &str, body: serde_json::Value) -> Result<T, ServiceError> {
    let answer = group_at_coordinator(log, plane, route, group, body).await.map_err(ServiceError::Wire)?;
    serde_json::from_value(answer).map_err(|e| ServiceError::Wire(weft_wire::ErrorBody::new(weft_wire::ErrorCode::Internal, format!("group answer: {e}"))))
}

/// A membership request as JSON, at the group's coordinator: forwarded by
/// the plane when that is another node, else served here. The native
/// routes and the HTTP gateway's `/v1/groups` both come through here.
pub async fn group_at_coordinator(log: &Log, plane: &Plane, route: &str, group: &str, body: serde_json::Value) -> Result<serde_json::Value, weft_wire::ErrorBody> {
    match plane.group_forward(route, group, body.clone()).await? {
        Some(v) => Ok(v),
        None => group_local(log, route, body).await,
    }
}

/// Serve a membership request from this node's group state (never forwards):
/// the local half of [`group_call`], and what a coordinator runs for a
/// forwarded one.
pub async fn group_local(log: &Log, route: &str, body: serde_json::Value) -> Result<serde_json::Value, weft_wire::ErrorBody> {
    use weft_wire::{ErrorBody, ErrorCode};
    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ErrorBody> {
        serde_json::from_value(v).map_err(|e| ErrorBody::new(ErrorCode::BadBody, format!("invalid group request: {e}")))
    }
    fn out<T: serde::Serialize>(r: Result<T, LogError>) -> Result<serde_json::Value, ErrorBody> {
        let v = r.map_err(|e| crate::error::log_error_body(&e))?;
        serde_json::to_value(v).map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))
    }
    match route {
        route::GROUP_JOIN => out(join(log, &parse::<dto::JoinGroup>(body)?)),
        route::GROUP_HEARTBEAT => {
            let r: dto::MemberRef = parse(body)?;
            out(log.heartbeat_ack(&r.group, &r.member_id, r.generation).map(member))
        }
        route::GROUP_LEAVE => {
            let r: dto::MemberRef = parse(body)?;
            out(log.leave_group(&r.group, &r.member_id).map(|_| dto::Done { ok: true }))
        }
        route::GROUP_LIST => out(Ok::<_, LogError>(log.list_groups())),
        route::GROUP_DESCRIBE => out(log.describe_group(&parse::<dto::GroupRef>(body)?.group)),
        GROUP_CHECK_FETCH => {
            #[derive(serde::Deserialize)]
            struct Check {
                group: String,
                member_id: String,
                generation: u32,
                topic: String,
                partition: u32,
            }
            let c: Check = parse(body)?;
            out(log.check_member_fetch(&c.group, &c.member_id, c.generation, &c.topic, PartitionId(c.partition)).map(|_| dto::Done { ok: true }))
        }
        GROUP_MEMBERS => {
            let g: dto::GroupRef = parse(body)?;
            Ok(serde_json::json!({"members": log.group_member_count(&g.group)}))
        }
        GROUP_FORGET => {
            let g: dto::GroupRef = parse(body)?;
            out(log.forget_group(&g.group).map(|forgotten| serde_json::json!({ "forgotten": forgotten })))
        }
        other => Err(ErrorBody::new(ErrorCode::Validation, format!("not a group route: {other}"))),
    }
}

pub(crate) fn join(log: &Log, req: &dto::JoinGroup) -> Result<dto::Member, LogError> {
    let topics: Vec<&str> = req.topics.iter().map(String::as_str).collect();
    log.join_group(
        &req.group,
        req.member_id.as_deref(),
        &req.client_id,
        &topics,
        req.strategy.unwrap_or_default(),
        req.session_timeout_ms.unwrap_or(DEFAULT_SESSION_TIMEOUT_MS),
    )
    .map(member)
}

pub(crate) fn member(m: weft_log::MemberState) -> dto::Member {
    dto::Member {
        group: m.group,
        member_id: m.member_id,
        generation: m.generation,
        assignment: m.assignment.into_iter().map(|(t, p)| (t.as_str().to_owned(), p.0)).collect(),
        members: m.members,
        pending: m.pending,
    }
}

pub async fn reset_offsets(log: &Log, req: dto::ResetOffsets) -> Result<dto::ResetOffsetsAnswer, LogError> {
    let partitions = log.reset_group_offsets(&req.group, &req.topic, req.partition.map(PartitionId), req.to, req.dry_run).await?;
    Ok(dto::ResetOffsetsAnswer { group: req.group, topic: req.topic, dry_run: req.dry_run, partitions })
}

pub async fn commit(log: &Log, req: dto::Commit) -> Result<(), LogError> {
    let member = match (&req.member_id, req.generation) {
        (Some(m), Some(g)) => Some((m.as_str(), g)),
        (None, None) => None,
        _ => return Err(LogError::InvalidRequest("member_id and generation go together".into())),
    };
    let offsets = req
        .offsets
        .into_iter()
        .map(|o| OffsetCommit { topic: o.topic, partition: PartitionId(o.partition), offset: Offset(o.offset), metadata: o.metadata })
        .collect();
    log.commit_offsets(&req.group, member, offsets).await
}

pub fn committed(log: &Log, req: &dto::Committed) -> Result<dto::CommittedAnswer, LogError> {
    let partition = PartitionId(req.partition);
    let c = log.committed_offset(&req.group, &req.topic, partition);
    let mut out = match &c {
        Some(c) => dto::CommittedAnswer { offset: Some(c.offset.0), metadata: c.metadata.clone(), start: None, reset: None },
        None => dto::CommittedAnswer { offset: None, metadata: String::new(), start: None, reset: None },
    };
    if let Some(policy) = req.reset {
        let s = log.start_offset(&req.topic, partition, c.map(|c| c.offset), policy)?;
        out.start = Some(s.offset.0);
        out.reset = Some(s.reset);
    }
    Ok(out)
}
