//! Records a real msgr2 session with a monitor for the replay tests:
//! `cargo run -p weft-rados --example capture_session -- CONF OUT_PREFIX crc|secure OSD_ADDR OSD_NONCE EPOCH`
//! The client's random inputs are fixed (see `replay` in tests), so the
//! session can be replayed offline byte for byte.
use std::io::{Read, Write};
use weft_rados::proto::cephx::{Authorizer, CephxClient};
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

    // then an OSD session authorized with the ticket from this mon session
    let cephx = conn.cephx().expect("mon session").clone();
    let ticket = cephx.tickets.get(&entity_type::OSD).expect("osd ticket").clone();
    let authz = Authorizer::build(cephx.global_id, &ticket, 0x0a0b_0c0d_0e0f_1011);
    let osd_addr: std::net::SocketAddr = a.get(4).map(|s| s.parse().expect("osd addr")).unwrap_or_else(|| "127.0.0.1:6800".parse().unwrap());
    let oc = ConnConfig {
        peer_type: entity_type::OSD,
        peer_addr: EntityAddr { nonce: a.get(5).map(|s| s.parse().expect("nonce")).unwrap_or(0), ..EntityAddr::msgr2(osd_addr) },
        features: FEATURES_PACIFIC,
        modes: vec![if mode == "secure" { CON_MODE_SECURE } else { CON_MODE_CRC }],
        global_id: cephx.global_id,
        client_cookie: 0x0fed_cba9_8765_4321,
        nonce: 0x5566_7788,
        global_seq: 2,
    };
    let mut oconn = Connection::new(oc, AuthMethod::Service(Box::new(authz)));
    let mut sock = std::net::TcpStream::connect(osd_addr).expect("connect osd");
    let (mut orx, mut otx) = (Vec::new(), Vec::new());
    let (mut ready, mut replies) = (false, 0);
    while replies < 2 {
        let o = oconn.take_output();
        if !ready {
            otx.extend_from_slice(&o);
        }
        sock.write_all(&o).expect("write");
        let n = sock.read(&mut buf).expect("read");
        assert!(n > 0, "osd closed");
        orx.extend_from_slice(&buf[..n]);
        oconn.feed(&buf[..n], &mut rng).expect("osd protocol");
        while let Some(ev) = oconn.poll_event() {
            match ev {
                Event::Ready { .. } => {
                    ready = true;
                    let epoch = a.get(6).map(|s| s.parse().expect("epoch")).unwrap_or(1);
                    for m in osd_ops(epoch) {
                        oconn.send_message(&m);
                    }
                }
                Event::Message(m) if m.ty == msg_type::OSD_OPREPLY => replies += 1,
                _ => {}
            }
        }
    }
    std::fs::write(format!("{out}.osd.rx.bin"), &orx).expect("write");
    std::fs::write(format!("{out}.osd.tx.bin"), &otx).expect("write");
    println!("{mode}: osd rx {} bytes, handshake tx {} bytes", orx.len(), otx.len());
}

/// A write_full then a read of object "replay" in pool 1 (pg 1.x by hash).
fn osd_ops(e: u32) -> Vec<weft_rados::proto::msg::Message> {
    use weft_rados::proto::msg::{osd_flag, osd_op, OsdOp, OsdOpTarget};
    use weft_rados::proto::osdmap::PgId;
    let hash = weft_rados::proto::crush::str_hash_rjenkins(b"replay");
    let t = OsdOpTarget { pgid: PgId { pool: 1, seed: hash & 7 }, hash, pool: 1, oid: "replay".into(), nspace: String::new(), key: String::new() };
    let w = [OsdOp::extent(osd_op::WRITEFULL, 0, 12).with_indata(b"replay bytes".to_vec())];
    let r = [OsdOp::extent(osd_op::READ, 0, 100)];
    vec![
        msg::osd_op(1, &t, e, osd_flag::WRITE | osd_flag::ONDISK, Default::default(), &w, 0, &[], 0, FEATURES_PACIFIC),
        msg::osd_op(2, &t, e, osd_flag::READ, Default::default(), &r, 0, &[], 0, FEATURES_PACIFIC),
    ]
}
