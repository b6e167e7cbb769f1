//! msgr2 on-wire compression against real OSDs (WEFT_PEERS=1).
//!
//! - Ceph 16 (the shared test cluster, ../shared/scripts/ceph/ceph-up.sh):
//!   its banner lacks the COMPRESSION feature, so a client configured for
//!   compression sends no request and works uncompressed.
//! - Ceph 18 (`scripts/ceph-reef.sh`, Reef from Debian 13 in a chroot, OSD
//!   with `ms_osd_compress_mode = force`; skipped with a note when the
//!   chroot is not set up): a client session negotiates and the OSD
//!   declines (Ceph compresses only between OSDs: `get_mode` is none for
//!   any peer that is not an OSD); a session that authenticates as `osd.0`
//!   with the OSD's own key gets each of snappy, lz4 and zstd, and the
//!   OSD's compressed replies decode to exactly the bytes `rados put`
//!   stored (above the threshold: compressed frames counted; below: not),
//!   and objects we write compressed read back through Reef's `rados get`
//!   exactly. Reef 18.2.7's OSD aborts (`Throttle::put` assert, seen here)
//!   when a compressed message arrives on a byte-throttled connection (it
//!   takes the compressed size and gives back the decompressed one), so
//!   the script turns that throttle off (`osd_client_message_size_cap = 0`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use weft_rados::proto::compress::Algorithm;
use weft_rados::{ClientConfig, ConfigSource, Rados};

mod common;
use common::shared_dir;

fn kv(out: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn peers() -> bool {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to run the live Ceph tests");
        return false;
    }
    true
}

