//! Bridges that tie protocol crates to the log. They live here, above both,
//! so that `weft-pva` and `weft-log` stay usable on their own (DESIGN.md).
//!
//! [`pv_topic`]: a pvAccess PV backed by a topic partition. A put appends a
//! record (the value as UTF-8 text) and is acknowledged once the record is
//! durable; every record appended to the partition, by the bridge or by
//! anyone else (`weft produce`, the HTTP gateway), becomes a monitor update.

pub mod pv_topic;

pub use pv_topic::{attach, BridgeError, PvTopicBridge, PvTopicSpec, ValueKind};
