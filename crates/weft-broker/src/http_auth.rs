//! Auth on the HTTP gateway (docs/security.md, "HTTP"): who the caller is
//! (`Authorization: Bearer <token-or-key>`, `Authorization: ApiKey <key>`,
//! the RFC 6750 `access_token` query parameter, or the `weft_token` cookie
//! the gateway sets for a browser), and what each route needs. A route-level
//! layer, so it sees the matched route template; WebSocket routes are
//! checked here, at the upgrade request.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weft_auth::{Action, Authorizer, Denied, DeniedKind, Identity, Resource, ResourceKind};
use weft_wire::{ErrorBody, ErrorCode};

/// The cookie a browser gets after authenticating with `access_token`, so
/// the dashboard's assets, API calls and WebSocket feed carry it.
pub const COOKIE: &str = "weft_token";

/// What the gateway's auth layer needs.
#[derive(Debug, Clone)]
pub struct HttpAuth {
    pub authz: Arc<Authorizer>,
    /// `auth.metrics_open`: `/metrics` without credentials.
    pub metrics_open: bool,
    /// Bodies read to find a topic name (`POST /v1/topics`) stop here.
    pub max_body_bytes: usize,
}

/// What a route needs.
enum Need {
    Open,
    Authenticated,
    One(Action, ResourceKind, String),
    Any(Action, ResourceKind),
    /// `POST /v1/topics`: admin on the topic named in the JSON body.
    TopicFromBody,
}

