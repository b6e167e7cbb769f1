//! The crate's one error type, and the two questions the client asks of an
//! error: does it say the node is unwell (the breaker counts it), and may
//! an idempotent call be tried again after it.

use tonic::Code;

/// The ErrorInfo reason a node sends with UNAVAILABLE when it does not lead
/// and did not run the request (the cluster's `not_leader`).
pub const NOT_LEADER: &str = "not_leader";

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The node answered with a gRPC status (or tonic made one of a
    /// transport failure: UNAVAILABLE).
    #[error("{node}: {code:?}: {message}")]
    Status {
        node: String,
        code: Code,
        message: String,
        /// google.rpc.ErrorInfo reason, when the server sent one.
        reason: Option<String>,
        /// The leader's gRPC address from a `not_leader` answer.
        leader: Option<String>,
    },
    /// The node's circuit breaker refused the call without sending it.
    #[error("{node}: circuit breaker open")]
    BreakerOpen { node: String },
    /// Every node's breaker is open (or no node is configured).
    #[error("no node available: {nodes} node(s), all refused by their breakers")]
    NoNode { nodes: usize },
    /// The call's deadline passed on the client side.
    #[error("deadline of {timeout_ms} ms exceeded")]
    Deadline { timeout_ms: u64 },
    /// A bad client configuration or address.
    #[error("config: {0}")]
    Config(String),
}

impl Error {
    /// The gRPC code this error reads as.
    pub fn code(&self) -> Code {
        match self {
            Error::Status { code, .. } => *code,
            Error::BreakerOpen { .. } | Error::NoNode { .. } => Code::Unavailable,
            Error::Deadline { .. } => Code::DeadlineExceeded,
            Error::Config(_) => Code::InvalidArgument,
        }
    }

    /// The leader's address of a `not_leader` answer.
    pub fn leader(&self) -> Option<&str> {
        match self {
            Error::Status { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }

    pub fn is_not_leader(&self) -> bool {
        matches!(self, Error::Status { reason: Some(r), .. } if r == NOT_LEADER)
    }

    /// Whether the answer says the node (or the way to it) is unwell, which
    /// the breaker counts. An application answer (NOT_FOUND, a failed
    /// compare, a bad query, a limit) is a healthy node doing its job, and a
    /// `not_leader` is a healthy follower.
    pub fn is_node_failure(&self) -> bool {
        if self.is_not_leader() {
            return false;
        }
        match self {
            Error::Status { code, .. } => matches!(code, Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Internal),
            Error::Deadline { .. } => true,
            Error::BreakerOpen { .. } | Error::NoNode { .. } | Error::Config(_) => false,
        }
    }

    /// Whether an idempotent call may be sent again (to any node) after this
    /// error. Never consulted for other calls.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { code, .. } => matches!(code, Code::Unavailable | Code::Unknown | Code::DeadlineExceeded),
            Error::BreakerOpen { .. } | Error::NoNode { .. } => true,
            // The whole budget is gone.
            Error::Deadline { .. } => false,
            Error::Config(_) => false,
        }
    }

    /// An error from a tonic status, with the google.rpc ErrorInfo reason
    /// and a `not_leader` leader address (metadata `addr`, `grpc_addr` or
    /// `leader_addr`) read from its details.
    pub fn from_status(node: &str, s: &tonic::Status) -> Error {
        use tonic_types::StatusExt;
        let info = s.get_details_error_info();
        let reason = info.as_ref().map(|i| i.reason.clone());
        let leader = info.as_ref().filter(|i| i.reason == NOT_LEADER).and_then(|i| {
            ["grpc_addr", "addr", "leader_addr"].iter().find_map(|k| i.metadata.get(*k).filter(|a| !a.is_empty()).cloned())
        });
        Error::Status { node: node.to_owned(), code: s.code(), message: s.message().to_owned(), reason, leader }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
