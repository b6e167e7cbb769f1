//! JSON details as ekosis (Python, pydantic) renders them: `json` module
//! error texts, Python `repr` of the input in validation errors, and string
//! escaping as pydantic-core writes it (raw UTF-8, no `\u` for non-ASCII).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A JSON string literal for `s` (serde_json's escaping: `"`, `\`, control
/// characters; non-ASCII left as UTF-8, as pydantic-core does).
pub fn write_json_string(s: &str, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail and a &str always serializes.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// Python's `json.loads` message for the error serde_json found in `text`
/// (the common cases; others keep serde_json's wording).
pub fn python_json_error(text: &str, e: &serde_json::Error) -> String {
    let msg = e.to_string();
    // serde_json: 1-based line, 1-based byte column of the offending byte.
    let byte_at = |line: usize, col: usize| -> usize {
        let mut start = 0usize;
        for (i, l) in text.split('\n').enumerate() {
            if i + 1 == line.max(1) {
                return start + col.saturating_sub(1).min(l.len());
            }
            start += l.len() + 1;
        }
        text.len()
    };
    let pos = if msg.starts_with("EOF while parsing a value") {
        Some(("Expecting value", text.len()))
    } else if msg.starts_with("expected value") {
        Some(("Expecting value", byte_at(e.line(), e.column())))
    } else if msg.starts_with("expected ident") {
        // A bad literal (`nul`, `not json`): Python points at its first letter.
        let at = byte_at(e.line(), e.column());
        let start = text.get(..at).and_then(|p| p.rfind(['n', 't', 'f'])).unwrap_or(at);
        Some(("Expecting value", start))
    } else if msg.starts_with("trailing characters") {
        Some(("Extra data", byte_at(e.line(), e.column())))
    } else {
        None
    };
    let Some((what, mut pos)) = pos else { return msg };
    while pos > 0 && !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = text.get(..pos).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    format!("{what}: line {line} column {col} (char {})", before.chars().count())
}

/// A JSON value that keeps object keys in document order (for `repr`).
#[derive(Debug, Clone, PartialEq)]
pub enum Ordered {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Ordered>),
    Dict(Vec<(String, Ordered)>),
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Int(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Int(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(Ordered::Float(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::Str(s.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v = vec![];
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Ordered::List(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v: Vec<(String, Ordered)> = vec![];
                while let Some((k, x)) = a.next_entry::<String, Ordered>()? {
                    // Python keeps the last of duplicate keys, in first place.
                    match v.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = x,
                        None => v.push((k, x)),
                    }
                }
                Ok(Ordered::Dict(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn py_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
}

fn py_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn repr_into(v: &Ordered, out: &mut String) {
    match v {
        Ordered::Null => out.push_str("None"),
        Ordered::Bool(true) => out.push_str("True"),
        Ordered::Bool(false) => out.push_str("False"),
        Ordered::Int(n) => out.push_str(&n.to_string()),
        Ordered::Float(f) => out.push_str(&py_float(*f)),
        Ordered::Str(s) => py_str(s, out),
        Ordered::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(x, out);
            }
            out.push(']');
        }
        Ordered::Dict(items) => {
            out.push('{');
            for (i, (k, x)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_str(k, out);
                out.push_str(": ");
                repr_into(x, out);
            }
            out.push('}');
        }
    }
}

/// Python's `repr()` of the parsed JSON text (keys in document order).
pub fn python_repr_text(text: &str) -> String {
    let mut out = String::new();
    match serde_json::from_str::<Ordered>(text) {
        Ok(v) => repr_into(&v, &mut out),
        Err(_) => py_str(text, &mut out),
    }
    out
}

/// Python's type name for a JSON value.
pub fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        python_json_error(text, &e)
    }

    #[test]
    fn python_messages() {
        assert_eq!(err(""), "Expecting value: line 1 column 1 (char 0)");
        assert_eq!(err("not json"), "Expecting value: line 1 column 1 (char 0)");
        assert_eq!(err("  x"), "Expecting value: line 1 column 3 (char 2)");
        assert_eq!(err("  "), "Expecting value: line 1 column 3 (char 2)");
        assert_eq!(err("{\"a\": nul}"), "Expecting value: line 1 column 7 (char 6)");
        assert_eq!(err("{\"a\":"), "Expecting value: line 1 column 6 (char 5)");
        assert_eq!(err("{} {}"), "Extra data: line 1 column 4 (char 3)");
        assert_eq!(python_repr_text(r#"{"route_key": "echo", "data": {"message": "x", "n": [1, 2.0, true, null]}}"#),
            "{'route_key': 'echo', 'data': {'message': 'x', 'n': [1, 2.0, True, None]}}");
        assert_eq!(python_repr_text(r#""it's""#), "\"it's\"");
    }
}
