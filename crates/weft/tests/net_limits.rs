//! Connection limits of `weft serve` through real sockets: the handshake
//! timeout, the idle timeout, the maximum connection count, and the
//! buffered-bytes budget (checked against the child's real RSS).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use weft_wire::{BodyFormat, ErrorBody, Frame, FrameKind, MessageId, CONTROL_GOAWAY};

mod common;
mod support;
use support::frames::{self, encoded};
use support::Node;

/// One stat over the Unix socket, so that reading it does not take one of
/// the TCP connections a test is counting.
fn stat(node: &Node, key: &str) -> u64 {
    node.stat_via(&format!("unix://{}", node.sock().display()), key)
}

fn hello() -> Vec<u8> {
    frames::hello("limits-test")
}

fn frames_until_close(s: &mut TcpStream) -> Vec<Frame> {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    frames::frames_until_close(s)
}

fn error_of(f: &Frame) -> ErrorBody {
    assert_eq!(f.kind, FrameKind::Error, "{f:?}");
    f.decode_body().unwrap()
}

#[test]
fn a_connection_that_never_says_hello_gets_a_typed_timeout_and_is_closed() {
    let node = Node::start_with(&[], &[("WEFT_LIMITS_HANDSHAKE_TIMEOUT_MS", "300")]);
    let mut silent = TcpStream::connect(node.tcp_addr()).unwrap();
    let frames = frames_until_close(&mut silent);
    assert_eq!(frames.len(), 1, "{frames:?}");
    let e = error_of(&frames[0]);
    assert_eq!(e.code, weft_wire::ErrorCode::Timeout);
    assert_eq!(e.details.as_ref().unwrap()["kind"], "handshake_timeout");
    assert_eq!(stat(&node, "net.handshake_timeouts"), 1);
    // A client that does say hello is served as before.
    assert!(node.ping());
}

#[test]
fn an_idle_connection_is_sent_goaway_and_closed() {
    let node = Node::start_with(&[], &[("WEFT_LIMITS_IDLE_TIMEOUT_MS", "400")]);
    let mut s = TcpStream::connect(node.tcp_addr()).unwrap();
    s.write_all(&hello()).unwrap();
    let frames = frames_until_close(&mut s);
    let kinds: Vec<_> = frames.iter().map(|f| (f.kind, f.route.as_str())).collect();
    assert_eq!(kinds, vec![(FrameKind::Control, "welcome"), (FrameKind::Control, CONTROL_GOAWAY)]);
    assert!(stat(&node, "net.idle_closed") >= 1);
}

#[test]
fn past_max_connections_new_ones_get_busy_and_a_freed_slot_is_reused() {
    // Connections on the server's runtime (no connection threads):
    // net_pinned.rs runs the same on connection threads.
    let node = Node::start_with(&[], &[("WEFT_LIMITS_MAX_CONNECTIONS", "3"), ("WEFT_NET_CONNECTION_THREADS", "0")]);
    // The readiness pings' connections close asynchronously: wait until
    // only the stats call itself is open before filling the slots.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat(&node, "net.connections_open") != 1 {
        assert!(Instant::now() < deadline, "readiness connections never closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(node.tcp_addr()).unwrap();
            s.write_all(&hello()).unwrap();
            s
        })
        .collect();
    // Until the server has taken all three, a fourth may still get in
    // (and is then closed by the handshake timeout): try again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut extra = TcpStream::connect(node.tcp_addr()).unwrap();
        let frames = frames_until_close(&mut extra);
        if let Some(f) = frames.first().filter(|f| f.kind == FrameKind::Error) {
            let e = error_of(f);
            if e.code == weft_wire::ErrorCode::Timeout {
                continue; // it got in, as above, and waited out the handshake
            }
            assert_eq!(e.code, weft_wire::ErrorCode::Busy, "{e:?}");
            assert_eq!(e.details.as_ref().unwrap()["kind"], "max_connections");
            assert_eq!(e.details.as_ref().unwrap()["max"], 3);
            break;
        }
        assert!(Instant::now() < deadline, "the fourth connection was never refused: {frames:?}");
    }
    // Close them: a new client gets in.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.ping() {
        assert!(Instant::now() < deadline, "no client served after slots were freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stat(&node, "net.conn.refused_max") >= 1);
    // The stats call itself holds the only slot now.
    assert_eq!(stat(&node, "net.conn.open"), 1);
}

