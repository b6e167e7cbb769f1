//! The rules: actions, resources, grants, roles, users. Pure data and pure
//! functions; the [`crate::Authorizer`] holds them and answers questions.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// What a request does. Levels are ordered: a grant of `admin` also grants
/// `write` and `read`, a grant of `write` also grants `read` (a producer that
/// may append may also read back what it wrote; docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s {
            "read" => Ok(Action::Read),
            "write" => Ok(Action::Write),
            "admin" => Ok(Action::Admin),
            _ => Err(AuthError::Invalid(format!("unknown action {s:?} (read, write, admin)"))),
        }
    }
}

/// The kinds of things a grant names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// Log topics (`log.*` routes, the HTTP `/topics` routes).
    Topic,
    /// Tables of the query API.
    Table,
    /// Queues and senders (queue management routes).
    Queue,
    /// Any other native route, by route name.
    Endpoint,
    /// pvAccess process variables.
    Pv,
    /// Node and cluster administration (config, log level, cluster.*, auth.*).
    Cluster,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 6] =
        [ResourceKind::Topic, ResourceKind::Table, ResourceKind::Queue, ResourceKind::Endpoint, ResourceKind::Pv, ResourceKind::Cluster];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Table => "table",
            ResourceKind::Queue => "queue",
            ResourceKind::Endpoint => "endpoint",
            ResourceKind::Pv => "pv",
            ResourceKind::Cluster => "cluster",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| AuthError::Invalid(format!("unknown resource kind {s:?} (topic, table, queue, endpoint, pv, cluster)")))
    }
}

/// One thing a request touches: borrowed, so a check allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    pub kind: ResourceKind,
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    pub fn new(kind: ResourceKind, name: &'a str) -> Self {
        Self { kind, name }
    }
    pub fn topic(name: &'a str) -> Self {
        Self::new(ResourceKind::Topic, name)
    }
    pub fn table(name: &'a str) -> Self {
        Self::new(ResourceKind::Table, name)
    }
    pub fn queue(name: &'a str) -> Self {
        Self::new(ResourceKind::Queue, name)
    }
    pub fn endpoint(name: &'a str) -> Self {
        Self::new(ResourceKind::Endpoint, name)
    }
    pub fn pv(name: &'a str) -> Self {
        Self::new(ResourceKind::Pv, name)
    }
    /// The node or cluster itself (admin routes).
    pub fn cluster() -> Resource<'static> {
        Resource { kind: ResourceKind::Cluster, name: "cluster" }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// A name pattern: exact (`orders`), prefix (`orders*`), or everything (`*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern {
    /// The exact name, or the prefix without its `*`.
    stem: String,
    prefix: bool,
}

impl Pattern {
    pub fn matches(&self, name: &str) -> bool {
        if self.prefix { name.starts_with(self.stem.as_str()) } else { name == self.stem }
    }
}

/// Longest pattern accepted (names on every surface are shorter).
pub const MAX_NAME_BYTES: usize = 255;

impl TryFrom<String> for Pattern {
    type Error = AuthError;
    fn try_from(s: String) -> Result<Self, AuthError> {
        s.parse()
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.to_string()
    }
}

impl FromStr for Pattern {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        if s.is_empty() || s.len() > MAX_NAME_BYTES {
            return Err(AuthError::Invalid(format!("pattern must be 1..={MAX_NAME_BYTES} bytes")));
        }
        let (stem, prefix) = match s.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (s, false),
        };
        if stem.contains('*') {
            return Err(AuthError::Invalid(format!("pattern {s:?}: '*' only at the end (a prefix)")));
        }
        Ok(Pattern { stem: stem.to_owned(), prefix })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stem)?;
        if self.prefix {
            f.write_str("*")?;
        }
        Ok(())
    }
}

/// One permission: `action` on resources of `kind` whose name matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    pub action: Action,
    pub kind: ResourceKind,
    pub pattern: Pattern,
}

impl Grant {
    pub fn allows(&self, action: Action, resource: Resource<'_>) -> bool {
        self.kind == resource.kind && self.action >= action && self.pattern.matches(resource.name)
    }
}

impl FromStr for Grant {
    type Err = AuthError;
    /// `ACTION:KIND:PATTERN`, e.g. `write:topic:orders*`.
    fn from_str(s: &str) -> Result<Self, AuthError> {
        let mut parts = s.splitn(3, ':');
        let (Some(a), Some(k), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Invalid(format!("grant {s:?}: expected ACTION:KIND:PATTERN, e.g. write:topic:orders*")));
        };
        Ok(Grant { action: a.parse()?, kind: k.parse()?, pattern: p.parse()? })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.action, self.kind, self.pattern)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub roles: Vec<String>,
    pub created_ms: u64,
}

/// A stored credential (token or API key). The secret is never stored, only
/// its argon2 hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredRecord {
    pub user: String,
    pub hash: String,
    pub created_ms: u64,
    /// Milliseconds since the epoch after which it is refused; None: never.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub description: String,
}

impl CredRecord {
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }
}

/// Everything the authorizer knows; persisted as one JSON file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// By token id.
    #[serde(default)]
    pub tokens: BTreeMap<String, CredRecord>,
    /// By key id.
    #[serde(default)]
    pub keys: BTreeMap<String, CredRecord>,
}

impl State {
    /// Whether `user` may do `action` on `resource`: some grant of some role
    /// of the user allows it. Unknown users and roles grant nothing.
    pub fn allows(&self, user: &str, action: Action, resource: Resource<'_>) -> bool {
        let Some(u) = self.users.get(user) else { return false };
        u.roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .any(|role| role.grants.iter().any(|g| g.allows(action, resource)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p: Pattern = "orders*".parse().unwrap();
        assert!(p.matches("orders") && p.matches("orders.eu") && !p.matches("order"));
        let e: Pattern = "orders".parse().unwrap();
        assert!(e.matches("orders") && !e.matches("orders2"));
        let all: Pattern = "*".parse().unwrap();
        assert!(all.matches("") && all.matches("x"));
        assert!("a*b".parse::<Pattern>().is_err());
        assert!("".parse::<Pattern>().is_err());
    }

    #[test]
    fn grants_parse_and_order() {
        let g: Grant = "write:topic:orders*".parse().unwrap();
        assert_eq!(g.to_string(), "write:topic:orders*");
        assert!(g.allows(Action::Read, Resource::topic("orders.x")));
        assert!(g.allows(Action::Write, Resource::topic("orders.x")));
        assert!(!g.allows(Action::Admin, Resource::topic("orders.x")));
        assert!(!g.allows(Action::Read, Resource::queue("orders.x")));
        assert!("write:nope:x".parse::<Grant>().is_err());
        assert!("write:topic".parse::<Grant>().is_err());
    }
}
