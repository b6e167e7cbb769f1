//! Offline copies of crushtool/osdmaptool answers (generated on Ceph
//! 16.2.15 by the commands in tests/crush_oracle.rs), so placement is
//! checked on every run, Ceph installed or not.

use weft_rados::proto::crush::CrushMap;
use weft_rados::proto::osdmap::{osd_state, OsdMap, PgId};

mod common;

fn parse_vec(s: &str) -> Vec<i32> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(|x| x.trim().parse::<i32>().unwrap()).collect()
}

fn check_crush(map_bin: &[u8], mappings: &str, choose_args: Option<i64>) -> usize {
    let map = CrushMap::decode(map_bin).unwrap();
    let weights = vec![0x10000u32; 12];
    let mut n = 0;
    for line in mappings.lines() {
        // CRUSH rule R x X [a,b,c]
        let f: Vec<&str> = line.split_whitespace().collect();
        let rule: usize = f[2].parse().unwrap();
        let x: u32 = f[4].parse().unwrap();
        let want = parse_vec(f[5]);
        let got = map.do_rule(rule, x, want.len(), &weights, choose_args);
        assert_eq!(got, want, "{line}");
        n += 1;
    }
    n
}

#[test]
fn crush_vectors_all_bucket_algorithms() {
    let cases: [(&str, &[u8], &str); 5] = [
        ("straw2", include_bytes!("data/oracle/crush_straw2.bin"), include_str!("data/oracle/crush_straw2.txt")),
        ("straw", include_bytes!("data/oracle/crush_straw.bin"), include_str!("data/oracle/crush_straw.txt")),
        ("list", include_bytes!("data/oracle/crush_list.bin"), include_str!("data/oracle/crush_list.txt")),
        ("tree", include_bytes!("data/oracle/crush_tree.bin"), include_str!("data/oracle/crush_tree.txt")),
        ("uniform", include_bytes!("data/oracle/crush_uniform.bin"), include_str!("data/oracle/crush_uniform.txt")),
    ];
    for (alg, bin, txt) in cases {
        assert_eq!(check_crush(bin, txt, None), 384, "{alg}");
    }
}

#[test]
fn crush_vectors_choose_args() {
    let n = check_crush(
        include_bytes!("data/oracle/crush_choose_args.bin"),
        include_str!("data/oracle/crush_choose_args.txt"),
        Some(-1),
    );
    assert_eq!(n, 384);
}

#[test]
fn osdmap_vectors_with_upmaps() {
    let mut map = OsdMap::decode(include_bytes!("data/oracle/osdmap12.bin")).unwrap();
    assert!(!map.pg_upmap_items.is_empty());
    // osdmaptool --mark-up-in
    for i in 0..map.max_osd {
        map.osd_state[i] |= osd_state::EXISTS | osd_state::UP;
        map.osd_weight[i] = 0x10000;
    }
    let mut n = 0;
    for line in include_str!("data/oracle/osdmap12_pgs.txt").lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let seed = u32::from_str_radix(f[0].trim_start_matches("1."), 16).unwrap();
        let pl = map.pg_to_up_acting(PgId { pool: 1, seed }).unwrap();
        assert_eq!(pl.acting, parse_vec(f[1]), "{line}");
        assert_eq!(pl.acting_primary, f[2].trim().parse::<i32>().unwrap(), "{line}");
        n += 1;
    }
    assert!(n >= 768);
}

fn up_map() -> OsdMap {
    let mut map = OsdMap::decode(include_bytes!("data/oracle/osdmap12.bin")).unwrap();
    for i in 0..map.max_osd {
        map.osd_state[i] |= osd_state::EXISTS | osd_state::UP;
        map.osd_weight[i] = 0x10000;
    }
    map
}

#[test]
fn primary_affinity_zero_never_primary_unless_alone() {
    let mut map = up_map();
    let pgs: Vec<PgId> = (0..768).map(|seed| PgId { pool: 1, seed }).collect();
    let before = pgs.iter().filter(|pg| map.pg_to_up_acting(**pg).unwrap().acting_primary == 3).count();
    assert!(before > 20);
    let mut pa = vec![0x10000u32; map.max_osd];
    pa[3] = 0;
    pa[5] = 0x8000; // half: about half of its primaries move
    map.primary_affinity = Some(pa);
    let mut as5 = 0;
    for pg in &pgs {
        let pl = map.pg_to_up_acting(*pg).unwrap();
        assert_ne!(pl.acting_primary, 3, "{pg}");
        // replicated pools move the chosen primary to the front, same set
        assert_eq!(pl.acting[0], pl.acting_primary);
        as5 += (pl.acting_primary == 5) as usize;
    }
    map.primary_affinity = None;
    let base5 = pgs.iter().filter(|pg| map.pg_to_up_acting(**pg).unwrap().acting_primary == 5).count();
    assert!(as5 < base5 && as5 > base5 / 5, "osd.5 primaries {base5} -> {as5}");
}

#[test]
fn pg_temp_and_primary_temp_override_acting_only() {
    let mut map = up_map();
    let pg = PgId { pool: 1, seed: 0x2a };
    let base = map.pg_to_up_acting(pg).unwrap();
    map.pg_temp.insert(pg, vec![11, 10, 9]);
    let t = map.pg_to_up_acting(pg).unwrap();
    assert_eq!(t.up, base.up, "up set ignores pg_temp");
    assert_eq!((t.acting.clone(), t.acting_primary), (vec![11, 10, 9], 11));
    map.primary_temp.insert(pg, 9);
    assert_eq!(map.pg_to_up_acting(pg).unwrap().acting_primary, 9);
    // a down OSD drops out of the temp set of a replicated pool
    map.osd_state[11] &= !osd_state::UP;
    let d = map.pg_to_up_acting(pg).unwrap();
    assert_eq!(d.acting, vec![10, 9]);
    assert!(!d.up.contains(&11));
}

/// Maps captured by tests/ceph_multi.rs (`WEFT_SAVE_ORACLE=DIR`) from a
/// live three-OSD cluster with primary affinity (osd.0 0.5, osd.1 0),
/// pg_temp, primary_temp, pg_upmap, pg_upmap_items, a reweight and an
/// erasure-coded pool; e33 also has osd.2 marked down. The answers are
/// `osdmaptool --test-map-pgs-dump-all` on the same files.
#[test]
fn osdmap_vectors_with_affinity_and_temp_mappings() {
    let cases: [(&[u8], &str); 2] = [
        (include_bytes!("data/oracle/osdmap-multi-e32.bin"), include_str!("data/oracle/osdmap-multi-e32.dump-all.txt")),
        (include_bytes!("data/oracle/osdmap-multi-e33.bin"), include_str!("data/oracle/osdmap-multi-e33.dump-all.txt")),
    ];
    for (bin, dump) in cases {
        let map = OsdMap::decode(bin).unwrap();
        assert!(map.primary_affinity.is_some() && !map.pg_temp.is_empty() && !map.primary_temp.is_empty());
        let (n, temp) = common::check_dump_all(&map, dump, "captured map");
        assert_eq!(n, 97);
        assert!(temp >= 3, "epoch {}: only {temp} PGs remapped", map.epoch);
    }
}
