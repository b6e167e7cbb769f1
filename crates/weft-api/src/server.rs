//! The gRPC listener: Query, health and reflection on one port, plain or
//! TLS/mTLS, until a shutdown future completes.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::exec::Executor;
use crate::service::{QueryService, health_service, reflection_services};

/// TLS for the gRPC port, from the node's `tls.*` certificate settings.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client CA for mTLS (None: no client certificates asked for).
    pub client_ca: Option<PathBuf>,
    /// With a client CA: let clients without a certificate in.
    pub client_auth_optional: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding gRPC on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("gRPC TLS: reading {path}: {source}")]
    TlsFile { path: PathBuf, source: std::io::Error },
    #[error("gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

impl ServeError {
    /// The port is taken (the caller may treat the default port as best-effort).
    pub fn addr_in_use(&self) -> bool {
        matches!(self, ServeError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

fn read(p: &PathBuf) -> Result<Vec<u8>, ServeError> {
    std::fs::read(p).map_err(|source| ServeError::TlsFile { path: p.clone(), source })
}

/// Binds `addr` and serves until `shutdown` completes. Returns the bound
/// address and the server task.
pub async fn serve(
    addr: &str,
    exec: Executor,
    tls: Option<GrpcTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    serve_with_auth(addr, exec, tls, None, shutdown).await
}

/// [`serve`] with weft-auth on the Query service (when `authz` is enabled:
/// docs/security.md, "gRPC"). Health and reflection stay open.
pub async fn serve_with_auth(
    addr: &str,
    exec: Executor,
    tls: Option<GrpcTls>,
    authz: Option<std::sync::Arc<weft_auth::Authorizer>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    serve_admitting(addr, exec, tls, authz, None, shutdown).await
}

/// Whether a client may connect (the node's `grpc.allow`): false closes
/// the connection at accept, before TLS or HTTP/2; the function itself
/// logs, counts and audits the refusal.
pub type Admit = std::sync::Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// As [`serve_with_auth`], with `admit` asked about every accepted
/// connection (None: everyone).
pub async fn serve_admitting(
    addr: &str,
    exec: Executor,
    tls: Option<GrpcTls>,
    authz: Option<std::sync::Arc<weft_auth::Authorizer>>,
    admit: Option<Admit>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.to_owned(), source })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind { addr: addr.to_owned(), source })?;
    // One span per call, continuing the caller's trace context metadata.
    let mut builder = Server::builder().trace_fn(crate::grpc_trace::server_span);
    if let Some(t) = &tls {
        let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?));
        if let Some(ca) = &t.client_ca {
            cfg = cfg.client_ca_root(Certificate::from_pem(read(ca)?)).client_auth_optional(t.client_auth_optional);
        }
        builder = builder.tls_config(cfg)?;
    }
    let (v1, v1alpha) = reflection_services()?;
    let router = builder.add_service(health_service().await).add_service(v1).add_service(v1alpha).add_service(match authz {
        Some(a) => QueryService::with_auth(exec, a),
        None => QueryService::new(exec),
    }.into_server());
    // tonic sets TCP_NODELAY only on listeners it binds itself; without it
    // a small answer waits for the peer's delayed ACK (about 40 ms here).
    let incoming = tokio_stream::StreamExt::filter_map(tokio_stream::wrappers::TcpListenerStream::new(listener), move |s| match s {
        Ok(s) => {
            if let (Some(admit), Ok(peer)) = (&admit, s.peer_addr())
                && !admit(peer)
            {
                return None; // dropped: closed unanswered
            }
            Some(s.set_nodelay(true).map(|()| s))
        }
        Err(e) => Some(Err(e)),
    });
    let task = tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown).await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
    tracing::info!(addr = %local, tls = tls.is_some(), "gRPC query API listening");
    Ok((local, task))
}
