//! Ecosystem (PyPI `ekosis` 0.17) wire compatibility for Weft.
//!
//! - [`proto`]: the sans-IO codec (lines, heartbeats, envelopes, status codes,
//!   the exact bytes ekosis writes).

pub mod proto;
