#![no_main]
//! The record batch decoder must never panic, whatever the bytes. To get past
//! the CRC, each input is also tried with its CRC fixed up, so the record
//! decoder itself is exercised; whatever decodes must re-encode to a batch
//! that decodes to the same records.
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_log::batch::{self, Batch, BatchBuilder, BatchesDecoder};
use weft_log::Offset;

fn check(data: &[u8]) {
    for r in BatchesDecoder::new(Bytes::copy_from_slice(data), Offset(0), 10_000) {
        if r.is_err() {
            break;
        }
    }
    let mut buf = BytesMut::from(data);
    while let Ok(Some(b)) = Batch::decode(&mut buf) {
        let Ok(recs) = b.records().collect::<Result<Vec<_>, _>>() else { continue };
        let mut builder = BatchBuilder::new(b.header.base_offset);
        for r in &recs {
            builder
                .push(r.offset, r.timestamp_ms, r.key.as_deref(), r.value.as_deref(), &r.headers)
                .expect("decoded offsets increase");
        }
        let (_, bytes) = builder.finish().expect("at least one record");
        let again: Vec<_> = BatchesDecoder::new(bytes, Offset(0), usize::MAX).collect::<Result<_, _>>().expect("re-encoded batch decodes");
        assert_eq!(again, recs);
    }
}

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    check(data);
    if data.len() >= batch::HEADER_LEN {
        let mut fixed = data.to_vec();
        fixed[12] = batch::MAGIC;
        let len = (fixed.len() - batch::LENGTH_END) as u32;
        fixed[8..12].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&fixed[17..]);
        fixed[13..17].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});
