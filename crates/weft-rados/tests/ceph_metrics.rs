//! Issue #15 item 1, the RADOS families against a real Ceph 16 cluster
//! (../shared/scripts/ceph/ceph-up.sh, the same cluster ceph_live uses; it
//! only re-prints its settings when already up). Its own test binary, so
//! the process-wide registry holds only this test's operations: N writes, N
//! reads and one read of a missing object, then the exposition `/metrics`
//! would serve (`weft_metrics::render`) must count exactly those per pool,
//! with latency histograms of the same counts.
//! Runs only with WEFT_PEERS=1; then a missing cluster or tool is a failure.

#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::collections::BTreeMap;
use std::process::Command;

use weft_rados::{ClientConfig, ConfigSource, Rados};

mod common;
use common::shared_dir;

const N: u64 = 25;

/// The value of one sample line `series value` of the exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn per_pool_ops_and_latencies_count_what_was_done() {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to run the live Ceph tests");
        return;
    }
    let script = shared_dir().join("scripts/ceph/ceph-up.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {script:?}: {e}"));
    assert!(
        out.status.success(),
        "ceph-up.sh failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kv: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let pool = kv
        .get("CEPH_POOL")
        .cloned()
        .unwrap_or_else(|| "test".into());
    let cfg = ClientConfig::load(&ConfigSource {
        conf: Some(kv["CEPH_CONF"].clone()),
        mon_mode: Some("secure,crc".into()),
        osd_mode: Some("crc,secure".into()),
        ..Default::default()
    })
    .expect("client config");
    let r = Rados::connect(cfg).await.expect("connect");
    let io = r.ioctx(&pool).unwrap();
    let id = io.pool_id();
    let prefix = format!("metrics-{}-{}", std::process::id(), rand::random::<u32>());

    let before = weft_metrics::render(weft_metrics::Format::Prometheus);
    assert!(
        !before.contains(&format!("pool=\"{id}\"")),
        "nothing counted before the first operation:\n{before}"
    );
    for i in 0..N {
        io.write(&format!("{prefix}-{i}"), 0, format!("value {i}").as_bytes())
            .await
            .unwrap();
    }
    for i in 0..N {
        assert_eq!(
            &io.read(&format!("{prefix}-{i}"), 0, 64).await.unwrap()[..],
            format!("value {i}").as_bytes()
        );
    }
    // A missing object: the OSD answers ENOENT, counted as an error.
    let e = io
        .read(&format!("{prefix}-missing"), 0, 64)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let text = weft_metrics::render(weft_metrics::Format::Prometheus);

    let ops = |op: &str, result: &str| {
        sample(
            &text,
            &format!("weft_rados_ops_total{{pool=\"{id}\",op=\"{op}\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(ops("write", "ok"), Some(N as f64), "{text}");
    assert_eq!(ops("read", "ok"), Some(N as f64), "{text}");
    assert_eq!(ops("read", "error"), Some(1.0), "{text}");
    assert_eq!(ops("write", "error"), None, "{text}");
    let hist = |op: &str, part: &str| {
        sample(
            &text,
            &format!("weft_rados_op_duration_seconds_{part}{{pool=\"{id}\",op=\"{op}\"}}"),
        )
    };
    assert_eq!(hist("write", "count"), Some(N as f64), "{text}");
    assert_eq!(hist("read", "count"), Some((N + 1) as f64), "{text}");
    // Real round trips to an OSD took time, and the +Inf bucket holds them all.
    assert!(hist("write", "sum").unwrap() > 0.0, "{text}");
    let inf: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("weft_rados_op_duration_seconds_bucket{")
                && l.contains(&format!("pool=\"{id}\""))
                && l.contains("op=\"write\"")
                && l.contains("le=\"+Inf\"")
        })
        .collect();
    assert_eq!(inf.len(), 1, "{text}");
    assert!(inf[0].ends_with(&format!(" {N}")), "{}", inf[0]);

    for i in 0..N {
        io.remove(&format!("{prefix}-{i}")).await.unwrap();
    }
    r.shutdown();
}
