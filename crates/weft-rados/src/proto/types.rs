//! Small Ceph value types: entity names, addresses, time, fsid, crc32c.

use super::enc::{encode_versioned, DResult, DecodeError, Put, Reader};
use bytes::BufMut;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// CEPH_ENTITY_TYPE_* bits.
pub mod entity_type {
    pub const MON: u32 = 0x01;
    pub const MDS: u32 = 0x02;
    pub const OSD: u32 = 0x04;
    pub const CLIENT: u32 = 0x08;
    pub const MGR: u32 = 0x10;
    pub const AUTH: u32 = 0x20;
}

/// `client.admin`, `osd.0`: a type and an id string (EntityName).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityName {
    pub ty: u32,
    pub id: String,
}

impl EntityName {
    pub fn client(id: &str) -> Self {
        EntityName { ty: entity_type::CLIENT, id: id.to_string() }
    }
    /// Parses `client.admin` (or a bare `admin`, taken as a client id).
    pub fn parse(s: &str) -> Option<Self> {
        let (t, id) = match s.split_once('.') {
            Some((t, id)) => (t, id),
            None => return Some(Self::client(s)),
        };
        let ty = match t {
            "client" => entity_type::CLIENT,
            "mon" => entity_type::MON,
            "osd" => entity_type::OSD,
            "mds" => entity_type::MDS,
            "mgr" => entity_type::MGR,
            _ => return None,
        };
        Some(EntityName { ty, id: id.to_string() })
    }
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32_le(self.ty);
        out.put_str(&self.id);
    }
    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let ty = r.u32("entity_name.type")?;
        let id = r.string("entity_name.id")?;
        Ok(EntityName { ty, id })
    }
    pub fn type_str(&self) -> &'static str {
        match self.ty {
            entity_type::CLIENT => "client",
            entity_type::MON => "mon",
            entity_type::OSD => "osd",
            entity_type::MDS => "mds",
            entity_type::MGR => "mgr",
            entity_type::AUTH => "auth",
            _ => "unknown",
        }
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.type_str(), self.id)
    }
}

/// entity_addr_t::TYPE_*.
pub mod addr_type {
    pub const NONE: u32 = 0;
    pub const LEGACY: u32 = 1;
    pub const MSGR2: u32 = 2;
    pub const ANY: u32 = 3;
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// entity_addr_t: a protocol type, a nonce and an optional socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityAddr {
    pub ty: u32,
    pub nonce: u32,
    pub addr: Option<SocketAddr>,
}

impl EntityAddr {
    pub fn blank_any(nonce: u32) -> Self {
        EntityAddr { ty: addr_type::ANY, nonce, addr: None }
    }
    pub fn msgr2(addr: SocketAddr) -> Self {
        EntityAddr { ty: addr_type::MSGR2, nonce: 0, addr: Some(addr) }
    }

    /// The feature-aware (MSG_ADDR2 + SERVER_NAUTILUS) encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(1); // marker: new-style encoding
        encode_versioned(out, 1, 1, |b| {
            b.put_u32_le(self.ty);
            b.put_u32_le(self.nonce);
            match self.addr {
                None => b.put_u32_le(0),
                Some(SocketAddr::V4(a)) => {
                    b.put_u32_le(16);
                    b.put_u16_le(AF_INET);
                    b.put_u16(a.port());
                    b.put_slice(&a.ip().octets());
                    b.put_slice(&[0u8; 8]);
                }
                Some(SocketAddr::V6(a)) => {
                    b.put_u32_le(28);
                    b.put_u16_le(AF_INET6);
                    b.put_u16(a.port());
                    b.put_u32(a.flowinfo());
                    b.put_slice(&a.ip().octets());
                    b.put_u32(a.scope_id());
                }
            }
        });
    }

    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let marker = r.u8("entity_addr.marker")?;
        Self::decode_after_marker(marker, r)
    }

    fn decode_after_marker(marker: u8, r: &mut Reader<'_>) -> DResult<Self> {
        if marker == 0 {
            // legacy: u32 type(0), u32 nonce, sockaddr_storage (128 bytes, family big-endian)
            r.u32("entity_addr.legacy")?;
            let nonce = r.u32("entity_addr.nonce")?;
            let ss = r.take(128, "entity_addr.sockaddr")?;
            let addr = sockaddr_from(u16::from_be_bytes([ss[0], ss[1]]), ss.get(2..).unwrap_or(&[]));
            return Ok(EntityAddr { ty: addr_type::LEGACY, nonce, addr });
        }
        if marker != 1 {
            return Err(DecodeError::invalid("entity_addr", format!("marker {marker}")));
        }
        let (_v, mut b) = r.versioned(1, "entity_addr")?;
        let ty = b.u32("entity_addr.type")?;
        let nonce = b.u32("entity_addr.nonce")?;
        let elen = b.u32("entity_addr.len")? as usize;
        let raw = b.take(elen, "entity_addr.sockaddr")?;
        let addr = match raw {
            [f0, f1, rest @ ..] => sockaddr_from(u16::from_le_bytes([*f0, *f1]), rest),
            _ => None,
        };
        Ok(EntityAddr { ty, nonce, addr })
    }
}