/// Compressible data of `n` bytes (text-like, so every algorithm shrinks it).
fn text(n: usize, salt: u8) -> Vec<u8> {
    let words: [&[u8]; 6] = [b"object ", b"placement ", b"group ", b"replica ", b"osd ", b"journal\n"];
    let mut v = Vec::with_capacity(n + 16);
    let mut i = salt as usize;
    while v.len() < n {
        v.extend_from_slice(words[i % words.len()]);
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    v.truncate(n);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacific_has_no_compression_and_nothing_breaks() {
    if !peers() {
        return;
    }
    let script = shared_dir().join("scripts/ceph/ceph-up.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(out.status.success(), "ceph-up.sh: {}", String::from_utf8_lossy(&out.stderr));
    let c = kv(&out.stdout);
    let pool = c.get("CEPH_POOL").cloned().unwrap_or_else(|| "test".into());
    let cfg = ClientConfig::load(&ConfigSource {
        conf: Some(c["CEPH_CONF"].clone()),
        compression: Some("snappy".into()),
        conns_per_osd: Some(2),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(cfg.compression.methods, vec![Algorithm::Snappy]);
    let rados = Rados::connect(cfg).await.unwrap();
    let io = rados.ioctx(&pool).unwrap();
    for (name, n) in [("cmp-small", 300usize), ("cmp-big", 300_000)] {
        let data = text(n, 3);
        io.write_full(name, &data).await.unwrap();
        assert_eq!(io.read_full(name).await.unwrap(), data);
        let file = std::env::temp_dir().join(format!("weft-{name}.{}", std::process::id()));
        let st = Command::new("timeout")
            .args(["60", "rados", "-c", &c["CEPH_CONF"], "-p", &pool, "get", name])
            .arg(&file)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(&file).unwrap(), data);
        let _ = std::fs::remove_file(&file);
        io.remove(name).await.unwrap();
    }
    let sessions = rados.osd_session_compression().await;
    assert!(!sessions.is_empty());
    assert!(sessions.iter().all(|(_, a)| a.is_none()), "{sessions:?}");
    let s = rados.compression_stats();
    assert_eq!((s.sessions, s.tx_frames, s.rx_frames), (0, 0, 0), "{s:?}");
    rados.shutdown();
}

fn reef_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph-reef.sh")
}

struct ReefDown;
impl Drop for ReefDown {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(reef_script()).arg("down").output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reef_osd_negotiates_and_compressed_frames_work_both_ways() {
    if !peers() {
        return;
    }
    let root = std::env::var("WEFT_REEF_ROOT").unwrap_or_else(|_| "/var/lib/weft-reef".into());
    if !PathBuf::from(&root).join("usr/bin/ceph-osd").exists() {
        eprintln!("skipped: no Ceph 18 chroot in {root} (run scripts/ceph-reef.sh setup)");
        return;
    }
    let out = Command::new("bash").arg(reef_script()).arg("up").output().unwrap();
    assert!(out.status.success(), "ceph-reef.sh up: {}", String::from_utf8_lossy(&out.stderr));
    let _down = ReefDown;
    let c = kv(&out.stdout);
    let mon = c["CEPH_MON_HOST"].clone();
    let pool = c.get("CEPH_POOL").cloned().unwrap_or_else(|| "test".into());
    // objects written by Ceph 18's own rados tool: above and below the
    // OSD's threshold (ms_osd_compress_min_size, 1024)
    let objects = [("reef-small", text(200, 1)), ("reef-big", text(200_000, 2))];
    for (name, data) in &objects {
        let inner = format!("/tmp/weft-ceph-reef/{name}.in");
        std::fs::write(format!("{}{inner}", c["REEF_ROOT"]), data).unwrap();
        let st = Command::new("chroot")
            .arg(&c["REEF_ROOT"])
            .args(["timeout", "60", "rados", "-c", "/tmp/weft-ceph-reef/ceph.conf", "-p", &pool, "put", name, &inner])
            .status()
            .unwrap();
        assert!(st.success(), "rados put {name}");
    }

    // a client: the OSD is asked and declines (compression is OSD-to-OSD)
    let cfg = ClientConfig::load(&ConfigSource {
        mon_host: Some(mon.clone()),
        keyring: Some(c["CEPH_KEYRING"].clone()),
        compression: Some("snappy".into()),
        conns_per_osd: Some(1),
        ..Default::default()
    })
    .unwrap();
    let rados = Rados::connect(cfg).await.unwrap();
    let io = rados.ioctx(&pool).unwrap();
    assert_eq!(io.read_full("reef-big").await.unwrap(), objects[1].1);
    let sessions = rados.osd_session_compression().await;
    assert_eq!(sessions, vec![((0, 0), None)]);
    assert_eq!(rados.compression_stats().sessions, 0);
    rados.shutdown();

    // as osd.0: each algorithm is agreed, and the OSD compresses its replies
    for alg in algorithms() {
        let cfg = ClientConfig::load(&ConfigSource {
            mon_host: Some(mon.clone()),
            keyring: Some(c["CEPH_OSD_KEYRING"].clone()),
            id: Some("osd.0".into()),
            compression: Some(alg.name().into()),
            conns_per_osd: Some(1),
            ..Default::default()
        })
        .unwrap();
        let rados = Rados::connect(cfg).await.unwrap();
        let io = rados.ioctx(&pool).unwrap();
        assert_eq!(io.read_full("reef-small").await.unwrap(), objects[0].1, "{alg:?}");
        let sessions = rados.osd_session_compression().await;
        assert_eq!(sessions, vec![((0, 0), Some(alg))], "{alg:?}");
        let before = rados.compression_stats();
        assert_eq!(before.sessions, 1);
        assert_eq!(before.tx_frames, 0);
        let got = io.read_full("reef-big").await.unwrap();
        assert!(got == objects[1].1, "{alg:?}: reef-big differs");
        let after = rados.compression_stats();
        // the 200 KB reply came compressed and decoded to the raw size
        assert!(after.rx_frames > before.rx_frames, "{alg:?}: {before:?} -> {after:?}");
        let raw = after.rx_raw_bytes - before.rx_raw_bytes;
        let wire = after.rx_wire_bytes - before.rx_wire_bytes;
        assert!(raw >= 200_000 && wire * 2 < raw, "{alg:?}: {wire} wire bytes for {raw}");
        eprintln!("{alg:?}: reply of {raw} bytes came as {wire} compressed bytes");
        // our compressed writes: Ceph decompresses them and stores the bytes
        for (n, name) in [(300usize, "ours-small"), (150_000, "ours-big")] {
            let data = text(n, alg.wire() as u8);
            let before = rados.compression_stats();
            io.write_full(name, &data).await.unwrap();
            let after = rados.compression_stats();
            let sent = after.tx_frames - before.tx_frames;
            if n > 1024 {
                assert!(sent >= 1, "{alg:?}: {name} not sent compressed");
                assert!(after.tx_wire_bytes - before.tx_wire_bytes < (n as u64) / 2, "{alg:?}: {before:?} -> {after:?}");
            } else {
                assert_eq!(sent, 0, "{alg:?}: {name} under the threshold went compressed");
            }
            let inner = format!("/tmp/weft-ceph-reef/{name}.out");
            let st = Command::new("chroot")
                .arg(&c["REEF_ROOT"])
                .args(["timeout", "60", "rados", "-c", "/tmp/weft-ceph-reef/ceph.conf", "-p", &pool, "get", name, &inner])
                .status()
                .unwrap();
            assert!(st.success(), "rados get {name}");
            let got = std::fs::read(format!("{}{inner}", c["REEF_ROOT"])).unwrap();
            assert!(got == data, "{alg:?}: {name} as stored by the OSD differs");
        }
        rados.shutdown();
    }
}

/// zstd only when built with it (the default `zstd` feature).
fn algorithms() -> Vec<Algorithm> {
    let mut v = vec![Algorithm::Snappy, Algorithm::Lz4];
    if cfg!(feature = "zstd") {
        v.push(Algorithm::Zstd);
    }
    v
}
