//! Live reload of allow-lists and limits (docs/security.md, "Reload"): a
//! reloaded `tcp.allow` that no longer admits 127.0.0.1 refuses new
//! connections and closes an open one at its next request (counted in
//! `net.allow_list_closed`, audited); reloading the old list lets clients
//! in again; a bad CIDR leaves the old list in force and the reload
//! answers why. The Unix socket (`unix.allow = self`) stays the way in.
#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use weft_wire::{BodyFormat, Frame, FrameDecoder, FrameKind, MessageId};

mod common;
mod support;
use support::{frames, text, Node};

fn write_conf(path: &Path, body: &str) {
    // Written whole then renamed: the node never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn unix(node: &Node) -> String {
    format!("unix://{}", node.sock().display())
}

/// SIGHUP, then wait until `reload.count` or `reload.failures` moved.
fn sighup(node: &Node) {
    let via = unix(node);
    let before = node.stat_via(&via, "reload.count") + node.stat_via(&via, "reload.failures");
    assert!(Command::new("kill").args(["-HUP", &node.child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.stat_via(&via, "reload.count") + node.stat_via(&via, "reload.failures") == before {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One frame from `s` (read timeout set by the caller); None at close.
fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    let mut dec = FrameDecoder::new(1 << 20);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(f) = dec.decode(buf).unwrap() {
            return Some(f);
        }
        assert!(Instant::now() < deadline, "no frame from the server");
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
}

fn ping_frame() -> Vec<u8> {
    frames::encoded(&Frame::with_body(FrameKind::Request, MessageId::new_v4(), "weft.ping", BodyFormat::MsgPack, &()).unwrap())
}

/// A raw native connection past its hello.
fn connect(node: &Node) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(node.tcp_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s.write_all(&frames::hello("reload-test")).unwrap();
    let mut buf = BytesMut::new();
    let w = read_frame(&mut s, &mut buf).unwrap();
    assert_eq!(w.kind, FrameKind::Control, "{w:?}");
    (s, buf)
}

#[test]
fn allow_lists_reload_refuse_new_and_close_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("weft.toml");
    let open = "[tcp]\nallow = [\"127.0.0.0/8\"]\n";
    write_conf(&conf, open);
    let node = Node::start_with(&["--config", conf.to_str().unwrap()], &[]);
    let via = unix(&node);

    // Before: a connection works.
    let (mut held, mut buf) = connect(&node);
    held.write_all(&ping_frame()).unwrap();
    assert_eq!(read_frame(&mut held, &mut buf).unwrap().kind, FrameKind::Response);

    // Only 10.0.0.0/8 from now on.
    write_conf(&conf, "[tcp]\nallow = [\"10.0.0.0/8\"]\n");
    let o = support::run(&["config", "reload", "--json", "--addr", &via]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["ok"], true, "{rep}");
    assert!(rep["applied"].as_array().unwrap().iter().any(|k| k == "tcp.allow"), "{rep}");
    assert!(!rep["restart_needed"].as_array().unwrap().iter().any(|k| k == "tcp.allow"), "{rep}");

    // A new connection is refused, and says why.
    let o = support::run(&["ping", "--addr", &node.addr(), "--timeout-ms", "2000"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("allow-list"), "{}", text(&o.stderr));
    // The open one gets an error at its next request, then is closed.
    held.write_all(&ping_frame()).unwrap();
    let e = read_frame(&mut held, &mut buf).unwrap();
    assert_eq!(e.kind, FrameKind::Error, "{e:?}");
    let body: weft_wire::ErrorBody = e.decode_body().unwrap();
    assert_eq!(body.code, weft_wire::ErrorCode::Unauthorized);
    assert!(body.message.contains("no longer on this listener's allow-list"), "{}", body.message);
    assert!(read_frame(&mut held, &mut buf).is_none(), "the connection was not closed");
    assert_eq!(node.stat_via(&via, "net.allow_list_closed"), 1);
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    assert!(audit.lines().any(|l| l.contains("\"outcome\":\"denied\"") && l.contains("connection closed") && l.contains("\"resource\":\"tcp\"")), "{audit}");

    // A bad CIDR: the reload is refused with the reason, 10/8 stays.
    write_conf(&conf, "[tcp]\nallow = [\"127.0.0.0/8\", \"300.1.2.0/24\"]\n");
    let o = support::run(&["config", "reload", "--json", "--addr", &via]);
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["ok"], false, "{rep}");
    let why = rep["error"].as_str().unwrap();
    assert!(why.contains("tcp.allow") && why.contains("300.1.2.0/24"), "{why}");
    assert!(!support::run(&["ping", "--addr", &node.addr(), "--timeout-ms", "2000"]).status.success());
    assert_eq!(node.stat_via(&via, "reload.failures"), 1);

    // Back to loopback (by SIGHUP this time): new connections work again.
    write_conf(&conf, open);
    sighup(&node);
    assert!(node.ping(), "127.0.0.1 is allowed again");
    let (mut again, mut buf) = connect(&node);
    again.write_all(&ping_frame()).unwrap();
    assert_eq!(read_frame(&mut again, &mut buf).unwrap().kind, FrameKind::Response);
    assert_eq!(node.stat_via(&via, "net.allow_list_closed"), 1);
}

/// A connection past its hello, retried while the node is at its
/// connection limit (a client that just left may still hold its slot).
fn hold(node: &Node) -> (TcpStream, BytesMut) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = TcpStream::connect(node.tcp_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        s.write_all(&frames::hello("reload-test")).unwrap();
        let mut buf = BytesMut::new();
        match read_frame(&mut s, &mut buf) {
            Some(w) if w.kind == FrameKind::Control => return (s, buf),
            other => {
                assert!(Instant::now() < deadline, "no connection slot: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `weft ping` until it works (slots of clients that just left free up
/// asynchronously).
fn ping_eventually(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.ping() {
        assert!(Instant::now() < deadline, "ping never worked");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ping_refused_at(node: &Node, max: u64) {
    let o = support::run(&["ping", "--addr", &node.addr(), "--timeout-ms", "2000"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains(&format!("maximum of {max} connections")), "{err}");
}

#[test]
fn limits_reload_max_connections_and_report_restart_keys() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("weft.toml");
    write_conf(&conf, "[limits]\nmax_connections = 2\n");
    let node = Node::start_with(&["--config", conf.to_str().unwrap(), "--disable", "unix"], &[]);

    let a = hold(&node);
    let b = hold(&node);
    ping_refused_at(&node, 2);
    drop(b);

    // 3 from now on; max_frame_bytes only at a restart.
    write_conf(&conf, "[limits]\nmax_connections = 3\nmax_frame_bytes = 1048576\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let rep: serde_json::Value = loop {
        let o = node.weft(&["config", "reload", "--json"]);
        if o.status.success() {
            break serde_json::from_slice(&o.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "{}", text(&o.stderr));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rep["ok"], true, "{rep}");
    assert!(rep["applied"].as_array().unwrap().iter().any(|k| k == "limits.max_connections"), "{rep}");
    assert!(rep["restart_needed"].as_array().unwrap().iter().any(|k| k == "limits.max_frame_bytes"), "{rep}");

    let b = hold(&node);
    ping_eventually(&node);
    let c = hold(&node);
    ping_refused_at(&node, 3);
    drop((a, b, c));
    ping_eventually(&node);
}

/// A CA and a server certificate for 127.0.0.1 in `dir` (ca.pem,
/// server.pem, server.key).
fn make_certs(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "reload test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("server.pem"), p.signed_by(&key, &ca_cert, &ca_key).unwrap().pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// Waits (bounded) until `stat` read over TCP reaches `at_least`.
fn wait_stat(node: &Node, stat: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.stat_via(&node.addr(), stat) < at_least {
        assert!(Instant::now() < deadline, "{stat} never reached {at_least}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn file_watch_reloads_without_a_signal_and_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let tls_port = common::free_port();
    let conf = dir.path().join("weft.toml");
    let body = |log: &str| {
        format!(
            "log = \"{log}\"\n[reload]\nwatch_interval_ms = 100\n[tls]\nenabled = true\naddr = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("server.pem").display(),
            dir.path().join("server.key").display()
        )
    };
    write_conf(&conf, &body("info"));
    let node = Node::start_with(&["--config", conf.to_str().unwrap()], &[]);
    let ca = dir.path().join("ca.pem");
    let tls = format!("tls://127.0.0.1:{tls_port}");
    let tls_ping = || support::run(&["ping", "--addr", &tls, "--ca", ca.to_str().unwrap(), "--timeout-ms", "5000"]);
    assert!(tls_ping().status.success(), "{}", text(&tls_ping().stderr));
    assert_eq!(node.stat_via(&node.addr(), "reload.watch_triggers"), 0);

    // The log level changes in the file: applied, no signal sent.
    write_conf(&conf, &body("debug"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entries: serde_json::Value = serde_json::from_str(&node.ok(&["config", "running", "--json"])).unwrap();
        let log = entries.as_array().unwrap().iter().find(|e| e["key"] == "log").unwrap()["value"].clone();
        if log == "debug" {
            break;
        }
        assert!(Instant::now() < deadline, "the watch never applied log = debug (running: {log})");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.stat_via(&node.addr(), "reload.watch_triggers") >= 1);
    assert_eq!(node.stat_via(&node.addr(), "reload.failures"), 0);

    // A broken certificate file: the reload fails, the old one serves on.
    let good = std::fs::read(dir.path().join("server.pem")).unwrap();
    write_conf(&dir.path().join("server.pem"), "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
    wait_stat(&node, "reload.failures", 1);
    let o = tls_ping();
    assert!(o.status.success(), "the old certificate should still serve: {}", text(&o.stderr));
    // The good file back: the next reload works again.
    let count = node.stat_via(&node.addr(), "reload.count");
    std::fs::write(dir.path().join("server.pem.tmp"), &good).unwrap();
    std::fs::rename(dir.path().join("server.pem.tmp"), dir.path().join("server.pem")).unwrap();
    wait_stat(&node, "reload.count", count + 1);
    assert!(tls_ping().status.success());
}

#[test]
fn grpc_allow_list_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("weft.toml");
    write_conf(&conf, "[grpc]\nallow = [\"127.0.0.1\"]\n");
    let node = Node::start_with(&["--config", conf.to_str().unwrap()], &[]);
    let via = unix(&node);
    let query = || node.weft(&["query", "SHOW TABLES"]);
    assert!(query().status.success(), "{}", text(&query().stderr));

    write_conf(&conf, "[grpc]\nallow = [\"10.0.0.0/8\"]\n");
    let rep: serde_json::Value = serde_json::from_slice(&support::run(&["config", "reload", "--json", "--addr", &via]).stdout).unwrap();
    assert_eq!(rep["ok"], true, "{rep}");
    assert!(rep["applied"].as_array().unwrap().iter().any(|k| k == "grpc.allow"), "{rep}");
    assert!(!query().status.success(), "a gRPC client from 127.0.0.1 was let in");
    assert!(node.stat_via(&via, "grpc.refused") >= 1);
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    assert!(audit.lines().any(|l| l.contains("\"surface\":\"grpc\"") && l.contains("\"action\":\"connect\"") && l.contains("\"outcome\":\"denied\"")), "{audit}");

    write_conf(&conf, "[grpc]\nallow = [\"127.0.0.0/8\"]\n");
    sighup(&node);
    assert!(query().status.success(), "{}", text(&query().stderr));
}
