//! `weft-logbench`: see the crate docs and bench/log.sh.

use clap::Parser;

#[derive(Parser)]
#[command(name = "weft-logbench", about = "Streaming-log benchmark: Weft vs NATS JetStream vs Redis Streams")]
struct Cli {
    #[command(subcommand)]
    cmd: weft_logbench::cli::LogBenchCmd,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = weft_logbench::cli::run(cli.cmd).await {
        eprintln!("weft-logbench: {e}");
        std::process::exit(1);
    }
}
