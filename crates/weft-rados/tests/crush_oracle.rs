//! CRUSH and OSDMap placement checked against Ceph's own tools on maps
//! built offline (`crushtool --build`, `osdmaptool --createsimple`).
//! Needs ceph-common; runs only with WEFT_PEERS=1 (then missing tools fail).

use std::path::Path;
use std::process::Command;
use weft_rados::proto::crush::CrushMap;
use weft_rados::proto::osdmap::{osd_state, OsdMap, PgId};

fn enabled() -> bool {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to compare against crushtool/osdmaptool");
        return false;
    }
    true
}

fn run(cmd: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (apt-get install ceph-common): {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn parse_vec(s: &str) -> Vec<i32> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(|x| x.trim().parse::<i32>().unwrap()).collect()
}

const EC_RULE: &str = "
rule ecrule {
	id 1
	type erasure
	min_size 3
	max_size 8
	step set_chooseleaf_tries 5
	step set_choose_tries 100
	step take root
	step chooseleaf indep 0 type host
	step emit
}
rule flat {
	id 2
	type replicated
	min_size 1
	max_size 10
	step take root
	step choose firstn 0 type osd
	step emit
}
";

#[test]
fn crush_mappings_match_crushtool() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for alg in ["straw2", "straw", "list", "tree", "uniform"] {
        run("crushtool", &["--build", "--num_osds", "12", "host", alg, "3", "rack", "straw2", "2", "root", "straw2", "0", "-o", "c0"], d);
        // add an indep (erasure) rule and a flat choose rule
        let txt = run("crushtool", &["-d", "c0"], d);
        let txt = txt.replace("# end crush map", &format!("{EC_RULE}\n# end crush map"));
        std::fs::write(d.join("c.txt"), txt).unwrap();
        run("crushtool", &["-c", "c.txt", "-o", "c1"], d);
        let map = CrushMap::decode(&std::fs::read(d.join("c1")).unwrap()).unwrap();
        for (rule, reps) in [(0usize, 3usize), (1, 4), (2, 3)] {
            for reweight in [false, true] {
                let mut args = vec![
                    "-i".to_string(),
                    "c1".into(),
                    "--test".into(),
                    "--show-mappings".into(),
                    "--rule".into(),
                    rule.to_string(),
                    "--num-rep".into(),
                    reps.to_string(),
                    "--min-x".into(),
                    "0".into(),
                    "--max-x".into(),
                    "511".into(),
                ];
                let mut weights = vec![0x10000u32; 12];
                if reweight {
                    // partial weights exercise is_out(); weight 0 marks out
                    for (osd, w) in [(3usize, "0.5"), (7, "0"), (10, "0.25")] {
                        args.extend(["--weight".into(), osd.to_string(), w.into()]);
                        weights[osd] = (w.parse::<f64>().unwrap() * 65536.0) as u32;
                    }
                }
                let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
                let out = run("crushtool", &a, d);
                let mut n = 0;
                for line in out.lines().filter(|l| l.starts_with("CRUSH rule")) {
                    // CRUSH rule 0 x 12 [1,2,3]
                    let mut it = line.split_whitespace();
                    let x: u32 = it.nth(4).unwrap().parse().unwrap();
                    let want = parse_vec(line.rsplit_once(' ').unwrap().1);
                    let got = map.do_rule(rule, x, reps, &weights, None);
                    // crushtool prints NONE holes of indep rules as 2147483647
                    assert_eq!(got, want, "alg {alg} rule {rule} x {x} reweight {reweight}");
                    n += 1;
                }
                assert_eq!(n, 512, "alg {alg} rule {rule}: crushtool printed {n} mappings");
            }
        }
    }
}

/// A compat weight-set (choose_args -1): per-position weights on a host,
/// weights plus substituted ids on another, three positions on the root.
const CHOOSE_ARGS: &str = "
# choose_args
choose_args 18446744073709551615 {
  {
    bucket_id -1
    weight_set [
      [ 0.500 1.000 2.000 ]
      [ 2.000 0.250 1.000 ]
    ]
  }
  {
    bucket_id -2
    weight_set [
      [ 3.000 0.100 1.000 ]
    ]
    ids [ 100 101 102 ]
  }
  {
    bucket_id -7
    weight_set [
      [ 1.000 4.000 ]
      [ 4.000 1.000 ]
      [ 2.000 2.000 ]
    ]
  }
}
";

