#![no_main]
//! The AQL parser (weft-api aql) must never panic, whatever the text, and
//! whatever it accepts must print and parse back to the same tree.
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(query) = weft_api::aql::parse(text) {
        let printed = weft_api::aql::print(&query);
        assert_eq!(weft_api::aql::parse(&printed).as_ref(), Ok(&query), "{printed}");
    }
    let _ = weft_api::aql::parse_predicate(text);
});
