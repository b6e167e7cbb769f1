//! weft-pva: EPICS pvAccess in pure Rust.
//!
//! - [`proto`]: sans-IO pvData and message codecs.
//! - [`server`]: tokio server (SharedPv mailboxes, RPC, search, beacons).
//! - [`client`]: tokio client (search, get, put, monitor, rpc, get-field).
//! - [`cli`]: the `weft pv ...` command-line surface.

pub mod error;
pub mod proto;

pub use error::{Error, Result};
