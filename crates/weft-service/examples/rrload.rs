//! A bounded request/response load for counting what one request costs
//! (docs/BENCHMARKS.md, "Per-request cost"): `--requests N` requests of one
//! route, `--window W` in flight on one connection, then exit. The request
//! body is encoded once and every request reuses it, and message ids come
//! from a counter, so the load generator adds as little as it can to what
//! is measured.
//!
//! ```text
//! rrload --addr tcp://127.0.0.1:7400 --route weft.ping --requests 20000
//! rrload --addr tcp://127.0.0.1:7400 --route log.produce --topic t --size 1024 --create-topic --requests 20000
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_net::{Client, ClientConfig, Endpoint, Target};
use weft_wire::{BodyFormat, Frame, FrameKind, MessageId};

struct Args {
    addr: String,
    route: String,
    requests: u64,
    window: u64,
    topic: String,
    size: usize,
    create_topic: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        addr: "tcp://127.0.0.1:7400".into(),
        route: "weft.ping".into(),
        requests: 20_000,
        window: 1,
        topic: "rrload".into(),
        size: 1024,
        create_topic: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--addr" => a.addr = v()?,
            "--route" => a.route = v()?,
            "--requests" => a.requests = v()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--window" => a.window = v()?.parse::<u64>().map_err(|e| format!("--window: {e}"))?.max(1),
            "--topic" => a.topic = v()?,
            "--size" => a.size = v()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--create-topic" => a.create_topic = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[derive(Serialize)]
struct Rec {
    value: serde_bytes::ByteBuf,
}

#[derive(Serialize)]
struct Produce<'a> {
    topic: &'a str,
    records: Vec<Rec>,
}

#[derive(Serialize)]
struct CreateTopic<'a> {
    name: &'a str,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rrload: {e}");
            std::process::exit(2);
        }
    };
    let endpoint: Endpoint = match a.addr.parse() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("rrload: bad --addr: {e}");
            std::process::exit(2);
        }
    };
    let config = ClientConfig { request_timeout: Duration::from_secs(60), ..ClientConfig::default() };
    let client = match Client::connect(Target::from(endpoint), config).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("rrload: connect: {e}");
            std::process::exit(1);
        }
    };
    if a.create_topic {
        let r: Result<serde_json::Value, _> = client.call("log.topic.create", &CreateTopic { name: &a.topic }).await;
        if let Err(e) = r {
            eprintln!("rrload: create topic (continuing, it may exist): {e}");
        }
    }
    let body = if a.route == "log.produce" {
        let p = Produce { topic: &a.topic, records: vec![Rec { value: serde_bytes::ByteBuf::from(vec![b'x'; a.size]) }] };
        match BodyFormat::MsgPack.encode(&p) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("rrload: encode: {e}");
                std::process::exit(1);
            }
        }
    } else {
        bytes::Bytes::new()
    };
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.window {
        let (client, next, errors, body, route, n) = (client.clone(), next.clone(), errors.clone(), body.clone(), a.route.clone(), a.requests);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let frame = Frame {
                    kind: FrameKind::Request,
                    flags: Default::default(),
                    id: MessageId::from_u128(u128::from(i) + 1),
                    route: route.clone(),
                    body: body.clone(),
                };
                if client.request_frame(frame).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "route={} requests={} window={} errors={} seconds={:.3} req_per_s={:.0}",
        a.route,
        a.requests,
        a.window,
        errors.load(Ordering::Relaxed),
        secs,
        a.requests as f64 / secs
    );
    client.shutdown().await;
}
