//! Weft: `log.produce` / `log.fetch` on the native protocol (TCP or Unix
//! socket), one [`Client`] connection per producer.
//!
//! On a cluster (`--replicas` above 1, bench/cluster.sh) the topic is made
//! replicated with `log.topic.create`, and producers and the read-back go
//! to the partition's leader (named by `cluster.status`), as a Kafka client
//! would: any node accepts them (a follower forwards the proposal), but
//! the leader saves a hop. A `not_leader` naming another node is followed
//! there (weft-broker's `Leaders`, the CLI's leader cache).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_bytes::ByteBuf;
use weft_broker::cli::Leaders;
use weft_broker::dto::{self, route};
use weft_log::{BatchesDecoder, Offset};
use weft_net::{Client, ClientConfig, Endpoint, Target as NetTarget};

use crate::engine::{payload, Consumed, ProduceFn, Settled, Target};
use crate::BenchError;

/// Records per fetch, as for the peers.
pub const PULL: usize = 1000;
/// Room for 1000 records of up to ~8 KiB in one fetch answer.
const FETCH_MAX_BYTES: usize = 8 * 1024 * 1024;
/// How long a read-back or a replica check waits for acknowledged records
/// to show up (a replica's copy trails the ack by its apply lag; past this
/// it is a lost record, not lag).
const CATCH_UP: Duration = Duration::from_secs(30);
/// Long-poll of a read-back fetch that found nothing new yet.
const LAG_POLL_MS: u64 = 200;

pub struct WeftTarget {
    endpoint: Endpoint,
    /// Every node of a cluster (the first is `endpoint`): each replica's
    /// copy is checked after a run.
    nodes: Vec<Endpoint>,
    admin: Client,
    /// Above 1: topics are created replicated (`log.topic.create` with
    /// `replicas`; bench/cluster.sh).
    replicas: usize,
    /// Where producers and the read-back of the current topic go: the
    /// partition leader's native address on a cluster, else `endpoint`.
    leader: Mutex<Option<NetTarget>>,
}

fn config() -> ClientConfig {
    ClientConfig {
        client_name: "weft-logbench".into(),
        // fsync=always on a slow disk with thousands of requests queued can
        // take a while; a timeout here would be a failed run, not a number.
        request_timeout: Duration::from_secs(120),
        ..ClientConfig::default()
    }
}

/// Partition 0's leader in a `cluster.status` answer, as the native address
/// it registered (None while there is none or this node does not know it).
pub fn leader_in_status(status: &serde_json::Value, topic: &str) -> Option<(u64, String)> {
    let leader = status["partitions"]
        .as_array()?
        .iter()
        .find(|p| p["topic"] == topic && p["partition"] == 0)
        .and_then(|p| p["leader"].as_u64())
        .filter(|l| *l > 0)?;
    let addr = status["nodes"].as_array()?.iter().find(|n| n["id"].as_u64() == Some(leader))?["native_addr"].as_str()?.to_owned();
    Some((leader, addr))
}

impl WeftTarget {
    pub async fn connect(endpoint: Endpoint) -> Result<WeftTarget, BenchError> {
        let admin = Client::connect(endpoint.clone(), config()).await?;
        Ok(WeftTarget { nodes: vec![endpoint.clone()], endpoint, admin, replicas: 1, leader: Mutex::new(None) })
    }

    pub fn with_replicas(mut self, replicas: usize) -> WeftTarget {
        self.replicas = replicas.max(1);
        self
    }

    /// Every node of the cluster, `endpoint` first (more than one: each
    /// node's copy of the partition is checked after the produce phase).
    pub fn with_nodes(mut self, nodes: Vec<Endpoint>) -> WeftTarget {
        if !nodes.is_empty() {
            self.nodes = nodes;
        }
        self
    }

