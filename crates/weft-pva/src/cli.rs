//! `weft pv ...`: pvget/pvput/pvmonitor/pvinfo/pvcall/pvlist-like tools and
//! the demo server. Wire with `Pv(weft_pva::cli::PvCommand)` and
//! `weft_pva::cli::run(cmd).await`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Subcommand;

use crate::client::{Client, MonitorEvent};
use crate::config::{ClientConfig, ServerConfig};
use crate::error::{Error, Result};
use crate::format::{nt_line, to_json, tree};
use crate::proto::header::split_datagram;
use crate::proto::msg::{Message, decode_message};
use crate::proto::nt::Builder;
use crate::proto::{FieldDesc, Limits, ScalarType, TypeCache, Value};

/// `weft pv` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum PvCommand {
    /// Read PVs (like pvget).
    Get {
        names: Vec<String>,
        /// pvRequest, e.g. `field(value,alarm)`.
        #[arg(short = 'r', long, default_value = "")]
        request: String,
        /// Print the whole structure instead of the one-line summary.
        #[arg(short = 'v', long)]
        verbose: bool,
        #[arg(long)]
        json: bool,
        /// Seconds to wait for search and reply.
        #[arg(short = 'w', long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Write a PV (like pvput): `NAME VALUE` or `NAME field=value ...`.
    Put {
        name: String,
        values: Vec<String>,
        #[arg(long)]
        json: bool,
        #[arg(short = 'w', long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Subscribe and print updates (like pvmonitor).
    Monitor {
        names: Vec<String>,
        #[arg(short = 'r', long, default_value = "")]
        request: String,
        /// Stop after this many updates per PV.
        #[arg(short = 'n', long)]
        count: Option<usize>,
        /// Use the pipeline protocol with this window (0 = off).
        #[arg(long, default_value_t = 0)]
        pipeline: u32,
        #[arg(short = 'v', long)]
        verbose: bool,
        #[arg(long)]
        json: bool,
        #[arg(short = 'w', long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Show the type of PVs (like pvinfo).
    Info {
        names: Vec<String>,
        #[arg(long)]
        json: bool,
        #[arg(short = 'w', long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Call an RPC service (like pvcall): `NAME a=1 b=2` sends an NTURI query.
    Call {
        name: String,
        args: Vec<String>,
        #[arg(long)]
        json: bool,
        #[arg(short = 'w', long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// List servers seen by beacons (no argument) or a server's channels (`HOST:PORT`).
    List {
        server: Option<String>,
        /// Seconds to listen for beacons.
        #[arg(short = 'w', long, default_value_t = 3.0)]
        timeout: f64,
        #[arg(long)]
        json: bool,
    },
    /// Serve the demo PVs (weft:demo:*) until interrupted.
    Serve {
        /// TCP port (default EPICS_PVAS_SERVER_PORT or 5075).
        #[arg(long)]
        tcp_port: Option<u16>,
        /// UDP search port (default EPICS_PVAS_BROADCAST_PORT or 5076).
        #[arg(long)]
        udp_port: Option<u16>,
        /// Interface to bind (default EPICS_PVAS_INTF_ADDR_LIST or 0.0.0.0).
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Stateless mode: share the writable demo PVs (setpoint, enum, table)
        /// with other processes through this Redis (host:port).
        #[arg(long, env = "WEFT_PVA_REDIS")]
        redis: Option<String>,
        /// Also serve the PVs of this TOML file (`[[pv]]` tables: name, type, value, writable, ...).
        #[arg(long)]
        pvs: Option<std::path::PathBuf>,
        /// Clients admitted (CIDRs or addresses, comma-separated or repeated);
        /// everyone else is refused. Default loopback only.
        #[arg(long, env = "WEFT_PVA_ALLOW", value_delimiter = ',', default_value = "127.0.0.0/8,::1/128")]
        allow: Vec<String>,
        /// Access rules file (TOML; docs/pva.md "Access security"). Default: none.
        #[arg(long, env = "WEFT_PVA_ACCESS_FILE")]
        access: Option<String>,
    },
}

fn client_config(base: &Option<ClientConfig>, timeout: f64) -> ClientConfig {
    let mut c = base.clone().unwrap_or_else(ClientConfig::from_env);
    c.timeout = Duration::from_secs_f64(timeout.clamp(0.1, 3600.0));
    c
}

/// Print what servers said about our requests (CMD_MESSAGE), to stderr so
/// stdout stays the data.
fn print_messages(c: &Client) {
    for m in c.take_messages() {
        eprintln!("{}: {}: {}", m.pv, m.severity.as_str(), m.text);
    }
}

fn print_data(name: &str, desc: &FieldDesc, value: &Value, verbose: bool, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "name": name, "id": desc.id(), "value": to_json(desc, value) }));
    } else if let (false, Some(l)) = (verbose, nt_line(name, desc, value)) {
        println!("{l}");
    } else {
        print!("{name}\n{}", tree(desc, value));
    }
}

