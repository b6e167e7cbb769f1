//! The gRPC hook (feature `tonic`): an interceptor that authenticates the
//! `authorization` metadata (`Bearer <token>` or `ApiKey <key>`) and puts
//! the [`Identity`] in the request's extensions; handlers then call
//! [`Authorizer::authorize`] with the table or topic the query names and
//! map a refusal with [`status`].
//!
//! ```ignore
//! let authz: Arc<Authorizer> = ...;
//! let svc = QueryServer::with_interceptor(MyQuery { authz: authz.clone() }, weft_auth::grpc::interceptor(authz));
//! // in a handler:
//! let who = weft_auth::grpc::identity(&req)?;
//! self.authz.authorize(&who, Action::Read, Resource::table(&q.table)).map_err(weft_auth::grpc::status)?;
//! ```

use std::sync::Arc;

use crate::{Authorizer, Denied, DeniedKind, Identity};

/// A tonic interceptor: `Unauthenticated` when auth is on and the
/// credential is missing or wrong; otherwise the identity is attached.
/// With auth off every request gets the anonymous identity.
pub fn interceptor(authz: Arc<Authorizer>) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut req: tonic::Request<()>| {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let who = authz.authenticate_header(header).map_err(status)?;
        req.extensions_mut().insert(who);
        Ok(req)
    }
}

/// The identity the interceptor attached (`Unauthenticated` if none: the
/// service was built without the interceptor).
pub fn identity<T>(req: &tonic::Request<T>) -> Result<Identity, tonic::Status> {
    req.extensions().get::<Identity>().cloned().ok_or_else(|| tonic::Status::unauthenticated("no identity: the auth interceptor is not installed"))
}

/// A refusal as a gRPC status: UNAUTHENTICATED or PERMISSION_DENIED.
pub fn status(d: Denied) -> tonic::Status {
    match d.kind {
        DeniedKind::Unauthenticated => tonic::Status::unauthenticated(d.message),
        DeniedKind::Forbidden => tonic::Status::permission_denied(d.message),
    }
}
