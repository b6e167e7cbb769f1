//! Durability and crash consistency: a child process (this test binary,
//! re-executed) writes and prints each acknowledged revision, is SIGKILLed,
//! and every acknowledged write must be there after reopening, with the
//! revision counter continuing. Torn tails are cut; damage elsewhere is a
//! typed error, never a panic.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weft_table::*;

const CHILD_ENV: &str = "WEFT_TABLE_KILL9_CHILD_DIR";

fn small_checkpoints() -> TablesConfig {
    // Checkpoints (snapshot + fresh WAL) happen every few hundred writes, so
    // the kill also lands around them.
    TablesConfig { wal_checkpoint_bytes: 16 * 1024, ..TablesConfig::default() }
}

/// Runs only inside the child: write until killed (bounded at 30 s).
#[test]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let tables = Tables::open(&dir, small_checkpoints()).await.unwrap();
        let t = tables.create("t", TableConfig::default()).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for w in 0..4u64 {
            let t = t.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("w{w}/{}", i % 50);
                    let value = format!("{w}-{i}-{}", "x".repeat((i % 40) as usize));
                    let line = if i % 5 == 4 {
                        // A conditional write (CAS) on a per-writer counter.
                        let ck = format!("count/{w}");
                        let r = t
                            .txn(Txn {
                                compares: vec![Compare::version_eq(ck.clone(), i / 5)],
                                success: vec![Op::Put { key: Bytes::from(ck.clone()), value: Bytes::from(value.clone()) }],
                                failure: vec![],
                            })
                            .await
                            .unwrap();
                        assert!(r.succeeded, "only this writer touches its counter");
                        format!("ACK {} {ck} {value}", r.revision)
                    } else {
                        let r = t.put(key.clone(), value.clone()).await.unwrap();
                        format!("ACK {} {key} {value}", r.revision)
                    };
                    if tx.send(line).is_err() {
                        break;
                    }
                    i += 1;
                }
            });
        }
        drop(tx);
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            // Printed only after the acknowledgement.
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test]
async fn kill9_keeps_every_acknowledged_write_and_the_revision_continues() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "kill9_child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut acks: Vec<(u64, String, String)> = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ACK ") {
                let mut it = rest.splitn(3, ' ');
                let rev: u64 = it.next().unwrap().parse().unwrap();
                acks.push((rev, it.next().unwrap().to_string(), it.next().unwrap().to_string()));
                seen2.store(acks.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
        acks
    });
    let t0 = Instant::now();
    while seen.load(std::sync::atomic::Ordering::SeqCst) < 600 && t0.elapsed() < Duration::from_secs(25) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let acks = reader.join().unwrap();
    assert!(acks.len() > 20, "child acknowledged only {} writes", acks.len());

    let tables = Tables::open(dir.path(), small_checkpoints()).await.unwrap();
    let t = tables.get("t").unwrap();
    let mut revs: Vec<u64> = acks.iter().map(|a| a.0).collect();
    revs.sort();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "every acknowledged write had its own revision");
    let max = *revs.last().unwrap();
    let rev = t.revision();
    assert!(rev >= max, "revision {rev} after reopen is below the acknowledged {max}");
    for (r, key, value) in &acks {
        let kv = t.get(key.as_bytes(), Some(*r)).await.unwrap().kv.unwrap_or_else(|| panic!("{key} at {r} missing"));
        assert_eq!(kv.mod_revision, *r, "{key}");
        assert_eq!(kv.value, Bytes::from(value.clone()), "{key} at {r}");
    }
    // Every revision up to the current one is a write that happened (no holes, no invented ones).
    let mut w = t.watch(WatchSpec { target: WatchTarget::Range(KeyRange::default()), start_revision: Some(1), prev_kv: false }).unwrap();
    let mut expect = 1;
    while expect <= rev {
        let e = w.next().await.unwrap();
        assert_eq!(e.revision, expect);
        expect += 1;
    }
    // The counter continues.
    assert_eq!(t.put("after", "kill").await.unwrap().revision, rev + 1);
    println!("{} acknowledged writes checked after SIGKILL; revision {rev}", acks.len());
}

