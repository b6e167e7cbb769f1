//! `POST /v1/query` for the HTTP gateway: body `{"aql": "...",
//! "timeout_ms": n}`, answer the result as JSON (json.rs), errors as the
//! gateway's error body with the status its wire code maps to.

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

async fn query(State(exec): State<Executor>, body: Bytes) -> Response {
    let req: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_response(ErrorBody::new(ErrorCode::BadBody, format!("invalid JSON body: {e}"))),
    };
    match run(&exec, &req, false, None).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(crate::json::error_body(&e)),
    }
}

/// The route, to merge into the gateway's router.
pub fn routes(exec: Executor) -> Router {
    Router::new().route("/v1/query", post(query)).with_state(exec)
}
