//! JSON predicates and field assignment (FILTER, UPDATE, FROM TOPIC WHERE).
//! Pure functions over serde_json values.

use std::cmp::Ordering;

use serde_json::Value as Json;

use crate::aql::{CmpOp, FieldPath, Predicate, Value};

/// The value at a dotted path: object members by name, array elements by
/// a decimal index.
pub fn lookup<'a>(doc: &'a Json, path: &FieldPath) -> Option<&'a Json> {
    let mut cur = doc;
    for seg in &path.0 {
        cur = match cur {
            Json::Object(m) => m.get(seg)?,
            Json::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Equality with numbers compared by value (`1 = 1.0`).
fn json_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Json::Object(x), Json::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w))),
        _ => a == b,
    }
}

fn num_cmp(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

/// Whether `field op value` holds: `=`/`!=` on any JSON; orderings between
/// two numbers or two strings only. A missing field holds for nothing.
pub fn compare(actual: Option<&Json>, op: CmpOp, value: &Value) -> bool {
    let (Some(a), Some(b)) = (actual, value.as_json()) else { return false };
    match op {
        CmpOp::Eq => json_eq(a, &b),
        CmpOp::Ne => !json_eq(a, &b),
        _ => {
            let ord = match (a, &b) {
                (Json::Number(x), Json::Number(y)) => num_cmp(x, y),
                (Json::String(x), Json::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
                _ => None,
            };
            ord.is_some_and(|o| op.holds(o))
        }
    }
}

/// Evaluates a predicate on a document.
pub fn eval(p: &Predicate, doc: &Json) -> bool {
    match p {
        Predicate::Cmp { field, op, value } => compare(lookup(doc, field), *op, value),
        Predicate::Exists(f) => lookup(doc, f).is_some(),
        Predicate::In { field, values } => {
            let a = lookup(doc, field);
            values.iter().any(|v| compare(a, CmpOp::Eq, v))
        }
        Predicate::Not(q) => !eval(q, doc),
        Predicate::And(a, b) => eval(a, doc) && eval(b, doc),
        Predicate::Or(a, b) => eval(a, doc) || eval(b, doc),
    }
}

/// Evaluates a predicate on raw bytes: a value that is not JSON matches nothing.
pub fn eval_bytes(p: &Predicate, bytes: &[u8]) -> bool {
    serde_json::from_slice::<Json>(bytes).is_ok_and(|doc| eval(p, &doc))
}

/// Sets `path` to `value` in `doc`, creating objects for missing members.
/// An array index must exist; a scalar in the way is an error.
pub fn assign(doc: &mut Json, path: &FieldPath, value: &Value) -> Result<(), String> {
    let Some(v) = value.as_json() else { return Err("a byte value that is not UTF-8 cannot go into a JSON document".into()) };
    let mut cur = doc;
    for (i, seg) in path.0.iter().enumerate() {
        let last = i + 1 == path.0.len();
        if cur.is_null() {
            *cur = Json::Object(Default::default());
        }
        cur = match cur {
            Json::Object(m) => {
                if last {
                    m.insert(seg.clone(), v);
                    return Ok(());
                }
                m.entry(seg.clone()).or_insert(Json::Null)
            }
            Json::Array(a) => {
                let idx = seg.parse::<usize>().map_err(|_| format!("{seg:?} is not an index into an array"))?;
                let len = a.len();
                let slot = a.get_mut(idx).ok_or_else(|| format!("index {idx} is past the array's end ({len})"))?;
                if last {
                    *slot = v;
                    return Ok(());
                }
                slot
            }
            _ => return Err(format!("{seg:?}: the path goes through a value that is neither an object nor an array")),
        };
    }
    // An empty path (the converters refuse it): replace the document.
    *cur = v;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is the test failing
mod tests {
    use serde_json::json;

    use super::*;
    use crate::aql;

    fn holds(pred: &str, doc: Json) -> bool {
        eval(&aql::parse_predicate(pred).unwrap(), &doc)
    }

    #[test]
    fn predicates() {
        let d = json!({"a": {"b": 3}, "s": "north", "l": [1, {"x": true}], "n": null});
        assert!(holds("a.b = 3.0", d.clone()));
        assert!(holds("a.b >= 3 AND a.b < 4", d.clone()));
        assert!(!holds("a.b > 'x'", d.clone()));
        assert!(holds("s = 'north' AND s > 'm'", d.clone()));
        assert!(holds("l.1.x = true", d.clone()));
        assert!(holds("EXISTS n AND NOT EXISTS z", d.clone()));
        assert!(!holds("z != 1", d.clone()), "a missing field holds for nothing");
        assert!(holds("s IN ('south', 'north')", d.clone()));
        assert!(holds("NOT (a.b = 1 OR s = 'x')", d.clone()));
        assert!(!eval_bytes(&aql::parse_predicate("a = 1").unwrap(), b"not json"));
    }

    #[test]
    fn assignment() {
        let mut d = json!({"a": 1, "l": [0, 1]});
        assign(&mut d, &FieldPath(vec!["b".into(), "c".into()]), &Value::Json(json!(2))).unwrap();
        assign(&mut d, &FieldPath(vec!["l".into(), "1".into()]), &Value::Text("x".into())).unwrap();
        assert_eq!(d, json!({"a": 1, "b": {"c": 2}, "l": [0, "x"]}));
        assert!(assign(&mut d, &FieldPath(vec!["a".into(), "x".into()]), &Value::Json(json!(1))).is_err());
        assert!(assign(&mut d, &FieldPath(vec!["l".into(), "5".into()]), &Value::Json(json!(1))).is_err());
    }
}
