//! pvData values, BitSets and (partial) value serialization.

use super::types::{ArrayKind, FieldDesc, Members, ScalarType, SendCache, TypeCache, decode_desc_opt, encode_desc_opt};
use super::wire::{ByteOrder, Reader, Writer};
use crate::error::{Error, Result};

/// A scalar array's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarArray {
    Bool(Vec<bool>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    String(Vec<String>),
}

impl ScalarArray {
    pub fn empty(t: ScalarType) -> Self {
        match t {
            ScalarType::Bool => ScalarArray::Bool(vec![]),
            ScalarType::I8 => ScalarArray::I8(vec![]),
            ScalarType::I16 => ScalarArray::I16(vec![]),
            ScalarType::I32 => ScalarArray::I32(vec![]),
            ScalarType::I64 => ScalarArray::I64(vec![]),
            ScalarType::U8 => ScalarArray::U8(vec![]),
            ScalarType::U16 => ScalarArray::U16(vec![]),
            ScalarType::U32 => ScalarArray::U32(vec![]),
            ScalarType::U64 => ScalarArray::U64(vec![]),
            ScalarType::F32 => ScalarArray::F32(vec![]),
            ScalarType::F64 => ScalarArray::F64(vec![]),
            ScalarType::String => ScalarArray::String(vec![]),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ScalarArray::Bool(v) => v.len(),
            ScalarArray::I8(v) => v.len(),
            ScalarArray::I16(v) => v.len(),
            ScalarArray::I32(v) => v.len(),
            ScalarArray::I64(v) => v.len(),
            ScalarArray::U8(v) => v.len(),
            ScalarArray::U16(v) => v.len(),
            ScalarArray::U32(v) => v.len(),
            ScalarArray::U64(v) => v.len(),
            ScalarArray::F32(v) => v.len(),
            ScalarArray::F64(v) => v.len(),
            ScalarArray::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a scalar value.
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            ScalarArray::Bool(v) => Value::Bool(*v.get(i)?),
            ScalarArray::I8(v) => Value::I8(*v.get(i)?),
            ScalarArray::I16(v) => Value::I16(*v.get(i)?),
            ScalarArray::I32(v) => Value::I32(*v.get(i)?),
            ScalarArray::I64(v) => Value::I64(*v.get(i)?),
            ScalarArray::U8(v) => Value::U8(*v.get(i)?),
            ScalarArray::U16(v) => Value::U16(*v.get(i)?),
            ScalarArray::U32(v) => Value::U32(*v.get(i)?),
            ScalarArray::U64(v) => Value::U64(*v.get(i)?),
            ScalarArray::F32(v) => Value::F32(*v.get(i)?),
            ScalarArray::F64(v) => Value::F64(*v.get(i)?),
            ScalarArray::String(v) => Value::String(v.get(i)?.clone()),
        })
    }

    /// Elements `[offset, offset+count)` (count 0 = to the end).
    pub fn slice(&self, offset: usize, count: usize) -> ScalarArray {
        macro_rules! sl {
            ($v:expr, $c:path) => {{
                let start = offset.min($v.len());
                let end = if count == 0 { $v.len() } else { start.saturating_add(count).min($v.len()) };
                $c($v.get(start..end).unwrap_or(&[]).to_vec())
            }};
        }
        match self {
            ScalarArray::Bool(v) => sl!(v, ScalarArray::Bool),
            ScalarArray::I8(v) => sl!(v, ScalarArray::I8),
            ScalarArray::I16(v) => sl!(v, ScalarArray::I16),
            ScalarArray::I32(v) => sl!(v, ScalarArray::I32),
            ScalarArray::I64(v) => sl!(v, ScalarArray::I64),
            ScalarArray::U8(v) => sl!(v, ScalarArray::U8),
            ScalarArray::U16(v) => sl!(v, ScalarArray::U16),
            ScalarArray::U32(v) => sl!(v, ScalarArray::U32),
            ScalarArray::U64(v) => sl!(v, ScalarArray::U64),
            ScalarArray::F32(v) => sl!(v, ScalarArray::F32),
            ScalarArray::F64(v) => sl!(v, ScalarArray::F64),
            ScalarArray::String(v) => sl!(v, ScalarArray::String),
        }
    }
}

/// A union value: selected member index (None = null) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct UnionValue {
    pub selector: Option<usize>,
    pub value: Box<Value>,
}

