//! Watch: history replay then live, with writes running concurrently; every
//! event exactly once and in order across the hand-off; compacted starts
//! refused; slow watchers cancelled with a bounded buffer.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use weft_table::*;

async fn open(buffer: u64) -> (tempfile::TempDir, Tables, Table) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TablesConfig { watch_buffer_events: buffer, max_watchers_per_table: 8, ..TablesConfig::default() };
    let tables = Tables::open(dir.path(), cfg).await.unwrap();
    let t = tables.create("w", TableConfig::default()).await.unwrap();
    (dir, tables, t)
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("k/{:02}", i % 7))
}

fn val(i: u64) -> Bytes {
    Bytes::from(format!("v{i}"))
}

async fn collect_n(w: &mut Watcher, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(tokio::time::timeout(std::time::Duration::from_secs(60), w.next()).await.expect("watch stalled").unwrap());
    }
    out
}

/// Collect events until `last` revision is reached (one event per revision).
async fn collect_until(w: &mut Watcher, last: u64) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(60), w.next()).await.expect("watch stalled").unwrap();
        let rev = e.revision;
        out.push(e);
        if rev >= last {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_while_writing_every_event_once_in_order() {
    // A buffer larger than the whole run: this test is about the hand-off, not slowness.
    let (_d, _tables, t) = open(10_000).await;
    for i in 1..=150 {
        t.put(key(i), val(i)).await.unwrap();
    }
    assert_eq!(t.revision(), 150);
    // Writers keep going (several tasks: group commit batches several writes per fsync)
    // while watchers start at different past revisions.
    let total = 600u64;
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let t = t.clone();
            tokio::spawn(async move {
                for j in 0..150u64 {
                    let i = 1000 + w * 1000 + j;
                    t.put(key(i), val(i)).await.unwrap();
                }
            })
        })
        .collect();
    let mut watchers = Vec::new();
    for start in [1u64, 60, 149, 151] {
        let w = t.watch(WatchSpec { target: WatchTarget::Prefix(Bytes::from_static(b"k/")), start_revision: Some(start), prev_kv: true }).unwrap();
        watchers.push((start, w));
        tokio::task::yield_now().await;
    }
    let mut one = t
        .watch(WatchSpec { target: WatchTarget::Key(key(3)), start_revision: Some(100), prev_kv: false })
        .unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(t.revision(), total);
    for (start, mut w) in watchers {
        let evs = collect_until(&mut w, total).await;
        let revs: Vec<u64> = evs.iter().map(|e| e.revision).collect();
        assert_eq!(revs, (start..=total).collect::<Vec<_>>(), "watcher from {start}: every revision exactly once, in order");
        for e in &evs {
            assert_eq!(e.kind, EventKind::Put);
            let now = t.get(&e.kv.key, Some(e.revision)).await.unwrap().kv.unwrap();
            assert_eq!(e.kv, now, "event matches the key as of its revision");
            if e.kv.version > 1 {
                let prev = t.get(&e.kv.key, Some(e.revision - 1)).await.unwrap().kv;
                assert_eq!(e.prev_kv, prev, "prev_kv is the version before");
            }
        }
    }
    // The key watcher saw only its key, from 100 on, each revision once.
    let mut last = 0;
    let mut seen = 0;
    while last < t.get(&key(3), None).await.unwrap().kv.unwrap().mod_revision {
        let e = one.next().await.unwrap();
        assert_eq!(e.kv.key, key(3));
        assert!(e.revision > last && e.revision >= 100);
        assert!(e.prev_kv.is_none(), "prev_kv not asked for");
        last = e.revision;
        seen += 1;
    }
    assert!(seen > 10);
    assert!(t.stats().events_sent >= total * 3);
}

