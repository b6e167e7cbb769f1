//! The view as plain text (`weft top --once`, or no terminal).

use std::fmt::Write;

use crate::model::{bytes, per_sec, View};
use crate::render::{apply_line, cluster_line, elections_line, node_cells, partition_cells, pva_line, table_cells};

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn render(v: &View) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "weft {} ({}) v{}  up {:.0}s  connections {}  frames in/s {}  refused {}",
        v.node.name,
        v.node.id,
        v.node.version,
        v.node.uptime_s,
        v.connections_open,
        per_sec(v.frames_in_rate),
        v.refused
    );
    if let Some(h) = &v.http {
        let _ = writeln!(s, "{}", crate::render::http_line(h));
    }
    let _ = writeln!(s, "\nENDPOINT                          CALLS      /S  ERRORS   P50 US   P99 US");
    let idle = v.endpoints.iter().filter(|e| e.calls == 0).count();
    for e in v.endpoints.iter().filter(|e| e.calls > 0) {
        let _ = writeln!(s, "{:<30} {:>8} {:>7} {:>7} {:>8} {:>8}", e.route, e.calls, per_sec(e.rate), e.errors, opt(e.p50_us), opt(e.p99_us));
    }
    if idle > 0 {
        let _ = writeln!(s, "({idle} endpoint(s) never called)");
    }
    if !v.topics.is_empty() {
        let _ = writeln!(s, "\nTOPIC                     PARTITIONS    RECORDS      /S       SIZE");
        for t in &v.topics {
            let flag = if t.poisoned > 0 { format!("  ({} partition(s) failed)", t.poisoned) } else { String::new() };
            let _ = writeln!(s, "{:<25} {:>10} {:>10} {:>7} {:>10}{flag}", t.name, t.partitions, t.records, per_sec(t.rate), bytes(t.size_bytes));
        }
    }
    if !v.groups.is_empty() {
        let _ = writeln!(s, "\nGROUP                     STATE        MEMBERS        LAG");
        for g in &v.groups {
            let _ = writeln!(s, "{:<25} {:<12} {:>7} {:>10}", g.group, g.state, g.members, g.total_lag);
        }
    }
    if !v.queues.is_empty() {
        let _ = writeln!(s, "\nQUEUE                     KIND       PENDING  ERRORS  IN FLIGHT     /S  STATE");
        for q in &v.queues {
            let _ = writeln!(s, "{:<25} {:<9} {:>8} {:>7} {:>10} {:>6}  {}", q.name, q.kind, q.pending, q.errors, q.in_flight, per_sec(q.rate), q.state);
        }
    }
    if let Some(c) = &v.cluster {
        let _ = writeln!(s, "\n{}  {}", cluster_line(c), elections_line(c));
        if let Some(line) = apply_line(c) {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "NODE  ROLES         VOTE   LIVE  LAST CONTACT  METADATA  ADDR");
        for n in &c.nodes {
            let [id, roles, vote, live, contact, meta] = node_cells(n);
            let _ = writeln!(s, "{id:<5} {roles:<13} {vote:<6} {live:<5} {contact:<13} {meta:<9} {}", n.addr);
        }
        if !c.partitions.is_empty() {
            let _ = writeln!(s, "\nPARTITION                 LEADER  REPLICAS    IN SYNC     HIGH WATER      /S      LAG");
            for p in &c.partitions {
                let [name, leader, replicas, in_sync, hw, rate, lag] = partition_cells(p);
                let _ = writeln!(s, "{name:<25} {leader:>6}  {replicas:<11} {in_sync:<11} {hw:>10} {rate:>7} {lag:>8}");
            }
        }
        if !c.moves.is_empty() {
            let _ = writeln!(s, "\nMOVE GROUP  FROM    TO  WHY  (done {}, cancelled {})", c.moves_done, c.moves_cancelled);
            for m in &c.moves {
                let _ = writeln!(s, "{:>10} {:>5} {:>5}  {}", m.group, m.from, m.to, m.reason);
            }
        }
    } else if let Some(e) = &v.cluster_error {
        let _ = writeln!(s, "\ncluster: {e}");
    }
    if !v.tables.is_empty() {
        let _ = writeln!(s, "\nTABLE                     KIND        LEADER          REVISION      KEYS       SIZE  WRITES/S  WATCHERS");
        for t in &v.tables {
            let [name, kind, leader, rev, keys, size, rate, watchers] = table_cells(t);
            let _ = writeln!(s, "{name:<25} {kind:<11} {leader:<14} {rev:>9} {keys:>9} {size:>10} {rate:>9} {watchers:>9}");
        }
    }
    if let Some(p) = &v.pva {
        let _ = writeln!(s, "\n{}", pva_line(p));
        if !p.pvs.is_empty() {
            let _ = writeln!(s, "PV                            TYPE                       RW  VALUE");
            for pv in &p.pvs {
                let _ = writeln!(s, "{:<29} {:<26} {:<3} {}", pv.name, pv.r#type, if pv.writable { "rw" } else { "r" }, pv.display);
            }
            if p.pvs_total > p.pvs.len() {
                let _ = writeln!(s, "({} more PV(s))", p.pvs_total - p.pvs.len());
            }
        }
    }
    s
}
