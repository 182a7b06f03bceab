//! Ethereum deposit addresses: BIP44 `m/44'/60'/0'/0/i`, EIP-55 checksummed.

use alloy_primitives::Address;
use bitcoin::NetworkKind;
use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::key::Secp256k1;

use crate::{Error, HdSeed, Result};

/// The address of key `index` under `m/44'/60'/0'/0`.
pub fn address(seed: &HdSeed, index: u32) -> Result<Address> {
    let derivation = |err: &dyn std::fmt::Display| Error::Derivation(err.to_string());
    let secp = Secp256k1::new();
    // The network kind only tags serialized xprvs; it does not affect keys.
    let master = Xpriv::new_master(NetworkKind::Main, seed.expose()).map_err(|e| derivation(&e))?;
    let path: DerivationPath = format!("m/44'/60'/0'/0/{index}")
        .parse()
        .map_err(|e| derivation(&e))?;
    let key = master
        .derive_priv(&secp, &path)
        .map_err(|e| derivation(&e))?;
    let public = key.private_key.public_key(&secp).serialize_uncompressed();
    // Drop the 0x04 prefix: the address hashes the raw 64-byte point.
    Ok(Address::from_raw_public_key(&public[1..]))
}

/// The EIP-55 mixed-case form users and explorers expect.
pub fn checksummed(address: &Address) -> String {
    address.to_checksum(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeedPhrase;

    /// anvil's default mnemonic gives anvil's own dev accounts.
    #[test]
    fn anvil_dev_accounts() {
        let seed = HdSeed::from_phrase(
            &SeedPhrase::from_words("test test test test test test test test test test test junk"),
            "",
        )
        .expect("seed");
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
}
