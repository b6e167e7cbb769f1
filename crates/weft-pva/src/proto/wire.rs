//! Primitive encoding: byte order, checked reader, writer, sizes and strings.
//!
//! Every read is bounds-checked; lengths read from the wire are compared with
//! both a hard limit and the bytes actually remaining before anything is
//! allocated, so a 4-byte size field can never make us reserve gigabytes.

use crate::error::{Error, Result};

/// Byte order of a message (header flag bit 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    #[default]
    Little,
    Big,
}

/// Hard limits applied to everything read from the wire.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum bytes in one string.
    pub string_len_max: usize,
    /// Maximum elements in one array.
    pub array_len_max: usize,
    /// Maximum fields in one structure/union.
    pub fields_max: usize,
    /// Maximum nesting depth of types and values.
    pub depth_max: usize,
    /// Maximum reassembled message payload.
    pub message_len_max: usize,
    /// Maximum entries in a per-connection type cache.
    pub type_cache_max: usize,
    /// Maximum nodes in one type, counting through cache references (a few
    /// bytes of 0xFE references could otherwise describe an exponential tree).
    pub type_nodes_max: usize,
    /// Maximum value nodes decoded from one reader (empty structures cost no
    /// bytes, so the byte count alone does not bound them).
    pub value_nodes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            string_len_max: 1 << 20,
            array_len_max: 1 << 27,
            fields_max: 4096,
            depth_max: 32,
            // 1e6 doubles plus slack; pvAccessCPP segments, pvxs does not.
            message_len_max: 64 << 20,
            type_cache_max: 4096,
            type_nodes_max: 1 << 16,
            value_nodes_max: 1 << 22,
        }
    }
}

/// A checked cursor over a message payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    pub order: ByteOrder,
    pub limits: Limits,
    value_nodes: usize,
}

macro_rules! read_num {
    ($name:ident, $t:ty, $n:expr) => {
        pub fn $name(&mut self) -> Result<$t> {
            let b = self.take_array::<$n>(stringify!($t))?;
            Ok(match self.order {
                ByteOrder::Little => <$t>::from_le_bytes(b),
                ByteOrder::Big => <$t>::from_be_bytes(b),
            })
        }
    };
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], order: ByteOrder) -> Self {
        Reader { buf, pos: 0, order, limits: Limits::default(), value_nodes: 0 }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Count one decoded value node against `value_nodes_max`.
    pub fn charge_value_node(&mut self) -> Result<()> {
        self.value_nodes += 1;
        if self.value_nodes > self.limits.value_nodes_max {
            return Err(Error::Limit {
                what: "value nodes",
                value: self.value_nodes as u64,
                max: self.limits.value_nodes_max as u64,
            });
        }
        Ok(())
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread rest.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated { what, needed: n })?;
        match self.buf.get(self.pos..end) {
            Some(s) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::Truncated { what, needed: end - self.buf.len() }),
        }
    }

    fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>("u8")?[0])
    }

    pub fn i8(&mut self) -> Result<i8> {
        Ok(self.u8()? as i8)
    }

    read_num!(u16, u16, 2);
    read_num!(i16, i16, 2);
    read_num!(u32, u32, 4);
    read_num!(i32, i32, 4);
    read_num!(u64, u64, 8);
    read_num!(i64, i64, 8);
    read_num!(f32, f32, 4);
    read_num!(f64, f64, 8);

    /// A pvData size; `None` is the null size (0xFF).
    pub fn size_opt(&mut self) -> Result<Option<u64>> {
        let b = self.u8()?;
        match b {
            0xFF => Ok(None),
            0xFE => {
                let v = self.i32()?;
                if v < 0 {
                    return Err(Error::malformed(format!("negative size {v}")));
                }
                if v == i32::MAX {
                    let l = self.i64()?;
                    if l < 0 {
                        return Err(Error::malformed(format!("negative size {l}")));
                    }
                    Ok(Some(l as u64))
                } else {
                    Ok(Some(v as u64))
                }
            }
            n => Ok(Some(n as u64)),
        }
    }

    /// A size that must not be null, checked against `max`.
    pub fn size(&mut self, what: &'static str, max: usize) -> Result<usize> {
        match self.size_opt()? {
            None => Err(Error::malformed(format!("null size for {what}"))),
            Some(v) if v > max as u64 => Err(Error::Limit { what, value: v, max: max as u64 }),
            Some(v) => Ok(v as usize),
        }
    }

    /// An element count, additionally checked against the remaining bytes
    /// (each element needs at least `min_elem_bytes`) so no allocation
    /// exceeds what the message can actually hold.
    pub fn count(&mut self, what: &'static str, min_elem_bytes: usize) -> Result<usize> {
        let n = self.size(what, self.limits.array_len_max)?;
        let need = n.saturating_mul(min_elem_bytes);
        if need > self.remaining() {
            return Err(Error::Truncated { what, needed: need - self.remaining() });
        }
        Ok(n)
    }

    pub fn string(&mut self) -> Result<String> {
        let n = self.size("string length", self.limits.string_len_max)?;
        let b = self.take(n, "string")?;
        // Peers are required to send UTF-8; be lenient rather than drop the connection.
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    /// Fixed 16-byte IPv6 (or v4-mapped) address.
    pub fn addr16(&mut self) -> Result<[u8; 16]> {
        self.take_array::<16>("address")
    }

    pub fn guid(&mut self) -> Result<[u8; 12]> {
        self.take_array::<12>("guid")
    }
}

