//! The floor under a one-record produce with fsync `always` (issue #18,
//! ninth round): the least a server speaking Weft's native protocol can do
//! per produce on this machine, measured with the same load generator
//! (weft-logbench) and disk as `weft serve`. If even this does not reach 2x
//! Redis Streams with AOF always, the goal is out of reach of any server
//! design here, not only of weft-log's.
//!
//! One thread for every connection (a current-thread runtime, as weft's one
//! connection thread), one sync thread running `fdatasync` back to back
//! while something is unsynced (as weft-log's sync loop). Per read pass of a
//! connection: every `log.produce` frame's body is appended as it came (no
//! msgpack decode, no batch encoding, no CRC, no index, no statistics) in one
//! `pwrite`; each answer is a real `ProduceResponse` frame, written once the
//! fsync that covers its bytes has returned (`always`) or at once (`none`).
//! `hello`, `log.topic.create`, `log.topic.delete`, `log.offsets` and
//! `log.fetch` (records without values: only so that weft-logbench's
//! consume phase completes; its consume numbers mean nothing here) are
//! answered so that weft-logbench runs unchanged.
//!
//!   cargo build --release -p weft-perf --example floor
//!   target/release/examples/floor 127.0.0.1:27461 /work/floor-data always &
//!   weft-logbench run --system weft --target tcp://127.0.0.1:27461 --label floor \
//!       --sizes 1024 --producers 4 --windows 64 --duration-ms 4000
//!
//! Not a server: no limits, no recovery; it removes nothing on exit (its
//! file is DIR/floor.log, truncated at start).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use weft_broker::dto::{self, route};
use weft_wire::{encode, Frame, FrameDecoder, FrameKind, Welcome, CONTROL_HELLO, CONTROL_WELCOME, PROTOCOL_VERSION};

/// What the connections have written and what the sync thread has started.
struct Written {
    end: u64,
    started: u64,
    records: u64,
}

struct Log {
    file: File,
    state: Mutex<Written>,
    wake: Condvar,
    synced: watch::Sender<u64>,
    always: bool,
    /// Busy time added per produce (FLOOR_SPIN_NS): what each microsecond
    /// of server CPU per record costs this shape.
    spin: std::time::Duration,
}

