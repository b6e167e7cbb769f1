use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::Load;

/// The outcome of one run. Latencies are in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub transport: String,
    pub endpoint: String,
    pub workload: String,
    pub clients: usize,
    /// Round trips answered without error.
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Report {
    pub(crate) fn from_histogram(load: &Load, h: &Histogram<u64>, errors: u64, first_error: Option<String>, elapsed: Duration) -> Self {
        let transport = load.endpoint.transport().as_str();
        Self::from_parts(transport, load.endpoint.to_string(), load.workload.label(), load.clients, h, errors, first_error, elapsed)
    }

    #[allow(clippy::too_many_arguments)] // one per column; two callers
    pub(crate) fn from_parts(
        transport: &str,
        endpoint: String,
        workload: String,
        clients: usize,
        h: &Histogram<u64>,
        errors: u64,
        first_error: Option<String>,
        elapsed: Duration,
    ) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        let seconds = elapsed.as_secs_f64();
        let requests = h.len();
        Report {
            transport: transport.to_owned(),
            endpoint,
            workload,
            clients,
            requests,
            errors,
            first_error,
            seconds,
            requests_per_s: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
            p50_us: if requests > 0 { us(h.value_at_quantile(0.50)) } else { 0.0 },
            p99_us: if requests > 0 { us(h.value_at_quantile(0.99)) } else { 0.0 },
            max_us: if requests > 0 { us(h.max()) } else { 0.0 },
            mean_us: if requests > 0 { h.mean() / 1000.0 } else { 0.0 },
        }
    }
}

/// How the binary prints reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One header line, then one line per run (for scripts).
    Csv,
    /// One JSON object per line.
    Json,
}

pub(crate) const CSV_HEADER: &str = "transport,workload,clients,requests,errors,seconds,rps,p50_us,p99_us,max_us,mean_us";

impl Format {
    pub(crate) fn header(self, out: &mut impl Write) -> std::io::Result<()> {
        match self {
            Format::Table => writeln!(
                out,
                "{:<9} {:<10} {:>7} {:>10} {:>6} {:>7} {:>11} {:>9} {:>9} {:>10}",
                "transport", "workload", "clients", "requests", "errors", "seconds", "req/s", "p50_us", "p99_us", "max_us"
            ),
            Format::Csv => writeln!(out, "{CSV_HEADER}"),
            Format::Json => Ok(()),
        }
    }

    pub(crate) fn row(self, r: &Report, out: &mut impl Write) -> std::io::Result<()> {
        match self {
            Format::Table => writeln!(
                out,
                "{:<9} {:<10} {:>7} {:>10} {:>6} {:>7.2} {:>11.0} {:>9.1} {:>9.1} {:>10.1}",
                r.transport, r.workload, r.clients, r.requests, r.errors, r.seconds, r.requests_per_s, r.p50_us, r.p99_us, r.max_us
            ),
            Format::Csv => writeln!(
                out,
                "{},{},{},{},{},{:.3},{:.1},{:.1},{:.1},{:.1},{:.1}",
                r.transport, r.workload, r.clients, r.requests, r.errors, r.seconds, r.requests_per_s, r.p50_us, r.p99_us, r.max_us, r.mean_us
            ),
            Format::Json => {
                let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
                writeln!(out, "{line}")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::load::Workload;

    fn sample() -> Report {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for ns in [10_000u64, 20_000, 30_000, 40_000, 1_000_000] {
            h.record(ns).unwrap();
        }
        let load = Load::new("udp://127.0.0.1:7400".parse::<weft_net::Target>().unwrap(), 16);
        Report::from_histogram(&load, &h, 2, Some("timeout".into()), Duration::from_millis(500))
    }

    #[test]
    fn numbers_from_the_histogram() {
        let r = sample();
        assert_eq!(r.transport, "udp");
        assert_eq!(r.workload, Workload::Ping.label());
        assert_eq!(r.requests, 5);
        assert_eq!(r.errors, 2);
        assert!((r.requests_per_s - 10.0).abs() < 1e-9);
        assert!((r.p50_us - 30.0).abs() < 0.1, "{}", r.p50_us);
        assert!((r.max_us - 1000.0).abs() < 1.0, "{}", r.max_us);
        assert!(r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
    }

    #[test]
    fn csv_has_one_field_per_header_column() {
        let mut out = vec![];
        Format::Csv.header(&mut out).unwrap();
        Format::Csv.row(&sample(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(lines[1].starts_with("udp,ping,16,5,2,"), "{}", lines[1]);
    }

    #[test]
    fn empty_run_has_zero_latencies() {
        let h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        let load = Load::new("tcp://127.0.0.1:7400".parse::<weft_net::Target>().unwrap(), 1);
        let r = Report::from_histogram(&load, &h, 3, None, Duration::from_secs(1));
        assert_eq!((r.requests, r.p50_us, r.p99_us), (0, 0.0, 0.0));
    }
}
