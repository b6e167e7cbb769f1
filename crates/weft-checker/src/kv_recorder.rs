//! The key-value history recorder: concurrent clients doing random get,
//! put and compare-and-set on a few keys of one table through
//! `query.execute` (native protocol), each operation recorded with its
//! invoke and complete times and outcome (see [`crate::register`]).
//!
//! Each client is a sequential process that talks to one node and moves to
//! the next one after an error of unknown fate. Values are unique per write
//! (`c{client}-{n}`). CAS comes in three forms: `SET ... IF VERSION = n`
//! (n from the client's last read of the key, or a guess), and BATCHes with
//! one `VALUE(...)` or `MOD_REVISION(...)` compare and one SET (compared
//! against what the client last read). A few plain deletes (tombstones,
//! versions starting again from 1). After the load, every key is read
//! once through every node (linearizable reads too: recorded and checked).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weft_net::{Client, ClientConfig, ClientError, Target};
use weft_wire::ErrorCode;

use crate::CheckerError;
use crate::recorder::parse_node;
use crate::register::{Compare, KvEvent, KvHistory, KvOp, Observed, Outcome};

#[derive(Debug, Clone)]
pub struct KvRecorderConfig {
    /// Node addresses (`tcp://HOST:PORT` or `HOST:PORT`).
    pub nodes: Vec<String>,
    pub table: String,
    /// Keys `k0..k{keys-1}`.
    pub keys: u32,
    pub clients: u32,
    /// The load stops at this duration, at `max_ops` operations, or at `stop`.
    pub duration: Duration,
    pub max_ops: u64,
    pub request_timeout: Duration,
    /// How long to keep trying to reach a node (table creation, final reads).
    pub reach_timeout: Duration,
    pub seed: u64,
}

impl Default for KvRecorderConfig {
    fn default() -> Self {
        KvRecorderConfig {
            nodes: vec!["tcp://127.0.0.1:7400".into()],
            table: "lin".into(),
            keys: 4,
            clients: 4,
            duration: Duration::from_secs(10),
            max_ops: 2000,
            request_timeout: Duration::from_secs(3),
            reach_timeout: Duration::from_secs(30),
            seed: 1,
        }
    }
}

/// How one `query.execute` ended.
enum Answer {
    Ok(Value),
    CompareFailed(String),
    Refused(String),
    Unknown(String),
}