/// A pvData value. Structures hold their fields in descriptor order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    String(String),
    Array(ScalarArray),
    Struct(Vec<Value>),
    StructArray(Vec<Option<Vec<Value>>>),
    Union(UnionValue),
    UnionArray(Vec<Option<UnionValue>>),
    /// Variant union: type and value, or null.
    Any(Option<Box<(FieldDesc, Value)>>),
    AnyArray(Vec<Option<(FieldDesc, Value)>>),
}

impl Value {
    /// The zero value of a type (empty strings and arrays, null unions).
    pub fn default_for(d: &FieldDesc) -> Value {
        match d {
            FieldDesc::Scalar(s) => match s {
                ScalarType::Bool => Value::Bool(false),
                ScalarType::I8 => Value::I8(0),
                ScalarType::I16 => Value::I16(0),
                ScalarType::I32 => Value::I32(0),
                ScalarType::I64 => Value::I64(0),
                ScalarType::U8 => Value::U8(0),
                ScalarType::U16 => Value::U16(0),
                ScalarType::U32 => Value::U32(0),
                ScalarType::U64 => Value::U64(0),
                ScalarType::F32 => Value::F32(0.0),
                ScalarType::F64 => Value::F64(0.0),
                ScalarType::String => Value::String(String::new()),
            },
            FieldDesc::BoundedString(_) => Value::String(String::new()),
            FieldDesc::ScalarArray(s, _) => Value::Array(ScalarArray::empty(*s)),
            FieldDesc::Structure(m) => Value::Struct(m.fields.iter().map(|(_, d)| Value::default_for(d)).collect()),
            FieldDesc::StructureArray(_) => Value::StructArray(vec![]),
            FieldDesc::Union(_) => Value::Union(UnionValue { selector: None, value: Box::new(Value::Any(None)) }),
            FieldDesc::UnionArray(_) => Value::UnionArray(vec![]),
            FieldDesc::Any => Value::Any(None),
            FieldDesc::AnyArray => Value::AnyArray(vec![]),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        Some(match self {
            Value::Bool(b) => *b as u8 as f64,
            Value::I8(v) => *v as f64,
            Value::I16(v) => *v as f64,
            Value::I32(v) => *v as f64,
            Value::I64(v) => *v as f64,
            Value::U8(v) => *v as f64,
            Value::U16(v) => *v as f64,
            Value::U32(v) => *v as f64,
            Value::U64(v) => *v as f64,
            Value::F32(v) => *v as f64,
            Value::F64(v) => *v,
            Value::String(s) => s.trim().parse().ok()?,
            Value::Any(Some(b)) => b.1.as_f64()?,
            _ => return None,
        })
    }

    pub fn as_i64(&self) -> Option<i64> {
        Some(match self {
            Value::F32(v) => *v as i64,
            Value::F64(v) => *v as i64,
            Value::U64(v) => *v as i64,
            Value::String(s) => s.trim().parse().ok()?,
            Value::Bool(b) => *b as i64,
            Value::I8(v) => *v as i64,
            Value::I16(v) => *v as i64,
            Value::I32(v) => *v as i64,
            Value::I64(v) => *v,
            Value::U8(v) => *v as i64,
            Value::U16(v) => *v as i64,
            Value::U32(v) => *v as i64,
            Value::Any(Some(b)) => b.1.as_i64()?,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Field `i` of a structure value.
    pub fn field(&self, i: usize) -> Option<&Value> {
        match self {
            Value::Struct(f) => f.get(i),
            _ => None,
        }
    }

    pub fn field_mut(&mut self, i: usize) -> Option<&mut Value> {
        match self {
            Value::Struct(f) => f.get_mut(i),
            _ => None,
        }
    }

    /// Convert a scalar value to the given scalar type (for puts from text/JSON).
    pub fn convert_to(&self, t: ScalarType) -> Result<Value> {
        let bad = || Error::TypeMismatch(format!("cannot convert {self:?} to {}", t.name()));
        Ok(match t {
            ScalarType::String => match self {
                Value::String(s) => Value::String(s.clone()),
                Value::F64(v) => Value::String(v.to_string()),
                Value::F32(v) => Value::String(v.to_string()),
                Value::Bool(b) => Value::String(b.to_string()),
                other => Value::String(other.as_i64().ok_or_else(bad)?.to_string()),
            },
            ScalarType::Bool => match self {
                Value::String(s) => Value::Bool(matches!(s.trim(), "true" | "1" | "yes")),
                v => Value::Bool(v.as_f64().ok_or_else(bad)? != 0.0),
            },
            ScalarType::F64 => Value::F64(self.as_f64().ok_or_else(bad)?),
            ScalarType::F32 => Value::F32(self.as_f64().ok_or_else(bad)? as f32),
            ScalarType::I8 => Value::I8(self.as_i64().ok_or_else(bad)? as i8),
            ScalarType::I16 => Value::I16(self.as_i64().ok_or_else(bad)? as i16),
            ScalarType::I32 => Value::I32(self.as_i64().ok_or_else(bad)? as i32),
            ScalarType::I64 => Value::I64(self.as_i64().ok_or_else(bad)?),
            ScalarType::U8 => Value::U8(self.as_i64().ok_or_else(bad)? as u8),
            ScalarType::U16 => Value::U16(self.as_i64().ok_or_else(bad)? as u16),
            ScalarType::U32 => Value::U32(self.as_i64().ok_or_else(bad)? as u32),
            ScalarType::U64 => match self {
                Value::U64(v) => Value::U64(*v),
                v => Value::U64(v.as_i64().ok_or_else(bad)? as u64),
            },
        })
    }
}

/// Changed-field bit set (bit n = n-th field in depth-first order, bit 0 = whole structure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(bits: &[usize]) -> Self {
        let mut b = BitSet::new();
        for &i in bits {
            b.set(i);
        }
        b
    }

    pub fn set(&mut self, i: usize) {
        let w = i / 64;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        if let Some(x) = self.words.get_mut(w) {
            *x |= 1u64 << (i % 64);
        }
    }

    pub fn clear(&mut self, i: usize) {
        if let Some(x) = self.words.get_mut(i / 64) {
            *x &= !(1u64 << (i % 64));
        }
    }

    pub fn get(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Whether any bit in `[from, to)` is set.
    pub fn any_in(&self, from: usize, to: usize) -> bool {
        (from..to).any(|i| self.get(i))
    }

    pub fn union_with(&mut self, other: &BitSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(wi, w)| (0..64).filter(move |b| w & (1u64 << b) != 0).map(move |b| wi * 64 + b))
    }

    /// Number of significant bytes (trailing zero bytes are not sent).
    fn byte_len(&self) -> usize {
        for (wi, w) in self.words.iter().enumerate().rev() {
            if *w != 0 {
                return wi * 8 + (8 - (w.leading_zeros() as usize / 8));
            }
        }
        0
    }

    /// Wire form: a size in bytes, then whole 64-bit words in the message
    /// byte order, then the remaining bytes least significant first.
    pub fn encode(&self, w: &mut Writer) {
        let n = self.byte_len();
        w.size(n);
        let full = n / 8;
        for i in 0..full {
            w.u64(self.words.get(i).copied().unwrap_or(0));
        }
        let last = self.words.get(full).copied().unwrap_or(0);
        for b in 0..(n % 8) {
            w.u8((last >> (8 * b)) as u8);
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<BitSet> {
        // A bitset can address at most one bit per field; a generous cap.
        let n = r.size("bitset bytes", 1 << 16)?;
        let full = n / 8;
        let mut words = Vec::with_capacity(full + 1);
        for _ in 0..full {
            words.push(r.u64()?);
        }
        if n % 8 != 0 {
            let mut last = 0u64;
            for b in 0..(n % 8) {
                last |= (r.u8()? as u64) << (8 * b);
            }
            words.push(last);
        }
        Ok(BitSet { words })
    }
}

/// Decode a full value of type `d`.
pub fn decode_value(r: &mut Reader<'_>, d: &FieldDesc, cache: &mut TypeCache) -> Result<Value> {
    decode_value_depth(r, d, cache, 0)
}

fn check_depth(r: &Reader<'_>, depth: usize) -> Result<()> {
    if depth > r.limits.depth_max {
        return Err(Error::Limit { what: "value nesting depth", value: depth as u64, max: r.limits.depth_max as u64 });
    }
    Ok(())
}

fn decode_array(r: &mut Reader<'_>, t: ScalarType, kind: ArrayKind) -> Result<ScalarArray> {
    let n = match kind {
        ArrayKind::Fixed(n) => {
            let n = n as usize;
            if n.saturating_mul(t.wire_size()) > r.remaining() {
                return Err(Error::Truncated { what: "fixed array", needed: n * t.wire_size() - r.remaining() });
            }
            n
        }
        ArrayKind::Bounded(b) => {
            let n = r.count("array length", t.wire_size())?;
            if n > b as usize {
                return Err(Error::Limit { what: "bounded array length", value: n as u64, max: b as u64 });
            }
            n
        }
        ArrayKind::Variable => r.count("array length", t.wire_size())?,
    };
    macro_rules! rd {
        ($c:path, $f:ident) => {{
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(r.$f()?);
            }
            $c(v)
        }};
    }
    // Fixed-width numbers: one bounds check for the whole array, then a tight
    // loop over exact chunks (arrays of 1e6 doubles are common).
    macro_rules! bulk {
        ($c:path, $t:ty, $w:expr) => {{
            let order = r.order;
            let b = r.take(n.saturating_mul($w), "array")?;
            let mut v = Vec::with_capacity(n);
            for c in b.chunks_exact($w) {
                let mut a = [0u8; $w];
                a.copy_from_slice(c);
                v.push(match order {
                    ByteOrder::Little => <$t>::from_le_bytes(a),
                    ByteOrder::Big => <$t>::from_be_bytes(a),
                });
            }
            $c(v)
        }};
    }
    Ok(match t {
        ScalarType::Bool => {
            let b = r.take(n, "bool array")?;
            ScalarArray::Bool(b.iter().map(|x| *x != 0).collect())
        }
        ScalarType::I8 => rd!(ScalarArray::I8, i8),
        ScalarType::U8 => ScalarArray::U8(r.take(n, "byte array")?.to_vec()),
        ScalarType::I16 => bulk!(ScalarArray::I16, i16, 2),
        ScalarType::U16 => bulk!(ScalarArray::U16, u16, 2),
        ScalarType::I32 => bulk!(ScalarArray::I32, i32, 4),
        ScalarType::U32 => bulk!(ScalarArray::U32, u32, 4),
        ScalarType::I64 => bulk!(ScalarArray::I64, i64, 8),
        ScalarType::U64 => bulk!(ScalarArray::U64, u64, 8),
        ScalarType::F32 => bulk!(ScalarArray::F32, f32, 4),
        ScalarType::F64 => bulk!(ScalarArray::F64, f64, 8),
        ScalarType::String => rd!(ScalarArray::String, string),
    })
}

fn decode_scalar(r: &mut Reader<'_>, t: ScalarType) -> Result<Value> {
    Ok(match t {
        ScalarType::Bool => Value::Bool(r.u8()? != 0),
        ScalarType::I8 => Value::I8(r.i8()?),
        ScalarType::I16 => Value::I16(r.i16()?),
        ScalarType::I32 => Value::I32(r.i32()?),
        ScalarType::I64 => Value::I64(r.i64()?),
        ScalarType::U8 => Value::U8(r.u8()?),
        ScalarType::U16 => Value::U16(r.u16()?),
        ScalarType::U32 => Value::U32(r.u32()?),
        ScalarType::U64 => Value::U64(r.u64()?),
        ScalarType::F32 => Value::F32(r.f32()?),
        ScalarType::F64 => Value::F64(r.f64()?),
        ScalarType::String => Value::String(r.string()?),
    })
}

fn decode_union(r: &mut Reader<'_>, m: &Members, cache: &mut TypeCache, depth: usize) -> Result<UnionValue> {
    match r.size_opt()? {
        None => Ok(UnionValue { selector: None, value: Box::new(Value::Any(None)) }),
        Some(sel) => {
            let (_, d) = m
                .fields
                .get(sel as usize)
                .ok_or_else(|| Error::malformed(format!("union selector {sel} out of range")))?;
            let v = decode_value_depth(r, d, cache, depth + 1)?;
            Ok(UnionValue { selector: Some(sel as usize), value: Box::new(v) })
        }
    }
}

fn decode_any(r: &mut Reader<'_>, cache: &mut TypeCache, depth: usize) -> Result<Option<(FieldDesc, Value)>> {
    match decode_desc_opt(r, cache)? {
        None => Ok(None),
        Some(d) => {
            let v = decode_value_depth(r, &d, cache, depth + 1)?;
            Ok(Some((d, v)))
        }
    }
}

fn decode_value_depth(r: &mut Reader<'_>, d: &FieldDesc, cache: &mut TypeCache, depth: usize) -> Result<Value> {
    check_depth(r, depth)?;
    r.charge_value_node()?;
    Ok(match d {
        FieldDesc::Scalar(t) => decode_scalar(r, *t)?,
        FieldDesc::BoundedString(b) => {
            let s = r.string()?;
            if s.len() > *b as usize {
                return Err(Error::Limit { what: "bounded string", value: s.len() as u64, max: *b as u64 });
            }
            Value::String(s)
        }
        FieldDesc::ScalarArray(t, k) => Value::Array(decode_array(r, *t, *k)?),
        FieldDesc::Structure(m) => {
            let mut f = Vec::with_capacity(m.fields.len());
            for (_, fd) in &m.fields {
                f.push(decode_value_depth(r, fd, cache, depth + 1)?);
            }
            Value::Struct(f)
        }
        FieldDesc::StructureArray(m) => {
            let n = r.count("structure array length", 1)?;
            let sd = FieldDesc::Structure(m.clone());
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                if r.u8()? == 0 {
                    v.push(None);
                } else {
                    match decode_value_depth(r, &sd, cache, depth + 1)? {
                        Value::Struct(f) => v.push(Some(f)),
                        _ => return Err(Error::malformed("structure element")),
                    }
                }
            }
            Value::StructArray(v)
        }
        FieldDesc::Union(m) => Value::Union(decode_union(r, m, cache, depth)?),
        FieldDesc::UnionArray(m) => {
            let n = r.count("union array length", 1)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                if r.u8()? == 0 {
                    v.push(None);
                } else {
                    v.push(Some(decode_union(r, m, cache, depth)?));
                }
            }
            Value::UnionArray(v)
        }
        FieldDesc::Any => Value::Any(decode_any(r, cache, depth)?.map(Box::new)),
        FieldDesc::AnyArray => {
            let n = r.count("any array length", 1)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                if r.u8()? == 0 {
                    v.push(None);
                } else {
                    v.push(decode_any(r, cache, depth)?);
                }
            }
            Value::AnyArray(v)
        }
    })
}

