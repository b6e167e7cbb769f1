//! pvData introspection: FieldDesc, type codes, and the per-connection type cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::wire::{Reader, Writer};
use crate::error::{Error, Result};

/// Scalar element types (also the element type of scalar arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    String,
}

impl ScalarType {
    /// Type code low bits (kind in bits 7-5, size in bits 2-0).
    pub fn code(self) -> u8 {
        match self {
            ScalarType::Bool => 0x00,
            ScalarType::I8 => 0x20,
            ScalarType::I16 => 0x21,
            ScalarType::I32 => 0x22,
            ScalarType::I64 => 0x23,
            ScalarType::U8 => 0x24,
            ScalarType::U16 => 0x25,
            ScalarType::U32 => 0x26,
            ScalarType::U64 => 0x27,
            ScalarType::F32 => 0x42,
            ScalarType::F64 => 0x43,
            ScalarType::String => 0x60,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c & 0xE7 {
            0x00 => ScalarType::Bool,
            0x20 => ScalarType::I8,
            0x21 => ScalarType::I16,
            0x22 => ScalarType::I32,
            0x23 => ScalarType::I64,
            0x24 => ScalarType::U8,
            0x25 => ScalarType::U16,
            0x26 => ScalarType::U32,
            0x27 => ScalarType::U64,
            0x42 => ScalarType::F32,
            0x43 => ScalarType::F64,
            0x60 => ScalarType::String,
            _ => return None,
        })
    }

    /// Bytes per element on the wire (strings: at least one size byte).
    pub fn wire_size(self) -> usize {
        match self {
            ScalarType::Bool | ScalarType::I8 | ScalarType::U8 | ScalarType::String => 1,
            ScalarType::I16 | ScalarType::U16 => 2,
            ScalarType::I32 | ScalarType::U32 | ScalarType::F32 => 4,
            ScalarType::I64 | ScalarType::U64 | ScalarType::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScalarType::Bool => "boolean",
            ScalarType::I8 => "byte",
            ScalarType::I16 => "short",
            ScalarType::I32 => "int",
            ScalarType::I64 => "long",
            ScalarType::U8 => "ubyte",
            ScalarType::U16 => "ushort",
            ScalarType::U32 => "uint",
            ScalarType::U64 => "ulong",
            ScalarType::F32 => "float",
            ScalarType::F64 => "double",
            ScalarType::String => "string",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "boolean" | "bool" => ScalarType::Bool,
            "byte" | "int8" => ScalarType::I8,
            "short" | "int16" => ScalarType::I16,
            "int" | "int32" => ScalarType::I32,
            "long" | "int64" => ScalarType::I64,
            "ubyte" | "uint8" => ScalarType::U8,
            "ushort" | "uint16" => ScalarType::U16,
            "uint" | "uint32" => ScalarType::U32,
            "ulong" | "uint64" => ScalarType::U64,
            "float" | "float32" => ScalarType::F32,
            "double" | "float64" => ScalarType::F64,
            "string" => ScalarType::String,
            _ => return None,
        })
    }
}

/// Array flavour of a scalar array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrayKind {
    Variable,
    Bounded(u32),
    Fixed(u32),
}

/// Members of a structure or union: an id ("" if none) and ordered named fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Members {
    pub id: String,
    pub fields: Vec<(String, FieldDesc)>,
}

impl Members {
    pub fn field(&self, name: &str) -> Option<(usize, &FieldDesc)> {
        self.fields.iter().enumerate().find(|(_, (n, _))| n == name).map(|(i, (_, d))| (i, d))
    }
}

/// The type of a pvData field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldDesc {
    Scalar(ScalarType),
    BoundedString(u32),
    ScalarArray(ScalarType, ArrayKind),
    Structure(Arc<Members>),
    StructureArray(Arc<Members>),
    Union(Arc<Members>),
    UnionArray(Arc<Members>),
    /// Variant union ("any").
    Any,
    AnyArray,
}

impl FieldDesc {
    pub fn structure(id: &str, fields: Vec<(&str, FieldDesc)>) -> FieldDesc {
        FieldDesc::Structure(Arc::new(Members {
            id: id.to_string(),
            fields: fields.into_iter().map(|(n, d)| (n.to_string(), d)).collect(),
        }))
    }

