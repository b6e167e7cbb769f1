//! A PV backed by a topic, driven by our client and by p4p (pvxs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weft_bridge::{attach, PvTopicSpec, ValueKind};
use weft_log::{Log, LogConfig, Offset, PartitionId, ProduceRecord};
use weft_pva::client::Client;
use weft_pva::config::{ClientConfig, ServerConfig};
use weft_pva::proto::nt::path_ref;
use weft_pva::proto::Value;
use weft_pva::server::{Provider, Server};

async fn setup(dir: &std::path::Path) -> (Log, Server) {
    let log = Log::open(dir.join("log"), LogConfig { maintenance_interval: None, ..LogConfig::default() }).await.unwrap();
    let provider = Provider::new();
    let server = Server::start(ServerConfig::isolated(), provider).await.unwrap();
    (log, server)
}

async fn records(log: &Log, topic: &str) -> Vec<String> {
    let f = log.fetch(topic, PartitionId(0), Offset(0), 1 << 20, 1000, None).await.unwrap();
    f.decode().unwrap().into_iter().map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()).collect()
}

fn value(d: &weft_pva::client::PvData) -> Value {
    path_ref(&d.desc, &d.value, "value").map(|(v, _)| v.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_appends_and_records_reach_monitors() {
    let dir = tempfile::tempdir().unwrap();
    let (log, server) = setup(dir.path()).await;
    // An existing record becomes the PV's initial value.
    log.create_topic("temps", None).await.unwrap();
    log.produce("temps", vec![ProduceRecord::value(Bytes::from_static(b"20.5"))]).await.unwrap();
    let spec = PvTopicSpec { pv: "weft:bridge:temp".into(), topic: "temps".into(), partition: 0, kind: ValueKind::Double };
    let _bridge = attach(&weft_broker::plane::LocalPlane::shared(log.clone()), server.provider(), &spec).await.unwrap();

    let client = Client::new(ClientConfig::unicast(server.udp_addr())).await.unwrap();
    assert_eq!(value(&client.get("weft:bridge:temp", "").await.unwrap()), Value::F64(20.5));
    let mut mon = client.monitor("weft:bridge:temp", "", 0);

    // A put is a durable record.
    client.put("weft:bridge:temp", &[("value".into(), "42.25".into())]).await.unwrap();
    assert_eq!(records(&log, "temps").await, vec!["20.5", "42.25"]);

    // A record from anyone else becomes a monitor update.
    log.produce("temps", vec![ProduceRecord::value(Bytes::from_static(b"17"))]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = vec![];
    while !seen.contains(&Value::F64(17.0)) {
        assert!(Instant::now() < deadline, "monitor never saw 17: {seen:?}");
        if let Ok(Some(weft_pva::client::MonitorEvent::Data(d))) = tokio::time::timeout(Duration::from_secs(2), mon.next()).await {
            seen.push(value(&d));
        }
    }
    assert!(seen.contains(&Value::F64(42.25)), "the put was posted too: {seen:?}");
    assert_eq!(seen.iter().filter(|v| **v == Value::F64(42.25)).count(), 1, "the bridge's own record is not posted twice: {seen:?}");

    // A record that is not a number raises the alarm instead of vanishing.
    log.produce("temps", vec![ProduceRecord::value(Bytes::from_static(b"warm"))]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = client.get("weft:bridge:temp", "").await.unwrap();
        if path_ref(&d.desc, &d.value, "alarm.severity").map(|(v, _)| v.clone()) == Some(Value::I32(3)) {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A put of the wrong shape is refused and writes nothing.
    assert!(client.put("weft:bridge:temp", &[("value".into(), "not-a-number".into())]).await.is_err());
    assert_eq!(records(&log, "temps").await.len(), 4);
}

fn python() -> Option<PathBuf> {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: p4p interop needs WEFT_PEERS=1 (scripts/test sets it)");
        return None;
    }
    let p = std::env::var("WEFT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    assert!(p.exists(), "WEFT_PEERS=1 but {} is missing (scripts/peers/pva.sh makes it)", p.display());
    Some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_puts_and_gets_through_the_topic() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (log, server) = setup(dir.path()).await;
    let spec = PvTopicSpec { pv: "weft:bridge:sp".into(), topic: "setpoints".into(), partition: 0, kind: ValueKind::Double };
    let _bridge = attach(&weft_broker::plane::LocalPlane::shared(log.clone()), server.provider(), &spec).await.unwrap();
    let script = r#"
import sys, json, time
from p4p.client.thread import Context
ctx = Context('pva')
name = sys.argv[1]
ctx.put(name, 3.25)
first = ctx.get(name)
print(json.dumps({"after_put": float(first)}), flush=True)
# Wait for the value another producer appends to the topic.
deadline = time.time() + 15
while time.time() < deadline:
    v = float(ctx.get(name))
    if v == 99.5:
        print(json.dumps({"from_topic": v}), flush=True)
        break
    time.sleep(0.05)
ctx.close()
"#;
    let mut child = tokio::process::Command::new(py)
        .args(["-c", script, "weft:bridge:sp"])
        .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{}", server.udp_addr().port()))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["after_put"], 3.25);
    assert_eq!(records(&log, "setpoints").await, vec!["3.25"], "p4p's put is a record");
    log.produce("setpoints", vec![ProduceRecord::value(Bytes::from_static(b"99.5"))]).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(v["from_topic"], 99.5);
    assert!(child.wait().await.unwrap().success());
}
