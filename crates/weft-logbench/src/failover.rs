//! Failover time: from kill -9 of a stream's (partition's) leader to the
//! first produce acknowledged after it, with one producer publishing
//! synchronously the whole time (bench/cluster.sh).
//!
//! The tool finds the leader itself (JetStream: the stream's cluster info),
//! kills it by the pid the script gave for that server name, and retries
//! each publish with a short timeout until one is acked. The time starts
//! just before the kill is sent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::engine::payload;
use crate::jetstream::{subject, JetStreamTarget};
use crate::BenchError;

/// One failover measurement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailoverResult {
    pub system: String,
    pub label: String,
    /// The server that led the stream and was killed.
    pub killed: String,
    pub killed_pid: u32,
    /// Records acknowledged before the kill (warm-up).
    pub acked_before: u64,
    /// kill -9 to the first acknowledged produce.
    pub failover_ms: f64,
    /// Publish attempts that failed or timed out in between.
    pub failed_attempts: u64,
}

/// Parses `name=pid,name=pid`.
pub fn parse_pids(s: &str) -> Result<HashMap<String, u32>, BenchError> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, pid) = p.split_once('=').ok_or_else(|| BenchError::Usage(format!("--pids takes NAME=PID,..., not {p:?}")))?;
            let pid = pid.parse().map_err(|_| BenchError::Usage(format!("bad pid in {p:?}")))?;
            Ok((n.to_owned(), pid))
        })
        .collect()
}

fn kill9(pid: u32) -> Result<(), BenchError> {
    let st = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
    if !st.success() {
        return Err(BenchError::Unexpected(format!("kill -9 {pid} failed")));
    }
    Ok(())
}

