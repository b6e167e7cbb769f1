//! Hand-written msgpack for the bodies of hot routes (issue #18: a
//! one-record produce spent ~1 900 instructions in serde's decode of its
//! request and ~1 700 in the encode of its answer, a fifth of the server's
//! work per request).
//!
//! The rule that keeps this safe: a hand codec handles only the exact shape
//! it knows and says "not mine" for anything else, and the caller then uses
//! serde as before, which gives the value or the error it always gave. So a
//! body that decodes here decodes to what serde would have made of it, and
//! an encode here writes the bytes rmp_serde would have written (the tests
//! of each implementation check both, and a fuzz target checks the first).

use bytes::Bytes;

/// A body type with its own msgpack codec. Both methods may decline.
pub trait FastBody: Sized {
    /// The value of `body` when it has exactly the shape this handles;
    /// `None` for anything else (the caller decodes with serde).
    fn decode_msgpack(_body: &Bytes) -> Option<Self> {
        None
    }

    /// Writes the msgpack encoding (rmp_serde's, structs as maps with field
    /// names) and returns true; false when this value is not one it
    /// handles, with nothing written.
    fn encode_msgpack(&self, _out: &mut Writer) -> bool {
        false
    }
}

/// An optional body (a route whose arguments may be left out) has no hand
/// codec of its own: serde, as for any type that declines.
impl<T: FastBody> FastBody for Option<T> {}

/// A cursor over a msgpack body. Every read returns `None` when the next
/// value is not of the asked type (or the body ends), without consuming it.
pub struct Reader<'a> {
    body: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a Bytes) -> Self {
        Self { body, pos: 0 }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.body.len()
    }

    fn peek(&self) -> Option<u8> {
        self.body.get(self.pos).copied()
    }

    /// `n` bytes after the marker, big-endian, as a u64 (n <= 8).
    fn be(&self, n: usize) -> Option<u64> {
        let b = self.body.get(self.pos + 1..self.pos + 1 + n)?;
        Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    }

    /// A length-prefixed value: (header bytes, length) for the markers
    /// `fix` (a fix-form mask and width) or the 8/16/32-bit forms.
    fn len_of(&self, fix: Option<(u8, u8)>, m8: Option<u8>, m16: u8, m32: u8) -> Option<(usize, usize)> {
        let m = self.peek()?;
        if let Some((base, mask)) = fix
            && m & !mask == base
        {
            return Some((1, usize::from(m & mask)));
        }
        let (hdr, len) = match m {
            _ if Some(m) == m8 => (2, self.be(1)?),
            _ if m == m16 => (3, self.be(2)?),
            _ if m == m32 => (5, self.be(4)?),
            _ => return None,
        };
        Some((hdr, usize::try_from(len).ok()?))
    }

    pub fn nil(&mut self) -> bool {
        let is = self.peek() == Some(0xc0);
        if is {
            self.pos += 1;
        }
        is
    }

    /// A map header: its number of entries.
    pub fn map_len(&mut self) -> Option<usize> {
        let (hdr, n) = self.len_of(Some((0x80, 0x0f)), None, 0xde, 0xdf)?;
        self.pos += hdr;
        Some(n)
    }

    /// An array header: its number of elements.
    pub fn array_len(&mut self) -> Option<usize> {
        let (hdr, n) = self.len_of(Some((0x90, 0x0f)), None, 0xdc, 0xdd)?;
        self.pos += hdr;
        Some(n)
    }

    /// A str's bytes, not checked as UTF-8: for map keys compared with
    /// known (ASCII) names, where one that matches is valid by being equal.
    pub fn key(&mut self) -> Option<&'a [u8]> {
        let (hdr, n) = self.len_of(Some((0xa0, 0x1f)), Some(0xd9), 0xda, 0xdb)?;
        let start = self.pos + hdr;
        let k = self.body.get(start..start.checked_add(n)?)?;
        self.pos = start + n;
        Some(k)
    }

    /// A str, as UTF-8.
    pub fn str(&mut self) -> Option<&'a str> {
        let (hdr, n) = self.len_of(Some((0xa0, 0x1f)), Some(0xd9), 0xda, 0xdb)?;
        let start = self.pos + hdr;
        let s = std::str::from_utf8(self.body.get(start..start.checked_add(n)?)?).ok()?;
        self.pos = start + n;
        Some(s)
    }

    /// A bin, as a slice of the body (no copy).
    pub fn bin(&mut self) -> Option<Bytes> {
        let (hdr, n) = self.len_of(None, Some(0xc4), 0xc5, 0xc6)?;
        let start = self.pos + hdr;
        let end = start.checked_add(n)?;
        if end > self.body.len() {
            return None;
        }
        self.pos = end;
        Some(self.body.slice(start..end))
    }

    /// An unsigned int (positive fixint or uint 8-64).
    pub fn uint(&mut self) -> Option<u64> {
        let m = self.peek()?;
        let (hdr, v) = match m {
            0x00..=0x7f => (1, u64::from(m)),
            0xcc => (2, self.be(1)?),
            0xcd => (3, self.be(2)?),
            0xce => (5, self.be(4)?),
            0xcf => (9, self.be(8)?),
            _ => return None,
        };
        self.pos += hdr;
        Some(v)
    }

    /// A signed int that fits an i64 (any int form).
    pub fn int(&mut self) -> Option<i64> {
        let m = self.peek()?;
        let (hdr, v) = match m {
            0xe0..=0xff => (1, i64::from(m as i8)),
            0xd0 => (2, i64::from(self.be(1)? as u8 as i8)),
            0xd1 => (3, i64::from(self.be(2)? as u16 as i16)),
            0xd2 => (5, i64::from(self.be(4)? as u32 as i32)),
            0xd3 => (9, self.be(8)? as i64),
            _ => {
                let start = self.pos;
                let v = i64::try_from(self.uint()?).ok();
                if v.is_none() {
                    self.pos = start;
                }
                return v;
            }
        };
        self.pos += hdr;
        Some(v)
    }
}

