//! Pool and cluster state from the monitors' answers, as typed structs:
//! pool statistics (`df detail`, what `rados df` / `ceph df` show), cluster
//! status and health (`status`, what `ceph -s` shows) and the state of
//! every PG (`pg dump pgs_brief`), grouped per pool.
//!
//! The numbers come from the PG map that the manager daemon reports to the
//! monitors: without a running ceph-mgr they are zero (and `status` says
//! so in its health checks), exactly as `rados df` and `ceph -s` show them.
//! Parsing is separate from fetching, so the parsers are tested on saved
//! answers.

use crate::error::{Error, Result};
use crate::proto::enc::DecodeError;
use crate::rados::Rados;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn bad(what: &'static str, e: serde_json::Error) -> Error {
    Error::Decode(DecodeError::invalid(what, e.to_string()))
}

/// One pool's statistics (from `df detail`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolStats {
    pub name: String,
    pub id: i64,
    /// Bytes the clients stored (before replication).
    pub stored: u64,
    pub objects: u64,
    /// Bytes used on the OSDs (after replication).
    pub bytes_used: u64,
    pub percent_used: f64,
    pub max_avail: u64,
    pub quota_objects: u64,
    pub quota_bytes: u64,
    /// Read and write ops and bytes since the pool was made.
    pub rd: u64,
    pub rd_bytes: u64,
    pub wr: u64,
    pub wr_bytes: u64,
}

/// The cluster's raw capacity and every pool's statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterDf {
    pub total_bytes: u64,
    pub total_avail_bytes: u64,
    pub total_used_raw_bytes: u64,
    pub pools: Vec<PoolStats>,
}

impl ClusterDf {
    /// Parses the monitor's `df detail` JSON answer.
    pub fn parse(json: &[u8]) -> Result<ClusterDf> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Totals {
            total_bytes: u64,
            total_avail_bytes: u64,
            total_used_raw_bytes: u64,
        }
        #[derive(Deserialize)]
        struct Pool {
            name: String,
            id: i64,
            #[serde(default)]
            stats: PoolStats,
        }
        #[derive(Deserialize)]
        struct Df {
            #[serde(default)]
            stats: Totals,
            #[serde(default)]
            pools: Vec<Pool>,
        }
        let d: Df = serde_json::from_slice(json).map_err(|e| bad("df", e))?;
        let mut pools: Vec<PoolStats> =
            d.pools.into_iter().map(|p| PoolStats { name: p.name, id: p.id, ..p.stats }).collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterDf {
            total_bytes: d.stats.total_bytes,
            total_avail_bytes: d.stats.total_avail_bytes,
            total_used_raw_bytes: d.stats.total_used_raw_bytes,
            pools,
        })
    }

    pub fn total_objects(&self) -> u64 {
        self.pools.iter().map(|p| p.objects).sum()
    }

    /// A table in the spirit of `rados df`.
    pub fn render(&self) -> String {
        let w = self.pools.iter().map(|p| p.name.len()).max().unwrap_or(0).max(9);
        let mut s = format!(
            "{:<w$} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "POOL_NAME", "STORED", "USED", "OBJECTS", "RD_OPS", "RD", "WR_OPS", "WR"
        );
        for p in &self.pools {
            s.push_str(&format!(
                "{:<w$} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
                p.name,
                human_bytes(p.stored),
                human_bytes(p.bytes_used),
                p.objects,
                p.rd,
                human_bytes(p.rd_bytes),
                p.wr,
                human_bytes(p.wr_bytes)
            ));
        }
        s.push_str(&format!(
            "\ntotal_objects    {}\ntotal_used       {}\ntotal_avail      {}\ntotal_space      {}\n",
            self.total_objects(),
            human_bytes(self.total_used_raw_bytes),
            human_bytes(self.total_avail_bytes),
            human_bytes(self.total_bytes)
        ));
        s
    }
}

