use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use weft_log::{Log, LogError, Offset, OffsetSpec, PartitionId, ProduceRecord};
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
    #[error("log: {0}")]
    Log(#[from] LogError),
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

/// Serve `spec.pv` from `provider`, backed by `spec.topic` (created with the
/// log's defaults when missing). A put is answered once its record is as
/// durable as the log's fsync policy promises.
pub async fn attach(log: &Log, provider: &Provider, spec: &PvTopicSpec) -> Result<PvTopicBridge, BridgeError> {
    if provider.has(&spec.pv) {
        return Err(BridgeError::PvExists(spec.pv.clone()));
    }
    if log.describe_topic(&spec.topic).is_err() {
        log.create_topic(&spec.topic, None).await?;
    }
    let partition = PartitionId(spec.partition);
    let latest = log.list_offset(&spec.topic, partition, OffsetSpec::Latest)?;
    let earliest = log.list_offset(&spec.topic, partition, OffsetSpec::Earliest)?;

    // The PV starts at the partition's last value.
    let mut b = Builder::new(nt_scalar(spec.kind.scalar(), Meta::default()));
    b.set("value", Value::default_for(&weft_pva::proto::FieldDesc::Scalar(spec.kind.scalar())));
    b.set("timeStamp", stamp(now_ms()));
    if latest.0 > earliest.0 {
        let last = log.fetch(&spec.topic, partition, Offset(latest.0 - 1), 64 * 1024, 1, None).await?;
        if let Some(r) = last.decode()?.pop() {
            if let Some(v) = r.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|t| spec.kind.parse(t)) {
                b.set("value", v);
                b.set("timeStamp", stamp(r.timestamp_ms));
            }
        }
    }
    let (desc, value) = b.build();

    // Records the bridge wrote itself carry a header naming this bridge:
    // their monitor update went out with the put, so the follower skips them.
    // (Remembering offsets instead would race: the follower can see the
    // record before the put learns its offset.)
    let origin = Bytes::from(uuid::Uuid::new_v4().to_string());
    let handler: PutHandler = {
        let (log, topic, kind, origin) = (log.clone(), spec.topic.clone(), spec.kind, origin.clone());
        Arc::new(move |pv: &SharedPv, _bits: &BitSet, mut merged: Value| {
            let desc = pv.desc();
            let (log, topic, origin) = (log.clone(), topic.clone(), origin.clone());
            Box::pin(async move {
                let v = path_ref(&desc, &merged, "value").map(|(v, _)| v.clone()).ok_or("no value field")?;
                let text = kind.render(&v).ok_or_else(|| format!("value {v:?} is not a {kind:?}"))?;
                let record = ProduceRecord {
                    partition: Some(partition),
                    value: Some(Bytes::from(text)),
                    headers: vec![(ORIGIN_HEADER.to_owned(), origin)],
                    ..ProduceRecord::default()
                };
                // the put is answered once the record is as durable as the
                // log's fsync policy promises
                let ack = produce(&log, &topic, record).await?;
                if let Some(ts) = weft_pva::proto::nt::path_mut(&desc, &mut merged, "timeStamp") {
                    *ts = stamp(ack.1);
                }
                Ok(merged)
            })
        })
    };
    let pv = SharedPv::with_put_handler(desc, value, handler);
    provider.add_pv(&spec.pv, pv.clone());
    let follower = tokio::spawn(follow(log.clone(), spec.clone(), latest.0, pv.clone(), origin));
    tracing::info!(pv = %spec.pv, topic = %spec.topic, partition = spec.partition, "PV bridged to topic");
    Ok(PvTopicBridge { pv, follower })
}

/// Append one record and wait for its ack: (offset, timestamp).
async fn produce(log: &Log, topic: &str, record: ProduceRecord) -> Result<(u64, i64), String> {
    let acks = log.produce(topic, vec![record]).await.map_err(|e| e.to_string())?;
    let ack = acks.into_iter().next().ok_or("no ack")?.map_err(|e| e.to_string())?;
    Ok((ack.offset.0, ack.timestamp_ms))
}

async fn follow(log: Log, spec: PvTopicSpec, mut next: u64, pv: SharedPv, origin: Bytes) {
    let partition = PartitionId(spec.partition);
    loop {
        let fetched = match log.fetch(&spec.topic, partition, Offset(next), 1024 * 1024, 1000, Some(Duration::from_secs(1))).await {
            Ok(f) => f,
            Err(LogError::OffsetOutOfRange { earliest, .. }) => {
                // Retention removed what we had not read yet: go on from there.
                next = earliest.0;
                continue;
            }
            Err(e) => {
                tracing::warn!(pv = %spec.pv, error = %e, "bridge fetch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let records = match fetched.decode() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(pv = %spec.pv, error = %e, "bridge cannot decode records; stopping");
                return;
            }
        };
        for r in records {
            next = r.offset.0 + 1;
            if r.headers.iter().any(|(k, v)| k == ORIGIN_HEADER && *v == origin) {
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
                    tracing::warn!(pv = %spec.pv, offset = r.offset.0, "record is not a {:?}", spec.kind);
                    let _ = pv.post_fields(&[
                        ("alarm.severity", Value::I32(3)),
                        ("alarm.message", Value::String(format!("offset {} is not a {:?}", r.offset.0, spec.kind))),
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

