//! The 8-byte message header, control messages, and the stream framer that
//! reassembles segmented messages.

use bytes::{Buf, Bytes, BytesMut};

use super::wire::{ByteOrder, Limits};
use crate::error::{Error, Result};

pub const MAGIC: u8 = 0xCA;
/// Protocol version we speak (pvxs and pvAccessCPP both send 2).
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 8;

pub const FLAG_CONTROL: u8 = 0x01;
pub const FLAG_SEG_MASK: u8 = 0x30;
pub const FLAG_SEG_FIRST: u8 = 0x10;
pub const FLAG_SEG_LAST: u8 = 0x20;
pub const FLAG_SEG_MIDDLE: u8 = 0x30;
pub const FLAG_SERVER: u8 = 0x40;
pub const FLAG_BIG_ENDIAN: u8 = 0x80;

/// Application message commands.
pub mod cmd {
    pub const BEACON: u8 = 0;
    pub const CONNECTION_VALIDATION: u8 = 1;
    pub const ECHO: u8 = 2;
    pub const SEARCH: u8 = 3;
    pub const SEARCH_RESPONSE: u8 = 4;
    pub const AUTHNZ: u8 = 5;
    pub const ACL_CHANGE: u8 = 6;
    pub const CREATE_CHANNEL: u8 = 7;
    pub const DESTROY_CHANNEL: u8 = 8;
    pub const CONNECTION_VALIDATED: u8 = 9;
    pub const GET: u8 = 10;
    pub const PUT: u8 = 11;
    pub const PUT_GET: u8 = 12;
    pub const MONITOR: u8 = 13;
    pub const ARRAY: u8 = 14;
    pub const DESTROY_REQUEST: u8 = 15;
    pub const PROCESS: u8 = 16;
    pub const GET_FIELD: u8 = 17;
    pub const MESSAGE: u8 = 18;
    pub const MULTIPLE_DATA: u8 = 19;
    pub const RPC: u8 = 20;
    pub const CANCEL_REQUEST: u8 = 21;
    pub const ORIGIN_TAG: u8 = 22;
}

/// Control message commands (flag bit 0 set; the size field carries a value).
pub mod ctrl {
    pub const MARK_TOTAL_BYTES_SENT: u8 = 0;
    pub const ACK_TOTAL_BYTES_RECEIVED: u8 = 1;
    pub const SET_BYTE_ORDER: u8 = 2;
    pub const ECHO_REQUEST: u8 = 3;
    pub const ECHO_RESPONSE: u8 = 4;
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub flags: u8,
    pub command: u8,
    /// Payload length, or the control value for control messages.
    pub size: u32,
}

impl Header {
    pub fn new(command: u8, flags: u8, size: u32) -> Self {
        Header { version: VERSION, flags, command, size }
    }

    pub fn order(&self) -> ByteOrder {
        if self.flags & FLAG_BIG_ENDIAN != 0 { ByteOrder::Big } else { ByteOrder::Little }
    }
    pub fn is_control(&self) -> bool {
        self.flags & FLAG_CONTROL != 0
    }
    pub fn from_server(&self) -> bool {
        self.flags & FLAG_SERVER != 0
    }
    pub fn segment(&self) -> u8 {
        self.flags & FLAG_SEG_MASK
    }

    /// Parse 8 bytes. The size is in the byte order given by the flags.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header> {
        if b[0] != MAGIC {
            return Err(Error::malformed(format!("bad magic 0x{:02x}", b[0])));
        }
        let flags = b[2];
        let sz = [b[4], b[5], b[6], b[7]];
        let size = if flags & FLAG_BIG_ENDIAN != 0 { u32::from_be_bytes(sz) } else { u32::from_le_bytes(sz) };
        Ok(Header { version: b[1], flags, command: b[3], size })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(MAGIC);
        out.push(self.version);
        out.push(self.flags);
        out.push(self.command);
        if self.flags & FLAG_BIG_ENDIAN != 0 {
            out.extend_from_slice(&self.size.to_be_bytes());
        } else {
            out.extend_from_slice(&self.size.to_le_bytes());
        }
    }
}

/// Flags for a message in `order`, sent by a server or a client.
pub fn flags_for(order: ByteOrder, from_server: bool) -> u8 {
    let mut f = 0;
    if order == ByteOrder::Big {
        f |= FLAG_BIG_ENDIAN;
    }
    if from_server {
        f |= FLAG_SERVER;
    }
    f
}

/// Encode a control message.
pub fn control(command: u8, value: u32, order: ByteOrder, from_server: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    Header::new(command, flags_for(order, from_server) | FLAG_CONTROL, value).write(&mut out);
    out
}

/// One unit out of the framer: a control message or a whole (reassembled)
/// application message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Control(Header),
    /// Header of the first segment (segment bits cleared) and the payload.
    App(Header, Bytes),
}

