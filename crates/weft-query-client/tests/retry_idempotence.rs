//! Property: tower's Retry with our policy never sends a non-idempotent
//! call twice, whatever the node answers, and sends an idempotent one at
//! most 1 + max_retries times. Back-off sleeps run on tokio's paused clock.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::future::Ready;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tonic::Code;
use tower::{Service, ServiceExt};
use weft_api::pb;
use weft_query_client::call::{Call, Op};
use weft_query_client::clock::SystemClock;
use weft_query_client::retry::RetryPolicy;
use weft_query_client::{Error, RetryConfig};

const QUERIES: &[(&str, bool)] = &[
    ("GET t 'k'", true),
    ("RANGE t PREFIX 'a'", true),
    ("FILTER t WHERE x = 1", true),
    ("HISTORY t 'k'", true),
    ("SET t 'k' = 'v' IF VERSION = 2", true),
    ("SET t 'k' = 'v' IF ABSENT", true),
    ("BATCH { IF VERSION(t, 'k') = 1 THEN { SET t 'k' = 2 } }", true),
    ("SET t 'k' = 'v'", false),
    ("DELETE t 'k'", false),
    ("DELETE t 'k' IF EXISTS", false),
    ("UPDATE t SET a = 1 WHERE b = 2", false),
    ("BATCH { SET t 'a' = 1; SET t 'b' = 2 }", false),
    ("BATCH { IF VERSION(t, 'k') = 1 THEN { SET t 'j' = 2 } }", false),
    ("CREATE TABLE t", false),
];

#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Unavailable,
    Deadline,
    NotFound,
    Breaker,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![Just(Answer::Ok), Just(Answer::Unavailable), Just(Answer::Deadline), Just(Answer::NotFound), Just(Answer::Breaker)]
}

/// A node that answers from a script and counts the attempts of each call
/// (identified by its `timeout_ms`).
#[derive(Clone)]
struct Node {
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Service<Call> for Node {
    type Response = pb::Result;
    type Error = Error;
    type Future = Ready<Result<pb::Result, Error>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, c: Call) -> Self::Future {
        *self.seen.lock().unwrap().entry(c.timeout_ms).or_default() += 1;
        let a = self.script.lock().unwrap().pop_front().unwrap_or(Answer::Unavailable);
        let st = |code| Error::Status { node: "n".into(), code, message: String::new(), reason: None, leader: None };
        std::future::ready(match a {
            Answer::Ok => Ok(pb::Result::default()),
            Answer::Unavailable => Err(st(Code::Unavailable)),
            Answer::Deadline => Err(st(Code::DeadlineExceeded)),
            Answer::NotFound => Err(st(Code::NotFound)),
            Answer::Breaker => Err(Error::BreakerOpen { node: "n".into() }),
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn non_idempotent_calls_are_sent_once(calls in prop::collection::vec(0..QUERIES.len(), 1..20), script in prop::collection::vec(answer(), 0..100), max_retries in 0u32..5) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let node = Node { script: Arc::new(Mutex::new(script.into())), seen: Arc::default() };
        let cfg = RetryConfig { max_retries, ..RetryConfig::default() };
        let svc = tower::retry::Retry::new(RetryPolicy::new(cfg, Arc::new(SystemClock), Arc::new(AtomicU64::new(0))), node.clone());
        rt.block_on(async {
            for (id, &q) in calls.iter().enumerate() {
                let op = Op::Execute(pb::ExecuteRequest { query: Some(pb::execute_request::Query::Aql(QUERIES[q].0.into())), timeout_ms: 0, serializable: false });
                let call = Call::new(op, Instant::now() + Duration::from_secs(3600), id as u64);
                let _ = svc.clone().oneshot(call).await;
            }
        });
        let seen = node.seen.lock().unwrap();
        for (id, &q) in calls.iter().enumerate() {
            let n = seen.get(&(id as u64)).copied().unwrap_or(0);
            let (text, idempotent) = QUERIES[q];
            if idempotent {
                prop_assert!(n >= 1 && n <= 1 + max_retries, "{text}: {n} attempts");
            } else {
                prop_assert_eq!(n, 1, "{} was sent {} times", text, n);
            }
        }
    }
}
