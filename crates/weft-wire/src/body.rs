use std::cell::RefCell;

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

/// Bodies up to this size are encoded on the stack and copied once into an
/// allocation of their exact size: a pong, a produce answer or an error
/// fit. Larger ones spill into a Vec.
const ENCODE_STACK_BYTES: usize = 256;

impl BodyFormat {
    /// Structs are encoded as msgpack maps with field names (not arrays), so
    /// that clients in other languages see the same shape as in JSON.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, BodyError> {
        // One allocation for a small body: `Bytes::from` a Vec whose length
        // is not its capacity allocates a second, shared header.
        let mut out = StackFirst::new();
        match self {
            BodyFormat::MsgPack => rmp_serde::encode::write_named(&mut out, value)
                .map_err(|e| BodyError::Encode(e.to_string()))?,
            BodyFormat::Json => serde_json::to_writer(&mut out, value)
                .map_err(|e| BodyError::Encode(e.to_string()))?,
        }
        Ok(out.into_bytes())
    }

    /// Like [`decode`](Self::decode), but [`SharedBytes`] fields of the
    /// result share `body`'s buffer where the format stores them as they
    /// are (msgpack `bin`, JSON strings without escapes), instead of
    /// copying them out of it.
    pub fn decode_shared<T: DeserializeOwned>(self, body: &Bytes) -> Result<T, BodyError> {
        let _source = DecodeSource::set(body);
        self.decode(body)
    }

    /// [`decode_shared`](Self::decode_shared), by the type's own msgpack
    /// decoder when it takes the body ([`FastBody`](crate::FastBody)).
    pub fn decode_fast<T: DeserializeOwned + crate::FastBody>(self, body: &Bytes) -> Result<T, BodyError> {
        if self == BodyFormat::MsgPack
            && let Some(v) = T::decode_msgpack(body)
        {
            return Ok(v);
        }
        self.decode_shared(body)
    }

    /// [`encode`](Self::encode), by the type's own msgpack encoder when it
    /// takes the value ([`FastBody`](crate::FastBody)).
    pub fn encode_fast<T: Serialize + crate::FastBody>(self, value: &T) -> Result<Bytes, BodyError> {
        if self == BodyFormat::MsgPack {
            let mut w = crate::fastbody::Writer::new();
            if value.encode_msgpack(&mut w) {
                return Ok(w.into_bytes());
            }
        }
        self.encode(value)
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

/// An encode buffer that starts on the stack and spills into a Vec.
pub(crate) struct StackFirst {
    stack: [u8; ENCODE_STACK_BYTES],
    len: usize,
    spill: Option<Vec<u8>>,
}

impl StackFirst {
    pub(crate) fn new() -> Self {
        Self { stack: [0; ENCODE_STACK_BYTES], len: 0, spill: None }
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        match self.spill {
            Some(v) => Bytes::from(v),
            // `len` only grows past what fits by spilling.
            None => self.stack.get(..self.len).map(Bytes::copy_from_slice).unwrap_or_default(),
        }
    }

    pub(crate) fn put(&mut self, buf: &[u8]) {
        if let Some(v) = &mut self.spill {
            v.extend_from_slice(buf);
            return;
        }
        let end = self.len + buf.len();
        if let Some(dst) = self.stack.get_mut(self.len..end) {
            dst.copy_from_slice(buf);
            self.len = end;
        } else {
            // Sized for what is known, not doubled: a large body (a raw
            // fetch's batches) usually arrives in one write, and an
            // allocation twice its size cost a 1 MiB raw fetch three times
            // its time (docs/BENCHMARKS.md, issue #18). Later writes grow
            // it as a Vec grows.
            let mut v = Vec::with_capacity((2 * ENCODE_STACK_BYTES).max(end));
            v.extend_from_slice(self.stack.get(..self.len).unwrap_or_default());
            v.extend_from_slice(buf);
            self.spill = Some(v);
        }
    }
}

impl std::io::Write for StackFirst {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.put(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write(buf).map(|_| ())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// The body [`BodyFormat::decode_shared`] is decoding on this thread.
    static DECODE_SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Sets the decode source for its lifetime; restores the previous one (a
/// nested decode) when dropped, also on a panic.
struct DecodeSource(Option<Bytes>);

impl DecodeSource {
    fn set(body: &Bytes) -> Self {
        Self(DECODE_SOURCE.with(|s| s.replace(Some(body.clone()))))
    }
}

impl Drop for DecodeSource {
    fn drop(&mut self) {
        let prev = self.0.take();
        DECODE_SOURCE.with(|s| *s.borrow_mut() = prev);
    }
}

/// A byte field (msgpack `bin`; in JSON a string, taken as UTF-8, or an
/// array of numbers), decoded and encoded as `serde_bytes::ByteBuf` is.
/// Decoded with [`BodyFormat::decode_shared`] it shares the body's buffer
/// when the bytes lie in it as they are (no copy of a produced record's
/// value); otherwise, and with any other decoder, it holds a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SharedBytes(pub Bytes);

impl SharedBytes {
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// A slice of the body being decoded when `b` lies inside it, else a copy.
    fn from_borrowed(b: &[u8]) -> Self {
        let shared = DECODE_SOURCE.with(|s| {
            let s = s.borrow();
            let src = s.as_ref()?;
            let (start, end) = (src.as_ptr() as usize, src.as_ptr() as usize + src.len());
            let (b_start, b_end) = (b.as_ptr() as usize, b.as_ptr() as usize + b.len());
            // slice_ref would panic outside the source: checked here.
            (!b.is_empty() && b_start >= start && b_end <= end).then(|| src.slice_ref(b))
        });
        Self(shared.unwrap_or_else(|| Bytes::copy_from_slice(b)))
    }
}

impl From<Bytes> for SharedBytes {
    fn from(b: Bytes) -> Self {
        Self(b)
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(v: Vec<u8>) -> Self {
        Self(Bytes::from(v))
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for SharedBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(SharedBytesVisitor)
    }
}

struct SharedBytesVisitor;

impl<'de> serde::de::Visitor<'de> for SharedBytesVisitor {
    type Value = SharedBytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("byte array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<SharedBytes, A::Error> {
        // The hint comes from the sender: bounded, as serde's own are.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(SharedBytes(Bytes::from(v)))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SharedBytes, E> {
        Ok(SharedBytes(Bytes::copy_from_slice(v)))
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<SharedBytes, E> {
        Ok(SharedBytes::from_borrowed(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<SharedBytes, E> {
        Ok(SharedBytes(Bytes::from(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SharedBytes, E> {
        Ok(SharedBytes(Bytes::copy_from_slice(v.as_bytes())))
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<SharedBytes, E> {
        Ok(SharedBytes::from_borrowed(v.as_bytes()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SharedBytes, E> {
        Ok(SharedBytes(Bytes::from(v.into_bytes())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        key: Option<SharedBytes>,
        value: Option<SharedBytes>,
    }

    #[test]
    fn shared_bytes_borrow_the_body_and_round_trip() {
        let rec = Rec { key: None, value: Some(SharedBytes::from(vec![7u8; 1024])) };
        for format in [BodyFormat::MsgPack, BodyFormat::Json] {
            let body = format.encode(&rec).unwrap();
            let shared: Rec = format.decode_shared(&body).unwrap();
            assert_eq!(shared, rec, "{format:?}");
            let copied: Rec = format.decode(&body).unwrap();
            assert_eq!(copied, rec, "{format:?}");
            let v = shared.value.unwrap().into_bytes();
            let inside = |b: &Bytes| b.as_ptr() >= body.as_ptr() && b.as_ptr() as usize + b.len() <= body.as_ptr() as usize + body.len();
            if format == BodyFormat::MsgPack {
                // msgpack `bin`: a slice of the body, not a copy.
                assert!(inside(&v));
            } else {
                // JSON has it as an array of numbers: decoded into a copy.
                assert!(!inside(&v));
            }
            assert!(!inside(&copied.value.unwrap().into_bytes()));
        }
        // A JSON string without escapes is shared; with escapes, copied.
        let body = Bytes::from_static(br#"{"key":"k\n","value":"plain"}"#);
        let r: Rec = BodyFormat::Json.decode_shared(&body).unwrap();
        assert_eq!(&*r.key.unwrap(), b"k\n");
        let v = r.value.unwrap().into_bytes();
        assert_eq!(&v[..], b"plain");
        assert!(v.as_ptr() >= body.as_ptr() && (v.as_ptr() as usize) < body.as_ptr() as usize + body.len());
        // The source is cleared after the call.
        assert!(DECODE_SOURCE.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn shared_bytes_refuse_what_byte_buf_refuses() {
        for body in [&br#"{"key":5}"#[..], br#"{"key":[1,300]}"#, br#"{"key":{"a":1}}"#] {
            let body = Bytes::copy_from_slice(body);
            assert!(matches!(BodyFormat::Json.decode_shared::<Rec>(&body), Err(BodyError::Decode(_))));
        }
    }

    #[test]
    fn encode_sizes_around_the_stack_buffer() {
        for n in [0usize, 1, 200, 250, 251, 256, 300, 5000] {
            let v = vec![1u8; n];
            let body = BodyFormat::MsgPack.encode(&serde_json::json!({"v": n, "s": "x".repeat(n)})).unwrap();
            let back: serde_json::Value = BodyFormat::MsgPack.decode(&body).unwrap();
            assert_eq!(back["s"].as_str().unwrap().len(), n);
            let body = BodyFormat::Json.encode(&v).unwrap();
            assert_eq!(BodyFormat::Json.decode::<Vec<u8>>(&body).unwrap(), v);
        }
    }
}
