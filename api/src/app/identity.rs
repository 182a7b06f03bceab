//! Is the node on the configured network? Asked at each watcher start; a
//! node on another network halts its chain.

use std::borrow::Borrow;
use std::fmt::{self, Display};

use crate::config::{
    BitcoinNetwork, ETHEREUM_MAINNET_CHAIN_ID, Network, SOLANA_MAINNET_GENESIS_HASH,
};

/// Bitcoin Core's and btcd's `getblockchaininfo` names for each network.
fn bitcoin_chain_names(network: BitcoinNetwork) -> &'static [&'static str] {
    match network {
        BitcoinNetwork::Bitcoin => &["main", "mainnet"],
        BitcoinNetwork::Testnet => &["test", "testnet3", "testnet4"],
        BitcoinNetwork::Signet => &["signet"],
        BitcoinNetwork::Regtest => &["regtest"],
    }
}

/// The node's `getblockchaininfo.chain` against `chains.bitcoin.network`.
pub fn check_bitcoin_network(expected: BitcoinNetwork, reported: &str) -> Result<(), String> {
    if bitcoin_chain_names(expected).contains(&reported) {
        return Ok(());
    }
    let expected = format!("{expected:?}").to_lowercase();
    Err(format!(
        "config key `chains.bitcoin.network`: the node at chains.bitcoin.rpc_url is on `{reported}`, \
         not `{expected}`; point chains.bitcoin.rpc_url at a {expected} node or correct the key"
    ))
}

/// How a chain names its networks with one value that may be configured:
/// Ethereum's chain id, Solana's genesis hash.
#[derive(Debug)]
pub struct Identity<T: ?Sized + 'static> {
    /// The config key, such as `chains.ethereum.chain_id`.
    pub key: &'static str,
    /// The node's URL key, for the message.
    pub rpc_url_key: &'static str,
    /// What the value is called in a message: `chain id`.
    pub what: &'static str,
    pub mainnet: &'static T,
    /// The mainnet's name: `Ethereum mainnet`.
    pub mainnet_name: &'static str,
    /// Says a reported value is mainnet's: `mainnet-beta's`.
    pub is_mainnet: &'static str,
}

/// `eth_chainId` against `chains.ethereum.chain_id`.
pub const ETHEREUM_CHAIN_ID: Identity<u64> = Identity {
    key: "chains.ethereum.chain_id",
    rpc_url_key: "chains.ethereum.rpc_url",
    what: "chain id",
    mainnet: &ETHEREUM_MAINNET_CHAIN_ID,
    mainnet_name: "Ethereum mainnet",
    is_mainnet: "Ethereum mainnet",
};

/// `getGenesisHash` against `chains.solana.genesis_hash`.
pub const SOLANA_GENESIS_HASH: Identity<str> = Identity {
    key: "chains.solana.genesis_hash",
    rpc_url_key: "chains.solana.rpc_url",
    what: "genesis hash",
    mainnet: SOLANA_MAINNET_GENESIS_HASH,
    mainnet_name: "mainnet-beta",
    is_mainnet: "mainnet-beta's",
};

impl<T: ?Sized + PartialEq + Display> Identity<T> {
    /// The node's value against the configured one; unset, the network
    /// decides: mainnet wants mainnet's, anything else anything but
    /// mainnet's (each fresh local validator has a genesis of its own).
    pub fn check(
        &self,
        network: Network,
        configured: Option<&T>,
        reported: &T,
    ) -> Result<(), String> {
        let mainnet = self.mainnet;
        let wrong = |why: String| {
            Err(format!(
                "config key `{}`: the node at {} reports {} {reported}, {why}",
                self.key, self.rpc_url_key, self.what
            ))
        };
        match configured {
            Some(value) if value == reported => Ok(()),
            Some(value) => wrong(format!("expected {value}")),
            None if network == Network::Mainnet && reported != mainnet => wrong(format!(
                "but network = \"mainnet\" needs {} ({mainnet})",
                self.mainnet_name
            )),
            None if network != Network::Mainnet && reported == mainnet => wrong(format!(
                "{}, but network = \"{}\"; mainnet needs network = \"mainnet\"",
                self.is_mainnet,
                format!("{network:?}").to_lowercase()
            )),
            None => Ok(()),
        }
    }
}

/// An [`Identity`] as configured: the network and the key's value, if set.
pub struct Expected<T: ?Sized + ToOwned + 'static> {
    pub identity: &'static Identity<T>,
    pub network: Network,
    pub configured: Option<T::Owned>,
}

