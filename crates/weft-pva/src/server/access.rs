//! Access security for served PVs, in the spirit of EPICS access security
//! (ACF rules per PV group, user and host) with `ca` authentication: each
//! channel gets `none`, `read` or `write` from the first rule that matches
//! its PV name, the client's `ca` user and the client's address.
//!
//! Decision: hosts are matched on the socket's peer address (CIDRs), not on
//! the host name the client claims in its `ca` credentials, which any
//! client can set to anything.

use std::net::IpAddr;

use serde::Deserialize;

use crate::error::{Error, Result};

/// What a client may do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// The channel cannot be created.
    None,
    /// get, monitor, get-field, array get.
    Read,
    /// Also put, put-get, array put / set-length, process, RPC.
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pv: String,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    hosts: Option<Vec<String>>,
    access: Access,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    default: Access,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Clone)]
struct Rule {
    pv: String,
    users: Option<Vec<String>>,
    hosts: Option<weft_net::AllowList>,
    access: Access,
}

/// A second check beside the access rules, for every channel operation,
/// with the level it needs (`Read`: get, monitor, array get; `Write`: put,
/// put-get, array put / set-length, process, RPC). Both must allow. A Weft
/// node plugs its roles in here (docs/security.md, "pvAccess"). `user`: the
/// client's `ca` user name (None: anonymous). Err: why, for the client.
pub trait AccessHook: Send + Sync {
    fn check(&self, pv: &str, user: Option<&str>, peer: std::net::SocketAddr, need: Access) -> std::result::Result<(), String>;
}

/// A shared [`AccessHook`] (Debug so configurations stay printable).
#[derive(Clone)]
pub struct AccessHookRef(pub std::sync::Arc<dyn AccessHook>);

impl std::fmt::Debug for AccessHookRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessHook")
    }
}

/// Most rules a file may hold (a limit, like everything read from outside).
pub const RULES_MAX: usize = 10_000;

/// Parsed access rules. The first rule whose `pv` glob, `users` (omitted:
/// anyone, anonymous included) and `hosts` (omitted: any address) all match
/// decides; when none matches, `default` does.
#[derive(Debug, Clone)]
pub struct AccessRules {
    default: Access,
    rules: Vec<Rule>,
}

impl Default for AccessRules {
    /// No rules: everyone the allow-list admits may read and write (the
    /// behaviour before access security existed).
    fn default() -> Self {
        AccessRules { default: Access::Write, rules: vec![] }
    }
}

impl AccessRules {
    /// Parse the TOML rules format (docs/pva.md, "Access").
    pub fn parse_toml(text: &str) -> Result<Self> {
        let raw: RawRules = toml::from_str(text).map_err(|e| Error::Config(format!("access rules: {e}")))?;
        if raw.rule.len() > RULES_MAX {
            return Err(Error::Config(format!("access rules: {} rules > {RULES_MAX}", raw.rule.len())));
        }
        let mut rules = Vec::with_capacity(raw.rule.len());
        for r in raw.rule {
            let hosts = match r.hosts {
                Some(h) => Some(
                    weft_net::AllowList::parse(&h).map_err(|e| Error::Config(format!("access rule for {:?}: {e}", r.pv)))?,
                ),
                None => None,
            };
            rules.push(Rule { pv: r.pv, users: r.users, hosts, access: r.access });
        }
        Ok(AccessRules { default: raw.default, rules })
    }

    /// Read and parse a rules file.
    pub fn load(path: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("reading access rules {path}: {e}")))?;
        Self::parse_toml(&text)
    }

    /// Access of `user` (None: anonymous) from `host` to `pv`.
    pub fn access(&self, pv: &str, user: Option<&str>, host: IpAddr) -> Access {
        for r in &self.rules {
            if !glob(&r.pv, pv) {
                continue;
            }
            if let Some(users) = &r.users {
                if !user.is_some_and(|u| users.iter().any(|x| x == u)) {
                    continue;
                }
            }
            if let Some(h) = &r.hosts {
                if !h.allows_ip(host) {
                    continue;
                }
            }
            return r.access;
        }
        self.default
    }
}

/// `*` matches any run of characters, `?` one character; the rest literally.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point: linear-ish, no recursion
    // (a hostile pattern cannot blow the stack).
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("plant:*", "plant:temp"));
        assert!(glob("*:sp", "a:b:sp"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*", ""));
        assert!(!glob("plant:*", "other:temp"));
        assert!(glob("p*t*p", "plant:temp"));
    }

    #[test]
    fn first_match_wins() {
        let r = AccessRules::parse_toml(
            r#"
default = "read"
[[rule]]
pv = "secret:*"
access = "none"
[[rule]]
pv = "plant:*"
users = ["alice"]
hosts = ["127.0.0.0/8"]
access = "write"
"#,
        )
        .unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let far: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(r.access("secret:x", Some("alice"), lo), Access::None);
        assert_eq!(r.access("plant:sp", Some("alice"), lo), Access::Write);
        assert_eq!(r.access("plant:sp", Some("alice"), far), Access::Read);
        assert_eq!(r.access("plant:sp", Some("bob"), lo), Access::Read);
        assert_eq!(r.access("plant:sp", None, lo), Access::Read);
        assert!(AccessRules::parse_toml("default = \"maybe\"").is_err());
        assert!(AccessRules::parse_toml("default = \"read\"\n[[rule]]\npv=\"x\"\nhosts=[\"nonsense\"]\naccess=\"read\"").is_err());
    }
}
