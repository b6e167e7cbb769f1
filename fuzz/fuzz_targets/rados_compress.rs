#![no_main]
//! msgr2 compressed segments (snappy, lz4, zstd in Ceph's formats) on
//! arbitrary bytes, alone and inside frames with valid crcs: a typed error
//! or a bounded result, never a panic or an allocation the declared sizes
//! could blow up (decompression bombs are refused before allocating).
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_rados::proto::compress::{self, Algorithm, CompressError, CompressionStats, Negotiated};
use weft_rados::proto::frame::{FrameCodec, FrameError, Tag, FRAME_EARLY_DATA_COMPRESSED};

/// Output bound: under the guard's fixed allowance, so a declared size the
/// decoder trusted would trip the guard.
const MAX_OUT: usize = 256 << 10;

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let Some((&sel, rest)) = data.split_first() else { return };
    let alg = match sel % 3 {
        0 => Algorithm::Snappy,
        1 => Algorithm::Lz4,
        _ => Algorithm::Zstd,
    };
    if sel & 0x80 == 0 {
        // a segment alone
        match compress::decompress(alg, rest, MAX_OUT) {
            Ok(out) => {
                assert!(out.len() <= MAX_OUT);
                // what we decoded must survive our own round trip
                if let Ok(c) = compress::compress(alg, &out) {
                    assert_eq!(compress::decompress(alg, &c, MAX_OUT).as_deref(), Ok(&out[..]));
                }
            }
            Err(CompressError::TooLarge { max, .. }) => assert_eq!(max, MAX_OUT),
            Err(_) => {}
        }
        return;
    }
    // the input as a compressed MESSAGE frame (header and data segment)
    // with valid crcs, decoded by a codec that negotiated `alg`
    let cut = rest.first().map_or(0, |&b| b as usize).min(rest.len());
    let (hdr, body) = rest.split_at(cut);
    let wire = FrameCodec::new().encode_raw(Tag::Message, &[hdr, b"", b"", body], FRAME_EARLY_DATA_COMPRESSED);
    let mut dec = FrameCodec::new();
    dec.limits.max = [MAX_OUT; 4];
    dec.set_compression(Negotiated { alg, min_size: 0 }, Arc::new(CompressionStats::default()));
    match dec.decode(&mut BytesMut::from(&wire[..])) {
        Ok(Some((f, _))) => assert!(f.segments.iter().all(|s| s.len() <= MAX_OUT)),
        Ok(None) => {}
        Err(FrameError::Decompress { .. } | FrameError::SegmentCount(_) | FrameError::TooLong { .. }) => {}
        Err(e) => panic!("unexpected error for a well-framed input: {e}"),
    }
});