fn spin(d: std::time::Duration) {
    if d.is_zero() {
        return;
    }
    let t = std::time::Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

impl Log {
    /// Appends one pass's bodies; returns the end offset they need synced.
    fn append(&self, pass: &[u8], records: u64) -> (u64, u64) {
        let mut g = self.state.lock().unwrap();
        self.file.write_all_at(pass, g.end).unwrap();
        g.end += pass.len() as u64;
        let first = g.records;
        g.records += records;
        self.wake.notify_one();
        (g.end, first)
    }

    fn sync_loop(&self) {
        loop {
            let target = {
                let mut g = self.state.lock().unwrap();
                while g.end == g.started {
                    g = self.wake.wait(g).unwrap();
                }
                g.started = g.end;
                g.end
            };
            self.file.sync_data().unwrap();
            self.synced.send_replace(target);
        }
    }
}

/// A produce waiting for its answer: request frame (id, route, format), offset, bytes it needs synced.
struct Pending {
    request: Frame,
    offset: u64,
    needs: u64,
}

fn answer(req: &Frame, out: &mut BytesMut, offset: u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let resp = dto::ProduceResponse {
        results: vec![dto::ProduceResult { partition: Some(0), offset: Some(offset), timestamp_ms: Some(now), error: None }],
    };
    encode(&req.response_to(&resp).unwrap(), out).unwrap();
}

/// Records without their values (the floor keeps only the bodies' bytes),
/// as many as asked, so that weft-logbench's consume phase counts them.
fn fetch_answer(req: &dto::Fetch, records: u64) -> dto::FetchResponse {
    let n = records.saturating_sub(req.offset).min(req.max_records.unwrap_or(1000) as u64);
    let offsets = req.offset..req.offset + n;
    let (records_out, batches) = if req.raw {
        let mut b = weft_log::batch::BatchBuilder::new(weft_log::model::Offset(req.offset));
        for o in offsets {
            b.push(weft_log::model::Offset(o), 0, None, None, &[]).unwrap();
        }
        (vec![], Some(serde_bytes::ByteBuf::from(b.finish().map(|(_, b)| b.to_vec()).unwrap_or_default())))
    } else {
        (offsets.map(|offset| dto::RecordOut { offset, timestamp_ms: 0, key: None, value: None, headers: vec![] }).collect(), None)
    };
    dto::FetchResponse {
        topic: req.topic.clone(),
        partition: 0,
        high_watermark: records,
        log_start_offset: 0,
        next_offset: req.offset + n,
        records: records_out,
        batches,
        reset_from: None,
    }
}

async fn serve(log: Arc<Log>, mut stream: tokio::net::TcpStream) {
    let (mut rd, mut wr) = stream.split();
    let mut synced = log.synced.subscribe();
    let mut decoder = FrameDecoder::new(16 << 20);
    let (mut buf, mut out, mut pass) = (BytesMut::with_capacity(64 << 10), BytesMut::with_capacity(64 << 10), Vec::new());
    let mut pending: std::collections::VecDeque<Pending> = Default::default();
    loop {
        tokio::select! {
            n = rd.read_buf(&mut buf) => {
                if n.unwrap_or(0) == 0 {
                    return;
                }
                let mut produced = Vec::new();
                while let Some(f) = decoder.decode(&mut buf).unwrap() {
                    match (f.kind, f.route.as_str()) {
                        (FrameKind::Control, CONTROL_HELLO) => {
                            let w = Welcome { protocol_version: PROTOCOL_VERSION, server_id: "floor".into(), server_name: "floor".into(), version: "0".into(), features: vec!["tcp".into(), "log".into()] };
                            let reply = Frame::with_body(FrameKind::Control, f.id, CONTROL_WELCOME, f.flags.format(), &w).unwrap();
                            encode(&reply, &mut out).unwrap();
                        }
                        (FrameKind::Request, route::PRODUCE) => {
                            spin(log.spin);
                            pass.extend_from_slice(&f.body);
                            produced.push(f);
                        }
                        (FrameKind::Request, route::TOPIC_CREATE | route::TOPIC_DELETE) => {
                            encode(&f.response_to(&serde_json::json!({})).unwrap(), &mut out).unwrap();
                        }
                        (FrameKind::Request, route::FETCH) => {
                            let records = log.state.lock().unwrap().records;
                            encode(&f.response_to(&fetch_answer(&f.decode_body().unwrap(), records)).unwrap(), &mut out).unwrap();
                        }
                        (FrameKind::Request, route::OFFSETS) => {
                            let records = log.state.lock().unwrap().records;
                            encode(&f.response_to(&dto::OffsetAnswer { offset: records }).unwrap(), &mut out).unwrap();
                        }
                        _ => {
                            eprintln!("floor: refused {} {:?}", f.kind.as_str(), f.route);
                            let e = weft_wire::ErrorBody::new(weft_wire::ErrorCode::NotFound, "the floor server answers produce only");
                            encode(&f.error_to(&e), &mut out).unwrap();
                        }
                    }
                }
                if !produced.is_empty() {
                    let (needs, first) = log.append(&pass, produced.len() as u64);
                    pass.clear();
                    for (i, request) in produced.into_iter().enumerate() {
                        pending.push_back(Pending { request, offset: first + i as u64, needs });
                    }
                }
            }
            _ = synced.changed(), if !pending.is_empty() => {}
        }
        let durable = if log.always { *synced.borrow_and_update() } else { u64::MAX };
        while pending.front().is_some_and(|p| p.needs <= durable) {
            let p = pending.pop_front().unwrap();
            answer(&p.request, &mut out, p.offset);
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let addr = a.get(1).cloned().unwrap_or_else(|| "127.0.0.1:27461".into());
    let dir = std::path::PathBuf::from(a.get(2).cloned().unwrap_or_else(|| ".".into()));
    let always = a.get(3).map(|m| m != "none").unwrap_or(true);
    let spin = std::time::Duration::from_nanos(std::env::var("FLOOR_SPIN_NS").ok().and_then(|v| v.parse().ok()).unwrap_or(0));
    std::fs::create_dir_all(&dir).unwrap();
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.join("floor.log")).unwrap();
    let (synced, _) = watch::channel(0u64);
    let log = Arc::new(Log { file, state: Mutex::new(Written { end: 0, started: 0, records: 0 }), wake: Condvar::new(), synced, always, spin });
    if always {
        let l = log.clone();
        std::thread::spawn(move || l.sync_loop());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        eprintln!("floor: {addr}, {}, fsync {}", dir.display(), if always { "always" } else { "none" });
        loop {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(serve(log.clone(), s));
        }
    });
}
