//! The [`Authorizer`]: the one place every surface asks "who is this" and
//! "may they do that".
//!
//! Cost model (docs/security.md, "Cost"): verifying a secret is an argon2
//! hash (tens of milliseconds by design), so it happens once per credential:
//! the verified result is cached keyed by the SHA-256 of the whole
//! credential string. A native connection authenticates once (hello) and
//! then each request costs one `authorize`: an atomic load of the current
//! state (`ArcSwap`), a map lookup of the credential id (so revocation and
//! expiry take effect at the next request), and a scan of the user's role
//! grants. Nothing is allocated on the allow path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::cred::{self, CredKind, parse_authorization, parse_credential};
use crate::error::{AuthError, Denied};
use crate::model::{Action, Grant, Resource, ResourceKind, State};
use crate::ops::AuthOp;
use crate::store;

/// Verified credentials remembered at most (then the cache starts over:
/// re-verifying costs time, never correctness).
pub const MAX_CACHED_CREDENTIALS: usize = 4096;

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Auth is off: everyone is this.
    Anonymous,
    /// No credential was presented (auth on): every check says
    /// `unauthenticated`.
    Nobody,
    Token(Arc<str>),
    Key(Arc<str>),
    /// A verified mTLS client certificate naming a user.
    Certificate,
    /// Another node of the cluster, proven by its cluster certificate
    /// (`node-<id>`, signed by the cluster CA; docs/cluster.md, "TLS between
    /// nodes"): may call the internal `cluster.local.*` routes only.
    Node,
}

/// Who a caller is. Cheap to clone (two `Arc`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: Arc<str>,
    pub via: Via,
}

impl Identity {
    /// The identity of callers when auth is off.
    pub fn anonymous() -> Self {
        Identity { user: Arc::from("anonymous"), via: Via::Anonymous }
    }
    /// A caller that presented nothing while auth is on.
    pub fn nobody() -> Self {
        Identity { user: Arc::from(""), via: Via::Nobody }
    }
    /// What the audit log and `whoami` show: `alice (token 0123...)`.
    pub fn describe(&self) -> String {
        match &self.via {
            Via::Anonymous => "anonymous (auth off)".into(),
            Via::Nobody => "nobody (no credentials)".into(),
            Via::Token(id) => format!("{} (token {id})", self.user),
            Via::Key(id) => format!("{} (key {id})", self.user),
            Via::Certificate => format!("{} (certificate)", self.user),
            Via::Node => format!("{} (cluster node certificate)", self.user),
        }
    }
    pub fn via_str(&self) -> &'static str {
        match self.via {
            Via::Anonymous => "anonymous",
            Via::Nobody => "none",
            Via::Token(_) => "token",
            Via::Key(_) => "key",
            Via::Certificate => "certificate",
            Via::Node => "node",
        }
    }
}

/// Counters for `weft.stats` and metrics.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Credentials verified with argon2 (cache misses).
    pub verifications: AtomicU64,
    /// Credentials found in the verified cache.
    pub cache_hits: AtomicU64,
    pub denied_unauthenticated: AtomicU64,
    pub denied_forbidden: AtomicU64,
    /// Changes to users, roles, tokens and keys.
    pub changes: AtomicU64,
}

impl AuthStats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("auth.verifications", self.verifications.load(Ordering::Relaxed)),
            ("auth.cache_hits", self.cache_hits.load(Ordering::Relaxed)),
            ("auth.denied.unauthenticated", self.denied_unauthenticated.load(Ordering::Relaxed)),
            ("auth.denied.forbidden", self.denied_forbidden.load(Ordering::Relaxed)),
            ("auth.changes", self.changes.load(Ordering::Relaxed)),
        ]
    }
}

