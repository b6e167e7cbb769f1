//! The crate's one error type. Each variant is a condition the API layer maps
//! to one status code (docs/query.md, "Tables: storage", lists the mapping).

use std::path::PathBuf;

/// Every failure of a table operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No table of that name (gRPC NOT_FOUND).
    #[error("table {0:?} not found")]
    NotFound(String),
    /// A table of that name exists already (ALREADY_EXISTS).
    #[error("table {0:?} already exists")]
    AlreadyExists(String),
    /// The request is malformed: bad table name, inverted range, a key
    /// written twice in one transaction, ... (INVALID_ARGUMENT).
    #[error("invalid argument: {what}")]
    InvalidArgument { what: String },
    /// The revision asked for was dropped by a compaction (OUT_OF_RANGE,
    /// as etcd's ErrCompacted).
    #[error("revision {requested} is compacted (compact revision {compact_revision})")]
    Compacted { compact_revision: u64, requested: u64 },
    /// The revision asked for is after the table's current revision
    /// (OUT_OF_RANGE, as etcd's ErrFutureRev).
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision { requested: u64, current: u64 },
    /// A key, value, transaction, range limit or table is over its limit
    /// (INVALID_ARGUMENT for request sizes, RESOURCE_EXHAUSTED for `table bytes`).
    #[error("{what} too large (limit {limit})")]
    TooLarge { what: String, limit: u64 },
    /// A count limit was reached: tables, watchers per table (RESOURCE_EXHAUSTED).
    #[error("too many {what} (limit {limit})")]
    TooMany { what: String, limit: u64 },
    /// The watcher did not keep up: its buffer of `buffer` events filled and
    /// it was cancelled instead of growing (RESOURCE_EXHAUSTED; the client
    /// re-watches from the last revision it saw + 1).
    #[error("watcher cancelled: too slow, its buffer of {buffer} events was full")]
    SlowWatcher { buffer: usize },
    /// The value is not a JSON document (INVALID_ARGUMENT or FAILED_PRECONDITION).
    #[error("value of key {key:?} is not JSON: {detail}")]
    NotJson { key: String, detail: String },
    /// The table was dropped (or the registry closed) while in use (NOT_FOUND).
    #[error("table {0:?} was dropped")]
    Dropped(String),
    /// A write to the table's log failed earlier; the in-memory state may be
    /// ahead of the disk, so the table refuses writes until reopened (INTERNAL).
    #[error("table {table:?} refuses writes after a storage failure: {detail}")]
    Poisoned { table: String, detail: String },
    /// A stored file does not decode: bad CRC in the middle, bad record body,
    /// bad snapshot (DATA_LOSS / INTERNAL). A torn *last* record is not this:
    /// it is cut off on open.
    #[error("corrupt {path}: at byte {offset}: {detail}")]
    Corrupt { path: PathBuf, offset: u64, detail: String },
    /// An IO operation failed (INTERNAL / UNAVAILABLE).
    #[error("storage: {op} {path}: {source}")]
    Storage {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidArgument { what: what.into() }
    }

    pub(crate) fn too_large(what: impl Into<String>, limit: u64) -> Self {
        Error::TooLarge { what: what.into(), limit }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Storage { op, path: path.into(), source }
    }

    /// A short stable name of the variant, for `details.kind` on the wire and
    /// for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "already_exists",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::Compacted { .. } => "compacted",
            Error::FutureRevision { .. } => "future_revision",
            Error::TooLarge { .. } => "too_large",
            Error::TooMany { .. } => "too_many",
            Error::SlowWatcher { .. } => "slow_watcher",
            Error::NotJson { .. } => "not_json",
            Error::Dropped(_) => "dropped",
            Error::Poisoned { .. } => "poisoned",
            Error::Corrupt { .. } => "corrupt",
            Error::Storage { .. } => "storage",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
