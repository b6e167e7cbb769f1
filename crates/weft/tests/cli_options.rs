//! The CLI's options and output (issue #11): connection options after the
//! subcommand, produce batching by bytes and its acknowledgement report,
//! --json, errors said once, `config running`, unknown WEFT_* variables,
//! `log verify` on a data dir, stats without data, completions and man.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
mod support;
use support::{run, text, Node, WEFT};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn log_end(node: &Node, topic: &str) -> u64 {
    let d = json(&node.ok(&["topic", "describe", topic, "--json"]));
    d["partitions"].as_array().unwrap().iter().map(|p| p["log_end_offset"].as_u64().unwrap()).sum()
}

#[test]
fn connection_options_and_json_go_after_the_subcommand() {
    let node = Node::start();
    let addr = node.addr();
    // `--addr` after the leaf of a command group (it used to be refused).
    let o = run(&["topic", "create", "k", "--partitions", "2", "--addr", &addr]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&["topic", "--addr", &addr, "list", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // (internal topics such as __consumer_offsets are listed too)
    assert!(json(&text(&o.stdout)).as_array().unwrap().iter().any(|t| t == "k"), "{}", text(&o.stdout));
    let o = run(&["group", "list", "--addr", &addr, "--timeout-ms", "5000"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&["queue", "ls", "--addr", &addr, "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(json(&text(&o.stdout)), serde_json::json!([]));

    // --json: the API's field names; text: aligned tables.
    let info = json(&node.ok(&["info", "--json"]));
    assert_eq!(info["name"], "weft");
    assert!(info["endpoints"].as_array().unwrap().iter().any(|e| e == "weft.config"));
    let t = node.ok(&["info"]);
    assert!(t.lines().any(|l| l.starts_with("name") && l.trim_end().ends_with("weft")), "{t}");
    let d = json(&node.ok(&["topic", "describe", "k", "--json"]));
    assert_eq!(d["config"]["partitions"], 2);
    let t = node.ok(&["topic", "describe", "k"]);
    let header = t.lines().find(|l| l.starts_with("partition ")).expect("a partition table");
    assert!(header.contains("log_end_offset"), "{t}");
    assert_eq!(json(&node.ok(&["liveness", "--json"])), serde_json::json!([]));
    let ping = json(&node.ok(&["ping", "--json"]));
    assert!(ping["rtt_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn produce_splits_by_bytes_and_reports_acknowledged() {
    let node = Node::start();
    node.ok(&["topic", "create", "big"]);
    // 40 records of 600 KB: each under the 1 MiB record limit, 24 MB in
    // all, over the 16 MiB frame limit if sent as one request.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.txt");
    let line = "x".repeat(600_000);
    let mut f = std::fs::File::create(&file).unwrap();
    for _ in 0..40 {
        writeln!(f, "{line}").unwrap();
    }
    drop(f);
    let o = node.weft(&["produce", "big", "--file", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("produced 40 record(s)"), "{}", text(&o.stderr));
    assert_eq!(log_end(&node, "big"), 40);

}

#[test]
fn interrupted_produce_says_how_many_were_acknowledged() {
    let node = Node::start();
    node.ok(&["topic", "create", "t"]);
    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let before = log_end(&node, "t");
        let mut child = Command::new(WEFT)
            .args(["produce", "t", "--addr", &node.addr()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "a\nb\nc").unwrap();
        stdin.flush().unwrap();
        // Typed lines go out without waiting for a full batch.
        let deadline = Instant::now() + Duration::from_secs(20);
        while log_end(&node, "t") < before + 3 {
            assert!(Instant::now() < deadline, "the three lines were not produced");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
        let o = child.wait_with_output().unwrap();
        drop(stdin);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(err.contains("3 record(s) acknowledged"), "{err}");
    }
}

#[test]
fn an_error_says_its_cause_once() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    // Another data dir, the first node's TCP port: bind fails.
    let o = Command::new(WEFT)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("d"))
        .args(["--tcp-addr", &format!("127.0.0.1:{}", node.port), "--disable", "udp", "--disable", "http"])
        .env_remove("WEFT_CONFIG")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = text(&o.stderr);
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");

    // A client error: connection refused, once.
    let port = common::free_port();
    let o = run(&["ping", "--addr", &format!("tcp://127.0.0.1:{port}"), "--timeout-ms", "2000"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(line.matches("refused").count() <= 1, "{line}");
}

#[test]
fn config_running_is_the_nodes_and_unknown_env_warns() {
    let node = Node::start_with(&["--node-name", "n1"], &[("WEFT_LIVENESS_INTERVAL_MS", "700")]);
    let entries = json(&node.ok(&["config", "running", "--json"]));
    let find = |k: &str| entries.as_array().unwrap().iter().find(|e| e["key"] == k).cloned().unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(find("node.name")["value"], "n1");
    assert_eq!(find("node.name")["source"], "flag --node-name");
    assert_eq!(find("liveness.interval_ms")["value"], 700);
    assert_eq!(find("liveness.interval_ms")["source"], "env WEFT_LIVENESS_INTERVAL_MS");
    assert_eq!(find("log")["source"], "default");
    let t = node.ok(&["config", "running"]);
    assert!(t.lines().any(|l| l.starts_with("node.name") && l.contains("\"n1\"") && l.contains("# flag --node-name")), "{t}");

    // `config show` is this machine's view: the defaults.
    let o = Command::new(WEFT).args(["config", "show", "--json"]).env("WEFT_TCP_ADR", "127.0.0.1:1").env_remove("WEFT_CONFIG").output().unwrap();
    assert!(o.status.success());
    let err = text(&o.stderr);
    assert_eq!(err.lines().filter(|l| l.contains("WEFT_TCP_ADR")).count(), 1, "{err}");
    let shown = json(&text(&o.stdout));
    assert!(shown.as_array().unwrap().iter().any(|e| e["key"] == "node.name" && e["value"] == "weft"));
    // Known non-key variables are not warned about.
    let o = Command::new(WEFT).args(["config", "show"]).env("WEFT_ADDR", "tcp://127.0.0.1:1").env("WEFT_PEERS", "1").env_remove("WEFT_CONFIG").output().unwrap();
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
}

#[test]
fn log_verify_takes_the_data_dir_or_its_log_dir() {
    let node = Node::start();
    node.ok(&["topic", "create", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.txt");
    std::fs::write(&file, "one\ntwo\n").unwrap();
    node.ok(&["produce", "v", "--file", file.to_str().unwrap()]);
    for d in [node.data_dir(), node.data_dir().join("log")] {
        let o = run(&["log", "verify", d.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).lines().any(|l| l.starts_with("ok") && l.contains("v/0/") && l.contains("2 records")), "{}", text(&o.stdout));
    }
    let o = run(&["log", "verify", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("neither a log directory nor a data directory"), "{}", text(&o.stderr));
}

#[test]
fn stats_leave_out_what_has_no_data_and_say_why() {
    let node = Node::start();
    let t = node.ok(&["stats"]);
    assert!(!t.lines().any(|l| l.trim_end().ends_with(" -1") || l.trim_end().ends_with(" -1.0")), "{t}");
    let full = node.ok(&["stats", "--full"]);
    assert!(full.contains("no gathered history yet") && full.contains("gathers every 300 s"), "{full}");
    let g = node.ok(&["stats", "--gathered"]);
    assert!(g.contains("no gathered history yet"), "{g}");
    assert_eq!(json(&node.ok(&["stats", "--full", "--json"])), serde_json::json!([]));
}

#[test]
fn negative_timestamps_and_zero_max_records_are_refused() {
    let node = Node::start();
    node.ok(&["topic", "create", "ts"]);
    let o = node.weft(&["call", "log.produce", r#"{"topic": "ts", "records": [{"value": [104, 105], "timestamp_ms": -5}]}"#]);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(text(&o.stderr).contains("timestamp_ms must be >= 0"), "{}", text(&o.stderr));
    assert_eq!(log_end(&node, "ts"), 0, "nothing written");
    node.ok(&["call", "log.produce", r#"{"topic": "ts", "records": [{"value": [104, 105], "timestamp_ms": 5}]}"#]);
    let o = node.weft(&["call", "log.fetch", r#"{"topic": "ts", "partition": 0, "offset": 0, "max_records": 0}"#]);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(text(&o.stderr).contains("max_records must be at least 1"), "{}", text(&o.stderr));
    let r = json(&node.ok(&["call", "log.fetch", r#"{"topic": "ts", "partition": 0, "offset": 0, "max_records": 1}"#]));
    assert_eq!(r["records"][0]["timestamp_ms"], 5);
    // The HTTP gateway says the same.
    let url = format!("http://127.0.0.1:{}/v1/topics/ts/partitions/0/records?offset=0&max_records=0", node.http_port);
    let o = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).output().unwrap();
    assert_eq!(text(&o.stdout), "400");
}

#[test]
fn tls_options_after_the_subcommand_for_every_client_group() {
    let tls_port = common::free_port();
    let node = Node::start_with(&["--enable", "tls", "--tls-addr", &format!("127.0.0.1:{tls_port}")], &[]);
    let ca = node.data_dir().join("tls/ca.pem");
    let (addr, ca) = (format!("tls://127.0.0.1:{tls_port}"), ca.to_str().unwrap().to_owned());
    for args in [
        vec!["topic", "list", "--json"],
        vec!["group", "list"],
        vec!["queue", "ls", "--json"],
        vec!["sender", "ls"],
        vec!["errors"],
        vec!["stats"],
        vec!["config", "running"],
    ] {
        let mut a = args.clone();
        a.extend(["--addr", &addr, "--ca", &ca]);
        let o = run(&a);
        assert!(o.status.success(), "weft {a:?}: {}", text(&o.stderr));
    }
    // Without the CA the node's development certificate is not trusted.
    let o = run(&["queue", "ls", "--addr", &addr, "--timeout-ms", "3000"]);
    assert!(!o.status.success());
}
