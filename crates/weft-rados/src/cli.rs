//! `weft rados ...`: a command-line surface like the `rados` tool's.
//! Wire it with `weft_rados::cli::RadosArgs` (clap Args) and
//! `weft_rados::cli::run(args).await`.

use crate::config::{ClientConfig, ConfigSource};
use crate::error::{Error, Result};
use crate::rados::{IoCtx, Rados};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct RadosArgs {
    /// ceph.conf path (mon_host, keyring)
    #[arg(short = 'c', long, env = "CEPH_CONF", global = true)]
    pub conf: Option<String>,
    /// keyring path
    #[arg(short = 'k', long, global = true)]
    pub keyring: Option<String>,
    /// secret key (base64); overrides the keyring (also WEFT_CEPH_KEY)
    #[arg(long, global = true)]
    pub key: Option<String>,
    /// client id: `admin` or `client.admin`
    #[arg(long, default_value = "admin", global = true)]
    pub id: String,
    /// monitor addresses, overriding the conf file
    #[arg(short = 'm', long, global = true)]
    pub mon_host: Option<String>,
    /// connection modes to monitors, e.g. `secure,crc`
    #[arg(long, global = true)]
    pub mon_mode: Option<String>,
    /// connection modes to OSDs, e.g. `crc,secure`
    #[arg(long, global = true)]
    pub osd_mode: Option<String>,
    /// on-wire compression offered to OSDs: none, snappy, lz4 or zstd
    /// (Ceph 17+ OSDs; overrides the conf file's rados_compression /
    /// ms_osd_compress_mode)
    #[arg(long, global = true)]
    pub compression: Option<String>,
    /// msgr2 sessions per OSD (1..16; ops on one object share one)
    #[arg(long, global = true)]
    pub conns_per_osd: Option<usize>,
    /// pool name
    #[arg(short = 'p', long, global = true)]
    pub pool: Option<String>,
    /// object namespace within the pool
    #[arg(short = 'N', long, global = true)]
    pub namespace: Option<String>,
    /// read at this pool snapshot (get, stat, getxattr, listxattr,
    /// listomapvals), like `rados -s`
    #[arg(short = 's', long, global = true)]
    pub snap: Option<String>,
    /// print JSON instead of text (lspools, ls, stat, getxattr,
    /// listxattr, listomapvals, bench)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: RadosCmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Write,
    Seq,
    Rand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RadosCmd {
    /// list pools
    Lspools,
    /// create a pool
    Mkpool {
        name: String,
        #[arg(default_value_t = 8)]
        pg_num: u32,
    },
    /// delete a pool
    Rmpool { name: String },
    /// write an object from a file (`-` = stdin)
    Put { oid: String, file: String },
    /// read an object to a file (`-` = stdout)
    Get { oid: String, file: String },
    /// size and mtime of an object
    Stat { oid: String },
    /// remove objects
    Rm { oids: Vec<String> },
    /// list objects in the pool/namespace
    Ls {
        /// every namespace (prints namespace<TAB>name)
        #[arg(long)]
        all: bool,
    },
    /// set an extended attribute
    Setxattr { oid: String, name: String, value: String },
    /// print an extended attribute's value
    Getxattr { oid: String, name: String },
    /// list extended attribute names
    Listxattr { oid: String },
    /// set one omap key
    Setomapval {
        oid: String,
        /// its own id: `key` is the global `--key` secret option, and a
        /// shared id made the positional KEY feed the secret's base64 parser
        #[arg(id = "omap_key", value_name = "KEY")]
        key: String,
        value: String,
    },
    /// list omap keys and values
    Listomapvals { oid: String },
    /// pool statistics (objects, bytes, ops per pool), as `rados df`
    Df,
    /// cluster status and health and PG states per pool, as `ceph -s`
    Status,
    /// list pool snapshots (id, name, time taken), as `rados lssnap`
    Lssnap,
    /// make a pool snapshot
    Mksnap { name: String },
    /// remove a pool snapshot
    Rmsnap { name: String },
    /// roll an object back to a pool snapshot
    Rollback { oid: String, snap: String },
    /// remove the objects `bench write --no-cleanup` left (as `rados
    /// cleanup`): every object named `weft_bench_...` and the metadata
    Cleanup,
    /// benchmark like `rados bench SECONDS write|seq|rand`
    Bench {
        seconds: u64,
        #[arg(value_enum)]
        mode: BenchMode,
        /// object size in bytes (write)
        #[arg(short = 'b', default_value_t = 4 << 20)]
        block_size: usize,
        /// ops in flight
        #[arg(short = 't', default_value_t = 16)]
        concurrent: usize,
        /// keep the objects after a write run (for seq/rand)
        #[arg(long)]
        no_cleanup: bool,
    },
}

fn source(a: &RadosArgs) -> ConfigSource {
    let id = if a.id.contains('.') { a.id.clone() } else { format!("client.{}", a.id) };
    ConfigSource {
        conf: a.conf.clone(),
        keyring: a.keyring.clone(),
        key: a.key.clone(),
        id: Some(id),
        mon_host: a.mon_host.clone(),
        mon_mode: a.mon_mode.clone(),
        osd_mode: a.osd_mode.clone(),
        compression: a.compression.clone(),
        conns_per_osd: a.conns_per_osd,
    }
}

fn ioctx(r: &Rados, a: &RadosArgs) -> Result<IoCtx> {
    let pool = a.pool.as_deref().ok_or_else(|| Error::Config("this command needs --pool".into()))?;
    let mut io = r.ioctx(pool)?;
    if let Some(ns) = &a.namespace {
        io.set_namespace(ns);
    }
    if let Some(snap) = &a.snap {
        let id = io.snap_lookup(snap).map_err(|_| Error::Config(format!("pool {pool} has no snapshot {snap}")))?;
        io.set_read(id);
    }
    Ok(io)
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::Config(format!("{what}: {e}"))
}

/// Runs one `weft rados` command, printing to stdout.
pub async fn run(args: RadosArgs) -> Result<()> {
    let cfg = ClientConfig::load(&source(&args))?;
    let r = Rados::connect(cfg).await?;
    let res = run_with(&r, &args).await;
    r.shutdown();
    res
}

pub async fn run_with(r: &Rados, a: &RadosArgs) -> Result<()> {
    let mut stdout = std::io::stdout();
    match &a.cmd {
        RadosCmd::Lspools => {
            let pools = r.pool_list()?;
            if a.json {
                let v: Vec<_> = pools.iter().map(|(id, n)| serde_json::json!({ "id": id, "name": n })).collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for (_, n) in pools {
                    println!("{n}");
                }
            }
        }
        RadosCmd::Mkpool { name, pg_num } => {
            r.pool_create(name, *pg_num).await?;
            println!("successfully created pool {name}");
        }
        RadosCmd::Rmpool { name } => {
            r.pool_delete(name).await?;
            println!("successfully deleted pool {name}");
        }
        RadosCmd::Put { oid, file } => {
            let mut data = Vec::new();
            if file == "-" {
                std::io::stdin().read_to_end(&mut data).map_err(|e| io_err("stdin", e))?;
            } else {
                data = std::fs::read(file).map_err(|e| io_err(file, e))?;
            }
            ioctx(r, a)?.write_chunked(oid, &data, 4 << 20).await?;
        }
        RadosCmd::Get { oid, file } => {
            let data = ioctx(r, a)?.read_full(oid).await?;
            if file == "-" {
                stdout.write_all(&data).map_err(|e| io_err("stdout", e))?;
            } else {
                std::fs::write(file, &data).map_err(|e| io_err(file, e))?;
            }
        }
        RadosCmd::Stat { oid } => {
            let io = ioctx(r, a)?;
            let st = io.stat(oid).await?;
            if a.json {
                let v = serde_json::json!({
                    "pool": a.pool, "namespace": a.namespace.clone().unwrap_or_default(), "oid": oid,
                    "size": st.size, "mtime_sec": st.mtime.sec, "mtime_nsec": st.mtime.nsec,
                });
                println!("{v}");
                return Ok(());
            }
            println!("{}/{} mtime {}.{:06}, size {}", a.pool.as_deref().unwrap_or(""), oid, st.mtime.sec, st.mtime.nsec / 1000, st.size);
        }
        RadosCmd::Rm { oids } => {
            let io = ioctx(r, a)?;
            for o in oids {
                io.remove(o).await?;
            }
        }
        RadosCmd::Ls { all } => {
            let io = ioctx(r, a)?;
            let mut v = if *all { io.list_all_namespaces().await? } else { io.list().await? };
            v.sort_by(|x, y| (&x.nspace, &x.oid).cmp(&(&y.nspace, &y.oid)));
            if a.json {
                let j: Vec<_> = v.iter().map(|e| serde_json::json!({ "namespace": e.nspace, "oid": e.oid })).collect();
                println!("{}", serde_json::Value::Array(j));
                return Ok(());
            }
            for e in v {
                if *all {
                    println!("{}\t{}", e.nspace, e.oid);
                } else {
                    println!("{}", e.oid);
                }
            }
        }
        RadosCmd::Setxattr { oid, name, value } => ioctx(r, a)?.setxattr(oid, name, value.as_bytes()).await?,
        RadosCmd::Getxattr { oid, name } => {
            let v = ioctx(r, a)?.getxattr(oid, name).await?;
            if a.json {
                println!("{}", serde_json::json!({ "name": name, "value": String::from_utf8_lossy(&v) }));
            } else {
                stdout.write_all(&v).map_err(|e| io_err("stdout", e))?;
            }
        }
        RadosCmd::Listxattr { oid } => {
            let attrs = ioctx(r, a)?.getxattrs(oid).await?;
            if a.json {
                let m: serde_json::Map<String, serde_json::Value> =
                    attrs.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into())).collect();
                println!("{}", serde_json::Value::Object(m));
                return Ok(());
            }
            for k in attrs.keys() {
                println!("{k}");
            }
        }
        RadosCmd::Setomapval { oid, key, value } => {
            ioctx(r, a)?.omap_set(oid, &[(key.as_str(), value.as_bytes())]).await?
        }
        RadosCmd::Listomapvals { oid } => {
            let vals = ioctx(r, a)?.omap_get_vals(oid).await?;
            if a.json {
                let m: serde_json::Map<String, serde_json::Value> =
                    vals.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into())).collect();
                println!("{}", serde_json::Value::Object(m));
                return Ok(());
            }
            for (k, v) in vals {
                println!("{k}");
                println!("value ({} bytes) :", v.len());
                println!("{}", String::from_utf8_lossy(&v));
                println!();
            }
        }
        RadosCmd::Df => {
            let df = r.df().await?;
            if a.json {
                println!("{}", serde_json::to_string(&df).map_err(|e| Error::Config(format!("json: {e}")))?);
            } else {
                print!("{}", df.render());
            }
        }
        RadosCmd::Status => {
            let rep = r.status_report().await?;
            if a.json {
                println!("{}", serde_json::to_string(&rep).map_err(|e| Error::Config(format!("json: {e}")))?);
            } else {
                print!("{}", rep.render());
            }
        }
        RadosCmd::Lssnap => {
            let snaps = ioctx(r, a)?.pool_snaps()?;
            if a.json {
                let v: Vec<_> = snaps
                    .iter()
                    .map(|s| serde_json::json!({ "id": s.snapid, "name": s.name, "stamp_sec": s.stamp.sec }))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            print!("{}", lssnap_text(&snaps));
        }
        RadosCmd::Mksnap { name } => {
            ioctx(r, a)?.snap_create(name).await?;
            println!("created pool {} snap {name}", a.pool.as_deref().unwrap_or(""));
        }
        RadosCmd::Rmsnap { name } => {
            ioctx(r, a)?.snap_remove(name).await?;
            println!("removed pool {} snap {name}", a.pool.as_deref().unwrap_or(""));
        }
        RadosCmd::Rollback { oid, snap } => {
            ioctx(r, a)?.snap_rollback(oid, snap).await?;
            println!("rolled back pool {} to snapshot {snap}", a.pool.as_deref().unwrap_or(""));
        }
        RadosCmd::Cleanup => {
            let n = bench_cleanup(&ioctx(r, a)?).await?;
            println!("Removed {n} objects");
        }
        RadosCmd::Bench { seconds, mode, block_size, concurrent, no_cleanup } => {
            let io = ioctx(r, a)?;
            let rep = bench(&io, *mode, Duration::from_secs(*seconds), *block_size, *concurrent, !*no_cleanup).await?;
            if a.json {
                let mut l: Vec<f64> = rep.latencies.iter().map(Duration::as_secs_f64).collect();
                l.sort_by(f64::total_cmp);
                let avg = if l.is_empty() { 0.0 } else { l.iter().sum::<f64>() / l.len() as f64 };
                println!(
                    "{}",
                    serde_json::json!({
                        "mode": format!("{:?}", rep.mode).to_lowercase(), "ops": rep.ops, "bytes": rep.bytes,
                        "object_size": rep.object_size, "elapsed_s": rep.elapsed.as_secs_f64(),
                        "mb_per_sec": rep.mb_per_sec(), "iops": rep.iops(), "latency_avg_s": avg,
                        "latency_max_s": l.last().copied().unwrap_or(0.0), "latency_min_s": l.first().copied().unwrap_or(0.0),
                    })
                );
            } else {
                print!("{}", rep.render());
            }
        }
    }
    Ok(())
}