/// One line of the audit log (docs/security.md, "Audit"): a refusal, or a
/// change to users, roles, tokens or keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time_ms: u64,
    /// `native`, `http`, `grpc`, `pva`, `admin` (changes), `listener`.
    pub surface: String,
    /// Who: `alice (token 0123...)`, `nobody (no credentials)`.
    pub identity: String,
    /// The peer address, when known.
    pub peer: String,
    /// What was touched: a route, `topic:orders`, `user:alice`, `token:<id>`.
    pub resource: String,
    /// The operation: a route's action, `user.add`, `token.revoke`...
    pub action: String,
    /// `unauthenticated`, `forbidden`, `denied` (allow-list), or `ok`.
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Changes only: who made it (`admin (token 0123...)`, `alice
    /// (certificate)`, `local (the node itself)`), also in `identity`.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub actor: String,
}

/// How pvAccess peers map onto Weft's roles (config keys
/// `auth.pva_trust_ca_user`, `auth.pva_anonymous_role`; docs/security.md,
/// "pvAccess").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvaPolicy {
    /// A peer's `ca` user name (claimed, not proven) names the Weft user of
    /// that name.
    pub trust_ca_user: bool,
    /// The role of every other peer (anonymous, untrusted or unknown
    /// names); None or empty: they may do nothing.
    pub anonymous_role: Option<String>,
}

/// Kept for callers of the first API: a change as the hook sees it.
pub type Change = AuditEvent;

type AuditHook = Box<dyn Fn(&AuditEvent) + Send + Sync>;

/// SHA-256 of a verified credential string -> its kind and id.
type VerifiedCache = HashMap<[u8; 32], (CredKind, Arc<str>)>;

/// Options for [`Authorizer::open`].
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// `auth.enabled`: deny by default. Off: every check passes.
    pub enabled: bool,
    /// The node's data directory: state in `auth/state.json`, the first
    /// admin token in `admin.token`. None: in memory only (tests).
    pub data_dir: Option<PathBuf>,
    /// Cluster mode: the rules come from the metadata group
    /// ([`Authorizer::install_replicated`]); no admin token is made here at
    /// the first start (the node that bootstraps the cluster's rules makes
    /// it), and a reload does not read the state file (a cache then).
    pub replicated: bool,
}

/// Users, roles and credentials, and the checks against them.
pub struct Authorizer {
    enabled: bool,
    state: ArcSwap<State>,
    state_path: Option<PathBuf>,
    /// Serialises changes (read, modify, persist, swap).
    write: Mutex<()>,
    /// SHA-256 of a verified credential string -> its kind and id.
    verified: Mutex<VerifiedCache>,
    stats: AuthStats,
    on_change: Mutex<Option<Arc<AuditHook>>>,
    /// Per-identity request and byte rates (`auth.rate_per_s`, `auth.bytes_per_s`).
    limits: ArcSwap<crate::limits::Limits>,
    /// Cluster mode: the version of the replicated rules in force.
    replicated_version: AtomicU64,
    /// Cluster mode: the state file is a cache; reload leaves it alone.
    replicated: bool,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("enabled", &self.enabled).field("state_path", &self.state_path).finish_non_exhaustive()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The role the first start creates: admin on everything.
pub const ADMIN_ROLE: &str = "admin";
pub const ADMIN_USER: &str = "admin";

impl Authorizer {
    /// An authorizer with auth off: every check passes (`weft serve` with
    /// no `--auth`).
    pub fn disabled() -> Self {
        Self::from_state(false, State::default(), None)
    }

    /// In memory, auth on, with `state` (tests, embedding).
    pub fn in_memory(state: State) -> Self {
        Self::from_state(true, state, None)
    }

    fn from_state(enabled: bool, state: State, state_path: Option<PathBuf>) -> Self {
        Authorizer {
            enabled,
            state: ArcSwap::from_pointee(state),
            state_path,
            write: Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
            stats: AuthStats::default(),
            on_change: Mutex::new(None),
            limits: ArcSwap::from_pointee(crate::limits::Limits::new(0, 0)),
            replicated_version: AtomicU64::new(0),
            replicated: false,
        }
    }

