//! EIP-1559 transactions: what the pipeline asks for, checked field by
//! field, built with alloy's consensus types, signed with alloy's local
//! signer and handed back as EIP-2718 bytes and their hash.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, sol};

use crate::{Error, HdSeed, KeyId, Result};

sol! {
    /// ERC-20's `transfer(address,uint256)`.
    function transfer(address to, uint256 amount) external returns (bool);
}

/// Every transaction costs at least this much gas (the yellow paper's
/// G_transaction), so a lower limit can never be mined.
pub const MIN_GAS_LIMIT: u64 = 21_000;

/// What a transaction pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payment {
    /// `value` wei to `to`. A zero value to the sender itself is how a
    /// reserved nonce that is not needed any more gets filled.
    Ether { to: Address, value: U256 },
    /// `token.transfer(recipient, amount)`, with no ether attached; `amount`
    /// in the token's base units.
    Erc20 {
        token: Address,
        recipient: Address,
        amount: U256,
    },
}

/// An EIP-1559 transaction to sign, as the withdrawal pipeline chose it:
/// fees in wei per gas, the nonce it reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsignedTransaction {
    pub chain_id: u64,
    pub nonce: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    pub gas_limit: u64,
    pub payment: Payment,
}

/// A signed transaction: everything that leaves the crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    /// The address that signed (the hot wallet or a deposit address).
    pub from: Address,
    /// The transaction hash, `keccak256(raw)`.
    pub hash: B256,
    /// The EIP-2718 envelope (`0x02 || rlp(...)`) for `eth_sendRawTransaction`.
    pub raw: Vec<u8>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidTransaction {
        field,
        reason: reason.into(),
    }
}

fn not_zero_address(field: &'static str, address: &Address) -> Result<()> {
    if address.is_zero() {
        return Err(invalid(
            field,
            "is the zero address, which nobody can spend from",
        ));
    }
    Ok(())
}

impl UnsignedTransaction {
    /// Checks every field without signing: [`crate::DepositKeys::sign_ethereum`]
    /// refuses exactly what this refuses.
    pub fn validate(&self) -> Result<()> {
        self.build().map(drop)
    }

    /// Checks every field, then builds the alloy transaction. Refuses what
    /// no node would mine and what would burn money, naming the field.
    pub(crate) fn build(&self) -> Result<TxEip1559> {
        if self.chain_id == 0 {
            return Err(invalid(
                "chain_id",
                "must not be 0 (it is what stops a replay on other chains)",
            ));
        }
        // EIP-2681: a nonce of 2^64 - 1 can never be used.
        if self.nonce == u64::MAX {
            return Err(invalid("nonce", "must be below 2^64 - 1 (EIP-2681)"));
        }
        if self.max_fee_per_gas == 0 {
            return Err(invalid("max_fee_per_gas", "must be positive"));
        }
        if self.max_priority_fee_per_gas > self.max_fee_per_gas {
            return Err(invalid(
                "max_priority_fee_per_gas",
                format!(
                    "{} exceeds max_fee_per_gas {}",
                    self.max_priority_fee_per_gas, self.max_fee_per_gas
                ),
            ));
        }
        if self.gas_limit < MIN_GAS_LIMIT {
            return Err(invalid(
                "gas_limit",
                format!(
                    "{} is below {MIN_GAS_LIMIT}, the gas every transaction costs",
                    self.gas_limit
                ),
            ));
        }
        let (to, value, input) = match self.payment {
            Payment::Ether { to, value } => {
                not_zero_address("to", &to)?;
                (to, value, Bytes::new())
            }
            Payment::Erc20 {
                token,
                recipient,
                amount,
            } => {
                not_zero_address("token", &token)?;
                not_zero_address("recipient", &recipient)?;
                let call = transferCall {
                    to: recipient,
                    amount,
                };
                (token, U256::ZERO, Bytes::from(call.abi_encode()))
            }
        };
        // The most the sender can be charged; nodes refuse what overflows.
        U256::from(self.gas_limit)
            .checked_mul(U256::from(self.max_fee_per_gas))
            .and_then(|fee| fee.checked_add(value))
            .ok_or_else(|| {
                invalid(
                    "value",
                    "plus gas_limit × max_fee_per_gas overflows 256 bits",
                )
            })?;
        Ok(TxEip1559 {
            chain_id: self.chain_id,
            nonce: self.nonce,
            gas_limit: self.gas_limit,
            max_fee_per_gas: self.max_fee_per_gas,
            max_priority_fee_per_gas: self.max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input,
        })
    }
}

