//! `weft serve`: lock the data directory, build the service, listen on every
//! enabled transport, and drain on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::info;
use weft_net::liveness::{spawn_heartbeats, LivenessTable};
use weft_net::{AllowList, Server, ServerConfig};
use weft_service::config::Layered;
use weft_service::lock::DataDirLock;
use weft_service::Service;

use crate::config::NodeConfig;

pub async fn run(layered: Layered<NodeConfig>) -> Result<()> {
    // `weft.config` answers with what this node runs with, not the defaults.
    let config_entries = crate::config::entries(&layered);
    let cfg = layered.value;
    // Traces (otel.endpoint set): the OpenTelemetry layer beside the log output.
    let (otel_layer, traces) = match crate::telemetry::layer(&cfg.otel, &cfg.node.name)? {
        Some((layer, traces)) => (Some(layer), Some(traces)),
        None => (None, None),
    };
    let log_level = crate::logging::init(&cfg.log, &cfg.log_format, otel_layer)?;
    // Without export (and without debug output) requests skip their span.
    weft_service::trace::set_exporting(traces.is_some());
    if traces.is_some() {
        info!(endpoint = %cfg.otel.endpoint, sample_ratio = cfg.otel.sample_ratio, "exporting traces (OTLP/HTTP)");
    }
    let nofile = raise_nofile_limit();
    // Install the handlers first: a signal that arrives while we are still
    // starting must drain and exit 0 like any other.
    let signals = Signals::install()?;
    let data_dir = std::path::PathBuf::from(&cfg.data_dir);
    // Before anything touches the directory: one process per data dir.
    let _lock = DataDirLock::acquire(&data_dir)?;
    let node_id = node_id(&cfg, &data_dir)?;
    // Users, roles and credentials; checks at every surface (docs/security.md).
    let authz = crate::auth_cmd::start(&cfg, &data_dir)?;

    let mut features = vec![];
    let transports = [
        (cfg.tcp.enabled, "tcp"),
        (cfg.udp.enabled, "udp"),
        (cfg.unix.enabled, "unix"),
        (cfg.tls.enabled, "tls"),
        (cfg.quic.enabled, "quic"),
    ];
    for (on, name) in transports {
        if on {
            features.push(name.to_owned());
        }
    }
    anyhow::ensure!(!features.is_empty(), "every transport is disabled: enable at least one of tcp, udp, unix, tls, quic");

    let log = open_log(&cfg, &data_dir, nofile).await?;
    features.push("log".into());
    // Key-value tables and the query API over them (docs/query.md).
    let tables = weft_table::Tables::open(&data_dir, cfg.tables.clone()).await.context("opening the tables")?;
    let query_exec = weft_api::Executor::new(tables.clone(), Some(log.clone()), cfg.query.clone());
    features.push("query".into());
    if cfg.http.enabled {
        features.push("http".into());
    }
    // Requests may carry the caller's trace context (docs/protocol.md).
    features.push(weft_wire::TRACE_CONTEXT_FEATURE.into());

    let liveness = Arc::new(LivenessTable::default());
    let mut service = Service::with_id(cfg.node.name.clone(), node_id.clone());
    register_node_endpoints(&mut service, liveness.clone(), Duration::from_millis(cfg.liveness.timeout_ms))?;
    log_level.register(&mut service)?;
    // SIGHUP and weft.config.reload (docs/security.md, "Reload").
    let reloader = crate::reload::Reloader::new(log_level.clone(), authz.clone(), config_entries.clone());
    crate::reload::register(&mut service, reloader.clone())?;
    if authz.enabled() {
        features.push("auth".into());
    }
    // What runs now: a reload updates the keys it applied.
    let running = reloader.clone();
    service.endpoint("weft.config", move |_: Option<()>| {
        let entries = running.running();
        async move { Ok(entries) }
    })?;
    // Cluster mode (cluster.node_id set): the metadata group and the cluster.* endpoints,
    // and records of replicated topics through the cluster's record plane (docs/cluster.md).
    let cluster = crate::cluster_cmd::start(
        &cfg.cluster,
        &data_dir,
        cfg.tcp.enabled.then(|| format!("tcp://{}", cfg.tcp.addr)),
        log.clone(),
        Duration::from_millis(cfg.limits.handshake_timeout_ms.max(1)),
    )
    .await?;
    let cluster_plane = cluster.as_ref().map(|node| crate::cluster_cmd::record_plane(node, log.clone(), &cfg.cluster));
    // The auth.* endpoints; in cluster mode the rules live in the metadata group (docs/security.md, "Cluster").
    if let Some(node) = &cluster {
        crate::auth_cluster::attach(node, authz.clone(), data_dir.clone());
    }
    crate::auth_cmd::register(&mut service, crate::auth_cmd::AuthAdmin::new(authz.clone(), cluster.clone().map(|n| (n, usize::try_from(cfg.cluster.max_frame_bytes / 2).unwrap_or(usize::MAX)))))?;
    // Cluster mode: the query API's tables live on raft groups (docs/query.md, "Tables: replicated").
    let cluster_tables = cluster.as_ref().map(|node| crate::cluster_cmd::tables::ClusterTables::new(node.clone()));
    if let Some(t) = cluster_tables.as_ref().filter(|_| cfg.grpc.enabled) {
        // Named in not_leader answers for query clients to follow.
        t.advertise_grpc(cfg.grpc.addr.clone());
    }
    let query_exec = match &cluster_tables {
        Some(t) => query_exec.with_replicated(t.clone()),
        None => query_exec,
    };
    let record_plane: weft_broker::plane::Plane = match &cluster_plane {
        Some(p) => p.clone(),
        None => weft_broker::plane::LocalPlane::shared(log.clone()),
    };
    weft_broker::native::register_with(&mut service, log.clone(), record_plane.clone())?;
    // FROM TOPIC through the plane: a cluster node answers for any replicated partition.
    let query_exec = query_exec.with_plane(record_plane.clone());
    weft_api::native::register(&mut service, query_exec.clone(), Some(authz.clone()))?;
    if let Some(t) = &cluster_tables {
        // Table statements forwarded by nodes without a replica (one hop).
        crate::cluster_cmd::tables::register_local(&mut service, t.clone(), query_exec.clone())?;
    }
    if let (Some(node), Some(plane)) = (&cluster, &cluster_plane) {
        crate::cluster_cmd::register(&mut service, node.clone(), plane.clone())?;
        features.push("cluster".into());
    }
    // Queued endpoints/senders, statistics and error keepers, and their
    // management endpoints (weft.queue.*, weft.sender.*, weft.stats.*, weft.errors.*).
    let queues = weft_queue::Manager::new(
        &data_dir.join("queues"),
        &service,
        weft_queue::ManagerOptions {
            gather_period: Duration::from_millis(cfg.stats.gather_period_ms.max(100)),
            history_len: cfg.stats.history_len.max(1) as usize,
        },
    )?;
    queues.set_default_max_uncommitted(usize::try_from(cfg.queues.max_uncommitted).unwrap_or(usize::MAX));
    queues.register(&mut service)?;
    if cfg.queues.produce_endpoint {
        crate::queued_produce::register(&queues, &mut service, record_plane.clone(), u32::try_from(cfg.queues.produce_max_retries).unwrap_or(u32::MAX))?;
    }
    // Prometheus: gauges read from the log and the queues at every scrape.
    crate::observe::install_log_gauges(log.clone());
    crate::observe::install_queue_gauges(queues.clone());
    let readiness = crate::observe::Readiness::new(log.clone());
    // `pva.pvs`: the served PVs and their values (weft top), filled once the pvAccess server runs.
    let pv_list: Arc<std::sync::RwLock<Option<crate::ui::PvSource>>> = Arc::default();
    if cfg.pva.enabled {
        let pvs = pv_list.clone();
        service.endpoint("pva.pvs", move |_: Option<()>| {
            let (list, total) = pvs.read().unwrap_or_else(|p| p.into_inner()).as_ref().map_or((vec![], 0), |f| f());
            async move { Ok(serde_json::json!({ "pvs": list, "total": total })) }
        })?;
    }
    let service = service.into_handler();
    let metered = weft_queue::MeteredHandler::for_service(service.clone(), queues.stats().clone());

    let server = Server::with_liveness(
        ServerConfig {
            server_id: node_id.clone(),
            server_name: cfg.node.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            features,
            max_frame_bytes: cfg.limits.max_frame_bytes as usize,
            max_in_flight_per_conn: cfg.limits.max_in_flight_per_conn as usize,
            allow_tcp: AllowList::parse(&cfg.tcp.allow).context("tcp.allow")?,
            allow_udp: AllowList::parse(&cfg.udp.allow).context("udp.allow")?,
            allow_unix: AllowList::parse(&cfg.unix.allow).context("unix.allow")?,
            allow_tls: AllowList::parse(&cfg.tls.allow).context("tls.allow")?,
            allow_quic: AllowList::parse(&cfg.quic.allow).context("quic.allow")?,
            handshake_timeout: Duration::from_millis(cfg.limits.handshake_timeout_ms.max(1)),
            idle_timeout: (cfg.limits.idle_timeout_ms > 0).then(|| Duration::from_millis(cfg.limits.idle_timeout_ms)),
            max_conn_buffer_bytes: usize::try_from(cfg.limits.max_conn_buffer_bytes).unwrap_or(usize::MAX),
            max_buffer_bytes: usize::try_from(cfg.limits.max_buffer_bytes).unwrap_or(usize::MAX),
            max_connections: usize::try_from(cfg.limits.max_connections).unwrap_or(usize::MAX),
            auth: Some(authz.clone()),
        },
        metered,
        liveness,
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let conn_threads = cfg.net.threads(cores);
    anyhow::ensure!(
        conn_threads <= crate::config::MAX_THREADS,
        "net.connection_threads is {conn_threads}, at most {} (0: connections on the main runtime)",
        crate::config::MAX_THREADS
    );
    // main() sized the runtime from the same key before it started (one
    // worker for a count it refuses, which stops the node here).
    cfg.net.runtime_threads(cores, std::env::var("TOKIO_WORKER_THREADS").ok().as_deref()).map_err(anyhow::Error::msg)?;
    server.set_connection_threads(conn_threads as usize).context("net.connection_threads")?;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    server.stats().runtime_threads.store(workers as u64, std::sync::atomic::Ordering::Relaxed);
    let svc = &service.0;
    // Cluster TLS: other nodes' forwarded requests arrive on the cluster
    // port (ALPN weft/1) and are served here as their node (docs/cluster.md).
    if let Some(node) = cluster.as_ref().filter(|n| n.tls_files().is_some()) {
        let (srv, authz) = (server.clone(), authz.clone());
        node.set_native_handoff(move |stream, id, remote| {
            let name = weft_cluster::tls::node_name(id);
            let who = authz.authenticate_node(&name);
            srv.serve_authenticated(stream, remote.to_string(), name, who);
        });
    }
    // Allow-lists are reloaded in place (docs/security.md, "Reload").
    let sc = server.config();
    for (key, list) in [("tcp.allow", &sc.allow_tcp), ("udp.allow", &sc.allow_udp), ("unix.allow", &sc.allow_unix), ("tls.allow", &sc.allow_tls), ("quic.allow", &sc.allow_quic)] {
        reloader.add_allow(key, list);
    }
    reloader.add_applier(crate::reload::NET_LIMIT_KEYS, crate::reload::net_limits(server.clone()));
    server.set_compression(usize::try_from(cfg.limits.compress_min_bytes).ok().filter(|&m| m > 0));
    let net_stats = server.stats();
    svc.stats().add_gauges(move || net_stats.snapshot().into_iter().map(|(k, v)| (k.to_owned(), v.into())).collect());
    let auth_stats = authz.clone();
    svc.stats().add_gauges(move || auth_stats.stats().snapshot().into_iter().chain(auth_stats.limit_stats()).map(|(k, v)| (k.to_owned(), v.into())).collect());
    let log_gauges = log.clone();
    svc.stats().add_gauges(move || log_gauges.gauges());
    let query_stats = query_exec.stats().clone();
    svc.stats().add_gauges(move || query_stats.gauges().into_iter().map(|(k, v)| (k, v.into())).collect());
    let table_gauges = tables.clone();
    svc.stats().add_gauges(move || table_gauges.gauges());
    if let Some(node) = cluster.clone() {
        svc.stats().add_gauges(move || node.gauges());
    }
    if let Some(node) = cluster.clone() {
        crate::observe::install_cluster_gauges(node);
    }
    // gRPC binds before the native listeners: a client that sees the node
    // answer a ping can reach the query API too.
    let grpc = if cfg.grpc.enabled {
        let tls = if cfg.grpc.tls {
            let t = cfg.tls_server().context("TLS settings (tls.*) for grpc.tls")?;
            Some(weft_api::server::GrpcTls {
                cert: t.cert,
                key: t.key,
                client_ca: (t.client_auth != weft_net::ClientAuth::None).then_some(t.client_ca).flatten(),
                client_auth_optional: t.client_auth == weft_net::ClientAuth::Optional,
            })
        } else {
            None
        };
        let scheme = if tls.is_some() { "grpcs" } else { "grpc" };
        let stop = server.stopping();
        // Auth on: the Query service authenticates every call and checks every statement (docs/security.md, "gRPC").
        let admit = grpc_admit(AllowList::parse(&cfg.grpc.allow).context("grpc.allow")?, &reloader, authz.clone(), svc);
        match weft_api::server::serve_admitting(&cfg.grpc.addr, query_exec.clone(), tls, Some(authz.clone()), Some(admit), async move { stop.cancelled().await }).await {
            Ok((addr, task)) => {
                svc.add_transport(format!("{scheme}://{addr}"));
                Some(task)
            }
            // The default port is best-effort (several nodes on one host, tests);
            // an address someone chose must bind.
            Err(e) if e.addr_in_use() && cfg.grpc.addr == crate::config::NodeConfig::default().grpc.addr => {
                tracing::warn!(addr = %cfg.grpc.addr, "the default gRPC port is taken: serving without gRPC (set grpc.addr or --grpc-addr)");
                None
            }
            Err(e) => return Err(e).context("starting the gRPC query API"),
        }
    } else {
        None
    };
    if cfg.tcp.enabled {
        let addr = server.bind_tcp(&cfg.tcp.addr).await?;
        svc.add_transport(format!("tcp://{addr}"));
    }
    if cfg.unix.enabled {
        let path = server.bind_unix(&cfg.unix_path()).await?;
        svc.add_transport(format!("unix://{}", path.display()));
    }
    if cfg.tls.enabled || cfg.quic.enabled {
        let tls = cfg.tls_server().context("TLS settings (tls.*)")?;
        if cfg.tls.enabled {
            let addr = server.bind_tls(&cfg.tls.addr, &tls).await?;
            svc.add_transport(format!("tls://{addr}"));
        }
        if cfg.quic.enabled {
            let addr = server.bind_quic(&cfg.quic.addr, &tls).await?;
            svc.add_transport(format!("quic://{addr}"));
        }
    }
    if cfg.udp.enabled {
        let sock = server.bind_udp(&cfg.udp.addr).await?;
        let addr = sock.local_addr()?;
        svc.add_transport(format!("udp://{addr}"));
        if !cfg.liveness.peers.is_empty() {
            spawn_heartbeats(
                sock,
                node_id.clone(),
                cfg.liveness.peers.clone(),
                Duration::from_millis(cfg.liveness.interval_ms.max(10)),
                server.stopping(),
            );
        }
    }
    // The dashboard (docs/dashboard.md): its routes join the gateway's.
    let ui = (cfg.http.enabled && cfg.ui.enabled).then(|| {
        let status: Option<crate::ui::ClusterSource> = cluster.clone().map(|node| {
            let f: crate::ui::ClusterSource = std::sync::Arc::new(move || {
                let node = node.clone();
                Box::pin(async move { node.status().await.map_err(|e| e.to_string()).and_then(|s| serde_json::to_value(s).map_err(|e| e.to_string())) })
            });
            f
        });
        let ui = crate::ui::Ui::new(
            log.clone(),
            queues.clone(),
            readiness.clone(),
            service.clone(),
            (query_exec.clone(), authz.clone()),
            status,
            crate::ui::UiOptions {
                max_clients: usize::try_from(cfg.ui.max_clients).unwrap_or(usize::MAX),
                period: Duration::from_millis(cfg.ui.period_ms.max(100)),
                max_watches: usize::try_from(cfg.ui.max_watches).unwrap_or(usize::MAX),
            },
        );
        let stop = server.stopping();
        ui.start(async move { stop.cancelled().await });
        let gauges = ui.clone();
        svc.stats().add_gauges(move || gauges.gauges());
        ui
    });
    reloader.add_tls(server.tls_configs());
    let http = if cfg.http.enabled {
        let stop = server.stopping();
        let https = if cfg.http.tls {
            let t = weft_net::tls_reload::ReloadableTls::new(cfg.tls_server().context("TLS settings (tls.*) for http.tls")?, weft_net::tls_reload::Alpn::Http1)?;
            reloader.add_tls([t.clone()]);
            Some(t)
        } else {
            None
        };
        let scheme = if https.is_some() { "https" } else { "http" };
        let http_stats = Arc::new(weft_broker::http_mw::HttpStats::default());
        let http_allow = AllowList::parse(&cfg.http.allow).context("http.allow")?;
        reloader.add_allow("http.allow", &http_allow);
        let opts = weft_broker::http::HttpOptions {
            allow: http_allow,
            max_body_bytes: usize::try_from(cfg.http.max_body_bytes).unwrap_or(usize::MAX),
            stats: http_stats.clone(),
            extra: Some(
                match &ui {
                    Some(ui) => crate::observe::routes(readiness.clone()).merge(crate::ui::routes(ui.clone())),
                    None => crate::observe::routes(readiness.clone()),
                }
                .merge(weft_api::http::routes(query_exec.clone(), Some(authz.clone()))),
            ),
            plane: Some(record_plane.clone()),
            auth: Some(Arc::new(weft_broker::http_auth::HttpAuth {
                authz: authz.clone(),
                metrics_open: cfg.auth.metrics_open,
                max_body_bytes: usize::try_from(cfg.http.max_body_bytes).unwrap_or(usize::MAX),
            })),
            tls: https,
        };
        let (addr, task) = weft_broker::http::serve_with(log.clone(), &cfg.http.addr, opts, async move { stop.cancelled().await })
            .await
            .with_context(|| format!("binding the HTTP gateway on {}", cfg.http.addr))?;
        svc.stats().add_gauges(move || http_stats.snapshot().into_iter().map(|(k, v)| (k, v.into())).collect());
        svc.add_transport(format!("{scheme}://{addr}"));
        Some(task)
    } else {
        None
    };
    let ekosis = if cfg.ekosis.tcp.is_some() || cfg.ekosis.udp.is_some() || cfg.ekosis.unix.is_some() {
        let eko_allow = AllowList::parse(&cfg.ekosis.allow).context("ekosis.allow")?;
        reloader.add_allow("ekosis.allow", &eko_allow);
        let eko = weft_ekosis::EkosisServer::new(
            &service,
            queues.clone(),
            weft_ekosis::EkosisConfig {
                app: weft_ekosis::AppInfo { name: cfg.node.name.clone(), instance: node_id.clone() },
                allow: eko_allow,
                ..weft_ekosis::EkosisConfig::default()
            },
        );
        for url in eko.bind_all(&cfg.ekosis).await.context("binding the ekosis listeners")? {
            svc.add_transport(url);
        }
        Some(eko)
    } else {
        None
    };
    let (pva, _bridges) = if cfg.pva.enabled { start_pva(&cfg, &record_plane, &authz, &reloader).await? } else { (None, vec![]) };
    if let Some(p) = &pva {
        svc.add_transport(format!("pva://{}", p.tcp_addr()));
        let read = p.stats_reader();
        svc.stats().add_gauges(move || read().into_iter().map(|(k, v)| (k.to_owned(), v.into())).collect());
        crate::observe::install_pva_counters(p.stats_reader());
        #[cfg(feature = "pva")]
        if let Some(ui) = &ui {
            ui.set_pvs(crate::ui::pv_source(p.provider().clone()));
        }
        #[cfg(feature = "pva")]
        {
            *pv_list.write().unwrap_or_else(|p| p.into_inner()) = Some(crate::ui::pv_source(p.provider().clone()));
        }
    }
    let reload_stats = reloader.clone();
    svc.stats().add_gauges(move || reload_stats.gauges());
    crate::reload::spawn_sighup(reloader.clone())?;
    // In cluster mode the rules come from the metadata group, not the file.
    let auth_state = cluster.is_none().then(|| weft_auth::store::state_path(&data_dir));
    let stop = server.stopping();
    crate::reload::spawn_watch(reloader, Duration::from_millis(cfg.reload.watch_interval_ms), auth_state.into_iter().collect(), async move { stop.cancelled().await });
    let stop = server.stopping();
    spawn_auto_compaction(&cfg.tables, query_exec.clone(), async move { stop.cancelled().await });
    readiness.listeners_bound();
    info!(node = %cfg.node.name, id = %node_id, data_dir = %data_dir.display(), transports = ?svc.info().transports, "weft node ready");

    signals.wait().await;
    info!(drain_timeout_ms = cfg.limits.drain_timeout_ms, "shutting down: draining requests in flight");
    let started = Instant::now();
    let drained = server.shutdown(Duration::from_millis(cfg.limits.drain_timeout_ms)).await;
    if let Some(task) = http {
        let _ = tokio::time::timeout(Duration::from_millis(cfg.limits.drain_timeout_ms), task).await;
    }
    if let Some(task) = grpc {
        let _ = tokio::time::timeout(Duration::from_millis(cfg.limits.drain_timeout_ms), task).await;
    }
    if let Some(p) = pva {
        p.shutdown().await;
    }
    if let Some(e) = ekosis {
        e.shutdown(Duration::from_millis(cfg.limits.drain_timeout_ms)).await;
    }
    if let Some(node) = &cluster {
        crate::cluster_cmd::stop(node).await;
    }
    // Everything acknowledged is already durable per the fsync policy; this
    // syncs what `interval`/`never` left in the page cache.
    if let Err(e) = log.close().await {
        tracing::error!(error = %e, "closing the log");
    }
    // The spans of the drained requests are still in the batch: send them.
    if let Some(t) = traces {
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    if drained {
        info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained; bye");
    } else {
        tracing::warn!("drain timeout reached with requests still running; exiting anyway");
    }
    Ok(())
}

/// `grpc.allow`, reloadable: a refused client is closed at accept (before
/// TLS and HTTP/2), logged, counted (`grpc.refused`, and the refused
/// connections metric with transport `grpc`) and audited. Open HTTP/2
/// connections are kept by a reload (docs/security.md, "Reload").
fn grpc_admit(allow: AllowList, reloader: &crate::reload::Reloader, authz: Arc<weft_auth::Authorizer>, svc: &weft_service::Service) -> weft_api::server::Admit {
    reloader.add_allow("grpc.allow", &allow);
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = refused.clone();
    svc.stats().add_gauges(move || vec![("grpc.refused".to_owned(), count.load(std::sync::atomic::Ordering::Relaxed).into())]);
    Arc::new(move |peer: std::net::SocketAddr| {
        if allow.allows_ip(peer.ip()) {
            return true;
        }
        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        weft_metrics::get().connections_refused.get_or_create(&weft_metrics::l2("transport", "grpc", "reason", "allow_list")).inc();
        tracing::warn!(%peer, "gRPC client refused by the allow-list (grpc.allow)");
        authz.record_event(weft_auth::AuditEvent {
            time_ms: weft_auth::now_ms(),
            surface: "grpc".into(),
            peer: peer.to_string(),
            resource: "grpc".into(),
            action: "connect".into(),
            outcome: "denied".into(),
            message: "not on the listener's allow-list".into(),
            ..Default::default()
        });
        false
    })
}

/// Built without pvAccess: `pva.enabled` is a configuration error.
#[cfg(not(feature = "pva"))]
async fn start_pva(_cfg: &NodeConfig, _plane: &weft_broker::plane::Plane, _authz: &Arc<weft_auth::Authorizer>, _reloader: &crate::reload::Reloader) -> Result<(Option<NoPva>, Vec<()>)> {
    anyhow::bail!("pva.enabled is set, but this weft was built without pvAccess (cargo feature `pva`)")
}

/// Stands in for the pvAccess server when the feature is off (never built).
#[cfg(not(feature = "pva"))]
enum NoPva {}

#[cfg(not(feature = "pva"))]
impl NoPva {
    fn tcp_addr(&self) -> std::net::SocketAddr {
        match *self {}
    }
    fn stats_reader(&self) -> Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync> {
        match *self {}
    }
    async fn shutdown(self) {}
}

#[cfg(feature = "pva")]
async fn start_pva(
    cfg: &NodeConfig,
    plane: &weft_broker::plane::Plane,
    authz: &Arc<weft_auth::Authorizer>,
    reloader: &crate::reload::Reloader,
) -> Result<(Option<weft_pva::server::Server>, Vec<weft_bridge::PvTopicBridge>)> {
    let mut pva_cfg = weft_pva::config::ServerConfig::from_env()
        .with_allow(&cfg.pva.allow)
        .context("pva.allow")?
        .with_access_file(&cfg.pva.access_file)
        .context("pva.access_file")?;
    pva_cfg.send_queue_bytes = usize::try_from(cfg.pva.send_queue_bytes).unwrap_or(usize::MAX);
    // New connections and searches (open pvAccess connections are kept).
    reloader.add_allow("pva.allow", &pva_cfg.allow);
    // Auth on: puts and gets also need the node's roles (docs/security.md, "pvAccess").
    pva_cfg.access_hook = crate::auth_cmd::pva_hook(authz, &cfg.auth);
    let server = if cfg.pva.demo {
        weft_pva::serve_demo(pva_cfg).await
    } else {
        weft_pva::server::Server::start(pva_cfg, weft_pva::server::Provider::new()).await
    }
    .context("starting the pvAccess server")?;
    if !cfg.pva.pvs_file.is_empty() {
        let text = std::fs::read_to_string(&cfg.pva.pvs_file).with_context(|| format!("reading pva.pvs_file {}", cfg.pva.pvs_file))?;
        let specs = weft_pva::server::spec::parse_toml(&text).with_context(|| format!("parsing {}", cfg.pva.pvs_file))?;
        weft_pva::server::spec::add_specs(server.provider(), &specs).context("serving the PVs of pva.pvs_file")?;
    }
    let mut bridges = vec![];
    for spec in &cfg.pva.bridges {
        bridges.push(weft_bridge::attach(plane, server.provider(), spec).await.with_context(|| format!("bridging PV {}", spec.pv))?);
    }
    info!(tcp = %server.tcp_addr(), udp = %server.udp_addr(), bridges = bridges.len(), demo = cfg.pva.demo, "pvAccess server ready");
    Ok((Some(server), bridges))
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard limit: every
/// connection and open segment file takes a descriptor, and the common soft
/// default (1024) is far below what the hard limit allows. Returns the soft
/// limit in force, if it could be read.
fn raise_nofile_limit() -> Option<u64> {
    let (before, hard) = match rlimit::Resource::NOFILE.get() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open-file limit");
            return None;
        }
    };
    match rlimit::increase_nofile_limit(hard) {
        Ok(soft) => {
            info!(soft, hard, was = before, "open-file limit (RLIMIT_NOFILE)");
            Some(soft)
        }
        Err(e) => {
            tracing::warn!(error = %e, soft = before, hard, "could not raise the open-file limit");
            Some(before)
        }
    }
}

async fn open_log(cfg: &NodeConfig, data_dir: &std::path::Path, nofile: Option<u64>) -> Result<weft_log::Log> {
    let dir = data_dir.join("log");
    let mut store = cfg.log_store.clone();
    // Leave half the descriptors to connections and everything else.
    let cap = nofile.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX).max(16));
    if store.max_open_files > cap {
        tracing::warn!(configured = store.max_open_files, used = cap, "log_store.max_open_files lowered to half the open-file limit");
        store.max_open_files = cap;
    }
    let log = weft_log::Log::open(&dir, store).await.with_context(|| format!("opening the log in {}", dir.display()))?;
    info!(dir = %dir.display(), fsync = %cfg.log_store.fsync, topics = log.list_topics().len(), "log open");
    Ok(log)
}

