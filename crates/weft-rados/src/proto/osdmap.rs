//! OSDMap: full and incremental decoding (the client-usable section of the
//! v7+ wrapper, as Pacific sends it), pg_pool_t, and object placement:
//! object -> raw PG -> PG -> up/acting OSDs.

use super::crush::{self, CrushMap, ITEM_NONE, PlacementError};
use super::enc::{DResult, DecodeError, Reader};
use super::types::{AddrVec, Fsid, UTime};
use std::collections::BTreeMap;
use std::sync::Arc;

pub mod osd_state {
    pub const EXISTS: u32 = 1;
    pub const UP: u32 = 2;
    pub const AUTOOUT: u32 = 4;
    pub const NEW: u32 = 8;
}
pub const DEFAULT_PRIMARY_AFFINITY: u32 = 0x10000;
pub const MAX_PRIMARY_AFFINITY: u32 = 0x10000;
/// Upper bound for max_osd from the wire (Ceph itself caps far lower).
const MAX_OSD_LIMIT: usize = 1 << 20;

pub mod pool_flag {
    pub const HASHPSPOOL: u64 = 1;
    pub const FULL: u64 = 2;
}

pub const POOL_TYPE_REPLICATED: u8 = 1;
pub const POOL_TYPE_ERASURE: u8 = 3;
pub const STR_HASH_LINUX: u8 = 1;
pub const STR_HASH_RJENKINS: u8 = 2;

/// pg_t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgId {
    pub pool: u64,
    pub seed: u32,
}

impl PgId {
    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let v = r.u8("pg_t.version")?;
        if v != 1 {
            return Err(DecodeError::invalid("pg_t", format!("version {v}")));
        }
        let pool = r.u64("pg_t.pool")?;
        let seed = r.u32("pg_t.seed")?;
        r.i32("pg_t.preferred")?;
        Ok(PgId { pool, seed })
    }
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(1);
        out.extend_from_slice(&self.pool.to_le_bytes());
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.extend_from_slice(&(-1i32).to_le_bytes());
    }
}

impl std::fmt::Display for PgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:x}", self.pool, self.seed)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSnap {
    pub snapid: u64,
    /// When the snapshot was taken (the monitor's clock).
    pub stamp: UTime,
    pub name: String,
}

/// The fields of pg_pool_t a client needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PgPool {
    pub ty: u8,
    pub size: u8,
    pub crush_rule: u8,
    pub object_hash: u8,
    pub pg_num: u32,
    pub pgp_num: u32,
    pub last_change: u32,
    pub snap_seq: u64,
    pub snaps: Vec<PoolSnap>,
    pub flags: u64,
    pub min_size: u8,
    pub quota_max_bytes: u64,
    pub quota_max_objects: u64,
    pub tier_of: i64,
    pub read_tier: i64,
    pub write_tier: i64,
    pub stripe_width: u32,
    pub last_force_op_resend: u32,
    pub application_metadata: Vec<String>,
}

fn cbits(v: u32) -> u32 {
    32 - v.leading_zeros()
}

/// ceph_stable_mod: a modulus that moves few inputs when `b` grows.
pub fn stable_mod(x: u32, b: u32, bmask: u32) -> u32 {
    if (x & bmask) < b {
        x & bmask
    } else {
        x & (bmask >> 1)
    }
}

