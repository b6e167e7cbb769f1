//! Ecosystem (PyPI `ekosis` 0.17) wire compatibility for Weft.
//!
//! - [`proto`]: the sans-IO codec (lines, heartbeats, envelopes, status codes,
//!   the exact bytes ekosis writes).
//! - [`EkosisServer`]: serves a [`weft_service::Service`] and the queued
//!   endpoints, senders and keepers of a [`weft_queue::Manager`] over that
//!   codec on TCP, Unix sockets and UDP, with ekosis' `eco.*` endpoints.
//! - [`EkosisClient`]: calls ekosis servers; [`EkosisOutbound`] lets a
//!   weft-queue queued sender deliver to one.
//!
//! What differs from ekosis, and why: docs/ecosystem.md.

// Tests may unwrap: a failure there is the report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
mod client;
pub mod demo;
mod eco;
mod error;
pub mod proto;
mod server;

pub use client::{new_span_key, ClientOptions, EkosisClient, EkosisOutbound};
pub use eco::{statistics, Node, Obj};
pub use error::EkosisError;
pub use server::{error_status, AppInfo, EkosisConfig, EkosisListeners, EkosisServer};
