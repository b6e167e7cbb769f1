//! The client passes the process's outgoing W3C trace context on in gRPC
//! metadata (`traceparent`) on Execute, Batch and Watch; a scripted server
//! on loopback records what arrives. (The node's side, continuing it in an
//! exported span, is crates/weft/tests/traces_grpc.rs.)
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use weft_api::pb;
use weft_api::pb::query_server::{Query, QueryServer};
use weft_query_client::{Client, ClientConfig};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// What the binary installs (the current span's context, else TRACEPARENT);
/// here a fixed one.
fn source() -> Option<String> {
    Some(TRACEPARENT.to_owned())
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(&'static str, Option<String>)>>>);

impl Recorder {
    fn saw<T>(&self, rpc: &'static str, req: &Request<T>) {
        let tp = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0.lock().unwrap().push((rpc, tp));
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Query for Recorder {
    async fn execute(
        &self,
        req: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        self.saw("execute", &req);
        Ok(Response::new(pb::ExecuteResponse {
            result: Some(pb::Result {
                kind: "get".into(),
                revision: 1,
                ..Default::default()
            }),
        }))
    }
    async fn batch(
        &self,
        req: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        self.saw("batch", &req);
        Ok(Response::new(pb::ExecuteResponse {
            result: Some(pb::Result {
                kind: "batch".into(),
                revision: 1,
                ..Default::default()
            }),
        }))
    }
    type StreamStream = Boxed<pb::StreamChunk>;
    async fn stream(
        &self,
        _: Request<pb::StreamRequest>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("recorder"))
    }
    type WatchStream = Boxed<pb::WatchResponse>;
    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.saw("watch", &req);
        let ev = pb::Event {
            r#type: pb::EventType::Put as i32,
            kv: None,
            prev_kv: None,
            revision: 3,
        };
        let msgs = vec![
            Ok(pb::WatchResponse {
                created: true,
                events: vec![],
            }),
            Ok(pb::WatchResponse {
                created: false,
                events: vec![ev],
            }),
        ];
        Ok(Response::new(Box::pin(
            futures::stream::iter(msgs).chain(futures::stream::pending()),
        )))
    }
    type SessionStream = Boxed<pb::SessionResponse>;
    async fn session(
        &self,
        _: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Err(Status::unimplemented("recorder"))
    }
}

#[tokio::test]
async fn outgoing_trace_context_goes_in_metadata() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let rec = Recorder::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QueryServer::new(rec.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let mut cfg = ClientConfig::with_nodes([addr.as_str()]);
    // No health service on the recorder.
    cfg.pool.health_interval_ms = 0;
    let c = Client::new(cfg).unwrap();

    // Before a source is set: nothing is sent (no span, no TRACEPARENT).
    c.aql("SHOW TABLES").await.unwrap();
    weft_net::set_trace_context_source(source);
    c.aql("SHOW TABLES").await.unwrap();
    c.batch(pb::BatchRequest {
        batch: Some(pb::batch_request::Batch::Aql(
            "BATCH { SET t 'k' = 'v' }".into(),
        )),
        timeout_ms: 0,
    })
    .await
    .unwrap();
    let req = pb::WatchRequest {
        table: "t".into(),
        target: Some(pb::watch_request::Target::Prefix(b"p/".to_vec())),
        start_revision: 0,
        prev_kv: false,
    };
    let mut events = Box::pin(c.watch(req));
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.revision, 3);

    let seen = rec.0.lock().unwrap().clone();
    let tp = Some(TRACEPARENT.to_owned());
    assert_eq!(
        seen,
        vec![
            ("execute", None),
            ("execute", tp.clone()),
            ("batch", tp.clone()),
            ("watch", tp)
        ]
    );
}
