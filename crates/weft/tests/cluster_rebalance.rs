//! The rebalancer with real `weft serve` processes (docs/cluster.md,
//! "Rebalancer"): four nodes, a topic of 4 partitions with replicas 3, two
//! sequential producers through `log.produce` the whole time.
//!
//! 1. `weft cluster remove-node 4`: each partition node 4 hosted gets a
//!    replacement replica; node 4 is then killed.
//! 2. A new data-only node 5 joins (`add-node` + `--cluster-join`): replicas
//!    move onto it, and each partition ends up led by its preferred replica,
//!    one partition per node.
//! 3. kill -9 of node 2, which stays down past `cluster.rebalance.down_after_ms`:
//!    its replicas are re-replicated on the others.
//!
//! Then every replica of the final placement is read in full, and the whole
//! history goes through weft-checker: no acknowledged record lost on any of
//! the three current replicas, no phantom, one value per offset. Every
//! child is ended by pid.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
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
use cluster::{partition_leader, procs, start_cluster, until, Proc};

const TOPIC: &str = "rb";
const PARTITIONS: u32 = 4;

/// Short rebalancer timings so the test takes seconds (the defaults are minutes).
fn rebalance_env() -> Vec<(String, String)> {
    vec![
        ("WEFT_CLUSTER_REBALANCE_DOWN_AFTER_MS".into(), "3000".into()),
        ("WEFT_CLUSTER_REBALANCE_LEADER_SETTLE_MS".into(), "2000".into()),
        ("WEFT_CLUSTER_REBALANCE_RETRY_MS".into(), "1000".into()),
    ]
}

