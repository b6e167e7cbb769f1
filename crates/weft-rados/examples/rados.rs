//! Stand-alone `weft rados` for manual use and benchmarks before the CLI is
//! wired into the `weft` binary:
//! `cargo run -p weft-rados --example rados -- -c /tmp/weft-ceph/ceph.conf -p test ls`
use clap::Parser;

#[derive(Parser)]
struct Top {
    #[command(flatten)]
    args: weft_rados::cli::RadosArgs,
}

#[tokio::main]
async fn main() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let top = Top::parse();
    if let Err(e) = weft_rados::cli::run(top.args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
