//! Pool statistics, cluster status and PG states against a Ceph 16 cluster
//! of its own that runs a manager (the numbers come from the PG map the
//! mgr reports; without one `rados df` shows no pools). Started with
//! ../shared/scripts/ceph/ceph-up.sh in /tmp/weft-ceph-state (monitor on
//! 3330/6830, CEPH_WITH_MGR=1, needs the ceph-mgr package) and stopped and
//! wiped at the end. Compared with `rados df` and `ceph -s` / `ceph pg
//! ls-by-pool`. Runs only with WEFT_PEERS=1.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_rados::state::{ClusterDf, PoolPgStates};
use weft_rados::{ClientConfig, ConfigSource, Rados};

mod common;
use common::shared_dir;

const DIR: &str = "/tmp/weft-ceph-state";

struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(shared_dir().join("scripts/ceph/ceph-down.sh"))
            .arg("--wipe")
            .env("CEPH_DIR", DIR)
            .output();
    }
}

fn up() -> String {
    let out = Command::new("bash")
        .arg(shared_dir().join("scripts/ceph/ceph-up.sh"))
        .env("CEPH_DIR", DIR)
        .env("MON_V2_PORT", "3330")
        .env("MON_V1_PORT", "6830")
        .env("CEPH_WITH_MGR", "1")
        .output()
        .expect("ceph-up.sh");
    assert!(
        out.status.success(),
        "ceph-up.sh with a mgr failed (apt-get install ceph-mgr?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kv: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    kv["CEPH_CONF"].clone()
}

fn tool_json(bin: &str, conf: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("timeout").arg("60").arg(bin).args(["-c", conf]).args(args).output().expect(bin);
    assert!(out.status.success(), "{bin} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{bin} {args:?}: {e}"))
}

/// `rados df --format json`: pool name -> num_objects.
fn rados_df_objects(conf: &str) -> BTreeMap<String, u64> {
    let v = tool_json("rados", conf, &["df", "--format", "json"]);
    v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["num_objects"].as_u64().unwrap()))
        .collect()
}

fn ours_objects(df: &ClusterDf) -> BTreeMap<String, u64> {
    df.pools.iter().map(|p| (p.name.clone(), p.objects)).collect()
}

#[tokio::test]
async fn df_status_and_pg_states_match_the_ceph_tools() {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to run the live Ceph tests");
        return;
    }
    let _down = Down;
    let conf = up();
    let cfg = ClientConfig::load(&ConfigSource { conf: Some(conf.clone()), ..Default::default() }).unwrap();
    let r = Rados::connect(cfg).await.expect("connect");
    r.pool_create("dfpool", 8).await.unwrap();
    let io = r.ioctx("dfpool").unwrap();
    for i in 0..37 {
        io.write_full(&format!("o{i}"), &vec![7u8; 1000 + i]).await.unwrap();
    }

    // The PG stats reach the mgr and the monitor every few seconds: wait
    // until both tools report the 37 objects, then compare every pool.
    let until = Instant::now() + Duration::from_secs(90);
    let (ours, theirs) = loop {
        let ours = r.df().await.expect("df");
        let theirs = rados_df_objects(&conf);
        let settled = ours_objects(&ours).get("dfpool") == Some(&37) && theirs.get("dfpool") == Some(&37);
        if (settled && ours_objects(&ours) == theirs) || Instant::now() > until {
            break (ours, theirs);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(ours_objects(&ours), theirs, "objects per pool: weft df vs rados df");
    assert_eq!(ours_objects(&ours)["dfpool"], 37);
    let p = ours.pools.iter().find(|p| p.name == "dfpool").unwrap();
    assert_eq!(p.stored, (0..37).map(|i| 1000 + i as u64).sum::<u64>(), "bytes stored");
    assert!(p.wr >= 37, "write ops {}", p.wr);
    assert!(ours.total_bytes > 0 && ours.total_avail_bytes <= ours.total_bytes);
    assert!(ours.render().contains("dfpool"));

    // status: compare with `ceph -s --format json`
    let st = r.status().await.expect("status");
    let ceph = tool_json("ceph", &conf, &["-s", "--format", "json"]);
    assert_eq!(st.fsid, ceph["fsid"].as_str().unwrap());
    assert_eq!(st.health.status, ceph["health"]["status"].as_str().unwrap());
    let their_checks: Vec<&String> = ceph["health"]["checks"].as_object().unwrap().keys().collect();
    assert_eq!(st.health.checks.keys().collect::<Vec<_>>(), their_checks);
    assert_eq!(st.mons.num_mons, 1);
    assert_eq!(st.mons.quorum, ["a"]);
    assert_eq!((st.osds.num_osds, st.osds.num_up_osds, st.osds.num_in_osds), (1, 1, 1));
    assert_eq!(u64::from(st.osds.num_osds), ceph["osdmap"]["num_osds"].as_u64().unwrap());
    assert!(st.mgr_available);
    assert_eq!(u64::from(st.pgs.num_pgs), ceph["pgmap"]["num_pgs"].as_u64().unwrap());
    assert_eq!(st.pgs.by_state.values().sum::<u32>(), st.pgs.num_pgs);

    // PG states per pool: compare with `ceph pg ls-by-pool`
    let pools = r.pg_states().await.expect("pg states");
    let mine: &PoolPgStates = pools.iter().find(|p| p.pool == "dfpool").expect("dfpool in the pg dump");
    assert_eq!(mine.states.values().sum::<u32>(), 8);
    let ls = tool_json("ceph", &conf, &["pg", "ls-by-pool", "dfpool", "--format", "json"]);
    let mut theirs: BTreeMap<String, u32> = BTreeMap::new();
    for pg in ls["pg_stats"].as_array().unwrap() {
        *theirs.entry(pg["state"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(mine.states, theirs, "dfpool PG states: weft vs ceph pg ls-by-pool");
    let report = r.status_report().await.unwrap();
    let text = report.render();
    assert!(text.contains("health: HEALTH_") && text.contains("dfpool"), "{text}");
    r.shutdown();
}
