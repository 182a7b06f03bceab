//! Talking to blockchain nodes. Each chain module wraps the node's RPC client
//! with timeouts and turns chain-native responses into the normalized types
//! in this crate; malformed responses become [`Error::Malformed`], never panics.
//! This crate never touches SQL, protobuf or key material.
//!
//! Feature `devnet`: helpers that spawn real local nodes (btcd regtest, anvil,
//! solana-test-validator) on free ports for tests, and kill them on drop.

pub mod bitcoin;
mod error;
pub mod ethereum;
pub mod metrics;
pub mod solana;
#[cfg(test)]
mod test_support;

#[cfg(feature = "devnet")]
pub mod devnet;

use std::fmt;
use std::str::FromStr;

pub use error::{Error, Result};

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

impl FromStr for Chain {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Chain::ALL
            .into_iter()
            .find(|chain| chain.as_str() == s)
            .ok_or_else(|| Error::UnknownChain(s.to_owned()))
    }
}

/// The tip a node reports: block height (Bitcoin, Ethereum) or slot (Solana).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub height: u64,
    /// Block hash at `height`, where the node hands it out in the same call
    /// sequence. Solana slots are followed without one.
    pub hash: Option<String>,
}

/// A client that can report the chain's current head.
pub trait HeadSource: Send + Sync {
    fn chain(&self) -> Chain;

    fn head(&self) -> impl Future<Output = Result<ChainHead>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_round_trip() {
        for chain in Chain::ALL {
            assert_eq!(chain.as_str().parse::<Chain>().ok(), Some(chain));
        }
        let err = "dogecoin".parse::<Chain>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown chain `dogecoin` (expected bitcoin, ethereum or solana)")
        );
    }
}
