//! The crate's one error type. Variants say who is at fault: the remote peer
//! (malformed or unexpected bytes), the local caller (misuse), or the I/O layer.

use std::io;

/// Errors of weft-pva.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer sent bytes that do not follow the protocol (the connection is unusable).
    #[error("peer sent malformed data: {0}")]
    Malformed(String),
    /// The message ended before a field could be read (peer fault when the frame is complete).
    #[error("peer sent a truncated message: needed {needed} more bytes for {what}")]
    Truncated { what: &'static str, needed: usize },
    /// A length, count or depth from the wire exceeds our limit (peer fault).
    #[error("peer exceeded limit: {what} = {value} > {max}")]
    Limit { what: &'static str, value: u64, max: u64 },
    /// Unknown type code in a FieldDesc (peer fault).
    #[error("peer sent unknown type code 0x{0:02x}")]
    UnknownTypeCode(u8),
    /// A 0xFE type-cache reference to an id never defined (peer fault).
    #[error("peer referenced undefined type cache id {0}")]
    UnknownTypeId(u16),
    /// Unknown or unexpected application message (peer fault).
    #[error("peer sent unexpected message: {0}")]
    Unexpected(String),
    /// The remote side answered with an error status.
    #[error("remote error: {0}")]
    Remote(String),
    /// The local caller asked for something impossible (our fault).
    #[error("invalid use: {0}")]
    Usage(String),
    /// A value does not match its type (caller fault when building, peer fault when decoding).
    #[error("type mismatch: {0}")]
    TypeMismatch(String),
    /// Configuration (allow-list, access rules) is invalid (operator fault).
    #[error("bad configuration: {0}")]
    Config(String),
    /// Channel not found by search in time.
    #[error("channel not found: {0}")]
    NotFound(String),
    /// An operation timed out.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The connection was closed.
    #[error("connection closed: {0}")]
    Closed(String),
    /// Socket or file I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Result alias of weft-pva.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn malformed(s: impl Into<String>) -> Self {
        Error::Malformed(s.into())
    }
}
