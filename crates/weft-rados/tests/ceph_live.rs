//! Against a real Ceph 16 cluster started by ../shared/scripts/ceph/ceph-up.sh.
//! Runs only with WEFT_PEERS=1; then a missing cluster or tool is a failure.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use weft_rados::proto::conn::{CON_MODE_CRC, CON_MODE_SECURE};
use weft_rados::{ClientConfig, ConfigSource, Error, Op, Rados};

mod common;
use common::shared_dir;

struct Cluster {
    conf: String,
    key: String,
    pool: String,
}

fn cluster() -> Option<&'static Cluster> {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to run the live Ceph tests");
        return None;
    }
    static C: OnceLock<Cluster> = OnceLock::new();
    Some(C.get_or_init(|| {
        let script = shared_dir().join("scripts/ceph/ceph-up.sh");
        let out = Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("running {script:?}: {e}"));
        assert!(
            out.status.success(),
            "ceph-up.sh failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let kv: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        Cluster {
            conf: kv["CEPH_CONF"].clone(),
            key: kv["CEPH_ADMIN_KEY"].clone(),
            pool: kv.get("CEPH_POOL").cloned().unwrap_or_else(|| "test".into()),
        }
    }))
}

fn cfg(c: &Cluster, mon: &str, osd: &str) -> ClientConfig {
    ClientConfig::load(&ConfigSource {
        conf: Some(c.conf.clone()),
        mon_mode: Some(mon.into()),
        osd_mode: Some(osd.into()),
        ..Default::default()
    })
    .expect("client config")
}

async fn connect(c: &Cluster) -> Rados {
    Rados::connect(cfg(c, "secure,crc", "crc,secure")).await.expect("connect")
}

fn rados_tool(c: &Cluster, args: &[&str]) -> Vec<u8> {
    let out = Command::new("timeout")
        .arg("60")
        .arg("rados")
        .args(["-c", &c.conf, "-p", &c.pool])
        .args(args)
        .output()
        .expect("rados tool (apt-get install ceph-common)");
    assert!(out.status.success(), "rados {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn uniq(p: &str) -> String {
    format!("{p}-{}-{}", std::process::id(), rand::random::<u32>())
}

#[tokio::test]
async fn weft_and_rados_tool_read_each_other() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let io = r.ioctx(&c.pool).unwrap();
    // weft -> rados
    let oid = uniq("w2r");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    io.write_full(&oid, &body).await.unwrap();
    io.setxattr(&oid, "user.color", b"blue").await.unwrap();
    io.omap_set(&oid, &[("k1", b"v1"), ("k2", b"v2")]).await.unwrap();
    assert_eq!(rados_tool(c, &["get", &oid, "-"]), body);
    assert_eq!(rados_tool(c, &["getxattr", &oid, "user.color"]), b"blue");
    let vals = String::from_utf8(rados_tool(c, &["listomapkeys", &oid])).unwrap();
    assert_eq!(vals.lines().collect::<Vec<_>>(), ["k1", "k2"]);
    assert_eq!(rados_tool(c, &["getomapval", &oid, "k2", "/dev/stdout"]).ends_with(b"v2"), true);
    let st = String::from_utf8(rados_tool(c, &["stat", &oid])).unwrap();
    assert!(st.contains("size 200000"), "{st}");

    // rados -> weft
    let oid2 = uniq("r2w");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in");
    let body2: Vec<u8> = (0..123_457u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&f, &body2).unwrap();
    rados_tool(c, &["put", &oid2, f.to_str().unwrap()]);
    rados_tool(c, &["setxattr", &oid2, "user.k", "xv"]);
    rados_tool(c, &["setomapval", &oid2, "mk", "mv"]);
    assert_eq!(io.read_full(&oid2).await.unwrap(), body2);
    assert_eq!(io.stat(&oid2).await.unwrap().size, body2.len() as u64);
    assert_eq!(io.getxattr(&oid2, "user.k").await.unwrap(), b"xv");
    assert_eq!(io.omap_get_vals(&oid2).await.unwrap().get("mk").map(|v| v.as_slice()), Some(&b"mv"[..]));
    // listing sees both
    let names: Vec<String> = io.list().await.unwrap().into_iter().map(|e| e.oid).collect();
    assert!(names.contains(&oid) && names.contains(&oid2));
    io.remove(&oid).await.unwrap();
    io.remove(&oid2).await.unwrap();
    r.shutdown();
}

