use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use weft_net::{Client, ClientConfig, Target};
use weft_wire::{BodyFormat, Flags, Frame, FrameKind, MessageId};

use crate::error::BenchError;
use crate::report::Report;

/// Latencies are recorded in nanoseconds up to this; slower round trips are
/// clamped (they are timeouts in all but name).
pub(crate) const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Concurrent clients are capped: each holds a socket and a task, and the
/// server's per-listener limits are in the hundreds.
pub const CLIENTS_MAX: usize = 4096;
/// Echo payloads are capped well under a UDP datagram.
pub const PAYLOAD_BYTES_MAX: usize = 60_000;

/// What each request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// `weft.ping` with an empty body; the answer is a small map.
    Ping,
    /// `weft.echo` with a msgpack binary of this many bytes, sent back as is.
    Echo { payload_bytes: usize },
}

impl Workload {
    pub fn route(&self) -> &'static str {
        match self {
            Workload::Ping => "weft.ping",
            Workload::Echo { .. } => "weft.echo",
        }
    }

    pub fn label(&self) -> String {
        match self {
            Workload::Ping => "ping".into(),
            Workload::Echo { payload_bytes } => format!("echo/{payload_bytes}B"),
        }
    }

    fn body(&self) -> Result<Bytes, BenchError> {
        match self {
            Workload::Ping => Ok(Bytes::new()),
            Workload::Echo { payload_bytes } => {
                // A msgpack bin, so the server's answer is the same bytes.
                let payload = serde_bytes_like(*payload_bytes);
                Ok(BodyFormat::MsgPack.encode(&payload)?)
            }
        }
    }
}

/// A payload that serializes as msgpack `bin` rather than an array of ints.
fn serde_bytes_like(n: usize) -> BinPayload {
    BinPayload((0..n).map(|i| (i % 251) as u8).collect())
}

struct BinPayload(Vec<u8>);

impl serde::Serialize for BinPayload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

/// When each client stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Run for this long (after the warm-up).
    Duration(Duration),
    /// Send this many requests per client.
    Requests(u64),
}

/// One benchmark run: one endpoint, one concurrency.
#[derive(Debug, Clone)]
pub struct Load {
    pub endpoint: Target,
    pub clients: usize,
    pub workload: Workload,
    pub limit: Limit,
    /// Round trips before measuring starts (connections warm, caches hot).
    pub warmup: Duration,
    /// A request unanswered for this long counts as an error (a datagram
    /// lost on UDP) and the client moves on.
    pub request_timeout: Duration,
}

impl Load {
    pub fn new(endpoint: impl Into<Target>, clients: usize) -> Self {
        Load {
            endpoint: endpoint.into(),
            clients,
            workload: Workload::Ping,
            limit: Limit::Duration(Duration::from_secs(3)),
            warmup: Duration::from_millis(300),
            request_timeout: Duration::from_secs(1),
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(BenchError::BadArgs(format!("clients must be 1..={CLIENTS_MAX}, not {}", self.clients)));
        }
        if let Workload::Echo { payload_bytes } = self.workload
            && payload_bytes > PAYLOAD_BYTES_MAX
        {
            return Err(BenchError::BadArgs(format!("payload must be at most {PAYLOAD_BYTES_MAX} bytes")));
        }
        if self.limit == Limit::Requests(0) || self.limit == Limit::Duration(Duration::ZERO) {
            return Err(BenchError::BadArgs("nothing to do: the limit is zero".into()));
        }
        Ok(())
    }
}

