//! Authentication building blocks: password policy and hashing, email
//! normalization, JWT access tokens and opaque refresh tokens. The gRPC
//! services and the request interceptor use these; nothing here touches the
//! database.

pub mod hashing;
pub mod password;
pub mod tokens;

/// A client's mistake, naming the field it is about (maps to INVALID_ARGUMENT).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
