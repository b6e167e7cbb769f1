//! Weft's native protocol: one frame format, a sans-IO codec, and the
//! message bodies every peer must understand (handshake, errors, heartbeats).
//!
//! Nothing here touches sockets, clocks or randomness: callers hand in bytes
//! and get frames back (`FrameDecoder::decode`), or hand in frames and get
//! bytes (`encode`). The byte layout is specified in docs/protocol.md.

mod body;
mod codec;
mod compress;
mod error;
pub mod fastbody;
mod frame;
pub mod pass;

pub use body::{
    BodyFormat, ErrorBody, ErrorCode, Heartbeat, Hello, SharedBytes, Welcome, CONTROL_GOAWAY,
    CONTROL_HEARTBEAT, CONTROL_HELLO, CONTROL_WELCOME,
};
pub use codec::{decode_datagram, encode, FrameDecoder, DEFAULT_MAX_FRAME_BYTES, HEADER_LEN};
pub use compress::{hello_accepts_zstd, COMPRESS_ZSTD, COMPRESS_ZSTD_FEATURE, DEFAULT_COMPRESS_MIN_BYTES};
pub use error::{BodyError, FrameError};
pub use fastbody::FastBody;
pub use frame::{error_frame, error_frame_for, Flags, Frame, FrameKind, MessageId, MAGIC, PROTOCOL_VERSION, TRACE_CONTEXT_FEATURE};
