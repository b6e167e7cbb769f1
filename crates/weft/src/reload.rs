//! Live reload (docs/security.md, "Reload"): SIGHUP and `weft config
//! reload` (`weft.config.reload`, admin) re-read the configuration, the
//! certificates and CAs of the TLS listeners (native and HTTPS), the auth
//! state (users, roles, tokens, keys), the per-identity limits and the log
//! filter. All or nothing: everything is read and checked before anything
//! changes, so a bad file leaves the old configuration in force and the
//! answer (and the log) says why. Keys that changed but only apply at
//! start are listed as needing a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weft_auth::Authorizer;
use weft_net::tls_reload::ReloadableTls;
use weft_net::AllowList;
use weft_service::config::Layered;

use crate::config::{ConfigEntry, NodeConfig};

type Loader = Box<dyn Fn() -> Result<Layered<NodeConfig>> + Send + Sync>;
/// Puts the new values of its keys in force; called only once the whole
/// reload was checked, so it cannot fail (values are clamped, not refused).
type Apply = Box<dyn Fn(&NodeConfig) + Send + Sync>;

static LOADER: OnceLock<Loader> = OnceLock::new();

/// How to read the configuration again (the same file, environment and
/// flags as at start); set by `main` before `serve::run`.
pub fn set_loader(f: Loader) {
    let _ = LOADER.set(f);
}

static CONFIG_PATH: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The `--config` file, if any: the file watch polls it.
pub fn set_config_path(p: Option<PathBuf>) {
    let _ = CONFIG_PATH.set(p);
}

/// Keys a reload applies, besides the allow-lists of running listeners
/// (`Reloader::add_allow`); any other key that changed needs a restart.
pub const RELOADABLE_KEYS: &[&str] = &["log", "auth.rate_per_s", "auth.bytes_per_s"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    /// False: nothing changed; `error` says why.
    pub ok: bool,
    pub error: Option<String>,
    /// TLS listeners whose certificates were re-read.
    pub certificates: usize,
    /// Whether the auth state file changed users, roles or credentials.
    pub auth_changed: bool,
    /// Configuration keys applied.
    pub applied: Vec<String>,
    /// Configuration keys that changed but apply only at a restart.
    pub restart_needed: Vec<String>,
}

pub struct Reloader {
    log_level: crate::logging::LogLevel,
    authz: Arc<Authorizer>,
    tls: Mutex<Vec<Arc<ReloadableTls>>>,
    /// The allow-lists of running listeners, by configuration key
    /// (`tcp.allow`...): a reload replaces their rules in place.
    allows: Mutex<Vec<(String, AllowList)>>,
    /// Parts that take some keys at run time (`add_applier`).
    appliers: Mutex<Vec<(&'static [&'static str], Apply)>>,
    running: Mutex<Vec<ConfigEntry>>,
    /// One reload at a time (SIGHUP and the endpoint may race).
    busy: tokio::sync::Mutex<()>,
    pub reloads: AtomicU64,
    pub failures: AtomicU64,
    /// Reloads the file watch started.
    pub watch_triggers: AtomicU64,
}

impl Reloader {
    pub fn new(log_level: crate::logging::LogLevel, authz: Arc<Authorizer>, running: Vec<ConfigEntry>) -> Arc<Self> {
        Arc::new(Self {
            log_level,
            authz,
            tls: Mutex::new(vec![]),
            allows: Mutex::new(vec![]),
            appliers: Mutex::new(vec![]),
            running: Mutex::new(running),
            busy: tokio::sync::Mutex::new(()),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            watch_triggers: AtomicU64::new(0),
        })
    }

    /// The configuration in force: the values at start, and the new values
    /// of the keys reloads applied (`weft config running`).
    pub fn running(&self) -> Vec<ConfigEntry> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Listeners whose certificates a reload re-reads.
    pub fn add_tls(&self, t: impl IntoIterator<Item = Arc<ReloadableTls>>) {
        self.tls.lock().unwrap_or_else(|p| p.into_inner()).extend(t);
    }

    /// A running listener's allow-list, reloaded from configuration key
    /// `key` (a list of strings, as `AllowList::parse` takes).
    pub fn add_allow(&self, key: &str, list: &AllowList) {
        self.allows.lock().unwrap_or_else(|p| p.into_inner()).push((key.to_owned(), list.clone()));
    }

