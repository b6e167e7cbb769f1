use std::path::PathBuf;

use weft_wire::{ErrorBody, ErrorCode};

/// Everything weft-queue can fail with. Storage errors name the file and the
/// operation; caller errors (`Paused`, `Full`, `BadRequest`) say what the
/// caller must change.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue storage {path}: {op} failed: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    /// An earlier write or fsync failed: the store refuses every write from
    /// then on rather than acknowledge something that may not be on disk.
    #[error("queue storage {path} is poisoned by an earlier write failure ({reason}); restart the process")]
    Poisoned { path: PathBuf, reason: String },
    #[error("queue storage {path} is corrupt at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("receiving on {0:?} has been paused")]
    Paused(String),
    #[error("queue {name:?} is full ({items} items, {bytes} bytes); try again later")]
    Full { name: String, items: usize, bytes: u64 },
    #[error("bad request for {route:?}: {reason}")]
    BadRequest { route: String, reason: String },
    #[error("no queue {0:?}")]
    NoQueue(String),
    /// A management setting out of its range.
    #[error("queue {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("route or queue {0:?} is already registered")]
    Duplicate(String),
    #[error("item of {len} bytes is over the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("queue machinery needs a running tokio runtime")]
    NoRuntime,
    #[error("queue {0:?} is stopped")]
    Stopped(String),
    #[error(transparent)]
    Service(#[from] weft_service::ServiceError),
    #[error(transparent)]
    Client(#[from] weft_net::ClientError),
    #[error("{0}")]
    Usage(String),
}

impl QueueError {
    /// The typed error a caller sees on the wire.
    pub fn to_error_body(&self) -> ErrorBody {
        let code = match self {
            QueueError::Paused(_) | QueueError::Full { .. } => ErrorCode::Busy,
            QueueError::BadRequest { .. } => ErrorCode::BadBody,
            QueueError::TooLarge { .. } => ErrorCode::TooLarge,
            QueueError::NoQueue(_) | QueueError::Invalid { .. } => ErrorCode::Validation,
            QueueError::Stopped(_) => ErrorCode::ShuttingDown,
            _ => ErrorCode::Internal,
        };
        ErrorBody::new(code, self.to_string())
    }
}

impl From<QueueError> for weft_service::ServiceError {
    fn from(e: QueueError) -> Self {
        weft_service::ServiceError::Wire(e.to_error_body())
    }
}
