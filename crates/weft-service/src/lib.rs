//! Weft's service framework.
//!
//! A [`Service`] holds typed endpoints registered under route keys; it
//! implements [`weft_net::Handler`], so one service is served on every
//! transport a [`weft_net::Server`] listens on. Handlers are plain async
//! functions from a serde request type to a serde response type:
//!
//! ```no_run
//! # use weft_service::{Service, ServiceError};
//! #[derive(serde::Deserialize)] struct Roll { sides: u32 }
//! let mut svc = Service::new("dice");
//! svc.endpoint("roll", |r: Roll| async move {
//!     if r.sides == 0 { return Err(ServiceError::validation("sides must be at least 1")); }
//!     Ok(r.sides) // a fair die, for the sake of the example
//! }).unwrap();
//! ```
//!
//! Errors reach clients as typed DTOs ([`weft_wire::ErrorBody`]).

pub mod config;
mod error;
pub mod lock;
mod service;
mod stats;
pub mod trace;

pub use error::ServiceError;
pub use service::{CallObserver, EndpointOptions, NodeInfo, Service, SharedService};
pub use stats::{EndpointStats, StatsRegistry};