impl PgPool {
    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let (ev, mut p) = r.versioned(5, "pg_pool_t")?;
        if ev < 5 {
            return Err(DecodeError::invalid("pg_pool_t", format!("version {ev} < 5")));
        }
        let ty = p.u8("pool.type")?;
        let size = p.u8("pool.size")?;
        let crush_rule = p.u8("pool.crush_rule")?;
        let object_hash = p.u8("pool.object_hash")?;
        let pg_num = p.u32("pool.pg_num")?;
        let pgp_num = p.u32("pool.pgp_num")?;
        p.skip(8, "pool.lpg")?;
        let last_change = p.u32("pool.last_change")?;
        let snap_seq = p.u64("pool.snap_seq")?;
        p.u32("pool.snap_epoch")?;
        let n = p.count(14, "pool.snaps")?;
        let mut snaps = Vec::with_capacity(n);
        for _ in 0..n {
            p.u64("pool.snaps.key")?;
            let (_sv, mut s) = p.versioned(2, "pool_snap_info_t")?;
            let snapid = s.u64("pool_snap.snapid")?;
            let stamp = UTime::decode(&mut s)?;
            let name = s.string("pool_snap.name")?;
            snaps.push(PoolSnap { snapid, stamp, name });
        }
        let n = p.count(16, "pool.removed_snaps")?;
        p.skip(n * 16, "pool.removed_snaps")?;
        p.u64("pool.auid")?;
        let flags = p.u64("pool.flags")?;
        p.u32("pool.crash_replay_interval")?;
        let min_size = if ev >= 7 { p.u8("pool.min_size")? } else { size - size / 2 };
        let (mut quota_max_bytes, mut quota_max_objects) = (0, 0);
        if ev >= 8 {
            quota_max_bytes = p.u64("pool.quota_max_bytes")?;
            quota_max_objects = p.u64("pool.quota_max_objects")?;
        }
        let (mut tier_of, mut read_tier, mut write_tier) = (-1, -1, -1);
        if ev >= 9 {
            let n = p.count(8, "pool.tiers")?;
            p.skip(n * 8, "pool.tiers")?;
            tier_of = p.i64("pool.tier_of")?;
            p.u8("pool.cache_mode")?;
            read_tier = p.i64("pool.read_tier")?;
            write_tier = p.i64("pool.write_tier")?;
        }
        if ev >= 10 {
            p.skip_string_map("pool.properties")?;
        }
        if ev >= 11 {
            p.skip_versioned("pool.hit_set_params")?;
            p.skip(8, "pool.hit_set_period_count")?;
        }
        let mut stripe_width = 0;
        if ev >= 12 {
            stripe_width = p.u32("pool.stripe_width")?;
        }
        if ev >= 13 {
            p.skip(8 + 8 + 4 + 4 + 4 + 4, "pool.cache_targets")?;
        }
        if ev >= 14 {
            p.blob("pool.erasure_code_profile")?;
        }
        let mut last_force_op_resend = 0;
        if ev >= 15 {
            last_force_op_resend = p.u32("pool.last_force_op_resend_preluminous")?;
        }
        if ev >= 16 {
            p.skip(4, "pool.min_read_recency")?;
        }
        if ev >= 17 {
            p.skip(8, "pool.expected_num_objects")?;
        }
        if ev >= 19 {
            p.skip(4, "pool.cache_target_dirty_high")?;
        }
        if ev >= 20 {
            p.skip(4, "pool.min_write_recency")?;
        }
        if ev >= 21 {
            p.skip(1, "pool.use_gmt_hitset")?;
        }
        if ev >= 22 {
            p.skip(1, "pool.fast_read")?;
        }
        if ev >= 23 {
            p.skip(8, "pool.hit_set_grade")?;
        }
        if ev >= 24 {
            p.skip_versioned("pool.opts")?;
        }
        if ev >= 25 {
            last_force_op_resend = p.u32("pool.last_force_op_resend_prenautilus")?;
        }
        let mut application_metadata = Vec::new();
        if ev >= 26 {
            let n = p.count(8, "pool.application_metadata")?;
            for _ in 0..n {
                application_metadata.push(p.string("pool.app")?);
                p.skip_string_map("pool.app.meta")?;
            }
        }
        // v27+ (create_time, pg_num_target, autoscale, ...) are skipped by the envelope
        Ok(PgPool {
            ty,
            size,
            crush_rule,
            object_hash,
            pg_num,
            pgp_num,
            last_change,
            snap_seq,
            snaps,
            flags,
            min_size,
            quota_max_bytes,
            quota_max_objects,
            tier_of,
            read_tier,
            write_tier,
            stripe_width,
            last_force_op_resend,
            application_metadata,
        })
    }

    pub fn pg_num_mask(&self) -> u32 {
        ((1u64 << cbits(self.pg_num.saturating_sub(1))) - 1) as u32
    }
    pub fn pgp_num_mask(&self) -> u32 {
        ((1u64 << cbits(self.pgp_num.saturating_sub(1))) - 1) as u32
    }
    pub fn can_shift_osds(&self) -> bool {
        self.ty == POOL_TYPE_REPLICATED
    }
    pub fn hash_key(&self, key: &[u8]) -> u32 {
        match self.object_hash {
            STR_HASH_LINUX => crush::str_hash_linux(key),
            _ => crush::str_hash_rjenkins(key),
        }
    }
    /// raw ps -> actual PG seed.
    pub fn raw_pg_to_pg(&self, ps: u32) -> u32 {
        stable_mod(ps, self.pg_num, self.pg_num_mask())
    }
    /// The CRUSH input for a PG.
    pub fn raw_pg_to_pps(&self, pg: PgId) -> u32 {
        let m = stable_mod(pg.seed, self.pgp_num, self.pgp_num_mask());
        if self.flags & pool_flag::HASHPSPOOL != 0 {
            crush::hash32_2(m, pg.pool as u32)
        } else {
            m.wrapping_add(pg.pool as u32)
        }
    }
}

