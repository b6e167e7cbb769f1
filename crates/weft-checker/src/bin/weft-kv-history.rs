//! `weft-kv-history --node tcp://... [--node ...] --out history.jsonl`:
//! concurrent clients doing get/put/CAS on a few keys of a table through
//! `query.execute`, then one read of every key through every node; writes
//! the history. Check it with `weft-check --kv`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use weft_checker::kv_recorder::{KvRecorder, KvRecorderConfig};

#[derive(Parser)]
#[command(
    name = "weft-kv-history",
    about = "Record a get/put/CAS history of a Weft table"
)]
struct Args {
    /// Node address (tcp://HOST:PORT or HOST:PORT); repeat for a cluster.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    #[arg(long, default_value = "lin")]
    table: String,
    #[arg(long, default_value_t = 4)]
    keys: u32,
    #[arg(long, default_value_t = 4)]
    clients: u32,
    #[arg(long, default_value_t = 10_000)]
    duration_ms: u64,
    /// Stop after this many operations in all.
    #[arg(long, default_value_t = 2000)]
    max_ops: u64,
    #[arg(long, default_value_t = 3_000)]
    request_timeout_ms: u64,
    /// How long to keep trying an unreachable node (table creation, final reads).
    #[arg(long, default_value_t = 30_000)]
    reach_timeout_ms: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = KvRecorderConfig {
        nodes: a.nodes,
        table: a.table,
        keys: a.keys,
        clients: a.clients,
        duration: Duration::from_millis(a.duration_ms),
        max_ops: a.max_ops,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        reach_timeout: Duration::from_millis(a.reach_timeout_ms),
        seed: a.seed,
    };
    let r = Arc::new(KvRecorder::new(cfg)?);
    // SIGTERM or SIGINT end the load early; the final reads and the history follow.
    let stopper = r.clone();
    weft_checker::stop_on_signal("weft-kv-history: stopping clients, reading back", move || stopper.stop())?;
    r.create_table().await?;
    // scripts/chaos waits for this line before its first fault.
    eprintln!("weft-kv-history: table ready, running");
    r.run().await?;
    for m in r.final_reads().await {
        eprintln!("weft-kv-history: final read incomplete: {m}");
    }
    let h = r.history();
    h.save(&a.out)?;
    eprintln!(
        "weft-kv-history: {} operations, {} writes acknowledged, written to {}",
        h.events.len(),
        r.acked_writes(),
        a.out.display()
    );
    Ok(())
}
