//! The crate's error type. Variants say who is at fault: local
//! configuration, the network, a misbehaving peer, the cluster's answer.

use crate::proto::cephx::CephxError;
use crate::proto::conn::ConnError;
use crate::proto::enc::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Our own configuration is unusable (missing key, bad mon_host, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// Socket-level failure talking to `peer`.
    #[error("i/o with {peer}: {source}")]
    Io { peer: String, source: std::io::Error },
    /// The peer broke the protocol, or the handshake failed.
    #[error("connection to {peer}: {source}")]
    Conn { peer: String, source: ConnError },
    /// The cluster refused our credentials.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// An OSD answered an operation with an error code.
    #[error("{op} on {object}: {} (errno {errno})", errno_name(*errno))]
    Osd { op: &'static str, object: String, errno: i32 },
    /// A monitor command failed.
    #[error("mon command failed: {rs} (errno {errno})")]
    Mon { errno: i32, rs: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("pool {0} does not exist")]
    NoPool(String),
    /// A map or message from the cluster did not decode.
    #[error("bad data from cluster: {0}")]
    Decode(#[from] DecodeError),
    #[error("client is shut down")]
    Closed,
    /// The cluster's CRUSH map cannot place this PG (a rule that asks for
    /// more than the map holds, past CRUSH's work bound).
    #[error(transparent)]
    Placement(#[from] crate::proto::crush::PlacementError),
}

impl Error {
    /// The errno the cluster returned, if this is an OSD/mon error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Osd { errno, .. } | Error::Mon { errno, .. } => Some(*errno),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc_errno::ENOENT)
    }
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc_errno::EEXIST)
    }
}

impl From<CephxError> for Error {
    fn from(e: CephxError) -> Self {
        Error::Auth(e.to_string())
    }
}

/// The Linux errno values Ceph puts on the wire.
pub mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EAGAIN: i32 = 11;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const ERANGE: i32 = 34;
    pub const ENODATA: i32 = 61;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECANCELED: i32 = 125;
    pub const EDQUOT: i32 = 122;
    /// Ceph's cmpext mismatch base (-MAX_ERRNO - offset).
    pub const MAX_ERRNO: i32 = 4095;
}

pub fn errno_name(e: i32) -> &'static str {
    use libc_errno::*;
    match e {
        EPERM => "operation not permitted",
        ENOENT => "no such object",
        EIO => "i/o error",
        EAGAIN => "try again",
        EACCES => "permission denied",
        EBUSY => "busy (locked)",
        EEXIST => "already exists",
        EINVAL => "invalid argument",
        ENOSPC => "no space",
        ERANGE => "out of range",
        ENODATA => "no such attribute",
        EOPNOTSUPP => "not supported",
        ETIMEDOUT => "timed out",
        ECANCELED => "canceled (assertion failed)",
        EDQUOT => "quota exceeded",
        _ => "error",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