    /// Where the current topic's producers and reader connect.
    fn home(&self) -> NetTarget {
        self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| self.endpoint.clone().into())
    }

    /// Reads everything from offset 0 on the home node. A fetch that finds
    /// nothing new while fewer than `expected` records were read waits for
    /// the partition's high watermark (long polls, up to [`CATCH_UP`]): a
    /// replica's copy may trail the ack by its apply lag; a consumer must
    /// see every acknowledged record eventually, not at once.
    async fn read_all(&self, name: &str, expected: u64, raw: bool) -> Result<Consumed, BenchError> {
        let client = Client::connect(self.home(), config()).await?;
        let start = Instant::now();
        let (mut offset, mut records, mut bytes) = (0u64, 0u64, 0u64);
        // Time spent waiting for acknowledged records to show up here.
        let mut lag = Duration::ZERO;
        while offset < expected {
            let req = dto::Fetch {
                topic: name.into(),
                partition: 0,
                offset,
                max_bytes: Some(FETCH_MAX_BYTES),
                max_records: Some(PULL),
                wait_ms: None,
                raw,
                reset: None,
            };
            let mut resp: dto::FetchResponse = client.call(route::FETCH, &req).await?;
            let stalled = Instant::now();
            while resp.next_offset <= offset && resp.records.is_empty() && resp.batches.as_ref().is_none_or(|b| b.is_empty()) {
                if lag + stalled.elapsed() > CATCH_UP {
                    return Err(BenchError::Unexpected(format!(
                        "fetch at offset {offset} found nothing for {CATCH_UP:?} (high watermark {}, {expected} records acknowledged)",
                        resp.high_watermark
                    )));
                }
                let poll = dto::Fetch { wait_ms: Some(LAG_POLL_MS), ..req.clone() };
                resp = client.call(route::FETCH, &poll).await?;
            }
            lag += stalled.elapsed();
            let before = records;
            if raw {
                let batches = Bytes::from(resp.batches.map(ByteBuf::into_vec).unwrap_or_default());
                // Raw fetches answer whole stored batches and `next_offset` after the
                // last one: decode all of them (a batch may hold more than PULL).
                for r in BatchesDecoder::new(batches, Offset(offset), usize::MAX) {
                    let r = r?;
                    bytes += r.value.map_or(0, |v| v.len() as u64);
                    records += 1;
                }
            } else {
                for r in &resp.records {
                    bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
                    records += 1;
                }
            }
            if records == before || resp.next_offset <= offset {
                return Err(BenchError::Unexpected(format!(
                    "fetch at offset {offset} moved to {} with {} records (high watermark {}, expected {expected})",
                    resp.next_offset,
                    records - before,
                    resp.high_watermark
                )));
            }
            offset = resp.next_offset;
        }
        Ok(Consumed { records, bytes, secs: start.elapsed().as_secs_f64(), lag_ms: Some(lag.as_secs_f64() * 1000.0) })
    }

    /// The latest offset of partition 0 in `node`'s own copy (`log.offsets`
    /// is answered from the local copy where the partition is hosted).
    async fn latest_on(client: &Client, name: &str) -> Result<u64, BenchError> {
        let q = dto::Offsets { topic: name.into(), partition: 0, spec: dto::OffsetQuery::Latest };
        let a: dto::OffsetAnswer = client.call(route::OFFSETS, &q).await?;
        Ok(a.offset)
    }
}