/// What `rados lssnap` prints: `id<TAB>name<TAB>time` per snapshot, then
/// `N snaps`.
pub fn lssnap_text(snaps: &[crate::proto::osdmap::PoolSnap]) -> String {
    let mut out = String::new();
    for s in snaps {
        out.push_str(&format!("{}\t{}\t{}\n", s.snapid, s.name, rados_time(s.stamp.sec)));
    }
    out.push_str(&format!("{} snaps\n", snaps.len()));
    out
}

/// `YYYY.MM.DD HH:MM:SS` in UTC, the layout `rados lssnap` uses (it prints
/// local time: the same on a host whose TZ is UTC).
pub fn rados_time(unix_sec: u32) -> String {
    let secs = i64::from(unix_sec);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}.{m:02}.{d:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Every bench object's name starts so (`weft_bench_<host>_<pid>_object<N>`):
/// each run writes objects of its own, as `rados bench` does
/// (`benchmark_data_<host>_<pid>_object<N>`), so a run never overwrites
/// what an earlier one left.
const BENCH_PREFIX: &str = "weft_bench_";
const BENCH_META: &str = "weft_bench_last_metadata";

fn bench_run_prefix() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    format!("{BENCH_PREFIX}{host}_{}_object", std::process::id())
}

/// Removes every bench object (by listing, so leftovers of crashed runs go
/// too) and the metadata, 16 removes in flight; an object already gone
/// counts as removed. Returns how many objects were removed.
pub async fn bench_cleanup(io: &IoCtx) -> Result<u64> {
    let names: Vec<String> =
        io.list().await?.into_iter().map(|e| e.oid).filter(|o| o.starts_with(BENCH_PREFIX)).collect();
    let n = names.len() as u64;
    remove_all(io, names).await?;
    Ok(n)
}

