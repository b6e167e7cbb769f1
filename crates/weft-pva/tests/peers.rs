//! Interop against real peers (run only with WEFT_PEERS=1; then a missing
//! peer is a failure): p4p (pvxs) and pvapy (pvAccessCPP) clients against
//! the Weft server, and the Weft client against their servers.
//!
//! Python: WEFT_PYTHON (default <repo>/.venv/bin/python, made by
//! scripts/peers/pva.sh). Peer servers: ../shared/scripts/pva/ (or
//! WEFT_PVA_SCRIPTS).

#![allow(clippy::unwrap_used, clippy::too_many_arguments)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use weft_pva::client::{Client, MonitorEvent, PvData};
use weft_pva::config::{ClientConfig, ServerConfig};
use weft_pva::proto::nt::{Builder, nt_uri, path_ref};
use weft_pva::proto::{ScalarArray, ScalarType, Value};
use weft_pva::server::demo::serve_demo;

fn enabled(test: &str) -> bool {
    if std::env::var("WEFT_PEERS").as_deref() == Ok("1") {
        return true;
    }
    println!("skipped {test}: set WEFT_PEERS=1 to run interop tests against p4p/pvapy");
    false
}

fn repo() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Canonical, so a venv python finds its pyvenv.cfg even through symlinks.
    std::fs::canonicalize(&p).unwrap_or(p)
}

fn python() -> PathBuf {
    let p = std::env::var("WEFT_PYTHON").map(PathBuf::from).unwrap_or_else(|_| repo().join(".venv/bin/python"));
    assert!(p.exists(), "WEFT_PEERS=1 but python {} is missing (run scripts/peers/pva.sh)", p.display());
    p
}

fn scripts() -> PathBuf {
    let p = std::env::var("WEFT_PVA_SCRIPTS")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("WEFT_SHARED").map(|s| PathBuf::from(s).join("scripts/pva")))
        .unwrap_or_else(|_| repo().join("../shared/scripts/pva"));
    assert!(p.join("peer.py").exists(), "peer scripts missing at {}", p.display());
    p
}

fn here(f: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(f)
}

fn free_ports() -> (u16, u16) {
    let t = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    (t.local_addr().unwrap().port(), u.local_addr().unwrap().port())
}

/// Run a python client script against a server whose UDP search port is `udp`; parse its JSON.
async fn run_client_script(script: &str, udp: u16) -> serde_json::Value {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(python())
            .arg(here(script))
            .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}"))
            .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
            .env_remove("EPICS_PVA_NAME_SERVERS")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python client timed out")
    .expect("python client failed to start");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
}

