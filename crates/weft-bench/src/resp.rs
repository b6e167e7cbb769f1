//! The same closed loop against a Redis server (RESP `PING`), so that
//! redis-server can be measured by this generator too: one runtime, one
//! histogram, one clock for both servers. redis-benchmark's latency starts
//! when its event loop writes a request, after it has dealt with the other
//! ready clients, while weft-bench's starts when a client asks for the
//! round trip; side by side, the two generators' medians are not the same
//! measure (docs/BENCHMARKS.md, issue #18).
//!
//! The RESP client here is the least a client can do (write the request,
//! read until the 7-byte answer), with the same per-request timeout as the
//! Weft client: if anything it favours redis.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::error::BenchError;
use crate::load::{LATENCY_NS_MAX, Limit, new_histogram};
use crate::report::Report;

/// `PING` as a RESP array: what client libraries send (redis-benchmark's
/// PING_MBULK).
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";

/// Where the Redis server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespAddr {
    /// `redis://HOST:PORT`
    Tcp(String),
    /// `redis+unix:///PATH`
    Unix(String),
}

impl RespAddr {
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        if let Some(rest) = s.strip_prefix("redis://") {
            if rest.is_empty() || !rest.contains(':') {
                return Err(BenchError::BadArgs(format!("--redis-addr: {s}: expected redis://HOST:PORT")));
            }
            Ok(RespAddr::Tcp(rest.to_owned()))
        } else if let Some(path) = s.strip_prefix("redis+unix://") {
            if path.is_empty() {
                return Err(BenchError::BadArgs(format!("--redis-addr: {s}: expected redis+unix:///PATH")));
            }
            Ok(RespAddr::Unix(path.to_owned()))
        } else {
            Err(BenchError::BadArgs(format!("--redis-addr: {s}: expected redis://HOST:PORT or redis+unix:///PATH")))
        }
    }

    /// The report's transport column: `redis-tcp` or `redis-unix`.
    fn transport(&self) -> &'static str {
        match self {
            RespAddr::Tcp(_) => "redis-tcp",
            RespAddr::Unix(_) => "redis-unix",
        }
    }

    fn url(&self) -> String {
        match self {
            RespAddr::Tcp(a) => format!("redis://{a}"),
            RespAddr::Unix(p) => format!("redis+unix://{p}"),
        }
    }
}

/// One RESP connection.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    async fn connect(addr: &RespAddr) -> std::io::Result<Self> {
        Ok(match addr {
            RespAddr::Tcp(a) => {
                let s = TcpStream::connect(a).await?;
                // As hiredis (and redis-benchmark) do.
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
            RespAddr::Unix(p) => Conn::Unix(UnixStream::connect(p).await?),
        })
    }

    async fn ping(&mut self, buf: &mut [u8; 64]) -> Result<(), String> {
        match self {
            Conn::Tcp(s) => ping_on(s, buf).await,
            Conn::Unix(s) => ping_on(s, buf).await,
        }
    }
}

async fn ping_on<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, buf: &mut [u8; 64]) -> Result<(), String> {
    s.write_all(PING).await.map_err(|e| format!("write: {e}"))?;
    let mut got = 0;
    while got < PONG.len() {
        match s.read(&mut buf[got..]).await {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => got += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    // One request in flight: nothing else can follow the answer.
    if &buf[..got] != PONG {
        return Err(format!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..got])));
    }
    Ok(())
}

/// One RESP run: `clients` connections, each PING, wait, PING, ...
#[derive(Debug, Clone)]
pub struct RespLoad {
    pub addr: RespAddr,
    pub clients: usize,
    pub limit: Limit,
    pub warmup: Duration,
    pub request_timeout: Duration,
}

