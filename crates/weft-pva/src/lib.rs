//! weft-pva: EPICS pvAccess in pure Rust.
//!
//! - [`proto`]: sans-IO pvData and message codecs.
//! - [`server`]: tokio server (SharedPv mailboxes, RPC, search, beacons).
//! - [`client`]: tokio client (search, get, put, monitor, rpc, get-field).
//! - [`cli`]: the `weft pv ...` command-line surface.

// Wire data must never panic us: no unchecked indexing, expect or panic
// outside tests (STYLE.md).
#![warn(clippy::indexing_slicing, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::indexing_slicing, clippy::expect_used, clippy::panic))]

pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod format;
pub mod proto;
pub mod redis;
pub mod server;
pub mod stateless;

pub use server::demo::serve_demo;

pub use error::{Error, Result};
