//! kill -9 tests: a child process (this test binary, re-run with
//! WEFT_QUEUE_CHILD set) serves a queued endpoint and a queued sender; the
//! parent sends requests, kills the child with SIGKILL mid-stream, restarts
//! it on the same data directory, and checks that every acknowledged request
//! was handled (and every acknowledged message delivered) at least once.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_queue::{Ack, Backoff, Manager, ManagerOptions, NameReq, NativeOutbound, QueueInfo, QueueOptions};
use weft_service::{Service, ServiceError};

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct Job {
    k: String,
}

/// Runs only as the child: a server until killed.
#[test]
fn child_server() {
    let Ok(dir) = std::env::var("WEFT_QUEUE_CHILD") else { return };
    let sink = std::env::var("WEFT_QUEUE_SINK").unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = PathBuf::from(dir);
        let mut svc = Service::new("kill9-child");
        let manager = Manager::new(&dir.join("queues"), &svc, ManagerOptions::default()).unwrap();
        manager.register(&mut svc).unwrap();
        let handled = Arc::new(Mutex::new(
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join("handled.log")).unwrap(),
        ));
        let opts = QueueOptions { backoff: Backoff { initial_ms: 1, max_ms: 20, multiplier: 2.0 }, ..QueueOptions::default() };
        manager
            .queued_endpoint(&mut svc, "jobs.submit", opts.clone(), move |job: Job| {
                let handled = handled.clone();
                async move {
                    // Make the handling itself durable before saying "done".
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let mut f = handled.lock().unwrap();
                    writeln!(f, "{}", job.k).map_err(ServiceError::from_err)?;
                    f.sync_data().map_err(ServiceError::from_err)?;
                    Ok(())
                }
            })
            .unwrap();
        if !sink.is_empty() {
            let out = NativeOutbound::with_defaults(Endpoint::Tcp(sink));
            let sender = manager.queued_sender("sink", "sink", out, QueueOptions { concurrency: 4, ..opts }).unwrap();
            svc.endpoint("send", move |job: Job| {
                let sender = sender.clone();
                async move { Ok(Ack { uid: sender.send(&job).await? }) }
            })
            .unwrap();
        }
        let server = Server::new(ServerConfig::default(), svc.into_handler());
        let addr = server.bind_tcp("127.0.0.1:0").await.unwrap();
        println!("PORT {}", addr.port());
        std::io::stdout().flush().unwrap();
        std::future::pending::<()>().await;
    });
}

fn spawn_child(dir: &Path, sink: Option<&str>) -> (Child, u16) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
        .env("WEFT_QUEUE_CHILD", dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(s) = sink {
        cmd.env("WEFT_QUEUE_SINK", s);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines.next().expect("child exited before printing its port").unwrap();
        // libtest prints "test child_server ... " before our line, unterminated.
        if let Some(i) = line.find("PORT ") {
            break line[i + 5..].trim().parse().unwrap();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

fn kill9(child: &mut Child) {
    // `Child::kill` is SIGKILL on Unix: no destructor, flush or shutdown hook runs.
    child.kill().unwrap();
    let _ = child.wait();
}

async fn client(port: u16) -> Client {
    let cfg = ClientConfig { request_timeout: Duration::from_secs(5), ..ClientConfig::default() };
    Client::connect(Endpoint::Tcp(format!("127.0.0.1:{port}")), cfg).await.unwrap()
}

/// Send `n` requests to `route` from 8 tasks; kill the child once
/// `kill_after` were acknowledged. Returns the acknowledged keys.
async fn send_and_kill(port: u16, route: &str, n: usize, kill_after: usize, child: &mut Child) -> HashSet<String> {
    let c = client(port).await;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..8 {
        let (c, acked, next, route) = (c.clone(), acked.clone(), next.clone(), route.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return;
                }
                let k = format!("k{i}");
                match c.call::<_, Ack>(&route, &Job { k: k.clone() }).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(k);
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < kill_after && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    kill9(child);
    for t in tasks {
        let _ = t.await;
    }
    c.close();
    acked.lock().unwrap().clone()
}

async fn wait_drained(port: u16, prefix: &str, name: &str) -> QueueInfo {
    let c = client(port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info: QueueInfo = c.call(&format!("{prefix}.show"), &NameReq { name: name.into() }).await.unwrap();
        if info.incoming == 0 && info.in_flight == 0 {
            return info;
        }
        assert!(Instant::now() < deadline, "queue never drained: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_endpoint_survives_kill9() {
    if std::env::var("WEFT_QUEUE_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_child(dir.path(), None);
    let acked = send_and_kill(port, "jobs.submit", 3000, 600, &mut child).await;
    assert!(acked.len() >= 600, "only {} acked", acked.len());
    let handled_before: HashSet<String> = read_lines(&dir.path().join("handled.log"));
    let (mut child, port) = spawn_child(dir.path(), None);
    let info = wait_drained(port, "weft.queue", "jobs.submit").await;
    kill9(&mut child);
    let handled = read_lines(&dir.path().join("handled.log"));
    let missing: Vec<_> = acked.iter().filter(|k| !handled.contains(*k)).collect();
    assert!(missing.is_empty(), "{} acknowledged requests never handled, e.g. {:?}", missing.len(), missing.first());
    eprintln!(
        "kill -9: {} acked, {} handled before the kill, {} after restart ({} processed by the new process), {} errors",
        acked.len(),
        handled_before.len(),
        handled.len(),
        info.processed,
        info.errors
    );
    assert!(info.processed > 0, "the restarted process had nothing to do: the kill came too late to prove anything");
}

fn read_lines(p: &Path) -> HashSet<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_sender_survives_kill9_and_waits_for_a_down_server() {
    if std::env::var("WEFT_QUEUE_CHILD").is_ok() {
        return;
    }
    // Reserve a port for the sink, which stays down while the child sends.
    let sink_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_child(dir.path(), Some(&sink_addr));
    let acked = send_and_kill(port, "send", 400, 200, &mut child).await;
    assert!(acked.len() >= 200);
    let (mut child, port) = spawn_child(dir.path(), Some(&sink_addr));
    // Now bring the sink up: the sender has been retrying all along.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let r2 = received.clone();
    let mut sink = Service::new("sink");
    sink.endpoint("sink", move |job: Job| {
        let r2 = r2.clone();
        async move {
            r2.lock().unwrap().push(job.k);
            Ok(())
        }
    })
    .unwrap();
    let server = Server::new(ServerConfig::default(), sink.into_handler());
    server.bind_tcp(&sink_addr).await.unwrap();
    let info = wait_drained(port, "weft.sender", "sink").await;
    kill9(&mut child);
    server.shutdown(Duration::from_secs(1)).await;
    let got: HashSet<String> = received.lock().unwrap().iter().cloned().collect();
    let missing: Vec<_> = acked.iter().filter(|k| !got.contains(*k)).collect();
    assert!(missing.is_empty(), "{} acknowledged messages never delivered, e.g. {:?}", missing.len(), missing.first());
    assert_eq!(info.errors, 0);
    eprintln!("sender kill -9: {} acked, {} delivered ({} distinct)", acked.len(), received.lock().unwrap().len(), got.len());
}
