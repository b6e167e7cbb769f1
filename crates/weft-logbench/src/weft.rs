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

impl Target for WeftTarget {
    fn system(&self) -> &'static str {
        "weft"
    }

    fn batches(&self) -> bool {
        true
    }

    async fn create(&self, name: &str) -> Result<(), BenchError> {
        if self.replicas > 1 {
            let req = serde_json::json!({"name": name, "partitions": 1, "replicas": self.replicas});
            let _: serde_json::Value = self.admin.call("cluster.create_topic", &req).await?;
            return Ok(());
        }
        let req = serde_json::json!({"name": name, "config": {"partitions": 1}});
        let _: serde_json::Value = self.admin.call(route::TOPIC_CREATE, &req).await?;
        Ok(())
    }

    async fn producer(&self, name: &str, size: usize, batch: usize) -> Result<ProduceFn, BenchError> {
        let client = Client::connect(self.endpoint.clone(), config()).await?;
        let record = dto::RecordIn { partition: Some(0), value: Some(ByteBuf::from(payload(size))), ..Default::default() };
        let req = Arc::new(dto::Produce { topic: name.into(), records: vec![record; batch.max(1)] });
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
        self.read_all(name, expected, false).await
    }

    async fn consume_raw(&self, name: &str, expected: u64) -> Result<Option<Consumed>, BenchError> {
        self.read_all(name, expected, true).await.map(Some)
    }

    async fn delete(&self, name: &str) -> Result<(), BenchError> {
        let _: serde_json::Value = self.admin.call(route::TOPIC_DELETE, &dto::TopicRef { name: name.into() }).await?;
        Ok(())
    }
}
