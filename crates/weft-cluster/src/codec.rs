//! Transport frames between cluster nodes (sans-IO).
//!
//! ```text
//! magic "WFRC" (4) | body length u32 BE (4) | body
//! body = from node u64 BE | count u32 BE | count × (group u64 BE | msg length u32 BE | raft Message protobuf)
//! ```
//!
//! One frame carries the raft messages of every group for one peer, so many
//! groups share one connection and one write per tick-loop turn.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::prelude::Message;

use crate::error::{ClusterError, Result};

pub const MAGIC: &[u8; 4] = b"WFRC";
const PREFIX: usize = 8;
/// Smallest encoded message: group id and length.
const MSG_MIN: usize = 12;

/// Parses a protobuf message from `b` with every claimed length checked
/// against the bytes there before anything is allocated. rust-protobuf
/// reads a top-level message with no limit, and then reserves a claimed
/// length (up to 10 MB) for a bytes or unknown field before finding the
/// bytes missing; with the input's length pushed as the limit, each claim
/// is checked first, and byte fields are slices of `b` (no copy).
pub fn parse_bounded<M: protobuf::Message>(b: &Bytes) -> protobuf::ProtobufResult<M> {
    let mut is = protobuf::CodedInputStream::from_carllerche_bytes(b);
    let outer = is.push_limit(b.len() as u64)?;
    let mut m = M::new();
    m.merge_from(&mut is)?;
    is.pop_limit(outer);
    is.check_eof()?;
    m.check_initialized()?;
    Ok(m)
}

/// A batch of raft messages from one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub from: u64,
    pub msgs: Vec<(u64, Message)>,
}

/// Encode `frame` onto `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<()> {
    let start = out.len();
    out.put_slice(MAGIC);
    out.put_u32(0); // patched below, once the body length is known
    out.put_u64(frame.from);
    out.put_u32(frame.msgs.len() as u32);
    for (group, m) in &frame.msgs {
        let b = m.write_to_bytes()?;
        out.put_u64(*group);
        out.put_u32(b.len() as u32);
        out.put_slice(&b);
    }
    let body = (out.len() - start - PREFIX) as u32;
    out[start + 4..start + 8].copy_from_slice(&body.to_be_bytes());
    Ok(())
}

/// Decodes frames from a byte stream; `max_frame_bytes` bounds a body before
/// anything is reserved for it.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    pub max_frame_bytes: u32,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder { max_frame_bytes }
    }

    /// `Ok(None)`: need more bytes. An error means the stream is unusable.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>> {
        if buf.len() < PREFIX {
            return Ok(None);
        }
        if &buf[..4] != MAGIC {
            return Err(ClusterError::BadFrame("bad magic".into()));
        }
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if len > self.max_frame_bytes {
            return Err(ClusterError::FrameTooLarge { len: len.into(), max: self.max_frame_bytes.into() });
        }
        let total = PREFIX + len as usize;
        if buf.len() < total {
            // Reserve only up to a bounded, already-checked length.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(PREFIX);
        let mut body = frame.freeze();
        if body.len() < 12 {
            return Err(ClusterError::BadFrame("body shorter than its header".into()));
        }
        let from = body.get_u64();
        let count = body.get_u32() as usize;
        if count > body.len() / MSG_MIN {
            return Err(ClusterError::BadFrame(format!("count {count} exceeds body")));
        }
        let mut msgs = Vec::with_capacity(count);
        for _ in 0..count {
            if body.len() < MSG_MIN {
                return Err(ClusterError::BadFrame("truncated message header".into()));
            }
            let group = body.get_u64();
            let n = body.get_u32() as usize;
            if n > body.len() {
                return Err(ClusterError::BadFrame("message length exceeds body".into()));
            }
            // The entries' data are slices of the frame (whose buffer, one
            // bounded allocation per frame, they keep alive).
            let m: Message = parse_bounded(&body.slice(..n)).map_err(|e| ClusterError::BadFrame(e.to_string()))?;
            body.advance(n);
            msgs.push((group, m));
        }
        if !body.is_empty() {
            return Err(ClusterError::BadFrame("trailing bytes in frame".into()));
        }
        Ok(Some(Frame { from, msgs }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{Entry, MessageType};

    fn sample() -> Frame {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        m.from = 1;
        m.term = 7;
        m.entries = vec![Entry { index: 5, term: 7, data: b"hello".to_vec().into(), ..Default::default() }].into();
        let mut h = Message::default();
        h.set_msg_type(MessageType::MsgHeartbeat);
        Frame { from: 1, msgs: vec![(0, m), (42, h)] }
    }

    #[test]
    fn round_trip_split_at_every_byte() {
        let mut all = BytesMut::new();
        encode(&sample(), &mut all).unwrap();
        encode(&sample(), &mut all).unwrap();
        for cut in 0..all.len() {
            let mut d = FrameDecoder::new(1 << 20);
            let mut buf = BytesMut::from(&all[..cut]);
            let mut got = Vec::new();
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&all[cut..]);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
            assert_eq!(got, vec![sample(), sample()], "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn oversized_and_garbage_are_errors() {
        let mut buf = BytesMut::from(&b"WFRC\xff\xff\xff\xff"[..]);
        assert!(matches!(FrameDecoder::new(1024).decode(&mut buf), Err(ClusterError::FrameTooLarge { .. })));
        let mut buf = BytesMut::from(&b"HTTP/1.1 200"[..]);
        assert!(matches!(FrameDecoder::new(1024).decode(&mut buf), Err(ClusterError::BadFrame(_))));
        // A count far beyond the body must be refused before allocating.
        let mut buf = BytesMut::new();
        buf.put_slice(MAGIC);
        buf.put_u32(12);
        buf.put_u64(1);
        buf.put_u32(u32::MAX);
        assert!(matches!(FrameDecoder::new(1024).decode(&mut buf), Err(ClusterError::BadFrame(_))));
        // An inner length past the body.
        let mut buf = BytesMut::new();
        buf.put_slice(MAGIC);
        buf.put_u32(24);
        buf.put_u64(1);
        buf.put_u32(1);
        buf.put_u64(0);
        buf.put_u32(1000);
        assert!(matches!(FrameDecoder::new(1024).decode(&mut buf), Err(ClusterError::BadFrame(_))));
    }
}