/// The result of placing a PG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pgid: PgId,
    pub up: Vec<i32>,
    pub up_primary: i32,
    pub acting: Vec<i32>,
    pub acting_primary: i32,
}

#[derive(Debug, Clone)]
pub struct OsdMap {
    pub fsid: Fsid,
    pub epoch: u32,
    pub created: UTime,
    pub modified: UTime,
    pub pools: BTreeMap<i64, PgPool>,
    pub pool_names: BTreeMap<i64, String>,
    pub pool_max: i32,
    pub flags: u32,
    pub max_osd: usize,
    pub osd_state: Vec<u32>,
    pub osd_weight: Vec<u32>,
    pub osd_addrs: Vec<AddrVec>,
    pub primary_affinity: Option<Vec<u32>>,
    pub pg_temp: BTreeMap<PgId, Vec<i32>>,
    pub primary_temp: BTreeMap<PgId, i32>,
    pub pg_upmap: BTreeMap<PgId, Vec<i32>>,
    pub pg_upmap_items: BTreeMap<PgId, Vec<(i32, i32)>>,
    pub crush: Arc<CrushMap>,
    pub crush_version: i32,
}

fn i32_vec(r: &mut Reader<'_>, what: &'static str) -> DResult<Vec<i32>> {
    let n = r.count(4, what)?;
    (0..n).map(|_| r.i32(what)).collect()
}

fn pair_vec(r: &mut Reader<'_>, what: &'static str) -> DResult<Vec<(i32, i32)>> {
    let n = r.count(8, what)?;
    (0..n).map(|_| Ok((r.i32(what)?, r.i32(what)?))).collect()
}

/// Opens the v7+ wrapper and returns the client section's version and body.
fn open_client_section<'a>(r: &mut Reader<'a>, what: &'static str) -> DResult<(u8, Reader<'a>)> {
    let (wv, mut w) = r.versioned(7, what)?;
    if wv < 7 {
        return Err(DecodeError::invalid(what, format!("pre-Luminous encoding v{wv}")));
    }
    w.versioned(1, what)
}

