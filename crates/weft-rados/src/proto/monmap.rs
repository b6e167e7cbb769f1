//! MonMap (v6..v9 encodings; Pacific writes v9).

use super::enc::{DResult, DecodeError, Reader};
use super::types::{AddrVec, Fsid, UTime};

#[derive(Debug, Clone, PartialEq)]
pub struct MonInfo {
    pub name: String,
    pub addrs: AddrVec,
    pub priority: u16,
    pub weight: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MonMap {
    pub fsid: Fsid,
    pub epoch: u32,
    pub last_changed: UTime,
    pub created: UTime,
    pub persistent_features: u64,
    pub optional_features: u64,
    /// Monitors in rank order.
    pub mons: Vec<MonInfo>,
    pub min_mon_release: u8,
}

impl MonMap {
    pub fn decode(buf: &[u8]) -> DResult<Self> {
        let mut r = Reader::new(buf);
        let (v, mut b) = r.versioned(9, "monmap")?;
        if v < 6 {
            return Err(DecodeError::invalid("monmap", format!("version {v} predates mon_info_t (v6)")));
        }
        let fsid = Fsid(b.array("monmap.fsid")?);
        let epoch = b.u32("monmap.epoch")?;
        let last_changed = UTime::decode(&mut b)?;
        let created = UTime::decode(&mut b)?;
        let mut persistent_features = 0;
        let mut optional_features = 0;
        if v >= 4 {
            for slot in [&mut persistent_features, &mut optional_features] {
                let (_fv, mut fb) = b.versioned(1, "mon_feature_t")?;
                *slot = fb.u64("mon_feature_t.features")?;
            }
        }
        let n = b.count(8, "monmap.mon_info")?;
        let mut infos = Vec::with_capacity(n);
        for _ in 0..n {
            let key = b.string("monmap.mon_info.key")?;
            let (iv, mut ib) = b.versioned(5, "mon_info_t")?;
            let name = ib.string("mon_info_t.name")?;
            let addrs = AddrVec::decode(&mut ib)?;
            let priority = if iv >= 2 { ib.u16("mon_info_t.priority")? } else { 0 };
            let weight = if iv >= 4 { ib.u16("mon_info_t.weight")? } else { 0 };
            let name = if name.is_empty() { key } else { name };
            infos.push(MonInfo { name, addrs, priority, weight });
        }
        let nr = b.count(4, "monmap.ranks")?;
        let mut ranks = Vec::with_capacity(nr);
        for _ in 0..nr {
            ranks.push(b.string("monmap.rank")?);
        }
        let min_mon_release = if v >= 7 { b.u8("monmap.min_mon_release")? } else { 0 };
        // mon_info is a map keyed by name; the rank order is `ranks`.
        let mut mons = Vec::with_capacity(infos.len());
        for name in &ranks {
            if let Some(i) = infos.iter().position(|m| &m.name == name) {
                mons.push(infos.swap_remove(i));
            }
        }
        mons.extend(infos);
        Ok(MonMap { fsid, epoch, last_changed, created, persistent_features, optional_features, mons, min_mon_release })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONMAP: &[u8] = include_bytes!("../../tests/data/monmap.bin");

    #[test]
    fn decodes_capture() {
        let m = MonMap::decode(MONMAP).unwrap();
        assert_eq!(m.fsid.to_string(), "2a0a09ec-5c74-4eda-90c0-5e0802f1ab7f");
        assert_eq!(m.epoch, 1);
        assert_eq!(m.min_mon_release, 16);
        assert_eq!(m.mons.len(), 1);
        assert_eq!(m.mons[0].name, "a");
        assert_eq!(m.mons[0].addrs.to_string(), "[v2:127.0.0.1:3300/0,v1:127.0.0.1:6789/0]");
        assert_eq!(m.persistent_features, 0xff);
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        for n in 0..MONMAP.len() {
            assert!(MonMap::decode(&MONMAP[..n]).is_err(), "prefix {n} decoded");
        }
    }
}