#[tokio::test]
async fn object_operations() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let io = r.ioctx(&c.pool).unwrap();
    let oid = uniq("ops");
    // create exclusive, then EEXIST
    io.create(&oid, true).await.unwrap();
    let e = io.create(&oid, true).await.unwrap_err();
    assert!(e.is_exists(), "{e}");
    io.write(&oid, 0, b"hello world").await.unwrap();
    io.append(&oid, b"!!").await.unwrap();
    assert_eq!(&io.read(&oid, 6, 5).await.unwrap()[..], b"world");
    assert_eq!(io.stat(&oid).await.unwrap().size, 13);
    io.truncate(&oid, 5).await.unwrap();
    assert_eq!(&io.read(&oid, 0, 100).await.unwrap()[..], b"hello");
    // cmpext
    assert_eq!(io.cmpext(&oid, 0, b"hello").await.unwrap(), None);
    assert_eq!(io.cmpext(&oid, 0, b"help!").await.unwrap(), Some(3));
    // xattrs
    io.setxattr(&oid, "a", b"1").await.unwrap();
    io.setxattr(&oid, "b", b"2").await.unwrap();
    let xs = io.getxattrs(&oid).await.unwrap();
    assert_eq!(xs.get("a").map(|v| v.as_slice()), Some(&b"1"[..]));
    io.rmxattr(&oid, "a").await.unwrap();
    assert_eq!(io.getxattr(&oid, "a").await.unwrap_err().errno(), Some(61));
    // omap
    io.omap_set(&oid, &[("x", b"1"), ("y", b"2"), ("z", b"3")]).await.unwrap();
    io.omap_rm_keys(&oid, &["y"]).await.unwrap();
    assert_eq!(io.omap_get_keys(&oid).await.unwrap(), vec!["x".to_string(), "z".to_string()]);
    io.omap_clear(&oid).await.unwrap();
    assert!(io.omap_get_vals(&oid).await.unwrap().is_empty());
    // compound op: atomic — a failing guard means nothing is applied
    let err = io
        .operate(&oid, Op::new().cmpxattr_eq("b", b"nope").write_full(b"REPLACED"))
        .await
        .unwrap_err();
    assert_eq!(err.errno(), Some(125), "{err}");
    assert_eq!(&io.read(&oid, 0, 100).await.unwrap()[..], b"hello");
    let res = io.operate(&oid, Op::new().cmpxattr_eq("b", b"2").write_full(b"REPLACED").setxattr("c", b"3")).await.unwrap();
    assert_eq!(res.len(), 3);
    assert_eq!(&io.read(&oid, 0, 100).await.unwrap()[..], b"REPLACED");
    // advisory locks via the lock class
    io.lock(&oid, "L", "c1", true, None).await.unwrap();
    let busy = io.lock(&oid, "L", "c2", true, None).await.unwrap_err();
    assert_eq!(busy.errno(), Some(16), "{busy}");
    io.unlock(&oid, "L", "c1").await.unwrap();
    // streaming a larger object in chunks, then reading it back in chunks
    let big: Vec<u8> = (0..(5u32 << 20) + 123).map(|i| (i % 253) as u8).collect();
    let mut ws = io.write_stream(&oid, 1 << 20);
    for piece in big.chunks(300_001) {
        ws.write(piece).await.unwrap();
    }
    assert_eq!(ws.finish().await.unwrap(), big.len() as u64);
    let mut rs = io.read_stream(&oid, 1 << 20);
    let mut back = Vec::new();
    while let Some(b) = rs.next().await.unwrap() {
        back.extend_from_slice(&b);
    }
    assert_eq!(back, big);
    // remove, then ENOENT everywhere
    io.remove(&oid).await.unwrap();
    let e = io.stat(&oid).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(matches!(e, Error::Osd { errno: 2, .. }));
    r.shutdown();
}

#[tokio::test]
async fn namespaces_and_listing() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let mut a = r.ioctx(&c.pool).unwrap();
    let ns = uniq("ns");
    a.set_namespace(&ns);
    let names: Vec<String> = (0..40).map(|i| format!("obj{i}")).collect();
    for n in &names {
        a.write_full(n, n.as_bytes()).await.unwrap();
    }
    let mut got: Vec<String> = a.list().await.unwrap().into_iter().map(|e| e.oid).collect();
    got.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(got, want);
    // the default namespace does not see them, and the rados tool agrees
    let plain = r.ioctx(&c.pool).unwrap();
    assert!(plain.stat("obj0").await.is_err() || !plain.list().await.unwrap().iter().any(|e| e.nspace == ns));
    let tool = String::from_utf8(rados_tool(c, &["-N", &ns, "ls"])).unwrap();
    assert_eq!(tool.lines().count(), 40);
    let every = plain.list_all_namespaces().await.unwrap();
    assert_eq!(every.iter().filter(|e| e.nspace == ns).count(), 40);
    for n in &names {
        a.remove(n).await.unwrap();
    }
    r.shutdown();
}