#[tokio::test]
async fn p4p_client_against_weft_server() {
    if !enabled("p4p_client_against_weft_server") {
        return;
    }
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let j = run_client_script("p4p_client.py", s.udp_addr().port()).await;
    assert_eq!(j["counter_id"], "epics:nt/NTScalar:1.0");
    assert_eq!(j["waveform_id"], "epics:nt/NTScalarArray:1.0");
    assert_eq!(j["waveform_len"], 1000);
    assert_eq!(j["enum"]["choices"], serde_json::json!(["Off", "On", "Standby", "Fault"]));
    assert_eq!(j["table_id"], "epics:nt/NTTable:1.0");
    assert_eq!(j["table_name"], serde_json::json!(["alpha", "beta", "gamma"]));
    assert_eq!(j["setpoint_after_put"], 4.25);
    assert_eq!(j["enum_after_put"], 2);
    assert_eq!(j["selected_value"], 4.25);
    assert_eq!(j["readonly_put"], "refused");
    assert_eq!(j["rpc_sum"], 6.5);
    let m: Vec<i64> = j["monitor_updates"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    assert_eq!(m.len(), 5);
    assert!(m.windows(2).all(|w| w[1] == w[0] + 1), "{m:?}");
    assert_eq!(j["setpoint_monitor"].as_array().unwrap().last().unwrap(), 7.5);
    assert_eq!(j["many_monitors"], 20);
    assert_eq!(j["pipeline_updates"], 10);
    assert_eq!(j["image_id"], "epics:nt/NTNDArray:1.0");
    assert_eq!(j["image_shape"], serde_json::json!([64, 64]));
    let expect: u64 = (0..64u64 * 64).map(|i| (i % 64) * (i / 64)).sum();
    assert_eq!(j["image_sum"].as_u64(), Some(expect));
    s.shutdown().await;
}

#[tokio::test]
async fn pvapy_client_against_weft_server() {
    if !enabled("pvapy_client_against_weft_server") {
        return;
    }
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let j = run_client_script("pvapy_client.py", s.udp_addr().port()).await;
    assert!(j["counter"].as_i64().unwrap() >= 0);
    assert_eq!(j["getfield_keys"], serde_json::json!(["alarm", "control", "display", "timeStamp", "value", "valueAlarm"]));
    assert_eq!(j["waveform_len"], 1000);
    assert_eq!(j["enum_choices"], serde_json::json!(["Off", "On", "Standby", "Fault"]));
    assert_eq!(j["table_labels"], serde_json::json!(["Name", "Position", "Count"]));
    assert_eq!(j["setpoint_after_put"], 6.5);
    assert_eq!(j["putget"], 1.25);
    assert_eq!(j["rpc_sum"], 3.5);
    assert_eq!(j["monitor_updates"].as_array().unwrap().len(), 5);
    assert_eq!(j["big_len"], 1_000_000);
    assert_eq!(j["big_last"], 999_999.0);
    assert_eq!(j["image_dims"], serde_json::json!([64, 64]));
    s.shutdown().await;
}

struct Peer {
    child: Child,
}

impl Peer {
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM lets the peer close its sockets; then reap it.
            let _ = Command::new("kill").arg(pid.to_string()).status().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

async fn wait_ready(child: &mut Child) {
    let stdout = child.stdout.take().expect("peer stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("READY") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(ready, Ok(true)), "peer did not become ready");
    // Keep draining stdout so the peer never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

async fn start_p4p(tcp: u16, udp: u16, array_size: usize) -> Peer {
    let mut child = Command::new(python())
        .arg(scripts().join("peer.py"))
        .args(["--tcp-port", &tcp.to_string(), "--udp-port", &udp.to_string(), "--prefix", "p4p:"])
        .args(["--array-size", &array_size.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start peer.py");
    wait_ready(&mut child).await;
    Peer { child }
}

async fn start_pvapy(tcp: u16, udp: u16, array_size: usize) -> Peer {
    start_pvapy_script(scripts().join("pvapy_peer.py"), tcp, udp, array_size).await
}

async fn start_pvapy_script(script: PathBuf, tcp: u16, udp: u16, array_size: usize) -> Peer {
    let mut child = Command::new(python())
        .arg(script)
        .args(["X:", "10", &array_size.to_string()])
        .env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_SERVER_PORT", tcp.to_string())
        .env("EPICS_PVA_BROADCAST_PORT", udp.to_string())
        .env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start pvapy_peer.py");
    wait_ready(&mut child).await;
    Peer { child }
}

fn f(d: &PvData, p: &str) -> Value {
    path_ref(&d.desc, &d.value, p).map(|(v, _)| v.clone()).unwrap_or_else(|| panic!("no {p} in {}", d.desc))
}

async fn client_for(udp: u16) -> Client {
    let mut cfg = ClientConfig::unicast(SocketAddr::from((Ipv4Addr::LOCALHOST, udp)));
    cfg.timeout = Duration::from_secs(10);
    Client::new(cfg).await.unwrap()
}

async fn next_data(m: &mut weft_pva::client::Monitor) -> PvData {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), m.next()).await.expect("monitor stalled").expect("monitor ended") {
            MonitorEvent::Data(d) => return d,
            _ => continue,
        }
    }
}

/// The operations both peer servers support, with their PV names under `p`.
async fn common_ops(c: &Client, p: &str, big: usize, pipeline: bool) {
    let d = c.get(&format!("{p}scalar"), "").await.unwrap();
    assert_eq!(d.desc.id(), "epics:nt/NTScalar:1.0");
    assert!(matches!(f(&d, "value"), Value::F64(_)));
    let d = c.get(&format!("{p}int"), "").await.unwrap();
    assert_eq!(f(&d, "value"), Value::I32(42));
    let d = c.get(&format!("{p}string"), "").await.unwrap();
    assert_eq!(f(&d, "value"), Value::String("hello".into()));
    let d = c.get(&format!("{p}enum"), "").await.unwrap();
    assert_eq!(d.desc.id(), "epics:nt/NTEnum:1.0");
    assert_eq!(f(&d, "value.choices"), Value::Array(ScalarArray::String(vec!["Off".into(), "On".into(), "Fault".into()])));
    let d = c.get(&format!("{p}table"), "").await.unwrap();
    assert_eq!(d.desc.id(), "epics:nt/NTTable:1.0");
    // Big array (pvAccessCPP segments it).
    let d = c.get(&format!("{p}array"), "").await.unwrap();
    match f(&d, "value") {
        Value::Array(ScalarArray::F64(v)) => {
            assert_eq!(v.len(), big);
            assert_eq!(v.get(big - 1).copied(), Some((big - 1) as f64));
        }
        other => panic!("{other:?}"),
    }
    // Puts of every normative type.
    c.put(&format!("{p}int"), &[("value".into(), "7".into())]).await.unwrap();
    assert_eq!(f(&c.get(&format!("{p}int"), "").await.unwrap(), "value"), Value::I32(7));
    c.put(&format!("{p}string"), &[("value".into(), "weft".into())]).await.unwrap();
    assert_eq!(f(&c.get(&format!("{p}string"), "").await.unwrap(), "value"), Value::String("weft".into()));
    c.put(&format!("{p}enum"), &[("value".into(), "Fault".into())]).await.unwrap();
    assert_eq!(f(&c.get(&format!("{p}enum"), "").await.unwrap(), "value.index"), Value::I32(2));
    c.put(&format!("{p}array"), &[("value".into(), "[1.5, 2.5]".into())]).await.unwrap();
    assert_eq!(f(&c.get(&format!("{p}array"), "").await.unwrap(), "value"), Value::Array(ScalarArray::F64(vec![1.5, 2.5])));
    // Big put (1e6 doubles).
    let big_text = format!("[{}]", (0..big).map(|i| (i % 1000).to_string()).collect::<Vec<_>>().join(","));
    c.put(&format!("{p}array"), &[("value".into(), big_text)]).await.unwrap();
    match f(&c.get(&format!("{p}array"), "").await.unwrap(), "value") {
        Value::Array(ScalarArray::F64(v)) => assert_eq!(v.len(), big),
        other => panic!("{other:?}"),
    }
    // get-field
    let t = c.get_field(&format!("{p}enum"), "").await.unwrap();
    assert_eq!(t.id(), "epics:nt/NTEnum:1.0");
    // rpc (NTURI a+b)
    let (d, v) = Builder::new(nt_uri(&[("a", ScalarType::F64), ("b", ScalarType::F64)]))
        .with("scheme", Value::String("pva".into()))
        .with("path", Value::String(format!("{p}rpc")))
        .with("query.a", Value::F64(1.25))
        .with("query.b", Value::F64(2.0))
        .build();
    let (rd, rv) = c.rpc(&format!("{p}rpc"), (d, v)).await.unwrap();
    assert_eq!(path_ref(&rd, &rv, "value").unwrap().0, &Value::F64(3.25));
    // monitor (plain and pipelined) of the counting scalar
    let windows: &[u32] = if pipeline { &[0, 4] } else { &[0] };
    for &q in windows {
        let mut m = c.monitor(&format!("{p}scalar"), "field(value)", q);
        let a = f(&next_data(&mut m).await, "value").as_f64().unwrap();
        let mut b = a;
        for _ in 0..3 {
            b = f(&next_data(&mut m).await, "value").as_f64().unwrap();
        }
        assert!(b > a, "monitor must see the counter advance ({a} -> {b})");
    }
    // many monitors at once
    let mut ms: Vec<_> = (0..20).map(|_| c.monitor(&format!("{p}scalar"), "", 0)).collect();
    for m in ms.iter_mut() {
        next_data(m).await;
        next_data(m).await;
    }
}

#[tokio::test]
async fn weft_client_against_p4p_server() {
    if !enabled("weft_client_against_p4p_server") {
        return;
    }
    let big = 1_000_000;
    let (tcp, udp) = free_ports();
    let peer = start_p4p(tcp, udp, big).await;
    let c = client_for(udp).await;
    common_ops(&c, "p4p:", big, true).await;
    // echo RPC returns the argument
    let arg = Builder::new(weft_pva::proto::FieldDesc::structure("", vec![("x", weft_pva::proto::FieldDesc::Scalar(ScalarType::I32))]))
        .with("x", Value::I32(5))
        .build();
    let (_, v) = c.rpc("p4p:echo", arg.clone()).await.unwrap();
    assert_eq!(v, arg.1);
    // TCP name-server search
    let ns = Client::new(ClientConfig {
        search_addrs: vec![],
        name_servers: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, tcp))],
        udp_port: udp,
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(f(&ns.get("p4p:int", "").await.unwrap(), "value"), Value::I32(7));
    // Server restart during a monitor.
    let mut m = c.monitor("p4p:scalar", "", 0);
    next_data(&mut m).await;
    peer.stop().await;
    loop {
        if let Some(MonitorEvent::Disconnected) = tokio::time::timeout(Duration::from_secs(20), m.next()).await.unwrap() {
            break;
        }
    }
    let peer2 = start_p4p(tcp, udp, 10).await;
    next_data(&mut m).await;
    peer2.stop().await;
}

#[tokio::test]
async fn weft_client_against_pvapy_server() {
    if !enabled("weft_client_against_pvapy_server") {
        return;
    }
    let big = 1_000_000;
    let (tcp, udp) = free_ports();
    let peer = start_pvapy(tcp, udp, big).await;
    let c = client_for(udp).await;
    // pvapy_peer's int/string/array PV names match peer.py's; the table has 2 columns.
    // Pipelined monitors are checked against pvxs only: pvDatabase re-sends
    // the same element after an ack (see docs/pva.md).
    common_ops(&c, "X:", big, false).await;
    // PUT_GET, ARRAY and PROCESS (pvDatabase implements them; pvxs does not).
    let pg = c.put_get("X:int", &[("value".into(), "11".into())], "field(value)").await.unwrap();
    assert_eq!(f(&pg, "value"), Value::I32(11));
    let ch = c.channel("X:array").await.unwrap();
    c.put("X:array", &[("value".into(), "[5,6,7,8]".into())]).await.unwrap();
    let part = ch.array_get(1, 2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(part, Value::Array(ScalarArray::F64(vec![6.0, 7.0])));
    ch.array_put(2, Value::Array(ScalarArray::F64(vec![70.0, 80.0])), Duration::from_secs(10)).await.unwrap();
    let all = ch.array_get(0, 0, Duration::from_secs(10)).await.unwrap();
    assert_eq!(all, Value::Array(ScalarArray::F64(vec![5.0, 6.0, 70.0, 80.0])));
    ch.array_set_length(2, Duration::from_secs(10)).await.unwrap();
    let all = ch.array_get(0, 0, Duration::from_secs(10)).await.unwrap();
    assert_eq!(all, Value::Array(ScalarArray::F64(vec![5.0, 6.0])));
    ch.process(Duration::from_secs(10)).await.unwrap();
    // Server restart during a monitor.
    let mut m = c.monitor("X:scalar", "", 0);
    next_data(&mut m).await;
    peer.stop().await;
    loop {
        if let Some(MonitorEvent::Disconnected) = tokio::time::timeout(Duration::from_secs(20), m.next()).await.unwrap() {
            break;
        }
    }
    let peer2 = start_pvapy(tcp, udp, 8).await;
    next_data(&mut m).await;
    peer2.stop().await;
}

#[tokio::test]
async fn p4p_monitor_survives_weft_server_restart() {
    if !enabled("p4p_monitor_survives_weft_server_restart") {
        return;
    }
    let (tcp, udp) = free_ports();
    let cfg = ServerConfig { tcp_port: tcp, udp_port: udp, tcp_port_fallback: false, ..ServerConfig::isolated() };
    let s = serve_demo(cfg.clone()).await.unwrap();
    let mut child = Command::new(python())
        .arg(here("p4p_restart.py"))
        .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}"))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start p4p_restart.py");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(first.as_deref(), Some("FIRST"));
    s.shutdown().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s2 = serve_demo(cfg).await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await.unwrap().unwrap().unwrap_or_default();
    let j: serde_json::Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{last:?}: {e}"));
    assert_eq!(j["ok"], true, "{j}");
    assert!(j["disconnects"].as_u64().unwrap() >= 1, "{j}");
    let _ = child.wait().await;
    s2.shutdown().await;
}

#[tokio::test]
async fn weft_and_pvxs_servers_share_a_udp_port() {
    if !enabled("weft_and_pvxs_servers_share_a_udp_port") {
        return;
    }
    let (tcp, udp) = free_ports();
    let peer = start_p4p(tcp, udp, 10).await;
    let s = serve_demo(ServerConfig { udp_port: udp, ..ServerConfig::isolated() }).await.unwrap();
    // Both clients must find PVs of both servers through the one shared port,
    // whichever socket the kernel hands the unicast search to (ORIGIN_TAG forwarding).
    let c = client_for(udp).await;
    for _ in 0..3 {
        assert_eq!(f(&c.get("p4p:int", "").await.unwrap(), "value"), Value::I32(42));
        assert!(matches!(f(&c.get(weft_pva::server::demo::COUNTER, "").await.unwrap(), "value"), Value::I32(_)));
    }
    let out = Command::new(python())
        .arg("-c")
        .arg("from p4p.client.thread import Context\nc=Context('pva')\nprint(int(c.get('p4p:int', timeout=5)), int(c.get('weft:demo:setpoint', timeout=5)))\nc.close()")
        .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}"))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42 0");
    s.shutdown().await;
    peer.stop().await;
}