async fn fill(dir: &Path, n: u64) {
    let tables = Tables::open(dir, TablesConfig::default()).await.unwrap();
    let t = tables.create("t", TableConfig::default()).await.unwrap();
    for i in 1..=n {
        assert_eq!(t.put(format!("k{i}"), format!("v{i}")).await.unwrap().revision, i);
    }
}

fn wal(dir: &Path) -> std::path::PathBuf {
    dir.join("tables/t/wal")
}

#[tokio::test]
async fn torn_last_record_is_cut_and_writes_continue() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    let full = std::fs::read(wal(dir.path())).unwrap();
    // Every cut inside the last record (and zeros appended after a whole log).
    let mut cuts: Vec<usize> = (1..30).collect();
    cuts.push(full.len() - 8 - 1);
    for cut in cuts {
        std::fs::write(wal(dir.path()), &full[..full.len() - cut]).unwrap();
        let tables = Tables::open(dir.path(), TablesConfig::default()).await.unwrap();
        let t = tables.get("t").unwrap();
        let rev = t.revision();
        assert!(rev < 10, "cut {cut}: torn record not discarded");
        for i in 1..=rev {
            assert_eq!(t.get(format!("k{i}").as_bytes(), None).await.unwrap().kv.unwrap().value, Bytes::from(format!("v{i}")));
        }
        assert_eq!(t.get(format!("k{}", rev + 1).as_bytes(), None).await.unwrap().kv, None, "cut {cut}: a torn write is never returned");
        assert_eq!(t.put("new", "x").await.unwrap().revision, rev + 1, "cut {cut}");
        drop(t);
        drop(tables);
        // The file was cut at the torn record, then appended to: it opens cleanly.
        let tables = Tables::open(dir.path(), TablesConfig::default()).await.unwrap();
        assert_eq!(tables.get("t").unwrap().revision(), rev + 1);
        drop(tables);
    }
    let mut zeros = full.clone();
    zeros.extend_from_slice(&[0u8; 4096]);
    std::fs::write(wal(dir.path()), &zeros).unwrap();
    let tables = Tables::open(dir.path(), TablesConfig::default()).await.unwrap();
    assert_eq!(tables.get("t").unwrap().revision(), 10);
}

#[tokio::test]
async fn damage_is_a_typed_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    let full = std::fs::read(wal(dir.path())).unwrap();

    // A flipped byte in the first record, with nine records after it.
    let mut bad = full.clone();
    bad[8 + 8 + 2] ^= 0x55;
    std::fs::write(wal(dir.path()), &bad).unwrap();
    match Tables::open(dir.path(), TablesConfig::default()).await {
        Err(Error::Corrupt { offset: 8, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("corrupt WAL opened"),
    }
    // A huge length in the middle of the file.
    let mut bad = full.clone();
    bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(wal(dir.path()), &bad).unwrap();
    assert!(matches!(Tables::open(dir.path(), TablesConfig::default()).await, Err(Error::Corrupt { .. })));
    // Not a WAL at all.
    std::fs::write(wal(dir.path()), b"hello, this is not a table log").unwrap();
    assert!(matches!(Tables::open(dir.path(), TablesConfig::default()).await, Err(Error::Corrupt { .. })));
    std::fs::write(wal(dir.path()), &full).unwrap();
    // A bad table.json.
    let meta = dir.path().join("tables/t/table.json");
    let good_meta = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, b"{not json").unwrap();
    assert!(matches!(Tables::open(dir.path(), TablesConfig::default()).await, Err(Error::Corrupt { .. })));
    std::fs::write(&meta, &good_meta).unwrap();
    assert_eq!(Tables::open(dir.path(), TablesConfig::default()).await.unwrap().get("t").unwrap().revision(), 10);
}