// By hand: derived, they would ask `str` to be `Clone`.
impl<T: ?Sized + ToOwned<Owned: Clone>> Clone for Expected<T> {
    fn clone(&self) -> Self {
        Self {
            identity: self.identity,
            network: self.network,
            configured: self.configured.clone(),
        }
    }
}

impl<T: ?Sized + ToOwned<Owned: fmt::Debug>> fmt::Debug for Expected<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expected")
            .field("key", &self.identity.key)
            .field("network", &self.network)
            .field("configured", &self.configured)
            .finish()
    }
}

impl<T: ?Sized + ToOwned + PartialEq + Display + 'static> Expected<T> {
    /// [`Identity::check`]; on success the node's identity, for the log.
    pub fn check(&self, reported: &T) -> Result<String, String> {
        let configured = self.configured.as_ref().map(|value| value.borrow());
        self.identity.check(self.network, configured, reported)?;
        Ok(format!("{} {reported}", self.identity.what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitcoin_networks_accept_both_core_and_btcd_names() {
        assert!(check_bitcoin_network(BitcoinNetwork::Regtest, "regtest").is_ok());
        assert!(check_bitcoin_network(BitcoinNetwork::Bitcoin, "main").is_ok());
        assert!(check_bitcoin_network(BitcoinNetwork::Bitcoin, "mainnet").is_ok());
        assert!(check_bitcoin_network(BitcoinNetwork::Testnet, "testnet4").is_ok());
        let err = check_bitcoin_network(BitcoinNetwork::Bitcoin, "regtest").err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("config key `chains.bitcoin.network`")),
            "{err:?}"
        );
        assert!(check_bitcoin_network(BitcoinNetwork::Regtest, "simnet").is_err());
    }

    #[test]
    fn ethereum_chain_id_is_the_configured_one_or_follows_the_network() {
        use Network::{Devnet, Mainnet};
        let check = |network, configured: Option<u64>, reported: u64| {
            ETHEREUM_CHAIN_ID.check(network, configured.as_ref(), &reported)
        };
        assert!(check(Devnet, None, 31_337).is_ok());
        assert!(check(Devnet, Some(31_337), 31_337).is_ok());
        assert!(check(Mainnet, None, 1).is_ok());
        for (network, configured, reported) in [
            (Devnet, Some(5), 31_337),
            (Mainnet, None, 31_337),
            (Devnet, None, 1),
            (Mainnet, Some(1), 11_155_111),
        ] {
            let err = check(network, configured, reported).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.starts_with("config key `chains.ethereum.chain_id`")),
                "{network:?} {configured:?} {reported}: {err:?}"
            );
        }
        assert_eq!(
            check(Mainnet, None, 5).err().as_deref(),
            Some(
                "config key `chains.ethereum.chain_id`: the node at chains.ethereum.rpc_url \
                 reports chain id 5, but network = \"mainnet\" needs Ethereum mainnet (1)"
            )
        );
    }

    #[test]
    fn solana_genesis_is_the_configured_one_or_follows_the_network() {
        use Network::{Devnet, Mainnet, Testnet};
        let check = |network, configured, reported| {
            SOLANA_GENESIS_HASH.check(network, configured, reported)
        };
        let local = "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY";
        assert!(check(Devnet, None, local).is_ok());
        assert!(check(Testnet, Some(local), local).is_ok());
        assert!(check(Mainnet, None, SOLANA_MAINNET_GENESIS_HASH).is_ok());
        for (network, configured, reported) in [
            (Devnet, Some(SOLANA_MAINNET_GENESIS_HASH), local),
            (Mainnet, None, local),
            (Devnet, None, SOLANA_MAINNET_GENESIS_HASH),
        ] {
            let err = check(network, configured, reported).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.starts_with("config key `chains.solana.genesis_hash`")),
                "{network:?} {configured:?} {reported}: {err:?}"
            );
        }
        assert_eq!(
            check(Devnet, None, SOLANA_MAINNET_GENESIS_HASH)
                .err()
                .as_deref(),
            Some(&*format!(
                "config key `chains.solana.genesis_hash`: the node at chains.solana.rpc_url \
                 reports genesis hash {SOLANA_MAINNET_GENESIS_HASH}, mainnet-beta's, but \
                 network = \"devnet\"; mainnet needs network = \"mainnet\""
            ))
        );
    }
}
