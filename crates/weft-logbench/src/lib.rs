//! A load generator for streaming logs: Weft's `log.*` endpoints next to NATS
//! JetStream and Redis Streams, driven by the same Rust code so that the
//! client side costs the same for all three (issue 4, "Proof").
//!
//! One [`Scenario`] = record size, producers, requests in flight per
//! producer, records per request. A run creates a fresh single-partition
//! topic / stream / key, produces for a bounded time or count while sampling
//! the broker's RSS, reads everything back in pulls of 1000, checks that the
//! count read equals the count acknowledged, deletes the topic and returns a
//! [`RunResult`]. [`report`] turns a file of results into tables with ratios.

pub mod cli;
pub mod engine;
pub mod failover;
pub mod jetstream;
pub mod redis_streams;
pub mod report;
pub mod rss;
pub mod weft;

use serde::{Deserialize, Serialize};

/// Everything that can stop a run, by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("weft: {0}")]
    Weft(#[from] weft_net::ClientError),
    #[error("weft log batch: {0}")]
    WeftBatch(#[from] weft_log::LogError),
    #[error("nats/jetstream: {0}")]
    Nats(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the broker refused a record: {0}")]
    Rejected(String),
    #[error("the broker answered something unexpected: {0}")]
    Unexpected(String),
    #[error("read back {consumed} records but {produced} were acknowledged")]
    Mismatch { produced: u64, consumed: u64 },
    #[error("usage: {0}")]
    Usage(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// What one run does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scenario {
    /// Value bytes per record.
    pub size: usize,
    /// Producers, each on its own connection.
    pub producers: usize,
    /// Requests in flight per producer (1 = synchronous).
    pub window: usize,
    /// Records per request (only Weft's produce carries several; the peers
    /// send one message per request).
    pub batch: usize,
    /// Stop sending after this long...
    pub duration_ms: u64,
    /// ...or after this many records in all, whichever comes first.
    pub max_records: u64,
}

/// What one run measured. Latencies are per request, from send to ack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// weft | jetstream | redis
    pub system: String,
    /// Column name in the report, e.g. `weft-always`, `redis-everysec`.
    pub label: String,
    pub scenario: Scenario,
    pub produced: u64,
    pub requests: u64,
    pub produce_secs: f64,
    pub produce_rec_s: f64,
    pub produce_mb_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub consumed: u64,
    pub consume_secs: f64,
    pub consume_rec_s: f64,
    pub consume_mb_s: f64,
    /// Weft only: the same read with `raw: true` (stored batches, decoded by
    /// the client).
    #[serde(default)]
    pub consume_raw_rec_s: Option<f64>,
    /// Broker RSS before the run and its peak during produce + consume (kB);
    /// None when no pid was given.
    #[serde(default)]
    pub rss_start_kb: Option<u64>,
    #[serde(default)]
    pub rss_peak_kb: Option<u64>,
    /// Cluster runs of Weft: from the last ack until every node's own copy
    /// held every acknowledged record (apply lag of the slowest replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_caught_up_ms: Option<f64>,
    /// Acknowledged records not yet in the copy of the server that
    /// acknowledged them, right after the last ack (Weft: should be 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_behind: Option<u64>,
    /// Time the read-back spent waiting for acknowledged records to appear
    /// on the node read from (0 when they were all there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readback_lag_ms: Option<f64>,
    /// Per server, what the produce phase wrote to disk (`--io-pids`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk: Vec<NodeDisk>,
}

/// One server's disk writes during a run's produce phase (until every
/// replica caught up), from /proc/PID/io and, when given, an strace log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeDisk {
    pub node: String,
    /// `write_bytes` of /proc/PID/io: bytes of page cache the process
    /// dirtied (what goes to the disk; a page dirtied again after an
    /// fsync counts again, as it is written again).
    pub write_bytes: u64,
    /// fsync + fdatasync calls (`--fsync-logs`), when counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsyncs: Option<u64>,
}
