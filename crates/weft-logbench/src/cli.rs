//! `weft-logbench run ...` (one system, a matrix of scenarios, results as
//! JSON lines) and `weft-logbench report FILES` (tables with ratios).

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Subcommand, ValueEnum};

use crate::engine::{run_probed, Probes, Target};
use crate::failover;
use crate::jetstream::JetStreamTarget;
use crate::redis_streams::RedisTarget;
use crate::report;
use crate::weft::WeftTarget;
use crate::{BenchError, RunResult, Scenario};

#[derive(Subcommand, Debug)]
pub enum LogBenchCmd {
    /// Run every scenario against one system; print a line per run and
    /// append the results (JSON lines) to --out.
    Run(RunArgs),
    /// Print markdown tables with ratios from result files.
    Report(ReportArgs),
    /// Failover time on a cluster: kill -9 the stream leader, time the
    /// first acknowledged produce after it (prints and appends one JSON line).
    Failover(FailoverArgs),
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// jetstream or weft (a Weft cluster: partition 0's leader from `cluster.status`).
    #[arg(long, value_enum)]
    pub system: System,
    /// Every server of the cluster, comma-separated.
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub label: String,
    /// NAME=PID for each server (JetStream: its server_name; Weft: its node id), to kill the leader.
    #[arg(long)]
    pub pids: String,
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Synchronous produce before the kill.
    #[arg(long, default_value_t = 2000)]
    pub warmup_ms: u64,
    /// Give up when nothing is acknowledged this long after the kill.
    #[arg(long, default_value_t = 60_000)]
    pub max_wait_ms: u64,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum System {
    Weft,
    Jetstream,
    Redis,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    pub system: System,
    /// weft: tcp://HOST:PORT or unix://PATH (a cluster: every node,
    /// comma-separated, the first used for topic admin); jetstream:
    /// nats://HOST:PORT (a cluster: every server, comma-separated);
    /// redis: redis://HOST:PORT/
    #[arg(long)]
    pub target: String,
    /// Column name in the report, e.g. weft-always, redis-everysec, jetstream.
    #[arg(long)]
    pub label: String,
    /// The broker's pid, to sample its RSS during each run.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Replicas per stream / topic (JetStream: --target lists every server,
    /// comma-separated; Weft: --target lists every node, topics made with
    /// `log.topic.create` and `replicas`, produced and read at the leader).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// NAME=PID of each server: its disk writes (/proc/PID/io write_bytes)
    /// over each run's produce phase are recorded.
    #[arg(long)]
    pub io_pids: Option<String>,
    /// NAME=FILE: the output of `strace -f -e trace=fsync,fdatasync -o FILE`
    /// on that server; its fsync calls over each produce phase are recorded.
    #[arg(long)]
    pub fsync_logs: Option<String>,
    /// Value sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    pub sizes: Vec<usize>,
    /// Producer counts (one connection each).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub producers: Vec<usize>,
    /// Requests in flight per producer (1 = synchronous).
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    pub windows: Vec<usize>,
    /// Weft only: also run with this many records per produce request
    /// (each value adds runs, with --batch-window requests in flight).
    #[arg(long, value_delimiter = ',')]
    pub batches: Vec<usize>,
    #[arg(long, default_value_t = 8)]
    pub batch_window: usize,
    /// Each run stops sending after this long...
    #[arg(long, default_value_t = 3000)]
    pub duration_ms: u64,
    /// ...or after this many records in all.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_records: u64,
    /// Append results here (JSON lines).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Result files written by `run --out`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Ratio columns, LABEL_A/LABEL_B (repeatable); default: weft against
    /// the peer setting with the nearest promise.
    #[arg(long = "ratio")]
    pub ratios: Vec<String>,
    /// Also print every run as a row.
    #[arg(long)]
    pub all: bool,
}

impl RunArgs {
    /// The matrix, in the order it runs.
    pub fn scenarios(&self, batches: bool) -> Result<Vec<Scenario>, BenchError> {
        let check = |what: &str, v: &[usize], max: usize| {
            if v.is_empty() || v.iter().any(|&x| x == 0 || x > max) {
                Err(BenchError::Usage(format!("--{what} takes values from 1 to {max}")))
            } else {
                Ok(())
            }
        };
        check("sizes", &self.sizes, 1 << 20)?;
        check("producers", &self.producers, 64)?;
        check("windows", &self.windows, 4096)?;
        if !self.batches.is_empty() {
            check("batches", &self.batches, 10_000)?;
        }
        check("batch-window", &[self.batch_window], 4096)?;
        let mut out = Vec::new();
        let base = Scenario { size: 0, producers: 0, window: 0, batch: 1, duration_ms: self.duration_ms, max_records: self.max_records };
        for &size in &self.sizes {
            for &producers in &self.producers {
                for &window in &self.windows {
                    out.push(Scenario { size, producers, window, ..base.clone() });
                }
                if batches {
                    for &batch in self.batches.iter().filter(|&&b| b > 1) {
                        out.push(Scenario { size, producers, window: self.batch_window, batch, ..base.clone() });
                    }
                }
            }
        }
        Ok(out)
    }
}

pub async fn run(cmd: LogBenchCmd) -> Result<(), BenchError> {
    match cmd {
        LogBenchCmd::Run(args) => match args.system {
            System::Weft => {
                let nodes = endpoints(&args.target)?;
                let first = nodes.first().cloned().ok_or_else(|| BenchError::Usage("--target names no node".into()))?;
                run_all(&WeftTarget::connect(first).await?.with_replicas(args.replicas).with_nodes(nodes), &args).await
            }
            System::Jetstream => run_all(&JetStreamTarget::connect(&args.target, args.replicas).await?, &args).await,
            System::Redis => run_all(&RedisTarget::connect(&args.target).await?, &args).await,
        },
        LogBenchCmd::Failover(args) => {
            let pids = failover::parse_pids(&args.pids)?;
            let (warmup, max_wait) = (std::time::Duration::from_millis(args.warmup_ms), std::time::Duration::from_millis(args.max_wait_ms));
            let r = match args.system {
                System::Jetstream => {
                    let t = JetStreamTarget::connect(&args.target, args.replicas).await?;
                    failover::jetstream(&t, &args.label, &pids, args.replicas, args.size, warmup, max_wait).await?
                }
                System::Weft => {
                    let targets = endpoints(&args.target)?;
                    failover::weft(&targets, &args.label, &pids, args.replicas, args.size, warmup, max_wait).await?
                }
                System::Redis => return Err(BenchError::Usage("failover: jetstream or weft".into())),
            };
            let line = serde_json::to_string(&r)?;
            println!("{line}");
            if let Some(p) = &args.out {
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
                writeln!(f, "{line}")?;
            }
            Ok(())
        }
        LogBenchCmd::Report(args) => {
            let mut results = Vec::new();
            for f in &args.files {
                results.extend(report::parse_lines(&std::fs::read_to_string(f)?)?);
            }
            let ratios: Vec<String> =
                if args.ratios.is_empty() { report::DEFAULT_RATIOS.iter().map(|s| s.to_string()).collect() } else { args.ratios.clone() };
            print!("{}", report::render(&results, &ratios));
            if args.all {
                println!("\n### Every run\n");
                print!("{}", report::render_all(&results));
            }
            Ok(())
        }
    }
}

/// Comma-separated Weft endpoints.
fn endpoints(s: &str) -> Result<Vec<weft_net::Endpoint>, BenchError> {
    s.split(',').filter(|t| !t.trim().is_empty()).map(|t| weft_net::Endpoint::from_str(t.trim()).map_err(|e| BenchError::Usage(e.to_string()))).collect()
}

impl RunArgs {
    /// What to watch on the servers (`--pid`, `--io-pids`, `--fsync-logs`).
    pub fn probes(&self) -> Result<Probes, BenchError> {
        let io_pids = match &self.io_pids {
            Some(s) => pairs(s, "--io-pids")?.into_iter().map(|(n, p)| p.parse().map(|p| (n, p)).map_err(|_| BenchError::Usage(format!("--io-pids: bad pid {p:?}")))).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let fsync_logs = match &self.fsync_logs {
            Some(s) => pairs(s, "--fsync-logs")?.into_iter().map(|(n, f)| (n, PathBuf::from(f))).collect(),
            None => Vec::new(),
        };
        Ok(Probes { pid: self.pid, io_pids, fsync_logs })
    }
}

/// `NAME=VALUE,NAME=VALUE`, in order.
fn pairs(s: &str, what: &str) -> Result<Vec<(String, String)>, BenchError> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map(|(n, v)| (n.to_owned(), v.to_owned())).ok_or_else(|| BenchError::Usage(format!("{what} takes NAME=VALUE,..., not {p:?}"))))
        .collect()
}

