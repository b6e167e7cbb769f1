//! The history recorder: a load driver for the `log.*` endpoints that writes
//! down everything it did and saw.
//!
//! N producer tasks, each a sequential process, produce one record per
//! request with a unique value to a random partition. Each produce is
//! recorded as an invoke and then exactly one of ok (with the offset), fail
//! (refused before any write) or info (fate unknown). When every producer
//! has stopped, every partition is read fully from every node and each
//! record read is recorded, then a `read_end` per complete read.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;
use weft_broker::dto::{self, route};
use weft_net::{Client, ClientConfig, ClientError, Target};
use weft_wire::ErrorCode;

use crate::history::{Event, History, Process};
use crate::CheckerError;

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Node addresses (`tcp://HOST:PORT`, or `HOST:PORT`).
    pub nodes: Vec<String>,
    pub topic: String,
    pub partitions: u32,
    /// Replication factor asked for at topic creation (cluster mode only;
    /// sent as `replicas` beside the config).
    pub replicas: Option<u32>,
    pub producers: u32,
    /// How long producers run unless stopped earlier.
    pub duration: Duration,
    pub request_timeout: Duration,
    /// How long to keep trying to reach a node (topic creation, final reads).
    pub reach_timeout: Duration,
    /// Pause between the producers' stop and the final reads, so that
    /// followers healed just before can catch up (a cluster serves reads
    /// up to what is committed; a replica still catching up would look like
    /// a loss).
    pub settle: Duration,
    /// Which endpoints carry records: `log.*`, or the cluster's
    /// `cluster.produce` / `cluster.fetch` (replicated partitions; a fetch
    /// reads the answering replica up to its high watermark).
    pub api: Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    #[default]
    Log,
    Cluster,
}

/// `cluster.produce` answer.
#[derive(serde::Deserialize)]
struct ClusterOffset {
    offset: u64,
}

/// `cluster.fetch` answer.
#[derive(serde::Deserialize)]
struct ClusterFetched {
    #[serde(default)]
    records: Vec<ClusterRecord>,
}

#[derive(serde::Deserialize)]
struct ClusterRecord {
    offset: u64,
    #[serde(default)]
    value: Option<String>,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            nodes: vec!["tcp://127.0.0.1:7400".into()],
            topic: "history".into(),
            partitions: 2,
            replicas: None,
            producers: 4,
            duration: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            reach_timeout: Duration::from_secs(30),
            settle: Duration::ZERO,
            api: Api::Log,
        }
    }
}

/// Parses a node address; a bare `HOST:PORT` means TCP.
pub fn parse_node(addr: &str) -> Result<Target, CheckerError> {
    let full = if addr.contains("://") { addr.to_owned() } else { format!("tcp://{addr}") };
    Target::from_str(&full).map_err(|e| CheckerError::Address { addr: addr.into(), reason: e.to_string() })
}

