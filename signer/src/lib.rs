//! Key material. This crate loads the custody seed, derives keys and
//! addresses (BIP84 for Bitcoin, BIP44 for Ethereum, SLIP-10 ed25519 for
//! Solana) and signs transactions (Ethereum EIP-1559, Bitcoin P2WPKH). It never
//! touches the network or the database, and never logs or `Debug`-prints key
//! material: every type that holds a secret redacts itself and wipes its
//! memory on drop. Callers say which key signs ([`KeyId`]) and what to sign;
//! they get back addresses, signed bytes and hashes, never a key.
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
    /// A transaction to sign was refused before any key was touched.
    #[error("invalid transaction: `{field}` {reason}")]
    InvalidTransaction { field: &'static str, reason: String },
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Which of Coffer's keys on a chain: named, never held. Each chain maps it
/// to its own derivation path, and the hot wallet's path is one no deposit
/// index can produce (see each chain module's `derivation_path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyId {
    /// The chain's hot wallet: withdrawals pay from it, sweeps gather into it.
    HotWallet,
    /// The deposit address with this HD index (sweeps sign from it).
    Deposit(u32),
}

/// Every key Coffer holds, derived from one seed: deposit addresses and the
/// hot wallet per chain, and the signatures made with them.
pub struct DepositKeys {
    seed: HdSeed,
    bitcoin_network: ::bitcoin::Network,
    bitcoin_account: ::bitcoin::bip32::Xpub,
    /// The Ethereum hot wallet's key, derived at its first signature and
    /// wiped on drop: the payout loop signs hundreds a round with it, and
    /// deriving each time cost more than the signature. It exposes nothing
    /// the seed beside it does not.
    ethereum_hot: std::sync::OnceLock<alloy_signer_local::PrivateKeySigner>,
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
pub struct KeyAddress {
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
            ethereum_hot: std::sync::OnceLock::new(),
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
    pub fn address(&self, chain: chains_core::Chain, index: u32) -> Result<KeyAddress> {
        self.key_address(chain, KeyId::Deposit(index))
    }

    /// The hot wallet's address on `chain`.
    pub fn hot_wallet_address(&self, chain: chains_core::Chain) -> Result<KeyAddress> {
        self.key_address(chain, KeyId::HotWallet)
    }

    /// The address of `key` on `chain`, with its derivation path.
    pub fn key_address(&self, chain: chains_core::Chain, key: KeyId) -> Result<KeyAddress> {
        Ok(match chain {
            chains_core::Chain::Bitcoin => {
                let (account, index) = match key {
                    KeyId::Deposit(index) => (self.bitcoin_account, index),
                    KeyId::HotWallet => (
                        bitcoin::bip84_account_xpub(
                            &self.seed,
                            self.bitcoin_network,
                            bitcoin::HOT_WALLET_ACCOUNT,
                        )?,
                        0,
                    ),
                };
                KeyAddress {
                    address: bitcoin::p2wpkh_address(&account, self.bitcoin_network, false, index)?
                        .to_string(),
                    derivation_path: bitcoin::derivation_path(self.bitcoin_network, key),
                }
            }
            chains_core::Chain::Ethereum => KeyAddress {
                address: ethereum::checksummed(&ethereum::key_address(&self.seed, key)?),
                derivation_path: ethereum::derivation_path(key)?,
            },
            chains_core::Chain::Solana => KeyAddress {
                address: solana::key_address(&self.seed, key)?.to_string(),
                derivation_path: solana::derivation_path(key)?,
            },
        })
    }

    /// Signs every input of `unsigned`, each a P2WPKH custody output of
    /// the deposit account that `inputs` describes in the same order;
    /// returns the bytes to persist before broadcasting and their txid.
    pub fn sign_bitcoin(
        &self,
        unsigned: ::bitcoin::Transaction,
        inputs: &[bitcoin::CustodyInput],
    ) -> Result<bitcoin::SignedBitcoinTransaction> {
        bitcoin::sign(&self.seed, self.bitcoin_network, unsigned, inputs)
    }

