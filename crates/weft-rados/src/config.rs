//! Client configuration: ceph.conf (mon_host, keyring), keyrings, keys
//! given directly.

use crate::error::{Error, Result};
use crate::proto::cephx::{keyring_lookup, CryptoKey};
use crate::proto::compress::{Algorithm, CompressionConfig, DEFAULT_MIN_SIZE};
use crate::proto::conn::{CON_MODE_CRC, CON_MODE_SECURE};
use crate::proto::types::EntityName;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: EntityName,
    pub key: CryptoKey,
    /// msgr2 monitor addresses.
    pub mon_addrs: Vec<SocketAddr>,
    /// Connection modes offered to monitors / OSDs, preferred first.
    pub mon_modes: Vec<u32>,
    pub osd_modes: Vec<u32>,
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    /// A monitor session that answers nothing (not even keepalives) for
    /// this long is dropped and hunting starts (`mon_client_ping_timeout`).
    pub mon_ping_timeout: Duration,
    /// Monitors tried at once while hunting; the first session to finish
    /// authenticating wins (`mon_client_hunt_parallel`).
    pub mon_hunt_parallel: usize,
    /// On-wire compression offered to OSDs (`rados_compression` or Ceph's
    /// `ms_osd_compress_mode` + `ms_osd_compression_algorithm`,
    /// `ms_osd_compress_min_size`, `ms_compress_secure`). Off by default.
    pub compression: CompressionConfig,
    /// msgr2 sessions kept per OSD (`rados_conns_per_osd`, 1..=16). Ops on
    /// one object always use the same one (chosen by a hash of the name), so
    /// they stay ordered.
    pub conns_per_osd: usize,
}

/// Default of `ClientConfig::conns_per_osd` (see docs/BENCHMARKS.md).
pub const DEFAULT_CONNS_PER_OSD: usize = 2;
/// Upper bound of `conns_per_osd`.
pub const MAX_CONNS_PER_OSD: usize = 16;

