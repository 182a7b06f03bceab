//! Coin selection with `bdk_coin_select`: branch and bound for the lowest
//! fee (counting what spending the change will cost later), falling back to
//! the largest coins first when branch and bound finds nothing within its
//! rounds. Every coin is a P2WPKH custody output; change is one P2WPKH
//! output, added only when it is worth more than the dust limit and than
//! its own waste.

use bdk_coin_select::metrics::LowestFee;
use bdk_coin_select::{
    Candidate, ChangePolicy, CoinSelector, DrainWeights, FeeRate, TXOUT_BASE_WEIGHT, Target,
    TargetFee, TargetOutputs,
};
use bitcoin::{OutPoint, TxOut};
use signer::bitcoin::{CustodyInput, Keychain};

use crate::{Error, Result};

/// A P2WPKH input's witness: item count, signature (at most 72 bytes with
/// its sighash byte) and compressed key, each with its length.
pub const P2WPKH_SATISFACTION_WEIGHT: u64 = 1 + (1 + 72) + (1 + 33);
/// A P2WPKH script: `OP_0 <20 bytes>`, with its length byte, in weight.
const P2WPKH_OUTPUT_WEIGHT: u64 = TXOUT_BASE_WEIGHT + (1 + 1 + 20) * 4;
/// Outputs below this are dust to Bitcoin Core's relay policy (P2WPKH at
/// the 3 sat/vB dust relay rate).
pub const P2WPKH_DUST_SAT: u64 = 294;
/// Branch-and-bound rounds before the fallback.
const BNB_ROUNDS: usize = 100_000;

const CHANGE_WEIGHTS: DrainWeights = DrainWeights {
    output_weight: P2WPKH_OUTPUT_WEIGHT,
    spend_weight: bdk_coin_select::TXIN_BASE_WEIGHT + P2WPKH_SATISFACTION_WEIGHT,
    n_outputs: 1,
};

/// A custody coin that may be spent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coin {
    pub outpoint: OutPoint,
    pub value_sat: u64,
    pub keychain: Keychain,
    pub index: u32,
}

impl Coin {
    pub(super) fn from_row(
        (txid, vout, value, keychain, index): (String, i32, i64, String, i64),
    ) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("custody coin {txid}:{vout}: {what}"));
        Ok(Self {
            outpoint: OutPoint {
                txid: txid.parse().map_err(|_| corrupt("txid"))?,
                vout: u32::try_from(vout).map_err(|_| corrupt("vout"))?,
            },
            value_sat: u64::try_from(value).map_err(|_| corrupt("value"))?,
            keychain: match keychain.as_str() {
                "external" => Keychain::External,
                "internal" => Keychain::Internal,
                _ => return Err(corrupt("keychain")),
            },
            index: u32::try_from(index).map_err(|_| corrupt("derivation index"))?,
        })
    }

    /// What the signer needs to sign this coin's input.
    pub fn custody_input(&self) -> CustodyInput {
        CustodyInput {
            keychain: self.keychain,
            index: self.index,
            value: bitcoin::Amount::from_sat(self.value_sat),
        }
    }
}

/// Fee rates in whole sat/vB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeePolicy {
    /// The rate this transaction pays at least.
    pub rate_sat_vb: u64,
    /// The rate expected when the change is spent later.
    pub long_term_rate_sat_vb: u64,
}

/// The coins to spend, the change (if any) and the fee they leave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub coins: Vec<Coin>,
    pub change_sat: Option<u64>,
    pub fee_sat: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("no payments to fund")]
    NoPayments,
    #[error("payment {index} of {value_sat} sat is below the dust limit of {P2WPKH_DUST_SAT} sat")]
    Dust { index: usize, value_sat: u64 },
    #[error("the fee rate must be at least 1 sat/vB")]
    ZeroFeeRate,
    /// The spendable coins fall short; the payout waits for more.
    #[error("spendable coins are {missing_sat} sat short")]
    InsufficientFunds { missing_sat: u64 },
}

