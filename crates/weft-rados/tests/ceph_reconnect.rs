//! msgr2 SESSION_RECONNECT against the live Ceph 16 cluster of
//! ../shared/scripts/ceph/ceph-up.sh (WEFT_PEERS=1; then a missing cluster
//! is a failure). Ceph servers keep client sessions lossy, so both the OSD
//! and the monitor must answer a client's SESSION_RECONNECT with a full
//! SESSION_RESET, after which the same connection carries a new session.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_rados::net::{self, Liveness};
use weft_rados::proto::cephx::CephxClient;
use weft_rados::proto::conn::{AuthMethod, ConnConfig, ReconnectAnswer, FEATURES_PACIFIC};
use weft_rados::proto::msg::{self, msg_type};
use weft_rados::proto::types::{entity_type, EntityAddr};
use weft_rados::{ClientConfig, ConfigSource, Rados};

mod common;
use common::shared_dir;

/// Starts (or finds) the shared test cluster; None when WEFT_PEERS != 1.
fn cluster() -> Option<BTreeMap<String, String>> {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to run the live Ceph reconnect tests");
        return None;
    }
    let script = shared_dir().join("scripts/ceph/ceph-up.sh");
    let out = Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("running {script:?}: {e}"));
    assert!(out.status.success(), "ceph-up.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
    )
}

