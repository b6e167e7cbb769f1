//! query-bench: the load generator of bench/query.sh. Runs the same
//! workload over gRPC against Weft's query API (weft.query.v1) and etcd's
//! KV API (etcdserverpb), one after the other in one run, and prints ops/s
//! and p50/p99 side by side with the ratios.
//!
//! Workload per (op, clients): `clients` tasks, each on its own HTTP/2
//! connection, one request at a time, until `--count` requests in total or
//! `--seconds`, whichever comes first. Ops: put (a random key of `--keys`),
//! get (same keys), range (100 keys under one prefix, limit 100), cas (each
//! client a key of its own: Weft SET IF VERSION = v, etcd Txn comparing
//! mod_revision; a lost race re-reads). Values are `--value-bytes` long.
//!
//! Clusters: `--weft` and `--etcd` take comma-separated addresses; client
//! i of a cell connects to address i mod n (round robin over the members,
//! the same for both systems), and every read is linearizable on both
//! (etcd's default; Weft's default, ReadIndex on the table's raft group).
//! `--replicas` is the Weft table's replica count.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use rand::Rng;
use tonic::transport::{Channel, Endpoint};
use weft_api::pb;
use weft_api::pb::query_client::QueryClient;
use weft_query_client::client::{set, statement};
use weft_query_client::etcd;
use weft_query_client::etcd::kv_client::KvClient;

#[derive(Parser, Debug)]
#[command(about = "Weft query API vs etcd KV: put, get, range of 100, CAS")]
struct Args {
    /// Weft's gRPC address(es), host:port, comma-separated for a cluster
    /// (client i uses address i mod n); omit to skip Weft.
    #[arg(long)]
    weft: Option<String>,
    /// etcd's client address(es), host:port, comma-separated for a cluster
    /// (client i uses address i mod n); omit to skip etcd.
    #[arg(long)]
    etcd: Option<String>,
    /// Replicas of the Weft table (cluster mode); absent: the server's default.
    #[arg(long)]
    replicas: Option<u64>,
    /// Seconds to wait, while preparing, for every address to answer a
    /// write and a read (a cluster electing its leaders).
    #[arg(long, default_value_t = 60.0)]
    ready_seconds: f64,
    /// Comma-separated ops: put, get, range, cas.
    #[arg(long, default_value = "put,get,range,cas")]
    ops: String,
    /// Comma-separated client counts.
    #[arg(long, default_value = "1,16,64")]
    clients: String,
    /// Requests per (op, clients, system) at most.
    #[arg(long, default_value_t = 20_000)]
    count: i64,
    /// Seconds per (op, clients, system) at most.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Keys for put and get.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Weft table name.
    #[arg(long, default_value = "bench")]
    table: String,
    /// Compression of Weft requests: none, gzip, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Put,
    Get,
    Range,
    Cas,
}

impl Kind {
    fn parse(s: &str) -> anyhow::Result<Kind> {
        Ok(match s {
            "put" => Kind::Put,
            "get" => Kind::Get,
            "range" => Kind::Range,
            "cas" => Kind::Cas,
            _ => bail!("unknown op {s:?} (put, get, range, cas)"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Get => "get",
            Kind::Range => "range100",
            Kind::Cas => "cas",
        }
    }
}

const RANGE_KEYS: usize = 100;

fn key(i: usize) -> Vec<u8> {
    format!("k/{i:06}").into_bytes()
}

fn range_key(i: usize) -> Vec<u8> {
    format!("r/{i:03}").into_bytes()
}

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    Ok(Endpoint::from_shared(uri)?.tcp_nodelay(true).connect_timeout(Duration::from_secs(5)).connect().await.with_context(|| format!("connecting to {addr}"))?)
}

#[derive(Clone)]
enum Target {
    Weft { c: QueryClient<Channel>, table: String },
    Etcd(KvClient<Channel>),
}

fn weft_client(ch: Channel, compression: &str) -> QueryClient<Channel> {
    use tonic::codec::CompressionEncoding::{Gzip, Zstd};
    let c = QueryClient::new(ch);
    match compression {
        "gzip" => c.send_compressed(Gzip).accept_compressed(Gzip),
        "zstd" => c.send_compressed(Zstd).accept_compressed(Zstd),
        _ => c,
    }
}

/// Per-client state of the CAS loop: the version (Weft) or mod revision
/// (etcd) the next compare expects.
struct Cas {
    key: Vec<u8>,
    expect: u64,
}

impl Target {
    async fn put(&mut self, k: Vec<u8>, v: &[u8]) -> anyhow::Result<()> {
        match self {
            Target::Weft { c, table } => {
                c.execute(set(table, &k, v, None)).await?;
            }
            Target::Etcd(c) => {
                c.put(etcd::PutRequest { key: k, value: v.to_vec(), ..Default::default() }).await?;
            }
        }
        Ok(())
    }

