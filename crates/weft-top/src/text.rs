//! The view as plain text (`weft top --once`, or no terminal).

use std::fmt::Write;

use crate::model::{bytes, per_sec, View};

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
    s
}