/// One health check (`MGR_DOWN`, `OSD_NEARFULL`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    /// `HEALTH_WARN` or `HEALTH_ERR`.
    pub severity: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// `HEALTH_OK`, `HEALTH_WARN` or `HEALTH_ERR`.
    pub status: String,
    pub checks: BTreeMap<String, HealthCheck>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonSummary {
    pub epoch: u64,
    pub num_mons: u32,
    pub quorum: Vec<String>,
    /// Seconds since the quorum formed.
    pub quorum_age_s: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OsdSummary {
    pub epoch: u64,
    pub num_osds: u32,
    pub num_up_osds: u32,
    pub num_in_osds: u32,
    pub num_remapped_pgs: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PgSummary {
    /// PG count per state (`active+clean` -> 8).
    pub by_state: BTreeMap<String, u32>,
    pub num_pgs: u32,
    pub num_pools: u32,
    pub num_objects: u64,
    pub data_bytes: u64,
    pub bytes_used: u64,
    pub bytes_avail: u64,
    pub bytes_total: u64,
}

/// What `ceph -s` shows, from the monitor's `status` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub fsid: String,
    pub health: Health,
    pub mons: MonSummary,
    /// Whether a manager is active (without one, pool and PG numbers are
    /// not reported).
    pub mgr_available: bool,
    pub mgr_standbys: u32,
    pub osds: OsdSummary,
    pub pgs: PgSummary,
}

impl ClusterStatus {
    /// Parses the monitor's `status` JSON answer (Pacific's layout; the
    /// older nesting `osdmap.osdmap` is accepted too).
    pub fn parse(json: &[u8]) -> Result<ClusterStatus> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct CheckSummary {
            message: String,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Check {
            severity: String,
            summary: CheckSummary,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct H {
            status: String,
            checks: BTreeMap<String, Check>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Monmap {
            epoch: u64,
            num_mons: u32,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct StateCount {
            state_name: String,
            count: u32,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Pgmap {
            pgs_by_state: Vec<StateCount>,
            num_pgs: u32,
            num_pools: u32,
            num_objects: u64,
            data_bytes: u64,
            bytes_used: u64,
            bytes_avail: u64,
            bytes_total: u64,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Mgrmap {
            available: bool,
            num_standbys: u32,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct S {
            fsid: String,
            health: H,
            quorum_names: Vec<String>,
            quorum_age: u64,
            monmap: Monmap,
            osdmap: serde_json::Value,
            pgmap: Pgmap,
            mgrmap: Mgrmap,
        }
        let s: S = serde_json::from_slice(json).map_err(|e| bad("status", e))?;
        let osd = match s.osdmap.get("osdmap") {
            Some(inner) => inner.clone(),
            None => s.osdmap,
        };
        let osds: OsdSummary = if osd.is_null() { OsdSummary::default() } else { serde_json::from_value(osd).map_err(|e| bad("status.osdmap", e))? };
        Ok(ClusterStatus {
            fsid: s.fsid,
            health: Health {
                status: s.health.status,
                checks: s
                    .health
                    .checks
                    .into_iter()
                    .map(|(k, c)| (k, HealthCheck { severity: c.severity, message: c.summary.message }))
                    .collect(),
            },
            mons: MonSummary { epoch: s.monmap.epoch, num_mons: s.monmap.num_mons, quorum: s.quorum_names, quorum_age_s: s.quorum_age },
            mgr_available: s.mgrmap.available,
            mgr_standbys: s.mgrmap.num_standbys,
            osds,
            pgs: PgSummary {
                by_state: s.pgmap.pgs_by_state.into_iter().map(|c| (c.state_name, c.count)).collect(),
                num_pgs: s.pgmap.num_pgs,
                num_pools: s.pgmap.num_pools,
                num_objects: s.pgmap.num_objects,
                data_bytes: s.pgmap.data_bytes,
                bytes_used: s.pgmap.bytes_used,
                bytes_avail: s.pgmap.bytes_avail,
                bytes_total: s.pgmap.bytes_total,
            },
        })
    }
}

/// The PG states of one pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolPgStates {
    pub pool: String,
    pub id: i64,
    /// PG count per state.
    pub states: BTreeMap<String, u32>,
}

/// Groups `pg dump pgs_brief` by pool (pool names from `names`; PGs of
/// pools not in it are listed under their id).
pub fn parse_pg_states(json: &[u8], names: &BTreeMap<i64, String>) -> Result<Vec<PoolPgStates>> {
    #[derive(Deserialize)]
    struct Pg {
        pgid: String,
        state: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Dump {
        // Pacific: {"pg_ready": .., "pg_stats": [...]}; older: a bare list
        Wrapped { pg_stats: Vec<Pg> },
        Bare(Vec<Pg>),
    }
    let pgs = match serde_json::from_slice(json).map_err(|e| bad("pg dump pgs_brief", e))? {
        Dump::Wrapped { pg_stats } => pg_stats,
        Dump::Bare(v) => v,
    };
    let mut by_pool: BTreeMap<i64, BTreeMap<String, u32>> = BTreeMap::new();
    for pg in pgs {
        let pool = pg
            .pgid
            .split_once('.')
            .and_then(|(p, _)| p.parse::<i64>().ok())
            .ok_or_else(|| Error::Decode(DecodeError::invalid("pg dump pgs_brief", format!("bad pgid {:?}", pg.pgid))))?;
        *by_pool.entry(pool).or_default().entry(pg.state).or_default() += 1;
    }
    Ok(by_pool
        .into_iter()
        .map(|(id, states)| PoolPgStates { pool: names.get(&id).cloned().unwrap_or_else(|| id.to_string()), id, states })
        .collect())
}

/// `status` plus the PG states per pool: what `weft rados status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub status: ClusterStatus,
    pub pools: Vec<PoolPgStates>,
}

fn states_line(states: &BTreeMap<String, u32>) -> String {
    let mut v: Vec<_> = states.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
}

impl StatusReport {
    /// A summary laid out like `ceph -s`.
    pub fn render(&self) -> String {
        let st = &self.status;
        let mut s = format!("  cluster:\n    id:     {}\n    health: {}\n", st.fsid, st.health.status);
        for (name, c) in &st.health.checks {
            s.push_str(&format!("            {name} ({}): {}\n", c.severity, c.message));
        }
        s.push_str(&format!(
            "\n  services:\n    mon: {} daemons, quorum {} (age {}s)\n",
            st.mons.num_mons,
            st.mons.quorum.join(","),
            st.mons.quorum_age_s
        ));
        if st.mgr_available {
            s.push_str(&format!("    mgr: active, {} standbys\n", st.mgr_standbys));
        } else {
            s.push_str("    mgr: no daemons active\n");
        }
        s.push_str(&format!(
            "    osd: {} osds: {} up, {} in; epoch {}\n",
            st.osds.num_osds, st.osds.num_up_osds, st.osds.num_in_osds, st.osds.epoch
        ));
        s.push_str(&format!(
            "\n  data:\n    pools:   {} pools, {} pgs\n    objects: {} objects, {}\n    usage:   {} used, {} / {} avail\n    pgs:     {}\n",
            st.pgs.num_pools,
            st.pgs.num_pgs,
            st.pgs.num_objects,
            human_bytes(st.pgs.data_bytes),
            human_bytes(st.pgs.bytes_used),
            human_bytes(st.pgs.bytes_avail),
            human_bytes(st.pgs.bytes_total),
            states_line(&st.pgs.by_state)
        ));
        if !self.pools.is_empty() {
            s.push_str("\n  pgs by pool:\n");
            let w = self.pools.iter().map(|p| p.pool.len()).max().unwrap_or(0);
            for p in &self.pools {
                s.push_str(&format!("    {:<w$} {}\n", p.pool, states_line(&p.states)));
            }
        }
        s
    }
}

/// `4 MiB`, `1.5 GiB`, `0 B` (binary units, one decimal unless exact).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    let unit = UNITS.get(u).copied().unwrap_or("B");
    if v.fract() == 0.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

impl Rados {
    /// Pool statistics and raw capacity (`df detail`).
    pub async fn df(&self) -> Result<ClusterDf> {
        let (out, _) = self.mon_command(serde_json::json!({"prefix": "df", "detail": "detail", "format": "json"}), b"").await?;
        ClusterDf::parse(&out)
    }

    /// Cluster status and health (`status`).
    pub async fn status(&self) -> Result<ClusterStatus> {
        let (out, _) = self.mon_command(serde_json::json!({"prefix": "status", "format": "json"}), b"").await?;
        ClusterStatus::parse(&out)
    }

    /// Every PG's state, counted per pool (`pg dump pgs_brief`).
    pub async fn pg_states(&self) -> Result<Vec<PoolPgStates>> {
        let (out, _) = self
            .mon_command(serde_json::json!({"prefix": "pg dump", "dumpcontents": ["pgs_brief"], "format": "json"}), b"")
            .await?;
        let names: BTreeMap<i64, String> = self.pool_list()?.into_iter().collect();
        parse_pg_states(&out, &names)
    }

    /// `status` and the PG states per pool. The monitors hand `pg dump` to
    /// the active ceph-mgr and wait for one (as `ceph pg dump` does), so
    /// without an active mgr the PG states are left out instead of waiting.
    pub async fn status_report(&self) -> Result<StatusReport> {
        let status = self.status().await?;
        let pools = if status.mgr_available { self.pg_states().await? } else { Vec::new() };
        Ok(StatusReport { status, pools })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // answers of a Pacific 16.2.15 cluster (1 mon, 1 OSD, a mgr)
    const DF: &str = r#"{"stats":{"total_bytes":8589934592,"total_avail_bytes":8585716355,"total_used_bytes":4218237,"total_used_raw_bytes":4218237,"total_used_raw_ratio":0.00049,"num_osds":1},"stats_by_class":{},"pools":[{"name":"test","id":2,"stats":{"stored":0,"stored_data":0,"objects":0,"kb_used":0,"bytes_used":0,"percent_used":0,"max_avail":8156218880,"quota_objects":0,"quota_bytes":0,"dirty":0,"rd":0,"rd_bytes":0,"wr":0,"wr_bytes":0}},{"name":"ballast","id":3,"stats":{"stored":4194304,"objects":1,"kb_used":4096,"bytes_used":4194304,"percent_used":0.000514,"max_avail":8156218880,"quota_objects":0,"quota_bytes":0,"dirty":0,"rd":0,"rd_bytes":0,"wr":1,"wr_bytes":4194304,"new_field":1}}]}"#;
    const STATUS: &str = r#"{"fsid":"621ad33f-75e9-4f7d-959d-e4e5c92cc842","health":{"status":"HEALTH_WARN","checks":{"MGR_DOWN":{"severity":"HEALTH_WARN","summary":{"message":"no active mgr","count":0},"muted":false}},"mutes":[]},"election_epoch":3,"quorum":[0],"quorum_names":["a"],"quorum_age":35,"monmap":{"epoch":1,"min_mon_release_name":"pacific","num_mons":1},"osdmap":{"epoch":10,"num_osds":1,"num_up_osds":1,"osd_up_since":1796583295,"num_in_osds":1,"osd_in_since":1796583292,"num_remapped_pgs":0},"pgmap":{"pgs_by_state":[{"state_name":"active+clean","count":10}],"num_pgs":10,"num_pools":3,"num_objects":1,"data_bytes":4194304,"bytes_used":4218237,"bytes_avail":8585716355,"bytes_total":8589934592},"fsmap":{"epoch":1,"by_rank":[],"up:standby":0},"mgrmap":{"available":false,"num_standbys":0,"modules":[],"services":{}},"servicemap":{},"progress_events":{}}"#;
    const PGS: &str = r#"{"pg_ready":true,"pg_stats":[{"pgid":"2.7","state":"active+clean","up":[0],"acting":[0],"up_primary":0,"acting_primary":0},{"pgid":"2.6","state":"peering","up":[0],"acting":[0],"up_primary":0,"acting_primary":0},{"pgid":"3.0","state":"active+clean","up":[0],"acting":[0],"up_primary":0,"acting_primary":0},{"pgid":"9.0","state":"unknown","up":[],"acting":[],"up_primary":-1,"acting_primary":-1}]}"#;

    #[test]
    fn parses_df() {
        let d = ClusterDf::parse(DF.as_bytes()).unwrap();
        assert_eq!(d.total_bytes, 8_589_934_592);
        assert_eq!(d.pools.len(), 2);
        assert_eq!(d.pools[0].name, "ballast"); // sorted by name
        assert_eq!((d.pools[0].id, d.pools[0].objects, d.pools[0].bytes_used, d.pools[0].wr), (3, 1, 4_194_304, 1));
        assert_eq!(d.total_objects(), 1);
        let text = d.render();
        assert!(text.contains("ballast") && text.contains("4 MiB") && text.contains("total_objects    1"), "{text}");
        assert!(ClusterDf::parse(b"[1,2]").is_err());
        assert!(ClusterDf::parse(b"{\"pools\":[{\"name\":3}]}").is_err());
    }

    #[test]
    fn parses_status() {
        let s = ClusterStatus::parse(STATUS.as_bytes()).unwrap();
        assert_eq!(s.health.status, "HEALTH_WARN");
        assert_eq!(s.health.checks["MGR_DOWN"].message, "no active mgr");
        assert_eq!((s.mons.num_mons, s.mons.quorum.clone()), (1, vec!["a".to_string()]));
        assert_eq!((s.osds.epoch, s.osds.num_osds, s.osds.num_up_osds, s.osds.num_in_osds), (10, 1, 1, 1));
        assert_eq!(s.pgs.by_state["active+clean"], 10);
        assert!(!s.mgr_available);
        // the nesting of older releases
        let old = STATUS.replace(r#""osdmap":{"epoch":10"#, r#""osdmap":{"osdmap":{"epoch":10"#).replace(
            r#""num_remapped_pgs":0}"#,
            r#""num_remapped_pgs":0}}"#,
        );
        assert_eq!(ClusterStatus::parse(old.as_bytes()).unwrap().osds, s.osds);
        assert!(ClusterStatus::parse(b"not json").is_err());
        let report = StatusReport { status: s, pools: vec![] };
        let text = report.render();
        assert!(text.contains("health: HEALTH_WARN") && text.contains("MGR_DOWN") && text.contains("10 active+clean"), "{text}");
    }

    #[test]
    fn groups_pg_states_by_pool() {
        let names: BTreeMap<i64, String> = [(2, "test".to_string()), (3, "ballast".to_string())].into();
        let v = parse_pg_states(PGS.as_bytes(), &names).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].pool, "test");
        assert_eq!(v[0].states, [("active+clean".to_string(), 1), ("peering".to_string(), 1)].into());
        assert_eq!(v[2].pool, "9"); // a pool our map does not know yet
        assert!(parse_pg_states(br#"{"pg_stats":[{"pgid":"x","state":"a"}]}"#, &names).is_err());
        assert_eq!(parse_pg_states(br#"[]"#, &names).unwrap(), vec![]);
    }

    #[test]
    fn human_bytes_like_ceph() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(4 << 20), "4 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(u64::MAX), "16384 PiB");
    }
}
