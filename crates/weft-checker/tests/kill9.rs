//! The recorder and checker against a real `weft serve` child process: a
//! history with a kill -9 in the middle (fsync `always`) passes, and a
//! corrupted copy of that same history fails.
//!
//! Needs the `weft` binary: `WEFT_BIN`, else target/debug/weft (built by
//! `cargo test --workspace`, or `cargo build -p weft`). A missing binary
//! fails the test rather than skipping it.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_checker::recorder::{Recorder, RecorderConfig};
use weft_checker::{check, Event, History, Rule};

fn weft_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WEFT_BIN") {
        return p.into();
    }
    // target/<profile>/deps/kill9-HASH -> target/<profile>/weft: the binary of
    // this target directory, wherever CARGO_TARGET_DIR puts it.
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(|d| d.parent()).unwrap().join("weft");
    assert!(p.exists(), "{} is missing: run `cargo build -p weft` (or set WEFT_BIN)", p.display());
    p
}

fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn serve(dir: &std::path::Path, port: u16) -> Child {
    Command::new(weft_bin())
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--disable", "http", "--fsync", "always"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until the recorder has `n` acknowledged produces.
async fn wait_acked(r: &Recorder, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while r.acked() < n {
        assert!(Instant::now() < deadline, "only {} of {n} produces acknowledged", r.acked());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn record_with_kill9() -> History {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(dir.path(), port);
    let cfg = RecorderConfig {
        nodes: vec![format!("tcp://127.0.0.1:{port}")],
        topic: "kill9".into(),
        partitions: 2,
        producers: 4,
        duration: Duration::from_secs(120),
        request_timeout: Duration::from_secs(2),
        reach_timeout: Duration::from_secs(30),
        ..RecorderConfig::default()
    };
    let r = Arc::new(Recorder::new(cfg).unwrap());
    r.create_topic().await.unwrap();
    let producing = tokio::spawn({
        let r = r.clone();
        async move { r.produce().await }
    });
    wait_acked(&r, 300).await;
    // Three kills: one may land when no produce is on the wire (each
    // producer between an ack and its next send; the client then sends on
    // a new connection), and the test wants a cut one (CI saw that once).
    for _ in 0..3 {
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = r.acked();
        // Same directory, same port: the producers' clients reconnect on their own.
        child = serve(dir.path(), port);
        wait_acked(&r, before + 300).await;
    }
    r.stop();
    producing.await.unwrap().unwrap();
    let missed = r.final_reads().await;
    assert!(missed.is_empty(), "final reads incomplete: {missed:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    r.history()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_history_passes_and_its_corruptions_fail() {
    let h = record_with_kill9().await;
    let report = check(&h);
    assert!(report.ok(), "{:#?}", report.violations.iter().take(10).collect::<Vec<_>>());
    let s = &report.stats;
    assert!(s.acked >= 1200, "{s:?}");
    // A kill was seen mid-run: some produce's fate was unknown.
    assert!(s.info >= 1, "no produce was cut by the kill: {s:?}");
    assert_eq!(s.complete_final_reads, 2);
    assert_eq!(s.final_reads, s.acked + s.info_seen, "the final reads hold exactly the acked records and the unknown ones that were written");

    // The CLI agrees, and says so with its exit code.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    h.save(&good).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_weft-check")).arg(&good).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());

    // Corruption 1: one acknowledged record missing from the final read.
    let acked: std::collections::HashSet<String> = h.events.iter().filter_map(|e| if let Event::Ok { value, .. } = e { Some(value.clone()) } else { None }).collect();
    let mut bad = h.clone();
    let i = bad.events.iter().position(|e| matches!(e, Event::Read { value, .. } if acked.contains(value))).unwrap();
    bad.events.remove(i);
    let r = check(&bad);
    assert!(r.has(Rule::LostAck), "{:?}", r.counts());
    let bad_path = dir.path().join("bad.jsonl");
    bad.save(&bad_path).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_weft-check")).arg(&bad_path).stdout(Stdio::null()).status().unwrap();
    assert_eq!(st.code(), Some(1));

    // Corruption 2: an acknowledged produce recorded as definitely failed.
    let mut bad = h.clone();
    let i = bad.events.iter().rposition(|e| matches!(e, Event::Ok { .. })).unwrap();
    if let Event::Ok { process, partition, value, time_us, .. } = bad.events[i].clone() {
        bad.events[i] = Event::Fail { process, partition, value, time_us, error: "corrupted".into() };
    }
    assert!(check(&bad).has(Rule::FailedRead));

    // Corruption 3: two records of one partition swap places in the read.
    let mut bad = h.clone();
    let reads: Vec<usize> = bad.events.iter().enumerate().filter(|(_, e)| matches!(e, Event::Read { partition: 0, .. })).map(|(i, _)| i).take(2).collect();
    let (a, b) = (reads[0], reads[1]);
    let (Event::Read { value: va, .. }, Event::Read { value: vb, .. }) = (bad.events[a].clone(), bad.events[b].clone()) else { unreachable!() };
    if let Event::Read { value, .. } = &mut bad.events[a] {
        *value = vb;
    }
    if let Event::Read { value, .. } = &mut bad.events[b] {
        *value = va;
    }
    assert!(!check(&bad).ok(), "swapped records went unnoticed");
}
