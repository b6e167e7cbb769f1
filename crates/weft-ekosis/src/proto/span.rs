//! Span keys: `{"trace_id": UUID, "span_id": 16 hex digits}`, shown as
//! `"<hyphenated uuid>:<16 hex>"` (ekosis' `str(SpanKey)`).

use std::fmt;
use std::str::FromStr;

use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanKey {
    pub trace_id: Uuid,
    pub span_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanKeyError {
    #[error("Input should be a valid dictionary or instance of SpanKey")]
    NotObject,
    #[error("trace_id: Field required")]
    MissingTrace,
    #[error("span_id: Field required")]
    MissingSpan,
    #[error("trace_id: Input should be a valid UUID, got {0:?}")]
    BadTrace(String),
    #[error("span_id: Input should be 16 hexadecimal digits or an integer in 0..2^64, got {0}")]
    BadSpan(String),
    #[error("span key text must be TRACE:SPAN, got {0:?}")]
    BadText(String),
}

impl SpanKey {
    pub fn new(trace_id: Uuid, span_id: u64) -> Self {
        Self { trace_id, span_id }
    }

    /// Accepts what ekosis' pydantic model accepts: any UUID text for the
    /// trace, 16 hex digits or an integer for the span.
    pub fn from_json(v: &Value) -> Result<Self, SpanKeyError> {
        let Value::Object(m) = v else { return Err(SpanKeyError::NotObject) };
        let trace = match m.get("trace_id") {
            Some(Value::String(s)) => Uuid::parse_str(s).map_err(|_| SpanKeyError::BadTrace(s.clone()))?,
            Some(other) => return Err(SpanKeyError::BadTrace(other.to_string())),
            None => return Err(SpanKeyError::MissingTrace),
        };
        let span = match m.get("span_id") {
            Some(Value::String(s)) => parse_span(s).ok_or_else(|| SpanKeyError::BadSpan(format!("{s:?}")))?,
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| SpanKeyError::BadSpan(n.to_string()))?,
            Some(other) => return Err(SpanKeyError::BadSpan(other.to_string())),
            None => return Err(SpanKeyError::MissingSpan),
        };
        Ok(Self { trace_id: trace, span_id: span })
    }

    /// Canonical JSON: lower-case hyphenated UUID, span as 16 lower-case hex.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"trace_id\":\"");
        out.extend_from_slice(self.trace_id.hyphenated().to_string().as_bytes());
        out.extend_from_slice(b"\",\"span_id\":\"");
        out.extend_from_slice(format!("{:016x}", self.span_id).as_bytes());
        out.extend_from_slice(b"\"}");
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({ "trace_id": self.trace_id.hyphenated().to_string(), "span_id": format!("{:016x}", self.span_id) })
    }
}

fn parse_span(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

impl fmt::Display for SpanKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:016x}", self.trace_id.hyphenated(), self.span_id)
    }
}

impl FromStr for SpanKey {
    type Err = SpanKeyError;
    fn from_str(s: &str) -> Result<Self, SpanKeyError> {
        let bad = || SpanKeyError::BadText(s.to_owned());
        let (t, sp) = s.rsplit_once(':').ok_or_else(bad)?;
        Ok(Self { trace_id: Uuid::parse_str(t).map_err(|_| bad())?, span_id: parse_span(sp).ok_or_else(bad)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let v = serde_json::json!({"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": 14});
        let sk = SpanKey::from_json(&v).unwrap();
        let mut out = vec![];
        sk.write_json(&mut out);
        assert_eq!(out, br#"{"trace_id":"0af76519-16cd-43dd-8448-eb211c80319c","span_id":"000000000000000e"}"#);
        assert_eq!(sk.to_string(), "0af76519-16cd-43dd-8448-eb211c80319c:000000000000000e");
        assert_eq!(sk.to_string().parse::<SpanKey>().unwrap(), sk);
        assert_eq!(SpanKey::from_json(&sk.to_json()).unwrap(), sk);
        assert!(SpanKey::from_json(&serde_json::json!("a:b")).is_err());
        assert!(SpanKey::from_json(&serde_json::json!({"trace_id": "x", "span_id": 1})).is_err());
        assert!(SpanKey::from_json(&serde_json::json!({"trace_id": sk.trace_id.to_string(), "span_id": "123"})).is_err());
        assert!(SpanKey::from_json(&serde_json::json!({"trace_id": sk.trace_id.to_string(), "span_id": -1})).is_err());
    }
}
