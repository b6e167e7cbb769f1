//! The query CLI: `weft query`, `weft table`, `weft kv`. Each command builds
//! an AQL statement (printed by the canonical printer) and sends it over
//! gRPC to `--grpc-addr`; `kv watch` uses the Watch stream.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value as Json;

use crate::aql::{self, DeleteCond, KeyRange, Query, SetCond, Statement, Value};
use crate::pb;
use crate::pb::query_client::QueryClient;

/// Where the gRPC query API is and how to reach it.
#[derive(Args, Clone, Debug, Default)]
pub struct GrpcArgs {
    /// gRPC query API: HOST:PORT, http://HOST:PORT or https://HOST:PORT
    /// (TLS with the --ca/--cert/--key options).
    #[arg(long, env = "WEFT_GRPC_ADDR", default_value = "127.0.0.1:7402", global = true)]
    pub grpc_addr: String,
}

/// TLS and deadline settings the binary hands over from its global options.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    pub addr: String,
    pub timeout: Duration,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    /// `--token`/`WEFT_TOKEN`: sent as `authorization: Bearer` metadata on
    /// every call (docs/security.md, "gRPC").
    pub token: Option<String>,
}

/// Puts the bearer token in each call's metadata.
#[derive(Clone)]
struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

type Channel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{}: {}", crate::error::code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: tonic::transport::Error },
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The server answered UNAUTHENTICATED (no or a bad credential).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, CliError::Status(s) if s.code() == tonic::Code::Unauthenticated)
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Status(s)
    }
}

#[derive(Subcommand, Clone, Debug)]
pub enum TableCmd {
    /// Create a table.
    Create {
        name: String,
        /// Cluster mode: raft replicas of the table (default: min(3, data nodes)).
        /// A single node keeps one copy and records the number.
        #[arg(long)]
        replicas: Option<u64>,
    },
    /// Drop a table and its data.
    Drop { name: String },
    /// List the tables.
    List,
}

#[derive(Subcommand, Clone, Debug)]
pub enum KvCmd {
    /// Read a key (the current value, or as of --revision).
    Get {
        table: String,
        #[arg(id = "kv_key", value_name = "KEY")]
        key: String,
        #[arg(long)]
        revision: Option<u64>,
        /// Cluster mode: read the answering node's replica as applied now
        /// (no round trip to the leader; possibly behind the latest write).
        #[arg(long)]
        serializable: bool,
    },
    /// Write a key. VALUE is stored as JSON when it parses as JSON, else as text (--text: always text).
    Put {
        table: String,
        #[arg(id = "kv_key", value_name = "KEY")]
        key: String,
        value: String,
        #[arg(long)]
        text: bool,
        /// Only if the key's version is N (0: absent).
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<u64>,
        /// Only if the key does not exist.
        #[arg(long)]
        if_absent: bool,
    },
    /// Delete a key.
    Del {
        table: String,
        #[arg(id = "kv_key", value_name = "KEY")]
        key: String,
        #[arg(long, conflicts_with = "if_exists")]
        if_version: Option<u64>,
        /// Fail (FAILED_PRECONDITION) when the key does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Keys from --from (inclusive) to --to (exclusive), or with --prefix.
    Range {
        table: String,
        #[arg(long, default_value = "")]
        from: String,
        #[arg(long)]
        to: Option<String>,
        #[arg(long, conflicts_with_all = ["from", "to"])]
        prefix: Option<String>,
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        revision: Option<u64>,
        /// Cluster mode: read the answering node's replica as applied now
        /// (no round trip to the leader; possibly behind the latest write).
        #[arg(long)]
        serializable: bool,
    },
    /// Print changes to a key (or --prefix) as they happen, from --start-revision.
    Watch {
        table: String,
        /// The key (omit with --prefix).
        #[arg(id = "kv_key", value_name = "KEY")]
        key: Option<String>,
        #[arg(long, conflicts_with = "kv_key")]
        prefix: Option<String>,
        #[arg(long, default_value_t = 0)]
        start_revision: u64,
        /// Stop after N events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many milliseconds (default: the global --timeout-ms).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// A key's past versions, newest first.
    History {
        table: String,
        #[arg(id = "kv_key", value_name = "KEY")]
        key: String,
        #[arg(long)]
        limit: Option<u64>,
        /// Cluster mode: read the answering node's replica as applied now
        /// (no round trip to the leader; possibly behind the latest write).
        #[arg(long)]
        serializable: bool,
    },
}

async fn client(c: &Connect) -> Result<QueryClient<Channel>, CliError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    // Checked before connecting: a token that cannot be a header value is
    // the caller's mistake, not the server's answer.
    let bearer = match c.token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| CliError::Usage("the token (--token, WEFT_TOKEN) has characters a gRPC header cannot carry".into()))?),
        None => None,
    };
    let tls = c.addr.starts_with("https://");
    let url = if c.addr.contains("://") { c.addr.clone() } else { format!("http://{}", c.addr) };
    let conn_err = |source| CliError::Connect { addr: c.addr.clone(), source };
    let mut ep = Endpoint::from_shared(url).map_err(conn_err)?.connect_timeout(c.timeout.min(Duration::from_secs(10)));
    if tls {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|source| CliError::Io { path: p.clone(), source });
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &c.ca {
            cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
            cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(n) = &c.server_name {
            cfg = cfg.domain_name(n.clone());
        }
        ep = ep.tls_config(cfg).map_err(conn_err)?;
    }
    let ch = ep.connect().await.map_err(conn_err)?;
    Ok(QueryClient::with_interceptor(ch, Bearer(bearer)))
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    crate::grpc_trace::inject(&mut r);
    r
}

