//! `weft top`: a live view of one Weft node in the terminal, like `top`
//! for a broker: request rates and latencies per endpoint, topics and
//! their write rates, consumer groups and their lag, queues and their
//! backlog; in cluster mode the nodes, leaders and partition groups; tables;
//! pvAccess channels and PVs.
//!
//! - [`gather`] asks the node (standard endpoints only: `weft.info`,
//!   `weft.stats`, `log.topic.*`, `log.group.list`, `weft.queue.ls`,
//!   `weft.sender.ls`, `cluster.status`, `pva.pvs`) for one [`Sample`];
//! - [`model`] turns two samples into a [`View`] (rates need two), with
//!   [`panels`] for the cluster, tables and pvAccess;
//! - [`render`] draws a view with ratatui, [`text`] prints it for scripts.
//!
//! Nothing here keeps state on the node: any number of `weft top`s can
//! watch one node.

pub mod gather;
pub mod model;
pub mod panels;
pub mod render;
pub mod text;

use std::io::IsTerminal;
use std::time::Duration;

pub use gather::gather;
pub use model::{Sample, View};

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("asking the node for {what}: {source}")]
    Call { what: &'static str, source: weft_net::ClientError },
    #[error("the node's answer to {what} is not what weft top expects: {message}")]
    Answer { what: &'static str, message: String },
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Options of `weft top` (the connection options come from the caller).
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// Refresh period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print one view as text (rates over one interval) and exit; also
    /// what happens when standard output is not a terminal.
    #[arg(long)]
    pub once: bool,
    /// Print the one view as JSON (set from the global `--json`; implies --once).
    #[arg(skip)]
    pub json: bool,
}

/// Runs `weft top` on a connected client until the user quits (q, Esc,
/// Ctrl-C), or prints one view with `--once` / without a terminal.
pub async fn run(client: &weft_net::Client, args: &TopArgs) -> Result<(), TopError> {
    let interval = Duration::from_millis(args.interval_ms.clamp(100, 60_000));
    if args.once || args.json || !std::io::stdout().is_terminal() {
        let first = gather(client).await?;
        tokio::time::sleep(interval).await;
        let second = gather(client).await?;
        let view = View::between(Some(&first), &second);
        if args.json {
            // The view's own field names; a View is plain data, so this cannot fail.
            println!("{}", serde_json::to_string_pretty(&view).unwrap_or_default());
        } else {
            print!("{}", text::render(&view));
        }
        return Ok(());
    }
    render::interactive(client, interval).await
}
