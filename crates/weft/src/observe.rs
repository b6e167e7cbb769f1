//! Observability on the HTTP gateway of `weft serve`: `GET /metrics`
//! (Prometheus text, or OpenMetrics when the `Accept` header asks for it),
//! `GET /healthz` (alive) and `GET /readyz` (can serve), and the scrape-time
//! hooks that turn the log's and the queues' state into gauges. See
//! docs/observability.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use weft_log::Log;
use weft_metrics::{l1, l2, l3, Format};

/// One readiness check: `Ok(detail)` when it passes, `Err(reason)` when not.
pub type CheckFn = Box<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What `/readyz` looks at.
pub struct Readiness {
    log: Log,
    /// Set once every configured listener is bound.
    listeners_bound: AtomicBool,
    /// More checks (the cluster's "metadata leader known" goes here when a
    /// node is a cluster member).
    extra: std::sync::Mutex<Vec<(&'static str, CheckFn)>>,
}

impl Readiness {
    pub fn new(log: Log) -> Arc<Self> {
        Arc::new(Readiness { log, listeners_bound: AtomicBool::new(false), extra: std::sync::Mutex::new(vec![]) })
    }

    /// Every listener is bound: the node can take connections.
    pub fn listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// Add a named check to `/readyz` (e.g. `cluster`: a metadata leader is known).
    #[allow(dead_code)] // the hook for cluster membership (issue #15 item 2)
    pub fn add_check(&self, name: &'static str, f: impl Fn() -> Result<String, String> + Send + Sync + 'static) {
        self.extra.lock().unwrap_or_else(|p| p.into_inner()).push((name, Box::new(f)));
    }

    /// Every check now (also shown by the dashboard, crate::ui).
    pub(crate) fn checks(&self) -> Vec<Check> {
        let h = self.log.health();
        let storage = if h.closed {
            Err("the log is closed".to_owned())
        } else if h.disk_full {
            Err(format!("disk full: {} partition(s) refuse writes", h.partitions_poisoned))
        } else if h.partitions_poisoned > 0 {
            Err(format!("{} partition(s) refuse writes after a storage failure: {}", h.partitions_poisoned, h.poisoned.join("; ")))
        } else {
            Ok("open and writable".to_owned())
        };
        let listeners = if self.listeners_bound.load(Ordering::Acquire) { Ok("bound".to_owned()) } else { Err("still binding".to_owned()) };
        let mut out = vec![Check::new("storage", storage), Check::new("listeners", listeners)];
        for (name, f) in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push(Check::new(name, f()));
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Check {
    name: &'static str,
    pub(crate) ok: bool,
    detail: String,
}

impl Check {
    fn new(name: &'static str, r: Result<String, String>) -> Self {
        match r {
            Ok(detail) => Check { name, ok: true, detail },
            Err(detail) => Check { name, ok: false, detail },
        }
    }
}

#[derive(Debug, Serialize)]
struct ReadyBody {
    /// `ok` or `unavailable`.
    status: &'static str,
    checks: Vec<Check>,
}

/// `/metrics`, `/healthz`, `/readyz`, to merge into the gateway.
pub fn routes(ready: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    let checks = ready.checks();
                    let ok = checks.iter().all(|c| c.ok);
                    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (code, Json(ReadyBody { status: if ok { "ok" } else { "unavailable" }, checks }))
                }
            }),
        )
}

async fn metrics(headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // Scrape hooks read the log's and the queues' state under their locks:
    // keep that off the async workers.
    match tokio::task::spawn_blocking(move || weft_metrics::render(format)).await {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"code": "internal", "message": format!("rendering metrics failed: {e}")})))
                .into_response()
        }
    }
}

