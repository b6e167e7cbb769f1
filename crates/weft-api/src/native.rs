//! `query.*` endpoints on the native protocol (weft-service): the same
//! executor and error codes as gRPC, JSON-shaped answers (json.rs). With
//! weft-auth, every statement is checked for the connection's identity as
//! on gRPC (docs/security.md).

use std::sync::Arc;

use serde::Deserialize;
use weft_service::{EndpointOptions, Service, ServiceError};

use crate::aql::Statement;
use crate::error::Error;
use crate::exec::Executor;

/// Body of `query.execute` and `query.batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub aql: String,
    /// Per-query deadline in milliseconds (0 or absent: none beyond the default).
    #[serde(default)]
    pub timeout_ms: u64,
    /// Cluster mode: GET and RANGE read the answering node's replica as
    /// applied now (serializable, possibly behind) instead of linearizably.
    #[serde(default)]
    pub serializable: bool,
}

/// Runs a JSON query request (native and HTTP share this).
pub async fn run(exec: &Executor, req: &QueryRequest, batch_only: bool, identity: Option<&str>) -> Result<serde_json::Value, Error> {
    let mut q = exec.parse(&req.aql)?;
    if batch_only && !matches!(q.stmt, Statement::Batch(_)) {
        return Err(Error::Invalid(format!("query.batch takes a BATCH statement, not {}", q.stmt.kind())));
    }
    if req.timeout_ms > 0 {
        q.timeout_ms = Some(q.timeout_ms.map_or(req.timeout_ms, |t| t.min(req.timeout_ms)));
    }
    let r = exec.execute_with(&q, None, identity, req.serializable).await?;
    Ok(crate::json::result(&r))
}

/// Registers `query.execute` (any statement) and `query.batch` (BATCH
/// only). `authz`: every statement is checked for the connection's identity
/// (the hello's token or the TLS certificate's user) as the gRPC service
/// checks it, refusals audited with surface `native`; weft-auth allows
/// everything while auth is off. None: the executor's own hook.
pub fn register(service: &mut Service, exec: Executor, authz: Option<Arc<weft_auth::Authorizer>>) -> Result<(), ServiceError> {
    let exec = match authz {
        Some(a) => exec.with_authorizer(Arc::new(crate::auth::WeftAuth(a))),
        None => exec,
    };
    for (route, batch_only) in [("query.execute", false), ("query.batch", true)] {
        let exec = exec.clone();
        service.endpoint_with(route, EndpointOptions::default(), move |req: QueryRequest, peer: Arc<weft_net::PeerInfo>| {
            let exec = exec.clone();
            async move {
                let caller = crate::auth::Caller {
                    who: peer.identity.clone().unwrap_or_else(weft_auth::Identity::nobody),
                    peer: peer.addr.clone(),
                    surface: "native",
                };
                crate::auth::scoped(Some(caller), run(&exec, &req, batch_only, None))
                    .await
                    .map_err(|e| ServiceError::Wire(crate::json::error_body(&e)))
            }
        })?;
    }
    Ok(())
}
