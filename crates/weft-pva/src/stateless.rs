//! Stateless mode: PV values and channel state live in Redis, so several
//! `weft` processes (pods) serve the same PVs.
//!
//! Keys (prefix default `weft:pva`):
//! - `{p}:pv:{name}`: msgpack `StoredPv` (pvData type and full value, little
//!   endian, plus writer id and sequence number). Last writer wins.
//! - `{p}:pvs`: set of shared PV names.
//! - `{p}:procs`: hash process id -> "tcp-addr unix-seconds" (heartbeat).
//! - `{p}:chan:{process id}`: hash PV name -> open client channels in that
//!   process; expires 3 heartbeats after the process stops refreshing it.
//! - pub/sub `{p}:upd:{name}`: the same `StoredPv` plus the changed bits, so
//!   other processes update their monitors without a round trip.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::proto::types::{decode_desc, encode_desc};
use crate::proto::value::{decode_value, encode_value};
use crate::proto::{BitSet, ByteOrder, FieldDesc, Reader, SendCache, TypeCache, Value, Writer};
use crate::redis::{Redis, Resp};
use crate::server::{Entry, Provider, SharedPv};

/// Updates waiting to be written to Redis; beyond this the oldest are dropped
/// (the next write carries the full value anyway).
const WRITE_QUEUE: usize = 1024;

/// A PV value as stored in Redis (msgpack, named fields).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredPv {
    /// pvData FieldDesc, little endian, no type cache.
    #[serde(with = "serde_bytes")]
    pub r#type: Vec<u8>,
    /// pvData full value, little endian.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Changed-field BitSet of the update that wrote it.
    #[serde(with = "serde_bytes")]
    pub changed: Vec<u8>,
    /// Process that wrote it.
    pub by: String,
    pub seq: u64,
}

