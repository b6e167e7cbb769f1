//! Issue #17 (pvAccess seed list): process actions, cancel, server
//! messages, flow control, echo, beacons and access control, each against
//! our own client and, where a peer exposes it, p4p (pvxs) or pvapy.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{json, peers_enabled, run_py};
use weft_pva::client::Client;
use weft_pva::config::{ClientConfig, ServerConfig};
use weft_pva::proto::Value;
use weft_pva::proto::nt::path_ref;
use weft_pva::server::demo::{PROCESSED, serve_demo};

fn value_i64(d: &weft_pva::client::PvData) -> i64 {
    path_ref(&d.desc, &d.value, "value").and_then(|(v, _)| v.as_i64()).unwrap()
}

#[tokio::test]
async fn process_runs_the_pv_action() {
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    let ch = c.channel(PROCESSED).await.unwrap();
    let t = Duration::from_secs(5);
    assert_eq!(value_i64(&ch.get("", t).await.unwrap()), 0);
    ch.process(t).await.unwrap();
    ch.process(t).await.unwrap();
    assert_eq!(value_i64(&ch.get("", t).await.unwrap()), 2);
    // A PV without an action: OK, and nothing changes.
    let sp = c.channel(weft_pva::server::demo::SETPOINT).await.unwrap();
    let before = sp.get("", t).await.unwrap();
    sp.process(t).await.unwrap();
    let after = sp.get("", t).await.unwrap();
    assert_eq!(path_ref(&before.desc, &before.value, "value"), path_ref(&after.desc, &after.value, "value"));
    assert_eq!(path_ref(&after.desc, &after.value, "value").map(|x| x.0.clone()), Some(Value::F64(0.0)));
    s.shutdown().await;
}

#[tokio::test]
async fn p4p_put_with_process_runs_the_action() {
    if !peers_enabled("p4p_put_with_process_runs_the_action") {
        return;
    }
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let code = format!(
        r#"
import json
from p4p.client.thread import Context
ctx = Context("pva")
ctx.put("{PROCESSED}", 10, timeout=5, process=True)
a = int(ctx.get("{PROCESSED}", timeout=5))
ctx.put("{PROCESSED}", 20, timeout=5)
b = int(ctx.get("{PROCESSED}", timeout=5))
print(json.dumps({{"with_process": a, "without": b}}))
"#
    );
    let j = json(&run_py(&code, s.udp_addr().port(), &[]).await);
    assert_eq!(j["with_process"], 11, "put 10 then the process action adds one");
    assert_eq!(j["without"], 20);
    s.shutdown().await;
}

fn whoami() -> String {
    let o = std::process::Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test]
async fn allow_list_refuses_other_addresses() {
    use std::sync::atomic::Ordering;
    // Only 10.0.0.0/8 admitted: this loopback client is neither answered nor served.
    let cfg = ServerConfig::isolated().with_allow(&["10.0.0.0/8"]).unwrap();
    let s = serve_demo(cfg).await.unwrap();
    let c = Client::new(ClientConfig { timeout: Duration::from_millis(500), ..ClientConfig::unicast(s.udp_addr()) }).await.unwrap();
    let e = c.get(weft_pva::server::demo::SETPOINT, "").await.unwrap_err();
    assert!(matches!(e, weft_pva::Error::NotFound(_)), "{e}");
    assert!(s.stats().searches_refused.load(Ordering::Relaxed) >= 1);
    let e = weft_pva::client::ClientConn::connect(s.tcp_addr(), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(e, weft_pva::Error::Closed(_) | weft_pva::Error::Io(_)), "{e}");
    assert_eq!(s.stats().connections_refused.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats().connections.load(Ordering::Relaxed), 0);
    s.shutdown().await;
    // The default admits loopback.
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    c.get(weft_pva::server::demo::SETPOINT, "").await.unwrap();
    s.shutdown().await;
}

