//! Replays real monitor sessions (recorded by examples/capture_session.rs
//! against Ceph 16.2.15, crc and secure mode) through the sans-IO
//! connection. With the client's random inputs fixed, our bytes equal the
//! recorded ones, so the server's AUTH_SIGNATURE and the AES-GCM stream
//! verify offline.

use weft_rados::proto::cephx::{Authorizer, CephxClient, CryptoKey};
use weft_rados::proto::conn::{AuthMethod, ConnConfig, Connection, Event, CON_MODE_CRC, CON_MODE_SECURE, FEATURES_PACIFIC};
use weft_rados::proto::monmap::MonMap;
use weft_rados::proto::msg::{self, msg_type};
use weft_rados::proto::osdmap::OsdMap;
use weft_rados::proto::types::{entity_type, EntityAddr, EntityName};

fn replay(mode: u32, rx: &[u8], tx: &[u8], key: &str, chunk: usize) -> (MonMap, OsdMap, CephxClient) {
    let cfg = ConnConfig {
        peer_type: entity_type::MON,
        peer_addr: EntityAddr::msgr2("127.0.0.1:3300".parse().unwrap()),
        features: FEATURES_PACIFIC,
        modes: vec![mode],
        global_id: 0,
        client_cookie: 0x0123_4567_89ab_cdef,
        nonce: 0x1122_3344,
        global_seq: 1,
    };
    let key = CryptoKey::from_base64(key.trim()).unwrap();
    let cephx = CephxClient::new(EntityName::client("admin"), key, entity_type::MON | entity_type::OSD | entity_type::MGR);
    let mut conn = Connection::new(cfg, AuthMethod::Mon(Box::new(cephx)));
    let mut rng = || 0x1122_3344_5566_7788u64;
    let mut out = conn.take_output();
    let (mut ready, mut monmap, mut osdmap) = (false, None, None);
    for piece in rx.chunks(chunk.max(1)) {
        conn.feed(piece, &mut rng).unwrap();
        if !ready {
            out.extend(conn.take_output());
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Ready { mode: m, global_id, .. } => {
                    assert_eq!(m, mode);
                    assert!(global_id > 0);
                    ready = true;
                    conn.send_message(&msg::mon_subscribe(&[("monmap", 0, 0), ("osdmap", 0, 0)], "capture"));
                }
                Event::Message(m) if m.ty == msg_type::MON_MAP => {
                    monmap = Some(MonMap::decode(&msg::decode_mon_map(&m).unwrap()).unwrap());
                }
                Event::Message(m) if m.ty == msg_type::OSD_MAP => {
                    let mm = msg::decode_osd_map(&m).unwrap();
                    let (_, full) = mm.maps.last().unwrap();
                    osdmap = Some(OsdMap::decode(full).unwrap());
                }
                _ => {}
            }
        }
    }
    assert!(ready, "handshake did not complete");
    assert_eq!(out, tx, "our handshake bytes differ from the recorded ones");
    let cephx = conn.cephx().unwrap().clone();
    (monmap.expect("monmap"), osdmap.expect("osdmap"), cephx)
}

