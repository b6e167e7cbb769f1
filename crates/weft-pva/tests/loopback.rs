//! Weft client against the Weft server on loopback: every operation, the
//! demo PVs, monitors (plain, pipelined, many), reconnection after a server
//! restart, and a client sending garbage mid-session.

#![allow(clippy::unwrap_used, clippy::too_many_arguments)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_pva::client::{Client, MonitorEvent};
use weft_pva::config::{ClientConfig, ServerConfig};
use weft_pva::proto::nt::{Builder, path_ref};
use weft_pva::proto::{ScalarArray, ScalarType, Value};
use weft_pva::server::demo::{self, serve_demo};

fn field(d: &weft_pva::client::PvData, path: &str) -> Value {
    path_ref(&d.desc, &d.value, path).map(|(v, _)| v.clone()).unwrap_or_else(|| panic!("no field {path}"))
}

async fn setup() -> (weft_pva::server::Server, Client) {
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let c = Client::new(ClientConfig::unicast(s.udp_addr())).await.unwrap();
    (s, c)
}

#[tokio::test]
async fn get_put_rpc_getfield_on_demo_pvs() {
    let (s, c) = setup().await;
    let g = c.get(demo::COUNTER, "").await.unwrap();
    assert_eq!(g.desc.id(), "epics:nt/NTScalar:1.0");
    assert!(matches!(field(&g, "value"), Value::I32(_)));

    let w = c.get(demo::WAVEFORM, "field(value)").await.unwrap();
    match field(&w, "value") {
        Value::Array(ScalarArray::F64(v)) => assert_eq!(v.len(), demo::WAVEFORM_LEN),
        other => panic!("{other:?}"),
    }
    assert!(w.changed.get(1) && !w.changed.get(0), "field selection gives only the value bit");

    let t = c.get(demo::TABLE, "").await.unwrap();
    assert_eq!(t.desc.id(), "epics:nt/NTTable:1.0");
    assert_eq!(field(&t, "value.count"), Value::Array(ScalarArray::I32(vec![1, 2, 3])));

    c.put(demo::SETPOINT, &[("value".into(), "3.25".into())]).await.unwrap();
    assert_eq!(field(&c.get(demo::SETPOINT, "").await.unwrap(), "value"), Value::F64(3.25));

    c.put(demo::ENUM, &[("value".into(), "Fault".into())]).await.unwrap();
    assert_eq!(field(&c.get(demo::ENUM, "").await.unwrap(), "value.index"), Value::I32(3));

    let err = c.put(demo::COUNTER, &[("value".into(), "1".into())]).await.unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");

    let pg = c.put_get(demo::SETPOINT, &[("value".into(), "-1.5".into())], "field(value)").await.unwrap();
    assert_eq!(field(&pg, "value"), Value::F64(-1.5));

    c.put(demo::WAVEFORM, &[("value".into(), "[1, 2, 3]".into())]).await.unwrap();
    let ch = c.channel(demo::WAVEFORM).await.unwrap();
    let part = ch.array_get(1, 2, Duration::from_secs(5)).await.unwrap();
    assert_eq!(part, Value::Array(ScalarArray::F64(vec![2.0, 3.0])));
    let b = c.channel(demo::BUFFER).await.unwrap();
    b.array_put(0, Value::Array(ScalarArray::F64(vec![1.0, 2.0, 3.0, 4.0])), Duration::from_secs(5)).await.unwrap();
    b.array_put(2, Value::Array(ScalarArray::F64(vec![30.0, 40.0, 50.0])), Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.array_get(0, 0, Duration::from_secs(5)).await.unwrap(), Value::Array(ScalarArray::F64(vec![1.0, 2.0, 30.0, 40.0, 50.0])));
    b.array_set_length(2, Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.array_get(0, 0, Duration::from_secs(5)).await.unwrap(), Value::Array(ScalarArray::F64(vec![1.0, 2.0])));
    ch.process(Duration::from_secs(5)).await.unwrap();

    let uri = weft_pva::proto::nt::nt_uri(&[("a", ScalarType::F64), ("b", ScalarType::F64)]);
    let (d, v) = Builder::new(uri).with("path", Value::String(demo::ADD.into())).with("query.a", Value::F64(2.0)).with("query.b", Value::F64(40.0)).build();
    let (rd, rv) = c.rpc(demo::ADD, (d, v)).await.unwrap();
    assert_eq!(path_ref(&rd, &rv, "value").unwrap().0, &Value::F64(42.0));

    let f = c.get_field(demo::ENUM, "").await.unwrap();
    assert_eq!(f.id(), "epics:nt/NTEnum:1.0");
    let f = c.get_field(demo::ENUM, "value.choices").await.unwrap();
    assert_eq!(f, weft_pva::proto::FieldDesc::ScalarArray(ScalarType::String, weft_pva::proto::ArrayKind::Variable));

    assert!(matches!(c.get("no:such:pv", "").await, Err(weft_pva::Error::NotFound(_))));
    s.shutdown().await;
}

