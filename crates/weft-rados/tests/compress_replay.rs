//! Compressed msgr2 frames recorded from a real Ceph 18.2.7 OSD
//! (examples/capture_compressed.rs, `ms_osd_compress_mode = force`, a
//! session authenticated as osd.0 in crc mode reading a 240000-byte object
//! of lines `line 000000\n` .. `line 019999\n`): every byte the OSD sent
//! after SERVER_IDENT, per algorithm. Decoded whole and split at odd
//! chunk sizes by our frame codec with that algorithm negotiated, the
//! MOSDOpReply's data is the object, byte for byte. Runs always (no Ceph).

use bytes::BytesMut;
use std::sync::Arc;
use weft_rados::proto::compress::{Algorithm, CompressionStats, Negotiated};
use weft_rados::proto::frame::{FrameCodec, FrameError, Tag, FRAME_EARLY_DATA_COMPRESSED};
use weft_rados::proto::msg::{self, msg_type, Message};

fn object() -> Vec<u8> {
    (0..20000).flat_map(|i| format!("line {i:06}\n").into_bytes()).collect()
}

fn capture(alg: Algorithm) -> Vec<u8> {
    let path = format!("{}/tests/data/compressed/reef-read-{}.bin", env!("CARGO_MANIFEST_DIR"), alg.name());
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Decodes the capture fed in `chunk`-byte pieces: (messages, frames that
/// came compressed, stats).
fn decode(alg: Algorithm, wire: &[u8], chunk: usize) -> (Vec<Message>, usize, Arc<CompressionStats>) {
    let stats = Arc::new(CompressionStats::default());
    let mut codec = FrameCodec::new();
    codec.set_compression(Negotiated { alg, min_size: 1024 }, stats.clone());
    let mut buf = BytesMut::new();
    let (mut msgs, mut compressed) = (Vec::new(), 0);
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some((f, raw)) = codec.decode(&mut buf).unwrap() {
            if raw[26] & FRAME_EARLY_DATA_COMPRESSED != 0 {
                compressed += 1;
            }
            if f.tag == Tag::Message {
                let (m, _) = Message::from_segments(f.payload(), f.segment(1), f.segment(2), f.segment(3)).unwrap();
                msgs.push(m);
            }
        }
    }
    assert!(buf.is_empty(), "{alg:?}: {} bytes left over", buf.len());
    (msgs, compressed, stats)
}

#[test]
fn reef_compressed_replies_decode_to_the_object() {
    let want = object();
    assert_eq!(want.len(), 240_000);
    for alg in algorithms() {
        let wire = capture(alg);
        for chunk in [wire.len(), 1, 7, 4096] {
            let (msgs, compressed, stats) = decode(alg, &wire, chunk);
            let reply = msgs.iter().find(|m| m.ty == msg_type::OSD_OPREPLY).expect("an op reply");
            let r = msg::decode_osd_op_reply(reply).unwrap();
            assert_eq!((r.tid, r.result), (1, 0), "{alg:?}");
            assert!(reply.data == want, "{alg:?}: reply data differs from the object");
            assert!(compressed >= 1, "{alg:?}: nothing came compressed");
            let s = stats.snapshot();
            assert_eq!(s.rx_frames as usize, compressed);
            assert!(s.rx_raw_bytes >= 240_000 && s.rx_wire_bytes * 2 < s.rx_raw_bytes, "{alg:?}: {s:?}");
            if chunk == wire.len() {
                eprintln!("{alg:?}: {} bytes on the wire, {compressed} compressed frames, {s:?}", wire.len());
            }
        }
    }
}

#[test]
fn reef_frames_need_the_negotiated_algorithm() {
    // without compression negotiated: a typed error at the first
    // compressed frame; with another algorithm: a typed decompress error
    for alg in algorithms() {
        let wire = capture(alg);
        let mut plain = FrameCodec::new();
        let mut buf = BytesMut::from(&wire[..]);
        let err = loop {
            match plain.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{alg:?}: decoded without compression"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, FrameError::UnexpectedCompression, "{alg:?}");
        let other = if alg == Algorithm::Snappy { Algorithm::Lz4 } else { Algorithm::Snappy };
        let mut wrong = FrameCodec::new();
        wrong.set_compression(Negotiated { alg: other, min_size: 1024 }, Arc::default());
        let mut buf = BytesMut::from(&wire[..]);
        let err = loop {
            match wrong.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{alg:?} read as {other:?}"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, FrameError::Decompress { .. }), "{alg:?} as {other:?}: {err:?}");
    }
}

/// zstd only when built with it (the default `zstd` feature).
fn algorithms() -> Vec<Algorithm> {
    let mut v = vec![Algorithm::Snappy, Algorithm::Lz4];
    if cfg!(feature = "zstd") {
        v.push(Algorithm::Zstd);
    }
    v
}
