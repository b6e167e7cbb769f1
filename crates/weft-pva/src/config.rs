//! Configuration from the standard EPICS_PVA_* / EPICS_PVAS_* environment
//! variables (same names and defaults as pvxs and pvAccessCPP).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub const DEFAULT_TCP_PORT: u16 = 5075;
pub const DEFAULT_UDP_PORT: u16 = 5076;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|s| s.trim().to_string())
}

fn env_first(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env(n))
}

fn env_bool(names: &[&str], default: bool) -> bool {
    match env_first(names) {
        Some(v) => !matches!(v.to_ascii_uppercase().as_str(), "NO" | "N" | "FALSE" | "0"),
        None => default,
    }
}

fn env_port(names: &[&str], default: u16) -> u16 {
    env_first(names).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Parse a space/comma separated list of `host[:port]` entries.
pub fn parse_addr_list(s: &str, default_port: u16) -> Vec<SocketAddr> {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            if let Ok(sa) = e.parse::<SocketAddr>() {
                return Some(sa);
            }
            if let Ok(ip) = e.parse::<IpAddr>() {
                return Some(SocketAddr::new(ip, default_port));
            }
            let with_port = if e.contains(':') { e.to_string() } else { format!("{e}:{default_port}") };
            with_port.to_socket_addrs().ok().and_then(|mut it| it.find(|a| a.is_ipv4()))
        })
        .collect()
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Interface to bind (EPICS_PVAS_INTF_ADDR_LIST, first entry; default 0.0.0.0).
    pub bind: IpAddr,
    /// TCP port (EPICS_PVAS_SERVER_PORT / EPICS_PVA_SERVER_PORT; 0 = random).
    pub tcp_port: u16,
    /// UDP search port (EPICS_PVAS_BROADCAST_PORT / EPICS_PVA_BROADCAST_PORT; 0 = random).
    pub udp_port: u16,
    /// Where beacons go (EPICS_PVAS_BEACON_ADDR_LIST / EPICS_PVA_ADDR_LIST,
    /// plus 255.255.255.255 when auto is on).
    pub beacon_addrs: Vec<SocketAddr>,
    /// EPICS_PVA_BEACON_PERIOD (seconds, default 15).
    pub beacon_period: Duration,
    /// If the TCP port is taken, fall back to a random one (as pvxs does).
    pub tcp_port_fallback: bool,
    /// Close a client connection silent for this long (2 x EPICS_PVA_CONN_TMO, default 60 s).
    pub idle_timeout: Duration,
    /// Client addresses admitted (TCP connections and UDP searches); everyone
    /// else is refused before a byte is read. Default loopback only, like
    /// every other Weft listener (config key `pva.allow`).
    pub allow: weft_net::AllowList,
    /// Per-PV read/write rules (config key `pva.access_file`; default: no
    /// rules, everyone admitted may read and write).
    pub access: std::sync::Arc<crate::server::AccessRules>,
    /// Bytes one connection's send queue may hold before senders wait
    /// (config key `pva.send_queue_bytes`, default 16 MiB, 64 KiB..1 GiB).
    /// Also the flow-control window for clients that acknowledge marks.
    pub send_queue_bytes: usize,
    /// A second check beside `access` (a node's roles, docs/security.md,
    /// "pvAccess"); both must allow. None: the access rules alone.
    pub access_hook: Option<crate::server::AccessHookRef>,
}

/// Default of `pva.send_queue_bytes`.
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 16 << 20;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            tcp_port: DEFAULT_TCP_PORT,
            udp_port: DEFAULT_UDP_PORT,
            beacon_addrs: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), DEFAULT_UDP_PORT)],
            beacon_period: Duration::from_secs(15),
            tcp_port_fallback: true,
            idle_timeout: Duration::from_secs(60),
            allow: weft_net::AllowList::default(),
            access: Default::default(),
            send_queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
            access_hook: None,
        }
    }
}

