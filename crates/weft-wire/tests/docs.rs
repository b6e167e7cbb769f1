//! docs/protocol.md must stay true: every hex example in it decodes, has the
//! kind its section names, and re-encodes to the same bytes.

use bytes::BytesMut;
use weft_wire::{encode, FrameDecoder, FrameKind};

#[test]
fn protocol_doc_examples_decode_and_reencode() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md")).unwrap();
    let mut section = String::new();
    let mut in_hex = false;
    let mut hex = String::new();
    let mut seen = vec![];
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            section = h.to_lowercase();
        } else if line.trim() == "```hex" {
            in_hex = true;
            hex.clear();
        } else if in_hex && line.trim() == "```" {
            in_hex = false;
            let bytes: Vec<u8> = hex.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
            let mut buf = BytesMut::from(&bytes[..]);
            let frame = FrameDecoder::new(1 << 20).decode(&mut buf).unwrap().expect("a whole frame");
            assert!(buf.is_empty(), "{section}: trailing bytes");
            let want = match section.split(':').next().unwrap().trim() {
                "request" => FrameKind::Request,
                "response" => FrameKind::Response,
                "error" => FrameKind::Error,
                "event" => FrameKind::Event,
                "control" => FrameKind::Control,
                other => panic!("unexpected section {other}"),
            };
            assert_eq!(frame.kind, want, "{section}");
            // Bodies are valid in their format.
            let _: serde_json::Value = frame.decode_body().unwrap();
            let mut out = BytesMut::new();
            encode(&frame, &mut out).unwrap();
            assert_eq!(&out[..], &bytes[..], "{section}: re-encoding differs");
            seen.push(want);
        } else if in_hex {
            hex.push_str(line);
            hex.push(' ');
        }
    }
    for k in [FrameKind::Request, FrameKind::Response, FrameKind::Error, FrameKind::Event, FrameKind::Control] {
        assert!(seen.contains(&k), "no example for {k:?}");
    }
}
