//! The log through real sockets: native endpoints over TCP, the HTTP
//! gateway, and its WebSocket streams.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_bytes::ByteBuf;
use weft_broker::dto::{self, route};
use weft_log::{Log, LogConfig, ResetPolicy};
use weft_net::{Client, ClientConfig, Endpoint, Server, ServerConfig};
use weft_service::Service;
use weft_wire::ErrorCode;

struct Node {
    client: Client,
    http: String,
    log: Log,
    _server: Server,
    _dir: tempfile::TempDir,
}

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), LogConfig { maintenance_interval: None, ..LogConfig::default() }).await.unwrap();
    let mut svc = Service::new("t");
    weft_broker::native::register(&mut svc, log.clone()).unwrap();
    let server = Server::new(ServerConfig::default(), svc.into_handler());
    let tcp = server.bind_tcp("127.0.0.1:0").await.unwrap();
    let (http, _task) = weft_broker::http::serve(log.clone(), "127.0.0.1:0", weft_net::AllowList::default(), std::future::pending()).await.unwrap();
    let client = Client::connect(Endpoint::Tcp(tcp.to_string()), ClientConfig::default()).await.unwrap();
    Node { client, http: format!("http://{http}"), log, _server: server, _dir: dir }
}

fn rec(key: &str, value: &str) -> dto::RecordIn {
    dto::RecordIn { key: Some(dto::SharedBytes::from(key.as_bytes().to_vec())), value: Some(dto::SharedBytes::from(value.as_bytes().to_vec())), ..Default::default() }
}

