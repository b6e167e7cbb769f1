//! Helpers shared by the test binaries: where ../shared is, and parsers
//! for oracle output.
#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;
use weft_rados::proto::osdmap::{OsdMap, PgId};

/// `../shared` beside the repository (where CI puts it), or `WEFT_SHARED`.
pub fn shared_dir() -> PathBuf {
    if let Ok(s) = std::env::var("WEFT_SHARED") {
        return PathBuf::from(s);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if beside.exists() {
        return beside;
    }
    PathBuf::from("/work/shared")
}

pub fn parse_list(s: &str) -> Vec<i32> {
    s.trim()
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().unwrap())
        .collect()
}

/// One line of `osdmaptool --test-map-pgs-dump-all`:
/// `2.1f raw ([1,2,0], p1) up ([2,1,0], p2) acting ([2,1,0], p2)`.
#[derive(Debug, PartialEq, Eq)]
pub struct DumpAll {
    pub pgid: PgId,
    pub up: Vec<i32>,
    pub up_primary: i32,
    pub acting: Vec<i32>,
    pub acting_primary: i32,
}

pub fn parse_dump_all(line: &str) -> Option<DumpAll> {
    let (pg, rest) = line.split_once(" raw (")?;
    let set = |key: &str| -> Option<(Vec<i32>, i32)> {
        let (_, after) = rest.split_once(key)?;
        let (inner, _) = after.split_once(')')?;
        let (list, p) = inner.rsplit_once(", p")?;
        Some((parse_list(list), p.trim().parse().ok()?))
    };
    let (pool, seed) = pg.trim().split_once('.')?;
    let pgid = PgId { pool: pool.parse().ok()?, seed: u32::from_str_radix(seed, 16).ok()? };
    let (up, up_primary) = set("up (")?;
    let (acting, acting_primary) = set("acting (")?;
    Some(DumpAll { pgid, up, up_primary, acting, acting_primary })
}

/// Checks every line of a dump against `map`; returns (PGs compared, PGs
/// whose acting set or primary differs from the up set).
pub fn check_dump_all(map: &OsdMap, dump: &str, what: &str) -> (usize, usize) {
    let (mut n, mut temp) = (0, 0);
    for line in dump.lines() {
        let Some(want) = parse_dump_all(line) else { continue };
        let pl = map.pg_to_up_acting(want.pgid).unwrap_or_else(|| panic!("{what}: no pg {}", want.pgid));
        let got = DumpAll {
            pgid: want.pgid,
            up: pl.up,
            up_primary: pl.up_primary,
            acting: pl.acting,
            acting_primary: pl.acting_primary,
        };
        assert_eq!(got, want, "{what} (epoch {}) vs osdmaptool: {line}", map.epoch);
        if want.up != want.acting || want.up_primary != want.acting_primary {
            temp += 1;
        }
        n += 1;
    }
    let total: u32 = map.pools.values().map(|p| p.pg_num).sum();
    assert_eq!(n, total as usize, "{what}: osdmaptool listed {n} PGs, the map has {total}");
    (n, temp)
}
