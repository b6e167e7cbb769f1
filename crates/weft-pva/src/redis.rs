//! A minimal Redis (RESP2) client for the stateless mode: a sans-IO reply
//! codec and a tokio connection on top. Only what stateless mode needs:
//! commands with binary arguments, and (P)SUBSCRIBE message streams.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Largest bulk string or array we accept from Redis.
const BULK_MAX: usize = 512 << 20;
const ARRAY_MAX: usize = 1 << 20;
const DEPTH_MAX: usize = 8;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn bulk(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Encode a command as a RESP array of bulk strings.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((rest.get(..i)?, from + i + 2))
}

fn parse_int(b: &[u8]) -> Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Malformed(format!("redis sent a bad integer {:?}", String::from_utf8_lossy(b))))
}

/// Parse one reply starting at `at`; Ok(None) = need more bytes.
fn parse(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Resp, usize)>> {
    if depth > DEPTH_MAX {
        return Err(Error::Malformed("redis reply nested too deep".into()));
    }
    let Some(&t) = buf.get(at) else { return Ok(None) };
    let Some((l, next)) = line(buf, at + 1) else { return Ok(None) };
    let text = || String::from_utf8_lossy(l).into_owned();
    Ok(Some(match t {
        b'+' => (Resp::Simple(text()), next),
        b'-' => (Resp::Error(text()), next),
        b':' => (Resp::Int(parse_int(l)?), next),
        b'$' => {
            let n = parse_int(l)?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), next)));
            }
            let n = n as usize;
            if n > BULK_MAX {
                return Err(Error::Limit { what: "redis bulk", value: n as u64, max: BULK_MAX as u64 });
            }
            let Some(b) = buf.get(next..next + n) else { return Ok(None) };
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            (Resp::Bulk(Some(b.to_vec())), next + n + 2)
        }
        b'*' => {
            let n = parse_int(l)?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), next)));
            }
            let n = n as usize;
            if n > ARRAY_MAX {
                return Err(Error::Limit { what: "redis array", value: n as u64, max: ARRAY_MAX as u64 });
            }
            let mut items = Vec::with_capacity(n.min(1024));
            let mut pos = next;
            for _ in 0..n {
                match parse(buf, pos, depth + 1)? {
                    Some((r, p)) => {
                        items.push(r);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            (Resp::Array(Some(items)), pos)
        }
        other => return Err(Error::Malformed(format!("redis sent unknown reply type 0x{other:02x}"))),
    }))
}

/// Take one reply out of `buf` (tokio-util decoder contract).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Resp>> {
    match parse(buf, 0, 0)? {
        Some((r, used)) => {
            buf.advance(used);
            Ok(Some(r))
        }
        None => Ok(None),
    }
}

/// One Redis connection (request/response, or subscriber after `subscribe`).
pub struct Redis {
    sock: TcpStream,
    buf: BytesMut,
}

impl Redis {
    pub async fn connect(addr: SocketAddr) -> Result<Redis> {
        let sock = TcpStream::connect(addr).await?;
        let _ = sock.set_nodelay(true);
        Ok(Redis { sock, buf: BytesMut::with_capacity(4096) })
    }

    /// Read the next reply (also used for pub/sub pushes).
    pub async fn read(&mut self) -> Result<Resp> {
        loop {
            if let Some(r) = decode(&mut self.buf)? {
                return Ok(r);
            }
            if self.sock.read_buf(&mut self.buf).await? == 0 {
                return Err(Error::Closed("redis closed the connection".into()));
            }
        }
    }

    /// Send a command and wait for its reply; a Redis error reply becomes `Error::Remote`.
    pub async fn cmd(&mut self, args: &[&[u8]]) -> Result<Resp> {
        self.sock.write_all(&encode_command(args)).await?;
        match self.read().await? {
            Resp::Error(e) => Err(Error::Remote(format!("redis: {e}"))),
            r => Ok(r),
        }
    }

    /// Send a command without waiting (subscriber mode).
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        self.sock.write_all(&encode_command(args)).await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replies_whole_and_split() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$-1\r\n:42\r\n+OK\r\n-ERR x\r\n";
        for k in 0..wire.len() {
            let mut b = BytesMut::from(&wire[..k]);
            let first = decode(&mut b).unwrap();
            if k < 27 {
                assert!(first.is_none(), "split {k}");
            }
        }
        let mut b = BytesMut::from(&wire[..]);
        assert_eq!(
            decode(&mut b).unwrap(),
            Some(Resp::Array(Some(vec![Resp::Bulk(Some(b"message".to_vec())), Resp::Bulk(None), Resp::Int(42)])))
        );
        assert_eq!(decode(&mut b).unwrap(), Some(Resp::Simple("OK".into())));
        assert_eq!(decode(&mut b).unwrap(), Some(Resp::Error("ERR x".into())));
        let mut b = BytesMut::from(&b"$99999999999\r\n"[..]);
        assert!(decode(&mut b).is_err());
    }

    #[test]
    fn command_encoding() {
        assert_eq!(encode_command(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