/// The history so far, in real-time order: times are taken under the lock
/// that appends, so file order is time order.
struct Log {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Log {
    fn push(&self, make: impl FnOnce(u64) -> Event) {
        // A poisoned lock means a recorder task panicked; keep recording
        // what the others do (the panic itself fails the run).
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let t = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        events.push(make(t));
    }
}

pub struct Recorder {
    cfg: RecorderConfig,
    nodes: Vec<Target>,
    log: Log,
    acked: AtomicU64,
    stop: CancellationToken,
}

/// How a produce ended, from the client's point of view.
enum Outcome {
    Ok(u64),
    /// Definitely not written; maybe with the leader to go to instead.
    Fail(String, Option<Target>),
    Info(String),
}

/// The leader address a `not_leader` error carries, under any of the field
/// names a redirect is likely to use.
/// The details may be flat (`{kind: "not_leader", leader_addr}`) or nested
/// (`{not_leader: {group, leader, addr}}`, as weft-cluster sends).
fn redirect(e: &weft_wire::ErrorBody) -> Option<Target> {
    let d = e.details.as_ref()?;
    let d = d.get("not_leader").filter(|n| n.is_object()).unwrap_or(d);
    ["leader_addr", "leader_address", "addr", "leader"].iter().find_map(|k| d.get(*k).and_then(|v| v.as_str())).and_then(|a| parse_node(a).ok())
}

fn is_not_leader(e: &weft_wire::ErrorBody) -> bool {
    let code = serde_json::to_value(e.code).ok();
    let d = e.details.as_ref();
    let kind = d.and_then(|d| d.get("kind")).and_then(|k| k.as_str());
    code.as_ref().and_then(|c| c.as_str()) == Some("not_leader") || kind == Some("not_leader") || d.and_then(|d| d.get("not_leader")).is_some()
}

/// Sorts an error into fail or info. Only errors that are given before the
/// record is written are fail: anything else might follow a write (a
/// replication timeout, a shutdown mid-request), and calling it fail would
/// make the checker report a false violation.
fn classify(e: &ClientError) -> Outcome {
    match e {
        ClientError::Remote(body) => {
            if is_not_leader(body) {
                return Outcome::Fail(format!("not_leader: {}", body.message), redirect(body));
            }
            match body.code {
                ErrorCode::UnknownRoute
                | ErrorCode::BadBody
                | ErrorCode::Validation
                | ErrorCode::Busy
                | ErrorCode::BadFrame
                | ErrorCode::TooLarge
                | ErrorCode::UnsupportedVersion
                | ErrorCode::HandshakeRequired
                | ErrorCode::Unauthorized
                | ErrorCode::NotFound => Outcome::Fail(format!("{:?}: {}", body.code, body.message), None),
                _ => Outcome::Info(format!("{:?}: {}", body.code, body.message)),
            }
        }
        // Never sent: the client refuses before writing a frame.
        ClientError::Closed | ClientError::DatagramTooLarge(_) | ClientError::Body(_) => Outcome::Fail(e.to_string(), None),
        _ => Outcome::Info(e.to_string()),
    }
}

// Our own request bodies with only the fields we set, so that fields added
// to the broker's DTOs do not break the recorder (the wire takes absent
// fields as their defaults).
#[derive(Serialize)]
struct RecordReq {
    partition: u32,
    value: ByteBuf,
}

#[derive(Serialize)]
struct ProduceReq<'a> {
    topic: &'a str,
    records: [RecordReq; 1],
}

#[derive(Serialize)]
struct FetchReq<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    max_records: usize,
}

fn text(v: &Option<ByteBuf>) -> String {
    match v {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "<tombstone>".into(),
    }
}