/// Sends one query; returns the result.
pub async fn execute(c: &Connect, q: &Query) -> Result<pb::Result, CliError> {
    execute_with(c, q, false).await
}

/// As `execute`; `serializable`: a read served by the answering node's replica as applied now (cluster mode).
pub async fn execute_with(c: &Connect, q: &Query, serializable: bool) -> Result<pb::Result, CliError> {
    let mut cl = client(c).await?;
    let req = pb::ExecuteRequest { query: Some(pb::execute_request::Query::Aql(aql::print(q))), timeout_ms: 0, serializable };
    let r = cl.execute(request(req, c.timeout)).await?.into_inner();
    r.result.ok_or_else(|| CliError::Usage("the server sent no result".into()))
}

/// `weft query "AQL"`: the text goes as typed (the server reports syntax
/// errors with their position).
/// `serializable`: reads are served by the answering node's replica as
/// applied now (cluster mode; `weft query --serializable`).
pub async fn run_query(c: &Connect, text: &str, json: bool, serializable: bool) -> Result<(), CliError> {
    let mut cl = client(c).await?;
    let req = pb::ExecuteRequest { query: Some(pb::execute_request::Query::Aql(text.to_owned())), timeout_ms: 0, serializable };
    let r = cl.execute(request(req, c.timeout)).await?.into_inner().result.unwrap_or_default();
    print_result(&r, json);
    Ok(())
}

pub async fn run_table(c: &Connect, cmd: &TableCmd, json: bool) -> Result<(), CliError> {
    let stmt = match cmd {
        TableCmd::Create { name, replicas } => Statement::CreateTable { table: name.clone(), replicas: *replicas },
        TableCmd::Drop { name } => Statement::DropTable { table: name.clone() },
        TableCmd::List => Statement::ShowTables,
    };
    let r = execute(c, &Query { stmt, timeout_ms: None }).await?;
    if json {
        println!("{}", crate::json::result(&r));
    } else {
        match cmd {
            TableCmd::List => r.tables.iter().for_each(|t| println!("{t}")),
            TableCmd::Create { name, .. } => println!("created table {name}"),
            TableCmd::Drop { name } => println!("dropped table {name}"),
        }
    }
    Ok(())
}