/// `none|snappy|zstd|lz4` (or a list like Ceph's `snappy,lz4`) -> the
/// methods to offer; `none` or an empty list turns compression off.
pub fn parse_compression(s: &str) -> Result<Vec<Algorithm>> {
    let mut out = Vec::new();
    for t in s.split([',', ';', ' ', '\t']).filter(|t| !t.is_empty()) {
        if t.eq_ignore_ascii_case("none") {
            continue;
        }
        let a = Algorithm::parse(t)
            .ok_or_else(|| Error::Config(format!("compression {t:?}: expected none, snappy, lz4 or zstd")))?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// A parsed ceph.conf: section -> key -> value, keys normalized
/// (spaces and dashes become underscores).
#[derive(Debug, Default, Clone)]
pub struct CephConf {
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

fn norm(k: &str) -> String {
    k.trim().replace([' ', '-'], "_").to_ascii_lowercase()
}

impl CephConf {
    pub fn parse(text: &str) -> Self {
        let mut c = CephConf::default();
        let mut cur = String::from("global");
        for line in text.lines() {
            let l = line.split(['#', ';']).next().unwrap_or("").trim();
            if l.is_empty() {
                continue;
            }
            if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                cur = s.trim().to_string();
                continue;
            }
            if let Some((k, v)) = l.split_once('=') {
                let k = norm(k);
                let v = v.trim().to_string();
                match c.sections.iter_mut().find(|(n, _)| *n == cur) {
                    Some((_, kv)) => kv.push((k, v)),
                    None => c.sections.push((cur.clone(), vec![(k, v)])),
                }
            }
        }
        c
    }
    /// Looks `key` up in `sections` in order (e.g. client.admin, client, global).
    pub fn get(&self, sections: &[&str], key: &str) -> Option<String> {
        let key = norm(key);
        for s in sections {
            if let Some((_, kv)) = self.sections.iter().find(|(n, _)| n == s) {
                if let Some((_, v)) = kv.iter().rev().find(|(k, _)| *k == key) {
                    return Some(v.clone());
                }
            }
        }
        None
    }
}

/// Parses a mon_host value into msgr2 addresses. Accepts
/// `[v2:ip:port,v1:ip:port]` vectors, plain `ip[:port]` (3300 assumed for
/// msgr2) and host names.
pub fn parse_mon_host(s: &str) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    // split on commas/spaces at depth 0 of brackets
    let mut groups = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for ch in s.chars() {
        match ch {
            '[' => {
                depth += 1;
                cur.push(ch);
            }
            ']' => {
                depth -= 1;
                cur.push(ch);
            }
            ',' | ' ' | ';' if depth == 0 => {
                if !cur.trim().is_empty() {
                    groups.push(cur.trim().to_string());
                }
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        groups.push(cur.trim().to_string());
    }
    for g in groups {
        let inner = g.trim_start_matches('[').trim_end_matches(']');
        let mut found = None;
        let mut fallback = None;
        for a in inner.split(',') {
            let a = a.trim();
            if let Some(v2) = a.strip_prefix("v2:") {
                found = Some(v2.split('/').next().unwrap_or(v2).to_string());
            } else if let Some(v1) = a.strip_prefix("v1:") {
                // msgr1 only: assume the default msgr2 port on the same host
                let host = v1.rsplit_once(':').map(|(h, _)| h).unwrap_or(v1);
                fallback = Some(format!("{host}:3300"));
            } else if !a.is_empty() {
                let a = a.split('/').next().unwrap_or(a);
                fallback = Some(match a.rsplit_once(':') {
                    Some((h, "6789")) => format!("{h}:3300"),
                    Some(_) => a.to_string(),
                    None => format!("{a}:3300"),
                });
            }
        }
        let Some(a) = found.or(fallback) else { continue };
        let addrs = a
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("mon address {a}: {e}")))?;
        out.extend(addrs);
    }
    if out.is_empty() {
        return Err(Error::Config(format!("no monitor addresses in {s:?}")));
    }
    Ok(out)
}

pub fn parse_mode(s: &str) -> Result<Vec<u32>> {
    let mut v = Vec::new();
    for m in s.split([',', ' ']).filter(|m| !m.is_empty()) {
        v.push(match m {
            "secure" => CON_MODE_SECURE,
            "crc" => CON_MODE_CRC,
            other => return Err(Error::Config(format!("unknown connection mode {other}"))),
        });
    }
    if v.is_empty() {
        return Err(Error::Config("empty connection mode list".into()));
    }
    Ok(v)
}

/// Where a client's settings come from; anything left None falls back to
/// the conf file.
#[derive(Debug, Default, Clone)]
pub struct ConfigSource {
    pub conf: Option<String>,
    pub keyring: Option<String>,
    pub key: Option<String>,
    pub id: Option<String>,
    pub mon_host: Option<String>,
    pub mon_mode: Option<String>,
    pub osd_mode: Option<String>,
    /// `none|snappy|zstd|lz4`: overrides the conf file's compression keys.
    pub compression: Option<String>,
    /// Overrides `rados_conns_per_osd`.
    pub conns_per_osd: Option<usize>,
}

impl ClientConfig {
    pub fn load(src: &ConfigSource) -> Result<Self> {
        let name = EntityName::parse(src.id.as_deref().unwrap_or("client.admin"))
            .ok_or_else(|| Error::Config(format!("bad entity name {:?}", src.id)))?;
        let conf_path = src.conf.clone().or_else(|| std::env::var("CEPH_CONF").ok());
        let conf = match &conf_path {
            Some(p) => CephConf::parse(
                &std::fs::read_to_string(p).map_err(|e| Error::Config(format!("reading {p}: {e}")))?,
            ),
            None => match std::fs::read_to_string("/etc/ceph/ceph.conf") {
                Ok(t) => CephConf::parse(&t),
                Err(_) => CephConf::default(),
            },
        };
        let full = name.to_string();
        let secs = [full.as_str(), name.type_str(), "global"];
        let mon_host = src
            .mon_host
            .clone()
            .or_else(|| conf.get(&secs, "mon_host"))
            .ok_or_else(|| Error::Config("no mon_host (give --conf or --mon-host)".into()))?;
        let mon_addrs = parse_mon_host(&mon_host)?;
        let key = if let Some(k) = src.key.clone().or_else(|| std::env::var("WEFT_CEPH_KEY").ok()) {
            CryptoKey::from_base64(&k).map_err(|e| Error::Config(e.to_string()))?
        } else {
            let path = src
                .keyring
                .clone()
                .or_else(|| conf.get(&secs, "keyring"))
                .unwrap_or_else(|| format!("/etc/ceph/ceph.{full}.keyring"));
            let path = path.replace("$name", &full).replace("$cluster", "ceph");
            let text = std::fs::read_to_string(Path::new(&path))
                .map_err(|e| Error::Config(format!("reading keyring {path}: {e}")))?;
            keyring_lookup(&text, &name).map_err(|e| Error::Config(format!("{path}: {e}")))?
        };
        let mon_modes = match src.mon_mode.clone().or_else(|| conf.get(&secs, "ms_mon_client_mode")) {
            Some(m) => parse_mode(&m)?,
            None => vec![CON_MODE_SECURE, CON_MODE_CRC],
        };
        let osd_modes = match src.osd_mode.clone().or_else(|| conf.get(&secs, "ms_client_mode")) {
            Some(m) => parse_mode(&m)?,
            None => vec![CON_MODE_CRC, CON_MODE_SECURE],
        };
        let secs_opt = |key: &str, default: f64| -> Result<Duration> {
            match conf.get(&secs, key) {
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e6)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| Error::Config(format!("{key} = {v:?}: expected a positive number of seconds"))),
                None => Ok(Duration::from_secs_f64(default)),
            }
        };
        let mon_hunt_parallel = match conf.get(&secs, "mon_client_hunt_parallel") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or_else(|| Error::Config(format!("mon_client_hunt_parallel = {v:?}: expected 1..16")))?,
            None => 3,
        };
        let methods = match src.compression.clone().or_else(|| conf.get(&secs, "rados_compression")) {
            Some(v) => parse_compression(&v)?,
            // Ceph's keys: a mode other than none turns it on with the
            // algorithm list (Ceph's default: snappy)
            None => match conf.get(&secs, "ms_osd_compress_mode").as_deref().map(str::trim) {
                None | Some("none") => Vec::new(),
                Some("passive" | "aggressive" | "force") => {
                    parse_compression(&conf.get(&secs, "ms_osd_compression_algorithm").unwrap_or_else(|| "snappy".into()))?
                }
                Some(m) => return Err(Error::Config(format!("ms_osd_compress_mode = {m:?}: expected none, passive, aggressive or force"))),
            },
        };
        let min_size = match conf.get(&secs, "ms_osd_compress_min_size") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| Error::Config(format!("ms_osd_compress_min_size = {v:?}: expected bytes")))?,
            None => DEFAULT_MIN_SIZE,
        };
        let secure = match conf.get(&secs, "ms_compress_secure").as_deref().map(str::trim) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(v) => return Err(Error::Config(format!("ms_compress_secure = {v:?}: expected true or false"))),
        };
        let conns_per_osd = match src.conns_per_osd {
            Some(n) => n,
            None => match conf.get(&secs, "rados_conns_per_osd") {
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| Error::Config(format!("rados_conns_per_osd = {v:?}: expected 1..{MAX_CONNS_PER_OSD}")))?,
                None => DEFAULT_CONNS_PER_OSD,
            },
        };
        if !(1..=MAX_CONNS_PER_OSD).contains(&conns_per_osd) {
            return Err(Error::Config(format!("conns_per_osd = {conns_per_osd}: expected 1..{MAX_CONNS_PER_OSD}")));
        }
        Ok(ClientConfig {
            compression: CompressionConfig { methods, min_size, secure },
            conns_per_osd,
            name,
            key,
            mon_addrs,
            mon_modes,
            osd_modes,
            op_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            mon_ping_timeout: secs_opt("mon_client_ping_timeout", 30.0)?,
            mon_hunt_parallel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mon_host_forms() {
        let v = parse_mon_host("[v2:127.0.0.1:3300,v1:127.0.0.1:6789]").unwrap();
        assert_eq!(v, vec!["127.0.0.1:3300".parse().unwrap()]);
        let v = parse_mon_host("127.0.0.1:6789, 127.0.0.2").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], "127.0.0.2:3300".parse().unwrap());
        assert!(parse_mon_host("").is_err());
    }

    #[test]
    fn conf_lookup() {
        let c = CephConf::parse("[global]\nmon host = 1.2.3.4\n[client]\nkeyring = /k # comment\n");
        assert_eq!(c.get(&["client.admin", "client", "global"], "mon_host").unwrap(), "1.2.3.4");
        assert_eq!(c.get(&["client", "global"], "keyring").unwrap(), "/k");
    }
}
