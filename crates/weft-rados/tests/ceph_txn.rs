//! Transactions, snapshots and cluster state against the real Ceph 16
//! cluster of ../shared/scripts/ceph/ceph-up.sh, checked with the `rados`
//! and `ceph` tools. Runs only with WEFT_PEERS=1.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use weft_rados::error::libc_errno;
use weft_rados::{ClientConfig, CmpOp, ConfigSource, Error, Rados, WriteOp};

mod common;
use common::shared_dir;

struct Cluster {
    conf: String,
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
        assert!(out.status.success(), "ceph-up.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        let kv: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        Cluster { conf: kv["CEPH_CONF"].clone(), pool: kv.get("CEPH_POOL").cloned().unwrap_or_else(|| "test".into()) }
    }))
}

async fn connect(c: &Cluster) -> Rados {
    let cfg = ClientConfig::load(&ConfigSource { conf: Some(c.conf.clone()), ..Default::default() }).expect("config");
    Rados::connect(cfg).await.expect("connect")
}

/// Runs `rados -c CONF -p POOL ARGS`; None when it fails.
fn rados_tool(c: &Cluster, pool: &str, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("timeout")
        .arg("60")
        .arg("rados")
        .args(["-c", &c.conf, "-p", pool])
        .args(args)
        .output()
        .expect("rados tool (apt-get install ceph-common)");
    out.status.success().then_some(out.stdout)
}

fn uniq(p: &str) -> String {
    format!("{p}-{}-{}", std::process::id(), rand::random::<u32>())
}

/// What the `rados` tool sees of an object: data, one xattr, omap values.
fn seen(c: &Cluster, oid: &str) -> (Vec<u8>, Option<Vec<u8>>, String) {
    let data = rados_tool(c, &c.pool, &["get", oid, "-"]).expect("rados get");
    let x = rados_tool(c, &c.pool, &["getxattr", oid, "ver"]);
    let omap = String::from_utf8(rados_tool(c, &c.pool, &["listomapvals", oid]).expect("listomapvals")).unwrap();
    (data, x, omap)
}

