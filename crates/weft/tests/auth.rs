//! Auth through the real binary (docs/security.md): the matrix no
//! credentials / wrong credentials / expired token / revoked key / role
//! without the permission / role with it, over the native protocol (the
//! CLI and raw frames), HTTP REST and a WebSocket upgrade; revocation
//! reaching an open connection; the admin token and the audit log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use weft_wire::{BodyFormat, ErrorBody, Frame, FrameDecoder, FrameKind, MessageId, CONTROL_HELLO};

mod common;
mod support;
use support::{text, Node};

const PRODUCE: &str = r#"{"topic":"orders","records":[{"value":"aGk="}]}"#;

struct Creds {
    admin: String,
    writer: String,
    reader: String,
    key: String,
    revoked_key: String,
    expired: String,
    wrong: String,
}

/// `weft ARGS --addr NODE --token TOKEN`, stdout when it succeeded, else
/// Err(stderr).
fn as_(node: &Node, token: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut a = args.to_vec();
    if let Some(t) = token {
        a.extend(["--token", t]);
    }
    let o = node.weft(&a);
    if o.status.success() { Ok(text(&o.stdout)) } else { Err(text(&o.stderr)) }
}

fn setup(node: &Node) -> Creds {
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.data_dir().join("admin.token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let a = Some(admin.as_str());
    as_(node, a, &["topic", "create", "orders"]).unwrap();
    as_(node, a, &["auth", "role", "add", "reader", "--grant", "read:topic:orders*"]).unwrap();
    as_(node, a, &["auth", "role", "add", "writer", "--grant", "write:topic:orders*"]).unwrap();
    as_(node, a, &["auth", "user", "add", "rita", "--role", "reader"]).unwrap();
    as_(node, a, &["auth", "user", "add", "walt", "--role", "writer"]).unwrap();
    let create = |args: &[&str]| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(&as_(node, a, args).unwrap()).unwrap();
        (v["secret"].as_str().unwrap().to_owned(), v["id"].as_str().unwrap().to_owned())
    };
    let (writer, _) = create(&["auth", "token", "create", "walt", "--json"]);
    let (reader, _) = create(&["auth", "token", "create", "rita", "--json"]);
    let (key, _) = create(&["auth", "key", "create", "walt", "--json"]);
    let (revoked_key, revoked_id) = create(&["auth", "key", "create", "walt", "--json"]);
    as_(node, a, &["auth", "key", "revoke", &revoked_id]).unwrap();
    let (expired, _) = create(&["auth", "token", "create", "walt", "--ttl-s", "1", "--json"]);
    // The same id as a real token, another secret.
    let mut wrong = writer.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'Q' } else { 'A' });
    // Wait (bounded) until the short token has expired.
    let deadline = Instant::now() + Duration::from_secs(30);
    while as_(node, Some(&expired), &["ping"]).is_ok() {
        assert!(Instant::now() < deadline, "the 1 s token never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    Creds { admin, writer, reader, key, revoked_key, expired, wrong }
}

// ---- raw native frames ----

fn raw_hello(token: Option<&str>) -> Vec<u8> {
    let mut h = serde_json::json!({"protocol_version": weft_wire::PROTOCOL_VERSION, "client_id": "raw", "client_name": "raw"});
    if let Some(t) = token {
        h["token"] = t.into();
    }
    encode(&Frame::with_body(FrameKind::Control, MessageId::new_v4(), CONTROL_HELLO, BodyFormat::MsgPack, &h).unwrap())
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    weft_wire::encode(f, &mut out).unwrap();
    out.to_vec()
}

fn read_frame(s: &mut TcpStream) -> Frame {
    let mut dec = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(f) = dec.decode(&mut buf).unwrap() {
            return f;
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Hello (with `token`), then one `log.produce`: the hello's error code, or
/// the produce's (`ok` when it succeeded).
fn raw_produce(node: &Node, token: Option<&str>) -> String {
    let mut s = TcpStream::connect(node.tcp_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&raw_hello(token)).unwrap();
    let w = read_frame(&mut s);
    if w.kind == FrameKind::Error {
        return w.decode_body::<ErrorBody>().unwrap().code.to_string();
    }
    assert_eq!(w.route, "welcome");
    let body: serde_json::Value = serde_json::from_str(PRODUCE).unwrap();
    s.write_all(&encode(&Frame::request(MessageId::new_v4(), "log.produce", BodyFormat::MsgPack, &body).unwrap())).unwrap();
    let a = read_frame(&mut s);
    match a.kind {
        FrameKind::Error => a.decode_body::<ErrorBody>().unwrap().code.to_string(),
        _ => "ok".into(),
    }
}

// ---- HTTP ----

/// One HTTP/1.1 request; the status and the whole answer.
fn http(node: &Node, method: &str, path: &str, auth: Option<&str>, body: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(format!("127.0.0.1:{}", node.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    // A 101 keeps the connection open: read until the head is complete.
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        if out.starts_with(b"HTTP/1.1 101") && out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let t = text(&out);
    let status = t.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, t)
}

fn http_produce(node: &Node, auth: Option<&str>) -> (u16, String) {
    http(node, "POST", "/v1/topics/orders/records", auth, r#"{"records":[{"value":"hi"}]}"#, "")
}

fn ws_upgrade(node: &Node, auth: Option<&str>) -> u16 {
    let extra = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // `Connection: close` from http() follows; hyper takes the first.
    http(node, "GET", "/v1/topics/orders/stream", auth, "", extra).0
}

#[test]
fn matrix_native_cli_raw_http_websocket() {
    let node = Node::start_with(&["--auth"], &[]);
    let c = setup(&node);
    let bearer = |t: &str| format!("Bearer {t}");

    // CLI (native protocol through weft_net::Client).
    let call = |t: Option<&str>| as_(&node, t, &["call", "log.produce", PRODUCE]);
    assert!(call(None).unwrap_err().contains("unauthenticated"));
    assert!(call(Some(&c.wrong)).unwrap_err().contains("unauthenticated"));
    assert!(call(Some(&c.expired)).unwrap_err().contains("unauthenticated"));
    assert!(call(Some(&c.revoked_key)).unwrap_err().contains("unauthenticated"));
    assert!(call(Some(&c.reader)).unwrap_err().contains("forbidden"));
    assert!(call(Some(&c.writer)).unwrap().contains("offset"));
    assert!(call(Some(&c.key)).unwrap().contains("offset"));
    // The reader reads; nobody but the admin administers.
    assert!(as_(&node, Some(&c.reader), &["topic", "describe", "orders"]).is_ok());
    assert!(as_(&node, Some(&c.writer), &["auth", "user", "list"]).unwrap_err().contains("forbidden"));
    assert!(as_(&node, Some(&c.admin), &["auth", "user", "list"]).unwrap().contains("walt"));
    let me: serde_json::Value = serde_json::from_str(&as_(&node, Some(&c.reader), &["auth", "whoami", "--json"]).unwrap()).unwrap();
    assert_eq!((me["user"].as_str(), me["via"].as_str(), me["roles"][0].as_str()), (Some("rita"), Some("token"), Some("reader")));
    // WEFT_TOKEN works like --token.
    let o = std::process::Command::new(common::WEFT)
        .args(["ping", "--addr", &node.addr()])
        .env("WEFT_TOKEN", &c.reader)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));

    // Raw frames: the hello's token field.
    assert_eq!(raw_produce(&node, None), "unauthenticated");
    assert_eq!(raw_produce(&node, Some(&c.wrong)), "unauthenticated");
    assert_eq!(raw_produce(&node, Some(&c.expired)), "unauthenticated");
    assert_eq!(raw_produce(&node, Some(&c.revoked_key)), "unauthenticated");
    assert_eq!(raw_produce(&node, Some(&c.reader)), "forbidden");
    assert_eq!(raw_produce(&node, Some(&c.writer)), "ok");

    // HTTP REST.
    let (s, t) = http_produce(&node, None);
    assert_eq!(s, 401, "{t}");
    assert!(t.to_ascii_lowercase().contains("www-authenticate: bearer realm=\"weft\""), "{t}");
    assert!(t.contains(r#""code":"unauthenticated""#), "{t}");
    let (s, t) = http_produce(&node, Some(&bearer(&c.wrong)));
    assert_eq!(s, 401);
    assert!(t.contains("invalid_token"), "{t}");
    assert_eq!(http_produce(&node, Some(&bearer(&c.expired))).0, 401);
    assert_eq!(http_produce(&node, Some(&format!("ApiKey {}", c.revoked_key))).0, 401);
    let (s, t) = http_produce(&node, Some(&bearer(&c.reader)));
    assert_eq!(s, 403);
    assert!(t.contains(r#""code":"forbidden""#), "{t}");
    assert_eq!(http_produce(&node, Some(&bearer(&c.writer))).0, 200);
    assert_eq!(http_produce(&node, Some(&format!("ApiKey {}", c.key))).0, 200);
    assert_eq!(http(&node, "GET", "/healthz", None, "", "").0, 200);
    assert_eq!(http(&node, "GET", "/metrics", None, "", "").0, 200, "auth.metrics_open defaults to true");
    // The dashboard is covered too.
    assert_eq!(http(&node, "GET", "/ui/", None, "", "").0, 401);

    // WebSocket: checked at the upgrade.
    assert_eq!(ws_upgrade(&node, None), 401);
    assert_eq!(ws_upgrade(&node, Some(&bearer(&c.wrong))), 401);
    assert_eq!(ws_upgrade(&node, Some(&bearer(&c.expired))), 401);
    assert_eq!(ws_upgrade(&node, Some(&format!("ApiKey {}", c.revoked_key))), 401);
    // rita's role reads orders*; walt's writes (and so reads) them.
    assert_eq!(ws_upgrade(&node, Some(&bearer(&c.reader))), 101);
    as_(&node, Some(&c.admin), &["auth", "role", "add", "nothing"]).unwrap();
    as_(&node, Some(&c.admin), &["auth", "user", "add", "nemo", "--role", "nothing"]).unwrap();
    let nemo: serde_json::Value =
        serde_json::from_str(&as_(&node, Some(&c.admin), &["auth", "token", "create", "nemo", "--json"]).unwrap()).unwrap();
    assert_eq!(ws_upgrade(&node, Some(&bearer(nemo["secret"].as_str().unwrap()))), 403);

    // Every refusal and change is in the audit log, and in the metrics.
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (surface, outcome) in [("native", "unauthenticated"), ("native", "forbidden"), ("http", "unauthenticated"), ("http", "forbidden"), ("admin", "ok")] {
        assert!(lines.iter().any(|l| l["surface"] == surface && l["outcome"] == outcome), "no {surface}/{outcome} in {audit}");
    }
    assert!(lines.iter().any(|l| l["action"] == "key.revoke"), "{audit}");
    // Each change names who made it (the actor) and from where.
    let whoami: serde_json::Value = serde_json::from_str(&as_(&node, Some(&c.admin), &["auth", "whoami", "--json"]).unwrap()).unwrap();
    let admin_actor = format!("admin (token {})", whoami["credential_id"].as_str().unwrap());
    let changes: Vec<&serde_json::Value> = lines.iter().filter(|l| l["surface"] == "admin").collect();
    assert!(changes.len() >= 8, "{audit}");
    for l in &changes {
        assert_eq!(l["actor"], admin_actor.as_str(), "{l}");
        assert!(l["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
    }
    assert!(changes.iter().any(|l| l["action"] == "user.add" && l["resource"] == "rita"), "{audit}");
    let (_, metrics) = http(&node, "GET", "/metrics", None, "", "");
    assert!(metrics.contains(r#"weft_auth_events_total{surface="http",outcome="forbidden"}"#), "{metrics}");
}

#[test]
fn revocation_reaches_open_connections() {
    let node = Node::start_with(&["--auth"], &[]);
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    let a = Some(admin.as_str());
    as_(&node, a, &["auth", "role", "add", "pinger", "--grant", "read:endpoint:weft.info"]).unwrap();
    as_(&node, a, &["auth", "user", "add", "pam", "--role", "pinger"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&as_(&node, a, &["auth", "key", "create", "pam", "--json"]).unwrap()).unwrap();
    let (key, id) = (v["secret"].as_str().unwrap().to_owned(), v["id"].as_str().unwrap().to_owned());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = weft_net::ClientConfig { token: Some(key.clone()), ..weft_net::ClientConfig::default() };
        let client = weft_net::Client::connect(node.addr().parse::<weft_net::Target>().unwrap(), cfg).await.unwrap();
        let _: serde_json::Value = client.call("weft.info", &()).await.unwrap();
        // Not granted: forbidden, and the connection stays.
        let e = client.call::<_, serde_json::Value>("weft.stats", &()).await.unwrap_err();
        assert!(e.to_string().contains("forbidden"), "{e}");
        as_(&node, a, &["auth", "key", "revoke", &id]).unwrap();
        // Same connection, next request: refused.
        let e = client.call::<_, serde_json::Value>("weft.info", &()).await.unwrap_err();
        assert!(e.to_string().contains("unauthenticated"), "{e}");
        client.shutdown().await;
    });
    // The state survives a restart of the reader: listed without secrets.
    let list = as_(&node, a, &["auth", "key", "list", "--json"]).unwrap();
    assert!(!list.contains(&id), "revoked key still listed: {list}");
    assert!(!list.contains("wk."), "secrets must never be listed: {list}");
    let state = std::fs::read_to_string(node.data_dir().join("auth/state.json")).unwrap();
    assert!(state.contains("$argon2id$") && !state.contains(&admin[20..]), "state holds hashes only");
}

#[test]
fn identity_limits_answer_busy_and_429() {
    let node = Node::start_with(&["--auth"], &[("WEFT_AUTH_RATE_PER_S", "1")]);
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    // 30 requests at once on one connection: a 1/s limit (burst 1) lets a
    // few through, whatever the machine's speed, and refuses the rest.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (ok, busy) = rt.block_on(async {
        let cfg = weft_net::ClientConfig { token: Some(admin.clone()), ..weft_net::ClientConfig::default() };
        let client = weft_net::Client::connect(node.addr().parse::<weft_net::Target>().unwrap(), cfg).await.unwrap();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..30 {
            let c = client.clone();
            set.spawn(async move { c.call::<_, serde_json::Value>("weft.ping", &()).await });
        }
        let (mut ok, mut busy) = (0, 0);
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(e) if e.to_string().contains("busy") => busy += 1,
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        client.shutdown().await;
        (ok, busy)
    });
    assert!(ok >= 1 && busy >= 1 && ok + busy == 30, "ok {ok}, busy {busy}");
    // HTTP: 429 in the error shape.
    let statuses: Vec<u16> = (0..30).map(|_| http(&node, "GET", "/v1/topics", Some(&format!("Bearer {admin}")), "", "").0).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let stats = as_(&node, Some(&admin), &["stats"]).unwrap_or_default();
    // The stats call itself may be limited; the counter is what matters.
    if !stats.is_empty() {
        let n: u64 = stats.lines().find_map(|l| l.strip_prefix("auth.limited.rate ")).unwrap().parse().unwrap();
        assert!(n >= 1);
    }
}

#[test]
fn udp_allow_list_refusals_are_audited() {
    // Only 10.0.0.0/8 may use UDP: this loopback sender is refused unread.
    let node = Node::start_with(&["--auth"], &[("WEFT_UDP_ALLOW", "10.0.0.0/8")]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let from = sock.local_addr().unwrap().to_string();
    let audit = node.data_dir().join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        // Datagrams may be lost: send again until one is audited (bounded).
        sock.send_to(b"not a frame", node.tcp_addr()).unwrap();
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if let Some(l) = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|l| l["resource"] == "udp") {
            break l;
        }
        assert!(Instant::now() < deadline, "no udp refusal in the audit log: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(line["surface"], "listener");
    assert_eq!(line["outcome"], "denied");
    assert_eq!(line["peer"], from.as_str());
}
