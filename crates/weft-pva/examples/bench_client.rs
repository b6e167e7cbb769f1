//! The Weft-client half of the benchmark: the same measurements as
//! shared/scripts/pva/bench.py (monitor updates/s of `<prefix>scalar` and
//! `<prefix>array`, get/put round trips of `<prefix>int`) against a running
//! server found at 127.0.0.1:--udp-port. Prints one JSON object.
//!
//! `bench_client --udp-port 5376 --mode scalar|array|latency [--seconds 3] [--gets 1000]`

use std::time::{Duration, Instant};

use weft_pva::client::{Client, MonitorEvent};
use weft_pva::config::ClientConfig;
use weft_pva::proto::nt::path_ref;
use weft_pva::proto::{ScalarArray, Value};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn stats(mut ts: Vec<f64>) -> serde_json::Value {
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = ts.len().max(1);
    let at = |q: f64| ts.get(((n as f64) * q) as usize).copied().unwrap_or(0.0) * 1e6;
    serde_json::json!({
        "n": ts.len(),
        "mean_us": ts.iter().sum::<f64>() / n as f64 * 1e6,
        "median_us": at(0.5), "p90_us": at(0.9), "p99_us": at(0.99),
        "ops_per_s": n as f64 / ts.iter().sum::<f64>().max(1e-9),
    })
}

#[tokio::main]
async fn main() -> Result<(), weft_pva::Error> {
    let args: Vec<String> = std::env::args().collect();
    let udp: u16 = arg(&args, "--udp-port", 5376);
    let prefix: String = arg(&args, "--prefix", "bench:".to_string());
    let secs: f64 = arg(&args, "--seconds", 3.0);
    let gets: usize = arg(&args, "--gets", 1000);
    let mode: String = arg(&args, "--mode", "scalar".to_string());
    let c = Client::new(ClientConfig::unicast(([127, 0, 0, 1], udp).into())).await?;
    let out = match mode.as_str() {
        "scalar" | "array" => {
            let pv = format!("{prefix}{mode}");
            let mut m = c.monitor(&pv, "", 0);
            let seq = |v: &weft_pva::client::PvData| -> Option<i64> {
                match path_ref(&v.desc, &v.value, "value")?.0 {
                    Value::Array(ScalarArray::F64(a)) => a.first().map(|x| *x as i64),
                    x => x.as_i64(),
                }
            };
            let warm = Instant::now() + Duration::from_secs(1);
            while Instant::now() < warm {
                let _ = tokio::time::timeout(Duration::from_millis(100), m.next()).await;
            }
            let (mut n, mut first, mut last, mut bytes) = (0u64, None, None, 0usize);
            let t0 = Instant::now();
            let end = t0 + Duration::from_secs_f64(secs);
            while Instant::now() < end {
                if let Ok(Some(MonitorEvent::Data(d))) = tokio::time::timeout_at(end.into(), m.next()).await {
                    n += 1;
                    let s = seq(&d);
                    first = first.or(s);
                    last = s.or(last);
                    if let Some((Value::Array(a), _)) = path_ref(&d.desc, &d.value, "value") {
                        bytes += a.len() * 8;
                    }
                }
            }
            let dt = t0.elapsed().as_secs_f64();
            let posted = match (first, last) {
                (Some(a), Some(b)) => (b - a + 1) as f64,
                _ => 0.0,
            };
            serde_json::json!({"pv": pv, "updates": n, "updates_per_s": n as f64 / dt,
                "server_posts_per_s": posted / dt, "payload_MB_per_s": bytes as f64 / dt / 1e6})
        }
        _ => {
            let ch = c.channel(&format!("{prefix}int")).await?;
            let to = Duration::from_secs(5);
            for _ in 0..50 {
                ch.get("", to).await?;
            }
            let mut ts = Vec::with_capacity(gets);
            for _ in 0..gets {
                let t = Instant::now();
                ch.get("", to).await?;
                ts.push(t.elapsed().as_secs_f64());
            }
            let get = stats(ts);
            let arr = c.channel(&format!("{prefix}array")).await?;
            let mut ts = Vec::new();
            for _ in 0..(gets / 10).max(50) {
                let t = Instant::now();
                arr.get("", to).await?;
                ts.push(t.elapsed().as_secs_f64());
            }
            let get_arr = stats(ts);
            let mut ts = Vec::with_capacity(gets);
            for i in 0..gets {
                let t = Instant::now();
                ch.put(&[("value".into(), i.to_string())], to).await?;
                ts.push(t.elapsed().as_secs_f64());
            }
            serde_json::json!({"get_scalar_rtt": get, "get_array_rtt": get_arr, "put_scalar_rtt": stats(ts)})
        }
    };
    println!("{out}");
    Ok(())
}
