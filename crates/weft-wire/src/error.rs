use crate::frame::MessageId;

/// A frame that could not be decoded. `skipped` errors leave the decoder
/// positioned at the next frame (the length field was readable), so the
/// connection can answer with an error frame and carry on; the others mean the
/// byte stream can no longer be trusted and the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {found:02x?}: not a Weft frame (expected \"WF\")")]
    BadMagic { found: [u8; 2] },
    #[error("unsupported protocol version {found} (this peer speaks {supported})")]
    UnsupportedVersion { found: u8, supported: u8, id: MessageId },
    #[error("unknown frame kind {found}")]
    UnknownKind { found: u8, id: MessageId },
    #[error("unknown flag bits {found:#010b}")]
    UnknownFlags { found: u8, id: MessageId },
    #[error("frame of {len} bytes is over the maximum of {max}")]
    TooLarge { len: u64, max: u64, id: MessageId },
    #[error("route key is not valid UTF-8")]
    BadRoute { id: MessageId },
    #[error("datagram truncated: header says {expected} bytes, got {got}")]
    Truncated { expected: usize, got: usize },
    #[error("datagram carries {extra} bytes after the frame")]
    TrailingBytes { extra: usize },
    /// A compressed body (flags bit 3) from a peer that did not negotiate
    /// compression in the handshake.
    #[error("compressed body on a connection that did not negotiate compression")]
    CompressionNotNegotiated { id: MessageId },
    /// A compressed body that does not decompress: not one zstd frame, no
    /// declared content size, or a decoded size other than the declared one.
    #[error("bad compressed body: {reason}")]
    BadCompression { reason: String, id: MessageId },
    /// Local misuse when encoding: route keys are at most 255 bytes.
    #[error("route key of {len} bytes is over 255")]
    RouteTooLong { len: usize },
}

impl FrameError {
    /// True when the decoder has skipped the bad frame and the stream can
    /// continue with the next one.
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, FrameError::BadMagic { .. })
    }

    /// The message id of the offending frame, when it could be read.
    pub fn message_id(&self) -> Option<MessageId> {
        match self {
            FrameError::UnsupportedVersion { id, .. }
            | FrameError::UnknownKind { id, .. }
            | FrameError::UnknownFlags { id, .. }
            | FrameError::TooLarge { id, .. }
            | FrameError::BadRoute { id }
            | FrameError::CompressionNotNegotiated { id }
            | FrameError::BadCompression { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The error DTO to send back to the peer.
    pub fn to_error_body(&self) -> crate::ErrorBody {
        use crate::ErrorCode;
        let code = match self {
            FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadFrame,
        };
        let body = crate::ErrorBody::new(code, self.to_string());
        match self {
            FrameError::UnsupportedVersion { supported, found, .. } => body.with_details(
                serde_json::json!({ "supported": [supported], "found": found }),
            ),
            FrameError::TooLarge { len, max, .. } => {
                body.with_details(serde_json::json!({ "len": len, "max": max }))
            }
            _ => body,
        }
    }
}

/// A body that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body encode failed: {0}")]
    Encode(String),
    #[error("body decode failed: {0}")]
    Decode(String),
}