    /// Load the state under `data_dir/auth/`. With auth on and no state
    /// yet, create the `admin` role and user and an admin token, written to
    /// `data_dir/admin.token` (mode 0600); its path is returned.
    pub fn open(opts: &AuthOptions) -> Result<(Self, Option<PathBuf>), AuthError> {
        let Some(dir) = &opts.data_dir else {
            return Ok((Self::from_state(opts.enabled, State::default(), None), None));
        };
        let path = store::state_path(dir);
        let existing = store::load(&path)?;
        let fresh = existing.is_none();
        let mut authz = Self::from_state(opts.enabled, existing.unwrap_or_default(), Some(path.clone()));
        authz.replicated = opts.replicated;
        let mut written = None;
        if opts.enabled && fresh && !opts.replicated {
            let (state, token, id) = crate::ops::bootstrap_state()?;
            store::save(&path, &state)?;
            authz.state.store(Arc::new(state));
            let token_path = dir.join("admin.token");
            store::write_private(&token_path, format!("{token}\n").as_bytes())?;
            info!(path = %token_path.display(), token_id = %id, "auth on, first start: admin token written");
            written = Some(token_path);
        }
        Ok((authz, written))
    }

    /// Set the per-identity limits (0: off); a reload may change them.
    pub fn set_limits(&self, rate_per_s: u64, bytes_per_s: u64) {
        self.limits.store(Arc::new(crate::limits::Limits::new(rate_per_s, bytes_per_s)));
    }

    /// Count a request of `bytes` against `who`'s limits (auth on only:
    /// with auth off everyone is the same anonymous caller). Refusals are
    /// answered `busy` / HTTP 429.
    pub fn check_limits(&self, who: &Identity, bytes: usize) -> Result<(), crate::limits::Limited> {
        if !self.enabled {
            return Ok(());
        }
        let l = self.limits.load();
        if l.is_off() { Ok(()) } else { l.check(&who.user, bytes) }
    }

