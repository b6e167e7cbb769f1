//! Compressed bodies (flags bit 3, docs/protocol.md "Compression").
//!
//! The body proper (after any trace-context extension) is one zstd frame
//! whose header declares its content size. Decompression checks that size
//! against the caller's bound before allocating, and allocates exactly it:
//! a decompression bomb is a typed error, never a large allocation.
//! Uncompressed frames pass through every function here untouched and
//! without allocating.

use bytes::Bytes;
use serde::Deserialize;

use crate::error::FrameError;
use crate::frame::{Flags, Frame};

/// The algorithm name a client lists in its hello's `compression` field.
pub const COMPRESS_ZSTD: &str = "zstd";
/// The welcome feature announcing that a server accepts compressed bodies
/// and may send them to a client whose hello listed [`COMPRESS_ZSTD`].
pub const COMPRESS_ZSTD_FEATURE: &str = "compress-zstd";
/// Bodies shorter than this are sent as they are (`limits.compress_min_bytes`).
pub const DEFAULT_COMPRESS_MIN_BYTES: usize = 1024;
/// Fast, and most of the gain on JSON and msgpack.
const ZSTD_LEVEL: i32 = 1;

/// The part of a hello this module reads: `compression`, a list of
/// algorithm names the client accepts (absent: none).
#[derive(Deserialize)]
struct HelloCompression {
    #[serde(default)]
    compression: Vec<String>,
}

/// Whether a `hello` frame lists zstd among the compressions it accepts.
/// A hello without the field (older clients) or that does not decode: no.
pub fn hello_accepts_zstd(hello: &Frame) -> bool {
    hello
        .decode_body::<HelloCompression>()
        .is_ok_and(|h| h.compression.iter().any(|c| c == COMPRESS_ZSTD))
}

impl Frame {
    /// Where the body proper starts: after the trace-context extension when
    /// the frame has one (its length byte and text), else 0.
    fn body_start(&self) -> Result<usize, FrameError> {
        if !self.flags.has_trace_context() {
            return Ok(0);
        }
        let len = self.body.first().copied().unwrap_or(0) as usize;
        if len == 0 || 1 + len > self.body.len() {
            return Err(FrameError::BadCompression {
                reason: format!("trace-context extension of {len} bytes in a body of {} bytes", self.body.len()),
                id: self.id,
            });
        }
        Ok(1 + len)
    }

    /// Compress the body proper with zstd and set [`Flags::COMPRESSED`] when
    /// it is at least `min_bytes` long and compressing makes it shorter.
    /// Returns the bytes saved (0: the frame is unchanged). Call only
    /// toward a peer that negotiated compression.
    pub fn compress_body(&mut self, min_bytes: usize) -> usize {
        if self.flags.is_compressed() || self.body.len() < min_bytes.max(1) {
            return 0;
        }
        let Ok(start) = self.body_start() else { return 0 };
        let proper = &self.body[start..];
        if proper.len() < min_bytes {
            return 0;
        }
        let Ok(packed) = zstd::bulk::compress(proper, ZSTD_LEVEL) else { return 0 };
        if packed.len() >= proper.len() {
            return 0;
        }
        let saved = proper.len() - packed.len();
        let mut body = Vec::with_capacity(start + packed.len());
        body.extend_from_slice(&self.body[..start]);
        body.extend_from_slice(&packed);
        self.body = Bytes::from(body);
        self.flags = self.flags.with_compressed(true);
        saved
    }

