//! Closed-loop request/response load over any target, TLS and QUIC
//! included (weft-bench takes plain endpoints only): each client is one
//! connection sending `weft.ping` (or `weft.echo` of PAYLOAD bytes) back to
//! back for DURATION seconds after a short warm-up. Prints CSV:
//! `transport,clients,requests,req_per_s,p50_us,p99_us,errors`.
//!
//!   cargo run --release -p weft-net --example rr -- --addr tls://127.0.0.1:7403 --addr quic://127.0.0.1:7401 --clients 1,16
//!
//! TLS trust comes from WEFT_TLS_CA (and WEFT_TLS_CLIENT_CERT/KEY for mTLS).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use weft_net::{Client, ClientConfig, Target};
use weft_wire::{BodyFormat, Frame, MessageId};

#[derive(Parser)]
struct Args {
    /// Targets (repeatable): tcp://, unix://, udp://, tls://, quic://.
    #[arg(long = "addr", required = true)]
    addrs: Vec<String>,
    /// Client counts, comma-separated.
    #[arg(long, default_value = "1,16", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 3)]
    duration: u64,
    /// ping or echo.
    #[arg(long, default_value = "ping")]
    workload: String,
    /// Echo payload bytes.
    #[arg(long, default_value_t = 16)]
    payload: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("transport,clients,requests,req_per_s,p50_us,p99_us,errors");
    for addr in &args.addrs {
        let target: Target = addr.parse()?;
        for &n in &args.clients {
            let line = run(&target, n, &args).await?;
            println!("{line}");
        }
    }
    Ok(())
}

async fn run(target: &Target, clients: usize, args: &Args) -> anyhow::Result<String> {
    let config = ClientConfig { client_name: "weft-rr".into(), request_timeout: Duration::from_secs(10), ..ClientConfig::default() };
    let mut conns = vec![];
    for _ in 0..clients {
        conns.push(Client::connect(target.clone(), config.clone()).await?);
    }
    let (route, body) = if args.workload == "echo" {
        ("weft.echo", serde_json::Value::String("x".repeat(args.payload)))
    } else {
        ("weft.ping", serde_json::Value::Null)
    };
    let warm_until = Instant::now() + Duration::from_millis(500);
    let deadline = warm_until + Duration::from_secs(args.duration);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let mut errors = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let frame = Frame::request(MessageId::new_v4(), route, BodyFormat::MsgPack, &body).unwrap();
                    let t0 = Instant::now();
                    let ok = c.request_frame(frame).await.is_ok();
                    if t0 >= warm_until {
                        if ok {
                            hist.saturating_record((t0.elapsed().as_micros() as u64).max(1));
                        } else {
                            errors += 1;
                        }
                    }
                }
                c.close();
                (hist, errors)
            })
        })
        .collect();
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        all.add(&h)?;
        errors += e;
    }
    let n = all.len();
    Ok(format!(
        "{},{clients},{n},{:.0},{},{},{errors}",
        target.transport().as_str(),
        n as f64 / args.duration as f64,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99)
    ))
}
