//! Ethereum keys: deposit addresses at BIP44 `m/44'/60'/0'/0/i`, the hot
//! wallet at `m/44'/60'/1'/0/0` (see [`derivation_path`] for why), EIP-55
//! checksummed; and EIP-1559 signing with either (see [`UnsignedTransaction`]).

mod transaction;

use alloy_signer_local::PrivateKeySigner;
use bitcoin::NetworkKind;
use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv};
use bitcoin::key::Secp256k1;
use zeroize::Zeroizing;

pub use alloy_primitives::{Address, B256, U256};
pub use transaction::{Payment, SignedTransaction, UnsignedTransaction};
pub(crate) use transaction::{sign, sign_with};

use crate::{Error, HdSeed, KeyId, Result};

/// The BIP44 account of every deposit address.
const DEPOSIT_ACCOUNT: u32 = 0;
/// The BIP44 account of the hot wallet.
const HOT_WALLET_ACCOUNT: u32 = 1;

/// The path of `key`.
///
/// Deposits are `m/44'/60'/0'/0/i`: only the last, non-hardened step varies,
/// and an index is refused from 2^31 on, so every deposit key lies under
/// account `0'`. The hot wallet is `m/44'/60'/1'/0/0`, the first key of
/// account `1'`, which no deposit index can reach. A separate hardened
/// account rather than a change chain (`m/44'/60'/0'/1/0`) or a reserved
/// index of account 0 because BIP32 non-hardened derivation lets an
/// account's xpub plus any one child private key recover the account's
/// private key: sweeps sign with every deposit key, so if one leaked along
/// with account 0's xpub, everything under account `0'` would be exposed,
/// but the hardened step keeps account `1'` out of reach. Wallets that
/// import the seed by account (Ledger Live's `m/44'/60'/a'/0/0`) also show
/// the hot wallet as its own account, apart from the deposits.
pub fn derivation_path(key: KeyId) -> Result<String> {
    let (account, index) = account_and_index(key)?;
    Ok(format!("m/44'/60'/{account}'/0/{index}"))
}

fn account_and_index(key: KeyId) -> Result<(u32, u32)> {
    match key {
        KeyId::Deposit(index) => {
            // Also what keeps the deposit path non-hardened.
            ChildNumber::from_normal_idx(index).map_err(|_| {
                Error::Derivation(format!(
                    "deposit index {index} is out of range (at most 2^31 - 1)"
                ))
            })?;
            Ok((DEPOSIT_ACCOUNT, index))
        }
        KeyId::HotWallet => Ok((HOT_WALLET_ACCOUNT, 0)),
    }
}

fn derivation(err: impl std::fmt::Display) -> Error {
    Error::Derivation(err.to_string())
}

/// The BIP32 key at `key`'s path. The caller erases it after use.
fn derive(seed: &HdSeed, key: KeyId) -> Result<Xpriv> {
    let (account, index) = account_and_index(key)?;
    let path = DerivationPath::from(vec![
        ChildNumber::from_hardened_idx(44).map_err(derivation)?,
        ChildNumber::from_hardened_idx(60).map_err(derivation)?,
        ChildNumber::from_hardened_idx(account).map_err(derivation)?,
        ChildNumber::from_normal_idx(0).map_err(derivation)?,
        ChildNumber::from_normal_idx(index).map_err(derivation)?,
    ]);
    let secp = Secp256k1::signing_only();
    // The network kind only tags serialized xprvs; it does not affect keys.
    let mut master = Xpriv::new_master(NetworkKind::Main, seed.expose()).map_err(derivation)?;
    let derived = master.derive_priv(&secp, &path);
    master.private_key.non_secure_erase();
    derived.map_err(derivation)
}

/// The signing key of `key`: redacted in `Debug` (it prints only its
/// address) and wiped on drop. Never leaves the crate.
pub(crate) fn signing_key(seed: &HdSeed, key: KeyId) -> Result<PrivateKeySigner> {
    let mut derived = derive(seed, key)?;
    let secret = Zeroizing::new(derived.private_key.secret_bytes());
    derived.private_key.non_secure_erase();
    PrivateKeySigner::from_slice(secret.as_slice()).map_err(|e| Error::Derivation(e.to_string()))
}

