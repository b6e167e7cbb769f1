//! What both example servers share: turn `tcp://`, `udp://` and `unix://`
//! addresses from the command line into listeners for one service, then run
//! until Ctrl-C and drain.

use std::sync::Arc;
use std::time::Duration;

use weft_net::{Endpoint, Server, ServerConfig};
use weft_service::Service;

/// Where the example servers listen when given no address.
pub const DEFAULT_ADDR: &str = "tcp://127.0.0.1:7410";

/// The addresses given on the command line, or the default.
pub fn addresses_from_args() -> Result<Vec<Endpoint>, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: SERVER [ADDR...]   ADDR is tcp://HOST:PORT, udp://HOST:PORT or unix://PATH (default {DEFAULT_ADDR})");
        std::process::exit(0);
    }
    let args = if args.is_empty() { vec![DEFAULT_ADDR.to_owned()] } else { args };
    Ok(args.iter().map(|a| a.parse()).collect::<Result<Vec<Endpoint>, _>>()?)
}

/// Serve `service` on every address until Ctrl-C (or SIGTERM), then let
/// requests in flight finish for up to two seconds.
pub async fn serve(service: Service, addrs: &[Endpoint]) -> Result<(), Box<dyn std::error::Error>> {
    let features = addrs.iter().map(|a| a.transport().as_str().to_owned()).collect();
    let name = service.name().to_owned();
    let handler = service.into_handler();
    let server = Server::new(
        ServerConfig { server_name: name.clone(), features, ..ServerConfig::default() },
        handler.clone() as Arc<dyn weft_net::Handler>,
    );
    for addr in addrs {
        // Record the bound address, not the asked one (port 0 picks a port).
        let bound = match addr {
            Endpoint::Tcp(a) => format!("tcp://{}", server.bind_tcp(a).await?),
            Endpoint::Udp(a) => format!("udp://{}", server.bind_udp(a).await?.local_addr()?),
            Endpoint::Unix(p) => format!("unix://{}", server.bind_unix(p).await?.display()),
        };
        handler.0.add_transport(bound.clone());
        println!("{name}: listening on {bound}");
    }
    println!("{name}: endpoints {}", handler.0.routes().collect::<Vec<_>>().join(", "));
    println!("{name}: Ctrl-C to stop");

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    println!("{name}: stopping");
    server.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
