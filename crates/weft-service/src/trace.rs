//! W3C trace context (`traceparent`) for Weft's `tracing` spans.
//!
//! The spans are exported as OpenTelemetry traces by the binary's layer
//! (tracing-opentelemetry; docs/observability.md). This module only uses
//! the OpenTelemetry API: it parses an incoming `traceparent` (HTTP header,
//! or the native frame's trace-context extension) into a span's parent, and
//! writes the current span's context back out. Without the layer installed
//! every function here is a no-op that returns `None`.

use std::sync::atomic::{AtomicU8, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const EXPORT_UNKNOWN: u8 = 0;
const EXPORT_OFF: u8 = 1;
const EXPORT_ON: u8 = 2;
static EXPORT: AtomicU8 = AtomicU8::new(EXPORT_UNKNOWN);

/// Say whether this process exports traces (the binary calls it once its
/// subscriber is installed, with or without the OpenTelemetry layer).
/// Until it is called, every request gets its span, as if exporting.
pub fn set_exporting(on: bool) {
    EXPORT.store(if on { EXPORT_ON } else { EXPORT_OFF }, Ordering::Relaxed);
}

/// Whether a native request gets its `request` span: when traces are
/// exported (or nobody said they are not), or when debug output is on
/// anywhere (the per-request debug line, and debug lines of the handlers,
/// carry the span's fields). Otherwise nothing would read the span, and
/// making one costs more than the rest of a ping (docs/BENCHMARKS.md,
/// "Per-request cost"). Two relaxed loads.
pub fn request_spans() -> bool {
    EXPORT.load(Ordering::Relaxed) != EXPORT_OFF || tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG
}

/// Parse a version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
/// Anything else (other versions' extra fields included) is `None`, and the
/// request starts a trace of its own, as the W3C spec asks.
pub fn parse_traceparent(s: &str) -> Option<SpanContext> {
    let s = s.trim();
    let mut parts = s.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let lower_hex = |x: &str| x.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !(lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let cx = SpanContext::new(trace_id, span_id, TraceFlags::new(flags & 0x01), true, TraceState::default());
    cx.is_valid().then_some(cx)
}

/// The `traceparent` of a span context (always version 00).
pub fn format_traceparent(cx: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8())
}

/// Make `span` continue the trace of `traceparent` (when it parses), then
/// record its trace id in the span's `trace_id` field (declared
/// `tracing::field::Empty` by the caller) so every log line inside carries
/// it. Call before the span is first entered.
pub fn start(span: &tracing::Span, traceparent: Option<&str>) {
    start_with_state(span, traceparent, None);
}

/// [`start`] with the caller's `tracestate` too (vendor entries passed on
/// along the trace; a value that does not parse is dropped, the
/// `traceparent` still counts, as the W3C spec asks).
pub fn start_with_state(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(mut parent) = traceparent.and_then(parse_traceparent) {
        if let Some(state) = tracestate.and_then(|s| s.parse::<TraceState>().ok()) {
            parent = SpanContext::new(parent.trace_id(), parent.span_id(), parent.trace_flags(), true, state);
        }
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
    if let Some(cx) = span_context(span) {
        span.record("trace_id", tracing::field::display(cx.trace_id()));
    }
}

/// The OpenTelemetry context of `span`, when it is exported.
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The `traceparent` to pass on for the current span, if it is traced.
pub fn current_traceparent() -> Option<String> {
    span_context(&tracing::Span::current()).map(|c| format_traceparent(&c))
}

/// The `tracestate` to pass on for the current span (None: empty or not traced).
pub fn current_tracestate() -> Option<String> {
    span_context(&tracing::Span::current()).map(|c| c.trace_state().header()).filter(|s| !s.is_empty())
}

/// What a client in this process sends with an outgoing call (native
/// frames, gRPC metadata): the source the binary set for native clients
/// (`weft_net::set_trace_context_source`: the current span, else the
/// `TRACEPARENT` environment variable), else the current span's.
pub fn outgoing_traceparent() -> Option<String> {
    weft_net::trace_context_source().and_then(|source| source()).or_else(current_traceparent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(tp).unwrap();
        assert_eq!(cx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(format_traceparent(&cx), tp);
    }

    #[test]
    fn bad_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }
}
