//! NATS JetStream: one file-storage stream per run (one replica, or
//! `--replicas` on a cluster), publish
//! with ack (async-nats), read back with a pull consumer in batches of 1000.
//!
//! nats-server 2.9 cannot fsync before the ack: its file store syncs every
//! 60 s (`sync_interval` arrived in 2.10), so its acks come from the page
//! cache, like Weft's `never`/`interval`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

use crate::engine::{payload, Consumed, ProduceFn, Target};
use crate::BenchError;

const PULL: u64 = 1000;

pub struct JetStreamTarget {
    /// One server, or every server of a cluster (the client fails over
    /// between them).
    urls: Vec<String>,
    /// Stream replicas (3 for the cluster benchmark, bench/cluster.sh).
    replicas: usize,
    ctx: jetstream::Context,
}

fn nats(e: impl std::fmt::Display) -> BenchError {
    BenchError::Nats(e.to_string())
}

/// Stream names may not contain '.', so the stream is the run name and the
/// subject is `lb.<name>`.
pub(crate) fn subject(name: &str) -> String {
    format!("lb.{name}")
}

impl JetStreamTarget {
    /// `url` may list several servers, comma-separated.
    pub async fn connect(url: &str, replicas: usize) -> Result<JetStreamTarget, BenchError> {
        let urls: Vec<String> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        let client = async_nats::connect(urls.as_slice()).await.map_err(nats)?;
        Ok(JetStreamTarget { urls, replicas: replicas.max(1), ctx: jetstream::new(client) })
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.ctx
    }
}

impl Target for JetStreamTarget {
    fn system(&self) -> &'static str {
        "jetstream"
    }

    async fn create(&self, name: &str) -> Result<(), BenchError> {
        let _ = self.ctx.delete_stream(name).await;
        let config = stream::Config {
            name: name.into(),
            subjects: vec![subject(name)],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.ctx.create_stream(config).await.map_err(nats)?;
        Ok(())
    }

    async fn producer(&self, name: &str, size: usize, _batch: usize) -> Result<ProduceFn, BenchError> {
        let client = async_nats::connect(self.urls.as_slice()).await.map_err(nats)?;
        let ctx = jetstream::new(client);
        let subject = subject(name);
        let value = Bytes::from(payload(size));
        Ok(Arc::new(move || {
            let ctx = ctx.clone();
            let subject = subject.clone();
            let value = value.clone();
            Box::pin(async move {
                let ack = ctx.publish(subject, value).await.map_err(nats)?;
                ack.await.map_err(nats)?;
                Ok(1)
            })
        }))
    }

    async fn consume(&self, name: &str, expected: u64) -> Result<Consumed, BenchError> {
        let client = async_nats::connect(self.urls.as_slice()).await.map_err(nats)?;
        let ctx = jetstream::new(client);
        let s = ctx.get_stream(name).await.map_err(nats)?;
        // No acks: a plain read, as Weft's fetch and Redis' XREAD are.
        let config = consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let c: consumer::PullConsumer = s.create_consumer(config).await.map_err(nats)?;
        let start = Instant::now();
        let (mut records, mut bytes) = (0u64, 0u64);
        while records < expected {
            let want = (expected - records).min(PULL) as usize;
            let mut batch = c.batch().max_messages(want).expires(Duration::from_secs(5)).messages().await.map_err(nats)?;
            let before = records;
            while let Some(m) = batch.next().await {
                let m = m.map_err(nats)?;
                bytes += m.payload.len() as u64;
                records += 1;
            }
            if records == before {
                return Err(BenchError::Unexpected(format!("pull returned nothing after {records} of {expected} messages")));
            }
        }
        Ok(Consumed { records, bytes, secs: start.elapsed().as_secs_f64(), lag_ms: None })
    }

    async fn delete(&self, name: &str) -> Result<(), BenchError> {
        self.ctx.delete_stream(name).await.map_err(nats)?;
        Ok(())
    }
}