fn register_node_endpoints(service: &mut Service, liveness: Arc<LivenessTable>, timeout: Duration) -> Result<()> {
    service.endpoint("weft.liveness", move |_: Option<()>| {
        let liveness = liveness.clone();
        async move { Ok(liveness.snapshot(Instant::now(), timeout)) }
    })?;
    Ok(())
}

/// The configured id, else HOSTNAME (a pod name), else a UUID generated once
/// and kept in the data directory so restarts keep their identity.
fn node_id(cfg: &NodeConfig, data_dir: &std::path::Path) -> Result<String> {
    if !cfg.node.id.is_empty() {
        return Ok(cfg.node.id.clone());
    }
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.trim().is_empty()
    {
        return Ok(h.trim().to_owned());
    }
    let path = data_dir.join("node_id");
    if let Ok(s) = std::fs::read_to_string(&path)
        && !s.trim().is_empty()
    {
        return Ok(s.trim().to_owned());
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM"),
            _ = self.int.recv() => info!("SIGINT"),
        }
    }
}

/// Automatic compaction of table history (`tables.auto_compact_*`,
/// docs/query.md "Automatic compaction"): a pass over every table each
/// interval until the node stops. Off (no task) when neither rule is set.
fn spawn_auto_compaction(tables: &weft_table::TablesConfig, exec: weft_api::Executor, stop: impl std::future::Future<Output = ()> + Send + 'static) {
    let retention = weft_api::autocompact::Retention::from_config(tables);
    if !retention.enabled() {
        return;
    }
    let every = Duration::from_millis(tables.auto_compact_interval_ms.max(1));
    info!(revisions = retention.revisions, age_ms = retention.age_ms, interval_ms = every.as_millis() as u64, "tables: automatic compaction on");
    tokio::spawn(async move {
        let mut compactor = weft_api::autocompact::Compactor::new(retention);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Ages are measured on the monotonic clock, from this task's start
        // (the samples live in memory: a restart starts them again).
        let start = Instant::now();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let now_ms = start.elapsed().as_millis() as u64;
            exec.auto_compact(&mut compactor, now_ms).await;
        }
    });
}
