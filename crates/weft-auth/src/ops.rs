//! Changes to users, roles, tokens and keys as data ([`AuthOp`]): one
//! change applies to a [`State`] the same way wherever it runs, so a node
//! can apply it to its own file or compute the next state to replicate it
//! through a cluster's metadata group (docs/security.md, "Cluster").
//!
//! Everything random or timed (a credential's secret and argon2 hash, the
//! creation time) is decided when the op is built, never when it applies.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use rand::RngCore;

use crate::cred::{self, parse_credential, CredKind};
use crate::error::AuthError;
use crate::model::{Action, CredRecord, Grant, ResourceKind, Role, State, User, MAX_NAME_BYTES};

/// One change to the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOp {
    AddUser { name: String, roles: Vec<String>, created_ms: u64 },
    /// Also removes every token and key of the user.
    RemoveUser { name: String },
    AssignRole { user: String, role: String },
    AddRole { name: String, grants: Vec<Grant> },
    /// Also takes the role from every user.
    RemoveRole { name: String },
    Grant { role: String, grant: Grant },
    AddCredential { kind: CredKind, id: String, record: CredRecord },
    Revoke { kind: CredKind, id: String },
}

impl AuthOp {
    /// The audit log's `action`: `user.add`, `token.revoke`...
    pub fn name(&self) -> &'static str {
        match self {
            AuthOp::AddUser { .. } => "user.add",
            AuthOp::RemoveUser { .. } => "user.remove",
            AuthOp::AssignRole { .. } => "user.assign",
            AuthOp::AddRole { .. } => "role.add",
            AuthOp::RemoveRole { .. } => "role.remove",
            AuthOp::Grant { .. } => "role.grant",
            AuthOp::AddCredential { kind: CredKind::Token, .. } => "token.create",
            AuthOp::AddCredential { kind: CredKind::Key, .. } => "key.create",
            AuthOp::Revoke { kind: CredKind::Token, .. } => "token.revoke",
            AuthOp::Revoke { kind: CredKind::Key, .. } => "key.revoke",
        }
    }

    /// The audit log's `resource`: the user, role or credential id.
    pub fn target(&self) -> &str {
        match self {
            AuthOp::AddUser { name, .. } | AuthOp::RemoveUser { name } | AuthOp::AddRole { name, .. } | AuthOp::RemoveRole { name } => name,
            AuthOp::AssignRole { user, .. } => user,
            AuthOp::Grant { role, .. } => role,
            AuthOp::AddCredential { id, .. } | AuthOp::Revoke { id, .. } => id,
        }
    }

    /// A new user (created now).
    pub fn add_user(name: &str, roles: Vec<String>) -> AuthOp {
        AuthOp::AddUser { name: name.to_owned(), roles, created_ms: crate::now_ms() }
    }

    /// A new token (`ttl_ms`: expiry) or key for `user`: the op, the
    /// credential string (shown once) and its id. Hashes the secret
    /// (argon2, tens of milliseconds).
    pub fn new_credential(kind: CredKind, user: &str, ttl_ms: Option<u64>, description: &str) -> Result<(AuthOp, String, String), AuthError> {
        let (secret_str, id) = cred::generate(kind);
        let parsed = parse_credential(&secret_str)?;
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
        let hash = Argon2::default().hash_password(parsed.secret.as_bytes(), &salt).map_err(|e| AuthError::Hash(e.to_string()))?.to_string();
        let now = crate::now_ms();
        let ttl_ms = if kind == CredKind::Key { None } else { ttl_ms };
        let record = CredRecord {
            user: user.to_owned(),
            hash,
            created_ms: now,
            expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
            description: description.chars().take(200).collect(),
        };
        Ok((AuthOp::AddCredential { kind, id: id.clone(), record }, secret_str, id))
    }

    /// Apply to `s`: validates first, so an error leaves `s` as it was.
    pub fn apply(&self, s: &mut State) -> Result<(), AuthError> {
        match self {
            AuthOp::AddUser { name, roles, created_ms } => {
                check_name("user", name)?;
                if s.users.contains_key(name) {
                    return Err(AuthError::Exists(format!("user {name:?}")));
                }
                if let Some(r) = roles.iter().find(|r| !s.roles.contains_key(*r)) {
                    return Err(AuthError::NotFound(format!("role {r:?}")));
                }
                s.users.insert(name.clone(), User { roles: roles.clone(), created_ms: *created_ms });
            }
            AuthOp::RemoveUser { name } => {
                s.users.remove(name).ok_or_else(|| AuthError::NotFound(format!("user {name:?}")))?;
                s.tokens.retain(|_, r| r.user != *name);
                s.keys.retain(|_, r| r.user != *name);
            }
            AuthOp::AssignRole { user, role } => {
                if !s.roles.contains_key(role) {
                    return Err(AuthError::NotFound(format!("role {role:?}")));
                }
                let u = s.users.get_mut(user).ok_or_else(|| AuthError::NotFound(format!("user {user:?}")))?;
                if !u.roles.iter().any(|r| r == role) {
                    u.roles.push(role.clone());
                }
            }
            AuthOp::AddRole { name, grants } => {
                check_name("role", name)?;
                if s.roles.contains_key(name) {
                    return Err(AuthError::Exists(format!("role {name:?}")));
                }
                s.roles.insert(name.clone(), Role { grants: grants.clone() });
            }
            AuthOp::RemoveRole { name } => {
                s.roles.remove(name).ok_or_else(|| AuthError::NotFound(format!("role {name:?}")))?;
                for u in s.users.values_mut() {
                    u.roles.retain(|r| r != name);
                }
            }
            AuthOp::Grant { role, grant } => {
                let r = s.roles.get_mut(role).ok_or_else(|| AuthError::NotFound(format!("role {role:?}")))?;
                if !r.grants.contains(grant) {
                    r.grants.push(grant.clone());
                }
            }
            AuthOp::AddCredential { kind, id, record } => {
                if !s.users.contains_key(&record.user) {
                    return Err(AuthError::NotFound(format!("user {:?}", record.user)));
                }
                let map = match kind {
                    CredKind::Token => &mut s.tokens,
                    CredKind::Key => &mut s.keys,
                };
                if map.contains_key(id) {
                    return Err(AuthError::Exists(format!("{} {id:?}", kind.as_str())));
                }
                map.insert(id.clone(), record.clone());
            }
            AuthOp::Revoke { kind, id } => {
                let map = match kind {
                    CredKind::Token => &mut s.tokens,
                    CredKind::Key => &mut s.keys,
                };
                map.remove(id).ok_or_else(|| AuthError::NotFound(format!("{} {id:?}", kind.as_str())))?;
            }
        }
        Ok(())
    }
}