fn rate(sat_vb: u64) -> FeeRate {
    FeeRate::from_vb(sat_vb, 1)
}

/// Chooses coins among `coins` to pay `payments` at `policy`'s rate.
pub fn select(
    coins: &[Coin],
    payments: &[TxOut],
    policy: FeePolicy,
) -> std::result::Result<Selection, SelectionError> {
    if payments.is_empty() {
        return Err(SelectionError::NoPayments);
    }
    if policy.rate_sat_vb == 0 {
        return Err(SelectionError::ZeroFeeRate);
    }
    if let Some((index, payment)) = payments
        .iter()
        .enumerate()
        .find(|(_, p)| p.value.to_sat() < P2WPKH_DUST_SAT)
    {
        return Err(SelectionError::Dust {
            index,
            value_sat: payment.value.to_sat(),
        });
    }
    let candidates: Vec<Candidate> = coins
        .iter()
        .map(|coin| Candidate::new(coin.value_sat, P2WPKH_SATISFACTION_WEIGHT, true))
        .collect();
    let target_rate = rate(policy.rate_sat_vb);
    let long_term = rate(policy.long_term_rate_sat_vb.max(1));
    let target = Target {
        fee: TargetFee::from_feerate(target_rate),
        outputs: TargetOutputs::fund_outputs(
            payments
                .iter()
                .map(|p| (p.weight().to_wu(), p.value.to_sat())),
        ),
    };
    let change_policy =
        ChangePolicy::min_value_and_waste(CHANGE_WEIGHTS, P2WPKH_DUST_SAT, target_rate, long_term);

    let mut selector = CoinSelector::new(&candidates);
    let metric = LowestFee {
        target,
        long_term_feerate: long_term,
        change_policy,
    };
    if selector.run_bnb(metric, BNB_ROUNDS).is_err() {
        selector = CoinSelector::new(&candidates);
        selector.sort_candidates_by_descending_value_pwu();
        selector.select_until_target_met(target).map_err(|short| {
            SelectionError::InsufficientFunds {
                missing_sat: short.missing,
            }
        })?;
    }
    let drain = selector.drain(target, change_policy);
    let change_sat = drain.is_some().then_some(drain.value);
    let fee = selector.fee(target.value(), drain.value);
    let fee_sat = u64::try_from(fee).map_err(|_| SelectionError::InsufficientFunds {
        missing_sat: fee.unsigned_abs(),
    })?;
    Ok(Selection {
        coins: selector.apply_selection(coins).cloned().collect(),
        change_sat,
        fee_sat,
    })
}

#[cfg(test)]
mod tests {
    use bitcoin::absolute::LockTime;
    use bitcoin::hashes::Hash;
    use bitcoin::transaction::Version;
    use bitcoin::{Amount, ScriptBuf, Sequence, Transaction, TxIn, Txid, WPubkeyHash, Witness};

    use super::*;

