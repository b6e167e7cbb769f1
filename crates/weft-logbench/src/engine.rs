//! The part every system shares: producers keeping a window of requests in
//! flight, latency histograms, and one run from topic creation to deletion.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;

use crate::rss::Sampler;
use crate::{BenchError, NodeDisk, RunResult, Scenario};

/// Sends one produce request and resolves with the number of records the
/// broker acknowledged. Each call is independent, so a producer can keep
/// several in flight on its connection.
pub type ProduceFn = Arc<dyn Fn() -> BoxFuture<'static, Result<u64, BenchError>> + Send + Sync>;

/// What a read-back saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Consumed {
    pub records: u64,
    /// Value bytes (what the producers sent).
    pub bytes: u64,
    pub secs: f64,
    /// Of `secs`, the time spent waiting for acknowledged records that
    /// were not readable yet on the server read from.
    pub lag_ms: Option<f64>,
}

/// What `settle` saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settled {
    /// From the last ack until every replica held every acknowledged
    /// record; None when the target does not check its replicas.
    pub replicas_caught_up_ms: Option<f64>,
    /// Acknowledged records missing, right after the last ack, on the
    /// server the acks came from; None when the target cannot tell.
    pub home_behind: Option<u64>,
}

/// What to watch on the servers during a run besides the replies.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// A broker's pid: its RSS is sampled.
    pub pid: Option<u32>,
    /// Server name and pid: /proc/PID/io `write_bytes` is read before the
    /// produce phase and after `settle`.
    pub io_pids: Vec<(String, u32)>,
    /// Server name and the log of `strace -f -e trace=fsync,fdatasync -o
    /// FILE` attached to it: its calls are counted over the same span.
    pub fsync_logs: Vec<(String, PathBuf)>,
}

/// A log to measure. Static dispatch only (the futures need not be `Send`:
/// only the produce requests are spawned).
#[allow(async_fn_in_trait)]
pub trait Target {
    /// weft | jetstream | redis
    fn system(&self) -> &'static str;
    /// Whether one request may carry several records.
    fn batches(&self) -> bool {
        false
    }
    /// A fresh, empty, single-partition topic / stream / key.
    async fn create(&self, name: &str) -> Result<(), BenchError>;
    /// A producer on its own connection.
    async fn producer(&self, name: &str, size: usize, batch: usize) -> Result<ProduceFn, BenchError>;
    /// Read everything from the start in pulls of 1000 records.
    async fn consume(&self, name: &str, expected: u64) -> Result<Consumed, BenchError>;
    /// A second way to read, when the system has one (Weft: raw batches).
    async fn consume_raw(&self, _name: &str, _expected: u64) -> Result<Option<Consumed>, BenchError> {
        Ok(None)
    }
    /// After the produce phase: wait (bounded) until every replica holds
    /// the `produced` acknowledged records, when the system can tell.
    async fn settle(&self, _name: &str, _produced: u64) -> Result<Settled, BenchError> {
        Ok(Settled::default())
    }
    async fn delete(&self, name: &str) -> Result<(), BenchError>;
}

/// Produce-side totals over all producers.
pub struct Produced {
    pub records: u64,
    pub requests: u64,
    pub secs: f64,
    pub hist: Histogram<u64>,
}

fn new_hist() -> Histogram<u64> {
    // 1 us .. 120 s at 3 significant digits; the bounds are constants, so
    // this cannot fail.
    #[allow(clippy::unwrap_used)]
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

/// Run `producers` concurrently, each keeping up to `window` requests in
/// flight, until `duration` has passed or `max_records` were sent (split
/// evenly between producers); requests in flight at the end are awaited and
/// counted.
pub async fn produce(producers: Vec<ProduceFn>, window: usize, batch: usize, duration: Duration, max_records: u64) -> Result<Produced, BenchError> {
    let n = producers.len().max(1) as u64;
    let batch = batch.max(1) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, p) in producers.into_iter().enumerate() {
        let quota = max_records / n + u64::from((i as u64) < max_records % n);
        let requests = quota.div_ceil(batch);
        tasks.push(tokio::spawn(one_producer(p, window.max(1), requests, start, duration)));
    }
    let mut out = Produced { records: 0, requests: 0, secs: 0.0, hist: new_hist() };
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok((records, requests, end, hist))) => {
                out.records += records;
                out.requests += requests;
                out.secs = out.secs.max(end.duration_since(start).as_secs_f64());
                // Same bounds on both sides, so adding cannot fail.
                let _ = out.hist.add(&hist);
            }
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => first_err = first_err.or(Some(BenchError::Unexpected(format!("producer task: {e}")))),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