impl OsdMap {
    pub fn decode(buf: &[u8]) -> DResult<Self> {
        let mut r = Reader::new(buf);
        let (v, mut c) = open_client_section(&mut r, "osdmap")?;
        let fsid = Fsid(c.array("osdmap.fsid")?);
        let epoch = c.u32("osdmap.epoch")?;
        let created = UTime::decode(&mut c)?;
        let modified = UTime::decode(&mut c)?;
        let n = c.count(14, "osdmap.pools")?;
        let mut pools = BTreeMap::new();
        for _ in 0..n {
            let id = c.i64("osdmap.pool.id")?;
            pools.insert(id, PgPool::decode(&mut c)?);
        }
        let n = c.count(12, "osdmap.pool_names")?;
        let mut pool_names = BTreeMap::new();
        for _ in 0..n {
            let id = c.i64("osdmap.pool_name.id")?;
            pool_names.insert(id, c.string("osdmap.pool_name")?);
        }
        let pool_max = c.i32("osdmap.pool_max")?;
        let flags = c.u32("osdmap.flags")?;
        let max_osd = c.i32("osdmap.max_osd")?;
        if max_osd < 0 || max_osd as usize > MAX_OSD_LIMIT {
            return Err(DecodeError::invalid("osdmap.max_osd", max_osd.to_string()));
        }
        let max_osd = max_osd as usize;
        let osd_state: Vec<u32> = if v >= 5 {
            let n = c.count(4, "osdmap.osd_state")?;
            (0..n).map(|_| c.u32("osdmap.osd_state")).collect::<DResult<_>>()?
        } else {
            let n = c.count(1, "osdmap.osd_state")?;
            (0..n).map(|_| c.u8("osdmap.osd_state").map(u32::from)).collect::<DResult<_>>()?
        };
        let n = c.count(4, "osdmap.osd_weight")?;
        let osd_weight: Vec<u32> = (0..n).map(|_| c.u32("osdmap.osd_weight")).collect::<DResult<_>>()?;
        let n = c.count(1, "osdmap.client_addrs")?;
        let mut osd_addrs = Vec::with_capacity(n);
        for _ in 0..n {
            osd_addrs.push(AddrVec::decode(&mut c)?);
        }
        if osd_state.len() != max_osd || osd_weight.len() != max_osd || osd_addrs.len() != max_osd {
            return Err(DecodeError::invalid("osdmap", "osd vectors disagree with max_osd"));
        }
        let n = c.count(21, "osdmap.pg_temp")?;
        let mut pg_temp = BTreeMap::new();
        for _ in 0..n {
            let pg = PgId::decode(&mut c)?;
            pg_temp.insert(pg, i32_vec(&mut c, "osdmap.pg_temp")?);
        }
        let mut primary_temp = BTreeMap::new();
        if v >= 1 {
            let n = c.count(21, "osdmap.primary_temp")?;
            for _ in 0..n {
                let pg = PgId::decode(&mut c)?;
                primary_temp.insert(pg, c.i32("osdmap.primary_temp")?);
            }
        }
        let mut primary_affinity = None;
        if v >= 2 {
            let n = c.count(4, "osdmap.primary_affinity")?;
            if n > 0 {
                let pa: Vec<u32> = (0..n).map(|_| c.u32("osdmap.primary_affinity")).collect::<DResult<_>>()?;
                if pa.len() != max_osd {
                    return Err(DecodeError::invalid("osdmap.primary_affinity", "length != max_osd"));
                }
                primary_affinity = Some(pa);
            }
        }
        let cbl = c.blob("osdmap.crush")?;
        let crush = Arc::new(CrushMap::decode(cbl)?);
        if v >= 3 {
            let n = c.count(8, "osdmap.erasure_code_profiles")?;
            for _ in 0..n {
                c.blob("osdmap.ec_profile")?;
                c.skip_string_map("osdmap.ec_profile")?;
            }
        }
        let mut pg_upmap = BTreeMap::new();
        let mut pg_upmap_items = BTreeMap::new();
        if v >= 4 {
            let n = c.count(21, "osdmap.pg_upmap")?;
            for _ in 0..n {
                let pg = PgId::decode(&mut c)?;
                pg_upmap.insert(pg, i32_vec(&mut c, "osdmap.pg_upmap")?);
            }
            let n = c.count(21, "osdmap.pg_upmap_items")?;
            for _ in 0..n {
                let pg = PgId::decode(&mut c)?;
                pg_upmap_items.insert(pg, pair_vec(&mut c, "osdmap.pg_upmap_items")?);
            }
        }
        let crush_version = if v >= 6 { c.i32("osdmap.crush_version")? } else { 0 };
        // v7+ (removed/purged snaps, last_up_change, ...) skipped by the envelope;
        // the OSD-only section and the crc follow and are skipped too.
        Ok(OsdMap {
            fsid,
            epoch,
            created,
            modified,
            pools,
            pool_names,
            pool_max,
            flags,
            max_osd,
            osd_state,
            osd_weight,
            osd_addrs,
            primary_affinity,
            pg_temp,
            primary_temp,
            pg_upmap,
            pg_upmap_items,
            crush,
            crush_version,
        })
    }

    pub fn pool_by_name(&self, name: &str) -> Option<i64> {
        self.pool_names.iter().find(|(_, n)| n.as_str() == name).map(|(id, _)| *id)
    }

    pub fn exists(&self, osd: i32) -> bool {
        usize::try_from(osd).ok().and_then(|i| self.osd_state.get(i)).is_some_and(|s| s & osd_state::EXISTS != 0)
    }
    pub fn is_up(&self, osd: i32) -> bool {
        usize::try_from(osd).ok().and_then(|i| self.osd_state.get(i)).is_some_and(|s| s & osd_state::UP != 0)
    }
    fn is_down(&self, osd: i32) -> bool {
        !self.is_up(osd)
    }

    fn set_max_osd(&mut self, max: usize) {
        self.osd_state.resize(max, 0);
        self.osd_weight.resize(max, 0);
        self.osd_addrs.resize(max, AddrVec::default());
        if let Some(pa) = self.primary_affinity.as_mut() {
            pa.resize(max, DEFAULT_PRIMARY_AFFINITY);
        }
        self.max_osd = max;
    }

    fn set_primary_affinity(&mut self, osd: usize, aff: u32) {
        let max = self.max_osd;
        let pa = self.primary_affinity.get_or_insert_with(|| vec![DEFAULT_PRIMARY_AFFINITY; max]);
        if let Some(s) = pa.get_mut(osd) {
            *s = aff;
        }
    }

