//! `POST /v1/query` for the HTTP gateway: body `{"aql": "...",
//! "timeout_ms": n}`, answer the result as JSON (json.rs), errors as the
//! gateway's error body with the status its wire code maps to. With
//! weft-auth, every statement is checked for the identity the gateway's
//! auth layer put in the request (docs/security.md), as on gRPC.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use weft_wire::{ErrorBody, ErrorCode};

use crate::exec::Executor;
use crate::native::{QueryRequest, run};

fn error_response(body: ErrorBody) -> Response {
    let status = StatusCode::from_u16(weft_broker::error::http_status(body.code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

async fn query(State(exec): State<Executor>, ext: axum::http::Extensions, body: Bytes) -> Response {
    let req: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_response(ErrorBody::new(ErrorCode::BadBody, format!("invalid JSON body: {e}"))),
    };
    // The gateway's auth layer put the caller there (anonymous while auth is off).
    let caller = crate::auth::Caller {
        who: ext.get::<weft_auth::Identity>().cloned().unwrap_or_else(weft_auth::Identity::nobody),
        peer: ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default(),
        surface: "http",
    };
    match crate::auth::scoped(Some(caller), run(&exec, &req, false, None)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(crate::json::error_body(&e)),
    }
}

/// The route, to merge into the gateway's router. `authz`: every statement
/// checked for the request's identity, refusals audited with surface
/// `http` (None: the executor's own hook).
pub fn routes(exec: Executor, authz: Option<std::sync::Arc<weft_auth::Authorizer>>) -> Router {
    let exec = match authz {
        Some(a) => exec.with_authorizer(std::sync::Arc::new(crate::auth::WeftAuth(a))),
        None => exec,
    };
    Router::new().route("/v1/query", post(query)).with_state(exec)
}
