//! JSON renderings of results and errors, shared by the native protocol,
//! HTTP and the CLI's `--json`. Keys and values are strings when they are
//! UTF-8, else `key_hex` / `value_hex`: lossless and readable.

use serde_json::{Map, Value as Json, json};
use weft_wire::{ErrorBody, ErrorCode};

use crate::error::{Error, code_name};
use crate::pb;

fn bytes_field(m: &mut Map<String, Json>, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => m.insert(name.into(), Json::String(s.into())),
        Err(_) => m.insert(format!("{name}_hex"), Json::String(b.iter().map(|x| format!("{x:02x}")).collect())),
    };
}

pub fn kv(k: &pb::KeyValue) -> Json {
    let mut m = Map::new();
    bytes_field(&mut m, "key", &k.key);
    bytes_field(&mut m, "value", &k.value);
    m.insert("create_revision".into(), k.create_revision.into());
    m.insert("mod_revision".into(), k.mod_revision.into());
    m.insert("version".into(), k.version.into());
    if k.deleted {
        m.insert("deleted".into(), true.into());
    }
    Json::Object(m)
}

pub fn record(r: &pb::Record) -> Json {
    let mut m = Map::new();
    m.insert("partition".into(), r.partition.into());
    m.insert("offset".into(), r.offset.into());
    m.insert("timestamp_ms".into(), r.timestamp_ms.into());
    if let Some(k) = &r.key {
        bytes_field(&mut m, "key", k);
    }
    bytes_field(&mut m, "value", &r.value);
    Json::Object(m)
}

/// A result as JSON; empty fields are left out.
pub fn result(r: &pb::Result) -> Json {
    let mut m = Map::new();
    m.insert("kind".into(), r.kind.clone().into());
    m.insert("revision".into(), r.revision.into());
    m.insert("count".into(), r.count.into());
    if !r.kvs.is_empty() || matches!(r.kind.as_str(), "get" | "range" | "filter" | "history") {
        m.insert("kvs".into(), r.kvs.iter().map(kv).collect());
    }
    if r.more {
        m.insert("more".into(), true.into());
    }
    if r.kind == "batch" {
        m.insert("succeeded".into(), r.succeeded.into());
        m.insert("ops".into(), r.ops.iter().map(result).collect());
    }
    if !r.tables.is_empty() || r.kind == "show_tables" {
        m.insert("tables".into(), r.tables.clone().into());
    }
    if r.kind == "topic_read" {
        m.insert("records".into(), r.records.iter().map(record).collect());
        m.insert("next_offset".into(), r.next_offset.into());
    }
    Json::Object(m)
}

pub fn event(e: &pb::Event) -> Json {
    let kind = if e.r#type == pb::EventType::Delete as i32 { "delete" } else { "put" };
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    m.insert("revision".into(), e.revision.into());
    if let Some(k) = &e.kv {
        m.insert("kv".into(), kv(k));
    }
    if let Some(k) = &e.prev_kv {
        m.insert("prev_kv".into(), kv(k));
    }
    Json::Object(m)
}

/// The native protocol's error code for a gRPC code (HTTP derives its
/// status from this, as for every other endpoint).
pub fn wire_code(code: tonic::Code) -> ErrorCode {
    use tonic::Code::*;
    match code {
        InvalidArgument => ErrorCode::Validation,
        NotFound => ErrorCode::NotFound,
        AlreadyExists | FailedPrecondition | Aborted => ErrorCode::Conflict,
        OutOfRange => ErrorCode::OutOfRange,
        ResourceExhausted => ErrorCode::Busy,
        Unavailable => ErrorCode::Unavailable,
        DeadlineExceeded => ErrorCode::Timeout,
        PermissionDenied => ErrorCode::Forbidden,
        Unauthenticated => ErrorCode::Unauthenticated,
        _ => ErrorCode::Handler,
    }
}

/// The error as the native protocol's and HTTP's error body: `details`
/// holds the gRPC code's name, the stable `kind` and the metadata (AQL
/// position, offending field, limit).
pub fn error_body(e: &Error) -> ErrorBody {
    if let Error::NotLeader { group, leader, addr, grpc_addr } = e {
        // The cluster's `not_leader` shape (docs/cluster.md), which the clients map.
        let nl = json!({"group": group, "leader": leader, "addr": addr});
        let details = json!({
            "grpc_code": code_name(e.code()), "kind": "not_leader", "group": group, "leader": leader, "addr": addr,
            "grpc_addr": grpc_addr, "not_leader": nl,
        });
        return ErrorBody::new(ErrorCode::NotLeader, e.to_string()).with_details(details);
    }
    let mut details = Map::new();
    details.insert("grpc_code".into(), code_name(e.code()).into());
    details.insert("kind".into(), e.reason().into());
    for (k, v) in e.metadata() {
        details.insert(k, v.into());
    }
    if let Error::CompareFailed { failed } = e {
        details.insert("failed".into(), json!(failed));
    }
    ErrorBody::new(wire_code(e.code()), e.to_string()).with_details(Json::Object(details))
}

/// The inverse of [`error_body`], for a query forwarded to another node:
/// its error keeps its gRPC code, reason and metadata (a failed compare its
/// compares, `not_leader` its leader).
pub fn error_from_body(b: &ErrorBody) -> Error {
    let d = b.details.as_ref();
    let s = |k: &str| d.and_then(|d| d.get(k)).and_then(Json::as_str).map(str::to_owned);
    let u = |k: &str| d.and_then(|d| d.get(k)).and_then(Json::as_u64).unwrap_or(0);
    let reason = s("kind").unwrap_or_else(|| "unavailable".into());
    if b.code == ErrorCode::NotLeader || reason == "not_leader" {
        return Error::NotLeader { group: u("group"), leader: u("leader"), addr: s("addr"), grpc_addr: s("grpc_addr") };
    }
    if reason == "compare_failed" {
        let failed = d.and_then(|d| d.get("failed")).and_then(Json::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        return Error::CompareFailed { failed };
    }
    let code = s("grpc_code").and_then(|c| code_from_name(&c)).unwrap_or(match b.code {
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::Validation => tonic::Code::InvalidArgument,
        ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::Unavailable,
    });
    let mut metadata = std::collections::HashMap::new();
    if let Some(Json::Object(m)) = d {
        for (k, v) in m {
            if matches!(k.as_str(), "grpc_code" | "kind" | "failed") {
                continue;
            }
            let v = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            metadata.insert(k.clone(), v);
        }
    }
    Error::Remote { code, reason, message: b.message.clone(), metadata }
}

fn code_from_name(n: &str) -> Option<tonic::Code> {
    use tonic::Code::*;
    [
        Ok, Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists, PermissionDenied, ResourceExhausted, FailedPrecondition,
        Aborted, OutOfRange, Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated,
    ]
    .into_iter()
    .find(|c| code_name(*c) == n)
}
