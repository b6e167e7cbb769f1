#![no_main]
//! The protobuf-to-query conversion (weft-api convert) must never panic on
//! any decodable weft.query.v1 message, and a statement it accepts must
//! print as AQL that parses back to the same tree.
use libfuzzer_sys::fuzz_target;
use prost::Message;
use weft_api::{aql, convert, pb};

#[path = "common/alloc_guard.rs"]
mod alloc_guard;

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    if let Ok(req) = pb::ExecuteRequest::decode(data) {
        if let Ok(q) = convert::request_query(&req) {
            let printed = aql::print(&q);
            assert_eq!(aql::parse(&printed).as_ref().ok(), Some(&q), "{printed}");
        }
    }
    if let Ok(b) = pb::BatchStatement::decode(data) {
        let _ = convert::batch(&b, "statement");
    }
});