async fn one_producer(p: ProduceFn, window: usize, requests: u64, start: Instant, duration: Duration) -> Result<(u64, u64, Instant, Histogram<u64>), BenchError> {
    let mut hist = new_hist();
    let mut in_flight = FuturesUnordered::new();
    let (mut sent, mut acked_records, mut acked_requests) = (0u64, 0u64, 0u64);
    let mut end = start;
    loop {
        while in_flight.len() < window && sent < requests && start.elapsed() < duration {
            in_flight.push(timed(p()));
            sent += 1;
        }
        match in_flight.next().await {
            None => break,
            Some((took, r)) => {
                acked_records += r?;
                acked_requests += 1;
                hist.saturating_record(took.as_micros().max(1) as u64);
                end = Instant::now();
            }
        }
    }
    Ok((acked_records, acked_requests, end, hist))
}

async fn timed<F: Future>(f: F) -> (Duration, F::Output) {
    let t = Instant::now();
    let r = f.await;
    (t.elapsed(), r)
}

/// One run: create, produce (RSS sampled), read back, check, delete.
pub async fn run_scenario<T: Target>(t: &T, label: &str, sc: &Scenario, pid: Option<u32>, name: &str) -> Result<RunResult, BenchError> {
    run_probed(t, label, sc, &Probes { pid, ..Probes::default() }, name).await
}

/// [`run_scenario`] with disk writes (and fsyncs) of the servers counted
/// over the produce phase.
pub async fn run_probed<T: Target>(t: &T, label: &str, sc: &Scenario, probes: &Probes, name: &str) -> Result<RunResult, BenchError> {
    if sc.batch > 1 && !t.batches() {
        return Err(BenchError::Usage(format!("{} sends one record per request; batch {} is Weft only", t.system(), sc.batch)));
    }
    t.create(name).await?;
    let r = measure(t, label, sc, probes, name).await;
    // Delete even after a failure, so a failed run does not leave gigabytes behind.
    let d = t.delete(name).await;
    let r = r?;
    d?;
    Ok(r)
}

/// /proc/PID/io `write_bytes` of each server (None: unreadable).
fn write_bytes(io_pids: &[(String, u32)]) -> Vec<Option<u64>> {
    io_pids.iter().map(|(_, pid)| crate::rss::read_write_bytes(*pid)).collect()
}

/// fsync and fdatasync calls in each strace log so far (None: unreadable).
fn fsyncs(logs: &[(String, PathBuf)]) -> Vec<Option<u64>> {
    logs.iter().map(|(_, p)| std::fs::read_to_string(p).ok().map(|s| count_fsyncs(&s))).collect()
}

/// Calls in an strace log of fsync/fdatasync: each call's first line names
/// it with its parenthesis (`fsync(3) = 0`, or `fdatasync(3 <unfinished
/// ...>` when another thread interleaved; the `<... resumed>` line does not).
pub fn count_fsyncs(log: &str) -> u64 {
    log.lines().filter(|l| l.contains("fsync(") || l.contains("fdatasync(")).count() as u64
}

/// Per server: bytes written and fsyncs between two samples.
fn disk_delta(probes: &Probes, wb0: &[Option<u64>], wb1: &[Option<u64>], fs0: &[Option<u64>], fs1: &[Option<u64>]) -> Vec<NodeDisk> {
    probes
        .io_pids
        .iter()
        .enumerate()
        .filter_map(|(i, (node, _))| {
            let write_bytes = wb1.get(i).copied().flatten()?.saturating_sub(wb0.get(i).copied().flatten()?);
            let f = probes.fsync_logs.iter().position(|(n, _)| n == node);
            let fsyncs = f.and_then(|f| Some(fs1.get(f).copied().flatten()?.saturating_sub(fs0.get(f).copied().flatten()?)));
            Some(NodeDisk { node: node.clone(), write_bytes, fsyncs })
        })
        .collect()
}