fn sockaddr_from(family: u16, rest: &[u8]) -> Option<SocketAddr> {
    match family {
        AF_INET if rest.len() >= 6 => {
            let port = u16::from_be_bytes([rest[0], rest[1]]);
            let ip = Ipv4Addr::new(rest[2], rest[3], rest[4], rest[5]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        AF_INET6 if rest.len() >= 22 => {
            let port = u16::from_be_bytes([rest[0], rest[1]]);
            let mut o = [0u8; 16];
            o.copy_from_slice(rest.get(6..22)?);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

impl fmt::Display for EntityAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.ty {
            addr_type::MSGR2 => "v2",
            addr_type::LEGACY => "v1",
            addr_type::ANY => "any",
            _ => "-",
        };
        match self.addr {
            Some(a) => write!(f, "{t}:{a}/{}", self.nonce),
            None => write!(f, "{t}:-/{}", self.nonce),
        }
    }
}

/// entity_addrvec_t.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddrVec(pub Vec<EntityAddr>);

impl AddrVec {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(2);
        out.put_u32_le(self.0.len() as u32);
        for a in &self.0 {
            a.encode(out);
        }
    }
    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let marker = r.u8("addrvec.marker")?;
        match marker {
            0 | 1 => Ok(AddrVec(vec![EntityAddr::decode_after_marker(marker, r)?])),
            2 => {
                let n = r.count(8, "addrvec.count")?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(EntityAddr::decode(r)?);
                }
                Ok(AddrVec(v))
            }
            m => Err(DecodeError::invalid("addrvec", format!("marker {m}"))),
        }
    }
    /// The msgr2 address, if any.
    pub fn v2(&self) -> Option<&EntityAddr> {
        self.0.iter().find(|a| a.ty == addr_type::MSGR2 || a.ty == addr_type::ANY)
    }
}

impl fmt::Display for AddrVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{a}")?;
        }
        write!(f, "]")
    }
}

/// utime_t / ceph_timespec: seconds and nanoseconds, both u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct UTime {
    pub sec: u32,
    pub nsec: u32,
}

impl UTime {
    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(UTime { sec: r.u32("utime.sec")?, nsec: r.u32("utime.nsec")? })
    }
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32_le(self.sec);
        out.put_u32_le(self.nsec);
    }
    pub fn from_duration(d: std::time::Duration) -> Self {
        UTime { sec: d.as_secs() as u32, nsec: d.subsec_nanos() }
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.sec as f64 + self.nsec as f64 / 1e9
    }
}

/// A cluster fsid (uuid_d, raw 16 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fsid(pub [u8; 16]);

impl fmt::Display for Fsid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        for (i, x) in b.iter().enumerate() {
            if i == 4 || i == 6 || i == 8 || i == 10 {
                write!(f, "-")?;
            }
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

/// Ceph's crc32c: the raw Castagnoli register with a caller-given seed and
/// no final inversion (`ceph_crc32c(seed, data, len)`).
pub fn ceph_crc32c(seed: u32, data: &[u8]) -> u32 {
    // crc32c_append(c, d) computes !update(!c, d); undo both inversions.
    !crc32c::crc32c_append(!seed, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_standard_relation() {
        // standard CRC-32C("123456789") = 0xe3069283 = !ceph_crc32c(!0, ..)
        assert_eq!(!ceph_crc32c(0xffff_ffff, b"123456789"), 0xe306_9283);
        assert_eq!(ceph_crc32c(0xffff_ffff, b""), 0xffff_ffff);
    }

    #[test]
    fn addr_roundtrip() {
        let a = EntityAddr { ty: addr_type::MSGR2, nonce: 7, addr: Some("127.0.0.1:3300".parse().unwrap()) };
        let mut b = Vec::new();
        AddrVec(vec![a.clone()]).encode(&mut b);
        let v = AddrVec::decode(&mut Reader::new(&b)).unwrap();
        assert_eq!(v.0, vec![a]);
        assert_eq!(v.0[0].to_string(), "v2:127.0.0.1:3300/7");
    }

    #[test]
    fn entity_name_parse() {
        let n = EntityName::parse("client.admin").unwrap();
        assert_eq!(n.to_string(), "client.admin");
        assert_eq!(EntityName::parse("bob").unwrap().ty, entity_type::CLIENT);
    }
}