/// Where a [`FastBody`] writes: the buffer [`BodyFormat::encode`](crate::BodyFormat::encode)
/// uses (on the stack for small bodies, copied once into a `Bytes` of their
/// size). Each value is written in the form rmp (and so rmp_serde) picks:
/// the shortest.
pub struct Writer {
    out: crate::body::StackFirst,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Self { out: crate::body::StackFirst::new() }
    }

    pub fn into_bytes(self) -> Bytes {
        self.out.into_bytes()
    }

    fn put(&mut self, b: &[u8]) {
        self.out.put(b);
    }

    /// A marker and the low `n` bytes of `v`, big-endian.
    fn marked(&mut self, marker: u8, v: u64, n: usize) {
        let mut b = [0u8; 9];
        b[0] = marker;
        let be = v.to_be_bytes();
        b[1..=n].copy_from_slice(&be[8 - n..]);
        self.put(&b[..=n]);
    }

    /// A length header: the fix form below `fix_max`, else 16 or 32 bits
    /// (`m8`: an 8-bit form too, as strings have).
    fn header(&mut self, n: u32, fix: u8, fix_max: u32, m8: Option<u8>, m16: u8, m32: u8) {
        match n {
            _ if n < fix_max => self.put(&[fix | n as u8]),
            _ if n < 256 && m8.is_some() => self.marked(m8.unwrap_or(m16), u64::from(n), 1),
            _ if n < 65536 => self.marked(m16, u64::from(n), 2),
            _ => self.marked(m32, u64::from(n), 4),
        }
    }

    /// Bytes already in msgpack form (a key encoded once, as a constant).
    pub fn raw(&mut self, b: &[u8]) {
        self.put(b);
    }

    pub fn map_len(&mut self, n: u32) {
        self.header(n, 0x80, 16, None, 0xde, 0xdf);
    }

    pub fn array_len(&mut self, n: u32) {
        self.header(n, 0x90, 16, None, 0xdc, 0xdd);
    }

    /// A str (longer than u32::MAX bytes cannot be a body's).
    pub fn str(&mut self, s: &str) {
        self.header(u32::try_from(s.len()).unwrap_or(u32::MAX), 0xa0, 32, Some(0xd9), 0xda, 0xdb);
        self.put(s.as_bytes());
    }

    pub fn uint(&mut self, v: u64) {
        match v {
            0..=127 => self.put(&[v as u8]),
            128..=255 => self.marked(0xcc, v, 1),
            256..=65535 => self.marked(0xcd, v, 2),
            65536..=0xffff_ffff => self.marked(0xce, v, 4),
            _ => self.marked(0xcf, v, 8),
        }
    }

    pub fn int(&mut self, v: i64) {
        match v {
            0.. => self.uint(v as u64),
            -32..=-1 => self.put(&[v as u8]),
            -128..=-33 => self.marked(0xd0, v as u64, 1),
            -32768..=-129 => self.marked(0xd1, v as u64, 2),
            -2147483648..=-32769 => self.marked(0xd2, v as u64, 4),
            _ => self.marked(0xd3, v as u64, 8),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn enc<T: serde::Serialize>(v: &T) -> Bytes {
        Bytes::from(rmp_serde::to_vec_named(v).unwrap())
    }

    #[test]
    fn ints_read_as_serde_reads_them() {
        let unsigned = [0u64, 1, 127, 128, 255, 256, 65535, 65536, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX];
        for v in unsigned {
            let b = enc(&v);
            let mut r = Reader::new(&b);
            assert_eq!(r.uint(), Some(v));
            assert!(r.at_end());
            let mut r = Reader::new(&b);
            assert_eq!(r.int(), i64::try_from(v).ok(), "{v}");
            // A uint too large for an i64 is left in place.
            assert_eq!(r.at_end(), i64::try_from(v).is_ok());
        }
        let signed = [0i64, -1, -32, -33, -128, -129, -32768, -32769, i64::from(i32::MIN), i64::from(i32::MIN) - 1, i64::MIN, i64::MAX, 300];
        for v in signed {
            let b = enc(&v);
            let mut r = Reader::new(&b);
            assert_eq!(r.int(), Some(v));
            assert!(r.at_end());
            assert_eq!(Reader::new(&b).uint(), u64::try_from(v).ok().filter(|_| v >= 0), "{v}");
        }
    }

    #[test]
    fn strings_bins_and_headers() {
        for len in [0usize, 1, 31, 32, 255, 256, 65535, 65536] {
            let s = "x".repeat(len);
            let b = enc(&s);
            let mut r = Reader::new(&b);
            assert_eq!(r.str(), Some(s.as_str()));
            assert!(r.at_end());
            let bin = enc(&serde_bytes::ByteBuf::from(vec![7u8; len]));
            let mut r = Reader::new(&bin);
            assert_eq!(r.bin().unwrap().len(), len);
            assert!(r.at_end());
            // Neither reads as the other.
            assert!(Reader::new(&b).bin().is_none());
            assert!(Reader::new(&bin).str().is_none());
        }
        // Invalid UTF-8 in a str is not a str.
        let bad = Bytes::from_static(&[0xa2, 0xff, 0xfe]);
        assert!(Reader::new(&bad).str().is_none());
        // Lengths past the end are refused, not trusted.
        for b in [&[0xc6, 0xff, 0xff, 0xff, 0xff, 1][..], &[0xdb, 0, 0, 0, 9, b'a'], &[0xc4], &[0xcf, 1, 2]] {
            let b = Bytes::copy_from_slice(b);
            let mut r = Reader::new(&b);
            assert!(r.bin().is_none() && r.str().is_none() && r.uint().is_none() && r.int().is_none());
        }
        let m = enc(&std::collections::BTreeMap::from([("a", 1), ("b", 2)]));
        assert_eq!(Reader::new(&m).map_len(), Some(2));
        let a = enc(&vec![1u8; 20]);
        assert_eq!(Reader::new(&a).array_len(), Some(20));
        assert_eq!(Reader::new(&a).map_len(), None);
    }

    #[test]
    fn the_writer_writes_what_rmp_serde_writes() {
        #[derive(serde::Serialize)]
        struct S {
            name: String,
            n: u64,
            i: i64,
            v: Vec<u32>,
        }
        let names = ["", "né", &"a".repeat(31), &"b".repeat(32), &"c".repeat(255), &"d".repeat(256), &"e".repeat(70000)];
        let ints = [(0u64, 0i64), (127, 127), (128, 128), (200, -200), (255, -32), (256, -33), (65535, -128), (65536, -129), (70000, 5_000_000_000), (u64::MAX, i64::MIN), (1 << 32, -32768), ((1 << 32) - 1, -32769), (5, i64::from(i32::MIN)), (6, i64::from(i32::MIN) - 1), (7, i64::MAX)];
        for (k, (n, i)) in ints.into_iter().enumerate() {
            let s = S { name: names[k % names.len()].into(), n, i, v: vec![1, 300] };
            let mut w = Writer::new();
            w.map_len(4);
            w.str("name");
            w.str(&s.name);
            w.str("n");
            w.uint(s.n);
            w.str("i");
            w.int(s.i);
            w.str("v");
            w.array_len(2);
            w.uint(1);
            w.uint(300);
            assert_eq!(w.into_bytes(), enc(&s));
        }
        for n in [0u32, 15, 16, 255, 256, 65535, 65536] {
            let v = vec![0u8; n as usize];
            let mut w = Writer::new();
            w.array_len(n);
            for _ in 0..n {
                w.uint(0);
            }
            assert_eq!(w.into_bytes(), enc(&v));
            let m: std::collections::BTreeMap<u32, u8> = (0..n).map(|k| (k, 0)).collect();
            let mut w = Writer::new();
            w.map_len(n);
            for k in 0..n {
                w.uint(u64::from(k));
                w.uint(0);
            }
            assert_eq!(w.into_bytes(), enc(&m));
        }
    }
}
