//! Five real `weft serve` processes, one topic with replicas 5, three
//! sequential producers through `log.produce` on live nodes while the test
//! SIGSTOPs the partition leader (it must lose leadership while writes go on
//! through the others; after SIGCONT it rejoins and converges), then kill -9
//! of two nodes (writes go on), restart, and a final full read from every
//! node. The whole history goes through weft-checker: no acknowledged record
//! lost, no phantom, one value per offset on every node, producer order kept.
//! Every child is ended by pid.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_checker::{Event, History};
use weft_net::{Client, ClientConfig, ClientError};
use weft_wire::ErrorCode;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{partition_leader, procs, start_cluster, until};

struct Shared {
    events: Mutex<Vec<Event>>,
    /// Nodes producers may use (not stopped, not killed): index into the processes.
    usable: Mutex<Vec<bool>>,
    acked: AtomicU64,
    stop: AtomicBool,
    t0: Instant,
}

impl Shared {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
}

/// Errors given before anything was written: the record is definitely not in the log.
fn refused(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Remote(b) => matches!(b.code, ErrorCode::NotLeader | ErrorCode::Validation | ErrorCode::BadBody | ErrorCode::NotFound | ErrorCode::Busy),
        _ => false,
    }
}

async fn producer(process: u64, addrs: Vec<String>, sh: Arc<Shared>) {
    let mut clients: Vec<Option<Client>> = vec![None; addrs.len()];
    let mut i = 0u64;
    let mut turn = process as usize;
    while !sh.stop.load(Ordering::Relaxed) {
        turn += 1;
        let n = turn % addrs.len();
        if !sh.usable.lock().unwrap()[n] {
            continue;
        }
        if clients[n].is_none() {
            let cfg = ClientConfig { connect_timeout: Duration::from_secs(2), request_timeout: Duration::from_secs(8), ..ClientConfig::default() };
            match Client::connect(addrs[n].parse::<weft_net::Target>().unwrap(), cfg).await {
                Ok(c) => clients[n] = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(c) = clients[n].clone() else { continue };
        let value = format!("p{process}-{i}");
        i += 1;
        sh.push(Event::Invoke { process, partition: 0, value: value.clone(), time_us: sh.now() });
        let body = serde_json::json!({"topic": "ev", "records": [{"partition": 0, "value": value}]});
        let r: Result<Value, ClientError> = c.call("log.produce", &body).await;
        let time_us = sh.now();
        match r {
            Ok(v) => match v["results"][0]["offset"].as_u64() {
                Some(offset) => {
                    sh.acked.fetch_add(1, Ordering::Relaxed);
                    sh.push(Event::Ok { process, partition: 0, value, offset, time_us });
                }
                None => sh.push(Event::Info { process, partition: 0, value, time_us, error: v.to_string() }),
            },
            Err(e) if refused(&e) => sh.push(Event::Fail { process, partition: 0, value, time_us, error: e.to_string() }),
            Err(e) => {
                sh.push(Event::Info { process, partition: 0, value, time_us, error: e.to_string() });
                // A lost connection is re-made on the next turn.
                clients[n] = None;
            }
        }
    }
}

fn wait_acks(sh: &Shared, more: u64, what: &str) {
    let want = sh.acked.load(Ordering::Relaxed) + more;
    until(what, || (sh.acked.load(Ordering::Relaxed) >= want).then_some(()));
}

fn local_read(p: &cluster::Proc) -> Option<(u64, Vec<(u64, String)>)> {
    let f = p.call("cluster.local.fetch", r#"{"topic":"ev","partition":0,"offset":0,"max_records":100000}"#).ok()?;
    let recs = f["records"].as_array()?.iter().map(|r| (r["offset"].as_u64().unwrap(), String::from_utf8(r["value"].as_array().map(|b| b.iter().map(|x| x.as_u64().unwrap() as u8).collect()).unwrap_or_else(|| r["value"].as_str().unwrap_or_default().as_bytes().to_vec())).unwrap())).collect();
    Some((f["high_watermark"].as_u64()?, recs))
}

#[test]
fn five_nodes_sigstop_of_the_leader_and_kill9_of_two_keep_every_ack() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=5);
    let peers = start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", "ev", "--partitions", "1", "--replicas", "5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let leader = until("a partition leader", || partition_leader(&ps, "ev", 0));

    let sh = Arc::new(Shared { events: Mutex::default(), usable: Mutex::new(vec![true; 5]), acked: AtomicU64::new(0), stop: AtomicBool::new(false), t0: Instant::now() });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addrs: Vec<String> = ps.iter().map(|p| p.addr()).collect();
    let tasks: Vec<_> = (0..3).map(|i| rt.spawn(producer(i, addrs.clone(), sh.clone()))).collect();
    wait_acks(&sh, 50, "acks before the pause");

    // SIGSTOP the partition leader: the others elect a new one and writes go on.
    let li = ps.iter().position(|p| p.id == leader).unwrap();
    sh.usable.lock().unwrap()[li] = false;
    ps[li].pause();
    let new_leader = until("a new partition leader", || partition_leader(&ps, "ev", 0).filter(|l| *l != leader));
    wait_acks(&sh, 50, "acks while the old leader is stopped");

    // SIGCONT: it learns the new term, follows, and catches up.
    ps[li].resume();
    until("the old leader follows again", || {
        let s = ps[li].status()?;
        let p = s["partitions"].as_array()?.iter().find(|x| x["topic"] == "ev")?.clone();
        (p["leader"].as_u64()? != leader).then_some(())
    });
    sh.usable.lock().unwrap()[li] = true;
    let hw_now = local_read(&ps[(li + 1) % 5]).unwrap().0;
    until("the old leader converged", || local_read(&ps[li]).filter(|(hw, _)| *hw >= hw_now).map(|_| ()));
    wait_acks(&sh, 20, "acks after the resume");

    // kill -9 two nodes (the current leader among them): three of five keep the majority.
    let cur = until("the current leader", || partition_leader(&ps, "ev", 0));
    let a = ps.iter().position(|p| p.id == cur).unwrap();
    let b = (a + 2) % 5;
    for k in [a, b] {
        sh.usable.lock().unwrap()[k] = false;
        ps[k].kill();
    }
    wait_acks(&sh, 50, "acks with two nodes down");
    sh.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    for k in [a, b] {
        ps[k].start(&peers);
    }

    // Final full read of every node's own replica.
    let mut events = std::mem::take(&mut *sh.events.lock().unwrap());
    let want_hw = events.iter().filter_map(|e| if let Event::Ok { offset, .. } = e { Some(offset + 1) } else { None }).max().unwrap();
    for p in &ps {
        let (hw, recs) = until("every node caught up", || local_read(p).filter(|(hw, _)| *hw >= want_hw));
        let node = p.id.to_string();
        for (offset, value) in recs {
            events.push(Event::Read { process: 100, node: node.clone(), partition: 0, offset, value, time_us: sh.now(), final_read: true });
        }
        events.push(Event::ReadEnd { process: 100, node, partition: 0, end_offset: hw, time_us: sh.now() });
    }
    let report = weft_checker::check(&History { events });
    eprintln!("leader {leader} stopped, {new_leader} took over; nodes {} and {} killed; {:?}", ps[a].id, ps[b].id, report.stats);
    assert!(report.ok(), "history violations: {:#?}", report.violations);
    assert!(report.stats.acked >= 170 && report.stats.complete_final_reads == 5, "{:?}", report.stats);
    for p in &mut ps {
        p.kill();
    }
}