struct ClientResult {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's accepted range.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// Connect every client, warm up, then run the load and report.
pub async fn run(load: &Load) -> Result<Report, BenchError> {
    load.check()?;
    let body = load.workload.body()?;
    let route = load.workload.route();

    // Connect everyone first, so connection set-up is not measured.
    let config = ClientConfig {
        client_name: "weft-bench".into(),
        request_timeout: load.request_timeout,
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let mut clients = Vec::with_capacity(load.clients);
    for i in 0..load.clients {
        let c = Client::connect(load.endpoint.clone(), config.clone())
            .await
            .map_err(|source| BenchError::Connect { client: i, endpoint: load.endpoint.to_string(), source })?;
        clients.push(c);
    }

    // Warm up together, then start together: the deadline is shared.
    let warm_until = Instant::now() + load.warmup;
    let warm: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, body) = (c.clone(), body.clone());
            tokio::spawn(async move {
                let ids = IdSource::new();
                let mut n = 0u64;
                while Instant::now() < warm_until {
                    n += 1;
                    let _ = c.request_frame(request(route, &body, ids.next(n))).await;
                }
            })
        })
        .collect();
    for w in warm {
        let _ = w.await;
    }

    let started = Instant::now();
    let deadline = match load.limit {
        Limit::Duration(d) => Some(started + d),
        Limit::Requests(_) => None,
    };
    let count = match load.limit {
        Limit::Requests(n) => n,
        Limit::Duration(_) => u64::MAX,
    };
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, body) = (c.clone(), body.clone());
            tokio::spawn(async move {
                let mut r = ClientResult { hist: new_histogram(), errors: 0, first_error: None };
                let mut sent = 0u64;
                let ids = IdSource::new();
                while sent < count && deadline.is_none_or(|d| Instant::now() < d) {
                    sent += 1;
                    let frame = request(route, &body, ids.next(sent));
                    let t0 = Instant::now();
                    match c.request_frame(frame).await {
                        Ok(_) => {
                            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            r.hist.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
                        }
                        Err(e) => {
                            r.errors += 1;
                            r.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                r
            })
        })
        .collect();

    let mut hist = new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(r) => {
                // Same bounds on both sides: adding cannot fail.
                let _ = hist.add(&r.hist);
                errors += r.errors;
                if first_error.is_none() {
                    first_error = r.first_error;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    for c in &clients {
        c.close();
    }
    Ok(Report::from_histogram(load, &hist, errors, first_error, elapsed))
}

/// A request frame around a pre-encoded body: only the id is new each time,
/// so the generator spends its time on the round trip, not on encoding.
fn request(route: &str, body: &Bytes, id: MessageId) -> Frame {
    Frame { kind: FrameKind::Request, flags: Flags::default(), id, route: route.to_owned(), body: body.clone() }
}

/// Message ids for one client: a random base, then a counter. Unique on the
/// connection (all the protocol asks), without a `getrandom` system call
/// per request as `Uuid::new_v4` makes, which would be generator overhead
/// counted against the server.
struct IdSource {
    base: u128,
}

impl IdSource {
    fn new() -> Self {
        IdSource { base: MessageId::new_v4().as_u128() }
    }
    fn next(&self, n: u64) -> MessageId {
        MessageId::from_u128(self.base.wrapping_add(u128::from(n)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn echo_body_is_a_msgpack_bin() {
        let b = Workload::Echo { payload_bytes: 16 }.body().unwrap();
        // bin8 marker, length, then the bytes.
        assert_eq!(b[0], 0xc4);
        assert_eq!(b[1], 16);
        assert_eq!(b.len(), 18);
        assert!(Workload::Ping.body().unwrap().is_empty());
    }

    #[test]
    fn ids_are_distinct() {
        let ids = IdSource::new();
        let set: std::collections::HashSet<MessageId> = (1..=1000).map(|n| ids.next(n)).collect();
        assert_eq!(set.len(), 1000);
    }

    #[test]
    fn limits_are_checked() {
        let ep: Target = "tcp://127.0.0.1:1".parse().unwrap();
        assert!(Load::new(ep.clone(), 0).check().is_err());
        assert!(Load::new(ep.clone(), CLIENTS_MAX + 1).check().is_err());
        let mut l = Load::new(ep.clone(), 1);
        l.workload = Workload::Echo { payload_bytes: PAYLOAD_BYTES_MAX + 1 };
        assert!(l.check().is_err());
        let mut l = Load::new(ep, 1);
        l.limit = Limit::Requests(0);
        assert!(l.check().is_err());
        l.limit = Limit::Requests(1);
        assert!(l.check().is_ok());
    }
}
