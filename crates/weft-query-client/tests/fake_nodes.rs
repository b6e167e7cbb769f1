//! The client against small scripted gRPC servers speaking weft.query.v1
//! on loopback: a `not_leader` answer is followed once (also for a write),
//! the deadline travels as grpc-timeout, the chosen compression is what
//! goes on the wire, and a failing node's reads move to another node while
//! its writes are not repeated.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::codec::CompressionEncoding::{Gzip, Zstd};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use weft_api::pb;
use weft_api::pb::query_server::{Query, QueryServer};
use weft_query_client::{BreakerState, CallOptions, Client, ClientConfig, Compression, Op};

#[derive(Clone, Debug)]
enum Mode {
    Ok,
    /// UNAVAILABLE, ErrorInfo not_leader naming this gRPC address.
    NotLeader(String),
    Unavailable,
}

#[derive(Clone, Default)]
struct Seen {
    /// (query text or statement kind, grpc-timeout, grpc-encoding)
    calls: Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>,
}

#[derive(Clone)]
struct Fake {
    mode: Arc<Mutex<Mode>>,
    seen: Seen,
    /// Watch: the revisions to send after `created`, then UNAVAILABLE if
    /// `watch_fails`; the start revisions asked for.
    watch_revs: Arc<Mutex<Vec<u64>>>,
    watch_fails: bool,
    watch_starts: Arc<Mutex<Vec<u64>>>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Query for Fake {
    async fn execute(&self, req: Request<pb::ExecuteRequest>) -> Result<Response<pb::ExecuteResponse>, Status> {
        let h = |k: &str| req.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let what = match &req.get_ref().query {
            Some(pb::execute_request::Query::Aql(t)) => t.clone(),
            Some(pb::execute_request::Query::Statement(s)) => format!("{:?}", s.kind.as_ref().map(std::mem::discriminant)),
            None => String::new(),
        };
        self.seen.calls.lock().unwrap().push((what, h("grpc-timeout"), h("grpc-encoding")));
        let mode = self.mode.lock().unwrap().clone();
        match mode {
            Mode::Ok => Ok(Response::new(pb::ExecuteResponse { result: Some(pb::Result { kind: "get".into(), revision: 7, ..Default::default() }) })),
            Mode::Unavailable => Err(Status::unavailable("down for the test")),
            Mode::NotLeader(addr) => {
                let d = ErrorDetails::with_error_info("not_leader", "query.weft", HashMap::from([("grpc_addr".to_owned(), addr)]));
                Err(Status::with_error_details(Code::Unavailable, "not the leader", d))
            }
        }
    }
    async fn batch(&self, _: Request<pb::BatchRequest>) -> Result<Response<pb::ExecuteResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type StreamStream = Boxed<pb::StreamChunk>;
    async fn stream(&self, _: Request<pb::StreamRequest>) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type WatchStream = Boxed<pb::WatchResponse>;
    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.watch_starts.lock().unwrap().push(req.get_ref().start_revision);
        let ev = |revision| pb::Event { r#type: pb::EventType::Put as i32, kv: None, prev_kv: None, revision };
        let mut msgs: Vec<Result<pb::WatchResponse, Status>> = vec![Ok(pb::WatchResponse { created: true, events: vec![] })];
        msgs.extend(self.watch_revs.lock().unwrap().iter().map(|&r| Ok(pb::WatchResponse { created: false, events: vec![ev(r)] })));
        if self.watch_fails {
            msgs.push(Err(Status::unavailable("node going away")));
        }
        // Stays open after the scripted messages (a live watch).
        Ok(Response::new(Box::pin(futures::stream::iter(msgs).chain(futures::stream::pending()))))
    }
    type SessionStream = Boxed<pb::SessionResponse>;
    async fn session(&self, _: Request<Streaming<pb::SessionRequest>>) -> Result<Response<Self::SessionStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A fake node on a free loopback port; the server task ends with the test.
async fn node(mode: Mode) -> (String, Fake) {
    node_with(mode, vec![], false).await
}

async fn node_with(mode: Mode, watch_revs: Vec<u64>, watch_fails: bool) -> (String, Fake) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let fake = Fake { mode: Arc::new(Mutex::new(mode)), seen: Seen::default(), watch_revs: Arc::new(Mutex::new(watch_revs)), watch_fails, watch_starts: Arc::default() };
    let svc = QueryServer::new(fake.clone()).accept_compressed(Gzip).accept_compressed(Zstd).send_compressed(Gzip).send_compressed(Zstd);
    tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)));
    (addr, fake)
}

fn cfg(addrs: &[&str]) -> ClientConfig {
    let mut c = ClientConfig::with_nodes(addrs.iter().copied());
    // No health service on the fakes.
    c.pool.health_interval_ms = 0;
    c.retry.initial_backoff_ms = 1;
    c
}

