use std::fmt;

/// Why a credential string could not be parsed. Typed so the fuzz target and
/// callers can tell a malformed string from a refused one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("credential is empty")]
    Empty,
    #[error("credential of {len} bytes is over the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("credential does not start with a known prefix (wt. for tokens, wk. for API keys)")]
    UnknownPrefix,
    #[error("credential is not PREFIX.ID.SECRET")]
    Shape,
    #[error("credential id must be {expected} lowercase hex characters")]
    BadId { expected: usize },
    #[error("credential secret must be {expected} base64url characters (32 bytes, no padding)")]
    BadSecret { expected: usize },
    #[error("authorization header scheme must be Bearer or ApiKey")]
    BadScheme,
}

/// Errors of the auth crate: bad input, storage, or a refused credential.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("auth state {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("auth state {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Denied(#[from] Denied),
}

/// Whether a refusal is about who the caller is or what they asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeniedKind {
    /// No credential, a wrong one, an expired or revoked one: HTTP 401,
    /// wire `unauthenticated`.
    Unauthenticated,
    /// Known caller without the permission: HTTP 403, wire `forbidden`.
    Forbidden,
}

impl DeniedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeniedKind::Unauthenticated => "unauthenticated",
            DeniedKind::Forbidden => "forbidden",
        }
    }
}

/// A refusal, with a message for the caller (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Denied {
    pub kind: DeniedKind,
    pub message: String,
}

impl Denied {
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self { kind: DeniedKind::Unauthenticated, message: message.into() }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { kind: DeniedKind::Forbidden, message: message.into() }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}
