//! Text and JSON rendering of pvData values (pvget/pvmonitor-like output).

use crate::proto::nt::path_ref;
use crate::proto::{FieldDesc, ScalarArray, Value};

/// UTC "YYYY-MM-DD HH:MM:SS.mmm" from POSIX seconds and nanoseconds.
pub fn format_time(secs: i64, nanos: i32) -> String {
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60,
        (nanos.max(0) / 1_000_000)
    )
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::I8(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::U8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => array_text(a),
        other => format!("{other:?}"),
    }
}

fn array_text(a: &ScalarArray) -> String {
    let items: Vec<String> = (0..a.len()).filter_map(|i| a.get(i)).map(|v| scalar_text(&v)).collect();
    format!("[{}]", items.join(", "))
}

/// One-line summary for normative types, as pvget/pvmonitor print them:
/// `NAME TIME VALUE [SEVERITY]`. None for other structures.
pub fn nt_line(name: &str, desc: &FieldDesc, value: &Value) -> Option<String> {
    let id = desc.id();
    let time = match (path_ref(desc, value, "timeStamp.secondsPastEpoch"), path_ref(desc, value, "timeStamp.nanoseconds")) {
        (Some((Value::I64(s), _)), Some((Value::I32(n), _))) if *s != 0 => format_time(*s, *n),
        _ => "<undefined>".to_string(),
    };
    let sev = match path_ref(desc, value, "alarm.severity") {
        Some((Value::I32(s), _)) if *s != 0 => {
            let msg = path_ref(desc, value, "alarm.message").and_then(|(m, _)| m.as_str().map(String::from)).unwrap_or_default();
            format!(" {} {msg}", ["NO_ALARM", "MINOR", "MAJOR", "INVALID"].get(*s as usize).copied().unwrap_or("UNDEFINED"))
        }
        _ => String::new(),
    };
    if id.starts_with("epics:nt/NTScalar:") || id.starts_with("epics:nt/NTScalarArray:") {
        let (v, _) = path_ref(desc, value, "value")?;
        let units = path_ref(desc, value, "display.units").and_then(|(u, _)| u.as_str().map(String::from)).unwrap_or_default();
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Array(a) => format!("({}) {}", a.len(), array_text(a)),
            v => scalar_text(v),
        };
        let units = if units.is_empty() { String::new() } else { format!(" {units}") };
        return Some(format!("{name} {time} {text}{units}{sev}"));
    }
    if id.starts_with("epics:nt/NTEnum:") {
        let idx = path_ref(desc, value, "value.index").and_then(|(v, _)| v.as_i64()).unwrap_or(-1);
        let choice = match path_ref(desc, value, "value.choices") {
            Some((Value::Array(ScalarArray::String(c)), _)) => c.get(idx.max(0) as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        return Some(format!("{name} {time} ({idx}) {choice}{sev}"));
    }
    None
}

/// Full structure dump, one field per line (`type name value`).
pub fn tree(desc: &FieldDesc, value: &Value) -> String {
    let mut out = String::new();
    tree_into(&mut out, desc, value, "", 0);
    out
}

fn tree_into(out: &mut String, d: &FieldDesc, v: &Value, name: &str, indent: usize) {
    let pad = "    ".repeat(indent);
    match (d, v) {
        (FieldDesc::Structure(m), Value::Struct(f)) => {
            let id = if m.id.is_empty() { "structure" } else { m.id.as_str() };
            out.push_str(&format!("{pad}{id} {name}\n").replace(" \n", "\n"));
            for ((n, fd), fv) in m.fields.iter().zip(f) {
                tree_into(out, fd, fv, n, indent + 1);
            }
        }
        (FieldDesc::Union(m), Value::Union(u)) => {
            out.push_str(&format!("{pad}union {name}\n"));
            if let Some((n, fd)) = u.selector.and_then(|s| m.fields.get(s)) {
                tree_into(out, fd, &u.value, n, indent + 1);
            }
        }
        (FieldDesc::Any, Value::Any(Some(b))) => {
            out.push_str(&format!("{pad}any {name}\n"));
            tree_into(out, &b.0, &b.1, "", indent + 1);
        }
        (FieldDesc::StructureArray(m), Value::StructArray(a)) => {
            out.push_str(&format!("{pad}structure[] {name}\n"));
            let sd = FieldDesc::Structure(m.clone());
            for e in a.iter().flatten() {
                tree_into(out, &sd, &Value::Struct(e.clone()), "", indent + 1);
            }
        }
        (d, v) => {
            let t = d.to_string();
            let t = t.trim().trim_end_matches(' ');
            out.push_str(&format!("{pad}{t} {name} {}\n", scalar_text(v)));
        }
    }
}

/// JSON of a value: structures as objects, unions as `{member: value}`.
pub fn to_json(desc: &FieldDesc, value: &Value) -> serde_json::Value {
    use serde_json::{Map, Value as J, json};
    match (desc, value) {
        (FieldDesc::Structure(m), Value::Struct(f)) => {
            let mut o = Map::new();
            for ((n, fd), fv) in m.fields.iter().zip(f) {
                o.insert(n.clone(), to_json(fd, fv));
            }
            J::Object(o)
        }
        (FieldDesc::StructureArray(m), Value::StructArray(a)) => {
            let sd = FieldDesc::Structure(m.clone());
            J::Array(a.iter().map(|e| e.as_ref().map(|f| to_json(&sd, &Value::Struct(f.clone()))).unwrap_or(J::Null)).collect())
        }
        (FieldDesc::Union(m), Value::Union(u)) => match u.selector.and_then(|s| m.fields.get(s)) {
            Some((n, fd)) => json!({ n.clone(): to_json(fd, &u.value) }),
            None => J::Null,
        },
        (FieldDesc::Any, Value::Any(Some(b))) => to_json(&b.0, &b.1),
        (_, Value::Any(None)) => J::Null,
        (_, v) => scalar_json(v),
    }
}

fn scalar_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Bool(b) => J::Bool(*b),
        Value::String(s) => J::String(s.clone()),
        Value::F32(x) => serde_json::Number::from_f64(*x as f64).map(J::Number).unwrap_or(J::Null),
        Value::F64(x) => serde_json::Number::from_f64(*x).map(J::Number).unwrap_or(J::Null),
        Value::U64(x) => J::from(*x),
        Value::Array(a) => J::Array((0..a.len()).filter_map(|i| a.get(i)).map(|e| scalar_json(&e)).collect()),
        other => other.as_i64().map(J::from).unwrap_or(J::Null),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(format_time(0, 0), "1970-01-01 00:00:00.000");
        assert_eq!(format_time(1_700_000_000, 500_000_000), "2023-11-14 22:13:20.500");
    }
}
