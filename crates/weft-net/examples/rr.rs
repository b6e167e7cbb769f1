//! Request/response load over any target, TLS and QUIC included
//! (weft-bench takes plain endpoints only), and a server to aim it at.
//!
//! `rr serve` runs a Server with the Service's standard endpoints on TCP,
//! TLS and QUIC (development certificates in --certs), prints
//! `ready` and runs until killed. `rr load` is the closed-loop client: each
//! client is one connection sending `weft.ping` (or `weft.echo` of PAYLOAD
//! bytes) back to back for DURATION seconds after a 0.5 s warm-up, and
//! prints CSV `transport,clients,requests,req_per_s,p50_us,p99_us,errors`.
//!
//!   cargo run --release -p weft-net --example rr -- serve --certs /tmp/c --tcp 127.0.0.1:7400 --tls 127.0.0.1:7403 --quic 127.0.0.1:7401
//!   WEFT_TLS_CA=/tmp/c/ca.pem cargo run --release -p weft-net --example rr -- load --addr tls://127.0.0.1:7403 --addr quic://127.0.0.1:7401 --clients 1,16
//!
//! TLS trust comes from WEFT_TLS_CA (and WEFT_TLS_CLIENT_CERT/KEY for mTLS).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use weft_net::{Client, ClientConfig, Target};
use weft_wire::{BodyFormat, Frame, MessageId};

#[derive(Parser)]
enum Cmd {
    Serve(Serve),
    Load(Args),
}

#[derive(clap::Args)]
struct Serve {
    /// Directory of development certificates (created when missing).
    #[arg(long)]
    certs: std::path::PathBuf,
    #[arg(long)]
    tcp: String,
    #[arg(long)]
    tls: String,
    #[arg(long)]
    quic: String,
    /// Require client certificates (mTLS).
    #[arg(long)]
    mtls: bool,
}

#[derive(clap::Args)]
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
    let args = match Cmd::parse() {
        Cmd::Serve(s) => return serve(s).await,
        Cmd::Load(a) => a,
    };
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

async fn serve(s: Serve) -> anyhow::Result<()> {
    let (files, _) = weft_net::tls::dev::ensure_server(&s.certs)?;
    let tls = weft_net::TlsServerConfig {
        cert: files.server_cert,
        key: files.server_key,
        client_ca: Some(files.ca_cert),
        client_auth: if s.mtls { weft_net::ClientAuth::Require } else { weft_net::ClientAuth::None },
    };
    let server = weft_net::Server::new(weft_net::ServerConfig::default(), weft_service::Service::new("rr").into_handler());
    server.bind_tcp(&s.tcp).await?;
    server.bind_tls(&s.tls, &tls).await?;
    server.bind_quic(&s.quic, &tls).await?;
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}
