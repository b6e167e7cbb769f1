//! Issue #15 item 3: "one produce can be followed from a client through the
//! router to the partition leader and its fsync". Three real `weft serve`
//! cluster nodes, each exporting OTLP/HTTP to one receiver
//! (tests/otel/receiver.py, the official protobuf definitions) under its own
//! node name (`weft.node.name`). `weft produce` with a caller's TRACEPARENT
//! is sent to a node that does not lead the partition:
//! - a topic with one replica on another node: the node forwards the
//!   produce (`cluster.forward`, native `cluster.local.produce` carrying the
//!   trace context in its frame); on the leader the request span, the raft
//!   append with its fsync, the apply and the copy's `log.append` all join
//!   the caller's trace;
//! - a topic with three replicas, sent to a follower: the proposal travels
//!   by raft (MsgProp) with the trace context in the entry's context; the
//!   leader's `raft.append` and `raft.fsync` join the caller's trace.
//!
//! Needs WEFT_PEERS=1 (scripts/peers/otel.sh). Children ended by pid.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

#[path = "support/cluster.rs"]
mod cluster;
mod common;
#[path = "support/otel.rs"]
mod otel;
use cluster::{Proc, partition_leader, procs, replicas, start_cluster, until};

/// `weft produce TOPIC` of one record to `p`, with the caller's trace context.
fn produce(p: &Proc, topic: &str, traceparent: &str) {
    let mut c = Command::new(common::WEFT)
        .args([
            "produce",
            topic,
            "--addr",
            &p.addr(),
            "--timeout-ms",
            "8000",
        ])
        .env_remove("WEFT_ADDR")
        .env("TRACEPARENT", traceparent)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"traced\n").unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "weft produce {topic}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn span_id(s: &Value) -> &str {
    s["span_id"].as_str().unwrap()
}

#[test]
fn a_produce_is_followed_to_the_leader_and_its_fsync() {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        eprintln!("skipped: set WEFT_PEERS=1 (scripts/peers/otel.sh installs opentelemetry-proto)");
        return;
    }
    let rx = otel::Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut ps = procs(dir.path(), 1..=3);
    for p in ps.iter_mut() {
        p.env.extend(otel::node_env(&rx));
        p.env
            .push(("WEFT_NODE_NAME".into(), format!("node{}", p.id)));
    }
    start_cluster(&mut ps);
    let by_id = |id: u64| ps.iter().find(|p| p.id == id).unwrap();
    let name = |id: u64| format!("node{id}");

    // 1. One replica, on a node the produce is not sent to: forwarded.
    until("topic solo", || {
        ps[0].json(&[
            "call",
            "cluster.create_topic",
            r#"{"name":"solo","partitions":1,"replicas":1}"#,
        ])
    });
    let holder = until("solo placed", || {
        ps[0]
            .status()
            .map(|s| replicas(&s, "solo", 0))
            .filter(|r| r.len() == 1)
    })[0];
    until("solo's leader", || {
        partition_leader(&ps, "solo", 0).filter(|l| *l == holder)
    });
    let sender = ps.iter().find(|p| p.id != holder).unwrap().id;
    let (t1, s1) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    produce(by_id(sender), "solo", &format!("00-{t1}-{s1}-01"));

    // 2. Three replicas, sent to a follower: raft forwards the proposal.
    until("topic trio", || {
        ps[0].json(&[
            "call",
            "cluster.create_topic",
            r#"{"name":"trio","partitions":1,"replicas":3}"#,
        ])
    });
    let leader = until("trio's leader", || partition_leader(&ps, "trio", 0));
    let follower = ps.iter().find(|p| p.id != leader).unwrap().id;
    let (t2, s2) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    produce(by_id(follower), "trio", &format!("00-{t2}-{s2}-01"));

    // Every span asserted below, by (trace, name, node): each is exported
    // when it ends, some after the produce was answered (the applier's).
    let (sender_name, holder_name, leader_name, follower_name) =
        (name(sender), name(holder), name(leader), name(follower));
    let expected = [
        (t1, "log.produce", &sender_name),
        (t1, "cluster.forward", &sender_name),
        (t1, "cluster.local.produce", &holder_name),
        (t1, "raft.append", &holder_name),
        (t1, "raft.fsync", &holder_name),
        (t1, "raft.apply", &holder_name),
        (t1, "log.append", &holder_name),
        (t2, "log.produce", &follower_name),
        (t2, "raft.append", &leader_name),
        (t2, "raft.fsync", &leader_name),
        (t2, "raft.apply", &leader_name),
    ];
    let spans = rx.wait_for("every span of both traces", |s| {
        expected.iter().all(|(t, n, node)| {
            s.iter()
                .any(|x| x["trace_id"] == *t && x["name"] == *n && otel::node(x) == node.as_str())
        })
    });
    let at = |trace: &str, span: &str, node: &str| -> Value {
        let found: Vec<&Value> = otel::named(&spans, trace, span)
            .into_iter()
            .filter(|s| otel::node(s) == node)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{} spans {span:?} of {node} in trace {trace}:\n{}",
            found.len(),
            otel::dump(&spans)
        );
        found[0].clone()
    };

    // 1: client -> sender's request span -> cluster.forward -> the
    // holder's cluster.local.produce -> raft.append -> raft.fsync, and
    // raft.apply -> log.append, all in the caller's trace.
    let request = at(t1, "log.produce", &name(sender));
    assert_eq!(
        request["parent_span_id"], s1,
        "the sender's span continues the client's"
    );
    let forward = at(t1, "cluster.forward", &name(sender));
    assert_eq!(forward["parent_span_id"], span_id(&request));
    assert_eq!(forward["kind"], "SPAN_KIND_CLIENT");
    let local = at(t1, "cluster.local.produce", &name(holder));
    assert_eq!(local["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        local["parent_span_id"],
        span_id(&forward),
        "the leader's request span is the forward's child"
    );
    let append = at(t1, "raft.append", &name(holder));
    assert_eq!(append["parent_span_id"], span_id(&local));
    let fsync = at(t1, "raft.fsync", &name(holder));
    assert_eq!(
        fsync["parent_span_id"],
        span_id(&append),
        "the leader's WAL fsync is in the trace"
    );
    let apply = at(t1, "raft.apply", &name(holder));
    assert_eq!(apply["parent_span_id"], span_id(&local));
    let copy = at(t1, "log.append", &name(holder));
    assert_eq!(
        copy["parent_span_id"],
        span_id(&apply),
        "the applier's write of the copy is the apply's child"
    );
    assert_eq!(copy["attributes"]["topic"], "solo");
    let nodes: std::collections::BTreeSet<&str> = spans
        .iter()
        .filter(|s| s["trace_id"] == t1)
        .map(otel::node)
        .collect();
    assert_eq!(
        nodes.len(),
        2,
        "the trace crosses exactly the sender and the holder: {nodes:?}"
    );

    // 2: the follower's request span is the parent of the leader's append
    // (the trace context rode in the raft entry), and of every replica's.
    let request = at(t2, "log.produce", &name(follower));
    assert_eq!(request["parent_span_id"], s2);
    let append = at(t2, "raft.append", &name(leader));
    assert_eq!(
        append["parent_span_id"],
        span_id(&request),
        "the leader's append continues the follower's request"
    );
    assert_eq!(
        at(t2, "raft.fsync", &name(leader))["parent_span_id"],
        span_id(&append)
    );
    assert!(
        otel::named(&spans, t2, "raft.apply")
            .iter()
            .any(|s| otel::node(s) == name(leader)),
        "{}",
        otel::dump(&spans)
    );
}
