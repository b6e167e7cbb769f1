//! One mapping from storage errors to wire errors, used by the native
//! endpoints and the HTTP gateway alike.

use weft_log::{Fault, LogError};
use weft_service::ServiceError;
use weft_wire::{ErrorBody, ErrorCode};

/// The wire error for a log error: a code to branch on, the message, and
/// `details.kind` naming the exact condition (plus its numbers).
pub fn log_error_body(e: &LogError) -> ErrorBody {
    use LogError::*;
    let (code, kind, extra) = match e {
        UnknownTopic(t) => (ErrorCode::NotFound, "unknown_topic", serde_json::json!({ "topic": t })),
        UnknownPartition { topic, partition, partitions } => (
            ErrorCode::NotFound,
            "unknown_partition",
            serde_json::json!({ "topic": topic, "partition": partition.0, "partitions": partitions }),
        ),
        UnknownGroup(g) => (ErrorCode::NotFound, "unknown_group", serde_json::json!({ "group": g })),
        UnknownMember { group, member } => {
            (ErrorCode::NotFound, "unknown_member", serde_json::json!({ "group": group, "member": member }))
        }
        OffsetOutOfRange { topic, partition, requested, earliest, latest } => (
            ErrorCode::OutOfRange,
            "offset_out_of_range",
            serde_json::json!({ "topic": topic, "partition": partition.0, "requested": requested.0, "earliest": earliest.0, "latest": latest.0 }),
        ),
        RecordTooLarge { size, max } => (ErrorCode::TooLarge, "record_too_large", serde_json::json!({ "size": size, "max": max })),
        InvalidTopicName { name, .. } => (ErrorCode::Validation, "invalid_topic_name", serde_json::json!({ "name": name })),
        InvalidConfig(_) => (ErrorCode::Validation, "invalid_config", serde_json::json!({})),
        InvalidRequest(_) => (ErrorCode::Validation, "invalid_request", serde_json::json!({})),
        InternalTopic(t) => (ErrorCode::Validation, "internal_topic", serde_json::json!({ "topic": t })),
        TopicExists(t) => (ErrorCode::Conflict, "topic_exists", serde_json::json!({ "topic": t })),
        IllegalGeneration { group, got, current } => (
            ErrorCode::Conflict,
            "illegal_generation",
            serde_json::json!({ "group": group, "got": got, "current": current }),
        ),
        NotAssigned { group, member, topic, partition } => (
            ErrorCode::Conflict,
            "not_assigned",
            serde_json::json!({ "group": group, "member": member, "topic": topic, "partition": partition.0 }),
        ),
        GroupActive { group, members } => (ErrorCode::Conflict, "group_active", serde_json::json!({ "group": group, "members": members })),
        NoResetPolicy { topic, partition, requested, earliest, latest, .. } => (
            ErrorCode::OutOfRange,
            "no_reset_policy",
            serde_json::json!({ "topic": topic, "partition": partition.0, "requested": requested.map(|o| o.0), "earliest": earliest.0, "latest": latest.0 }),
        ),
        Closed => (ErrorCode::Unavailable, "closed", serde_json::json!({})),
        Poisoned { topic, partition, .. } => {
            (ErrorCode::Unavailable, "poisoned", serde_json::json!({ "topic": topic, "partition": partition.0 }))
        }
        Io { .. } => (ErrorCode::Unavailable, "io", serde_json::json!({})),
        Corrupt { .. } | CorruptBatch(_) => (ErrorCode::Internal, "corrupt", serde_json::json!({})),
    };
    debug_assert!(code != ErrorCode::Unavailable || e.fault() != Fault::Client);
    let mut details = extra;
    if let Some(m) = details.as_object_mut() {
        m.insert("kind".into(), kind.into());
    }
    ErrorBody::new(code, e.to_string()).with_details(details)
}

pub fn log_error(e: LogError) -> ServiceError {
    ServiceError::Wire(log_error_body(&e))
}

/// HTTP status for a wire error code.
pub fn http_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::NotFound | ErrorCode::UnknownRoute => 404,
        ErrorCode::Conflict => 409,
        ErrorCode::OutOfRange => 416,
        ErrorCode::TooLarge => 413,
        ErrorCode::Validation | ErrorCode::BadBody | ErrorCode::BadFrame => 400,
        ErrorCode::Busy => 429,
        ErrorCode::Unauthorized | ErrorCode::Forbidden => 403,
        ErrorCode::Unauthenticated => 401,
        ErrorCode::Unavailable | ErrorCode::ShuttingDown | ErrorCode::NotLeader => 503,
        ErrorCode::Timeout => 504,
        _ => 500,
    }
}
