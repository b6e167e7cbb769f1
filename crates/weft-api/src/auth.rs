//! weft-auth on the gRPC Query service (docs/security.md, "gRPC").
//!
//! The service authenticates the `authorization` metadata of every call
//! (`Bearer <token>` or `ApiKey <key>`, parsed by weft-auth as on HTTP) and
//! runs the call's statements with the caller in a task-local; the
//! executor's [`Authorizer`] hook ([`WeftAuth`]) reads it and asks
//! weft-auth for `table:NAME`, `topic:NAME` or any table (SHOW TABLES), per
//! statement, so a BATCH, a Session or a Stream is checked statement by
//! statement and a revoked or expired credential fails at its next
//! statement. Refusals go to weft-auth's audit hook with the caller's
//! surface (`grpc`, `native` for `query.*`, `http` for `POST /v1/query` and
//! the dashboard's console).

use std::sync::Arc;

use weft_auth::{Action, Denied, DeniedKind, Identity, Resource, ResourceKind};

use crate::error::Error;
use crate::exec::{Access, Authorizer};

/// The caller of one query call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Identity,
    pub peer: String,
    /// Where it called (`grpc`, `native`, `http`): the audit line's surface.
    pub surface: &'static str,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `f` with `caller` as the identity [`WeftAuth`] checks.
pub async fn scoped<F: std::future::Future>(caller: Option<Caller>, f: F) -> F::Output {
    match caller {
        Some(c) => CALLER.scope(c, f).await,
        None => f.await,
    }
}

/// A weft-auth refusal as the query API's error.
pub fn denied(d: Denied) -> Error {
    match d.kind {
        DeniedKind::Unauthenticated => Error::Unauthenticated(d.message),
        DeniedKind::Forbidden => Error::Denied(d.message),
    }
}

/// Authenticates a call's `authorization` metadata; a refusal is audited.
pub fn authenticate<T>(authz: &weft_auth::Authorizer, req: &tonic::Request<T>) -> Result<Caller, Error> {
    let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
    match authz.authenticate_header(header) {
        Ok(who) => Ok(Caller { who, peer, surface: "grpc" }),
        Err(d) => {
            authz.record_denial("grpc", &Identity::nobody(), &peer, "", &d);
            Err(denied(d))
        }
    }
}

/// The executor's access hook over weft-auth: the identity is the gRPC
/// caller in scope (none in scope: `unauthenticated`, deny by default).
pub struct WeftAuth(pub Arc<weft_auth::Authorizer>);

impl WeftAuth {
    /// Checks `caller` directly (the Stream pager and Watch, which read a
    /// table without the executor).
    pub fn check(&self, caller: &Caller, access: Access, resource: &str) -> Result<(), Error> {
        let action = match access {
            Access::Read => Action::Read,
            Access::Write => Action::Write,
            Access::Admin => Action::Admin,
        };
        let r = if resource == "tables" {
            self.0.authorize_any(&caller.who, action, ResourceKind::Table)
        } else if let Some(t) = resource.strip_prefix("table:") {
            self.0.authorize(&caller.who, action, Resource::table(t))
        } else if let Some(t) = resource.strip_prefix("topic:") {
            self.0.authorize(&caller.who, action, Resource::topic(t))
        } else {
            Err(Denied::forbidden(format!("unknown resource {resource}")))
        };
        r.map_err(|d| {
            self.0.record_denial(caller.surface, &caller.who, &caller.peer, resource, &d);
            denied(d)
        })
    }
}

impl Authorizer for WeftAuth {
    fn authorize(&self, _identity: Option<&str>, access: Access, resource: &str) -> Result<(), Error> {
        let caller = CALLER
            .try_with(Caller::clone)
            .unwrap_or_else(|_| Caller { who: Identity::nobody(), peer: String::new(), surface: "query" });
        self.check(&caller, access, resource)
    }
}
