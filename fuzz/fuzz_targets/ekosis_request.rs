#![no_main]
//! The ekosis line decoder and request parser must never panic, whatever the
//! bytes and however they are split; every answer they lead to is one valid
//! JSON line.
#![allow(clippy::unwrap_used)]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
#[path = "common/halves.rs"]
mod halves;
use weft_ekosis::proto::{encode_error, encode_response, parse_request, Line, LineDecoder};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let mut dec = LineDecoder::new(4096);
    let mut buf = BytesMut::new();
    for part in halves::halves(data) {
        buf.extend_from_slice(part);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Line::Message(line))) => {
                    let mut out = vec![];
                    match parse_request(&line) {
                        Ok(req) => {
                            let data = serde_json::to_vec(&req.data).expect("a parsed value re-encodes");
                            encode_response(Some(&req.span_key), 0, &data, &mut out);
                        }
                        Err(rej) => encode_error(rej.span_key.as_ref(), rej.status, &rej.message, &mut out),
                    }
                    assert_eq!(out.last(), Some(&b'\n'));
                    let v: serde_json::Value = serde_json::from_slice(&out).expect("answers are JSON");
                    assert!(v.get("status").is_some());
                }
                Ok(Some(Line::Heartbeat(_))) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= 4096 + data.len());
    }
});