/// Run a `weft pv` command, printing to stdout. Client settings come from
/// the EPICS_PVA_* environment.
pub async fn run(cmd: PvCommand) -> Result<()> {
    run_with(cmd, None).await
}

/// Like [`run`], with explicit client settings (None = environment).
pub async fn run_with(cmd: PvCommand, base: Option<ClientConfig>) -> Result<()> {
    match cmd {
        PvCommand::Get { names, request, verbose, json, timeout } => {
            let c = Client::new(client_config(&base, timeout)).await?;
            let mut failed = None;
            for n in &names {
                match c.get(n, &request).await {
                    Ok(d) => print_data(n, &d.desc, &d.value, verbose, json),
                    Err(e) => {
                        eprintln!("{n}: {e}");
                        failed = Some(e);
                    }
                }
                print_messages(&c);
            }
            failed.map_or(Ok(()), Err)
        }
        PvCommand::Put { name, values, json, timeout } => {
            let c = Client::new(client_config(&base, timeout)).await?;
            let single = match values.as_slice() {
                [only] if !only.contains('=') => Some(only.clone()),
                _ => None,
            };
            let pairs: Vec<(String, String)> = if let Some(only) = single {
                vec![("value".into(), only)]
            } else {
                values
                    .iter()
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => Ok((k.to_string(), v.to_string())),
                        None => Err(Error::Usage(format!("expected field=value, got {kv:?}"))),
                    })
                    .collect::<Result<_>>()?
            };
            if pairs.is_empty() {
                return Err(Error::Usage("nothing to put".into()));
            }
            let r = c.put(&name, &pairs).await;
            print_messages(&c);
            r?;
            let d = c.get(&name, "").await?;
            print_data(&name, &d.desc, &d.value, false, json);
            Ok(())
        }
        PvCommand::Monitor { names, request, count, pipeline, verbose, json, timeout } => {
            let c = Client::new(client_config(&base, timeout)).await?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, MonitorEvent)>(64);
            for n in names.clone() {
                let mut m = c.monitor(&n, &request, pipeline);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut seen = 0usize;
                    while let Some(ev) = m.next().await {
                        let is_data = matches!(ev, MonitorEvent::Data(_));
                        if tx.send((n.clone(), ev)).await.is_err() {
                            return;
                        }
                        if is_data {
                            seen += 1;
                            if count.is_some_and(|c| seen >= c) {
                                return;
                            }
                        }
                    }
                });
            }
            drop(tx);
            while let Some((n, ev)) = rx.recv().await {
                match ev {
                    MonitorEvent::Data(d) => print_data(&n, &d.desc, &d.value, verbose, json),
                    MonitorEvent::Disconnected => {
                        if json {
                            println!("{}", serde_json::json!({ "name": n, "event": "disconnected" }));
                        } else {
                            println!("{n} <Disconnect>");
                        }
                    }
                    MonitorEvent::Connected(_) => {}
                }
                print_messages(&c);
            }
            Ok(())
        }
        PvCommand::Info { names, json, timeout } => {
            let c = Client::new(client_config(&base, timeout)).await?;
            for n in &names {
                let ch = c.channel(n).await?;
                let d = ch.get_field("", c.config().timeout).await?;
                ch.close().await;
                if json {
                    println!("{}", serde_json::json!({ "name": n, "server": ch.conn.peer.to_string(), "type": d.to_string() }));
                } else {
                    println!("{n}\nServer: {}\nType:\n{d}", ch.conn.peer);
                }
            }
            Ok(())
        }
        PvCommand::Call { name, args, json, timeout } => {
            let c = Client::new(client_config(&base, timeout)).await?;
            let mut q = Vec::new();
            for kv in &args {
                let (k, v) = kv.split_once('=').ok_or_else(|| Error::Usage(format!("expected name=value, got {kv:?}")))?;
                q.push((k.to_string(), v.to_string()));
            }
            let qd: Vec<(&str, ScalarType)> = q.iter().map(|(k, _)| (k.as_str(), ScalarType::String)).collect();
            let mut b = Builder::new(crate::proto::nt::nt_uri(&qd))
                .with("scheme", Value::String("pva".into()))
                .with("path", Value::String(name.clone()));
            for (k, v) in &q {
                b.set(&format!("query.{k}"), Value::String(v.clone()));
            }
            let (d, v) = c.rpc(&name, b.build()).await?;
            print_data(&name, &d, &v, false, json);
            Ok(())
        }
        PvCommand::List { server, timeout, json } => match server {
            Some(s) => {
                let addr: SocketAddr = crate::config::parse_addr_list(&s, crate::config::DEFAULT_TCP_PORT)
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Usage(format!("bad server address {s:?}")))?;
                let c = Client::new(client_config(&base, timeout.max(1.0))).await?;
                let conn = c.connection(addr).await?;
                let (cid, sid, _w) = conn.create_channel("server", c.config().timeout).await?;
                let ch = crate::client::Channel::new(conn, sid, cid, "server");
                let b = Builder::new(crate::proto::nt::nt_uri(&[("op", ScalarType::String)]));
                let arg = b.with("path", Value::String("server".into())).with("query.op", Value::String("channels".into())).build();
                let (d, v) = ch.rpc(arg, c.config().timeout).await?;
                if json {
                    println!("{}", to_json(&d, &v));
                } else if let Some((Value::Array(crate::proto::ScalarArray::String(names)), _)) =
                    crate::proto::nt::path_ref(&d, &v, "value")
                {
                    for n in names {
                        println!("{n}");
                    }
                } else {
                    print!("{}", tree(&d, &v));
                }
                Ok(())
            }
            None => {
                let port = ClientConfig::from_env().udp_port;
                let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
                sock.set_reuse_address(true)?;
                sock.set_reuse_port(true)?;
                sock.set_nonblocking(true)?;
                sock.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
                let sock = tokio::net::UdpSocket::from_std(sock.into())?;
                let mut seen = std::collections::BTreeSet::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout.clamp(0.1, 3600.0));
                let mut buf = vec![0u8; 0x10000];
                while let Ok(Ok((n, src))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                    for (h, p) in split_datagram(buf.get(..n).unwrap_or(&[])).unwrap_or_default() {
                        if let Ok(Message::Beacon(b)) = decode_message(&h, p, &mut TypeCache::new(), Limits::default()) {
                            let ip = crate::proto::msg::ip_from16(&b.addr).unwrap_or(src.ip());
                            let guid: String = b.guid.iter().map(|x| format!("{x:02x}")).collect();
                            if seen.insert((guid.clone(), ip, b.port)) {
                                if json {
                                    println!("{}", serde_json::json!({ "guid": guid, "server": format!("{ip}:{}", b.port) }));
                                } else {
                                    println!("GUID 0x{guid} version 2: tcp@[ {ip}:{} ]", b.port);
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
        },
        PvCommand::Serve { tcp_port, udp_port, bind, redis, pvs, allow, access } => {
            let mut cfg = ServerConfig::from_env().with_allow(&allow)?.with_access_file(access.as_deref().unwrap_or(""))?;
            if let Some(p) = tcp_port {
                cfg.tcp_port = p;
            }
            if let Some(p) = udp_port {
                cfg.udp_port = p;
            }
            if let Some(b) = bind {
                cfg.bind = b;
            }
            let s = crate::server::demo::serve_demo(cfg).await?;
            println!("serving weft:demo:* on tcp {} udp {}", s.tcp_addr(), s.udp_addr());
            if let Some(path) = pvs {
                let text = std::fs::read_to_string(&path)?;
                let specs = crate::server::spec::parse_toml(&text)?;
                crate::server::spec::add_specs(s.provider(), &specs)?;
                println!("serving {} PVs from {}", specs.len(), path.display());
            }
            let _stateless = match redis {
                Some(r) => {
                    let addr = crate::config::parse_addr_list(&r, 6379)
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::Usage(format!("bad redis address {r:?}")))?;
                    let names = [crate::server::demo::SETPOINT, crate::server::demo::ENUM, crate::server::demo::TABLE]
                        .map(String::from);
                    let st = crate::stateless::Stateless::attach(
                        crate::stateless::StatelessConfig::new(addr),
                        s.provider(),
                        &names,
                        s.tcp_addr(),
                    )
                    .await?;
                    println!("stateless mode: redis {addr}, process id {}", st.config.process_id);
                    Some(st)
                }
                None => None,
            };
            s.run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            Ok(())
        }
    }
}