async fn http(method: &str, url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    // A minimal HTTP/1.1 client over a raw socket keeps the test free of an
    // HTTP client dependency.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!("{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (len, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(len.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

#[tokio::test]
async fn native_topic_produce_fetch_offsets() {
    let n = start().await;
    let d: serde_json::Value = n.client.call(route::TOPIC_CREATE, &serde_json::json!({"name": "t1", "config": {"partitions": 2}})).await.unwrap();
    assert_eq!(d["config"]["partitions"], 2);
    let e = n.client.call::<_, serde_json::Value>(route::TOPIC_CREATE, &dto::CreateTopic { name: "t1".into(), config: None, replicas: None }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));
    let e = n.client.call::<_, serde_json::Value>(route::TOPIC_CREATE, &dto::CreateTopic { name: "bad name!".into(), config: None, replicas: None }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Validation));

    // Explicit partitions, with headers and timestamps.
    let mut records = vec![];
    for i in 0..10u32 {
        let mut r = rec(&format!("k{i}"), &format!("v{i}"));
        r.partition = Some(i % 2);
        r.headers = vec![("h".into(), dto::SharedBytes::from(vec![i as u8]))];
        r.timestamp_ms = Some(1_000 + i as i64);
        records.push(r);
    }
    let resp: dto::ProduceResponse = n.client.call(route::PRODUCE, &dto::Produce { topic: "t1".into(), records, ..Default::default() }).await.unwrap();
    assert_eq!(resp.results.len(), 10);
    for (i, r) in resp.results.iter().enumerate() {
        assert_eq!(r.partition, Some(i as u32 % 2));
        assert_eq!(r.offset, Some(i as u64 / 2));
    }
    let f: dto::FetchResponse = n.client.call(route::FETCH, &dto::Fetch { topic: "t1".into(), partition: 1, offset: 2, max_bytes: None, max_records: Some(2), wait_ms: None, raw: false, reset: None }).await.unwrap();
    assert_eq!(f.records.len(), 2);
    assert_eq!(f.records[0].offset, 2);
    assert_eq!(f.records[0].value.as_ref().map(|v| v.as_slice()), Some(&b"v5"[..]));
    assert_eq!(f.records[0].headers, vec![("h".to_string(), ByteBuf::from(vec![5u8]))]);
    assert_eq!(f.next_offset, 4);
    assert_eq!(f.high_watermark, 5);

    // Raw fetch: the stored batches, decoded on the client side.
    let f: dto::FetchResponse = n.client.call(route::FETCH, &dto::Fetch { topic: "t1".into(), partition: 0, offset: 0, max_bytes: None, max_records: None, wait_ms: None, raw: true, reset: None }).await.unwrap();
    let raw = bytes::Bytes::from(f.batches.unwrap().into_vec());
    let decoded: Vec<_> = weft_log::BatchesDecoder::new(raw, weft_log::Offset(0), 100).collect::<Result<_, _>>().unwrap();
    assert_eq!(decoded.len(), 5);
    assert_eq!(decoded[4].key.as_deref(), Some(&b"k8"[..]));
    assert_eq!(f.next_offset, decoded[4].offset.0 + 1, "raw: next offset from the batch headers");

    let o: dto::OffsetAnswer = n.client.call(route::OFFSETS, &dto::Offsets { topic: "t1".into(), partition: 0, spec: dto::OffsetQuery::Latest }).await.unwrap();
    assert_eq!(o.offset, 5);
    let o: dto::OffsetAnswer = n.client.call(route::OFFSETS, &dto::Offsets { topic: "t1".into(), partition: 1, spec: dto::OffsetQuery::Timestamp(1_005) }).await.unwrap();
    assert_eq!(o.offset, 2, "first record at or after ts 1005 in partition 1 is offset 2 (ts 1005)");

    // Bad input: typed errors, nothing harmed.
    let e = n.client.call::<_, dto::FetchResponse>(route::FETCH, &dto::Fetch { topic: "t1".into(), partition: 0, offset: 99, max_bytes: None, max_records: None, wait_ms: None, raw: false, reset: None }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OutOfRange));
    let weft_net::ClientError::Remote(body) = &e else { panic!() };
    assert_eq!(body.details.as_ref().unwrap()["latest"], 5);
    let e = n.client.call::<_, dto::FetchResponse>(route::FETCH, &dto::Fetch { topic: "t1".into(), partition: 7, offset: 0, max_bytes: None, max_records: None, wait_ms: None, raw: false, reset: None }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = n.client.call::<_, dto::ProduceResponse>(route::PRODUCE, &dto::Produce { topic: "nope".into(), records: vec![rec("a", "b")], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let big = dto::RecordIn { value: Some(dto::SharedBytes::from(vec![0u8; 2 * 1024 * 1024])), partition: Some(0), ..Default::default() };
    // A record over the limit refuses the whole request: nothing of it is written.
    let e = n.client.call::<_, dto::ProduceResponse>(route::PRODUCE, &dto::Produce { topic: "t1".into(), records: vec![big, rec("ok", "ok")], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TooLarge));
    assert_eq!(n.log.describe_topic("t1").unwrap().partitions.iter().map(|p| p.high_watermark.0).sum::<u64>(), 10);
}

#[tokio::test]
async fn long_poll_fetch_wakes_on_produce() {
    let n = start().await;
    let _: serde_json::Value = n.client.call(route::TOPIC_CREATE, &dto::CreateTopic { name: "lp".into(), config: None, replicas: None }).await.unwrap();
    let c = n.client.clone();
    // A long wait: an answer with the record means the produce woke it (a
    // timeout would answer with no records).
    let waiter = tokio::spawn(async move {
        let f: dto::FetchResponse = c.call(route::FETCH, &dto::Fetch { topic: "lp".into(), partition: 0, offset: 0, max_bytes: None, max_records: None, wait_ms: Some(25_000), raw: false, reset: None }).await.unwrap();
        f
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _: dto::ProduceResponse = n.client.call(route::PRODUCE, &dto::Produce { topic: "lp".into(), records: vec![rec("k", "hello")], ..Default::default() }).await.unwrap();
    let f = waiter.await.unwrap();
    assert_eq!(f.records.len(), 1, "woken by the produce, not by the timeout");
}

#[tokio::test]
async fn consumer_groups_rebalance_and_commit() {
    let n = start().await;
    let _: serde_json::Value = n.client.call(route::TOPIC_CREATE, &serde_json::json!({"name": "g", "config": {"partitions": 4}})).await.unwrap();
    // a record for the commit below to point past (commits past the end are refused)
    let one = dto::Produce { topic: "g".into(), records: vec![dto::RecordIn { partition: Some(0), value: Some(b"x".to_vec().into()), ..Default::default() }], ..Default::default() };
    let _: dto::ProduceResponse = n.client.call(route::PRODUCE, &one).await.unwrap();
    let past_end = dto::Commit { group: "grp".into(), member_id: None, generation: None, offsets: vec![dto::CommitOffset { topic: "g".into(), partition: 0, offset: 999_999_999, metadata: String::new() }] };
    let e = n.client.call::<_, dto::Done>(route::GROUP_COMMIT, &past_end).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OutOfRange), "{e}");
    let join = |member_id: Option<String>| dto::JoinGroup { group: "grp".into(), member_id, client_id: "c".into(), topics: vec!["g".into()], strategy: None, session_timeout_ms: Some(30_000) };
    let a: dto::Member = n.client.call(route::GROUP_JOIN, &join(None)).await.unwrap();
    assert_eq!(a.assignment.len(), 4);
    let b: dto::Member = n.client.call(route::GROUP_JOIN, &join(None)).await.unwrap();
    assert!(b.generation > a.generation);
    let a2: dto::Member = n.client.call(route::GROUP_HEARTBEAT, &dto::MemberRef { group: "grp".into(), member_id: a.member_id.clone(), generation: None }).await.unwrap();
    assert_eq!(a2.generation, b.generation);
    // b's share stayed a's until a's heartbeat acknowledged the generation.
    assert!(b.assignment.is_empty(), "{b:?}");
    assert_eq!(b.pending, 2);
    let b2: dto::Member = n.client.call(route::GROUP_HEARTBEAT, &dto::MemberRef { group: "grp".into(), member_id: b.member_id.clone(), generation: Some(b.generation) }).await.unwrap();
    assert_eq!(a2.assignment.len() + b2.assignment.len(), 4, "{a2:?} {b2:?}");
    assert_eq!(a2.assignment.len(), 2);
    // A stale generation is fenced.
    let stale = dto::Commit { group: "grp".into(), member_id: Some(a.member_id.clone()), generation: Some(a.generation), offsets: vec![dto::CommitOffset { topic: "g".into(), partition: 0, offset: 1, metadata: String::new() }] };
    let e = n.client.call::<_, dto::Done>(route::GROUP_COMMIT, &stale).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));
    let good = dto::Commit { generation: Some(a2.generation), ..stale };
    let _: dto::Done = n.client.call(route::GROUP_COMMIT, &good).await.unwrap();
    let c: dto::CommittedAnswer = n.client.call(route::GROUP_COMMITTED, &dto::Committed { group: "grp".into(), topic: "g".into(), partition: 0, reset: None }).await.unwrap();
    assert_eq!(c.offset, Some(1));
    // Where a consumer starts: the commit when inside the log, else the
    // policy; `none` without a commit is a typed out_of_range error.
    let start = |partition, reset| dto::Committed { group: "grp".into(), topic: "g".into(), partition, reset: Some(reset) };
    let c: dto::CommittedAnswer = n.client.call(route::GROUP_COMMITTED, &start(0, ResetPolicy::None)).await.unwrap();
    assert_eq!((c.start, c.reset), (Some(1), Some(false)));
    let c: dto::CommittedAnswer = n.client.call(route::GROUP_COMMITTED, &start(1, ResetPolicy::Latest)).await.unwrap();
    assert_eq!((c.offset, c.start, c.reset), (None, Some(0), Some(true)));
    let e = n.client.call::<_, dto::CommittedAnswer>(route::GROUP_COMMITTED, &start(1, ResetPolicy::None)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OutOfRange), "{e}");
    assert!(e.to_string().contains("reset policy is none"), "{e}");
    // b leaves: a gets everything back.
    let _: dto::Done = n.client.call(route::GROUP_LEAVE, &dto::MemberRef { group: "grp".into(), member_id: b.member_id.clone(), generation: None }).await.unwrap();
    let a3: dto::Member = n.client.call(route::GROUP_HEARTBEAT, &dto::MemberRef { group: "grp".into(), member_id: a.member_id.clone(), generation: None }).await.unwrap();
    assert_eq!(a3.assignment.len(), 4);
    // Member fetches are fenced like commits.
    let mf = |member_id: &str, generation, partition| dto::MemberFetch {
        group: "grp".into(),
        member_id: member_id.into(),
        generation,
        fetch: dto::Fetch { topic: "g".into(), partition, offset: 0, max_bytes: None, max_records: None, wait_ms: None, raw: false, reset: None },
    };
    let f: dto::FetchResponse = n.client.call(route::GROUP_FETCH, &mf(&a.member_id, a3.generation, 0)).await.unwrap();
    assert_eq!(f.records.len(), 1);
    let e = n.client.call::<_, dto::FetchResponse>(route::GROUP_FETCH, &mf(&a.member_id, a2.generation, 0)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict), "stale generation: {e}");
    let e = n.client.call::<_, dto::FetchResponse>(route::GROUP_FETCH, &mf(&b.member_id, a3.generation, 0)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "a member that left: {e}");
    let list: Vec<serde_json::Value> = n.client.call(route::GROUP_LIST, &()).await.unwrap();
    assert_eq!(list.len(), 1);
    let d: serde_json::Value = n.client.call(route::GROUP_DESCRIBE, &dto::GroupRef { group: "grp".into() }).await.unwrap();
    assert_eq!(d["members"].as_array().unwrap().len(), 1);
    let e = n.client.call::<_, dto::Member>(route::GROUP_HEARTBEAT, &dto::MemberRef { group: "grp".into(), member_id: "ghost".into(), generation: None }).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn http_gateway_rest_and_errors() {
    let n = start().await;
    let (s, v) = http("POST", &format!("{}/v1/topics", n.http), Some(r#"{"name":"web","config":{"partitions":1}}"#)).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = http("GET", &format!("{}/v1/topics", n.http), None).await;
    assert_eq!(s, 200);
    assert!(v.as_array().unwrap().iter().any(|t| t == "web"));
    let (s, v) = http("POST", &format!("{}/v1/topics/web/records", n.http), Some(r#"{"records":[{"key":"k","value":"hello","headers":{"a":"b"}},{"value":"/w==","encoding":"base64"}]}"#)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][1]["offset"], 1);
    let (s, v) = http("GET", &format!("{}/v1/topics/web/partitions/0/records?offset=0", n.http), None).await;
    assert_eq!(s, 200);
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs[0]["value"], "hello");
    assert_eq!(recs[0]["encoding"], "utf8");
    assert_eq!(recs[0]["headers"]["a"], "b");
    assert_eq!(recs[1]["value"], "/w==", "0xff is not UTF-8, so it comes back base64");
    assert_eq!(recs[1]["encoding"], "base64");
    let (_, v) = http("GET", &format!("{}/v1/topics/web/partitions/0/records?offset=0&encoding=base64", n.http), None).await;
    assert_eq!(v["records"][0]["value"], "aGVsbG8=");
    let (s, v) = http("GET", &format!("{}/v1/topics/web/partitions/0/offsets?spec=latest", n.http), None).await;
    assert_eq!((s, v["offset"].as_u64()), (200, Some(2)));

    // Errors: typed bodies and fitting statuses.
    let (s, v) = http("GET", &format!("{}/v1/topics/web/partitions/0/records?offset=50", n.http), None).await;
    assert_eq!((s, v["code"].as_str()), (416, Some("out_of_range")));
    assert_eq!(v["details"]["earliest"], 0);
    let (s, v) = http("GET", &format!("{}/v1/topics/nope", n.http), None).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")));
    let (s, v) = http("POST", &format!("{}/v1/topics/web/records", n.http), Some("{not json")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_body")));
    let (s, v) = http("POST", &format!("{}/v1/topics/web/records", n.http), Some(r#"{"records":[{"value":"!!","encoding":"base64"}]}"#)).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("validation")));
    let (s, v) = http("POST", &format!("{}/v1/topics", n.http), Some(r#"{"name":"a/b"}"#)).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("validation")));
    let (s, _) = http("GET", &format!("{}/v1/nothing", n.http), None).await;
    assert_eq!(s, 404);
    // Nothing written was harmed.
    let (_, v) = http("GET", &format!("{}/v1/topics/web/partitions/0/records?offset=0", n.http), None).await;
    assert_eq!(v["records"].as_array().unwrap().len(), 2);

    // Groups over HTTP.
    let (s, m) = http("POST", &format!("{}/v1/groups/hg/join", n.http), Some(r#"{"topics":["web"]}"#)).await;
    assert_eq!(s, 200, "{m}");
    let commit = format!(r#"{{"member_id":{},"generation":{},"offsets":[{{"topic":"web","partition":0,"offset":2}}]}}"#, m["member_id"], m["generation"]);
    let (s, _) = http("POST", &format!("{}/v1/groups/hg/commit", n.http), Some(&commit)).await;
    assert_eq!(s, 200);
    let (_, c) = http("GET", &format!("{}/v1/groups/hg/committed?topic=web&partition=0", n.http), None).await;
    assert_eq!(c["offset"], 2);
    let (_, d) = http("GET", &format!("{}/v1/groups/hg", n.http), None).await;
    assert_eq!(d["total_lag"], 0);

    // OpenAPI document.
    let (s, doc) = http("GET", &format!("{}/openapi.json", n.http), None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    for p in ["/v1/topics", "/v1/topics/{topic}/records", "/v1/topics/{topic}/partitions/{partition}/records", "/v1/groups/{group}/commit", "/v1/topics/{topic}/partitions/{partition}/stream"] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from openapi");
    }
}

#[tokio::test]
async fn websocket_streams_a_partition_live() {
    let n = start().await;
    let _: serde_json::Value = n.client.call(route::TOPIC_CREATE, &serde_json::json!({"name": "ws", "config": {"partitions": 2}})).await.unwrap();
    let mut old = rec("k", "old");
    old.partition = Some(0);
    let _: dto::ProduceResponse = n.client.call(route::PRODUCE, &dto::Produce { topic: "ws".into(), records: vec![old], ..Default::default() }).await.unwrap();
    let url = format!("{}/v1/topics/ws/partitions/0/stream?offset=earliest", n.http.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let topic_url = format!("{}/v1/topics/ws/stream?offset=latest", n.http.replace("http://", "ws://"));
    let (mut ws_topic, _) = tokio_tungstenite::connect_async(topic_url).await.unwrap();
    let next = |m: Option<Result<tokio_tungstenite::tungstenite::Message, _>>| -> serde_json::Value {
        serde_json::from_str(m.unwrap().unwrap().to_text().unwrap()).unwrap()
    };
    let first = next(tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap());
    assert_eq!(first["value"], "old");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (p, v) in [(0u32, "live0"), (1, "live1")] {
        let mut r = rec("k", v);
        r.partition = Some(p);
        let _: dto::ProduceResponse = n.client.call(route::PRODUCE, &dto::Produce { topic: "ws".into(), records: vec![r], ..Default::default() }).await.unwrap();
    }
    let live = next(tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap());
    assert_eq!((live["value"].as_str(), live["offset"].as_u64()), (Some("live0"), Some(1)));
    let mut seen = vec![];
    for _ in 0..2 {
        let m = next(tokio::time::timeout(Duration::from_secs(5), ws_topic.next()).await.unwrap());
        seen.push(m["value"].as_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, vec!["live0", "live1"], "topic stream starts at latest and merges partitions");
    ws.send(tokio_tungstenite::tungstenite::Message::Close(None)).await.unwrap();
}

/// `log.topic.alter` natively and `PATCH /v1/topics/{topic}` over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_topic_natively_and_over_http() {
    let n = start().await;
    let cfg = weft_log::TopicConfig { partitions: 1, max_record_bytes: 10, retention_ms: None, ..weft_log::TopicConfig::default() };
    let _: serde_json::Value = n.client.call(route::TOPIC_CREATE, &dto::CreateTopic { name: "alt".into(), config: Some(cfg), replicas: None }).await.unwrap();
    let too_big = dto::Produce { topic: "alt".into(), records: vec![rec("k", "more than ten bytes")], ..Default::default() };
    let e = n.client.call::<_, dto::ProduceResponse>(route::PRODUCE, &too_big).await.unwrap_err();
    assert!(e.to_string().contains("exceeds the topic limit of 10 bytes"), "{e}");

    let req = dto::AlterTopic { name: "alt".into(), partitions: Some(2), max_record_bytes: Some(1000), retention_ms: Some(60_000), ..Default::default() };
    let d: serde_json::Value = n.client.call(route::TOPIC_ALTER, &req).await.unwrap();
    assert_eq!(d["config"]["partitions"], 2, "{d}");
    assert_eq!(d["config"]["retention_ms"], 60_000, "{d}");
    let r: dto::ProduceResponse = n.client.call(route::PRODUCE, &too_big).await.unwrap();
    assert!(r.results[0].error.is_none(), "{:?}", r.results[0].error);

    // fewer partitions: a typed client error, nothing changed
    let e = n
        .client
        .call::<_, serde_json::Value>(route::TOPIC_ALTER, &dto::AlterTopic { name: "alt".into(), partitions: Some(1), ..Default::default() })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("partitions can only grow"), "{e}");

    // HTTP: -1 lifts the retention limit
    let (s, v) = http("PATCH", &format!("{}/v1/topics/alt", n.http), Some(r#"{"retention_ms":-1,"cleanup":"compact"}"#)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["config"]["retention_ms"], serde_json::Value::Null, "{v}");
    assert_eq!(v["config"]["cleanup"], "compact", "{v}");
    assert_eq!(v["config"]["partitions"], 2, "{v}");
    let (s, v) = http("PATCH", &format!("{}/v1/topics/alt", n.http), Some(r#"{"segment_bytes":1}"#)).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = http("PATCH", &format!("{}/v1/topics/nope", n.http), Some("{}")).await;
    assert_eq!(s, 404);
}
