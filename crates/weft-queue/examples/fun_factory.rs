//! The "fun factory" (after Ecosystem's example of the same name), on Weft:
//! a router service fans requests out to five small services (fortune, joker,
//! lottery, magic eight ball, time reporter) and logs every request and
//! response through durable queued senders to a tracker service, whose
//! `app.log_request` / `app.log_response` are queued endpoints.
//!
//! One command runs it all (seven processes on loopback, a short client
//! session, the tracker's tally, then a clean stop):
//!
//!     cargo run -p weft-queue --example fun_factory
//!
//! Or one role per process:
//!     fun_factory serve ROLE --port P --dir D [--tracker HOST:PORT] [--peers fortune=HOST:PORT,...]
//! ROLE: router, fortune, joker, lottery, eight_ball, time, tracker.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_queue::{Manager, ManagerOptions, MeteredHandler, NameReq, NativeOutbound, QueueInfo, QueueOptions, QueuedSender};
use weft_service::{Service, ServiceError};

const ROLES: [&str; 7] = ["tracker", "fortune", "joker", "lottery", "eight_ball", "time", "router"];

#[derive(Serialize, Deserialize)]
struct RouterRequest {
    request: String,
}
#[derive(Serialize, Deserialize)]
struct RouterResponse {
    response: String,
}
#[derive(Serialize, Deserialize, Clone)]
struct TrackEntry {
    uid: String,
    data: String,
    timestamp: f64,
}
#[derive(Serialize, Deserialize)]
struct HowMany {
    how_many: u32,
}
#[derive(Serialize, Deserialize)]
struct Question {
    question: String,
}
#[derive(Deserialize)]
struct Empty {}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn pick(items: &[&str]) -> String {
    items.choose(&mut rand::thread_rng()).copied().unwrap_or("").to_owned()
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let role = args.get(2).ok_or("serve ROLE")?.clone();
            let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
            let port: u16 = opt("--port").unwrap_or_else(|| "0".into()).parse()?;
            let dir = PathBuf::from(opt("--dir").unwrap_or_else(|| "./fun-factory-data".into()));
            let peers: HashMap<String, String> = opt("--peers")
                .unwrap_or_default()
                .split(',')
                .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            rt.block_on(serve(&role, port, &dir, opt("--tracker"), peers))
        }
        _ => rt.block_on(orchestrate()),
    }
}

