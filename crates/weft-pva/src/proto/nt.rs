//! Normative types (NTScalar, NTScalarArray, NTEnum, NTTable, NTNDArray,
//! NTURI) with the standard alarm, timeStamp, display, control and
//! valueAlarm sub-structures. Types match what pvxs's nt:: builders emit,
//! so p4p and pvapy recognise them by id.

use super::types::{ArrayKind, FieldDesc, ScalarType};
use super::value::{ScalarArray, UnionValue, Value};

fn s(t: ScalarType) -> FieldDesc {
    FieldDesc::Scalar(t)
}

fn a(t: ScalarType) -> FieldDesc {
    FieldDesc::ScalarArray(t, ArrayKind::Variable)
}

pub fn alarm_t() -> FieldDesc {
    FieldDesc::structure(
        "alarm_t",
        vec![("severity", s(ScalarType::I32)), ("status", s(ScalarType::I32)), ("message", s(ScalarType::String))],
    )
}

pub fn time_t() -> FieldDesc {
    FieldDesc::structure(
        "time_t",
        vec![
            ("secondsPastEpoch", s(ScalarType::I64)),
            ("nanoseconds", s(ScalarType::I32)),
            ("userTag", s(ScalarType::I32)),
        ],
    )
}

fn display_t(numeric: bool) -> FieldDesc {
    let mut f = Vec::new();
    if numeric {
        f.push(("limitLow", s(ScalarType::F64)));
        f.push(("limitHigh", s(ScalarType::F64)));
    }
    f.push(("description", s(ScalarType::String)));
    if numeric {
        f.push(("format", s(ScalarType::String)));
        f.push(("units", s(ScalarType::String)));
    }
    FieldDesc::structure("", f)
}

fn control_t() -> FieldDesc {
    FieldDesc::structure(
        "",
        vec![("limitLow", s(ScalarType::F64)), ("limitHigh", s(ScalarType::F64)), ("minStep", s(ScalarType::F64))],
    )
}

fn value_alarm_t() -> FieldDesc {
    FieldDesc::structure(
        "",
        vec![
            ("active", s(ScalarType::Bool)),
            ("lowAlarmLimit", s(ScalarType::F64)),
            ("lowWarningLimit", s(ScalarType::F64)),
            ("highWarningLimit", s(ScalarType::F64)),
            ("highAlarmLimit", s(ScalarType::F64)),
            ("lowAlarmSeverity", s(ScalarType::I32)),
            ("lowWarningSeverity", s(ScalarType::I32)),
            ("highWarningSeverity", s(ScalarType::I32)),
            ("highAlarmSeverity", s(ScalarType::I32)),
            ("hysteresis", s(ScalarType::F64)),
        ],
    )
}

/// Which optional meta-data sub-structures to include.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    pub display: bool,
    pub control: bool,
    pub value_alarm: bool,
}

impl Meta {
    pub fn all() -> Self {
        Meta { display: true, control: true, value_alarm: true }
    }
}

fn with_meta(id: &str, value: FieldDesc, numeric: bool, meta: Meta) -> FieldDesc {
    let mut f = vec![("value", value), ("alarm", alarm_t()), ("timeStamp", time_t())];
    if meta.display {
        f.push(("display", display_t(numeric)));
    }
    if meta.control && numeric {
        f.push(("control", control_t()));
    }
    if meta.value_alarm && numeric {
        f.push(("valueAlarm", value_alarm_t()));
    }
    FieldDesc::structure(id, f)
}

fn numeric(t: ScalarType) -> bool {
    !matches!(t, ScalarType::String | ScalarType::Bool)
}

/// epics:nt/NTScalar:1.0 type.
pub fn nt_scalar(t: ScalarType, meta: Meta) -> FieldDesc {
    with_meta("epics:nt/NTScalar:1.0", s(t), numeric(t), meta)
}

/// epics:nt/NTScalarArray:1.0 type.
pub fn nt_scalar_array(t: ScalarType, meta: Meta) -> FieldDesc {
    with_meta("epics:nt/NTScalarArray:1.0", a(t), numeric(t), meta)
}

