/// Errors of the ekosis listener and client. `Status` is the peer's answer;
/// `Connect`, `Io`, `Timeout`, `MaxRetries` happened on the way; `BadResponse`
/// means the peer broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum EkosisError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: std::io::Error },
    #[error("i/o with {target} failed: {source}")]
    Io { target: String, source: std::io::Error },
    #[error("no answer from {target} within {timeout:?}")]
    Timeout { target: String, timeout: std::time::Duration },
    #[error("{target} closed the connection before answering")]
    Closed { target: String },
    #[error("maximum retries ({attempts}) reached; last failure: {last}")]
    MaxRetries { attempts: u32, last: String },
    #[error("bad response from {target}: {reason}")]
    BadResponse { target: String, reason: String },
    #[error("status {status}: {message}")]
    Status { status: u16, message: String, data: serde_json::Value },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Queue(#[from] weft_queue::QueueError),
}

impl EkosisError {
    /// Worth another attempt (ekosis' client retries these; a refused
    /// connection it does not, though a queued sender still waits for it).
    pub fn is_retryable(&self) -> bool {
        matches!(self, EkosisError::Io { .. } | EkosisError::Timeout { .. } | EkosisError::Closed { .. })
    }

    /// The status of a non-zero answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            EkosisError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