/// Decode only the fields selected by `bits` into `v` (which must already
/// have the shape of `d`); other fields keep their previous value.
pub fn decode_masked(r: &mut Reader<'_>, d: &FieldDesc, v: &mut Value, bits: &BitSet, cache: &mut TypeCache) -> Result<()> {
    decode_masked_at(r, d, v, bits, 0, cache, 0)
}

fn decode_masked_at(
    r: &mut Reader<'_>,
    d: &FieldDesc,
    v: &mut Value,
    bits: &BitSet,
    bit: usize,
    cache: &mut TypeCache,
    depth: usize,
) -> Result<()> {
    check_depth(r, depth)?;
    if bits.get(bit) {
        *v = decode_value_depth(r, d, cache, depth)?;
        return Ok(());
    }
    if let FieldDesc::Structure(m) = d {
        if !matches!(v, Value::Struct(f) if f.len() == m.fields.len()) {
            *v = Value::default_for(d);
        }
        let Value::Struct(fields) = v else { return Ok(()) };
        let mut off = bit + 1;
        for ((_, fd), fv) in m.fields.iter().zip(fields.iter_mut()) {
            let n = fd.bit_count();
            if bits.any_in(off, off + n) {
                decode_masked_at(r, fd, fv, bits, off, cache, depth + 1)?;
            }
            off += n;
        }
    }
    Ok(())
}

