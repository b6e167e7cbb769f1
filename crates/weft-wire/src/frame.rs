use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::body::{BodyFormat, ErrorBody};
use crate::error::BodyError;

/// The two bytes every frame starts with: ASCII "WF".
pub const MAGIC: [u8; 2] = *b"WF";
/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// A 16-byte message id (a UUID). Responses and errors carry the id of the
/// request they answer, which is how many requests share one connection.
pub type MessageId = uuid::Uuid;

/// What a frame is for. The numeric values are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    Request = 1,
    Response = 2,
    Error = 3,
    Event = 4,
    Control = 5,
}

impl FrameKind {
    pub fn from_wire(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Error,
            4 => Self::Event,
            5 => Self::Control,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::Error => "error",
            Self::Event => "event",
            Self::Control => "control",
        }
    }
}

/// Frame flags (one byte). Unknown bits are rejected so that a future
/// meaning can never be silently ignored by an old peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    /// The body is JSON (UTF-8) instead of msgpack.
    pub const JSON: u8 = 0b0000_0001;
    /// The sender wants no response (fire and forget).
    pub const ONE_WAY: u8 = 0b0000_0010;
    /// The body region starts with a trace-context extension (a W3C
    /// `traceparent`; docs/protocol.md, "Trace context"). Sent only to
    /// servers whose welcome lists the `trace-context` feature.
    pub const TRACE: u8 = 0b0000_0100;
    /// The body proper (after any trace-context extension) is one zstd
    /// frame (docs/protocol.md, "Compression"). Sent only to peers that
    /// negotiated it in the handshake.
    pub const COMPRESSED: u8 = 0b0000_1000;
    pub const KNOWN: u8 = Self::JSON | Self::ONE_WAY | Self::TRACE | Self::COMPRESSED;

    pub fn from_wire(b: u8) -> Option<Self> {
        (b & !Self::KNOWN == 0).then_some(Self(b))
    }
    pub fn bits(self) -> u8 {
        self.0
    }
    pub fn is_json(self) -> bool {
        self.0 & Self::JSON != 0
    }
    pub fn is_one_way(self) -> bool {
        self.0 & Self::ONE_WAY != 0
    }
    pub fn has_trace_context(self) -> bool {
        self.0 & Self::TRACE != 0
    }
    pub fn is_compressed(self) -> bool {
        self.0 & Self::COMPRESSED != 0
    }
    pub fn with_compressed(self, on: bool) -> Self {
        if on { Self(self.0 | Self::COMPRESSED) } else { Self(self.0 & !Self::COMPRESSED) }
    }
    pub fn with_json(self, on: bool) -> Self {
        if on { Self(self.0 | Self::JSON) } else { Self(self.0 & !Self::JSON) }
    }
    pub fn with_one_way(self, on: bool) -> Self {
        if on { Self(self.0 | Self::ONE_WAY) } else { Self(self.0 & !Self::ONE_WAY) }
    }
    pub fn format(self) -> BodyFormat {
        if self.is_json() { BodyFormat::Json } else { BodyFormat::MsgPack }
    }
}

/// One protocol frame. `route` names the endpoint (requests, events) or the
/// control message (`hello`, `welcome`, `heartbeat`, `goaway`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub flags: Flags,
    pub id: MessageId,
    pub route: String,
    pub body: Bytes,
}

/// The welcome feature announcing that a server accepts [`Flags::TRACE`].
pub const TRACE_CONTEXT_FEATURE: &str = "trace-context";

impl Frame {
    /// Prepend a trace-context extension (`traceparent`, 1 to 255 bytes)
    /// to the body and set [`Flags::TRACE`]. A value of another length, or a
    /// frame that already has one, is left as it is.
    pub fn with_trace_context(mut self, traceparent: &str) -> Self {
        let Ok(len) = u8::try_from(traceparent.len()) else { return self };
        if len == 0 || self.flags.has_trace_context() {
            return self;
        }
        let mut body = Vec::with_capacity(1 + traceparent.len() + self.body.len());
        body.push(len);
        body.extend_from_slice(traceparent.as_bytes());
        body.extend_from_slice(&self.body);
        self.body = Bytes::from(body);
        self.flags = Flags(self.flags.0 | Flags::TRACE);
        self
    }

    /// Remove the trace-context extension, if the frame has one, leaving
    /// the body proper and clearing [`Flags::TRACE`]. `Err` when the flag
    /// is set but the extension does not fit the body (a `bad_frame`);
    /// `Ok(None)` for a text that is not ASCII (ignored, as W3C asks of a
    /// `traceparent` it cannot parse).
    pub fn take_trace_context(&mut self) -> Result<Option<String>, ErrorBody> {
        if !self.flags.has_trace_context() {
            return Ok(None);
        }
        let len = self.body.first().copied().unwrap_or(0) as usize;
        if len == 0 || 1 + len > self.body.len() {
            return Err(ErrorBody::new(
                crate::body::ErrorCode::BadFrame,
                format!("trace-context extension of {len} bytes in a body of {} bytes", self.body.len()),
            ));
        }
        let text = self.body.slice(1..1 + len);
        self.body = self.body.slice(1 + len..);
        self.flags = Flags(self.flags.0 & !Flags::TRACE);
        Ok(std::str::from_utf8(&text).ok().filter(|t| t.is_ascii()).map(str::to_owned))
    }

