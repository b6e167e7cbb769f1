//! The channels (HTTP/2 connections) to one node, and the node's innermost
//! tower service, which sends one [`Call`] on one of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::Service;
use weft_api::pb;
use weft_api::pb::query_client::QueryClient;

use crate::call::{Call, Op};
use crate::config::{Compression, PoolConfig};
use crate::error::{Error, Result};

#[derive(Debug)]
struct Slot {
    ch: Channel,
    in_flight: Arc<AtomicUsize>,
    last_used: Instant,
}

/// Counters of one node's pool (never reset).
#[derive(Debug, Default)]
pub struct PoolCounters {
    pub calls: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub channels_opened: AtomicU64,
    pub channels_closed: AtomicU64,
    pub health_checks: AtomicU64,
    pub health_failures: AtomicU64,
}

/// Channels to one node: at least `min_channels`, a new one (up to
/// `max_channels`) when every channel carries `streams_per_channel` calls,
/// idle ones above the minimum closed after `idle_timeout_ms`. Channels
/// connect lazily and reconnect by themselves after the node comes back.
#[derive(Debug)]
pub struct NodePool {
    addr: String,
    endpoint: Endpoint,
    cfg: PoolConfig,
    compression: Compression,
    slots: Mutex<Vec<Slot>>,
    pub counters: PoolCounters,
}

/// `host:port` or a URI, as a URI.
pub fn uri(addr: &str) -> String {
    if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") }
}

impl NodePool {
    /// Must be called within a tokio runtime (channels spawn their
    /// connection tasks).
    pub fn new(addr: &str, cfg: PoolConfig, compression: Compression) -> Result<Self> {
        let endpoint = Endpoint::from_shared(uri(addr))
            .map_err(|e| Error::Config(format!("node address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .tcp_nodelay(true);
        let pool = NodePool { addr: addr.to_owned(), endpoint, cfg, compression, slots: Mutex::new(Vec::new()), counters: PoolCounters::default() };
        {
            let mut slots = pool.slots();
            for _ in 0..pool.cfg.min_channels.max(1) {
                let s = pool.open();
                slots.push(s);
            }
        }
        Ok(pool)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        // Slots are replaced whole; a panic cannot leave one half-built.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> Slot {
        self.counters.channels_opened.fetch_add(1, Ordering::Relaxed);
        Slot { ch: self.endpoint.connect_lazy(), in_flight: Arc::default(), last_used: Instant::now() }
    }

    /// The least busy channel (opening one more if all are at
    /// `streams_per_channel` and the pool may grow), counted in flight
    /// until the guard drops.
    pub fn checkout(&self) -> (Channel, InFlight) {
        let mut slots = self.slots();
        let least = slots.iter().enumerate().min_by_key(|(_, s)| s.in_flight.load(Ordering::Relaxed)).map(|(i, s)| (i, s.in_flight.load(Ordering::Relaxed)));
        let i = match least {
            Some((i, n)) if n < self.cfg.streams_per_channel.max(1) || slots.len() >= self.cfg.max_channels.max(1) => i,
            _ => {
                let s = self.open();
                slots.push(s);
                slots.len() - 1
            }
        };
        // In range: `i` came from this vector under the same lock.
        #[allow(clippy::indexing_slicing)]
        let s = &mut slots[i];
        s.last_used = Instant::now();
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        (s.ch.clone(), InFlight(s.in_flight.clone()))
    }

    /// Closes channels above `min_channels` idle for `idle_timeout_ms`.
    pub fn reap_idle(&self, now: Instant) {
        let idle = Duration::from_millis(self.cfg.idle_timeout_ms);
        let min = self.cfg.min_channels.max(1);
        let mut slots = self.slots();
        let mut i = 0;
        while i < slots.len() && slots.len() > min {
            let s = &slots[i];
            if s.in_flight.load(Ordering::Relaxed) == 0 && now.saturating_duration_since(s.last_used) >= idle {
                slots.swap_remove(i);
                self.counters.channels_closed.fetch_add(1, Ordering::Relaxed);
            } else {
                i += 1;
            }
        }
    }

    /// Calls on the wire to this node.
    pub fn in_flight(&self) -> usize {
        self.slots().iter().map(|s| s.in_flight.load(Ordering::Relaxed)).sum()
    }

    pub fn channels(&self) -> usize {
        self.slots().len()
    }

    /// One grpc.health.v1 Check of the node's overall status.
    pub async fn health_check(&self) -> bool {
        self.counters.health_checks.fetch_add(1, Ordering::Relaxed);
        let (ch, _g) = self.checkout();
        let t = Duration::from_millis(self.cfg.health_timeout_ms.max(1));
        let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        req.set_timeout(t);
        let ok = matches!(tokio::time::timeout(t, HealthClient::new(ch).check(req)).await,
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32);
        if !ok {
            self.counters.health_failures.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    fn client(&self, ch: Channel) -> QueryClient<Channel> {
        let c = QueryClient::new(ch);
        match self.compression {
            Compression::None => c,
            Compression::Gzip => c.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip),
            Compression::Zstd => c.send_compressed(CompressionEncoding::Zstd).accept_compressed(CompressionEncoding::Zstd),
        }
    }

    /// Sends one call with what is left of its deadline as grpc-timeout.
    pub async fn send(&self, call: Call) -> Result<pb::Result> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let r = self.send_inner(call).await;
        let c = if r.is_ok() { &self.counters.ok } else { &self.counters.errors };
        c.fetch_add(1, Ordering::Relaxed);
        r
    }

    async fn send_inner(&self, call: Call) -> Result<pb::Result> {
        let remaining = call.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Deadline { timeout_ms: call.timeout_ms });
        }
        let (ch, _g) = self.checkout();
        let mut client = self.client(ch);
        let fut = async move {
            match call.op {
                Op::Execute(r) => {
                    let mut req = tonic::Request::new(r);
                    req.set_timeout(remaining);
                    weft_api::grpc_trace::inject(&mut req);
                    client.execute(req).await
                }
                Op::Batch(r) => {
                    let mut req = tonic::Request::new(r);
                    req.set_timeout(remaining);
                    weft_api::grpc_trace::inject(&mut req);
                    client.batch(req).await
                }
            }
        };
        match tokio::time::timeout(remaining, fut).await {
            Err(_) => Err(Error::Deadline { timeout_ms: call.timeout_ms }),
            Ok(Err(s)) => Err(Error::from_status(&self.addr, &s)),
            Ok(Ok(resp)) => resp.into_inner().result.ok_or_else(|| Error::Status {
                node: self.addr.clone(),
                code: tonic::Code::Internal,
                message: "answer without a result".into(),
                reason: None,
                leader: None,
            }),
        }
    }

    /// A Watch stream on one of the node's channels.
    pub async fn watch(&self, req: pb::WatchRequest) -> Result<tonic::Streaming<pb::WatchResponse>> {
        let (ch, _g) = self.checkout();
        let mut client = self.client(ch);
        let mut req = tonic::Request::new(req);
        weft_api::grpc_trace::inject(&mut req);
        client.watch(req).await.map(|r| r.into_inner()).map_err(|s| Error::from_status(&self.addr, &s))
    }
}

/// A call counted in flight on its channel.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The node's innermost tower service.
#[derive(Debug, Clone)]
pub struct NodeService {
    pub pool: Arc<NodePool>,
}

impl Service<Call> for NodeService {
    type Response = pb::Result;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<pb::Result>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move { pool.send(call).await })
    }
}