#[tokio::test]
async fn write_transactions_apply_all_or_nothing() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let io = r.ioctx(&c.pool).unwrap();
    let oid = uniq("txn");

    // the first transaction creates everything at once
    let first = WriteOp::new()
        .create(true)
        .write_full(b"version one")
        .setxattr("ver", b"1")
        .omap_set(&[("k1", b"v1".as_slice()), ("k2", b"v2".as_slice())]);
    assert_eq!(first.len(), 4);
    io.operate(&oid, first).await.expect("first transaction");
    let (d, x, omap) = seen(c, &oid);
    assert_eq!(d, b"version one");
    assert_eq!(x.as_deref(), Some(&b"1"[..]));
    assert!(omap.contains("k1") && omap.contains("k2"), "{omap}");

    // a failing xattr compare: nothing of data, xattrs or omap changes
    let before = seen(c, &oid);
    let bad = WriteOp::new()
        .cmpxattr("ver", CmpOp::Eq, b"7")
        .write_full(b"version two")
        .setxattr("ver", b"2")
        .setxattr("other", b"x")
        .omap_set(&[("k3", b"v3".as_slice())])
        .omap_rm_keys(&["k1"]);
    match io.operate(&oid, bad).await {
        Err(Error::Osd { errno, .. }) => assert_eq!(errno, libc_errno::ECANCELED),
        other => panic!("a failed cmpxattr must cancel the transaction: {other:?}"),
    }
    assert_eq!(seen(c, &oid), before, "a canceled transaction changed the object");
    assert!(rados_tool(c, &c.pool, &["getxattr", &oid, "other"]).is_none(), "xattr of a canceled transaction exists");

    // the compare is the last step: the steps before it are undone too
    // (Ceph compares the given value with the stored one: "5" < "1" fails)
    let late = WriteOp::new().write(0, b"VERSION").omap_clear().cmpxattr("ver", CmpOp::Lt, b"5");
    assert!(io.operate(&oid, late).await.is_err());
    assert_eq!(seen(c, &oid), before);

    // cmpext and omap_cmp that fail
    match io.operate(&oid, WriteOp::new().cmpext(0, b"version ONE").setxattr("ver", b"9")).await {
        Err(Error::Osd { errno, .. }) => assert_eq!(errno, libc_errno::MAX_ERRNO + 8, "mismatch at byte 8"),
        other => panic!("cmpext: {other:?}"),
    }
    match io.operate(&oid, WriteOp::new().omap_cmp(&[("k2", CmpOp::Eq, b"nope")]).write_full(b"zzz")).await {
        Err(Error::Osd { errno, .. }) => assert_eq!(errno, libc_errno::ECANCELED),
        other => panic!("omap_cmp: {other:?}"),
    }
    // omap_cmp compares the other way round: stored "v2" < given "v3" fails
    match io.operate(&oid, WriteOp::new().omap_cmp(&[("k2", CmpOp::Gt, b"v3")]).write_full(b"zzz")).await {
        Err(Error::Osd { errno, .. }) => assert_eq!(errno, libc_errno::ECANCELED),
        other => panic!("omap_cmp Gt: {other:?}"),
    }
    // a missing key compares as empty
    match io.operate(&oid, WriteOp::new().omap_cmp(&[("absent", CmpOp::Eq, b"x")]).write_full(b"zzz")).await {
        Err(Error::Osd { errno, .. }) => assert_eq!(errno, libc_errno::ECANCELED),
        other => panic!("omap_cmp on a missing key: {other:?}"),
    }
    assert_eq!(seen(c, &oid), before);

    // every compare holds: every step applies
    let good = WriteOp::new()
        .cmpxattr("ver", CmpOp::Eq, b"1")
        .cmpxattr_u64("ver", CmpOp::Lt, 0)
        .cmpxattr_u64("ver", CmpOp::Gt, 2)
        .cmpext(0, b"version one")
        .omap_cmp(&[("k1", CmpOp::Eq, b"v1"), ("k2", CmpOp::Gt, b"v1"), ("absent", CmpOp::Eq, b"")])
        .write_full(b"version two")
        .setxattr("ver", b"2")
        .omap_set(&[("k3", b"v3".as_slice())])
        .omap_rm_keys(&["k1"]);
    io.operate(&oid, good).await.expect("transaction with holding compares");
    let (d, x, omap) = seen(c, &oid);
    assert_eq!(d, b"version two");
    assert_eq!(x.as_deref(), Some(&b"2"[..]));
    assert!(!omap.contains("k1") && omap.contains("k2") && omap.contains("k3"), "{omap}");
    let vals = io.omap_get_vals(&oid).await.unwrap();
    assert_eq!(vals.keys().collect::<Vec<_>>(), ["k2", "k3"]);

    // an exclusive create of an existing object fails and applies nothing
    assert!(io.operate(&oid, WriteOp::new().create(true).setxattr("ver", b"3")).await.is_err());
    assert_eq!(io.getxattr(&oid, "ver").await.unwrap(), b"2");
    io.remove(&oid).await.unwrap();
}

/// A pool of its own (snapshot modes are per pool and cannot be mixed).
async fn own_pool(r: &Rados, prefix: &str) -> String {
    let pool = uniq(prefix);
    r.pool_create(&pool, 8).await.expect("pool create");
    pool
}

#[tokio::test]
async fn self_managed_snapshots_read_and_rollback() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let pool = own_pool(&r, "wsnap-sm").await;
    let mut io = r.ioctx(&pool).unwrap();
    let oid = "snapped";
    io.write_full(oid, b"v1").await.unwrap();
    io.setxattr(oid, "x", b"one").await.unwrap();
    let s1 = io.selfmanaged_snap_create().await.expect("selfmanaged_snap_create");
    io.set_snap_context(s1, vec![s1]);
    io.write_full(oid, b"v2, longer").await.unwrap();
    io.setxattr(oid, "x", b"two").await.unwrap();
    assert_eq!(io.read_full(oid).await.unwrap(), b"v2, longer", "head");

    let mut at = io.clone();
    at.set_read(s1);
    assert_eq!(at.stat(oid).await.unwrap().size, 2);
    assert_eq!(at.read_full(oid).await.unwrap(), b"v1", "read at the snapshot");
    assert_eq!(at.getxattr(oid, "x").await.unwrap(), b"one");
    // an object made after the snapshot does not exist in it
    io.write_full("later", b"new").await.unwrap();
    assert_eq!(at.stat("later").await.unwrap_err().errno(), Some(libc_errno::ENOENT));

    let s2 = io.selfmanaged_snap_create().await.unwrap();
    assert!(s2 > s1);
    io.set_snap_context(s2, vec![s1, s2]);
    io.selfmanaged_snap_rollback(oid, s1).await.expect("rollback");
    assert_eq!(io.read_full(oid).await.unwrap(), b"v1", "head after rollback");
    assert_eq!(io.getxattr(oid, "x").await.unwrap(), b"one");
    assert_eq!(rados_tool(c, &pool, &["get", oid, "-"]).unwrap(), b"v1", "rados get after rollback");
    let mut at2 = io.clone();
    at2.set_read(s2);
    assert_eq!(at2.read_full(oid).await.unwrap(), b"v2, longer", "snapshot 2 keeps v2");

    io.selfmanaged_snap_remove(s1).await.expect("selfmanaged_snap_remove");
    io.selfmanaged_snap_remove(s2).await.unwrap();
    assert!(r.osdmap().unwrap().pools[&io.pool_id()].snap_seq >= s2);
    // a pool with self-managed snapshots refuses pool snapshots
    assert!(io.snap_create("nope").await.is_err());
    r.pool_delete(&pool).await.unwrap();
}

