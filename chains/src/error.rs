use crate::Chain;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The most of a node's reply an error message quotes, in bytes.
pub(crate) const EXCERPT_BYTES: usize = 200;

/// The start of a node's reply, for an error message: at most
/// [`EXCERPT_BYTES`] bytes, cut at a character boundary. Replies are
/// untrusted text, and slicing a `str` inside a multi-byte character panics.
pub(crate) fn excerpt(text: &str) -> &str {
    &text[..text.floor_char_boundary(EXCERPT_BYTES)]
}

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

impl From<crate::UnknownChain> for Error {
    fn from(err: crate::UnknownChain) -> Self {
        Error::UnknownChain(err.0)
    }
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
            message: redact_urls(&err.to_string()),
        }
    }

    pub(crate) fn malformed(chain: Chain, method: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            chain,
            method,
            detail: redact_urls(&detail.into()),
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

/// `text` with every URL cut to `scheme://[REDACTED]`. HTTP client errors
/// quote the URL they failed on, and node URLs often carry a provider's API
/// key (in the path, the query or the user info), so no error this crate
/// makes may repeat one.
pub(crate) fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at);
        let scheme_len = before
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            .count();
        out.push_str(before);
        let after = &after[3..];
        // Everything up to the next delimiter belongs to the URL; `[` and
        // `]` do not end it (IPv6 hosts).
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')'))
            .unwrap_or(after.len());
        if scheme_len == 0 || end == 0 {
            out.push_str("://");
        } else {
            out.push_str("://[REDACTED]");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn urls_in_error_text_are_redacted() {
        let cases = [
            (
                "error sending request for url (https://mainnet.infura.io/v3/0123abcd)",
                "error sending request for url (https://[REDACTED])",
            ),
            (
                "invalid URL 'http://user:hunter2@[::1]:8332/wallet?key=s3cret': bad",
                "invalid URL 'http://[REDACTED]': bad",
            ),
            ("a://b and c://d", "a://[REDACTED] and c://[REDACTED]"),
            ("no url here", "no url here"),
            ("odd :// and x://", "odd :// and x://"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_urls(input), expected, "{input}");
        }
        let err = Error::transport(Chain::Ethereum, "eth_chainId", "for url (http://h/KEY)");
        assert!(!err.to_string().contains("KEY"), "{err}");
        let err = Error::malformed(Chain::Solana, "getBlock", "at http://h/KEY");
        assert!(!format!("{err:?}").contains("KEY"), "{err:?}");
    }
}