    pub fn union(id: &str, fields: Vec<(&str, FieldDesc)>) -> FieldDesc {
        FieldDesc::Union(Arc::new(Members {
            id: id.to_string(),
            fields: fields.into_iter().map(|(n, d)| (n.to_string(), d)).collect(),
        }))
    }

    pub fn members(&self) -> Option<&Members> {
        match self {
            FieldDesc::Structure(m)
            | FieldDesc::StructureArray(m)
            | FieldDesc::Union(m)
            | FieldDesc::UnionArray(m) => Some(m),
            _ => None,
        }
    }

    /// Struct id ("" for none).
    pub fn id(&self) -> &str {
        self.members().map(|m| m.id.as_str()).unwrap_or("")
    }

    /// Number of BitSet bits this field occupies (itself plus, for a
    /// structure, all nested fields; arrays and unions count as one).
    pub fn bit_count(&self) -> usize {
        match self {
            FieldDesc::Structure(m) => 1 + m.fields.iter().map(|(_, d)| d.bit_count()).sum::<usize>(),
            _ => 1,
        }
    }

    /// Look up a dotted sub-field path; returns the descriptor and its bit offset.
    pub fn lookup(&self, path: &str) -> Option<(&FieldDesc, usize)> {
        if path.is_empty() {
            return Some((self, 0));
        }
        let mut cur = self;
        let mut bit = 0usize;
        for part in path.split('.') {
            let FieldDesc::Structure(m) = cur else { return None };
            let mut off = bit + 1;
            let mut found = None;
            for (n, d) in &m.fields {
                if n == part {
                    found = Some(d);
                    break;
                }
                off += d.bit_count();
            }
            cur = found?;
            bit = off;
        }
        Some((cur, bit))
    }

    fn type_code(&self) -> u8 {
        match self {
            FieldDesc::Scalar(s) => s.code(),
            FieldDesc::BoundedString(_) => 0x83,
            FieldDesc::ScalarArray(s, k) => {
                s.code()
                    | match k {
                        ArrayKind::Variable => 0x08,
                        ArrayKind::Bounded(_) => 0x10,
                        ArrayKind::Fixed(_) => 0x18,
                    }
            }
            FieldDesc::Structure(_) => 0x80,
            FieldDesc::Union(_) => 0x81,
            FieldDesc::Any => 0x82,
            FieldDesc::StructureArray(_) => 0x88,
            FieldDesc::UnionArray(_) => 0x89,
            FieldDesc::AnyArray => 0x8A,
        }
    }

    /// Whether a sending type cache would assign an id to this type
    /// (pvAccessCPP caches only the complex types, never scalars).
    fn cacheable(&self) -> bool {
        matches!(
            self,
            FieldDesc::Structure(_)
                | FieldDesc::Union(_)
                | FieldDesc::StructureArray(_)
                | FieldDesc::UnionArray(_)
        )
    }

    fn fmt_indent(&self, f: &mut fmt::Formatter<'_>, name: &str, indent: usize) -> fmt::Result {
        let pad = "    ".repeat(indent);
        match self {
            FieldDesc::Structure(m) | FieldDesc::Union(m) | FieldDesc::StructureArray(m) | FieldDesc::UnionArray(m) => {
                let kind = match self {
                    FieldDesc::Structure(_) => "structure",
                    FieldDesc::Union(_) => "union",
                    FieldDesc::StructureArray(_) => "structure[]",
                    _ => "union[]",
                };
                let id = if m.id.is_empty() { kind.to_string() } else { m.id.clone() };
                let id = if m.id.is_empty() { id } else if matches!(self, FieldDesc::StructureArray(_) | FieldDesc::UnionArray(_)) { format!("{id}[]") } else { id };
                writeln!(f, "{pad}{id} {name}")?;
                for (n, d) in &m.fields {
                    d.fmt_indent(f, n, indent + 1)?;
                }
                Ok(())
            }
            FieldDesc::Scalar(s) => writeln!(f, "{pad}{} {name}", s.name()),
            FieldDesc::BoundedString(b) => writeln!(f, "{pad}string({b}) {name}"),
            FieldDesc::ScalarArray(s, k) => match k {
                ArrayKind::Variable => writeln!(f, "{pad}{}[] {name}", s.name()),
                ArrayKind::Bounded(b) => writeln!(f, "{pad}{}<{b}> {name}", s.name()),
                ArrayKind::Fixed(b) => writeln!(f, "{pad}{}[{b}] {name}", s.name()),
            },
            FieldDesc::Any => writeln!(f, "{pad}any {name}"),
            FieldDesc::AnyArray => writeln!(f, "{pad}any[] {name}"),
        }
    }
}