/// Replays the OSD session recorded right after the mon session: the
/// authorizer comes from the replayed mon session's OSD ticket.
fn replay_osd(mode: u32, cephx: &CephxClient, rx: &[u8], tx: &[u8], meta: &str, chunk: usize) {
    let mut it = meta.split_whitespace();
    let addr: std::net::SocketAddr = it.next().unwrap().parse().unwrap();
    let nonce: u32 = it.next().unwrap().parse().unwrap();
    let ticket = cephx.tickets.get(&entity_type::OSD).expect("osd ticket");
    let authz = Authorizer::build(cephx.global_id, ticket, 0x0a0b_0c0d_0e0f_1011);
    let cfg = ConnConfig {
        peer_type: entity_type::OSD,
        peer_addr: EntityAddr { nonce, ..EntityAddr::msgr2(addr) },
        features: FEATURES_PACIFIC,
        modes: vec![mode],
        global_id: cephx.global_id,
        client_cookie: 0x0fed_cba9_8765_4321,
        nonce: 0x5566_7788,
        global_seq: 2,
    };
    let mut conn = Connection::new(cfg, AuthMethod::Service(Box::new(authz)));
    let mut rng = || 0x1122_3344_5566_7788u64;
    let mut out = conn.take_output();
    let (mut ready, mut replies) = (false, Vec::new());
    for piece in rx.chunks(chunk.max(1)) {
        conn.feed(piece, &mut rng).unwrap();
        if !ready {
            out.extend(conn.take_output());
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Ready { mode: m, .. } => {
                    assert_eq!(m, mode);
                    ready = true;
                }
                Event::Message(m) if m.ty == msg_type::OSD_OPREPLY => replies.push(msg::decode_osd_op_reply(&m).unwrap()),
                _ => {}
            }
        }
    }
    assert!(ready);
    assert_eq!(out, tx, "our OSD handshake bytes differ from the recorded ones");
    assert_eq!(replies.len(), 2);
    assert_eq!((replies[0].tid, replies[0].result), (1, 0));
    assert_eq!(replies[1].tid, 2);
    assert_eq!(&replies[1].ops[0].outdata[..], b"replay bytes");
}

#[test]
fn crc_session_replays_byte_for_byte() {
    let rx = include_bytes!("data/session/mon_crc.rx.bin");
    let tx = include_bytes!("data/session/mon_crc.tx.bin");
    let key = include_str!("data/session/mon_crc.key");
    for chunk in [rx.len(), 1, 7, 100] {
        let (mm, om, cephx) = replay(CON_MODE_CRC, rx, tx, key, chunk);
        assert_eq!(mm.fsid, om.fsid);
        assert!(om.pool_by_name("test").is_some());
        replay_osd(
            CON_MODE_CRC,
            &cephx,
            include_bytes!("data/session/mon_crc.osd.rx.bin"),
            include_bytes!("data/session/mon_crc.osd.tx.bin"),
            include_str!("data/session/mon_crc.osd.meta"),
            chunk,
        );
    }
}

#[test]
fn secure_session_replays_byte_for_byte() {
    let rx = include_bytes!("data/session/mon_secure.rx.bin");
    let tx = include_bytes!("data/session/mon_secure.tx.bin");
    let key = include_str!("data/session/mon_secure.key");
    for chunk in [rx.len(), 1, 13] {
        let (mm, om, cephx) = replay(CON_MODE_SECURE, rx, tx, key, chunk);
        assert_eq!(mm.fsid, om.fsid);
        assert!(om.pool_by_name("test").is_some());
        replay_osd(
            CON_MODE_SECURE,
            &cephx,
            include_bytes!("data/session/mon_secure.osd.rx.bin"),
            include_bytes!("data/session/mon_secure.osd.tx.bin"),
            include_str!("data/session/mon_secure.osd.meta"),
            chunk,
        );
    }
}

#[test]
fn tampered_sessions_fail_cleanly() {
    // flipping any received byte must give an error (or a stall), never a panic
    let rx = include_bytes!("data/session/mon_secure.rx.bin");
    let key = include_str!("data/session/mon_secure.key");
    for i in (0..rx.len()).step_by(37) {
        let mut bad = rx.to_vec();
        bad[i] ^= 0x20;
        let r = std::panic::catch_unwind(|| {
            let cfg = ConnConfig {
                peer_type: entity_type::MON,
                peer_addr: EntityAddr::msgr2("127.0.0.1:3300".parse().unwrap()),
                features: FEATURES_PACIFIC,
                modes: vec![CON_MODE_SECURE],
                global_id: 0,
                client_cookie: 0x0123_4567_89ab_cdef,
                nonce: 0x1122_3344,
                global_seq: 1,
            };
            let k = CryptoKey::from_base64(key.trim()).unwrap();
            let mut c = Connection::new(cfg, AuthMethod::Mon(Box::new(CephxClient::new(EntityName::client("admin"), k, 0x15))));
            let mut rng = || 0x1122_3344_5566_7788u64;
            let _ = c.feed(&bad, &mut rng);
        });
        assert!(r.is_ok(), "panic with byte {i} flipped");
    }
}
