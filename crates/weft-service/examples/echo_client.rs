//! A client for `echo_server` (or for `weft serve`, which has the same
//! standard endpoints; only the typed `echo` is the example's own).
//!
//! ```text
//! cargo run -p weft-service --example echo_client -- [ADDR] [TEXT...]
//! ```
//!
//! Connects (hello/welcome handshake), pings, echoes each TEXT through the
//! typed `echo` endpoint and the raw `weft.echo`, then prints `weft.info`.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use weft_net::{Client, ClientConfig, Endpoint};
use weft_service::NodeInfo;

#[derive(Serialize)]
struct EchoRequest<'a> {
    text: &'a str,
}

#[derive(Debug, Deserialize)]
struct EchoResponse {
    text: String,
    chars: usize,
}

#[derive(Debug, Deserialize)]
struct Pong {
    pong: bool,
    server_time_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    // The first argument is an address when it has a scheme.
    let addr: Endpoint = match args.peek() {
        Some(a) if a.contains("://") => args.next().unwrap_or_default().parse()?,
        _ => "tcp://127.0.0.1:7410".parse()?,
    };
    let texts: Vec<String> = args.collect();
    let texts = if texts.is_empty() { vec!["hello, weft".to_owned()] } else { texts };

    let config = ClientConfig { client_name: "echo_client".into(), ..ClientConfig::default() };
    let client = Client::connect(addr.clone(), config).await?;
    if let Some(w) = client.welcome() {
        println!("connected to {addr}: server {} ({}), version {}, features {:?}", w.server_name, w.server_id, w.version, w.features);
    }

    let started = Instant::now();
    let pong: Pong = client.call("weft.ping", &()).await?;
    println!("weft.ping -> pong={} server_time_ms={} in {:?}", pong.pong, pong.server_time_ms, started.elapsed());

    for text in &texts {
        match client.call::<_, EchoResponse>("echo", &EchoRequest { text }).await {
            Ok(r) => println!("echo {text:?} -> {:?} ({} chars)", r.text, r.chars),
            // `weft serve` has no typed `echo`: say so and carry on.
            Err(e) => println!("echo {text:?} -> error {e}"),
        }
        // weft.echo sends back the body bytes as they came: a msgpack string.
        let back: String = client.call("weft.echo", text).await?;
        println!("weft.echo {text:?} -> {back:?}");
    }

    let info: NodeInfo = client.call("weft.info", &()).await?;
    println!(
        "weft.info -> name={} version={} uptime={:.1}s transports={:?} endpoints={:?}",
        info.name, info.version, info.uptime_s, info.transports, info.endpoints
    );
    client.close();
    Ok(())
}