fn calls(f: &Fake) -> Vec<(String, Option<String>, Option<String>)> {
    f.seen.calls.lock().unwrap().clone()
}

#[tokio::test]
async fn not_leader_is_followed_once_even_for_a_write() {
    let (leader, l) = node(Mode::Ok).await;
    let (follower, f) = node(Mode::NotLeader(leader.clone())).await;
    let c = Client::new(cfg(&[&follower])).unwrap();
    let r = c.put("t", b"k", b"v").await.unwrap();
    assert_eq!(r.revision, 7);
    assert_eq!((calls(&f).len(), calls(&l).len()), (1, 1));
    assert_eq!(c.stats().leader_redirects, 1);
    // The follower is healthy: its breaker did not count the answer.
    assert_eq!(c.stats().nodes[0].breaker.failures, 0);

    // A leader that is not the leader either: one hop only, then the error.
    *l.mode.lock().unwrap() = Mode::NotLeader(follower.clone());
    let e = c.put("t", b"k", b"v").await.unwrap_err();
    assert!(e.is_not_leader(), "{e}");
    assert_eq!((calls(&f).len(), calls(&l).len()), (2, 2));
}

#[tokio::test]
async fn the_deadline_travels_as_grpc_timeout_and_compression_is_on_the_wire() {
    let (a, fa) = node(Mode::Ok).await;
    for (comp, name) in [(Compression::None, None), (Compression::Gzip, Some("gzip")), (Compression::Zstd, Some("zstd"))] {
        let c = Client::new(ClientConfig { compression: comp, ..cfg(&[&a]) }).unwrap();
        let op = Op::Execute(weft_query_client::client::aql("GET t 'k'"));
        c.call(op, CallOptions { timeout: Some(Duration::from_secs(30)) }).await.unwrap();
        let (_, timeout, enc) = calls(&fa).pop().unwrap();
        assert_eq!(enc.as_deref(), name);
        // grpc-timeout is the remaining budget: at most the 30 s given.
        let t = timeout.expect("grpc-timeout sent");
        let (n, unit) = t.split_at(t.len() - 1);
        let n: u64 = n.parse().unwrap();
        let us = match unit {
            "H" => n * 3_600_000_000,
            "M" => n * 60_000_000,
            "S" => n * 1_000_000,
            "m" => n * 1_000,
            "u" => n,
            "n" => n / 1_000,
            _ => panic!("unit {unit}"),
        };
        assert!(us > 0 && us <= 30_000_000, "{t}");
    }
}

#[tokio::test]
async fn reads_move_off_a_failing_node_and_writes_are_not_repeated() {
    let (bad, fb) = node(Mode::Unavailable).await;
    let (good, fg) = node(Mode::Ok).await;
    let mut conf = cfg(&[&bad, &good]);
    conf.breaker.consecutive_failures = 3;
    conf.breaker.cool_down_ms = 3_600_000;
    let c = Client::new(conf).unwrap();
    for _ in 0..20 {
        c.get("t", b"k").await.unwrap();
    }
    let s = c.stats();
    assert_eq!(s.nodes[0].state, BreakerState::Open);
    assert_eq!(s.nodes[0].calls, 3, "the bad node gets calls until its breaker opens");
    assert_eq!(s.nodes[1].ok, 20);
    assert_eq!(s.retries, 3);
    assert_eq!(calls(&fb).len(), 3);
    assert_eq!(calls(&fg).len(), 20);

    // A plain SET that lands on a failing node fails and is sent once.
    let (bad2, fb2) = node(Mode::Unavailable).await;
    let c = Client::new(cfg(&[&bad2, &good])).unwrap();
    let e = c.put("t", b"k", b"v").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(calls(&fb2).len(), 1);
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test]
async fn a_broken_watch_resumes_on_another_node_after_the_last_revision() {
    let (a, fa) = node_with(Mode::Ok, vec![5, 6], true).await;
    let (b, fb) = node_with(Mode::Ok, vec![7, 8], false).await;
    let c = Client::new(cfg(&[&a, &b])).unwrap();
    let req = pb::WatchRequest { table: "t".into(), target: Some(pb::watch_request::Target::Prefix(b"p/".to_vec())), start_revision: 5, prev_kv: false };
    let revs: Vec<u64> = c.watch(req).take(4).map(|e| e.unwrap().revision).collect().await;
    assert_eq!(revs, [5, 6, 7, 8]);
    assert_eq!(*fa.watch_starts.lock().unwrap(), [5]);
    // Resumed from the last revision seen + 1: nothing lost, nothing twice.
    assert_eq!(*fb.watch_starts.lock().unwrap(), [7]);
}