/// Partition sizes, offsets and consumer-group lag, and storage health, read
/// from the log's public API at every scrape.
pub fn install_log_gauges(log: Log) {
    weft_metrics::on_scrape(move |m| {
        m.partition_size.clear();
        m.partition_high_watermark.clear();
        m.partition_log_start.clear();
        m.partition_log_end.clear();
        m.group_lag.clear();
        for topic in log.list_topics() {
            let Ok(parts) = log.partition_stats(topic.as_str()) else { continue };
            for p in parts {
                let l = l2("topic", topic.as_str(), "partition", p.partition.0.to_string());
                m.partition_size.get_or_create(&l).set(i64::try_from(p.size_bytes).unwrap_or(i64::MAX));
                m.partition_high_watermark.get_or_create(&l).set(i64::try_from(p.high_watermark.0).unwrap_or(i64::MAX));
                m.partition_log_start.get_or_create(&l).set(i64::try_from(p.log_start_offset.0).unwrap_or(i64::MAX));
                m.partition_log_end.get_or_create(&l).set(i64::try_from(p.log_end_offset.0).unwrap_or(i64::MAX));
            }
        }
        for g in log.list_groups() {
            let Ok(d) = log.describe_group(&g.group) else { continue };
            for o in d.offsets {
                let l = l3("group", g.group.as_str(), "topic", o.topic.as_str(), "partition", o.partition.0.to_string());
                m.group_lag.get_or_create(&l).set(i64::try_from(o.lag).unwrap_or(i64::MAX));
            }
        }
        let h = log.health();
        m.log_disk_full.set(i64::from(h.disk_full));
        m.log_partitions_poisoned.set(i64::try_from(h.partitions_poisoned).unwrap_or(i64::MAX));
    });
}

