//! Issue #15 item 5: the web dashboard at `/ui/` of a real `weft serve`
//! (docs/dashboard.md).
//!
//! Always: the embedded bundle is served with its content types and caching
//! headers, client-side routes fall back to the app, the WebSocket feed
//! pushes a snapshot naming the node, its topics, its queued endpoint and
//! its tables, the queue routes answer typed errors, the AQL console
//! (`/ui/api/query`) answers results and typed errors with positions and
//! checks each statement for the caller with `--auth`, and a table watch
//! WebSocket streams the CLI's writes.
//!
//! With WEFT_PEERS=1 (scripts/peers/ui.sh installs Debian's chromium and
//! web/node_modules): `web/test/e2e.mjs` drives headless Chromium through
//! every page (no console errors; a record produced by `weft produce`
//! appears in the live record browser; `weft pv put` appears on the PV's
//! plot; an error-queue item is re-processed by a click and the queue
//! empties; a table made by `weft table create`/`weft kv put` is listed, an
//! AQL query typed in the console shows its rows, a `weft kv put` appears
//! in the live watch, a bad query shows its error and position) and saves
//! the screenshots of docs/dashboard/; and the committed
//! bundle (web/dist) is what `npm ci && npm run build` makes from web/.

#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
mod support;
use support::{free_port, text, Node, WEFT};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The browser run and the bundle rebuild both load the CPU (2 cores in
/// CI): one at a time.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn peers() -> bool {
    std::env::var("WEFT_PEERS").as_deref() == Ok("1")
}

/// (status, head, body) of one HTTP/1.1 request.
fn http(port: u16, method: &str, path: &str, extra: &str, body: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let len = if method == "POST" { format!("Content-Length: {}\r\nContent-Type: application/json\r\n", body.len()) } else { String::new() };
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}{len}Connection: close\r\n\r\n{body}").as_bytes()).unwrap();
    let mut out = vec![];
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut body = out[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head, body)
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    while let Some(i) = s.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&s[..i]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&s[i + 2..i + 2 + n]);
        s = &s[i + 4 + n..];
    }
    out
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Opens `/ui/ws` with a raw handshake and returns the first text message
/// (and the open connection).
fn first_ws_message(port: u16) -> (TcpStream, serde_json::Value) {
    let mut s = ws_handshake(port);
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let v = read_text_frame(&mut s);
    (s, v)
}

fn ws_handshake(port: u16) -> TcpStream {
    ws_open(port, "/ui/ws", "")
}

