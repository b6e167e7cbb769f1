//! Stand-alone `pv` tool (what `weft pv` runs), for trying the CLI without the weft binary.
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: weft_pva::cli::PvCommand,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    if let Err(e) = weft_pva::cli::run(a.cmd).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
