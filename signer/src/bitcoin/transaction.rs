//! Signing Bitcoin transactions that spend custody outputs: P2WPKH inputs
//! under the deposit account (`m/84'/coin'/0'/<keychain>/<index>`), signed
//! through a PSBT so the key for each input is found by its BIP32 path,
//! never by the caller.

use std::collections::BTreeMap;

use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv};
use bitcoin::key::Secp256k1;
use bitcoin::psbt::Psbt;
use bitcoin::{Amount, CompressedPublicKey, Network, Sequence, Transaction, TxOut, Txid, Witness};

use super::{coin_type, derivation, p2wpkh_address};
use crate::{Error, HdSeed, Result};

/// The two BIP84 chains of the deposit account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keychain {
    /// `…/0/i`: deposit addresses handed to users.
    External,
    /// `…/1/i`: change, never handed out.
    Internal,
}

impl Keychain {
    pub fn is_change(self) -> bool {
        self == Keychain::Internal
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Keychain::External => "external",
            Keychain::Internal => "internal",
        }
    }
}

/// A custody output a transaction spends: which key holds it and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustodyInput {
    pub keychain: Keychain,
    pub index: u32,
    pub value: Amount,
}

/// A signed transaction: what to persist before it is broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedBitcoinTransaction {
    pub txid: Txid,
    /// The consensus serialization, as `sendrawtransaction` takes it.
    pub raw: Vec<u8>,
    pub tx: Transaction,
}

/// The highest sequence that still signals replaceability (BIP125).
pub const MAX_REPLACEABLE_SEQUENCE: Sequence = Sequence(0xFFFF_FFFD);

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidTransaction {
        field,
        reason: reason.into(),
    }
}

/// Checks `unsigned` and `inputs` against each other before any key is
/// derived: one input description per input, every input unsigned and
/// replaceable, outputs present and not above the inputs.
fn validate(unsigned: &Transaction, inputs: &[CustodyInput]) -> Result<()> {
    if unsigned.input.is_empty() {
        return Err(invalid("input", "is empty"));
    }
    if unsigned.input.len() != inputs.len() {
        return Err(invalid(
            "input",
            format!(
                "has {} entries but {} custody inputs describe it",
                unsigned.input.len(),
                inputs.len()
            ),
        ));
    }
    if unsigned.output.is_empty() {
        return Err(invalid("output", "is empty"));
    }
    for input in &unsigned.input {
        if input.sequence > MAX_REPLACEABLE_SEQUENCE {
            return Err(invalid(
                "input.sequence",
                "must signal replaceability (at most 0xFFFFFFFD)",
            ));
        }
        if !input.script_sig.is_empty() || !input.witness.is_empty() {
            return Err(invalid("input", "is already signed"));
        }
    }
    let spent = inputs
        .iter()
        .try_fold(Amount::ZERO, |sum, i| sum.checked_add(i.value))
        .ok_or_else(|| invalid("input.value", "overflows"))?;
    let paid = unsigned
        .output
        .iter()
        .try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value))
        .ok_or_else(|| invalid("output.value", "overflows"))?;
    if paid > spent {
        return Err(invalid(
            "output.value",
            format!("pays {paid} from inputs worth {spent}"),
        ));
    }
    Ok(())
}

/// Signs every input of `unsigned` (SIGHASH_ALL) with the deposit account's
/// key that `inputs` names for it, in order.
pub(crate) fn sign(
    seed: &HdSeed,
    network: Network,
    unsigned: Transaction,
    inputs: &[CustodyInput],
) -> Result<SignedBitcoinTransaction> {
    validate(&unsigned, inputs)?;
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(network, seed.expose()).map_err(derivation)?;
    let fingerprint = master.fingerprint(&secp);
    let account_path: DerivationPath = format!("m/84'/{}'/0'", coin_type(network))
        .parse()
        .map_err(derivation)?;
    let account = master
        .derive_priv(&secp, &account_path)
        .map_err(derivation)?;
    let account_xpub = bitcoin::bip32::Xpub::from_priv(&secp, &account);

    let mut psbt = Psbt::from_unsigned_tx(unsigned).map_err(|e| invalid("input", e.to_string()))?;
    for (n, input) in inputs.iter().enumerate() {
        let out_of_range = || invalid("input.index", format!("{} is out of range", input.index));
        let path = account_path.extend([
            ChildNumber::from_normal_idx(u32::from(input.keychain.is_change()))
                .map_err(derivation)?,
            ChildNumber::from_normal_idx(input.index).map_err(|_| out_of_range())?,
        ]);
        let address = p2wpkh_address(
            &account_xpub,
            network,
            input.keychain.is_change(),
            input.index,
        )
        .map_err(|_| out_of_range())?;
        let child = master.derive_priv(&secp, &path).map_err(derivation)?;
        let public = child.private_key.public_key(&secp);
        let slot = &mut psbt.inputs[n];
        slot.witness_utxo = Some(TxOut {
            value: input.value,
            script_pubkey: address.script_pubkey(),
        });
        slot.bip32_derivation = BTreeMap::from([(public, (fingerprint, path))]);
    }
    let signed = psbt
        .sign(&master, &secp)
        .map_err(|(_, errors)| Error::Signing(format!("{} input(s) not signed", errors.len())))?;
    if signed.len() != inputs.len() {
        return Err(Error::Signing(format!(
            "{} of {} inputs signed",
            signed.len(),
            inputs.len()
        )));
    }
    for input in &mut psbt.inputs {
        let (public, signature) = input
            .partial_sigs
            .iter()
            .next()
            .ok_or_else(|| Error::Signing("an input has no signature".into()))?;
        let public = CompressedPublicKey::try_from(*public)
            .map_err(|_| Error::Signing("an input key is uncompressed".into()))?;
        input.final_script_witness = Some(Witness::p2wpkh(signature, &public.0));
        input.partial_sigs.clear();
        input.bip32_derivation.clear();
    }
    // The fee is the caller's decision; the signer only refused outputs
    // above the inputs.
    let tx = psbt.extract_tx_unchecked_fee_rate();
    Ok(SignedBitcoinTransaction {
        txid: tx.compute_txid(),
        raw: bitcoin::consensus::serialize(&tx),
        tx,
    })
}

