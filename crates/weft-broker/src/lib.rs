//! The streaming log as services: `weft-log` is storage and the model; this
//! crate exposes it.
//!
//! - [`native`]: endpoints `log.*` on a [`weft_service::Service`], served on
//!   every native transport.
//! - [`http`]: the HTTP gateway (axum): REST for every operation, an OpenAPI
//!   document at `/openapi.json`, WebSocket streams of a partition or topic.
//! - [`cli`]: `weft topic|produce|consume|group`, clients of the native
//!   endpoints.
//!
//! Both surfaces share [`dto`] and the error mapping in [`error`], so a
//! failure has the same code whichever way it is reached.

pub mod cli;
pub mod dto;
pub mod error;
pub mod http;
pub mod http_auth;
pub mod http_tls;
pub mod http_mw;
mod http_trace;
pub mod native;
mod openapi;
pub mod plane;
mod produce_body;

pub use error::log_error;
