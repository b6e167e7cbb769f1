use weft_wire::{BodyError, ErrorBody, FrameError};

/// Errors from setting up transports.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bad endpoint {0:?}: expected tcp://HOST:PORT, udp://HOST:PORT, unix://PATH, tls://HOST:PORT or quic://HOST:PORT")]
    BadEndpoint(String),
    #[error("bad allow-list entry {0:?}: expected a CIDR, an address, uid:N, self or *")]
    BadAllow(String),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot start the connection threads: {0}")]
    Threads(std::io::Error),
}

/// Errors in TLS settings: a file that cannot be used, or a combination
/// that makes no sense. Always the local configuration's fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {reason}")]
    File { path: std::path::PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Errors a client call can end with. `Remote` is the server's typed answer;
/// the rest happened on this side or on the way.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("protocol version mismatch: this client speaks {client}, the server {server}")]
    VersionMismatch { client: u8, server: String },
    #[error("handshake refused by server: {0}")]
    Handshake(ErrorBody),
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("connection lost before the answer arrived")]
    ConnectionLost,
    #[error("client is closed")]
    Closed,
    #[error("server error: {0}")]
    Remote(ErrorBody),
    #[error("bad frame from server: {0}")]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("request too large for a datagram: {0} bytes")]
    DatagramTooLarge(usize),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ClientError {
    /// The server's error code, when the server answered with an error.
    pub fn code(&self) -> Option<weft_wire::ErrorCode> {
        match self {
            ClientError::Remote(e) | ClientError::Handshake(e) => Some(e.code),
            _ => None,
        }
    }
}