    /// Applies an incremental map. The incremental must be for epoch+1; a
    /// full map embedded in it replaces this one.
    pub fn apply_incremental(&mut self, buf: &[u8]) -> DResult<()> {
        let mut r = Reader::new(buf);
        let (v, mut c) = open_client_section(&mut r, "osdmap_inc")?;
        let fsid = Fsid(c.array("inc.fsid")?);
        let epoch = c.u32("inc.epoch")?;
        let modified = UTime::decode(&mut c)?;
        let new_pool_max = c.i64("inc.new_pool_max")?;
        let new_flags = c.i32("inc.new_flags")?;
        if epoch != self.epoch.wrapping_add(1) {
            return Err(DecodeError::invalid("inc.epoch", format!("{epoch} does not follow {}", self.epoch)));
        }
        if fsid != self.fsid {
            return Err(DecodeError::invalid("inc.fsid", "fsid differs from the map's"));
        }
        let full = c.blob("inc.fullmap")?;
        if !full.is_empty() {
            *self = OsdMap::decode(full)?;
            return Ok(());
        }
        let crush_bl = c.blob("inc.crush")?;
        // decode everything into a copy first so a bad incremental leaves the map untouched
        let mut m = self.clone();
        if !crush_bl.is_empty() {
            m.crush = Arc::new(CrushMap::decode(crush_bl)?);
        }
        if new_flags >= 0 {
            m.flags = new_flags as u32;
        }
        if new_pool_max >= 0 {
            m.pool_max = new_pool_max as i32;
        }
        let new_max = c.i32("inc.new_max_osd")?;
        if new_max >= 0 {
            if new_max as usize > MAX_OSD_LIMIT {
                return Err(DecodeError::invalid("inc.new_max_osd", new_max.to_string()));
            }
            m.set_max_osd(new_max as usize);
        }
        m.epoch = epoch;
        m.modified = modified;
        let n = c.count(14, "inc.new_pools")?;
        for _ in 0..n {
            let id = c.i64("inc.new_pool.id")?;
            m.pools.insert(id, PgPool::decode(&mut c)?);
        }
        let n = c.count(12, "inc.new_pool_names")?;
        for _ in 0..n {
            let id = c.i64("inc.new_pool_name.id")?;
            m.pool_names.insert(id, c.string("inc.new_pool_name")?);
        }
        let n = c.count(8, "inc.old_pools")?;
        for _ in 0..n {
            let id = c.i64("inc.old_pool")?;
            m.pools.remove(&id);
            m.pool_names.remove(&id);
        }
        let n = c.count(5, "inc.new_up_client")?;
        let mut new_up = Vec::with_capacity(n);
        for _ in 0..n {
            let osd = c.i32("inc.new_up_client.osd")?;
            new_up.push((osd, AddrVec::decode(&mut c)?));
        }
        let n = c.count(5, "inc.new_state")?;
        let mut new_state = Vec::with_capacity(n);
        for _ in 0..n {
            let osd = c.i32("inc.new_state.osd")?;
            let s = if v >= 5 { c.u32("inc.new_state")? } else { c.u8("inc.new_state")? as u32 };
            new_state.push((osd, s));
        }
        let n = c.count(8, "inc.new_weight")?;
        let mut new_weight = Vec::with_capacity(n);
        for _ in 0..n {
            new_weight.push((c.i32("inc.new_weight.osd")?, c.u32("inc.new_weight")?));
        }
        let check = |osd: i32, max: usize| -> DResult<usize> {
            usize::try_from(osd)
                .ok()
                .filter(|&o| o < max)
                .ok_or_else(|| DecodeError::invalid("osdmap_inc", format!("osd {osd} out of range")))
        };
        // apply in (weight, state, up_client) order: the encoding order differs
        for (osd, w) in new_weight {
            let o = check(osd, m.max_osd)?;
            m.osd_weight[o] = w;
            if w != 0 {
                m.osd_state[o] |= osd_state::EXISTS;
                m.osd_state[o] &= !(osd_state::AUTOOUT | osd_state::NEW);
            }
        }
        for (osd, s) in new_state {
            let o = check(osd, m.max_osd)?;
            let s = if s == 0 { osd_state::UP } else { s };
            if m.osd_state[o] & osd_state::EXISTS != 0 && s & osd_state::EXISTS != 0 {
                m.set_primary_affinity(o, DEFAULT_PRIMARY_AFFINITY);
                m.osd_addrs[o] = AddrVec::default();
                m.osd_state[o] = 0;
            } else {
                m.osd_state[o] ^= s;
            }
        }
        for (osd, a) in new_up {
            let o = check(osd, m.max_osd)?;
            m.osd_state[o] |= osd_state::EXISTS | osd_state::UP;
            m.osd_addrs[o] = a;
        }
        let n = c.count(21, "inc.new_pg_temp")?;
        for _ in 0..n {
            let pg = PgId::decode(&mut c)?;
            let osds = i32_vec(&mut c, "inc.new_pg_temp")?;
            if osds.is_empty() {
                m.pg_temp.remove(&pg);
            } else {
                m.pg_temp.insert(pg, osds);
            }
        }
        if v >= 1 {
            let n = c.count(21, "inc.new_primary_temp")?;
            for _ in 0..n {
                let pg = PgId::decode(&mut c)?;
                let osd = c.i32("inc.new_primary_temp")?;
                if osd == -1 {
                    m.primary_temp.remove(&pg);
                } else {
                    m.primary_temp.insert(pg, osd);
                }
            }
        }
        if v >= 2 {
            let n = c.count(8, "inc.new_primary_affinity")?;
            for _ in 0..n {
                let osd = c.i32("inc.new_primary_affinity.osd")?;
                let aff = c.u32("inc.new_primary_affinity")?;
                let o = check(osd, m.max_osd)?;
                m.set_primary_affinity(o, aff);
            }
        }
        if v >= 3 {
            let n = c.count(8, "inc.new_ec_profiles")?;
            for _ in 0..n {
                c.blob("inc.ec_profile")?;
                c.skip_string_map("inc.ec_profile")?;
            }
            let n = c.count(4, "inc.old_ec_profiles")?;
            for _ in 0..n {
                c.blob("inc.old_ec_profile")?;
            }
        }
        if v >= 4 {
            let n = c.count(21, "inc.new_pg_upmap")?;
            for _ in 0..n {
                let pg = PgId::decode(&mut c)?;
                m.pg_upmap.insert(pg, i32_vec(&mut c, "inc.new_pg_upmap")?);
            }
            let n = c.count(17, "inc.old_pg_upmap")?;
            for _ in 0..n {
                let pg = PgId::decode(&mut c)?;
                m.pg_upmap.remove(&pg);
            }
            let n = c.count(21, "inc.new_pg_upmap_items")?;
            for _ in 0..n {
                let pg = PgId::decode(&mut c)?;
                m.pg_upmap_items.insert(pg, pair_vec(&mut c, "inc.new_pg_upmap_items")?);
            }
            let n = c.count(17, "inc.old_pg_upmap_items")?;
            for _ in 0..n {
                let pg = PgId::decode(&mut c)?;
                m.pg_upmap_items.remove(&pg);
            }
        }
        if v >= 6 {
            let cv = c.i32("inc.new_crush_version")?;
            if cv >= 0 {
                m.crush_version = cv;
            }
        }
        *self = m;
        Ok(())
    }