impl Target for WeftTarget {
    fn system(&self) -> &'static str {
        "weft"
    }

    fn batches(&self) -> bool {
        true
    }

    async fn create(&self, name: &str) -> Result<(), BenchError> {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if self.replicas <= 1 {
            let req = serde_json::json!({"name": name, "config": {"partitions": 1}});
            let _: serde_json::Value = self.admin.call(route::TOPIC_CREATE, &req).await?;
            return Ok(());
        }
        let req = serde_json::json!({"name": name, "config": {"partitions": 1}, "replicas": self.replicas});
        let _: serde_json::Value = self.admin.call(route::TOPIC_CREATE, &req).await?;
        // The partition's group elects a leader after creation; wait
        // (bounded) until this node's status names it.
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let st: serde_json::Value = self.admin.call("cluster.status", &serde_json::Value::Null).await?;
            if let Some((_, addr)) = leader_in_status(&st, name) {
                let t: NetTarget = addr.parse().map_err(|e| BenchError::Unexpected(format!("leader address {addr:?}: {e}")))?;
                *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Unexpected(format!("no leader for {name}/0 within {CATCH_UP:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn producer(&self, name: &str, size: usize, batch: usize) -> Result<ProduceFn, BenchError> {
        let client = Client::connect(self.home(), config()).await?;
        let leaders = Arc::new(Leaders::default());
        let record = dto::RecordIn { partition: Some(0), value: Some(dto::SharedBytes::from(payload(size))), ..Default::default() };
        let req = Arc::new(dto::Produce { topic: name.into(), records: vec![record; batch.max(1)], ..Default::default() });
        let topic: Arc<str> = name.into();
        Ok(Arc::new(move || {
            let (client, req, leaders, topic) = (client.clone(), req.clone(), leaders.clone(), topic.clone());
            Box::pin(async move {
                // A not_leader naming an address is retried there once, and
                // later requests go there directly.
                let resp: dto::ProduceResponse = leaders.call(&client, (&topic[..], Some(0)), route::PRODUCE, &*req).await?;
                if let Some(e) = resp.results.iter().find_map(|r| r.error.as_ref()) {
                    return Err(BenchError::Rejected(format!("{e:?}")));
                }
                if resp.results.len() != req.records.len() || resp.results.iter().any(|r| r.offset.is_none()) {
                    return Err(BenchError::Unexpected(format!("{} results for {} records, some without an offset", resp.results.len(), req.records.len())));
                }
                Ok(resp.results.len() as u64)
            })
        }))
    }

    /// On a cluster: wait until every node's own copy holds the `produced`
    /// records (bounded by [`CATCH_UP`]); the time from the last ack to the
    /// slowest replica is the apply lag a reader on that node sees.
    async fn settle(&self, name: &str, produced: u64) -> Result<Settled, BenchError> {
        // Read-your-writes where the acks came from: an ack waits until the
        // records are in that node's copy, so nothing may be missing there.
        let home = Client::connect(self.home(), config()).await?;
        let home_behind = Some(produced.saturating_sub(Self::latest_on(&home, name).await?));
        if self.nodes.len() < 2 {
            return Ok(Settled { home_behind, ..Settled::default() });
        }
        let start = Instant::now();
        let mut behind = Vec::new();
        for node in &self.nodes {
            let c = Client::connect(node.clone(), config()).await?;
            loop {
                let latest = Self::latest_on(&c, name).await?;
                if latest >= produced {
                    break;
                }
                if start.elapsed() > CATCH_UP {
                    behind.push(format!("{node}: {latest}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if !behind.is_empty() {
            return Err(BenchError::Unexpected(format!(
                "{produced} records acknowledged, but after {CATCH_UP:?} these copies end earlier: {}",
                behind.join(", ")
            )));
        }
        Ok(Settled { replicas_caught_up_ms: Some(start.elapsed().as_secs_f64() * 1000.0), home_behind })
    }

    async fn consume(&self, name: &str, expected: u64) -> Result<Consumed, BenchError> {
        self.read_all(name, expected, false).await
    }

    async fn consume_raw(&self, name: &str, expected: u64) -> Result<Option<Consumed>, BenchError> {
        self.read_all(name, expected, true).await.map(Some)
    }

    async fn delete(&self, name: &str) -> Result<(), BenchError> {
        // A replicated topic is deleted through the metadata group; every
        // node drops its copy and the partition's raft log.
        let _: serde_json::Value = self.admin.call(route::TOPIC_DELETE, &dto::TopicRef { name: name.into() }).await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn leader_from_status() {
        let st = serde_json::json!({
            "nodes": [{"id": 1, "native_addr": "tcp://127.0.0.1:1"}, {"id": 2, "native_addr": "tcp://127.0.0.1:2"}],
            "partitions": [{"topic": "t", "partition": 0, "leader": 2}, {"topic": "u", "partition": 0, "leader": null}],
        });
        assert_eq!(leader_in_status(&st, "t"), Some((2, "tcp://127.0.0.1:2".into())));
        assert_eq!(leader_in_status(&st, "u"), None);
        assert_eq!(leader_in_status(&st, "v"), None);
        assert_eq!(leader_in_status(&serde_json::Value::Null, "t"), None);
    }
}
