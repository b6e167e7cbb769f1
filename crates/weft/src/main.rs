//! The `weft` binary: argument parsing, configuration and wiring. Behaviour
//! lives in the crates.

mod auth_cluster;
mod auth_cmd;
mod reload;
mod client_cmd;
mod cluster_cmd;
mod config;
mod logging;
mod observe;
mod query_cmd;
mod queued_produce;
mod serve;
mod telemetry;
mod ui;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "weft", version, about = "Weft: a data fabric. `weft serve` runs a node; the other commands talk to one.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (single node, embedded defaults: data under ./weft-data).
    Serve(NodeArgs),
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Round-trip a ping to a node.
    Ping {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
    },
    /// Send TEXT to the echo endpoint and print what comes back.
    Echo {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        text: String,
    },
    /// Call any endpoint with a JSON body and print the JSON answer.
    Call {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        route: String,
        /// JSON request body (default: null).
        json: Option<String>,
    },
    /// Print a node's name, version, id, uptime, transports and endpoints.
    Info {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
    },
    /// Print the node's UDP liveness table (peers and when they were last seen).
    Liveness {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
    },
    /// Users, roles, tokens and API keys of a node with auth on (docs/security.md).
    Auth {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        #[command(subcommand)]
        command: auth_cmd::AuthCmd,
    },
    /// Create, list, describe and delete topics.
    Topic {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        #[command(subcommand)]
        command: weft_broker::cli::TopicCmd,
    },
    /// Write records to a topic: one per line from stdin or --file.
    Produce {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        args: weft_broker::cli::ProduceArgs,
    },
    /// Read records from a topic (alone or as a consumer-group member).
    Consume {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        args: weft_broker::cli::ConsumeArgs,
    },
    /// EPICS pvAccess: get, put, monitor, info, call, list, serve.
    #[cfg(feature = "pva")]
    Pv {
        #[command(subcommand)]
        command: weft_pva::cli::PvCommand,
    },
    /// Ceph RADOS (pure Rust client): pools, objects, xattrs, omap, bench.
    #[cfg(feature = "rados")]
    Rados(weft_rados::cli::RadosArgs),
    /// Offline tools on a log data directory (verify, dump); safe while serving.
    Log {
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        #[command(subcommand)]
        command: weft_log::cli::LogCmd,
    },
    /// Change a running node's log filter (`debug`, `warn,weft_log=debug`, ...); without LEVEL, print it.
    LogLevel {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        /// A tracing EnvFilter: a level or `target=level` directives, comma-separated.
        level: Option<String>,
    },
    /// Queued endpoints and senders, error states, statistics (current, gathered, full).
    #[command(flatten)]
    Queues(weft_queue::cli::Command),
    /// Talk to an Ecosystem (ekosis) service or a Weft ekosis listener.
    Eko(weft_ekosis::cli::EkoArgs),
    /// TLS development certificates (`weft tls init --dir D`).
    Tls {
        #[command(subcommand)]
        command: weft_net::cli::TlsCommand,
    },
    /// A live view of a node: endpoint rates and latencies, topics, groups, queues.
    Top {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        #[command(flatten)]
        args: weft_top::TopArgs,
    },
    /// Print a shell completion script: `weft completions bash > /etc/bash_completion.d/weft`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into --dir.
    Man {
        /// Write weft.1 and weft-<command>.1 pages here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Every command path, one per line (for tests and scripts).
    #[command(name = "__commands", hide = true)]
    Commands,
    /// The cluster: status, add-node, remove-node (docs/cluster.md).
    Cluster {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        #[command(subcommand)]
        command: cluster_cmd::ClusterCmd,
    },
    /// List and describe consumer groups.
    Group {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        #[command(subcommand)]
        command: weft_broker::cli::GroupCmd,
    },
    /// Run one AQL query over gRPC (docs/aql.md): `weft query "GET t 'k'"`.
    Query {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        grpc: weft_api::cli::GrpcArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        /// The AQL text.
        aql: String,
        /// Cluster mode: reads are served by the answering node's replica as
        /// applied now (no round trip to the leader; possibly behind).
        #[arg(long)]
        serializable: bool,
    },
    /// Key-value tables: create, drop, list (docs/query.md).
    Table {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        grpc: weft_api::cli::GrpcArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        #[command(subcommand)]
        command: weft_api::cli::TableCmd,
    },
    /// Keys of a table: get, put, del, range, watch, history (docs/query.md).
    Kv {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        grpc: weft_api::cli::GrpcArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
        #[command(subcommand)]
        command: weft_api::cli::KvCmd,
    },
}