#[tokio::test]
async fn checkpoint_snapshot_reopens_and_a_bad_snapshot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TablesConfig { wal_checkpoint_bytes: 512, ..TablesConfig::default() };
    {
        let tables = Tables::open(dir.path(), cfg.clone()).await.unwrap();
        let t = tables.create("t", TableConfig::default()).await.unwrap();
        for i in 1..=100u64 {
            t.put(format!("k{}", i % 10), format!("v{i}")).await.unwrap();
        }
        t.compact(50).await.unwrap();
        t.delete("k3").await.unwrap();
        assert!(t.stats().wal_bytes < 1024, "WAL was checkpointed");
    }
    let snap = dir.path().join("tables/t/snapshot");
    assert!(snap.exists());
    {
        let tables = Tables::open(dir.path(), cfg.clone()).await.unwrap();
        let t = tables.get("t").unwrap();
        assert_eq!(t.revision(), 101);
        assert_eq!(t.compact_revision(), 50);
        assert_eq!(t.get(b"k4", Some(54)).await.unwrap().kv.unwrap().value, Bytes::from_static(b"v54"));
        assert!(matches!(t.get(b"k4", Some(49)).await, Err(Error::Compacted { compact_revision: 50, .. })));
        assert_eq!(t.get(b"k3", None).await.unwrap().kv, None);
        assert_eq!(t.stats().keys, 9);
    }
    let mut bytes = std::fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(&snap, &bytes).unwrap();
    assert!(matches!(Tables::open(dir.path(), cfg).await, Err(Error::Corrupt { .. })));
}

#[tokio::test]
async fn registry_names_limits_and_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TablesConfig { max_tables: 3, max_key_bytes: 8, max_value_bytes: 16, max_txn_ops: 3, max_range_limit: 5, ..TablesConfig::default() };
    let tables = Tables::open(dir.path(), cfg.clone()).await.unwrap();
    for bad in ["", ".hidden", "-x", "a/b", "a b", "ä", &"n".repeat(129)] {
        assert!(matches!(tables.create(bad, TableConfig::default()).await, Err(Error::InvalidArgument { .. })), "{bad:?}");
    }
    let t = tables.create("users.v1_x-2", TableConfig { replicas: 3 }).await.unwrap();
    assert!(matches!(tables.create("users.v1_x-2", TableConfig::default()).await, Err(Error::AlreadyExists(_))));
    tables.create("b", TableConfig::default()).await.unwrap();
    tables.create("c", TableConfig::default()).await.unwrap();
    assert!(matches!(tables.create("d", TableConfig::default()).await, Err(Error::TooMany { limit: 3, .. })));
    assert_eq!(tables.list().iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec!["b", "c", "users.v1_x-2"]);

    assert!(matches!(t.put("123456789", "v").await, Err(Error::TooLarge { limit: 8, .. })));
    assert!(matches!(t.put("k", "x".repeat(17)).await, Err(Error::TooLarge { limit: 16, .. })));
    assert!(matches!(t.put("", "v").await, Err(Error::InvalidArgument { .. })));
    let op = Op::Put { key: Bytes::from_static(b"a"), value: Bytes::new() };
    let big = Txn { compares: vec![Compare::absent(Bytes::from_static(b"z"))], success: vec![op.clone(), op.clone(), op], failure: vec![] };
    assert!(matches!(t.txn(big).await, Err(Error::TooLarge { limit: 3, .. })));
    assert!(matches!(t.range(RangeSpec { limit: Some(6), ..Default::default() }).await, Err(Error::TooLarge { limit: 5, .. })));
    for i in 0..7 {
        t.put(format!("k{i}"), "v").await.unwrap();
    }
    let r = t.range(RangeSpec::default()).await.unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (5, true, 7), "no limit asked: the configured one, and `more` says so");
    let s = t.stats();
    assert_eq!((s.writes, s.write_errors, s.keys), (7, 4, 7));
    let g = tables.gauges();
    assert!(g.contains(&("table.users.v1_x-2.keys".to_string(), serde_json::json!(7))));

    // Drop, then create again: a new, empty table.
    tables.drop("b").await.unwrap();
    assert!(matches!(tables.drop("b").await, Err(Error::NotFound(_))));
    let b = tables.create("b", TableConfig::default()).await.unwrap();
    assert_eq!(b.revision(), 0);
    drop((t, b, tables));

    // Leftovers of a create or drop interrupted by a crash are removed on open.
    std::fs::create_dir_all(dir.path().join("tables/.creating-x")).unwrap();
    std::fs::create_dir_all(dir.path().join("tables/.dropped-y")).unwrap();
    let tables = Tables::open(dir.path(), cfg).await.unwrap();
    assert!(!dir.path().join("tables/.creating-x").exists());
    assert!(!dir.path().join("tables/.dropped-y").exists());
    assert_eq!(tables.get("users.v1_x-2").unwrap().config().replicas, 3);
    assert_eq!(tables.get("users.v1_x-2").unwrap().revision(), 7);
}
