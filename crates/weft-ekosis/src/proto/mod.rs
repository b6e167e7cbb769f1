//! Sans-IO core of the Ecosystem (ekosis 0.17) wire protocol: one JSON object
//! per line (`\n`), heartbeat lines (ENQ `05 0a` answered with ACK `06 0a`),
//! requests `{"route_key","span_key":{"trace_id","span_id"},"data"}` and
//! responses `{"span_key","status","data"}`.
//!
//! No sockets, clocks or randomness here: bytes in, typed values out, and the
//! exact bytes ekosis writes for each answer.

mod json;
mod span;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

pub use json::{python_json_error, python_repr_text, python_type, write_json_string, Ordered};
pub use span::{SpanKey, SpanKeyError};

/// ENQ: a heartbeat request is a line whose first byte is this.
pub const ENQ: u8 = 0x05;
/// ACK: the heartbeat answer is `ACK LF`.
pub const ACK: u8 = 0x06;
/// What the server writes for a heartbeat.
pub const HEARTBEAT_ANSWER: &[u8] = b"\x06\n";
/// What a persisted client writes when idle.
pub const HEARTBEAT_REQUEST: &[u8] = b"\x05\n";
/// ekosis reads lines with asyncio's default 64 KiB limit and drops the
/// connection on a longer one; we default to the same so clients see the
/// same behaviour.
pub const DEFAULT_MAX_LINE_BYTES: usize = 65_536;

/// ekosis status codes (`ekosis/requests/status.py`).
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const PROTOCOL_PARSING_ERROR: u16 = 100;
    pub const CLIENT_DENIED: u16 = 200;
    pub const PYDANTIC_VALIDATION_ERROR: u16 = 300;
    pub const ROUTE_KEY_UNKNOWN: u16 = 400;
    pub const APPLICATION_BUSY: u16 = 500;
    pub const PROCESSING_FAILURE: u16 = 600;
    pub const UNHANDLED: u16 = 999;
}

/// Why the byte stream cannot go on (the connection is dropped, as ekosis
/// does, without an answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("line is not valid UTF-8")]
    NotUtf8,
}

/// One line from a stream, newline removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line starting with ENQ (the client's heartbeat) or ACK (the server's
    /// answer to one).
    Heartbeat(u8),
    /// Anything else, surrounding whitespace stripped (Python's `strip()`).
    Message(Bytes),
}

/// Splits a byte stream into lines (tokio-util `Decoder` contract).
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_line_bytes: usize,
    /// Bytes already searched for a newline.
    scanned: usize,
}

impl LineDecoder {
    pub fn new(max_line_bytes: usize) -> Self {
        Self { max_line_bytes, scanned: 0 }
    }

    /// `Ok(None)`: need more bytes. An error means the stream is unusable.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, ProtoError> {
        let from = self.scanned.min(buf.len());
        let nl = buf.get(from..).and_then(|rest| rest.iter().position(|b| *b == b'\n')).map(|i| i + from);
        let Some(nl) = nl else {
            if buf.len() > self.max_line_bytes {
                return Err(ProtoError::LineTooLong { max: self.max_line_bytes });
            }
            self.scanned = buf.len();
            return Ok(None);
        };
        self.scanned = 0;
        if nl > self.max_line_bytes {
            return Err(ProtoError::LineTooLong { max: self.max_line_bytes });
        }
        let line = buf.split_to(nl + 1).freeze();
        Ok(Some(classify_line(line.slice(..nl))?))
    }
}

/// Classify one line (without its newline).
pub fn classify_line(line: Bytes) -> Result<Line, ProtoError> {
    match line.first() {
        Some(&ENQ) => return Ok(Line::Heartbeat(ENQ)),
        Some(&ACK) => return Ok(Line::Heartbeat(ACK)),
        _ => {}
    }
    let text = std::str::from_utf8(&line).map_err(|_| ProtoError::NotUtf8)?;
    let trimmed = text.trim();
    let start = trimmed.as_ptr() as usize - text.as_ptr() as usize;
    Ok(Line::Message(line.slice(start..start + trimmed.len())))
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub route_key: String,
    pub span_key: SpanKey,
    pub data: Value,
}

/// A request the server answers with an error status without running
/// anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub span_key: Option<SpanKey>,
    pub message: String,
}

/// Parse a request line (already stripped). Mirrors ekosis: not JSON -> 100
/// with Python's `json` error text; bad envelope -> 300 with a null span key.
pub fn parse_request(line: &[u8]) -> Result<Request, Reject> {
    let text = std::str::from_utf8(line).map_err(|_| Reject { status: status::PROTOCOL_PARSING_ERROR, span_key: None, message: "line is not valid UTF-8".into() })?;
    let value: Value = serde_json::from_str(text).map_err(|e| Reject {
        status: status::PROTOCOL_PARSING_ERROR,
        span_key: None,
        message: python_json_error(text, &e),
    })?;
    let invalid = |field: &str, kind: &str, msg: &str| Reject {
        status: status::PYDANTIC_VALIDATION_ERROR,
        span_key: None,
        message: format!(
            "1 validation error for RequestDTO\n{field}\n  {msg} [type={kind}, input_value={}, input_type={}]\n    For further information visit https://errors.pydantic.dev/2.14/v/{kind}",
            json::python_repr_text(text),
            json::python_type(&value)
        ),
    };
    let Value::Object(map) = &value else {
        return Err(Reject {
            status: status::PYDANTIC_VALIDATION_ERROR,
            span_key: None,
            message: format!(
                "1 validation error for RequestDTO\n  Input should be a valid dictionary or instance of RequestDTO [type=model_type, input_value={}, input_type={}]\n    For further information visit https://errors.pydantic.dev/2.14/v/model_type",
                json::python_repr_text(text),
                json::python_type(&value)
            ),
        });
    };
    let route_key = match map.get("route_key") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("route_key", "string_type", "Input should be a valid string")),
        None => return Err(invalid("span_key", "missing", "Field required").with_field("route_key")),
    };
    let span_key = match map.get("span_key") {
        Some(v) => SpanKey::from_json(v).map_err(|e| Reject {
            status: status::PYDANTIC_VALIDATION_ERROR,
            span_key: None,
            message: format!("1 validation error for RequestDTO\nspan_key\n  {e}"),
        })?,
        None => return Err(invalid("span_key", "missing", "Field required")),
    };
    let data = map.get("data").cloned().unwrap_or(Value::Null);
    Ok(Request { route_key, span_key, data })
}

