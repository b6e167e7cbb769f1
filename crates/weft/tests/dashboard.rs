//! Issue #15 item 5: the web dashboard at `/ui/` of a real `weft serve`
//! (docs/dashboard.md).
//!
//! Always: the embedded bundle is served with its content types and caching
//! headers, client-side routes fall back to the app, the WebSocket feed
//! pushes a snapshot naming the node, its topics and its queued endpoint,
//! and the queue routes answer typed errors.
//!
//! With WEFT_PEERS=1 (scripts/peers/ui.sh installs Debian's chromium and
//! web/node_modules): `web/test/e2e.mjs` drives headless Chromium through
//! every page (no console errors; a record produced by `weft produce`
//! appears in the live record browser; `weft pv put` appears on the PV's
//! plot; an error-queue item is re-processed by a click and the queue
//! empties) and saves the screenshots of docs/dashboard/; and the committed
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
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"GET /ui/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
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
        .env("SHOTS", &shots)
        .envs(epics.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: every step of the script waits at most 15 s; kill it (by
    // its pid) if the whole run takes far longer than that.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("web/test/e2e.mjs did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(status.success(), "e2e failed: {stdout}\n{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(report["seen"]["queue"], "emptied", "{report}");
    assert_eq!(report["seen"]["pv"]["value"], 42.5, "{report}");
    assert!(report["seen"]["record"].as_str().unwrap().starts_with("hello from weft produce"), "{report}");
    for page in ["overview", "topics", "records", "pvs", "queues"] {
        assert!(shots.join(format!("{page}.png")).is_file(), "no screenshot of {page}");
    }
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
