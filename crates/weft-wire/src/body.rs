use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::BodyError;

/// Route keys of control frames.
pub const CONTROL_HELLO: &str = "hello";
pub const CONTROL_WELCOME: &str = "welcome";
pub const CONTROL_HEARTBEAT: &str = "heartbeat";
/// Sent by a server that is shutting down: finish what is in flight, send
/// nothing new on this connection.
pub const CONTROL_GOAWAY: &str = "goaway";

/// How a frame body is encoded; chosen by the JSON flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    MsgPack,
    Json,
}

/// The first buffer of an encoded body: a pong, a produce answer or an
/// error fit; larger bodies grow from there.
const ENCODE_START_BYTES: usize = 128;

impl BodyFormat {
    /// Structs are encoded as msgpack maps with field names (not arrays), so
    /// that clients in other languages see the same shape as in JSON.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, BodyError> {
        // Most bodies are small maps: one allocation of this size instead of
        // a Vec that doubles its way up from empty (5 reallocs for a pong).
        let mut out = Vec::with_capacity(ENCODE_START_BYTES);
        match self {
            BodyFormat::MsgPack => rmp_serde::encode::write_named(&mut out, value)
                .map_err(|e| BodyError::Encode(e.to_string()))?,
            BodyFormat::Json => serde_json::to_writer(&mut out, value)
                .map_err(|e| BodyError::Encode(e.to_string()))?,
        }
        Ok(Bytes::from(out))
    }

    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, BodyError> {
        match self {
            BodyFormat::MsgPack => {
                rmp_serde::from_slice(body).map_err(|e| BodyError::Decode(e.to_string()))
            }
            BodyFormat::Json => {
                serde_json::from_slice(body).map_err(|e| BodyError::Decode(e.to_string()))
            }
        }
    }
}

/// Why a request failed. The wire form is the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No endpoint is registered under the route key.
    UnknownRoute,
    /// The body could not be decoded into the endpoint's request type.
    BadBody,
    /// The body decoded, but its values are not acceptable.
    Validation,
    /// The endpoint is at its concurrency limit or paused: try again later.
    Busy,
    /// The handler ran and failed.
    Handler,
    /// The frame itself was malformed (bad kind, flags, route key).
    BadFrame,
    /// The frame's length field is over the receiver's maximum.
    TooLarge,
    /// The frame's protocol version is not spoken here.
    UnsupportedVersion,
    /// A stream connection must open with a `hello` control frame.
    HandshakeRequired,
    /// The client was not allowed (allow-list, auth).
    Unauthorized,
    /// Auth is on and the request carries no valid identity: no token, a
    /// wrong, expired or revoked one (docs/security.md). Send a token.
    Unauthenticated,
    /// The identity is known but its roles do not allow this request.
    Forbidden,
    /// The named thing (topic, partition, group, uid...) does not exist.
    NotFound,
    /// The thing already exists, or the request conflicts with current state
    /// (stale generation, group has members...).
    Conflict,
    /// An offset or index outside the valid range (`details` gives it).
    OutOfRange,
    /// A temporary failure on the server side (storage fault, shutting down
    /// part): the request was not applied; retrying later may succeed.
    Unavailable,
    /// The request did not complete in time.
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
    /// Cluster mode: this node does not lead the raft group the request
    /// needs and did not run it; `details` = `{group, leader, addr}` (leader
    /// 0 and addr null when unknown). Retry at `addr`, or anywhere later.
    NotLeader,
    /// Anything else, a bug on the answering side.
    Internal,
    /// A code this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownRoute => "unknown_route",
            Self::BadBody => "bad_body",
            Self::Validation => "validation",
            Self::Busy => "busy",
            Self::Handler => "handler",
            Self::BadFrame => "bad_frame",
            Self::TooLarge => "too_large",
            Self::UnsupportedVersion => "unsupported_version",
            Self::HandshakeRequired => "handshake_required",
            Self::Unauthorized => "unauthorized",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::OutOfRange => "out_of_range",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::ShuttingDown => "shutting_down",
            Self::NotLeader => "not_leader",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error frame: a code to branch on, a message for people,
/// and optional structured details (e.g. the valid offset range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: None }
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(d) = &self.details {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// First frame a client sends on a stream connection (control `hello`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u8,
    /// A UUID, or the HOSTNAME when set (a Kubernetes pod name).
    pub client_id: String,
    #[serde(default)]
    pub client_name: String,
}

/// The server's answer to `hello` (control `welcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u8,
    pub server_id: String,
    pub server_name: String,
    /// The server's software version.
    pub version: String,
    /// Enabled features, e.g. "tcp", "udp", "unix", "log", "pva".
    pub features: Vec<String>,
}

/// UDP liveness beacon (control `heartbeat`), one-way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: String,
    /// Sender's wall clock, milliseconds since the Unix epoch (informational).
    pub sent_at_ms: u64,
    /// Monotonic per-sender counter, to spot loss and reordering.
    pub seq: u64,
}