/// Connect every client, warm up, run, report (as [`crate::run`] does for
/// Weft). A connection whose request fails or times out is dropped and
/// reopened, as a timed-out answer may still arrive on it.
pub async fn run_resp(load: &RespLoad) -> Result<Report, BenchError> {
    if load.clients == 0 || load.clients > crate::load::CLIENTS_MAX {
        return Err(BenchError::BadArgs(format!("clients must be 1..={}, not {}", crate::load::CLIENTS_MAX, load.clients)));
    }
    let mut conns = Vec::with_capacity(load.clients);
    for i in 0..load.clients {
        let c = Conn::connect(&load.addr)
            .await
            .map_err(|e| BenchError::RespConnect { client: i, endpoint: load.addr.url(), source: e })?;
        conns.push(c);
    }
    let warm_until = Instant::now() + load.warmup;
    let started_at = warm_until;
    let deadline = match load.limit {
        Limit::Duration(d) => Some(started_at + d),
        Limit::Requests(_) => None,
    };
    let count = match load.limit {
        Limit::Requests(n) => n,
        Limit::Duration(_) => u64::MAX,
    };
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (addr, timeout) = (load.addr.clone(), load.request_timeout);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while Instant::now() < warm_until {
                    if !matches!(tokio::time::timeout(timeout, c.ping(&mut buf)).await, Ok(Ok(()))) {
                        c = Conn::connect(&addr).await.map_err(|e| e.to_string())?;
                    }
                }
                let mut hist = new_histogram();
                let (mut errors, mut first_error, mut sent) = (0u64, None, 0u64);
                while sent < count && deadline.is_none_or(|d| Instant::now() < d) {
                    sent += 1;
                    let t0 = Instant::now();
                    match tokio::time::timeout(timeout, c.ping(&mut buf)).await {
                        Ok(Ok(())) => {
                            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            hist.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
                        }
                        Ok(Err(e)) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            c = Conn::connect(&addr).await.map_err(|e| e.to_string())?;
                        }
                        Err(_) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("no answer within {timeout:?}"));
                            c = Conn::connect(&addr).await.map_err(|e| e.to_string())?;
                        }
                    }
                }
                Ok::<_, String>((hist, errors, first_error))
            })
        })
        .collect();
    let mut hist = new_histogram();
    let (mut errors, mut first_error) = (0u64, None);
    for t in tasks {
        match t.await {
            Ok(Ok((h, e, f))) => {
                // Same bounds on both sides: adding cannot fail.
                let _ = hist.add(&h);
                errors += e;
                if first_error.is_none() {
                    first_error = f;
                }
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("reconnect failed: {e}"));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    let elapsed = started_at.elapsed();
    Ok(Report::from_parts(load.addr.transport(), load.addr.url(), "ping".into(), load.clients, &hist, errors, first_error, elapsed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn addresses() {
        assert_eq!(RespAddr::parse("redis://127.0.0.1:6379").unwrap(), RespAddr::Tcp("127.0.0.1:6379".into()));
        assert_eq!(RespAddr::parse("redis+unix:///tmp/r.sock").unwrap(), RespAddr::Unix("/tmp/r.sock".into()));
        for bad in ["tcp://x:1", "redis://", "redis://nohostport", "redis+unix://"] {
            assert!(matches!(RespAddr::parse(bad), Err(BenchError::BadArgs(_))), "{bad}");
        }
    }

    /// A stand-in server that answers PONG to each PING it reads (whole
    /// requests only), and a wrong answer on a second listener.
    async fn serve(answer: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1024];
                    let mut have = 0;
                    loop {
                        match s.read(&mut buf[have..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => have += n,
                        }
                        while have >= PING.len() {
                            assert_eq!(&buf[..PING.len()], PING);
                            buf.copy_within(PING.len()..have, 0);
                            have -= PING.len();
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn counts_answers_and_wrong_answers() {
        let good = serve(PONG).await;
        let load = RespLoad {
            addr: RespAddr::Tcp(good),
            clients: 3,
            limit: Limit::Requests(50),
            warmup: Duration::ZERO,
            request_timeout: Duration::from_secs(5),
        };
        let r = run_resp(&load).await.unwrap();
        assert_eq!((r.requests, r.errors, r.transport.as_str()), (150, 0, "redis-tcp"));
        assert!(r.p50_us > 0.0);

        let bad = serve(b"-ERR no\r\n").await;
        let load = RespLoad { addr: RespAddr::Tcp(bad), clients: 1, limit: Limit::Requests(3), ..load };
        let r = run_resp(&load).await.unwrap();
        assert_eq!((r.requests, r.errors), (0, 3));
        assert!(r.first_error.unwrap().contains("unexpected answer"));
    }
}