pub async fn run_kv(c: &Connect, cmd: &KvCmd, json: bool) -> Result<(), CliError> {
    let k = |s: &String| s.as_bytes().to_vec();
    let serializable = matches!(cmd, KvCmd::Get { serializable: true, .. } | KvCmd::Range { serializable: true, .. } | KvCmd::History { serializable: true, .. });
    let stmt = match cmd {
        KvCmd::Get { table, key, revision, .. } => Statement::Get { table: table.clone(), key: k(key), revision: *revision },
        KvCmd::Put { table, key, value, text, if_version, if_absent } => {
            let value = match serde_json::from_str::<Json>(value) {
                Ok(j) if !*text => Value::Json(j),
                _ => Value::Text(value.clone()),
            };
            let cond = match (if_version, if_absent) {
                (Some(n), _) => Some(SetCond::Version(*n)),
                (None, true) => Some(SetCond::Absent),
                _ => None,
            };
            Statement::Set { table: table.clone(), key: k(key), value, cond }
        }
        KvCmd::Del { table, key, if_version, if_exists } => {
            let cond = match (if_version, if_exists) {
                (Some(n), _) => Some(DeleteCond::Version(*n)),
                (None, true) => Some(DeleteCond::Exists),
                _ => None,
            };
            Statement::Delete { table: table.clone(), key: k(key), cond }
        }
        KvCmd::Range { table, from, to, prefix, limit, revision, .. } => {
            let range = match prefix {
                Some(p) => KeyRange::Prefix(k(p)),
                None => KeyRange::From { start: k(from), end: to.as_ref().map(k) },
            };
            Statement::Range { table: table.clone(), range, limit: *limit, revision: *revision }
        }
        KvCmd::History { table, key, limit, .. } => Statement::History { table: table.clone(), key: k(key), limit: *limit },
        KvCmd::Watch { table, key, prefix, start_revision, count, timeout } => {
            return watch(c, table, key.as_deref(), prefix.as_deref(), *start_revision, *count, timeout.map(Duration::from_millis), json).await;
        }
    };
    let r = execute_with(c, &Query { stmt, timeout_ms: None }, serializable).await?;
    print_result(&r, json);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn watch(
    c: &Connect,
    table: &str,
    key: Option<&str>,
    prefix: Option<&str>,
    start_revision: u64,
    count: Option<u64>,
    timeout: Option<Duration>,
    json: bool,
) -> Result<(), CliError> {
    let target = match (key, prefix) {
        (Some(k), _) => pb::watch_request::Target::Key(k.as_bytes().to_vec()),
        (None, Some(p)) => pb::watch_request::Target::Prefix(p.as_bytes().to_vec()),
        (None, None) => return Err(CliError::Usage("kv watch: give a KEY or --prefix".into())),
    };
    let mut cl = client(c).await?;
    let req = pb::WatchRequest { table: table.to_owned(), target: Some(target), start_revision, prev_kv: false };
    let mut stream = cl.watch(tonic::Request::new(req)).await?.into_inner();
    let deadline = tokio::time::Instant::now() + timeout.unwrap_or(c.timeout);
    let mut seen = 0u64;
    loop {
        if count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
        let msg = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Ok(()), // the bound was reached: a normal end
            Ok(m) => m?,
        };
        let Some(msg) = msg else { return Ok(()) };
        for e in &msg.events {
            seen += 1;
            if json {
                println!("{}", crate::json::event(e));
            } else {
                let kind = if e.r#type == pb::EventType::Delete as i32 { "DELETE" } else { "PUT" };
                let kv = e.kv.clone().unwrap_or_default();
                println!("{kind} {} {} (revision {})", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value), e.revision);
            }
            if count.is_some_and(|n| seen >= n) {
                return Ok(());
            }
        }
    }
}

/// Text output: key-values one per line, else a one-line summary.
pub fn print_result(r: &pb::Result, json: bool) {
    if json {
        println!("{}", crate::json::result(r));
        return;
    }
    match r.kind.as_str() {
        "get" if r.kvs.is_empty() => println!("(not found)"),
        "get" => r.kvs.iter().for_each(|k| println!("{}", String::from_utf8_lossy(&k.value))),
        "range" | "filter" | "history" => {
            for k in &r.kvs {
                let del = if k.deleted { " (deleted)" } else { "" };
                println!("{}\t{}\t(version {}, mod_revision {}){del}", String::from_utf8_lossy(&k.key), String::from_utf8_lossy(&k.value), k.version, k.mod_revision);
            }
            if r.more {
                println!("(more)");
            }
        }
        "set" | "delete" | "update" => println!("revision {} ({} key(s))", r.revision, r.count),
        "show_tables" => r.tables.iter().for_each(|t| println!("{t}")),
        "topic_read" => {
            for rec in &r.records {
                println!("{}\t{}", rec.offset, String::from_utf8_lossy(&rec.value));
            }
        }
        "batch" => println!("{} at revision {} ({} op(s))", if r.succeeded { "succeeded" } else { "compare failed: ELSE ran" }, r.revision, r.ops.len()),
        _ => println!("{}", crate::json::result(r)),
    }
}