    fn coin(n: u8, value_sat: u64) -> Coin {
        Coin {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([n; 32]),
                vout: 0,
            },
            value_sat,
            keychain: Keychain::External,
            index: u32::from(n),
        }
    }

    fn p2wpkh(n: u8) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([n; 20]))
    }

    fn pay(value_sat: u64) -> TxOut {
        TxOut {
            value: Amount::from_sat(value_sat),
            script_pubkey: p2wpkh(0xaa),
        }
    }

    const POLICY: FeePolicy = FeePolicy {
        rate_sat_vb: 10,
        long_term_rate_sat_vb: 5,
    };

    /// The transaction a selection builds, with witnesses of the largest
    /// size a P2WPKH signature can take.
    fn built(selection: &Selection, payments: &[TxOut]) -> Transaction {
        let mut output = payments.to_vec();
        if let Some(change) = selection.change_sat {
            output.push(TxOut {
                value: Amount::from_sat(change),
                script_pubkey: p2wpkh(0xcc),
            });
        }
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: selection
                .coins
                .iter()
                .map(|c| TxIn {
                    previous_output: c.outpoint,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::from_slice(&[vec![0u8; 72], vec![2u8; 33]]),
                })
                .collect(),
            output,
        }
    }

    /// Inputs equal outputs plus the fee, and the fee meets the rate on
    /// the built transaction's real size.
    fn assert_balanced(selection: &Selection, payments: &[TxOut], policy: FeePolicy) {
        let tx = built(selection, payments);
        let inputs: u64 = selection.coins.iter().map(|c| c.value_sat).sum();
        let outputs: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        assert_eq!(inputs, outputs + selection.fee_sat);
        let vsize = tx.weight().to_vbytes_ceil();
        assert!(
            selection.fee_sat >= vsize * policy.rate_sat_vb,
            "fee {} for {vsize} vB at {} sat/vB",
            selection.fee_sat,
            policy.rate_sat_vb
        );
        if let Some(change) = selection.change_sat {
            assert!(change >= P2WPKH_DUST_SAT);
        }
    }

    #[test]
    fn an_exact_match_spends_one_coin_without_change() {
        // 100,000 pays 90,000 plus about 1,410 sat of fee at 10 sat/vB:
        // the remainder is too small for change to be worth it.
        let coins = [coin(1, 5_000_000), coin(2, 91_500), coin(3, 700_000)];
        let payments = [pay(90_000)];
        let selection = select(&coins, &payments, POLICY).expect("select");
        assert_eq!(selection.coins, vec![coins[1].clone()]);
        assert_eq!(selection.change_sat, None);
        assert_balanced(&selection, &payments, POLICY);
    }

    #[test]
    fn change_goes_back_when_it_is_worth_it() {
        let coins = [coin(1, 300_000), coin(2, 400_000)];
        let payments = [pay(500_000), pay(120_000)];
        let selection = select(&coins, &payments, POLICY).expect("select");
        assert_eq!(selection.coins.len(), 2);
        let change = selection.change_sat.expect("change");
        assert!(change > 70_000 && change < 80_000, "{change}");
        assert_balanced(&selection, &payments, POLICY);
    }

    #[test]
    fn many_small_coins_are_combined_and_every_result_balances() {
        let coins: Vec<Coin> = (1..=60)
            .map(|n| coin(n, 10_000 + u64::from(n) * 997))
            .collect();
        for (target, rate) in [(50_000, 1), (123_456, 7), (400_000, 25), (700_000, 2)] {
            let payments = [pay(target)];
            let policy = FeePolicy {
                rate_sat_vb: rate,
                long_term_rate_sat_vb: 3,
            };
            let selection = select(&coins, &payments, policy).expect("select");
            assert_balanced(&selection, &payments, policy);
            let mut spent: Vec<_> = selection.coins.iter().map(|c| c.outpoint).collect();
            spent.dedup();
            assert_eq!(spent.len(), selection.coins.len(), "no coin twice");
        }
    }

    #[test]
    fn too_little_says_how_much_is_missing() {
        let coins = [coin(1, 10_000), coin(2, 20_000)];
        match select(&coins, &[pay(30_000)], POLICY) {
            Err(SelectionError::InsufficientFunds { missing_sat }) => {
                assert!(missing_sat > 0 && missing_sat < 5_000, "{missing_sat}");
            }
            other => panic!("expected insufficient funds, got {other:?}"),
        }
        assert!(matches!(
            select(&[], &[pay(1_000)], POLICY),
            Err(SelectionError::InsufficientFunds { .. })
        ));
    }

    #[test]
    fn bad_requests_are_refused() {
        let coins = [coin(1, 100_000)];
        assert_eq!(select(&coins, &[], POLICY), Err(SelectionError::NoPayments));
        assert_eq!(
            select(&coins, &[pay(1_000), pay(293)], POLICY),
            Err(SelectionError::Dust {
                index: 1,
                value_sat: 293
            })
        );
        let free = FeePolicy {
            rate_sat_vb: 0,
            ..POLICY
        };
        assert_eq!(
            select(&coins, &[pay(1_000)], free),
            Err(SelectionError::ZeroFeeRate)
        );
    }
}
