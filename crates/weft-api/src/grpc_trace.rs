//! W3C trace context over gRPC metadata (docs/observability.md, "Traces").
//!
//! The server side is one `rpc.request` server span per call, made by
//! tonic's `trace_fn` hook before the call is routed (so health and
//! reflection calls get one too), continuing the caller's `traceparent` and
//! `tracestate` metadata exactly as the HTTP gateway does with its headers
//! (`weft_service::trace`). The client side puts this process's outgoing
//! context into a request's metadata.

use tonic::codegen::http;
use tonic::metadata::MetadataValue;

/// The span a gRPC call runs in (tonic's `Server::trace_fn`). `Span::none()`
/// when nothing would read it (no export, no debug output), as for native
/// requests: making one costs more than a small call.
pub fn server_span(req: &http::Request<()>) -> tracing::Span {
    if !weft_service::trace::request_spans() {
        return tracing::Span::none();
    }
    // `/weft.query.v1.Query/Execute`: service and method, as OpenTelemetry's
    // RPC conventions name them; the span is named `service/method`.
    let path = req.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        "rpc.request",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        trace_id = tracing::field::Empty,
    );
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    weft_service::trace::start_with_state(&span, header("traceparent"), header("tracestate"));
    span
}

/// Put this process's outgoing trace context (the current span's, or the
/// CLI's `TRACEPARENT`) into `req`'s metadata, when there is one.
pub fn inject<T>(req: &mut tonic::Request<T>) {
    let Some(tp) = weft_service::trace::outgoing_traceparent() else {
        return;
    };
    if let Ok(v) = MetadataValue::try_from(tp.as_str()) {
        req.metadata_mut().insert("traceparent", v);
    }
    if let Some(ts) = weft_service::trace::current_tracestate()
        && let Ok(v) = MetadataValue::try_from(ts.as_str())
    {
        req.metadata_mut().insert("tracestate", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_without_exporter_is_none_and_metadata_stays_empty() {
        // No subscriber, no exporter said: request_spans() is true until
        // set_exporting(false); the span is then disabled (no subscriber).
        let req = http::Request::builder()
            .uri("/weft.query.v1.Query/Execute")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        let span = server_span(&req);
        assert!(weft_service::trace::span_context(&span).is_none());
        let mut r = tonic::Request::new(());
        inject(&mut r);
        assert!(r.metadata().get("traceparent").is_none());
    }
}
