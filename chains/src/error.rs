use crate::Chain;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures talking to a node. Transport errors and malformed responses are
/// kept apart so callers can count them separately; both are retryable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{chain} node unreachable or failed on `{method}`: {message}")]
    Transport {
        chain: Chain,
        method: &'static str,
        message: String,
    },
    #[error("{chain} node returned a malformed response to `{method}`: {detail}")]
    Malformed {
        chain: Chain,
        method: &'static str,
        detail: String,
    },
    #[error("invalid {chain} client setting: {detail}")]
    Config { chain: Chain, detail: String },
    #[error("unknown chain `{0}` (expected bitcoin, ethereum or solana)")]
    UnknownChain(String),
}

impl Error {
    pub(crate) fn transport(
        chain: Chain,
        method: &'static str,
        err: impl std::fmt::Display,
    ) -> Self {
        Error::Transport {
            chain,
            method,
            message: err.to_string(),
        }
    }

    pub(crate) fn malformed(chain: Chain, method: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            chain,
            method,
            detail: detail.into(),
        }
    }

    /// A short label for metrics: `transport`, `malformed`, `config`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Transport { .. } => "transport",
            Error::Malformed { .. } => "malformed",
            Error::Config { .. } | Error::UnknownChain(_) => "config",
        }
    }
}
