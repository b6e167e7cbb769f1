//! Transports for Weft's native protocol.
//!
//! - [`Server`]: serves one [`Handler`] on any number of TCP, Unix-socket and
//!   UDP listeners, and TLS (TCP) and QUIC listeners, with the hello/welcome handshake, per-connection limits on
//!   requests in flight, typed error frames for bad input, and a graceful
//!   drain on shutdown.
//! - [`Client`]: one persistent, multiplexed connection (many requests in
//!   flight, matched by message id), with connect and request timeouts and
//!   reconnection with exponential back-off and jitter.
//! - [`liveness`]: UDP heartbeats to configured peers and a table of who is
//!   alive.
// Unit tests may unwrap: a failure there is the test failing.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod allow;
mod backoff;
mod budget;
pub mod cli;
pub mod events;
mod client;
mod endpoint;
mod error;
pub mod gate;
pub mod listener;
pub mod liveness;
mod quic;
mod server;
mod splitter;
pub mod tls;
pub mod tls_reload;
mod x509;

pub use allow::{Admission, AllowList};
pub use backoff::Backoff;
pub use client::{set_trace_context_source, trace_context_source, Client, ClientConfig, Subscription, DEFAULT_EVENT_BUFFER};
pub use events::{EventSendError, EventSink};
pub use endpoint::{Endpoint, Target, Transport};
pub use error::{ClientError, NetError, TlsError};
pub use quic::{close_code as quic_close_code, STREAM_REFUSED as QUIC_STREAM_REFUSED};
pub use tls::{ClientAuth, TlsClientConfig, TlsServerConfig};
pub use x509::{cert_names, CertNames, MAX_NAMES as CERT_NAMES_MAX};
pub use server::{
    Handler, HandlerFuture, PeerInfo, Server, ServerConfig, ServerStats, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BUFFER_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONN_BUFFER_BYTES, MAX_PRE_HELLO_FRAME_BYTES,
};

/// A UDP payload can never exceed this (65535 minus IPv4 and UDP headers).
pub const MAX_DATAGRAM_BYTES: usize = 65_507;

/// The client id this process presents: the HOSTNAME when set (a Kubernetes
/// pod name is stable and meaningful in logs), a fresh UUID otherwise.
pub fn default_client_id() -> String {
    match std::env::var("HOSTNAME") {
        Ok(h) if !h.trim().is_empty() => h.trim().to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}
