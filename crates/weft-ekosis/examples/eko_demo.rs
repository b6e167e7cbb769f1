//! ekosis' test application on Weft, served over the ekosis codec (TCP, UDP,
//! UDS) and, optionally, Weft's native protocol. Prints READY when listening;
//! stops on SIGINT/SIGTERM.
//!
//! cargo run -p weft-ekosis --example eko_demo -- --tcp 127.0.0.1:8888 --udp 127.0.0.1:8889 --uds /tmp/eko.sock --dir /tmp/eko
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use weft_ekosis::{demo, AppInfo, EkosisConfig, EkosisServer};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8888")]
    tcp: String,
    #[arg(long)]
    udp: Option<String>,
    #[arg(long)]
    uds: Option<PathBuf>,
    /// Weft native TCP listener too (for `weft queue ...`).
    #[arg(long)]
    native: Option<String>,
    /// Queue directory.
    #[arg(long, default_value = "./eko-demo-data")]
    dir: PathBuf,
    /// Statistics gather period, seconds.
    #[arg(long, default_value_t = 300)]
    stat_period: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (svc, manager) = demo::demo_service("eko_echo_server", &args.dir.join("queues"), Duration::from_secs(args.stat_period))?;
    let handler = svc.into_handler();
    let cfg = EkosisConfig { app: AppInfo { name: "eko_echo_server".into(), instance: "0".into() }, ..EkosisConfig::default() };
    let eko = EkosisServer::new(&handler, manager.clone(), cfg);
    eprintln!("ekosis tcp {}", eko.bind_tcp(&args.tcp).await?);
    if let Some(u) = &args.udp {
        eprintln!("ekosis udp {}", eko.bind_udp(u).await?);
    }
    if let Some(p) = &args.uds {
        eprintln!("ekosis uds {}", eko.bind_unix(p).await?.display());
    }
    let native = match &args.native {
        Some(addr) => {
            let metered = weft_queue::MeteredHandler::new(handler.clone(), manager.stats().clone());
            let server = weft_net::Server::new(weft_net::ServerConfig::default(), metered);
            eprintln!("native tcp {}", server.bind_tcp(addr).await?);
            Some(server)
        }
        None => None,
    };
    println!("READY");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eko.shutdown(Duration::from_secs(2)).await;
    if let Some(s) = native {
        s.shutdown(Duration::from_secs(2)).await;
    }
    manager.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