    /// Undo [`Frame::compress_body`]: decompress the body proper and clear
    /// [`Flags::COMPRESSED`]. Frames without the flag are left as they are
    /// (no allocation). Errors, all typed and decided before allocating
    /// more than the bound:
    /// - [`FrameError::CompressionNotNegotiated`] when `negotiated` is false;
    /// - [`FrameError::TooLarge`] when the declared size (plus what precedes
    ///   the body proper) is over `max_bytes`;
    /// - [`FrameError::BadCompression`] for anything that is not one zstd
    ///   frame declaring its size and decoding to exactly that size.
    ///
    /// Returns the bytes the compression had saved (0 when not compressed).
    pub fn decompress_body(&mut self, negotiated: bool, max_bytes: usize) -> Result<usize, FrameError> {
        if !self.flags.is_compressed() {
            return Ok(0);
        }
        let id = self.id;
        if !negotiated {
            return Err(FrameError::CompressionNotNegotiated { id });
        }
        let start = self.body_start()?;
        let packed = &self.body[start..];
        let bad = |reason: String| FrameError::BadCompression { reason, id };
        let declared = match zstd::zstd_safe::get_frame_content_size(packed) {
            Ok(Some(n)) => n,
            Ok(None) => return Err(bad("zstd frame does not declare its content size".into())),
            Err(_) => return Err(bad("not a zstd frame".into())),
        };
        let total = declared.saturating_add((crate::codec::HEADER_LEN + self.route.len() + start) as u64);
        if total > max_bytes as u64 {
            return Err(FrameError::TooLarge { len: total, max: max_bytes as u64, id });
        }
        // Bounded by max_bytes, checked above.
        let declared = declared as usize;
        let mut out = Vec::with_capacity(start + declared);
        out.extend_from_slice(&self.body[..start]);
        let mut dec = zstd::bulk::Decompressor::new().map_err(|e| bad(e.to_string()))?;
        let mut plain = vec![0u8; declared];
        let n = dec.decompress_to_buffer(packed, &mut plain[..]).map_err(|e| bad(e.to_string()))?;
        if n != declared {
            return Err(bad(format!("zstd frame declares {declared} bytes and decodes to {n}")));
        }
        out.extend_from_slice(&plain);
        let saved = declared.saturating_sub(packed.len());
        self.body = Bytes::from(out);
        self.flags = self.flags.with_compressed(false);
        Ok(saved)
    }
}

