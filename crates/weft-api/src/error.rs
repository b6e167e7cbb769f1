//! The crate's one error type, and its mapping to gRPC status codes with
//! google.rpc details. The native protocol and HTTP derive their codes from
//! [`Error::code`] and [`Error::reason`], so a condition reads the same on
//! every surface.

use std::collections::HashMap;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::aql::ParseError;
use crate::convert::ConvertError;

/// The `domain` of every ErrorInfo detail.
pub const ERROR_DOMAIN: &str = "query.weft";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// AQL text that does not parse (INVALID_ARGUMENT, BadRequest + position).
    #[error("AQL syntax error at {0}")]
    Parse(#[from] ParseError),
    /// A structured query that does not make a statement (INVALID_ARGUMENT).
    #[error("bad structured query: {0}")]
    Convert(#[from] ConvertError),
    /// A well-formed query the executor cannot run as asked (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// A table call failed; the code follows the table error's kind.
    #[error(transparent)]
    Table(#[from] weft_table::Error),
    /// A log read failed.
    #[error(transparent)]
    Log(#[from] weft_log::LogError),
    /// No topic log on this node (FROM TOPIC) (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// A compare of a conditional write or of a BATCH without ELSE failed
    /// (FAILED_PRECONDITION, PreconditionFailure naming each compare).
    #[error("compare failed: {}", failed.join(", "))]
    CompareFailed { failed: Vec<String> },
    /// The query's deadline passed (DEADLINE_EXCEEDED).
    #[error("deadline of {timeout_ms} ms exceeded")]
    Deadline { timeout_ms: u64 },
    /// A limit of the query API (RESOURCE_EXHAUSTED).
    #[error("{what} over the limit of {limit} (config key {key})")]
    Limit { what: String, limit: u64, key: &'static str },
    /// An UPDATE lost its compare-and-set race too often (ABORTED).
    #[error("{0}")]
    Aborted(String),
    /// The caller is not allowed (PERMISSION_DENIED).
    #[error("permission denied: {0}")]
    Denied(String),
    /// No, a wrong, an expired or a revoked credential (UNAUTHENTICATED).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Cluster mode: the table's raft group has no leader this node knows of
    /// (`leader` 0) or the request had to go to the leader; nothing ran
    /// (UNAVAILABLE, reason `not_leader`, with the leader's addresses when known).
    #[error("not leader of the table's group {group}; leader is node {leader}")]
    NotLeader {
        group: u64,
        leader: u64,
        /// The leader's native protocol address.
        addr: Option<String>,
        /// The leader's gRPC query address.
        grpc_addr: Option<String>,
    },
    /// Cluster mode: the error a forwarded query got on the node that ran it,
    /// passed on with its code, reason and metadata.
    #[error("{message}")]
    Remote { code: Code, reason: String, message: String, metadata: HashMap<String, String> },
}

impl Error {
    /// The gRPC status code.
    pub fn code(&self) -> Code {
        use weft_table::Error as T;
        match self {
            Error::Parse(_) | Error::Convert(_) | Error::Invalid(_) => Code::InvalidArgument,
            Error::Table(e) => match e {
                T::NotFound(_) | T::Dropped(_) => Code::NotFound,
                T::AlreadyExists(_) => Code::AlreadyExists,
                T::InvalidArgument { .. } | T::NotJson { .. } => Code::InvalidArgument,
                T::Compacted { .. } | T::FutureRevision { .. } => Code::OutOfRange,
                T::TooLarge { what, .. } if what.contains("table") => Code::ResourceExhausted,
                T::TooLarge { .. } => Code::InvalidArgument,
                T::TooMany { .. } | T::SlowWatcher { .. } => Code::ResourceExhausted,
                T::Corrupt { .. } => Code::DataLoss,
                T::Poisoned { .. } | T::Storage { .. } => Code::Internal,
            },
            Error::Log(e) => match e {
                weft_log::LogError::UnknownTopic(_) | weft_log::LogError::UnknownPartition { .. } => Code::NotFound,
                weft_log::LogError::OffsetOutOfRange { .. } => Code::OutOfRange,
                e => match e.fault() {
                    weft_log::Fault::Client => Code::InvalidArgument,
                    weft_log::Fault::Retry => Code::Unavailable,
                    weft_log::Fault::Server => Code::Internal,
                },
            },
            Error::Unavailable(_) => Code::Unavailable,
            Error::CompareFailed { .. } => Code::FailedPrecondition,
            Error::Deadline { .. } => Code::DeadlineExceeded,
            Error::Limit { .. } => Code::ResourceExhausted,
            Error::Aborted(_) => Code::Aborted,
            Error::Denied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::NotLeader { .. } => Code::Unavailable,
            Error::Remote { code, .. } => *code,
        }
    }

    /// A stable snake_case reason (ErrorInfo.reason; `details.kind` on the
    /// native protocol and HTTP).
    pub fn reason(&self) -> &str {
        match self {
            Error::Parse(_) => "invalid_aql",
            Error::Convert(_) => "invalid_query",
            Error::Invalid(_) => "invalid_argument",
            Error::Table(e) => e.kind(),
            Error::Log(e) => e.code(),
            Error::Unavailable(_) => "unavailable",
            Error::CompareFailed { .. } => "compare_failed",
            Error::Deadline { .. } => "deadline_exceeded",
            Error::Limit { .. } => "limit",
            Error::Aborted(_) => "aborted",
            Error::Denied(_) => "permission_denied",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::NotLeader { .. } => "not_leader",
            Error::Remote { reason, .. } => reason,
        }
    }

    /// Machine-readable facts: the AQL position, the offending field, ...
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        match self {
            Error::Parse(p) => {
                m.insert("offset".into(), p.offset.to_string());
                m.insert("line".into(), p.line.to_string());
                m.insert("column".into(), p.column.to_string());
                if let Some(e) = &p.expected {
                    m.insert("expected".into(), e.clone());
                }
            }
            Error::Convert(c) => {
                m.insert("field".into(), c.field.clone());
                if let Some(p) = &c.parse {
                    m.insert("offset".into(), p.offset.to_string());
                    m.insert("line".into(), p.line.to_string());
                    m.insert("column".into(), p.column.to_string());
                }
            }
            Error::Limit { key, limit, .. } => {
                m.insert("config_key".into(), (*key).into());
                m.insert("limit".into(), limit.to_string());
            }
            Error::Deadline { timeout_ms } => {
                m.insert("timeout_ms".into(), timeout_ms.to_string());
            }
            Error::NotLeader { group, leader, addr, grpc_addr } => {
                m.insert("group".into(), group.to_string());
                m.insert("leader".into(), leader.to_string());
                // `grpc_addr` is what query clients follow; `native_addr` is the native protocol's.
                if let Some(a) = grpc_addr {
                    m.insert("grpc_addr".into(), a.clone());
                }
                if let Some(a) = addr {
                    m.insert("native_addr".into(), a.clone());
                }
            }
            Error::Remote { metadata, .. } => m.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone()))),
            _ => {}
        }
        m
    }

    /// The gRPC status with google.rpc details: ErrorInfo always; BadRequest
    /// for syntax and field errors; PreconditionFailure for compares.
    pub fn to_status(&self) -> tonic::Status {
        let mut d = ErrorDetails::new();
        d.set_error_info(self.reason(), ERROR_DOMAIN, self.metadata());
        match self {
            Error::Parse(p) => {
                d.add_bad_request_violation("aql", format!("{}:{} (byte {}): {}", p.line, p.column, p.offset, p.message));
            }
            Error::Convert(c) => {
                d.add_bad_request_violation(c.field.clone(), c.message.clone());
            }
            Error::CompareFailed { failed } => {
                for f in failed {
                    d.add_precondition_failure_violation("COMPARE", f.clone(), "the compare did not hold");
                }
            }
            Error::Limit { key, limit, what } => {
                d.set_quota_failure(vec![tonic_types::QuotaViolation::new(*key, format!("{what} over {limit}"))]);
            }
            Error::Remote { metadata, message, .. } => {
                if let Some(key) = metadata.get("config_key") {
                    d.set_quota_failure(vec![tonic_types::QuotaViolation::new(key.clone(), message.clone())]);
                }
            }
            _ => {}
        }
        tonic::Status::with_error_details(self.code(), self.to_string(), d)
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.to_status()
    }
}

/// The status code's canonical name (`INVALID_ARGUMENT`), for JSON answers.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
