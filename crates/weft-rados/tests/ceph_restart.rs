//! Daemon restarts mid-workload (WEFT_PEERS=1). A separate test binary so
//! the restarts do not disturb the other live tests, which run in parallel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use weft_rados::{ClientConfig, ConfigSource, Rados};

mod common;
use common::shared_dir;

/// This test restarts daemons and changes the cluster's connection modes,
/// so it gets a cluster of its own (own directory and monitor ports), on
/// bluestore, which keeps its PGs across an OSD restart (memstore does not).
const OWN_CLUSTER: [(&str, &str); 5] = [
    ("CEPH_DIR", "/tmp/weft-ceph-restart"),
    ("MON_V2_PORT", "3310"),
    ("MON_V1_PORT", "6799"),
    ("CEPH_OBJECTSTORE", "bluestore"),
    ("STORE_BYTES", "4294967296"),
];

/// Stops (and wipes) the test's own cluster however the test ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let script = shared_dir().join("scripts/ceph/ceph-down.sh");
        let _ = Command::new("bash").arg(&script).arg("--wipe").envs(OWN_CLUSTER).output();
    }
}

fn up() -> BTreeMap<String, String> {
    let script = shared_dir().join("scripts/ceph/ceph-up.sh");
    let out = Command::new("bash").arg(&script).envs(OWN_CLUSTER).output().unwrap_or_else(|e| panic!("{script:?}: {e}"));
    assert!(out.status.success(), "ceph-up.sh: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// Stops a daemon by its pid file (only if its command line names our
/// conf, like ceph-down.sh does) and starts it again the same way.
fn restart(conf: &str, run_dir: &str, daemon: &str, id: &str, down_for: Duration) {
    let pidf = format!("{run_dir}/{}.{id}.pid", daemon.trim_start_matches("ceph-"));
    let pid = std::fs::read_to_string(&pidf).unwrap().trim().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(conf), "pid {pid} is not our {daemon}");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(down_for);
    let st = Command::new(daemon).args(["-c", conf, "-i", id]).status().unwrap();
    assert!(st.success(), "restarting {daemon}.{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_mon_and_osd_restarts_and_renews_tickets() {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to run the live Ceph restart test");
        return;
    }
    let _down = Down;
    let kv = up();
    let conf = kv["CEPH_CONF"].clone();
    let pool = kv.get("CEPH_POOL").cloned().unwrap_or_else(|| "test".into());
    let run_dir = format!("{}/run", PathBuf::from(&conf).parent().unwrap().display());
    let cfg = ClientConfig::load(&ConfigSource { conf: Some(conf.clone()), ..Default::default() }).unwrap();
    let r = Rados::connect(cfg).await.unwrap();
    let io = r.ioctx(&pool).unwrap();
    let gid = r.monc().global_id();

    // ticket renewal, then fresh OSD sessions must authorize with the new tickets
    r.monc().renew_tickets().await.unwrap();
    r.reset_osd_sessions().await;
    io.write_full("restart-a", b"before").await.unwrap();

    // monitor restart: OSD I/O continues, the mon session comes back with the
    // same global_id (reclaim with insecure reclaim disabled) and commands work
    let (c2, rd2) = (conf.clone(), run_dir.clone());
    let t = tokio::task::spawn_blocking(move || restart(&c2, &rd2, "ceph-mon", "a", Duration::from_secs(2)));
    for i in 0..20 {
        io.write_full(&format!("restart-m{i}"), b"during mon restart").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.await.unwrap();
    let (out, _) = tokio::time::timeout(
        Duration::from_secs(60),
        r.mon_command(serde_json::json!({"prefix": "osd pool ls", "format": "json"}), b""),
    )
    .await
    .expect("mon command after restart")
    .unwrap();
    assert!(String::from_utf8_lossy(&out).contains(&pool));
    assert_eq!(r.monc().global_id(), gid, "global_id must be reclaimed");

    // OSD session loss mid-workload: in-flight ops are resent on a new session
    let writer = {
        let io = io.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                io.write_full(&format!("restart-o{i}"), b"during osd trouble").await.unwrap();
            }
        })
    };
    for _ in 0..5 {
        r.reset_osd_sessions().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(60), writer).await.expect("writes across session loss").unwrap();
    assert_eq!(&io.read("restart-o9", 0, 100).await.unwrap()[..], b"during osd trouble");

    // A real OSD restart only on bluestore: memstore (the default test
    // store) loses its PGs when the daemon restarts.
    if kv.get("CEPH_OBJECTSTORE").map(|s| s.as_str()) == Some("bluestore") {
        let (c3, rd3) = (conf.clone(), run_dir.clone());
        let t = tokio::task::spawn_blocking(move || restart(&c3, &rd3, "ceph-osd", "0", Duration::from_secs(1)));
        let writer = {
            let io = io.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    io.write_full(&format!("restart-o{i}"), b"during osd restart").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        t.await.unwrap();
        tokio::time::timeout(Duration::from_secs(120), writer).await.expect("writes after osd restart").unwrap();
        assert_eq!(&io.read("restart-o9", 0, 100).await.unwrap()[..], b"during osd restart");
    } else {
        eprintln!("osd restart part skipped: needs CEPH_OBJECTSTORE=bluestore (memstore drops its PGs on restart)");
    }
    // The cluster forced to one mode at a time: monitors accept only crc,
    // OSDs only secure; a client offering both must land on those.
    for (who, name, value) in [("mon", "ms_mon_service_mode", "crc"), ("osd", "ms_service_mode", "secure")] {
        r.mon_command(serde_json::json!({"prefix": "config set", "who": who, "name": name, "value": value}), b"")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cfg = ClientConfig::load(&ConfigSource {
        conf: Some(conf.clone()),
        mon_mode: Some("secure,crc".into()),
        osd_mode: Some("crc,secure".into()),
        ..Default::default()
    })
    .unwrap();
    let forced = Rados::connect(cfg).await.unwrap();
    let fio = forced.ioctx(&pool).unwrap();
    fio.write_full("restart-forced", b"forced modes").await.unwrap();
    let mon_mode = forced.monc().mode.load(std::sync::atomic::Ordering::Relaxed) as u32;
    let osd_mode = forced.osd_session_mode(0).await;
    forced.shutdown();
    for (who, name) in [("mon", "ms_mon_service_mode"), ("osd", "ms_service_mode")] {
        r.mon_command(serde_json::json!({"prefix": "config rm", "who": who, "name": name}), b"").await.unwrap();
    }
    assert_eq!(mon_mode, weft_rados::proto::conn::CON_MODE_CRC, "mon forced to crc");
    assert_eq!(osd_mode, Some(weft_rados::proto::conn::CON_MODE_SECURE), "osd forced to secure");
    let _ = io.remove("restart-forced").await;

    for i in 0..20 {
        let _ = io.remove(&format!("restart-m{i}")).await;
    }
    for i in 0..10 {
        let _ = io.remove(&format!("restart-o{i}")).await;
    }
    let _ = io.remove("restart-a").await;
    r.shutdown();
}
