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
    pub const KNOWN: u8 = Self::JSON | Self::ONE_WAY;

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

impl Frame {
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
