//! weft-log (work in progress)
pub mod batch;
pub mod config;
pub mod error;
pub mod model;
pub mod partition;
pub mod segment;
pub mod storage;
