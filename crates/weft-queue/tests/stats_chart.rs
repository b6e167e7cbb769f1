//! Issue #17 item 21: the graphing example samples a real node's statistics
//! over the native protocol and writes a valid PNG chart. The node is the
//! `weft` binary of this target directory (built by any test of the `weft`
//! package, as `cargo test --workspace` does); when it is not built, an
//! in-process node with the same keeper endpoints serves instead (said on
//! stderr).
#![allow(clippy::unwrap_used)]

#[path = "../examples/common/chart.rs"]
mod chart;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_queue::{Manager, ManagerOptions, MeteredHandler};
use weft_service::Service;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn weft_binary() -> Option<std::path::PathBuf> {
    // target/<profile>/deps/stats_chart-HASH -> target/<profile>/weft
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("weft");
    bin.is_file().then_some(bin)
}

fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_of_a_real_node_is_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let mut _node: Option<Kill> = None;
    let mut _in_process = None;
    let addr = match weft_binary() {
        Some(bin) => {
            let port = free_port();
            let child = Command::new(bin)
                .args(["serve", "--data-dir"])
                .arg(dir.path().join("data"))
                .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--udp-addr", &format!("127.0.0.1:{port}"), "--http-addr", "127.0.0.1:0"])
                .env_remove("WEFT_CONFIG")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            _node = Some(Kill(child));
            format!("127.0.0.1:{port}")
        }
        None => {
            eprintln!("no weft binary in this target directory: charting an in-process node");
            let mut svc = Service::new("node");
            let m = Manager::new(&dir.path().join("q"), &svc, ManagerOptions::default()).unwrap();
            m.register(&mut svc).unwrap();
            let server = Server::new(ServerConfig::default(), MeteredHandler::new(svc.into_handler(), m.stats().clone()));
            let a = server.bind_tcp("127.0.0.1:0").await.unwrap().to_string();
            _in_process = Some((server, m));
            a
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        if let Ok(c) = Client::connect(Endpoint::Tcp(addr.clone()), ClientConfig::default()).await {
            break c;
        }
        assert!(Instant::now() < deadline, "node did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Traffic to chart: pings while sampling.
    let pinger = client.clone();
    let traffic = tokio::spawn(async move {
        loop {
            let _ = pinger.call_json("weft.ping", &serde_json::Value::Null).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let keys = vec!["endpoint.*.calls".to_owned(), "endpoint.weft.ping.calls".to_owned()];
    let series = chart::sample(&client, &keys, 8, Duration::from_millis(50)).await.unwrap();
    traffic.abort();
    for s in &series {
        assert_eq!(s.points.len(), 8, "{}: every sample has the key", s.key);
        assert!(s.points.last().unwrap().1 > s.points.first().unwrap().1, "{}: calls grew while sampling: {:?}", s.key, s.points);
    }
    let out = dir.path().join("chart.png");
    chart::draw(&series, &out).unwrap();
    let png = std::fs::read(&out).unwrap();
    assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "PNG signature");
    assert_eq!(png.get(12..16), Some(&b"IHDR"[..]));
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), (chart::WIDTH, chart::HEIGHT));
    assert_eq!(png.get(png.len() - 8..png.len() - 4), Some(&b"IEND"[..]), "complete file");
    // A blank 800x480 image compresses to well under 2 KiB; lines make it bigger.
    let blank = dir.path().join("blank.png");
    chart::draw(&[], &blank).unwrap();
    let blank_len = std::fs::metadata(&blank).unwrap().len();
    assert!(png.len() as u64 > blank_len + 1000, "chart {} bytes, empty chart {blank_len} bytes", png.len());
}