/// The segment of `path` under `{name}` in `template`.
fn param(template: &str, path: &str, name: &str) -> Option<String> {
    let want = format!("{{{name}}}");
    template.split('/').zip(path.split('/')).find(|(t, _)| *t == want).map(|(_, p)| percent_decode(p))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b.get(i), b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (Some(b'%'), Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (Some(c), _, _) => {
                out.push(*c);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn need(method: &Method, template: Option<&str>, path: &str, metrics_open: bool) -> Need {
    use Action::*;
    use ResourceKind::*;
    let Some(t) = template else { return Need::Authenticated };
    let read = method == Method::GET || method == Method::HEAD;
    let topic = || param(t, path, "topic").unwrap_or_default();
    match t {
        "/healthz" | "/readyz" => Need::Open,
        "/metrics" if metrics_open => Need::Open,
        "/metrics" => Need::One(Read, Endpoint, "metrics".into()),
        "/openapi.json" => Need::Authenticated,
        "/v1/topics" if read => Need::Any(Read, Topic),
        "/v1/topics" => Need::TopicFromBody,
        "/v1/topics/{topic}" if read => Need::One(Read, Topic, topic()),
        "/v1/topics/{topic}" => Need::One(Admin, Topic, topic()),
        "/v1/topics/{topic}/records" => Need::One(Write, Topic, topic()),
        t if t.starts_with("/v1/topics/{topic}/") => Need::One(Read, Topic, topic()),
        t if t.starts_with("/v1/groups") => Need::Any(Read, Topic),
        // The dashboard: reading it is `read` on endpoint `ui`; its queue
        // operations are `write` on the queue.
        "/ui/api/queues/{kind}/{name}/{op}" => Need::One(Write, Queue, param(t, path, "name").unwrap_or_default()),
        "/ui/api/queues/{kind}/{name}/errors" => Need::One(Read, Queue, param(t, path, "name").unwrap_or_default()),
        // The dashboard's AQL console: any identity at the gateway, each
        // statement checked for it in the query layer (as gRPC's).
        "/ui/api/query" => Need::Authenticated,
        // Watching a table from the dashboard reads the table's data.
        "/ui/api/tables/{table}/watch" => Need::One(Read, Table, param(t, path, "table").unwrap_or_default()),
        t if t == "/ui" || t.starts_with("/ui/") => Need::One(if read { Read } else { Write }, Endpoint, "ui".into()),
        _ => Need::Authenticated,
    }
}

/// The credential of a request: header, then `access_token`, then cookie.
/// The bool is true when it came from the query (a cookie is then set).
fn credential(req: &Request) -> (Option<String>, bool) {
    if let Some(h) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return (Some(h.to_owned()), false);
    }
    if let Some(q) = req.uri().query() {
        for kv in q.split('&') {
            if let Some(v) = kv.strip_prefix("access_token=") {
                return (Some(format!("Bearer {}", percent_decode(v))), true);
            }
        }
    }
    for c in req.headers().get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()) {
        for kv in c.split(';') {
            if let Some(v) = kv.trim().strip_prefix("weft_token=") {
                return (Some(format!("Bearer {v}")), false);
            }
        }
    }
    (None, false)
}

/// The 401/403 answer in the gateway's error shape.
pub fn denied_response(d: &Denied, presented: bool) -> Response {
    let (status, code) = match d.kind {
        DeniedKind::Unauthenticated => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
        DeniedKind::Forbidden => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
    };
    let body = ErrorBody::new(code, d.message.clone()).with_details(serde_json::json!({"kind": d.kind.as_str(), "status": status.as_u16()}));
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6750 §3: say which scheme, and whether a token was tried.
        let v = if presented { r#"Bearer realm="weft", error="invalid_token""# } else { r#"Bearer realm="weft""# };
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
    }
    resp
}

/// The layer: authenticate, authorise the route, put the [`Identity`] in
/// the request's extensions for handlers.
pub async fn auth(State(cfg): State<Arc<HttpAuth>>, mut req: Request, next: Next) -> Response {
    let authz = &cfg.authz;
    if !authz.enabled() {
        req.extensions_mut().insert(Identity::anonymous());
        return next.run(req).await;
    }
    let template = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let need = need(req.method(), template.as_deref(), &path, cfg.metrics_open);
    if matches!(need, Need::Open) {
        return next.run(req).await;
    }
    let (cred, from_query) = credential(&req);
    let presented = cred.is_some();
    // HTTPS with a verified client certificate and no token: the user the
    // certificate names (as on the native TLS listener); a token wins.
    let cert = req.extensions().get::<crate::http_tls::ClientCertName>().filter(|_| !presented).map(|n| n.0.clone());
    let who = match cert {
        Some(name) => Ok(authz.authenticate_certificate(&name)),
        None => authz.authenticate_header(cred.as_deref()),
    };
    let who = match who {
        Ok(w) => w,
        Err(d) => {
            authz.record_denial("http", &Identity::nobody(), &peer, &path, &d);
            return denied_response(&d, presented);
        }
    };
    let verdict = match need {
        Need::Open => Ok(()),
        Need::Authenticated => authz.authenticated(&who),
        Need::One(a, k, name) => authz.authorize(&who, a, Resource::new(k, &name)),
        Need::Any(a, k) => authz.authorize_any(&who, a, k),
        Need::TopicFromBody => {
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, cfg.max_body_bytes).await {
                Ok(b) => b,
                Err(_) => {
                    let e = ErrorBody::new(ErrorCode::TooLarge, format!("request body over the limit of {} bytes", cfg.max_body_bytes));
                    return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(e)).into_response();
                }
            };
            let name = weft_auth::routes::body_name(&bytes, true, weft_auth::routes::NameFrom::Field(weft_auth::routes::Field::Name)).unwrap_or("").to_owned();
            req = Request::from_parts(parts, axum::body::Body::from(bytes));
            authz.authorize(&who, Action::Admin, Resource::topic(&name))
        }
    };
    if let Err(d) = verdict {
        tracing::info!(peer = %peer, identity = %who.describe(), path = %path, outcome = d.kind.as_str(), "http request refused");
        authz.record_denial("http", &who, &peer, &path, &d);
        return denied_response(&d, presented);
    }
    let bytes = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    if let Err(l) = authz.check_limits(&who, bytes) {
        let e = ErrorBody::new(ErrorCode::Busy, l.to_string()).with_details(serde_json::json!({"kind": "identity_limit", "status": 429}));
        return (StatusCode::TOO_MANY_REQUESTS, axum::Json(e)).into_response();
    }
    let cookie = from_query.then(|| cred.as_deref().and_then(|c| c.strip_prefix("Bearer ")).map(str::to_owned)).flatten();
    req.extensions_mut().insert(who);
    let mut resp = next.run(req).await;
    if let Some(tok) = cookie {
        // HttpOnly: scripts never see it; SameSite=Strict: other sites'
        // pages cannot make the browser send it (CSRF on the POST routes).
        if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={tok}; Path=/; HttpOnly; SameSite=Strict")) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn params_and_needs() {
        assert_eq!(param("/v1/topics/{topic}/records", "/v1/topics/or%2Fders/records", "topic").as_deref(), Some("or/ders"));
        assert!(matches!(need(&Method::GET, Some("/healthz"), "/healthz", false), Need::Open));
        assert!(matches!(need(&Method::GET, Some("/metrics"), "/metrics", true), Need::Open));
        assert!(matches!(need(&Method::GET, Some("/metrics"), "/metrics", false), Need::One(Action::Read, ResourceKind::Endpoint, _)));
        assert!(matches!(need(&Method::POST, Some("/v1/topics/{topic}/records"), "/v1/topics/t/records", true), Need::One(Action::Write, ResourceKind::Topic, ref n) if n == "t"));
        assert!(matches!(need(&Method::GET, None, "/nope", true), Need::Authenticated));
        assert!(matches!(need(&Method::GET, Some("/ui/ws"), "/ui/ws", true), Need::One(Action::Read, ResourceKind::Endpoint, ref n) if n == "ui"));
        assert!(matches!(need(&Method::POST, Some("/ui/api/query"), "/ui/api/query", true), Need::Authenticated));
        assert!(matches!(need(&Method::GET, Some("/ui/api/tables/{table}/watch"), "/ui/api/tables/dev%2Ex/watch", true), Need::One(Action::Read, ResourceKind::Table, ref n) if n == "dev.x"));
    }
}
