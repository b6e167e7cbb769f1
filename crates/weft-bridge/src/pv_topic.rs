use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use weft_broker::dto::Fetch;
use weft_broker::plane::Plane;
use weft_log::{OffsetSpec, PartitionId, ProduceRecord, ResetPolicy};
use weft_wire::{ErrorBody, ErrorCode};
use weft_pva::proto::nt::{nt_scalar, path_ref, time_value, Builder, Meta};
use weft_pva::proto::{BitSet, ScalarType, Value};
use weft_pva::server::{Provider, PutHandler, SharedPv};

/// Header on records written by a bridge's puts (value: the bridge's id).
pub const ORIGIN_HEADER: &str = "weft.bridge.origin";

/// Which PV a topic partition backs, and the PV's value type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PvTopicSpec {
    pub pv: String,
    pub topic: String,
    #[serde(default)]
    pub partition: u32,
    #[serde(default)]
    pub kind: ValueKind,
}

/// The NTScalar value type. Records hold the value as UTF-8 text (`42.5`,
/// `17`, `hello`), so any producer can feed the PV.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    #[default]
    Double,
    Int,
    String,
}

impl ValueKind {
    fn scalar(self) -> ScalarType {
        match self {
            ValueKind::Double => ScalarType::F64,
            ValueKind::Int => ScalarType::I64,
            ValueKind::String => ScalarType::String,
        }
    }

    fn parse(self, text: &str) -> Option<Value> {
        let t = text.trim();
        match self {
            ValueKind::Double => t.parse().ok().map(Value::F64),
            ValueKind::Int => t.parse().ok().map(Value::I64),
            ValueKind::String => Some(Value::String(text.to_owned())),
        }
    }

