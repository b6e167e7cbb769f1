//! The auth check of the native protocol (docs/security.md): who a
//! connection is (from its hello token or its certificate), and one
//! `authorize` per request at the dispatch point.

use std::sync::Arc;

use serde::Deserialize;
use weft_auth::{Authorizer, DeniedKind, Identity};
use weft_wire::{ErrorBody, ErrorCode, Frame};

use crate::server::PeerInfo;

/// The auth field of a hello (docs/protocol.md, "Authentication"); a
/// separate struct so `Hello` keeps its shape for clients without it.
#[derive(Deserialize)]
struct HelloAuth {
    #[serde(default)]
    token: Option<String>,
}

/// The wire error for a refusal.
pub fn denied_body(d: &weft_auth::Denied) -> ErrorBody {
    let code = match d.kind {
        DeniedKind::Unauthenticated => ErrorCode::Unauthenticated,
        DeniedKind::Forbidden => ErrorCode::Forbidden,
    };
    ErrorBody::new(code, d.message.clone())
}

/// The identity a hello establishes: its `token` if present (a wrong one
/// refuses the hello), else the verified certificate's name when
/// `cert_identity`, else nobody (every request then answers
/// `unauthenticated`).
pub(crate) fn hello_identity(authz: &Authorizer, hello: &Frame, peer: &PeerInfo, cert_identity: bool) -> Result<Identity, ErrorBody> {
    // A cluster node's connection is the node its certificate names, whatever its hello says.
    if let Some(node) = peer.identity.as_ref().filter(|i| i.via == weft_auth::Via::Node) {
        return Ok(node.clone());
    }
    let token = hello.decode_body::<HelloAuth>().ok().and_then(|h| h.token).filter(|t| !t.is_empty());
    match token {
        Some(t) => authz.authenticate(&t).map_err(|d| {
            tracing::warn!(peer = %peer.addr, error = %d, "hello refused: bad credential");
            audit(authz, peer, "hello", &d);
            denied_body(&d)
        }),
        None => match (cert_identity, &peer.client_id) {
            (true, Some(name)) => Ok(authz.authenticate_certificate(name)),
            _ => Ok(authz.unauthenticated()),
        },
    }
}

/// The check of one request or event: `None` when allowed. Allocation-free
/// when allowed (the resource name is borrowed from the body).
pub(crate) fn check(authz: &Option<Arc<Authorizer>>, peer: &PeerInfo, frame: &Frame) -> Option<ErrorBody> {
    let authz = authz.as_deref()?;
    if !authz.enabled() {
        return None;
    }
    let nobody;
    let who = match &peer.identity {
        Some(i) => i,
        None => {
            nobody = Identity::nobody();
            &nobody
        }
    };
    // The body proper follows a trace-context extension, if any.
    let mut body: &[u8] = &frame.body;
    if frame.flags.has_trace_context() {
        let t = body.first().copied().unwrap_or(0) as usize;
        body = body.get(1 + t..).unwrap_or_default();
    }
    match authz.authorize_native(who, &frame.route, body, frame.flags.is_json()) {
        Ok(()) => match authz.check_limits(who, frame.wire_len()) {
            Ok(()) => None,
            Err(l) => {
                tracing::debug!(peer = %peer.addr, identity = %who.describe(), route = %frame.route, "request over the identity's limit");
                Some(ErrorBody::new(ErrorCode::Busy, l.to_string()).with_details(serde_json::json!({"kind": "identity_limit"})))
            }
        },
        Err(d) => {
            tracing::info!(peer = %peer.addr, identity = %who.describe(), route = %frame.route, outcome = d.kind.as_str(), "request refused");
            audit(authz, peer, &frame.route, &d);
            Some(denied_body(&d))
        }
    }
}

fn audit(authz: &Authorizer, peer: &PeerInfo, route: &str, d: &weft_auth::Denied) {
    let who = peer.identity.clone().unwrap_or_else(Identity::nobody);
    authz.record_denial("native", &who, &peer.addr, route, d);
}

/// An allow-list refusal in the audit log (surface `listener`, outcome
/// `denied`), when the server has an authorizer.
pub(crate) fn audit_allow_list(authz: &Option<Arc<Authorizer>>, transport: &str, who: &str) {
    if let Some(a) = authz {
        a.record_event(weft_auth::AuditEvent {
            time_ms: weft_auth::now_ms(),
            surface: "listener".into(),
            identity: String::new(),
            peer: who.to_owned(),
            resource: transport.to_owned(),
            action: "connect".into(),
            outcome: "denied".into(),
            message: "not on the listener's allow-list".into(),
            ..Default::default()
        });
    }
}

/// An open connection closed because a reloaded allow-list no longer
/// admits it (at most one line per connection).
pub(crate) fn audit_allow_list_closed(authz: &Option<Arc<Authorizer>>, peer: &crate::server::PeerInfo) {
    if let Some(a) = authz {
        a.record_event(weft_auth::AuditEvent {
            time_ms: weft_auth::now_ms(),
            surface: "listener".into(),
            identity: peer.identity.as_ref().map(|i| i.describe()).unwrap_or_default(),
            peer: peer.addr.clone(),
            resource: peer.transport.as_str().to_owned(),
            action: "request".into(),
            outcome: "denied".into(),
            message: "no longer on the listener's allow-list (reloaded); connection closed".into(),
            ..Default::default()
        });
    }
}

/// Audit lines per second at most for allow-list refusals on the datagram
/// transports (UDP datagrams, QUIC connection attempts): their sources can
/// be spoofed and each costs the sender one packet, so the audit log must
/// not become what a flood fills (the counters still count every refusal;
/// the lines left out are counted in `net.refused_unaudited`).
pub const DATAGRAM_AUDIT_PER_S: u64 = 10;

/// Refusals of datagram transports not written to the audit log (over
/// [`DATAGRAM_AUDIT_PER_S`]).
pub(crate) static REFUSED_UNAUDITED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`audit_allow_list`] for UDP and QUIC, at most [`DATAGRAM_AUDIT_PER_S`]
/// lines a second.
pub(crate) fn audit_allow_list_sampled(authz: &Option<Arc<Authorizer>>, transport: &str, who: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SECOND: AtomicU64 = AtomicU64::new(0);
    static IN_SECOND: AtomicU64 = AtomicU64::new(0);
    if authz.is_none() {
        return;
    }
    let now = weft_auth::now_ms() / 1000;
    if SECOND.swap(now, Ordering::Relaxed) != now {
        IN_SECOND.store(0, Ordering::Relaxed);
    }
    if IN_SECOND.fetch_add(1, Ordering::Relaxed) >= DATAGRAM_AUDIT_PER_S {
        REFUSED_UNAUDITED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    audit_allow_list(authz, transport, who);
}