/// Run one role until SIGTERM/SIGINT.
async fn serve(role: &str, port: u16, dir: &Path, tracker: Option<String>, peers: HashMap<String, String>) -> Res<()> {
    let mut svc = Service::new(format!("fun-{role}"));
    let manager = Manager::new(&dir.join(role), &svc, ManagerOptions { gather_period: Duration::from_secs(10), history_len: 6 })?;
    manager.register(&mut svc)?;
    match role {
        "fortune" => {
            svc.endpoint("app.fortune", |_: Option<Empty>| async {
                Ok(serde_json::json!({"fortune": pick(&["You will write a fast queue.", "An fsync in time saves nine.", "Beware of torn writes.", "Your retries will be jittered."])}))
            })?;
        }
        "joker" => {
            svc.endpoint("app.joke", |_: Option<Empty>| async {
                Ok(serde_json::json!({"joke": pick(&["I would tell you a UDP joke, but you might not get it.", "There are 10 kinds of people.", "A TCP packet walks into a bar and says: I'd like a beer. The bartender: you'd like a beer? Yes, a beer."])}))
            })?;
        }
        "lottery" => {
            svc.endpoint("app.pick_numbers", |h: HowMany| async move {
                if h.how_many > 20 {
                    return Err(ServiceError::validation("at most 20 draws"));
                }
                let draws: Vec<String> = (0..h.how_many.max(1))
                    .map(|_| {
                        let mut all: Vec<u32> = (1..=49).collect();
                        all.shuffle(&mut rand::thread_rng());
                        let mut six: Vec<u32> = all.into_iter().take(6).collect();
                        six.sort_unstable();
                        six.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
                    })
                    .collect();
                Ok(serde_json::json!({"numbers": draws}))
            })?;
        }
        "eight_ball" => {
            svc.endpoint("app.predict", |q: Question| async move {
                let answer = pick(&["It is certain.", "Ask again later.", "Don't count on it.", "Signs point to yes.", "Very doubtful."]);
                Ok(serde_json::json!({"prediction": format!("{}? {answer}", q.question.trim_end_matches('?'))}))
            })?;
        }
        "time" => {
            svc.endpoint("app.time", |_: Option<Empty>| async { Ok(serde_json::json!({"time": format!("{:.3} seconds since the Unix epoch", now_s())})) })?;
        }
        "tracker" => {
            let log = Arc::new(std::sync::Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("tracker").join("tracker.log"))?));
            let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            for (i, route) in ["app.log_request", "app.log_response"].into_iter().enumerate() {
                let (log, counts) = (log.clone(), counts.clone());
                let opts = QueueOptions { concurrency: 4, ..QueueOptions::default() };
                manager.queued_endpoint(&mut svc, route, opts, move |e: TrackEntry| {
                    let (log, counts) = (log.clone(), counts.clone());
                    async move {
                        let line = format!("{:.3} {} {} {:?}\n", e.timestamp, if i == 0 { "REQUEST " } else { "RESPONSE" }, e.uid, e.data);
                        log.lock().map_err(|_| ServiceError::handler("log lock"))?.write_all(line.as_bytes()).map_err(ServiceError::from_err)?;
                        if let Some(c) = counts.get(i) {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    }
                })?;
            }
            svc.endpoint("tracker.count", move |_: Option<Empty>| {
                let counts = counts.clone();
                async move { Ok(serde_json::json!({"requests": counts[0].load(Ordering::Relaxed), "responses": counts[1].load(Ordering::Relaxed)})) }
            })?;
        }
        "router" => {
            let tracker = tracker.ok_or("the router needs --tracker")?;
            let mut clients = HashMap::new();
            for (name, addr) in &peers {
                let cfg = ClientConfig { client_name: "fun-router".into(), request_timeout: Duration::from_secs(5), ..ClientConfig::default() };
                clients.insert(name.clone(), Client::connect(Endpoint::Tcp(addr.clone()), cfg).await?);
            }
            let out = NativeOutbound::with_defaults(Endpoint::Tcp(tracker));
            let opts = QueueOptions { concurrency: 8, max_transient_retries: None, ..QueueOptions::default() };
            let log_req = manager.queued_sender("log_request", "app.log_request", out.clone(), opts.clone())?;
            let log_rsp = manager.queued_sender("log_response", "app.log_response", out, opts)?;
            let clients = Arc::new(clients);
            svc.endpoint("app.process_message", move |r: RouterRequest| {
                let (clients, log_req, log_rsp) = (clients.clone(), log_req.clone(), log_rsp.clone());
                async move { route(&clients, &log_req, &log_rsp, r).await }
            })?;
        }
        other => return Err(format!("unknown role {other}").into()),
    }
    let handler = MeteredHandler::new(svc.into_handler(), manager.stats().clone());
    let server = Server::new(ServerConfig { server_name: format!("fun-{role}"), ..ServerConfig::default() }, handler);
    let addr = server.bind_tcp(&format!("127.0.0.1:{port}")).await?;
    println!("READY {role} {addr}");
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown(Duration::from_secs(2)).await;
    manager.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

