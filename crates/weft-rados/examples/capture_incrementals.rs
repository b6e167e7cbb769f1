//! Captures real OSDMap incrementals for the offline tests:
//! `cargo run -p weft-rados --example capture_incrementals -- CONF OUTDIR FROM_EPOCH`
//! writes inc_<e>.bin for every epoch after FROM_EPOCH (and full_<FROM>.bin is
//! fetched separately with `ceph osd getmap FROM`).
use std::time::Duration;
use weft_rados::net;
use weft_rados::proto::cephx::CephxClient;
use weft_rados::proto::conn::{AuthMethod, ConnConfig, FEATURES_PACIFIC};
use weft_rados::proto::msg::{self, msg_type};
use weft_rados::proto::types::{entity_type, EntityAddr};
use weft_rados::{ClientConfig, ConfigSource};

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (conf, out, from) = (&a[1], &a[2], a[3].parse::<u64>().expect("epoch"));
    let cfg = ClientConfig::load(&ConfigSource { conf: Some(conf.clone()), ..Default::default() }).expect("config");
    let mon = cfg.mon_addrs[0];
    let cephx = CephxClient::new(cfg.name.clone(), cfg.key.clone(), entity_type::MON | entity_type::OSD);
    let cc = ConnConfig {
        peer_type: entity_type::MON,
        peer_addr: EntityAddr::msgr2(mon),
        features: FEATURES_PACIFIC,
        modes: cfg.mon_modes.clone(),
        global_id: 0,
        client_cookie: 7,
        nonce: 7,
        global_seq: 1,
    };
    let mut est = net::connect(mon, cc, AuthMethod::Mon(Box::new(cephx)), Duration::from_secs(10)).await.expect("connect");
    est.handle.send(msg::mon_subscribe(&[("osdmap", from + 1, msg::SUBSCRIBE_ONETIME)], "capture"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, est.inbound.recv()).await {
        if m.ty != msg_type::OSD_MAP {
            continue;
        }
        let mm = msg::decode_osd_map(&m).expect("MOSDMap");
        for (e, b) in &mm.incrementals {
            std::fs::write(format!("{out}/inc_{e}.bin"), b).expect("write");
            println!("inc {e}: {} bytes", b.len());
        }
        if !mm.incrementals.is_empty() {
            break;
        }
    }
}
