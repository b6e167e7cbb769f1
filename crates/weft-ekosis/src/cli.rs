//! `weft eko ...`: talk to an ekosis-protocol server (a real ekosis service or
//! Weft's ekosis listener). The `weft` binary wires [`EkoArgs`] in as a
//! subcommand and calls [`run`].

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;
use weft_net::Endpoint;

use crate::client::{new_span_key, ClientOptions, EkosisClient};
use crate::error::EkosisError;
use crate::proto::SpanKey;

#[derive(Args, Debug, Clone)]
pub struct EkoArgs {
    /// Server: tcp://HOST:PORT, udp://HOST:PORT or unix://PATH.
    #[arg(long, env = "WEFT_EKO_ADDR", default_value = "tcp://127.0.0.1:8888", global = true)]
    pub addr: String,
    /// Per-attempt timeout in milliseconds.
    #[arg(long, default_value_t = 5_000, global = true)]
    pub timeout_ms: u64,
    /// Attempts (ekosis' max_retries).
    #[arg(long, default_value_t = 3, global = true)]
    pub retries: u32,
    #[command(subcommand)]
    pub op: EkoOp,
}

#[derive(Subcommand, Debug, Clone)]
pub enum EkoOp {
    /// Call ROUTE_KEY with a JSON body (default {}); prints the whole response line.
    Call {
        route_key: String,
        json: Option<String>,
        /// Span key TRACE:SPAN (default: a fresh one).
        #[arg(long)]
        span_key: Option<String>,
    },
    /// Send a heartbeat (ENQ) and wait for the ACK.
    Heartbeat,
    /// eco.statistics.get: current, gathered or full.
    Stats {
        #[arg(long, default_value = "current")]
        r#type: String,
    },
    /// eco.error_states.get
    Errors,
}

/// Run one command; a non-zero status is returned as `EkosisError::Status`
/// after the response is printed.
pub async fn run(args: EkoArgs) -> Result<(), EkosisError> {
    let target: Endpoint = args.addr.parse().map_err(|e: weft_net::NetError| EkosisError::Usage(e.to_string()))?;
    let opts = ClientOptions { timeout: Duration::from_millis(args.timeout_ms), max_retries: args.retries, ..ClientOptions::default() };
    let client = EkosisClient::new(target, opts);
    let (route, data, sk) = match args.op {
        EkoOp::Heartbeat => {
            client.heartbeat().await?;
            println!("ACK");
            return Ok(());
        }
        EkoOp::Call { route_key, json, span_key } => {
            let data: Value = match json {
                Some(s) => serde_json::from_str(&s).map_err(|e| EkosisError::Usage(format!("body is not JSON: {e}")))?,
                None => Value::Object(Default::default()),
            };
            let sk = match span_key {
                Some(s) => s.parse::<SpanKey>().map_err(|e| EkosisError::Usage(e.to_string()))?,
                None => new_span_key(),
            };
            (route_key, data, sk)
        }
        EkoOp::Stats { r#type } => ("eco.statistics.get".to_owned(), serde_json::json!({ "type": r#type }), new_span_key()),
        EkoOp::Errors => ("eco.error_states.get".to_owned(), serde_json::json!({}), new_span_key()),
    };
    let r = client.call_with(&route, &sk, &data).await?;
    println!("{}", serde_json::json!({"span_key": r.span_key.map(|s| s.to_string()), "status": r.status, "data": r.data}));
    if r.status != 0 {
        let message = r.data.as_str().map(str::to_owned).unwrap_or_else(|| r.data.to_string());
        return Err(EkosisError::Status { status: r.status, message, data: r.data });
    }
    Ok(())
}
