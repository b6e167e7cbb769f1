//! Client subcommands of the foundation: ping, echo, call, stats, info.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use weft_net::{Client, ClientConfig, Target};

/// Connection options of every client command. `global` so they are
/// accepted after a subcommand too (`weft topic create t --addr ...`).
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Node address: tcp://HOST:PORT, udp://HOST:PORT, unix://PATH,
    /// tls://HOST:PORT or quic://HOST:PORT.
    #[arg(long, env = "WEFT_ADDR", default_value = "tcp://127.0.0.1:7400", global = true)]
    pub addr: String,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub tls: weft_net::cli::TlsClientArgs,
}

/// `--json`: machine-readable output with the API's field names.
#[derive(Args, Clone, Copy, Default)]
pub struct OutputArgs {
    /// Print JSON (the API's field names) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    pub async fn connect(&self) -> Result<Client> {
        let endpoint: Target = self.addr.parse()?;
        let config = ClientConfig {
            client_name: "weft-cli".into(),
            connect_timeout: Duration::from_millis(self.timeout_ms.min(10_000)),
            request_timeout: Duration::from_millis(self.timeout_ms),
            tls: self.tls.config(),
            token: self.tls.token.clone(),
            ..ClientConfig::default()
        };
        Client::connect(endpoint, config).await.with_context(|| format!("connecting to {}", self.addr))
    }
}

/// Aligned columns, two spaces apart, for the human output (one layout for
/// every command; the broker's CLI owns it).
pub use weft_broker::cli::table;

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn ping(args: &ClientArgs, out: OutputArgs) -> Result<()> {
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
    if out.json {
        print_json(&serde_json::json!({
            "server_name": w.server_name, "server_id": w.server_id, "version": w.version,
            "addr": args.addr, "rtt_ms": rtt.as_secs_f64() * 1e3,
        }))?;
    } else {
        println!("pong from {} ({}) via {} in {:.3} ms", w.server_name, w.server_id, args.addr, rtt.as_secs_f64() * 1e3);
    }
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

pub async fn info(args: &ClientArgs, out: OutputArgs) -> Result<()> {
    let client = args.connect().await?;
    let info: weft_service::NodeInfo = client.call("weft.info", &()).await?;
    client.shutdown().await;
    if out.json {
        return print_json(&info);
    }
    let rows = vec![
        vec!["name".into(), info.name],
        vec!["version".into(), info.version],
        vec!["id".into(), info.id],
        vec!["uptime_s".into(), format!("{:.1}", info.uptime_s)],
        vec!["transports".into(), info.transports.join(" ")],
        vec!["endpoints".into(), format!("{} ({})", info.endpoints.len(), info.endpoints.join(" "))],
    ];
    print!("{}", table(&["field", "value"], &rows));
    Ok(())
}

pub async fn liveness(args: &ClientArgs, out: OutputArgs) -> Result<()> {
    let client = args.connect().await?;
    let rows: Vec<weft_net::liveness::PeerState> = client.call("weft.liveness", &()).await?;
    client.shutdown().await;
    if out.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no heartbeats received");
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.node_id.clone(),
                r.addr.clone(),
                if r.alive { "alive".into() } else { "DEAD".into() },
                r.last_seen_ms_ago.to_string(),
                r.heartbeats.to_string(),
                r.missed.to_string(),
            ]
        })
        .collect();
    print!("{}", table(&["node_id", "addr", "state", "last_seen_ms_ago", "heartbeats", "missed"], &cells));
    Ok(())
}

/// `weft config running`: the node's effective configuration.
pub async fn config_running(args: &ClientArgs, out: OutputArgs) -> Result<()> {
    let client = args.connect().await?;
    let entries: Vec<crate::config::ConfigEntry> = client.call("weft.config", &()).await?;
    client.shutdown().await;
    if out.json {
        return print_json(&entries);
    }
    let width = entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
    for e in entries {
        println!("{:width$} = {}  # {}", e.key, e.value, e.source);
    }
    Ok(())
}