/// JetStream: a stream with `replicas`, `warmup` of synchronous publishes,
/// kill -9 of its leader, then publish until one is acked (bounded by `max_wait`).
pub async fn jetstream(
    t: &JetStreamTarget,
    label: &str,
    pids: &HashMap<String, u32>,
    replicas: usize,
    size: usize,
    warmup: Duration,
    max_wait: Duration,
) -> Result<FailoverResult, BenchError> {
    let nats = |e: &dyn std::fmt::Display| BenchError::Nats(e.to_string());
    let ctx = t.context();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let name = format!("lbfail{stamp}");
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![subject(&name)],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    let mut s = ctx.create_stream(config).await.map_err(|e| nats(&e))?;
    let value = Bytes::from(payload(size));
    let subj = subject(&name);
    let publish = |timeout: Duration| {
        let (ctx, subj, value) = (ctx.clone(), subj.clone(), value.clone());
        async move {
            let r = tokio::time::timeout(timeout, async {
                let ack = ctx.publish(subj, value).await.map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            })
            .await;
            matches!(r, Ok(Ok(_)))
        }
    };
    let start = Instant::now();
    let mut acked_before = 0;
    while start.elapsed() < warmup {
        if publish(Duration::from_secs(5)).await {
            acked_before += 1;
        }
    }
    if acked_before == 0 {
        return Err(BenchError::Unexpected("no publish acknowledged during warm-up".into()));
    }
    let info = s.info().await.map_err(|e| nats(&e))?;
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone()).ok_or_else(|| BenchError::Unexpected("the stream has no leader in its cluster info".into()))?;
    let pid = *pids.get(&leader).ok_or_else(|| BenchError::Usage(format!("no pid given for the leader {leader:?}")))?;
    let t0 = Instant::now();
    kill9(pid)?;
    let mut failed_attempts = 0;
    loop {
        if publish(Duration::from_millis(500)).await {
            break;
        }
        failed_attempts += 1;
        if t0.elapsed() > max_wait {
            return Err(BenchError::Unexpected(format!("no publish acknowledged within {max_wait:?} of killing {leader}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failover_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // Best effort: two of three servers can still delete it.
    let _ = ctx.delete_stream(&name).await;
    Ok(FailoverResult { system: "jetstream".into(), label: label.into(), killed: leader, killed_pid: pid, acked_before, failover_ms, failed_attempts })
}

/// Weft: a topic with `replicas` (`log.topic.create`), `warmup` of
/// synchronous `log.produce` calls, kill -9 of partition 0's leader (from
/// `cluster.status`; `pids` maps node ids to pids), then produce through
/// the nodes in turn until one is acked (a surviving replica holds the
/// request until a new leader is elected, up to its propose timeout; each
/// attempt here gives up after 500 ms, as for JetStream). `targets` are
/// every node's native address.
pub async fn weft(
    targets: &[weft_net::Endpoint],
    label: &str,
    pids: &HashMap<String, u32>,
    replicas: usize,
    size: usize,
    warmup: Duration,
    max_wait: Duration,
) -> Result<FailoverResult, BenchError> {
    use weft_broker::dto::{self, route};
    use weft_net::{Client, ClientConfig};

    let cfg = ClientConfig { client_name: "weft-logbench".into(), connect_timeout: Duration::from_millis(500), request_timeout: Duration::from_millis(500), ..ClientConfig::default() };
    let mut clients: Vec<Option<Client>> = vec![None; targets.len()];
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let name = format!("lbfail{stamp}");
    // One call on node i; None on any failure (a broken connection is
    // dropped, so a restarted node is reached again).
    async fn attempt(clients: &mut [Option<Client>], targets: &[weft_net::Endpoint], cfg: &ClientConfig, i: usize, route: &str, body: &serde_json::Value) -> Option<serde_json::Value> {
        if clients.get(i)?.is_none() {
            let c = Client::connect(targets.get(i)?.clone(), cfg.clone()).await.ok()?;
            clients[i] = Some(c);
        }
        match clients.get(i)?.as_ref()?.call::<_, serde_json::Value>(route, body).await {
            Ok(v) => Some(v),
            Err(e) => {
                if matches!(e, weft_net::ClientError::Connect { .. } | weft_net::ClientError::Closed) {
                    clients[i] = None;
                }
                None
            }
        }
    }
    let record = dto::RecordIn { partition: Some(0), value: Some(dto::SharedBytes::from(payload(size))), ..Default::default() };
    let produce_body = serde_json::to_value(dto::Produce { topic: name.clone(), records: vec![record], ..Default::default() })?;
    let create = serde_json::json!({"name": name, "config": {"partitions": 1}, "replicas": replicas});
    let mut created = false;
    for i in 0..targets.len() * 20 {
        if attempt(&mut clients, targets, &cfg, i % targets.len(), route::TOPIC_CREATE, &create).await.is_some() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !created {
        return Err(BenchError::Unexpected("log.topic.create failed on every node".into()));
    }
    let acked = |v: &serde_json::Value| v["results"].as_array().and_then(|r| r.first()).is_some_and(|r| r["offset"].is_u64());
    let start = Instant::now();
    let (mut acked_before, mut node) = (0u64, 0usize);
    while start.elapsed() < warmup {
        match attempt(&mut clients, targets, &cfg, node, route::PRODUCE, &produce_body).await {
            Some(v) if acked(&v) => acked_before += 1,
            _ => node = (node + 1) % targets.len(),
        }
    }
    if acked_before == 0 {
        return Err(BenchError::Unexpected("no produce acknowledged during warm-up".into()));
    }
    let mut leader = None;
    for i in 0..targets.len() {
        if let Some(s) = attempt(&mut clients, targets, &cfg, i, "cluster.status", &serde_json::Value::Null).await {
            leader = crate::weft::leader_in_status(&s, &name).map(|(id, _)| id);
            if leader.is_some() {
                break;
            }
        }
    }
    let leader = leader.ok_or_else(|| BenchError::Unexpected("cluster.status names no leader for the partition".into()))?.to_string();
    let pid = *pids.get(&leader).ok_or_else(|| BenchError::Usage(format!("no pid given for node {leader}")))?;
    let t0 = Instant::now();
    kill9(pid)?;
    let mut failed_attempts = 0;
    loop {
        match attempt(&mut clients, targets, &cfg, node, route::PRODUCE, &produce_body).await {
            Some(v) if acked(&v) => break,
            _ => {
                failed_attempts += 1;
                node = (node + 1) % targets.len();
            }
        }
        if t0.elapsed() > max_wait {
            return Err(BenchError::Unexpected(format!("no produce acknowledged within {max_wait:?} of killing node {leader}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failover_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // Best effort: the two survivors can delete it.
    for i in 0..targets.len() {
        if attempt(&mut clients, targets, &cfg, i, route::TOPIC_DELETE, &serde_json::json!({"name": name})).await.is_some() {
            break;
        }
    }
    Ok(FailoverResult { system: "weft".into(), label: label.into(), killed: leader, killed_pid: pid, acked_before, failover_ms, failed_attempts })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_and_refuse_garbage() {
        let m = parse_pids("n1=10,n2=20").unwrap();
        assert_eq!(m.get("n2"), Some(&20));
        assert!(parse_pids("n1").is_err());
        assert!(parse_pids("n1=x").is_err());
    }
}