/// Every command path that does something of its own (`topic create`,
/// `errors` and `errors clear`, ...), from clap's tree: what `weft
/// __commands` prints, and what the e2e test must cover.
fn leaf_commands(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, String)>) {
    for sub in cmd.get_subcommands() {
        // help is clap's; hidden commands (__commands) are internal
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        let path = if prefix.is_empty() { sub.get_name().to_owned() } else { format!("{prefix} {}", sub.get_name()) };
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let has_subs = sub.get_subcommands().any(|s| s.get_name() != "help");
        if !has_subs || !sub.is_subcommand_required_set() {
            out.push((path.clone(), about));
        }
        leaf_commands(sub, &path, out);
    }
}

/// Man pages: `weft man` prints weft(1) with a section listing every
/// command; `--dir D` also writes one page per subcommand (weft-topic-create.1).
fn man(dir: Option<&std::path::Path>) -> Result<()> {
    let cmd = Cli::command();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
        clap_mangen::generate_to(cmd, dir)?;
        println!("wrote man pages to {}", dir.display());
        return Ok(());
    }
    let mut out: Vec<u8> = vec![];
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    let mut leaves = vec![];
    leaf_commands(&cmd, "", &mut leaves);
    let esc = |s: &str| s.replace('\\', "\\e").replace('-', "\\-");
    out.extend_from_slice(b".SH \"ALL COMMANDS\"\n");
    for (path, about) in leaves {
        out.extend_from_slice(format!(".TP\n\\fBweft {}\\fR\n{}\n", esc(&path), esc(&about)).as_bytes());
    }
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(())
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration this machine would start a node with (defaults
    /// < --config file < WEFT_* < flags) and where each value came from.
    Show {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
    },
    /// Ask a running node for its effective configuration and the source
    /// of each value (the `weft.config` endpoint; secrets redacted).
    Running {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
    },
    /// Make a running node re-read its configuration, certificates and auth
    /// state (as SIGHUP does); all or nothing; lists keys needing a restart.
    Reload {
        #[command(flatten)]
        client: client_cmd::ClientArgs,
        #[command(flatten)]
        out: client_cmd::OutputArgs,
    },
}

