#![no_main]
//! msgr2 frames and the client connection state machine on arbitrary bytes:
//! must return errors, never panic or allocate from unchecked lengths.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_rados::proto::cephx::{CephxClient, CryptoKey};
use weft_rados::proto::conn::{
    AuthMethod, ConnConfig, Connection, SessionIdentity, SessionResume, CON_MODE_CRC, CON_MODE_SECURE, FEATURES_PACIFIC,
};
use weft_rados::proto::frame::{self, FrameCodec};
use weft_rados::proto::msg::{self, Message};
use weft_rados::proto::types::{entity_type, EntityAddr, EntityName};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let Some((&sel, rest)) = data.split_first() else { return };
    if sel >= 0xc0 {
        session_frames(sel, rest);
        return;
    }
    match sel % 3 {
        0 => {
            // crc mode frame decoder, fed in two pieces
            let mut c = FrameCodec::new();
            let cut = rest.len() / 2;
            let mut buf = BytesMut::from(&rest[..cut]);
            for _ in 0..2 {
                while let Ok(Some((f, _))) = c.decode(&mut buf) {
                    if f.tag == frame::Tag::Message {
                        if let Ok((m, _)) = Message::from_segments(f.payload(), f.segment(1), f.segment(2), f.segment(3)) {
                            let _ = msg::decode_osd_op_reply(&m);
                            let _ = msg::decode_osd_map(&m);
                            let _ = msg::decode_watch_notify(&m);
                            let _ = msg::decode_mon_command_ack(&m);
                        }
                    }
                }
                buf.extend_from_slice(&rest[cut..]);
            }
        }
        1 => {
            // secure mode decoder with a fixed key
            let secret: Vec<u8> = (0u8..40).collect();
            let (rx, tx) = frame::secure_streams(&secret).unwrap();
            let mut c = FrameCodec::new();
            c.set_secure(rx, tx);
            let mut buf = BytesMut::from(rest);
            while let Ok(Some(_)) = c.decode(&mut buf) {}
        }
        _ => {
            // the whole client state machine after the server banner, set up
            // like the recorded sessions (same key, cookie, nonce, randomness)
            // so seeds from fuzz/seeds/rados_frame get past authentication
            let key = CryptoKey::from_base64(include_str!("../../crates/weft-rados/tests/data/session/mon_crc.key").trim()).unwrap();
            let cfg = ConnConfig {
                peer_type: entity_type::MON,
                peer_addr: EntityAddr::msgr2("127.0.0.1:3300".parse().unwrap()),
                features: FEATURES_PACIFIC,
                modes: vec![if sel & 4 == 0 { CON_MODE_CRC } else { CON_MODE_SECURE }],
                global_id: 0,
                client_cookie: 0x0123_4567_89ab_cdef,
                nonce: 0x1122_3344,
                global_seq: 1,
            };
            let mut conn = Connection::new(cfg, AuthMethod::Mon(Box::new(CephxClient::new(EntityName::client("admin"), key, 0x15))));
            let mut banner = frame::encode_banner(1, 0);
            banner.extend_from_slice(rest);
            let mut rng = || 0x1122_3344_5566_7788u64;
            let _ = conn.feed(&banner, &mut rng);
            while conn.poll_event().is_some() {}
        }
    }
});

/// The session phase (CLIENT_IDENT or SESSION_RECONNECT sent, no crypto to
/// get past): server frames built from the input as (tag, length, payload)
/// triples with valid crcs, so every session frame decoder and the
/// reconnect state machine see arbitrary payloads.
fn session_frames(sel: u8, rest: &[u8]) {
    let key = CryptoKey::from_base64("AQBUQJ9lAAAAABAAsrqjTv2ZSdXcMpmYQhaJzA==").unwrap();
    let cfg = ConnConfig {
        peer_type: entity_type::OSD,
        peer_addr: EntityAddr::msgr2("127.0.0.1:6800".parse().unwrap()),
        features: FEATURES_PACIFIC,
        modes: vec![CON_MODE_CRC],
        global_id: 4100,
        client_cookie: 7,
        nonce: 9,
        global_seq: 3,
    };
    let resume = (sel & 1 == 1).then(|| {
        let mut m = Message::new(msg::msg_type::OSD_OP, 8, 3, vec![1, 2, 3]);
        let unacked = (1..=3u64)
            .map(|seq| {
                m.seq = seq;
                m.clone()
            })
            .collect();
        SessionResume {
            identity: SessionIdentity {
                client_cookie: 7,
                server_cookie: 11,
                global_seq: 2,
                connect_seq: 1,
                in_seq: 5,
                out_seq: 3,
                peer_features: FEATURES_PACIFIC,
                lossy: sel & 2 == 0,
            },
            unacked,
        }
    });
    let auth = AuthMethod::Mon(Box::new(CephxClient::new(EntityName::client("admin"), key, 0x15)));
    let mut conn = Connection::after_auth(cfg, auth, resume);
    let mut codec = FrameCodec::new();
    let mut wire = Vec::new();
    let mut r = rest;
    while let [tag, len, tail @ ..] = r {
        let (p, more) = tail.split_at((*len as usize).min(tail.len()));
        if let Some(t) = frame::Tag::from_u8(*tag % 21) {
            wire.extend(codec.encode(t, &[p]));
        }
        r = more;
    }
    let mut rng = || 0x5eedu64;
    let cut = wire.len() / 2;
    if conn.feed(&wire[..cut], &mut rng).is_ok() {
        let _ = conn.feed(&wire[cut..], &mut rng);
    }
    while conn.poll_event().is_some() {}
    if conn.is_ready() {
        conn.send_message(&Message::new(msg::msg_type::OSD_OP, 8, 3, vec![0; 4]));
    }
    let _ = conn.take_output_parts();
    let _ = conn.take_resume();
}