async fn route(clients: &HashMap<String, Client>, log_req: &QueuedSender, log_rsp: &QueuedSender, r: RouterRequest) -> Result<RouterResponse, ServiceError> {
    // One uid ties the request and the response together in the tracker.
    let uid = uuid::Uuid::now_v7().to_string();
    log_req.send(&TrackEntry { uid: uid.clone(), data: r.request.clone(), timestamp: now_s() }).await?;
    let words: Vec<&str> = r.request.split_whitespace().collect();
    let first = words.first().map(|w| w.to_lowercase()).unwrap_or_default();
    let call = |name: &str| clients.get(name).cloned().ok_or_else(|| ServiceError::handler(format!("no client for {name}")));
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    let response = match first.as_str() {
        "fortune" => text(&call("fortune")?.call_json("app.fortune", &serde_json::Value::Null).await.map_err(ServiceError::from_err)?, "fortune"),
        "joke" => text(&call("joker")?.call_json("app.joke", &serde_json::Value::Null).await.map_err(ServiceError::from_err)?, "joke"),
        "lotto" => {
            let how_many = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(1);
            let v = call("lottery")?.call_json("app.pick_numbers", &serde_json::json!({"how_many": how_many})).await.map_err(ServiceError::from_err)?;
            v["numbers"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("\n")).unwrap_or_default()
        }
        "time" => text(&call("time")?.call_json("app.time", &serde_json::Value::Null).await.map_err(ServiceError::from_err)?, "time"),
        _ => text(&call("eight_ball")?.call_json("app.predict", &serde_json::json!({"question": r.request})).await.map_err(ServiceError::from_err)?, "prediction"),
    };
    log_rsp.send(&TrackEntry { uid, data: response.clone(), timestamp: now_s() }).await?;
    Ok(RouterResponse { response })
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Start every role as a child process, talk to the router, show the tally.
async fn orchestrate() -> Res<()> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("weft-fun-factory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ports: HashMap<&str, u16> = ROLES.iter().map(|r| Ok((*r, free_port()?))).collect::<Res<_>>()?;
    let addr = |r: &str| format!("127.0.0.1:{}", ports[r]);
    let peers = ["fortune", "joker", "lottery", "eight_ball", "time"].iter().map(|r| format!("{r}={}", addr(r))).collect::<Vec<_>>().join(",");
    let mut children = Children(vec![]);
    for role in ROLES {
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", role, "--port", &ports[role].to_string(), "--dir", dir.to_str().ok_or("temp dir is not UTF-8")?]);
        if role == "router" {
            cmd.args(["--tracker", &addr("tracker"), "--peers", &peers]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        children.0.push(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("READY") {
            return Err(format!("{role} did not start: {line:?}").into());
        }
        println!("started {}", line.trim().trim_start_matches("READY "));
    }
    let router = Client::connect(Endpoint::Tcp(addr("router")), ClientConfig::default()).await?;
    let session = ["fortune", "joke", "lotto 3", "time", "Will the queue survive kill -9?", "fortune", "joke"];
    let started = Instant::now();
    for req in session {
        let r: RouterResponse = router.call("app.process_message", &RouterRequest { request: req.into() }).await?;
        println!("\n> {req}\n{}", r.response);
    }
    // A burst, to give the queued senders something to do.
    let burst = 200;
    let mut calls = vec![];
    for i in 0..burst {
        let router = router.clone();
        let req = if rand::thread_rng().gen_bool(0.5) { "time".to_owned() } else { format!("question {i}?") };
        calls.push(tokio::spawn(async move { router.call::<_, RouterResponse>("app.process_message", &RouterRequest { request: req }).await }));
    }
    for c in calls {
        c.await??;
    }
    println!("\n{} router calls in {:.2} s", session.len() + burst, started.elapsed().as_secs_f64());
    let router_mgmt = router.clone();
    let tracker = Client::connect(Endpoint::Tcp(addr("tracker")), ClientConfig::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut pending = 0;
        for name in ["log_request", "log_response"] {
            let i: QueueInfo = router_mgmt.call("weft.sender.show", &NameReq { name: name.into() }).await?;
            pending += i.incoming;
        }
        for name in ["app.log_request", "app.log_response"] {
            let i: QueueInfo = tracker.call("weft.queue.show", &NameReq { name: name.into() }).await?;
            pending += i.incoming;
        }
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts: serde_json::Value = tracker.call_json("tracker.count", &serde_json::Value::Null).await?;
    println!("tracker logged {} requests and {} responses (log: {})", counts["requests"], counts["responses"], dir.join("tracker").join("tracker.log").display());
    drop(children);
    println!("stopped; data in {}", dir.display());
    Ok(())
}
