//! Interop with the real ekosis 0.17 (only with WEFT_PEERS=1; then a missing
//! peer is a failure):
//! (a) ekosis' own client classes (shared/scripts/ekosis/eko_client.py) and
//!     command-line tools (`python -m ekosis.cli.stat|bem|log`) against Weft's
//!     ekosis listener serving the demo application;
//! (b) Weft's ekosis client and a Weft queued sender against the real ekosis
//!     server (shared/scripts/ekosis/eko_echo_server.py).
//!
//! Python: $WEFT_PYTHON, default <repo>/.venv/bin/python, else
//! /work/main/.venv/bin/python (install with scripts/peers/ekosis.sh). Scripts: $WEFT_EKOSIS_SCRIPTS, default
//! ../shared/scripts/ekosis beside the repository.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use weft_ekosis::{demo, AppInfo, ClientOptions, EkosisClient, EkosisConfig, EkosisOutbound, EkosisServer};
use weft_net::Endpoint;
use weft_queue::{Backoff, Manager, ManagerOptions, QueueOptions};
use weft_service::Service;

fn enabled(test: &str) -> bool {
    let on = std::env::var("WEFT_PEERS").as_deref() == Ok("1");
    if !on {
        // Written past libtest's capture so the skip shows in CI logs.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped {test}: set WEFT_PEERS=1 to run it against the real ekosis 0.17");
    }
    on
}

fn python() -> String {
    if let Ok(p) = std::env::var("WEFT_PYTHON") {
        return p;
    }
    // The venv scripts/peers/ekosis.sh makes in this checkout, else the
    // development machine's.
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if local.exists() { local.to_string_lossy().into_owned() } else { "/work/main/.venv/bin/python".into() }
}

fn scripts() -> PathBuf {
    std::env::var("WEFT_EKOSIS_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/scripts/ekosis"))
}

fn check_peer() {
    let py = python();
    let ok = std::process::Command::new(&py)
        .args(["-c", "import importlib.metadata as m; assert m.version('ekosis') == '0.17.0'"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "WEFT_PEERS=1 but {py} has no ekosis 0.17.0: run scripts/peers/ekosis.sh");
    assert!(scripts().join("eko_client.py").exists(), "ekosis scripts not found at {}", scripts().display());
}

struct Out {
    code: i32,
    stdout: String,
}

async fn py(args: &[&str]) -> Out {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(python()).args(args).current_dir(scripts()).stdin(Stdio::null()).output(),
    )
    .await
    .expect("python timed out")
    .expect("cannot run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!("python {args:?} -> {:?}\n{stdout}\n{}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    }
    Out { code: out.status.code().unwrap_or(-1), stdout }
}

