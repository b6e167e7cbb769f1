// What the fsync itself can give weft-log's `always` mode, without the
// network: a closed loop that appends 1 KiB records (1064 bytes with a batch
// header) while at most WINDOW of them are unsynced, and a sync thread that
// runs fdatasync back to back, as weft-log's sync loop does. Issue #18,
// seventh round (docs/BENCHMARKS.md). Standalone (std only, not a workspace
// member):
//
//   rustc -O -o /tmp/fsyncloop bench/fsyncloop.rs
//   DIR=/var/lib/weft /tmp/fsyncloop extend 256 4      # appends extend the file (weft-log today)
//   /tmp/fsyncloop zeroed 256 4                        # overwrite a file pre-zeroed with O_DIRECT
//   /tmp/fsyncloop zeroed-full 256 4                   # the same, every write padded to whole pages
//   /tmp/fsyncloop bg 256 4 1048576 500                # 128 MiB segments, the next one zeroed by a
//                                                      # thread meanwhile (1 MiB writes, 500 us apart)
//
// SYNCERS=N (not `bg`): N sync threads, each starting an fdatasync while
// another runs if more was written (overlapping fsyncs; ninth round).
//
// Arguments: mode, window (records), seconds[, chunk bytes, pause us]. The
// file (at most 1 GiB; `bg`: a directory of segments) is made under DIR
// (default .) and removed at the end.
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const O_DIRECT: i32 = 0o40000; // x86_64 Linux

fn dir() -> String {
    std::env::var("DIR").unwrap_or_else(|_| ".".into())
}

struct St { written: u64, synced: u64, started: u64, done: bool, fsyncs: u64, fsync_ns: u64 }
type Shared = Arc<(Mutex<St>, Condvar)>;

fn shared() -> Shared {
    Arc::new((Mutex::new(St { written: 0, synced: 0, started: 0, done: false, fsyncs: 0, fsync_ns: 0 }), Condvar::new()))
}

/// Waits until fewer than `limit` bytes are written but not synced.
fn wait_unsynced_below(st: &Shared, limit: u64) {
    let (m, c) = &**st;
    let mut g = m.lock().unwrap();
    while g.written - g.synced >= limit { g = c.wait(g).unwrap(); }
}

fn mark_written(st: &Shared, written: u64) {
    let (m, c) = &**st;
    m.lock().unwrap().written = written;
    c.notify_all();
}

fn stop_syncer(st: &Shared) {
    let (m, c) = &**st;
    m.lock().unwrap().done = true;
    c.notify_all();
}

/// The sync loop: fdatasync of the current file back to back while
/// something is unsynced, marking synced what was written before each.
fn spawn_syncer(st: Shared, file: Arc<Mutex<Arc<File>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        let (target, f) = {
            let (m, c) = &*st;
            let mut g = m.lock().unwrap();
            while g.written == g.started && !g.done { g = c.wait(g).unwrap(); }
            if g.done { return; }
            g.started = g.written;
            (g.written, file.lock().unwrap().clone())
        };
        let t = Instant::now();
        f.sync_data().unwrap();
        let (m, c) = &*st;
        let mut g = m.lock().unwrap();
        g.synced = g.synced.max(target); g.fsyncs += 1; g.fsync_ns += t.elapsed().as_nanos() as u64;
        c.notify_all();
    })
}

/// Appends `rec` at `end` as whole pages: from the start of the page `end`
/// falls in (whose written bytes `tail` holds) to the end of the last page,
/// zero-padded; then keeps the new last page's written bytes in `tail`.
fn write_full_pages(f: &File, tail: &mut [u8], end: u64, rec: &[u8]) {
    let page = end & !4095;
    let pre = (end - page) as usize;
    tail[pre..pre + rec.len()].copy_from_slice(rec);
    let len = (pre + rec.len() + 4095) & !4095;
    for b in &mut tail[pre + rec.len()..len] { *b = 0; }
    f.write_all_at(&tail[..len], page).unwrap();
    let newend = end + rec.len() as u64;
    let newpage = newend & !4095;
    let keep = (newend - newpage) as usize;
    let off = (newpage - page) as usize;
    tail.copy_within(off..off + keep, 0);
}

/// A zero-filled buffer of `len` bytes at a 4096-byte boundary (what O_DIRECT needs), without unsafe.
fn aligned_zeros(store: &mut Vec<u8>, len: usize) -> &[u8] {
    *store = vec![0u8; len + 4096];
    let skip = (4096 - store.as_ptr() as usize % 4096) % 4096;
    &store[skip..skip + len]
}

