//! An echo service: the standard endpoints (`weft.ping`, `weft.echo`,
//! `weft.info`, `weft.stats`) plus a typed `echo` endpoint.
//!
//! ```text
//! cargo run -p weft-service --example echo_server -- [ADDR...]
//! cargo run -p weft-service --example echo_server -- tcp://127.0.0.1:7410 udp://127.0.0.1:7410 unix:///tmp/echo.sock
//! ```

#[path = "common/serve.rs"]
mod serve;

use serde::{Deserialize, Serialize};
use weft_service::{Service, ServiceError};

/// Longest text `echo` accepts, so the answer stays small enough for UDP.
const MAX_TEXT_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
struct EchoRequest {
    text: String,
}

#[derive(Serialize)]
struct EchoResponse {
    text: String,
    /// Length in Unicode scalar values, to show the server did some work.
    chars: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addrs = serve::addresses_from_args()?;
    let mut service = Service::new("echo");
    service.endpoint("echo", |req: EchoRequest| async move {
        if req.text.len() > MAX_TEXT_BYTES {
            return Err(ServiceError::validation(format!("text is over {MAX_TEXT_BYTES} bytes")));
        }
        let chars = req.text.chars().count();
        Ok(EchoResponse { text: req.text, chars })
    })?;
    serve::serve(service, &addrs).await
}