#[tokio::test]
async fn monitors_plain_pipelined_and_many() {
    let (s, c) = setup().await;
    let mut m = c.monitor(demo::COUNTER, "field(value)", 0);
    let mut vals = vec![];
    while vals.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(5), m.next()).await.unwrap().unwrap() {
            MonitorEvent::Data(d) => vals.push(field(&d, "value").as_i64().unwrap()),
            MonitorEvent::Connected(_) => {}
            MonitorEvent::Disconnected => panic!("unexpected disconnect"),
        }
    }
    assert!(vals.windows(2).all(|w| w[1] > w[0]), "{vals:?}");

    let mut p = c.monitor(demo::COUNTER, "", 4);
    let mut n = 0;
    while n < 12 {
        if let MonitorEvent::Data(_) = tokio::time::timeout(Duration::from_secs(5), p.next()).await.unwrap().unwrap() {
            n += 1;
        }
    }
    let mut many: Vec<_> = (0..30).map(|_| c.monitor(demo::SETPOINT, "", 0)).collect();
    for m in many.iter_mut() {
        loop {
            if let MonitorEvent::Data(_) = tokio::time::timeout(Duration::from_secs(5), m.next()).await.unwrap().unwrap() {
                break;
            }
        }
    }
    c.put(demo::SETPOINT, &[("value".into(), "9".into())]).await.unwrap();
    for m in many.iter_mut() {
        loop {
            if let MonitorEvent::Data(d) = tokio::time::timeout(Duration::from_secs(5), m.next()).await.unwrap().unwrap() {
                if field(&d, "value") == Value::F64(9.0) {
                    break;
                }
            }
        }
    }
    s.shutdown().await;
}

fn free_ports() -> (u16, u16) {
    let t = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    (t.local_addr().unwrap().port(), u.local_addr().unwrap().port())
}

async fn next_ev(m: &mut weft_pva::client::Monitor) -> MonitorEvent {
    tokio::time::timeout(Duration::from_secs(10), m.next()).await.unwrap().unwrap()
}

#[tokio::test]
async fn monitor_survives_server_restart() {
    let (tcp, udp) = free_ports();
    let cfg = ServerConfig { tcp_port: tcp, udp_port: udp, tcp_port_fallback: false, ..ServerConfig::isolated() };
    let s = serve_demo(cfg.clone()).await.unwrap();
    let c = Client::new(ClientConfig::unicast(SocketAddr::from((Ipv4Addr::LOCALHOST, udp)))).await.unwrap();
    let mut m = c.monitor(demo::COUNTER, "", 0);
    loop {
        if let MonitorEvent::Data(_) = next_ev(&mut m).await {
            break;
        }
    }
    s.shutdown().await;
    loop {
        if let MonitorEvent::Disconnected = next_ev(&mut m).await {
            break;
        }
    }
    let s2 = serve_demo(cfg).await.unwrap();
    let mut reconnected = false;
    loop {
        match next_ev(&mut m).await {
            MonitorEvent::Connected(_) => reconnected = true,
            MonitorEvent::Data(_) if reconnected => break,
            _ => {}
        }
    }
    s2.shutdown().await;
}

#[tokio::test]
async fn garbage_client_is_dropped_and_others_are_served() {
    let (s, c) = setup().await;
    let mut bad = tokio::net::TcpStream::connect(s.tcp_addr()).await.unwrap();
    // Read the server's hello, then send a header with an impossible size and junk.
    let mut hello = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(2), bad.read(&mut hello)).await;
    bad.write_all(&[0xCA, 2, 0, 10, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3]).await.unwrap();
    let mut rest = vec![];
    let closed = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "server should close a connection that sends an impossible size");
    // A second bad client: valid header, undecodable type code in a GET init.
    let mut bad2 = tokio::net::TcpStream::connect(s.tcp_addr()).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), bad2.read(&mut hello)).await;
    bad2.write_all(&[0xCA, 2, 0, 10, 10, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0x47]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), bad2.read_to_end(&mut rest)).await;
    assert!(closed.is_ok());
    // Everyone else is still served.
    c.get(demo::COUNTER, "").await.unwrap();
    assert!(s.stats().connections_closed_on_error.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    s.shutdown().await;
}