/// Validates `tx`, signs it with `key` and encodes it.
pub(crate) fn sign(
    seed: &HdSeed,
    key: KeyId,
    tx: &UnsignedTransaction,
) -> Result<SignedTransaction> {
    sign_with(&super::signing_key(seed, key)?, tx)
}

/// [`sign`] with a key already derived.
pub(crate) fn sign_with(
    signer: &PrivateKeySigner,
    tx: &UnsignedTransaction,
) -> Result<SignedTransaction> {
    let unsigned = tx.build()?;
    let signature = signer
        .sign_hash_sync(&unsigned.signature_hash())
        .map_err(|e| Error::Signing(e.to_string()))?;
    let envelope = TxEnvelope::from(unsigned.into_signed(signature));
    Ok(SignedTransaction {
        from: signer.address(),
        hash: *envelope.tx_hash(),
        raw: envelope.encoded_2718(),
    })
}

#[cfg(test)]
mod tests {
    use alloy_consensus::Transaction;
    use alloy_eips::eip2718::Decodable2718;
    use alloy_primitives::{address, keccak256};

    use super::*;
    use crate::{INSECURE_DEVNET_MNEMONIC, SeedPhrase};

    const GWEI: u128 = 1_000_000_000;
    const RECIPIENT: Address = address!("00000000000000000000000000000000000000b0");
    const TOKEN: Address = address!("00000000000000000000000000000000000000c0");