    /// Hash of an object name within a pool (namespace and locator key
    /// aware): the raw placement seed.
    pub fn object_hash(pool: &PgPool, name: &str, nspace: &str, key: Option<&str>) -> u32 {
        let base = key.filter(|k| !k.is_empty()).unwrap_or(name);
        if nspace.is_empty() {
            pool.hash_key(base.as_bytes())
        } else {
            let mut buf = Vec::with_capacity(nspace.len() + 1 + base.len());
            buf.extend_from_slice(nspace.as_bytes());
            buf.push(0x1f);
            buf.extend_from_slice(base.as_bytes());
            pool.hash_key(&buf)
        }
    }

    /// Object -> PG (pool.seed) with the raw hash.
    pub fn object_to_pg(&self, pool_id: i64, name: &str, nspace: &str) -> Option<(PgId, u32)> {
        let pool = self.pools.get(&pool_id)?;
        let raw = Self::object_hash(pool, name, nspace, None);
        Some((PgId { pool: pool_id as u64, seed: pool.raw_pg_to_pg(raw) }, raw))
    }

    fn pg_to_raw_osds(&self, pool: &PgPool, pg: PgId) -> Result<(Vec<i32>, u32), PlacementError> {
        let pps = pool.raw_pg_to_pps(pg);
        let size = pool.size as usize;
        let mut raw = match self.crush.find_rule(pool.crush_rule as i32, pool.ty as i32, size as i32) {
            Some(rule) => self.crush.try_do_rule(rule, pps, size, &self.osd_weight, Some(pg.pool as i64))?,
            None => Vec::new(),
        };
        // remove nonexistent OSDs
        if pool.can_shift_osds() {
            raw.retain(|&o| self.exists(o));
        } else {
            for o in raw.iter_mut() {
                if !self.exists(*o) {
                    *o = ITEM_NONE;
                }
            }
        }
        Ok((raw, pps))
    }

    fn out_marked(&self, osd: i32) -> bool {
        usize::try_from(osd).ok().and_then(|i| self.osd_weight.get(i)).is_some_and(|&w| w == 0)
    }