    /// `keys` are applied at run time by `f` (given the whole new
    /// configuration) when one of them changed.
    pub fn add_applier(&self, keys: &'static [&'static str], f: impl Fn(&NodeConfig) + Send + Sync + 'static) {
        self.appliers.lock().unwrap_or_else(|p| p.into_inner()).push((keys, Box::new(f)));
    }

    pub fn gauges(&self) -> Vec<(String, serde_json::Value)> {
        let tls_reloads: u64 = self.tls.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|t| t.reloads.load(Ordering::Relaxed)).sum();
        vec![
            ("reload.count".into(), self.reloads.load(Ordering::Relaxed).into()),
            ("reload.failures".into(), self.failures.load(Ordering::Relaxed).into()),
            ("reload.tls_swaps".into(), tls_reloads.into()),
            ("reload.watch_triggers".into(), self.watch_triggers.load(Ordering::Relaxed).into()),
        ]
    }

    pub async fn reload(&self, why: &str) -> ReloadReport {
        let _one = self.busy.lock().await;
        let r = self.try_reload();
        match &r {
            Ok(rep) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                info!(trigger = why, certificates = rep.certificates, auth_changed = rep.auth_changed, applied = ?rep.applied, restart_needed = ?rep.restart_needed, "configuration reloaded");
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                warn!(trigger = why, error = %e, "reload refused: the old configuration stays in force");
            }
        }
        r.unwrap_or_else(|e| ReloadReport {
            ok: false,
            error: Some(format!("{e:#}")),
            certificates: 0,
            auth_changed: false,
            applied: vec![],
            restart_needed: vec![],
        })
    }

    fn try_reload(&self) -> Result<ReloadReport> {
        // 1. Read and check everything.
        let layered = match LOADER.get() {
            Some(load) => Some(load()?),
            None => None,
        };
        let (new_entries, cfg) = match &layered {
            Some(l) => (crate::config::entries(l), Some(l.value.clone())),
            None => (self.running.lock().unwrap_or_else(|p| p.into_inner()).clone(), None),
        };
        if let Some(c) = &cfg {
            tracing_subscriber::EnvFilter::try_new(&c.log).map_err(|e| anyhow::anyhow!("log: bad filter {:?}: {e}", c.log))?;
        }
        // Allow-lists: every running listener's new list, parsed.
        let allows = self.allows.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut new_allows = vec![];
        if cfg.is_some() {
            for (key, list) in &allows {
                let Some(e) = new_entries.iter().find(|e| &e.key == key) else { continue };
                let items: Vec<String> = serde_json::from_value(e.value.clone()).map_err(|err| anyhow::anyhow!("{key}: not a list of strings: {err}"))?;
                let parsed = AllowList::parse(&items).map_err(|err| anyhow::anyhow!("{key}: {err}"))?;
                new_allows.push((list.clone(), parsed));
            }
        }
        let tls = self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let prepared = tls.iter().map(|t| t.prepare()).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("certificates: {e}"))?;
        // 2. Apply: the auth state swaps whole or not at all (the last
        // check that can fail), then what cannot fail.
        let auth_changed = self.authz.reload().map_err(|e| anyhow::anyhow!("auth state: {e}"))?;
        for (t, p) in tls.iter().zip(prepared) {
            t.swap(p);
        }
        for (list, parsed) in &new_allows {
            if list != parsed {
                list.replace(parsed);
            }
        }
        let appliers = self.appliers.lock().unwrap_or_else(|p| p.into_inner());
        let mut applied = vec![];
        let mut restart_needed = vec![];
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &cfg {
            let old: std::collections::BTreeMap<&str, &serde_json::Value> = running.iter().map(|e| (e.key.as_str(), &e.value)).collect();
            for e in &new_entries {
                if old.get(e.key.as_str()) == Some(&&e.value) {
                    continue;
                }
                let applier = appliers.iter().any(|(keys, _)| keys.contains(&e.key.as_str()));
                if RELOADABLE_KEYS.contains(&e.key.as_str()) || applier || allows.iter().any(|(k, _)| k == &e.key) {
                    applied.push(e.key.clone());
                } else {
                    restart_needed.push(e.key.clone());
                }
            }
            if c.log != self.log_level.current() {
                // Checked above; a failure here would be the reload layer's.
                if let Err(e) = self.log_level.set(&c.log) {
                    warn!(error = %e, "log filter not changed");
                }
            }
            self.authz.set_limits(c.auth.rate_per_s, c.auth.bytes_per_s);
            for (keys, apply) in appliers.iter() {
                if keys.iter().any(|k| applied.iter().any(|a| a == k)) {
                    apply(c);
                }
            }
            // What runs now: the new values of applied keys, the old of the rest.
            let new_by_key: std::collections::BTreeMap<String, ConfigEntry> = new_entries.iter().map(|e| (e.key.clone(), e.clone())).collect();
            for e in running.iter_mut() {
                if applied.contains(&e.key)
                    && let Some(n) = new_by_key.get(&e.key)
                {
                    *e = n.clone();
                }
            }
        }
        Ok(ReloadReport { ok: true, error: None, certificates: tls.len(), auth_changed, applied, restart_needed })
    }
}

