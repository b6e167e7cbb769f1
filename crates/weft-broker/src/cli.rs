//! `weft topic`, `weft produce`, `weft consume`, `weft group`: clients of the
//! native `log.*` endpoints.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use weft_wire::SharedBytes;
use std::collections::BTreeMap;

use weft_log::{CleanupPolicy, Offset, Record, ResetPolicy, ResetTarget, TopicConfig};
use weft_net::{Client, ClientError};

use crate::dto::{self, route};
use crate::http::{record_json, Encoding};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{failed} of {total} records were not written; first error: {first}")]
    Partial { failed: usize, total: usize, first: String },
    #[error("interrupted by {signal}: {acked} record(s) acknowledged{unknown}")]
    Interrupted { signal: &'static str, acked: u64, unknown: String },
}

impl CliError {
    /// The exit status a shell expects: 128 + the signal number for an
    /// interrupted produce, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Interrupted { signal: "SIGINT", .. } => 130,
            CliError::Interrupted { .. } => 143,
            _ => 1,
        }
    }
}

/// Default bound on one produce request's record bytes: well under the
/// 16 MiB frame limit, so framing and per-record overhead never push a
/// batch of records that are each under the record limit past it.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;

/// `--cleanup` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Delete whole old segments by age and size.
    Delete,
    /// Keep the newest record per key.
    Compact,
}

impl From<Cleanup> for CleanupPolicy {
    fn from(c: Cleanup) -> Self {
        match c {
            Cleanup::Delete => CleanupPolicy::Delete,
            Cleanup::Compact => CleanupPolicy::Compact,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Delete data older than this (ms); 0 = keep forever.
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        retention_bytes: Option<u64>,
        #[arg(long)]
        max_record_bytes: Option<u32>,
        #[arg(long)]
        segment_bytes: Option<u64>,
        /// What happens to old data (default: delete).
        #[arg(long, value_enum)]
        cleanup: Option<Cleanup>,
        /// Copies of each partition on a cluster (default min(3, data nodes)); a single node ignores it.
        #[arg(long)]
        replicas: Option<u32>,
    },
    /// List topics.
    List,
    /// Show a topic's configuration and partitions.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Change a topic's configuration (only what is given changes).
    Alter {
        name: String,
        /// More partitions (never fewer).
        #[arg(long)]
        partitions: Option<u32>,
        /// Delete data older than this (ms); -1 (or 0) = keep forever.
        #[arg(long, allow_hyphen_values = true)]
        retention_ms: Option<i64>,
        /// Delete the oldest segments beyond this size; -1 = no limit.
        #[arg(long, allow_hyphen_values = true)]
        retention_bytes: Option<i64>,
        #[arg(long)]
        max_record_bytes: Option<u32>,
        #[arg(long)]
        segment_bytes: Option<u64>,
        #[arg(long)]
        segment_ms: Option<u64>,
        /// What happens to old data.
        #[arg(long, value_enum)]
        cleanup: Option<Cleanup>,
        #[arg(long)]
        delete_retention_ms: Option<u64>,
    },
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Read records from this file instead of stdin (one record per line).
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Split each line into key and value at the first occurrence of this.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// A header added to every record, NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Write every record to this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Records per produce request (at most).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Bytes of keys, values and headers per produce request (at most; a
    /// single larger record goes alone). Keep it under the node's
    /// limits.max_frame_bytes (16 MiB by default).
    #[arg(long, default_value_t = DEFAULT_BATCH_BYTES)]
    pub batch_bytes: usize,
    /// When a replicated produce is acknowledged: `all` (a majority has it)
    /// or `leader` (the leader's raft log has it: weaker, docs/cluster.md).
    #[arg(long, default_value = "all", value_parser = ["all", "leader"])]
    pub acks: String,
    /// An idempotent producer (cluster, replicated topic; needs --partition):
    /// each request carries a producer id and its first record's sequence,
    /// and a request whose outcome is unknown is sent again as is (the
    /// partition keeps one copy).
    #[arg(long, requires = "partition")]
    pub idempotent: bool,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Only this partition (default: all, or the group's assignment).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start at the earliest offset (default: the latest, or the group's committed offset).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset.
    #[arg(long)]
    pub offset: Option<u64>,
    /// Consume as a member of this consumer group (commits offsets).
    #[arg(long)]
    pub group: Option<String>,
    /// Keep waiting for new records (otherwise stop when caught up).
    #[arg(long)]
    pub follow: bool,
    /// Print each record as a JSON line (partition, offset, key, value, headers...).
    #[arg(long)]
    pub json: bool,
    /// Print keys too: KEY<separator>VALUE.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Where to start when there is no valid position: no committed offset
    /// for the group, or a committed / --offset position outside the log
    /// (Kafka's auto.offset.reset).
    #[arg(long, default_value_t = ResetPolicy::Earliest)]
    pub reset: ResetPolicy,
    /// With --group: the member is expired (and its partitions reassigned)
    /// after this long without a heartbeat; heartbeats go every third of it,
    /// at most every second.
    #[arg(long, default_value_t = SESSION_TIMEOUT_MS)]
    pub session_timeout_ms: u64,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// List consumer groups with members and lag.
    List,
    /// Show a group's members, assignment, committed offsets and lag.
    Describe { group: String },
    /// Move a group's committed offsets (kafka-consumer-groups
    /// --reset-offsets). Refused while the group has live members.
    ResetOffsets(ResetOffsetsArgs),
    /// Delete a group and its committed offsets (kafka-consumer-groups
    /// --delete). Refused while the group has live members.
    Delete { group: String },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_time"])))]
pub struct ResetOffsetsArgs {
    pub group: String,
    #[arg(long)]
    pub topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long)]
    pub partition: Option<u32>,
    /// To the first offset still stored.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end (only records written from now on).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (clamped to the log start and end).
    #[arg(long)]
    pub to_offset: Option<u64>,
    /// To the first record at or after this time: RFC 3339
    /// (2026-12-06T17:00:00Z) or milliseconds since the epoch.
    #[arg(long)]
    pub to_time: Option<String>,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Milliseconds since the epoch from `ms` digits or RFC 3339
/// (`YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)`).
pub fn parse_time_ms(s: &str) -> Result<i64, CliError> {
    let bad = || CliError::Usage(format!("--to-time takes RFC 3339 (2026-12-06T17:00:00Z) or epoch milliseconds, not {s:?}"));
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, CliError> {
        let t = s.get(r).ok_or_else(bad)?;
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return Err(bad());
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i).ok_or_else(bad)?;
        if frac.is_empty() {
            return Err(bad());
        }
        // milliseconds: the first three digits, padded
        let three: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
        ms = three.parse().map_err(|_| bad())?;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'-' { -m } else { m }
        }
        _ => return Err(bad()),
    };
    // days from civil (Howard Hinnant's algorithm)
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + ms)
}