async fn remove_all(io: &IoCtx, names: Vec<String>) -> Result<()> {
    let queue = Arc::new(Mutex::new(names));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (io, queue) = (io.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(oid) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else { return Ok(()) };
                match io.remove(&oid).await {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::Config(format!("cleanup task: {e}")))??;
    }
    Ok(())
}

/// Results of a bench run, printed in `rados bench`'s vocabulary.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub mode: BenchMode,
    pub ops: u64,
    pub bytes: u64,
    pub object_size: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl BenchReport {
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn render(&self) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        let avg = if l.is_empty() { 0.0 } else { l.iter().map(|d| d.as_secs_f64()).sum::<f64>() / l.len() as f64 };
        let max = l.last().map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let min = l.first().map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let what = match self.mode {
            BenchMode::Write => "writes",
            _ => "reads",
        };
        format!(
            "Total time run:         {:.4}\nTotal {what} made:      {}\n{} size:             {}\nBandwidth (MB/sec):     {:.3}\nAverage IOPS:           {:.0}\nAverage Latency(s):     {:.6}\nMax latency(s):         {:.6}\nMin latency(s):         {:.6}\n",
            self.elapsed.as_secs_f64(),
            self.ops,
            if self.mode == BenchMode::Write { "Write" } else { "Read" },
            self.object_size,
            self.mb_per_sec(),
            self.iops(),
            avg,
            max,
            min
        )
    }
}