/// 50 connections each send half of a 16 MiB frame. Without a budget the
/// server would hold 50 x 8 MiB = 400 MiB; with a 64 MiB budget (large
/// frames may take 48 MiB of it) three frames are read and the rest wait
/// unread in the kernel, and small requests are still served.
#[test]
fn half_sent_large_frames_stay_within_the_global_buffer_budget() {
    const FRAME: usize = 16 * 1024 * 1024;
    const BUDGET: u64 = 64 * 1024 * 1024;
    let node = Node::start_with(&[], &[
        ("WEFT_LIMITS_MAX_BUFFER_BYTES", &BUDGET.to_string()),
        ("WEFT_LIMITS_MAX_FRAME_BYTES", &(FRAME + 1024).to_string()),
    ]);
    let before = node.rss_bytes();
    // A request frame whose header declares FRAME bytes in all.
    let route = "weft.echo";
    let mut header = encoded(&Frame::with_body(FrameKind::Request, MessageId::new_v4(), route, BodyFormat::MsgPack, &()).unwrap());
    header.truncate(weft_wire::HEADER_LEN + route.len());
    let body_len = (FRAME - header.len()) as u32;
    header[6..10].copy_from_slice(&body_len.to_be_bytes());
    let half = vec![0xc0u8; FRAME / 2];
    let mut senders = vec![];
    for _ in 0..50 {
        let mut s = TcpStream::connect(node.tcp_addr()).unwrap();
        s.write_all(&hello()).unwrap();
        let (header, half) = (header.clone(), half.clone());
        senders.push(std::thread::spawn(move || {
            // Blocks once the server stops reading; ends when it is killed.
            let _ = s.write_all(&header).and_then(|_| s.write_all(&half));
            s
        }));
    }
    // Wait until the server has taken all it will: the three frames that
    // fit reserved, and the others waiting for budget.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (held, waits) = (stat(&node, "net.buffer_bytes"), stat(&node, "net.buffer_waits"));
        assert!(held <= BUDGET, "{held} bytes buffered, budget {BUDGET}");
        if held >= 3 * FRAME as u64 && waits >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "never reached the budget: held {held}, waits {waits}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give the readers a moment to pull in whatever they were allowed to
    // (polling RSS until it stops growing would only lengthen the test).
    std::thread::sleep(Duration::from_millis(500));
    let rss = node.rss_bytes();
    let unbounded = 50 * (FRAME / 2) as u64;
    assert!(
        rss < before + BUDGET + 32 * 1024 * 1024 && rss < unbounded / 2,
        "RSS {} MiB (started at {} MiB); unbounded would be {} MiB",
        rss >> 20,
        before >> 20,
        unbounded >> 20
    );
    // Small requests still get through: a quarter of the budget is theirs.
    assert!(node.ping());
    drop(node);
    for s in senders {
        let _ = s.join();
    }
}

/// A frame larger than the connection's budget could ever hold is refused
/// `too_large` from its header (not waited for), its bytes are skipped, and
/// the connection goes on serving.
#[test]
fn a_frame_over_the_connection_budget_is_refused_and_the_connection_goes_on() {
    const BUDGET: usize = 1024 * 1024;
    let node = Node::start_with(&[], &[("WEFT_LIMITS_MAX_CONN_BUFFER_BYTES", &BUDGET.to_string())]);
    let mut s = TcpStream::connect(node.tcp_addr()).unwrap();
    s.write_all(&hello()).unwrap();
    // Within max_frame_bytes (16 MiB) but over the connection's budget.
    let big = encoded(&Frame::with_body(FrameKind::Request, MessageId::new_v4(), "weft.echo", BodyFormat::MsgPack, &"x".repeat(2 * BUDGET)).unwrap());
    s.write_all(&big).unwrap();
    let ok_id = MessageId::new_v4();
    s.write_all(&encoded(&Frame::with_body(FrameKind::Request, ok_id, "weft.echo", BodyFormat::MsgPack, &"small").unwrap())).unwrap();
    s.write_all(&encoded(&Frame::with_body(FrameKind::Control, MessageId::nil(), CONTROL_GOAWAY, BodyFormat::MsgPack, &()).unwrap())).unwrap();
    let frames = frames_until_close(&mut s);
    let kinds: Vec<_> = frames.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![FrameKind::Control, FrameKind::Error, FrameKind::Response], "{frames:?}");
    let e = error_of(&frames[1]);
    assert_eq!(e.code, weft_wire::ErrorCode::TooLarge, "{e:?}");
    assert_eq!(e.details.as_ref().unwrap()["max"], BUDGET as u64);
    assert_eq!(frames[2].id, ok_id);
    assert_eq!(frames[2].decode_body::<String>().unwrap(), "small");
}