    async fn get(&mut self, k: Vec<u8>) -> anyhow::Result<usize> {
        Ok(match self {
            Target::Weft { c, table } => {
                let r = c.execute(statement(pb::statement::Kind::Get(pb::Get { table: table.clone(), key: k, revision: None }))).await?;
                r.into_inner().result.map_or(0, |r| r.kvs.len())
            }
            Target::Etcd(c) => c.range(etcd::RangeRequest { key: k, ..Default::default() }).await?.into_inner().kvs.len(),
        })
    }

    async fn range(&mut self) -> anyhow::Result<usize> {
        Ok(match self {
            Target::Weft { c, table } => {
                let r = c
                    .execute(statement(pb::statement::Kind::Range(pb::Range {
                        table: table.clone(),
                        range: Some(pb::range::Range::Prefix(b"r/".to_vec())),
                        limit: Some(RANGE_KEYS as u64),
                        revision: None,
                    })))
                    .await?;
                r.into_inner().result.map_or(0, |r| r.kvs.len())
            }
            Target::Etcd(c) => c
                .range(etcd::RangeRequest { key: b"r/".to_vec(), range_end: b"r0".to_vec(), limit: RANGE_KEYS as i64, ..Default::default() })
                .await?
                .into_inner()
                .kvs
                .len(),
        })
    }

    /// Reads the CAS key's current version / mod revision.
    async fn cas_read(&mut self, k: &[u8]) -> anyhow::Result<u64> {
        Ok(match self {
            Target::Weft { c, table } => {
                let r = c.execute(statement(pb::statement::Kind::Get(pb::Get { table: table.clone(), key: k.to_vec(), revision: None }))).await?;
                r.into_inner().result.and_then(|r| r.kvs.first().map(|kv| kv.version)).unwrap_or(0)
            }
            Target::Etcd(c) => {
                let r = c.range(etcd::RangeRequest { key: k.to_vec(), ..Default::default() }).await?.into_inner();
                r.kvs.first().map_or(0, |kv| kv.mod_revision as u64)
            }
        })
    }

    /// One compare-and-set; on a lost compare re-reads (counts as the op).
    async fn cas(&mut self, s: &mut Cas, v: &[u8]) -> anyhow::Result<bool> {
        let ok = match self {
            Target::Weft { c, table } => match c.execute(set(table, &s.key, v, Some(pb::set::Cond::IfVersion(s.expect)))).await {
                Ok(_) => {
                    s.expect += 1;
                    true
                }
                Err(st) if st.code() == tonic::Code::FailedPrecondition => false,
                Err(e) => return Err(e.into()),
            },
            Target::Etcd(c) => {
                let t = etcd::TxnRequest {
                    compare: vec![etcd::Compare {
                        result: etcd::compare::CompareResult::Equal as i32,
                        target: etcd::compare::CompareTarget::Mod as i32,
                        key: s.key.clone(),
                        target_union: Some(etcd::compare::TargetUnion::ModRevision(s.expect as i64)),
                        range_end: Vec::new(),
                    }],
                    success: vec![etcd::RequestOp { request: Some(etcd::request_op::Request::RequestPut(etcd::PutRequest { key: s.key.clone(), value: v.to_vec(), ..Default::default() })) }],
                    failure: Vec::new(),
                };
                let r = c.txn(t).await?.into_inner();
                if r.succeeded {
                    s.expect = r.header.map_or(0, |h| h.revision as u64);
                }
                r.succeeded
            }
        };
        if !ok {
            let k = s.key.clone();
            s.expect = self.cas_read(&k).await?;
        }
        Ok(ok)
    }
}

/// Splits a comma-separated address list.
fn addrs(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect()
}

/// Retries `f` until it succeeds or `secs` pass (the last error is returned).
async fn until_ok<T, F, Fut>(secs: f64, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut logged = false;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < end => {
                if !logged {
                    eprintln!("query-bench: {what}: {e:#}; retrying for up to {secs} s");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context(format!("{what}: not ready after {secs} s"))),
        }
    }
}

