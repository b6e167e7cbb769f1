#![no_main]
//! The queue store's record decoder reads whatever a crash left at the
//! tail of its file: any bytes give a record, a torn tail or the end, never
//! a panic or an allocation sized by the length field alone; a record
//! that decodes re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_queue::store::{decode_record, encode_record, Decoded};

fn check(data: &[u8]) {
    let mut rest = data;
    while let Decoded::Record(record, len) = decode_record(rest) {
        assert!(len > 0 && len <= rest.len());
        let mut again = Vec::new();
        encode_record(&record, &mut again);
        assert_eq!(again.as_slice(), &rest[..len], "re-encoding gives the same bytes");
        rest = &rest[len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    check(data);
    // The same bytes as one record with a matching length and CRC, so the
    // payload parser itself is reached.
    if data.len() >= 8 {
        let mut fixed = data.to_vec();
        let len = (fixed.len() - 8) as u32;
        fixed[0..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&fixed[8..]);
        fixed[4..8].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});
