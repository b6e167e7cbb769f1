//! Ceph's little-endian encoding: checked reads over a byte slice and the
//! ENCODE_START/DECODE_START versioned envelope (u8 version, u8 compat, u32
//! length) whose unknown tail a decoder skips.

use bytes::BufMut;

/// Decoding failure. `what` names the field, so a bad peer or a bad map can
/// be told apart in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated while decoding {what}: need {need} bytes, have {have}")]
    Short { what: &'static str, need: usize, have: usize },
    #[error("{what}: encoding compat version {compat} is newer than the {supported} we understand")]
    Incompatible { what: &'static str, compat: u8, supported: u8 },
    #[error("{what}: length {len} exceeds the limit {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl DecodeError {
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Invalid { what, detail: detail.into() }
    }
}

pub type DResult<T> = Result<T, DecodeError>;

/// Largest string or blob we accept from the wire inside a structure.
pub const MAX_BLOB: usize = 64 << 20;

/// A checked cursor. Every read checks the remaining length first, so no
/// input can make it panic or allocate more than the input's own size.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> DResult<&'a [u8]> {
        let have = self.remaining();
        if n > have {
            return Err(DecodeError::Short { what, need: n, have });
        }
        let s = self.buf.get(self.pos..self.pos + n).ok_or(DecodeError::Short { what, need: n, have })?;
        self.pos += n;
        Ok(s)
    }
    pub fn skip(&mut self, n: usize, what: &'static str) -> DResult<()> {
        self.take(n, what).map(|_| ())
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> DResult<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u8(&mut self, what: &'static str) -> DResult<u8> {
        Ok(self.arr::<1>(what)?[0])
    }
    pub fn bool(&mut self, what: &'static str) -> DResult<bool> {
        Ok(self.u8(what)? != 0)
    }
    pub fn u16(&mut self, what: &'static str) -> DResult<u16> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> DResult<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    pub fn i32(&mut self, what: &'static str) -> DResult<i32> {
        Ok(i32::from_le_bytes(self.arr(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> DResult<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    pub fn i64(&mut self, what: &'static str) -> DResult<i64> {
        Ok(i64::from_le_bytes(self.arr(what)?))
    }
    pub fn array<const N: usize>(&mut self, what: &'static str) -> DResult<[u8; N]> {
        self.arr(what)
    }

    /// A u32-length-prefixed byte string (bufferlist / std::string).
    pub fn blob(&mut self, what: &'static str) -> DResult<&'a [u8]> {
        let len = self.u32(what)? as usize;
        if len > MAX_BLOB {
            return Err(DecodeError::TooLong { what, len, max: MAX_BLOB });
        }
        self.take(len, what)
    }
    pub fn string(&mut self, what: &'static str) -> DResult<String> {
        let b = self.blob(what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    /// A u32 element count, checked against the bytes left assuming each
    /// element takes at least `min_elem` bytes: this bounds any allocation
    /// sized by the count to the size of the input.
    pub fn count(&mut self, min_elem: usize, what: &'static str) -> DResult<usize> {
        let n = self.u32(what)? as usize;
        let need = n.saturating_mul(min_elem.max(1));
        if need > self.remaining() {
            return Err(DecodeError::Short { what, need, have: self.remaining() });
        }
        Ok(n)
    }

    /// DECODE_START: reads the envelope, rejects a compat version newer than
    /// `supported`, and returns the version plus a reader over exactly the
    /// body. The parent advances past the body, which skips unknown tails.
    pub fn versioned(&mut self, supported: u8, what: &'static str) -> DResult<(u8, Reader<'a>)> {
        let v = self.u8(what)?;
        let compat = self.u8(what)?;
        if compat > supported {
            return Err(DecodeError::Incompatible { what, compat, supported });
        }
        let len = self.u32(what)? as usize;
        let body = self.take(len, what)?;
        Ok((v, Reader::new(body)))
    }

    /// Like `versioned` but without the compat byte check failing: for
    /// envelopes where the caller handles old versions itself.
    pub fn skip_versioned(&mut self, what: &'static str) -> DResult<()> {
        self.u8(what)?;
        self.u8(what)?;
        let len = self.u32(what)? as usize;
        self.skip(len, what)
    }

    pub fn skip_string_map(&mut self, what: &'static str) -> DResult<()> {
        let n = self.count(8, what)?;
        for _ in 0..n {
            self.blob(what)?;
            self.blob(what)?;
        }
        Ok(())
    }

    pub fn string_map(&mut self, what: &'static str) -> DResult<Vec<(String, String)>> {
        let n = self.count(8, what)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.string(what)?;
            let val = self.string(what)?;
            v.push((k, val));
        }
        Ok(v)
    }
}

/// Little-endian writers over any `BufMut`.
pub trait Put: BufMut {
    fn put_blob(&mut self, b: &[u8]) {
        self.put_u32_le(b.len() as u32);
        self.put_slice(b);
    }
    fn put_str(&mut self, s: &str) {
        self.put_blob(s.as_bytes());
    }
    fn put_bool(&mut self, b: bool) {
        self.put_u8(b as u8);
    }
}
impl<T: BufMut + ?Sized> Put for T {}

/// ENCODE_START/ENCODE_FINISH: writes the envelope around what `f` writes.
pub fn encode_versioned(out: &mut Vec<u8>, v: u8, compat: u8, f: impl FnOnce(&mut Vec<u8>)) {
    out.push(v);
    out.push(compat);
    let len_at = out.len();
    out.extend_from_slice(&[0u8; 4]);
    f(out);
    let len = (out.len() - len_at - 4) as u32;
    if let Some(slot) = out.get_mut(len_at..len_at + 4) {
        slot.copy_from_slice(&len.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_skips_unknown_tail() {
        let mut buf = Vec::new();
        encode_versioned(&mut buf, 3, 1, |b| {
            b.put_u32_le(7);
            b.put_u64_le(99); // a field a v1 decoder does not know
        });
        buf.put_u8(0xaa);
        let mut r = Reader::new(&buf);
        let (v, mut body) = r.versioned(1, "t").unwrap();
        assert_eq!(v, 3);
        assert_eq!(body.u32("x").unwrap(), 7);
        assert_eq!(r.u8("after").unwrap(), 0xaa);
    }

    #[test]
    fn rejects_newer_compat_and_short_input() {
        let buf = [5u8, 4, 0, 0, 0, 0];
        assert!(matches!(Reader::new(&buf).versioned(3, "t"), Err(DecodeError::Incompatible { .. })));
        let buf = [1u8, 1, 9, 0, 0, 0, 1];
        assert!(matches!(Reader::new(&buf).versioned(3, "t"), Err(DecodeError::Short { .. })));
        // a huge count with no bytes behind it fails before allocating
        let buf = [0xff, 0xff, 0xff, 0xff];
        assert!(Reader::new(&buf).count(4, "n").is_err());
    }
}
