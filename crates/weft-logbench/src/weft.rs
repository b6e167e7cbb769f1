//! Weft: `log.produce` / `log.fetch` on the native protocol (TCP or Unix
//! socket), one [`Client`] connection per producer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_bytes::ByteBuf;
use weft_broker::dto::{self, route};
use weft_log::{BatchesDecoder, Offset};
use weft_net::{Client, ClientConfig, Endpoint};

use crate::engine::{payload, Consumed, ProduceFn, Target};
use crate::BenchError;

/// Records per fetch, as for the peers.
pub const PULL: usize = 1000;
/// Room for 1000 records of up to ~8 KiB in one fetch answer.
const FETCH_MAX_BYTES: usize = 8 * 1024 * 1024;

pub struct WeftTarget {
    endpoint: Endpoint,
    admin: Client,
    /// Above 1: topics are created replicated, through the cluster's
    /// metadata group (`cluster.create_topic`; bench/cluster.sh).
    replicas: usize,
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

impl WeftTarget {
    pub async fn connect(endpoint: Endpoint) -> Result<WeftTarget, BenchError> {
        let admin = Client::connect(endpoint.clone(), config()).await?;
        Ok(WeftTarget { endpoint, admin, replicas: 1 })
    }

    pub fn with_replicas(mut self, replicas: usize) -> WeftTarget {
        self.replicas = replicas.max(1);
        self
    }

    async fn read_all(&self, name: &str, expected: u64, raw: bool) -> Result<Consumed, BenchError> {
        let client = Client::connect(self.endpoint.clone(), config()).await?;
        let start = Instant::now();
        let (mut offset, mut records, mut bytes) = (0u64, 0u64, 0u64);
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
            let resp: dto::FetchResponse = client.call(route::FETCH, &req).await?;
            let before = records;
            if raw {
                let batches = Bytes::from(resp.batches.map(ByteBuf::into_vec).unwrap_or_default());
                for r in BatchesDecoder::new(batches, Offset(offset), PULL) {
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
                    "fetch at offset {offset} returned nothing (high watermark {}, expected {expected} records)",
                    resp.high_watermark
                )));
            }
            offset = resp.next_offset;
        }
        Ok(Consumed { records, bytes, secs: start.elapsed().as_secs_f64() })
    }
}

impl WeftTarget {
    /// Reads a replicated partition through `cluster.fetch` (pulls of 1000).
    async fn read_cluster(&self, name: &str, expected: u64) -> Result<Consumed, BenchError> {
        let client = Client::connect(self.endpoint.clone(), config()).await?;
        let start = Instant::now();
        let (mut offset, mut records, mut bytes) = (0u64, 0u64, 0u64);
        while records < expected {
            let req = serde_json::json!({"topic": name, "partition": 0, "offset": offset, "max_records": PULL});
            let r: serde_json::Value = client.call("cluster.fetch", &req).await?;
            let recs = r["records"].as_array().cloned().unwrap_or_default();
            let Some(last) = recs.last().and_then(|l| l["offset"].as_u64()) else {
                return Err(BenchError::Unexpected(format!("cluster.fetch at {offset} returned nothing after {records} of {expected}")));
            };
            for rec in &recs {
                bytes += rec["value"].as_str().map_or(0, |v| v.len() as u64);
                records += 1;
            }
            offset = last + 1;
        }
        Ok(Consumed { records, bytes, secs: start.elapsed().as_secs_f64() })
    }
}

impl Target for WeftTarget {
    fn system(&self) -> &'static str {
        "weft"
    }

    fn batches(&self) -> bool {
        // cluster.produce takes one record per request.
        self.replicas == 1
    }

    async fn create(&self, name: &str) -> Result<(), BenchError> {
        if self.replicas > 1 {
            let req = serde_json::json!({"name": name, "partitions": 1, "replicas": self.replicas});
            let _: serde_json::Value = self.admin.call("cluster.create_topic", &req).await?;
            // The partition's group elects a leader after creation; a produce
            // before that is refused, so wait (bounded) until status names one.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let st: serde_json::Value = self.admin.call("cluster.status", &serde_json::Value::Null).await?;
                let led = st["partitions"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["topic"] == name && p["partition"] == 0))
                    .and_then(|p| p["leader"].as_u64())
                    .is_some_and(|l| l > 0);
                if led {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Unexpected(format!("no leader for {name}/0 within 30 s")));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let req = serde_json::json!({"name": name, "config": {"partitions": 1}});
        let _: serde_json::Value = self.admin.call(route::TOPIC_CREATE, &req).await?;
        Ok(())
    }

    async fn producer(&self, name: &str, size: usize, batch: usize) -> Result<ProduceFn, BenchError> {
        let client = Client::connect(self.endpoint.clone(), config()).await?;
        if self.replicas > 1 {
            // Replicated partitions take records through cluster.produce
            // (acked once committed); values are text there (payload is ASCII).
            let body = Arc::new(serde_json::json!({"topic": name, "partition": 0, "value": String::from_utf8_lossy(&payload(size))}));
            return Ok(Arc::new(move || {
                let (client, body) = (client.clone(), body.clone());
                Box::pin(async move {
                    let r: serde_json::Value = client.call("cluster.produce", &*body).await?;
                    if !r["offset"].is_u64() {
                        return Err(BenchError::Unexpected(format!("cluster.produce answered {r}")));
                    }
                    Ok(1)
                })
            }));
        }
        let record = dto::RecordIn { partition: Some(0), value: Some(ByteBuf::from(payload(size))), ..Default::default() };
        let req = Arc::new(dto::Produce { topic: name.into(), records: vec![record; batch.max(1)], ..Default::default() });
        Ok(Arc::new(move || {
            let client = client.clone();
            let req = req.clone();
            Box::pin(async move {
                let resp: dto::ProduceResponse = client.call(route::PRODUCE, &*req).await?;
                if let Some(e) = resp.results.iter().find_map(|r| r.error.as_ref()) {
                    return Err(BenchError::Rejected(format!("{e:?}")));
                }
                if resp.results.len() != req.records.len() {
                    return Err(BenchError::Unexpected(format!("{} results for {} records", resp.results.len(), req.records.len())));
                }
                Ok(resp.results.len() as u64)
            })
        }))
    }

    async fn consume(&self, name: &str, expected: u64) -> Result<Consumed, BenchError> {
        if self.replicas > 1 {
            return self.read_cluster(name, expected).await;
        }
        self.read_all(name, expected, false).await
    }

    async fn consume_raw(&self, name: &str, expected: u64) -> Result<Option<Consumed>, BenchError> {
        if self.replicas > 1 {
            return Ok(None);
        }
        self.read_all(name, expected, true).await.map(Some)
    }

    async fn delete(&self, name: &str) -> Result<(), BenchError> {
        if self.replicas > 1 {
            // The cluster has no topic deletion yet; the bench's data dirs are throwaway.
            return Ok(());
        }
        let _: serde_json::Value = self.admin.call(route::TOPIC_DELETE, &dto::TopicRef { name: name.into() }).await?;
        Ok(())
    }
}
