#![no_main]
//! The hand decoder of `log.produce` bodies (weft-broker produce_body.rs,
//! weft_wire::fastbody): whatever the bytes, it declines or decodes to
//! exactly what serde decodes them to (the server then uses serde for what
//! it declines), and never panics or allocates for a count it was sent.
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_broker::dto::ProduceIn;
use weft_wire::{BodyFormat, FastBody};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let body = Bytes::copy_from_slice(data);
    if let Some(fast) = ProduceIn::decode_msgpack(&body) {
        let slow: ProduceIn = BodyFormat::MsgPack.decode_shared(&body).expect("serde decodes what the hand decoder took");
        assert_eq!(fast, slow);
    }
});