/// epics:nt/NTEnum:1.0 type.
pub fn nt_enum() -> FieldDesc {
    let enum_t = FieldDesc::structure("enum_t", vec![("index", s(ScalarType::I32)), ("choices", a(ScalarType::String))]);
    FieldDesc::structure("epics:nt/NTEnum:1.0", vec![("value", enum_t), ("alarm", alarm_t()), ("timeStamp", time_t())])
}

/// epics:nt/NTTable:1.0 type with the given (label, column type) columns.
pub fn nt_table(columns: &[(&str, ScalarType)]) -> FieldDesc {
    let cols = FieldDesc::structure("", columns.iter().map(|(n, t)| (*n, a(*t))).collect());
    FieldDesc::structure(
        "epics:nt/NTTable:1.0",
        vec![("labels", a(ScalarType::String)), ("value", cols), ("alarm", alarm_t()), ("timeStamp", time_t())],
    )
}

/// epics:nt/NTURI:1.0 type with the given string query arguments.
pub fn nt_uri(query: &[(&str, ScalarType)]) -> FieldDesc {
    let q = FieldDesc::structure("", query.iter().map(|(n, t)| (*n, s(*t))).collect());
    FieldDesc::structure(
        "epics:nt/NTURI:1.0",
        vec![
            ("scheme", s(ScalarType::String)),
            ("authority", s(ScalarType::String)),
            ("path", s(ScalarType::String)),
            ("query", q),
        ],
    )
}

/// epics:nt/NTNDArray:1.0 type (image data as a union of typed arrays).
pub fn nt_ndarray() -> FieldDesc {
    let value_u = FieldDesc::union(
        "",
        vec![
            ("booleanValue", a(ScalarType::Bool)),
            ("byteValue", a(ScalarType::I8)),
            ("shortValue", a(ScalarType::I16)),
            ("intValue", a(ScalarType::I32)),
            ("longValue", a(ScalarType::I64)),
            ("ubyteValue", a(ScalarType::U8)),
            ("ushortValue", a(ScalarType::U16)),
            ("uintValue", a(ScalarType::U32)),
            ("ulongValue", a(ScalarType::U64)),
            ("floatValue", a(ScalarType::F32)),
            ("doubleValue", a(ScalarType::F64)),
        ],
    );
    let codec = FieldDesc::structure("codec_t", vec![("name", s(ScalarType::String)), ("parameters", FieldDesc::Any)]);
    let dim = FieldDesc::structure(
        "dimension_t",
        vec![
            ("size", s(ScalarType::I32)),
            ("offset", s(ScalarType::I32)),
            ("fullSize", s(ScalarType::I32)),
            ("binning", s(ScalarType::I32)),
            ("reverse", s(ScalarType::Bool)),
        ],
    );
    let attr = FieldDesc::structure(
        "epics:nt/NTAttribute:1.0",
        vec![
            ("name", s(ScalarType::String)),
            ("value", FieldDesc::Any),
            ("tags", a(ScalarType::String)),
            ("descriptor", s(ScalarType::String)),
            ("alarm", alarm_t()),
            ("timeStamp", time_t()),
            ("sourceType", s(ScalarType::I32)),
            ("source", s(ScalarType::String)),
        ],
    );
    let dim_m = dim.members().cloned().map(std::sync::Arc::new).unwrap_or_default();
    let attr_m = attr.members().cloned().map(std::sync::Arc::new).unwrap_or_default();
    FieldDesc::structure(
        "epics:nt/NTNDArray:1.0",
        vec![
            ("value", value_u),
            ("codec", codec),
            ("compressedSize", s(ScalarType::I64)),
            ("uncompressedSize", s(ScalarType::I64)),
            ("dimension", FieldDesc::StructureArray(dim_m)),
            ("uniqueId", s(ScalarType::I32)),
            ("dataTimeStamp", time_t()),
            ("attribute", FieldDesc::StructureArray(attr_m)),
            ("descriptor", s(ScalarType::String)),
            ("alarm", alarm_t()),
            ("timeStamp", time_t()),
            ("display", display_t(true)),
        ],
    )
}

/// A structure value under construction: set fields by dotted path.
#[derive(Debug, Clone)]
pub struct Builder {
    pub desc: FieldDesc,
    pub value: Value,
}