impl Reject {
    fn with_field(mut self, field: &str) -> Self {
        self.message = self.message.replacen("\nspan_key\n", &format!("\n{field}\n"), 1);
        self
    }
}

/// The response line (with its `\n` for streams; UDP drops it).
/// `data_json` must be one valid JSON value.
pub fn encode_response(span_key: Option<&SpanKey>, status: u16, data_json: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"span_key\":");
    match span_key {
        Some(sk) => sk.write_json(out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(status.to_string().as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data_json);
    out.extend_from_slice(b"}\n");
}

/// An error response: `data` is the message as a JSON string.
pub fn encode_error(span_key: Option<&SpanKey>, status: u16, message: &str, out: &mut Vec<u8>) {
    let mut data = Vec::with_capacity(message.len() + 2);
    write_json_string(message, &mut data);
    encode_response(span_key, status, &data, out);
}

/// The request line a client sends (field order as ekosis' client).
pub fn encode_request(route_key: &str, span_key: &SpanKey, data_json: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"route_key\":");
    write_json_string(route_key, out);
    out.extend_from_slice(b",\"span_key\":");
    span_key.write_json(out);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data_json);
    out.extend_from_slice(b"}\n");
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub span_key: Option<SpanKey>,
    pub status: u16,
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("response is not JSON: {0}")]
    NotJson(String),
    #[error("response has no numeric status")]
    NoStatus,
    #[error("response span key is malformed: {0}")]
    BadSpanKey(String),
}

pub fn parse_response(line: &[u8]) -> Result<Response, ResponseError> {
    let v: Value = serde_json::from_slice(line).map_err(|e| ResponseError::NotJson(e.to_string()))?;
    let status = v.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok()).ok_or(ResponseError::NoStatus)?;
    let span_key = match v.get("span_key") {
        None | Some(Value::Null) => None,
        Some(sk) => Some(SpanKey::from_json(sk).map_err(|e| ResponseError::BadSpanKey(e.to_string()))?),
    };
    Ok(Response { span_key, status, data: v.get("data").cloned().unwrap_or(Value::Null) })
}

/// The texts ekosis puts in `data` for its error statuses.
pub mod text {
    pub fn unknown_route(route_key: &str) -> String {
        format!("status: [400] message: [Unknown route key '{route_key}']")
    }
    pub fn processing_failure(route_key: &str, message: &str) -> String {
        format!("status: [600] message: [Processing Failure '{route_key}', message: '{message}']")
    }
    pub fn receiving_paused(route_key: &str) -> String {
        format!("status: [500] message: [Receiving on '{route_key}' has been paused.]")
    }
    pub fn busy(message: &str) -> String {
        format!("status: [500] message: [{message}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<Line, ProtoError>> {
        let mut d = LineDecoder::new(max);
        let mut buf = BytesMut::from(input);
        let mut out = vec![];
        loop {
            match d.decode(&mut buf) {
                Ok(Some(l)) => out.push(Ok(l)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn framing() {
        let got = lines(b"\x05\n  {\"a\":1} \r\n\npartial", 100);
        assert_eq!(
            got,
            vec![Ok(Line::Heartbeat(ENQ)), Ok(Line::Message(Bytes::from_static(b"{\"a\":1}"))), Ok(Line::Message(Bytes::new()))]
        );
        assert_eq!(lines(&[b'x'; 101], 100), vec![Err(ProtoError::LineTooLong { max: 100 })]);
        assert_eq!(lines(b"\xff\xfe\n", 100), vec![Err(ProtoError::NotUtf8)]);
        // A line fed one byte at a time comes out once, whole.
        let mut d = LineDecoder::new(100);
        let mut buf = BytesMut::new();
        let mut got = vec![];
        for b in b"{\"x\":2}\n" {
            buf.extend_from_slice(&[*b]);
            if let Some(l) = d.decode(&mut buf).unwrap() {
                got.push(l);
            }
        }
        assert_eq!(got, vec![Line::Message(Bytes::from_static(b"{\"x\":2}"))]);
    }

    #[test]
    fn errors_as_ekosis_writes_them() {
        let r = parse_request(b"").unwrap_err();
        let mut out = vec![];
        encode_error(r.span_key.as_ref(), r.status, &r.message, &mut out);
        assert_eq!(out, b"{\"span_key\":null,\"status\":100,\"data\":\"Expecting value: line 1 column 1 (char 0)\"}\n");
        let r = parse_request(b"not json").unwrap_err();
        assert_eq!(r.message, "Expecting value: line 1 column 1 (char 0)");
        let r = parse_request(br#"{"route_key":"echo","data":{"message":"x"}}"#).unwrap_err();
        assert_eq!(r.status, 300);
        assert_eq!(
            r.message,
            "1 validation error for RequestDTO\nspan_key\n  Field required [type=missing, input_value={'route_key': 'echo', 'data': {'message': 'x'}}, input_type=dict]\n    For further information visit https://errors.pydantic.dev/2.14/v/missing"
        );
    }
}