/// Aligned columns, two spaces apart, for the human output.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            l.push_str(&format!("{c:<w$}  "));
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("<cannot render: {e}>")));
}

/// A JSON scalar as a table cell: strings bare, null as `-`.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_topic(d: &serde_json::Value) {
    println!("topic {}  created_ms {}  internal {}", cell(&d["name"]), cell(&d["created_ms"]), cell(&d["internal"]));
    if let Some(c) = d["config"].as_object() {
        let rows: Vec<Vec<String>> = c.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect();
        print!("{}", table(&["config", "value"], &rows));
    }
    let cols = ["partition", "log_start_offset", "log_end_offset", "high_watermark", "segments", "size_bytes", "poisoned"];
    let rows: Vec<Vec<String>> =
        d["partitions"].as_array().map(|ps| ps.iter().map(|p| cols.iter().map(|c| cell(&p[*c])).collect()).collect()).unwrap_or_default();
    print!("{}", table(&cols, &rows));
}

pub async fn topic(client: &Client, cmd: TopicCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        TopicCmd::Create { name, partitions, retention_ms, retention_bytes, max_record_bytes, segment_bytes, cleanup, replicas } => {
            let mut c = TopicConfig { partitions, ..TopicConfig::default() };
            if let Some(r) = retention_ms {
                c.retention_ms = (r > 0).then_some(r);
            }
            if retention_bytes.is_some() {
                c.retention_bytes = retention_bytes;
            }
            if let Some(m) = max_record_bytes {
                c.max_record_bytes = m;
            }
            if let Some(s) = segment_bytes {
                c.segment_bytes = s;
            }
            if let Some(p) = cleanup {
                c.cleanup = p.into();
            }
            let d: serde_json::Value = client.call(route::TOPIC_CREATE, &dto::CreateTopic { name: name.clone(), config: Some(c), replicas }).await?;
            if json {
                print_json(&d);
            } else {
                println!("created topic {name} with {} partition(s)", d["config"]["partitions"]);
            }
        }
        TopicCmd::List => {
            let names: Vec<String> = client.call(route::TOPIC_LIST, &()).await?;
            if json {
                print_json(&names);
            }
            for n in names.iter().filter(|_| !json) {
                println!("{n}");
            }
        }
        TopicCmd::Describe { name } => {
            let d: serde_json::Value = client.call(route::TOPIC_DESCRIBE, &dto::TopicRef { name }).await?;
            if json {
                print_json(&d);
            } else {
                print_topic(&d);
            }
        }
        TopicCmd::Alter {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            max_record_bytes,
            segment_bytes,
            segment_ms,
            cleanup,
            delete_retention_ms,
        } => {
            let req = dto::AlterTopic {
                name: name.clone(),
                partitions,
                // 0 means forever here as in `topic create`
                retention_ms: retention_ms.map(|r| if r == 0 { -1 } else { r }),
                retention_bytes,
                max_record_bytes,
                segment_bytes,
                segment_ms,
                cleanup: cleanup.map(Into::into),
                delete_retention_ms,
            };
            if req.to_alter().is_empty() {
                return Err(CliError::Usage("nothing to change: give at least one option".into()));
            }
            let d: serde_json::Value = client.call(route::TOPIC_ALTER, &req).await?;
            if json {
                print_json(&d);
            } else {
                println!("altered topic {name}: {}", serde_json::to_string(&d["config"]).unwrap_or_default());
            }
        }
        TopicCmd::Delete { name } => {
            let done: dto::Done = client.call(route::TOPIC_DELETE, &dto::TopicRef { name: name.clone() }).await?;
            if json {
                print_json(&done);
            } else {
                println!("deleted topic {name}");
            }
        }
    }
    Ok(())
}

