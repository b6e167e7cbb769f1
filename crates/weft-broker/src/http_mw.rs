//! Middleware of the HTTP gateway: every error in the JSON error shape, and
//! traffic statistics.
//!
//! Errors that axum produces itself (a path or query parameter that does
//! not parse, a body over `http.max_body_bytes`, 405, a WebSocket route
//! called without an upgrade) are plain text. Rather than replacing every
//! extractor, [`json_errors`] rewrites any error response that is not JSON
//! into `{code, message, details}`, so no error can escape the shape,
//! whichever part of the stack produced it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weft_wire::{ErrorBody, ErrorCode};

/// Error texts from axum are short; anything longer is cut.
const MAX_ERROR_TEXT_BYTES: usize = 4096;

/// Route templates counted separately; past this many (only possible if
/// the router grows), the rest are counted under `other`.
const MAX_ROUTES: usize = 64;

/// The wire code and `details.kind` for an HTTP status axum chose.
fn code_for(status: StatusCode) -> (ErrorCode, &'static str) {
    match status.as_u16() {
        400 => (ErrorCode::Validation, "bad_request"),
        404 => (ErrorCode::UnknownRoute, "no_route"),
        405 => (ErrorCode::UnknownRoute, "method_not_allowed"),
        413 => (ErrorCode::TooLarge, "body_too_large"),
        415 => (ErrorCode::BadBody, "unsupported_media_type"),
        422 => (ErrorCode::Validation, "unprocessable"),
        426 => (ErrorCode::Validation, "upgrade_required"),
        408 | 504 => (ErrorCode::Timeout, "timeout"),
        429 => (ErrorCode::Busy, "busy"),
        503 => (ErrorCode::Unavailable, "unavailable"),
        _ => (ErrorCode::Internal, "http"),
    }
}

/// Rewrites error responses that are not JSON into the error shape, keeping
/// the status (and `Allow` on 405). `max_body_bytes` is named in 413s.
pub async fn json_errors(State(max_body_bytes): State<usize>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let text = match axum::body::to_bytes(resp.into_body(), MAX_ERROR_TEXT_BYTES).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let (code, kind) = code_for(status);
    let mut details = serde_json::json!({ "kind": kind, "status": status.as_u16() });
    let message = match status.as_u16() {
        404 => format!("no such path: {path}; see /openapi.json"),
        405 => {
            let allowed = allow.as_ref().and_then(|a| a.to_str().ok()).unwrap_or("").to_owned();
            details["allow"] = allowed.split(',').map(|m| m.trim()).filter(|m| !m.is_empty()).collect::<Vec<_>>().into();
            format!("{method} is not allowed on {path}; allowed: {allowed}")
        }
        413 => {
            details["max_bytes"] = max_body_bytes.into();
            format!("request body over the limit of {max_body_bytes} bytes (http.max_body_bytes)")
        }
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        _ => text,
    };
    let mut out = (status, axum::Json(ErrorBody::new(code, message).with_details(details))).into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// Latency buckets: bucket `i` holds requests that took under 2^i µs.
const BUCKETS: usize = 32;

/// HTTP gateway traffic, read by `weft stats` (and `weft top`) as
/// `http.*` keys.
#[derive(Debug)]
pub struct HttpStats {
    requests: AtomicU64,
    errors_4xx: AtomicU64,
    errors_5xx: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    /// Per route template (`GET:/v1/topics/{topic}`): requests, errors.
    routes: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Default for HttpStats {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors_4xx: AtomicU64::new(0),
            errors_5xx: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            routes: Mutex::new(BTreeMap::new()),
        }
    }
}

impl HttpStats {
    fn record(&self, route: String, status: StatusCode, micros: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let error = status.is_client_error() || status.is_server_error();
        if status.is_client_error() {
            self.errors_4xx.fetch_add(1, Ordering::Relaxed);
        } else if status.is_server_error() {
            self.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = (64 - micros.leading_zeros() as usize).min(BUCKETS - 1);
        if let Some(b) = self.latency.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        // A poisoned lock only means another request panicked mid-update of
        // two counters; the counts are still usable.
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let key = if routes.len() < MAX_ROUTES || routes.contains_key(&route) { route } else { "other".to_owned() };
        let e = routes.entry(key).or_default();
        e.0 += 1;
        e.1 += u64::from(error);
    }

    /// The upper bound, in µs, of the bucket holding quantile `q`.
    fn quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.latency.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return 1u64 << i;
            }
        }
        1u64 << (BUCKETS - 1)
    }

    /// Flat `key value` pairs: `http.requests`, `http.errors.4xx`,
    /// `http.errors.5xx`, `http.latency_us.p50|p99`, and per route
    /// `http.route.<METHOD>:<template>.requests|errors`.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("http.requests".to_owned(), self.requests.load(Ordering::Relaxed)),
            ("http.errors.4xx".to_owned(), self.errors_4xx.load(Ordering::Relaxed)),
            ("http.errors.5xx".to_owned(), self.errors_5xx.load(Ordering::Relaxed)),
            ("http.latency_us.p50".to_owned(), self.quantile_us(0.50)),
            ("http.latency_us.p99".to_owned(), self.quantile_us(0.99)),
        ];
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for (route, (n, e)) in routes.iter() {
            out.push((format!("http.route.{route}.requests"), *n));
            out.push((format!("http.route.{route}.errors"), *e));
        }
        out
    }
}