    fn apply_upmap(&self, pg: PgId, raw: &mut Vec<i32>) {
        if let Some(m) = self.pg_upmap.get(&pg) {
            if m.iter().any(|&o| o != ITEM_NONE && self.out_marked(o)) {
                return;
            }
            *raw = m.clone();
        }
        if let Some(items) = self.pg_upmap_items.get(&pg) {
            for &(from, to) in items {
                let mut exists = false;
                let mut pos: Option<usize> = None;
                for (i, &o) in raw.iter().enumerate() {
                    if o == to {
                        exists = true;
                        break;
                    }
                    if o == from && pos.is_none() && !(to != ITEM_NONE && self.out_marked(to)) {
                        pos = Some(i);
                    }
                }
                if let (false, Some(p)) = (exists, pos) {
                    raw[p] = to;
                }
            }
        }
    }

    fn raw_to_up(&self, pool: &PgPool, raw: &[i32]) -> Vec<i32> {
        if pool.can_shift_osds() {
            raw.iter().copied().filter(|&o| self.exists(o) && !self.is_down(o)).collect()
        } else {
            raw.iter().map(|&o| if self.exists(o) && !self.is_down(o) { o } else { ITEM_NONE }).collect()
        }
    }

    fn apply_primary_affinity(&self, pool: &PgPool, pps: u32, up: &mut [i32], primary: &mut i32) {
        let Some(pa) = &self.primary_affinity else { return };
        let aff = |o: i32| usize::try_from(o).ok().and_then(|i| pa.get(i)).copied().unwrap_or(DEFAULT_PRIMARY_AFFINITY);
        if !up.iter().any(|&o| o != ITEM_NONE && aff(o) != DEFAULT_PRIMARY_AFFINITY) {
            return;
        }
        let mut pos: Option<usize> = None;
        for (i, &o) in up.iter().enumerate() {
            if o == ITEM_NONE {
                continue;
            }
            let a = aff(o);
            if a < MAX_PRIMARY_AFFINITY && (crush::hash32_2(pps, o as u32) >> 16) >= a {
                // not chosen, but remember it as a fallback
                if pos.is_none() {
                    pos = Some(i);
                }
            } else {
                pos = Some(i);
                break;
            }
        }
        let Some(p) = pos else { return };
        *primary = up[p];
        if pool.can_shift_osds() && p > 0 {
            up[..=p].rotate_right(1);
        }
    }

    /// PG -> up and acting sets with their primaries; None for an unknown
    /// pool or a placement CRUSH refused (see [`OsdMap::try_pg_to_up_acting`]).
    pub fn pg_to_up_acting(&self, pg: PgId) -> Option<Placement> {
        self.try_pg_to_up_acting(pg).ok().flatten()
    }

    /// PG -> up and acting sets: Ok(None) for an unknown pool, an error when
    /// the map's rule cannot place the PG within CRUSH's work bound.
    pub fn try_pg_to_up_acting(&self, pg: PgId) -> Result<Option<Placement>, PlacementError> {
        let Some(pool) = self.pools.get(&(pg.pool as i64)) else {
            return Ok(None);
        };
        let (mut raw, pps) = self.pg_to_raw_osds(pool, pg)?;
        self.apply_upmap(pg, &mut raw);
        let mut up = self.raw_to_up(pool, &raw);
        let mut up_primary = up.iter().copied().find(|&o| o != ITEM_NONE).unwrap_or(-1);
        self.apply_primary_affinity(pool, pps, &mut up, &mut up_primary);
        // pg_temp / primary_temp
        let mut acting = Vec::new();
        let mut acting_primary = -1;
        if let Some(t) = self.pg_temp.get(&pg) {
            for &o in t {
                if !self.exists(o) || self.is_down(o) {
                    if !pool.can_shift_osds() {
                        acting.push(ITEM_NONE);
                    }
                } else {
                    acting.push(o);
                }
            }
            acting_primary = acting.iter().copied().find(|&o| o != ITEM_NONE).unwrap_or(-1);
        }
        if let Some(&p) = self.primary_temp.get(&pg) {
            acting_primary = p;
        }
        if acting.is_empty() {
            acting = up.clone();
            if acting_primary == -1 {
                acting_primary = up_primary;
            }
        }
        Ok(Some(Placement { pgid: pg, up, up_primary, acting, acting_primary }))
    }