/// Encode a full value of type `d`.
pub fn encode_value(w: &mut Writer, d: &FieldDesc, v: &Value, cache: &mut SendCache) -> Result<()> {
    let mismatch = || Error::TypeMismatch(format!("value {v:?} does not match type {d:?}"));
    match (d, v) {
        (FieldDesc::Scalar(t), v) => encode_scalar(w, *t, v).ok_or_else(mismatch)?,
        (FieldDesc::BoundedString(_), Value::String(s)) => w.string(s),
        (FieldDesc::ScalarArray(t, k), Value::Array(a)) => {
            if !matches!(k, ArrayKind::Fixed(_)) {
                w.size(a.len());
            }
            encode_array(w, *t, a).ok_or_else(mismatch)?;
        }
        (FieldDesc::Structure(m), Value::Struct(f)) => {
            if m.fields.len() != f.len() {
                return Err(mismatch());
            }
            for ((_, fd), fv) in m.fields.iter().zip(f) {
                encode_value(w, fd, fv, cache)?;
            }
        }
        (FieldDesc::StructureArray(m), Value::StructArray(a)) => {
            w.size(a.len());
            let sd = FieldDesc::Structure(m.clone());
            for e in a {
                match e {
                    None => w.u8(0),
                    Some(f) => {
                        w.u8(1);
                        encode_value(w, &sd, &Value::Struct(f.clone()), cache)?;
                    }
                }
            }
        }
        (FieldDesc::Union(m), Value::Union(u)) => encode_union(w, m, u, cache)?,
        (FieldDesc::UnionArray(m), Value::UnionArray(a)) => {
            w.size(a.len());
            for e in a {
                match e {
                    None => w.u8(0),
                    Some(u) => {
                        w.u8(1);
                        encode_union(w, m, u, cache)?;
                    }
                }
            }
        }
        (FieldDesc::Any, Value::Any(a)) => encode_any(w, a.as_deref().map(|(d, v)| (d, v)), cache)?,
        (FieldDesc::AnyArray, Value::AnyArray(a)) => {
            w.size(a.len());
            for e in a {
                match e {
                    None => w.u8(0),
                    Some((d, v)) => {
                        w.u8(1);
                        encode_any(w, Some((d, v)), cache)?;
                    }
                }
            }
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

fn encode_union(w: &mut Writer, m: &Members, u: &UnionValue, cache: &mut SendCache) -> Result<()> {
    match u.selector {
        None => w.null_size(),
        Some(sel) => {
            let (_, d) = m.fields.get(sel).ok_or_else(|| Error::TypeMismatch(format!("union selector {sel}")))?;
            w.size(sel);
            encode_value(w, d, &u.value, cache)?;
        }
    }
    Ok(())
}

/// Encode a variant: type then value (None = 0xFF).
pub fn encode_any(w: &mut Writer, a: Option<(&FieldDesc, &Value)>, cache: &mut SendCache) -> Result<()> {
    match a {
        None => encode_desc_opt(w, None, cache),
        Some((d, v)) => {
            encode_desc_opt(w, Some(d), cache);
            encode_value(w, d, v, cache)?;
        }
    }
    Ok(())
}

fn encode_scalar(w: &mut Writer, t: ScalarType, v: &Value) -> Option<()> {
    match (t, v) {
        (ScalarType::Bool, Value::Bool(b)) => w.u8(*b as u8),
        (ScalarType::I8, Value::I8(x)) => w.i8(*x),
        (ScalarType::I16, Value::I16(x)) => w.i16(*x),
        (ScalarType::I32, Value::I32(x)) => w.i32(*x),
        (ScalarType::I64, Value::I64(x)) => w.i64(*x),
        (ScalarType::U8, Value::U8(x)) => w.u8(*x),
        (ScalarType::U16, Value::U16(x)) => w.u16(*x),
        (ScalarType::U32, Value::U32(x)) => w.u32(*x),
        (ScalarType::U64, Value::U64(x)) => w.u64(*x),
        (ScalarType::F32, Value::F32(x)) => w.f32(*x),
        (ScalarType::F64, Value::F64(x)) => w.f64(*x),
        (ScalarType::String, Value::String(s)) => w.string(s),
        _ => return None,
    }
    Some(())
}

fn encode_array(w: &mut Writer, t: ScalarType, a: &ScalarArray) -> Option<()> {
    match (t, a) {
        (ScalarType::Bool, ScalarArray::Bool(v)) => v.iter().for_each(|x| w.u8(*x as u8)),
        (ScalarType::I8, ScalarArray::I8(v)) => v.iter().for_each(|x| w.i8(*x)),
        (ScalarType::U8, ScalarArray::U8(v)) => w.bytes(v),
        (ScalarType::I16, ScalarArray::I16(v)) => v.iter().for_each(|x| w.i16(*x)),
        (ScalarType::U16, ScalarArray::U16(v)) => v.iter().for_each(|x| w.u16(*x)),
        (ScalarType::I32, ScalarArray::I32(v)) => v.iter().for_each(|x| w.i32(*x)),
        (ScalarType::U32, ScalarArray::U32(v)) => v.iter().for_each(|x| w.u32(*x)),
        (ScalarType::I64, ScalarArray::I64(v)) => v.iter().for_each(|x| w.i64(*x)),
        (ScalarType::U64, ScalarArray::U64(v)) => v.iter().for_each(|x| w.u64(*x)),
        (ScalarType::F32, ScalarArray::F32(v)) => v.iter().for_each(|x| w.f32(*x)),
        (ScalarType::F64, ScalarArray::F64(v)) => {
            w.buf.reserve(v.len() * 8);
            match w.order {
                ByteOrder::Little => v.iter().for_each(|x| w.buf.extend_from_slice(&x.to_le_bytes())),
                ByteOrder::Big => v.iter().for_each(|x| w.buf.extend_from_slice(&x.to_be_bytes())),
            }
        }
        (ScalarType::String, ScalarArray::String(v)) => v.iter().for_each(|x| w.string(x)),
        _ => return None,
    }
    Some(())
}

/// Encode only the fields selected by `bits` (the partial form used by get,
/// put and monitor data).
pub fn encode_masked(w: &mut Writer, d: &FieldDesc, v: &Value, bits: &BitSet, cache: &mut SendCache) -> Result<()> {
    encode_masked_at(w, d, v, bits, 0, cache)
}

fn encode_masked_at(w: &mut Writer, d: &FieldDesc, v: &Value, bits: &BitSet, bit: usize, cache: &mut SendCache) -> Result<()> {
    if bits.get(bit) {
        return encode_value(w, d, v, cache);
    }
    if let (FieldDesc::Structure(m), Value::Struct(f)) = (d, v) {
        let mut off = bit + 1;
        for ((_, fd), fv) in m.fields.iter().zip(f) {
            let n = fd.bit_count();
            if bits.any_in(off, off + n) {
                encode_masked_at(w, fd, fv, bits, off, cache)?;
            }
            off += n;
        }
    }
    Ok(())
}

/// Expand a changed-bits set so every descendant of a set structure bit is
/// also set (so it can be intersected with a field-selection mask).
pub fn expand_bits(desc: &FieldDesc, bits: &BitSet) -> BitSet {
    fn walk(d: &FieldDesc, bits: &BitSet, out: &mut BitSet, bit: usize, parent: bool) {
        let on = parent || bits.get(bit);
        if on {
            out.set(bit);
        }
        if let FieldDesc::Structure(m) = d {
            let mut off = bit + 1;
            for (_, fd) in &m.fields {
                walk(fd, bits, out, off, on);
                off += fd.bit_count();
            }
        }
    }
    let mut out = BitSet::new();
    walk(desc, bits, &mut out, 0, false);
    out
}

/// Drop bits already covered by a set ancestor structure bit (smaller on the wire).
pub fn compress_bits(desc: &FieldDesc, bits: &BitSet) -> BitSet {
    fn walk(d: &FieldDesc, bits: &BitSet, out: &mut BitSet, bit: usize) {
        if bits.get(bit) {
            out.set(bit);
            return;
        }
        if let FieldDesc::Structure(m) = d {
            let mut off = bit + 1;
            for (_, fd) in &m.fields {
                walk(fd, bits, out, off);
                off += fd.bit_count();
            }
        }
    }
    let mut out = BitSet::new();
    walk(desc, bits, &mut out, 0);
    out
}

/// Intersection of two bit sets.
pub fn intersect(a: &BitSet, b: &BitSet) -> BitSet {
    let mut out = BitSet::new();
    for i in a.iter() {
        if b.get(i) {
            out.set(i);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bitset_spec_vectors() {
        let cases: &[(&[usize], &[u8])] = &[
            (&[], &[0x00]),
            (&[0], &[0x01, 0x01]),
            (&[7], &[0x01, 0x80]),
            (&[8], &[0x02, 0x00, 0x01]),
            (&[55], &[0x07, 0, 0, 0, 0, 0, 0, 0x80]),
            (&[56], &[0x08, 0, 0, 0, 0, 0, 0, 0, 0x01]),
            (&[65], &[0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x02]),
            (&[0, 1, 2, 4, 8], &[0x02, 0x17, 0x01]),
        ];
        for (bits, wire) in cases {
            let b = BitSet::with(bits);
            let mut w = Writer::new(ByteOrder::Little);
            b.encode(&mut w);
            assert_eq!(&w.buf[..], *wire, "bits {bits:?}");
            let mut r = Reader::new(wire, ByteOrder::Little);
            assert_eq!(BitSet::decode(&mut r).unwrap(), b);
        }
    }

    #[test]
    fn spec_encoding_example() {
        // The big-endian example from the pvAccess encoding specification.
        let d = FieldDesc::structure(
            "",
            vec![
                ("value", FieldDesc::ScalarArray(ScalarType::I8, ArrayKind::Variable)),
                ("boundedSizeArray", FieldDesc::ScalarArray(ScalarType::I8, ArrayKind::Bounded(16))),
                ("fixedSizeArray", FieldDesc::ScalarArray(ScalarType::I8, ArrayKind::Fixed(4))),
                (
                    "timeStamp",
                    FieldDesc::structure(
                        "",
                        vec![
                            ("secondsPastEpoch", FieldDesc::Scalar(ScalarType::I64)),
                            ("nanoSeconds", FieldDesc::Scalar(ScalarType::I32)),
                            ("userTag", FieldDesc::Scalar(ScalarType::I32)),
                        ],
                    ),
                ),
                (
                    "alarm",
                    FieldDesc::structure(
                        "",
                        vec![
                            ("severity", FieldDesc::Scalar(ScalarType::I32)),
                            ("status", FieldDesc::Scalar(ScalarType::I32)),
                            ("message", FieldDesc::Scalar(ScalarType::String)),
                        ],
                    ),
                ),
                (
                    "valueUnion",
                    FieldDesc::union(
                        "",
                        vec![("s", FieldDesc::Scalar(ScalarType::String)), ("i", FieldDesc::Scalar(ScalarType::I32))],
                    ),
                ),
                ("variantUnion", FieldDesc::Any),
            ],
        );
        let hex = "03010203050405060708090A0B0C112233445566778\
8AABBCCDDEEEEEEEE1111111122222222\
0B416C6C6F2C20416C6C6F210133333333601C537472696E6720696E736964652076617269616E7420756E696F6E2E";
        let wire: Vec<u8> = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        let mut r = Reader::new(&wire, ByteOrder::Big);
        let v = decode_value(&mut r, &d, &mut TypeCache::new()).unwrap();
        assert!(r.is_empty());
        let mut w = Writer::new(ByteOrder::Big);
        encode_value(&mut w, &d, &v, &mut SendCache::disabled()).unwrap();
        assert_eq!(w.buf, wire);
    }

    #[test]
    fn masked_roundtrip() {
        let d = FieldDesc::structure(
            "",
            vec![
                ("value", FieldDesc::Scalar(ScalarType::F64)),
                ("alarm", FieldDesc::structure("", vec![("severity", FieldDesc::Scalar(ScalarType::I32))])),
            ],
        );
        let v = Value::Struct(vec![Value::F64(2.5), Value::Struct(vec![Value::I32(3)])]);
        let bits = BitSet::with(&[3]);
        let mut w = Writer::new(ByteOrder::Little);
        encode_masked(&mut w, &d, &v, &bits, &mut SendCache::disabled()).unwrap();
        assert_eq!(w.buf, 3i32.to_le_bytes());
        let mut out = Value::default_for(&d);
        decode_masked(&mut Reader::new(&w.buf, ByteOrder::Little), &d, &mut out, &bits, &mut TypeCache::new()).unwrap();
        assert_eq!(out, Value::Struct(vec![Value::F64(0.0), Value::Struct(vec![Value::I32(3)])]));
    }

    #[test]
    fn empty_structure_arrays_are_bounded_by_the_node_budget() {
        // 5 million present elements of an empty structure cost one byte each.
        let d = FieldDesc::StructureArray(std::sync::Arc::new(crate::proto::types::Members::default()));
        let mut w = Writer::new(ByteOrder::Little);
        w.size(5_000_000);
        w.buf.resize(w.buf.len() + 5_000_000, 1);
        let res = decode_value(&mut Reader::new(&w.buf, ByteOrder::Little), &d, &mut TypeCache::new());
        assert!(matches!(res, Err(Error::Limit { what: "value nodes", .. })), "{res:?}");
    }

    #[test]
    fn huge_array_size_is_refused_before_allocation() {
        let mut w = Writer::new(ByteOrder::Little);
        w.size(100_000_000);
        let d = FieldDesc::ScalarArray(ScalarType::F64, ArrayKind::Variable);
        assert!(decode_value(&mut Reader::new(&w.buf, ByteOrder::Little), &d, &mut TypeCache::new()).is_err());
    }
}
