//! Finding frame boundaries in a read buffer before the frame is read, so
//! a frame's bytes can be reserved against the buffer budgets first.
//!
//! The wire decoder is only given whole frames (or, to refuse one that is
//! too large, its header alone), so it never holds a partial frame or a
//! discard count of its own; the splitter skips a refused frame's bytes.

use bytes::{Buf, BytesMut};
use weft_wire::{Frame, FrameDecoder, FrameError, MessageId, HEADER_LEN, MAGIC};

/// What to do next with a read buffer.
#[derive(Debug)]
pub(crate) enum Step {
    /// Read more bytes (no frame header yet, or skipping a refused frame).
    NeedMore,
    /// A frame of this many bytes (header included) has begun: reserve
    /// them, make room, read more.
    Partial(usize),
    /// A whole frame (of this many bytes) is at the head: reserve it if not
    /// yet reserved, then [`Splitter::take`] it. None: not a frame (bad
    /// magic), `take` reports it.
    Whole(Option<usize>),
    /// A frame too large for this connection was refused from its header;
    /// its bytes are skipped as they arrive.
    Refused(FrameError),
}

#[derive(Debug)]
pub(crate) struct Splitter {
    max_frame: usize,
    /// Bytes of a refused frame still to skip.
    discard: usize,
}

impl Splitter {
    pub(crate) fn new(max_frame: usize) -> Self {
        Self { max_frame, discard: 0 }
    }

    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    pub(crate) fn step(&mut self, buf: &mut BytesMut) -> Step {
        if self.discard > 0 {
            let n = self.discard.min(buf.len());
            buf.advance(n);
            self.discard -= n;
            if self.discard > 0 {
                return Step::NeedMore;
            }
        }
        if buf.get(..2).is_some_and(|m| m != MAGIC) {
            return Step::Whole(None);
        }
        let total = match buf.get(..10) {
            Some(&[_, _, _, _, _, route_len, b0, b1, b2, b3]) => {
                HEADER_LEN + usize::from(route_len) + u32::from_be_bytes([b0, b1, b2, b3]) as usize
            }
            _ => return Step::NeedMore,
        };
        if total > self.max_frame {
            if buf.len() < HEADER_LEN {
                return Step::NeedMore;
            }
            let mut header = buf.split_to(HEADER_LEN);
            let e = match FrameDecoder::new(self.max_frame).decode(&mut header) {
                Err(e) => e,
                // Not reached: the decoder checks the same length.
                Ok(_) => FrameError::TooLarge { len: total as u64, max: self.max_frame as u64, id: MessageId::nil() },
            };
            self.discard = total - HEADER_LEN;
            let n = self.discard.min(buf.len());
            buf.advance(n);
            self.discard -= n;
            return Step::Refused(e);
        }
        if buf.len() < total { Step::Partial(total) } else { Step::Whole(Some(total)) }
    }

    /// Decodes the whole frame at the head of `buf` (after [`Step::Whole`]).
    pub(crate) fn take(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        FrameDecoder::new(self.max_frame).decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_wire::{BodyFormat, FrameKind};

    fn frame_bytes(body_len: usize) -> Vec<u8> {
        let f = Frame::with_body(FrameKind::Request, MessageId::new_v4(), "r", BodyFormat::MsgPack, &vec![0u8; body_len]).unwrap();
        let mut out = BytesMut::new();
        weft_wire::encode(&f, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn frames_at_every_split_point_and_a_refused_one_skipped() {
        let small = frame_bytes(10);
        let big = frame_bytes(500);
        let stream: Vec<u8> = [small.clone(), big.clone(), small.clone()].concat();
        // Split at every point: the same frames come out, the big one refused.
        for cut in 0..stream.len() {
            let mut s = Splitter::new(200);
            let mut buf = BytesMut::new();
            let (mut frames, mut refused) = (0, 0);
            for part in [&stream[..cut], &stream[cut..]] {
                buf.extend_from_slice(part);
                loop {
                    match s.step(&mut buf) {
                        Step::NeedMore | Step::Partial(_) => break,
                        Step::Refused(e) => {
                            assert!(matches!(e, FrameError::TooLarge { .. }));
                            refused += 1;
                        }
                        Step::Whole(Some(n)) => {
                            assert_eq!(n, small.len());
                            assert!(s.take(&mut buf).unwrap().is_some());
                            frames += 1;
                        }
                        Step::Whole(None) => panic!("bad magic at cut {cut}"),
                    }
                }
            }
            assert_eq!((frames, refused, buf.len()), (2, 1, 0), "cut {cut}");
        }
    }

    #[test]
    fn a_partial_frame_announces_its_size_and_bad_magic_is_reported() {
        let f = frame_bytes(100);
        let mut s = Splitter::new(1000);
        let mut buf = BytesMut::from(&f[..50]);
        assert!(matches!(s.step(&mut buf), Step::Partial(n) if n == f.len()));
        let mut bad = BytesMut::from(&b"XX0123456789"[..]);
        assert!(matches!(s.step(&mut bad), Step::Whole(None)));
        assert!(s.take(&mut bad).is_err());
    }
}
