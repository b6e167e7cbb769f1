//! A Weft server with the same command line and PVs as shared/scripts/pva/peer.py
//! (the subset bench.py uses), so bench.py can measure Weft and p4p servers with
//! the same p4p client: `bench.py --peer-cmd "target/release/examples/bench_peer"`.
//!
//! PVs `<prefix>scalar` (NTScalar double counter at --rate Hz, 0 = flood),
//! `<prefix>array` (NTScalarArray double[--array-size], element 0 = sequence,
//! --array-rate Hz, 0 = static, -1 = flood), `<prefix>int` (writable NTScalar int).

use std::time::{Duration, Instant};

use weft_pva::config::ServerConfig;
use weft_pva::proto::nt::{Builder, Meta, nt_scalar, nt_scalar_array};
use weft_pva::proto::{ScalarArray, ScalarType, Value};
use weft_pva::server::{Provider, Server, SharedPv};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pacer(rate: f64, mut post: impl FnMut(u64) + Send + 'static) {
    std::thread::spawn(move || {
        let period = if rate > 0.0 { Some(Duration::from_secs_f64(1.0 / rate)) } else { None };
        let mut next = Instant::now();
        let mut n = 0u64;
        loop {
            n += 1;
            post(n);
            match period {
                Some(p) => {
                    next += p;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
                // Flood: post as fast as the monitor queues absorb (they squash).
                None => std::thread::yield_now(),
            }
        }
    });
}

#[tokio::main]
async fn main() -> Result<(), weft_pva::Error> {
    let args: Vec<String> = std::env::args().collect();
    let prefix: String = arg(&args, "--prefix", "pva:test:".to_string());
    let rate: f64 = arg(&args, "--rate", 10.0);
    let array_rate: f64 = arg(&args, "--array-rate", 0.0);
    let n: usize = arg(&args, "--array-size", 100_000);
    let cfg = ServerConfig {
        tcp_port: arg(&args, "--tcp-port", 5075),
        udp_port: arg(&args, "--udp-port", 5076),
        ..ServerConfig::isolated()
    };
    let p = Provider::new();
    let (d, v) = Builder::new(nt_scalar(ScalarType::F64, Meta::all())).build();
    let scalar = SharedPv::writable(d, v);
    let (d, v) = Builder::new(nt_scalar_array(ScalarType::F64, Meta::default()))
        .with("value", Value::Array(ScalarArray::F64((0..n).map(|i| i as f64).collect())))
        .build();
    let array = SharedPv::writable(d, v);
    let (d, v) = Builder::new(nt_scalar(ScalarType::I32, Meta::default())).with("value", Value::I32(42)).build();
    p.add_pv(&format!("{prefix}scalar"), scalar.clone());
    p.add_pv(&format!("{prefix}array"), array.clone());
    p.add_pv(&format!("{prefix}int"), SharedPv::writable(d, v));
    let s = Server::start(cfg, p).await?;
    println!("READY {{\"EPICS_PVAS_SERVER_PORT\": \"{}\", \"EPICS_PVAS_BROADCAST_PORT\": \"{}\"}}", s.tcp_addr().port(), s.udp_addr().port());
    pacer(rate, move |i| {
        let _ = scalar.post_field("value", Value::F64(i as f64));
    });
    if array_rate != 0.0 {
        let mut a: Vec<f64> = (0..n).map(|i| i as f64).collect();
        pacer(array_rate.max(0.0), move |i| {
            if let Some(x) = a.first_mut() {
                *x = i as f64;
            }
            let _ = array.post_field("value", Value::Array(ScalarArray::F64(a.clone())));
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    s.shutdown().await;
    Ok(())
}