    /// `auth.limited.rate`, `auth.limited.bytes`.
    pub fn limit_stats(&self) -> Vec<(&'static str, u64)> {
        let l = self.limits.load();
        vec![("auth.limited.rate", l.limited_rate.load(Ordering::Relaxed)), ("auth.limited.bytes", l.limited_bytes.load(Ordering::Relaxed))]
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn stats(&self) -> &AuthStats {
        &self.stats
    }

    /// Called for every refusal recorded with [`Self::record_denial`] and
    /// after every change to users, roles, tokens or keys (the audit log).
    pub fn set_audit_hook(&self, hook: impl Fn(&AuditEvent) + Send + Sync + 'static) {
        if let Ok(mut h) = self.on_change.lock() {
            *h = Some(Arc::new(Box::new(hook)));
        }
    }

    fn emit(&self, ev: AuditEvent) {
        let hook = self.on_change.lock().ok().and_then(|h| h.clone());
        if let Some(h) = hook {
            h(&ev);
        }
    }

    /// Report a refusal to the audit hook (surfaces call this where they
    /// answer 401/403 or `unauthenticated`/`forbidden`).
    pub fn record_denial(&self, surface: &str, who: &Identity, peer: &str, resource: &str, d: &Denied) {
        self.emit(AuditEvent {
            time_ms: now_ms(),
            surface: surface.to_owned(),
            identity: who.describe(),
            peer: peer.to_owned(),
            resource: resource.to_owned(),
            action: String::new(),
            outcome: d.kind.as_str().to_owned(),
            message: d.message.clone(),
            actor: String::new(),
        });
    }

    /// Report a refusal that is not the authorizer's (an allow-list).
    pub fn record_event(&self, ev: AuditEvent) {
        self.emit(ev);
    }

    /// The current rules (a snapshot).
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Re-read the state file (SIGHUP, `weft config reload`): all or
    /// nothing, a bad file leaves the rules in force.
    pub fn reload(&self) -> Result<bool, AuthError> {
        let Some(path) = &self.state_path else { return Ok(false) };
        if self.replicated {
            return Ok(false);
        }
        let _w = self.write.lock().map_err(|_| AuthError::Invalid("auth state lock poisoned".into()))?;
        let Some(new) = store::load(path)? else { return Ok(false) };
        let changed = *self.state.load_full() != new;
        self.state.store(Arc::new(new));
        Ok(changed)
    }

    // ---- authentication ----

    /// Who presents `credential` (a token or an API key string). Verifies
    /// the argon2 hash on first sight, then answers from the cache.
    pub fn authenticate(&self, credential: &str) -> Result<Identity, Denied> {
        self.authenticate_at(credential, now_ms())
    }

    pub fn authenticate_at(&self, credential: &str, now_ms: u64) -> Result<Identity, Denied> {
        if !self.enabled {
            return Ok(Identity::anonymous());
        }
        let cred = match parse_credential(credential) {
            Ok(c) => c,
            Err(e) => return Err(self.count(Denied::unauthenticated(format!("malformed credential: {e}")))),
        };
        self.verify(cred, now_ms)
    }

    /// Who an HTTP `Authorization` header value names; `None`: no header.
    pub fn authenticate_header(&self, header: Option<&str>) -> Result<Identity, Denied> {
        if !self.enabled {
            return Ok(Identity::anonymous());
        }
        let Some(h) = header else {
            return Err(self.count(Denied::unauthenticated("no credentials: send Authorization: Bearer <token>")));
        };
        match parse_authorization(h) {
            Ok(c) => self.verify(c, now_ms()),
            Err(e) => Err(self.count(Denied::unauthenticated(format!("malformed Authorization header: {e}")))),
        }
    }

    /// The identity of a verified mTLS client certificate: the user of the
    /// same name (checked at each authorize, so removing the user revokes).
    pub fn authenticate_certificate(&self, name: &str) -> Identity {
        if !self.enabled {
            return Identity::anonymous();
        }
        Identity { user: Arc::from(name), via: Via::Certificate }
    }

    /// The identity of another cluster node (`name` is its `node-<id>`),
    /// whose cluster certificate the transport verified. Not a user: it
    /// holds no roles and may call `cluster.local.*` only.
    pub fn authenticate_node(&self, name: &str) -> Identity {
        if !self.enabled {
            return Identity::anonymous();
        }
        Identity { user: Arc::from(name), via: Via::Node }
    }

    /// The identity of a caller that presented nothing.
    pub fn unauthenticated(&self) -> Identity {
        if self.enabled { Identity::nobody() } else { Identity::anonymous() }
    }

    fn verify(&self, cred: cred::Credential<'_>, now_ms: u64) -> Result<Identity, Denied> {
        let digest: [u8; 32] = Sha256::digest(cred.full.as_bytes()).into();
        let state = self.state.load();
        let table = match cred.kind {
            CredKind::Token => &state.tokens,
            CredKind::Key => &state.keys,
        };
        let Some(rec) = table.get(cred.id) else {
            return Err(self.count(Denied::unauthenticated(format!("unknown or revoked {} {}", cred.kind.as_str(), cred.id))));
        };
        if rec.expired(now_ms) {
            return Err(self.count(Denied::unauthenticated(format!("{} {} expired", cred.kind.as_str(), cred.id))));
        }
        let cached = self.verified.lock().ok().and_then(|c| c.get(&digest).map(|(_, id)| id.clone()));
        let id = match cached {
            Some(id) => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                id
            }
            None => {
                self.stats.verifications.fetch_add(1, Ordering::Relaxed);
                let ok = PasswordHash::new(&rec.hash)
                    .map(|h| Argon2::default().verify_password(cred.secret.as_bytes(), &h).is_ok())
                    .unwrap_or(false);
                if !ok {
                    return Err(self.count(Denied::unauthenticated(format!("wrong secret for {} {}", cred.kind.as_str(), cred.id))));
                }
                let id: Arc<str> = Arc::from(cred.id);
                if let Ok(mut c) = self.verified.lock() {
                    if c.len() >= MAX_CACHED_CREDENTIALS {
                        c.clear();
                    }
                    c.insert(digest, (cred.kind, id.clone()));
                }
                id
            }
        };
        let via = match cred.kind {
            CredKind::Token => Via::Token(id),
            CredKind::Key => Via::Key(id),
        };
        Ok(Identity { user: Arc::from(rec.user.as_str()), via })
    }

    // ---- authorization ----

