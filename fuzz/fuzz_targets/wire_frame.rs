#![no_main]
//! The native frame decoder must never panic or allocate past its maximum,
//! whatever the bytes, however they are split.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
#[path = "common/halves.rs"]
mod halves;
use weft_wire::{decode_datagram, encode, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let _ = decode_datagram(data, 4096);
    // Feed the stream decoder in two parts, split where the first byte says.
    let mut dec = FrameDecoder::new(4096);
    let mut buf = BytesMut::new();
    for part in halves::halves(data) {
        buf.extend_from_slice(part);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    // Whatever decodes re-encodes to a frame that decodes the same.
                    let mut out = BytesMut::new();
                    encode(&frame, &mut out).expect("decoded frames re-encode");
                    assert_eq!(decode_datagram(&out, 4096).expect("round trip"), frame);
                }
                Ok(None) => break,
                Err(e) if e.is_recoverable() => continue,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= 64 * 1024, "buffer grew past the frame limit");
    }
});