impl fmt::Display for FieldDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_indent(f, "", 0)
    }
}

/// Receive-side type cache of one connection direction (ids defined by the peer).
#[derive(Debug, Clone, Default)]
pub struct TypeCache {
    /// id -> (type, node count).
    entries: HashMap<u16, (FieldDesc, usize)>,
}

impl TypeCache {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Send-side type cache: when enabled, complex types are sent once with
/// 0xFD id and afterwards as 0xFE id (as pvAccessCPP does).
#[derive(Debug, Clone, Default)]
pub struct SendCache {
    enabled: bool,
    ids: HashMap<FieldDesc, u16>,
    next: u16,
}

impl SendCache {
    pub fn enabled() -> Self {
        SendCache { enabled: true, ids: HashMap::new(), next: 1 }
    }
    pub fn disabled() -> Self {
        SendCache::default()
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// Decode an optional FieldDesc (0xFF = no type).
pub fn decode_desc_opt(r: &mut Reader<'_>, cache: &mut TypeCache) -> Result<Option<FieldDesc>> {
    Ok(decode_desc_depth(r, cache, 0)?.map(|(d, _)| d))
}

fn check_nodes(r: &Reader<'_>, n: usize) -> Result<usize> {
    if n > r.limits.type_nodes_max {
        return Err(Error::Limit { what: "type nodes", value: n as u64, max: r.limits.type_nodes_max as u64 });
    }
    Ok(n)
}

/// Decode a FieldDesc that must be present.
pub fn decode_desc(r: &mut Reader<'_>, cache: &mut TypeCache) -> Result<FieldDesc> {
    decode_desc_opt(r, cache)?.ok_or_else(|| Error::malformed("null type where a type is required"))
}

/// Decode a type and its node count (counted through cache references).
fn decode_desc_depth(r: &mut Reader<'_>, cache: &mut TypeCache, depth: usize) -> Result<Option<(FieldDesc, usize)>> {
    if depth > r.limits.depth_max {
        return Err(Error::Limit { what: "type nesting depth", value: depth as u64, max: r.limits.depth_max as u64 });
    }
    let code = r.u8()?;
    match code {
        0xFF => Ok(None),
        0xFD => {
            let id = r.u16()?;
            let (d, n) = decode_desc_depth(r, cache, depth + 1)?
                .ok_or_else(|| Error::malformed("type cache define of a null type"))?;
            if !cache.entries.contains_key(&id) && cache.entries.len() >= r.limits.type_cache_max {
                return Err(Error::Limit {
                    what: "type cache entries",
                    value: cache.entries.len() as u64 + 1,
                    max: r.limits.type_cache_max as u64,
                });
            }
            cache.entries.insert(id, (d.clone(), n));
            Ok(Some((d, n)))
        }
        0xFE => {
            let id = r.u16()?;
            cache.entries.get(&id).cloned().map(Some).ok_or(Error::UnknownTypeId(id))
        }
        0xFC => {
            // FULL_TAGGED_ID: id, tag, then the type (never seen from current peers).
            let _id = r.u16()?;
            let _tag = r.u32()?;
            decode_desc_depth(r, cache, depth + 1)
        }
        _ => decode_full(code, r, cache, depth).map(Some),
    }
}

fn decode_members(r: &mut Reader<'_>, cache: &mut TypeCache, depth: usize) -> Result<(Arc<Members>, usize)> {
    let id = r.string()?;
    let n = r.size("field count", r.limits.fields_max)?;
    if n.saturating_mul(2) > r.remaining() {
        return Err(Error::Truncated { what: "structure fields", needed: n * 2 - r.remaining() });
    }
    let mut fields = Vec::with_capacity(n);
    let mut nodes = 1usize;
    for _ in 0..n {
        let name = r.string()?;
        let (d, k) = decode_desc_depth(r, cache, depth + 1)?
            .ok_or_else(|| Error::malformed(format!("null type for field {name}")))?;
        nodes = check_nodes(r, nodes.saturating_add(k))?;
        fields.push((name, d));
    }
    Ok((Arc::new(Members { id, fields }), nodes))
}

fn decode_full(code: u8, r: &mut Reader<'_>, cache: &mut TypeCache, depth: usize) -> Result<(FieldDesc, usize)> {
    let kind = code & 0xE0;
    let arr = code & 0x18;
    if kind == 0x80 {
        let sub = code & 0x07;
        return match (arr, sub) {
            (0x00, 0) => decode_members(r, cache, depth).map(|(m, n)| (FieldDesc::Structure(m), n)),
            (0x00, 1) => decode_members(r, cache, depth).map(|(m, n)| (FieldDesc::Union(m), n)),
            (0x00, 2) => Ok((FieldDesc::Any, 1)),
            (0x00, 3) => {
                let b = r.size("string bound", u32::MAX as usize)?;
                Ok((FieldDesc::BoundedString(b as u32), 1))
            }
            (0x08, 0) | (0x08, 1) => {
                // The element type follows as a full FieldDesc (may itself use the cache).
                let (el, n) = decode_desc_depth(r, cache, depth + 1)?
                    .ok_or_else(|| Error::malformed("null element type"))?;
                let n = check_nodes(r, n.saturating_add(1))?;
                match (sub, el) {
                    (0, FieldDesc::Structure(m)) => Ok((FieldDesc::StructureArray(m), n)),
                    (1, FieldDesc::Union(m)) => Ok((FieldDesc::UnionArray(m), n)),
                    _ => Err(Error::malformed("array element type does not match array kind")),
                }
            }
            (0x08, 2) => Ok((FieldDesc::AnyArray, 1)),
            _ => Err(Error::UnknownTypeCode(code)),
        };
    }
    let st = ScalarType::from_code(code).ok_or(Error::UnknownTypeCode(code))?;
    let d = match arr {
        0x00 => FieldDesc::Scalar(st),
        0x08 => FieldDesc::ScalarArray(st, ArrayKind::Variable),
        0x10 => {
            let b = r.size("array bound", u32::MAX as usize)?;
            FieldDesc::ScalarArray(st, ArrayKind::Bounded(b as u32))
        }
        _ => {
            let b = r.size("array size", r.limits.array_len_max)?;
            FieldDesc::ScalarArray(st, ArrayKind::Fixed(b as u32))
        }
    };
    Ok((d, 1))
}

/// Encode an optional FieldDesc (None = 0xFF).
pub fn encode_desc_opt(w: &mut Writer, d: Option<&FieldDesc>, cache: &mut SendCache) {
    match d {
        None => w.u8(0xFF),
        Some(d) => encode_desc(w, d, cache),
    }
}

/// Encode a FieldDesc, using the send cache if enabled.
pub fn encode_desc(w: &mut Writer, d: &FieldDesc, cache: &mut SendCache) {
    if cache.enabled && d.cacheable() {
        if let Some(id) = cache.ids.get(d) {
            w.u8(0xFE);
            w.u16(*id);
            return;
        }
        let id = cache.next;
        cache.next = cache.next.wrapping_add(1);
        cache.ids.insert(d.clone(), id);
        w.u8(0xFD);
        w.u16(id);
    }
    encode_full(w, d, cache);
}

fn encode_members(w: &mut Writer, m: &Members, cache: &mut SendCache) {
    w.string(&m.id);
    w.size(m.fields.len());
    for (n, d) in &m.fields {
        w.string(n);
        encode_desc(w, d, cache);
    }
}

fn encode_full(w: &mut Writer, d: &FieldDesc, cache: &mut SendCache) {
    w.u8(d.type_code());
    match d {
        FieldDesc::Structure(m) | FieldDesc::Union(m) => encode_members(w, m, cache),
        FieldDesc::StructureArray(m) => {
            encode_desc(w, &FieldDesc::Structure(m.clone()), cache);
        }
        FieldDesc::UnionArray(m) => {
            encode_desc(w, &FieldDesc::Union(m.clone()), cache);
        }
        FieldDesc::BoundedString(b) => w.size(*b as usize),
        FieldDesc::ScalarArray(_, ArrayKind::Bounded(b)) | FieldDesc::ScalarArray(_, ArrayKind::Fixed(b)) => {
            w.size(*b as usize)
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::wire::ByteOrder;

    fn roundtrip(d: &FieldDesc, cached: bool) {
        let mut sc = if cached { SendCache::enabled() } else { SendCache::disabled() };
        let mut w = Writer::new(ByteOrder::Little);
        encode_desc(&mut w, d, &mut sc);
        encode_desc(&mut w, d, &mut sc);
        let mut tc = TypeCache::new();
        let mut r = Reader::new(&w.buf, ByteOrder::Little);
        assert_eq!(&decode_desc(&mut r, &mut tc).unwrap(), d);
        assert_eq!(&decode_desc(&mut r, &mut tc).unwrap(), d);
        assert!(r.is_empty());
    }

    #[test]
    fn all_kinds_roundtrip() {
        let inner = FieldDesc::structure("pt", vec![("x", FieldDesc::Scalar(ScalarType::F64))]);
        let d = FieldDesc::structure(
            "top",
            vec![
                ("b", FieldDesc::Scalar(ScalarType::Bool)),
                ("u", FieldDesc::Scalar(ScalarType::U64)),
                ("s", FieldDesc::BoundedString(10)),
                ("a", FieldDesc::ScalarArray(ScalarType::I16, ArrayKind::Variable)),
                ("bb", FieldDesc::ScalarArray(ScalarType::U8, ArrayKind::Bounded(16))),
                ("fx", FieldDesc::ScalarArray(ScalarType::F32, ArrayKind::Fixed(4))),
                ("sa", FieldDesc::ScalarArray(ScalarType::String, ArrayKind::Variable)),
                ("st", inner.clone()),
                ("sta", FieldDesc::StructureArray(inner.members().unwrap().clone().into())),
                ("un", FieldDesc::union("", vec![("i", FieldDesc::Scalar(ScalarType::I32))])),
                ("v", FieldDesc::Any),
                ("va", FieldDesc::AnyArray),
            ],
        );
        roundtrip(&d, false);
        roundtrip(&d, true);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut w = Writer::new(ByteOrder::Little);
        for _ in 0..100 {
            w.u8(0x80);
            w.string("");
            w.size(1);
            w.string("f");
        }
        w.u8(0x22);
        let mut r = Reader::new(&w.buf, ByteOrder::Little);
        assert!(matches!(decode_desc(&mut r, &mut TypeCache::new()), Err(Error::Limit { .. })));
    }

    #[test]
    fn cache_reference_bombs_are_refused() {
        // Each level: a structure of 200 fields all referencing the previous level.
        let mut w = Writer::new(ByteOrder::Little);
        w.u8(0xFD);
        w.u16(1);
        w.u8(0x80);
        w.string("");
        w.size(0);
        for level in 2..6u16 {
            w.u8(0xFD);
            w.u16(level);
            w.u8(0x80);
            w.string("");
            w.size(200);
            for _ in 0..200 {
                w.string("f");
                w.u8(0xFE);
                w.u16(level - 1);
            }
        }
        let mut r = Reader::new(&w.buf, ByteOrder::Little);
        let mut tc = TypeCache::new();
        let mut res = Ok(FieldDesc::Any);
        for _ in 0..5 {
            res = decode_desc(&mut r, &mut tc);
            if res.is_err() {
                break;
            }
        }
        assert!(matches!(res, Err(Error::Limit { what: "type nodes", .. })), "{res:?}");
    }

    #[test]
    fn unknown_code_and_id() {
        let mut r = Reader::new(&[0x47], ByteOrder::Little);
        assert!(matches!(decode_desc(&mut r, &mut TypeCache::new()), Err(Error::UnknownTypeCode(_))));
        let mut r = Reader::new(&[0xfe, 1, 0], ByteOrder::Little);
        assert!(matches!(decode_desc(&mut r, &mut TypeCache::new()), Err(Error::UnknownTypeId(1))));
    }

    #[test]
    fn lookup_bits() {
        let d = FieldDesc::structure(
            "",
            vec![
                ("value", FieldDesc::Scalar(ScalarType::F64)),
                ("alarm", FieldDesc::structure("alarm_t", vec![("severity", FieldDesc::Scalar(ScalarType::I32))])),
                ("x", FieldDesc::Scalar(ScalarType::I32)),
            ],
        );
        assert_eq!(d.lookup("value").unwrap().1, 1);
        assert_eq!(d.lookup("alarm").unwrap().1, 2);
        assert_eq!(d.lookup("alarm.severity").unwrap().1, 3);
        assert_eq!(d.lookup("x").unwrap().1, 4);
        assert_eq!(d.bit_count(), 5);
    }
}