/// Sends a WebSocket upgrade request for `path` (`extra`: more header lines).
fn ws_open(port: u16, path: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    s
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = vec![];
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

fn read_text_frame(s: &mut TcpStream) -> serde_json::Value {
    // One unmasked server frame: FIN + text, then the length.
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[0], 0x81, "a final text frame");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut body = vec![0u8; usize::try_from(len).unwrap()];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn config(dir: &Path, pvs: bool) -> PathBuf {
    let conf = dir.join("weft.toml");
    let mut text = String::from("[queues]\nproduce_endpoint = true\nproduce_max_retries = 0\n[ui]\nmax_clients = 2\n");
    if pvs {
        let file = dir.join("pvs.toml");
        std::fs::write(&file, "[[pv]]\nname = \"ui:test:temp\"\ntype = \"double\"\nvalue = 21.5\nwritable = true\nunits = \"C\"\n").unwrap();
        text.push_str(&format!("[pva]\nenabled = true\npvs_file = {:?}\n", file.display().to_string()));
    }
    std::fs::write(&conf, text).unwrap();
    conf
}

#[test]
fn dashboard_is_served_and_its_feed_is_live() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), false);
    let node = Node::start_with(&["--config", conf.to_str().unwrap()], &[]);
    node.ok(&["topic", "create", "orders", "--partitions", "2"]);
    let p = node.http_port;

    let (status, head, body) = http(p, "GET", "/ui/", "", "");
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(header(&head, "cache-control"), Some("no-cache"));
    let html = String::from_utf8(body).unwrap();
    let js = html.split('"').find(|s| s.starts_with("/ui/assets/app.js?v=")).unwrap_or_else(|| panic!("{html}")).to_owned();
    let css = html.split('"').find(|s| s.starts_with("/ui/assets/app.css?v=")).unwrap_or_else(|| panic!("{html}")).to_owned();

    let (status, head, body) = http(p, "GET", &js, "", "");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(header(&head, "cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(body, std::fs::read(repo().join("web/dist/assets/app.js")).unwrap(), "the embedded bundle is web/dist");
    let etag = header(&head, "etag").unwrap().to_owned();
    let (status, _, body) = http(p, "GET", &js, &format!("If-None-Match: {etag}\r\n"), "");
    assert_eq!((status, body.len()), (304, 0));
    let (status, head, _) = http(p, "GET", &css, "", "");
    assert_eq!((status, header(&head, "content-type")), (200, Some("text/css; charset=utf-8")));
    // Without the version: served, but revalidated every time.
    let (status, head, _) = http(p, "GET", "/ui/assets/app.css", "", "");
    assert_eq!((status, header(&head, "cache-control")), (200, Some("no-cache")));
    let (status, _, _) = http(p, "GET", "/ui/assets/nope.js", "", "");
    assert_eq!(status, 404);

    // Client-side routes load the app; /ui redirects to /ui/.
    let (status, _, body) = http(p, "GET", "/ui/queues", "", "");
    assert_eq!(status, 200);
    assert!(String::from_utf8(body).unwrap().contains("<div id=\"root\">"));
    let (status, head, _) = http(p, "GET", "/ui", "", "");
    assert_eq!((status, header(&head, "location")), (308, Some("/ui/")));

    // The live feed: a snapshot of this node.
    let (first, snap) = first_ws_message(p);
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert!(snap["node"]["ready"].as_bool().unwrap(), "{snap}");
    assert!(snap["node"]["listeners"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().starts_with("http://")), "{snap}");
    let topic = snap["topics"].as_array().unwrap().iter().find(|t| t["name"] == "orders").unwrap_or_else(|| panic!("{snap}"));
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 2);
    let queue = snap["queues"].as_array().unwrap().iter().find(|q| q["name"] == "log.produce_queued").unwrap_or_else(|| panic!("{snap}"));
    assert_eq!((queue["kind"].as_str(), queue["errors"].as_u64()), (Some("endpoint"), Some(0)));
    assert!(snap["cluster"].is_null());
    // The next message is the next snapshot.
    let mut first = first;
    assert_eq!(read_text_frame(&mut first)["type"], "snapshot");

    // ui.max_clients = 2: a third feed is refused with 429 busy, and
    // admitted again once one closes.
    let (second, _) = first_ws_message(p);
    let mut third = ws_handshake(p);
    let head = read_head(&mut third);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    drop(third);
    assert_eq!(node.stat_via(&node.addr(), "ui.clients_refused"), 1);
    assert_eq!(node.stat_via(&node.addr(), "ui.clients"), 2);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = loop {
        let mut s = ws_handshake(p);
        if read_head(&mut s).starts_with("HTTP/1.1 101") {
            break s;
        }
        assert!(Instant::now() < deadline, "a closed feed never freed its place");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop((second, again));

    // Queue operations: typed errors for what does not exist, and the real thing.
    let (status, _, body) = http(p, "POST", "/ui/api/queues/endpoint/nope/clear", "", "{}");
    assert_eq!(status, 404, "{}", text(&body));
    let (status, _, _) = http(p, "POST", "/ui/api/queues/widget/log.produce_queued/clear", "", "{}");
    assert_eq!(status, 400);
    let (status, _, _) = http(p, "POST", "/ui/api/queues/endpoint/log.produce_queued/explode", "", "{}");
    assert_eq!(status, 404);
    let (status, _, body) = http(p, "POST", "/ui/api/queues/endpoint/log.produce_queued/pause", "", "{\"what\":\"processing\"}");
    assert_eq!(status, 200, "{}", text(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["queue"]["processing_paused"], true, "{v}");
    let (status, _, body) = http(p, "POST", "/ui/api/queues/endpoint/log.produce_queued/resume", "", "");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["queue"]["processing_paused"], false, "{v}");

    // An item whose topic is missing lands in the error queue; inspect
    // shows it; once the topic exists, re-processing produces it.
    node.ok(&["call", "log.produce_queued", r#"{"topic": "later", "value": "v1"}"#]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let items = loop {
        let (status, _, body) = http(p, "GET", "/ui/api/queues/endpoint/log.produce_queued/errors", "", "");
        assert_eq!(status, 200);
        let items: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if !items.as_array().unwrap().is_empty() {
            break items;
        }
        assert!(Instant::now() < deadline, "the item never reached the error queue");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(items[0]["request"]["value"], "v1", "{items}");
    assert!(items[0]["reason"].as_str().unwrap().contains("later"), "{items}");
    node.ok(&["topic", "create", "later"]);
    let (status, _, body) = http(p, "POST", "/ui/api/queues/endpoint/log.produce_queued/reprocess", "", "{}");
    assert_eq!(status, 200, "{}", text(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["count"], 1, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = http(p, "GET", "/v1/topics/later/partitions/0/records", "", "");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if v["records"].as_array().is_some_and(|r| r.len() == 1) {
            assert_eq!(v["records"][0]["value"], "v1");
            break;
        }
        assert!(Instant::now() < deadline, "the re-processed item was never produced: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The feed's statistics.
    assert!(node.stat_via(&node.addr(), "ui.snapshots") >= 1);
    assert_eq!(node.stat_via(&node.addr(), "ui.clients_max"), 2);
}

/// Headless Chromium through every page (see the module doc).
#[test]
fn dashboard_in_a_real_browser() {
    if !peers() {
        eprintln!("skipping the browser test (set WEFT_PEERS=1; scripts/peers/ui.sh installs chromium and web/node_modules)");
        return;
    }
    let _one = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let web = repo().join("web");
    assert!(web.join("node_modules/playwright-core").is_dir(), "web/node_modules is missing: run scripts/peers/ui.sh");
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), true);
    let (pva_tcp, pva_udp) = (free_port(), free_port());
    let epics = [
        ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1".to_string()),
        ("EPICS_PVAS_SERVER_PORT", pva_tcp.to_string()),
        ("EPICS_PVAS_BROADCAST_PORT", pva_udp.to_string()),
        ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO".into()),
        ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1".into()),
        ("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{pva_udp}")),
        ("EPICS_PVA_AUTO_ADDR_LIST", "NO".into()),
    ];
    let env: Vec<(&str, &str)> = epics.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = Node::start_with(&["--config", conf.to_str().unwrap()], &env);
    node.ok(&["topic", "create", "sensors"]);
    let o = Command::new(WEFT).args(["produce", "sensors", "--addr", &node.addr()]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().and_then(|mut c| {
        c.stdin.take().unwrap().write_all(b"t=21.0\nt=21.2\nt=21.3\n")?;
        c.wait_with_output()
    });
    assert!(o.unwrap().status.success());
    // A consumer group with a committed offset: the Topics page shows its lag.
    node.ok(&["consume", "sensors", "--group", "dash-readers", "--max-records", "2"]);
    // A table with three keys, for the Tables page (made over gRPC by the CLI).
    devices(&node);

    // Screenshots go to docs/dashboard/ only when asked (WEFT_UI_SHOTS=1),
    // so a test run does not rewrite committed files.
    let shots = if std::env::var("WEFT_UI_SHOTS").as_deref() == Ok("1") { repo().join("docs/dashboard") } else { dir.path().join("shots") };
    let mut child = Command::new("node")
        .arg(web.join("test/e2e.mjs"))
        .current_dir(&web)
        .env("UI_URL", format!("http://127.0.0.1:{}", node.http_port))
        .env("WEFT_BIN", WEFT)
        .env("WEFT_ADDR", node.addr())
        .env("PV", "ui:test:temp")
        .env("TOPIC", "sensors")
        .env("QUEUE_TOPIC", "late-topic")
        .env("TABLE", "devices")
        .env("WEFT_GRPC_ADDR", node.grpc_addr())
        .env("SHOTS", &shots)
        .envs(epics.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: every step of the script waits at most 15 s; kill it (by
    // its pid) if the whole run takes far longer than that.
    let status = common::wait_exit(&mut child, Duration::from_secs(180)).expect("web/test/e2e.mjs did not finish within 180 s");
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(status.success(), "e2e failed: {stdout}\n{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(report["seen"]["queue"], "emptied", "{report}");
    assert_eq!(report["seen"]["pv"]["value"], 42.5, "{report}");
    assert!(report["seen"]["record"].as_str().unwrap().starts_with("hello from weft produce"), "{report}");
    let t = &report["seen"]["table"];
    assert_eq!(t["rows"], serde_json::json!(["pump/1", "pump/2"]), "{report}");
    assert!(t["watched"].as_str().unwrap().contains("pump/2"), "{report}");
    assert_eq!(t["error"]["code"], "INVALID_ARGUMENT", "{report}");
    assert!(t["error"]["position"].as_str().unwrap().starts_with("line 2, column 3"), "{report}");
    for page in ["overview", "topics", "records", "pvs", "queues", "tables", "tables-error"] {
        assert!(shots.join(format!("{page}.png")).is_file(), "no screenshot of {page}");
    }
    // The console's put went through the node's table: the CLI reads it back.
    assert!(node.ok(&["kv", "get", "devices", "pump/2"]).contains("1500"));
    // The re-processed item really went into the log.
    let out = node.ok(&["consume", "late-topic", "--from-beginning", "--max-records", "1"]);
    assert!(out.contains("queued while the topic was missing"), "{out}");
}

/// web/dist is what `npm ci && npm run build` makes from web/ (the build is
/// deterministic): a change to web/src without rebuilding fails here.
#[test]
fn committed_bundle_is_fresh() {
    if !peers() {
        eprintln!("skipping the bundle rebuild (set WEFT_PEERS=1; needs node and npm)");
        return;
    }
    let _one = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let web = repo().join("web");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("web");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["package.json", "package-lock.json", "vite.config.ts", "tsconfig.json", "index.html"] {
        std::fs::copy(web.join(f), copy.join(f)).unwrap();
    }
    copy_dir(&web.join("src"), &copy.join("src"));
    let run = |args: &[&str]| {
        let o = Command::new("npm").args(args).current_dir(&copy).env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1").output().unwrap();
        assert!(o.status.success(), "npm {args:?}: {}\n{}", text(&o.stdout), text(&o.stderr));
    };
    run(&["ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"]);
    run(&["run", "build"]);
    for f in ["index.html", "assets/app.js", "assets/app.css"] {
        let built = std::fs::read(copy.join("dist").join(f)).unwrap();
        let committed = std::fs::read(web.join("dist").join(f)).unwrap();
        assert!(built == committed, "web/dist/{f} is stale: run `npm run build` in web/ and commit web/dist");
    }
    let mut names: Vec<String> = walk(&copy.join("dist"));
    names.sort();
    assert_eq!(names, ["assets/app.css", "assets/app.js", "index.html"], "the build makes exactly the three embedded files");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
        } else {
            out.push(name);
        }
    }
    out
}

/// A cluster member: the snapshot carries its `cluster.status` (this node,
/// its roles, the members, the raft groups).
#[test]
fn dashboard_snapshot_of_a_cluster_member() {
    let raft = format!("127.0.0.1:{}", free_port());
    let node = Node::start_with(&["--node-id", "1", "--cluster-addr", &raft, "--cluster-peers", &format!("1={raft}")], &[]);
    let (_, snap) = first_ws_message(node.http_port);
    let c = &snap["cluster"];
    assert_eq!(c["node_id"], 1, "{snap}");
    assert_eq!(c["roles"], serde_json::json!(["control", "data"]), "{c}");
    assert_eq!(c["nodes"][0]["id"], 1, "{c}");
    assert_eq!(c["nodes"][0]["cluster_addr"], raft.as_str(), "{c}");
    assert!(c["groups"].as_array().is_some_and(|g| !g.is_empty()), "{c}");
}

/// `devices`: three keys, revision 3 (two pumps and a valve).
fn devices(node: &Node) {
    node.ok(&["table", "create", "devices"]);
    node.ok(&["kv", "put", "devices", "pump/1", r#"{"kind": "pump", "rpm": 1200, "site": "north"}"#]);
    node.ok(&["kv", "put", "devices", "pump/2", r#"{"kind": "pump", "rpm": 800}"#]);
    node.ok(&["kv", "put", "devices", "valve/1", r#"{"kind": "valve", "open": true}"#]);
}

/// `POST /ui/api/query` with `body`; (HTTP status, answer).
fn console(port: u16, extra: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (status, head, body) = http(port, "POST", "/ui/api/query", extra, &body.to_string());
    (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {head}\n{}", text(&body))))
}

/// The Tables page's server side: tables in the snapshot, the AQL console,
/// table watches and their bound.
#[test]
fn dashboard_tables_console_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("weft.toml");
    std::fs::write(&conf, "[ui]\nmax_watches = 1\n").unwrap();
    let node = Node::start_with(&["--config", conf.to_str().unwrap()], &[]);
    devices(&node);
    let p = node.http_port;

    // The snapshot lists the table with its revision and key count.
    let (_feed, snap) = first_ws_message(p);
    let t = snap["tables"].as_array().unwrap().iter().find(|t| t["name"] == "devices").unwrap_or_else(|| panic!("{snap}"));
    assert_eq!((t["revision"].as_u64(), t["keys"].as_u64(), t["compact_revision"].as_u64()), (Some(3), Some(3), Some(0)), "{t}");
    assert!(t["bytes"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(snap["tables_omitted"], 0);

    // The console: a result in the JSON shape of `weft query --json`.
    let (status, a) = console(p, "", &serde_json::json!({"aql": "FILTER devices WHERE kind = 'pump' AND rpm >= 1000"}));
    assert_eq!((status, &a["ok"]), (200, &serde_json::json!(true)), "{a}");
    assert_eq!(a["result"]["kind"], "filter", "{a}");
    let keys: Vec<&str> = a["result"]["kvs"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["pump/1"], "{a}");
    assert_eq!(a["result"]["kvs"][0]["version"], 1, "{a}");
    let cli: serde_json::Value = serde_json::from_str(&node.ok(&["query", "FILTER devices WHERE kind = 'pump' AND rpm >= 1000", "--json"])).unwrap();
    assert_eq!(a["result"], cli, "the console answers what `weft query --json` prints");
    // The Query button's query (web/src/pages/Tables.tsx, rangeAll): every key.
    let (_, a) = console(p, "", &serde_json::json!({"aql": "RANGE devices FROM x'00' LIMIT 100"}));
    let keys: Vec<&str> = a["result"]["kvs"].as_array().unwrap_or_else(|| panic!("{a}")).iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["pump/1", "pump/2", "valve/1"], "{a}");
    // Writes too, through the same executor.
    let (_, a) = console(p, "", &serde_json::json!({"aql": "SET devices 'pump/9' = {\"kind\": \"pump\", \"rpm\": 10} IF ABSENT"}));
    assert_eq!((a["ok"].as_bool(), a["result"]["revision"].as_u64()), (Some(true), Some(4)), "{a}");

    // A syntax error: still 200 (an answer the console shows), with the
    // status /v1/query gives and the position.
    let (status, a) = console(p, "", &serde_json::json!({"aql": "FILTER devices\n  WHER kind = 'pump'"}));
    assert_eq!((status, a["ok"].as_bool(), a["status"].as_u64()), (200, Some(false), Some(400)), "{a}");
    let e = &a["error"];
    assert_eq!((e["code"].as_str(), e["details"]["grpc_code"].as_str(), e["details"]["kind"].as_str()), (Some("validation"), Some("INVALID_ARGUMENT"), Some("invalid_aql")), "{a}");
    assert_eq!((e["details"]["line"].as_str(), e["details"]["column"].as_str(), e["details"]["offset"].as_str()), (Some("2"), Some("3"), Some("17")), "{a}");
    let (_, _, v1) = http(p, "POST", "/v1/query", "", &serde_json::json!({"aql": "FILTER devices\n  WHER kind = 'pump'"}).to_string());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&v1).unwrap(), *e, "the same error body as POST /v1/query");
    // Other typed errors: unknown table, failed compare, a limit.
    let (_, a) = console(p, "", &serde_json::json!({"aql": "GET nope 'k'"}));
    assert_eq!((a["status"].as_u64(), a["error"]["details"]["grpc_code"].as_str()), (Some(404), Some("NOT_FOUND")), "{a}");
    let (_, a) = console(p, "", &serde_json::json!({"aql": "SET devices 'pump/9' = 1 IF ABSENT"}));
    assert_eq!((a["status"].as_u64(), a["error"]["details"]["grpc_code"].as_str()), (Some(409), Some("FAILED_PRECONDITION")), "{a}");
    let (_, a) = console(p, "", &serde_json::json!({"aql": "RANGE devices FROM 'a' LIMIT 99999999"}));
    assert_eq!((a["status"].as_u64(), a["error"]["details"]["config_key"].as_str()), (Some(429), Some("query.max_results")), "{a}");
    // A malformed request is not a query error: a plain 400.
    let (status, _, body) = http(p, "POST", "/ui/api/query", "", r#"{"sql": "GET devices 'a'"}"#);
    assert_eq!(status, 400, "{}", text(&body));

    // Watch: the CLI's writes arrive as events, in revision order.
    let mut w = ws_open(p, "/ui/api/tables/devices/watch", "");
    let head = read_head(&mut w);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // ui.max_watches = 1: a second watch is refused while the first is open.
    let mut second = ws_open(p, "/ui/api/tables/devices/watch", "");
    let head = read_head(&mut second);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert_eq!((node.stat_via(&node.addr(), "ui.watches"), node.stat_via(&node.addr(), "ui.watches_refused")), (1, 1));
    node.ok(&["kv", "put", "devices", "pump/2", r#"{"kind": "pump", "rpm": 1500}"#]);
    node.ok(&["kv", "del", "devices", "valve/1"]);
    let e1 = read_text_frame(&mut w);
    assert_eq!((e1["type"].as_str(), e1["revision"].as_u64(), e1["kv"]["key"].as_str()), (Some("put"), Some(5), Some("pump/2")), "{e1}");
    assert_eq!((e1["kv"]["value"].as_str(), e1["kv"]["version"].as_u64()), (Some(r#"{"kind":"pump","rpm":1500}"#), Some(2)), "{e1}");
    let e2 = read_text_frame(&mut w);
    assert_eq!((e2["type"].as_str(), e2["revision"].as_u64(), e2["kv"]["key"].as_str()), (Some("delete"), Some(6), Some("valve/1")), "{e2}");
    drop(w);
    // Its place is free again once it closed; `from` replays the history.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut replay = loop {
        let mut s = ws_open(p, "/ui/api/tables/devices/watch?from=1", "");
        if read_head(&mut s).starts_with("HTTP/1.1 101") {
            break s;
        }
        assert!(Instant::now() < deadline, "a closed watch never freed its place");
        std::thread::sleep(Duration::from_millis(50));
    };
    let revs: Vec<u64> = (0..6).map(|_| read_text_frame(&mut replay)["revision"].as_u64().unwrap()).collect();
    assert_eq!(revs, [1, 2, 3, 4, 5, 6]);
    drop(replay);
    // A table that does not exist: a plain 404 before any upgrade.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = ws_open(p, "/ui/api/tables/nope/watch", "");
        let head = read_head(&mut s);
        if head.starts_with("HTTP/1.1 404") {
            break;
        }
        // 429 while the replay's place is still being freed.
        assert!(head.starts_with("HTTP/1.1 429") && Instant::now() < deadline, "{head}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With `--auth` the console checks each statement for the caller (read on
/// the table it reads), the watch needs read on its table, and requests
/// without credentials are refused at the gateway.
#[test]
fn dashboard_console_with_auth() {
    let node = Node::start_with(&["--auth"], &[]);
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    let as_admin = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--token", &admin]);
        let o = node.weft(&a);
        assert!(o.status.success(), "weft {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let p = node.http_port;
    // The admin makes the tables from the console (`weft table` and `weft
    // kv` send no token over gRPC yet).
    let root = format!("Authorization: Bearer {admin}\r\n");
    for aql in ["CREATE TABLE open_t", "CREATE TABLE secret_t", "SET open_t 'k' = 1", "SET secret_t 'k' = 2"] {
        let (status, a) = console(p, &root, &serde_json::json!({"aql": aql}));
        assert_eq!((status, a["ok"].as_bool()), (200, Some(true)), "{aql}: {a}");
    }
    as_admin(&["auth", "role", "add", "viewer", "--grant", "read:endpoint:ui", "--grant", "read:table:open_t"]);
    as_admin(&["auth", "user", "add", "vera", "--role", "viewer"]);
    let v: serde_json::Value = serde_json::from_str(&as_admin(&["auth", "token", "create", "vera", "--json"])).unwrap();
    let vera = format!("Authorization: Bearer {}\r\n", v["secret"].as_str().unwrap());

    let (status, a) = console(p, &vera, &serde_json::json!({"aql": "GET open_t 'k'"}));
    assert_eq!((status, a["ok"].as_bool(), a["result"]["kvs"][0]["value"].as_str()), (200, Some(true), Some("1")), "{a}");
    let (_, a) = console(p, &vera, &serde_json::json!({"aql": "GET secret_t 'k'"}));
    assert_eq!((a["ok"].as_bool(), a["status"].as_u64(), a["error"]["details"]["grpc_code"].as_str()), (Some(false), Some(403), Some("PERMISSION_DENIED")), "{a}");
    let (_, a) = console(p, &vera, &serde_json::json!({"aql": "SET open_t 'k' = 2"}));
    assert_eq!((a["status"].as_u64(), a["error"]["details"]["grpc_code"].as_str()), (Some(403), Some("PERMISSION_DENIED")), "{a}");
    // A BATCH is refused whole when one statement is: nothing written.
    let (_, a) = console(p, &vera, &serde_json::json!({"aql": "BATCH { GET open_t 'k'; SET open_t 'j' = 3 }"}));
    assert_eq!(a["status"].as_u64(), Some(403), "{a}");
    let (_, a) = console(p, &vera, &serde_json::json!({"aql": "GET open_t 'j'"}));
    assert_eq!((a["ok"].as_bool(), a["result"]["kvs"].as_array().map(Vec::len)), (Some(true), Some(0)), "{a}");
    let (status, _, _) = http(p, "POST", "/ui/api/query", "", r#"{"aql": "GET open_t 'k'"}"#);
    assert_eq!(status, 401);
    let (status, _, _) = http(p, "POST", "/ui/api/query", "Authorization: Bearer wrong\r\n", r#"{"aql": "GET open_t 'k'"}"#);
    assert_eq!(status, 401);

    let mut s = ws_open(p, "/ui/api/tables/open_t/watch", &vera);
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut s = ws_open(p, "/ui/api/tables/secret_t/watch", &vera);
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}
