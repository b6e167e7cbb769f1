//! Records compressed msgr2 frames from a real Ceph OSD (17+) for
//! tests/compress_replay.rs:
//! `cargo run -p weft-rados --example capture_compressed -- MON_ADDR OSD_KEYRING POOL OBJECT ALG OUT`
//! Authenticates as `osd.0` (Ceph grants compression to OSD peers only; see
//! docs/rados.md), negotiates ALG (snappy, lz4, zstd) in crc mode, reads
//! OBJECT, and writes to OUT every byte the OSD sent after SERVER_IDENT
//! (plain crc-mode frames, several compressed).
use std::io::{Read, Write};
use std::sync::Arc;
use weft_rados::monc::MonClient;
use weft_rados::proto::cephx::Authorizer;
use weft_rados::proto::compress::{Algorithm, CompressionConfig, CompressionStats};
use weft_rados::proto::conn::{AuthMethod, ConnConfig, Connection, Event, CON_MODE_CRC, FEATURES_PACIFIC};
use weft_rados::proto::msg::{self, msg_type, osd_flag, osd_op, OsdOp, OsdOpTarget};
use weft_rados::proto::osdmap::OsdMap;
use weft_rados::proto::types::entity_type;
use weft_rados::{ClientConfig, ConfigSource};

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (mon, keyring, pool, object, alg, out) = (&a[1], &a[2], &a[3], &a[4], &a[5], &a[6]);
    let alg = Algorithm::parse(alg).expect("algorithm");
    let cfg = ClientConfig::load(&ConfigSource {
        mon_host: Some(mon.clone()),
        keyring: Some(keyring.clone()),
        id: Some("osd.0".into()),
        ..Default::default()
    })
    .expect("config");
    let monc = MonClient::connect(Arc::new(cfg)).await.expect("mon");
    let map = monc.wait_for_osdmap(1, std::time::Duration::from_secs(10)).await.expect("osdmap");
    let pool_id = map.pool_by_name(pool).expect("pool");
    let (pl, hash) = map.map_object(pool_id, object, "").expect("placement");
    let osd = pl.acting_primary;
    let osd_addr = map.osd_addrs[osd as usize].v2().expect("msgr2 addr").clone();
    let ticket = monc.ticket(entity_type::OSD).expect("osd ticket");
    let authz = Authorizer::build(monc.global_id(), &ticket, 0x0a0b_0c0d_0e0f_1011);
    let oc = ConnConfig {
        peer_type: entity_type::OSD,
        peer_addr: osd_addr.clone(),
        features: FEATURES_PACIFIC,
        modes: vec![CON_MODE_CRC],
        global_id: monc.global_id(),
        client_cookie: 0x0fed_cba9_8765_4321,
        nonce: 0x5566_7788,
        global_seq: 2,
    };
    let mut conn = Connection::new(oc, AuthMethod::Service(Box::new(authz)));
    conn.set_entity_type(entity_type::OSD);
    conn.set_compression(CompressionConfig::with(alg), Arc::new(CompressionStats::default()));
    let mut sock = std::net::TcpStream::connect(osd_addr.addr.expect("addr")).expect("connect osd");
    let mut rng = || 0x1122_3344_5566_7788u64;
    let mut buf = vec![0u8; 1 << 16];
    let (mut ready, mut done, mut rx) = (false, false, Vec::new());
    while !done {
        let o = conn.take_output();
        sock.write_all(&o).expect("write");
        let n = sock.read(&mut buf).expect("read");
        assert!(n > 0, "osd closed");
        if ready {
            rx.extend_from_slice(&buf[..n]);
        }
        conn.feed(&buf[..n], &mut rng).expect("protocol");
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Ready { .. } => {
                    assert_eq!(conn.compression(), Some(alg), "not negotiated");
                    ready = true;
                    let pool_info = map.pools.get(&pool_id).expect("pool");
                    let t = OsdOpTarget {
                        pgid: pl.pgid,
                        hash: OsdMap::object_hash(pool_info, object, "", None),
                        pool: pool_id,
                        oid: object.clone(),
                        nspace: String::new(),
                        key: String::new(),
                    };
                    let _ = hash;
                    let r = [OsdOp::extent(weft_rados::proto::msg::osd_op::READ, 0, 1 << 22)];
                    conn.send_message(&osd_op(1, &t, map.epoch, osd_flag::READ, Default::default(), &r, 0, &[], 0, FEATURES_PACIFIC));
                }
                Event::Message(m) if m.ty == msg_type::OSD_OPREPLY => {
                    let reply = msg::decode_osd_op_reply(&m).expect("reply");
                    println!("reply: result {}, {} bytes of data", reply.result, m.data.len());
                    done = true;
                }
                _ => {}
            }
        }
    }
    std::fs::write(out, &rx).expect("write capture");
    println!("{}: {} bytes after SERVER_IDENT", alg.name(), rx.len());
}