async fn measure<T: Target>(t: &T, label: &str, sc: &Scenario, probes: &Probes, name: &str) -> Result<RunResult, BenchError> {
    let mut producers = Vec::with_capacity(sc.producers);
    for _ in 0..sc.producers.max(1) {
        producers.push(t.producer(name, sc.size, sc.batch.max(1)).await?);
    }
    let sampler = probes.pid.map(|p| Sampler::start(p, Duration::from_millis(50)));
    let (wb0, fs0) = (write_bytes(&probes.io_pids), fsyncs(&probes.fsync_logs));
    let produced = produce(producers, sc.window, sc.batch, Duration::from_millis(sc.duration_ms), sc.max_records).await;
    let produced = match produced {
        Ok(p) => p,
        Err(e) => {
            if let Some(s) = sampler {
                s.stop().await;
            }
            return Err(e);
        }
    };
    let settled = match t.settle(name, produced.records).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(s) = sampler {
                s.stop().await;
            }
            return Err(e);
        }
    };
    let counting = !probes.io_pids.is_empty() || !probes.fsync_logs.is_empty();
    if counting && settled.replicas_caught_up_ms.is_none() {
        // Replicas the target cannot ask about: give them a moment to write.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let disk = disk_delta(probes, &wb0, &write_bytes(&probes.io_pids), &fs0, &fsyncs(&probes.fsync_logs));
    let consumed = t.consume(name, produced.records).await;
    let raw = match &consumed {
        Ok(_) => t.consume_raw(name, produced.records).await,
        Err(_) => Ok(None),
    };
    let (rss_start_kb, rss_peak_kb) = match sampler {
        Some(s) => s.stop().await,
        None => (None, None),
    };
    let consumed = consumed?;
    let raw = raw?;
    for c in std::iter::once(&consumed).chain(raw.as_ref()) {
        if c.records != produced.records {
            return Err(BenchError::Mismatch { produced: produced.records, consumed: c.records });
        }
    }
    let rate = |n: f64, secs: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let h = &produced.hist;
    Ok(RunResult {
        system: t.system().into(),
        label: label.into(),
        scenario: sc.clone(),
        produced: produced.records,
        requests: produced.requests,
        produce_secs: produced.secs,
        produce_rec_s: rate(produced.records as f64, produced.secs),
        produce_mb_s: rate(produced.records as f64 * sc.size as f64 / 1e6, produced.secs),
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
        consumed: consumed.records,
        consume_secs: consumed.secs,
        consume_rec_s: rate(consumed.records as f64, consumed.secs),
        consume_mb_s: rate(consumed.bytes as f64 / 1e6, consumed.secs),
        consume_raw_rec_s: raw.map(|r| rate(r.records as f64, r.secs)),
        rss_start_kb,
        rss_peak_kb,
        replicas_caught_up_ms: settled.replicas_caught_up_ms,
        home_behind: settled.home_behind,
        readback_lag_ms: consumed.lag_ms,
        disk,
    })
}

/// A value of `size` bytes that is not one repeated byte.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn counting(batch: u64, calls: Arc<AtomicU64>) -> ProduceFn {
        Arc::new(move || {
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
                Ok(batch)
            })
        })
    }

    #[tokio::test]
    async fn count_bound_splits_between_producers() {
        let calls = Arc::new(AtomicU64::new(0));
        let ps = vec![counting(1, calls.clone()), counting(1, calls.clone()), counting(1, calls.clone())];
        let p = produce(ps, 4, 1, Duration::from_secs(60), 10).await.unwrap();
        assert_eq!(p.records, 10);
        assert_eq!(p.requests, 10);
        assert_eq!(calls.load(Ordering::Relaxed), 10);
        assert_eq!(p.hist.len(), 10);
    }

    #[tokio::test]
    async fn batches_round_up_to_whole_requests() {
        let calls = Arc::new(AtomicU64::new(0));
        let p = produce(vec![counting(4, calls.clone())], 2, 4, Duration::from_secs(60), 10).await.unwrap();
        assert_eq!(p.requests, 3);
        assert_eq!(p.records, 12);
    }

    #[tokio::test]
    async fn an_error_fails_the_run() {
        let f: ProduceFn = Arc::new(|| Box::pin(async { Err(BenchError::Rejected("no".into())) }));
        assert!(matches!(produce(vec![f], 1, 1, Duration::from_secs(1), 5).await, Err(BenchError::Rejected(_))));
    }

    #[test]
    fn fsync_calls_counted_once_each() {
        let log = "10 fdatasync(7) = 0\n11 fsync(8 <unfinished ...>\n10 fdatasync(7) = 0\n11 <... fsync resumed>) = 0\n12 +++ exited with 0 +++\n";
        assert_eq!(count_fsyncs(log), 3);
        assert_eq!(count_fsyncs(""), 0);
    }

    #[test]
    fn disk_delta_per_node() {
        let probes = Probes { pid: None, io_pids: vec![("a".into(), 1), ("b".into(), 2)], fsync_logs: vec![("b".into(), PathBuf::from("x"))] };
        let d = disk_delta(&probes, &[Some(100), None], &[Some(4196), Some(5)], &[Some(2)], &[Some(7)]);
        assert_eq!(d, vec![NodeDisk { node: "a".into(), write_bytes: 4096, fsyncs: None }]);
        let d = disk_delta(&probes, &[Some(0), Some(0)], &[Some(1), Some(2)], &[Some(2)], &[Some(7)]);
        assert_eq!(d[1], NodeDisk { node: "b".into(), write_bytes: 2, fsyncs: Some(5) });
    }

    #[test]
    fn payload_has_the_size() {
        assert_eq!(payload(100).len(), 100);
        assert_eq!(payload(0).len(), 0);
    }
}