impl Flags {
    /// Flags with [`Flags::COMPRESSED`] cleared (for answers built from a
    /// compressed request).
    pub fn without_compressed(self) -> Self {
        self.with_compressed(false)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::body::{BodyFormat, ErrorCode};
    use crate::codec::{encode, FrameDecoder};
    use crate::frame::MessageId;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn big() -> Frame {
        let text = "weft ".repeat(1000);
        Frame::request(MessageId::from_u128(7), "weft.echo", BodyFormat::Json, &serde_json::json!({ "text": text })).unwrap()
    }

    #[test]
    fn round_trip_through_the_codec() {
        let f = big();
        let mut c = f.clone();
        let saved = c.compress_body(DEFAULT_COMPRESS_MIN_BYTES);
        assert!(saved > 0 && c.flags.is_compressed() && c.flags.is_json());
        assert_eq!(c.body.len() + saved, f.body.len());
        let mut wire = BytesMut::new();
        encode(&c, &mut wire).unwrap();
        assert_eq!(wire[4], Flags::JSON | Flags::COMPRESSED);
        let mut got = FrameDecoder::new(1 << 20).decode(&mut wire).unwrap().unwrap();
        assert_eq!(got.decompress_body(true, 1 << 20).unwrap(), saved);
        assert_eq!(got, f);
    }

    #[test]
    fn with_a_trace_context_the_extension_stays_plain() {
        let f = big();
        let mut c = f.clone();
        assert!(c.compress_body(1) > 0);
        let mut c = c.with_trace_context(TP);
        assert!(c.flags.has_trace_context() && c.flags.is_compressed());
        assert_eq!(c.body[0] as usize, TP.len());
        c.decompress_body(true, 1 << 20).unwrap();
        assert_eq!(c.take_trace_context().unwrap().as_deref(), Some(TP));
        assert_eq!(c, f);
    }

    #[test]
    fn small_or_incompressible_bodies_stay_plain() {
        let mut f = Frame::request(MessageId::nil(), "r", BodyFormat::Json, &"short").unwrap();
        let before = f.clone();
        assert_eq!(f.compress_body(DEFAULT_COMPRESS_MIN_BYTES), 0);
        assert_eq!(f, before);
        // Already-compressed data does not shrink.
        let noise: Vec<u8> = zstd::bulk::compress(&big().body, 19).unwrap();
        f.body = Bytes::from(noise);
        let before = f.clone();
        assert_eq!(f.compress_body(1), 0);
        assert_eq!(f, before);
        // And an uncompressed frame decompresses to itself.
        assert_eq!(f.decompress_body(false, 10).unwrap(), 0);
        assert_eq!(f, before);
    }

    #[test]
    fn a_bomb_is_too_large_before_allocating() {
        let zeros = vec![0u8; 8 << 20];
        let mut f = Frame::request(MessageId::from_u128(9), "r", BodyFormat::MsgPack, &()).unwrap();
        f.body = Bytes::from(zstd::bulk::compress(&zeros, 3).unwrap());
        f.flags = f.flags.with_compressed(true);
        assert!(f.body.len() < 4096);
        let err = f.decompress_body(true, 1 << 20).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max, .. } if max == 1 << 20), "{err:?}");
        assert_eq!(err.to_error_body().code, ErrorCode::TooLarge);
        assert_eq!(err.message_id(), Some(MessageId::from_u128(9)));
    }

    #[test]
    fn truncated_and_garbage_bodies_are_bad_frames() {
        let mut c = big();
        c.compress_body(1);
        let mut cut = c.clone();
        cut.body = cut.body.slice(..cut.body.len() - 5);
        let err = cut.decompress_body(true, 1 << 20).unwrap_err();
        assert!(matches!(err, FrameError::BadCompression { .. }), "{err:?}");
        assert_eq!(err.to_error_body().code, ErrorCode::BadFrame);
        let mut junk = c.clone();
        junk.body = Bytes::from_static(b"not zstd at all");
        assert!(matches!(junk.decompress_body(true, 1 << 20), Err(FrameError::BadCompression { .. })));
        let mut empty = c.clone();
        empty.body = Bytes::new();
        assert!(matches!(empty.decompress_body(true, 1 << 20), Err(FrameError::BadCompression { .. })));
        // A streamed zstd frame (no declared size) is refused too.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        std::io::Write::write_all(&mut enc, b"hello hello hello").unwrap();
        let mut streamed = c.clone();
        streamed.body = Bytes::from(enc.finish().unwrap());
        assert!(matches!(streamed.decompress_body(true, 1 << 20), Err(FrameError::BadCompression { .. })));
    }

    #[test]
    fn flag_without_negotiation_is_a_typed_error() {
        let mut c = big();
        c.compress_body(1);
        let err = c.decompress_body(false, 1 << 20).unwrap_err();
        assert!(matches!(err, FrameError::CompressionNotNegotiated { .. }));
        assert_eq!(err.to_error_body().code, ErrorCode::BadFrame);
    }

    #[test]
    fn hello_negotiation_field() {
        let with = Frame::with_body(
            crate::frame::FrameKind::Control,
            MessageId::nil(),
            crate::CONTROL_HELLO,
            BodyFormat::MsgPack,
            &serde_json::json!({"protocol_version": 1, "client_id": "a", "compression": ["zstd"]}),
        )
        .unwrap();
        assert!(hello_accepts_zstd(&with));
        let without = Frame::with_body(
            crate::frame::FrameKind::Control,
            MessageId::nil(),
            crate::CONTROL_HELLO,
            BodyFormat::MsgPack,
            &serde_json::json!({"protocol_version": 1, "client_id": "a"}),
        )
        .unwrap();
        assert!(!hello_accepts_zstd(&without));
    }
}
