//! Deny-by-default allow-lists: which client addresses (CIDRs) may use a TCP
//! or UDP listener, and which peer uids may use a Unix socket. Everything not
//! listed is refused before a byte of it is read, and counted.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::NetError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
    uids: Vec<u32>,
    any_uid: bool,
}

impl Default for AllowList {
    /// Loopback only, and this process's own uid: safe on any machine.
    fn default() -> Self {
        Self::parse(&["127.0.0.0/8", "::1/128", "self"]).unwrap_or_else(|_| Self::nobody())
    }
}

impl AllowList {
    /// Nobody at all.
    pub fn nobody() -> Self {
        Self { nets: vec![], uids: vec![], any_uid: false }
    }

    /// Everyone (`0.0.0.0/0`, `::/0`, any uid): for tests and trusted networks.
    pub fn everyone() -> Self {
        Self::parse(&["0.0.0.0/0", "::/0", "*"]).unwrap_or_else(|_| Self::nobody())
    }

    /// Entries: a CIDR (`10.0.0.0/8`), a single address (`192.0.2.7`), a
    /// uid (`uid:1000`), `self` (this process's uid) or `*` (any uid).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, NetError> {
        let mut list = Self::nobody();
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
        Ok(list)
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }

    pub fn allows_uid(&self, uid: Option<u32>) -> bool {
        self.any_uid || uid.is_some_and(|u| self.uids.contains(&u))
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
}
