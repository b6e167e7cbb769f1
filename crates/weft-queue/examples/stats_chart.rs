//! The graphing example (Ecosystem's RRD example on Weft): sample a node's
//! statistics over the native protocol and write a PNG line chart.
//!
//! ```sh
//! weft serve &
//! cargo run -p weft-queue --example stats_chart -- --addr tcp://127.0.0.1:7400 \
//!     --key 'endpoint.*.calls' --key net.conn.open --samples 60 --interval-ms 1000 --out node.png
//! ```
//! Each `--key` is one line (a `*` sums matching keys; default
//! `endpoint.*.calls`, the node's calls). No text on the chart: the series
//! are drawn in `--key` order in plotters' Palette99 colours, and the
//! program prints each series' first and last values.

#[path = "common/chart.rs"]
mod chart;

use std::path::PathBuf;
use std::time::Duration;

use weft_net::{Client, ClientConfig, Target};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let addr: Target = opt("--addr").unwrap_or_else(|| "tcp://127.0.0.1:7400".into()).parse()?;
    let out = PathBuf::from(opt("--out").unwrap_or_else(|| "weft-stats.png".into()));
    let samples: usize = opt("--samples").unwrap_or_else(|| "30".into()).parse()?;
    let interval = Duration::from_millis(opt("--interval-ms").unwrap_or_else(|| "1000".into()).parse()?);
    let mut keys: Vec<String> = args.windows(2).filter(|w| w[0] == "--key").map(|w| w[1].clone()).collect();
    if keys.is_empty() {
        keys.push("endpoint.*.calls".into());
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = Client::connect(addr, ClientConfig { client_name: "stats-chart".into(), ..ClientConfig::default() }).await?;
        let series = chart::sample(&client, &keys, samples, interval).await?;
        chart::draw(&series, &out)?;
        for s in &series {
            let first = s.points.first().map(|p| p.1);
            let last = s.points.last().map(|p| p.1);
            println!("{}: {} samples, first {first:?}, last {last:?}", s.key, s.points.len());
        }
        println!("wrote {}", out.display());
        Ok(())
    })
}
