//! Redis Streams: XADD to one key per run (the `redis` crate's multiplexed
//! connection pipelines the requests in flight), read back with
//! XREAD COUNT 1000. Durability is the server's `appendfsync`, set by whoever
//! started it.

use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::Value;

use crate::engine::{payload, Consumed, ProduceFn, Target};
use crate::BenchError;

const PULL: u64 = 1000;

pub struct RedisTarget {
    client: redis::Client,
    admin: MultiplexedConnection,
}

impl RedisTarget {
    pub async fn connect(url: &str) -> Result<RedisTarget, BenchError> {
        let client = redis::Client::open(url)?;
        let admin = client.get_multiplexed_async_connection().await?;
        Ok(RedisTarget { client, admin })
    }
}

impl Target for RedisTarget {
    fn system(&self) -> &'static str {
        "redis"
    }

    async fn create(&self, name: &str) -> Result<(), BenchError> {
        let mut c = self.admin.clone();
        let _: Value = redis::cmd("DEL").arg(name).query_async(&mut c).await?;
        Ok(())
    }

    async fn producer(&self, name: &str, size: usize, _batch: usize) -> Result<ProduceFn, BenchError> {
        let conn = self.client.get_multiplexed_async_connection().await?;
        let key: Arc<str> = name.into();
        let value: Arc<[u8]> = payload(size).into();
        Ok(Arc::new(move || {
            let mut conn = conn.clone();
            let key = key.clone();
            let value = value.clone();
            Box::pin(async move {
                let _: Value = redis::cmd("XADD").arg(&*key).arg("*").arg("v").arg(&*value).query_async(&mut conn).await?;
                Ok(1)
            })
        }))
    }

    async fn consume(&self, name: &str, expected: u64) -> Result<Consumed, BenchError> {
        let mut c = self.client.get_multiplexed_async_connection().await?;
        let start = Instant::now();
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut last = b"0-0".to_vec();
        while records < expected {
            let reply: Value = redis::cmd("XREAD").arg("COUNT").arg(PULL).arg("STREAMS").arg(name).arg(&last).query_async(&mut c).await?;
            let before = records;
            for_each_entry(&reply, |id, value_len| {
                last.clear();
                last.extend_from_slice(id);
                records += 1;
                bytes += value_len as u64;
            })?;
            if records == before {
                return Err(BenchError::Unexpected(format!("XREAD returned nothing after {records} of {expected} entries")));
            }
        }
        Ok(Consumed { records, bytes, secs: start.elapsed().as_secs_f64(), lag_ms: None })
    }

    async fn delete(&self, name: &str) -> Result<(), BenchError> {
        let mut c = self.admin.clone();
        let _: Value = redis::cmd("DEL").arg(name).query_async(&mut c).await?;
        Ok(())
    }
}

fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// Walk an XREAD reply for one key, calling `f(id, total field-value bytes)`
/// per entry. RESP2: [[key, [[id, [field, value, ...]], ...]]]; RESP3 sends
/// a map {key: [...]}.
fn for_each_entry(reply: &Value, mut f: impl FnMut(&[u8], usize)) -> Result<(), BenchError> {
    let bad = || BenchError::Unexpected(format!("XREAD reply of an unknown shape: {reply:?}"));
    let entries: &[Value] = match reply {
        Value::Nil => return Ok(()),
        Value::Map(m) => m.first().and_then(|(_, v)| items(v)).ok_or_else(bad)?,
        v => items(v)
            .and_then(|keys| keys.first())
            .and_then(items)
            .and_then(|kv| kv.get(1))
            .and_then(items)
            .ok_or_else(bad)?,
    };
    for e in entries {
        let e = items(e).ok_or_else(bad)?;
        let id = match e.first() {
            Some(Value::BulkString(id)) => id.as_slice(),
            Some(Value::SimpleString(id)) => id.as_bytes(),
            _ => return Err(bad()),
        };
        let fields = e.get(1).and_then(items).ok_or_else(bad)?;
        // Values are the odd positions (field, value, field, value...).
        let len = fields
            .iter()
            .skip(1)
            .step_by(2)
            .map(|v| match v {
                Value::BulkString(b) => b.len(),
                _ => 0,
            })
            .sum();
        f(id, len);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn walks_a_resp2_xread_reply() {
        let entry = |id: &str, v: &str| Value::Array(vec![bulk(id), Value::Array(vec![bulk("v"), bulk(v)])]);
        let reply = Value::Array(vec![Value::Array(vec![bulk("k"), Value::Array(vec![entry("1-0", "abc"), entry("1-1", "de")])])]);
        let mut seen = vec![];
        for_each_entry(&reply, |id, n| seen.push((String::from_utf8(id.to_vec()).unwrap(), n))).unwrap();
        assert_eq!(seen, vec![("1-0".to_string(), 3), ("1-1".to_string(), 2)]);
        for_each_entry(&Value::Nil, |_, _| panic!("no entries")).unwrap();
        assert!(for_each_entry(&Value::Int(3), |_, _| {}).is_err());
    }
}
