//! The vocabulary that `chains` (node clients) and `signer` (keys) share:
//! the chains Coffer follows. It lives apart from `chains` so the key crate
//! depends on nothing that talks to a network; it must never gain a
//! dependency that does (`scripts/test` checks `cargo tree -p signer`).
//! No feature flags.

use std::fmt;
use std::str::FromStr;

/// A chain Coffer follows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Chain {
    Bitcoin,
    Ethereum,
    Solana,
}

impl Chain {
    pub const ALL: [Chain; 3] = [Chain::Bitcoin, Chain::Ethereum, Chain::Solana];

    /// The stable lowercase name used in config keys, metric labels and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Chain::Bitcoin => "bitcoin",
            Chain::Ethereum => "ethereum",
            Chain::Solana => "solana",
        }
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of [`Chain::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown chain `{0}` (expected bitcoin, ethereum or solana)")]
pub struct UnknownChain(pub String);

impl FromStr for Chain {
    type Err = UnknownChain;

    fn from_str(s: &str) -> Result<Self, UnknownChain> {
        Chain::ALL
            .into_iter()
            .find(|chain| chain.as_str() == s)
            .ok_or_else(|| UnknownChain(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_round_trip() {
        for chain in Chain::ALL {
            assert_eq!(chain.as_str().parse::<Chain>(), Ok(chain));
        }
        assert_eq!(
            "dogecoin".parse::<Chain>(),
            Err(UnknownChain("dogecoin".into()))
        );
    }
}
