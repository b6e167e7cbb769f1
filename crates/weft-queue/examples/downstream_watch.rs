//! The error keeper example: a service that depends on a downstream Weft
//! service and says so through its error keeper while it is down.
//!
//! ```sh
//! weft serve --data-dir /tmp/ds &                 # the downstream, on 127.0.0.1:7400
//! cargo run -p weft-queue --example downstream_watch -- --port 7500 --downstream tcp://127.0.0.1:7400
//! weft errors --addr tcp://127.0.0.1:7500         # "no error states"
//! kill %1; weft errors --addr tcp://127.0.0.1:7500   # DOWNSTREAM_DOWN x3 tcp://... does not answer weft.ping
//! weft stats --addr tcp://127.0.0.1:7500 --json | grep error   # error.DOWNSTREAM_DOWN, errors.active
//! ```
//! Restart the downstream and the state is cleared at the next check.

#[path = "common/watch.rs"]
mod watch;

use std::path::PathBuf;
use std::time::Duration;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let port: u16 = opt("--port").unwrap_or_else(|| "7500".into()).parse()?;
    let dir = PathBuf::from(opt("--dir").unwrap_or_else(|| "./downstream-watch-data".into()));
    let downstream: weft_net::Endpoint = opt("--downstream").unwrap_or_else(|| "tcp://127.0.0.1:7400".into()).parse()?;
    let interval = Duration::from_millis(opt("--interval-ms").unwrap_or_else(|| "1000".into()).parse()?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let w = watch::start(&format!("127.0.0.1:{port}"), &dir, downstream, interval).await?;
        println!("READY downstream-watch {}", w.addr);
        tokio::signal::ctrl_c().await?;
        w.shutdown().await;
        Ok(())
    })
}