    /// May `who` do `action` on `resource`? Deny by default when auth is
    /// on; every surface calls this. A revoked, expired or removed
    /// credential (or user) is `unauthenticated` from its next check on.
    pub fn authorize(&self, who: &Identity, action: Action, resource: Resource<'_>) -> Result<(), Denied> {
        self.authorize_at(who, action, resource, now_ms())
    }

    pub fn authorize_at(&self, who: &Identity, action: Action, resource: Resource<'_>, now_ms: u64) -> Result<(), Denied> {
        if !self.enabled {
            return Ok(());
        }
        if who.via == Via::Node {
            // A node's name is no user's: a user named like it grants it nothing.
            return Err(self.count(Denied::forbidden(format!("{} (a cluster node) may call cluster.local.* only, not {action} {resource}", who.user))));
        }
        let state = self.state.load();
        self.live(&state, who, now_ms)?;
        if state.allows(&who.user, action, resource) {
            Ok(())
        } else {
            Err(self.count(Denied::forbidden(format!("{} may not {action} {resource}", who.user))))
        }
    }

    /// May `who` do `action` on *some* resource of `kind` (listings, group
    /// coordination: docs/security.md)?
    pub fn authorize_any(&self, who: &Identity, action: Action, kind: ResourceKind) -> Result<(), Denied> {
        if !self.enabled {
            return Ok(());
        }
        if who.via == Via::Node {
            return Err(self.count(Denied::forbidden(format!("{} (a cluster node) may call cluster.local.* only, not {action} any {kind}", who.user))));
        }
        let state = self.state.load();
        self.live(&state, who, now_ms())?;
        let any = state.users.get(&*who.user).is_some_and(|u| {
            u.roles.iter().filter_map(|r| state.roles.get(r)).any(|r| r.grants.iter().any(|g| g.kind == kind && g.action >= action))
        });
        if any { Ok(()) } else { Err(self.count(Denied::forbidden(format!("{} may not {action} any {kind}", who.user)))) }
    }

    /// Is `who` still who they were (credential not revoked or expired,
    /// user not removed)?
    pub fn authenticated(&self, who: &Identity) -> Result<(), Denied> {
        if !self.enabled {
            return Ok(());
        }
        self.live(&self.state.load(), who, now_ms())
    }

    /// The check of one native request: the route's access (routes.rs)
    /// with the resource name borrowed from the body. No allocation when
    /// allowed.
    pub fn authorize_native(&self, who: &Identity, route: &str, body: &[u8], json: bool) -> Result<(), Denied> {
        if !self.enabled {
            return Ok(());
        }
        if who.via == Via::Node {
            // Forwarded requests: the node that took the request authorized
            // its client under the same (replicated) rules.
            return if route.starts_with("cluster.local.") {
                Ok(())
            } else {
                Err(self.count(Denied::forbidden(format!("{} (a cluster node) may call cluster.local.* only, not {route}", who.user))))
            };
        }
        match crate::routes::native_access(route) {
            crate::routes::Access::Authenticated => self.authenticated(who),
            crate::routes::Access::Check { action, kind, name } => {
                let name = match name {
                    crate::routes::NameFrom::Route => route,
                    crate::routes::NameFrom::Fixed(n) => n,
                    crate::routes::NameFrom::Any => return self.authorize_any(who, action, kind),
                    from => crate::routes::body_name(body, json, from).unwrap_or(""),
                };
                self.authorize(who, action, Resource::new(kind, name))
            }
        }
    }

    fn live(&self, state: &State, who: &Identity, now_ms: u64) -> Result<(), Denied> {
        let live = match &who.via {
            Via::Anonymous | Via::Nobody => false,
            Via::Token(id) => state.tokens.get(&**id).is_some_and(|r| !r.expired(now_ms) && *r.user == *who.user),
            Via::Key(id) => state.keys.get(&**id).is_some_and(|r| !r.expired(now_ms) && *r.user == *who.user),
            Via::Certificate => state.users.contains_key(&*who.user),
            // Proven by the cluster CA at the handshake; no state to revoke it in.
            Via::Node => true,
        };
        if live {
            return Ok(());
        }
        let msg = match &who.via {
            Via::Anonymous | Via::Nobody => "no credentials: pass a token (--token, WEFT_TOKEN, hello token, Authorization: Bearer)".to_string(),
            Via::Certificate => format!("certificate names {:?}, which is not a user", who.user),
            _ => format!("credential of {:?} revoked or expired", who.user),
        };
        Err(self.count(Denied::unauthenticated(msg)))
    }

