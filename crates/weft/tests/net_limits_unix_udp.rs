//! Issue #17 item 20: `weft serve`'s timeouts on its Unix socket, tested as
//! net_limits.rs tests TCP's (handshake timeout: one typed error, closed,
//! counted; idle timeout: goaway, closed, counted), and the request timeout
//! of `weft ping` over UDP against a socket that never answers.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use weft_wire::{ErrorBody, Frame, FrameKind, CONTROL_GOAWAY};

mod common;
mod support;
use support::{frames, Node};

fn weft(args: &[&str]) -> std::process::Output {
    support::run(args)
}

/// One stat over TCP, so that reading it takes no Unix connection.
fn stat(node: &Node, key: &str) -> u64 {
    node.stat_via(&node.addr(), key)
}

fn hello() -> Vec<u8> {
    frames::hello("limits-test")
}

fn frames_until_close(s: &mut UnixStream) -> Vec<Frame> {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    frames::frames_until_close(s)
}

#[test]
fn a_unix_connection_that_never_says_hello_gets_a_typed_timeout_and_is_closed() {
    let node = Node::start_with(&[], &[("WEFT_LIMITS_HANDSHAKE_TIMEOUT_MS", "300")]);
    let mut silent = UnixStream::connect(node.sock()).unwrap();
    let frames = frames_until_close(&mut silent);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].kind, FrameKind::Error, "{frames:?}");
    let e: ErrorBody = frames[0].decode_body().unwrap();
    assert_eq!(e.code, weft_wire::ErrorCode::Timeout);
    assert_eq!(e.details.as_ref().unwrap()["kind"], "handshake_timeout");
    assert_eq!(stat(&node, "net.handshake_timeouts"), 1);
    // A client that does say hello is served as before, on the socket too.
    assert!(weft(&["ping", "--addr", &format!("unix://{}", node.sock().display())]).status.success());
}

#[test]
fn an_idle_unix_connection_is_sent_goaway_and_closed() {
    let node = Node::start_with(&[], &[("WEFT_LIMITS_IDLE_TIMEOUT_MS", "400")]);
    let mut s = UnixStream::connect(node.sock()).unwrap();
    s.write_all(&hello()).unwrap();
    let frames = frames_until_close(&mut s);
    let kinds: Vec<_> = frames.iter().map(|f| (f.kind, f.route.as_str())).collect();
    assert_eq!(kinds, vec![(FrameKind::Control, "welcome"), (FrameKind::Control, CONTROL_GOAWAY)]);
    assert!(stat(&node, "net.idle_closed") >= 1);
}

#[test]
fn udp_ping_to_a_silent_socket_times_out_and_to_the_node_answers() {
    let node = Node::start_with(&[], &[]);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = format!("udp://{}", silent.local_addr().unwrap());
    let o = weft(&["ping", "--addr", &addr, "--timeout-ms", "300"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no welcome within") || err.contains("timed out") || err.contains("timeout"), "{err}");
    let o = weft(&["ping", "--addr", &format!("udp://127.0.0.1:{}", node.port), "--timeout-ms", "2000"]);
    assert!(o.status.success(), "{o:?}");
    drop(silent);
}
