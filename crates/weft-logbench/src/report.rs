//! Markdown tables from result files (one JSON [`RunResult`] per line):
//! one column per label (system + durability), one row per scenario, and
//! ratio columns between chosen labels.

use std::collections::HashMap;
use std::fmt::Write;

use crate::{BenchError, RunResult};

/// `A/B` pairs shown by default, when both labels are present: the same
/// promise on both sides where one exists (fsync per ack; periodic fsync),
/// and Weft against JetStream, whose acks never wait for an fsync.
pub const DEFAULT_RATIOS: &[&str] = &[
    "weft-always/redis-always",
    "weft-interval5/redis-everysec",
    "weft-never/redis-everysec",
    "weft-never/jetstream",
    "weft-always/jetstream",
];

pub fn parse_lines(text: &str) -> Result<Vec<RunResult>, BenchError> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).map_err(BenchError::from)).collect()
}

type RowKey = (usize, usize, usize, usize);

fn row_key(r: &RunResult) -> RowKey {
    (r.scenario.size, r.scenario.producers, r.scenario.window, r.scenario.batch)
}

fn first_seen<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn k(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ms(us: u64) -> String {
    let m = us as f64 / 1000.0;
    if m >= 100.0 {
        format!("{m:.0}")
    } else if m >= 10.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.2}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn scenario_cells(key: RowKey) -> String {
    let (size, producers, window, batch) = key;
    let mode = if window == 1 { "sync".to_string() } else { format!("{window} in flight") };
    let batch = if batch == 1 { "1".to_string() } else { format!("**{batch}** (weft only)") };
    format!("| {size} B | {producers} | {mode} | {batch} |")
}

/// The whole report.
pub fn render(results: &[RunResult], ratios: &[String]) -> String {
    let labels = first_seen(results.iter().map(|r| r.label.clone()));
    let rows = first_seen(results.iter().map(row_key));
    // The last result wins when a cell was measured twice.
    let mut cell: HashMap<(RowKey, &str), &RunResult> = HashMap::new();
    for r in results {
        cell.insert((row_key(r), r.label.as_str()), r);
    }
    let ratios: Vec<(String, String)> = ratios
        .iter()
        .filter_map(|p| p.split_once('/'))
        .filter(|(a, b)| labels.iter().any(|l| l == a) && labels.iter().any(|l| l == b))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    let head = |extra: &[String]| {
        let mut h = "| size | producers | mode | records/request |".to_string();
        for l in labels.iter().chain(extra) {
            let _ = write!(h, " {l} |");
        }
        h.push('\n');
        h.push_str(&"|---".repeat(4 + labels.len() + extra.len()));
        h.push_str("|\n");
        h
    };
    let ratio_names: Vec<String> = ratios.iter().map(|(a, b)| format!("{a}/{b}")).collect();
    let mut out = String::new();

    let _ = writeln!(out, "### Produce: records/s (ratios of records/s)\n");
    out.push_str(&head(&ratio_names));
    for &row in &rows {
        out.push_str(&scenario_cells(row));
        let get = |l: &str| cell.get(&(row, l)).map(|r| r.produce_rec_s);
        for l in &labels {
            let _ = write!(out, " {} |", get(l).map_or("–".into(), k));
        }
        for (a, b) in &ratios {
            let _ = write!(out, " {} |", ratio(get(a), get(b)));
        }
        out.push('\n');
    }

    let _ = writeln!(out, "\n### Produce: MB/s of values\n");
    out.push_str(&head(&[]));
    for &row in &rows {
        out.push_str(&scenario_cells(row));
        for l in &labels {
            let v = cell.get(&(row, l.as_str())).map_or("–".into(), |r| format!("{:.1}", r.produce_mb_s));
            let _ = write!(out, " {v} |");
        }
        out.push('\n');
    }

    let _ = writeln!(out, "\n### Produce: ack latency per request, p50 / p99 (ms)\n");
    out.push_str(&head(&[]));
    for &row in &rows {
        out.push_str(&scenario_cells(row));
        for l in &labels {
            let v = cell.get(&(row, l.as_str())).map_or("–".into(), |r| format!("{} / {}", ms(r.p50_us), ms(r.p99_us)));
            let _ = write!(out, " {v} |");
        }
        out.push('\n');
    }

    // A read's speed depends on the size and the count, not on how the data
    // was written: per label and size, the run that wrote the most.
    let _ = writeln!(out, "\n### Consume: everything produced, read back in pulls of 1000 (records/s, MB/s; largest run per size)\n");
    let sizes = first_seen(rows.iter().map(|r| r.0));
    let mut raw_labels = Vec::new();
    for l in &labels {
        raw_labels.push(l.clone());
        if results.iter().any(|r| &r.label == l && r.consume_raw_rec_s.is_some()) {
            raw_labels.push(format!("{l} raw"));
        }
    }
    let mut h = "| size |".to_string();
    for l in &raw_labels {
        let _ = write!(h, " {l} |");
    }
    for (a, b) in &ratios {
        let _ = write!(h, " {a}/{b} |");
    }
    let _ = writeln!(h, "\n{}|", "|---".repeat(1 + raw_labels.len() + ratios.len()));
    out.push_str(&h);
    for &size in &sizes {
        let best = |l: &str| results.iter().filter(|r| r.label == l && r.scenario.size == size).max_by_key(|r| r.consumed);
        let _ = write!(out, "| {size} B |");
        for l in &raw_labels {
            let v = match l.strip_suffix(" raw") {
                Some(base) if !labels.contains(l) => best(base).and_then(|r| r.consume_raw_rec_s.map(|v| format!("{} ({} rec)", k(v), k(r.consumed as f64)))),
                _ => best(l).map(|r| format!("{}, {:.0} MB/s ({} rec)", k(r.consume_rec_s), r.consume_mb_s, k(r.consumed as f64))),
            };
            let _ = write!(out, " {} |", v.unwrap_or_else(|| "–".into()));
        }
        for (a, b) in &ratios {
            let _ = write!(out, " {} |", ratio(best(a).map(|r| r.consume_rec_s), best(b).map(|r| r.consume_rec_s)));
        }
        out.push('\n');
    }

    let _ = writeln!(out, "\n### Broker memory (VmRSS, MB)\n");
    let _ = writeln!(out, "| label | before the first run | peak over all runs | peak in |\n|---|---|---|---|");
    for l in &labels {
        let runs: Vec<&RunResult> = results.iter().filter(|r| &r.label == l).collect();
        let first = runs.iter().find_map(|r| r.rss_start_kb);
        let peak = runs.iter().filter(|r| r.rss_peak_kb.is_some()).max_by_key(|r| r.rss_peak_kb);
        let mb = |kb: Option<u64>| kb.map_or("–".into(), |kb| format!("{:.0}", kb as f64 / 1024.0));
        let at = peak.map_or("–".into(), |r| {
            let s = &r.scenario;
            format!("{} B, {} producers, window {}, batch {}", s.size, s.producers, s.window, s.batch)
        });
        let _ = writeln!(out, "| {l} | {} | {} | {at} |", mb(first), mb(peak.and_then(|r| r.rss_peak_kb)));
    }
    out
}

/// Every run, one row each (for the record).
pub fn render_all(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| label | size | producers | window | batch | produced | rec/s | MB/s | p50 ms | p99 ms | max ms | consume rec/s | raw rec/s | RSS peak MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let s = &r.scenario;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            r.label,
            s.size,
            s.producers,
            s.window,
            s.batch,
            r.produced,
            k(r.produce_rec_s),
            r.produce_mb_s,
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.max_us),
            k(r.consume_rec_s),
            r.consume_raw_rec_s.map_or("–".into(), k),
            r.rss_peak_kb.map_or("–".into(), |kb| format!("{:.0}", kb as f64 / 1024.0)),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Scenario;

    fn result(label: &str, system: &str, window: usize, rec_s: f64) -> RunResult {
        RunResult {
            system: system.into(),
            label: label.into(),
            scenario: Scenario { size: 100, producers: 1, window, batch: 1, duration_ms: 1000, max_records: 10 },
            produced: 10,
            requests: 10,
            produce_secs: 1.0,
            produce_rec_s: rec_s,
            produce_mb_s: rec_s * 100.0 / 1e6,
            p50_us: 110,
            p99_us: 2500,
            max_us: 9000,
            consumed: 10,
            consume_secs: 0.1,
            consume_rec_s: 100.0,
            consume_mb_s: 0.01,
            consume_raw_rec_s: (system == "weft").then_some(200.0),
            rss_start_kb: Some(10240),
            rss_peak_kb: Some(20480),
            replicas_caught_up_ms: None,
            home_behind: None,
            readback_lag_ms: None,
            disk: Vec::new(),
        }
    }

    #[test]
    fn ratios_per_row() {
        let rs = [result("weft-never", "weft", 64, 300_000.0), result("jetstream", "jetstream", 64, 100_000.0), result("weft-never", "weft", 1, 5000.0)];
        let lines = rs.iter().map(|r| serde_json::to_string(r).unwrap()).collect::<Vec<_>>().join("\n");
        let rs = parse_lines(&lines).unwrap();
        let out = render(&rs, &["weft-never/jetstream".into(), "weft-always/redis-always".into()]);
        assert!(out.contains("| 100 B | 1 | 64 in flight | 1 | 300.0k | 100.0k | 3.00 |"), "{out}");
        assert!(out.contains("| 100 B | 1 | sync | 1 | 5.0k | – | – |"), "{out}");
        // A ratio between absent labels is not shown.
        assert!(!out.contains("weft-always/redis-always"));
        assert!(out.contains("weft-never raw"));
        assert!(out.contains("| 0.11 / 2.50 |"));
        assert!(out.contains("| weft-never | 10 | 20 |"));
        assert!(render_all(&rs).lines().count() == 5);
    }
}
