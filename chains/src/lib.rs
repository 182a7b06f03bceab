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

pub use error::{Error, Result};

/// The chains Coffer follows; defined in `chains-core`, which the key crate
/// shares without this crate's network clients.
pub use chains_core::{Chain, UnknownChain};

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
    fn an_unknown_chain_name_is_a_config_error() {
        let err = Error::from("dogecoin".parse::<Chain>().expect_err("unknown"));
        assert_eq!(err.kind(), "config");
        assert_eq!(
            err.to_string(),
            "unknown chain `dogecoin` (expected bitcoin, ethereum or solana)"
        );
    }
}
