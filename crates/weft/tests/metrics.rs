//! Issue #15 items 1 and 2: `/metrics`, `/healthz` and `/readyz` on the HTTP
//! gateway of a real `weft serve`. After 1000 produces of one record each
//! (and some other calls), the counters say exactly what the test did. With
//! WEFT_PEERS=1 (scripts/peers/metrics.sh installs Debian's `prometheus`):
//! `promtool check metrics` passes on the exposition, and a real Prometheus
//! scraping the node has series of every metric family.

#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
mod support;
use support::{free_port, text, Node};

/// (status, headers, body) of a GET on the node's gateway.
fn get(port: u16, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    // Chunked bodies: the tests only read small ones or look for lines.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_owned(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// `name{labels}` -> value of every sample line of a Prometheus text exposition.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn scrape(node: &Node) -> BTreeMap<String, f64> {
    let (status, head, body) = get(node.http_port, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    samples(&body)
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("no sample {key} in:\n{}", m.keys().cloned().collect::<Vec<_>>().join("\n")))
}

/// `weft produce TOPIC --batch 1` (one request per record) with `input` on stdin.
fn produce(node: &Node, topic: &str, input: &str) -> std::process::Output {
    run_produce(&node.addr(), topic, input)
}

fn run_produce(addr: &str, topic: &str, input: &str) -> std::process::Output {
    let mut p = Command::new(support::WEFT)
        .args(["produce", topic, "--batch", "1", "--addr", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    p.wait_with_output().unwrap()
}

#[test]
fn counters_match_what_was_done_and_health_answers() {
    let node = Node::start();
    node.ok(&["topic", "create", "m", "--partitions", "1"]);
    let lines: String = (0..1000).map(|i| format!("record-{i:04}\n")).collect(); // 11 bytes each, without the newline
    let o = produce(&node, "m", &lines);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A produce to a topic that is not there: one error, by code.
    let o = produce(&node, "nosuch", "x\n");
    assert!(!o.status.success());
    // Read everything back once, in a group that commits.
    let out = node.ok(&["consume", "m", "--group", "g", "--from-beginning"]);
    assert_eq!(out.lines().count(), 1000, "{out}");
    for _ in 0..3 {
        let (s, _, _) = get(node.http_port, "/v1/topics", None);
        assert_eq!(s, 200);
    }

    let m = scrape(&node);
    assert_eq!(value(&m, r#"weft_requests_total{endpoint="log.produce",code="ok"}"#), 1000.0);
    // The latency histogram counts every call, the failed one too.
    assert_eq!(value(&m, r#"weft_request_duration_seconds_count{endpoint="log.produce"}"#), 1001.0);
    let not_found: f64 = m.iter().filter(|(k, _)| k.starts_with(r#"weft_requests_total{endpoint="log.produce",code="#) && !k.contains(r#"code="ok""#)).map(|(_, v)| v).sum();
    assert_eq!(not_found, 1.0, "one failed produce");
    assert_eq!(value(&m, r#"weft_log_produced_records_total{topic="m"}"#), 1000.0);
    assert_eq!(value(&m, r#"weft_log_produced_bytes_total{topic="m"}"#), 11_000.0);
    assert_eq!(value(&m, r#"weft_log_fetched_records_total{topic="m"}"#), 1000.0);
    assert_eq!(value(&m, r#"weft_log_partition_high_watermark{topic="m",partition="0"}"#), 1000.0);
    assert_eq!(value(&m, r#"weft_log_partition_end_offset{topic="m",partition="0"}"#), 1000.0);
    assert!(value(&m, r#"weft_log_partition_size_bytes{topic="m",partition="0"}"#) > 11_000.0);
    assert_eq!(value(&m, r#"weft_log_group_lag{group="g",topic="m",partition="0"}"#), 0.0);
    // fsync policy `always` (the default): at least one fsync per produce (group commit may merge none here: one client, one at a time).
    assert!(value(&m, "weft_log_fsyncs_total") >= 1000.0);
    assert!(value(&m, "weft_log_fsync_duration_seconds_count") >= 1000.0);
    assert_eq!(value(&m, r#"weft_http_requests_total{route="/v1/topics",method="GET",status="200"}"#), 3.0);
    assert!(value(&m, r#"weft_net_received_bytes_total{transport="tcp"}"#) > 1000.0 * 26.0, "every frame has a 26-byte header");
    assert!(value(&m, r#"weft_net_sent_bytes_total{transport="tcp"}"#) > 1000.0 * 26.0);
    assert_eq!(value(&m, "weft_log_disk_full"), 0.0);
    assert_eq!(value(&m, r#"weft_build_info{version="0.1.0"}"#), 1.0);

    // Every CLI connection closes: open goes back to 0 and each one has a lifetime.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(&node);
        let open = value(&m, r#"weft_net_connections_open{transport="tcp"}"#);
        let accepted = value(&m, r#"weft_net_connections_accepted_total{transport="tcp"}"#);
        let closed = value(&m, r#"weft_net_connection_duration_seconds_count{transport="tcp"}"#);
        // topic create, produce, produce nosuch, consume: at least 4 (the start-up pings too).
        if open == 0.0 {
            assert!(accepted >= 4.0, "{accepted}");
            assert_eq!(closed, accepted);
            break;
        }
        assert!(Instant::now() < deadline, "{open} tcp connections still open");
        std::thread::sleep(Duration::from_millis(100));
    }

    // OpenMetrics when asked.
    let (s, head, body) = get(node.http_port, "/metrics", Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"));
    assert_eq!(s, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert!(body.contains("# TYPE weft_requests counter"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");

    // Health.
    let (s, _, body) = get(node.http_port, "/healthz", None);
    assert_eq!((s, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (s, _, body) = get(node.http_port, "/readyz", None);
    assert_eq!(s, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ok");
    let names: Vec<&str> = ready["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["storage", "listeners"]);
    assert!(ready["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true), "{body}");

    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        eprintln!("skipping promtool and Prometheus (set WEFT_PEERS=1; scripts/peers/metrics.sh installs them)");
        return;
    }
    promtool_check(&node);
    prometheus_scrapes(&node);
}

fn promtool_check(node: &Node) {
    let (_, _, body) = get(node.http_port, "/metrics", None);
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/peers/metrics.sh installs it)");
    c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "promtool check metrics: {}{}\n{body}", text(&o.stdout), text(&o.stderr));
}

/// Kills the Prometheus it holds, by pid, when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_scrapes(node: &Node) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: weft\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        node.http_port
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/peers/metrics.sh installs it)"),
    );
    // Every family this node has series of after the calls above (queue
    // families appear only on nodes with queued endpoints or senders).
    let families = [
        "weft_requests_total",
        "weft_request_duration_seconds_bucket",
        "weft_net_connections_accepted_total",
        "weft_net_connections_open",
        "weft_net_connection_duration_seconds_bucket",
        "weft_net_received_bytes_total",
        "weft_net_sent_bytes_total",
        "weft_log_produced_records_total",
        "weft_log_produced_bytes_total",
        "weft_log_fetched_records_total",
        "weft_log_fetched_bytes_total",
        "weft_log_partition_size_bytes",
        "weft_log_partition_high_watermark",
        "weft_log_group_lag",
        "weft_log_fsyncs_total",
        "weft_log_fsync_duration_seconds_bucket",
        "weft_http_requests_total",
        "weft_http_request_duration_seconds_bucket",
        "weft_build_info",
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut missing: Vec<&str> = families.to_vec();
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "Prometheus has no series of {missing:?}; its log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
        missing.retain(|f| !has_series(port, f));
    }
    // And the value it scraped is the one the node counts.
    assert!(query(port, r#"weft_log_produced_records_total{topic="m"}"#).contains(r#""1000""#));
    // Every query of the sample Grafana dashboard is valid PromQL that Prometheus answers.
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana-weft.json")).unwrap()).unwrap();
    let mut n = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$instance", ".*");
            let answer = query(port, &expr);
            assert!(answer.contains(r#""status":"success""#), "dashboard query {expr}: {answer}");
            n += 1;
        }
    }
    assert!(n >= 10, "{n} dashboard queries");
}

fn query(port: u16, q: &str) -> String {
    let enc: String = q
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => get(port, &format!("/api/v1/query?query={enc}"), None).2,
        Err(_) => String::new(), // not listening yet
    }
}

fn has_series(port: u16, family: &str) -> bool {
    let body = query(port, family);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else { return false };
    v["status"] == "success" && v["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
}

/// Kills the node and unmounts the tmpfs, also when the test fails.
struct Mounted {
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// `/readyz` says 503 with the failing storage check while a partition
/// refuses writes because the disk is full (a 2 MiB tmpfs), and 200 again
/// once space is freed and a write went through. Needs root (mount); skips otherwise.
#[test]
fn readyz_is_503_while_the_disk_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&mnt).stderr(Stdio::null()).status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: cannot mount a tmpfs (needs root): the readiness-on-disk-full test did not run");
        return;
    }
    let mut guard = Mounted { dir: mnt.clone(), child: None };
    let (port, http) = (free_port(), free_port());
    guard.child = Some(
        Command::new(support::WEFT)
            .args(["serve", "--data-dir"])
            .arg(mnt.join("data"))
            .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--http-addr", &format!("127.0.0.1:{http}")])
            .env_remove("WEFT_CONFIG")
            .env_remove("WEFT_ADDR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("tcp://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(TcpStream::connect(("127.0.0.1", http)).is_ok() && get(http, "/readyz", None).0 == 200) {
        assert!(Instant::now() < deadline, "the node never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = support::run(&["topic", "create", "t", "--addr", &addr]);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // Fill the file system.
    let filler_path = mnt.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while filler.write_all(&chunk).is_ok() {}
    while filler.write_all(&[0u8; 512]).is_ok() {}
    drop(filler);
    let big = format!("{}\n", "v".repeat(64 * 1024));
    let mut refused = false;
    for _ in 0..20 {
        let o = run_produce(&addr, "t", &big);
        if !o.status.success() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a produce on a full disk must fail");
    let (s, _, body) = get(http, "/readyz", None);
    assert_eq!(s, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "unavailable");
    let storage = ready["checks"].as_array().unwrap().iter().find(|c| c["name"] == "storage").unwrap().clone();
    assert_eq!(storage["ok"], false, "{body}");
    assert!(storage["detail"].as_str().unwrap().contains("disk full"), "{body}");
    let (_, _, m) = get(http, "/metrics", None);
    assert_eq!(value(&samples(&m), "weft_log_disk_full"), 1.0);
    // Liveness does not depend on storage.
    assert_eq!(get(http, "/healthz", None).0, 200);

    // Space back: a later write reopens the partition, and the node is ready again.
    std::fs::remove_file(&filler_path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run_produce(&addr, "t", "again\n").status.success() {
        assert!(Instant::now() < deadline, "produce never worked again after space was freed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, _, body) = get(http, "/readyz", None);
    assert_eq!(s, 200, "{body}");
}

/// The pvAccess server's counters reach `/metrics`: three `weft pv get`s
/// are three more connections and at least three answered searches.
#[test]
fn pva_counters() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("weft.toml");
    std::fs::write(&conf, "[pva]\nenabled = true\ndemo = true\n").unwrap();
    let (port, http, pva_tcp, pva_udp) = (free_port(), free_port(), free_port(), free_port());
    let epics = [
        ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1".to_string()),
        ("EPICS_PVAS_SERVER_PORT", pva_tcp.to_string()),
        ("EPICS_PVAS_BROADCAST_PORT", pva_udp.to_string()),
        ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO".into()),
        ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1".into()),
        ("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{pva_udp}")),
        ("EPICS_PVA_AUTO_ADDR_LIST", "NO".into()),
    ];
    let child = Command::new(support::WEFT)
        .args(["serve", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--http-addr", &format!("127.0.0.1:{http}")])
        .envs(epics.iter().cloned())
        .env_remove("WEFT_CONFIG")
        .env_remove("WEFT_ADDR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _node = Prometheus(child); // killed by pid on drop, like the Prometheus
    let pv_get = || Command::new(support::WEFT).args(["pv", "get", "weft:demo:counter"]).envs(epics.iter().cloned()).output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pv_get().status.success() {
        assert!(Instant::now() < deadline, "pvAccess never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = samples(&get(http, "/metrics", None).2);
    for _ in 0..3 {
        let o = pv_get();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let after = samples(&get(http, "/metrics", None).2);
    assert_eq!(value(&after, "weft_pva_connections_total") - value(&before, "weft_pva_connections_total"), 3.0);
    let answered = r#"weft_pva_searches_total{result="answered"}"#;
    assert!(value(&after, answered) - value(&before, answered) >= 3.0);
}

/// pvAccess channels, monitors and monitor updates: one `weft pv monitor` of
/// the demo setpoint holds one channel and one monitor open and has had its
/// first value; two `weft pv put`s are two more updates; once the monitor
/// is killed nothing is open.
#[test]
fn pva_channels_monitors_and_updates() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("weft.toml");
    std::fs::write(&conf, "[pva]\nenabled = true\ndemo = true\n").unwrap();
    let (port, http, pva_tcp, pva_udp) = (free_port(), free_port(), free_port(), free_port());
    let epics = [
        ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1".to_string()),
        ("EPICS_PVAS_SERVER_PORT", pva_tcp.to_string()),
        ("EPICS_PVAS_BROADCAST_PORT", pva_udp.to_string()),
        ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO".into()),
        ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1".into()),
        ("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{pva_udp}")),
        ("EPICS_PVA_AUTO_ADDR_LIST", "NO".into()),
    ];
    let child = Command::new(support::WEFT)
        .args(["serve", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--disable", "udp", "--http-addr", &format!("127.0.0.1:{http}")])
        .envs(epics.iter().cloned())
        .env_remove("WEFT_CONFIG")
        .env_remove("WEFT_ADDR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _node = Prometheus(child); // killed by pid on drop
    let pv = |args: &[&str]| Command::new(support::WEFT).arg("pv").args(args).envs(epics.iter().cloned()).output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pv(&["get", "weft:demo:setpoint"]).status.success() {
        assert!(Instant::now() < deadline, "pvAccess never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Wait until the scrape says `want` (the short-lived CLI connections close asynchronously).
    let settle = |want: &[(&str, f64)]| -> BTreeMap<String, f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = samples(&get(http, "/metrics", None).2);
            if want.iter().all(|(k, v)| value(&m, k) == *v) {
                return m;
            }
            assert!(Instant::now() < deadline, "never {want:?}: {m:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let before = settle(&[("weft_pva_channels_open", 0.0), ("weft_pva_monitors_open", 0.0)]);
    let updates0 = value(&before, "weft_pva_monitor_updates_total");
    let mut mon = Command::new(support::WEFT)
        .args(["pv", "monitor", "weft:demo:setpoint"])
        .envs(epics.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = mon.stdout.take().unwrap();
    let mon = Prometheus(mon); // killed by pid on drop
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || rx.recv_timeout(Duration::from_secs(30)).expect("the monitor printed nothing").unwrap();
    next_line(); // the first value
    settle(&[("weft_pva_channels_open", 1.0), ("weft_pva_monitors_open", 1.0), ("weft_pva_monitor_updates_total", updates0 + 1.0)]);
    for v in ["5", "6"] {
        let o = pv(&["put", "weft:demo:setpoint", v]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(next_line().contains(v));
    }
    settle(&[("weft_pva_channels_open", 1.0), ("weft_pva_monitors_open", 1.0), ("weft_pva_monitor_updates_total", updates0 + 3.0)]);
    drop(mon);
    settle(&[("weft_pva_channels_open", 0.0), ("weft_pva_monitors_open", 0.0), ("weft_pva_monitor_updates_total", updates0 + 3.0)]);
}
