//! Queued-endpoint throughput: acknowledged requests per second with
//! durability on (every acknowledgement waits for its fdatasync), through a
//! real native server and client over loopback TCP, for several numbers of
//! requests in flight. Bounded: each point runs for `--secs` seconds.
//!
//!     cargo run --release -p weft-queue --example queue_bench -- [--secs 3] [--dir /path/on/the/disk/to/test]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_queue::{Ack, Manager, ManagerOptions, QueueOptions};
use weft_service::Service;

#[derive(serde::Serialize, serde::Deserialize)]
struct Event {
    id: u64,
    payload: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let secs: f64 = opt("--secs").map(|s| s.parse()).transpose()?.unwrap_or(3.0);
    let base = opt("--dir").map(std::path::PathBuf::from);
    let tmp = match &base {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };

    let mut svc = Service::new("bench");
    let manager = Manager::new(tmp.path(), &svc, ManagerOptions::default())?;
    manager.register(&mut svc)?;
    let handled = Arc::new(AtomicU64::new(0));
    let h2 = handled.clone();
    let opts = QueueOptions { concurrency: 8, ..QueueOptions::default() };
    manager.queued_endpoint(&mut svc, "events", opts, move |_e: Event| {
        let h2 = h2.clone();
        async move {
            h2.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    })?;
    let server = Server::new(ServerConfig::default(), svc.into_handler());
    let addr = server.bind_tcp("127.0.0.1:0").await?.to_string();
    let client = Client::connect(Endpoint::Tcp(addr), ClientConfig::default()).await?;
    let payload = "x".repeat(100);

    println!("queued endpoint, 100-byte payload, msgpack over loopback TCP, fdatasync before every ack, dir {}", tmp.path().display());
    println!("{:>10} {:>12} {:>12} {:>14}", "in flight", "acked/s", "p50 ack ms", "handled/s");
    for in_flight in [1usize, 8, 64, 256] {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let lat = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
        let handled_before = handled.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut tasks = vec![];
        for t in 0..in_flight {
            let (client, stop, acked, lat, payload) = (client.clone(), stop.clone(), acked.clone(), lat.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                let mut mine = vec![];
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let _: Ack = client.call("events", &Event { id: (t as u64) << 32 | i, payload: payload.clone() }).await.expect("ack");
                    mine.push(t0.elapsed().as_secs_f64() * 1e3);
                    acked.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                lat.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let q = manager.endpoint("events").ok_or("no queue")?.queue().clone();
        q.wait_idle(Duration::from_secs(60)).await;
        let handled_elapsed = started.elapsed().as_secs_f64();
        let mut l = lat.lock().unwrap_or_else(|p| p.into_inner()).clone();
        l.sort_by(|a, b| a.total_cmp(b));
        let p50 = l.get(l.len() / 2).copied().unwrap_or(0.0);
        let n = acked.load(Ordering::Relaxed);
        let h = handled.load(Ordering::Relaxed) - handled_before;
        println!("{:>10} {:>12.0} {:>12.2} {:>14.0}", in_flight, n as f64 / elapsed, p50, h as f64 / handled_elapsed);
    }
    server.shutdown(Duration::from_secs(1)).await;
    manager.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
