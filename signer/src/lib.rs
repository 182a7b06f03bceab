//! Key material. This crate loads the custody seed, derives keys and
//! addresses (BIP84 for Bitcoin, BIP44 for Ethereum, SLIP-10 ed25519 for
//! Solana) and, as chains are added, signs transactions. It never touches the
//! network or the database, and never logs or `Debug`-prints key material:
//! every type that holds a secret redacts itself and wipes its memory on drop.
//!
//! No feature flags.

pub mod bitcoin;
pub mod ethereum;
mod seed;
pub mod solana;

use std::path::PathBuf;

pub use ::bitcoin::Network as BitcoinNetwork;
pub use seed::{HdSeed, INSECURE_DEVNET_MNEMONIC, SeedPhrase, SeedSource};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read seed file {path}: {source}")]
    SeedFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seed environment variable `{0}` is not set or not valid UTF-8")]
    SeedEnv(String),
    #[error("seed from {0} is empty")]
    EmptySeed(String),
    /// Says what is wrong with the phrase without repeating any of it.
    #[error("the seed phrase is not a valid BIP39 English mnemonic: {0}")]
    InvalidMnemonic(&'static str),
    #[error("the insecure devnet mnemonic is refused on mainnet")]
    InsecureSeedOnMainnet,
    #[error("key derivation failed: {0}")]
    Derivation(String),
}

/// Derives deposit addresses for every chain from one seed.
pub struct DepositKeys {
    seed: HdSeed,
    bitcoin_network: ::bitcoin::Network,
    bitcoin_account: ::bitcoin::bip32::Xpub,
}

impl std::fmt::Debug for DepositKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepositKeys")
            .field("bitcoin_network", &self.bitcoin_network)
            .finish_non_exhaustive()
    }
}

/// An address and the path of the key behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositAddress {
    pub address: String,
    pub derivation_path: String,
}

impl DepositKeys {
    pub fn new(seed: HdSeed, bitcoin_network: ::bitcoin::Network) -> Result<Self> {
        let bitcoin_account = bitcoin::bip84_account_xpub(&seed, bitcoin_network, 0)?;
        Ok(Self {
            seed,
            bitcoin_network,
            bitcoin_account,
        })
    }

    /// The BIP84 account xpub behind every Bitcoin deposit address: enough
    /// to derive and watch them, never to spend.
    pub fn bitcoin_account_xpub(&self) -> ::bitcoin::bip32::Xpub {
        self.bitcoin_account
    }

    pub fn bitcoin_network(&self) -> ::bitcoin::Network {
        self.bitcoin_network
    }

    /// The deposit address with HD index `index` on `chain`.
    pub fn address(&self, chain: chains_core::Chain, index: u32) -> Result<DepositAddress> {
        Ok(match chain {
            chains_core::Chain::Bitcoin => {
                let coin = if self.bitcoin_network == ::bitcoin::Network::Bitcoin {
                    0
                } else {
                    1
                };
                DepositAddress {
                    address: bitcoin::p2wpkh_address(
                        &self.bitcoin_account,
                        self.bitcoin_network,
                        false,
                        index,
                    )?
                    .to_string(),
                    derivation_path: format!("m/84'/{coin}'/0'/0/{index}"),
                }
            }
            chains_core::Chain::Ethereum => DepositAddress {
                address: ethereum::checksummed(&ethereum::address(&self.seed, index)?),
                derivation_path: format!("m/44'/60'/0'/0/{index}"),
            },
            chains_core::Chain::Solana => DepositAddress {
                address: solana::address(&self.seed, index)?.to_string(),
                derivation_path: format!("m/44'/501'/{index}'/0'"),
            },
        })
    }
}
