//! Auth on a node (docs/security.md): opening the authorizer, the audit
//! log, the `auth.*` admin endpoints, and the `weft auth ...` commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weft_auth::{AuditEvent, AuthError, AuthOp, AuthOptions, Authorizer, CredKind, Grant, Identity};
use weft_net::PeerInfo;
use weft_service::{EndpointOptions, Service, ServiceError};
use weft_wire::{ErrorBody, ErrorCode};

use crate::client_cmd::{print_json, table, ClientArgs, OutputArgs};
use crate::config::NodeConfig;

/// Open the node's authorizer, hook up the audit log, and warn loudly when
/// auth is off on a listener beyond loopback.
pub fn start(cfg: &NodeConfig, data_dir: &Path) -> Result<Arc<Authorizer>> {
    let (authz, written) = Authorizer::open(&AuthOptions { enabled: cfg.auth.enabled, data_dir: Some(data_dir.to_owned()), replicated: cfg.cluster.node_id != 0 })?;
    if let Some(p) = written {
        warn!(path = %p.display(), "auth on for the first time: an admin token was written; keep it safe (weft --token $(cat {}) ...)", p.display());
    }
    if !cfg.auth.enabled {
        let open: Vec<&str> = [
            (cfg.tcp.enabled, cfg.tcp.addr.as_str()),
            (cfg.udp.enabled, cfg.udp.addr.as_str()),
            (cfg.tls.enabled, cfg.tls.addr.as_str()),
            (cfg.quic.enabled, cfg.quic.addr.as_str()),
            (cfg.http.enabled, cfg.http.addr.as_str()),
        ]
        .into_iter()
        .filter(|(on, addr)| *on && !is_loopback(addr))
        .map(|(_, a)| a)
        .collect();
        if !open.is_empty() {
            warn!(listeners = ?open, "AUTH IS OFF and listeners are bound beyond loopback: anyone the allow-lists admit can read, write and administer this node; start with --auth (docs/security.md)");
        }
    }
    authz.set_limits(cfg.auth.rate_per_s, cfg.auth.bytes_per_s);
    let audit = AuditLog::new(data_dir.join("audit.log"), cfg.auth.audit_max_bytes, cfg.auth.audit_files);
    authz.set_audit_hook(move |ev| audit.write(ev));
    if cfg.auth.enabled {
        info!(users = authz.state().users.len(), roles = authz.state().roles.len(), "auth on: deny by default");
    }
    Ok(Arc::new(authz))
}

/// pvAccess operations checked against the node's roles, beside the
/// EPICS-style access rules (docs/security.md, "pvAccess"); None with auth
/// off.
#[cfg(feature = "pva")]
pub fn pva_hook(authz: &Arc<Authorizer>, conf: &crate::config::AuthConf) -> Option<weft_pva::server::AccessHookRef> {
    struct Roles {
        authz: Arc<Authorizer>,
        policy: weft_auth::PvaPolicy,
    }
    impl weft_pva::server::AccessHook for Roles {
        fn check(&self, pv: &str, user: Option<&str>, peer: std::net::SocketAddr, need: weft_pva::server::Access) -> Result<(), String> {
            let action = match need {
                weft_pva::server::Access::Write => weft_auth::Action::Write,
                _ => weft_auth::Action::Read,
            };
            self.authz.authorize_pv(&self.policy, user, &peer.to_string(), action, pv).map_err(|d| d.to_string())
        }
    }
    if !authz.enabled() {
        return None;
    }
    let policy = weft_auth::PvaPolicy { trust_ca_user: conf.pva_trust_ca_user, anonymous_role: Some(conf.pva_anonymous_role.clone()).filter(|r| !r.is_empty()) };
    Some(weft_pva::server::AccessHookRef(Arc::new(Roles { authz: authz.clone(), policy })))
}

fn is_loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => addr.starts_with("localhost:"),
    }
}

/// `DATA_DIR/audit.log`: one JSON object per line, rotated past
/// `max_bytes` to `audit.log.1` ... `audit.log.N` (oldest dropped). Every
/// event is also counted in `weft_auth_events_total{surface, outcome}`.
struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    files: u64,
    file: Mutex<Option<(std::fs::File, u64)>>,
}

impl AuditLog {
    fn new(path: PathBuf, max_bytes: u64, files: u64) -> Self {
        Self { path, max_bytes: max_bytes.max(4096), files, file: Mutex::new(None) }
    }

