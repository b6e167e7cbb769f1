//! Tracing middleware of the HTTP gateway: one `http.request` server span
//! per request, continuing the W3C trace context of the request's
//! `traceparent` header, and the span's own `traceparent` in the response
//! (so a caller without a tracer can still find its request's trace).

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub async fn trace(req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>() {
        Some(m) => m.as_str().to_owned(),
        None => "other".to_owned(),
    };
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    {
        // A block: a borrow of the request kept across the await below
        // would make the future not Send.
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        weft_service::trace::start_with_state(&span, header("traceparent"), header("tracestate"));
    }
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    if let Some(cx) = weft_service::trace::span_context(&span)
        && let Ok(v) = HeaderValue::from_str(&weft_service::trace::format_traceparent(&cx))
    {
        resp.headers_mut().insert("traceparent", v);
    }
    resp
}
