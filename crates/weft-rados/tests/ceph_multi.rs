//! Against a cluster of three monitors and three OSDs (WEFT_PEERS=1),
//! started by `scripts/ceph-multi.sh` in its own directory and
//! ports and wiped when the test ends:
//!
//! - placement with primary affinity, pg_temp, primary_temp, upmaps, an
//!   OSD reweight, an erasure-coded pool and a down OSD, compared with
//!   `osdmaptool --test-map-pgs-dump-all` on the cluster's own map of the
//!   same epoch and with the monitor's `osd map` for objects;
//! - monitor failover: the monitor the client talks to is killed, then
//!   another one is stopped (SIGSTOP: its TCP connections stay open), and
//!   mon commands, map updates and OSD writes carry on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use weft_rados::proto::osdmap::{OsdMap, PgId};
use weft_rados::{ClientConfig, ConfigSource, Rados};

mod common;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph-multi.sh")
}

/// Stops and wipes the cluster however the test ends (also resumes any
/// daemon the test left stopped).
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("down").output();
    }
}

fn up() -> BTreeMap<String, String> {
    let out = Command::new("bash").arg(script()).arg("up").output().expect("run ceph-multi.sh");
    assert!(out.status.success(), "ceph-multi.sh up: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn ceph(conf: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["120", "ceph", "-c", conf, "--connect-timeout", "60"])
        .args(args)
        .output()
        .expect("run ceph");
    assert!(out.status.success(), "ceph {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The pid of one of our daemons, checked against its command line so we
/// only ever signal processes this test started.
fn daemon_pid(dir: &str, conf: &str, name: &str) -> String {
    let pid = std::fs::read_to_string(format!("{dir}/run/{name}.pid")).unwrap().trim().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(conf), "pid {pid} is not our {name}");
    pid
}

fn signal(pid: &str, sig: &str) {
    assert!(Command::new("kill").args([sig, pid]).status().unwrap().success(), "kill {sig} {pid}");
}

/// Compares every PG of every pool in `map` with osdmaptool's answer for
/// the cluster's own encoding of the same epoch. Returns how many PGs
/// were compared and how many of them have an acting set or primary that
/// differs from the up set (the temp mappings at work).
fn compare_with_osdmaptool(conf: &str, map: &OsdMap, dir: &Path) -> (usize, usize) {
    let file = dir.join(format!("osdmap.{}", map.epoch));
    ceph(conf, &["osd", "getmap", &map.epoch.to_string(), "-o", file.to_str().unwrap()]);
    // the cluster's full map of that epoch, decoded by us, must place
    // exactly like the map we built from incrementals
    let full = OsdMap::decode(&std::fs::read(&file).unwrap()).expect("decode the cluster's full map");
    assert_eq!(full.epoch, map.epoch);
    let out = Command::new("osdmaptool").arg(&file).arg("--test-map-pgs-dump-all").output().unwrap();
    assert!(out.status.success(), "osdmaptool: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // WEFT_SAVE_ORACLE=DIR keeps the map and osdmaptool's answer for the
    // offline vectors in tests/oracle_vectors.rs
    if let Ok(save) = std::env::var("WEFT_SAVE_ORACLE") {
        std::fs::copy(&file, Path::new(&save).join(format!("osdmap-multi-e{}.bin", map.epoch))).unwrap();
        std::fs::write(Path::new(&save).join(format!("osdmap-multi-e{}.dump-all.txt", map.epoch)), text.as_bytes()).unwrap();
    }
    let inc = common::check_dump_all(map, &text, "map built from incrementals");
    let full = common::check_dump_all(&full, &text, "the cluster's full map");
    assert_eq!(inc, full);
    inc
}

/// Asks the monitor where objects go and compares with our map; retries
/// while the monitor answers from a different epoch than ours.
async fn compare_with_mon(rados: &Rados, pools: &[&str], names: usize) -> usize {
    let mut n = 0;
    for pool in pools {
        for i in 0..names {
            let name = format!("obj-{pool}-{i}-{}", i * 7919);
            for attempt in 0.. {
                let map = rados.wait_for_latest_osdmap().await.unwrap();
                let (out, _) = rados
                    .mon_command(serde_json::json!({"prefix": "osd map", "pool": pool, "object": name, "format": "json"}), b"")
                    .await
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                if v["epoch"].as_u64() != Some(map.epoch as u64) {
                    assert!(attempt < 20, "the map keeps changing under the comparison");
                    continue;
                }
                let pool_id = map.pool_by_name(pool).unwrap();
                let (pl, raw) = map.map_object(pool_id, &name, "").unwrap();
                let ints = |k: &str| -> Vec<i32> {
                    v[k].as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect()
                };
                assert_eq!(v["raw_pgid"].as_str().unwrap(), format!("{pool_id}.{raw:x}"), "{pool}/{name}");
                assert_eq!(v["pgid"].as_str().unwrap(), pl.pgid.to_string(), "{pool}/{name}");
                assert_eq!(ints("up"), pl.up, "{pool}/{name} up");
                assert_eq!(v["up_primary"].as_i64().unwrap() as i32, pl.up_primary, "{pool}/{name} up_primary");
                assert_eq!(ints("acting"), pl.acting, "{pool}/{name} acting");
                assert_eq!(v["acting_primary"].as_i64().unwrap() as i32, pl.acting_primary, "{pool}/{name} acting_primary");
                n += 1;
                break;
            }
        }
    }
    n
}

fn client_config(conf: &str) -> ClientConfig {
    let mut cfg = ClientConfig::load(&ConfigSource { conf: Some(conf.into()), ..Default::default() }).unwrap();
    // notice a stopped monitor within seconds (librados: 30 s by default)
    cfg.mon_ping_timeout = Duration::from_secs(4);
    cfg.op_timeout = Duration::from_secs(120);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_oracle_and_monitor_failover() {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to run against a three-monitor, three-OSD cluster");
        return;
    }
    let _down = Down;
    let kv = up();
    let conf = kv["CEPH_CONF"].clone();
    let dir = kv["CEPH_DIR"].clone();
    let rados = Rados::connect(client_config(&conf)).await.expect("connect");
    assert_eq!(rados.monc().monmap().unwrap().mons.len(), 3, "the client learns all three monitors");

    placement(&rados, &conf, &dir).await;
    failover(&rados, &conf, &dir).await;
}

async fn placement(rados: &Rados, conf: &str, dir: &str) {
    // replicated pools of size 3 and 2 (one with a pg_num that is not a
    // power of two) and an erasure-coded pool (k=2, m=1: positions matter,
    // holes stay holes)
    ceph(conf, &["osd", "pool", "create", "aff", "32", "32", "replicated"]);
    ceph(conf, &["osd", "pool", "set", "aff", "size", "3"]);
    ceph(conf, &["osd", "pool", "create", "odd", "48", "48", "replicated"]);
    ceph(conf, &["osd", "erasure-code-profile", "set", "ec21", "k=2", "m=1", "crush-failure-domain=osd"]);
    ceph(conf, &["osd", "pool", "create", "ec", "16", "16", "erasure", "ec21"]);
    rados.wait_for_latest_osdmap().await.unwrap();
    let io = rados.ioctx("aff").unwrap();
    for i in 0..8 {
        io.write_full(&format!("before-{i}"), b"placement").await.unwrap();
    }

    // Running OSDs peer and ask the monitor to drop temp mappings they do
    // not need; stopped ones keep the map still (the monitor waits
    // mon_osd_report_timeout, 15 min, before it suspects them).
    let osds: Vec<String> = (0..3).map(|i| daemon_pid(dir, conf, &format!("osd.{i}"))).collect();
    for p in &osds {
        signal(p, "-STOP");
    }
    ceph(conf, &["osd", "primary-affinity", "osd.0", "0.5"]);
    ceph(conf, &["osd", "primary-affinity", "osd.1", "0"]);
    let map = rados.wait_for_latest_osdmap().await.unwrap();
    let aff = map.pool_by_name("aff").unwrap();
    let odd = map.pool_by_name("odd").unwrap();
    let ec = map.pool_by_name("ec").unwrap();
    ceph(conf, &["osd", "pg-temp", &format!("{aff}.3"), "2", "0"]);
    ceph(conf, &["osd", "pg-temp", &format!("{odd}.2f"), "1", "2"]);
    ceph(conf, &["osd", "pg-temp", &format!("{ec}.4"), "2", "1", "0"]);
    ceph(conf, &["osd", "primary-temp", &format!("{aff}.5"), "1"]);
    ceph(conf, &["osd", "primary-temp", &format!("{odd}.7"), "2"]);
    ceph(conf, &["osd", "set-require-min-compat-client", "luminous"]);
    ceph(conf, &["osd", "pg-upmap-items", &format!("{aff}.7"), "0", "1"]);
    ceph(conf, &["osd", "pg-upmap", &format!("{odd}.8"), "1", "0"]);
    ceph(conf, &["osd", "reweight", "osd.2", "0.8"]);

    let tmp = tempfile::tempdir().unwrap();
    let map = rados.wait_for_latest_osdmap().await.unwrap();
    assert!(!map.pg_temp.is_empty() && !map.primary_temp.is_empty(), "temp mappings are in the map");
    let (pgs, temp) = compare_with_osdmaptool(conf, &map, tmp.path());
    assert!(temp >= 3, "only {temp} PGs are remapped by pg_temp/primary_temp");
    // (the monitor drops a temp mapping that equals what CRUSH gives anyway)
    assert!(map.pg_temp.len() >= 2 && !map.primary_temp.is_empty(), "temp mappings in epoch {}", map.epoch);
    // affinity 0 for osd.1: it may only lead a PG when every other OSD of
    // the up set declined too, which osd.2 (affinity 1) never does
    let mut led_by_1 = 0;
    for pool in [aff, odd] {
        let pg_num = map.pools[&pool].pg_num;
        for seed in 0..pg_num {
            let p = map.pg_to_up_acting(PgId { pool: pool as u64, seed }).unwrap();
            if p.up_primary == 1 && p.up.contains(&2) {
                led_by_1 += 1;
            }
        }
    }
    assert_eq!(led_by_1, 0, "osd.1 (affinity 0) leads PGs that osd.2 (affinity 1) is in");
    let objs = compare_with_mon(rados, &["aff", "odd", "ec"], 60).await;
    eprintln!("epoch {}: {pgs} PGs match osdmaptool ({temp} remapped), {objs} objects match the monitor", map.epoch);

    // a down OSD leaves up sets and temp sets (its primaries move on)
    ceph(conf, &["osd", "down", "osd.2"]);
    let map = rados.wait_for_latest_osdmap().await.unwrap();
    assert!(!map.is_up(2), "osd.2 is down in epoch {}", map.epoch);
    compare_with_osdmaptool(conf, &map, tmp.path());
    compare_with_mon(rados, &["aff", "odd", "ec"], 20).await;

    // resume the OSDs (osd.2 boots again: "wrongly marked me down") and
    // wait until writes go through
    for p in &osds {
        signal(p, "-CONT");
    }
    for attempt in 0.. {
        let map = rados.wait_for_latest_osdmap().await.unwrap();
        if map.is_up(2) {
            break;
        }
        assert!(attempt < 120, "osd.2 did not come back up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    io.write_full("after", b"placement").await.unwrap();
    assert_eq!(io.read_full("before-3").await.unwrap(), b"placement");
}

fn mon_name(port: u16, base: u16) -> String {
    ["a", "b", "c"][(port - base) as usize].to_string()
}

async fn quorum_size(rados: &Rados) -> usize {
    let (out, _) = rados.mon_command(serde_json::json!({"prefix": "quorum_status", "format": "json"}), b"").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["quorum_names"].as_array().map(|a| a.len()).unwrap_or(0)
}

async fn failover(rados: &Rados, conf: &str, dir: &str) {
    let base = 3320u16;
    let io = rados.ioctx("aff").unwrap();

    // 1. kill -9 the monitor we talk to
    let first = rados.monc().session_peer().expect("a mon session");
    let name = mon_name(first.port(), base);
    let pid = daemon_pid(dir, conf, &format!("mon.{name}"));
    signal(&pid, "-KILL");
    rados.pool_create("fo1", 8).await.expect("mon command after the monitor died");
    let second = rados.monc().session_peer().expect("a new mon session");
    eprintln!("killed mon.{name} ({first}); the client moved to {second}");
    assert_ne!(second, first, "the client moved to another monitor");
    let fo1 = rados.ioctx("fo1").expect("the new pool is in our map (subscription moved too)");
    fo1.write_full("x", b"after kill").await.unwrap();
    io.write_full("during-failover", b"1").await.unwrap();

    // bring it back and wait for a quorum of three
    let st = Command::new("ceph-mon").args(["-c", conf, "-i", &name]).status().unwrap();
    assert!(st.success(), "restarting mon.{name}");
    for attempt in 0.. {
        if quorum_size(rados).await == 3 {
            break;
        }
        assert!(attempt < 120, "mon.{name} did not rejoin the quorum");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 2. stop (SIGSTOP) the monitor we now talk to: the socket stays open,
    // only the keepalive timeout notices
    let second = rados.monc().session_peer().expect("a mon session");
    let name2 = mon_name(second.port(), base);
    let pid2 = daemon_pid(dir, conf, &format!("mon.{name2}"));
    signal(&pid2, "-STOP");
    let res = rados.pool_create("fo2", 8).await;
    let third = rados.monc().session_peer();
    signal(&pid2, "-CONT");
    res.expect("mon command while the monitor we talked to is stopped");
    let third = third.expect("a mon session");
    eprintln!("stopped mon.{name2} ({second}); the client moved to {third}");
    assert_ne!(third, second, "the client left the stopped monitor");
    rados.ioctx("fo2").unwrap().write_full("y", b"after stop").await.unwrap();
    let (newest, _) = rados.monc().get_version("osdmap").await.unwrap();
    assert_eq!(rados.wait_for_latest_osdmap().await.unwrap().epoch as u64, newest);
    assert_eq!(fo1.read_full("x").await.unwrap(), b"after kill");
}
