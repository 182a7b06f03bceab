//! A withdrawal's destination: the chain's address format, rewritten into
//! the one form Coffer stores and compares (Ethereum EIP-55 checksummed,
//! Bitcoin as the `bitcoin` crate prints it, bech32 lowercase; Solana
//! base58), so two spellings of one address are one request and one
//! lookup among Coffer's own addresses.

use std::str::FromStr;

use alloy_primitives::Address;
use chains::Chain;

use crate::auth::FieldError;

const FIELD: &str = "destination";

fn bad(message: impl Into<String>) -> FieldError {
    FieldError::new(FIELD, message)
}

/// `text` as an address on `chain` (Bitcoin: on `network`), in canonical form.
pub fn canonical(
    chain: Chain,
    text: &str,
    network: bitcoin::Network,
) -> Result<String, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("is required"));
    }
    match chain {
        Chain::Ethereum => ethereum(text),
        Chain::Bitcoin => bitcoin_address(text, network),
        Chain::Solana => solana(text),
    }
}

/// `0x` and 40 hex digits, all lowercase, all uppercase, or mixed case
/// with a matching EIP-55 checksum; never the zero address.
fn ethereum(text: &str) -> Result<String, FieldError> {
    let hex = text
        .strip_prefix("0x")
        .filter(|hex| hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad("must be an Ethereum address: 0x followed by 40 hex digits"))?;
    let mixed_case =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    let address = if mixed_case {
        Address::parse_checksummed(text, None).map_err(|_| {
            bad("fails its EIP-55 checksum (mixed case must match it exactly); check the address")
        })?
    } else {
        Address::from_str(text).map_err(|_| bad("must be an Ethereum address"))?
    };
    if address.is_zero() {
        return Err(bad("is the zero address, which nobody can spend from"));
    }
    Ok(address.to_checksum(None))
}

/// Any standard address type, for the configured network.
fn bitcoin_address(text: &str, network: bitcoin::Network) -> Result<String, FieldError> {
    let unchecked = bitcoin::Address::<bitcoin::address::NetworkUnchecked>::from_str(text)
        .map_err(|_| bad("must be a Bitcoin address"))?;
    let address = unchecked
        .require_network(network)
        .map_err(|_| bad(format!("must be an address for Bitcoin {network}")))?;
    Ok(address.to_string())
}

/// A base58 32-byte public key, not the all-zero one (the system program).
fn solana(text: &str) -> Result<String, FieldError> {
    let key = solana_pubkey::Pubkey::from_str(text)
        .map_err(|_| bad("must be a Solana address: a base58 32-byte public key"))?;
    if key == solana_pubkey::Pubkey::default() {
        return Err(bad(
            "is the all-zero key (the system program), which cannot receive",
        ));
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKSUMMED: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

    fn eth(text: &str) -> Result<String, String> {
        canonical(Chain::Ethereum, text, bitcoin::Network::Regtest).map_err(|e| e.to_string())
    }

    #[test]
    fn ethereum_addresses_in_any_valid_case_become_checksummed() {
        for text in [
            CHECKSUMMED,
            &CHECKSUMMED.to_lowercase(),
            &format!("0x{}", CHECKSUMMED[2..].to_uppercase()),
            &format!(" {CHECKSUMMED} "),
        ] {
            assert_eq!(eth(text).as_deref(), Ok(CHECKSUMMED), "{text}");
        }
    }

    #[test]
    fn bad_ethereum_addresses_name_the_field() {
        let flipped = CHECKSUMMED.replacen('a', "A", 1);
        for (text, why) in [
            ("", "is required"),
            (
                "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                "0x followed by 40",
            ),
            (
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
                "0x followed by 40",
            ),
            (
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
                "0x followed by 40",
            ),
            (flipped.as_str(), "EIP-55"),
            ("0x0000000000000000000000000000000000000000", "zero address"),
        ] {
            let err = eth(text).expect_err(text);
            assert!(err.starts_with("destination: "), "{text}: {err}");
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn bitcoin_addresses_must_be_for_the_network() {
        let regtest = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
        let check = |text: &str| canonical(Chain::Bitcoin, text, bitcoin::Network::Regtest);
        assert_eq!(check(regtest).ok().as_deref(), Some(regtest));
        assert_eq!(
            check(&regtest.to_uppercase()).ok().as_deref(),
            Some(regtest)
        );
        let mainnet = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
        assert!(check(mainnet).is_err());
        assert!(
            canonical(Chain::Bitcoin, mainnet, bitcoin::Network::Bitcoin).is_ok(),
            "valid on mainnet"
        );
        assert!(check("bcrt1qnotanaddress").is_err());
    }

    #[test]
    fn solana_addresses_are_32_byte_keys() {
        let check = |text: &str| canonical(Chain::Solana, text, bitcoin::Network::Regtest);
        let key = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T";
        assert_eq!(check(key).ok().as_deref(), Some(key));
        assert!(
            check("11111111111111111111111111111111").is_err(),
            "zero key"
        );
        assert!(check("4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4").is_err());
        assert!(check("0OIl").is_err());
    }
}