/// Which errors prove the statement had no effect. Only a compare that was
/// evaluated (`compare_failed`) and refusals of the request itself (bad
/// AQL, a frame never sent) are definite; anything else, UNAVAILABLE
/// included (a proposal that timed out may still commit), is unknown.
fn classify(e: &ClientError) -> Answer {
    match e {
        ClientError::Remote(body) => {
            let kind = body
                .details
                .as_ref()
                .and_then(|d| d.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if kind == "compare_failed" {
                return Answer::CompareFailed(body.message.clone());
            }
            match body.code {
                ErrorCode::UnknownRoute
                | ErrorCode::BadBody
                | ErrorCode::Validation
                | ErrorCode::BadFrame
                | ErrorCode::Unauthorized => {
                    Answer::Refused(format!("{:?}: {}", body.code, body.message))
                }
                _ => Answer::Unknown(format!("{:?} {kind}: {}", body.code, body.message)),
            }
        }
        ClientError::Closed | ClientError::Body(_) => Answer::Refused(e.to_string()),
        _ => Answer::Unknown(e.to_string()),
    }
}

/// The history so far; times are taken under the lock that appends.
struct Log {
    start: Instant,
    events: Mutex<Vec<KvEvent>>,
}

impl Log {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
    fn push(&self, e: KvEvent) {
        // A poisoned lock means a client task panicked; keep the others' record.
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
}

pub struct KvRecorder {
    cfg: KvRecorderConfig,
    nodes: Vec<Target>,
    log: Log,
    ops: AtomicU64,
    acked_writes: AtomicU64,
    stop: CancellationToken,
}

/// What a client last read of a key, for its compares.
#[derive(Clone)]
struct Seen {
    value: String,
    version: u64,
    mod_revision: u64,
}

/// Keys and values here are letters, digits and dashes: no escaping needed.
fn quote(s: &str) -> String {
    format!("'{s}'")
}

impl KvRecorder {
    pub fn new(cfg: KvRecorderConfig) -> Result<KvRecorder, CheckerError> {
        let nodes = cfg
            .nodes
            .iter()
            .map(|n| parse_node(n))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(CheckerError::Address {
                addr: String::new(),
                reason: "no node given".into(),
            });
        }
        Ok(KvRecorder {
            cfg,
            nodes,
            log: Log {
                start: Instant::now(),
                events: Mutex::default(),
            },
            ops: AtomicU64::new(0),
            acked_writes: AtomicU64::new(0),
            stop: CancellationToken::new(),
        })
    }

    /// Operations invoked so far (for a driver waiting on progress).
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Acknowledged writes so far.
    pub fn acked_writes(&self) -> u64 {
        self.acked_writes.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn history(&self) -> KvHistory {
        let mut events = self
            .log
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        events.sort_by_key(|e| e.invoke_us);
        KvHistory { events }
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            client_name: "weft-kv-history".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: self.cfg.request_timeout,
            ..ClientConfig::default()
        }
    }

    async fn execute(client: &Client, aql: &str) -> Answer {
        match client
            .call::<_, Value>("query.execute", &json!({ "aql": aql }))
            .await
        {
            Ok(v) => Answer::Ok(v),
            Err(e) => classify(&e),
        }
    }

    /// `CREATE TABLE` through any node (an existing table is fine).
    pub async fn create_table(&self) -> Result<(), CheckerError> {
        let deadline = Instant::now() + self.cfg.reach_timeout;
        let mut last = String::new();
        for i in 0.. {
            if Instant::now() >= deadline {
                break;
            }
            let Some(node) = self.nodes.get(i % self.nodes.len()) else {
                break;
            };
            match Client::connect(node.clone(), self.client_config()).await {
                Ok(c) => match Self::execute(&c, &format!("CREATE TABLE {}", self.cfg.table)).await
                {
                    Answer::Ok(_) => return Ok(()),
                    Answer::Refused(m) | Answer::Unknown(m) | Answer::CompareFailed(m)
                        if m.contains("exists") =>
                    {
                        return Ok(());
                    }
                    Answer::Refused(m) | Answer::Unknown(m) | Answer::CompareFailed(m) => {
                        last = format!("{node}: {m}")
                    }
                },
                Err(e) => last = format!("{node}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(CheckerError::Unreachable {
            what: "create the table",
            reason: last,
        })
    }

    /// Runs the clients until the duration, `max_ops` or `stop`.
    pub async fn run(self: &Arc<Self>) -> Result<(), CheckerError> {
        let deadline = Instant::now() + self.cfg.duration;
        let mut tasks = vec![];
        for c in 0..self.cfg.clients {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                me.client(u64::from(c), deadline).await
            }));
        }
        for t in tasks {
            t.await.map_err(|e| CheckerError::Task(e.to_string()))?;
        }
        Ok(())
    }

    async fn client(&self, process: u64, deadline: Instant) {
        let mut rng = StdRng::seed_from_u64(self.cfg.seed.wrapping_mul(1000).wrapping_add(process));
        let mut node = process as usize;
        let mut client: Option<Client> = None;
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let mut n = 0u64;
        while Instant::now() < deadline && !self.stop.is_cancelled() {
            if self.ops.fetch_add(1, Ordering::Relaxed) >= self.cfg.max_ops {
                break;
            }
            let target = &self.nodes[node % self.nodes.len()];
            if client.is_none() {
                match Client::connect(target.clone(), self.client_config()).await {
                    Ok(c) => client = Some(c),
                    Err(_) => {
                        // Nothing sent: no event. Try another node.
                        self.ops.fetch_sub(1, Ordering::Relaxed);
                        node += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_ref() else { continue };
            let key = format!("k{}", rng.gen_range(0..self.cfg.keys.max(1)));
            let value = format!("c{process}-{n}");
            n += 1;
            let last = seen.get(&key).cloned();
            let t = &self.cfg.table;
            let (op, aql) = match rng.gen_range(0..100) {
                0..=39 => (KvOp::Get, format!("GET {t} {}", quote(&key))),
                40..=61 => (
                    KvOp::Put {
                        value: value.clone(),
                    },
                    format!("SET {t} {} = {}", quote(&key), quote(&value)),
                ),
                // Deletes: tombstones, and versions that start again from 1.
                62..=64 => (KvOp::Delete, format!("DELETE {t} {}", quote(&key))),
                65..=84 => {
                    // Mostly the version last read (likely to succeed), sometimes a guess.
                    let v = match &last {
                        Some(s) if rng.gen_bool(0.8) => s.version,
                        _ => rng.gen_range(0..4),
                    };
                    (
                        KvOp::Cas {
                            cmp: Compare::Version(v),
                            value: value.clone(),
                        },
                        format!(
                            "SET {t} {} = {} IF VERSION = {v}",
                            quote(&key),
                            quote(&value)
                        ),
                    )
                }
                _ => match &last {
                    Some(s) if rng.gen_bool(0.5) => (
                        KvOp::Cas {
                            cmp: Compare::Value(s.value.clone()),
                            value: value.clone(),
                        },
                        format!(
                            "BATCH {{ IF VALUE({t}, {}) = {} THEN {{ SET {t} {} = {} }} }}",
                            quote(&key),
                            quote(&s.value),
                            quote(&key),
                            quote(&value)
                        ),
                    ),
                    Some(s) => (
                        KvOp::Cas {
                            cmp: Compare::ModRevision(s.mod_revision),
                            value: value.clone(),
                        },
                        format!(
                            "BATCH {{ IF MOD_REVISION({t}, {}) = {} THEN {{ SET {t} {} = {} }} }}",
                            quote(&key),
                            s.mod_revision,
                            quote(&key),
                            quote(&value)
                        ),
                    ),
                    None => (
                        KvOp::Cas {
                            cmp: Compare::Version(0),
                            value: value.clone(),
                        },
                        format!("SET {t} {} = {} IF ABSENT", quote(&key), quote(&value)),
                    ),
                },
            };
            let invoke = self.log.now();
            let answer = Self::execute(c, &aql).await;
            let complete = self.log.now();
            let mut e = KvEvent {
                process,
                key: key.clone(),
                op: op.clone(),
                outcome: Outcome::Ok,
                invoke_us: invoke,
                complete_us: Some(complete),
                read: None,
                revision: None,
                node: Some(target.to_string()),
                error: None,
            };
            match answer {
                Answer::Ok(v) => {
                    let revision = v.get("revision").and_then(Value::as_u64);
                    e.revision = revision;
                    if op == KvOp::Get {
                        let read = read_of(&v);
                        match &read {
                            Some(o) => {
                                seen.insert(
                                    key.clone(),
                                    Seen {
                                        value: o.value.clone(),
                                        version: o.version,
                                        mod_revision: o.mod_revision.unwrap_or(0),
                                    },
                                );
                            }
                            None => {
                                seen.remove(&key);
                            }
                        }
                        e.read = Some(read);
                    } else {
                        self.acked_writes.fetch_add(1, Ordering::Relaxed);
                        // After a CAS the key's state is known: a version
                        // compare names the old version, and a value or mod
                        // revision compare names the state last read (values
                        // are unique). A plain put's version is not in the
                        // answer: read it next time.
                        let version = match (&op, &last) {
                            (
                                KvOp::Cas {
                                    cmp: Compare::Version(v),
                                    ..
                                },
                                _,
                            ) => Some(v + 1),
                            (KvOp::Cas { .. }, Some(s)) => Some(s.version + 1),
                            _ => None,
                        };
                        match (&op, version, revision) {
                            (KvOp::Cas { value, .. }, Some(version), Some(r)) => {
                                seen.insert(
                                    key.clone(),
                                    Seen {
                                        value: value.clone(),
                                        version,
                                        mod_revision: r,
                                    },
                                );
                            }
                            _ => {
                                seen.remove(&key);
                            }
                        }
                    }
                }
                Answer::CompareFailed(m) => {
                    e.outcome = if matches!(op, KvOp::Cas { .. }) {
                        Outcome::Failed
                    } else {
                        Outcome::Unknown
                    };
                    e.error = Some(m);
                    seen.remove(&key);
                }
                Answer::Refused(m) => {
                    e.outcome = Outcome::Refused;
                    e.error = Some(m);
                }
                Answer::Unknown(m) => {
                    e.outcome = Outcome::Unknown;
                    e.complete_us = None;
                    e.error = Some(m);
                    // The node may be down or partitioned away: ask another.
                    client = None;
                    node += 1;
                    seen.remove(&key);
                }
            }
            let pause = e.outcome == Outcome::Unknown;
            self.log.push(e);
            if pause {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Reads every key through every node once (retrying a node until the
    /// reach timeout); unreachable nodes are returned, not recorded.
    pub async fn final_reads(&self) -> Vec<String> {
        let mut missed = vec![];
        let process = u64::from(self.cfg.clients);
        for (i, node) in self.nodes.iter().enumerate() {
            let deadline = Instant::now() + self.cfg.reach_timeout;
            for k in 0..self.cfg.keys {
                let key = format!("k{k}");
                loop {
                    let c = match Client::connect(node.clone(), self.client_config()).await {
                        Ok(c) => c,
                        Err(e) if Instant::now() >= deadline => {
                            missed.push(format!("{node}: {e}"));
                            break;
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let invoke = self.log.now();
                    match Self::execute(&c, &format!("GET {} {}", self.cfg.table, quote(&key)))
                        .await
                    {
                        Answer::Ok(v) => {
                            let complete = self.log.now();
                            self.log.push(KvEvent {
                                process: process + i as u64,
                                key: key.clone(),
                                op: KvOp::Get,
                                outcome: Outcome::Ok,
                                invoke_us: invoke,
                                complete_us: Some(complete),
                                read: Some(read_of(&v)),
                                revision: v.get("revision").and_then(Value::as_u64),
                                node: Some(node.to_string()),
                                error: None,
                            });
                            break;
                        }
                        Answer::Refused(m) | Answer::Unknown(m) | Answer::CompareFailed(m) => {
                            if Instant::now() >= deadline {
                                missed.push(format!("{node} {key}: {m}"));
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }
        missed
    }
}

/// What a GET answer says of its key (None: absent).
fn read_of(v: &Value) -> Option<Observed> {
    let kv = v.get("kvs")?.as_array()?.first()?;
    Some(Observed {
        value: kv
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("<not utf-8>")
            .to_owned(),
        version: kv.get("version").and_then(Value::as_u64).unwrap_or(0),
        mod_revision: kv.get("mod_revision").and_then(Value::as_u64),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use weft_wire::ErrorBody;

    fn fate(e: ClientError) -> &'static str {
        match classify(&e) {
            Answer::Ok(_) => "ok",
            Answer::CompareFailed(_) => "failed",
            Answer::Refused(_) => "refused",
            Answer::Unknown(_) => "unknown",
        }
    }

    #[test]
    fn only_evaluated_compares_and_refused_requests_are_definite() {
        let cmp = ErrorBody::new(ErrorCode::Conflict, "compare failed")
            .with_details(json!({"grpc_code": "FAILED_PRECONDITION", "kind": "compare_failed"}));
        assert_eq!(fate(ClientError::Remote(cmp)), "failed");
        assert_eq!(
            fate(ClientError::Remote(ErrorBody::new(
                ErrorCode::Validation,
                "bad aql"
            ))),
            "refused"
        );
        assert_eq!(fate(ClientError::Closed), "refused");
        // A proposal that timed out may still commit.
        let unav = ErrorBody::new(ErrorCode::Unavailable, "timed out")
            .with_details(json!({"kind": "unavailable"}));
        assert_eq!(fate(ClientError::Remote(unav)), "unknown");
        assert_eq!(
            fate(ClientError::Remote(ErrorBody::new(
                ErrorCode::Timeout,
                "deadline"
            ))),
            "unknown"
        );
        assert_eq!(fate(ClientError::ConnectionLost), "unknown");
        assert_eq!(
            fate(ClientError::Timeout(Duration::from_secs(1))),
            "unknown"
        );
    }

    #[test]
    fn a_get_answer_is_read() {
        let v = json!({"kind": "get", "revision": 9, "count": 1, "kvs": [{"key": "k1", "value": "c0-3", "version": 2, "mod_revision": 7, "create_revision": 5}]});
        assert_eq!(
            read_of(&v),
            Some(Observed {
                value: "c0-3".into(),
                version: 2,
                mod_revision: Some(7)
            })
        );
        assert_eq!(
            read_of(&json!({"kind": "get", "revision": 9, "count": 0, "kvs": []})),
            None
        );
    }
}
