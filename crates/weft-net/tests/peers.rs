//! TLS and QUIC against implementations nobody here wrote: Python's ssl
//! module, the `openssl s_client` CLI (both OpenSSL) and aioquic, each
//! speaking native frames as docs/protocol.md describes them. Only with
//! WEFT_PEERS=1 (scripts/peers/tls.sh installs the peers); then a missing
//! peer is a failure, not a skip.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use weft_net::tls::dev::{self, DevFiles};
use weft_net::{ClientAuth, PeerInfo, Server, ServerConfig, TlsServerConfig};
use weft_service::{EndpointOptions, Service};
use weft_wire::{encode, BodyFormat, Frame, FrameDecoder, FrameKind, Hello, MessageId, PROTOCOL_VERSION};

fn peers_enabled(test: &str) -> bool {
    let on = std::env::var("WEFT_PEERS").is_ok_and(|v| v == "1");
    if !on {
        println!("skipped {test}: set WEFT_PEERS=1 to run the real-peer tests");
    }
    on
}

fn python() -> PathBuf {
    std::env::var_os("WEFT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(name)
}

async fn node(certs: &Path, auth: ClientAuth) -> (Server, std::net::SocketAddr, std::net::SocketAddr) {
    let mut s = Service::new("peer-test");
    s.endpoint_with("whoami", EndpointOptions::default(), |_: Option<()>, peer: Arc<PeerInfo>| async move {
        Ok(serde_json::json!({"transport": peer.transport.as_str(), "client_id": peer.client_id}))
    })
    .unwrap();
    let f = DevFiles::in_dir(certs);
    let tls = TlsServerConfig { cert: f.server_cert, key: f.server_key, client_ca: Some(f.ca_cert), client_auth: auth };
    let server = Server::new(ServerConfig::default(), s.into_handler());
    let t = server.bind_tls("127.0.0.1:0", &tls).await.unwrap();
    let q = server.bind_quic("127.0.0.1:0", &tls).await.unwrap();
    (server, t, q)
}

fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    dev::init(dir.path(), &["localhost".into(), "127.0.0.1".into()], "python-peer").unwrap();
    dir
}

async fn run_py(script_name: &str, addr: std::net::SocketAddr, ca: &Path, cert: Option<(&Path, &Path)>) -> Value {
    let py = python();
    assert!(py.exists(), "WEFT_PEERS=1 but no python at {} (run scripts/peers/tls.sh)", py.display());
    let mut cmd = tokio::process::Command::new(&py);
    cmd.arg(script(script_name)).arg(addr.ip().to_string()).arg(addr.port().to_string()).arg(ca);
    if let Some((c, k)) = cert {
        cmd.arg(c).arg(k);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script_name} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script_name} printed {stdout:?}: {e}"))
}

