//! Decode every message captured between real p4p (pvxs) and pvapy
//! (pvAccessCPP) peers, re-encode it, decode the typed operation data with
//! the types negotiated earlier on the same connection, and feed each
//! message to the framer split at every byte boundary.
//!
//! Captures live in the shared tree (../shared/captures/pva beside the repo),
//! or wherever WEFT_PVA_CAPTURES points.

#![allow(clippy::unwrap_used, clippy::too_many_arguments)]

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::BytesMut;
use weft_pva::proto::header::{Frame, FrameDecoder, HEADER_LEN, Header, cmd, split_datagram};
use weft_pva::proto::msg::{
    Message, OpRequest, OpResponse, ReqBody, RespBody, decode_data, decode_message, encode_data, encode_message,
};
use weft_pva::proto::value::BitSet;
use weft_pva::proto::{FieldDesc, Limits, Reader, SendCache, TypeCache, Value, Writer};

fn captures_dir() -> PathBuf {
    if let Ok(p) = std::env::var("WEFT_PVA_CAPTURES") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("WEFT_SHARED") {
        return PathBuf::from(p).join("captures/pva");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/captures/pva")
}

struct Capture {
    set: String,
    name: String,
    conn: String,
    dir: String,
    bytes: Vec<u8>,
}

fn load() -> Vec<Capture> {
    let root = captures_dir();
    let index = std::fs::read_to_string(root.join("INDEX.txt"))
        .unwrap_or_else(|e| panic!("captures missing at {} ({e}); set WEFT_PVA_CAPTURES", root.display()));
    let mut out = Vec::new();
    for line in index.lines() {
        let Some((file, _)) = line.split_once(": ") else { continue };
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut lines = text.lines();
        let desc = lines.next().unwrap();
        let words: Vec<&str> = desc.split_whitespace().collect();
        // "# set t=... src->dst dir CMD ..."
        let addrs = words[3];
        let dir = words[4].to_string();
        let (a, b) = addrs.split_once("->").unwrap();
        let conn = if a < b { format!("{a}|{b}") } else { format!("{b}|{a}") };
        let hex: String = lines.collect::<Vec<_>>().join("");
        let bytes = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        let (set, name) = file.split_once('/').unwrap();
        out.push(Capture { set: set.into(), name: name.into(), conn, dir, bytes });
    }
    out
}

/// Per TCP connection: framers, receive caches and send caches per direction, op types.
#[derive(Default)]
struct Conn {
    framer: [FrameDecoder; 2],
    rx: [TypeCache; 2],
    tx: [Option<SendCache>; 2],
    /// (command, ioid) -> types from the INIT reply, and the running value per type.
    ops: HashMap<(u8, u32), Vec<(FieldDesc, Value)>>,
}

#[derive(Default)]
struct Stats {
    messages: usize,
    reencoded_same: usize,
    not_canonical: Vec<String>,
    data_decoded: usize,
    data_same: usize,
}

fn check_data(conn: &mut Conn, d: usize, key: (u8, u32), which: usize, data: &[u8], order: weft_pva::proto::ByteOrder, monitor: bool, name: &str, st: &mut Stats) {
    if data.is_empty() {
        return;
    }
    let Some(types) = conn.ops.get_mut(&key) else { panic!("{name}: data for unknown op {key:?}") };
    let (desc, value) = types.get_mut(which).unwrap_or_else(|| panic!("{name}: no type {which}"));
    let mut r = Reader::new(data, order);
    let bits = decode_data(&mut r, desc, value, &mut conn.rx[d]).unwrap_or_else(|e| panic!("{name}: data: {e}"));
    let overrun = if monitor { Some(BitSet::decode(&mut r).unwrap_or_else(|e| panic!("{name}: overrun: {e}"))) } else { None };
    assert!(r.is_empty(), "{name}: {} trailing data bytes", r.remaining());
    st.data_decoded += 1;
    let mut w = Writer::new(order);
    encode_data(&mut w, desc, value, &bits, &mut SendCache::disabled()).unwrap();
    if let Some(o) = overrun {
        o.encode(&mut w);
    }
    assert_eq!(w.buf, data, "{name}: typed data re-encodes differently");
    st.data_same += 1;
}

fn process(conn: &mut Conn, d: usize, h: &Header, payload: &[u8], raw: Option<&[u8]>, name: &str, st: &mut Stats) {
    let before = conn.rx[d].len();
    let m = decode_message(h, payload, &mut conn.rx[d], Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!matches!(m, Message::Unknown { .. }), "{name}: unknown command");
    st.messages += 1;
    // A sender that defined cache entries uses the type cache from then on.
    if conn.rx[d].len() > before && conn.tx[d].is_none() {
        conn.tx[d] = Some(SendCache::enabled());
    }
    let mut disabled = SendCache::disabled();
    let cache = conn.tx[d].as_mut().unwrap_or(&mut disabled);
    let enc = encode_message(&m, h.order(), h.from_server(), cache).unwrap();
    if let Some(raw) = raw {
        if enc == raw {
            st.reencoded_same += 1;
        } else {
            st.not_canonical.push(name.to_string());
        }
    } else if enc.get(HEADER_LEN..) == Some(payload) {
        st.reencoded_same += 1;
    } else {
        st.not_canonical.push(format!("{name} (segmented)"));
    }
    let order = h.order();
    match &m {
        Message::Response(OpResponse { command, ioid, subcmd, status, body }) => {
            let key = (*command, *ioid);
            match body {
                RespBody::Init(types) => {
                    conn.ops.insert(key, types.iter().map(|t| (t.clone(), Value::default_for(t))).collect());
                }
                RespBody::Data(data) => {
                    let ok = status.as_ref().is_none_or(|s| s.is_success());
                    if !ok || data.is_empty() {
                        return;
                    }
                    match *command {
                        cmd::GET => check_data(conn, d, key, 0, data, order, false, name, st),
                        cmd::PUT => check_data(conn, d, key, 0, data, order, false, name, st),
                        cmd::PUT_GET => {
                            let which = if subcmd & 0x80 != 0 { 0 } else { 1 };
                            check_data(conn, d, key, which, data, order, false, name, st)
                        }
                        cmd::MONITOR => check_data(conn, d, key, 0, data, order, true, name, st),
                        _ => {}
                    }
                }
                RespBody::Rpc(_) => {}
            }
        }
        Message::Request(OpRequest { command, ioid, body: ReqBody::Data(data), .. }) => {
            let key = (*command, *ioid);
            if matches!(*command, cmd::PUT | cmd::PUT_GET) && !data.is_empty() {
                check_data(conn, d, key, 0, data, order, false, name, st);
            }
        }
        _ => {}
    }
}

#[test]
fn every_captured_message_decodes_and_reencodes() {
    let caps = load();
    assert_eq!(caps.len(), 575, "INDEX.txt lists 575 messages");
    let mut conns: HashMap<(String, String), Conn> = HashMap::new();
    let mut st = Stats::default();
    let mut udp = 0;
    for c in &caps {
        let name = format!("{}/{}", c.set, c.name);
        if c.dir.starts_with("udp") {
            // Each datagram is self-contained (per-message byte order, no cache).
            for (h, p) in split_datagram(&c.bytes).unwrap_or_else(|e| panic!("{name}: {e}")) {
                let m = decode_message(&h, p, &mut TypeCache::new(), Limits::default())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let enc = encode_message(&m, h.order(), h.from_server(), &mut SendCache::disabled()).unwrap();
                assert_eq!(enc, c.bytes, "{name}: UDP message re-encodes differently");
                udp += 1;
            }
            continue;
        }
        let d = if c.dir == "c2s" { 0 } else { 1 };
        let conn = conns.entry((c.set.clone(), c.conn.clone())).or_default();
        let mut buf = BytesMut::from(&c.bytes[..]);
        let seg = c.bytes.get(2).is_some_and(|f| f & 0x30 != 0);
        while let Some(f) = conn.framer[d].decode(&mut buf).unwrap_or_else(|e| panic!("{name}: {e}")) {
            match f {
                Frame::Control(h) => {
                    st.messages += 1;
                    let enc = weft_pva::proto::header::control(h.command, h.size, h.order(), h.from_server());
                    assert_eq!(enc, c.bytes, "{name}: control re-encodes differently");
                }
                Frame::App(h, p) => process(conn, d, &h, &p, if seg { None } else { Some(&c.bytes) }, &name, &mut st),
            }
        }
        assert!(buf.is_empty(), "{name}: bytes left in framer");
    }
    eprintln!(
        "tcp messages {} (re-encoded identically {}), udp {udp}, typed data decoded {} (identical {}), not canonical: {:?}",
        st.messages, st.reencoded_same, st.data_decoded, st.data_same, st.not_canonical
    );
    assert!(st.not_canonical.is_empty(), "not canonical: {:?}", st.not_canonical);
    assert!(st.data_decoded > 50);
}

#[test]
fn framer_handles_every_split_point() {
    for c in load().iter().filter(|c| !c.dir.starts_with("udp")) {
        let seg = c.bytes.get(2).is_some_and(|f| f & 0x30 != 0);
        if seg {
            continue; // covered by the whole-stream test above
        }
        let mut whole = BytesMut::from(&c.bytes[..]);
        let expect = FrameDecoder::new().decode(&mut whole).unwrap().unwrap();
        let n = c.bytes.len();
        // Every boundary for normal messages; a sample for the 160 kB ones.
        let step = if n > 4096 { 997 } else { 1 };
        let mut k = 0;
        while k < n {
            let mut fd = FrameDecoder::new();
            let mut buf = BytesMut::from(&c.bytes[..k]);
            assert!(fd.decode(&mut buf).unwrap().is_none(), "{}/{} split {k}", c.set, c.name);
            buf.extend_from_slice(&c.bytes[k..]);
            assert_eq!(fd.decode(&mut buf).unwrap().as_ref(), Some(&expect), "{}/{} split {k}", c.set, c.name);
            k += step;
        }
    }
}

#[test]
fn segmented_capture_split_everywhere() {
    // The pvAccessCPP segmented GET reply (3 segments) as one stream, split at sampled boundaries.
    let caps = load();
    let segs: Vec<&Capture> = caps
        .iter()
        .filter(|c| c.set == "large_array_segmentation" && c.dir == "s2c" && c.bytes.get(2).is_some_and(|f| f & 0x30 != 0))
        .take(3)
        .collect();
    assert_eq!(segs.len(), 3);
    let stream: Vec<u8> = segs.iter().flat_map(|c| c.bytes.clone()).collect();
    let mut expect_buf = BytesMut::from(&stream[..]);
    let expect = FrameDecoder::new().decode(&mut expect_buf).unwrap().unwrap();
    let Frame::App(h, p) = &expect else { panic!() };
    assert_eq!(h.command, cmd::GET);
    assert_eq!(p.len(), 13 + 160000);
    for k in (0..stream.len()).step_by(1231).chain([1, 7, 8, 9, 20, 21, 22]) {
        let mut fd = FrameDecoder::new();
        let mut buf = BytesMut::from(&stream[..k]);
        assert!(fd.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&stream[k..]);
        assert_eq!(fd.decode(&mut buf).unwrap().as_ref(), Some(&expect));
    }
}

/// A deterministic poor man's fuzzer: mutate captured messages (bit flips,
/// byte overwrites, truncation, size-field corruption) and decode them as
/// stream, datagram and pvData. Nothing may panic.
#[test]
fn mutated_captures_never_panic() {
    use weft_pva::proto::types::decode_desc;
    use weft_pva::proto::value::decode_value;
    let caps = load();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let limits = Limits { message_len_max: 1 << 20, ..Limits::default() };
    let mut decoded = 0usize;
    for c in caps.iter().filter(|c| c.bytes.len() < 4096) {
        for _ in 0..40 {
            let mut b = c.bytes.clone();
            match next() % 4 {
                0 => {
                    let i = (next() as usize) % b.len();
                    b[i] ^= 1 << (next() % 8);
                }
                1 => {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
                2 => b.truncate((next() as usize) % b.len()),
                _ => {
                    if b.len() > 9 {
                        let i = 8 + (next() as usize) % (b.len() - 8);
                        b[i] = [0xfe, 0xff, 0xfd, 0x80][(next() % 4) as usize];
                    }
                }
            }
            let mut fd = FrameDecoder::with_limits(limits);
            let mut buf = BytesMut::from(&b[..]);
            let mut cache = TypeCache::new();
            while let Ok(Some(f)) = fd.decode(&mut buf) {
                if let Frame::App(h, p) = f {
                    if decode_message(&h, &p, &mut cache, limits).is_ok() {
                        decoded += 1;
                    }
                }
            }
            let _ = split_datagram(&b);
            let payload = b.get(8..).unwrap_or(&[]);
            let mut r = Reader::new(payload, weft_pva::proto::ByteOrder::Little);
            if let Ok(d) = decode_desc(&mut r, &mut TypeCache::new()) {
                let _ = decode_value(&mut r, &d, &mut TypeCache::new());
            }
        }
    }
    assert!(decoded > 0);
}