#[tokio::test]
async fn deletes_and_transactions_arrive_as_events() {
    let (_d, _tables, t) = open(64).await;
    let mut w = t.watch(WatchSpec { target: WatchTarget::Prefix(Bytes::from_static(b"a")), start_revision: None, prev_kv: true }).unwrap();
    t.put("a1", "x").await.unwrap(); // 1
    t.put("b1", "x").await.unwrap(); // 2, not watched
    t.delete("a1").await.unwrap(); // 3
    t.delete("a1").await.unwrap(); // nothing: no revision, no event
    let r = t
        .txn(Txn {
            compares: vec![Compare::absent(Bytes::from_static(b"a2"))],
            success: vec![
                Op::Put { key: Bytes::from_static(b"a3"), value: Bytes::from_static(b"3") },
                Op::Put { key: Bytes::from_static(b"a2"), value: Bytes::from_static(b"2") },
            ],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 4);
    let evs = collect_n(&mut w, 4).await;
    let got: Vec<(EventKind, &[u8], u64)> = evs.iter().map(|e| (e.kind, &e.kv.key[..], e.revision)).collect();
    assert_eq!(
        got,
        vec![
            (EventKind::Put, &b"a1"[..], 1),
            (EventKind::Delete, &b"a1"[..], 3),
            (EventKind::Put, &b"a2"[..], 4),
            (EventKind::Put, &b"a3"[..], 4)
        ],
        "one transaction's events share a revision, in key order"
    );
    assert_eq!(evs[1].prev_kv.as_ref().unwrap().value, Bytes::from_static(b"x"));
    assert_eq!(evs[1].kv.mod_revision, 3);
    // The same history replayed from revision 1 gives the same events.
    let mut again = t.watch(WatchSpec { target: WatchTarget::Prefix(Bytes::from_static(b"a")), start_revision: Some(1), prev_kv: true }).unwrap();
    assert_eq!(collect_n(&mut again, 4).await, evs);
}

#[tokio::test]
async fn compacted_start_is_refused() {
    let (_d, _tables, t) = open(64).await;
    for i in 1..=20 {
        t.put(key(i), val(i)).await.unwrap();
    }
    t.compact(10).await.unwrap();
    let spec = |start| WatchSpec { target: WatchTarget::Prefix(Bytes::from_static(b"k/")), start_revision: Some(start), prev_kv: false };
    match t.watch(spec(5)) {
        Err(Error::Compacted { compact_revision: 10, requested: 5 }) => {}
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("watch from a compacted revision accepted"),
    }
    let mut w = t.watch(spec(10)).unwrap();
    let evs = collect_until(&mut w, 20).await;
    assert_eq!(evs.iter().map(|e| e.revision).collect::<Vec<_>>(), (10..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_start_revision_in_the_future_waits_for_it() {
    let (_d, _tables, t) = open(64).await;
    t.put("k/a", "1").await.unwrap();
    let mut w = t.watch(WatchSpec { target: WatchTarget::Prefix(Bytes::from_static(b"k/")), start_revision: Some(4), prev_kv: false }).unwrap();
    let (e, _) = tokio::join!(w.next(), async {
        for i in 2..=4 {
            tokio::task::yield_now().await;
            t.put("k/a", format!("{i}")).await.unwrap();
        }
    });
    let e = e.unwrap();
    assert_eq!((e.revision, &e.kv.value[..]), (4, &b"4"[..]), "revisions before the start are not delivered");
}

#[tokio::test]
async fn compaction_overtaking_a_catching_up_watcher_ends_it_with_compacted() {
    // Buffer 2: the watcher catches up two events at a time.
    let (_d, _tables, t) = open(2).await;
    for i in 1..=20 {
        t.put(key(i), val(i)).await.unwrap();
    }
    let mut w = t.watch(WatchSpec { target: WatchTarget::Prefix(Bytes::from_static(b"k/")), start_revision: Some(1), prev_kv: false }).unwrap();
    assert_eq!(w.next().await.unwrap().revision, 1);
    t.compact(15).await.unwrap();
    // What was already read from history is delivered, then the watch ends.
    assert_eq!(w.next().await.unwrap().revision, 2);
    assert!(matches!(w.next().await, Err(Error::Compacted { compact_revision: 15, .. })));
}

#[tokio::test]
async fn slow_watcher_is_cancelled_and_its_buffer_stays_bounded() {
    let (_d, _tables, t) = open(8).await;
    let mut w = t.watch(WatchSpec { target: WatchTarget::Prefix(Bytes::from_static(b"k/")), start_revision: None, prev_kv: false }).unwrap();
    // The first next() registers the watcher live; a write wakes it.
    let (e, _) = tokio::join!(w.next(), async {
        tokio::task::yield_now().await;
        t.put(key(1), val(1)).await.unwrap();
    });
    // The put may have landed before registration (then it comes from history): either way revision 1.
    assert_eq!(e.unwrap().revision, 1);
    // 100 writes nobody reads.
    for i in 2..=101 {
        t.put(key(i), val(i)).await.unwrap();
    }
    let mut got = Vec::new();
    let err = loop {
        match w.next().await {
            Ok(e) => got.push(e.revision),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::SlowWatcher { buffer: 8 }), "{err}");
    // Only the buffered events, contiguous from 2: nothing more was held for it.
    assert_eq!(got, (2..2 + got.len() as u64).collect::<Vec<_>>());
    assert!(got.len() <= 8, "{} events buffered for a watcher with a buffer of 8", got.len());
    let s = t.stats();
    assert_eq!(s.slow_watchers_cancelled, 1);
    // The client resumes from its last revision + 1 and gets the rest.
    let next = got.last().copied().unwrap_or(1) + 1;
    let mut again = t.watch(WatchSpec { target: WatchTarget::Prefix(Bytes::from_static(b"k/")), start_revision: Some(next), prev_kv: false }).unwrap();
    let evs = collect_until(&mut again, 101).await;
    assert_eq!(evs.iter().map(|e| e.revision).collect::<Vec<_>>(), (next..=101).collect::<Vec<_>>());
}

#[tokio::test]
async fn watcher_limit_drop_and_table_drop() {
    let (_d, tables, t) = open(8).await;
    let spec = WatchSpec { target: WatchTarget::Key(Bytes::from_static(b"x")), start_revision: None, prev_kv: false };
    let mut ws: Vec<Watcher> = (0..8).map(|_| t.watch(spec.clone()).unwrap()).collect();
    assert_eq!(t.stats().watchers, 8);
    assert!(matches!(t.watch(spec.clone()), Err(Error::TooMany { limit: 8, .. })));
    ws.pop();
    assert_eq!(t.stats().watchers, 7);
    let mut w = ws.pop().unwrap();
    drop(ws);
    assert_eq!(t.stats().watchers, 1);
    tables.drop("w").await.unwrap();
    assert!(matches!(w.next().await, Err(Error::Dropped(_))));
    assert!(matches!(t.put("x", "y").await, Err(Error::Dropped(_))));
    assert!(matches!(tables.get("w"), Err(Error::NotFound(_))));
}
