//! # weft-api: Weft's query API (issue 13)
//!
//! - [`aql`]: the AQL language (lexer, parser with error positions,
//!   canonical printer; grammar in docs/aql.md).
//! - [`pb`]: the `weft.query.v1` protobuf messages and the tonic service
//!   (proto/weft/query/v1/query.proto, compiled by build.rs with protox).
//! - [`convert`]: protobuf statements to the AQL tree, typed errors.
//! - [`exec`]: the executor (AQL -> weft-table calls and weft-log reads),
//!   deadlines, limits ([`QueryConfig`]), the [`Authorizer`] hook.
//! - [`service`]: the tonic Query service (Execute, Batch, Stream, Watch,
//!   Session), health and reflection.
//! - [`auth`]: weft-auth's authorizer on the gRPC Query service.
//! - [`error`]: one error enum mapped to gRPC codes with google.rpc details.
//! - [`autocompact`]: automatic compaction of table history (etcd's
//!   `--auto-compaction-*`).
pub mod aql;
pub mod auth;
pub mod autocompact;
pub mod cli;
pub mod config;
pub mod convert;
pub mod error;
pub mod eval;
pub mod exec;
pub mod grpc_trace;
pub mod http;
pub mod json;
pub mod native;
pub mod replicated;
pub mod server;
pub mod service;

pub use config::QueryConfig;
pub use error::Error;
pub use exec::{Access, AllowAll, Authorizer, Executor, QueryStats};
pub use service::QueryService;

/// Generated protobuf and tonic code for `weft.query.v1`.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("weft.query.v1");

    /// The encoded FileDescriptorSet of query.proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/query_descriptor.bin"));
}
