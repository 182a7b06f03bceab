//! Solana deposit addresses: SLIP-10 ed25519 at `m/44'/501'/i'/0'`, base58.
//!
//! SLIP-10 over ed25519 allows only hardened children, so every step of a
//! path is hardened here.
//!
//! The deposit index is the account step, so every account is some deposit
//! address's: the hot wallet is told apart by its last step instead,
//! `m/44'/501'/0'/1'`, which no deposit path (always ending `0'`) has.

use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use sha2::Sha512;
use solana_pubkey::Pubkey;
use zeroize::Zeroizing;

use crate::{Error, HdSeed, KeyId, Result};

const HARDENED: u32 = 0x8000_0000;

/// A SLIP-10 ed25519 node: its private key and chain code, wiped on drop.
pub(crate) struct Node {
    key: Zeroizing<[u8; 32]>,
    chain_code: Zeroizing<[u8; 32]>,
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<[u8; 64]>> {
    let mut mac =
        Hmac::<Sha512>::new_from_slice(key).map_err(|e| Error::Derivation(e.to_string()))?;
    for part in parts {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; 64]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

fn split(digest: &[u8; 64]) -> Node {
    let mut key = Zeroizing::new([0u8; 32]);
    let mut chain_code = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&digest[..32]);
    chain_code.copy_from_slice(&digest[32..]);
    Node { key, chain_code }
}

/// Derives the node at `path`; every index is taken as hardened.
pub(crate) fn derive(seed: &[u8], path: &[u32]) -> Result<Node> {
    let mut node = split(&*hmac_sha512(b"ed25519 seed", &[seed])?);
    for index in path {
        if *index >= HARDENED {
            return Err(Error::Derivation(format!(
                "index {index} is out of range for a hardened child"
            )));
        }
        let child = (index | HARDENED).to_be_bytes();
        node = split(&*hmac_sha512(
            &*node.chain_code,
            &[&[0u8], &*node.key, &child],
        )?);
    }
    Ok(node)
}

/// The hardened steps of `key`'s path.
fn path(key: KeyId) -> [u32; 4] {
    match key {
        KeyId::Deposit(index) => [44, 501, index, 0],
        KeyId::HotWallet => [44, 501, 0, 1],
    }
}

/// `key`'s path, every step hardened.
pub fn derivation_path(key: KeyId) -> Result<String> {
    let steps = path(key);
    if let Some(step) = steps.iter().find(|step| **step >= HARDENED) {
        return Err(Error::Derivation(format!(
            "index {step} is out of range for a hardened child"
        )));
    }
    Ok(format!(
        "m/{}'/{}'/{}'/{}'",
        steps[0], steps[1], steps[2], steps[3]
    ))
}

/// The deposit address of account `index`: `m/44'/501'/index'/0'`.
pub fn address(seed: &HdSeed, index: u32) -> Result<Pubkey> {
    key_address(seed, KeyId::Deposit(index))
}

/// The address of `key`.
pub fn key_address(seed: &HdSeed, key: KeyId) -> Result<Pubkey> {
    let node = derive(seed.expose(), &path(key))?;
    let public = SigningKey::from_bytes(&node.key).verifying_key().to_bytes();
    Ok(Pubkey::new_from_array(public))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SLIP-0010 test vector 1 for ed25519.
    #[test]
    fn slip10_published_vector() {
        let seed = hex::decode("000102030405060708090a0b0c0d0e0f").expect("hex");
        let cases: [(&[u32], &str, &str); 3] = [
            (
                &[],
                "90046a93de5380a72b5e45010748567d5ea02bbf6522f979e05c0d8d8ca9fffb",
                "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7",
            ),
            (
                &[0],
                "8b59aa11380b624e81507a27fedda59fea6d0b779a778918a2fd3590e16e9c69",
                "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3",
            ),
            (
                &[0, 1],
                "a320425f77d1b5c2505a6b1b27382b37368ee640e3557c315416801243552f14",
                "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2",
            ),
        ];
        for (path, chain_code, key) in cases {
            let node = derive(&seed, path).expect("derive");
            assert_eq!(
                hex::encode(*node.chain_code),
                chain_code,
                "chain code at {path:?}"
            );
            assert_eq!(hex::encode(*node.key), key, "private key at {path:?}");
        }
        let node = derive(&seed, &[0]).expect("derive");
        let public = SigningKey::from_bytes(&node.key).verifying_key().to_bytes();
        assert_eq!(
            hex::encode(public),
            "8c8a13df77a28f3445213a0f432fde644acaa215fc72dcdf300d5efaa85d350c"
        );
    }

    #[test]
    fn addresses_are_distinct_base58_keys() {
        let seed = HdSeed::from_bytes([7; 64]);
        let first = address(&seed, 0).expect("address");
        let second = address(&seed, 1).expect("address");
        assert_ne!(first, second);
        let text = first.to_string();
        assert!((32..=44).contains(&text.len()), "{text}");
        assert!(matches!(
            derive(&[0; 16], &[HARDENED]),
            Err(Error::Derivation(_))
        ));
    }
}