#[cfg(test)]
mod tests {
    use bitcoin::absolute::LockTime;
    use bitcoin::sighash::{EcdsaSighashType, SighashCache};
    use bitcoin::transaction::Version;
    use bitcoin::{OutPoint, ScriptBuf, TxIn};

    use super::*;
    use crate::{INSECURE_DEVNET_MNEMONIC, SeedPhrase};

    fn seed() -> HdSeed {
        HdSeed::from_phrase(&SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC), "").expect("seed")
    }

    fn unsigned(inputs: usize, pay: u64) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: (0..inputs)
                .map(|n| TxIn {
                    previous_output: OutPoint {
                        txid: Txid::from_byte_array([n as u8 + 1; 32]),
                        vout: n as u32,
                    },
                    script_sig: ScriptBuf::new(),
                    sequence: MAX_REPLACEABLE_SEQUENCE,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: Amount::from_sat(pay),
                script_pubkey: ScriptBuf::new_op_return([1u8; 4]),
            }],
        }
    }

    use bitcoin::hashes::Hash;

    #[test]
    fn each_input_is_signed_by_the_key_of_its_path() {
        let inputs = [
            CustodyInput {
                keychain: Keychain::External,
                index: 3,
                value: Amount::from_sat(60_000),
            },
            CustodyInput {
                keychain: Keychain::Internal,
                index: 0,
                value: Amount::from_sat(50_000),
            },
        ];
        let signed = sign(&seed(), Network::Regtest, unsigned(2, 100_000), &inputs).expect("sign");
        let account = super::super::bip84_account_xpub(&seed(), Network::Regtest, 0).expect("xpub");
        let secp = Secp256k1::verification_only();
        let mut cache = SighashCache::new(&signed.tx);
        for (n, input) in inputs.iter().enumerate() {
            let script = p2wpkh_address(
                &account,
                Network::Regtest,
                input.keychain.is_change(),
                input.index,
            )
            .expect("address")
            .script_pubkey();
            let witness = &signed.tx.input[n].witness;
            assert_eq!(witness.len(), 2);
            let public = bitcoin::PublicKey::from_slice(witness.nth(1).expect("key")).expect("key");
            assert_eq!(
                ScriptBuf::new_p2wpkh(&public.wpubkey_hash().expect("compressed")),
                script,
                "input {n} is signed by the key its script names"
            );
            let signature =
                bitcoin::ecdsa::Signature::from_slice(witness.nth(0).expect("sig")).expect("sig");
            assert_eq!(signature.sighash_type, EcdsaSighashType::All);
            let sighash = cache
                .p2wpkh_signature_hash(n, &script, input.value, EcdsaSighashType::All)
                .expect("sighash");
            secp.verify_ecdsa(
                &bitcoin::secp256k1::Message::from(sighash),
                &signature.signature,
                &public.inner,
            )
            .expect("valid signature");
        }
        assert_eq!(signed.txid, signed.tx.compute_txid());
        assert_eq!(
            bitcoin::consensus::deserialize::<Transaction>(&signed.raw).expect("raw"),
            signed.tx
        );
    }

    #[test]
    fn malformed_requests_are_refused_before_signing() {
        let one = [CustodyInput {
            keychain: Keychain::External,
            index: 0,
            value: Amount::from_sat(10_000),
        }];
        let field = |result: Result<SignedBitcoinTransaction>| match result {
            Err(Error::InvalidTransaction { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let s = seed();
        assert_eq!(
            field(sign(&s, Network::Regtest, unsigned(2, 1), &one)),
            "input"
        );
        assert_eq!(
            field(sign(&s, Network::Regtest, unsigned(0, 1), &[])),
            "input"
        );
        assert_eq!(
            field(sign(&s, Network::Regtest, unsigned(1, 10_001), &one)),
            "output.value"
        );
        let mut final_seq = unsigned(1, 1);
        final_seq.input[0].sequence = Sequence::MAX;
        assert_eq!(
            field(sign(&s, Network::Regtest, final_seq, &one)),
            "input.sequence"
        );
        let mut no_outputs = unsigned(1, 1);
        no_outputs.output.clear();
        assert_eq!(
            field(sign(&s, Network::Regtest, no_outputs, &one)),
            "output"
        );
        let hardened = [CustodyInput {
            index: 0x8000_0000,
            ..one[0]
        }];
        assert_eq!(
            field(sign(&s, Network::Regtest, unsigned(1, 1), &hardened)),
            "input.index"
        );
    }
}