impl ServerConfig {
    /// Read the environment.
    pub fn from_env() -> Self {
        let mut c = ServerConfig::default();
        if let Some(list) = env("EPICS_PVAS_INTF_ADDR_LIST") {
            if let Some(ip) = list.split_whitespace().find_map(|e| e.split(':').next().and_then(|h| h.parse().ok())) {
                c.bind = ip;
            }
        }
        c.tcp_port = env_port(&["EPICS_PVAS_SERVER_PORT", "EPICS_PVA_SERVER_PORT"], DEFAULT_TCP_PORT);
        c.udp_port = env_port(&["EPICS_PVAS_BROADCAST_PORT", "EPICS_PVA_BROADCAST_PORT"], DEFAULT_UDP_PORT);
        let beacon_port = c.udp_port;
        let mut addrs = env_first(&["EPICS_PVAS_BEACON_ADDR_LIST", "EPICS_PVA_ADDR_LIST"])
            .map(|s| parse_addr_list(&s, beacon_port))
            .unwrap_or_default();
        if env_bool(&["EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "EPICS_PVA_AUTO_ADDR_LIST"], true) {
            let bcast = if c.bind.is_loopback() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::BROADCAST) };
            addrs.push(SocketAddr::new(bcast, beacon_port));
        }
        c.beacon_addrs = addrs;
        if let Some(t) = env("EPICS_PVA_CONN_TMO").and_then(|v| v.parse::<f64>().ok()) {
            if t > 0.0 && t < 86400.0 {
                c.idle_timeout = Duration::from_secs_f64(2.0 * t);
            }
        }
        if let Some(p) = env("EPICS_PVA_BEACON_PERIOD").and_then(|v| v.parse::<f64>().ok()) {
            if p > 0.0 && p < 86400.0 {
                c.beacon_period = Duration::from_secs_f64(p);
            }
        }
        c
    }

    /// Loopback only, random ports, beacons to loopback: for tests and demos.
    pub fn isolated() -> Self {
        ServerConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tcp_port: 0,
            udp_port: 0,
            beacon_addrs: vec![],
            beacon_period: Duration::from_secs(15),
            tcp_port_fallback: true,
            idle_timeout: Duration::from_secs(60),
            allow: weft_net::AllowList::default(),
            access: Default::default(),
            send_queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
            access_hook: None,
        }
    }

    /// Admit these clients (CIDRs, addresses; see weft-net's allow-list).
    pub fn with_allow<S: AsRef<str>>(mut self, entries: &[S]) -> crate::Result<Self> {
        self.allow = weft_net::AllowList::parse(entries).map_err(|e| crate::Error::Config(format!("pva.allow: {e}")))?;
        Ok(self)
    }

    /// Enforce the access rules in `path` (TOML; empty path: no rules).
    pub fn with_access_file(mut self, path: &str) -> crate::Result<Self> {
        if !path.is_empty() {
            self.access = std::sync::Arc::new(crate::server::AccessRules::load(path)?);
        }
        Ok(self)
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// UDP search destinations (EPICS_PVA_ADDR_LIST plus broadcast when auto).
    pub search_addrs: Vec<SocketAddr>,
    /// TCP name servers (EPICS_PVA_NAME_SERVERS).
    pub name_servers: Vec<SocketAddr>,
    /// Default UDP port for list entries without a port (EPICS_PVA_BROADCAST_PORT).
    pub udp_port: u16,
    /// Time allowed for search + connect.
    pub timeout: Duration,
    /// Send an ECHO this often on every connection (EPICS_PVA_CONN_TMO / 2,
    /// default 15 s): keeps servers from closing idle connections and
    /// detects a dead server.
    pub echo_interval: Duration,
    /// A connection that receives nothing (not even an echo reply) for this
    /// long is dead: closed, and its monitors resubscribe (EPICS_PVA_CONN_TMO,
    /// default 30 s).
    pub dead_after: Duration,
    /// Where to listen for server beacons (default 0.0.0.0 on the broadcast
    /// port, shared with SO_REUSEPORT; None: do not listen). A beacon from a
    /// new server, a restarted one (new GUID) or one whose channel set
    /// changed (change count) makes every pending search go out again now.
    pub beacon_listen: Option<SocketAddr>,
    /// UDP search back-off: first retry after `search_delay_initial`,
    /// doubling up to `search_delay_max` (defaults 100 ms and 2 s).
    pub search_delay_initial: Duration,
    pub search_delay_max: Duration,
}

/// EPICS_PVA_CONN_TMO's default (seconds).
pub const DEFAULT_CONN_TMO_SECS: f64 = 30.0;

fn conn_tmo() -> Duration {
    let t = env("EPICS_PVA_CONN_TMO").and_then(|v| v.parse::<f64>().ok()).filter(|t| *t > 0.0 && *t < 86400.0);
    Duration::from_secs_f64(t.unwrap_or(DEFAULT_CONN_TMO_SECS))
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            search_addrs: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), DEFAULT_UDP_PORT)],
            name_servers: vec![],
            udp_port: DEFAULT_UDP_PORT,
            timeout: Duration::from_secs(5),
            echo_interval: Duration::from_secs_f64(DEFAULT_CONN_TMO_SECS / 2.0),
            dead_after: Duration::from_secs_f64(DEFAULT_CONN_TMO_SECS),
            beacon_listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_UDP_PORT)),
            search_delay_initial: Duration::from_millis(100),
            search_delay_max: Duration::from_secs(2),
        }
    }
}

impl ClientConfig {
    pub fn from_env() -> Self {
        let udp_port = env_port(&["EPICS_PVA_BROADCAST_PORT"], DEFAULT_UDP_PORT);
        let mut search = env("EPICS_PVA_ADDR_LIST").map(|s| parse_addr_list(&s, udp_port)).unwrap_or_default();
        if env_bool(&["EPICS_PVA_AUTO_ADDR_LIST"], true) {
            search.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), udp_port));
        }
        let name_servers = env("EPICS_PVA_NAME_SERVERS")
            .map(|s| parse_addr_list(&s, DEFAULT_TCP_PORT))
            .unwrap_or_default();
        let tmo = conn_tmo();
        ClientConfig {
            search_addrs: search,
            name_servers,
            udp_port,
            echo_interval: tmo / 2,
            dead_after: tmo,
            beacon_listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), udp_port)),
            ..Default::default()
        }
    }

    /// Search only the given UDP address (e.g. an isolated test server); no beacon listening.
    pub fn unicast(addr: SocketAddr) -> Self {
        ClientConfig { search_addrs: vec![addr], name_servers: vec![], udp_port: addr.port(), beacon_listen: None, ..Default::default() }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addr_lists() {
        let v = parse_addr_list("127.0.0.1:1234 10.0.0.1,127.0.0.2:9", 5076);
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].port(), 5076);
        assert_eq!(v[2].port(), 9);
    }
}
