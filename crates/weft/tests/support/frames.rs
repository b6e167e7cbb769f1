//! Raw native-protocol frames for tests that talk to `weft serve` below the
//! client: a hello, and every frame the server sends until it closes.

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use weft_wire::{BodyFormat, Frame, FrameDecoder, FrameKind, Hello, MessageId, CONTROL_HELLO};

pub fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    weft_wire::encode(frame, &mut out).unwrap();
    out.to_vec()
}

/// An encoded hello frame from client `client_id`.
pub fn hello(client_id: &str) -> Vec<u8> {
    let h = Hello { protocol_version: weft_wire::PROTOCOL_VERSION, client_id: client_id.into(), client_name: String::new() };
    encoded(&Frame::with_body(FrameKind::Control, MessageId::new_v4(), CONTROL_HELLO, BodyFormat::MsgPack, &h).unwrap())
}

/// Every frame the server sends until it closes the connection, bounded by
/// a generous deadline so a server that never closes fails the test. The
/// caller sets a short read timeout on the socket first (200 ms), so the
/// deadline is checked between reads.
pub fn frames_until_close(s: &mut impl Read) -> Vec<Frame> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "the server did not close the connection");
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break, // reset: closed too
        }
    }
    let mut dec = FrameDecoder::new(1 << 20);
    let mut frames = vec![];
    while let Some(f) = dec.decode(&mut buf).unwrap() {
        frames.push(f);
    }
    frames
}