    fn count(&self, d: Denied) -> Denied {
        let c = match d.kind {
            crate::DeniedKind::Unauthenticated => &self.stats.denied_unauthenticated,
            crate::DeniedKind::Forbidden => &self.stats.denied_forbidden,
        };
        c.fetch_add(1, Ordering::Relaxed);
        d
    }

    // ---- administration ----

    /// Apply `op` here: checked, persisted to the state file, in force, and
    /// written to the audit log with `actor` (who asked: `alice (token
    /// ...)`; empty: the node itself). A cluster node replicates instead:
    /// [`Self::plan`], then [`Self::install_replicated`] and
    /// [`Self::audit_change`].
    pub fn apply(&self, op: &AuthOp, actor: &str, peer: &str) -> Result<(), AuthError> {
        let _w = self.write.lock().map_err(|_| AuthError::Invalid("auth state lock poisoned".into()))?;
        let mut next = State::clone(&self.state.load());
        op.apply(&mut next)?;
        if let Some(path) = &self.state_path {
            store::save(path, &next)?;
        }
        self.state.store(Arc::new(next));
        self.audit_change(op, actor, peer);
        Ok(())
    }

    /// The state `op` would lead to from the current one (validation
    /// included), without putting it in force.
    pub fn plan(&self, op: &AuthOp) -> Result<State, AuthError> {
        let mut next = State::clone(&self.state.load());
        op.apply(&mut next)?;
        Ok(next)
    }

    /// Count a change and write its audit line (`actor`: who made it).
    pub fn audit_change(&self, op: &AuthOp, actor: &str, peer: &str) {
        self.stats.changes.fetch_add(1, Ordering::Relaxed);
        let actor = if actor.is_empty() { "local (the node itself)" } else { actor };
        self.emit(AuditEvent {
            time_ms: now_ms(),
            surface: "admin".into(),
            identity: actor.to_owned(),
            peer: peer.to_owned(),
            resource: op.target().to_owned(),
            action: op.name().to_owned(),
            outcome: "ok".into(),
            message: String::new(),
            actor: actor.to_owned(),
        });
        info!(op = op.name(), target = op.target(), by = actor, "auth change");
    }

    /// Cluster mode: the rules replicated through the metadata group, at
    /// `version` (each change adds one). Older versions than the one in
    /// force are ignored (an observer and a catch-up may race); the state
    /// file is then only a cache (written by the caller, off the apply
    /// path). Returns whether it was installed.
    pub fn install_replicated(&self, state: State, version: u64) -> bool {
        let Ok(_w) = self.write.lock() else { return false };
        if version <= self.replicated_version.load(Ordering::Acquire) {
            return false;
        }
        self.replicated_version.store(version, Ordering::Release);
        self.state.store(Arc::new(state));
        true
    }

    /// The replicated version in force (0: none yet, or not a cluster).
    pub fn replicated_version(&self) -> u64 {
        self.replicated_version.load(Ordering::Acquire)
    }

    pub fn add_user(&self, name: &str, roles: Vec<String>) -> Result<(), AuthError> {
        self.apply(&AuthOp::add_user(name, roles), "", "")
    }

    /// Removes the user and every token and key of theirs.
    pub fn remove_user(&self, name: &str) -> Result<(), AuthError> {
        self.apply(&AuthOp::RemoveUser { name: name.into() }, "", "")
    }

    /// Give `user` the role `role` (it must exist).
    pub fn assign_role(&self, user: &str, role: &str) -> Result<(), AuthError> {
        self.apply(&AuthOp::AssignRole { user: user.into(), role: role.into() }, "", "")
    }

    pub fn add_role(&self, name: &str, grants: Vec<Grant>) -> Result<(), AuthError> {
        self.apply(&AuthOp::AddRole { name: name.into(), grants }, "", "")
    }