/// The first rules of a node (or cluster) with auth on: role `admin`
/// (admin on every kind, `*`), user `admin`, and a token for it. Returns
/// the state, the token (shown once: written to `admin.token`) and its id.
pub fn bootstrap_state() -> Result<(State, String, String), AuthError> {
    let mut s = State::default();
    let all = ResourceKind::ALL.iter().map(|k| Grant { action: Action::Admin, kind: *k, pattern: "*".parse().expect("'*' is a valid pattern") }).collect();
    AuthOp::AddRole { name: crate::ADMIN_ROLE.into(), grants: all }.apply(&mut s)?;
    AuthOp::add_user(crate::ADMIN_USER, vec![crate::ADMIN_ROLE.into()]).apply(&mut s)?;
    let (op, token, id) = AuthOp::new_credential(CredKind::Token, crate::ADMIN_USER, None, "first admin token")?;
    op.apply(&mut s)?;
    Ok((s, token, id))
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!("{what} name {name:?}: 1..=255 of [A-Za-z0-9-_.@:]")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ops_apply_alike_and_refuse_without_changing() {
        let (mut a, _, admin_id) = bootstrap_state().unwrap();
        let mut b = a.clone();
        let ops = vec![
            AuthOp::AddRole { name: "r".into(), grants: vec!["read:pv:x*".parse().unwrap()] },
            AuthOp::add_user("u", vec!["r".into()]),
            AuthOp::Grant { role: "r".into(), grant: "write:pv:y".parse().unwrap() },
            AuthOp::new_credential(CredKind::Key, "u", Some(5), "k").unwrap().0,
        ];
        for op in &ops {
            op.apply(&mut a).unwrap();
            op.apply(&mut b).unwrap();
        }
        assert_eq!(a, b, "the same ops give the same state");
        assert_eq!(a.keys.values().next().unwrap().expires_ms, None, "keys do not expire");
        let before = a.clone();
        assert!(matches!(AuthOp::add_user("u", vec![]).apply(&mut a), Err(AuthError::Exists(_))));
        assert!(matches!(AuthOp::add_user("v", vec!["nope".into()]).apply(&mut a), Err(AuthError::NotFound(_))));
        assert!(matches!(AuthOp::add_user("bad name", vec![]).apply(&mut a), Err(AuthError::Invalid(_))));
        assert_eq!(a, before, "refused ops change nothing");
        AuthOp::Revoke { kind: CredKind::Token, id: admin_id }.apply(&mut a).unwrap();
        AuthOp::RemoveUser { name: "u".into() }.apply(&mut a).unwrap();
        assert!(a.keys.is_empty() && a.tokens.is_empty());
    }
}