fn access_rules(user: &str) -> String {
    format!(
        r#"
default = "read"
[[rule]]
pv = "weft:demo:table"
access = "none"
[[rule]]
pv = "weft:demo:set*"
users = ["{user}"]
hosts = ["127.0.0.0/8"]
access = "write"
[[rule]]
pv = "weft:demo:enum"
hosts = ["10.0.0.0/8"]
access = "write"
"#
    )
}

fn access_server_config(user: &str) -> (tempfile::TempDir, ServerConfig) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("access.toml");
    std::fs::write(&f, access_rules(user)).unwrap();
    let cfg = ServerConfig::isolated().with_access_file(f.to_str().unwrap()).unwrap();
    (dir, cfg)
}

#[tokio::test]
async fn access_rules_enforced_for_our_client() {
    use std::sync::atomic::Ordering;
    // Our client sends `ca` credentials with $USER.
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| whoami());
    let (_dir, cfg) = access_server_config(&user);
    let s = serve_demo(cfg).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    let set = |v: &str| vec![(String::new(), v.to_string())];
    c.put(weft_pva::server::demo::SETPOINT, &set("3.5")).await.unwrap();
    let e = c.put(weft_pva::server::demo::ENUM, &set("2")).await.unwrap_err();
    assert!(e.to_string().contains("access denied: write access to weft:demo:enum"), "{e}");
    c.get(weft_pva::server::demo::ENUM, "").await.unwrap();
    let e = c.get(weft_pva::server::demo::TABLE, "").await.unwrap_err();
    assert!(e.to_string().contains("access denied"), "{e}");
    let e = c.channel(PROCESSED).await.unwrap().process(Duration::from_secs(5)).await.unwrap_err();
    assert!(e.to_string().contains("access denied"), "{e}");
    assert!(s.stats().access_denied.load(Ordering::Relaxed) >= 3);
    s.shutdown().await;
}

#[tokio::test]
async fn access_rules_enforced_for_p4p_and_pvapy() {
    if !peers_enabled("access_rules_enforced_for_p4p_and_pvapy") {
        return;
    }
    let (_dir, cfg) = access_server_config(&whoami());
    let s = serve_demo(cfg).await.unwrap();
    let code = r#"
import json
from p4p.client.thread import Context
ctx = Context("pva")
out = {}
ctx.put("weft:demo:setpoint", 6.5, timeout=5)
out["setpoint"] = float(ctx.get("weft:demo:setpoint", timeout=5))
try:
    ctx.put("weft:demo:enum", {"value.index": 3}, timeout=5)
    out["enum_put"] = "accepted"
except Exception as e:
    out["enum_put"] = type(e).__name__ + ": " + str(e)
out["enum_index"] = int(ctx.get("weft:demo:enum", timeout=5).raw.value.index)
try:
    ctx.get("weft:demo:table", timeout=2)
    out["table"] = "read"
except Exception as e:
    out["table"] = type(e).__name__
print(json.dumps(out))
"#;
    let j = json(&run_py(code, s.udp_addr().port(), &[]).await);
    assert_eq!(j["setpoint"], 6.5);
    let refused = j["enum_put"].as_str().unwrap();
    assert!(refused.starts_with("RemoteError") && refused.contains("access denied: write access to weft:demo:enum"), "{refused}");
    assert_eq!(j["enum_index"], 1, "the refused put changed nothing");
    assert_ne!(j["table"], "read");
    let code = r#"
import json, pvaccess
out = {}
try:
    pvaccess.Channel("weft:demo:enum").put(pvaccess.PvObject({"value": {"index": pvaccess.INT}}, {"value": {"index": 3}}), "field(value.index)")
    out["enum_put"] = "accepted"
except Exception as e:
    out["enum_put"] = str(e)
pvaccess.Channel("weft:demo:setpoint").put(7.25)
out["setpoint"] = pvaccess.Channel("weft:demo:setpoint").get().getDouble("value")
print(json.dumps(out))
"#;
    let j = json(&run_py(code, s.udp_addr().port(), &[]).await);
    assert!(j["enum_put"].as_str().unwrap().contains("access denied"), "{}", j["enum_put"]);
    assert_eq!(j["setpoint"], 7.25);
    s.shutdown().await;
}
