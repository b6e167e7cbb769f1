#![no_main]
//! Compressed native bodies (flags 0x08, docs/protocol.md "Compression"):
//! whatever the bytes, decompression is a typed error or a body within the
//! bound, never a panic or an allocation the declared size could blow up
//! (a bomb is `TooLarge` before inflating). What decompresses compresses
//! and decompresses back to the same frame.
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_wire::{Flags, Frame, FrameError, FrameKind, MessageId};

/// Under the guard's fixed allowance, so trusting a declared size over it
/// would trip the guard.
const MAX_OUT: usize = 256 << 10;

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let Some((&sel, rest)) = data.split_first() else { return };
    let mut flags = Flags::from_wire(Flags::COMPRESSED | (sel & (Flags::JSON | Flags::TRACE))).expect("known bits");
    if sel & 0x80 != 0 {
        // A plain body: compress, then decompress back.
        flags = flags.with_compressed(false);
        let f = Frame { kind: FrameKind::Request, flags, id: MessageId::nil(), route: "r".into(), body: Bytes::copy_from_slice(rest) };
        let mut c = f.clone();
        let saved = c.compress_body(1);
        if saved == 0 {
            assert_eq!(c, f);
            return;
        }
        match c.decompress_body(true, usize::MAX) {
            Ok(_) => assert_eq!(c, f),
            // A trace extension that does not fit the body is refused either way.
            Err(FrameError::BadCompression { .. }) => assert!(f.flags.has_trace_context()),
            Err(e) => panic!("{e}"),
        }
        return;
    }
    let mut f = Frame { kind: FrameKind::Request, flags, id: MessageId::nil(), route: "r".into(), body: Bytes::copy_from_slice(rest) };
    match f.decompress_body(true, MAX_OUT) {
        Ok(_) => {
            assert!(!f.flags.is_compressed());
            assert!(f.wire_len() <= MAX_OUT);
            let plain = f.clone();
            if f.compress_body(1) > 0 {
                f.decompress_body(true, MAX_OUT).expect("what decompressed round-trips");
                assert_eq!(f, plain);
            }
        }
        Err(FrameError::TooLarge { .. } | FrameError::BadCompression { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
});
