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
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::cred::{self, CredKind, parse_authorization, parse_credential};
use crate::error::{AuthError, Denied};
use crate::model::{Action, CredRecord, Grant, Resource, ResourceKind, Role, State, User};
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
        }
    }
    pub fn via_str(&self) -> &'static str {
        match self.via {
            Via::Anonymous => "anonymous",
            Via::Nobody => "none",
            Via::Token(_) => "token",
            Via::Key(_) => "key",
            Via::Certificate => "certificate",
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
#[derive(Debug, Clone, Serialize)]
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
        let authz = Self::from_state(opts.enabled, existing.unwrap_or_default(), Some(path));
        let mut written = None;
        if opts.enabled && fresh {
            authz.add_role(ADMIN_ROLE, ResourceKind::ALL.iter().map(|k| Grant { action: Action::Admin, kind: *k, pattern: "*".parse().expect("'*' is a valid pattern") }).collect())?;
            authz.add_user(ADMIN_USER, vec![ADMIN_ROLE.into()])?;
            let (token, id) = authz.create_token(ADMIN_USER, None, "first admin token")?;
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

    fn change(&self, op: &'static str, target: &str, f: impl FnOnce(&mut State) -> Result<(), AuthError>) -> Result<(), AuthError> {
        let _w = self.write.lock().map_err(|_| AuthError::Invalid("auth state lock poisoned".into()))?;
        let mut next = State::clone(&self.state.load());
        f(&mut next)?;
        if let Some(path) = &self.state_path {
            store::save(path, &next)?;
        }
        self.state.store(Arc::new(next));
        self.stats.changes.fetch_add(1, Ordering::Relaxed);
        self.emit(AuditEvent {
            time_ms: now_ms(),
            surface: "admin".into(),
            identity: String::new(),
            peer: String::new(),
            resource: target.to_owned(),
            action: op.to_owned(),
            outcome: "ok".into(),
            message: String::new(),
        });
        info!(op, target, "auth change");
        Ok(())
    }

    pub fn add_user(&self, name: &str, roles: Vec<String>) -> Result<(), AuthError> {
        check_name("user", name)?;
        self.change("user.add", name, |s| {
            if s.users.contains_key(name) {
                return Err(AuthError::Exists(format!("user {name:?}")));
            }
            for r in &roles {
                if !s.roles.contains_key(r) {
                    return Err(AuthError::NotFound(format!("role {r:?}")));
                }
            }
            s.users.insert(name.to_owned(), User { roles, created_ms: now_ms() });
            Ok(())
        })
    }

    /// Removes the user and every token and key of theirs.
    pub fn remove_user(&self, name: &str) -> Result<(), AuthError> {
        self.change("user.remove", name, |s| {
            s.users.remove(name).ok_or_else(|| AuthError::NotFound(format!("user {name:?}")))?;
            s.tokens.retain(|_, r| r.user != name);
            s.keys.retain(|_, r| r.user != name);
            Ok(())
        })
    }

    /// Give `user` the role `role` (it must exist).
    pub fn assign_role(&self, user: &str, role: &str) -> Result<(), AuthError> {
        self.change("user.assign", user, |s| {
            if !s.roles.contains_key(role) {
                return Err(AuthError::NotFound(format!("role {role:?}")));
            }
            let u = s.users.get_mut(user).ok_or_else(|| AuthError::NotFound(format!("user {user:?}")))?;
            if !u.roles.iter().any(|r| r == role) {
                u.roles.push(role.to_owned());
            }
            Ok(())
        })
    }

    pub fn add_role(&self, name: &str, grants: Vec<Grant>) -> Result<(), AuthError> {
        check_name("role", name)?;
        self.change("role.add", name, |s| {
            if s.roles.contains_key(name) {
                return Err(AuthError::Exists(format!("role {name:?}")));
            }
            s.roles.insert(name.to_owned(), Role { grants });
            Ok(())
        })
    }

    /// Removes the role and takes it from every user.
    pub fn remove_role(&self, name: &str) -> Result<(), AuthError> {
        self.change("role.remove", name, |s| {
            s.roles.remove(name).ok_or_else(|| AuthError::NotFound(format!("role {name:?}")))?;
            for u in s.users.values_mut() {
                u.roles.retain(|r| r != name);
            }
            Ok(())
        })
    }

    pub fn grant(&self, role: &str, grant: Grant) -> Result<(), AuthError> {
        self.change("role.grant", role, |s| {
            let r = s.roles.get_mut(role).ok_or_else(|| AuthError::NotFound(format!("role {role:?}")))?;
            if !r.grants.contains(&grant) {
                r.grants.push(grant);
            }
            Ok(())
        })
    }

    /// A new bearer token for `user`; returns (the token, its id). The
    /// token is shown once: only its hash is kept.
    pub fn create_token(&self, user: &str, ttl_ms: Option<u64>, description: &str) -> Result<(String, String), AuthError> {
        self.create(CredKind::Token, user, ttl_ms, description)
    }

    /// A new API key for `user`; returns (the key, its id).
    pub fn create_key(&self, user: &str, description: &str) -> Result<(String, String), AuthError> {
        self.create(CredKind::Key, user, None, description)
    }

    fn create(&self, kind: CredKind, user: &str, ttl_ms: Option<u64>, description: &str) -> Result<(String, String), AuthError> {
        let (secret_str, id) = cred::generate(kind);
        let parsed = parse_credential(&secret_str)?;
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
        let hash = Argon2::default().hash_password(parsed.secret.as_bytes(), &salt).map_err(|e| AuthError::Hash(e.to_string()))?.to_string();
        let now = now_ms();
        let rec = CredRecord { user: user.to_owned(), hash, created_ms: now, expires_ms: ttl_ms.map(|t| now.saturating_add(t)), description: description.chars().take(200).collect() };
        let op = match kind {
            CredKind::Token => "token.create",
            CredKind::Key => "key.create",
        };
        self.change(op, &id, |s| {
            if !s.users.contains_key(user) {
                return Err(AuthError::NotFound(format!("user {user:?}")));
            }
            match kind {
                CredKind::Token => s.tokens.insert(id.clone(), rec),
                CredKind::Key => s.keys.insert(id.clone(), rec),
            };
            Ok(())
        })?;
        Ok((secret_str, id))
    }

    pub fn revoke_token(&self, id: &str) -> Result<(), AuthError> {
        self.change("token.revoke", id, |s| s.tokens.remove(id).map(|_| ()).ok_or_else(|| AuthError::NotFound(format!("token {id:?}"))))
    }

    pub fn revoke_key(&self, id: &str) -> Result<(), AuthError> {
        self.change("key.revoke", id, |s| s.keys.remove(id).map(|_| ()).ok_or_else(|| AuthError::NotFound(format!("key {id:?}"))))
    }

    /// The path of the state file, when persisted.
    pub fn state_path(&self) -> Option<&Path> {
        self.state_path.as_deref()
    }
}

fn check_name(what: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= crate::model::MAX_NAME_BYTES
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!("{what} name {name:?}: 1..=255 of [A-Za-z0-9-_.@:]")))
    }
}