/// Flags of `weft serve` (and `weft config show`). Each maps to a config key,
/// which can also be set in the file or as WEFT_<KEY>.
#[derive(Args, Clone, Default)]
pub struct NodeArgs {
    /// TOML or JSON configuration file (JSON when the name ends in .json).
    #[arg(long, env = "WEFT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [key: data_dir].
    #[arg(long)]
    data_dir: Option<String>,
    /// TCP listen address [key: tcp.addr].
    #[arg(long)]
    tcp_addr: Option<String>,
    /// UDP listen address [key: udp.addr].
    #[arg(long)]
    udp_addr: Option<String>,
    /// Unix socket path [key: unix.path].
    #[arg(long)]
    unix_path: Option<String>,
    /// Node name [key: node.name].
    #[arg(long)]
    node_name: Option<String>,
    /// Log filter [key: log].
    #[arg(long)]
    log: Option<String>,
    /// Log line format on stderr: text or json [key: log_format].
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Disable a transport: tcp, udp or unix (repeatable) [keys: tcp.enabled ...].
    #[arg(long = "disable", value_name = "TRANSPORT")]
    disable: Vec<String>,
    /// UDP liveness peer host:port (repeatable) [key: liveness.peers].
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Enable a transport that is off by default: tls or quic (repeatable) [keys: tls.enabled, quic.enabled].
    #[arg(long = "enable", value_name = "TRANSPORT")]
    enable: Vec<String>,
    /// TLS listen address [key: tls.addr].
    #[arg(long)]
    tls_addr: Option<String>,
    /// QUIC listen address (UDP) [key: quic.addr].
    #[arg(long)]
    quic_addr: Option<String>,
    /// TLS/QUIC client certificates: none, optional or require [key: tls.client_auth].
    #[arg(long)]
    client_auth: Option<String>,
    /// HTTP gateway address [key: http.addr].
    #[arg(long)]
    http_addr: Option<String>,
    /// gRPC query API address [key: grpc.addr].
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Log fsync policy: always, interval:<ms>, never [key: log_store.fsync].
    #[arg(long)]
    fsync: Option<String>,
    /// Cluster mode: this node's raft id, >= 1 [key: cluster.node_id].
    #[arg(long)]
    node_id: Option<u64>,
    /// Cluster mode: raft transport address HOST:PORT [key: cluster.addr].
    #[arg(long)]
    cluster_addr: Option<String>,
    /// Cluster mode: founding members 1=HOST:PORT,2=HOST:PORT,... [key: cluster.peers].
    #[arg(long)]
    cluster_peers: Option<String>,
    /// Cluster mode: control, data or control,data [key: cluster.roles].
    #[arg(long)]
    roles: Option<String>,
    /// Cluster mode: join an existing cluster (after `weft cluster add-node`) [key: cluster.join].
    #[arg(long)]
    cluster_join: bool,
    /// Cluster mTLS: this node's certificate (SAN node-<id>), PEM [key: cluster.tls.cert].
    #[arg(long)]
    cluster_tls_cert: Option<String>,
    /// Cluster mTLS: the certificate's private key, PEM [key: cluster.tls.key].
    #[arg(long)]
    cluster_tls_key: Option<String>,
    /// Cluster mTLS: the cluster CA bundle, PEM [key: cluster.tls.ca].
    #[arg(long)]
    cluster_tls_ca: Option<String>,
    /// Turn auth on: deny by default, tokens/keys/certificates and roles (docs/security.md) [key: auth.enabled].
    #[arg(long)]
    auth: bool,
}

impl NodeArgs {
    fn flag_overrides(&self) -> Result<Vec<(String, Value, String)>> {
        let mut out = vec![];
        let mut set = |key: &str, v: Value, flag: &str| out.push((key.to_owned(), v, flag.to_owned()));
        if let Some(v) = &self.data_dir {
            set("data_dir", v.clone().into(), "--data-dir");
        }
        if let Some(v) = &self.tcp_addr {
            set("tcp.addr", v.clone().into(), "--tcp-addr");
        }
        if let Some(v) = &self.udp_addr {
            set("udp.addr", v.clone().into(), "--udp-addr");
        }
        if let Some(v) = &self.unix_path {
            set("unix.path", v.clone().into(), "--unix-path");
        }
        if let Some(v) = &self.node_name {
            set("node.name", v.clone().into(), "--node-name");
        }
        if let Some(v) = &self.log {
            set("log", v.clone().into(), "--log");
        }
        if let Some(v) = &self.log_format {
            set("log_format", v.clone().into(), "--log-format");
        }
        for t in &self.disable {
            match t.as_str() {
                "tcp" | "udp" | "unix" | "http" | "tls" | "quic" => set(&format!("{t}.enabled"), false.into(), "--disable"),
                other => anyhow::bail!("--disable takes tcp, udp, unix, http, tls or quic, not {other:?}"),
            }
        }
        if self.auth {
            set("auth.enabled", true.into(), "--auth");
        }
        for t in &self.enable {
            match t.as_str() {
                "tls" | "quic" => set(&format!("{t}.enabled"), true.into(), "--enable"),
                other => anyhow::bail!("--enable takes tls or quic, not {other:?}"),
            }
        }
        if let Some(v) = &self.tls_addr {
            set("tls.addr", v.clone().into(), "--tls-addr");
        }
        if let Some(v) = &self.quic_addr {
            set("quic.addr", v.clone().into(), "--quic-addr");
        }
        if let Some(v) = &self.client_auth {
            set("tls.client_auth", v.clone().into(), "--client-auth");
        }
        if let Some(v) = &self.http_addr {
            set("http.addr", v.clone().into(), "--http-addr");
        }
        if let Some(v) = &self.grpc_addr {
            set("grpc.addr", v.clone().into(), "--grpc-addr");
        }
        if let Some(v) = &self.fsync {
            set("log_store.fsync", v.clone().into(), "--fsync");
        }
        if let Some(v) = self.node_id {
            set("cluster.node_id", v.into(), "--node-id");
        }
        if let Some(v) = &self.cluster_addr {
            set("cluster.addr", v.clone().into(), "--cluster-addr");
        }
        if let Some(v) = &self.cluster_peers {
            set("cluster.peers", v.clone().into(), "--cluster-peers");
        }
        if let Some(v) = &self.roles {
            set("cluster.roles", v.clone().into(), "--roles");
        }
        if self.cluster_join {
            set("cluster.join", true.into(), "--cluster-join");
        }
        for (key, v, flag) in [
            ("cluster.tls.cert", &self.cluster_tls_cert, "--cluster-tls-cert"),
            ("cluster.tls.key", &self.cluster_tls_key, "--cluster-tls-key"),
            ("cluster.tls.ca", &self.cluster_tls_ca, "--cluster-tls-ca"),
        ] {
            if let Some(v) = v {
                set(key, v.clone().into(), flag);
            }
        }
        if !self.peers.is_empty() {
            set("liveness.peers", self.peers.clone().into(), "--peer");
        }
        Ok(out)
    }