    /// A frame whose body is `value` encoded in `format`.
    pub fn with_body<T: Serialize + ?Sized>(
        kind: FrameKind,
        id: MessageId,
        route: impl Into<String>,
        format: BodyFormat,
        value: &T,
    ) -> Result<Self, BodyError> {
        Ok(Frame {
            kind,
            flags: Flags::default().with_json(format == BodyFormat::Json),
            id,
            route: route.into(),
            body: format.encode(value)?,
        })
    }

    pub fn request<T: Serialize + ?Sized>(
        id: MessageId,
        route: impl Into<String>,
        format: BodyFormat,
        value: &T,
    ) -> Result<Self, BodyError> {
        Self::with_body(FrameKind::Request, id, route, format, value)
    }

    /// The response to `self` (a request), in the request's body format.
    pub fn response_to<T: Serialize + ?Sized>(&self, value: &T) -> Result<Self, BodyError> {
        Self::with_body(FrameKind::Response, self.id, self.route.clone(), self.flags.format(), value)
    }

    /// The error answering `self`, in the request's body format. Error bodies
    /// are small and always encodable, so this cannot fail in practice; if it
    /// did, a JSON rendering is used instead.
    pub fn error_to(&self, err: &ErrorBody) -> Self {
        error_frame(self.id, &self.route, self.flags.format(), err)
    }

    pub fn format(&self) -> BodyFormat {
        self.flags.format()
    }

    /// Decode the body in the format the flags name.
    pub fn decode_body<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        self.flags.format().decode(&self.body)
    }

    /// Encoded length of this frame on the wire.
    pub fn wire_len(&self) -> usize {
        crate::codec::HEADER_LEN + self.route.len() + self.body.len()
    }
}

/// An error frame for message `id` (which may be nil when the offending
/// frame's id could not be read).
pub fn error_frame(id: MessageId, route: &str, format: BodyFormat, err: &ErrorBody) -> Frame {
    // Error bodies are plain data and always encode; should msgpack ever
    // refuse one, fall back to JSON and say so in the flags.
    let (format, body) = match format.encode(err) {
        Ok(body) => (format, body),
        Err(_) => (BodyFormat::Json, BodyFormat::Json.encode(err).unwrap_or_default()),
    };
    Frame {
        kind: FrameKind::Error,
        flags: Flags::default().with_json(format == BodyFormat::Json),
        id,
        route: route.to_owned(),
        body,
    }
}

/// An error frame with an empty route, for errors about a frame whose route
/// could not be read (bad magic, bad version...).
pub fn error_frame_for(id: MessageId, format: BodyFormat, err: &ErrorBody) -> Frame {
    error_frame(id, "", format, err)
}

#[cfg(test)]
mod trace_context_tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::{encode, FrameDecoder};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extension_round_trips_through_the_codec() {
        let f = Frame::request(MessageId::nil(), "log.produce", BodyFormat::Json, &serde_json::json!({"a": 1})).unwrap();
        let traced = f.clone().with_trace_context(TP);
        assert!(traced.flags.has_trace_context() && traced.flags.is_json());
        assert_eq!(traced.body.len(), f.body.len() + 1 + TP.len());
        let mut wire = BytesMut::new();
        encode(&traced, &mut wire).unwrap();
        // Bit 2 of the flags byte; B counts the extension.
        assert_eq!(wire[4], Flags::JSON | Flags::TRACE);
        let mut got = FrameDecoder::new(1024).decode(&mut wire).unwrap().unwrap();
        assert_eq!(got.take_trace_context().unwrap().as_deref(), Some(TP));
        assert_eq!(got, f);
        // A frame without the flag has no extension and keeps its body.
        let mut plain = f.clone();
        assert_eq!(plain.take_trace_context().unwrap(), None);
        assert_eq!(plain, f);
    }

    #[test]
    fn extension_longer_than_the_body_is_a_bad_frame() {
        let mut f = Frame::request(MessageId::nil(), "r", BodyFormat::Json, &1).unwrap();
        f.flags = Flags(f.flags.0 | Flags::TRACE);
        f.body = Bytes::from_static(&[9, b'x']);
        assert_eq!(f.take_trace_context().unwrap_err().code, crate::body::ErrorCode::BadFrame);
        f.body = Bytes::new();
        assert!(f.take_trace_context().is_err());
    }
}
