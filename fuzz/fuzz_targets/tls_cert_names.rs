#![no_main]
//! The DER reader that names a client certificate's holder (weft-net
//! x509.rs) must never panic and never keep more than its bounded number
//! of names, whatever the bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(names) = weft_net::cert_names(data) {
        assert!(names.alt_names.len() <= weft_net::CERT_NAMES_MAX);
        let _ = names.identity();
    }
});