    fn render(self, v: &Value) -> Option<String> {
        Some(match (self, v) {
            (ValueKind::Double, Value::F64(x)) => x.to_string(),
            (ValueKind::Int, Value::I64(x)) => x.to_string(),
            (ValueKind::String, Value::String(s)) => s.clone(),
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge {pv:?}: {code:?}: {message}")]
    Plane { pv: String, code: ErrorCode, message: String },
    #[error("PV {0:?} is already served")]
    PvExists(String),
    #[error("bridge {pv:?}: {reason}")]
    Config { pv: String, reason: String },
}

/// A running bridge; dropping it stops following the topic.
pub struct PvTopicBridge {
    pub pv: SharedPv,
    follower: JoinHandle<()>,
}

impl Drop for PvTopicBridge {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Where following starts, and the value the PV starts with.
struct Start {
    next: u64,
    last: Option<(Value, i64)>,
}

/// Errors that retrying cannot mend: the bridge's configuration or rights
/// are wrong. Everything else (no metadata leader yet after a cluster
/// starts, a leader change, a timeout) is retried in the background.
fn permanent(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Validation | ErrorCode::BadBody | ErrorCode::Unauthorized | ErrorCode::Unauthenticated | ErrorCode::Forbidden)
}

/// Make sure the topic exists and find the partition's end and last value.
async fn prepare(plane: &Plane, spec: &PvTopicSpec) -> Result<Start, BridgeError> {
    let err = |e: ErrorBody| BridgeError::Plane { pv: spec.pv.clone(), code: e.code, message: e.message };
    let desc = match plane.describe_topic(&spec.topic).await {
        Ok(d) => d,
        Err(e) if e.code == ErrorCode::NotFound => match plane.create_topic(&spec.topic, None, None).await {
            Ok(d) => d,
            // created by someone else in between
            Err(e) if e.code == ErrorCode::Conflict => plane.describe_topic(&spec.topic).await.map_err(err)?,
            Err(e) => return Err(err(e)),
        },
        Err(e) => return Err(err(e)),
    };
    if spec.partition >= desc.config.partitions {
        return Err(BridgeError::Config { pv: spec.pv.clone(), reason: format!("topic {:?} has {} partitions, no partition {}", spec.topic, desc.config.partitions, spec.partition) });
    }
    let latest = plane.offset(&spec.topic, spec.partition, OffsetSpec::Latest).await.map_err(err)?;
    let earliest = plane.offset(&spec.topic, spec.partition, OffsetSpec::Earliest).await.map_err(err)?;
    let mut last = None;
    if latest > earliest {
        let f = plane.fetch(&fetch_req(spec, latest - 1, 1, None)).await.map_err(err)?;
        if let Some(r) = f.records.last() {
            last = r.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|t| spec.kind.parse(t)).map(|v| (v, r.timestamp_ms));
        }
    }
    Ok(Start { next: latest, last })
}

fn fetch_req(spec: &PvTopicSpec, offset: u64, max_records: usize, wait_ms: Option<u64>) -> Fetch {
    Fetch {
        topic: spec.topic.clone(),
        partition: spec.partition,
        offset,
        max_bytes: Some(1024 * 1024),
        max_records: Some(max_records),
        wait_ms,
        raw: false,
        // Retention removed what we had not read yet: go on from there.
        reset: Some(ResetPolicy::Earliest),
    }
}

/// Serve `spec.pv` from `provider`, backed by `spec.topic` (created with the
/// defaults when missing) through the record plane: the node's own log on a
/// single node, the replicated partition on a cluster node. A put is
/// answered once its record is as durable as the plane promises (the log's
/// fsync policy; on a cluster, a majority of replicas).
///
/// When the plane cannot answer yet (a cluster whose metadata group has no
/// leader yet), the PV is served at once with a default value and the
/// bridge keeps trying in the background; a wrong configuration (no such
/// partition, no rights) is an error here.
pub async fn attach(plane: &Plane, provider: &Provider, spec: &PvTopicSpec) -> Result<PvTopicBridge, BridgeError> {
    if provider.has(&spec.pv) {
        return Err(BridgeError::PvExists(spec.pv.clone()));
    }
    let start = match prepare(plane, spec).await {
        Ok(s) => Some(s),
        Err(BridgeError::Plane { code, message, .. }) if !permanent(code) => {
            tracing::warn!(pv = %spec.pv, topic = %spec.topic, ?code, %message, "bridge topic not reachable yet; retrying in the background");
            None
        }
        Err(e) => return Err(e),
    };

    let mut b = Builder::new(nt_scalar(spec.kind.scalar(), Meta::default()));
    b.set("value", Value::default_for(&weft_pva::proto::FieldDesc::Scalar(spec.kind.scalar())));
    b.set("timeStamp", stamp(now_ms()));
    // The PV starts at the partition's last value.
    if let Some((v, ts)) = start.as_ref().and_then(|s| s.last.clone()) {
        b.set("value", v);
        b.set("timeStamp", stamp(ts));
    }
    let (desc, value) = b.build();

    // Records the bridge wrote itself carry a header naming this bridge:
    // their monitor update went out with the put, so the follower skips them.
    // (Remembering offsets instead would race: the follower can see the
    // record before the put learns its offset.)
    let origin = Bytes::from(uuid::Uuid::new_v4().to_string());
    let partition = PartitionId(spec.partition);
    let handler: PutHandler = {
        let (plane, topic, kind, origin) = (plane.clone(), spec.topic.clone(), spec.kind, origin.clone());
        Arc::new(move |pv: &SharedPv, _bits: &BitSet, mut merged: Value| {
            let desc = pv.desc();
            let (plane, topic, origin) = (plane.clone(), topic.clone(), origin.clone());
            Box::pin(async move {
                let v = path_ref(&desc, &merged, "value").map(|(v, _)| v.clone()).ok_or("no value field")?;
                let text = kind.render(&v).ok_or_else(|| format!("value {v:?} is not a {kind:?}"))?;
                let record = ProduceRecord {
                    partition: Some(partition),
                    value: Some(Bytes::from(text)),
                    headers: vec![(ORIGIN_HEADER.to_owned(), origin)],
                    ..ProduceRecord::default()
                };
                let ack = produce(&plane, &topic, record).await?;
                if let Some(ts) = weft_pva::proto::nt::path_mut(&desc, &mut merged, "timeStamp") {
                    *ts = stamp(ack.1);
                }
                Ok(merged)
            })
        })
    };
    let pv = SharedPv::with_put_handler(desc, value, handler);
    provider.add_pv(&spec.pv, pv.clone());
    let follower = tokio::spawn(follow(plane.clone(), spec.clone(), start, pv.clone(), origin));
    tracing::info!(pv = %spec.pv, topic = %spec.topic, partition = spec.partition, "PV bridged to topic");
    Ok(PvTopicBridge { pv, follower })
}

/// Append one record and wait for its ack: (offset, timestamp).
async fn produce(plane: &Plane, topic: &str, record: ProduceRecord) -> Result<(u64, i64), String> {
    let ts = record.timestamp_ms;
    let answer = plane.produce(topic, vec![record]).await.map_err(|e| format!("{:?}: {}", e.code, e.message))?;
    let r = answer.results.into_iter().next().ok_or("no ack")?;
    if let Some(e) = r.error {
        return Err(format!("{:?}: {}", e.code, e.message));
    }
    let offset = r.offset.ok_or("the ack carries no offset")?;
    Ok((offset, r.timestamp_ms.or(ts).unwrap_or_else(now_ms)))
}

/// How often a failing bridge says so: the first failure, then every 30th
/// (one a second while retrying).
fn should_warn(failures: u64) -> bool {
    failures == 1 || failures % 30 == 0
}

async fn follow(plane: Plane, spec: PvTopicSpec, start: Option<Start>, pv: SharedPv, origin: Bytes) {
    let mut failures = 0u64;
    let mut next = match start {
        Some(s) => s.next,
        None => loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match prepare(&plane, &spec).await {
                Ok(s) => {
                    tracing::info!(pv = %spec.pv, topic = %spec.topic, "bridge topic reachable");
                    if let Some((v, ts)) = s.last {
                        let _ = pv.post_fields(&[("value", v), ("timeStamp", stamp(ts))]);
                    }
                    break s.next;
                }
                Err(e) => {
                    failures += 1;
                    if should_warn(failures) {
                        tracing::warn!(pv = %spec.pv, error = %e, failures, "bridge topic still not reachable; retrying");
                    }
                }
            }
        },
    };
    failures = 0;
    loop {
        let asked = std::time::Instant::now();
        let fetched = match plane.fetch(&fetch_req(&spec, next, 1000, Some(1000))).await {
            Ok(f) => {
                failures = 0;
                f
            }
            Err(e) => {
                failures += 1;
                if should_warn(failures) {
                    tracing::warn!(pv = %spec.pv, code = ?e.code, message = %e.message, failures, "bridge fetch failed; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if fetched.records.is_empty() && asked.elapsed() < Duration::from_millis(50) {
            // A plane that answers an empty fetch at once (no long poll)
            // must not make this loop spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        next = next.max(fetched.next_offset);
        for r in fetched.records {
            next = next.max(r.offset + 1);
            if r.headers.iter().any(|(k, v)| k == ORIGIN_HEADER && v.as_slice() == origin.as_ref()) {
                continue;
            }
            let parsed = r.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|t| spec.kind.parse(t));
            match parsed {
                Some(v) => {
                    let _ = pv.post_fields(&[("value", v), ("timeStamp", stamp(r.timestamp_ms))]);
                }
                None => {
                    // Say so on the PV rather than drop it silently:
                    // alarm INVALID (3) with a message.
                    tracing::warn!(pv = %spec.pv, offset = r.offset, "record is not a {:?}", spec.kind);
                    let _ = pv.post_fields(&[
                        ("alarm.severity", Value::I32(3)),
                        ("alarm.message", Value::String(format!("offset {} is not a {:?}", r.offset, spec.kind))),
                        ("timeStamp", stamp(r.timestamp_ms)),
                    ]);
                }
            }
        }
    }
}

fn stamp(ms: i64) -> Value {
    time_value(ms.div_euclid(1000), (ms.rem_euclid(1000) * 1_000_000) as i32)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