    fn load(&self) -> Result<weft_service::config::Layered<config::NodeConfig>> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let layered = weft_service::config::load(&config::NodeConfig::default(), self.config.as_deref(), &env, &self.flag_overrides()?)?;
        // An unknown file key is an error; an unknown variable cannot be
        // (the environment is shared with everything else), so say it once.
        for name in config::unknown_env(&layered, &env) {
            eprintln!("warning: environment variable {name} is not a configuration key (ignored); see `weft config show`");
        }
        Ok(layered)
    }
}

/// The worker threads `weft serve`'s runtime starts with
/// (`net.runtime_threads`), read before the runtime exists: one for a
/// count `serve::run` refuses (it stops the node with the error).
fn serve_runtime_threads(net: &config::NetConf) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    net.runtime_threads(cores, std::env::var("TOKIO_WORKER_THREADS").ok().as_deref()).unwrap_or(1)
}

/// Client commands die quietly when their output pipe closes (`weft stats
/// | head`), like other Unix tools, instead of panicking in `println!`.
/// Not for `serve`: there a closed socket must be an error, not a signal.
/// The one `unsafe` of the binary: there is no safe way to reset a signal
/// disposition.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: called before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        default_sigpipe();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // `serve` loads its configuration once, here, to size the runtime; run() uses it.
    let serve_config = match &cli.command {
        Command::Serve(args) => Some(args.load()),
        _ => None,
    };
    if let Some(Ok(layered)) = &serve_config {
        builder.worker_threads(serve_runtime_threads(&layered.value.net));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, serve_config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            // An interrupted produce exits like a killed process would (130/143).
            match e.downcast_ref::<weft_broker::cli::CliError>() {
                Some(c) => std::process::ExitCode::from(c.exit_code()),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes, `: `-separated, each said once. Convention:
/// an error's Display may include its source's text (most of ours do,
/// `"i/o: {0}"`), and anyhow contexts do not; so a cause whose text is
/// already inside the message before it is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = vec![];
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|prev| prev.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// `serve_config`: `serve`'s configuration, loaded before the runtime.
async fn run(cli: Cli, serve_config: Option<Result<weft_service::config::Layered<config::NodeConfig>>>) -> Result<()> {
    weft_net::set_trace_context_source(telemetry::outgoing_traceparent);
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "weft", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man(dir.as_deref()),
        Command::Commands => {
            let mut leaves = vec![];
            leaf_commands(&Cli::command(), "", &mut leaves);
            for (path, _) in leaves {
                println!("{path}");
            }
            Ok(())
        }
        Command::Serve(args) => {
            // A reload reads the same file, environment and flags again.
            let again = args.clone();
            reload::set_loader(Box::new(move || again.load()));
            reload::set_config_path(args.config.clone());
            serve::run(serve_config.unwrap_or_else(|| args.load())?).await
        }
        Command::Config { command: ConfigCommand::Show { node, out } } => {
            let layered = node.load()?;
            if out.json {
                client_cmd::print_json(&config::entries(&layered))
            } else {
                print!("{}", layered.render());
                Ok(())
            }
        }
        Command::Config { command: ConfigCommand::Running { client, out } } => client_cmd::config_running(&client, out).await,
        Command::Config { command: ConfigCommand::Reload { client, out } } => reload::cli(&client, out).await,
        Command::Ping { client, out } => client_cmd::ping(&client, out).await,
        Command::Echo { client, text } => client_cmd::echo(&client, &text).await,
        Command::Call { client, route, json } => client_cmd::call(&client, &route, json.as_deref()).await,
        Command::Info { client, out } => client_cmd::info(&client, out).await,
        Command::Liveness { client, out } => client_cmd::liveness(&client, out).await,
        Command::Auth { client, out, command } => auth_cmd::run(&client, out, command).await,
        Command::Topic { client, out, command } => Ok(weft_broker::cli::topic(&client.connect().await?, command, out.json).await?),
        Command::Produce { client, args } => Ok(weft_broker::cli::produce(&client.connect().await?, args).await?),
        Command::Consume { client, args } => Ok(weft_broker::cli::consume(&client.connect().await?, args).await?),
        Command::Queues(cmd) => Ok(weft_queue::cli::run(cmd).await?),
        Command::Eko(args) => Ok(weft_ekosis::cli::run(args).await?),
        #[cfg(feature = "pva")]
        Command::Pv { command } => Ok(weft_pva::cli::run(command).await?),
        #[cfg(feature = "rados")]
        Command::Rados(args) => Ok(weft_rados::cli::run(args).await?),
        Command::Log { out, command } => Ok(weft_log::cli::run(command, out.json).await?),
        Command::LogLevel { client, out, level } => logging::cli(&client, out, level.as_deref()).await,
        Command::Tls { command } => Ok(weft_net::cli::run(command).await?),
        Command::Cluster { client, out, command } => cluster_cmd::run(&client, out, command).await,
        Command::Group { client, out, command } => Ok(weft_broker::cli::group(&client.connect().await?, command, out.json).await?),
        Command::Query { client, grpc, out, aql, serializable } => query_cmd::query(&client, &grpc, out, &aql, serializable).await,
        Command::Table { client, grpc, out, command } => query_cmd::table(&client, &grpc, out, &command).await,
        Command::Kv { client, grpc, out, command } => query_cmd::kv(&client, &grpc, out, &command).await,
        Command::Top { client, out, mut args } => {
            args.json = out.json;
            let c = client.connect().await?;
            let r = weft_top::run(&c, &args).await;
            c.shutdown().await;
            Ok(r?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks on the whole tree (duplicate ids, a
    /// positional sharing an id with a global option, bad defaults...).
    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[cfg(feature = "rados")]
    #[test]
    fn rados_setomapval_key_is_the_positional_not_the_secret() {
        let cli = Cli::try_parse_from(["weft", "rados", "-p", "p", "setomapval", "obj", "k1", "v1"]).unwrap();
        let Command::Rados(a) = cli.command else { panic!("not rados") };
        assert_eq!(a.key, None);
        match a.cmd {
            weft_rados::cli::RadosCmd::Setomapval { oid, key, value } => assert_eq!((oid.as_str(), key.as_str(), value.as_str()), ("obj", "k1", "v1")),
            _ => panic!("not setomapval"),
        }
    }

    #[test]
    fn leaves_include_optional_subcommand_parents() {
        let mut leaves = vec![];
        leaf_commands(&Cli::command(), "", &mut leaves);
        let names: Vec<&str> = leaves.iter().map(|(p, _)| p.as_str()).collect();
        for want in ["topic create", "errors", "errors clear", "rados setomapval", "config running", "completions"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.contains(&"topic"), "topic needs a subcommand");
    }
}
