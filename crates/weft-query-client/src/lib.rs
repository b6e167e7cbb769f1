//! # weft-query-client: the Rust client of Weft's query API
//!
//! Speaks `weft.query.v1` (proto/weft/query/v1/query.proto; the generated
//! code is `weft_api::pb`) to one or more nodes, with the parts a client of
//! a cluster needs (docs/query.md, "Client: pools, balancing, breakers"):
//!
//! - [`pool`]: channels per node (min/max, idle timeout) and grpc.health.v1
//!   checks;
//! - [`balance`]: round robin, least outstanding requests, weighted;
//! - [`breaker`]: a circuit breaker per node as a tower Layer (closed, open,
//!   half-open with probes), state in the stats;
//! - [`retry`]: exponential back-off with jitter for idempotent calls only
//!   ([`call::is_idempotent`] states the rule), through tower's `Retry`;
//! - deadlines that travel as grpc-timeout, gzip/zstd, and one hop after a
//!   `not_leader` answer ([`client`]).
//!
//! Time enters through [`clock::Clock`], so breaker and back-off logic is
//! tested on a fake clock. The `query-bench` binary is bench/query.sh's
//! load generator (Weft vs etcd); [`etcd`] is the minimal etcd KV client it
//! uses.
pub mod balance;
pub mod breaker;
pub mod call;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod pool;
pub mod retry;

pub use breaker::State as BreakerState;
pub use call::{Call, Op, is_idempotent};
pub use client::{CallOptions, Client, ClientStats, NodeStats};
pub use config::{Balance, BreakerConfig, ClientConfig, Compression, NodeConfig, PoolConfig, RetryConfig};
pub use error::{Error, Result};

/// The generated client of etcd's KV service (proto/etcd/kv.proto: Range,
/// Put, Txn only), for the benchmark.
#[allow(clippy::all)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
