#![no_main]
//! The DER reader that names a client certificate's holder (weft-net
//! x509.rs) must never panic and never keep more than its bounded number
//! of names, whatever the bytes.
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    if let Ok(names) = weft_net::cert_names(data) {
        assert!(names.alt_names.len() <= weft_net::CERT_NAMES_MAX);
        let _ = names.identity();
    }
});
