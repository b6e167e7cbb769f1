//! The RESP loop against a real redis-server (WEFT_PEERS=1, as the other
//! peer tests; the README's test command installs redis-server and sets it),
//! over TCP and a Unix socket: every request answered, none failed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_bench::Limit;
use weft_bench::resp::{RespAddr, RespLoad, run_resp};

/// Kills redis-server (by its own pid) when the test ends, pass or fail.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn redis_server_answers_every_ping() {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        println!("skipped: set WEFT_PEERS=1 to run against redis-server");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let sock = dir.path().join("redis.sock");
    let _redis = Peer(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install -y redis-server)"),
    );
    for _ in 0..100 {
        if sock.exists() && tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for addr in [RespAddr::Tcp(format!("127.0.0.1:{port}")), RespAddr::Unix(sock.display().to_string())] {
        let load = RespLoad { addr, clients: 4, limit: Limit::Requests(200), warmup: Duration::ZERO, request_timeout: Duration::from_secs(5) };
        let r = run_resp(&load).await.expect("run");
        assert_eq!((r.requests, r.errors), (800, 0), "{r:?}");
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us, "{r:?}");
    }
}