struct Shared {
    events: Mutex<Vec<Event>>,
    /// Nodes producers may use, by index into the processes.
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

/// One record per request, partitions in turn, through the usable nodes in turn.
async fn producer(process: u64, addrs: Vec<String>, sh: Arc<Shared>) {
    let mut clients: Vec<Option<Client>> = vec![None; addrs.len()];
    let mut i = 0u64;
    let mut turn = process as usize;
    while !sh.stop.load(Ordering::Relaxed) {
        turn += 1;
        let n = turn % addrs.len();
        if !sh.usable.lock().unwrap()[n] {
            tokio::time::sleep(Duration::from_millis(1)).await;
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
        let partition = (i % u64::from(PARTITIONS)) as u32;
        let value = format!("p{process}-{i}");
        i += 1;
        sh.push(Event::Invoke { process, partition, value: value.clone(), time_us: sh.now() });
        let body = serde_json::json!({"topic": TOPIC, "records": [{"partition": partition, "value": value}]});
        let r: Result<Value, ClientError> = c.call("log.produce", &body).await;
        let time_us = sh.now();
        match r {
            Ok(v) => match v["results"][0]["offset"].as_u64() {
                Some(offset) => {
                    sh.acked.fetch_add(1, Ordering::Relaxed);
                    sh.push(Event::Ok { process, partition, value, offset, time_us });
                }
                None => sh.push(Event::Info { process, partition, value, time_us, error: v.to_string() }),
            },
            Err(e) if refused(&e) => sh.push(Event::Fail { process, partition, value, time_us, error: e.to_string() }),
            Err(e) => {
                sh.push(Event::Info { process, partition, value, time_us, error: e.to_string() });
                clients[n] = None;
            }
        }
        // A bounded load: a few hundred records per second at most.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn wait_acks(sh: &Shared, more: u64, what: &str) {
    let want = sh.acked.load(Ordering::Relaxed) + more;
    until(what, || (sh.acked.load(Ordering::Relaxed) >= want).then_some(()));
}

/// This node's own copy of a partition: (high watermark, records).
fn local_read(p: &Proc, partition: u32) -> Option<(u64, Vec<(u64, String)>)> {
    let body = format!(r#"{{"topic":"{TOPIC}","partition":{partition},"offset":0,"max_records":100000}}"#);
    let f = p.call("cluster.local.fetch", &body).ok()?;
    let recs = f["records"]
        .as_array()?
        .iter()
        .map(|r| {
            let v = r["value"].as_array().map(|b| b.iter().map(|x| x.as_u64().unwrap() as u8).collect()).unwrap_or_else(|| r["value"].as_str().unwrap_or_default().as_bytes().to_vec());
            (r["offset"].as_u64().unwrap(), String::from_utf8(v).unwrap())
        })
        .collect();
    Some((f["high_watermark"].as_u64()?, recs))
}

/// The placement (partition -> replicas) once no move is in flight, read linearizably.
fn settled_placement(p: &Proc) -> Option<BTreeMap<u32, Vec<u64>>> {
    let m = p.call("cluster.meta", "null").ok()?;
    if !m["moves"].as_object().is_some_and(|o| o.is_empty()) {
        return None;
    }
    let parts = m["topics"][TOPIC]["partitions"].as_array()?;
    Some(parts.iter().map(|x| (x["partition"].as_u64().unwrap() as u32, x["replicas"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect())).collect())
}

/// Start a node that joins an existing cluster (`--cluster-join`), as `Proc::start` does otherwise.
fn start_joining(p: &mut Proc) {
    let mut c = Command::new(common::WEFT);
    c.args(["serve", "--data-dir"])
        .arg(&p.dir)
        .args(["--tcp-addr", &format!("127.0.0.1:{}", p.native), "--disable", "udp"])
        .args(["--http-addr", &format!("127.0.0.1:{}", p.http)])
        .args(["--node-id", &p.id.to_string(), "--cluster-addr", &p.cluster_addr(), "--cluster-join", "--roles", "data"])
        .env_remove("WEFT_CONFIG")
        .env_remove("WEFT_ADDR")
        .env("WEFT_CLUSTER_TICK_MS", "50")
        .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(p.dir.with_extension("log")).unwrap()));
    p.child = Some(c.spawn().unwrap());
}

#[test]
fn remove_join_and_kill9_move_replicas_and_keep_every_ack() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=5);
    for p in ps.iter_mut() {
        p.env = rebalance_env();
    }
    let mut joiner = ps.pop().unwrap();
    let _peers = start_cluster(&mut ps);
    let o = ps[0].weft(&["topic", "create", TOPIC, "--partitions", &PARTITIONS.to_string(), "--replicas", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for part in 0..PARTITIONS {
        until("a partition leader", || partition_leader(&ps, TOPIC, u64::from(part)));
    }
    let first = until("the first placement", || settled_placement(&ps[0]));
    assert_eq!(first.values().filter(|r| r.contains(&4)).count(), 3, "{first:?}");

    // Producers through nodes 1-3 (index 3 is node 4, removed below; 4 is the joiner).
    let sh = Arc::new(Shared { events: Mutex::default(), usable: Mutex::new(vec![true, true, true, false, false]), acked: AtomicU64::new(0), stop: AtomicBool::new(false), t0: Instant::now() });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addrs: Vec<String> = ps.iter().map(|p| p.addr()).chain([joiner.addr()]).collect();
    let tasks: Vec<_> = (0..2).map(|i| rt.spawn(producer(i, addrs.clone(), sh.clone()))).collect();
    wait_acks(&sh, 40, "acks before the removal");

    // 1. remove-node 4: its three replicas are replaced on nodes 1-3.
    // When node 4 leads the metadata group it hands over first and the
    // forwarded change is dropped (answered `timeout`): ask again, as an
    // operator would; a removal that went through meanwhile answers not_found.
    until("remove-node 4", || {
        let rm = ps[0].weft(&["cluster", "remove-node", "4"]);
        let err = String::from_utf8_lossy(&rm.stderr).into_owned();
        (rm.status.success() || err.contains("not a member")).then_some(()).or_else(|| {
            eprintln!("remove-node: {err}");
            None
        })
    });
    let after_remove = until("node 4's replicas replaced", || settled_placement(&ps[0]).filter(|p| p.values().all(|r| !r.contains(&4))));
    assert!(after_remove.values().all(|r| r.len() == 3), "{after_remove:?}");
    ps[3].kill();
    wait_acks(&sh, 40, "acks after the removal");

    // 2. A data-only node 5 joins: it gets its share of replicas, and leadership spreads.
    let add = ps[0].weft(&["cluster", "add-node", "5", &joiner.cluster_addr(), "--roles", "data"]);
    assert!(add.status.success(), "add-node: {}", String::from_utf8_lossy(&add.stderr));
    start_joining(&mut joiner);
    let spread = until("replicas moved onto node 5", || settled_placement(&ps[0]).filter(|p| p.values().filter(|r| r.contains(&5)).count() == 3));
    sh.usable.lock().unwrap()[4] = true;
    until("each partition led by its preferred replica, one per node", || {
        let m = settled_placement(&ps[0])?;
        let statuses: Vec<Value> = [&ps[0], &ps[1], &ps[2], &joiner].iter().filter_map(|p| p.status()).collect();
        let mut led: BTreeMap<u64, u32> = BTreeMap::new();
        for (part, r) in &m {
            // The leader as a replica of the partition sees it.
            let l = statuses.iter().find_map(|s| s["partitions"].as_array()?.iter().find(|x| x["topic"] == TOPIC && x["partition"] == *part)?["leader"].as_u64())?;
            if Some(&l) != r.first() {
                return None;
            }
            *led.entry(l).or_default() += 1;
        }
        (led.len() == 4 && led.values().all(|c| *c == 1)).then_some(())
    });
    wait_acks(&sh, 40, "acks after the join");

    // 3. kill -9 of node 2, down past down_after: re-replicated on 1, 3 and 5.
    sh.usable.lock().unwrap()[1] = false;
    ps[1].kill();
    let fin = until("node 2's replicas re-replicated", || settled_placement(&ps[0]).filter(|p| p.values().all(|r| !r.contains(&2))));
    wait_acks(&sh, 40, "acks after the re-replication");
    sh.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).unwrap();
    }

    // Every replica of the final placement holds every acknowledged record.
    let mut events = std::mem::take(&mut *sh.events.lock().unwrap());
    let by_id = |id: u64| [&ps[0], &ps[1], &ps[2], &joiner].into_iter().find(|p| p.id == id).unwrap();
    for (part, replicas) in &fin {
        assert_eq!(replicas.len(), 3, "partition {part}: {replicas:?}");
        let want_hw = events.iter().filter_map(|e| if let Event::Ok { offset, partition, .. } = e { (partition == part).then_some(offset + 1) } else { None }).max().unwrap_or(0);
        for id in replicas {
            let (hw, recs) = until("every replica caught up", || local_read(by_id(*id), *part).filter(|(hw, _)| *hw >= want_hw));
            let node = id.to_string();
            for (offset, value) in recs {
                events.push(Event::Read { process: 100, node: node.clone(), partition: *part, offset, value, time_us: sh.now(), final_read: true });
            }
            events.push(Event::ReadEnd { process: 100, node, partition: *part, end_offset: hw, time_us: sh.now() });
        }
    }
    let report = weft_checker::check(&History { events });
    eprintln!("placements: first {first:?}, after remove {after_remove:?}, with node 5 {spread:?}, final {fin:?}; {:?}", report.stats);
    assert!(report.ok(), "history violations: {:#?}", report.violations);
    assert!(report.stats.acked >= 160 && report.stats.complete_final_reads == 12, "{:?}", report.stats);
    let s = ps[0].status().unwrap();
    assert!(s["moves_done"].as_u64().unwrap() >= 9, "moves done: {}", s["moves_done"]);
    assert!(s["moves"].as_array().unwrap().is_empty());
    let text = String::from_utf8(ps[0].weft(&["cluster", "status"]).stdout).unwrap();
    assert!(text.contains("moves in flight: 0") && text.contains(&format!("done: {}", s["moves_done"])), "{text}");
    // The same numbers in the stats and on /metrics.
    let stats = ps[0].json(&["stats", "--json"]).unwrap();
    let text = stats.to_string();
    assert!(text.contains("cluster.rebalance.moves_done") && text.contains("cluster.rebalance.moves_in_flight"), "{text}");
    let (code, body) = ps[0].http("GET", "/metrics", "").unwrap();
    assert_eq!(code, 200);
    let done: f64 = body.lines().find_map(|l| l.strip_prefix("weft_rebalance_moves_done_total ")).unwrap_or_else(|| panic!("no moves metric in {body}")).trim().parse().unwrap();
    assert!(done >= 9.0, "weft_rebalance_moves_done_total {done}");
    assert!(body.contains("weft_rebalance_moves_in_flight 0"), "moves in flight on /metrics");
    for p in ps.iter_mut().chain([&mut joiner]) {
        p.kill();
    }
}
