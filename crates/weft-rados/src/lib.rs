//! weft-rados: a native Ceph RADOS client in pure Rust.
//!
//! `proto` is the sans-IO core (encodings, maps, CRUSH, msgr2 frames and
//! connection state machine, CephX, messages); `net`, `monc` and `rados`
//! put tokio underneath it; `cli` is the `weft rados` command surface.

pub mod cli;
pub mod config;
pub mod error;
mod metrics;
pub mod monc;
pub mod net;
pub mod proto;
pub mod rados;
pub mod state;

pub use config::{ClientConfig, ConfigSource};
pub use error::{Error, Result};
pub use rados::{CmpOp, IoCtx, ObjectStat, Op, Rados, ReadStream, WriteOp, WriteStream};
