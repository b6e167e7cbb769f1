//! Issue #15 item 3 over gRPC: W3C trace context in gRPC metadata. A real
//! `weft serve` exports OTLP/HTTP to tests/otel/receiver.py (the official
//! `opentelemetry-proto` definitions decode it):
//! - Python grpcio (stubs generated from proto/ by grpcio-tools) calls
//!   `weft.query.v1.Query/Execute` with `traceparent` and `tracestate`
//!   metadata: Weft's server span has the caller's trace id, the caller's
//!   span as parent, and the caller's tracestate; a call without metadata
//!   starts a trace of its own (root span);
//! - the `weft query` CLI with `TRACEPARENT` set passes it on in its gRPC
//!   metadata (crates/weft-api grpc_trace::inject, as weft-query-client
//!   does), and the node's span continues it.
//!
//! Needs WEFT_PEERS=1 (scripts/peers/otel.sh and grpc.sh).
#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::process::Command;

mod common;
#[path = "support/otel.rs"]
mod otel;
mod support;
use support::{Node, text};

const EXECUTE: &str = "weft.query.v1.Query/Execute";

#[test]
fn grpc_metadata_continues_the_callers_trace() {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set WEFT_PEERS=1 (scripts/peers/otel.sh and grpc.sh install opentelemetry-proto and grpcio)"
        );
        return;
    }
    let rx = otel::Receiver::start();
    let env = otel::node_env(&rx);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::start_with(&[], &env);

    // 1. grpcio with traceparent and tracestate metadata.
    let (_stubs, out) = support::query_stubs();
    let run = Command::new(otel::python())
        .arg(otel::script("grpc_client.py"))
        .env("GRPC_ADDR", node.grpc_addr())
        .env("STUBS", &out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "grpc_client.py: {}\n{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(sent["answered"], true);
    let (trace, parent) = (
        sent["trace_id"].as_str().unwrap(),
        sent["span_id"].as_str().unwrap(),
    );

    // 2. The CLI: TRACEPARENT goes out as gRPC metadata.
    let (cli_trace, cli_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let o = Command::new(common::WEFT)
        .args(["query", "SHOW TABLES", "--addr", &node.addr()])
        .env("WEFT_GRPC_ADDR", node.grpc_addr())
        .env("TRACEPARENT", format!("00-{cli_trace}-{cli_span}-01"))
        .env_remove("WEFT_ADDR")
        .env_remove("WEFT_CONFIG")
        .output()
        .unwrap();
    assert!(o.status.success(), "weft query: {}", text(&o.stderr));

    let spans = rx.wait_for("the three Execute spans", |s| {
        s.iter().filter(|x| x["name"] == EXECUTE).count() >= 3
    });

    // 1: the grpcio call's span continues its metadata's trace.
    let span = otel::one(&spans, trace, EXECUTE);
    assert_eq!(
        span["parent_span_id"], parent,
        "Weft's span's parent is the caller's span"
    );
    assert_eq!(span["kind"], "SPAN_KIND_SERVER");
    assert_eq!(span["attributes"]["rpc.system"], "grpc");
    assert_eq!(span["attributes"]["rpc.service"], "weft.query.v1.Query");
    assert_eq!(span["attributes"]["rpc.method"], "Execute");
    assert_eq!(
        span["trace_state"], sent["tracestate"],
        "the caller's tracestate is kept"
    );
    assert_eq!(span["resource"]["service.name"], "weft");

    // The call without metadata: a root span in a trace of Weft's own.
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s["name"] == EXECUTE && s["parent_span_id"] == "")
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "one untraced call, one root span:\n{}",
        otel::dump(&spans)
    );
    assert_ne!(roots[0]["trace_id"], trace);

    // 2: the CLI's TRACEPARENT.
    let cli = otel::one(&spans, cli_trace, EXECUTE);
    assert_eq!(
        cli["parent_span_id"], cli_span,
        "the CLI passed TRACEPARENT on in its metadata"
    );
}