/// A growable output buffer in one byte order.
#[derive(Debug, Clone, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
    pub order: ByteOrder,
}

macro_rules! write_num {
    ($name:ident, $t:ty) => {
        pub fn $name(&mut self, v: $t) {
            match self.order {
                ByteOrder::Little => self.buf.extend_from_slice(&v.to_le_bytes()),
                ByteOrder::Big => self.buf.extend_from_slice(&v.to_be_bytes()),
            }
        }
    };
}

impl Writer {
    pub fn new(order: ByteOrder) -> Self {
        Writer { buf: Vec::new(), order }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn i8(&mut self, v: i8) {
        self.buf.push(v as u8);
    }
    write_num!(u16, u16);
    write_num!(i16, i16);
    write_num!(u32, u32);
    write_num!(i32, i32);
    write_num!(u64, u64);
    write_num!(i64, i64);
    write_num!(f32, f32);
    write_num!(f64, f64);

    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn size(&mut self, n: usize) {
        if n < 254 {
            self.buf.push(n as u8);
        } else if n < i32::MAX as usize {
            self.buf.push(0xFE);
            self.i32(n as i32);
        } else {
            self.buf.push(0xFE);
            self.i32(i32::MAX);
            self.i64(n as i64);
        }
    }

    pub fn null_size(&mut self) {
        self.buf.push(0xFF);
    }

    pub fn string(&mut self, s: &str) {
        self.size(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_roundtrip() {
        for n in [0usize, 1, 253, 254, 255, 65536, 1 << 30] {
            let mut w = Writer::new(ByteOrder::Big);
            w.size(n);
            let mut r = Reader::new(&w.buf, ByteOrder::Big);
            assert_eq!(r.size_opt().unwrap(), Some(n as u64));
        }
        let mut r = Reader::new(&[0xFF], ByteOrder::Little);
        assert_eq!(r.size_opt().unwrap(), None);
    }

    #[test]
    fn count_checks_remaining() {
        let mut w = Writer::new(ByteOrder::Little);
        w.size(1_000_000);
        let mut r = Reader::new(&w.buf, ByteOrder::Little);
        assert!(r.count("array", 8).is_err());
    }

    #[test]
    fn truncated_reads_error() {
        let mut r = Reader::new(&[1, 2, 3], ByteOrder::Little);
        assert!(r.u32().is_err());
        let mut r = Reader::new(&[5, b'a'], ByteOrder::Little);
        assert!(r.string().is_err());
    }
}
