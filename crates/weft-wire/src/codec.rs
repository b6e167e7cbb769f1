//! Sans-IO framing. Layout (all integers big-endian):
//!
//! ```text
//! 0      2  magic "WF"
//! 2      1  version (1)
//! 3      1  kind
//! 4      1  flags
//! 5      1  route key length R (0..=255)
//! 6      4  body length B (u32)
//! 10    16  message id (UUID bytes)
//! 26     R  route key (UTF-8)
//! 26+R   B  body
//! ```
//!
//! The first ten bytes are the envelope every version keeps, so a decoder
//! can always find the end of a frame it does not understand and skip it.

use bytes::{Buf, BufMut, BytesMut};

use crate::error::FrameError;
use crate::frame::{Flags, Frame, FrameKind, MessageId, MAGIC, PROTOCOL_VERSION};

pub const HEADER_LEN: usize = 26;
/// 16 MiB unless configured otherwise.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
const MAX_ROUTE_LEN: usize = u8::MAX as usize;

/// Stream decoder (TCP, Unix sockets). Follows tokio-util's `Decoder`
/// contract: `Ok(None)` means "need more bytes". After a recoverable error the
/// rest of the bad frame is discarded as it arrives, without buffering it.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    /// Bytes of a rejected frame still to throw away.
    discard: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes, discard: 0 }
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.discard > 0 {
            let n = self.discard.min(src.len());
            src.advance(n);
            self.discard -= n;
            if self.discard > 0 {
                return Ok(None);
            }
        }
        let Some(header) = Header::peek(src)? else {
            return Ok(None);
        };
        let rest = header.route_len + header.body_len as usize;
        if let Err(e) = header.validate(self.max_frame_bytes) {
            // The envelope is intact: skip this frame and report it.
            src.advance(HEADER_LEN);
            self.discard = rest;
            let n = self.discard.min(src.len());
            src.advance(n);
            self.discard -= n;
            return Err(e);
        }
        let total = HEADER_LEN + rest;
        if src.len() < total {
            // Bounded by max_frame_bytes, checked above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame_bytes = src.split_to(total);
        frame_bytes.advance(HEADER_LEN);
        let route_bytes = frame_bytes.split_to(header.route_len);
        let body = frame_bytes.freeze();
        header.finish(&route_bytes, body).map(Some)
    }
}

/// Decode one datagram, which must hold exactly one whole frame.
pub fn decode_datagram(buf: &[u8], max_frame_bytes: usize) -> Result<Frame, FrameError> {
    let mut src = BytesMut::from(buf);
    let Some(header) = Header::peek(&src)? else {
        return Err(FrameError::Truncated { expected: HEADER_LEN, got: buf.len() });
    };
    header.validate(max_frame_bytes)?;
    let total = HEADER_LEN + header.route_len + header.body_len as usize;
    if buf.len() < total {
        return Err(FrameError::Truncated { expected: total, got: buf.len() });
    }
    if buf.len() > total {
        return Err(FrameError::TrailingBytes { extra: buf.len() - total });
    }
    src.advance(HEADER_LEN);
    let route = src.split_to(header.route_len);
    header.finish(&route, src.freeze())
}

/// Append the wire form of `frame` to `dst`. Fails only on local misuse: a
/// route key over 255 bytes or a body over 4 GiB.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    if frame.route.len() > MAX_ROUTE_LEN {
        return Err(FrameError::RouteTooLong { len: frame.route.len() });
    }
    let body_len = u32::try_from(frame.body.len()).map_err(|_| FrameError::TooLarge {
        len: frame.body.len() as u64,
        max: u32::MAX as u64,
        id: frame.id,
    })?;
    dst.reserve(frame.wire_len());
    dst.put_slice(&MAGIC);
    dst.put_u8(PROTOCOL_VERSION);
    dst.put_u8(frame.kind as u8);
    dst.put_u8(frame.flags.bits());
    dst.put_u8(frame.route.len() as u8); // checked above
    dst.put_u32(body_len);
    dst.put_slice(frame.id.as_bytes());
    dst.put_slice(frame.route.as_bytes());
    dst.put_slice(&frame.body);
    Ok(())
}

