//! Stateless mode against a real Redis (Debian redis-server, started here on
//! loopback). Runs only with WEFT_PEERS=1; then a missing redis-server fails.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use weft_pva::client::{Client, MonitorEvent};
use weft_pva::config::{ClientConfig, ServerConfig};
use weft_pva::proto::Value;
use weft_pva::proto::nt::path_ref;
use weft_pva::redis::{Redis, Resp};
use weft_pva::server::demo::{self, demo_provider};
use weft_pva::server::{Provider, Server};
use weft_pva::stateless::{Stateless, StatelessConfig, StoredPv};

struct RedisServer(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_redis() -> (RedisServer, SocketAddr) {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let server = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("WEFT_PEERS=1 but redis-server is missing (apt-get install redis-server)");
    // Owned at once so every path (including a panic) kills and reaps it.
    let server = RedisServer(server, dir);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for _ in 0..100 {
        if let Ok(mut r) = Redis::connect(addr).await {
            if r.cmd(&[b"PING"]).await.is_ok() {
                return (server, addr);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start");
}

async fn node(redis: SocketAddr, id: &str) -> (Server, Stateless) {
    let p = Provider::new();
    demo_provider(&p);
    let s = Server::start(ServerConfig::isolated(), p.clone()).await.unwrap();
    let mut cfg = StatelessConfig::new(redis);
    cfg.process_id = id.to_string();
    cfg.heartbeat = Duration::from_millis(200);
    let names = vec![demo::SETPOINT.to_string(), demo::ENUM.to_string()];
    let st = Stateless::attach(cfg, &p, &names, s.tcp_addr()).await.unwrap();
    (s, st)
}

#[tokio::test]
async fn two_processes_share_pv_values_through_redis() {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        println!("skipped two_processes_share_pv_values_through_redis: set WEFT_PEERS=1 (needs redis-server)");
        return;
    }
    let (_redis, raddr) = start_redis().await;
    let (a, _sa) = node(raddr, "proc-a").await;
    let (b, _sb) = node(raddr, "proc-b").await;
    let ca = Client::new(ClientConfig::unicast(a.udp_addr())).await.unwrap();
    let cb = Client::new(ClientConfig::unicast(b.udp_addr())).await.unwrap();

    // A monitor on B sees a put made through A.
    let mut m = cb.monitor(demo::SETPOINT, "field(value)", 0);
    loop {
        if let MonitorEvent::Data(_) = tokio::time::timeout(Duration::from_secs(5), m.next()).await.unwrap().unwrap() {
            break;
        }
    }
    ca.put(demo::SETPOINT, &[("value".into(), "8.5".into())]).await.unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), m.next()).await.unwrap().unwrap();
        if let MonitorEvent::Data(d) = ev {
            if path_ref(&d.desc, &d.value, "value").unwrap().0 == &Value::F64(8.5) {
                break;
            }
        }
    }
    // A get through B returns it; so does Redis (msgpack).
    let g = cb.get(demo::SETPOINT, "").await.unwrap();
    assert_eq!(path_ref(&g.desc, &g.value, "value").unwrap().0, &Value::F64(8.5));
    let mut r = Redis::connect(raddr).await.unwrap();
    let stored = r.cmd(&[b"GET", b"weft:pva:pv:weft:demo:setpoint"]).await.unwrap();
    let s = StoredPv::from_msgpack(stored.bulk().unwrap()).unwrap();
    assert_eq!(s.by, "proc-a");
    let (d, v, _) = s.decode().unwrap();
    assert_eq!(path_ref(&d, &v, "value").unwrap().0, &Value::F64(8.5));

    // Puts through B flow back to A too.
    cb.put(demo::ENUM, &[("value".into(), "Fault".into())]).await.unwrap();
    let mut ok = false;
    for _ in 0..50 {
        let g = ca.get(demo::ENUM, "").await.unwrap();
        if path_ref(&g.desc, &g.value, "value.index").unwrap().0 == &Value::I32(3) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "put through B not visible through A");

    // A third process started later adopts the stored value.
    let (c, _sc) = node(raddr, "proc-c").await;
    let cc = Client::new(ClientConfig::unicast(c.udp_addr())).await.unwrap();
    let g = cc.get(demo::SETPOINT, "").await.unwrap();
    assert_eq!(path_ref(&g.desc, &g.value, "value").unwrap().0, &Value::F64(8.5));

    // Process registry and channel state.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let procs = r.cmd(&[b"HKEYS", b"weft:pva:procs"]).await.unwrap();
    let Resp::Array(Some(ids)) = procs else { panic!("{procs:?}") };
    let ids: Vec<String> = ids.iter().map(|x| String::from_utf8_lossy(x.bulk().unwrap()).into_owned()).collect();
    for id in ["proc-a", "proc-b", "proc-c"] {
        assert!(ids.iter().any(|x| x == id), "{ids:?}");
    }
    // B still has the monitor's channel open.
    let n = r.cmd(&[b"HGET", b"weft:pva:chan:proc-b", b"weft:demo:setpoint"]).await.unwrap();
    let n: i64 = String::from_utf8_lossy(n.bulk().unwrap()).parse().unwrap();
    assert!(n >= 1, "open channels on proc-b: {n}");
    drop(m);
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}
