//! Replays the real ekosis 0.17 exchanges of tests/data/captures.txt (copied
//! from shared/captures/ekosis) against Weft's ekosis listener serving the
//! demo application, over real TCP, Unix and UDP sockets, and compares the
//! bytes. Where Weft differs on purpose (docs/ecosystem.md) the test says so.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_ekosis::{demo, AppInfo, EkosisConfig, EkosisServer};

const CAPTURES: &str = include_str!("data/captures.txt");

#[derive(Debug, Clone)]
struct Chunk {
    to_server: bool,
    bytes: Vec<u8>,
}

/// Parse a Python bytes literal `b'...'` / `b"..."`.
fn py_bytes(lit: &str) -> Vec<u8> {
    let quote = lit.as_bytes()[1];
    let inner = &lit[2..lit.len() - 1];
    let b = inner.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let c = b[i + 1];
            i += 2;
            match c {
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'\'' => out.push(b'\''),
                b'"' => out.push(b'"'),
                b'x' => {
                    out.push(u8::from_str_radix(&inner[i..i + 2], 16).unwrap());
                    i += 2;
                }
                other => panic!("escape {}", other as char),
            }
        } else {
            assert_ne!(b[i], quote);
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// (transport, connection number) -> chunks in order.
fn connections() -> BTreeMap<(String, u32), Vec<Chunk>> {
    let mut m: BTreeMap<(String, u32), Vec<Chunk>> = BTreeMap::new();
    for line in CAPTURES.lines() {
        let parts: Vec<&str> = line.splitn(5, ' ').collect();
        if parts.len() < 5 || !["tcp", "udp", "uds"].contains(&parts[0]) || !parts[3].starts_with("len=") {
            continue;
        }
        let n: u32 = parts[1].trim_start_matches('#').parse().unwrap();
        let bytes = py_bytes(parts[4]);
        assert_eq!(bytes.len(), parts[3][4..].parse::<usize>().unwrap(), "{line}");
        m.entry((parts[0].to_owned(), n)).or_default().push(Chunk { to_server: parts[2] == "C>S", bytes });
    }
    m
}

async fn stream_exchange(chunks: &[Chunk], tcp: &str, uds: &std::path::Path, transport: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    // (expected, got) per server chunk
    let mut out = vec![];
    let (mut r, mut w): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Box<dyn tokio::io::AsyncWrite + Unpin + Send>) = if transport == "tcp" {
        let (r, w) = tokio::net::TcpStream::connect(tcp).await.unwrap().into_split();
        (Box::new(r), Box::new(w))
    } else {
        let (r, w) = tokio::net::UnixStream::connect(uds).await.unwrap().into_split();
        (Box::new(r), Box::new(w))
    };
    let mut pending = vec![];
    for c in chunks {
        if c.to_server {
            w.write_all(&c.bytes).await.unwrap();
        } else {
            pending.push(c.bytes.clone());
        }
    }
    // Read everything the server sends until it has sent as much as ekosis did.
    // Every answer ends with LF: read until as many LFs came as ekosis sent.
    let lfs = |b: &[u8]| b.iter().filter(|c| **c == b'\n').count();
    let want: usize = pending.iter().map(|p| lfs(p)).sum();
    let mut got = vec![0u8; 0];
    let mut buf = [0u8; 4096];
    while lfs(&got) < want {
        let n = tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await.expect("answer timed out").unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    // Split our answers at newlines the same way as the expected chunks.
    let mut at = 0;
    for p in pending {
        let mut end = at;
        for _ in 0..lfs(&p) {
            end += got[end..].iter().position(|c| *c == b'\n').map(|i| i + 1).unwrap_or(got.len() - end);
        }
        out.push((p, got[at..end].to_vec()));
        at = end;
    }
    out
}

async fn udp_exchange(chunks: &[Chunk], addr: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    let mut out = vec![];
    let mut it = chunks.iter().peekable();
    while let Some(c) = it.next() {
        assert!(c.to_server);
        sock.send(&c.bytes).await.unwrap();
        let expected = it.next().unwrap().bytes.clone();
        let mut buf = vec![0u8; 70_000];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await.unwrap().unwrap();
        out.push((expected, buf[..n].to_vec()));
    }
    out
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_captures_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, manager) = demo::demo_service("eko_echo_server", &dir.path().join("queues"), Duration::from_secs(3)).unwrap();
    let handler = svc.into_handler();
    let cfg = EkosisConfig { app: AppInfo { name: "eko_echo_server".into(), instance: "0".into() }, ..EkosisConfig::default() };
    let server = EkosisServer::new(&handler, manager.clone(), cfg);
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap().to_string();
    let udp = server.bind_udp("127.0.0.1:0").await.unwrap().to_string();
    let uds = dir.path().join("eko.sock");
    server.bind_unix(&uds).await.unwrap();

    let conns = connections();
    assert_eq!(conns.len(), 22, "captures changed?");
    let mut exact = 0;
    for ((transport, n), chunks) in &conns {
        // #7..#11: the persisted client's first-call race (ekosis bug, timing
        // dependent): not replayable.
        if (8..=11).contains(n) {
            continue;
        }
        if *n == 20 {
            // The pause answer shows the queue sizes: let the job of #19 finish.
            assert!(manager.endpoint("jobs.submit").unwrap().queue().wait_idle(Duration::from_secs(5)).await);
        }
        eprintln!("replaying {transport} #{n}");
        let pairs = match transport.as_str() {
            "udp" => udp_exchange(chunks, &udp).await,
            t => stream_exchange(chunks, &tcp, &uds, t).await,
        };
        for (expected, got) in pairs {
            match n {
                // ENQ datagram: ekosis answers status 100 (a bug: no ekosis
                // client sends it); Weft answers ACK like on streams.
                7 => assert_eq!(got, b"\x06\n", "udp ENQ"),
                // Handler validation text is serde's, not pydantic's.
                16 => {
                    assert!(show(&got).starts_with(&show(&expected)[..show(&expected).find("\"data\":").unwrap()]), "{}", show(&got));
                    assert!(show(&got).contains("\"status\":300"));
                }
                // A paused queued endpoint answers 500 (busy: ekosis senders
                // retry it), where ekosis answers 999 with the same text.
                21 => assert_eq!(show(&got), show(&expected).replace("\"status\":999", "\"status\":500")),
                // dice_roller.guess is random: compare up to the number.
                23 => {
                    let e = show(&expected);
                    let g = show(&got);
                    let cut = e.find("\"guess\":").unwrap() + 8;
                    assert_eq!(g[..cut], e[..cut]);
                    assert_eq!(g.split_once('\n').unwrap().1, e.split_once('\n').unwrap().1);
                }
                _ => {
                    assert_eq!(show(&got), show(&expected), "{transport} #{n}");
                    exact += 1;
                }
            }
        }
    }
    eprintln!("{exact} captured answers reproduced byte for byte");
    assert_eq!(exact, 16, "answers reproduced exactly");
    server.shutdown(Duration::from_secs(1)).await;
    manager.shutdown(Duration::from_secs(1)).await;
}
