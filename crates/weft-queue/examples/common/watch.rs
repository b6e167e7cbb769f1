//! The error keeper example's service (used by `examples/downstream_watch.rs`
//! and by `crates/weft/tests/error_keeper.rs`): it depends on a downstream
//! Weft service, checks it every `interval` with `weft.ping`, raises the
//! error state `DOWNSTREAM_DOWN` while it does not answer and clears it when
//! it answers again. Operators see the state in `weft errors` and in
//! `weft stats` (`error.DOWNSTREAM_DOWN`, `errors.active`).
#![allow(dead_code)] // each user takes part of it

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_queue::{Manager, ManagerOptions, MeteredHandler};
use weft_service::Service;

pub const ERROR_ID: &str = "DOWNSTREAM_DOWN";

/// What `watch.status` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchStatus {
    pub downstream: String,
    pub up: bool,
    pub checks: u64,
    pub failures: u64,
}

#[derive(Debug, Deserialize)]
struct Empty {}

pub struct Watcher {
    pub server: Server,
    pub addr: SocketAddr,
    pub manager: Arc<Manager>,
    checker: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub async fn shutdown(self) {
        self.checker.abort();
        self.server.shutdown(Duration::from_secs(2)).await;
        self.manager.shutdown(Duration::from_secs(2)).await;
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Serve the watcher on `bind` (native TCP) with its keepers under `dir`.
pub async fn start(bind: &str, dir: &Path, downstream: Endpoint, interval: Duration) -> Res<Watcher> {
    let mut svc = Service::new("downstream-watch");
    let manager = Manager::new(dir, &svc, ManagerOptions { gather_period: Duration::from_secs(60), history_len: 6 })?;
    manager.register(&mut svc)?;
    let up = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let (u, c, f, name) = (up.clone(), checks.clone(), failures.clone(), downstream.to_string());
    svc.endpoint("watch.status", move |_: Option<Empty>| {
        let s = WatchStatus { downstream: name.clone(), up: u.load(Ordering::SeqCst), checks: c.load(Ordering::SeqCst), failures: f.load(Ordering::SeqCst) };
        async move { Ok(s) }
    })?;
    let handler = MeteredHandler::new(svc.into_handler(), manager.stats().clone());
    let server = Server::new(ServerConfig { server_name: "downstream-watch".into(), ..ServerConfig::default() }, handler);
    let addr = server.bind_tcp(bind).await?;
    let errors = manager.errors().clone();
    let checker = tokio::spawn(async move {
        let config = ClientConfig {
            client_name: "downstream-watch".into(),
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        };
        let mut client: Option<Client> = None;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            checks.fetch_add(1, Ordering::SeqCst);
            if client.is_none() {
                client = Client::connect(downstream.clone(), config.clone()).await.ok();
            }
            let result = match &client {
                Some(c) => c.call_json("weft.ping", &serde_json::Value::Null).await.map(|_| ()).map_err(|e| e.to_string()),
                None => Err("cannot connect".to_owned()),
            };
            match result {
                Ok(()) => {
                    if !up.swap(true, Ordering::SeqCst) {
                        tracing::info!(downstream = %downstream, "downstream is up: clearing the error state");
                    }
                    // Resolved: clear every raise of the state.
                    errors.clear(ERROR_ID, 0);
                }
                Err(e) => {
                    failures.fetch_add(1, Ordering::SeqCst);
                    if up.swap(false, Ordering::SeqCst) {
                        tracing::warn!(downstream = %downstream, error = %e, "downstream is down: raising the error state");
                    }
                    // Each failed check is one raise: the count says for how
                    // many checks it has been down.
                    errors.raise(ERROR_ID, &format!("{downstream} does not answer weft.ping: {e}"));
                    // Reconnect from scratch on the next check.
                    if let Some(c) = client.take() {
                        c.close();
                    }
                }
            }
        }
    });
    Ok(Watcher { server, addr, manager, checker })
}
