//! Weft's security core: identities (bearer tokens, API keys, mTLS
//! certificate names), roles granting read | write | admin on topics,
//! tables, queues, endpoints, process variables and the cluster, and one
//! [`Authorizer::authorize`] that every surface calls (native protocol,
//! HTTP gateway, gRPC query API, pvAccess, dashboard).
//!
//! Sans-IO apart from the state file (`store`): no sockets, no runtime.
//! docs/security.md describes the model, the threat model and the hooks.

mod authorizer;
pub mod cred;
mod error;
pub mod limits;
mod model;
pub mod ops;
pub mod routes;
pub mod store;
#[cfg(feature = "tonic")]
pub mod grpc;

pub use authorizer::{
    now_ms, AuthOptions, AuditEvent, AuthStats, Authorizer, Change, Identity, PvaPolicy, Via, ADMIN_ROLE, ADMIN_USER, MAX_CACHED_CREDENTIALS,
};
pub use ops::{bootstrap_state, AuthOp};
pub use cred::{parse_authorization, parse_credential, CredKind, Credential};
pub use error::{AuthError, Denied, DeniedKind, ParseError};
pub use model::{Action, CredRecord, Grant, Pattern, Resource, ResourceKind, Role, State, User};