async fn eko_client(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["eko_client.py"];
    all.extend_from_slice(args);
    let o = py(&all).await;
    let line = o.stdout.lines().last().unwrap_or_default().to_owned();
    (o.code, serde_json::from_str(&line).unwrap_or(Value::String(line)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ekosis_clients_and_tools_against_weft() {
    if !enabled("ekosis_clients_and_tools_against_weft") {
        return;
    }
    check_peer();
    let dir = tempfile::tempdir().unwrap();
    let (svc, manager) = demo::demo_service("eko_echo_server", &dir.path().join("queues"), Duration::from_secs(1)).unwrap();
    let handler = svc.into_handler();
    let cfg = EkosisConfig { app: AppInfo { name: "eko_echo_server".into(), instance: "0".into() }, ..EkosisConfig::default() };
    let server = EkosisServer::new(&handler, manager.clone(), cfg);
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap().to_string();
    let udp = server.bind_udp("127.0.0.1:0").await.unwrap().to_string();
    let uds_path = dir.path().join("weft.sock");
    server.bind_unix(&uds_path).await.unwrap();
    let uds = uds_path.to_str().unwrap().to_owned();

    // Exact bytes through ekosis' own client object.
    let o = py(&["eko_client.py", "tcp", &tcp, "echo", r#"{"message":"hello"}"#, "--raw", "--span-key", "0af7651916cd43dd8448eb211c80319c:0000000000000001"]).await;
    assert_eq!(o.code, 0);
    assert_eq!(
        o.stdout.trim_end(),
        r#"{"span_key":{"trace_id":"0af76519-16cd-43dd-8448-eb211c80319c","span_id":"0000000000000001"},"status":0,"data":{"message":"hello"}}"#
    );
    for (transport, addr) in [("tcp", &tcp), ("udp", &udp), ("uds", &uds)] {
        let (code, v) = eko_client(&[transport, addr, "echo", r#"{"message":"héllo ☃"}"#]).await;
        assert_eq!((code, &v["data"]["message"]), (0, &json!("héllo ☃")), "{transport}");
        let (code, v) = eko_client(&[transport, addr, "dice_roller.roll", r#"{"sides":6}"#]).await;
        assert_eq!(code, 0);
        let r = v["data"]["result"].as_i64().unwrap();
        assert!((1..=6).contains(&r));
        let (code, v) = eko_client(&[transport, addr, "dice_roller.guess"]).await;
        assert_eq!(code, 0, "{v}");
        let o = py(&["-m", "ekosis.cli.stat", "-st", transport, "-sd", addr, "-type", "current"]).await;
        assert_eq!(o.code, 0);
        assert!(o.stdout.contains("\"endpoint_data\"") && o.stdout.contains("\"buffered_endpoint_sizes\""), "{}", o.stdout);
    }
    // Persisted client (with its first-call race) and heartbeats.
    let (code, _) = eko_client(&["tcp", &tcp, "echo", r#"{"message":"p"}"#, "--persisted", "--repeat", "3", "--interval", "0.3", "--heartbeat", "0.2"]).await;
    assert_eq!(code, 0);
    let (code, _) = eko_client(&["uds", &uds, "echo", r#"{"message":"p"}"#, "--persisted"]).await;
    assert_eq!(code, 0);
    // Error statuses as ekosis exceptions.
    let (code, v) = eko_client(&["tcp", &tcp, "no.such.route"]).await;
    assert_eq!((code, v["status"].as_i64(), v["error"].as_str()), (1, Some(400), Some("RouteKeyUnknownException")));
    let (code, v) = eko_client(&["tcp", &tcp, "dice_roller.roll", r#"{"sides":0}"#]).await;
    assert_eq!((code, v["status"].as_i64()), (1, Some(600)));
    let (code, v) = eko_client(&["tcp", &tcp, "test.fail", r#"{"kind":"unhandled","message":"boom"}"#]).await;
    assert_eq!((code, v["status"].as_i64()), (1, Some(999)));
    let (code, v) = eko_client(&["tcp", &tcp, "eco.error_states.get"]).await;
    assert_eq!(code, 0);
    assert_eq!(v["data"]["errors"][0]["error_id"], "INVALID_SIDES");

    // Queued endpoint and its management through `ekosis.cli.bem`.
    let bem = |args: &[&str]| {
        let mut a = vec!["-m", "ekosis.cli.bem", "-st", "tcp", "-sd", tcp.as_str(), "-rk", "jobs.submit"];
        a.extend_from_slice(args);
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    async fn run(args: Vec<String>) -> Out {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        py(&refs).await
    }
    let (code, v) = eko_client(&["tcp", &tcp, "jobs.submit", r#"{"n":3}"#]).await;
    assert_eq!(code, 0);
    assert!(v["data"]["span_key"]["trace_id"].is_string());
    let (code, _) = eko_client(&["tcp", &tcp, "jobs.submit", r#"{"n":-1}"#, "--span-key", "534cb9fead4e446999e9d2502ac927e2:c775540f5cbeb774"]).await;
    assert_eq!(code, 0);
    let q = manager.endpoint("jobs.submit").unwrap().queue().clone();
    assert!(q.wait_idle(Duration::from_secs(5)).await);
    let sk = "534cb9fe-ad4e-4469-99e9-d2502ac927e2:c775540f5cbeb774";
    let o = run(bem(&["-e10"])).await;
    assert!(o.code == 0 && o.stdout.contains(sk), "{}", o.stdout);
    let o = run(bem(&["-ins", "-sk", sk])).await;
    assert!(o.code == 0 && o.stdout.contains("\"n\": -1") && o.stdout.contains("INSPECTING Error database entry"), "{}", o.stdout);
    let o = run(bem(&["-pp"])).await;
    assert!(o.stdout.contains("Buffered Endpoint[jobs.submit]: Paused PROCESSING.") && o.stdout.contains("\"processing_paused\": true"), "{}", o.stdout);
    let o = run(bem(&["-rp1", "-sk", sk])).await;
    assert!(o.code == 0 && o.stdout.contains("moved to incoming database"), "{}", o.stdout);
    assert_eq!(q.info().incoming, 1);
    let o = run(bem(&["-up"])).await;
    assert!(o.stdout.contains("UN-Paused PROCESSING."));
    assert!(q.wait_idle(Duration::from_secs(5)).await);
    let o = run(bem(&["-pop", "-sk", sk])).await;
    assert!(o.code == 0 && o.stdout.contains("POPPED"), "{}", o.stdout);
    let o = run(bem(&["-pr"])).await;
    assert!(o.stdout.contains("Paused RECEIVING."));
    let (code, v) = eko_client(&["tcp", &tcp, "jobs.submit", r#"{"n":1}"#]).await;
    assert_eq!((code, v["error"].as_str()), (1, Some("ServerBusyException")), "{v}");
    for flag in ["-ur", "-pa", "-ua", "-rpa", "-clr"] {
        let o = run(bem(&[flag])).await;
        assert_eq!(o.code, 0, "bem {flag}");
    }
    let o = run(bem(&[])).await;
    assert!(o.stdout.contains("Data retrieved."));
    let o = py(&["-m", "ekosis.cli.bem", "-st", "udp", "-sd", &udp, "-rk", "nope"]).await;
    assert!(o.stdout.contains("No queue for route key: [nope]"), "{}", o.stdout);
    let o = py(&["-m", "ekosis.cli.log", "-st", "uds", "-sd", &uds, "-l", "info", "-b", "0"]).await;
    assert!(o.code == 0 && o.stdout.contains("New Log Level requested: [info]"), "{}", o.stdout);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let o = py(&["-m", "ekosis.cli.stat", "-st", "tcp", "-sd", &tcp, "-type", "full"]).await;
    assert!(o.code == 0 && o.stdout.contains("\"call_count\""), "{}", o.stdout);
    server.shutdown(Duration::from_secs(1)).await;
    manager.shutdown(Duration::from_secs(1)).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_client_and_sender_against_ekosis() {
    if !enabled("weft_client_and_sender_against_ekosis") {
        return;
    }
    check_peer();
    let dir = tempfile::tempdir().unwrap();
    let (tp, up) = (free_port(), free_port());
    let tcp = format!("127.0.0.1:{tp}");
    let udp = format!("127.0.0.1:{up}");
    let uds = dir.path().join("eko.sock");
    let mut child = Command::new(python())
        .arg(scripts().join("eko_echo_server.py"))
        .args(["--state-dir", dir.path().join("state").to_str().unwrap(), "--tcp", &tcp, "--udp", &udp, "--uds", uds.to_str().unwrap(), "--stat-period", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start eko_echo_server.py");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.expect("ekosis server not READY in 60 s").unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));

    let c = EkosisClient::new(Endpoint::Tcp(tcp.clone()), ClientOptions::default());
    assert_eq!(c.call("echo", &json!({"message": "hi ☃"})).await.unwrap(), json!({"message": "hi ☃"}));
    c.heartbeat().await.unwrap();
    let e = c.call("no.such.route", &json!({})).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("Unknown route key 'no.such.route'"));
    let e = c.call("dice_roller.roll", &json!({"sides": 0})).await.unwrap_err();
    assert_eq!(e.status(), Some(600));
    let sk = weft_ekosis::new_span_key();
    let r = c.call_with("jobs.submit", &sk, &json!({"n": 2})).await.unwrap();
    assert_eq!((r.status, r.span_key), (0, Some(sk)));
    assert_eq!(r.data, json!({"span_key": sk.to_json()}));
    let d = c.call("eco.buffered_handler.data", &json!({"queue_route_key": "jobs.submit"})).await.unwrap();
    assert_eq!(d["message"], "Buffered Endpoint[jobs.submit]: Data retrieved.");

    let u = EkosisClient::new(Endpoint::Udp(udp.clone()), ClientOptions::default());
    let r = u.call("dice_roller.roll", &json!({"sides": 6})).await.unwrap();
    assert!((1..=6).contains(&r["result"].as_i64().unwrap()));
    u.heartbeat().await.unwrap();
    let p = EkosisClient::new(
        Endpoint::Unix(uds.clone()),
        ClientOptions { persisted: true, heartbeat_period: Some(Duration::from_millis(100)), ..ClientOptions::default() },
    );
    for i in 0..3 {
        assert_eq!(p.call("echo", &json!({"message": i.to_string()})).await.unwrap()["message"], i.to_string());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let s = c.call("eco.statistics.get", &json!({"type": "current"})).await.unwrap();
    assert!(s["statistics"]["endpoint_data"]["echo"]["call_count"].as_u64().unwrap() >= 1);

    // A Weft queued sender delivering to the ekosis server.
    let svc = Service::new("sender-side");
    let manager = Manager::new(&dir.path().join("weft-queues"), &svc, ManagerOptions::default()).unwrap();
    let opts = QueueOptions { max_retries: 0, backoff: Backoff { initial_ms: 10, max_ms: 100, multiplier: 2.0 }, ..QueueOptions::default() };
    let out: Arc<EkosisOutbound> = EkosisOutbound::new(Endpoint::Tcp(tcp.clone()), ClientOptions::default());
    let echo = manager.queued_sender("echo", "echo", out.clone(), opts.clone()).unwrap();
    let roll = manager.queued_sender("dice_roller.roll", "dice_roller.roll", out, opts).unwrap();
    for i in 0..5 {
        echo.send(&json!({"message": format!("m{i}")})).await.unwrap();
    }
    roll.send(&json!({"sides": 0})).await.unwrap();
    assert!(echo.queue().wait_idle(Duration::from_secs(10)).await);
    assert!(roll.queue().wait_idle(Duration::from_secs(10)).await);
    assert_eq!((echo.info().processed, echo.info().errors), (5, 0));
    assert_eq!(roll.info().errors, 1);
    let uid = roll.queue().first_errors(1).remove(0);
    let item = roll.queue().inspect(&uid).unwrap();
    assert!(item.reason.contains("status 600"), "{}", item.reason);
    manager.shutdown(Duration::from_secs(1)).await;

    let pid = child.id().unwrap();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("ekosis server did not stop").unwrap();
    assert!(status.success(), "{status:?}");
}