#[tokio::test]
async fn servers_sharing_a_udp_port_all_answer_unicast_searches() {
    use weft_pva::proto::nt::{Meta, nt_scalar};
    use weft_pva::server::{Provider, Server, SharedPv};
    let (_, udp) = free_ports();
    let mut servers = vec![];
    for i in 0..3 {
        let p = Provider::new();
        let (d, v) = Builder::new(nt_scalar(ScalarType::I32, Meta::default())).with("value", Value::I32(i)).build();
        p.add_pv(&format!("share:{i}"), SharedPv::read_only(d, v));
        let cfg = ServerConfig { udp_port: udp, ..ServerConfig::isolated() };
        servers.push(Server::start(cfg, p).await.unwrap());
    }
    // One client socket: the kernel hands its unicast searches to one of the three
    // sockets; forwarding over 224.0.0.128 must let every server answer.
    let c = Client::new(ClientConfig::unicast(SocketAddr::from((Ipv4Addr::LOCALHOST, udp)))).await.unwrap();
    for i in 0..3 {
        let d = c.get(&format!("share:{i}"), "").await.unwrap();
        assert_eq!(field(&d, "value"), Value::I32(i));
    }
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn garbage_mid_session_closes_only_that_connection() {
    use weft_pva::client::{Channel, ClientConn};
    let (s, c) = setup().await;
    let conn = ClientConn::connect(s.tcp_addr(), Duration::from_secs(5)).await.unwrap();
    let (cid, sid, _w) = conn.create_channel(demo::SETPOINT, Duration::from_secs(5)).await.unwrap();
    let ch = Channel::new(conn.clone(), sid, cid, demo::SETPOINT);
    ch.get("", Duration::from_secs(5)).await.unwrap();
    // An unknown command is ignored: the connection stays usable.
    conn.send_raw(vec![0xCA, 2, 0, 0x7F, 3, 0, 0, 0, 1, 2, 3]).await.unwrap();
    ch.get("", Duration::from_secs(5)).await.unwrap();
    // A GET init whose pvRequest has a nesting depth beyond the limit: the peer is
    // misbehaving, so its connection is closed.
    let mut payload = vec![];
    payload.extend_from_slice(&sid.to_le_bytes());
    payload.extend_from_slice(&99u32.to_le_bytes());
    payload.push(0x08);
    for _ in 0..100 {
        payload.extend_from_slice(&[0x80, 0x00, 0x01, 0x01, b'f']);
    }
    payload.push(0x22);
    let mut m = vec![0xCA, 2, 0, 10];
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(&payload);
    conn.send_raw(m).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.expect("server should close the connection");
    // Everyone else is still served.
    let g = c.get(demo::SETPOINT, "").await.unwrap();
    assert_eq!(g.desc.id(), "epics:nt/NTScalar:1.0");
    s.shutdown().await;
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_idle_timeout() {
    let cfg = ServerConfig { idle_timeout: Duration::from_millis(300), ..ServerConfig::isolated() };
    let s = serve_demo(cfg).await.unwrap();
    let mut sock = tokio::net::TcpStream::connect(s.tcp_addr()).await.unwrap();
    let mut all = vec![];
    // The server greets, then hears nothing and hangs up.
    let r = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut all)).await;
    assert!(r.is_ok(), "idle connection not closed");
    assert!(all.len() >= 8, "no greeting before the close");
    s.shutdown().await;
}

#[tokio::test]
async fn many_clients_each_with_monitors() {
    let s = serve_demo(ServerConfig::isolated()).await.unwrap();
    let mut tasks = vec![];
    for _ in 0..25 {
        let cfg = ClientConfig::unicast(s.udp_addr());
        tasks.push(tokio::spawn(async move {
            let c = Client::new(cfg).await.unwrap();
            let mut m1 = c.monitor(demo::COUNTER, "field(value)", 0);
            let mut m2 = c.monitor(demo::WAVEFORM, "", 4);
            let mut got = 0;
            while got < 3 {
                if let MonitorEvent::Data(_) = next_ev(&mut m1).await {
                    got += 1;
                }
            }
            loop {
                if let MonitorEvent::Data(_) = next_ev(&mut m2).await {
                    break;
                }
            }
            c.get(demo::TABLE, "").await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(s.stats().connections.load(std::sync::atomic::Ordering::Relaxed) >= 25);
    s.shutdown().await;
}
