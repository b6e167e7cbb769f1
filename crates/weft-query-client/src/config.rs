//! Client configuration: plain data with serde and documented defaults
//! (docs/query.md, "Client: pools, balancing, breakers"). Every limit the
//! client applies is a field here.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The nodes' gRPC addresses (`host:port`, or `http://host:port`).
    pub nodes: Vec<NodeConfig>,
    pub balance: Balance,
    pub pool: PoolConfig,
    pub breaker: BreakerConfig,
    pub retry: RetryConfig,
    /// Request and response compression: none, gzip or zstd.
    pub compression: Compression,
    /// Deadline of a call when the caller gives none (ms). It travels as
    /// grpc-timeout (the remaining budget on each attempt).
    pub request_timeout_ms: u64,
    /// Follow a `not_leader` answer to the leader it names, once per call.
    pub follow_leader: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            nodes: Vec::new(),
            balance: Balance::RoundRobin,
            pool: PoolConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            compression: Compression::None,
            request_timeout_ms: 5_000,
            follow_leader: true,
        }
    }
}

impl ClientConfig {
    /// Nodes of weight 1 at these addresses, defaults otherwise.
    pub fn with_nodes<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> Self {
        ClientConfig { nodes: addrs.into_iter().map(|a| NodeConfig { addr: a.into(), weight: 1 }).collect(), ..Default::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub addr: String,
    /// Share of traffic under `balance = weighted` (0: none unless every
    /// other node is refused).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each node in turn, skipping nodes whose breaker refuses.
    #[default]
    RoundRobin,
    /// The node with the fewest calls in flight (ties in turn).
    LeastOutstanding,
    /// Smooth weighted round robin by `NodeConfig::weight`.
    Weighted,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// Channels (HTTP/2 connections) per node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Channels kept open even when idle.
    pub min_channels: usize,
    /// Channels at most.
    pub max_channels: usize,
    /// A new channel is opened (up to `max_channels`) when every channel
    /// has this many calls in flight.
    pub streams_per_channel: usize,
    /// Channels above `min_channels` with nothing in flight for this long
    /// are closed (ms).
    pub idle_timeout_ms: u64,
    /// Period of the grpc.health.v1 check of each node (ms; 0: no checks).
    pub health_interval_ms: u64,
    /// Deadline of one health check (ms).
    pub health_timeout_ms: u64,
    /// TCP connect timeout (ms).
    pub connect_timeout_ms: u64,
    /// Calls in flight per node at most (tower's ConcurrencyLimit); more
    /// wait for a slot.
    pub max_outstanding: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_channels: 1,
            max_channels: 4,
            streams_per_channel: 64,
            idle_timeout_ms: 60_000,
            health_interval_ms: 1_000,
            health_timeout_ms: 500,
            connect_timeout_ms: 1_000,
            max_outstanding: 1_024,
        }
    }
}

/// The circuit breaker of one node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open after this many node failures in a row.
    pub consecutive_failures: u32,
    /// Open when failures / calls over the window exceed this (0..=1) ...
    pub error_rate: f64,
    /// ... once the window holds at least this many calls.
    pub min_calls: u32,
    /// The error-rate window (ms), kept as `window_buckets` buckets.
    pub window_ms: u64,
    pub window_buckets: u32,
    /// Time open before probes are let through (ms).
    pub cool_down_ms: u64,
    /// Probe calls in flight at once while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close the breaker.
    pub probes_to_close: u32,
    /// State transitions remembered for stats.
    pub history: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            error_rate: 0.5,
            min_calls: 20,
            window_ms: 10_000,
            window_buckets: 10,
            cool_down_ms: 1_000,
            half_open_probes: 1,
            probes_to_close: 1,
            history: 64,
        }
    }
}

/// Retries of idempotent calls (docs/query.md says which calls are).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt at most.
    pub max_retries: u32,
    /// Back-off before the first retry (ms) ...
    pub initial_backoff_ms: u64,
    /// ... multiplied by this each time ...
    pub multiplier: f64,
    /// ... up to this (ms).
    pub max_backoff_ms: u64,
    /// Up to this fraction of each back-off is taken off at random (0..=1),
    /// so clients that failed together do not retry together.
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max_retries: 3, initial_backoff_ms: 20, multiplier: 2.0, max_backoff_ms: 1_000, jitter: 0.5 }
    }
}