#[test]
fn choose_args_match_crushtool() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run("crushtool", &["--build", "--num_osds", "12", "host", "straw2", "3", "rack", "straw2", "2", "root", "straw2", "0", "-o", "c0"], d);
    let txt = run("crushtool", &["-d", "c0"], d);
    let txt = txt.replace("# end crush map", &format!("{EC_RULE}\n{CHOOSE_ARGS}\n# end crush map"));
    std::fs::write(d.join("c.txt"), txt).unwrap();
    run("crushtool", &["-c", "c.txt", "-o", "c1"], d);
    let map = CrushMap::decode(&std::fs::read(d.join("c1")).unwrap()).unwrap();
    assert_eq!(map.choose_args.get(&-1).map(|a| a.len()), Some(3));
    let weights = vec![0x10000u32; 12];
    let mut differs = 0;
    for (rule, reps) in [(0usize, 3usize), (1, 4), (2, 3)] {
        let out = run(
            "crushtool",
            &["-i", "c1", "--test", "--show-mappings", "--rule", &rule.to_string(), "--num-rep", &reps.to_string(), "--min-x", "0", "--max-x", "511"],
            d,
        );
        let mut n = 0;
        for line in out.lines().filter(|l| l.starts_with("CRUSH rule")) {
            let x: u32 = line.split_whitespace().nth(4).unwrap().parse().unwrap();
            let want = parse_vec(line.rsplit_once(' ').unwrap().1);
            assert_eq!(map.do_rule(rule, x, reps, &weights, Some(-1)), want, "rule {rule} x {x}");
            if map.do_rule(rule, x, reps, &weights, None) != want {
                differs += 1;
            }
            n += 1;
        }
        assert_eq!(n, 512);
    }
    // our Some(-1) vs None differ only through choose_args, so this shows the
    // weight-set mattered (None still falls back to -1: compare to a map without it)
    let mut plain = map.clone();
    plain.choose_args.clear();
    let moved = (0..512).filter(|&x| plain.do_rule(0, x, 3, &weights, None) != map.do_rule(0, x, 3, &weights, Some(-1))).count();
    assert!(moved > 50, "weight-set changed only {moved} mappings");
    let _ = differs;
}

#[test]
fn osdmap_placement_matches_osdmaptool() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run("crushtool", &["--build", "--num_osds", "12", "host", "straw2", "3", "rack", "straw2", "2", "root", "straw2", "0", "-o", "crush"], d);
    run("osdmaptool", &["--createsimple", "12", "--with-default-pool", "om", "--clobber"], d);
    run("osdmaptool", &["om", "--import-crush", "crush"], d);
    // let the balancer write pg_upmap_items into the map
    run("osdmaptool", &["om", "--mark-up-in", "--upmap", "up.txt", "--upmap-deviation", "1", "--save"], d);
    let mut map = OsdMap::decode(&std::fs::read(d.join("om")).unwrap()).unwrap();
    assert!(!map.pg_upmap_items.is_empty(), "expected the balancer to add upmap items");
    for i in 0..map.max_osd {
        map.osd_state[i] |= osd_state::EXISTS | osd_state::UP;
        map.osd_weight[i] = 0x10000;
    }
    let pool = 1i64;
    let pg_num = map.pools[&pool].pg_num;
    assert_eq!(pg_num, 768, "non power-of-two pg_num exercises stable_mod");
    let dump = run("osdmaptool", &["om", "--mark-up-in", "--test-map-pgs-dump", "--pool", "1"], d);
    let mut n = 0;
    for line in dump.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 3 || !f[0].starts_with("1.") {
            continue;
        }
        let seed = u32::from_str_radix(f[0].trim_start_matches("1."), 16).unwrap();
        let pl = map.pg_to_up_acting(PgId { pool: 1, seed }).unwrap();
        assert_eq!(pl.acting, parse_vec(f[1]), "pg {}", f[0]);
        assert_eq!(pl.acting_primary, f[2].trim().parse::<i32>().unwrap(), "pg {}", f[0]);
        n += 1;
    }
    assert!(n >= pg_num as usize, "only {n} pgs compared");
    for i in 0..60 {
        let name = format!("obj-{i}-{}", i * 31);
        let out = run("osdmaptool", &["om", "--mark-up-in", "--test-map-object", &name, "--pool", "1"], d);
        //  object 'obj' -> 1.6 -> [10,6,4]
        let line = out.lines().find(|l| l.contains("object '")).unwrap();
        let parts: Vec<&str> = line.split(" -> ").collect();
        let (pl, _) = map.map_object(pool, &name, "").unwrap();
        assert_eq!(parts[1].trim(), pl.pgid.to_string(), "{name}");
        assert_eq!(parse_vec(parts[2]), pl.acting, "{name}");
    }
}