/// Counts every request under its route template (not its path: topic
/// names must not grow the key space); unmatched paths count as
/// `unmatched`.
pub async fn count(State(stats): State<Arc<HttpStats>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let template = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let route = match &template {
        Some(t) => format!("{method}:{t}"),
        None => "unmatched".to_owned(),
    };
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    stats.record(route, resp.status(), elapsed.as_micros().min(u128::from(u64::MAX)) as u64);
    // The Prometheus side: the template (or `unmatched`) as the route label.
    let m = weft_metrics::get();
    let template = template.unwrap_or_else(|| "unmatched".to_owned());
    m.http_requests.get_or_create(&weft_metrics::l3("route", template.clone(), "method", method, "status", resp.status().as_u16().to_string())).inc();
    m.http_request_duration.get_or_create(&weft_metrics::l1("route", template)).observe(elapsed.as_secs_f64());
    resp
}

/// When every record of a produce failed (and there was at least one): the
/// first record's error, with all per-record results in
/// `details.results`, to answer with that error's status instead of 200.
/// Records fail one by one only when their partition cannot append
/// (storage fault: `unavailable`, 503); a request-level problem (unknown
/// topic, record too large) fails the whole produce before this.
pub fn all_failed(results: &[crate::dto::ProduceResult]) -> Option<ErrorBody> {
    let mut errors = results.iter().map(|r| r.error.as_ref());
    let first = errors.next()??.clone();
    if !errors.all(|e| e.is_some()) {
        return None;
    }
    let mut e = first;
    let all = serde_json::to_value(results).unwrap_or_default();
    match e.details.as_mut().and_then(|d| d.as_object_mut()) {
        Some(d) => {
            d.insert("results".into(), all);
        }
        None => e.details = Some(serde_json::json!({ "kind": "all_records_failed", "results": all })),
    }
    Some(e)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is the test failing
mod tests {
    use super::*;
    use crate::dto::ProduceResult;

    fn ok(offset: u64) -> ProduceResult {
        ProduceResult { partition: Some(0), offset: Some(offset), timestamp_ms: Some(1), error: None }
    }
    fn failed(code: ErrorCode) -> ProduceResult {
        ProduceResult { partition: None, offset: None, timestamp_ms: None, error: Some(ErrorBody::new(code, "x")) }
    }

    #[test]
    fn only_a_produce_with_every_record_failed_is_an_error() {
        assert!(all_failed(&[]).is_none());
        assert!(all_failed(&[ok(0), failed(ErrorCode::Unavailable)]).is_none());
        assert!(all_failed(&[failed(ErrorCode::Unavailable), ok(0)]).is_none());
        let e = all_failed(&[failed(ErrorCode::Unavailable), failed(ErrorCode::Internal)]).unwrap();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert_eq!(crate::error::http_status(e.code), 503);
        let d = e.details.unwrap();
        assert_eq!(d["results"].as_array().unwrap().len(), 2);
        assert_eq!(d["kind"], "all_records_failed");
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let s = HttpStats::default();
        for _ in 0..99 {
            s.record("GET:/a".into(), StatusCode::OK, 100);
        }
        s.record("GET:/a".into(), StatusCode::NOT_FOUND, 5000);
        assert_eq!(s.quantile_us(0.5), 128);
        assert_eq!(s.quantile_us(0.99), 128);
        assert_eq!(s.quantile_us(1.0), 8192);
        let snap: BTreeMap<_, _> = s.snapshot().into_iter().collect();
        assert_eq!(snap["http.requests"], 100);
        assert_eq!(snap["http.errors.4xx"], 1);
        assert_eq!(snap["http.route.GET:/a.errors"], 1);
    }
}
