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