#[tokio::test]
async fn watch_notify() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let io = r.ioctx(&c.pool).unwrap();
    let oid = uniq("wn");
    io.write_full(&oid, b"").await.unwrap();
    let mut w = io.watch(&oid).await.unwrap();
    let io2 = io.clone();
    let oid2 = oid.clone();
    let notifier = tokio::spawn(async move { io2.notify(&oid2, b"ping", Duration::from_secs(10)).await });
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.unwrap().unwrap();
    assert_eq!(ev.payload, b"ping");
    w.ack(ev.notify_id, b"pong").await.unwrap();
    let done = notifier.await.unwrap().unwrap();
    // the completion payload carries our reply
    assert!(done.windows(4).any(|x| x == b"pong"), "{done:?}");
    w.unwatch().await.unwrap();
    io.remove(&oid).await.unwrap();
    r.shutdown();
}

#[tokio::test]
async fn restricted_user_gets_eperm() {
    let Some(c) = cluster() else { return };
    let admin = connect(c).await;
    let io = admin.ioctx(&c.pool).unwrap();
    io.write_full("eperm-target", b"x").await.unwrap();
    let user = format!("client.ro{}", rand::random::<u16>());
    let (out, _) = admin
        .mon_command(
            serde_json::json!({"prefix": "auth get-or-create", "entity": user,
                "caps": ["mon", "allow r", "osd", format!("allow r pool={}", c.pool)], "format": "json"}),
            b"",
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let key = v[0]["key"].as_str().unwrap().to_string();
    let cfg = ClientConfig::load(&ConfigSource {
        conf: Some(c.conf.clone()),
        id: Some(user.clone()),
        key: Some(key),
        ..Default::default()
    })
    .unwrap();
    let ro = Rados::connect(cfg).await.unwrap();
    let rio = ro.ioctx(&c.pool).unwrap();
    assert_eq!(&rio.read("eperm-target", 0, 10).await.unwrap()[..], b"x");
    let e = rio.write_full("eperm-target", b"y").await.unwrap_err();
    assert_eq!(e.errno(), Some(1), "{e}");
    ro.shutdown();
    admin.mon_command(serde_json::json!({"prefix": "auth del", "entity": user}), b"").await.unwrap();
    io.remove("eperm-target").await.unwrap();
    admin.shutdown();
}

#[tokio::test]
async fn hunting_skips_dead_monitors() {
    let Some(c) = cluster() else { return };
    // two dead addresses around the live one: whatever order hunting tries
    // them in, it must end up on the live monitor
    for _ in 0..3 {
        let cfg = ClientConfig::load(&ConfigSource {
            conf: Some(c.conf.clone()),
            mon_host: Some("[v2:127.0.0.1:1],[v2:127.0.0.1:3300],[v2:127.0.0.1:2]".into()),
            ..Default::default()
        })
        .unwrap();
        let r = Rados::connect(cfg).await.unwrap();
        assert!(r.pool_list().unwrap().iter().any(|(_, n)| *n == c.pool));
        r.shutdown();
    }
}

#[tokio::test]
async fn wrong_key_is_a_clean_auth_error() {
    let Some(c) = cluster() else { return };
    let mut cfg = cfg(c, "secure,crc", "crc");
    // a valid AES key that is not the admin key
    cfg.key = weft_rados::proto::cephx::CryptoKey::from_base64("AQBUQJ9lAAAAABAAsrqjTv2ZSdXcMpmYQhaJzA==").unwrap();
    let t0 = std::time::Instant::now();
    let e = Rados::connect(cfg).await.err().expect("must fail");
    assert!(matches!(e, Error::Auth(_)), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let _ = c.key.len();
}

#[tokio::test]
async fn crc_and_secure_modes_both_work() {
    let Some(c) = cluster() else { return };
    for (mon, osd, want_mon, want_osd) in
        [("secure", "secure", CON_MODE_SECURE, CON_MODE_SECURE), ("crc", "crc", CON_MODE_CRC, CON_MODE_CRC)]
    {
        let r = Rados::connect(cfg(c, mon, osd)).await.unwrap();
        assert_eq!(r.monc().mode.load(std::sync::atomic::Ordering::Relaxed) as u32, want_mon);
        let io = r.ioctx(&c.pool).unwrap();
        let oid = uniq(mon);
        let big = vec![0xabu8; 3 << 20];
        io.write_full(&oid, &big).await.unwrap();
        assert_eq!(io.read_full(&oid).await.unwrap(), big);
        assert_eq!(rados_tool(c, &["get", &oid, "-"]).len(), big.len());
        assert_eq!(r.osd_session_mode(0).await, Some(want_osd));
        io.remove(&oid).await.unwrap();
        r.shutdown();
    }
}

#[tokio::test]
async fn placement_matches_the_cluster() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let map = r.osdmap().unwrap();
    let pool = map.pool_by_name(&c.pool).unwrap();
    for i in 0..300 {
        let name = format!("placement-{i}-{}", i * 7919);
        let (out, _) = r
            .mon_command(serde_json::json!({"prefix": "osd map", "pool": c.pool, "object": name, "format": "json"}), b"")
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let (pl, raw) = map.map_object(pool, &name, "").unwrap();
        assert_eq!(v["raw_pgid"].as_str().unwrap(), format!("{pool}.{raw:x}"), "{name}");
        assert_eq!(v["pgid"].as_str().unwrap(), pl.pgid.to_string(), "{name}");
        let up: Vec<i32> = v["up"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect();
        assert_eq!(up, pl.up, "{name}");
        assert_eq!(v["acting_primary"].as_i64().unwrap() as i32, pl.acting_primary);
    }
    // namespaces change the hash input ("ns\x1fname")
    for i in 0..50 {
        let (name, ns) = (format!("nsobj-{i}"), format!("tenant{}", i % 7));
        let (out, _) = r
            .mon_command(
                serde_json::json!({"prefix": "osd map", "pool": c.pool, "object": name, "nspace": ns, "format": "json"}),
                b"",
            )
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let (pl, raw) = map.map_object(pool, &name, &ns).unwrap();
        assert_eq!(v["raw_pgid"].as_str().unwrap(), format!("{pool}.{raw:x}"), "{ns}/{name}");
        assert_eq!(v["pgid"].as_str().unwrap(), pl.pgid.to_string(), "{ns}/{name}");
    }
    r.shutdown();
}

#[tokio::test]
async fn pools_commands_and_cli() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let (v, o) = r.monc().get_version("osdmap").await.unwrap();
    assert!(v >= o && v >= 1);
    let name = uniq("pool");
    r.pool_create(&name, 4).await.unwrap();
    assert!(r.pool_list().unwrap().iter().any(|(_, n)| *n == name));
    let io = r.ioctx(&name).unwrap();
    io.write_full("x", b"y").await.unwrap();
    // the CLI module against the same cluster
    use clap::Parser;
    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        a: weft_rados::cli::RadosArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"cli data").unwrap();
    let t = Top::try_parse_from(["weft", "-c", &c.conf, "-p", &name, "put", "clio", f.to_str().unwrap()]).unwrap();
    weft_rados::cli::run_with(&r, &t.a).await.unwrap();
    assert_eq!(&io.read("clio", 0, 100).await.unwrap()[..], b"cli data");
    let t = Top::try_parse_from(["weft", "-p", &name, "bench", "1", "write", "-b", "4096", "-t", "4", "--no-cleanup"]).unwrap();
    weft_rados::cli::run_with(&r, &t.a).await.unwrap();
    let t = Top::try_parse_from(["weft", "-p", &name, "bench", "1", "rand", "-t", "4"]).unwrap();
    weft_rados::cli::run_with(&r, &t.a).await.unwrap();
    // pool snapshots
    io.snap_create("snap1").await.unwrap();
    let snaps = io.snap_list().unwrap();
    assert!(snaps.iter().any(|(_, n)| n == "snap1"), "{snaps:?}");
    io.snap_remove("snap1").await.unwrap();
    assert!(!io.snap_list().unwrap().iter().any(|(_, n)| n == "snap1"));
    r.pool_delete(&name).await.unwrap();
    assert!(!r.pool_list().unwrap().iter().any(|(_, n)| *n == name));
    let e = r.mon_command(serde_json::json!({"prefix": "osd pool get", "pool": "no-such-pool", "var": "size"}), b"").await.unwrap_err();
    assert_eq!(e.errno(), Some(2), "{e}");
    r.shutdown();
}
