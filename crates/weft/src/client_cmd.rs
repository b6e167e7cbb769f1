//! Client subcommands of the foundation: ping, echo, call, stats, info.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use weft_net::{Client, ClientConfig, Target};

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Node address: tcp://HOST:PORT, udp://HOST:PORT, unix://PATH,
    /// tls://HOST:PORT or quic://HOST:PORT.
    #[arg(long, env = "WEFT_ADDR", default_value = "tcp://127.0.0.1:7400")]
    pub addr: String,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// tls/quic: PEM bundle of CAs to trust (default: the Mozilla roots).
    #[arg(long, env = "WEFT_TLS_CA", value_name = "PEM")]
    pub ca: Option<std::path::PathBuf>,
    /// tls/quic: client certificate (PEM) for mTLS.
    #[arg(long, env = "WEFT_TLS_CLIENT_CERT", value_name = "PEM", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// tls/quic: the client certificate's private key (PEM).
    #[arg(long, env = "WEFT_TLS_CLIENT_KEY", value_name = "PEM", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// tls/quic: name to verify the server certificate against (default:
    /// the host of --addr).
    #[arg(long, env = "WEFT_TLS_SERVER_NAME")]
    pub server_name: Option<String>,
}

impl ClientArgs {
    pub async fn connect(&self) -> Result<Client> {
        let endpoint: Target = self.addr.parse()?;
        let config = ClientConfig {
            client_name: "weft-cli".into(),
            connect_timeout: Duration::from_millis(self.timeout_ms.min(10_000)),
            request_timeout: Duration::from_millis(self.timeout_ms),
            tls: weft_net::TlsClientConfig {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                server_name: self.server_name.clone(),
            },
            ..ClientConfig::default()
        };
        Client::connect(endpoint, config).await.with_context(|| format!("connecting to {}", self.addr))
    }
}

pub async fn ping(args: &ClientArgs) -> Result<()> {
    let client = args.connect().await?;
    let started = Instant::now();
    let _: serde_json::Value = client.call("weft.ping", &()).await?;
    let rtt = started.elapsed();
    let w = client.welcome().unwrap_or_else(|| weft_wire::Welcome {
        protocol_version: 0,
        server_id: "?".into(),
        server_name: "?".into(),
        version: "?".into(),
        features: vec![],
    });
    println!("pong from {} ({}) via {} in {:.3} ms", w.server_name, w.server_id, args.addr, rtt.as_secs_f64() * 1e3);
    client.shutdown().await;
    Ok(())
}

pub async fn echo(args: &ClientArgs, text: &str) -> Result<()> {
    let client = args.connect().await?;
    let back: String = client.call("weft.echo", text).await?;
    println!("{back}");
    client.shutdown().await;
    Ok(())
}

pub async fn call(args: &ClientArgs, route: &str, json: Option<&str>) -> Result<()> {
    let body: serde_json::Value = match json {
        Some(s) => serde_json::from_str(s).with_context(|| format!("request body is not valid JSON: {s}"))?,
        None => serde_json::Value::Null,
    };
    let client = args.connect().await?;
    let answer = client.call_json(route, &body).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    client.shutdown().await;
    Ok(())
}

pub async fn info(args: &ClientArgs) -> Result<()> {
    let client = args.connect().await?;
    let info: serde_json::Value = client.call_json("weft.info", &serde_json::Value::Null).await?;
    println!("{}", serde_json::to_string_pretty(&info)?);
    client.shutdown().await;
    Ok(())
}

pub async fn liveness(args: &ClientArgs) -> Result<()> {
    let client = args.connect().await?;
    let rows: Vec<weft_net::liveness::PeerState> = client.call("weft.liveness", &()).await?;
    if rows.is_empty() {
        println!("no heartbeats received");
    }
    for r in rows {
        println!(
            "{:<24} {:<22} {:<5} last seen {} ms ago, {} heartbeats, {} missed",
            r.node_id,
            r.addr,
            if r.alive { "alive" } else { "DEAD" },
            r.last_seen_ms_ago,
            r.heartbeats,
            r.missed
        );
    }
    client.shutdown().await;
    Ok(())
}