/// The native server's limits a reload applies (to connections accepted
/// after it; `Server::set_limits`, `Server::set_compression`).
pub const NET_LIMIT_KEYS: &[&str] = &["limits.max_connections", "limits.handshake_timeout_ms", "limits.idle_timeout_ms", "limits.compress_min_bytes"];

/// The applier of [`NET_LIMIT_KEYS`] for `server`, with the same
/// conversions as at start (serve.rs).
pub fn net_limits(server: weft_net::Server) -> impl Fn(&NodeConfig) + Send + Sync + 'static {
    move |c| {
        let l = &c.limits;
        server.set_limits(
            usize::try_from(l.max_connections).unwrap_or(usize::MAX),
            std::time::Duration::from_millis(l.handshake_timeout_ms.max(1)),
            (l.idle_timeout_ms > 0).then(|| std::time::Duration::from_millis(l.idle_timeout_ms)),
        );
        server.set_compression(usize::try_from(l.compress_min_bytes).ok().filter(|&m| m > 0));
    }
}

/// SIGHUP reloads (docs/security.md).
pub fn spawn_sighup(r: Arc<Reloader>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            r.reload("SIGHUP").await;
        }
    });
    Ok(())
}

/// What the watch compares of one file: size, mtime and inode (a file
/// replaced by a rename may keep its size and mtime); None: absent.
type FileSig = Option<(u64, std::time::SystemTime, u64)>;

fn file_sig(p: &std::path::Path) -> FileSig {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// The file watch (`reload.watch_interval_ms`): polls the configuration
/// file, the TLS listeners' certificate, key and CA files and `extra` (the
/// auth state file), and reloads, all or nothing as SIGHUP does, once a
/// change has held still for one more poll (a file being written in
/// several steps triggers one reload, after the last). Polling rather than
/// inotify: portable, no dependency, and editors that replace a file by a
/// rename are seen alike. Stops with `stop`.
pub fn spawn_watch(r: Arc<Reloader>, interval: Duration, extra: Vec<PathBuf>, stop: impl std::future::Future<Output = ()> + Send + 'static) {
    if interval.is_zero() {
        return;
    }
    let mut paths: Vec<PathBuf> = CONFIG_PATH.get().cloned().flatten().into_iter().collect();
    for t in r.tls.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let f = t.files();
        paths.extend([f.cert.clone(), f.key.clone()]);
        paths.extend(f.client_ca.clone());
    }
    paths.extend(extra);
    paths.sort();
    paths.dedup();
    info!(files = ?paths, interval_ms = interval.as_millis() as u64, "watching files for changes (reload on change)");
    tokio::spawn(async move {
        let mut stop = std::pin::pin!(stop);
        let sigs = |paths: &[PathBuf]| paths.iter().map(|p| file_sig(p)).collect::<Vec<_>>();
        let mut seen = sigs(&paths);
        let mut pending: Option<Vec<FileSig>> = None;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = sigs(&paths);
            if now == seen {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                // Changed since the last poll: wait until it holds still.
                pending = Some(now);
                continue;
            }
            let changed: Vec<String> = paths.iter().zip(seen.iter().zip(&now)).filter(|(_, (a, b))| a != b).map(|(p, _)| p.display().to_string()).collect();
            seen = now;
            pending = None;
            r.watch_triggers.fetch_add(1, Ordering::Relaxed);
            info!(files = ?changed, "watched files changed: reloading");
            r.reload("file watch").await;
        }
    });
}

/// `weft.config.reload` (admin on `cluster`, checked at dispatch).
pub fn register(service: &mut weft_service::Service, r: Arc<Reloader>) -> Result<(), weft_service::ServiceError> {
    service.endpoint("weft.config.reload", move |_: Option<()>| {
        let r = r.clone();
        async move { Ok(r.reload("weft.config.reload").await) }
    })?;
    Ok(())
}

/// `weft config reload`.
pub async fn cli(client: &crate::client_cmd::ClientArgs, out: crate::client_cmd::OutputArgs) -> Result<()> {
    let c = client.connect().await?;
    let rep: ReloadReport = c.call("weft.config.reload", &()).await?;
    c.shutdown().await;
    if out.json {
        crate::client_cmd::print_json(&rep)?;
    } else if rep.ok {
        println!(
            "reloaded: {} certificate set(s), auth state {}, applied [{}], restart needed for [{}]",
            rep.certificates,
            if rep.auth_changed { "changed" } else { "unchanged" },
            rep.applied.join(", "),
            rep.restart_needed.join(", ")
        );
    } else {
        anyhow::bail!("reload refused, the old configuration stays: {}", rep.error.unwrap_or_default());
    }
    Ok(())
}