/// `rados bench` equivalent: `write` creates objects of `block_size`
/// with `concurrent` ops in flight; `seq`/`rand` read back what the last
/// write run left (`--no-cleanup`).
pub async fn bench(
    io: &IoCtx,
    mode: BenchMode,
    dur: Duration,
    block_size: usize,
    concurrent: usize,
    cleanup: bool,
) -> Result<BenchReport> {
    let concurrent = concurrent.clamp(1, 1024);
    let (count_limit, object_size, prefix) = match mode {
        BenchMode::Write => (u64::MAX, block_size, bench_run_prefix()),
        _ => {
            let meta = io.read(BENCH_META, 0, 512).await?;
            let s = String::from_utf8_lossy(&meta);
            let mut it = s.split_whitespace();
            let n: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            let sz: usize = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            let prefix = it.next().unwrap_or_default().to_string();
            if n == 0 || !prefix.starts_with(BENCH_PREFIX) {
                return Err(Error::Config("no objects from a previous `bench write --no-cleanup`".into()));
            }
            (n, sz, prefix)
        }
    };
    let prefix = Arc::new(prefix);
    let payload = Arc::new(vec![0x5au8; block_size]);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrent {
        let (io, payload, next, done, bytes, stop, lats, prefix) = (
            io.clone(),
            payload.clone(),
            next.clone(),
            done.clone(),
            bytes.clone(),
            stop.clone(),
            lats.clone(),
            prefix.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1);
            while !stop.load(Ordering::Relaxed) && start.elapsed() < dur {
                let i = match mode {
                    BenchMode::Write => next.fetch_add(1, Ordering::Relaxed),
                    BenchMode::Seq => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count_limit {
                            break;
                        }
                        i
                    }
                    BenchMode::Rand => {
                        // xorshift: cheap and deterministic per worker
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed % count_limit
                    }
                };
                let oid = format!("{prefix}{i}");
                let t0 = Instant::now();
                let n = match mode {
                    BenchMode::Write => io.write_full(&oid, &payload).await.map(|_| payload.len()),
                    _ => io.read(&oid, 0, object_size as u64).await.map(|b| b.len()),
                };
                match n {
                    Ok(n) => {
                        lats.lock().unwrap_or_else(|p| p.into_inner()).push(t0.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(())
        }));
    }
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Err(e)) if first_err.is_none() => first_err = Some(e),
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_err {
        return Err(e);
    }
    let ops = done.load(Ordering::Relaxed);
    if mode == BenchMode::Write {
        if cleanup {
            // every name handed out, written or not; waits for each remove
            let names = (0..next.load(Ordering::Relaxed)).map(|i| format!("{prefix}{i}")).collect();
            remove_all(io, names).await?;
        } else {
            // seq/rand read objects 0..ops of this run's prefix
            io.write_full(BENCH_META, format!("{ops} {block_size} {prefix}").as_bytes()).await?;
        }
    }
    let latencies = std::mem::take(&mut *lats.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(BenchReport { mode, ops, bytes: bytes.load(Ordering::Relaxed), object_size, elapsed, latencies })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        a: RadosArgs,
    }

    #[test]
    fn parses_like_rados() {
        let t = Top::try_parse_from(["x", "--pool", "test", "--id", "admin", "put", "o", "/f"]).unwrap();
        assert!(matches!(t.a.cmd, RadosCmd::Put { .. }));
        assert_eq!(source(&t.a).id.as_deref(), Some("client.admin"));
        let t = Top::try_parse_from(["x", "-p", "test", "bench", "10", "write", "-b", "4096", "-t", "1", "--no-cleanup"]).unwrap();
        assert!(matches!(t.a.cmd, RadosCmd::Bench { block_size: 4096, concurrent: 1, no_cleanup: true, .. }));
    }

    #[test]
    fn rados_time_is_utc_civil_time() {
        assert_eq!(rados_time(0), "1970.01.01 00:00:00");
        assert_eq!(rados_time(951_782_400), "2000.02.29 00:00:00");
        assert_eq!(rados_time(1_796_575_261), "2026.12.06 16:41:01");
    }
}
