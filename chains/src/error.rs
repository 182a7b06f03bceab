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
    /// The chain moved while a multi-call fetch ran (a block vanished, or
    /// answers came from two branches). Retrying sees one branch.
    #[error("{chain} node answered from two branches: {detail}")]
    Inconsistent { chain: Chain, detail: String },
    /// The node no longer has blocks it was asked for (pruned from its
    /// ledger). Retrying cannot help: another node must serve them.
    #[error("{chain} node no longer has the blocks asked for: {detail}")]
    HistoryUnavailable { chain: Chain, detail: String },
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

    pub(crate) fn inconsistent(chain: Chain, detail: impl Into<String>) -> Self {
        Error::Inconsistent {
            chain,
            detail: detail.into(),
        }
    }

    /// A short label for metrics: `transport`, `malformed`, `inconsistent`,
    /// `history_unavailable`, `config`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Transport { .. } => "transport",
            Error::Malformed { .. } => "malformed",
            Error::Inconsistent { .. } => "inconsistent",
            Error::HistoryUnavailable { .. } => "history_unavailable",
            Error::Config { .. } | Error::UnknownChain(_) => "config",
        }
    }
}
