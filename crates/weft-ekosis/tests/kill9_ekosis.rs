//! kill -9 through the ekosis protocol: a child process (this test binary
//! re-run with WEFT_EKO_CHILD set) serves a queued endpoint over the ekosis
//! codec; ekosis-protocol clients submit jobs, the child is SIGKILLed
//! mid-stream and restarted, and every job whose `{"span_key": ...}`
//! acknowledgement came back must have been handled. (ekosis 0.17 itself loses
//! them: its acknowledgement precedes queueing and its queue is in memory.)
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use weft_ekosis::{new_span_key, ClientOptions, EkosisClient, EkosisConfig, EkosisServer};
use weft_net::Endpoint;
use weft_queue::{Manager, ManagerOptions, QueueOptions};
use weft_service::{Service, ServiceError};

#[derive(serde::Deserialize)]
struct Job {
    #[allow(dead_code)]
    n: i64,
}

#[test]
fn eko_child_server() {
    let Ok(dir) = std::env::var("WEFT_EKO_CHILD") else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = PathBuf::from(dir);
        let mut svc = Service::new("eko-kill9");
        let manager = Manager::new(&dir.join("queues"), &svc, ManagerOptions::default()).unwrap();
        let log = Arc::new(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("handled.log")).unwrap()));
        manager
            .queued_endpoint_with(&mut svc, "jobs.submit", QueueOptions::default(), move |_job: Job, d| {
                let log = log.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let mut f = log.lock().unwrap();
                    writeln!(f, "{}", d.uid).map_err(ServiceError::from_err)?;
                    f.sync_data().map_err(ServiceError::from_err)?;
                    Ok(())
                }
            })
            .unwrap();
        let handler = svc.into_handler();
        let server = EkosisServer::new(&handler, manager, EkosisConfig::default());
        let addr = server.bind_tcp("127.0.0.1:0").await.unwrap();
        println!("PORT {}", addr.port());
        std::io::stdout().flush().unwrap();
        std::future::pending::<()>().await;
    });
}

fn spawn_child(dir: &Path) -> (Child, u16) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "eko_child_server", "--nocapture", "--test-threads=1"])
        .env("WEFT_EKO_CHILD", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("child exited early").unwrap();
        if let Some(i) = line.find("PORT ") {
            break line[i + 5..].trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_ekosis_jobs_survive_kill9() {
    if std::env::var("WEFT_EKO_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_child(dir.path());
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut tasks = vec![];
    for _ in 0..8 {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            // Transient clients, as ekosis' own: one connection per job.
            let c = EkosisClient::new(Endpoint::Tcp(format!("127.0.0.1:{port}")), ClientOptions { max_retries: 1, ..ClientOptions::default() });
            for i in 0..250 {
                let sk = new_span_key();
                match c.call_with("jobs.submit", &sk, &json!({"n": i})).await {
                    Ok(r) if r.status == 0 => {
                        acked.lock().unwrap().insert(sk.to_string());
                    }
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);
    let (mut child, port) = spawn_child(dir.path());
    let c = EkosisClient::new(Endpoint::Tcp(format!("127.0.0.1:{port}")), ClientOptions::default());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = c.call("eco.buffered_handler.data", &json!({"queue_route_key": "jobs.submit"})).await.unwrap();
        if d["queue_data"]["database_sizes"]["pending"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never drained: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    let handled: HashSet<String> = std::fs::read_to_string(dir.path().join("handled.log")).unwrap().lines().map(str::to_owned).collect();
    let missing: Vec<_> = acked.iter().filter(|k| !handled.contains(*k)).collect();
    assert!(missing.is_empty(), "{} acknowledged jobs lost, e.g. {:?}", missing.len(), missing.first());
}