async fn prepare(make: &(dyn Fn(Channel) -> Target + Sync), addrs: &[String], replicas: Option<u64>, ready_secs: f64, keys: usize, value: &[u8]) -> anyhow::Result<()> {
    let mut t = make(channel(&addrs[0]).await?);
    if let Target::Weft { c, table } = &mut t {
        let (c, table) = (c.clone(), table.clone());
        until_ok(ready_secs, "create table", || {
            let (mut c, table) = (c.clone(), table.clone());
            async move {
                match c.execute(statement(pb::statement::Kind::CreateTable(pb::CreateTable { table: table.clone(), replicas }))).await {
                    Ok(_) => Ok(()),
                    Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
                    Err(s) => Err(anyhow::anyhow!("create table {table}: {s}")),
                }
            }
        })
        .await?;
    }
    // Every member answers a write and a linearizable read before the
    // clock starts (the table's group, or etcd's raft, has a leader).
    for (i, a) in addrs.iter().enumerate() {
        let probe = make(channel(a).await?);
        until_ok(ready_secs, &format!("{a} ready"), || {
            let mut p = probe.clone();
            async move {
                p.put(format!("ready/{i}").into_bytes(), b"x").await?;
                p.get(format!("ready/{i}").into_bytes()).await?;
                anyhow::Ok(())
            }
        })
        .await?;
    }
    let t = &mut t;
    for i in 0..keys {
        t.put(key(i), value).await?;
    }
    for i in 0..RANGE_KEYS {
        t.put(range_key(i), value).await?;
    }
    let n = t.range().await?;
    if n != RANGE_KEYS {
        bail!("range answered {n} keys, expected {RANGE_KEYS}");
    }
    Ok(())
}

