//! The command line of `weft-bench` (and of `weft bench`, if the binary
//! wires it in).

use std::io::Write;
use std::time::Duration;

use weft_net::Target;

use crate::error::BenchError;
use crate::load::{run as run_load, Limit, Load, Workload};
use crate::report::Format;
use crate::resp::{run_resp, RespAddr, RespLoad};

/// Closed-loop round trips against a Weft node: for every address and every
/// client count, N clients each send one request at a time.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server address: tcp://HOST:PORT, udp://HOST:PORT, unix://PATH,
    /// tls://HOST:PORT or quic://HOST:PORT (repeatable; TLS options from
    /// WEFT_TLS_CA, WEFT_TLS_CLIENT_CERT, WEFT_TLS_CLIENT_KEY).
    /// (default tcp://127.0.0.1:7400 when neither --addr nor --redis-addr is given).
    #[arg(long = "addr", value_name = "URL")]
    pub addrs: Vec<String>,
    /// A Redis server to run the same closed loop against with RESP `PING`
    /// (redis://HOST:PORT or redis+unix:///PATH; repeatable; ping only):
    /// both servers measured by one generator, one clock.
    #[arg(long = "redis-addr", value_name = "URL")]
    pub redis_addrs: Vec<String>,
    /// Concurrent clients, one connection each; a comma-separated list runs each in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Measured seconds per run (after the warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Requests per client instead of a duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Warm-up seconds per run, not measured.
    #[arg(long, default_value_t = 0.3)]
    pub warmup: f64,
    /// `ping` (weft.ping, empty body) or `echo` (weft.echo of --payload bytes).
    #[arg(long, value_parser = ["ping", "echo"], default_value = "ping")]
    pub workload: String,
    /// Echo payload size in bytes.
    #[arg(long, default_value_t = 16)]
    pub payload: usize,
    /// A request unanswered after this many milliseconds counts as an error.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Longest run accepted: load loops are bounded.
const DURATION_S_MAX: f64 = 600.0;

fn seconds(what: &str, s: f64) -> Result<Duration, BenchError> {
    if !(0.0..=DURATION_S_MAX).contains(&s) {
        return Err(BenchError::BadArgs(format!("{what} must be between 0 and {DURATION_S_MAX} seconds, not {s}")));
    }
    Ok(Duration::from_secs_f64(s))
}

impl BenchArgs {
    /// Every run the arguments ask for, in order: by address, then clients.
    pub fn loads(&self) -> Result<Vec<Load>, BenchError> {
        let workload = match self.workload.as_str() {
            "echo" => Workload::Echo { payload_bytes: self.payload },
            _ => Workload::Ping,
        };
        let limit = match self.requests {
            Some(n) => Limit::Requests(n),
            None => Limit::Duration(seconds("--duration", self.duration)?),
        };
        let mut loads = vec![];
        let default_addr = ["tcp://127.0.0.1:7400".to_owned()];
        let addrs = if self.addrs.is_empty() && self.redis_addrs.is_empty() { &default_addr[..] } else { &self.addrs[..] };
        for addr in addrs {
            let endpoint: Target = addr.parse().map_err(|e| BenchError::BadArgs(format!("--addr: {e}")))?;
            for &clients in &self.clients {
                loads.push(Load {
                    endpoint: endpoint.clone(),
                    clients,
                    workload: workload.clone(),
                    limit,
                    warmup: seconds("--warmup", self.warmup)?,
                    request_timeout: Duration::from_millis(self.timeout_ms.max(1)),
                });
            }
        }
        Ok(loads)
    }

