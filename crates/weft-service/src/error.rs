use weft_wire::{ErrorBody, ErrorCode};

/// What a handler (or the framework around it) can fail with. Each variant
/// maps to one wire error code, so clients can branch on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// The request decoded but its values are unacceptable.
    #[error("validation failed: {message}")]
    Validation { message: String, details: Option<serde_json::Value> },
    /// Try again later (limits, paused endpoints).
    #[error("busy: {0}")]
    Busy(String),
    /// The handler failed.
    #[error("handler failed: {message}")]
    Handler { message: String, details: Option<serde_json::Value> },
    /// A handler-chosen code, for services with richer error vocabularies.
    #[error("{0}")]
    Wire(ErrorBody),
    /// Registering a route key twice.
    #[error("route {0:?} is already registered")]
    DuplicateRoute(String),
    #[error("route key {0:?} is invalid: 1 to 255 bytes")]
    BadRoute(String),
}

impl ServiceError {
    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation { message: message.into(), details: None }
    }
    pub fn handler(message: impl Into<String>) -> Self {
        Self::Handler { message: message.into(), details: None }
    }
    pub fn busy(message: impl Into<String>) -> Self {
        Self::Busy(message.into())
    }
    /// Any error type a handler uses internally becomes a handler failure.
    pub fn from_err(e: impl std::fmt::Display) -> Self {
        Self::handler(e.to_string())
    }

    pub fn to_error_body(&self) -> ErrorBody {
        match self {
            Self::Validation { message, details } => ErrorBody { code: ErrorCode::Validation, message: message.clone(), details: details.clone() },
            Self::Busy(m) => ErrorBody::new(ErrorCode::Busy, m.clone()),
            Self::Handler { message, details } => ErrorBody { code: ErrorCode::Handler, message: message.clone(), details: details.clone() },
            Self::Wire(b) => b.clone(),
            Self::DuplicateRoute(_) | Self::BadRoute(_) => ErrorBody::new(ErrorCode::Internal, self.to_string()),
        }
    }
}

impl From<ErrorBody> for ServiceError {
    fn from(b: ErrorBody) -> Self {
        Self::Wire(b)
    }
}