    fn write(&self, ev: &AuditEvent) {
        weft_metrics::get().auth_events.get_or_create(&weft_metrics::l2("surface", ev.surface.clone(), "outcome", ev.outcome.clone())).inc();
        let Ok(mut line) = serde_json::to_vec(ev) else { return };
        line.push(b'\n');
        let mut slot = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.append(&mut slot, &line) {
            warn!(path = %self.path.display(), error = %e, "audit log write failed");
            *slot = None;
        }
    }

    fn append(&self, slot: &mut Option<(std::fs::File, u64)>, line: &[u8]) -> std::io::Result<()> {
        if slot.as_ref().is_some_and(|(_, size)| size + line.len() as u64 > self.max_bytes) {
            *slot = None;
            for i in (1..self.files.max(1)).rev() {
                let _ = std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
            }
            if self.files > 0 {
                std::fs::rename(&self.path, rotated(&self.path, 1))?;
            } else {
                std::fs::remove_file(&self.path)?;
            }
        }
        if slot.is_none() {
            let mut opts = std::fs::OpenOptions::new();
            opts.append(true).create(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let f = opts.open(&self.path)?;
            let size = f.metadata()?.len();
            *slot = Some((f, size));
        }
        if let Some((f, size)) = slot {
            f.write_all(line)?;
            *size += line.len() as u64;
        }
        Ok(())
    }
}

fn rotated(path: &Path, i: u64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

// ---- endpoints ----

pub(crate) fn wire(e: AuthError) -> ServiceError {
    let code = match &e {
        AuthError::NotFound(_) => ErrorCode::NotFound,
        AuthError::Exists(_) => ErrorCode::Conflict,
        AuthError::Invalid(_) | AuthError::Parse(_) => ErrorCode::Validation,
        AuthError::Denied(d) => match d.kind {
            weft_auth::DeniedKind::Unauthenticated => ErrorCode::Unauthenticated,
            weft_auth::DeniedKind::Forbidden => ErrorCode::Forbidden,
        },
        _ => ErrorCode::Unavailable,
    };
    ServiceError::Wire(ErrorBody::new(code, e.to_string()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserReq {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameReq {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignReq {
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleReq {
    pub name: String,
    /// `ACTION:KIND:PATTERN`.
    #[serde(default)]
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantReq {
    pub role: String,
    pub grant: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredReq {
    pub user: String,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdReq {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub roles: Vec<String>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleInfo {
    pub name: String,
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredInfo {
    pub id: String,
    pub user: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub description: String,
    /// Only in the answer to create: shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub auth_enabled: bool,
    pub user: String,
    pub via: String,
    pub credential_id: Option<String>,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
}

fn grants(v: &[String]) -> Result<Vec<Grant>, ServiceError> {
    v.iter().map(|g| g.parse::<Grant>().map_err(wire)).collect()
}

fn creds(m: &std::collections::BTreeMap<String, weft_auth::CredRecord>) -> Vec<CredInfo> {
    m.iter()
        .map(|(id, r)| CredInfo {
            id: id.clone(),
            user: r.user.clone(),
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            description: r.description.clone(),
            secret: None,
        })
        .collect()
}

/// Who made a change: the audit line's `actor` and the node's log line.
fn actor(peer: &PeerInfo) -> String {
    peer.identity.as_ref().map(Identity::describe).unwrap_or_else(|| "anonymous (auth off)".into())
}

/// Where the `auth.*` endpoints put a change: this node's rules (and state
/// file), or in cluster mode the metadata group (docs/security.md, "Cluster").
#[derive(Clone)]
pub struct AuthAdmin {
    authz: Arc<Authorizer>,
    /// Cluster mode: the node, and the largest rules a change may propose
    /// (half of `cluster.max_frame_bytes`: the entry must fit a frame).
    cluster: Option<(weft_cluster::ClusterNode, usize)>,
}

impl AuthAdmin {
    pub fn new(authz: Arc<Authorizer>, cluster: Option<(weft_cluster::ClusterNode, usize)>) -> Self {
        Self { authz, cluster }
    }

    /// Apply `op` for the caller `peer`; the audit line names them.
    async fn commit(&self, op: AuthOp, peer: &PeerInfo) -> Result<(), ServiceError> {
        let who = actor(peer);
        match &self.cluster {
            None => self.authz.apply(&op, &who, &peer.addr).map_err(wire),
            Some((node, max_bytes)) => crate::auth_cluster::commit(node, &self.authz, &op, &who, &peer.addr, *max_bytes).await,
        }
    }
}

/// The `auth.*` endpoints (admin on `cluster`, checked at dispatch; only
/// `auth.whoami` is open to any identity).
pub fn register(service: &mut Service, admin: AuthAdmin) -> Result<(), ServiceError> {
    let o = EndpointOptions::default;
    let authz = admin.authz.clone();
    let a = authz.clone();
    service.endpoint_with("auth.whoami", o(), move |_: Option<()>, peer: Arc<PeerInfo>| {
        let a = a.clone();
        async move {
            let who = peer.identity.clone().unwrap_or_else(|| a.unauthenticated());
            let (via, cred) = match &who.via {
                weft_auth::Via::Token(id) => ("token", Some(id.to_string())),
                weft_auth::Via::Key(id) => ("key", Some(id.to_string())),
                _ => (who.via_str(), None),
            };
            let roles = a.state().users.get(&*who.user).map(|u| u.roles.clone()).unwrap_or_default();
            Ok(WhoAmI { auth_enabled: a.enabled(), user: who.user.to_string(), via: via.into(), credential_id: cred, roles })
        }
    })?;
    let c = admin.clone();
    service.endpoint_with("auth.user.add", o(), move |r: UserReq, peer: Arc<PeerInfo>| {
        let c = c.clone();
        async move {
            c.commit(AuthOp::add_user(&r.name, r.roles), &peer).await?;
            Ok(Done { ok: true })
        }
    })?;
    let a = authz.clone();
    service.endpoint("auth.user.list", move |_: Option<()>| {
        let a = a.clone();
        async move {
            Ok(a.state().users.iter().map(|(n, u)| UserInfo { name: n.clone(), roles: u.roles.clone(), created_ms: u.created_ms }).collect::<Vec<_>>())
        }
    })?;
    let c = admin.clone();
    service.endpoint_with("auth.user.remove", o(), move |r: NameReq, peer: Arc<PeerInfo>| {
        let c = c.clone();
        async move {
            c.commit(AuthOp::RemoveUser { name: r.name }, &peer).await?;
            Ok(Done { ok: true })
        }
    })?;
    let c = admin.clone();
    service.endpoint_with("auth.user.assign", o(), move |r: AssignReq, peer: Arc<PeerInfo>| {
        let c = c.clone();
        async move {
            c.commit(AuthOp::AssignRole { user: r.name, role: r.role }, &peer).await?;
            Ok(Done { ok: true })
        }
    })?;
    let c = admin.clone();
    service.endpoint_with("auth.role.add", o(), move |r: RoleReq, peer: Arc<PeerInfo>| {
        let c = c.clone();
        async move {
            c.commit(AuthOp::AddRole { name: r.name, grants: grants(&r.grants)? }, &peer).await?;
            Ok(Done { ok: true })
        }
    })?;
    let a = authz.clone();
    service.endpoint("auth.role.list", move |_: Option<()>| {
        let a = a.clone();
        async move {
            Ok(a.state().roles.iter().map(|(n, r)| RoleInfo { name: n.clone(), grants: r.grants.iter().map(|g| g.to_string()).collect() }).collect::<Vec<_>>())
        }
    })?;
    let c = admin.clone();
    service.endpoint_with("auth.role.remove", o(), move |r: NameReq, peer: Arc<PeerInfo>| {
        let c = c.clone();
        async move {
            c.commit(AuthOp::RemoveRole { name: r.name }, &peer).await?;
            Ok(Done { ok: true })
        }
    })?;
    let c = admin.clone();
    service.endpoint_with("auth.role.grant", o(), move |r: GrantReq, peer: Arc<PeerInfo>| {
        let c = c.clone();
        async move {
            let grant: Grant = r.grant.parse().map_err(wire)?;
            c.commit(AuthOp::Grant { role: r.role, grant }, &peer).await?;
            Ok(Done { ok: true })
        }
    })?;
    for (kind, cred_kind) in [("token", CredKind::Token), ("key", CredKind::Key)] {
        let c = admin.clone();
        service.endpoint_with(&format!("auth.{kind}.create"), o(), move |r: CredReq, peer: Arc<PeerInfo>| {
            let c = c.clone();
            async move {
                // argon2 takes tens of milliseconds: off the async workers.
                let (user, ttl, desc) = (r.user.clone(), r.ttl_ms, r.description.clone());
                let made = tokio::task::spawn_blocking(move || AuthOp::new_credential(cred_kind, &user, ttl, &desc))
                    .await
                    .map_err(|e| ServiceError::Wire(ErrorBody::new(ErrorCode::Unavailable, format!("hashing: {e}"))))?
                    .map_err(wire)?;
                let (op, secret, id) = made;
                let (created_ms, expires_ms) = match &op {
                    AuthOp::AddCredential { record, .. } => (record.created_ms, record.expires_ms),
                    _ => (0, None),
                };
                c.commit(op, &peer).await?;
                Ok(CredInfo { id, user: r.user.clone(), created_ms, expires_ms, description: r.description.clone(), secret: Some(secret) })
            }
        })?;
        let a = authz.clone();
        service.endpoint(&format!("auth.{kind}.list"), move |_: Option<()>| {
            let a = a.clone();
            async move {
                let st = a.state();
                Ok(creds(if kind == "token" { &st.tokens } else { &st.keys }))
            }
        })?;
        let c = admin.clone();
        service.endpoint_with(&format!("auth.{kind}.revoke"), o(), move |r: IdReq, peer: Arc<PeerInfo>| {
            let c = c.clone();
            async move {
                c.commit(AuthOp::Revoke { kind: cred_kind, id: r.id }, &peer).await?;
                Ok(Done { ok: true })
            }
        })?;
    }
    Ok(())
}

// ---- CLI ----

#[derive(Subcommand, Clone)]
pub enum AuthCmd {
    /// Users: add, list, remove.
    User {
        #[command(subcommand)]
        command: UserCmd,
    },
    /// Roles: add, list, remove, grant.
    Role {
        #[command(subcommand)]
        command: RoleCmd,
    },
    /// Bearer tokens: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: CredCmd,
    },
    /// API keys: create, list, revoke.
    Key {
        #[command(subcommand)]
        command: CredCmd,
    },
    /// Who the node takes this client for (user, credential, roles).
    Whoami,
}

#[derive(Subcommand, Clone)]
pub enum UserCmd {
    /// Add a user with roles.
    Add {
        name: String,
        /// A role to give (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    List,
    /// Remove a user and all their tokens and keys.
    Remove { name: String },
    /// Give a user one more role.
    Assign { name: String, role: String },
}

#[derive(Subcommand, Clone)]
pub enum RoleCmd {
    /// Add a role with grants ACTION:KIND:PATTERN, e.g. write:topic:orders*.
    Add {
        name: String,
        /// A grant (repeatable): read|write|admin : topic|table|queue|endpoint|pv|cluster : NAME, PREFIX* or *.
        #[arg(long = "grant")]
        grants: Vec<String>,
    },
    List,
    /// Remove a role (and take it from every user).
    Remove { name: String },
    /// Add a grant to a role.
    Grant { role: String, grant: String },
}

#[derive(Subcommand, Clone)]
pub enum CredCmd {
    /// Create one for USER; it is printed once.
    Create {
        user: String,
        /// Tokens only: expire after this many seconds (default: never).
        #[arg(long)]
        ttl_s: Option<u64>,
        #[arg(long, default_value = "")]
        description: String,
    },
    List,
    /// Revoke by id (open connections are refused at their next request).
    Revoke { id: String },
}

fn fmt_ms(ms: Option<u64>) -> String {
    ms.map(|m| m.to_string()).unwrap_or_else(|| "never".into())
}

pub async fn run(client: &ClientArgs, out: OutputArgs, cmd: AuthCmd) -> Result<()> {
    let c = client.connect().await?;
    let r = run_on(&c, out, cmd).await;
    c.shutdown().await;
    r
}

async fn run_on(c: &weft_net::Client, out: OutputArgs, cmd: AuthCmd) -> Result<()> {
    let done = |d: Done, what: &str| -> Result<()> {
        if out.json { print_json(&d) } else { println!("{what}"); Ok(()) }
    };
    match cmd {
        AuthCmd::Whoami => {
            let w: WhoAmI = c.call("auth.whoami", &()).await?;
            if out.json {
                print_json(&w)?;
            } else if !w.auth_enabled {
                println!("auth is off on this node: everyone is anonymous");
            } else {
                println!("{} via {}{} roles: {}", w.user, w.via, w.credential_id.map(|i| format!(" {i}")).unwrap_or_default(), w.roles.join(","));
            }
        }
        AuthCmd::User { command: UserCmd::Add { name, roles } } => {
            let d: Done = c.call("auth.user.add", &UserReq { name: name.clone(), roles }).await?;
            done(d, &format!("user {name} added"))?;
        }
        AuthCmd::User { command: UserCmd::List } => {
            let v: Vec<UserInfo> = c.call("auth.user.list", &()).await?;
            if out.json {
                print_json(&v)?;
            } else {
                print!("{}", table(&["USER", "ROLES"], &v.iter().map(|u| vec![u.name.clone(), u.roles.join(",")]).collect::<Vec<_>>()));
            }
        }
        AuthCmd::User { command: UserCmd::Remove { name } } => {
            let d: Done = c.call("auth.user.remove", &NameReq { name: name.clone() }).await?;
            done(d, &format!("user {name} removed"))?;
        }
        AuthCmd::User { command: UserCmd::Assign { name, role } } => {
            let d: Done = c.call("auth.user.assign", &AssignReq { name: name.clone(), role: role.clone() }).await?;
            done(d, &format!("user {name} has role {role}"))?;
        }
        AuthCmd::Role { command: RoleCmd::Add { name, grants } } => {
            let d: Done = c.call("auth.role.add", &RoleReq { name: name.clone(), grants }).await?;
            done(d, &format!("role {name} added"))?;
        }
        AuthCmd::Role { command: RoleCmd::List } => {
            let v: Vec<RoleInfo> = c.call("auth.role.list", &()).await?;
            if out.json {
                print_json(&v)?;
            } else {
                print!("{}", table(&["ROLE", "GRANTS"], &v.iter().map(|r| vec![r.name.clone(), r.grants.join(" ")]).collect::<Vec<_>>()));
            }
        }
        AuthCmd::Role { command: RoleCmd::Remove { name } } => {
            let d: Done = c.call("auth.role.remove", &NameReq { name: name.clone() }).await?;
            done(d, &format!("role {name} removed"))?;
        }
        AuthCmd::Role { command: RoleCmd::Grant { role, grant } } => {
            let d: Done = c.call("auth.role.grant", &GrantReq { role: role.clone(), grant: grant.clone() }).await?;
            done(d, &format!("role {role} granted {grant}"))?;
        }
        AuthCmd::Token { command } => cred(c, out, "token", command).await?,
        AuthCmd::Key { command } => cred(c, out, "key", command).await?,
    }
    Ok(())
}

async fn cred(c: &weft_net::Client, out: OutputArgs, kind: &str, cmd: CredCmd) -> Result<()> {
    match cmd {
        CredCmd::Create { user, ttl_s, description } => {
            let req = CredReq { user, ttl_ms: ttl_s.map(|s| s.saturating_mul(1000)), description };
            let info: CredInfo = c.call(&format!("auth.{kind}.create"), &req).await?;
            if out.json {
                print_json(&info)?;
            } else {
                // The secret alone on stdout, so `$(weft auth token create bob)` works.
                eprintln!("{kind} {} for {} (expires: {}); shown once:", info.id, info.user, fmt_ms(info.expires_ms));
                println!("{}", info.secret.unwrap_or_default());
            }
        }
        CredCmd::List => {
            let v: Vec<CredInfo> = c.call(&format!("auth.{kind}.list"), &()).await?;
            if out.json {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = v.iter().map(|i| vec![i.id.clone(), i.user.clone(), i.created_ms.to_string(), fmt_ms(i.expires_ms), i.description.clone()]).collect();
                print!("{}", table(&["ID", "USER", "CREATED_MS", "EXPIRES_MS", "DESCRIPTION"], &rows));
            }
        }
        CredCmd::Revoke { id } => {
            let d: Done = c.call(&format!("auth.{kind}.revoke"), &IdReq { id: id.clone() }).await?;
            if out.json {
                print_json(&d)?;
            } else {
                println!("{kind} {id} revoked");
            }
        }
    }
    Ok(())
}