    /// The RESP runs: by address, then clients (ping only).
    pub fn resp_loads(&self) -> Result<Vec<RespLoad>, BenchError> {
        if !self.redis_addrs.is_empty() && self.workload != "ping" {
            return Err(BenchError::BadArgs("--redis-addr runs ping only".into()));
        }
        let limit = match self.requests {
            Some(n) => Limit::Requests(n),
            None => Limit::Duration(seconds("--duration", self.duration)?),
        };
        let mut loads = vec![];
        for addr in &self.redis_addrs {
            let addr = RespAddr::parse(addr)?;
            for &clients in &self.clients {
                loads.push(RespLoad {
                    addr: addr.clone(),
                    clients,
                    limit,
                    warmup: seconds("--warmup", self.warmup)?,
                    request_timeout: Duration::from_millis(self.timeout_ms.max(1)),
                });
            }
        }
        Ok(loads)
    }
}

/// Run every load in turn and print a line per run as it finishes.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let loads = args.loads()?;
    let resp_loads = args.resp_loads()?;
    let mut out = std::io::stdout();
    args.format.header(&mut out).map_err(BenchError::Output)?;
    let print = |report: &crate::Report, out: &mut std::io::Stdout| -> Result<(), BenchError> {
        args.format.row(report, out).map_err(BenchError::Output)?;
        out.flush().map_err(BenchError::Output)?;
        if let Some(e) = &report.first_error {
            eprintln!("{} clients={}: {} errors, first: {e}", report.endpoint, report.clients, report.errors);
        }
        Ok(())
    };
    for load in &loads {
        print(&run_load(load).await?, &mut out)?;
    }
    for load in &resp_loads {
        print(&run_resp(load).await?, &mut out)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn matrix_of_addresses_and_clients() {
        let t = T::parse_from(["t", "--addr", "tcp://127.0.0.1:1", "--addr", "unix:///tmp/x.sock", "--clients", "1,16,64", "--requests", "5"]);
        let loads = t.args.loads().unwrap();
        assert_eq!(loads.len(), 6);
        assert_eq!(loads[5].clients, 64);
        assert_eq!(loads[5].endpoint.to_string(), "unix:///tmp/x.sock");
        assert_eq!(loads[0].limit, Limit::Requests(5));
        let t = T::parse_from(["t", "--addr", "tls://127.0.0.1:7403", "--addr", "quic://127.0.0.1:7401", "--clients", "1"]);
        let loads = t.args.loads().unwrap();
        let names: Vec<String> = loads.iter().map(|l| l.endpoint.to_string()).collect();
        assert_eq!(names, ["tls://127.0.0.1:7403", "quic://127.0.0.1:7401"]);
    }

    #[test]
    fn redis_addresses_run_ping_only() {
        let t = T::parse_from(["t", "--redis-addr", "redis://127.0.0.1:6379", "--redis-addr", "redis+unix:///tmp/r.sock", "--clients", "1,16"]);
        assert!(t.args.loads().unwrap().is_empty(), "no default weft address when only redis is asked for");
        let loads = t.args.resp_loads().unwrap();
        assert_eq!(loads.len(), 4);
        assert_eq!(loads[3].addr, RespAddr::Unix("/tmp/r.sock".into()));
        let t = T::parse_from(["t", "--redis-addr", "redis://127.0.0.1:6379", "--workload", "echo"]);
        assert!(matches!(t.args.resp_loads(), Err(BenchError::BadArgs(_))));
        let t = T::parse_from(["t"]);
        assert_eq!(t.args.loads().unwrap()[0].endpoint.to_string(), "tcp://127.0.0.1:7400");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let t = T::parse_from(["t", "--addr", "http://x"]);
        assert!(matches!(t.args.loads(), Err(BenchError::BadArgs(_))));
        let t = T::parse_from(["t", "--duration=-1"]);
        assert!(matches!(t.args.loads(), Err(BenchError::BadArgs(_))));
        let t = T::parse_from(["t", "--duration", "1e9"]);
        assert!(matches!(t.args.loads(), Err(BenchError::BadArgs(_))));
        let t = T::parse_from(["t", "--workload", "echo", "--payload", "32"]);
        assert_eq!(t.args.loads().unwrap()[0].workload, Workload::Echo { payload_bytes: 32 });
    }
}
