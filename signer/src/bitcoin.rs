//! Bitcoin deposit addresses: BIP84 native segwit (P2WPKH), and signing
//! transactions that spend them (see [`CustodyInput`]).
//!
//! Deposits use account 0 (`m/84'/coin'/0'/0/i`); the hot wallet is account
//! [`HOT_WALLET_ACCOUNT`], for the same reasons as on Ethereum (see
//! [`crate::ethereum::derivation_path`]): no deposit index can reach another
//! hardened account, and a leaked deposit key plus the deposit account's
//! xpub (which the indexer holds) reveals account 0 but not account 1. Its
//! address is `m/84'/coin'/1'/0/0`; its change will use that account's
//! internal chain.
//!
//! The signer hands out the account's extended public key; deposit
//! addresses derive from it without private keys, so the indexer can watch
//! them (and addresses beyond the last one issued) holding no secret.

mod transaction;

use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv, Xpub};
use bitcoin::key::Secp256k1;
use bitcoin::{Address, CompressedPublicKey, Network};

pub(crate) use transaction::sign;
pub use transaction::{CustodyInput, Keychain, MAX_REPLACEABLE_SEQUENCE, SignedBitcoinTransaction};

use crate::{Error, HdSeed, KeyId, Result};

/// The BIP84 account of the hot wallet; deposits use account 0.
pub const HOT_WALLET_ACCOUNT: u32 = 1;

/// The path of `key`'s first receive address on `network`.
pub fn derivation_path(network: Network, key: KeyId) -> String {
    let coin = coin_type(network);
    match key {
        KeyId::Deposit(index) => format!("m/84'/{coin}'/0'/0/{index}"),
        KeyId::HotWallet => format!("m/84'/{coin}'/{HOT_WALLET_ACCOUNT}'/0/0"),
    }
}

/// BIP44 coin type: 0 on mainnet, 1 on every test network.
fn coin_type(network: Network) -> u32 {
    match network {
        Network::Bitcoin => 0,
        _ => 1,
    }
}

fn derivation(err: impl std::fmt::Display) -> Error {
    Error::Derivation(err.to_string())
}

/// The BIP84 account key `m/84'/coin'/account'`, public half only.
pub fn bip84_account_xpub(seed: &HdSeed, network: Network, account: u32) -> Result<Xpub> {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(network, seed.expose()).map_err(derivation)?;
    let path: DerivationPath = format!("m/84'/{}'/{account}'", coin_type(network))
        .parse()
        .map_err(derivation)?;
    let account_key = master.derive_priv(&secp, &path).map_err(derivation)?;
    Ok(Xpub::from_priv(&secp, &account_key))
}

/// The P2WPKH address at `<account>/<change>/<index>`, from the account xpub.
pub fn p2wpkh_address(
    account: &Xpub,
    network: Network,
    change: bool,
    index: u32,
) -> Result<Address> {
    let secp = Secp256k1::verification_only();
    let path = [
        ChildNumber::from_normal_idx(u32::from(change)).map_err(derivation)?,
        ChildNumber::from_normal_idx(index).map_err(derivation)?,
    ];
    let key = account.derive_pub(&secp, &path).map_err(derivation)?;
    Ok(Address::p2wpkh(
        &CompressedPublicKey(key.public_key),
        network,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeedPhrase;

    fn abandon_seed() -> HdSeed {
        let phrase = SeedPhrase::from_words(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        );
        HdSeed::from_phrase(&phrase, "").expect("valid mnemonic")
    }

    /// The test vectors published in BIP84.
    #[test]
    fn bip84_published_vectors() {
        let account = bip84_account_xpub(&abandon_seed(), Network::Bitcoin, 0).expect("account");
        let address = |change, index| {
            p2wpkh_address(&account, Network::Bitcoin, change, index)
                .expect("address")
                .to_string()
        };
        assert_eq!(
            address(false, 0),
            "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
        );
        assert_eq!(
            address(false, 1),
            "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
        );
        assert_eq!(
            address(true, 0),
            "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"
        );
    }

    #[test]
    fn regtest_addresses_use_the_test_coin_type_and_hrp() {
        let account = bip84_account_xpub(&abandon_seed(), Network::Regtest, 0).expect("account");
        let address = p2wpkh_address(&account, Network::Regtest, false, 0)
            .expect("address")
            .to_string();
        assert!(address.starts_with("bcrt1q"), "{address}");
        let mainnet = bip84_account_xpub(&abandon_seed(), Network::Bitcoin, 0).expect("account");
        assert_ne!(
            account.public_key, mainnet.public_key,
            "coin type 1 differs from coin type 0"
        );
    }

    #[test]
    fn hardened_indexes_are_refused_not_panicked() {
        let account = bip84_account_xpub(&abandon_seed(), Network::Regtest, 0).expect("account");
        assert!(matches!(
            p2wpkh_address(&account, Network::Regtest, false, 0x8000_0000),
            Err(Error::Derivation(_))
        ));
    }
}
