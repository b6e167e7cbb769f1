//! Records a real msgr2 session with a monitor for the replay tests:
//! `cargo run -p weft-rados --example capture_session -- CONF OUT_PREFIX crc|secure`
//! The client's random inputs are fixed (see `replay` in tests), so the
//! session can be replayed offline byte for byte.
use std::io::{Read, Write};
use weft_rados::proto::cephx::CephxClient;
use weft_rados::proto::conn::{AuthMethod, ConnConfig, Connection, Event, CON_MODE_CRC, CON_MODE_SECURE, FEATURES_PACIFIC};
use weft_rados::proto::msg::{self, msg_type};
use weft_rados::proto::types::{entity_type, EntityAddr};
use weft_rados::{ClientConfig, ConfigSource};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (conf, out, mode) = (&a[1], &a[2], &a[3]);
    let cfg = ClientConfig::load(&ConfigSource { conf: Some(conf.clone()), ..Default::default() }).expect("config");
    let mon = cfg.mon_addrs[0];
    let cc = ConnConfig {
        peer_type: entity_type::MON,
        peer_addr: EntityAddr::msgr2(mon),
        features: FEATURES_PACIFIC,
        modes: vec![if mode == "secure" { CON_MODE_SECURE } else { CON_MODE_CRC }],
        global_id: 0,
        client_cookie: 0x0123_4567_89ab_cdef,
        nonce: 0x1122_3344,
        global_seq: 1,
    };
    let cephx = CephxClient::new(cfg.name.clone(), cfg.key.clone(), entity_type::MON | entity_type::OSD | entity_type::MGR);
    let mut conn = Connection::new(cc, AuthMethod::Mon(Box::new(cephx)));
    let mut sock = std::net::TcpStream::connect(mon).expect("connect");
    let mut rng = || 0x1122_3344_5566_7788u64;
    let (mut rx, mut tx_handshake) = (Vec::new(), Vec::new());
    let mut ready = false;
    let (mut got_monmap, mut got_osdmap) = (false, false);
    let mut buf = vec![0u8; 65536];
    while !(got_monmap && got_osdmap) {
        let o = conn.take_output();
        if !ready {
            tx_handshake.extend_from_slice(&o);
        }
        sock.write_all(&o).expect("write");
        let n = sock.read(&mut buf).expect("read");
        assert!(n > 0, "closed");
        rx.extend_from_slice(&buf[..n]);
        conn.feed(&buf[..n], &mut rng).expect("protocol");
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Ready { .. } => {
                    ready = true;
                    conn.send_message(&msg::mon_subscribe(&[("monmap", 0, 0), ("osdmap", 0, 0)], "capture"));
                }
                Event::Message(m) if m.ty == msg_type::MON_MAP => got_monmap = true,
                Event::Message(m) if m.ty == msg_type::OSD_MAP => got_osdmap = true,
                _ => {}
            }
        }
    }
    std::fs::write(format!("{out}.rx.bin"), &rx).expect("write rx");
    std::fs::write(format!("{out}.tx.bin"), &tx_handshake).expect("write tx");
    std::fs::write(format!("{out}.key"), cfg.key.to_base64()).expect("write key");
    println!("{mode}: rx {} bytes, handshake tx {} bytes", rx.len(), tx_handshake.len());
}
