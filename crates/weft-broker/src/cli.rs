//! `weft topic`, `weft produce`, `weft consume`, `weft group`: clients of the
//! native `log.*` endpoints.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_bytes::ByteBuf;
use weft_log::{CleanupPolicy, Offset, Record, TopicConfig};
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
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// List consumer groups with members and lag.
    List,
    /// Show a group's members, assignment, committed offsets and lag.
    Describe { group: String },
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
        TopicCmd::Create { name, partitions, retention_ms, retention_bytes, max_record_bytes, segment_bytes, cleanup } => {
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
            let d: serde_json::Value = client.call(route::TOPIC_CREATE, &dto::CreateTopic { name: name.clone(), config: Some(c) }).await?;
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

fn parse_headers(h: &[String]) -> Result<Vec<(String, ByteBuf)>, CliError> {
    h.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_owned(), ByteBuf::from(v.as_bytes().to_vec())))
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
                Some((k, v)) => (Some(ByteBuf::from(k.as_bytes().to_vec())), v),
                None => (None, line.as_str()),
            };
            let r = dto::RecordIn {
                partition: args.partition,
                key,
                value: Some(ByteBuf::from(value.as_bytes().to_vec())),
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
        let req = dto::Produce { topic: args.topic.clone(), records: std::mem::take(&mut pending) };
        pending_bytes = 0;
        let resp: dto::ProduceResponse = tokio::select! {
            r = client.call(route::PRODUCE, &req) => r?,
            sig = &mut signal => {
                let unknown = format!("; a request of {n} record(s) was in flight, its outcome is unknown");
                return Err(CliError::Interrupted { signal: sig, acked, unknown });
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

pub async fn consume(client: &Client, args: ConsumeArgs) -> Result<(), CliError> {
    let mut printer = Printer { json: args.json, key_separator: args.key_separator.clone(), out: std::io::BufWriter::new(std::io::stdout()) };
    let limit = args.max_records.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let desc: serde_json::Value = client.call(route::TOPIC_DESCRIBE, &dto::TopicRef { name: args.topic.clone() }).await?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => (0..desc["config"]["partitions"].as_u64().unwrap_or(1) as u32).collect(),
    };

    // Group membership: the assignment replaces the partition list.
    let mut member: Option<dto::Member> = None;
    if let Some(group) = &args.group {
        let m: dto::Member = client
            .call(
                route::GROUP_JOIN,
                &dto::JoinGroup {
                    group: group.clone(),
                    member_id: None,
                    client_id: "weft-consume".into(),
                    topics: vec![args.topic.clone()],
                    strategy: None,
                    session_timeout_ms: Some(10_000),
                },
            )
            .await?;
        member = Some(m);
    }

    let mut positions = std::collections::BTreeMap::new();
    let assigned = |m: &Option<dto::Member>| -> Vec<u32> {
        match m {
            Some(m) => m.assignment.iter().filter(|(t, _)| *t == args.topic).map(|(_, p)| *p).filter(|p| args.partition.is_none_or(|x| x == *p)).collect(),
            None => partitions.clone(),
        }
    };
    let mut last_beat = Instant::now();
    let result = async {
        loop {
            let current = assigned(&member);
            for p in &current {
                if !positions.contains_key(p) {
                    positions.insert(*p, start_position(client, &args, &member, *p).await?);
                }
            }
            let mut got_any = false;
            for p in &current {
                let offset = positions[p];
                let wait_ms = if args.follow { Some(500 / current.len().max(1) as u64) } else { None };
                let r: dto::FetchResponse = client
                    .call(route::FETCH, &dto::Fetch { topic: args.topic.clone(), partition: *p, offset, max_bytes: None, max_records: Some(1000), wait_ms, raw: false })
                    .await?;
                for rec in &r.records {
                    if printed >= limit {
                        break;
                    }
                    printer.print(*p, rec)?;
                    printed += 1;
                    positions.insert(*p, rec.offset + 1);
                }
                got_any |= !r.records.is_empty();
                if let (Some(m), Some(group), false) = (&member, &args.group, r.records.is_empty()) {
                    let _: dto::Done = client
                        .call(
                            route::GROUP_COMMIT,
                            &dto::Commit {
                                group: group.clone(),
                                member_id: Some(m.member_id.clone()),
                                generation: Some(m.generation),
                                offsets: vec![dto::CommitOffset { topic: args.topic.clone(), partition: *p, offset: positions[p], metadata: String::new() }],
                            },
                        )
                        .await?;
                }
            }
            printer.out.flush()?;
            if printed >= limit || (!got_any && !args.follow) {
                return Ok::<(), CliError>(());
            }
            if let (Some(m), Some(group)) = (&member, &args.group)
                && last_beat.elapsed() > Duration::from_secs(2)
            {
                {
                    let beat: Result<dto::Member, _> =
                        client.call(route::GROUP_HEARTBEAT, &dto::MemberRef { group: group.clone(), member_id: m.member_id.clone() }).await;
                    last_beat = Instant::now();
                    match beat {
                        Ok(b) if b.generation != m.generation => {
                            // Rebalanced: positions of partitions we keep stay, others go.
                            member = Some(b);
                            let keep = assigned(&member);
                            positions.retain(|p, _| keep.contains(p));
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if current.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    .await;
    if let (Some(m), Some(group)) = (&member, &args.group) {
        let _: Result<dto::Done, _> = client.call(route::GROUP_LEAVE, &dto::MemberRef { group: group.clone(), member_id: m.member_id.clone() }).await;
    }
    result
}

async fn start_position(client: &Client, args: &ConsumeArgs, member: &Option<dto::Member>, partition: u32) -> Result<u64, CliError> {
    if let Some(o) = args.offset {
        return Ok(o);
    }
    if let (Some(group), Some(_)) = (&args.group, member) {
        let c: dto::CommittedAnswer =
            client.call(route::GROUP_COMMITTED, &dto::Committed { group: group.clone(), topic: args.topic.clone(), partition }).await?;
        if let Some(o) = c.offset {
            return Ok(o);
        }
    }
    let spec = if args.from_beginning { dto::OffsetQuery::Earliest } else { dto::OffsetQuery::Latest };
    let a: dto::OffsetAnswer = client.call(route::OFFSETS, &dto::Offsets { topic: args.topic.clone(), partition, spec }).await?;
    Ok(a.offset)
}

pub async fn group(client: &Client, cmd: GroupCmd) -> Result<(), CliError> {
    match cmd {
        GroupCmd::List => {
            let groups: Vec<serde_json::Value> = client.call(route::GROUP_LIST, &()).await?;
            if groups.is_empty() {
                println!("no consumer groups");
            }
            for g in groups {
                println!("{}  state={} members={} generation={} lag={}", g["group"].as_str().unwrap_or("?"), g["state"], g["members"], g["generation"], g["total_lag"]);
            }
        }
        GroupCmd::Describe { group } => {
            let d: serde_json::Value = client.call(route::GROUP_DESCRIBE, &dto::GroupRef { group }).await?;
            println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
        }
    }
    Ok(())
}