#[tokio::test]
async fn weft_client_decodes_pvaccesscpp_cached_types_inside_data() {
    if !enabled("weft_client_decodes_pvaccesscpp_cached_types_inside_data") {
        return;
    }
    // pvAccessCPP sends the structures held by variant fields through its type
    // cache (0xFD, then 0xFE) inside get/monitor data, not only in FieldDescs.
    let (tcp, udp) = free_ports();
    let peer = start_pvapy_script(here("pvapy_any_server.py"), tcp, udp, 0).await;
    let c = client_for(udp).await;
    for _ in 0..3 {
        let d = c.get("X:any", "").await.unwrap();
        let j = weft_pva::format::to_json(&d.desc, &d.value);
        assert_eq!(j["value"]["s"], "x", "{j}");
        assert_eq!(j["other"]["a"].as_i64().unwrap(), j["value"]["a"].as_i64().unwrap() + 1, "{j}");
    }
    let mut m = c.monitor("X:any", "", 0);
    for _ in 0..4 {
        let d = next_data(&mut m).await;
        let j = weft_pva::format::to_json(&d.desc, &d.value);
        assert_eq!(j["other"]["s"], "y", "{j}");
    }
    peer.stop().await;
}

#[tokio::test]
async fn p4p_and_pvapy_clients_use_the_weft_server_as_name_server() {
    if !enabled("p4p_and_pvapy_clients_use_the_weft_server_as_name_server") {
        return;
    }
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let scripts = [
        "from p4p.client.thread import Context\nc=Context('pva')\nprint(int(c.get('weft:demo:enum', timeout=5).raw.value.index))\nc.close()",
        "import pvaccess as pva\nprint(pva.Channel('weft:demo:enum').get()['value']['index'])",
    ];
    for code in scripts {
        // TCP search only: pvxs sends it big-endian inside a little-endian connection.
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(python())
                .arg("-c")
                .arg(code)
                .env("EPICS_PVA_NAME_SERVERS", s.tcp_addr().to_string())
                .env("EPICS_PVA_ADDR_LIST", "")
                .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{code}");
    }
    s.shutdown().await;
}