struct Header {
    version: u8,
    kind: u8,
    flags: u8,
    route_len: usize,
    body_len: u32,
    id: MessageId,
}

impl Header {
    fn peek(src: &[u8]) -> Result<Option<Header>, FrameError> {
        // Check the magic as soon as two bytes are in, so garbage is refused
        // without waiting for a whole header.
        if let (Some(&a), Some(&b)) = (src.first(), src.get(1))
            && [a, b] != MAGIC
        {
            return Err(FrameError::BadMagic { found: [a, b] });
        }
        let Some(h) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = h;
        h.advance(2);
        let version = h.get_u8();
        let kind = h.get_u8();
        let flags = h.get_u8();
        let route_len = h.get_u8() as usize;
        let body_len = h.get_u32();
        let mut id = [0u8; 16];
        h.copy_to_slice(&mut id);
        Ok(Some(Header {
            version,
            kind,
            flags,
            route_len,
            body_len,
            id: MessageId::from_bytes(id),
        }))
    }

    fn validate(&self, max_frame_bytes: usize) -> Result<(), FrameError> {
        let total = HEADER_LEN as u64 + self.route_len as u64 + self.body_len as u64;
        if total > max_frame_bytes as u64 {
            return Err(FrameError::TooLarge { len: total, max: max_frame_bytes as u64, id: self.id });
        }
        if self.version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: self.version,
                supported: PROTOCOL_VERSION,
                id: self.id,
            });
        }
        if FrameKind::from_wire(self.kind).is_none() {
            return Err(FrameError::UnknownKind { found: self.kind, id: self.id });
        }
        if Flags::from_wire(self.flags).is_none() {
            return Err(FrameError::UnknownFlags { found: self.flags, id: self.id });
        }
        Ok(())
    }

    fn finish(self, route: &[u8], body: bytes::Bytes) -> Result<Frame, FrameError> {
        let route = std::str::from_utf8(route).map_err(|_| FrameError::BadRoute { id: self.id })?;
        Ok(Frame {
            // Both checked in validate().
            kind: FrameKind::from_wire(self.kind).ok_or(FrameError::UnknownKind { found: self.kind, id: self.id })?,
            flags: Flags::from_wire(self.flags).ok_or(FrameError::UnknownFlags { found: self.flags, id: self.id })?,
            id: self.id,
            route: route.to_owned(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BodyFormat, ErrorBody, ErrorCode};
    use bytes::Bytes;

    fn sample() -> Frame {
        Frame::request(
            MessageId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            "weft.echo",
            BodyFormat::MsgPack,
            &serde_json::json!({"text": "hi"}),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_every_split() {
        let f = sample();
        let mut wire = BytesMut::new();
        encode(&f, &mut wire).unwrap();
        encode(&f, &mut wire).unwrap();
        for cut in 0..wire.len() {
            let mut dec = FrameDecoder::new(1024);
            let mut buf = BytesMut::new();
            let mut out = vec![];
            for part in [&wire[..cut], &wire[cut..]] {
                buf.extend_from_slice(part);
                while let Some(fr) = dec.decode(&mut buf).unwrap() {
                    out.push(fr);
                }
            }
            assert_eq!(out, vec![f.clone(), f.clone()], "cut at {cut}");
        }
    }

    #[test]
    fn documented_example_bytes() {
        // The example in docs/protocol.md, section "Request".
        let f = sample();
        let mut wire = BytesMut::new();
        encode(&f, &mut wire).unwrap();
        let hex: String = wire.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "574601010009000000090123456789abcdef0123456789abcdef\
             776566742e6563686f81a474657874a26869"
        );
    }

    #[test]
    fn bad_magic_is_fatal() {
        let mut dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let e = dec.decode(&mut buf).unwrap_err();
        assert!(matches!(e, FrameError::BadMagic { .. }));
        assert!(!e.is_recoverable());
    }

    #[test]
    fn oversized_length_is_skipped_without_allocating() {
        let f = sample();
        let mut wire = BytesMut::new();
        encode(&f, &mut wire).unwrap();
        // Claim a 4 GiB body.
        wire[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut dec = FrameDecoder::new(1024);
        let e = dec.decode(&mut wire).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }));
        assert!(e.is_recoverable());
        assert_eq!(e.message_id(), Some(f.id));
        assert!(wire.capacity() < 4096);
        // The decoder now discards; a following good frame can't be reached
        // until the claimed bytes are skipped, which is what the claim means.
        assert_eq!(dec.discard, u32::MAX as usize + f.route.len() - (f.wire_len() - HEADER_LEN));
    }

    #[test]
    fn bad_version_kind_flags_skip_to_next_frame() {
        let good = sample();
        for (at, val) in [(2usize, 9u8), (3, 0), (3, 77), (4, 0x80)] {
            let mut wire = BytesMut::new();
            encode(&good, &mut wire).unwrap();
            wire[at] = val;
            encode(&good, &mut wire).unwrap();
            let mut dec = FrameDecoder::new(1024);
            let e = dec.decode(&mut wire).unwrap_err();
            assert!(e.is_recoverable(), "{e}");
            assert_eq!(e.message_id(), Some(good.id));
            assert_eq!(dec.decode(&mut wire).unwrap(), Some(good.clone()));
        }
    }

    #[test]
    fn bad_route_utf8() {
        let mut f = sample();
        f.route = "ab".into();
        let mut wire = BytesMut::new();
        encode(&f, &mut wire).unwrap();
        wire[HEADER_LEN] = 0xff;
        let e = FrameDecoder::new(1024).decode(&mut wire).unwrap_err();
        assert!(matches!(e, FrameError::BadRoute { .. }));
    }

    #[test]
    fn datagram_rules() {
        let f = sample();
        let mut wire = BytesMut::new();
        encode(&f, &mut wire).unwrap();
        assert_eq!(decode_datagram(&wire, 1024).unwrap(), f);
        assert!(matches!(
            decode_datagram(&wire[..wire.len() - 1], 1024),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(decode_datagram(&wire[..5], 1024), Err(FrameError::Truncated { .. })));
        let mut long = wire.clone();
        long.put_u8(0);
        assert!(matches!(decode_datagram(&long, 1024), Err(FrameError::TrailingBytes { extra: 1 })));
        assert!(matches!(decode_datagram(&wire, 10), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn json_body_and_error_frame() {
        let req = Frame::request(MessageId::nil(), "x", BodyFormat::Json, &serde_json::json!({"a": 1})).unwrap();
        assert!(req.flags.is_json());
        assert_eq!(&req.body[..], br#"{"a":1}"#);
        let err = req.error_to(&ErrorBody::new(ErrorCode::UnknownRoute, "no route x"));
        assert_eq!(err.kind, FrameKind::Error);
        let back: ErrorBody = err.decode_body().unwrap();
        assert_eq!(back.code, ErrorCode::UnknownRoute);
        // Unknown codes from a newer peer decode as Unknown.
        let newer: ErrorBody = BodyFormat::Json.decode(br#"{"code":"quota","message":"m"}"#).unwrap();
        assert_eq!(newer.code, ErrorCode::Unknown);
    }

    #[test]
    fn route_too_long_is_local_error() {
        let mut f = sample();
        f.route = "r".repeat(256);
        assert!(matches!(encode(&f, &mut BytesMut::new()), Err(FrameError::RouteTooLong { len: 256 })));
        let _ = Bytes::new();
    }
}