    /// Full object placement: pool/namespace/name -> PG and OSDs.
    pub fn map_object(&self, pool_id: i64, name: &str, nspace: &str) -> Option<(Placement, u32)> {
        let (pg, raw) = self.object_to_pg(pool_id, name, nspace)?;
        Some((self.pg_to_up_acting(pg)?, raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OSDMAP: &[u8] = include_bytes!("../../tests/data/osdmap.bin");
    const OM6: &[u8] = include_bytes!("../../tests/data/om6.bin");

    #[test]
    fn decodes_capture() {
        let m = OsdMap::decode(OSDMAP).unwrap();
        assert_eq!(m.epoch, 8);
        assert_eq!(m.fsid.to_string(), "2a0a09ec-5c74-4eda-90c0-5e0802f1ab7f");
        assert_eq!(m.max_osd, 1);
        assert_eq!(m.flags, 5_799_936);
        assert_eq!(m.pool_max, 1);
        assert_eq!(m.crush_version, 3);
        let p = &m.pools[&1];
        assert_eq!((p.ty, p.size, p.min_size, p.pg_num, p.pgp_num, p.object_hash), (1, 1, 1, 8, 8, 2));
        assert_eq!(p.flags & pool_flag::HASHPSPOOL, 1);
        assert_eq!(m.pool_names[&1], "test");
        assert!(m.is_up(0) && m.exists(0));
        assert_eq!(m.osd_weight[0], 0x10000);
        assert!(m.osd_addrs[0].v2().is_some());
    }

    #[test]
    fn placement_vectors_from_cluster() {
        let m = OsdMap::decode(OSDMAP).unwrap();
        let pool = m.pool_by_name("test").unwrap();
        for (name, raw, seed) in [
            ("obj1", 0x6cf8_deffu32, 7u32),
            ("foo", 0x7fc1_f406, 6),
            ("bar", 0xefe6_384b, 3),
            ("hello", 0xb706_399e, 6),
            ("a/b", 0x2d0a_d9e4, 4),
        ] {
            let (pl, h) = m.map_object(pool, name, "").unwrap();
            assert_eq!(h, raw, "{name}");
            assert_eq!(pl.pgid, PgId { pool: 1, seed }, "{name}");
            assert_eq!(pl.up, vec![0]);
            assert_eq!(pl.acting_primary, 0);
        }
    }

    #[test]
    fn decodes_second_capture_and_truncations_fail_cleanly() {
        let m = OsdMap::decode(OM6).unwrap();
        assert!(m.max_osd >= 1);
        for n in (0..OSDMAP.len()).step_by(7) {
            assert!(OsdMap::decode(&OSDMAP[..n]).is_err());
        }
    }

    #[test]
    fn incrementals_from_cluster_reach_the_full_map() {
        // captured live: full map e11, incrementals e12..e15 (pool create,
        // size change, pool snapshot, pool delete), full map e15
        let mut m = OsdMap::decode(include_bytes!("../../tests/data/osdmap_full_11.bin")).unwrap();
        let incs: [&[u8]; 4] = [
            include_bytes!("../../tests/data/osdmap_inc_12.bin"),
            include_bytes!("../../tests/data/osdmap_inc_13.bin"),
            include_bytes!("../../tests/data/osdmap_inc_14.bin"),
            include_bytes!("../../tests/data/osdmap_inc_15.bin"),
        ];
        // out of order is refused and leaves the map untouched
        assert!(m.apply_incremental(incs[1]).is_err());
        assert_eq!(m.epoch, 11);
        let mut saw_capt = false;
        for inc in incs {
            m.apply_incremental(inc).unwrap();
            saw_capt |= m.pool_by_name("capt").is_some();
        }
        assert!(saw_capt, "the pool created at e12 must appear");
        let full = OsdMap::decode(include_bytes!("../../tests/data/osdmap_full_15.bin")).unwrap();
        assert_eq!(m.epoch, full.epoch);
        assert_eq!(m.pools, full.pools);
        assert_eq!(m.pool_names, full.pool_names);
        assert_eq!(m.pool_max, full.pool_max);
        assert_eq!(m.flags, full.flags);
        assert_eq!(m.osd_state, full.osd_state);
        assert_eq!(m.osd_weight, full.osd_weight);
        assert_eq!(m.osd_addrs, full.osd_addrs);
        assert_eq!(m.pg_upmap_items, full.pg_upmap_items);
        // every truncation of an incremental fails without touching the map
        let before = m.epoch;
        let mut m2 = OsdMap::decode(include_bytes!("../../tests/data/osdmap_full_11.bin")).unwrap();
        for n in 0..incs[0].len() {
            assert!(m2.apply_incremental(&incs[0][..n]).is_err());
            assert_eq!(m2.epoch, 11);
        }
        let _ = before;
    }

    #[test]
    fn stable_mod_basics() {
        assert_eq!(stable_mod(0x6cf8_deff, 8, 7), 7);
        assert_eq!(stable_mod(13, 12, 15), 13 & 7);
    }
}