struct Outcome {
    ops: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

async fn run(addrs: &[String], make: &(dyn Fn(Channel) -> Target + Sync), kind: Kind, clients: usize, args: &Args, value: Arc<Vec<u8>>, system: &str) -> anyhow::Result<Outcome> {
    let mut targets = Vec::with_capacity(clients);
    for i in 0..clients {
        targets.push(make(channel(&addrs[i % addrs.len()]).await?));
    }
    let budget = Arc::new(AtomicI64::new(args.count));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (ci, mut t) in targets.into_iter().enumerate() {
        let (budget, errors, value) = (budget.clone(), errors.clone(), value.clone());
        let keys = args.keys;
        let cas_key = format!("c/{system}/{ci:04}/{}", std::process::id()).into_bytes();
        tasks.push(tokio::spawn(async move {
            // Three significant digits from 1 µs to 60 s: in range by construction.
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut cas = Cas { key: cas_key, expect: 0 };
            if kind == Kind::Cas {
                let k = cas.key.clone();
                cas.expect = t.cas_read(&k).await?;
            }
            while budget.fetch_sub(1, Ordering::Relaxed) > 0 && Instant::now() < end {
                let i = rand::thread_rng().gen_range(0..keys.max(1));
                let t0 = Instant::now();
                let r = match kind {
                    Kind::Put => t.put(key(i), &value).await.map(|_| ()),
                    Kind::Get => t.get(key(i)).await.map(|_| ()),
                    Kind::Range => t.range().await.map(|_| ()),
                    Kind::Cas => t.cas(&mut cas, &value).await.map(|_| ()),
                };
                match r {
                    Ok(()) => h.saturating_record(t0.elapsed().as_micros().max(1) as u64),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("{}: {e:#}", kind.name());
                        }
                    }
                }
            }
            anyhow::Ok(h)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?;
    for t in tasks {
        hist.add(t.await??).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { ops: hist.len(), errors: errors.load(Ordering::Relaxed), secs, hist })
}

fn cols(o: Option<&Outcome>) -> String {
    match o {
        Some(o) => format!("{:>10.0} {:>8} {:>8}", o.ops as f64 / o.secs, o.hist.value_at_quantile(0.5), o.hist.value_at_quantile(0.99)),
        None => format!("{:>10} {:>8} {:>8}", "-", "-", "-"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kinds = args.ops.split(',').map(|s| Kind::parse(s.trim())).collect::<anyhow::Result<Vec<_>>>()?;
    let clients = args.clients.split(',').map(|s| s.trim().parse::<usize>().context("--clients")).collect::<anyhow::Result<Vec<_>>>()?;
    let value = Arc::new(vec![b'v'; args.value_bytes]);
    let table = args.table.clone();
    let compression = args.compression.clone();
    let make_weft = move |ch: Channel| Target::Weft { c: weft_client(ch, &compression), table: table.clone() };
    let make_etcd = |ch: Channel| Target::Etcd(KvClient::new(ch));
    let systems: Vec<(&str, Vec<String>, &(dyn Fn(Channel) -> Target + Sync))> = [("weft", args.weft.as_ref(), &make_weft as &(dyn Fn(Channel) -> Target + Sync)), ("etcd", args.etcd.as_ref(), &make_etcd)]
        .into_iter()
        .filter_map(|(n, a, m)| a.map(|a| (n, addrs(a), m)))
        .filter(|(_, a, _)| !a.is_empty())
        .collect();
    if systems.is_empty() {
        bail!("give --weft and/or --etcd");
    }
    for (name, addrs, make) in &systems {
        prepare(*make, addrs, args.replicas, args.ready_seconds, args.keys, &value).await.with_context(|| format!("preparing {name}"))?;
    }
    println!(
        "# {} B values, {} keys, at most {} requests or {} s per cell; latencies in µs",
        args.value_bytes, args.keys, args.count, args.seconds
    );
    for (name, addrs, _) in &systems {
        println!("# {name}: {} endpoint(s), client i on endpoint i mod {}: {}", addrs.len(), addrs.len(), addrs.join(" "));
    }
    println!("{:<9} {:>7} | {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>9} {:>9}", "op", "clients", "weft op/s", "p50", "p99", "etcd op/s", "p50", "p99", "op/s w/e", "p99 w/e");
    for &kind in &kinds {
        for &n in &clients {
            let mut w = None;
            let mut e = None;
            for (name, addrs, make) in &systems {
                let o = run(addrs, *make, kind, n, &args, value.clone(), name).await.with_context(|| format!("{name} {} x{n}", kind.name()))?;
                if o.errors > 0 {
                    eprintln!("{name} {} x{n}: {} errors", kind.name(), o.errors);
                }
                if *name == "weft" {
                    w = Some(o);
                } else {
                    e = Some(o);
                }
            }
            let ratio = match (&w, &e) {
                (Some(w), Some(e)) if e.ops > 0 && w.secs > 0.0 => format!(
                    "{:>9.2} {:>9.2}",
                    (w.ops as f64 / w.secs) / (e.ops as f64 / e.secs),
                    w.hist.value_at_quantile(0.99) as f64 / e.hist.value_at_quantile(0.99).max(1) as f64
                ),
                _ => format!("{:>9} {:>9}", "-", "-"),
            };
            println!("{:<9} {:>7} | {} | {} | {}", kind.name(), n, cols(w.as_ref()), cols(e.as_ref()), ratio);
        }
    }
    Ok(())
}
