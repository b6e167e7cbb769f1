//! tokio pvAccess server on top of [`crate::proto`]: TCP connections,
//! UDP search answers and beacons.

pub mod access;
mod conn;
pub mod demo;
mod pv;
pub mod spec;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use access::{Access, AccessHook, AccessHookRef, AccessRules};
pub use pv::{ChannelHook, Entry, PostObserver, ProcessFuture, ProcessHandler, Provider, PutHandler, RpcHandler, SharedPv, Subscription, Update, now_stamp};

use crate::config::ServerConfig;
use crate::error::Result;

/// Bounds on `pva.send_queue_bytes` (the semaphore counts in u32).
pub const SEND_QUEUE_BYTES_MIN: usize = 64 * 1024;
pub const SEND_QUEUE_BYTES_MAX: usize = 1 << 30;

/// Counters a running server exposes (for tests and metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub connections_closed_on_error: AtomicU64,
    pub searches_answered: AtomicU64,
    /// TCP connections refused by the allow-list (`pva.allow`).
    pub connections_refused: AtomicU64,
    /// UDP searches ignored because the sender is not on the allow-list.
    pub searches_refused: AtomicU64,
    /// Channel creations and operations refused by the access rules.
    pub access_denied: AtomicU64,
    /// Times a message had to wait for room in a connection's send queue.
    pub send_queue_waits: AtomicU64,
    /// Largest number of bytes one connection's send queue has held.
    pub send_queue_peak_bytes: AtomicU64,
    /// Connections closed because the client stopped reading.
    pub send_stalled_closed: AtomicU64,
    /// MARK_TOTAL_BYTES_SENT sent / ACK_TOTAL_BYTES_RECEIVED received.
    pub marks_sent: AtomicU64,
    pub acks_received: AtomicU64,
    /// Times the writer waited for a client's ack (flow-control window full).
    pub flow_control_waits: AtomicU64,
    /// Executions (put, process) and monitors stopped by CANCEL_REQUEST.
    pub requests_cancelled: AtomicU64,
    /// Channels open now, over every connection (a gauge).
    pub channels_open: AtomicU64,
    /// Monitors open now (created and not yet destroyed), over every connection (a gauge).
    pub monitors_open: AtomicU64,
    /// Monitor updates sent to clients (the first value of each monitor included).
    pub monitor_updates: AtomicU64,
    /// Monitors ended because the access hook no longer grants read (a
    /// revoked role): the update was not sent, the client got an error.
    pub monitors_revoked: AtomicU64,
}

impl Stats {
    /// Every counter with its `pva.` name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("pva.connections", r(&self.connections)),
            ("pva.connections_closed_on_error", r(&self.connections_closed_on_error)),
            ("pva.connections_refused", r(&self.connections_refused)),
            ("pva.searches_answered", r(&self.searches_answered)),
            ("pva.searches_refused", r(&self.searches_refused)),
            ("pva.access_denied", r(&self.access_denied)),
            ("pva.send_queue_waits", r(&self.send_queue_waits)),
            ("pva.send_queue_peak_bytes", r(&self.send_queue_peak_bytes)),
            ("pva.send_stalled_closed", r(&self.send_stalled_closed)),
            ("pva.marks_sent", r(&self.marks_sent)),
            ("pva.acks_received", r(&self.acks_received)),
            ("pva.flow_control_waits", r(&self.flow_control_waits)),
            ("pva.requests_cancelled", r(&self.requests_cancelled)),
            ("pva.channels_open", r(&self.channels_open)),
            ("pva.monitors_open", r(&self.monitors_open)),
            ("pva.monitor_updates", r(&self.monitor_updates)),
            ("pva.monitors_revoked", r(&self.monitors_revoked)),
        ]
    }
}