fn parse_headers(h: &[String]) -> Result<Vec<(String, SharedBytes)>, CliError> {
    h.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_owned(), SharedBytes::from(v.as_bytes().to_vec())))
                .ok_or_else(|| CliError::Usage(format!("--header takes NAME=VALUE, not {s:?}")))
        })
        .collect()
}

/// Bytes a record adds to a produce request, roughly: its key, value and
/// headers plus a little encoding overhead.
fn record_bytes(r: &dto::RecordIn) -> usize {
    32 + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
}

/// Lines of the input, read on a thread of their own so a signal can be
/// noticed while stdin blocks.
fn spawn_reader(file: Option<std::path::PathBuf>) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<String>>, CliError> {
    let reader: Box<dyn BufRead + Send> = match &file {
        Some(p) => Box::new(std::io::BufReader::new(std::fs::File::open(p)?)),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    // Bounded: a slow node holds the reader back instead of buffering the
    // whole input in memory.
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    std::thread::spawn(move || {
        for line in reader.lines() {
            let stop = line.is_err();
            if tx.blocking_send(line).is_err() || stop {
                return;
            }
        }
    });
    Ok(rx)
}

/// How long an interrupted produce waits for the answer to the request in
/// flight before it reports (that request's records may be written).
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// Waits for SIGINT or SIGTERM and names it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        // Without handlers the default disposition kills the process: never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// `weft produce`: batches of at most `--batch` records and `--batch-bytes`
/// bytes. Says on stderr how many records the node acknowledged, on a
/// normal exit and when interrupted (SIGINT/SIGTERM).
/// Times an idempotent producer sends a batch again after an unknown outcome.
const IDEMPOTENT_RETRIES: u32 = 10;

pub async fn produce(client: &Client, args: ProduceArgs) -> Result<(), CliError> {
    let headers = parse_headers(&args.headers)?;
    let mut lines = spawn_reader(args.file.clone())?;
    let (mut acked, mut failed, mut first_err) = (0u64, 0usize, None::<String>);
    let signal = interrupted();
    tokio::pin!(signal);
    let mut pending: Vec<dto::RecordIn> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut eof = false;
    let max_records = args.batch.max(1);
    let max_bytes = args.batch_bytes.max(1);
    let leaders = Leaders::default();
    let acks = if args.acks == "leader" { dto::Acks::Leader } else { dto::Acks::All };
    // Client-chosen: 64 bits from the clock and the pid make a collision
    // with another live producer of the partition unlikely.
    let producer_id = args.idempotent.then(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        nanos.rotate_left(17) ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    let mut sequence = 0u64;
    while !eof || !pending.is_empty() {
        // Read until a batch is full or the input ends.
        let mut next = None;
        while !eof && pending.len() < max_records && pending_bytes < max_bytes {
            // With records pending, take only what is already read: a
            // typed line goes out at once instead of waiting for a full batch.
            let line = if pending.is_empty() {
                tokio::select! {
                    l = lines.recv() => l,
                    sig = &mut signal => return Err(CliError::Interrupted { signal: sig, acked, unknown: String::new() }),
                }
            } else {
                match lines.try_recv() {
                    Ok(l) => Some(l),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(line) = line.transpose()? else {
                eof = true;
                break;
            };
            let (key, value) = match args.key_separator.as_deref().and_then(|sep| line.split_once(sep)) {
                Some((k, v)) => (Some(SharedBytes::from(k.as_bytes().to_vec())), v),
                None => (None, line.as_str()),
            };
            let r = dto::RecordIn {
                partition: args.partition,
                key,
                value: Some(SharedBytes::from(value.as_bytes().to_vec())),
                headers: headers.clone(),
                timestamp_ms: None,
            };
            let n = record_bytes(&r);
            if !pending.is_empty() && pending_bytes + n > max_bytes {
                // Would overflow: it starts the next batch.
                next = Some((r, n));
                break;
            }
            pending_bytes += n;
            pending.push(r);
        }
        if pending.is_empty() {
            continue;
        }
        let n = pending.len();
        let req = dto::Produce { topic: args.topic.clone(), records: std::mem::take(&mut pending), producer_id, sequence: producer_id.map(|_| sequence), acks };
        pending_bytes = 0;
        sequence += n as u64;
        let call = async {
            let mut tries = 0;
            loop {
                match leaders.call::<_, dto::ProduceResponse>(client, (&args.topic, args.partition), route::PRODUCE, &req).await {
                    // The same batch again, same sequence: never a duplicate.
                    Err(e) if producer_id.is_some() && tries < IDEMPOTENT_RETRIES => {
                        tries += 1;
                        tracing::debug!(error = %e, tries, "idempotent produce: outcome unknown, sending the batch again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    r => break r,
                }
            }
        };
        tokio::pin!(call);
        let (resp, interrupted) = tokio::select! {
            r = &mut call => (r?, None),
            sig = &mut signal => {
                // The request in flight may be written already: wait a
                // little for its answer so the count is exact.
                match tokio::time::timeout(INTERRUPT_GRACE, &mut call).await {
                    Ok(Ok(r)) => (r, Some(sig)),
                    _ => {
                        let unknown = format!("; a request of {n} record(s) was in flight, its outcome is unknown");
                        return Err(CliError::Interrupted { signal: sig, acked, unknown });
                    }
                }
            }
        };
        for r in resp.results {
            match r.error {
                Some(e) => {
                    failed += 1;
                    first_err.get_or_insert_with(|| e.to_string());
                }
                None => acked += 1,
            }
        }
        if let Some(signal) = interrupted {
            return Err(CliError::Interrupted { signal, acked, unknown: String::new() });
        }
        tracing::debug!(records = n, acked, "produce batch done");
        if let Some((r, n)) = next {
            pending_bytes = n;
            pending.push(r);
        }
    }
    eprintln!("produced {acked} record(s) to {} (acknowledged)", args.topic);
    match first_err {
        Some(first) => Err(CliError::Partial { failed, total: acked as usize + failed, first }),
        None => Ok(()),
    }
}

/// The leader cache of one command (cluster mode). A `not_leader` error
/// names the leader's native address (`details.addr`): the refusing node ran
/// nothing, so the call is retried once there, and later calls for the same
/// topic and partition go straight to that node. A cached leader that fails
/// to answer is forgotten (the next call starts from the node given).
#[derive(Default)]
pub struct Leaders {
    by_key: std::sync::Mutex<std::collections::HashMap<(String, Option<u32>), Client>>,
}

/// The leader address a `not_leader` error names, if any.
pub fn leader_hint(e: &weft_wire::ErrorBody) -> Option<String> {
    if e.code != weft_wire::ErrorCode::NotLeader {
        return None;
    }
    let d = e.details.as_ref()?;
    d["addr"].as_str().or_else(|| d["not_leader"]["addr"].as_str()).filter(|a| !a.is_empty()).map(str::to_owned)
}

impl Leaders {
    pub async fn call<Req, Resp>(&self, default: &Client, key: (&str, Option<u32>), route: &str, req: &Req) -> Result<Resp, ClientError>
    where
        Req: serde::Serialize + Sync + ?Sized,
        Resp: serde::de::DeserializeOwned,
    {
        let key = (key.0.to_owned(), key.1);
        let cached = self.by_key.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let first = cached.as_ref().unwrap_or(default);
        match first.call::<Req, Resp>(route, req).await {
            Err(ClientError::Remote(b)) => match leader_hint(&b) {
                Some(addr) => {
                    let target: weft_net::Target = addr.parse().map_err(|_| ClientError::Remote(b.clone()))?;
                    tracing::debug!(route, leader = %addr, "not the leader: retrying once at the leader");
                    let leader = Client::connect(target, default.config().clone()).await?;
                    let r = leader.call(route, req).await;
                    if r.is_ok() {
                        self.by_key.lock().unwrap_or_else(|p| p.into_inner()).insert(key, leader);
                    }
                    r
                }
                None => Err(ClientError::Remote(b)),
            },
            Err(e) => {
                if cached.is_some() {
                    self.by_key.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                }
                Err(e)
            }
            ok => ok,
        }
    }
}

struct Printer {
    json: bool,
    key_separator: Option<String>,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Printer {
    fn print(&mut self, partition: u32, r: &dto::RecordOut) -> Result<(), CliError> {
        if self.json {
            let rec = Record {
                offset: Offset(r.offset),
                timestamp_ms: r.timestamp_ms,
                key: r.key.as_ref().map(|k| Bytes::from(k.to_vec())),
                value: r.value.as_ref().map(|v| Bytes::from(v.to_vec())),
                headers: r.headers.iter().map(|(k, v)| (k.clone(), Bytes::from(v.to_vec()))).collect(),
            };
            let line = serde_json::to_string(&record_json(partition, &rec, Encoding::Utf8)).unwrap_or_default();
            writeln!(self.out, "{line}")?;
        } else {
            let value = r.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            match (&self.key_separator, &r.key) {
                (Some(sep), Some(k)) => writeln!(self.out, "{}{sep}{value}", String::from_utf8_lossy(k))?,
                _ => writeln!(self.out, "{value}")?,
            }
        }
        Ok(())
    }
}

/// Kind of a typed error from the node (`details.kind`), if it is one.
fn remote_kind(e: &ClientError) -> Option<&str> {
    match e {
        ClientError::Remote(b) => b.details.as_ref().and_then(|d| d["kind"].as_str()),
        _ => None,
    }
}

/// Set by SIGINT/SIGTERM: the consume loop stops after the current round,
/// commits what it printed and leaves its group.
fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        let f = flag.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            f.store(true, std::sync::atomic::Ordering::Release);
        });
    }
    flag
}

/// A consumer-group member as `weft consume --group` runs it: positions of
/// the partitions it owns, what it last committed, and the hand-off steps.
struct GroupMember<'a> {
    client: &'a Client,
    group: String,
    topic: String,
    reset: ResetPolicy,
    session_timeout_ms: u64,
    member: dto::Member,
    positions: BTreeMap<u32, u64>,
    committed: BTreeMap<u32, u64>,
}

impl<'a> GroupMember<'a> {
    async fn join(client: &'a Client, group: &str, topic: &str, reset: ResetPolicy, session_timeout_ms: u64) -> Result<GroupMember<'a>, CliError> {
        let member: dto::Member = client
            .call(
                route::GROUP_JOIN,
                &dto::JoinGroup {
                    group: group.to_owned(),
                    member_id: None,
                    client_id: "weft-consume".into(),
                    topics: vec![topic.to_owned()],
                    strategy: None,
                    session_timeout_ms: Some(session_timeout_ms),
                },
            )
            .await?;
        tracing::debug!(group, member = %member.member_id, generation = member.generation, "joined");
        Ok(GroupMember {
            client,
            group: group.to_owned(),
            topic: topic.to_owned(),
            reset,
            session_timeout_ms,
            member,
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
        })
    }

    fn assigned(&self, only: Option<u32>) -> Vec<u32> {
        self.member.assignment.iter().filter(|(t, _)| *t == self.topic).map(|(_, p)| *p).filter(|p| only.is_none_or(|x| x == *p)).collect()
    }

    /// Starting offset of a newly owned partition: the group's committed
    /// offset when inside the log, else the reset policy's (the node
    /// decides, and refuses with a typed out_of_range error for `none`).
    async fn start(&self, p: u32) -> Result<u64, CliError> {
        let req = dto::Committed { group: self.group.clone(), topic: self.topic.clone(), partition: p, reset: Some(self.reset) };
        let c: dto::CommittedAnswer = self.client.call(route::GROUP_COMMITTED, &req).await?;
        let start = c.start.or(c.offset).unwrap_or(0);
        if c.reset == Some(true)
            && let Some(o) = c.offset
        {
            eprintln!("weft consume: group {} committed offset {o} is outside {}/{p}: reset to {start} ({})", self.group, self.topic, self.reset);
        }
        Ok(start)
    }

    /// Commits every position that moved since the last commit (one call
    /// per partition, so losing one partition does not refuse the others).
    /// Err only for errors other than fencing; fencing returns Ok(false).
    async fn commit(&mut self) -> Result<bool, CliError> {
        let mut fenced = false;
        let moved: Vec<(u32, u64)> = self.positions.iter().filter(|(p, o)| self.committed.get(*p) != Some(*o)).map(|(p, o)| (*p, *o)).collect();
        for (p, offset) in moved {
            let req = dto::Commit {
                group: self.group.clone(),
                member_id: Some(self.member.member_id.clone()),
                generation: Some(self.member.generation),
                offsets: vec![dto::CommitOffset { topic: self.topic.clone(), partition: p, offset, metadata: String::new() }],
            };
            match self.client.call::<_, dto::Done>(route::GROUP_COMMIT, &req).await {
                Ok(_) => {
                    self.committed.insert(p, offset);
                }
                Err(e) if matches!(remote_kind(&e), Some("illegal_generation" | "not_assigned" | "unknown_member")) => {
                    tracing::debug!(group = %self.group, partition = p, error = %e, "commit fenced");
                    fenced = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(!fenced)
    }

    /// Heartbeat; on a new generation (or assignment), commit what this
    /// member printed, drop what it lost, then acknowledge, so the new
    /// owners start where it stopped. Rejoins if the node forgot it.
    async fn heartbeat(&mut self) -> Result<(), CliError> {
        loop {
            let beat = dto::MemberRef { group: self.group.clone(), member_id: self.member.member_id.clone(), generation: Some(self.member.generation) };
            let b: dto::Member = match self.client.call(route::GROUP_HEARTBEAT, &beat).await {
                Ok(b) => b,
                Err(e) if remote_kind(&e) == Some("unknown_member") => {
                    // Expired (e.g. stalled past the session timeout): what it
                    // had may be someone else's now; start over as a new member.
                    eprintln!("weft consume: member {} expired from group {}; rejoining", self.member.member_id, self.group);
                    let fresh = GroupMember::join(self.client, &self.group, &self.topic, self.reset, self.session_timeout_ms).await?;
                    self.member = fresh.member;
                    self.positions.clear();
                    self.committed.clear();
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            if b.generation == self.member.generation {
                self.member = b;
                return Ok(());
            }
            tracing::debug!(group = %self.group, from = self.member.generation, to = b.generation, assignment = ?b.assignment, "rebalance");
            self.member.generation = b.generation;
            self.commit().await?;
            self.member = b;
            let keep = self.assigned(None);
            self.positions.retain(|p, _| keep.contains(p));
            self.committed.retain(|p, _| keep.contains(p));
            // loop: the next heartbeat carries the new generation (the
            // acknowledgement); it may reveal yet another one.
        }
    }

    async fn leave(&mut self) {
        // Fenced by a rebalance the loop has not seen: adopting it commits
        // with the new generation (the partitions are still this member's
        // until it acknowledges), so nothing printed is left uncommitted.
        let r = match self.commit().await {
            Ok(false) => self.heartbeat().await.and(Ok(true)),
            r => r,
        };
        if let Err(e) = r {
            eprintln!("weft consume: final commit failed: {e}");
        }
        let req = dto::MemberRef { group: self.group.clone(), member_id: self.member.member_id.clone(), generation: None };
        let _: Result<dto::Done, _> = self.client.call(route::GROUP_LEAVE, &req).await;
    }
}

/// Default session of `weft consume --group` (Kafka's default is 45 s;
/// shorter here so a crashed console consumer's partitions move on soon).
pub const SESSION_TIMEOUT_MS: u64 = 10_000;

/// `weft consume`: standalone (every partition, or one) or as a group
/// member. Prints each record before its offset is committed, so a group's
/// delivery is at-least-once (docs/log.md).
pub async fn consume(client: &Client, args: ConsumeArgs) -> Result<(), CliError> {
    let mut printer = Printer { json: args.json, key_separator: args.key_separator.clone(), out: std::io::BufWriter::new(std::io::stdout()) };
    let limit = args.max_records.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let stop = stop_flag();
    let leaders = Leaders::default();
    let desc: serde_json::Value = client.call(route::TOPIC_DESCRIBE, &dto::TopicRef { name: args.topic.clone() }).await?;
    let count = desc["config"]["partitions"].as_u64().unwrap_or(1) as u32;
    if let Some(p) = args.partition
        && p >= count
    {
        return Err(CliError::Usage(format!("topic {} has no partition {p} (it has {count})", args.topic)));
    }
    let mut member = match &args.group {
        Some(g) => Some(GroupMember::join(client, g, &args.topic, args.reset, args.session_timeout_ms).await?),
        None => None,
    };
    // Standalone positions (members keep theirs in GroupMember).
    let mut positions: BTreeMap<u32, u64> = BTreeMap::new();
    let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_beat = Instant::now();
    let heartbeat_every = Duration::from_millis((args.session_timeout_ms / 3).clamp(1, 1000));
    let result = async {
        loop {
            let current: Vec<u32> = match &member {
                Some(m) => m.assigned(args.partition),
                None => args.partition.map_or_else(|| (0..count).collect(), |p| vec![p]),
            };
            for p in &current {
                let known = match &member {
                    Some(m) => m.positions.contains_key(p),
                    None => positions.contains_key(p),
                };
                if known {
                    continue;
                }
                match &mut member {
                    Some(m) => {
                        let o = m.start(*p).await?;
                        m.positions.insert(*p, o);
                    }
                    None => {
                        let o = match args.offset {
                            Some(o) => o,
                            None => {
                                let spec = if args.from_beginning { dto::OffsetQuery::Earliest } else { dto::OffsetQuery::Latest };
                                let a: dto::OffsetAnswer =
                                    client.call(route::OFFSETS, &dto::Offsets { topic: args.topic.clone(), partition: *p, spec }).await?;
                                a.offset
                            }
                        };
                        positions.insert(*p, o);
                    }
                }
            }
            let mut got_any = false;
            for p in &current {
                let pos = match &member {
                    Some(m) => m.positions.get(p).copied(),
                    None => positions.get(p).copied(),
                };
                let Some(offset) = pos else { continue };
                let wait_ms = if args.follow { Some(500 / current.len().max(1) as u64) } else { None };
                let req = dto::Fetch {
                    topic: args.topic.clone(),
                    partition: *p,
                    offset,
                    max_bytes: None,
                    max_records: Some(1000),
                    wait_ms,
                    raw: false,
                    reset: Some(args.reset),
                };
                let r: dto::FetchResponse = match &mut member {
                    // Members fetch fenced: once rebalanced away or expired
                    // they read nothing more of the partition.
                    Some(m) => {
                        let mf = dto::MemberFetch { group: m.group.clone(), member_id: m.member.member_id.clone(), generation: m.member.generation, fetch: req };
                        match client.call(route::GROUP_FETCH, &mf).await {
                            Ok(r) => r,
                            Err(e) if matches!(remote_kind(&e), Some("illegal_generation" | "not_assigned" | "unknown_member")) => {
                                tracing::debug!(group = %m.group, partition = *p, error = %e, "fetch fenced");
                                m.heartbeat().await?;
                                last_beat = Instant::now();
                                // not caught up: the round starts over with the new assignment
                                got_any = true;
                                break;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    None => leaders.call(client, (&args.topic, Some(*p)), route::FETCH, &req).await?,
                };
                if let Some(from) = r.reset_from {
                    eprintln!(
                        "weft consume: offset {from} is outside {}/{p} (log start {}, end {}): reset to {} ({})",
                        args.topic, r.log_start_offset, r.high_watermark, r.next_offset.min(r.records.first().map_or(u64::MAX, |x| x.offset)), args.reset
                    );
                }
                ends.insert(*p, r.high_watermark);
                let mut next = if r.records.is_empty() { r.next_offset } else { offset };
                for rec in &r.records {
                    if printed >= limit {
                        break;
                    }
                    printer.print(*p, rec)?;
                    printed += 1;
                    next = rec.offset + 1;
                }
                got_any |= !r.records.is_empty();
                match &mut member {
                    Some(m) => {
                        m.positions.insert(*p, next);
                    }
                    None => {
                        positions.insert(*p, next);
                    }
                }
                if printed >= limit {
                    break;
                }
            }
            // Output first, then the commit: a record is committed only once
            // it has been written (at-least-once; never at-most-once).
            printer.out.flush()?;
            if let Some(m) = &mut member
                && !m.commit().await?
            {
                // Fenced: a rebalance happened; adopt it now.
                m.heartbeat().await?;
                last_beat = Instant::now();
            }
            if printed >= limit || (!got_any && !args.follow) || stop.load(std::sync::atomic::Ordering::Acquire) {
                return Ok::<(), CliError>(());
            }
            if let Some(m) = &mut member
                && last_beat.elapsed() >= heartbeat_every
            {
                m.heartbeat().await?;
                last_beat = Instant::now();
            }
            if current.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    .await;
    if let Some(m) = &mut member {
        m.leave().await;
    }
    if result.is_ok() && printed == 0 && !args.follow {
        let ends: Vec<String> = ends.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        let ends = ends.join(" ");
        match (&args.group, args.offset, args.from_beginning) {
            (Some(g), _, _) => eprintln!("no records: group {g} is at the end of topic {} (end offsets {ends}); see weft group describe {g}", args.topic),
            (None, None, false) => {
                eprintln!("no records: started at the end of topic {} (end offsets {ends}); use --from-beginning or --offset, or --follow", args.topic)
            }
            (None, _, _) => eprintln!("no records: topic {} has none from there (end offsets {ends})", args.topic),
        }
    }
    result
}

/// Rows of `columns` from a JSON array of objects.
fn rows_of(v: &serde_json::Value, columns: &[&str]) -> Vec<Vec<String>> {
    v.as_array().map(|a| a.iter().map(|o| columns.iter().map(|c| cell(&o[*c])).collect()).collect()).unwrap_or_default()
}

pub async fn group(client: &Client, cmd: GroupCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        GroupCmd::List => {
            let groups: serde_json::Value = client.call(route::GROUP_LIST, &()).await?;
            if json {
                print_json(&groups);
            } else if groups.as_array().is_none_or(|g| g.is_empty()) {
                println!("no consumer groups");
            } else {
                let cols = ["group", "state", "members", "generation", "total_lag"];
                print!("{}", table(&cols, &rows_of(&groups, &cols)));
            }
        }
        GroupCmd::Describe { group } => {
            let d: serde_json::Value = client.call(route::GROUP_DESCRIBE, &dto::GroupRef { group }).await?;
            if json {
                print_json(&d);
            } else {
                println!(
                    "group {}  state {}  generation {}  strategy {}  total_lag {}",
                    cell(&d["group"]),
                    cell(&d["state"]),
                    cell(&d["generation"]),
                    cell(&d["strategy"]),
                    cell(&d["total_lag"])
                );
                let members: Vec<Vec<String>> = d["members"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .map(|m| {
                                let assigned = m["assignment"].as_array().map_or(0, |a| a.len());
                                vec![cell(&m["member_id"]), cell(&m["client_id"]), assigned.to_string(), cell(&m["last_heartbeat_ms"])]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                print!("{}", table(&["member_id", "client_id", "partitions", "last_heartbeat_ms"], &members));
                let cols = ["topic", "partition", "committed", "log_start", "latest", "lag"];
                print!("{}", table(&cols, &rows_of(&d["offsets"], &cols)));
            }
        }
        GroupCmd::Delete { group } => {
            let done: dto::Done = client.call(route::GROUP_DELETE, &dto::GroupRef { group: group.clone() }).await?;
            if json {
                print_json(&done);
            } else {
                println!("deleted group {group}");
            }
        }
        GroupCmd::ResetOffsets(a) => {
            let to = match (a.to_earliest, a.to_latest, a.to_offset, &a.to_time) {
                (true, ..) => ResetTarget::Earliest,
                (_, true, ..) => ResetTarget::Latest,
                (_, _, Some(o), _) => ResetTarget::Offset(o),
                (_, _, _, Some(t)) => ResetTarget::Timestamp(parse_time_ms(t)?),
                _ => return Err(CliError::Usage("give one of --to-earliest, --to-latest, --to-offset N, --to-time T".into())),
            };
            let req = dto::ResetOffsets { group: a.group.clone(), topic: a.topic.clone(), partition: a.partition, to, dry_run: a.dry_run };
            let r: dto::ResetOffsetsAnswer = client.call(route::GROUP_RESET_OFFSETS, &req).await?;
            if json {
                print_json(&r);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = r
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.topic.clone(),
                        p.partition.0.to_string(),
                        p.previous.map_or("-".into(), |o| o.0.to_string()),
                        p.offset.0.to_string(),
                        p.log_start.0.to_string(),
                        p.latest.0.to_string(),
                    ]
                })
                .collect();
            print!("{}", table(&["TOPIC", "PARTITION", "PREVIOUS", "NEW", "LOG-START", "END"], &rows));
            if r.dry_run {
                println!("dry run: group {} not changed", r.group);
            } else {
                println!("group {} reset on {} partition(s)", r.group, r.partitions.len());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod time_tests {
    use super::parse_time_ms;

    #[test]
    fn rfc3339_and_epoch_ms() {
        assert_eq!(parse_time_ms("0").unwrap(), 0);
        assert_eq!(parse_time_ms("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_time_ms("2023-11-14T22:13:20.123Z").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time_ms("2023-11-15T00:13:20+02:00").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time_ms("2000-02-29T12:00:00-00:30").unwrap(), 951_825_600_000 + 1_800_000);
        for bad in ["", "yesterday", "2023-13-01T00:00:00Z", "2023-11-14T22:13:20", "2023-11-14T22:13:20+0200", "-5"] {
            assert!(parse_time_ms(bad).is_err(), "{bad}");
        }
    }
}