/// The address of `key`.
pub fn key_address(seed: &HdSeed, key: KeyId) -> Result<Address> {
    let mut derived = derive(seed, key)?;
    let public = derived
        .private_key
        .public_key(&Secp256k1::signing_only())
        .serialize_uncompressed();
    derived.private_key.non_secure_erase();
    // Drop the 0x04 prefix: the address hashes the raw 64-byte point.
    Ok(Address::from_raw_public_key(&public[1..]))
}

/// The address of deposit key `index` under `m/44'/60'/0'/0`.
pub fn address(seed: &HdSeed, index: u32) -> Result<Address> {
    key_address(seed, KeyId::Deposit(index))
}

/// The EIP-55 mixed-case form users and explorers expect.
pub fn checksummed(address: &Address) -> String {
    address.to_checksum(None)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::{INSECURE_DEVNET_MNEMONIC, SeedPhrase};

    fn seed(words: &str) -> HdSeed {
        HdSeed::from_phrase(&SeedPhrase::from_words(words), "").expect("seed")
    }

    /// anvil's default mnemonic gives anvil's own dev accounts.
    #[test]
    fn anvil_dev_accounts() {
        let seed = seed("test test test test test test test test test test test junk");
        let first = address(&seed, 0).expect("address");
        assert_eq!(
            checksummed(&first),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        let second = address(&seed, 1).expect("address");
        assert_eq!(
            checksummed(&second),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
    }

    /// The devnet seed's published first address (`m/44'/60'/0'/0/0` of
    /// "abandon … about", as every BIP44 wallet shows it), and the hot
    /// wallet's, pinned so a change of path cannot go unnoticed.
    #[test]
    fn devnet_seed_vectors() {
        let seed = seed(INSECURE_DEVNET_MNEMONIC);
        assert_eq!(
            checksummed(&address(&seed, 0).expect("address")),
            "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
        );
        assert_eq!(
            derivation_path(KeyId::HotWallet).expect("path"),
            "m/44'/60'/1'/0/0"
        );
        assert_eq!(
            checksummed(&key_address(&seed, KeyId::HotWallet).expect("address")),
            HOT_WALLET_DEVNET
        );
    }

    /// `m/44'/60'/1'/0/0` of the devnet seed, as anvil derives it
    /// (`anvil --mnemonic "abandon … about" --derivation-path "m/44'/60'/1'/0/"`).
    const HOT_WALLET_DEVNET: &str = "0x78839F6054d7ed13918bAe0473BA31b1Ca9D7265";

    #[test]
    fn the_hot_wallet_is_no_deposit_address() {
        let seed = seed(INSECURE_DEVNET_MNEMONIC);
        let hot = key_address(&seed, KeyId::HotWallet).expect("hot wallet");
        let deposits: HashSet<Address> = (0..1000)
            .map(|index| address(&seed, index).expect("address"))
            .collect();
        assert_eq!(deposits.len(), 1000, "deposit addresses are distinct");
        assert!(!deposits.contains(&hot));
        for index in [0, 1, 999, 0x7fff_ffff] {
            assert_ne!(
                derivation_path(KeyId::Deposit(index)).expect("path"),
                derivation_path(KeyId::HotWallet).expect("path")
            );
        }
    }

    #[test]
    fn hardened_deposit_indexes_are_refused_not_panicked() {
        let seed = HdSeed::from_bytes([7; 64]);
        for index in [0x8000_0000, u32::MAX] {
            assert!(matches!(
                address(&seed, index),
                Err(Error::Derivation(message)) if message.contains("deposit index")
            ));
            assert!(derivation_path(KeyId::Deposit(index)).is_err());
        }
    }

    #[test]
    fn the_signing_key_prints_no_secret() {
        let seed = seed(INSECURE_DEVNET_MNEMONIC);
        let key = signing_key(&seed, KeyId::HotWallet).expect("key");
        let secret = hex::encode(key.to_bytes());
        let printed = format!("{key:?} {key:#?}");
        assert!(!printed.contains(&secret), "{printed}");
        assert!(
            !printed
                .to_lowercase()
                .contains(&secret[..16].to_lowercase())
        );
    }
}