/// Shared server state handed to connection tasks.
pub(crate) struct Shared {
    pub provider: Provider,
    pub guid: [u8; 12],
    pub tcp_addr: SocketAddr,
    pub stats: Stats,
    pub idle_timeout: std::time::Duration,
    pub allow: weft_net::AllowList,
    pub access: Arc<access::AccessRules>,
    pub access_hook: Option<AccessHookRef>,
    pub send_queue_bytes: usize,
}

/// A running server; dropping it does not stop it, call [`Server::shutdown`].
pub struct Server {
    shared: Arc<Shared>,
    udp_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Helper tasks (e.g. demo tickers) aborted on shutdown.
    extra: Vec<JoinHandle<()>>,
}

impl Server {
    /// Bind and start serving `provider`.
    pub async fn start(config: ServerConfig, provider: Provider) -> Result<Server> {
        let listener = match TcpListener::bind(SocketAddr::new(config.bind, config.tcp_port)).await {
            Ok(l) => l,
            Err(e) if config.tcp_port_fallback && config.tcp_port != 0 => {
                warn!(port = config.tcp_port, error = %e, "TCP port busy, using a random port");
                TcpListener::bind(SocketAddr::new(config.bind, 0)).await?
            }
            Err(e) => return Err(e.into()),
        };
        let tcp_addr = listener.local_addr()?;
        let guid: [u8; 12] = rand::random();
        let shared = Arc::new(Shared {
            provider,
            guid,
            tcp_addr,
            stats: Stats::default(),
            idle_timeout: config.idle_timeout,
            allow: config.allow.clone(),
            access: config.access.clone(),
            access_hook: config.access_hook.clone(),
            send_queue_bytes: config.send_queue_bytes.clamp(SEND_QUEUE_BYTES_MIN, SEND_QUEUE_BYTES_MAX),
        });
        let (stop, stop_rx) = watch::channel(false);
        let udp = udp::bind(&config)?;
        let udp_addr = udp.local_addr()?;
        info!(%tcp_addr, %udp_addr, "pvAccess server listening");
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(accept_loop(listener, shared.clone(), stop_rx.clone())));
        // Only a server on loopback or all interfaces can meet its neighbours on the loopback group.
        let forward = if config.bind.is_loopback() || config.bind.is_unspecified() {
            udp::bind_forward(udp_addr.port())
        } else {
            None
        };
        let udp = Arc::new(udp);
        tasks.push(tokio::spawn(udp::search_loop(udp.clone(), forward, shared.clone(), config.bind, stop_rx.clone())));
        if !config.beacon_addrs.is_empty() {
            tasks.push(tokio::spawn(udp::beacon_loop(udp, shared.clone(), config.clone(), stop_rx)));
        }
        Ok(Server { shared, udp_addr, stop, tasks, extra: vec![] })
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.shared.tcp_addr
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn provider(&self) -> &Provider {
        &self.shared.provider
    }

    /// Tie a helper task's lifetime to the server.
    pub fn attach(&mut self, t: JoinHandle<()>) {
        self.extra.push(t);
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// A function reading the counters as `pva.*` names, for a node's
    /// statistics (it keeps the server's shared state alive, not its tasks).
    pub fn stats_reader(&self) -> Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync> {
        let shared = self.shared.clone();
        Box::new(move || shared.stats.snapshot())
    }

    /// Stop accepting, close every connection, and wait for the tasks.
    pub async fn shutdown(self) {
        for t in &self.extra {
            t.abort();
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Run until the stop future completes.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) {
        stop.await;
        self.shutdown().await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) if !shared.allow.allows_ip(peer.ip()) => {
                    // Refused before a byte is read; dropping the socket closes it.
                    shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, "pvAccess client refused by the allow-list (pva.allow)");
                    drop(sock);
                }
                Ok((sock, peer)) => {
                    debug!(%peer, "client connected");
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.set_nodelay(true);
                    conns.spawn(conn::serve(sock, peer, shared.clone(), stop.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Connections see `stop` themselves and close cleanly; abort stragglers.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.shutdown().await;
}