    /// Signs an EIP-1559 transaction with `key` after validating every
    /// field; returns the EIP-2718 bytes to broadcast and their hash.
    pub fn sign_ethereum(
        &self,
        key: KeyId,
        tx: &ethereum::UnsignedTransaction,
    ) -> Result<ethereum::SignedTransaction> {
        match key {
            KeyId::HotWallet => {
                let signer = match self.ethereum_hot.get() {
                    Some(signer) => signer,
                    None => {
                        let derived = ethereum::signing_key(&self.seed, key)?;
                        self.ethereum_hot.get_or_init(|| derived)
                    }
                };
                ethereum::sign_with(signer, tx)
            }
            KeyId::Deposit(_) => ethereum::sign(&self.seed, key, tx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chains_core::Chain;

    use super::*;

    fn devnet_keys() -> DepositKeys {
        let seed = HdSeed::from_phrase(&SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC), "")
            .expect("seed");
        DepositKeys::new(seed, BitcoinNetwork::Regtest).expect("keys")
    }

    #[test]
    fn hot_wallets_are_no_deposit_address_on_any_chain() {
        let keys = devnet_keys();
        for chain in [Chain::Bitcoin, Chain::Ethereum, Chain::Solana] {
            let hot = keys.hot_wallet_address(chain).expect("hot wallet");
            let mut seen = HashSet::new();
            for index in 0..1000 {
                let deposit = keys.address(chain, index).expect("deposit address");
                assert_ne!(deposit.address, hot.address, "{chain:?} index {index}");
                assert_ne!(deposit.derivation_path, hot.derivation_path);
                seen.insert(deposit.address);
            }
            assert_eq!(seen.len(), 1000, "{chain:?} deposit addresses are distinct");
            assert_eq!(
                keys.key_address(chain, KeyId::HotWallet)
                    .expect("hot wallet"),
                hot
            );
        }
        let paths: Vec<String> = [Chain::Bitcoin, Chain::Ethereum, Chain::Solana]
            .into_iter()
            .map(|chain| keys.hot_wallet_address(chain).expect("hot").derivation_path)
            .collect();
        assert_eq!(
            paths,
            ["m/84'/1'/1'/0/0", "m/44'/60'/1'/0/0", "m/44'/501'/0'/1'"]
        );
        assert_eq!(
            keys.hot_wallet_address(Chain::Ethereum)
                .expect("hot")
                .address,
            "0x78839F6054d7ed13918bAe0473BA31b1Ca9D7265"
        );
    }

    #[test]
    fn out_of_range_deposit_indexes_are_refused_on_every_chain() {
        let keys = devnet_keys();
        for chain in [Chain::Bitcoin, Chain::Ethereum, Chain::Solana] {
            assert!(
                matches!(keys.address(chain, 0x8000_0000), Err(Error::Derivation(_))),
                "{chain:?}"
            );
        }
    }

    /// No key-holding type prints its secrets, and neither does what
    /// signing returns.
    #[test]
    fn debug_output_is_redacted() {
        let words = INSECURE_DEVNET_MNEMONIC;
        let phrase = SeedPhrase::from_words(words);
        let seed = HdSeed::from_phrase(&phrase, "").expect("seed");
        let seed_hex: String = seed.expose().iter().map(|b| format!("{b:02x}")).collect();
        let key = ethereum::signing_key(&seed, KeyId::HotWallet).expect("key");
        let key_hex = hex::encode(key.to_bytes());
        let keys = DepositKeys::new(seed, BitcoinNetwork::Regtest).expect("keys");
        let signed = keys
            .sign_ethereum(
                KeyId::HotWallet,
                &ethereum::UnsignedTransaction {
                    chain_id: 1,
                    nonce: 0,
                    max_fee_per_gas: 2,
                    max_priority_fee_per_gas: 1,
                    gas_limit: 21_000,
                    payment: ethereum::Payment::Ether {
                        to: ethereum::Address::repeat_byte(1),
                        value: ethereum::U256::from(1),
                    },
                },
            )
            .expect("signs");
        let seed = HdSeed::from_phrase(&phrase, "").expect("seed");
        let printed = [
            format!("{phrase:?} {phrase:#?}"),
            format!("{seed:?} {seed:#?}"),
            format!("{keys:?} {keys:#?}"),
            format!("{key:?} {key:#?}"),
            format!("{signed:?} {signed:#?}"),
        ];
        for text in printed {
            let lower = text.to_lowercase();
            assert!(!lower.contains("abandon"), "{text}");
            assert!(!lower.contains(&seed_hex[..16]), "{text}");
            assert!(!lower.contains(&key_hex[..16]), "{text}");
        }
        assert_eq!(format!("{phrase:?}"), "SeedPhrase([REDACTED])");
        assert_eq!(format!("{seed:?}"), "HdSeed([REDACTED])");
    }
}
