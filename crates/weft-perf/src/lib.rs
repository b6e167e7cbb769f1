//! The server-side path of one native request, without sockets: the bytes
//! of a request frame are decoded, routed through a [`Service`] (with the
//! `log.*` endpoints on a log in a temporary directory), handled, and the
//! answer encoded, as `weft serve`'s connection task does per frame. The
//! criterion benchmark `benches/request.rs` times it (docs/BENCHMARKS.md,
//! "Per-request cost"); the tests here check that it answers.

use std::sync::Arc;

use bytes::BytesMut;
use serde::Serialize;
use weft_log::{FsyncPolicy, Log, LogConfig};
use weft_net::{Handler, PeerInfo, Transport};
use weft_service::Service;
use weft_wire::{encode, BodyFormat, Frame, FrameDecoder, FrameKind, MessageId, DEFAULT_MAX_FRAME_BYTES};

/// Why a set-up failed.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// A service with the standard and `log.*` endpoints, on a log in a
/// temporary directory (kept as long as the returned guard) with one
/// single-partition topic named `bench`.
pub struct Node {
    pub handler: Arc<dyn Handler>,
    pub peer: Arc<PeerInfo>,
    _log: Log,
    _dir: tempfile::TempDir,
}

/// Builds a [`Node`] whose log fsyncs by `fsync`.
pub async fn node(fsync: FsyncPolicy) -> Result<Node, SetupError> {
    let err = |e: &dyn std::fmt::Display| SetupError(e.to_string());
    let dir = tempfile::tempdir().map_err(|e| err(&e))?;
    let config = LogConfig { fsync, ..LogConfig::default() };
    let log = Log::open(dir.path(), config).await.map_err(|e| err(&e))?;
    log.create_topic("bench", None).await.map_err(|e| err(&e))?;
    let mut service = Service::new("bench");
    weft_broker::native::register(&mut service, log.clone()).map_err(|e| err(&e))?;
    let handler: Arc<dyn Handler> = service.into_handler();
    let peer = Arc::new(PeerInfo::new(Transport::Tcp, "127.0.0.1:1"));
    Ok(Node { handler, peer, _log: log, _dir: dir })
}

#[derive(Serialize)]
struct Rec {
    value: serde_bytes::ByteBuf,
}

#[derive(Serialize)]
struct Produce<'a> {
    topic: &'a str,
    records: Vec<Rec>,
}

/// The wire bytes of a `weft.ping` request (msgpack, empty body).
pub fn ping_request() -> BytesMut {
    wire(&Frame { kind: FrameKind::Request, flags: Default::default(), id: MessageId::from_u128(1), route: "weft.ping".into(), body: bytes::Bytes::new() })
}

/// The wire bytes of a `log.produce` of one record of `size` bytes to the
/// topic `bench`.
pub fn produce_request(size: usize) -> Result<BytesMut, SetupError> {
    let p = Produce { topic: "bench", records: vec![Rec { value: serde_bytes::ByteBuf::from(vec![b'x'; size]) }] };
    let f = Frame::request(MessageId::from_u128(2), "log.produce", BodyFormat::MsgPack, &p).map_err(|e| SetupError(e.to_string()))?;
    Ok(wire(&f))
}

fn wire(f: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    // A short route and a small body: encoding cannot fail.
    let _ = encode(f, &mut out);
    out
}

/// One request through the server-side path: decode `request` (as read
/// into a connection's buffer), handle, encode the answer into `out`
/// (cleared first). Returns the answer's kind, `None` when the bytes did
/// not hold a frame or the handler gave no answer.
pub async fn round(node: &Node, request: &[u8], out: &mut BytesMut) -> Option<FrameKind> {
    let mut buf = BytesMut::from(request);
    let frame = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES).decode(&mut buf).ok()??;
    let answer = node.handler.handle(frame, node.peer.clone()).await?;
    out.clear();
    encode(&answer, out).ok()?;
    Some(answer.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ping_and_produce_are_answered() {
        let n = node(FsyncPolicy::Never).await.unwrap();
        let mut out = BytesMut::new();
        assert_eq!(round(&n, &ping_request(), &mut out).await, Some(FrameKind::Response));
        let p = produce_request(1024).unwrap();
        for _ in 0..3 {
            assert_eq!(round(&n, &p, &mut out).await, Some(FrameKind::Response));
        }
        let answer = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES).decode(&mut out).unwrap().unwrap();
        let v: serde_json::Value = answer.decode_body().unwrap();
        assert_eq!(v["results"][0]["offset"], 2, "{v}");
    }
}
