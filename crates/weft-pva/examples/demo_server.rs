//! Run the demo PVs on an isolated loopback server and print its ports.
use weft_pva::config::ServerConfig;

#[tokio::main]
async fn main() -> Result<(), weft_pva::Error> {
    let s = weft_pva::serve_demo(ServerConfig::isolated()).await?;
    println!("READY tcp={} udp={}", s.tcp_addr(), s.udp_addr());
    tokio::signal::ctrl_c().await?;
    s.shutdown().await;
    Ok(())
}
