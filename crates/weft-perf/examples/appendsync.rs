//! The io_uring experiment of issue #18: would io_uring on the log's write
//! and fsync path pay here? Appends of 1 KiB records from many concurrent
//! producers, each waiting until its record is durable (fsync `always`),
//! two ways, back to back on the same file system:
//!
//! - `blocking`: weft-log's path: `pwrite` inline in the producer's task,
//!   group commit with one `fdatasync` at a time on tokio's blocking pool,
//!   every waiter woken when it ends.
//! - `uring`: a ring thread takes every queued record, submits their writes
//!   and an `fdatasync` drained behind them in one `io_uring_enter`, and
//!   completes them together (writes batched into one system call, no
//!   blocking-pool hand-off for the fsync).
//!
//! Prints records/s, p50/p99 latency and CPU time (user + system, whole
//! process) per record for each. docs/BENCHMARKS.md, "io_uring".
//!
//!   cargo run --release -p weft-perf --example appendsync -- [DIR] [SECONDS] [PRODUCERS]
//!
//! DIR defaults to a temporary directory under the current one (the disk
//! being measured), SECONDS to 3, PRODUCERS to 256 (4 connections x 64 in
//! flight, as bench/log.sh's one-record rows). Bounded in time; removes its
//! files.

// io_uring submissions are unsafe: the kernel reads the buffers until the
// completion arrives. Every buffer here outlives its completion (the ring
// thread waits for all of a batch before it drops the batch).
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

const RECORD: usize = 1024;

fn cpu_time() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// weft-log's shape: inline pwrite, one fdatasync at a time, all waiters
/// woken together.
struct Blocking {
    file: Arc<File>,
    end: Mutex<u64>,
    written: AtomicU64,
    synced: AtomicU64,
    syncing: AtomicBool,
    done: watch::Sender<u64>,
}

impl Blocking {
    async fn append(&self, rec: &[u8]) -> std::io::Result<()> {
        let end = {
            let mut e = self.end.lock().unwrap();
            self.file.write_all_at(rec, *e)?;
            *e += rec.len() as u64;
            self.written.store(*e, Ordering::Release);
            *e
        };
        loop {
            let mut rx = self.done.subscribe();
            if self.synced.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            if self.syncing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                let target = self.written.load(Ordering::Acquire);
                let f = self.file.clone();
                let r = tokio::task::spawn_blocking(move || f.sync_data()).await.unwrap();
                self.synced.fetch_max(target, Ordering::AcqRel);
                self.syncing.store(false, Ordering::Release);
                self.done.send_modify(|n| *n += 1);
                return r;
            }
            let _ = rx.changed().await;
        }
    }
}

type Job = (Box<[u8]>, oneshot::Sender<std::io::Result<()>>);

/// The ring thread: batch whatever is queued, writes + a drained fdatasync
/// in one submission, then answer the batch.
fn ring_thread(file: File, rx: mpsc::Receiver<Job>, depth: u32) -> std::io::Result<()> {
    use io_uring::{IoUring, opcode, squeue, types};
    let mut ring = IoUring::new(depth * 2)?;
    let fd = types::Fd(file.as_raw_fd());
    let mut end = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < depth as usize {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        for (i, (buf, _)) in batch.iter().enumerate() {
            let e = opcode::Write::new(fd, buf.as_ptr(), buf.len() as u32).offset(end).build().user_data(i as u64);
            end += buf.len() as u64;
            // SAFETY: `buf` lives in `batch` until every completion of this
            // batch has been reaped below.
            unsafe { ring.submission().push(&e) }.map_err(std::io::Error::other)?;
        }
        let fsync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().flags(squeue::Flags::IO_DRAIN).user_data(u64::MAX);
        // SAFETY: no buffer.
        unsafe { ring.submission().push(&fsync) }.map_err(std::io::Error::other)?;
        let want = batch.len() + 1;
        let mut got = 0;
        let mut failed = None;
        while got < want {
            ring.submit_and_wait(want - got)?;
            for cqe in ring.completion() {
                got += 1;
                if cqe.result() < 0 {
                    failed = Some(cqe.result());
                }
            }
        }
        for (_, tx) in batch {
            let _ = tx.send(match failed {
                None => Ok(()),
                Some(e) => Err(std::io::Error::from_raw_os_error(-e)),
            });
        }
    }
    Ok(())
}

struct Outcome {
    records: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_us_per_record: f64,
}

async fn drive<F, Fut>(producers: usize, secs: f64, append: F) -> Outcome
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send,
{
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let append = append.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let s = Instant::now();
                    append().await.unwrap();
                    lat.push(s.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    lat.sort_unstable();
    let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    Outcome { records: lat.len() as u64, secs, p50_us: q(0.5), p99_us: q(0.99), cpu_us_per_record: cpu.as_secs_f64() * 1e6 / lat.len().max(1) as f64 }
}

fn open(dir: &std::path::Path, name: &str) -> File {
    OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join(name)).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args.get(1).map(std::path::PathBuf::from).unwrap_or_else(|| std::path::PathBuf::from("."));
    let secs = args.get(2).and_then(|s| s.parse::<f64>().ok()).unwrap_or(3.0).clamp(0.1, 60.0);
    let producers = args.get(3).and_then(|s| s.parse::<usize>().ok()).unwrap_or(256).clamp(1, 4096);
    let dir = tempfile::tempdir_in(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let rec: Arc<[u8]> = vec![b'x'; RECORD].into();
    let show = |name: &str, o: &Outcome| {
        println!(
            "{name:<9} {:>9.0} records/s  p50 {:>6} us  p99 {:>6} us  cpu {:>6.1} us/record  ({} records in {:.2} s)",
            o.records as f64 / o.secs,
            o.p50_us,
            o.p99_us,
            o.cpu_us_per_record,
            o.records,
            o.secs
        )
    };
    println!("# {producers} producers, {RECORD} B records, fdatasync before each answer, {secs} s each, in {}", base.display());
    for round in 0..2 {
        let b = Arc::new(Blocking {
            file: Arc::new(open(dir.path(), &format!("blocking-{round}"))),
            end: Mutex::new(0),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncing: AtomicBool::new(false),
            done: watch::channel(0).0,
        });
        let r = rec.clone();
        let o = rt.block_on(drive(producers, secs, move || {
            let (b, r) = (b.clone(), r.clone());
            async move { b.append(&r).await }
        }));
        show("blocking", &o);

        let (tx, rx) = mpsc::channel::<Job>();
        let file = open(dir.path(), &format!("uring-{round}"));
        let depth = producers.next_power_of_two().min(4096) as u32;
        let ring = std::thread::spawn(move || ring_thread(file, rx, depth));
        let r = rec.clone();
        let o = rt.block_on(drive(producers, secs, move || {
            let (tx, r) = (tx.clone(), r.clone());
            async move {
                let (done, wait) = oneshot::channel();
                tx.send((Box::from(&r[..]), done)).map_err(|_| std::io::Error::other("ring thread gone"))?;
                wait.await.map_err(|_| std::io::Error::other("ring thread gone"))?
            }
        }));
        show("uring", &o);
        // Every sender is gone with the closure: the thread ends.
        ring.join().unwrap().unwrap();
    }
}
