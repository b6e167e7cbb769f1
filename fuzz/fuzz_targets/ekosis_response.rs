#![no_main]
//! The ekosis client's response parser and span-key parsing must never panic;
//! a parsed span key renders and parses back to itself.
#![allow(clippy::unwrap_used)]
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_ekosis::proto::{parse_response, SpanKey};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    if let Ok(r) = parse_response(data) {
        if let Some(sk) = r.span_key {
            assert_eq!(sk.to_string().parse::<SpanKey>().expect("round trip"), sk);
            assert_eq!(SpanKey::from_json(&sk.to_json()).expect("json round trip"), sk);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<SpanKey>();
    }
});