/// Run the matrix against `t`; a failed run is reported and the rest go on.
pub async fn run_all<T: Target>(t: &T, args: &RunArgs) -> Result<(), BenchError> {
    let scenarios = args.scenarios(t.batches())?;
    let probes = args.probes()?;
    let mut out = match &args.out {
        Some(p) => Some(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        None => None,
    };
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let mut failed = 0;
    for (i, sc) in scenarios.iter().enumerate() {
        let name = format!("lb-{}-{stamp}-{i}", args.label);
        match run_probed(t, &args.label, sc, &probes, &name).await {
            Ok(r) => {
                println!("{}", line(&r));
                if let Some(f) = &mut out {
                    writeln!(f, "{}", serde_json::to_string(&r)?)?;
                }
            }
            Err(e) => {
                failed += 1;
                println!("{} size={} producers={} window={} batch={}: FAILED: {e}", args.label, sc.size, sc.producers, sc.window, sc.batch);
            }
        }
    }
    if failed > 0 {
        return Err(BenchError::Unexpected(format!("{failed} of {} runs failed", scenarios.len())));
    }
    Ok(())
}

fn line(r: &RunResult) -> String {
    let s = &r.scenario;
    format!(
        "{:<16} size={:<5} producers={} window={:<3} batch={:<4} produced={:<8} {:>9.0} rec/s {:>7.1} MB/s p50={:.3}ms p99={:.3}ms | consumed {:>9.0} rec/s{} | rss peak {} MB",
        r.label,
        s.size,
        s.producers,
        s.window,
        s.batch,
        r.produced,
        r.produce_rec_s,
        r.produce_mb_s,
        r.p50_us as f64 / 1000.0,
        r.p99_us as f64 / 1000.0,
        r.consume_rec_s,
        r.consume_raw_rec_s.map_or(String::new(), |v| format!(" (raw {v:.0})")),
        r.rss_peak_kb.map_or("?".into(), |kb| format!("{:.0}", kb as f64 / 1024.0)),
    ) + &extras(r)
}

/// Replica catch-up, read-back wait and disk writes per record, when measured.
fn extras(r: &RunResult) -> String {
    let mut out = String::new();
    if let Some(ms) = r.replicas_caught_up_ms {
        out += &format!(" | replicas caught up {ms:.0} ms");
    }
    if let Some(n) = r.home_behind.filter(|n| *n > 0) {
        out += &format!(" | {n} acked records not yet readable where acked");
    }
    if let Some(ms) = r.readback_lag_ms.filter(|ms| *ms >= 1.0) {
        out += &format!(" | read-back waited {ms:.0} ms");
    }
    if !r.disk.is_empty() && r.produced > 0 {
        let per = |v: u64| v as f64 / r.produced as f64;
        let nodes: Vec<String> = r
            .disk
            .iter()
            .map(|d| format!("{}={:.0}B{}", d.node, per(d.write_bytes), d.fsyncs.map_or(String::new(), |f| format!("/{:.3}fs", per(f)))))
            .collect();
        out += &format!(" | disk per record: {}", nodes.join(" "));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: LogBenchCmd,
    }

    #[test]
    fn matrix_and_limits() {
        let t = T::parse_from(["x", "run", "--system", "weft", "--target", "unix:///tmp/s", "--label", "w", "--windows", "1,64", "--batches", "1,100"]);
        let LogBenchCmd::Run(a) = t.cmd else { panic!() };
        let weft = a.scenarios(true).unwrap();
        // 2 sizes x 2 producer counts x (2 windows + 1 batched).
        assert_eq!(weft.len(), 12);
        assert!(weft.iter().any(|s| s.batch == 100 && s.window == 8));
        assert_eq!(a.scenarios(false).unwrap().len(), 8);
        let t = T::parse_from(["x", "run", "--system", "redis", "--target", "redis://x/", "--label", "r", "--producers", "0"]);
        let LogBenchCmd::Run(a) = t.cmd else { panic!() };
        assert!(a.scenarios(false).is_err());
        let t = T::parse_from(["x", "run", "--system", "weft", "--target", "tcp://a:1", "--label", "w", "--io-pids", "1=10,2=20", "--fsync-logs", "2=/tmp/f"]);
        let LogBenchCmd::Run(a) = t.cmd else { panic!() };
        let p = a.probes().unwrap();
        assert_eq!(p.io_pids, vec![("1".into(), 10), ("2".into(), 20)]);
        assert_eq!(p.fsync_logs, vec![("2".into(), PathBuf::from("/tmp/f"))]);
        let t = T::parse_from(["x", "run", "--system", "weft", "--target", "tcp://a:1", "--label", "w", "--io-pids", "1=x"]);
        let LogBenchCmd::Run(a) = t.cmd else { panic!() };
        assert!(a.probes().is_err());
        assert_eq!(endpoints("tcp://a:1, tcp://b:2").unwrap().len(), 2);
        assert!(endpoints("a:1").is_err());
    }
}