#[tokio::test]
async fn python_ssl_client_speaks_frames_over_tls_with_and_without_a_client_certificate() {
    if !peers_enabled("python ssl") {
        return;
    }
    let dir = certs();
    let f = DevFiles::in_dir(dir.path());
    // Server-authenticated TLS only.
    let (server, tls, _) = node(dir.path(), ClientAuth::None).await;
    let v = run_py("weft_tls_client.py", tls, &f.ca_cert, None).await;
    assert_eq!(v["welcome"]["protocol_version"], 1, "{v}");
    assert_eq!(v["alpn"], "weft/1");
    assert_eq!(v["echo"], serde_json::json!({"text": "hi from python"}));
    assert_eq!(v["ping"]["pong"], true);
    assert_eq!(v["whoami"], serde_json::json!({"transport": "tls", "client_id": "python-ssl"}));
    server.shutdown(Duration::from_secs(2)).await;

    // mTLS required: without a certificate refused, with one named.
    let (server, tls, _) = node(dir.path(), ClientAuth::Require).await;
    let v = run_py("weft_tls_client.py", tls, &f.ca_cert, None).await;
    assert!(v.get("refused").is_some(), "accepted without a certificate: {v}");
    let v = run_py("weft_tls_client.py", tls, &f.ca_cert, Some((&f.client_cert, &f.client_key))).await;
    assert_eq!(v["whoami"], serde_json::json!({"transport": "tls", "client_id": "python-peer"}), "{v}");
    // A certificate from another CA.
    let other = certs();
    let o = DevFiles::in_dir(other.path());
    let v = run_py("weft_tls_client.py", tls, &f.ca_cert, Some((&o.client_cert, &o.client_key))).await;
    assert!(v.get("refused").is_some(), "accepted a foreign certificate: {v}");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn aioquic_client_speaks_frames_over_quic_with_and_without_a_client_certificate() {
    if !peers_enabled("aioquic") {
        return;
    }
    let dir = certs();
    let f = DevFiles::in_dir(dir.path());
    let (server, _, quic) = node(dir.path(), ClientAuth::None).await;
    let v = run_py("weft_quic_client.py", quic, &f.ca_cert, None).await;
    assert_eq!(v["welcome"]["protocol_version"], 1, "{v}");
    assert_eq!(v["echo"], serde_json::json!({"text": "hi from aioquic"}));
    assert_eq!(v["ping"]["pong"], true);
    assert_eq!(v["whoami"], serde_json::json!({"transport": "quic", "client_id": "python-aioquic"}));
    assert_eq!(v["concurrent"], serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    // Stream 0 for the hello, then client-initiated bidi streams 4, 8, ...
    assert_eq!(v["streams"][0], 0);
    assert_eq!(v["streams"][1], 4);
    server.shutdown(Duration::from_secs(2)).await;

    let (server, _, quic) = node(dir.path(), ClientAuth::Require).await;
    let v = run_py("weft_quic_client.py", quic, &f.ca_cert, None).await;
    assert!(v.get("refused").is_some(), "accepted without a certificate: {v}");
    let v = run_py("weft_quic_client.py", quic, &f.ca_cert, Some((&f.client_cert, &f.client_key))).await;
    assert_eq!(v["whoami"], serde_json::json!({"transport": "quic", "client_id": "python-peer"}), "{v}");
    let other = certs();
    let o = DevFiles::in_dir(other.path());
    let v = run_py("weft_quic_client.py", quic, &f.ca_cert, Some((&o.client_cert, &o.client_key))).await;
    assert!(v.get("refused").is_some(), "accepted a foreign certificate: {v}");
    server.shutdown(Duration::from_secs(2)).await;
}

fn frame_bytes(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode(f, &mut out).unwrap();
    }
    out.to_vec()
}

/// `openssl s_client` as a dumb pipe: hello, an echo request, then a
/// client `goaway` so that the server answers, closes, and s_client exits.
async fn s_client(addr: std::net::SocketAddr, ca: &Path, cert: Option<(&Path, &Path)>) -> (bool, Vec<Frame>) {
    let hello = Hello { protocol_version: PROTOCOL_VERSION, client_id: "openssl".into(), client_name: "s_client".into() };
    let echo_id = MessageId::new_v4();
    let input = frame_bytes(&[
        Frame::with_body(FrameKind::Control, MessageId::new_v4(), "hello", BodyFormat::MsgPack, &hello).unwrap(),
        Frame::request(echo_id, "weft.echo", BodyFormat::MsgPack, "via openssl").unwrap(),
        Frame::with_body(FrameKind::Control, MessageId::nil(), "goaway", BodyFormat::MsgPack, &()).unwrap(),
    ]);
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", "-quiet", "-ign_eof", "-verify_return_error", "-alpn", "weft/1"])
        .arg("-CAfile")
        .arg(ca);
    if let Some((c, k)) = cert {
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().expect("WEFT_PEERS=1 but no openssl (apt-get install openssl)");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    let mut buf = BytesMut::from(&out.stdout[..]);
    let mut dec = FrameDecoder::new(1 << 20);
    let mut frames = vec![];
    while let Ok(Some(f)) = dec.decode(&mut buf) {
        frames.push(f);
    }
    let answered = frames.iter().any(|f| f.id == echo_id && f.kind == FrameKind::Response);
    (answered, frames)
}

#[tokio::test]
async fn openssl_s_client_carries_frames_over_tls_and_mtls() {
    if !peers_enabled("openssl s_client") {
        return;
    }
    let dir = certs();
    let f = DevFiles::in_dir(dir.path());
    let (server, tls, _) = node(dir.path(), ClientAuth::Require).await;
    let (answered, frames) = s_client(tls, &f.ca_cert, Some((&f.client_cert, &f.client_key))).await;
    assert!(answered, "no echo answer through s_client: {frames:?}");
    assert_eq!(frames.first().map(|f| f.route.as_str()), Some("welcome"));
    let echo = frames.iter().find(|f| f.kind == FrameKind::Response).unwrap();
    assert_eq!(echo.decode_body::<String>().unwrap(), "via openssl");
    let (answered, frames) = s_client(tls, &f.ca_cert, None).await;
    assert!(!answered && frames.is_empty(), "answered without a client certificate: {frames:?}");
    server.shutdown(Duration::from_secs(2)).await;
}
