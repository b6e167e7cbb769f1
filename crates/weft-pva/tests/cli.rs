//! The `weft pv` command surface against the demo server (smoke: every
//! command completes and reports errors as errors).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use weft_pva::cli::{PvCommand, run_with};
use weft_pva::config::{ClientConfig, ServerConfig};
use weft_pva::server::demo::{self, serve_demo};

#[tokio::test]
async fn every_pv_command_runs_against_the_demo_server() {
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let cfg = Some(ClientConfig::unicast(s.udp_addr()));
    let run = |cmd: PvCommand| {
        let cfg = cfg.clone();
        async move { tokio::time::timeout(Duration::from_secs(20), run_with(cmd, cfg)).await.expect("command hung") }
    };
    run(PvCommand::Get { names: vec![demo::COUNTER.into(), demo::TABLE.into()], request: String::new(), verbose: false, json: false, timeout: 5.0 }).await.unwrap();
    run(PvCommand::Get { names: vec![demo::IMAGE.into()], request: String::new(), verbose: true, json: true, timeout: 5.0 }).await.unwrap();
    run(PvCommand::Put { name: demo::SETPOINT.into(), values: vec!["1.5".into()], json: false, timeout: 5.0 }).await.unwrap();
    run(PvCommand::Put { name: demo::ENUM.into(), values: vec!["value=Standby".into()], json: true, timeout: 5.0 }).await.unwrap();
    assert!(run(PvCommand::Put { name: demo::COUNTER.into(), values: vec!["1".into()], json: false, timeout: 5.0 }).await.is_err());
    run(PvCommand::Monitor { names: vec![demo::COUNTER.into()], request: String::new(), count: Some(3), pipeline: 4, verbose: false, json: true, timeout: 5.0 }).await.unwrap();
    run(PvCommand::Info { names: vec![demo::ENUM.into()], json: false, timeout: 5.0 }).await.unwrap();
    run(PvCommand::Call { name: demo::ADD.into(), args: vec!["a=1".into(), "b=2".into()], json: true, timeout: 5.0 }).await.unwrap();
    run(PvCommand::List { server: Some(s.tcp_addr().to_string()), timeout: 3.0, json: false }).await.unwrap();
    assert!(run(PvCommand::Get { names: vec!["no:such:pv".into()], request: String::new(), verbose: false, json: false, timeout: 0.5 }).await.is_err());
    s.shutdown().await;
}