    /// Removes the role and takes it from every user.
    pub fn remove_role(&self, name: &str) -> Result<(), AuthError> {
        self.apply(&AuthOp::RemoveRole { name: name.into() }, "", "")
    }

    pub fn grant(&self, role: &str, grant: Grant) -> Result<(), AuthError> {
        self.apply(&AuthOp::Grant { role: role.into(), grant }, "", "")
    }

    /// A new bearer token for `user`; returns (the token, its id). The
    /// token is shown once: only its hash is kept.
    pub fn create_token(&self, user: &str, ttl_ms: Option<u64>, description: &str) -> Result<(String, String), AuthError> {
        let (op, secret, id) = AuthOp::new_credential(CredKind::Token, user, ttl_ms, description)?;
        self.apply(&op, "", "")?;
        Ok((secret, id))
    }

    /// A new API key for `user`; returns (the key, its id).
    pub fn create_key(&self, user: &str, description: &str) -> Result<(String, String), AuthError> {
        let (op, secret, id) = AuthOp::new_credential(CredKind::Key, user, None, description)?;
        self.apply(&op, "", "")?;
        Ok((secret, id))
    }

    pub fn revoke_token(&self, id: &str) -> Result<(), AuthError> {
        self.apply(&AuthOp::Revoke { kind: CredKind::Token, id: id.into() }, "", "")
    }

    pub fn revoke_key(&self, id: &str) -> Result<(), AuthError> {
        self.apply(&AuthOp::Revoke { kind: CredKind::Key, id: id.into() }, "", "")
    }

    // ---- pvAccess ----

    /// May a pvAccess peer do `action` on the PV `pv` (docs/security.md,
    /// "pvAccess")? `ca_user`: the user name of its `ca` credentials (None:
    /// `anonymous`). The peer is the Weft user of that name only when
    /// `policy.trust_ca_user` and the user exists (the name is claimed, not
    /// proven); otherwise it holds `policy.anonymous_role`, if any. A
    /// refusal is counted and written to the audit log (surface `pva`).
    pub fn authorize_pv(&self, policy: &PvaPolicy, ca_user: Option<&str>, peer: &str, action: Action, pv: &str) -> Result<(), Denied> {
        if !self.enabled {
            return Ok(());
        }
        let state = self.state.load();
        let resource = Resource::pv(pv);
        let trusted = ca_user.filter(|u| policy.trust_ca_user && state.users.contains_key(*u));
        let verdict = match trusted {
            Some(u) if state.allows(u, action, resource) => return Ok(()),
            Some(u) => Denied::forbidden(format!("{u} may not {action} {resource}")),
            None => {
                let who = match ca_user {
                    None => "an anonymous pvAccess peer".to_string(),
                    Some(u) if !policy.trust_ca_user => format!("ca user {u:?} (not trusted: auth.pva_trust_ca_user is off)"),
                    Some(u) => format!("ca user {u:?} (no Weft user of that name)"),
                };
                match policy.anonymous_role.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) if state.roles.get(r).is_some_and(|role| role.grants.iter().any(|g| g.allows(action, resource))) => return Ok(()),
                    Some(r) => Denied::forbidden(format!("{who} has role {r:?} (auth.pva_anonymous_role), which may not {action} {resource}")),
                    None => Denied::unauthenticated(format!("{who} has no Weft identity (auth.pva_anonymous_role is not set)")),
                }
            }
        };
        let d = self.count(verdict);
        let identity = match (trusted, ca_user) {
            (Some(u), _) => format!("{u} (pva ca)"),
            (None, Some(u)) => format!("anonymous (pva ca {u:?})"),
            (None, None) => "anonymous (pva)".into(),
        };
        self.emit(AuditEvent {
            time_ms: now_ms(),
            surface: "pva".into(),
            identity,
            peer: peer.to_owned(),
            resource: resource.to_string(),
            action: action.as_str().into(),
            outcome: d.kind.as_str().into(),
            message: d.message.clone(),
            actor: String::new(),
        });
        Err(d)
    }

    /// The path of the state file, when persisted.
    pub fn state_path(&self) -> Option<&Path> {
        self.state_path.as_deref()
    }
}