    fn seed() -> HdSeed {
        HdSeed::from_phrase(&SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC), "").expect("seed")
    }

    fn ether(value: u64) -> UnsignedTransaction {
        UnsignedTransaction {
            chain_id: 31_337,
            nonce: 7,
            max_fee_per_gas: 30 * GWEI,
            max_priority_fee_per_gas: 2 * GWEI,
            gas_limit: 21_000,
            payment: Payment::Ether {
                to: RECIPIENT,
                value: U256::from(value),
            },
        }
    }

    /// Decodes the bytes with alloy as a node would and checks every field
    /// and the sender the signature recovers to.
    fn decode(signed: &SignedTransaction) -> (TxEnvelope, Address) {
        let envelope = TxEnvelope::decode_2718(&mut signed.raw.as_slice()).expect("decodes");
        assert_eq!(signed.raw[0], 0x02, "an EIP-1559 envelope");
        assert_eq!(*envelope.tx_hash(), signed.hash);
        assert_eq!(keccak256(&signed.raw), signed.hash);
        let tx = envelope.as_eip1559().expect("EIP-1559");
        let sender = tx
            .signature()
            .recover_address_from_prehash(&tx.signature_hash())
            .expect("recovers");
        (envelope, sender)
    }

    #[test]
    fn an_ether_transfer_decodes_and_recovers_to_its_key() {
        let seed = seed();
        let tx = ether(1_000_000);
        for key in [KeyId::HotWallet, KeyId::Deposit(0), KeyId::Deposit(41)] {
            let signed = sign(&seed, key, &tx).expect("signs");
            let expected = super::super::key_address(&seed, key).expect("address");
            assert_eq!(signed.from, expected);
            let (envelope, sender) = decode(&signed);
            assert_eq!(sender, expected, "{key:?}");
            assert_eq!(envelope.chain_id(), Some(31_337));
            assert_eq!(envelope.nonce(), 7);
            assert_eq!(envelope.max_fee_per_gas(), 30 * GWEI);
            assert_eq!(envelope.max_priority_fee_per_gas(), Some(2 * GWEI));
            assert_eq!(envelope.gas_limit(), 21_000);
            assert_eq!(envelope.to(), Some(RECIPIENT));
            assert_eq!(envelope.value(), U256::from(1_000_000));
            assert!(envelope.input().is_empty());
            assert!(envelope.access_list().is_some_and(|list| list.is_empty()));
        }
    }

    #[test]
    fn an_erc20_transfer_calls_transfer_on_the_token() {
        let seed = seed();
        let amount = U256::from(123_456_789_u64);
        let tx = UnsignedTransaction {
            gas_limit: 65_000,
            payment: Payment::Erc20 {
                token: TOKEN,
                recipient: RECIPIENT,
                amount,
            },
            ..ether(0)
        };
        let signed = sign(&seed, KeyId::Deposit(3), &tx).expect("signs");
        let (envelope, sender) = decode(&signed);
        assert_eq!(
            sender,
            super::super::address(&seed, 3).expect("deposit address")
        );
        assert_eq!(envelope.to(), Some(TOKEN));
        assert_eq!(envelope.value(), U256::ZERO);
        assert_eq!(envelope.gas_limit(), 65_000);
        let input = envelope.input();
        assert_eq!(input.len(), 4 + 32 + 32);
        assert_eq!(&input[..4], &keccak256("transfer(address,uint256)")[..4]);
        assert_eq!(&input[..4], &[0xa9, 0x05, 0x9c, 0xbb]);
        assert_eq!(&input[4..16], &[0; 12]);
        assert_eq!(&input[16..36], RECIPIENT.as_slice());
        assert_eq!(&input[36..], &amount.to_be_bytes::<32>());
    }

    #[test]
    fn signing_is_deterministic_and_keyed() {
        let seed = seed();
        let tx = ether(5);
        let once = sign(&seed, KeyId::HotWallet, &tx).expect("signs");
        let again = sign(&seed, KeyId::HotWallet, &tx).expect("signs");
        assert_eq!(once, again, "RFC 6979 nonces: the same bytes every time");
        let other = sign(&seed, KeyId::Deposit(0), &tx).expect("signs");
        assert_ne!(once.hash, other.hash);
        let next = sign(
            &seed,
            KeyId::HotWallet,
            &UnsignedTransaction { nonce: 8, ..tx },
        )
        .expect("signs");
        assert_ne!(once.hash, next.hash);
    }

    /// Each refusal names its field; nothing panics, whatever the input.
    #[test]
    fn invalid_fields_are_refused_by_name() {
        let seed = seed();
        let base = ether(1);
        let erc20 = |token, recipient| UnsignedTransaction {
            gas_limit: 65_000,
            payment: Payment::Erc20 {
                token,
                recipient,
                amount: U256::from(1),
            },
            ..base
        };
        let cases = [
            (
                UnsignedTransaction {
                    chain_id: 0,
                    ..base
                },
                "chain_id",
            ),
            (
                UnsignedTransaction {
                    nonce: u64::MAX,
                    ..base
                },
                "nonce",
            ),
            (
                UnsignedTransaction {
                    max_fee_per_gas: 0,
                    max_priority_fee_per_gas: 0,
                    ..base
                },
                "max_fee_per_gas",
            ),
            (
                UnsignedTransaction {
                    max_priority_fee_per_gas: base.max_fee_per_gas + 1,
                    ..base
                },
                "max_priority_fee_per_gas",
            ),
            (
                UnsignedTransaction {
                    gas_limit: 0,
                    ..base
                },
                "gas_limit",
            ),
            (
                UnsignedTransaction {
                    gas_limit: 20_999,
                    ..base
                },
                "gas_limit",
            ),
            (
                UnsignedTransaction {
                    payment: Payment::Ether {
                        to: Address::ZERO,
                        value: U256::from(1),
                    },
                    ..base
                },
                "to",
            ),
            (
                UnsignedTransaction {
                    payment: Payment::Ether {
                        to: RECIPIENT,
                        value: U256::MAX,
                    },
                    ..base
                },
                "value",
            ),
            (erc20(Address::ZERO, RECIPIENT), "token"),
            (erc20(TOKEN, Address::ZERO), "recipient"),
        ];
        for (tx, expected) in cases {
            let err = sign(&seed, KeyId::HotWallet, &tx).expect_err("refused");
            match &err {
                Error::InvalidTransaction { field, .. } => assert_eq!(*field, expected, "{err}"),
                other => panic!("{expected}: unexpected {other:?}"),
            }
            assert!(err.to_string().contains(&format!("`{expected}`")), "{err}");
            assert!(tx.validate().is_err());
        }
        let err = sign(&seed, KeyId::Deposit(0x8000_0000), &base).expect_err("refused");
        assert!(matches!(err, Error::Derivation(_)), "{err:?}");
        // The edges that are allowed.
        for tx in [
            UnsignedTransaction {
                max_priority_fee_per_gas: base.max_fee_per_gas,
                ..base
            },
            UnsignedTransaction {
                max_priority_fee_per_gas: 0,
                ..base
            },
            UnsignedTransaction {
                nonce: u64::MAX - 1,
                chain_id: u64::MAX,
                max_fee_per_gas: u128::MAX,
                max_priority_fee_per_gas: u128::MAX,
                gas_limit: u64::MAX,
                payment: Payment::Ether {
                    to: RECIPIENT,
                    value: U256::ZERO,
                },
            },
            ether(0),
        ] {
            tx.validate().expect("valid");
            sign(&seed, KeyId::HotWallet, &tx).expect("signs");
        }
    }

    fn arbitrary_address() -> impl proptest::strategy::Strategy<Value = Address> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Address::ZERO),
            any::<[u8; 20]>().prop_map(Address::from),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the fields, signing either refuses with a named field
        /// or yields bytes that decode to exactly those fields, signed by
        /// the key asked for; it never panics.
        #[test]
        fn any_input_is_refused_by_name_or_round_trips(
            chain_id in proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..],
            nonce in proptest::prop_oneof![proptest::strategy::Just(u64::MAX), proptest::prelude::any::<u64>()],
            max_fee_per_gas in proptest::prelude::any::<u128>(),
            max_priority_fee_per_gas in proptest::prelude::any::<u128>(),
            gas_limit in proptest::prop_oneof![0u64..30_000, proptest::prelude::any::<u64>()],
            erc20 in proptest::prelude::any::<bool>(),
            first in arbitrary_address(),
            second in arbitrary_address(),
            value in proptest::prelude::any::<[u8; 32]>(),
            deposit in proptest::option::of(0u32..=u32::MAX),
        ) {
            let value = U256::from_be_bytes(value);
            let payment = if erc20 {
                Payment::Erc20 { token: first, recipient: second, amount: value }
            } else {
                Payment::Ether { to: first, value }
            };
            let tx = UnsignedTransaction {
                chain_id,
                nonce,
                max_fee_per_gas,
                max_priority_fee_per_gas,
                gas_limit,
                payment,
            };
            let key = deposit.map_or(KeyId::HotWallet, KeyId::Deposit);
            match sign(&seed(), key, &tx) {
                Ok(signed) => {
                    let (envelope, sender) = decode(&signed);
                    proptest::prop_assert_eq!(sender, signed.from);
                    proptest::prop_assert_eq!(
                        sender,
                        super::super::key_address(&seed(), key).expect("address")
                    );
                    proptest::prop_assert_eq!(envelope.chain_id(), Some(chain_id));
                    proptest::prop_assert_eq!(envelope.nonce(), nonce);
                    proptest::prop_assert_eq!(envelope.max_fee_per_gas(), max_fee_per_gas);
                    proptest::prop_assert_eq!(
                        envelope.max_priority_fee_per_gas(),
                        Some(max_priority_fee_per_gas)
                    );
                    proptest::prop_assert_eq!(envelope.gas_limit(), gas_limit);
                    proptest::prop_assert_eq!(envelope.to(), Some(first));
                    if erc20 {
                        proptest::prop_assert_eq!(envelope.value(), U256::ZERO);
                        proptest::prop_assert_eq!(&envelope.input()[16..36], second.as_slice());
                    } else {
                        proptest::prop_assert_eq!(envelope.value(), value);
                    }
                }
                Err(Error::InvalidTransaction { field, .. }) => {
                    proptest::prop_assert!(
                        ["chain_id", "nonce", "max_fee_per_gas", "max_priority_fee_per_gas",
                         "gas_limit", "to", "value", "token", "recipient"].contains(&field)
                    );
                    proptest::prop_assert!(tx.validate().is_err());
                }
                Err(Error::Derivation(_)) => {
                    proptest::prop_assert!(matches!(key, KeyId::Deposit(index) if index >= 0x8000_0000));
                }
                Err(other) => proptest::prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
