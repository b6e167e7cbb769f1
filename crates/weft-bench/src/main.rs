//! `weft-bench`: round trips per second and latency against a Weft node.
//! See docs/BENCHMARKS.md and bench/rr.sh.

use clap::Parser;
use weft_bench::cli::{run, BenchArgs};
use weft_bench::BenchError;

#[derive(Parser)]
#[command(name = "weft-bench", version, about = "Closed-loop round trips against a Weft node over TCP, Unix sockets or UDP")]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
    /// Runtime worker threads for the load generator. 1 (the default) is a
    /// single-threaded runtime, like redis-benchmark's single event loop.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads).enable_all().build()
    };
    let result = rt.map_err(BenchError::Runtime).and_then(|rt| rt.block_on(run(cli.args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
