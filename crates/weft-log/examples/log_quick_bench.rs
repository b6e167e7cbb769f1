//! Quick in-process throughput check of the storage layer (no network):
//! `cargo run --release -p weft-log --example log_quick_bench -- [always|never|interval:ms] [record_bytes] [producers] [records_per_producer] [batch]`
//! Each producer has one produce call in flight carrying `batch` records.

use std::time::Instant;

use weft_log::{FsyncPolicy, Log, LogConfig, Offset, PartitionId, ProduceRecord, TopicConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let policy: FsyncPolicy = args.get(1).map_or("always", |s| s.as_str()).parse()?;
    let size: usize = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let producers: usize = args.get(3).map_or(Ok(4), |s| s.parse())?;
    let per: usize = args.get(4).map_or(Ok(5000), |s| s.parse())?;
    let batch: usize = args.get(5).map_or(Ok(1), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogConfig { fsync: policy, maintenance_interval: None, ..LogConfig::default() }).await?;
    log.create_topic("bench", Some(TopicConfig::default())).await?;
    let value = vec![b'x'; size];
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let log = log.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per / batch + 1);
            let mut sent = 0;
            while sent < per {
                let n = batch.min(per - sent);
                let recs = (0..n).map(|_| ProduceRecord::value(value.clone())).collect();
                let t = Instant::now();
                for r in log.produce("bench", recs).await.expect("produce") {
                    r.expect("ack");
                }
                lat.push(t.elapsed().as_micros() as u64);
                sent += n;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    let total = producers * per;
    let st = log.partition_stats("bench")?[0].clone();
    println!(
        "produce {policy:?} {size} B x{producers} batch {batch}: {:.0} rec/s, {:.1} MB/s, p50 {} us, p99 {} us, appends {}, fsyncs {}",
        total as f64 / secs,
        (total * size) as f64 / secs / 1e6,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        st.appends,
        st.fsyncs
    );
    let t0 = Instant::now();
    let mut off = Offset(0);
    let mut n = 0usize;
    while n < total {
        let f = log.fetch("bench", PartitionId(0), off, 1 << 20, usize::MAX, None).await?;
        for r in f.records() {
            off = r?.offset.next();
            n += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("consume: {:.0} rec/s, {:.1} MB/s", n as f64 / secs, (n * size) as f64 / secs / 1e6);
    Ok(())
}
