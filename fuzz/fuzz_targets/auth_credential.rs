#![no_main]
//! Token and API-key parsing (weft-auth cred.rs) is a decoder over
//! untrusted strings (a hello field, an Authorization header): it must never
//! panic, never allocate for its input, and anything it accepts must be the
//! canonical shape (prefix, 16 hex id, 43 base64url secret). The route
//! table's body-name reader takes the same bytes as a request body.
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = weft_auth::parse_credential(s) {
            assert_eq!(s.len(), weft_auth::cred::CREDENTIAL_LEN);
            assert_eq!(c.id.len(), weft_auth::cred::ID_HEX_LEN);
            assert_eq!(c.secret.len(), weft_auth::cred::SECRET_B64_LEN);
        }
        if let Ok(c) = weft_auth::parse_authorization(s) {
            assert!(s.contains(c.full));
        }
    }
    for json in [false, true] {
        for from in [
            weft_auth::routes::NameFrom::Field(weft_auth::routes::Field::Topic),
            weft_auth::routes::NameFrom::Field(weft_auth::routes::Field::Name),
            weft_auth::routes::NameFrom::FetchTopic,
        ] {
            let _ = weft_auth::routes::body_name(data, json, from);
        }
    }
});