/// Zeros `len` bytes of `path` with O_DIRECT in `chunk`-byte writes (pausing `pause_us` after each), then fdatasync.
fn zero_chunked(path: &str, len: u64, chunk: usize, pause_us: u64) {
    let f = OpenOptions::new().write(true).create(true).custom_flags(O_DIRECT).open(path).unwrap();
    let mut store = Vec::new();
    let buf = aligned_zeros(&mut store, chunk);
    let mut pos = 0;
    while pos < len {
        f.write_all_at(buf, pos).unwrap();
        pos += chunk as u64;
        if pause_us > 0 {
            std::thread::sleep(Duration::from_micros(pause_us));
        }
    }
    f.sync_data().unwrap();
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mode = a[1].as_str(); // extend | zeroed | zeroed-full | bg
    if mode == "bg" { return bg(a[2].parse().unwrap(), a[3].parse().unwrap(), a[4].parse().unwrap(), a[5].parse().unwrap()); }
    let window: u64 = a[2].parse().unwrap();
    let secs: u64 = a[3].parse().unwrap();
    let rec: usize = 1024 + 40;
    let path = format!("{}/fsyncloop-test.{}", dir(), std::process::id());
    let total = 1u64 << 30;
    if mode != "extend" { zero_chunked(&path, total, 4 << 20, 0); }
    // O_DIRECT left the zeroed pages out of the page cache (as a background zeroer would)
    let f = Arc::new(OpenOptions::new().read(true).write(true).create(true).open(&path).unwrap());
    let st = shared();
    let nsync: usize = std::env::var("SYNCERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let fm = Arc::new(Mutex::new(f.clone()));
    let syncers: Vec<_> = (0..nsync).map(|_| spawn_syncer(st.clone(), fm.clone())).collect();
    let full = mode == "zeroed-full";
    let mut tail = vec![0u8; 4096 + rec + 4096];
    let recbuf = vec![7u8; rec];
    let mut end: u64 = 0; let mut n: u64 = 0;
    let start = Instant::now();
    let mut wtime = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(secs) && end + 8192 < total {
        wait_unsynced_below(&st, window * rec as u64);
        let t = Instant::now();
        if full {
            write_full_pages(&f, &mut tail, end, &recbuf);
        } else {
            f.write_all_at(&recbuf, end).unwrap();
        }
        wtime += t.elapsed();
        end += rec as u64; n += 1;
        mark_written(&st, end);
    }
    let el = start.elapsed().as_secs_f64();
    stop_syncer(&st);
    for s in syncers { s.join().unwrap(); }
    let g = st.0.lock().unwrap();
    println!("{mode:12} syncers {nsync} window {window}: {:.0} rec/s, {} fsyncs avg {:.0} us, {:.1} rec/fsync, write avg {:.1} us",
        n as f64 / el, g.fsyncs, g.fsync_ns as f64 / g.fsyncs as f64 / 1000.0, n as f64 / g.fsyncs as f64, wtime.as_secs_f64() * 1e6 / n as f64);
    drop(f); std::fs::remove_file(&path).unwrap();
}

fn bg(window: u64, secs: u64, chunk: usize, pause_us: u64) {
    let rec: usize = 1024 + 40;
    let seg: u64 = 128 << 20;
    let dir = format!("{}/fsyncloop-bg.{}", dir(), std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    let path = |i: u64| format!("{dir}/{i:08}");
    zero_chunked(&path(0), seg, 4 << 20, 0);
    let ready = Arc::new((Mutex::new(0u64), Condvar::new())); // highest prepared index
    let want = Arc::new(Mutex::new(1u64));
    let (r2, w2, d2) = (ready.clone(), want.clone(), dir.clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || loop {
        let next = *w2.lock().unwrap();
        let have = *r2.0.lock().unwrap();
        if stop2.load(std::sync::atomic::Ordering::Relaxed) { return; }
        if have >= next { std::thread::sleep(Duration::from_millis(1)); continue; }
        zero_chunked(&format!("{d2}/{:08}", have + 1), seg, chunk, pause_us);
        *r2.0.lock().unwrap() = have + 1; r2.1.notify_all();
    });
    let st = shared();
    let file: Arc<Mutex<Arc<File>>> = Arc::new(Mutex::new(Arc::new(OpenOptions::new().read(true).write(true).open(path(0)).unwrap())));
    let syncer = spawn_syncer(st.clone(), file.clone());
    let mut tail = vec![0u8; 4096 + rec + 4096];
    let recbuf = vec![7u8; rec];
    let (mut end, mut n, mut idx, mut total, mut stalls) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut f = file.lock().unwrap().clone();
    while start.elapsed() < Duration::from_secs(secs) {
        wait_unsynced_below(&st, window * rec as u64);
        if end + rec as u64 > seg {
            // roll: wait until everything written is synced (as a simple roll), truncate, switch
            wait_unsynced_below(&st, 1);
            f.set_len(end).unwrap();
            idx += 1; *want.lock().unwrap() = idx + 1;
            { let (m, c) = &*ready; let mut g = m.lock().unwrap(); if *g < idx { stalls += 1; } while *g < idx { g = c.wait(g).unwrap(); } }
            f = Arc::new(OpenOptions::new().read(true).write(true).open(path(idx)).unwrap());
            *file.lock().unwrap() = f.clone();
            end = 0; tail.iter_mut().for_each(|b| *b = 0);
        }
        write_full_pages(&f, &mut tail, end, &recbuf);
        end += rec as u64; n += 1; total += rec as u64;
        mark_written(&st, total);
    }
    let el = start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stop_syncer(&st);
    syncer.join().unwrap();
    let g = st.0.lock().unwrap();
    println!("bg chunk {chunk} pause {pause_us}us window {window}: {:.0} rec/s, {} fsyncs avg {:.0} us, {:.1} rec/fsync, {} segments, {} stalls",
        n as f64 / el, g.fsyncs, g.fsync_ns as f64 / g.fsyncs as f64 / 1000.0, n as f64 / g.fsyncs as f64, idx, stalls);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_dir_all(&dir).unwrap();
}
