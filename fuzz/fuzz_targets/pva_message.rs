#![no_main]
//! Feed arbitrary bytes to the pvAccess framer and message decoder, as a
//! TCP stream (with segment reassembly) and as a UDP datagram. Any input
//! must yield frames or a typed error, never a panic or a huge allocation.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_pva::proto::header::{Frame, FrameDecoder, split_datagram};
use weft_pva::proto::msg::decode_message;
use weft_pva::proto::{Limits, TypeCache};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let limits = Limits { message_len_max: 1 << 20, ..Limits::default() };
    let mut fd = FrameDecoder::with_limits(limits);
    let mut buf = BytesMut::from(data);
    let mut cache = TypeCache::new();
    while let Ok(Some(f)) = fd.decode(&mut buf) {
        if let Frame::App(h, p) = f {
            let _ = decode_message(&h, &p, &mut cache, limits);
        }
    }
    if let Ok(msgs) = split_datagram(data) {
        for (h, p) in msgs {
            let _ = decode_message(&h, p, &mut TypeCache::new(), limits);
        }
    }
});
