//! The objecter's Prometheus families (`weft_rados_ops_total`,
//! `weft_rados_op_duration_seconds`, in weft-metrics): handles cached per
//! (pool, op, result), so an operation pays a lock and two atomic updates,
//! no allocation after the first of its kind.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use weft_metrics::{l2, l3, Counter, Histogram};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OpResult {
    /// The OSD answered with a non-negative result.
    Ok,
    /// The OSD answered with a negative result (e.g. ENOENT).
    Error,
    /// No answer (timeout, client closed, no such pool, auth).
    Failed,
}

impl OpResult {
    fn label(self) -> &'static str {
        match self {
            OpResult::Ok => "ok",
            OpResult::Error => "error",
            OpResult::Failed => "failed",
        }
    }
}

/// (pool, write, result) -> the counter and the histogram to update.
type Cache = HashMap<(i64, bool, OpResult), (Counter, Histogram)>;

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// One operation on `pool` (a write when `write`) ended with `result` after `took`.
pub(crate) fn record(pool: i64, write: bool, result: OpResult, took: Duration) {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let (ops, duration) = cache.entry((pool, write, result)).or_insert_with(|| {
        let m = weft_metrics::get();
        let op = if write { "write" } else { "read" };
        let ops = m.rados_ops.get_or_create(&l3("pool", pool.to_string(), "op", op, "result", result.label())).clone();
        let duration = m.rados_op_duration.get_or_create(&l2("pool", pool.to_string(), "op", op)).clone();
        (ops, duration)
    });
    ops.inc();
    duration.observe(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_latencies_per_pool() {
        record(7, false, OpResult::Ok, Duration::from_millis(2));
        record(7, false, OpResult::Ok, Duration::from_millis(3));
        record(7, true, OpResult::Error, Duration::from_millis(1));
        let text = weft_metrics::render(weft_metrics::Format::Prometheus);
        assert!(text.contains(r#"weft_rados_ops_total{pool="7",op="read",result="ok"} 2"#), "{text}");
        assert!(text.contains(r#"weft_rados_ops_total{pool="7",op="write",result="error"} 1"#), "{text}");
        assert!(text.contains(r#"weft_rados_op_duration_seconds_count{pool="7",op="read"} 2"#), "{text}");
        assert!(text.contains(r#"weft_rados_op_duration_seconds_count{pool="7",op="write"} 1"#), "{text}");
    }
}