impl Builder {
    pub fn new(desc: FieldDesc) -> Self {
        let value = Value::default_for(&desc);
        Builder { desc, value }
    }

    /// Set a field by dotted path. Returns false if the path does not exist.
    pub fn set(&mut self, path: &str, v: Value) -> bool {
        match path_mut(&self.desc, &mut self.value, path) {
            Some(slot) => {
                *slot = v;
                true
            }
            None => false,
        }
    }

    pub fn with(mut self, path: &str, v: Value) -> Self {
        self.set(path, v);
        self
    }

    pub fn build(self) -> (FieldDesc, Value) {
        (self.desc, self.value)
    }
}

/// Mutable access to a sub-field value by dotted path.
pub fn path_mut<'v>(d: &FieldDesc, v: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    if path.is_empty() {
        return Some(v);
    }
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, r),
        None => (path, ""),
    };
    let FieldDesc::Structure(m) = d else { return None };
    let (i, fd) = m.field(head)?;
    let fv = v.field_mut(i)?;
    path_mut(fd, fv, rest)
}

/// Shared access to a sub-field value by dotted path.
pub fn path_ref<'v>(d: &FieldDesc, v: &'v Value, path: &str) -> Option<(&'v Value, FieldDesc)> {
    if path.is_empty() {
        return Some((v, d.clone()));
    }
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, r),
        None => (path, ""),
    };
    let FieldDesc::Structure(m) = d else { return None };
    let (i, fd) = m.field(head)?;
    path_ref(fd, v.field(i)?, rest)
}

/// Value of an NTEnum's value field.
pub fn enum_value(index: i32, choices: &[&str]) -> Value {
    Value::Struct(vec![
        Value::I32(index),
        Value::Array(ScalarArray::String(choices.iter().map(|c| c.to_string()).collect())),
    ])
}

/// Time stamp value from seconds and nanoseconds past the POSIX epoch
/// (pvAccess uses the POSIX epoch in the secondsPastEpoch field).
pub fn time_value(secs: i64, nanos: i32) -> Value {
    Value::Struct(vec![Value::I64(secs), Value::I32(nanos), Value::I32(0)])
}

/// An NTNDArray union value holding doubles.
pub fn ndarray_doubles(v: Vec<f64>) -> Value {
    Value::Union(UnionValue { selector: Some(10), value: Box::new(Value::Array(ScalarArray::F64(v))) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::types::{SendCache, TypeCache, decode_desc, encode_desc};
    use crate::proto::value::{decode_value, encode_value};
    use crate::proto::wire::{ByteOrder, Reader, Writer};

    #[test]
    fn nt_types_roundtrip_with_values() {
        for d in [
            nt_scalar(ScalarType::F64, Meta::all()),
            nt_scalar(ScalarType::String, Meta::all()),
            nt_scalar_array(ScalarType::F64, Meta::all()),
            nt_enum(),
            nt_table(&[("a", ScalarType::I32), ("b", ScalarType::String)]),
            nt_ndarray(),
            nt_uri(&[("a", ScalarType::F64)]),
        ] {
            let v = Value::default_for(&d);
            let mut w = Writer::new(ByteOrder::Little);
            encode_desc(&mut w, &d, &mut SendCache::disabled());
            encode_value(&mut w, &d, &v, &mut SendCache::disabled()).unwrap();
            let mut r = Reader::new(&w.buf, ByteOrder::Little);
            let mut tc = TypeCache::new();
            let d2 = decode_desc(&mut r, &mut tc).unwrap();
            assert_eq!(d2, d);
            assert_eq!(decode_value(&mut r, &d2, &mut tc).unwrap(), v);
        }
    }

    #[test]
    fn builder_sets_paths() {
        let (d, v) = Builder::new(nt_scalar(ScalarType::F64, Meta::default()))
            .with("value", Value::F64(4.0))
            .with("alarm.severity", Value::I32(2))
            .build();
        assert_eq!(path_ref(&d, &v, "value").unwrap().0, &Value::F64(4.0));
        assert_eq!(path_ref(&d, &v, "alarm.severity").unwrap().0, &Value::I32(2));
    }
}