/// Splits a byte stream into frames; reassembles segments.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    pub limits: Limits,
    partial: Option<(Header, BytesMut)>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(limits: Limits) -> Self {
        FrameDecoder { limits, partial: None }
    }

    /// Take the next frame out of `buf`. `Ok(None)`: need more bytes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>> {
        loop {
            let Some(hb) = buf.get(..HEADER_LEN) else { return Ok(None) };
            let mut h8 = [0u8; HEADER_LEN];
            h8.copy_from_slice(hb);
            let h = Header::parse(&h8)?;
            if h.is_control() {
                buf.advance(HEADER_LEN);
                return Ok(Some(Frame::Control(h)));
            }
            let len = h.size as usize;
            let already = self.partial.as_ref().map(|(_, b)| b.len()).unwrap_or(0);
            if len.saturating_add(already) > self.limits.message_len_max {
                return Err(Error::Limit {
                    what: "message payload",
                    value: (len + already) as u64,
                    max: self.limits.message_len_max as u64,
                });
            }
            if buf.len() < HEADER_LEN + len {
                // Reserve only what the (limit-checked) header announces.
                buf.reserve(HEADER_LEN + len - buf.len());
                return Ok(None);
            }
            buf.advance(HEADER_LEN);
            let payload = buf.split_to(len);
            match (h.segment(), self.partial.take()) {
                (0, None) => return Ok(Some(Frame::App(h, payload.freeze()))),
                (FLAG_SEG_FIRST, None) => {
                    self.partial = Some((h, payload));
                    continue;
                }
                (FLAG_SEG_MIDDLE, Some((fh, mut acc))) if fh.command == h.command => {
                    acc.extend_from_slice(&payload);
                    self.partial = Some((fh, acc));
                    continue;
                }
                (FLAG_SEG_LAST, Some((fh, mut acc))) if fh.command == h.command => {
                    acc.extend_from_slice(&payload);
                    let mut fh = fh;
                    fh.flags &= !FLAG_SEG_MASK;
                    fh.size = acc.len() as u32;
                    return Ok(Some(Frame::App(fh, acc.freeze())));
                }
                (seg, p) => {
                    return Err(Error::malformed(format!(
                        "segment flags 0x{seg:02x} for command {} with {} segment pending",
                        h.command,
                        if p.is_some() { "a" } else { "no" }
                    )));
                }
            }
        }
    }
}

/// Split one UDP datagram into (header, payload) messages; a datagram may
/// carry several (e.g. ORIGIN_TAG followed by SEARCH).
pub fn split_datagram(mut d: &[u8]) -> Result<Vec<(Header, &[u8])>> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let Some(hb) = d.get(..HEADER_LEN) else {
            return Err(Error::Truncated { what: "datagram header", needed: HEADER_LEN - d.len() });
        };
        let mut h8 = [0u8; HEADER_LEN];
        h8.copy_from_slice(hb);
        let h = Header::parse(&h8)?;
        let len = if h.is_control() { 0 } else { h.size as usize };
        let Some(p) = d.get(HEADER_LEN..HEADER_LEN.saturating_add(len)) else {
            return Err(Error::Truncated { what: "datagram payload", needed: len });
        };
        out.push((h, p));
        d = d.get(HEADER_LEN + len..).unwrap_or(&[]);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn msg(flags: u8, cmd: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        Header::new(cmd, flags, payload.len() as u32).write(&mut v);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn reassembles_segments_with_interleaved_control() {
        let mut s = Vec::new();
        s.extend(msg(0x50, 10, b"ab"));
        s.extend(control(ctrl::ECHO_REQUEST, 7, ByteOrder::Little, false));
        s.extend(msg(0x70, 10, b"cd"));
        s.extend(msg(0x60, 10, b""));
        let mut b = BytesMut::from(&s[..]);
        let mut d = FrameDecoder::new();
        assert!(matches!(d.decode(&mut b).unwrap(), Some(Frame::Control(h)) if h.size == 7));
        match d.decode(&mut b).unwrap() {
            Some(Frame::App(h, p)) => {
                assert_eq!(&p[..], b"abcd");
                assert_eq!(h.flags, 0x40);
            }
            other => panic!("{other:?}"),
        }
        assert!(d.decode(&mut b).unwrap().is_none());
    }

    #[test]
    fn refuses_huge_and_bad_magic() {
        let mut b = BytesMut::from(&[0xCA, 2, 0, 10, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(FrameDecoder::new().decode(&mut b), Err(Error::Limit { .. })));
        let mut b = BytesMut::from(&[0xCB, 2, 0, 10, 0, 0, 0, 0][..]);
        assert!(FrameDecoder::new().decode(&mut b).is_err());
    }

    #[test]
    fn stray_middle_segment_is_an_error() {
        let mut b = BytesMut::from(&msg(0x30, 10, b"x")[..]);
        assert!(FrameDecoder::new().decode(&mut b).is_err());
    }
}
