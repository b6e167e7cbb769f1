#![no_main]
//! msgr2 frames and the client connection state machine on arbitrary bytes:
//! must return errors, never panic or allocate from unchecked lengths.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use weft_rados::proto::cephx::{CephxClient, CryptoKey};
use weft_rados::proto::conn::{AuthMethod, ConnConfig, Connection, CON_MODE_CRC, CON_MODE_SECURE, FEATURES_PACIFIC};
use weft_rados::proto::frame::{self, FrameCodec};
use weft_rados::proto::msg::{self, Message};
use weft_rados::proto::types::{entity_type, EntityAddr, EntityName};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
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
