//! Command line: `weft queue ...`, `weft sender ...`, `weft errors ...`,
//! `weft stats [--gathered|--full]`. The `weft` binary wires [`Command`] in
//! with `#[command(flatten)]` and calls [`run`].

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{de::DeserializeOwned, Serialize};
use weft_net::{Client, ClientConfig, Target};

use crate::error::QueueError;
use crate::keepers::{ErrorState, Snapshot};
use crate::manage::{ClearErrors, Count, ErrorsReq, NameReq, PauseReq, ReprocessReq, SetReq, UidReq, WatchReq};
use crate::queue::{ItemView, PauseWhat, QueueInfo};

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Node address: tcp://HOST:PORT, udp://HOST:PORT or unix://PATH.
    #[arg(long, env = "WEFT_ADDR", default_value = "tcp://127.0.0.1:7400", global = true)]
    pub addr: String,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
    /// Print JSON (the API's field names) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub tls: weft_net::cli::TlsClientArgs,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Manage queued endpoints: ls, show, pause, resume, errors, inspect, pop, reprocess, clear.
    Queue {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        op: QueueOp,
    },
    /// Manage queued senders (same operations as `queue`).
    Sender {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        op: QueueOp,
    },
    /// Show the node's error states, or clear them.
    Errors {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        op: Option<ErrorsOp>,
    },
    /// Print statistics: current values (default), the last gathered snapshot, or the full history.
    Stats {
        #[command(flatten)]
        conn: Conn,
        /// The last gathered snapshot.
        #[arg(long, conflicts_with = "full")]
        gathered: bool,
        /// Every gathered snapshot, newest first.
        #[arg(long)]
        full: bool,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum QueueOp {
    /// List queues with their sizes.
    Ls,
    /// One queue's state.
    Show { name: String },
    /// Pause accepting, processing, or both (default).
    Pause {
        name: String,
        #[arg(long, value_enum, default_value = "all")]
        what: PauseWhat,
    },
    /// Resume accepting, processing, or both (default).
    Resume {
        name: String,
        #[arg(long, value_enum, default_value = "all")]
        what: PauseWhat,
    },
    /// Print queue states as they change (server events, no polling): the
    /// current states first, then one line per change; --count N stops after N changes.
    Watch {
        name: Option<String>,
        #[arg(long)]
        count: Option<u64>,
    },
    /// Change run-time settings: --max-uncommitted N (items taken but not yet committed).
    Set {
        name: String,
        #[arg(long)]
        max_uncommitted: Option<usize>,
    },
    /// Uids of the first N items of the error queue.
    Errors {
        name: String,
        #[arg(short, long, default_value_t = 10)]
        n: usize,
    },
    /// Show a queued item (request, attempts, last failure).
    Inspect { name: String, uid: String },
    /// Remove an item from the error queue and print it.
    Pop { name: String, uid: String },
    /// Move an error item (or, with --all, every one) back to incoming, retries reset.
    Reprocess {
        name: String,
        #[arg(required_unless_present = "all")]
        uid: Option<String>,
        #[arg(long, conflicts_with = "uid")]
        all: bool,
    },
    /// Drop every item of the error queue.
    Clear { name: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum ErrorsOp {
    /// Clear COUNT raises of ERROR_ID (0 = all), or every error state.
    Clear {
        error_id: Option<String>,
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

async fn connect(conn: &Conn) -> Result<Client, QueueError> {
    let endpoint: Target = conn.addr.parse().map_err(|e: weft_net::NetError| QueueError::Usage(e.to_string()))?;
    let config = ClientConfig {
        client_name: "weft-cli".into(),
        connect_timeout: Duration::from_millis(conn.timeout_ms.min(10_000)),
        request_timeout: Duration::from_millis(conn.timeout_ms),
        body_format: weft_wire::BodyFormat::Json,
        tls: conn.tls.config(),
        token: conn.tls.token.clone(),
        ..ClientConfig::default()
    };
    Ok(Client::connect(endpoint, config).await?)
}

async fn call<Req: Serialize, Resp: DeserializeOwned>(c: &Client, route: &str, req: &Req) -> Result<Resp, QueueError> {
    Ok(c.call(route, req).await?)
}

fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("<cannot render: {e}>")));
}

fn print_info(i: &QueueInfo) {
    let mut paused = vec![];
    if i.accepting_paused {
        paused.push("accepting");
    }
    if i.processing_paused {
        paused.push("processing");
    }
    let paused = if paused.is_empty() { "-".to_owned() } else { paused.join("+") };
    println!(
        "{:<32} incoming {:>7}  errors {:>6}  in-flight {:>3}  uncommitted {:>3}/{:<4}  processed {:>8}  paused {}",
        i.name, i.incoming, i.errors, i.in_flight, i.uncommitted, i.max_uncommitted, i.processed, paused
    );
}

fn print_item(v: &ItemView) {
    println!("uid       {}", v.uid);
    println!("queue     {:?}", v.queue);
    println!("attempts  {}", v.attempts);
    if !v.reason.is_empty() {
        println!("reason    {}", v.reason);
    }
    if let Some(g) = &v.group {
        println!("group     {g}");
    }
    println!("enqueued  {} (unix ms)", v.enqueued_ms);
    println!("request   {}", v.request);
}

/// Run one command, printing to stdout.
pub async fn run(cmd: Command) -> Result<(), QueueError> {
    match cmd {
        Command::Queue { conn, op } => run_queue(&conn, "weft.queue", op).await,
        Command::Sender { conn, op } => run_queue(&conn, "weft.sender", op).await,
        Command::Errors { conn, op } => {
            let c = connect(&conn).await?;
            let states: Vec<ErrorState> = match op {
                None => call(&c, "weft.errors.get", &()).await?,
                Some(ErrorsOp::Clear { error_id, count }) => call(&c, "weft.errors.clear", &ClearErrors { error_id, count }).await?,
            };
            if conn.json {
                print_json(&states);
            } else if states.is_empty() {
                println!("no error states");
            } else {
                for s in states {
                    println!("{:<24} x{:<6} {}", s.error_id, s.count, s.description);
                }
            }
            Ok(())
        }
        Command::Stats { conn, gathered, full } => {
            let c = connect(&conn).await?;
            let snaps: Vec<Snapshot> = if full || gathered {
                let snaps: Vec<Snapshot> = if full {
                    call(&c, "weft.stats.full", &()).await?
                } else {
                    let s: Option<Snapshot> = call(&c, "weft.stats.gathered", &()).await?;
                    s.into_iter().collect()
                };
                if snaps.is_empty() && !conn.json {
                    // Say why there is nothing, instead of printing nothing.
                    let why = match c.call::<_, Snapshot>("weft.stats.current", &()).await {
                        Ok(cur) => format!(
                            "the keeper gathers every {:.0} s (stats.gather_period_ms) and the node has been up {:.0} s",
                            cur.gather_period, cur.uptime
                        ),
                        Err(_) => "the keeper has not gathered a period yet".into(),
                    };
                    println!("no gathered history yet: {why}; `weft stats` shows current values");
                }
                snaps
            } else {
                match c.call::<_, Snapshot>("weft.stats.current", &()).await {
                    Ok(s) => vec![s],
                    // A node without the keeper: its plain flat statistics.
                    Err(e) if e.code() == Some(weft_wire::ErrorCode::UnknownRoute) => {
                        let values: BTreeMap<String, serde_json::Value> = call(&c, "weft.stats", &()).await?;
                        vec![Snapshot { timestamp: 0.0, uptime: 0.0, gather_period: 0.0, values, endpoints: BTreeMap::new() }]
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            if conn.json {
                print_json(&snaps);
                return Ok(());
            }
            for s in snaps {
                println!("# timestamp {:.3} uptime {:.1}s period {:.0}s", s.timestamp, s.uptime, s.gather_period);
                let mut flat: BTreeMap<String, serde_json::Value> = s.values;
                // Routes not called in the period have no latencies (the
                // API's -1.0): left out rather than printed as -1.
                for (route, e) in s.endpoints.into_iter().filter(|(_, e)| e.call_count > 0) {
                    flat.insert(format!("period.{route}.call_count"), e.call_count.into());
                    if e.p95 >= 0.0 {
                        flat.insert(format!("period.{route}.p95_s"), e.p95.into());
                    }
                    if e.p99 >= 0.0 {
                        flat.insert(format!("period.{route}.p99_s"), e.p99.into());
                    }
                }
                flat.retain(|_, v| !no_data(v));
                // `key value`, one space: scripts and tests split on it.
                for (k, v) in flat {
                    println!("{k} {v}");
                }
            }
            Ok(())
        }
    }
}

/// A statistic without data: null, or the -1 that stands for "no
/// samples" in latency values.
fn no_data(v: &serde_json::Value) -> bool {
    v.is_null() || v.as_f64().is_some_and(|f| f == -1.0)
}

/// How often `weft queue watch` renews its watch.
const WATCH_RENEW: Duration = Duration::from_secs(30);

async fn run_queue(conn: &Conn, prefix: &str, op: QueueOp) -> Result<(), QueueError> {
    let c = connect(conn).await?;
    let route = |op: &str| format!("{prefix}.{op}");
    match op {
        QueueOp::Ls => {
            let infos: Vec<QueueInfo> = call(&c, &route("ls"), &()).await?;
            if conn.json {
                print_json(&infos);
            } else if infos.is_empty() {
                println!("no queues");
            } else {
                infos.iter().for_each(print_info);
            }
        }
        QueueOp::Show { name } => {
            let i: QueueInfo = call(&c, &route("show"), &NameReq { name }).await?;
            if conn.json { print_json(&i) } else { print_info(&i) }
        }
        QueueOp::Pause { name, what } => {
            let i: QueueInfo = call(&c, &route("pause"), &PauseReq { name, what: Some(what) }).await?;
            if conn.json { print_json(&i) } else { print_info(&i) }
        }
        QueueOp::Resume { name, what } => {
            let i: QueueInfo = call(&c, &route("resume"), &PauseReq { name, what: Some(what) }).await?;
            if conn.json { print_json(&i) } else { print_info(&i) }
        }
        QueueOp::Watch { name, count } => {
            let watch = WatchReq { name };
            let mut events = c.subscribe();
            let now: Vec<QueueInfo> = call(&c, &route("watch"), &watch).await?;
            let show = |i: &QueueInfo| if conn.json { println!("{}", serde_json::to_string(i).unwrap_or_default()) } else { print_info(i) };
            now.iter().for_each(show);
            let changed = format!("{prefix}.changed");
            let mut seen = 0u64;
            // Renewing the watch keeps the connection from the server's idle
            // timeout and re-registers it after a reconnection.
            let mut renew = tokio::time::interval(WATCH_RENEW);
            renew.tick().await;
            while count.is_none_or(|n| seen < n) {
                let f = tokio::select! {
                    f = events.recv() => f,
                    _ = renew.tick() => {
                        if let Err(e) = call::<_, Vec<QueueInfo>>(&c, &route("watch"), &watch).await {
                            tracing::debug!(error = %e, "renewing the watch failed; retrying at the next tick");
                        }
                        continue;
                    }
                };
                let Some(f) = f else { break };
                if f.route != changed {
                    continue;
                }
                match f.decode_body::<QueueInfo>() {
                    Ok(i) => show(&i),
                    Err(e) => tracing::debug!(error = %e, "undecodable queue change event"),
                }
                seen += 1;
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
        }
        QueueOp::Set { name, max_uncommitted } => {
            let i: QueueInfo = call(&c, &route("set"), &SetReq { name, max_uncommitted }).await?;
            if conn.json { print_json(&i) } else { print_info(&i) }
        }
        QueueOp::Errors { name, n } => {
            let uids: Vec<String> = call(&c, &route("errors"), &ErrorsReq { name, n: Some(n) }).await?;
            if conn.json {
                print_json(&uids);
            } else {
                uids.iter().for_each(|u| println!("{u}"));
            }
        }
        QueueOp::Inspect { name, uid } => {
            let v: ItemView = call(&c, &route("inspect"), &UidReq { name, uid }).await?;
            if conn.json { print_json(&v) } else { print_item(&v) }
        }
        QueueOp::Pop { name, uid } => {
            let v: ItemView = call(&c, &route("pop"), &UidReq { name, uid }).await?;
            if conn.json { print_json(&v) } else { print_item(&v) }
        }
        QueueOp::Reprocess { name, uid, all: _ } => {
            let n: Count = call(&c, &route("reprocess"), &ReprocessReq { name, uid }).await?;
            if conn.json { print_json(&n) } else { println!("{} item(s) moved back to incoming", n.count) }
        }
        QueueOp::Clear { name } => {
            let n: Count = call(&c, &route("clear"), &NameReq { name }).await?;
            if conn.json { print_json(&n) } else { println!("{} item(s) cleared", n.count) }
        }
    }
    Ok(())
}