impl StoredPv {
    pub fn new(desc: &FieldDesc, value: &Value, changed: &BitSet, by: &str, seq: u64) -> Result<StoredPv> {
        let mut t = Writer::new(ByteOrder::Little);
        encode_desc(&mut t, desc, &mut SendCache::disabled());
        let mut v = Writer::new(ByteOrder::Little);
        encode_value(&mut v, desc, value, &mut SendCache::disabled())?;
        let mut c = Writer::new(ByteOrder::Little);
        changed.encode(&mut c);
        Ok(StoredPv { r#type: t.buf, value: v.buf, changed: c.buf, by: by.to_string(), seq })
    }

    pub fn to_msgpack(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self).map_err(|e| Error::Usage(format!("msgpack encode: {e}")))
    }

    pub fn from_msgpack(b: &[u8]) -> Result<StoredPv> {
        rmp_serde::from_slice(b).map_err(|e| Error::Malformed(format!("stored PV is not valid msgpack: {e}")))
    }

    /// Decode type, value and changed bits.
    pub fn decode(&self) -> Result<(FieldDesc, Value, BitSet)> {
        let mut cache = TypeCache::new();
        let d = decode_desc(&mut Reader::new(&self.r#type, ByteOrder::Little), &mut cache)?;
        let v = decode_value(&mut Reader::new(&self.value, ByteOrder::Little), &d, &mut cache)?;
        let c = BitSet::decode(&mut Reader::new(&self.changed, ByteOrder::Little)).unwrap_or_else(|_| BitSet::with(&[0]));
        Ok((d, v, c))
    }
}

/// Stateless-mode settings.
#[derive(Debug, Clone)]
pub struct StatelessConfig {
    pub redis: SocketAddr,
    /// This process's id: HOSTNAME inside a Kubernetes pod, else WEFT_PROCESS_ID, else a UUID.
    pub process_id: String,
    pub prefix: String,
    pub heartbeat: Duration,
}

/// The process id rule: the pod's HOSTNAME in Kubernetes, WEFT_PROCESS_ID if
/// set, otherwise a random UUID.
pub fn process_id() -> String {
    if std::env::var("KUBERNETES_SERVICE_HOST").is_ok() {
        if let Ok(h) = std::env::var("HOSTNAME") {
            if !h.is_empty() {
                return h;
            }
        }
    }
    if let Ok(id) = std::env::var("WEFT_PROCESS_ID") {
        if !id.is_empty() {
            return id;
        }
    }
    uuid::Uuid::new_v4().to_string()
}

impl StatelessConfig {
    pub fn new(redis: SocketAddr) -> Self {
        StatelessConfig { redis, process_id: process_id(), prefix: "weft:pva".into(), heartbeat: Duration::from_secs(5) }
    }
    fn pv_key(&self, name: &str) -> String {
        format!("{}:pv:{name}", self.prefix)
    }
    fn upd_channel(&self, name: &str) -> String {
        format!("{}:upd:{name}", self.prefix)
    }
    fn chan_key(&self) -> String {
        format!("{}:chan:{}", self.prefix, self.process_id)
    }
}

enum Write {
    Value { name: String, stored: Vec<u8> },
    Channel { name: String, delta: i64 },
}

/// A running stateless attachment; dropping it stops the sync tasks.
pub struct Stateless {
    pub config: StatelessConfig,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Stateless {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Stateless {
    /// Share the PVs `names` of `provider` through Redis: adopt values other
    /// processes stored, publish local changes, apply remote ones, and keep
    /// this process's channel table and heartbeat. `tcp_addr` is advertised.
    pub async fn attach(config: StatelessConfig, provider: &Provider, names: &[String], tcp_addr: SocketAddr) -> Result<Stateless> {
        let mut r = Redis::connect(config.redis).await?;
        let mut shared: Vec<(String, SharedPv)> = Vec::new();
        for n in names {
            match provider.get(n) {
                Some(Entry::Pv(pv)) => shared.push((n.clone(), pv)),
                _ => return Err(Error::Usage(format!("{n} is not a served PV"))),
            }
        }
        let seq = Arc::new(AtomicU64::new(0));
        for (name, pv) in &shared {
            let key = config.pv_key(name);
            let (desc, cur) = pv.current();
            match r.cmd(&[b"GET", key.as_bytes()]).await? {
                Resp::Bulk(Some(b)) => match StoredPv::from_msgpack(&b).and_then(|s| s.decode().map(|x| (s.seq, x))) {
                    Ok((sq, (d, v, _))) if d == desc => {
                        seq.fetch_max(sq, Ordering::Relaxed);
                        pv.post_quiet(BitSet::with(&[0]), v);
                    }
                    Ok(_) | Err(_) => {
                        warn!(%name, "stored PV has another type; replacing it");
                        let s = StoredPv::new(&desc, &cur, &BitSet::with(&[0]), &config.process_id, 0)?.to_msgpack()?;
                        r.cmd(&[b"SET", key.as_bytes(), &s]).await?;
                    }
                },
                _ => {
                    let s = StoredPv::new(&desc, &cur, &BitSet::with(&[0]), &config.process_id, 0)?.to_msgpack()?;
                    // NX: if another process raced us, its value wins and arrives by pub/sub or next GET.
                    r.cmd(&[b"SET", key.as_bytes(), &s, b"NX"]).await?;
                }
            }
            r.cmd(&[b"SADD", format!("{}:pvs", config.prefix).as_bytes(), name.as_bytes()]).await?;
        }

        let (wtx, mut wrx) = mpsc::channel::<Write>(WRITE_QUEUE);
        // Local posts -> Redis.
        for (name, pv) in &shared {
            let (name, tx, id, seq) = (name.clone(), wtx.clone(), config.process_id.clone(), seq.clone());
            let pv2 = pv.clone();
            pv.observe(Arc::new(move |changed: &BitSet, value: &Value| {
                let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
                match StoredPv::new(&pv2.desc(), value, changed, &id, n).and_then(|s| s.to_msgpack()) {
                    Ok(stored) => {
                        if tx.try_send(Write::Value { name: name.clone(), stored }).is_err() {
                            warn!(%name, "redis write queue full; update not shared");
                        }
                    }
                    Err(e) => warn!(%name, error = %e, "cannot encode PV for redis"),
                }
            }));
        }
        let hook_tx = wtx.clone();
        provider.set_channel_hook(Arc::new(move |name: &str, delta: i64| {
            let _ = hook_tx.try_send(Write::Channel { name: name.to_string(), delta });
        }));

        let mut tasks = Vec::new();
        let cfg = config.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = r;
            while let Some(w) = wrx.recv().await {
                let res = match &w {
                    Write::Value { name, stored } => {
                        let key = cfg.pv_key(name);
                        match r.cmd(&[b"SET", key.as_bytes(), stored]).await {
                            Ok(_) => r.cmd(&[b"PUBLISH", cfg.upd_channel(name).as_bytes(), stored]).await,
                            Err(e) => Err(e),
                        }
                    }
                    Write::Channel { name, delta } => {
                        let k = cfg.chan_key();
                        r.cmd(&[b"HINCRBY", k.as_bytes(), name.as_bytes(), delta.to_string().as_bytes()]).await
                    }
                };
                if let Err(e) = res {
                    warn!(error = %e, "redis write failed; reconnecting");
                    match Redis::connect(cfg.redis).await {
                        Ok(n) => r = n,
                        Err(e) => {
                            warn!(error = %e, "redis unreachable");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        }));

        // Remote posts -> local monitors.
        let cfg = config.clone();
        let by_name: std::collections::HashMap<String, SharedPv> = shared.iter().cloned().collect();
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(e) = subscribe_loop(&cfg, &by_name).await {
                    debug!(error = %e, "redis subscription lost; retrying");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));

        // Heartbeat: advertise this process and keep its channel table alive.
        let cfg = config.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if let Ok(mut r) = Redis::connect(cfg.redis).await {
                    loop {
                        let procs = format!("{}:procs", cfg.prefix);
                        let v = format!("{tcp_addr} {}", now_secs());
                        let ttl = (cfg.heartbeat.as_secs().max(1) * 3).to_string();
                        let ok = r.cmd(&[b"HSET", procs.as_bytes(), cfg.process_id.as_bytes(), v.as_bytes()]).await.is_ok()
                            && r.cmd(&[b"HSETNX", cfg.chan_key().as_bytes(), b"_alive", b"1"]).await.is_ok()
                            && r.cmd(&[b"EXPIRE", cfg.chan_key().as_bytes(), ttl.as_bytes()]).await.is_ok();
                        if !ok {
                            break;
                        }
                        tokio::time::sleep(cfg.heartbeat).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
        Ok(Stateless { config, tasks })
    }
}

async fn subscribe_loop(cfg: &StatelessConfig, pvs: &std::collections::HashMap<String, SharedPv>) -> Result<()> {
    let mut sub = Redis::connect(cfg.redis).await?;
    let pattern = format!("{}:upd:*", cfg.prefix);
    sub.send(&[b"PSUBSCRIBE", pattern.as_bytes()]).await?;
    let prefix = format!("{}:upd:", cfg.prefix);
    loop {
        let Resp::Array(Some(items)) = sub.read().await? else { continue };
        // ["pmessage", pattern, channel, payload]
        let (Some(kind), Some(chan), Some(payload)) = (items.first(), items.get(2), items.get(3)) else { continue };
        if kind.bulk() != Some(b"pmessage") {
            continue;
        }
        let (Some(chan), Some(payload)) = (chan.bulk(), payload.bulk()) else { continue };
        let Some(name) = std::str::from_utf8(chan).ok().and_then(|c| c.strip_prefix(&prefix)) else { continue };
        let Some(pv) = pvs.get(name) else { continue };
        let stored = match StoredPv::from_msgpack(payload) {
            Ok(s) => s,
            Err(e) => {
                warn!(%name, error = %e, "ignoring bad update from redis");
                continue;
            }
        };
        if stored.by == cfg.process_id {
            continue;
        }
        match stored.decode() {
            Ok((d, v, changed)) if d == pv.desc() => pv.post_quiet(changed, v),
            Ok(_) => warn!(%name, "update from redis has another type; ignored"),
            Err(e) => warn!(%name, error = %e, "ignoring undecodable update from redis"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::ScalarType;
    use crate::proto::nt::{Builder, Meta, nt_scalar};

    #[test]
    fn stored_pv_roundtrip() {
        let (d, v) = Builder::new(nt_scalar(ScalarType::F64, Meta::all())).with("value", Value::F64(2.5)).build();
        let s = StoredPv::new(&d, &v, &BitSet::with(&[1]), "p1", 7).unwrap();
        let back = StoredPv::from_msgpack(&s.to_msgpack().unwrap()).unwrap();
        assert_eq!(back, s);
        let (d2, v2, c) = back.decode().unwrap();
        assert_eq!((d2, v2), (d, v));
        assert!(c.get(1));
    }
}
