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