#[tokio::test]
async fn pool_snapshots_read_rollback_and_lssnap() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let pool = own_pool(&r, "wsnap-pool").await;
    let io = r.ioctx(&pool).unwrap();
    let oid = "snapped";
    io.write_full(oid, b"v1").await.unwrap();
    io.snap_create("first").await.expect("mksnap");
    io.write_full(oid, b"v2").await.unwrap();
    io.snap_create("second").await.unwrap();
    io.write_full(oid, b"v3").await.unwrap();

    let first = io.snap_lookup("first").unwrap();
    let second = io.snap_lookup("second").unwrap();
    let mut at = io.clone();
    at.set_read(first);
    assert_eq!(at.read_full(oid).await.unwrap(), b"v1");
    at.set_read(second);
    assert_eq!(at.read_full(oid).await.unwrap(), b"v2");
    at.set_read(weft_rados::rados::SNAP_HEAD);
    assert_eq!(at.read_full(oid).await.unwrap(), b"v3");
    // (the tool says "selected snap 1 'first'" on stdout first)
    let got = rados_tool(c, &pool, &["-s", "first", "get", oid, "-"]).unwrap();
    assert!(got.ends_with(b"\nv1"), "rados -s first get: {}", String::from_utf8_lossy(&got));

    // lssnap as the rados tool prints it (its times are local: run it in UTC)
    let ours = weft_rados::cli::lssnap_text(&io.pool_snaps().unwrap());
    let out = Command::new("rados").env("TZ", "UTC").args(["-c", &c.conf, "-p", &pool, "lssnap"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(ours, String::from_utf8_lossy(&out.stdout), "weft lssnap vs rados lssnap");
    assert!(ours.ends_with("2 snaps\n"), "{ours}");

    io.snap_rollback(oid, "first").await.expect("rollback");
    assert_eq!(io.read_full(oid).await.unwrap(), b"v1");
    assert_eq!(rados_tool(c, &pool, &["get", oid, "-"]).unwrap(), b"v1");

    io.snap_remove("first").await.unwrap();
    assert!(io.snap_lookup("first").is_err());
    let out = Command::new("rados").env("TZ", "UTC").args(["-c", &c.conf, "-p", &pool, "lssnap"]).output().unwrap();
    assert_eq!(weft_rados::cli::lssnap_text(&io.pool_snaps().unwrap()), String::from_utf8_lossy(&out.stdout));
    // a pool with pool snapshots refuses self-managed ones
    assert!(io.selfmanaged_snap_create().await.is_err());
    r.pool_delete(&pool).await.unwrap();
}

/// Writes wait while the osdmap pauses them (as librados's do) and go
/// through once the flag is lifted, instead of being sent, dropped by the
/// OSD and failing on our timeout.
#[tokio::test]
async fn writes_wait_while_paused() {
    let Some(c) = cluster() else { return };
    let r = connect(c).await;
    let io = r.ioctx(&c.pool).unwrap();
    let oid = uniq("paused");
    r.mon_command(serde_json::json!({"prefix": "osd set", "key": "pause"}), b"").await.expect("osd set pause");
    r.wait_for_latest_osdmap().await.unwrap();
    let w = {
        let io = io.clone();
        let oid = oid.clone();
        tokio::spawn(async move { io.write_full(&oid, b"after the pause").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let waiting = !w.is_finished();
    r.mon_command(serde_json::json!({"prefix": "osd unset", "key": "pause"}), b"").await.expect("osd unset pause");
    assert!(waiting, "a write went through while writes were paused");
    w.await.unwrap().expect("the write completes once the pause is lifted");
    assert_eq!(io.read_full(&oid).await.unwrap(), b"after the pause");
    io.remove(&oid).await.unwrap();
}
