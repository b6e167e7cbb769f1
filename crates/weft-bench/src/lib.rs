//! A load generator for Weft's native protocol.
//!
//! N clients, each on its own connection (or UDP socket), send one request,
//! wait for its answer, send the next: closed-loop round trips, the same
//! shape as `redis-benchmark -P 1`, so the numbers can be set side by side.
//! Each client records every round trip into its own histogram; the
//! histograms are merged at the end into requests/s and p50/p99 latency.
//!
//! [`resp`] runs the same loop against a Redis server (RESP PING), so both
//! servers can be measured by one generator.
//!
//! [`run`] is the library entry point (used by the tests); [`cli`] is the
//! command line of the `weft-bench` binary.

pub mod cli;
mod error;
mod load;
mod report;
pub mod resp;

pub use error::BenchError;
pub use load::{run, Limit, Load, Workload};
pub use report::{Format, Report};
