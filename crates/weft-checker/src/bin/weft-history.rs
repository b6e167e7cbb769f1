//! `weft-history --node tcp://... [--node ...] --out history.jsonl`: produces
//! unique values for a while, reads every partition back from every node,
//! writes the history. Check it with `weft-check`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use weft_checker::recorder::{Api, Recorder, RecorderConfig};

#[derive(Parser)]
#[command(name = "weft-history", about = "Record a produce/read history against Weft nodes")]
struct Args {
    /// Node address (tcp://HOST:PORT or HOST:PORT); repeat for a cluster.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    #[arg(long, default_value = "history")]
    topic: String,
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    #[arg(long)]
    replicas: Option<u32>,
    #[arg(long, default_value_t = 4)]
    producers: u32,
    #[arg(long, default_value_t = 10_000)]
    duration_ms: u64,
    #[arg(long, default_value_t = 5_000)]
    request_timeout_ms: u64,
    /// How long to keep trying an unreachable node (topic creation, final reads).
    #[arg(long, default_value_t = 30_000)]
    reach_timeout_ms: u64,
    /// Wait this long after the producers stop before the final reads.
    #[arg(long, default_value_t = 0)]
    settle_ms: u64,
    /// Record endpoints: log (log.produce/log.fetch) or cluster
    /// (cluster.produce/cluster.fetch: replicated partitions).
    #[arg(long, default_value = "log")]
    api: String,
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = RecorderConfig {
        nodes: a.nodes,
        topic: a.topic,
        partitions: a.partitions,
        replicas: a.replicas,
        producers: a.producers,
        duration: Duration::from_millis(a.duration_ms),
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        reach_timeout: Duration::from_millis(a.reach_timeout_ms),
        settle: Duration::from_millis(a.settle_ms),
        api: match a.api.as_str() {
            "log" => Api::Log,
            "cluster" => Api::Cluster,
            other => anyhow::bail!("--api takes log or cluster, not {other:?}"),
        },
    };
    let r = Arc::new(Recorder::new(cfg)?);
    // SIGTERM or SIGINT end the load early; the final reads and the history follow.
    let stopper = r.clone();
    weft_checker::stop_on_signal("weft-history: stopping producers, reading back", move || stopper.stop())?;
    r.create_topic().await?;
    // scripts/chaos waits for this line before its first fault.
    eprintln!("weft-history: topic ready, producing");
    r.produce().await?;
    let missed = r.final_reads().await;
    for m in &missed {
        eprintln!("weft-history: final read incomplete: {m}");
    }
    let h = r.history();
    h.save(&a.out)?;
    eprintln!("weft-history: {} events, {} acknowledged, written to {}", h.events.len(), r.acked(), a.out.display());
    Ok(())
}