impl Recorder {
    pub fn new(cfg: RecorderConfig) -> Result<Recorder, CheckerError> {
        let nodes = cfg.nodes.iter().map(|n| parse_node(n)).collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(CheckerError::Address { addr: String::new(), reason: "no node given".into() });
        }
        Ok(Recorder { cfg, nodes, log: Log { start: Instant::now(), events: Mutex::default() }, acked: AtomicU64::new(0), stop: CancellationToken::new() })
    }

    /// Acknowledged produces so far (for a driver waiting on progress).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Ends the produce phase early.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn history(&self) -> History {
        History { events: self.log.events.lock().unwrap_or_else(|p| p.into_inner()).clone() }
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            client_name: "weft-history".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: self.cfg.request_timeout,
            ..ClientConfig::default()
        }
    }

    /// Connects to `target`, retrying until the reach timeout.
    async fn reach(&self, target: &Target) -> Result<Client, CheckerError> {
        let deadline = Instant::now() + self.cfg.reach_timeout;
        loop {
            match Client::connect(target.clone(), self.client_config()).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => return Err(CheckerError::Unreachable { what: "connect", reason: format!("{target}: {e}") }),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Creates the topic through any node (an existing topic is fine).
    pub async fn create_topic(&self) -> Result<(), CheckerError> {
        let body = serde_json::json!({"name": self.cfg.topic, "config": {"partitions": self.cfg.partitions}});
        let deadline = Instant::now() + self.cfg.reach_timeout;
        let mut last = String::new();
        for i in 0.. {
            if Instant::now() >= deadline || self.stop.is_cancelled() {
                break;
            }
            let Some(node) = self.nodes.get(i % self.nodes.len()) else { break };
            let Ok(client) = Client::connect(node.clone(), self.client_config()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // A replicated topic goes through the metadata group
            // (`cluster.create_topic`); a node without it takes the plain create.
            if let Some(replicas) = self.cfg.replicas {
                let req = serde_json::json!({"name": self.cfg.topic, "partitions": self.cfg.partitions, "replicas": replicas});
                match client.call::<_, serde_json::Value>("cluster.create_topic", &req).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.code() == Some(ErrorCode::Conflict) => return Ok(()),
                    Err(e) if e.code() == Some(ErrorCode::UnknownRoute) => {}
                    Err(e) => {
                        last = format!("{node}: cluster.create_topic: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            match client.call::<_, serde_json::Value>(route::TOPIC_CREATE, &body).await {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(ErrorCode::Conflict) => return Ok(()),
                Err(e) => last = format!("{node}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(CheckerError::Unreachable { what: "create the topic", reason: last })
    }

    /// Runs the producers until the configured duration passes or `stop`.
    pub async fn produce(self: &Arc<Self>) -> Result<(), CheckerError> {
        let deadline = Instant::now() + self.cfg.duration;
        let mut tasks = vec![];
        for p in 0..self.cfg.producers {
            let me = self.clone();
            tasks.push(tokio::spawn(async move { me.producer(Process::from(p), deadline).await }));
        }
        for t in tasks {
            t.await.map_err(|e| CheckerError::Task(e.to_string()))?;
        }
        Ok(())
    }

    async fn producer(&self, process: Process, deadline: Instant) {
        let mut clients: HashMap<String, Client> = HashMap::new();
        // Partition -> the node believed to lead it (redirects are cached).
        let mut leaders: HashMap<u32, Target> = HashMap::new();
        let mut next_node = process as usize;
        let mut n = 0u64;
        while Instant::now() < deadline && !self.stop.is_cancelled() {
            let partition = rand::thread_rng().gen_range(0..self.cfg.partitions.max(1));
            let target = match leaders.get(&partition) {
                Some(t) => t.clone(),
                // In range: `new` refuses an empty node list.
                None => self.nodes[next_node % self.nodes.len()].clone(),
            };
            let key = target.to_string();
            if !clients.contains_key(&key) {
                match Client::connect(target.clone(), self.client_config()).await {
                    Ok(c) => {
                        clients.insert(key.clone(), c);
                    }
                    Err(_) => {
                        // Nothing was sent: no event. Try another node.
                        leaders.remove(&partition);
                        next_node += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            let Some(client) = clients.get(&key) else { continue };
            let value = format!("p{process}-{n}");
            n += 1;
            self.log.push(|t| Event::Invoke { process, partition, value: value.clone(), time_us: t });
            let outcome = if self.cfg.api == Api::Cluster {
                let req = serde_json::json!({"topic": self.cfg.topic, "partition": partition, "value": value});
                match client.call::<_, ClusterOffset>("cluster.produce", &req).await {
                    Ok(r) => Outcome::Ok(r.offset),
                    Err(e) => classify(&e),
                }
            } else {
                self.produce_log(client, partition, &value).await
            };
            match outcome {
                Outcome::Ok(offset) => {
                    self.log.push(|t| Event::Ok { process, partition, value, offset, time_us: t });
                    self.acked.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Fail(error, leader) => {
                    self.log.push(|t| Event::Fail { process, partition, value, time_us: t, error });
                    match leader {
                        Some(l) => {
                            leaders.insert(partition, l);
                        }
                        None => {
                            leaders.remove(&partition);
                            next_node += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Outcome::Info(error) => {
                    self.log.push(|t| Event::Info { process, partition, value, time_us: t, error });
                    // The node may be down or no longer lead: ask another.
                    leaders.remove(&partition);
                    next_node += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Reads every partition fully from every node (after the producers
    /// stopped). A node that cannot be reached within the reach timeout is
    /// skipped (its partitions get no `read_end` from it) and named in the
    /// returned list.
    pub async fn final_reads(&self) -> Vec<String> {
        tokio::time::sleep(self.cfg.settle).await;
        let mut unreachable = vec![];
        for (i, node) in self.nodes.iter().enumerate() {
            let process = Process::from(self.cfg.producers) + i as u64;
            let client = match self.reach(node).await {
                Ok(c) => c,
                Err(e) => {
                    unreachable.push(e.to_string());
                    continue;
                }
            };
            for partition in 0..self.cfg.partitions {
                if let Err(e) = self.read_partition(&client, process, &node.to_string(), partition).await {
                    unreachable.push(format!("{node} partition {partition}: {e}"));
                }
            }
        }
        unreachable
    }

    async fn produce_log(&self, client: &Client, partition: u32, value: &str) -> Outcome {
        let req = ProduceReq { topic: &self.cfg.topic, records: [RecordReq { partition, value: ByteBuf::from(value.as_bytes().to_vec()) }] };
        match client.call::<_, dto::ProduceResponse>(route::PRODUCE, &req).await {
            Ok(resp) => match resp.results.first() {
                Some(dto::ProduceResult { offset: Some(o), partition: Some(p), .. }) if *p == partition => Outcome::Ok(*o),
                Some(dto::ProduceResult { error: Some(body), .. }) => classify(&ClientError::Remote(body.clone())),
                other => Outcome::Info(format!("unexpected produce result {other:?}")),
            },
            Err(e) => classify(&e),
        }
    }

    /// One fetch: (offset, value) pairs, and where the next one starts.
    async fn fetch_once(&self, client: &Client, partition: u32, offset: u64) -> Result<(Vec<(u64, String)>, u64), ClientError> {
        let req = FetchReq { topic: &self.cfg.topic, partition, offset, max_records: 1000 };
        if self.cfg.api == Api::Cluster {
            let f: ClusterFetched = client.call("cluster.fetch", &req).await?;
            let next = f.records.last().map_or(offset, |r| r.offset + 1);
            let recs = f.records.into_iter().map(|r| (r.offset, r.value.unwrap_or_else(|| "<tombstone>".into()))).collect();
            return Ok((recs, next));
        }
        let f: dto::FetchResponse = client.call(route::FETCH, &req).await?;
        let recs = f.records.iter().map(|r| (r.offset, text(&r.value))).collect();
        Ok((recs, f.next_offset))
    }

    async fn read_partition(&self, client: &Client, process: Process, node: &str, partition: u32) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.cfg.reach_timeout;
        let mut offset = 0u64;
        loop {
            let (records, next) = match self.fetch_once(client, partition, offset).await {
                Ok(f) => f,
                // A node just restarted or electing: try again for a while.
                Err(e) if Instant::now() < deadline && e.code() != Some(ErrorCode::NotFound) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if records.is_empty() {
                break;
            }
            for (o, value) in records {
                self.log.push(|t| Event::Read { process, node: node.to_owned(), partition, offset: o, value, time_us: t, final_read: true });
            }
            offset = next.max(offset + 1);
        }
        self.log.push(|t| Event::ReadEnd { process, node: node.to_owned(), partition, end_offset: offset, time_us: t });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use weft_wire::ErrorBody;

    fn fate(e: ClientError) -> (&'static str, Option<String>) {
        match classify(&e) {
            Outcome::Ok(_) => ("ok", None),
            Outcome::Fail(_, l) => ("fail", l.map(|t| t.to_string())),
            Outcome::Info(_) => ("info", None),
        }
    }

    #[test]
    fn only_refusals_before_a_write_are_fail() {
        let nested = ErrorBody::new(ErrorCode::Unavailable, "not leader")
            .with_details(serde_json::json!({"not_leader": {"group": 3, "leader": 2, "addr": "127.0.0.1:7402"}}));
        let (f, leader) = fate(ClientError::Remote(nested));
        assert_eq!(f, "fail");
        assert!(leader.unwrap().contains("127.0.0.1:7402"));
        let flat = ErrorBody::new(ErrorCode::Unknown, "x").with_details(serde_json::json!({"kind": "not_leader", "leader_addr": "tcp://10.1.0.3:7400"}));
        assert_eq!(fate(ClientError::Remote(flat)).0, "fail");
        assert_eq!(fate(ClientError::Remote(ErrorBody::new(ErrorCode::Validation, "bad"))).0, "fail");
        // Could have been written: unknown fate.
        assert_eq!(fate(ClientError::Remote(ErrorBody::new(ErrorCode::Unavailable, "replication timed out"))).0, "info");
        assert_eq!(fate(ClientError::Remote(ErrorBody::new(ErrorCode::Timeout, "t"))).0, "info");
        assert_eq!(fate(ClientError::ConnectionLost).0, "info");
        assert_eq!(fate(ClientError::Timeout(Duration::from_secs(1))).0, "info");
        assert_eq!(fate(ClientError::Closed).0, "fail");
    }
}