fn config(kv: &BTreeMap<String, String>) -> ClientConfig {
    ClientConfig::load(&ConfigSource { conf: Some(kv["CEPH_CONF"].clone()), ..Default::default() }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osd_answers_reconnect_with_reset_and_every_write_lands() {
    let Some(kv) = cluster() else { return };
    let pool = kv.get("CEPH_POOL").cloned().unwrap_or_else(|| "test".into());
    let r = Rados::connect(config(&kv)).await.unwrap();
    let io = r.ioctx(&pool).unwrap();
    io.write_full("reconnect-warmup", b"up").await.unwrap();
    let st = r.reconnect_stats();
    // one session opened for the warm-up write, no reconnect
    assert_eq!(st, weft_rados::rados::ReconnectStats { sessions_opened: 1, ..Default::default() }, "before any drop");

    // 16 writers write continuously while the OSD connections are dropped
    // under them, each drop waiting for the reconnect of the one before
    const WRITERS: usize = 16;
    const DROPS: u64 = 6;
    let stop = Arc::new(AtomicBool::new(false));
    let last_round: Arc<Vec<AtomicUsize>> = Arc::new((0..WRITERS).map(|_| AtomicUsize::new(usize::MAX)).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (io, stop, last_round) = (io.clone(), stop.clone(), last_round.clone());
            tokio::spawn(async move {
                let mut round = 0;
                // bounded: the drops take well under this many rounds
                while !stop.load(Ordering::Relaxed) && round < 100_000 {
                    let body = format!("writer {w} round {round} ").repeat(64 + w);
                    io.write_full(&format!("reconnect-{w}"), body.as_bytes()).await.unwrap();
                    last_round[w].store(round, Ordering::Relaxed);
                    round += 1;
                }
            })
        })
        .collect();
    let rounds = || -> usize { last_round.iter().map(|a| a.load(Ordering::Relaxed)).filter(|&x| x != usize::MAX).sum() };
    for k in 1..=DROPS {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let before = rounds();
        r.drop_osd_connections().await;
        // the next op of some writer reconnects
        tokio::time::timeout(Duration::from_secs(30), async {
            while r.reconnect_stats().attempts < k {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("reconnect {k} never happened: {:?}", r.reconnect_stats()));
        // and the writers go on across it (waited for, not sampled: on a
        // busy machine no write may have completed yet at the reconnect)
        tokio::time::timeout(Duration::from_secs(30), async {
            while rounds() <= before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no write completed after drop {k}: {:?}", r.reconnect_stats()));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(90), w).await.expect("writes across dropped connections").unwrap();
    }
    assert!(r.reconnect_stats().ops_resent > 0, "writes in flight at a drop were resent: {:?}", r.reconnect_stats());

    // a drop with nothing in flight: the next op reconnects too
    r.drop_osd_connections().await;
    io.write_full("reconnect-warmup", b"again").await.unwrap();

    let st = r.reconnect_stats();
    eprintln!("reconnect stats: {st:?}");
    assert!(st.attempts > DROPS, "a SESSION_RECONNECT after every drop: {st:?}");
    assert!(st.resets >= 1, "the OSD answered SESSION_RESET: {st:?}");
    // a lossy client session leaves the OSD nothing to resume
    assert_eq!(st.full_resets, st.resets, "{st:?}");
    assert_eq!(st.resumed, 0, "{st:?}");
    assert_eq!(st.attempts, st.resets + st.failed, "every attempt answered or failed: {st:?}");

    for w in 0..WRITERS {
        let round = last_round[w].load(Ordering::Relaxed);
        let want = format!("writer {w} round {round} ").repeat(64 + w);
        assert_eq!(io.read_full(&format!("reconnect-{w}")).await.unwrap(), want.as_bytes(), "writer {w}");
        io.remove(&format!("reconnect-{w}")).await.unwrap();
    }
    assert_eq!(io.read_full("reconnect-warmup").await.unwrap(), b"again");
    io.remove("reconnect-warmup").await.unwrap();
    r.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osd_reconnect_in_secure_mode() {
    let Some(kv) = cluster() else { return };
    let pool = kv.get("CEPH_POOL").cloned().unwrap_or_else(|| "test".into());
    let cfg = ClientConfig::load(&ConfigSource {
        conf: Some(kv["CEPH_CONF"].clone()),
        osd_mode: Some("secure".into()),
        ..Default::default()
    })
    .unwrap();
    let r = Rados::connect(cfg).await.unwrap();
    let io = r.ioctx(&pool).unwrap();
    io.write_full("reconnect-secure", b"one").await.unwrap();
    assert_eq!(r.osd_session_mode(0).await, Some(weft_rados::proto::conn::CON_MODE_SECURE));
    r.drop_osd_connections().await;
    // SESSION_RECONNECT and the reset travel AES-GCM sealed
    io.write_full("reconnect-secure", b"two").await.unwrap();
    let st = r.reconnect_stats();
    assert_eq!((st.attempts, st.full_resets), (1, 1), "{st:?}");
    assert_eq!(r.osd_session_mode(0).await, Some(weft_rados::proto::conn::CON_MODE_SECURE));
    assert_eq!(io.read_full("reconnect-secure").await.unwrap(), b"two");
    io.remove("reconnect-secure").await.unwrap();
    r.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mon_answers_reconnect_with_reset() {
    let Some(kv) = cluster() else { return };
    let cfg = config(&kv);
    let mon = cfg.mon_addrs[0];
    let want = entity_type::MON | entity_type::OSD;
    let conn_cfg = |gseq: u64| ConnConfig {
        peer_type: entity_type::MON,
        peer_addr: EntityAddr::msgr2(mon),
        features: FEATURES_PACIFIC,
        modes: cfg.mon_modes.clone(),
        global_id: 0,
        client_cookie: 0x5eed_0001,
        nonce: rand::random(),
        global_seq: gseq,
    };
    let auth = || AuthMethod::Mon(Box::new(CephxClient::new(cfg.name.clone(), cfg.key.clone(), want)));
    let timeout = Duration::from_secs(10);

    // a first session, with a message each way so in_seq/out_seq move
    let est = net::connect_with(mon, conn_cfg(1), auth(), timeout, Liveness::KEEPALIVE_ONLY).await.unwrap();
    assert!(est.reconnect.is_empty());
    assert!(est.session.lossy, "the monitor keeps client sessions lossy");
    let mut inbound = est.inbound;
    assert!(est.handle.send(msg::mon_get_version(1, "osdmap")));
    let reply = tokio::time::timeout(timeout, async {
        loop {
            let m = inbound.recv().await.expect("mon session open");
            if m.ty == msg_type::MON_GET_VERSION_REPLY {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert!(msg::decode_mon_get_version_reply(&reply).unwrap().1 >= 1);
    // drop the connection; its driver hands over the session state
    drop(est.handle);
    let prev = tokio::time::timeout(timeout, async {
        loop {
            if let Some(s) = est.closed.lock().unwrap().take() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("session handed over on close");
    assert!(prev.identity.in_seq >= 1 && prev.identity.out_seq >= 1, "{:?}", prev.identity);

    // the reconnect: the monitor has no such session and says so with a
    // full reset; the connection then works as a new session
    let est = net::connect_resume(mon, conn_cfg(2), auth(), timeout, Liveness::KEEPALIVE_ONLY, Some(prev)).await.unwrap();
    assert_eq!(est.reconnect, vec![ReconnectAnswer::Reset { full: true }]);
    assert_eq!((est.session.connect_seq, est.session.in_seq), (0, 0));
    let mut inbound = est.inbound;
    assert!(est.handle.send(msg::mon_get_version(2, "osdmap")));
    tokio::time::timeout(timeout, async {
        loop {
            let m = inbound.recv().await.expect("new mon session open");
            if m.ty == msg_type::MON_GET_VERSION_REPLY {
                return;
            }
        }
    })
    .await
    .unwrap();
}
