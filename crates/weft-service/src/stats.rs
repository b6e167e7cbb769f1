//! Per-endpoint call statistics, reported as flat keys
//! (`endpoint.<route>.calls`, `.errors`, `.errors.<code>`,
//! `.latency_us.p50|p90|p99|max`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

#[derive(Debug)]
pub struct EndpointStats {
    inner: Mutex<EndpointInner>,
}

#[derive(Debug)]
struct EndpointInner {
    calls: u64,
    errors: u64,
    by_code: BTreeMap<&'static str, u64>,
    latency_us: Histogram<u64>,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self {
            inner: Mutex::new(EndpointInner {
                calls: 0,
                errors: 0,
                by_code: BTreeMap::new(),
                // 1 µs .. 1 hour at 3 significant digits; auto-resize keeps
                // out-of-range samples instead of dropping them.
                latency_us: {
                    // Constant, valid bounds (low >= 1, high >= 2*low,
                    // sigfig <= 5): construction cannot fail.
                    #[allow(clippy::unwrap_used)]
                    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
                    h.auto(true);
                    h
                },
            }),
        }
    }
}

impl EndpointStats {
    pub fn record(&self, elapsed: Duration, error_code: Option<&'static str>) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.calls += 1;
        if let Some(code) = error_code {
            s.errors += 1;
            *s.by_code.entry(code).or_default() += 1;
        }
        let us = (elapsed.as_micros() as u64).max(1);
        let _ = s.latency_us.record(us);
    }

    fn flatten_into(&self, prefix: &str, out: &mut BTreeMap<String, serde_json::Value>) {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        out.insert(format!("{prefix}.calls"), s.calls.into());
        out.insert(format!("{prefix}.errors"), s.errors.into());
        for (code, n) in &s.by_code {
            out.insert(format!("{prefix}.errors.{code}"), (*n).into());
        }
        if s.calls > 0 {
            for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
                out.insert(format!("{prefix}.latency_us.{name}"), s.latency_us.value_at_quantile(q).into());
            }
            out.insert(format!("{prefix}.latency_us.max"), s.latency_us.max().into());
        }
    }
}

/// A source of extra flat keys, read at every snapshot.
type GaugeFn = Arc<dyn Fn() -> Vec<(String, serde_json::Value)> + Send + Sync>;

/// Statistics of all endpoints plus any gauges other parts register
/// (connection counts, queue sizes...).
#[derive(Default)]
pub struct StatsRegistry {
    endpoints: Mutex<HashMap<String, Arc<EndpointStats>>>,
    gauges: Mutex<Vec<GaugeFn>>,
}

impl StatsRegistry {
    pub fn endpoint(&self, route: &str) -> Arc<EndpointStats> {
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(route.to_owned()).or_default().clone()
    }

    /// Register a source of extra flat keys, read at every snapshot.
    pub fn add_gauges(&self, f: impl Fn() -> Vec<(String, serde_json::Value)> + Send + Sync + 'static) {
        self.gauges.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::new(f));
    }

    pub fn snapshot(&self) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        let endpoints: Vec<(String, Arc<EndpointStats>)> = {
            let m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (route, s) in endpoints {
            s.flatten_into(&format!("endpoint.{route}"), &mut out);
        }
        let gauges: Vec<_> = self.gauges.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for g in gauges {
            out.extend(g());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keys() {
        let r = StatsRegistry::default();
        let e = r.endpoint("roll");
        for ms in [1u64, 2, 3, 4, 100] {
            e.record(Duration::from_millis(ms), None);
        }
        e.record(Duration::from_millis(1), Some("validation"));
        r.add_gauges(|| vec![("queue.x.size".into(), 3.into())]);
        let s = r.snapshot();
        assert_eq!(s["endpoint.roll.calls"], 6);
        assert_eq!(s["endpoint.roll.errors"], 1);
        assert_eq!(s["endpoint.roll.errors.validation"], 1);
        assert_eq!(s["queue.x.size"], 3);
        let p50 = s["endpoint.roll.latency_us.p50"].as_u64().unwrap();
        assert!((1900..=3100).contains(&p50), "{p50}");
        let max = s["endpoint.roll.latency_us.max"].as_u64().unwrap();
        assert!((99_000..=101_000).contains(&max), "{max}");
    }
}