/// Queue sizes of every queued endpoint and sender, at every scrape.
pub fn install_queue_gauges(queues: Arc<weft_queue::Manager>) {
    weft_metrics::on_scrape(move |m| {
        m.queue_items.clear();
        m.queue_bytes.clear();
        for (kind, infos) in [("endpoint", queues.endpoint_infos()), ("sender", queues.sender_infos())] {
            for q in infos {
                for (queue, n) in [("incoming", q.incoming), ("error", q.errors), ("in_flight", q.in_flight)] {
                    m.queue_items.get_or_create(&l3("kind", kind, "name", q.name.as_str(), "queue", queue)).set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                m.queue_bytes.get_or_create(&l2("kind", kind, "name", q.name.as_str())).set(i64::try_from(q.bytes).unwrap_or(i64::MAX));
            }
        }
    });
}

/// The pvAccess server's counters (`pva.*` stats), mirrored at every scrape.
pub fn install_pva_counters(read: Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>) {
    weft_metrics::on_scrape(move |m| {
        for (name, v) in read() {
            match name {
                "pva.connections" => weft_metrics::mirror(&m.pva_connections, v),
                "pva.connections_refused" => weft_metrics::mirror(&m.pva_connections_closed.get_or_create(&l1("reason", "allow_list")), v),
                "pva.connections_closed_on_error" => weft_metrics::mirror(&m.pva_connections_closed.get_or_create(&l1("reason", "closed_on_error")), v),
                "pva.send_stalled_closed" => weft_metrics::mirror(&m.pva_connections_closed.get_or_create(&l1("reason", "send_stalled")), v),
                "pva.searches_answered" => weft_metrics::mirror(&m.pva_searches.get_or_create(&l1("result", "answered")), v),
                "pva.searches_refused" => weft_metrics::mirror(&m.pva_searches.get_or_create(&l1("result", "refused")), v),
                "pva.access_denied" => weft_metrics::mirror(&m.pva_access_denied, v),
                "pva.requests_cancelled" => weft_metrics::mirror(&m.pva_requests_cancelled, v),
                "pva.channels_open" => {
                    m.pva_channels_open.set(i64::try_from(v).unwrap_or(i64::MAX));
                }
                "pva.monitors_open" => {
                    m.pva_monitors_open.set(i64::try_from(v).unwrap_or(i64::MAX));
                }
                "pva.monitor_updates" => weft_metrics::mirror(&m.pva_monitor_updates, v),
                _ => {}
            }
        }
    });
}

/// Raft state of every group this cluster node hosts (term, leader, commit
/// and applied indexes, elections, leader changes), read at every scrape
/// from the node's group status (one message to the raft loop, no hot-path
/// cost). A scrape that cannot reach the raft loop within a second leaves the
/// previous values.
pub fn install_cluster_gauges(node: weft_cluster::ClusterNode) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    weft_metrics::on_scrape(move |m| {
        // The appliers' counters are atomics: read before (and without) the status.
        let a = node.apply_status();
        weft_metrics::mirror(&m.cluster_apply_batches, a.batches);
        weft_metrics::mirror(&m.cluster_apply_entries, a.entries);
        weft_metrics::mirror(&m.cluster_apply_records, a.records);
        weft_metrics::mirror(&m.cluster_apply_bytes, a.bytes);
        for (bound, v) in [("entries", a.cut_entries), ("records", a.cut_records), ("bytes", a.cut_bytes)] {
            weft_metrics::mirror(&m.cluster_apply_cuts.get_or_create(&l1("bound", bound)), v);
        }
        m.cluster_apply_queued_entries.set(i64::try_from(a.queued_entries).unwrap_or(i64::MAX));
        m.cluster_apply_queued_bytes.set(i64::try_from(a.queued_bytes).unwrap_or(i64::MAX));
        weft_metrics::mirror(&m.cluster_apply_refused, a.refused);
        weft_metrics::mirror(&m.cluster_apply_held_back, a.held_back);
        // The status is async (a message to the raft loop): run it on the
        // runtime and wait here, on the scrape's blocking thread (see
        // `metrics`); a std channel rather than `block_on`, which would
        // panic if a scrape ever ran inside the runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let n = node.clone();
        rt.spawn(async move {
            let _ = tx.send(n.status().await);
        });
        let Ok(Ok(status)) = rx.recv_timeout(std::time::Duration::from_secs(1)) else { return };
        let partition_groups: std::collections::BTreeSet<u64> = status.partitions.iter().map(|p| p.group).collect();
        m.rebalance_moves_in_flight.set(i64::try_from(status.moves.len()).unwrap_or(i64::MAX));
        weft_metrics::mirror(&m.rebalance_moves_done, status.moves_done);
        weft_metrics::mirror(&m.rebalance_moves_failed, status.moves_cancelled);
        for g in &status.groups {
            let kind = if g.group == weft_cluster::META_GROUP {
                "meta"
            } else if partition_groups.contains(&g.group) {
                "partition"
            } else {
                "table"
            };
            let l = l2("group", g.group.to_string(), "kind", kind);
            let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            m.raft_term.get_or_create(&l).set(i(g.term));
            m.raft_is_leader.get_or_create(&l).set(i64::from(g.role == "Leader"));
            m.raft_leader_id.get_or_create(&l).set(i(g.leader));
            m.raft_commit_index.get_or_create(&l).set(i(g.commit));
            m.raft_applied_index.get_or_create(&l).set(i(g.applied));
            m.raft_commit_lag.get_or_create(&l).set(i(g.commit.saturating_sub(g.applied)));
            weft_metrics::mirror(&m.raft_elections.get_or_create(&l), g.elections);
            weft_metrics::mirror(&m.raft_leader_changes.get_or_create(&l), g.leader_changes);
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is the test failing
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A queued endpoint whose handler always fails: its item lands in the
    /// error queue, and the scrape says so.
    #[tokio::test]
    async fn queue_sizes_at_scrape_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = weft_service::Service::new("t");
        let queues = weft_queue::Manager::new(dir.path(), &service, weft_queue::ManagerOptions::default()).unwrap();
        let opts = weft_queue::QueueOptions { max_retries: 0, ..weft_queue::QueueOptions::default() };
        let ep = queues
            .queued_endpoint(&mut service, "jobs.fail", opts, |_: serde_json::Value| async {
                Err(weft_service::ServiceError::Handler { message: "no".into(), details: None })
            })
            .unwrap();
        ep.submit(None, &serde_json::json!({"n": 1})).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while queues.endpoint_infos()[0].errors != 1 {
            assert!(Instant::now() < deadline, "the item never reached the error queue");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        install_queue_gauges(queues.clone());
        let text = weft_metrics::render(Format::Prometheus);
        assert!(text.contains(r#"weft_queue_items{kind="endpoint",name="jobs.fail",queue="error"} 1"#), "{text}");
        assert!(text.contains(r#"weft_queue_items{kind="endpoint",name="jobs.fail",queue="incoming"} 0"#), "{text}");
        assert!(text.contains(r#"weft_queue_bytes{kind="endpoint",name="jobs.fail"}"#), "{text}");
    }
}
