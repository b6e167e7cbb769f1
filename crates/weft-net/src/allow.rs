//! Deny-by-default allow-lists: which client addresses (CIDRs) may use a TCP
//! or UDP listener, and which peer uids may use a Unix socket. Everything not
//! listed is refused before a byte of it is read, and counted.
//!
//! A list is reloadable (docs/security.md, "Reload"): clones share one
//! set of rules, and [`AllowList::replace`] swaps them for every clone at
//! once, so the accept loops that hold a clone see the new rules at their
//! next accept, and open connections see them through their
//! [`Admission`] at their next request.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::error::NetError;

#[derive(Debug, Clone)]
pub struct AllowList {
    rules: Arc<ArcSwap<Rules>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Rules {
    nets: Vec<IpNet>,
    uids: Vec<u32>,
    any_uid: bool,
}

impl Rules {
    fn allows_ip(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }

    fn allows_uid(&self, uid: Option<u32>) -> bool {
        self.any_uid || uid.is_some_and(|u| self.uids.contains(&u))
    }
}

impl PartialEq for AllowList {
    /// The same rules now (not the same shared list).
    fn eq(&self, other: &Self) -> bool {
        *self.rules.load() == *other.rules.load()
    }
}

impl Eq for AllowList {}

impl Default for AllowList {
    /// Loopback only, and this process's own uid: safe on any machine.
    fn default() -> Self {
        Self::parse(&["127.0.0.0/8", "::1/128", "self"]).unwrap_or_else(|_| Self::nobody())
    }
}

impl AllowList {
    /// Nobody at all.
    pub fn nobody() -> Self {
        Self::from_rules(Rules { nets: vec![], uids: vec![], any_uid: false })
    }

    fn from_rules(r: Rules) -> Self {
        Self { rules: Arc::new(ArcSwap::from_pointee(r)) }
    }

    /// Everyone (`0.0.0.0/0`, `::/0`, any uid): for tests and trusted networks.
    pub fn everyone() -> Self {
        Self::parse(&["0.0.0.0/0", "::/0", "*"]).unwrap_or_else(|_| Self::nobody())
    }

    /// Entries: a CIDR (`10.0.0.0/8`), a single address (`192.0.2.7`), a
    /// uid (`uid:1000`), `self` (this process's uid) or `*` (any uid).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, NetError> {
        let mut list = Rules { nets: vec![], uids: vec![], any_uid: false };
        for e in entries {
            let e = e.as_ref().trim();
            if e == "*" {
                list.any_uid = true;
            } else if e == "self" {
                list.uids.push(current_uid());
            } else if let Some(u) = e.strip_prefix("uid:") {
                list.uids.push(u.parse().map_err(|_| NetError::BadAllow(e.to_owned()))?);
            } else if let Ok(net) = e.parse::<IpNet>() {
                list.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else {
                return Err(NetError::BadAllow(e.to_owned()));
            }
        }
        Ok(Self::from_rules(list))
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.rules.load().allows_ip(ip)
    }

    pub fn allows_uid(&self, uid: Option<u32>) -> bool {
        self.rules.load().allows_uid(uid)
    }

    /// Puts `other`'s rules in force in this list and every clone of it
    /// (a reload; parse the new list first, so a bad entry changes nothing).
    pub fn replace(&self, other: &AllowList) {
        self.rules.store(other.rules.load_full());
    }

    /// Who was admitted through this list, to check again when the list
    /// has been replaced since.
    pub fn admission_ip(&self, ip: IpAddr) -> Admission {
        Admission { list: self.clone(), seen: self.rules.load_full(), who: Subject::Ip(ip), allowed: true }
    }

    pub fn admission_uid(&self, uid: Option<u32>) -> Admission {
        Admission { list: self.clone(), seen: self.rules.load_full(), who: Subject::Uid(uid), allowed: true }
    }
}

#[derive(Debug, Clone, Copy)]
enum Subject {
    Ip(IpAddr),
    Uid(Option<u32>),
}

/// An open connection's admission: which list let it in and who it is.
/// Decision (docs/security.md, "Reload"): a connection whose address a
/// reloaded list no longer admits is closed at its next request, as Kafka
/// and NATS do, rather than kept until it leaves on its own.
#[derive(Debug, Clone)]
pub struct Admission {
    list: AllowList,
    /// The rules last checked against: while the list still holds them,
    /// a check is one pointer comparison.
    seen: Arc<Rules>,
    who: Subject,
    /// The verdict of `seen`.
    allowed: bool,
}

impl Admission {
    /// False once a reload put in force rules that do not admit this
    /// connection's peer.
    pub fn still_allowed(&mut self) -> bool {
        let now = self.list.rules.load();
        if Arc::ptr_eq(&now, &self.seen) {
            return self.allowed;
        }
        self.seen = arc_swap::Guard::into_inner(now);
        self.allowed = match self.who {
            Subject::Ip(ip) => self.seen.allows_ip(ip),
            Subject::Uid(uid) => self.seen.allows_uid(uid),
        };
        self.allowed
    }
}

fn current_uid() -> u32 {
    // Reading /proc/self avoids unsafe libc calls: its owner is our euid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_uids_and_defaults() {
        let a = AllowList::parse(&["10.0.0.0/8", "192.0.2.7", "uid:1000"]).unwrap();
        assert!(a.allows_ip("10.1.2.3".parse().unwrap()));
        assert!(a.allows_ip("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!a.allows_ip("11.0.0.1".parse().unwrap()));
        assert!(a.allows_ip("192.0.2.7".parse().unwrap()));
        assert!(!a.allows_ip("192.0.2.8".parse().unwrap()));
        assert!(a.allows_uid(Some(1000)));
        assert!(!a.allows_uid(Some(0)));
        assert!(!a.allows_uid(None));
        let d = AllowList::default();
        assert!(d.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(d.allows_ip("::1".parse().unwrap()));
        assert!(!d.allows_ip("8.8.8.8".parse().unwrap()));
        assert!(d.allows_uid(Some(current_uid())));
        assert!(AllowList::parse(&["nope"]).is_err());
        assert!(!AllowList::nobody().allows_ip("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn replace_reaches_clones_and_admissions() {
        let a = AllowList::default();
        let held = a.clone();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mut adm = held.admission_ip(lo);
        assert!(adm.still_allowed());
        a.replace(&AllowList::parse(&["10.0.0.0/8"]).unwrap());
        assert!(!held.allows_ip(lo));
        assert!(!adm.still_allowed());
        assert!(!adm.still_allowed(), "stays refused while the list is unchanged");
        a.replace(&AllowList::default());
        assert!(adm.still_allowed());
        assert_eq!(a, AllowList::default());
        let mut u = a.admission_uid(Some(current_uid()));
        a.replace(&AllowList::parse(&["uid:4242424"]).unwrap());
        assert!(!u.still_allowed());
    }
}
